//! The pipeline: source → ring → preprocess → infer → decode → rules → sinks, on two threads.
//!
//! Why two threads and no more: capture must keep pace with the camera whatever inference does, and
//! inference is the one heavy stage. The capture thread reads (and, for MJPEG, decodes) each frame straight
//! into a ring slot; the inference thread takes the newest ready slot, preprocesses it into the model input
//! and gives the slot back at once, so capture can reuse it while the model runs. Everything the inference
//! side touches per frame ([`Analyzer`]) is allocated when the pipeline is built. Shutdown is a flag passed
//! in, checked between frames.
//!
//! A camera is supervised ([`crate::capture::supervisor`]): a read error, a stall or a vanished device
//! closes it, `camera_lost` goes to every sink and the capture thread reopens it with backoff until frames
//! flow (`camera_restored`); a camera absent at start is the same case. Only a file source ends a run. The
//! sinks sit behind one lock shared by both threads ([`Sinks`]): alerts and heartbeats come from the
//! inference thread (so a heartbeat also proves inference is alive), camera events from the capture thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::alert::{AnyPin, GpioSink, Heartbeat, LevelPin, LogPin, SerialSink, Sinks};
use crate::capture::mjpeg::MjpegSource;
use crate::capture::supervisor::Supervisor;
use crate::capture::synthetic::SyntheticSource;
use crate::capture::v4l2::{CameraSettings, V4l2Source};
use crate::capture::y4m::Y4mSource;
use crate::capture::{CaptureError, FrameSource, Next};
use crate::config::{Config, Pace, SourceKind};
use crate::detect::Detection;
use crate::frame::{unix_ms_now, Frame, PixelFormat};
use crate::infer::InferError;
use crate::model::Model;
use crate::preprocess::Geometry;
use crate::ring::{Policy, Ring, Take};
use crate::rules::{Alert, Rules};
use crate::service::Notifier;

/// The clip the built-in default runs on: 250 frames of street scene, 640x272, 25 fps, MJPEG.
pub static BUILTIN_CLIP: &[u8] = include_bytes!("../tests/data/bikes.mjpeg");

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

/// Opens the configured source.
pub fn open_source(cfg: &Config) -> Result<Box<dyn FrameSource>, CaptureError> {
    let s = &cfg.source;
    let path = || s.path.clone().unwrap_or_default();
    Ok(match s.kind {
        SourceKind::Builtin => Box::new(MjpegSource::new(Box::new(std::io::Cursor::new(BUILTIN_CLIP)), 25.0)?),
        SourceKind::Mjpeg => Box::new(MjpegSource::open(&path(), s.fps.0)?),
        SourceKind::Y4m => Box::new(Y4mSource::open(&path())?),
        SourceKind::Synthetic => Box::new(SyntheticSource::new(s.width, s.height, s.fps.0)),
        SourceKind::V4l2 => Box::new(V4l2Source::open(&camera_settings(cfg))?),
    })
}

/// Locks the sinks. A panic elsewhere while holding them leaves them usable (a sentence at most half
/// written), so carry on rather than spread it.
pub fn lock(sinks: &Mutex<Sinks>) -> MutexGuard<'_, Sinks> {
    sinks.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters shared by both threads.
#[derive(Debug, Default)]
pub struct Stats {
    pub captured: AtomicU64,
    pub corrupt: AtomicU64,
    pub analysed: AtomicU64,
    pub alerts: AtomicU64,
    pub infer_errors: AtomicU64,
    /// Total inference time (preprocess + run + decode), microseconds.
    pub infer_us: AtomicU64,
}

/// Which frame a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub index: u64,
    pub pts_ms: u64,
    pub unix_ms: u64,
}

impl From<&Frame> for FrameMeta {
    fn from(f: &Frame) -> Self {
        FrameMeta { index: f.index, pts_ms: f.pts_ms, unix_ms: f.unix_ms }
    }
}

