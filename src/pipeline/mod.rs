//! The pipeline: source → ring → gate → preprocess → infer → decode → track → rules → output.
//!
//! Why these threads: capture must keep pace with the camera whatever inference does, and inference is
//! the one heavy stage. The capture thread reads (and, for MJPEG, decodes) each frame straight into a
//! ring slot; the inference side ([`engines`]: a dispatcher on the caller's thread and one thread per
//! inference engine) takes the next ready slot, preprocesses it into a model input and gives the slot back
//! at once, so capture can reuse it while a model runs. Everything the inference side touches per frame
//! ([`Analyzer`], the jobs) is allocated when the pipeline is built.
//!
//! Stopping and failing: a [`Shutdown`] is passed in; every wait of capture and dispatcher watches it, so a stop
//! ends the run within a second whatever the source is doing, with every GPIO line switched off at once
//! (a pulse in progress is cut short). A panic on any thread (an engine's too) is caught, logged, reported as
//! `$LKEVT,...,internal_error` and makes the run fail (exit 1, so systemd restarts the sensor): never a
//! half-alive process whose inference loop keeps feeding the watchdog while capture is dead. The
//! watchdog is fed only while frames are analysed or the camera is known lost ([`Notifier::tick`]).
//!
//! A camera is supervised ([`crate::capture::supervisor`]): a read error, a stall or a vanished device
//! closes it, `camera_lost` goes to every sink and the capture thread reopens it with backoff until frames
//! flow (`camera_restored`); a camera absent at start is the same case. Only a file source ends a run.
//! Both threads hand events to the output stage ([`Output::send`], never blocking; it has threads of its
//! own for the serial link and the GPIO lines): alerts, clears and heartbeats come from the inference
//! thread (so a heartbeat also proves inference is alive), camera events from the capture thread.

pub mod engines;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::mjpeg::MjpegSource;
use crate::capture::supervisor::Supervisor;
use crate::capture::synthetic::SyntheticSource;
use crate::capture::v4l2::{CameraSettings, V4l2Source};
use crate::capture::y4m::Y4mSource;
use crate::capture::{CaptureError, FrameSource, Next};
use crate::config::{Config, Pace, SourceKind};
use crate::detect::Detection;
pub use crate::frame::FrameMeta;
use crate::frame::{unix_ms_now, Frame, PixelFormat};
use crate::infer::InferError;
use crate::model::Model;
use crate::output::gpio::{AnyPin, Binding, Lines, LogPin, Mode, OutputLine};
use crate::output::sentence::field;
use crate::output::serial::{Link, Port};
use crate::output::{AlertData, Event, Heartbeat, Output, Settings};
use crate::preprocess::Geometry;
use crate::ring::{Policy, Ring};
use crate::rules::schedule::local_minute;
use crate::rules::{Decisions, RuleSet};
use crate::service::Notifier;
use crate::shutdown::{Arming, Shutdown};
use crate::track::Tracker;

/// The clip the built-in default runs on: 250 frames of street scene, 640x272, 25 fps, MJPEG.
pub static BUILTIN_CLIP: &[u8] = include_bytes!("../../tests/data/bikes.mjpeg");

/// How long a stop lets queued sentences go out.
const DRAIN: Duration = Duration::from_millis(300);

/// The first delay before reopening a lost camera (then doubling up to `source.retry_max_ms`).
pub const RETRY_INITIAL: Duration = Duration::from_millis(250);

/// The camera settings of a `v4l2` source. Slots are sized for the configured size in the largest format
/// a camera may end up in (RGB, from MJPEG), so a reopened camera always fits.
pub fn camera_settings(cfg: &Config) -> CameraSettings {
    let s = &cfg.source;
    CameraSettings {
        device: s.device.clone().unwrap_or_default(),
        format: s.format,
        width: s.width,
        height: s.height,
        fps: s.fps.0,
        timeout: Duration::from_millis(s.stall_timeout_ms),
        max_frame_len: PixelFormat::Rgb24.frame_len(s.width, s.height),
    }
}

