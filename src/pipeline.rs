//! The pipeline: source → ring → preprocess → infer → decode → rules → sinks, on two threads.
//!
//! Why two threads and no more: capture must keep pace with the camera whatever inference does, and
//! inference is the one heavy stage. The capture thread reads (and, for MJPEG, decodes) each frame straight
//! into a ring slot; the inference thread takes the newest ready slot, preprocesses it into the model input
//! and gives the slot back at once, so capture can reuse it while the model runs. Everything the inference
//! side touches per frame ([`Analyzer`]) is allocated when the pipeline is built. Shutdown is a flag passed
//! in, checked between frames.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::{alert_sentence, AnyPin, GpioSink, LogPin, Sentence, SerialSink};
use crate::capture::mjpeg::MjpegSource;
use crate::capture::synthetic::SyntheticSource;
use crate::capture::v4l2::{CameraSettings, V4l2Source};
use crate::capture::y4m::Y4mSource;
use crate::capture::{CaptureError, FrameSource, Next};
use crate::config::{Config, Pace, SourceKind};
use crate::detect::Detection;
use crate::frame::{unix_ms_now, Frame};
use crate::infer::InferError;
use crate::model::Model;
use crate::preprocess::Geometry;
use crate::ring::{Policy, Ring, Take};
use crate::rules::{Alert, Rules};
use crate::service::Notifier;

/// The clip the built-in default runs on: 250 frames of street scene, 640x272, 25 fps, MJPEG.
pub static BUILTIN_CLIP: &[u8] = include_bytes!("../tests/data/bikes.mjpeg");

/// Opens the configured source.
pub fn open_source(cfg: &Config) -> Result<Box<dyn FrameSource>, CaptureError> {
    let s = &cfg.source;
    let path = || s.path.clone().unwrap_or_default();
    Ok(match s.kind {
        SourceKind::Builtin => Box::new(MjpegSource::new(Box::new(std::io::Cursor::new(BUILTIN_CLIP)), 25.0)?),
        SourceKind::Mjpeg => Box::new(MjpegSource::open(&path(), s.fps.0)?),
        SourceKind::Y4m => Box::new(Y4mSource::open(&path())?),
        SourceKind::Synthetic => Box::new(SyntheticSource::new(s.width, s.height, s.fps.0)),
        SourceKind::V4l2 => Box::new(V4l2Source::open(&CameraSettings {
            device: s.device.clone().unwrap_or_default(),
            format: s.format,
            width: s.width,
            height: s.height,
            fps: s.fps.0,
            timeout: Duration::from_millis(s.stall_timeout_ms),
        })?),
    })
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
    pub serial: SerialSink,
    pub gpio: GpioSink<AnyPin>,
    camera: String,
    dets: Vec<Detection>,
    alerts: Vec<Alert>,
    sentence: Sentence,
}

impl Analyzer {
    pub fn new(model: Model, cfg: &Config, serial: SerialSink, gpio: GpioSink<AnyPin>) -> anyhow::Result<Analyzer> {
        let rules = Rules::new(
            &cfg.rules,
            &model.manifest.labels,
            &model.manifest.alert_classes,
            model.decoder.score_threshold,
        )?;
        let dets = Vec::with_capacity(model.max_candidates());
        let alerts = Vec::with_capacity(model.manifest.labels.len());
        Ok(Analyzer {
            model,
            rules,
            serial,
            gpio,
            camera: cfg.camera.name.0.clone(),
            dets,
            alerts,
            sentence: Sentence::new(),
        })
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
        for a in &self.alerts {
            let label = self.model.manifest.labels.get(a.class_id as usize).map(String::as_str).unwrap_or("?");
            if alert_sentence(&mut self.sentence, a, &self.camera, label).is_ok() {
                self.serial.send(&self.sentence);
            }
            log::info!("alert {}: {label} {:.2} in frame {} ({} ms)", a.seq, a.score, a.frame, a.pts_ms);
            self.gpio.trigger(now);
        }
        self.alerts.len()
    }
}

/// Builds the sinks the config asks for.
pub fn open_sinks(cfg: &Config) -> anyhow::Result<(SerialSink, GpioSink<AnyPin>)> {
    use anyhow::Context;
    let serial = match &cfg.serial.port {
        Some(p) => {
            SerialSink::open(p, cfg.serial.baud.0).with_context(|| format!("opening serial port {}", p.display()))?
        }
        None => SerialSink::stdout(),
    };
    let pin = match (&cfg.gpio.chip, cfg.gpio.line) {
        (Some(chip), Some(line)) => AnyPin::cdev(chip, line, cfg.gpio.active_low)?,
        _ => AnyPin::Log(LogPin::default()),
    };
    let gpio = GpioSink::new(pin, cfg.gpio.active_low, Duration::from_millis(cfg.gpio.pulse_ms));
    Ok((serial, gpio))
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

/// Runs the pipeline until the source ends or `stop` is set. `notifier` hears `READY=1` once frames can
/// flow and is ticked from the inference loop (the systemd watchdog).
pub fn run(
    cfg: &Config,
    mut analyzer: Analyzer,
    stop: &AtomicBool,
    notifier: &mut Notifier,
) -> anyhow::Result<Summary> {
    let source = open_source(cfg)?;
    let info = source.info();
    let pace = cfg.pace();
    let policy = if pace == Pace::Fast { Policy::Lossless } else { Policy::LatestWins };
    let ring = Arc::new(Ring::new(cfg.ring.slots.0, info.frame_len(), policy));
    let stats = Arc::new(Stats::default());
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
    let capture_stop = Arc::new(AtomicBool::new(false));
    let capture = {
        let (ring, stats, capture_stop) = (ring.clone(), stats.clone(), capture_stop.clone());
        let (looping, limit) = (cfg.source.looping, cfg.source.frames);
        std::thread::Builder::new().name("capture".into()).spawn(move || {
            let r = capture_loop(source, &ring, pace, looping, limit, &stats, &capture_stop);
            ring.close();
            r
        })?
    };
    notifier.notify("READY=1");
    loop {
        notifier.tick(Instant::now());
        if stop.load(Ordering::Relaxed) {
            capture_stop.store(true, Ordering::Relaxed);
            ring.close();
            break;
        }
        let now = Instant::now();
        let wait = analyzer
            .gpio
            .deadline()
            .map_or(Duration::from_millis(100), |d| d.saturating_duration_since(now))
            .min(Duration::from_millis(100));
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
        analyzer.gpio.tick(Instant::now());
    }
    // Let a pulse in progress finish its time, then leave the line off.
    if let Some(d) = analyzer.gpio.deadline() {
        std::thread::sleep(d.saturating_duration_since(Instant::now()));
    }
    analyzer.gpio.off();
    notifier.notify("STOPPING=1");
    let captured = capture.join().map_err(|_| anyhow::anyhow!("capture thread panicked"))?;
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