/// The inference side's per-frame work, with every buffer it needs allocated up front.
pub struct Analyzer {
    pub model: Model,
    pub rules: Rules,
    pub sinks: Arc<Mutex<Sinks>>,
    dets: Vec<Detection>,
    alerts: Vec<Alert>,
}

impl Analyzer {
    pub fn new(model: Model, cfg: &Config, sinks: Sinks) -> anyhow::Result<Analyzer> {
        let rules = Rules::new(
            &cfg.rules,
            &model.manifest.labels,
            &model.manifest.alert_classes,
            model.decoder.score_threshold,
        )?;
        let dets = Vec::with_capacity(model.max_candidates());
        let alerts = Vec::with_capacity(model.manifest.labels.len());
        Ok(Analyzer { model, rules, sinks: Arc::new(Mutex::new(sinks)), dets, alerts })
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

    /// Applies the rules to the decoded detections and sends any alerts to the sinks. Returns how many.
    pub fn act(&mut self, meta: FrameMeta, now: Instant) -> usize {
        self.alerts.clear();
        self.rules.update(&self.dets, meta.index, meta.pts_ms, meta.unix_ms, &mut self.alerts);
        if !self.alerts.is_empty() {
            let mut sinks = lock(&self.sinks);
            for a in &self.alerts {
                let label = self.model.manifest.labels.get(a.class_id as usize).map(String::as_str).unwrap_or("?");
                sinks.alert(a, label, now);
            }
        }
        self.alerts.len()
    }
}

/// Builds the sinks the config asks for; `serial` replaces the configured port when given (tests).
pub fn open_sinks(cfg: &Config, serial: Option<SerialSink>) -> anyhow::Result<Sinks> {
    use anyhow::Context;
    let serial = match (serial, &cfg.serial.port) {
        (Some(s), _) => s,
        (None, Some(p)) => {
            SerialSink::open(p, cfg.serial.baud.0).with_context(|| format!("opening serial port {}", p.display()))?
        }
        (None, None) => SerialSink::stdout(),
    };
    let g = &cfg.gpio;
    let pin = match (&g.chip, g.line) {
        (Some(chip), Some(line)) => AnyPin::cdev(chip, line, g.active_low, "lookout-alarm")?,
        _ => AnyPin::Log(LogPin::default()),
    };
    let alarm = GpioSink::new(pin, g.active_low, Duration::from_millis(g.pulse_ms));
    let fault = match (&g.chip, g.camera_lost_line) {
        (Some(chip), Some(line)) => {
            Some(LevelPin::new(AnyPin::cdev(chip, line, g.active_low, "lookout-camera-lost")?, g.active_low))
        }
        _ => None,
    };
    Ok(Sinks::new(serial, alarm, fault, &cfg.camera.name.0))
}

/// What a finished run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub captured: u64,
    pub corrupt: u64,
    pub dropped: u64,
    pub analysed: u64,
    pub alerts: u64,
    pub infer_errors: u64,
    pub mean_infer_us: u64,
}