/// Opens the configured source. File reads watch `stop` (a FIFO whose writer stalls).
pub fn open_source(cfg: &Config, stop: &Shutdown) -> Result<Box<dyn FrameSource>, CaptureError> {
    let s = &cfg.source;
    let path = || s.path.clone().unwrap_or_default();
    let min = (s.width, s.height);
    Ok(match s.kind {
        SourceKind::Builtin => {
            Box::new(MjpegSource::new(Box::new(std::io::Cursor::new(BUILTIN_CLIP)), 25.0, (640, 272))?)
        }
        SourceKind::Mjpeg => Box::new(MjpegSource::open(&path(), s.fps.0, min, stop)?),
        SourceKind::Y4m => Box::new(Y4mSource::open(&path(), stop)?),
        SourceKind::Synthetic => Box::new(SyntheticSource::new(s.width, s.height, s.fps.0)),
        SourceKind::V4l2 => Box::new(V4l2Source::open(&camera_settings(cfg), stop)?),
    })
}

/// Faults to inject on purpose, for the tests that prove supervision (`LOOKOUT_FAILPOINT`, read once at
/// start; unset in production). Comma-separated `name@N`: after N frames, `capture-panic` /
/// `infer-panic` panics on that thread (the dispatcher), `engine-panic` on the engine thread that runs
/// frame N, `capture-hang` / `infer-hang` blocks the thread (until a stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failpoints {
    pub capture_panic: Option<u64>,
    pub capture_hang: Option<u64>,
    pub infer_panic: Option<u64>,
    pub infer_hang: Option<u64>,
    pub engine_panic: Option<u64>,
}

impl Failpoints {
    /// Parses `LOOKOUT_FAILPOINT`'s value.
    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let mut f = Failpoints::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, n) = item.split_once('@').ok_or_else(|| format!("failpoint {item:?}: want name@N"))?;
            let n: u64 = n.parse().map_err(|_| format!("failpoint {item:?}: N is not a number"))?;
            let slot = match name {
                "capture-panic" => &mut f.capture_panic,
                "capture-hang" => &mut f.capture_hang,
                "infer-panic" => &mut f.infer_panic,
                "infer-hang" => &mut f.infer_hang,
                "engine-panic" => &mut f.engine_panic,
                _ => return Err(format!("unknown failpoint {name:?}")),
            };
            *slot = Some(n);
        }
        Ok(f)
    }

    fn hit(at: Option<u64>, count: u64, what: &str, stop: &Shutdown) {
        if at != Some(count) {
            return;
        }
        if what.ends_with("panic") {
            panic!("failpoint {what}@{count}");
        }
        log::warn!("failpoint {what}@{count}: blocking this thread until a stop");
        while !stop.sleep(Duration::from_secs(3600)) {}
    }
}

/// The text of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Counters shared by both threads.
#[derive(Debug, Default)]
pub struct Stats {
    pub captured: AtomicU64,
    pub corrupt: AtomicU64,
    pub analysed: AtomicU64,
    pub alerts: AtomicU64,
    pub clears: AtomicU64,
    pub infer_errors: AtomicU64,
    /// The camera is known lost (between `camera_lost` and `camera_restored`).
    pub camera_lost: AtomicBool,
    /// Total inference time (run + decode), microseconds.
    pub infer_us: AtomicU64,
    /// Frames the motion gate decided without inference.
    pub skipped: AtomicU64,
}

/// The inference side's per-frame work (prepare → run → decode → track → rules), with every buffer
/// it needs allocated up front. `run` and `replay` both go through it, so what is replayed is what runs.
pub struct Analyzer {
    pub model: Model,
    pub tracker: Tracker,
    pub rules: RuleSet,
    pub output: Output,
    /// SIGUSR1 / SIGUSR2 and the serial ARM / DISARM (see [`Arming`]).
    pub arming: Arming,
    armed: bool,
    dets: Vec<Detection>,
    decisions: Decisions,
    /// The last frame decided (the stream's end is reported at it).
    last: Option<FrameMeta>,
}

impl Analyzer {
    /// The decoder's threshold (the manifest's, or `model.score_threshold`) is the rules' default
    /// `min_score`; with a lower `[track] min_score` the decoder itself is lowered to it, so weaker
    /// detections keep tracks alive without ever counting for a rule on their own.
    pub fn new(mut model: Model, cfg: &Config, output: Output, arming: Arming) -> anyhow::Result<Analyzer> {
        let threshold = model.decoder.score_threshold;
        let rules =
            RuleSet::new(&cfg.rule_configs(), &model.manifest.labels, &model.manifest.alert_classes, threshold)?;
        model.decoder.score_threshold = cfg.track.min_score.map_or(threshold, |s| s.0).min(threshold);
        let max_dets = model.max_candidates();
        let dets = Vec::with_capacity(max_dets);
        let decisions = rules.decisions(max_dets);
        Ok(Analyzer {
            model,
            tracker: Tracker::new(cfg.track, max_dets),
            rules,
            output,
            armed: arming.is_armed(),
            arming,
            dets,
            decisions,
            last: None,
        })
    }

    /// Preprocesses `frame` into `input` (an engine's next input). The slot can be released afterwards.
    pub fn prepare_into(&mut self, frame: &Frame, input: &mut crate::infer::Input) -> Geometry {
        self.model.preprocessor.run(frame, input.as_mut_slice())
    }

    /// Makes `dets` (decoded by an engine) the frame's detections; `dets` gets the old buffer back.
    pub fn swap_detections(&mut self, dets: &mut Vec<Detection>) {
        std::mem::swap(&mut self.dets, dets);
    }

    /// Preprocesses `frame` into the model input. The slot can be released afterwards.
    pub fn prepare(&mut self, frame: &Frame) -> Geometry {
        let m = &mut self.model;
        m.preprocessor.run(frame, m.engine.input_mut())
    }

    /// Runs the model on the prepared input.
    pub fn infer(&mut self) -> Result<(), InferError> {
        self.model.engine.run()
    }

    /// Decodes the last run's outputs into detections in source pixels.
    pub fn decode(&mut self, geom: &Geometry) -> &[Detection] {
        let engine = &self.model.engine;
        self.model.decoder.decode(|i| engine.output(i), geom, &mut self.dets);
        &self.dets
    }

    /// The last frame's decisions (after [`Analyzer::decide`] or [`Analyzer::finish`]).
    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// The last decoded detections.
    pub fn detections(&self) -> &[Detection] {
        &self.dets
    }

    /// Tracks the decoded detections and applies the rules: the frame's alerts, clears and, for every
    /// detection, each rule's reason.
    pub fn decide(&mut self, meta: FrameMeta) -> &Decisions {
        self.tracker.update(&self.dets, meta.pts_ms);
        let minute = if self.rules.needs_clock() { local_minute(meta.unix_ms) } else { 0 };
        let armed = self.arming.is_armed();
        self.rules.update(&self.tracker, &self.dets, meta, minute, armed, &mut self.decisions);
        self.last = Some(meta);
        &self.decisions
    }

    /// The stream ended: clears every alert still standing (at the last frame decided).
    pub fn finish(&mut self) -> &Decisions {
        let meta = self.last.unwrap_or_default();
        self.rules.finish(meta, &mut self.decisions);
        &self.decisions
    }

    /// The label of a class id (`?` for none).
    pub fn label(&self, class_id: u16) -> &str {
        self.model.manifest.labels.get(usize::from(class_id)).map_or("?", String::as_str)
    }

    /// Reports an arming change (`$LKEVT ... armed|disarmed`) once.
    pub fn check_arming(&mut self) {
        let now = self.arming.is_armed();
        if now != self.armed {
            self.armed = now;
            let name = if now { "armed" } else { "disarmed" };
            log::warn!("rules {name} (SIGUSR1 arms, SIGUSR2 disarms)");
            self.output.send(Event::Notice { name, unix_ms: unix_ms_now() });
        }
    }

    /// Sends the decisions' alerts and clears. Returns (alerts, clears).
    fn send(&self) -> (usize, usize) {
        let d = &self.decisions;
        for a in &d.alerts {
            let (rule, label) = (self.rules.name(a.rule), self.label(a.class_id));
            log::info!(
                "alert: rule {rule} track {} {label} {:.2} in frame {} ({} ms)",
                a.track,
                a.score,
                a.frame.index,
                a.frame.pts_ms
            );
            self.output.send(Event::Alert(AlertData {
                unix_ms: a.frame.unix_ms,
                rule: field(rule),
                track: a.track,
                class: field(label),
                score: a.score,
                bbox: a.bbox,
            }));
        }
        for c in &d.clears {
            let rule = self.rules.name(c.rule);
            log::info!("clear: rule {rule} track {} in frame {} ({} ms)", c.track, c.frame.index, c.frame.pts_ms);
            self.output.send(Event::Clear { unix_ms: c.frame.unix_ms, rule: field(rule), track: c.track });
        }
        (d.alerts.len(), d.clears.len())
    }

    /// Decides the decoded frame and sends its alerts and clears. Returns (alerts, clears).
    pub fn act(&mut self, meta: FrameMeta) -> (usize, usize) {
        self.check_arming();
        self.decide(meta);
        self.send()
    }