/// The capture thread's loop: fill slots until the source ends, fails, `limit` frames were captured, or
/// `stop` is set.
fn capture_loop(
    mut source: Box<dyn FrameSource>,
    ring: &Ring,
    pace: Pace,
    looping: bool,
    limit: Option<u64>,
    stats: &Stats,
    stop: &AtomicBool,
) -> Result<(), CaptureError> {
    let start = Instant::now();
    let mut pts_offset = 0u64;
    let mut last_pts = 0u64;
    let frame_ms = (1000.0 / source.info().fps.max(0.001)).round() as u64;
    while !stop.load(Ordering::Relaxed) {
        if limit.is_some_and(|n| stats.captured.load(Ordering::Relaxed) >= n) {
            break;
        }
        let Some(i) = ring.acquire() else { break };
        let mut slot = ring.slot(i);
        match source.next_frame(&mut slot) {
            Ok(Next::Frame) => {
                slot.pts_ms += pts_offset;
                last_pts = slot.pts_ms;
                if pace == Pace::Realtime && !source.info().live {
                    let due = start + Duration::from_millis(slot.pts_ms);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
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
                if looping && source.rewind()? {
                    pts_offset = last_pts + frame_ms;
                    continue;
                }
                break;
            }
            Err(CaptureError::Corrupt { index, reason }) => {
                drop(slot);
                ring.release(i);
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                log::warn!("skipping corrupt frame {index}: {reason}");
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
fn camera_loop(
    settings: &CameraSettings,
    retry_max: Duration,
    ring: &Ring,
    limit: Option<u64>,
    stats: &Stats,
    stop: &AtomicBool,
    sinks: &Mutex<Sinks>,
) {
    let start = Instant::now();
    let mut sup = Supervisor::new(start, RETRY_INITIAL, retry_max);
    let mut camera: Option<V4l2Source> = None;
    let (mut pts_offset, mut index_offset) = (0u64, 0u64);
    let dev = settings.device.display();
    while !stop.load(Ordering::Relaxed) {
        if limit.is_some_and(|n| stats.captured.load(Ordering::Relaxed) >= n) {
            break;
        }
        let Some(cam) = camera.as_mut() else {
            match sup.wait(Instant::now()) {
                Some(w) if !w.is_zero() => {
                    // Sleep in short steps so a stop request is seen promptly.
                    std::thread::sleep(w.min(Duration::from_millis(100)));
                    continue;
                }
                _ => {}
            }
            match V4l2Source::open(settings) {
                Ok(c) => {
                    sup.opened();
                    // Frame numbers and stream times continue across reopenings (rules' cooldowns use them).
                    pts_offset = start.elapsed().as_millis() as u64;
                    index_offset = stats.captured.load(Ordering::Relaxed);
                    camera = Some(c);
                }
                Err(e) => {
                    let why = format!("{e} (attempt {})", sup.failures() + 1);
                    camera_failed(&mut sup, sinks, &dev, &why);
                }
            }
            continue;
        };
        let Some(i) = ring.acquire() else { break };
        let mut slot = ring.slot(i);
        match cam.next_frame(&mut slot) {
            Ok(Next::Frame) => {
                slot.pts_ms += pts_offset;
                slot.index += index_offset;
                slot.unix_ms = unix_ms_now();
                drop(slot);
                stats.captured.fetch_add(1, Ordering::Relaxed);
                ring.publish(i);
                if let Some((ev, gone)) = sup.frame(Instant::now()) {
                    log::info!("camera {dev}: frames flow again after {:.1} s", gone.as_secs_f64());
                    lock(sinks).event(ev, unix_ms_now());
                }
            }
            Err(CaptureError::Corrupt { index, reason }) => {
                drop(slot);
                ring.release(i);
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                log::warn!("camera {dev}: skipping corrupt frame {}: {reason}", index + index_offset);
            }
            // A signal (SIGTERM on its way to the stop flag) interrupted the wait: not the camera's fault.
            Err(CaptureError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
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
                camera_failed(&mut sup, sinks, &dev, &format!("{why}; closed it"));
            }
        }
    }
}

/// A failed open or a failed camera: tell the supervisor, log when the next attempt comes, and send
/// `camera_lost` to the sinks if this starts an outage.
fn camera_failed(sup: &mut Supervisor, sinks: &Mutex<Sinks>, dev: &std::path::Display<'_>, why: &str) {
    let now = Instant::now();
    let ev = sup.failed(now);
    let retry = sup.wait(now).unwrap_or_default();
    log::warn!("camera {dev}: {why}; next attempt in {} ms", retry.as_millis());
    if let Some(ev) = ev {
        lock(sinks).event(ev, unix_ms_now());
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
            capture_fps: (captured - c) as f64 / secs,
            infer_fps: (analysed - a) as f64 / secs,
            dropped,
        })
    }
}

/// Runs the pipeline until the source ends or `stop` is set. `notifier` hears `READY=1` once frames can
/// flow and is ticked from the inference loop (the systemd watchdog).
pub fn run(
    cfg: &Config,
    mut analyzer: Analyzer,
    stop: &AtomicBool,
    notifier: &mut Notifier,
) -> anyhow::Result<Summary> {
    let pace = cfg.pace();
    let policy = if pace == Pace::Fast { Policy::Lossless } else { Policy::LatestWins };
    let stats = Arc::new(Stats::default());
    let capture_stop = Arc::new(AtomicBool::new(false));
    let limit = cfg.source.frames;
    let (ring, capture) = if cfg.source.kind == SourceKind::V4l2 {
        let settings = camera_settings(cfg);
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
        let (ring2, stats, stop, sinks) = (ring.clone(), stats.clone(), capture_stop.clone(), analyzer.sinks.clone());
        let retry_max = Duration::from_millis(cfg.source.retry_max_ms);
        let handle = std::thread::Builder::new().name("capture".into()).spawn(move || {
            camera_loop(&settings, retry_max, &ring2, limit, &stats, &stop, &sinks);
            ring2.close();
            Ok(())
        })?;
        (ring, handle)
    } else {
        let source = open_source(cfg)?;
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
        let (ring2, stats, stop) = (ring.clone(), stats.clone(), capture_stop.clone());
        let looping = cfg.source.looping;
        let handle = std::thread::Builder::new().name("capture".into()).spawn(move || {
            let r = capture_loop(source, &ring2, pace, looping, limit, &stats, &stop);
            ring2.close();
            r
        })?;
        (ring, handle)
    };
    notifier.notify("READY=1");
    let mut heartbeat = HeartbeatClock::new(cfg.heartbeat.interval_ms, Instant::now());
    loop {
        let now = Instant::now();
        notifier.tick(now);
        if stop.load(Ordering::Relaxed) {
            capture_stop.store(true, Ordering::Relaxed);
            ring.close();
            break;
        }
        if let Some(h) = heartbeat.as_mut().and_then(|h| h.due(now, &stats, ring.dropped())) {
            lock(&analyzer.sinks).heartbeat(&h);
        }
        let mut wait = Duration::from_millis(100);
        if let Some(d) = lock(&analyzer.sinks).alarm.deadline() {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if let Some(h) = &heartbeat {
            wait = wait.min(h.next.saturating_duration_since(now));
        }
        match ring.take(wait) {
            Take::Slot(i) => {
                let t0 = Instant::now();
                let slot = ring.slot(i);
                let meta = FrameMeta::from(&*slot);
                let geom = analyzer.prepare(&slot);
                drop(slot);
                ring.release(i);
                match analyzer.infer() {
                    Ok(()) => {
                        analyzer.decode(&geom);
                        stats.infer_us.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                        stats.analysed.fetch_add(1, Ordering::Relaxed);
                        let n = analyzer.act(meta, Instant::now());
                        stats.alerts.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.infer_errors.fetch_add(1, Ordering::Relaxed);
                        log::error!("frame {}: {e}", meta.index);
                    }
                }
            }
            Take::Timeout => {}
            Take::Closed => break,
        }
        lock(&analyzer.sinks).alarm.tick(Instant::now());
    }
    // Let a pulse in progress finish its time, then leave the lines off.
    let deadline = lock(&analyzer.sinks).alarm.deadline();
    if let Some(d) = deadline {
        std::thread::sleep(d.saturating_duration_since(Instant::now()));
    }
    notifier.notify("STOPPING=1");
    let captured = capture.join().map_err(|_| anyhow::anyhow!("capture thread panicked"))?;
    lock(&analyzer.sinks).off();
    if let Err(e) = captured {
        return Err(anyhow::Error::new(e).context("capture stopped"));
    }
    let analysed = stats.analysed.load(Ordering::Relaxed);
    Ok(Summary {
        captured: stats.captured.load(Ordering::Relaxed),
        corrupt: stats.corrupt.load(Ordering::Relaxed),
        dropped: ring.dropped(),
        analysed,
        alerts: stats.alerts.load(Ordering::Relaxed),
        infer_errors: stats.infer_errors.load(Ordering::Relaxed),
        mean_infer_us: stats.infer_us.load(Ordering::Relaxed) / analysed.max(1),
    })
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