    /// The stream ended: sends the clears of the alerts still standing. Returns how many.
    pub fn end_of_stream(&mut self) -> usize {
        self.finish();
        self.send().1
    }
}

/// Starts the output stage the config asks for: the serial link (`port` replaces the configured one:
/// tests), the GPIO lines, the output and GPIO threads. A serial port or GPIO chip that is missing or
/// fails is an error here (a device fault: `run` exits 1).
pub fn open_output(cfg: &Config, port: Option<Port>, arming: &Arming) -> anyhow::Result<Output> {
    use anyhow::Context;
    let port = match (port, &cfg.serial.port) {
        (Some(p), _) => p,
        (None, Some(p)) => Port::Tty { path: p.clone(), baud: cfg.serial.baud.0 },
        (None, None) => Port::Stdout,
    };
    let link = match &port {
        Port::Tty { path, .. } => {
            let name = path.display().to_string();
            Link::open(port).with_context(|| format!("opening serial port {name}"))?
        }
        _ => Link::open(port).context("setting up stdout")?,
    };
    let lines = gpio_lines(cfg)?;
    let s = &cfg.serial;
    let settings = Settings {
        camera: cfg.camera.name.0.clone(),
        ack: s.ack,
        resend: Duration::from_millis(s.resend_ms),
        max_sends: s.max_sends,
        journal: cfg.journal.effective_path(),
        journal_records: cfg.journal.records,
        #[cfg(feature = "mqtt")]
        mqtt: cfg.mqtt.as_ref().map(|m| crate::output::mqtt::MqttSettings {
            host: m.host.clone(),
            port: m.port,
            topic_prefix: m.topic_prefix.clone(),
            client_id: m.client_id.clone().unwrap_or_else(|| format!("lookout-{}", cfg.camera.name.0)),
            username: m.username.clone(),
            password: m.password.clone(),
            tls_ca: m.ca_pem.clone(),
            keep_alive: Duration::from_secs(m.keep_alive_s),
            outbox: m.outbox,
            discovery_prefix: m.discovery.then(|| m.discovery_prefix.clone()),
            camera: cfg.camera.name.0.clone(),
            rules: cfg.rule_configs().iter().map(|r| r.name.0.clone()).collect(),
        }),
    };
    Ok(Output::spawn(settings, link, lines, Box::new(arming.clone()))?)
}

/// The GPIO outputs the config asks for: `[gpio] line` (a pulse on every alert) and `camera_lost_line`,
/// then each `[[gpio.output]]`; with no chip at all, one pulse output on a pin that only logs.
pub fn gpio_lines(cfg: &Config) -> anyhow::Result<Lines<AnyPin>> {
    use crate::config::{GpioEvent, GpioMode};
    let g = &cfg.gpio;
    let pulse = |ms: u64| Mode::Pulse(Duration::from_millis(ms));
    let mut outputs = Vec::new();
    match (&g.chip, g.line) {
        (Some(chip), Some(line)) => outputs.push(OutputLine::new(
            AnyPin::cdev(chip, line, g.active_low, "lookout-alarm")?,
            g.active_low,
            pulse(g.pulse_ms),
            Binding::Rules(Vec::new()),
        )),
        _ if g.output.is_empty() => outputs.push(OutputLine::new(
            AnyPin::Log(LogPin::default()),
            false,
            pulse(g.pulse_ms),
            Binding::Rules(Vec::new()),
        )),
        _ => {}
    }
    if let (Some(chip), Some(line)) = (&g.chip, g.camera_lost_line) {
        let pin = AnyPin::cdev(chip, line, g.active_low, "lookout-camera-lost")?;
        outputs.push(OutputLine::new(pin, g.active_low, Mode::Follow, Binding::CameraLost));
    }
    for o in &g.output {
        let chip = o.chip.clone().or_else(|| g.chip.clone()).unwrap_or_default();
        let active_low = o.active_low.unwrap_or(g.active_low);
        let (mode, binding) = match o.event {
            Some(GpioEvent::CameraLost) => (Mode::Follow, Binding::CameraLost),
            None => {
                let rules = o.rules.iter().flatten().map(|r| field(r)).collect();
                let mode = match o.mode.unwrap_or(GpioMode::Pulse) {
                    GpioMode::Pulse => pulse(o.pulse_ms.unwrap_or(g.pulse_ms)),
                    GpioMode::Latched => Mode::Latched,
                    GpioMode::Follow => Mode::Follow,
                };
                (mode, Binding::Rules(rules))
            }
        };
        let pin = AnyPin::cdev(&chip, o.line, active_low, &format!("lookout-output-{}", o.line))?;
        outputs.push(OutputLine::new(pin, active_low, mode, binding));
    }
    Ok(Lines { outputs })
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub captured: u64,
    pub corrupt: u64,
    pub dropped: u64,
    pub analysed: u64,
    pub alerts: u64,
    pub clears: u64,
    /// Sentences that could not be sent (the output queue or the serial buffer was full).
    pub output_dropped: u64,
    pub infer_errors: u64,
    pub mean_infer_us: u64,
    /// Frames the motion gate let through without inference.
    pub skipped: u64,
    /// Per-stage latencies, engines, steady-state allocations (for `lookout bench`).
    pub report: engines::Report,
}

/// The capture thread's loop: fill slots until the source ends, fails, `limit` frames were captured, or
/// `stop` is set. A looping source that gives no good frame in a whole pass (a file truncated while it
/// runs, a file of nothing but corrupt frames) is a failed source, not a reason to spin.
#[allow(clippy::too_many_arguments)]
fn capture_loop(
    mut source: Box<dyn FrameSource>,
    ring: &Ring,
    pace: Pace,
    looping: bool,
    limit: Option<u64>,
    stats: &Stats,
    stop: &Shutdown,
    faults: Failpoints,
) -> Result<(), CaptureError> {
    let start = Instant::now();
    let mut pts_offset = 0u64;
    let mut last_pts = 0u64;
    let frame_ms = (1000.0 / source.info().fps.max(crate::config::MIN_FPS)).round() as u64;
    let mut good_this_pass = 0u64;
    while !stop.is_set() {
        let captured = stats.captured.load(Ordering::Relaxed);
        if limit.is_some_and(|n| captured >= n) {
            break;
        }
        Failpoints::hit(faults.capture_panic, captured, "capture-panic", stop);
        Failpoints::hit(faults.capture_hang, captured, "capture-hang", stop);
        let Some(i) = ring.acquire() else { break };
        let mut slot = ring.slot(i);
        slot.captured = Some(Instant::now());
        match source.next_frame(&mut slot) {
            Ok(Next::Frame) => {
                good_this_pass = good_this_pass.saturating_add(1);
                slot.pts_ms = slot.pts_ms.saturating_add(pts_offset);
                last_pts = slot.pts_ms;
                if pace == Pace::Realtime && !source.info().live {
                    let due = start.checked_add(Duration::from_millis(slot.pts_ms));
                    if let Some(wait) = due.and_then(|d| d.checked_duration_since(Instant::now())) {
                        if stop.sleep(wait) {
                            drop(slot);
                            ring.release(i);
                            break;
                        }
                    }
                }
                slot.unix_ms = unix_ms_now();
                drop(slot);
                stats.captured.fetch_add(1, Ordering::Relaxed);
                ring.publish(i);
            }
            Ok(Next::End) => {
                drop(slot);
                ring.release(i);
                if looping {
                    if good_this_pass == 0 {
                        return Err(CaptureError::Io(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the looping source gave no good frame in a whole pass (truncated or damaged while running?)",
                        )));
                    }
                    if source.rewind()? {
                        good_this_pass = 0;
                        pts_offset = last_pts.saturating_add(frame_ms);
                        continue;
                    }
                }
                break;
            }
            Err(CaptureError::Corrupt { index, reason }) => {
                drop(slot);
                ring.release(i);
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                log::warn!("skipping corrupt frame {index}: {reason}");
            }
            Err(CaptureError::Io(e)) if crate::shutdown::is_stopped(&e) => {
                drop(slot);
                ring.release(i);
                break;
            }
            Err(e) => {
                drop(slot);
                ring.release(i);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The capture thread's loop for a camera: supervised, never ends on a camera failure, only on `stop`
/// or after `limit` frames.
#[allow(clippy::too_many_arguments)]
fn camera_loop(
    settings: &CameraSettings,
    retry_max: Duration,
    ring: &Ring,
    limit: Option<u64>,
    stats: &Stats,
    stop: &Shutdown,
    output: &Output,
    faults: Failpoints,
) {
    let start = Instant::now();
    let mut sup = Supervisor::new(start, RETRY_INITIAL, retry_max);
    let mut camera: Option<V4l2Source> = None;
    let (mut pts_offset, mut index_offset) = (0u64, 0u64);
    let dev = settings.device.display();
    while !stop.is_set() {
        let captured = stats.captured.load(Ordering::Relaxed);
        if limit.is_some_and(|n| captured >= n) {
            break;
        }
        Failpoints::hit(faults.capture_panic, captured, "capture-panic", stop);
        Failpoints::hit(faults.capture_hang, captured, "capture-hang", stop);
        let Some(cam) = camera.as_mut() else {
            match sup.wait(Instant::now()) {
                Some(w) if !w.is_zero() => {
                    stop.sleep(w);
                    continue;
                }
                _ => {}
            }
            match V4l2Source::open(settings, stop) {
                Ok(c) => {
                    sup.opened();
                    // Frame numbers and stream times continue across reopenings (rules' cooldowns use them).
                    pts_offset = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    index_offset = stats.captured.load(Ordering::Relaxed);
                    camera = Some(c);
                }
                Err(e) => {
                    let why = format!("{e} (attempt {})", sup.failures().saturating_add(1));
                    camera_failed(&mut sup, output, stats, &dev, &why);
                }
            }
            continue;
        };
        let Some(i) = ring.acquire() else { break };
        let mut slot = ring.slot(i);
        match cam.next_frame(&mut slot) {
            Ok(Next::Frame) => {
                slot.captured = Some(Instant::now());
                slot.pts_ms = slot.pts_ms.saturating_add(pts_offset);
                slot.index = slot.index.saturating_add(index_offset);
                slot.unix_ms = unix_ms_now();
                drop(slot);
                stats.captured.fetch_add(1, Ordering::Relaxed);
                ring.publish(i);
                if let Some((_, gone)) = sup.frame(Instant::now()) {
                    log::info!("camera {dev}: frames flow again after {:.1} s", gone.as_secs_f64());
                    stats.camera_lost.store(false, Ordering::Relaxed);
                    output.send(Event::Camera { lost: false, unix_ms: unix_ms_now() });
                }
            }
            Err(CaptureError::Corrupt { index, reason }) => {
                drop(slot);
                ring.release(i);
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                log::warn!("camera {dev}: skipping corrupt frame {}: {reason}", index.saturating_add(index_offset));
            }
            // A stop (or a signal on its way to it) ended the wait: not the camera's fault.
            Err(CaptureError::Io(e))
                if e.kind() == std::io::ErrorKind::Interrupted || crate::shutdown::is_stopped(&e) =>
            {
                drop(slot);
                ring.release(i);
            }
            r => {
                drop(slot);
                ring.release(i);
                let why = match r {
                    Err(e) => e.to_string(),
                    _ => "the stream ended".to_string(),
                };
                camera = None; // closes the device
                camera_failed(&mut sup, output, stats, &dev, &format!("{why}; closed it"));
            }
        }
    }
}

/// A failed open or a failed camera: tell the supervisor, log when the next attempt comes, and send
/// `camera_lost` to the output if this starts an outage.
fn camera_failed(sup: &mut Supervisor, output: &Output, stats: &Stats, dev: &std::path::Display<'_>, why: &str) {
    let now = Instant::now();
    let ev = sup.failed(now);
    let retry = sup.wait(now).unwrap_or_default();
    log::warn!("camera {dev}: {why}; next attempt in {} ms", retry.as_millis());
    if ev.is_some() {
        stats.camera_lost.store(true, Ordering::Relaxed);
        output.send(Event::Camera { lost: true, unix_ms: unix_ms_now() });
    }
}

/// Heartbeat bookkeeping of the inference loop.
struct HeartbeatClock {
    every: Duration,
    next: Instant,
    last: (Instant, u64, u64),
}

impl HeartbeatClock {
    fn new(every_ms: u64, now: Instant) -> Option<HeartbeatClock> {
        let every = Duration::from_millis(every_ms);
        (every_ms > 0).then(|| HeartbeatClock { every, next: now + every, last: (now, 0, 0) })
    }

    /// The heartbeat due at `now`, if any.
    fn due(&mut self, now: Instant, stats: &Stats, dropped: u64) -> Option<Heartbeat> {
        if now < self.next {
            return None;
        }
        let (captured, analysed) = (stats.captured.load(Ordering::Relaxed), stats.analysed.load(Ordering::Relaxed));
        let (t, c, a) = self.last;
        let secs = now.saturating_duration_since(t).as_secs_f64().max(1e-3);
        self.last = (now, captured, analysed);
        // Keep the cadence; after a long stall (a slow inference) restart it from now.
        self.next = if now < self.next + self.every { self.next + self.every } else { now + self.every };
        Some(Heartbeat {
            unix_ms: unix_ms_now(),
            capture_fps: captured.saturating_sub(c) as f64 / secs,
            infer_fps: analysed.saturating_sub(a) as f64 / secs,
            dropped,
        })
    }
}

/// Runs the pipeline until the source ends or `stop` is set. `notifier` hears `READY=1` and the
/// watchdog pings from the inference loop (see [`Notifier::tick`]). A panic on either thread is caught
/// here: it is logged, sent as `internal_error` on every sink, and returned as an error.
pub fn run(
    cfg: &Config,
    analyzer: Analyzer,
    stop: &Shutdown,
    notifier: &mut Notifier,
    faults: Failpoints,
) -> anyhow::Result<Summary> {
    let output = analyzer.output.clone();
    let stats = Arc::new(Stats::default());
    let (ring, capture, frame_size) = match start_capture(cfg, &stats, &output, stop, faults) {
        Ok(v) => v,
        Err(e) => {
            output.shutdown(DRAIN);
            return Err(e);
        }
    };
    crate::metrics::log_memory("starting the capture thread");
    let infer = catch_unwind(AssertUnwindSafe(|| {
        engines::inference_loop(cfg, analyzer, &ring, frame_size, &stats, stop, notifier, faults)
    }));
    // Whatever ended the loop, everything stops now: waits on the capture side end at once, the ring
    // is closed, every line goes off (a pulse in progress is cut short: a stop must not wait for it).
    stop.request();
    ring.close();
    output.lines_off();
    notifier.notify("STOPPING=1");
    let captured = join_within(capture, Duration::from_millis(1200));
    let failure = match (&infer, &captured) {
        (Err(p), _) => Some(format!("inference thread panicked: {}", panic_message(p.as_ref()))),
        (Ok(Err(why)), _) => Some(why.clone()),
        (_, Joined::Panicked(m)) => Some(format!("capture thread panicked: {m}")),
        _ => None,
    };
    if let Some(why) = failure {
        log::error!("internal error: {why}");
        output.send(Event::Notice { name: "internal_error", unix_ms: unix_ms_now() });
        output.shutdown(DRAIN);
        return Err(anyhow::anyhow!("internal error: {why}"));
    }
    // What is queued goes out (for a moment: a stop must finish within 2 s), then the threads end.
    let lost_output = output.failure();
    output.shutdown(DRAIN);
    if let Some(why) = lost_output {
        return Err(anyhow::anyhow!("output failed: {why}; alerts could not be delivered"));
    }
    match captured {
        Joined::Done(Err(e)) => return Err(anyhow::Error::new(e).context("capture stopped")),
        Joined::TimedOut => log::error!("the capture thread did not stop within 1.2 s; exiting without it"),
        _ => {}
    }
    let o = output.stats();
    let output_dropped = o
        .queue_full
        .load(Ordering::Relaxed)
        .saturating_add(o.link_dropped.load(Ordering::Relaxed))
        .saturating_add(o.mqtt_dropped.load(Ordering::Relaxed));
    let analysed = stats.analysed.load(Ordering::Relaxed);
    let report = infer.ok().and_then(Result::ok).unwrap_or_default();
    Ok(Summary {
        captured: stats.captured.load(Ordering::Relaxed),
        corrupt: stats.corrupt.load(Ordering::Relaxed),
        dropped: ring.dropped(),
        analysed,
        alerts: stats.alerts.load(Ordering::Relaxed),
        clears: stats.clears.load(Ordering::Relaxed),
        output_dropped,
        infer_errors: stats.infer_errors.load(Ordering::Relaxed),
        mean_infer_us: stats.infer_us.load(Ordering::Relaxed) / analysed.max(1),
        skipped: stats.skipped.load(Ordering::Relaxed),
        report,
    })
}

type CaptureThread = std::thread::JoinHandle<std::thread::Result<Result<(), CaptureError>>>;
type CaptureBody = Box<dyn FnOnce(&Ring) -> Result<(), CaptureError> + Send>;

/// Opens the source (a camera is opened by its own loop) and starts the capture thread. The thread
/// catches its own panic, so the ring is always closed behind it.
fn start_capture(
    cfg: &Config,
    stats: &Arc<Stats>,
    output: &Output,
    stop: &Shutdown,
    faults: Failpoints,
) -> anyhow::Result<(Arc<Ring>, CaptureThread, (u32, u32))> {
    let pace = cfg.pace();
    let policy = if pace == Pace::Fast { Policy::Lossless } else { Policy::LatestWins };
    let limit = cfg.source.frames;
    let (stats, stop) = (stats.clone(), stop.clone());
    let spawn = |ring: Arc<Ring>, body: CaptureBody| {
        std::thread::Builder::new().name("capture".into()).spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| body(&ring)));
            ring.close();
            r
        })
    };
    if cfg.source.kind == SourceKind::V4l2 {
        let settings = camera_settings(cfg);
        let size = (settings.width, settings.height);
        let ring = Arc::new(Ring::new(cfg.ring.slots.0, settings.max_frame_len, policy));
        log::info!(
            "camera {} {}x{} {:?} at {} fps, ring {} slots x {} bytes",
            settings.device.display(),
            settings.width,
            settings.height,
            settings.format,
            settings.fps,
            ring.slot_count(),
            settings.max_frame_len
        );
        let output = output.clone();
        let retry_max = Duration::from_millis(cfg.source.retry_max_ms);
        let handle = spawn(
            ring.clone(),
            Box::new(move |ring| {
                camera_loop(&settings, retry_max, ring, limit, &stats, &stop, &output, faults);
                Ok(())
            }),
        )?;
        Ok((ring, handle, size))
    } else {
        let source = open_source(cfg, &stop)?;
        let info = source.info();
        let ring = Arc::new(Ring::new(cfg.ring.slots.0, info.frame_len(), policy));
        log::info!(
            "source {:?} {}x{} {:?} at {} fps, pace {:?}, ring {} slots x {} bytes",
            cfg.source.kind,
            info.width,
            info.height,
            info.format,
            info.fps,
            pace,
            ring.slot_count(),
            info.frame_len()
        );
        let looping = cfg.source.looping;
        let handle = spawn(
            ring.clone(),
            Box::new(move |ring| capture_loop(source, ring, pace, looping, limit, &stats, &stop, faults)),
        )?;
        Ok((ring, handle, (info.width, info.height)))
    }
}

enum Joined {
    Done(Result<(), CaptureError>),
    Panicked(String),
    TimedOut,
}

/// Joins the capture thread if it ends within `limit` (it watches the same stop, so it does unless a
/// driver call is stuck in the kernel); otherwise leaves it, so a stop still finishes on time.
fn join_within(handle: CaptureThread, limit: Duration) -> Joined {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return Joined::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match handle.join() {
        Ok(Ok(r)) => Joined::Done(r),
        Ok(Err(p)) => Joined::Panicked(panic_message(p.as_ref())),
        Err(p) => Joined::Panicked(panic_message(p.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_rates_cover_the_interval_since_the_last_one_and_keep_cadence() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let stats = Stats::default();
        let mut hb = HeartbeatClock::new(4000, t0).unwrap();
        assert!(HeartbeatClock::new(0, t0).is_none(), "0 turns heartbeats off");
        stats.captured.store(50, Ordering::Relaxed);
        assert!(hb.due(t0 + ms(3999), &stats, 0).is_none());
        // Inference was busy: the heartbeat comes 1 s late; rates are over the 5 s that really passed.
        stats.captured.store(125, Ordering::Relaxed);
        stats.analysed.store(3, Ordering::Relaxed);
        let h = hb.due(t0 + ms(5000), &stats, 7).unwrap();
        assert_eq!((h.capture_fps, h.infer_fps, h.dropped), (25.0, 0.6, 7));
        // The next is still due on the 4 s grid (8 s), over the 3 s since the last.
        assert!(hb.due(t0 + ms(7999), &stats, 7).is_none());
        stats.captured.store(200, Ordering::Relaxed);
        let h = hb.due(t0 + ms(8000), &stats, 9).unwrap();
        assert_eq!((h.capture_fps, h.infer_fps, h.dropped), (25.0, 0.0, 9));
        // After a stall longer than an interval the grid restarts from then, no burst of catch-up beats.
        assert!(hb.due(t0 + ms(20_000), &stats, 9).is_some());
        assert!(hb.due(t0 + ms(20_001), &stats, 9).is_none());
        assert!(hb.due(t0 + ms(24_000), &stats, 9).is_some());
    }
}
