//! The command line: `run`, `check`, `detect`, `bench`, `probe`.
//!
//! Why here and not in `main.rs`: the commands are the product's edges, where errors become messages and
//! exit codes (0 good, 1 failed while running, 2 bad configuration or refused model), and tests call them
//! through the real binary. Arguments are few and fixed, so they are parsed by hand.

use std::path::PathBuf;

use crate::capture::{CaptureError, FrameSource, Next};
use crate::config::{Config, SourceKind};
use crate::frame::Frame;
use crate::model::{Model, ModelError, ModelSource, SelfTestReport};
use crate::pipeline::{self, Analyzer, Failpoints, FrameMeta};
use crate::shutdown::Shutdown;

const USAGE: &str = "\
lookout: edge camera sensor (frames -> ONNX detector -> rules -> serial/GPIO alerts)

usage:
  lookout [run] [--config FILE] [--frames N]
                                         run the pipeline (default: built-in model on the built-in clip)
  lookout check [--config FILE] [--model MANIFEST] [--no-devices]
                                         validate config and model (sha256, self-test) and that the
                                         clip, serial port and GPIO lines are there (--no-devices: a
                                         profile for another machine); exit 0 ok, 2 not
  lookout detect --source FILE [--model MANIFEST] [--fps N] [--frames N] --json
                                         one JSON line of detections per frame, no rules
  lookout replay --source FILE [--config FILE] [--model MANIFEST] [--fps N] [--frames N] [--json]
                                         the config's tracking and rules on a clip, frame by frame:
                                         every detection's track and, per rule, alert or why not
  lookout bench [--config FILE] [--source FILE] [--model MANIFEST] [--frames N] [--json] [--ops]
                                         the configured pipeline as fast as the source goes, outputs
                                         to nowhere: fps, start-up, stage and end-to-end latency,
                                         memory, allocations per frame (--ops: time per model op)
  lookout probe                          list video devices, their formats, sizes and rates, and
                                         which ones lookout can use (exit 0 also with no camera)
  lookout --version | --help

RUST_LOG=debug|info|warn sets the log level (default info, on stderr).";

/// The stop that SIGTERM and SIGINT trigger (see [`crate::shutdown`]).
fn signals() -> Result<Shutdown, i32> {
    Shutdown::from_signals().map_err(|e| {
        eprintln!("lookout: cannot install the signal handlers: {e}");
        1
    })
}

struct Args {
    command: String,
    config: Option<PathBuf>,
    model: Option<PathBuf>,
    source: Option<PathBuf>,
    fps: crate::config::Fps,
    json: bool,
    /// `check --no-devices`: do not look for the clip, serial port and GPIO chip.
    no_devices: bool,
    /// `--frames N`: stop after N frames (bench: how many to time, default 100).
    frames: Option<usize>,
    /// `bench --ops`: time every op of the model (where tract spends the inference).
    ops: bool,
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        command: "run".into(),
        config: None,
        model: None,
        source: None,
        fps: crate::config::Fps(25.0),
        json: false,
        no_devices: false,
        frames: None,
        ops: false,
    };
    let mut it = args.into_iter().peekable();
    if let Some(first) = it.peek() {
        if !first.starts_with('-') {
            a.command = it.next().unwrap_or_default();
        }
    }
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" | "-c" => a.config = Some(value("--config")?.into()),
            "--model" | "-m" => a.model = Some(value("--model")?.into()),
            "--source" | "-s" => a.source = Some(value("--source")?.into()),
            "--fps" => {
                // The same bounds as `source.fps` in the config: 0, NaN, infinities are refused.
                let v: f64 = value("--fps")?.parse().map_err(|_| "--fps needs a number".to_string())?;
                a.fps = crate::config::Fps::try_from(v).map_err(|e| format!("--fps: {e}"))?;
            }
            "--json" => a.json = true,
            "--no-devices" => a.no_devices = true,
            "--ops" => a.ops = true,
            "--frames" => {
                a.frames = Some(value("--frames")?.parse().map_err(|_| "--frames needs a number".to_string())?)
            }
            "--version" | "-V" => a.command = "version".into(),
            "--help" | "-h" => a.command = "help".into(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Entry point; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    crate::logging::init();
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lookout: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match args.command.as_str() {
        "run" => cmd_run(&args),
        "check" => cmd_check(&args),
        "detect" => cmd_detect(&args),
        "replay" => cmd_replay(&args),
        "bench" => cmd_bench(&args),
        "probe" => cmd_probe(),
        "version" => {
            println!("{}", version());
            0
        }
        "help" => {
            println!("{USAGE}");
            0
        }
        other => {
            eprintln!("lookout: unknown command {other:?}\n\n{USAGE}");
            2
        }
    }
}

/// `lookout probe`: what cameras are there. Having none is an answer, not an error.
fn cmd_probe() -> i32 {
    match crate::capture::v4l2::probe(&mut std::io::stdout().lock()) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("lookout: probe: {e}");
            1
        }
    }
}

/// `lookout <version> (<target triple>, tract <version>)`.
pub fn version() -> String {
    format!("lookout {} ({}, tract {})", env!("CARGO_PKG_VERSION"), env!("LOOKOUT_TARGET"), crate::infer::TRACT_VERSION)
}

fn load_config(args: &Args) -> Result<Config, i32> {
    let mut cfg = match &args.config {
        None => Config::default(),
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("lookout: config error: {e}");
            2
        })?,
    };
    if let Some(n) = args.frames {
        cfg.source.frames = Some(n as u64);
    }
    Ok(cfg)
}

fn model_source(args: &Args, cfg: &Config) -> ModelSource {
    match args.model.as_ref().or(cfg.model.manifest.as_ref()) {
        Some(p) => ModelSource::Manifest(p.clone()),
        None => ModelSource::Builtin,
    }
}

fn load_model(src: &ModelSource, cfg: &Config) -> Result<(Model, SelfTestReport), ModelError> {
    let (mut m, report) = Model::load_checked_with(src, cfg.inference.kernels)?;
    if let Some(s) = cfg.model.score_threshold {
        m.decoder.score_threshold = s.0;
    }
    if let Some(s) = cfg.model.nms_iou {
        m.decoder.nms_iou = s.0;
    }
    Ok((m, report))
}

/// The rules must name labels the model has; a typo would silently disable an alarm.
fn check_rules(cfg: &Config, m: &Model) -> Result<(), i32> {
    let rules = cfg.rule_configs();
    crate::rules::RuleSet::new(&rules, &m.manifest.labels, &m.manifest.alert_classes, m.decoder.score_threshold)
        .map(|_| ())
        .map_err(|e| {
            let msg = format!("{e} ({})", m.manifest.name);
            eprintln!("lookout: config error: {}", cfg.error_at(&e.table, &e.key, msg));
            2
        })
}

fn describe(report: &SelfTestReport) -> String {
    report
        .outputs
        .iter()
        .map(|(n, bad, total, max)| format!("{n}: {bad}/{total} values off, max diff {max:.1e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn cmd_check(args: &Args) -> i32 {
    let cfg = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let src = model_source(args, &cfg);
    match load_model(&src, &cfg) {
        Ok((m, report)) => {
            if let Err(code) = check_rules(&cfg, &m) {
                return code;
            }
            println!(
                "ok: model {} (sha256 {}…) passed its self-test ({})",
                m.manifest.name,
                m.manifest.sha256.get(..12).unwrap_or(&m.manifest.sha256),
                describe(&report)
            );
            let names: Vec<String> = cfg.rule_configs().iter().map(|r| r.name.0.clone()).collect();
            println!("ok: {} rule(s): {}", names.len(), names.join(", "));
            if let Some(m) = &cfg.mqtt {
                println!(
                    "ok: mqtt {}:{}{} as {}, topics {}/{}/..., outbox {}{}",
                    m.host,
                    m.port,
                    if m.ca_pem.is_some() { " (TLS)" } else { "" },
                    m.client_id.clone().unwrap_or_else(|| format!("lookout-{}", cfg.camera.name.0)),
                    m.topic_prefix,
                    cfg.camera.name.0,
                    m.outbox,
                    if m.discovery {
                        format!(", Home Assistant discovery under {}/", m.discovery_prefix)
                    } else {
                        String::new()
                    }
                );
            }
            if args.no_devices {
                println!("note: devices not checked (--no-devices)");
            } else if let Err(e) = check_devices(&cfg) {
                eprintln!("lookout: config error: {e}");
                return 2;
            }
            if let Some(p) = &args.config {
                println!("ok: config {}", p.display());
            }
            0
        }
        Err(e) => {
            eprintln!("lookout: model refused: {e}");
            2
        }
    }
}

/// `check`: what the config points at must be there: the clip must open and parse, the serial port must
/// be a tty, the GPIO chip must have the lines. A camera may be absent (lookout waits for it): noted.
fn check_devices(cfg: &Config) -> Result<(), crate::config::ConfigError> {
    let stop = Shutdown::new().map_err(|e| cfg.error_at("source", "path", e.to_string()))?;
    match cfg.source.kind {
        SourceKind::V4l2 => {
            let dev = cfg.source.device.clone().unwrap_or_default();
            if dev.exists() {
                println!("ok: camera {}", dev.display());
            } else {
                println!(
                    "note: camera {} is not there now; lookout will report camera_lost and wait for it",
                    dev.display()
                );
            }
        }
        SourceKind::Mjpeg | SourceKind::Y4m => {
            let s = pipeline::open_source(cfg, &stop).map_err(|e| cfg.error_at("source", "path", e.to_string()))?;
            let i = s.info();
            println!(
                "ok: source {} ({}x{} at {} fps)",
                cfg.source.path.clone().unwrap_or_default().display(),
                i.width,
                i.height,
                i.fps
            );
        }
        SourceKind::Builtin | SourceKind::Synthetic => {}
    }
    if let Some(p) = &cfg.serial.port {
        crate::output::serial::open_tty(p, cfg.serial.baud.0)
            .map_err(|e| cfg.error_at("serial", "port", format!("{}: {e}", p.display())))?;
        println!("ok: serial port {}", p.display());
    }
    if let (Some(chip), Some(line)) = (&cfg.gpio.chip, cfg.gpio.line) {
        crate::output::gpio::check_line(chip, line).map_err(|e| cfg.error_at("gpio", "line", format!("{e:#}")))?;
        if let Some(l) = cfg.gpio.camera_lost_line {
            crate::output::gpio::check_line(chip, l)
                .map_err(|e| cfg.error_at("gpio", "camera_lost_line", format!("{e:#}")))?;
        }
        println!("ok: GPIO chip {} line {line}", chip.display());
    }
    for (i, o) in cfg.gpio.output.iter().enumerate() {
        let chip = o.chip.clone().or_else(|| cfg.gpio.chip.clone()).unwrap_or_default();
        crate::output::gpio::check_line(&chip, o.line)
            .map_err(|e| cfg.error_at(&format!("gpio.output[{i}]"), "line", format!("{e:#}")))?;
        println!("ok: GPIO chip {} line {} (output {i})", chip.display(), o.line);
    }
    Ok(())
}

fn cmd_run(args: &Args) -> i32 {
    let (cfg, model, report) = match config_and_model(args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Err(code) = check_rules(&cfg, &model) {
        return code;
    }
    log::info!("{}; model {} self-test passed ({})", version(), model.manifest.name, describe(&report));
    crate::metrics::log_memory("the self-test");
    let faults = match std::env::var("LOOKOUT_FAILPOINT") {
        Ok(spec) => match Failpoints::parse(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("lookout: LOOKOUT_FAILPOINT: {e}");
                return 2;
            }
        },
        Err(_) => Failpoints::default(),
    };
    let stop = match signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let arming = match crate::shutdown::Arming::from_signals() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lookout: cannot install the SIGUSR1/SIGUSR2 handlers: {e}");
            return 1;
        }
    };
    // A serial port or GPIO chip that is missing or fails is a device fault (exit 1: systemd retries);
    // a config that names it badly was refused above (exit 2).
    crate::output::gpio::install_panic_hook();
    let analyzer = match pipeline::open_output(&cfg, None, &arming)
        .and_then(|output| Analyzer::new(model, &cfg, output, arming))
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            return 1;
        }
    };
    let mut notifier = crate::service::Notifier::from_env();
    if notifier.active() {
        log::info!("systemd notify socket found: readiness and watchdog enabled");
    }
    match pipeline::run(&cfg, analyzer, &stop, &mut notifier, faults) {
        Ok(s) => {
            log::info!(
                "done: {} frames captured, {} analysed, {} dropped, {} corrupt, {} alerts, {} clears, {} inference errors, mean {:.1} ms per frame, {} sentences not sent, {} skipped by the motion gate",
                s.captured,
                s.analysed,
                s.dropped,
                s.corrupt,
                s.alerts,
                s.clears,
                s.infer_errors,
                s.mean_infer_us as f64 / 1000.0,
                s.output_dropped,
                s.skipped
            );
            0
        }
        Err(e) => {
            eprintln!("lookout: {e:#}");
            1
        }
    }
}

/// Points `cfg` at `--source` (`.y4m` is read as Y4M, anything else as MJPEG) if one was given.
fn apply_source(cfg: &mut Config, args: &Args) {
    if let Some(path) = &args.source {
        cfg.source.kind =
            if path.extension().is_some_and(|e| e == "y4m") { SourceKind::Y4m } else { SourceKind::Mjpeg };
        cfg.source.path = Some(path.clone());
        cfg.source.fps = args.fps;
    }
}

/// The config (with `--source` and `--frames` applied) and the self-tested model; on failure the exit code,
/// after the message.
fn config_and_model(args: &Args) -> Result<(Config, Model, SelfTestReport), i32> {
    let mut cfg = load_config(args)?;
    apply_source(&mut cfg, args);
    let (model, report) = load_model(&model_source(args, &cfg), &cfg).map_err(|e| {
        eprintln!("lookout: model refused: {e}");
        2
    })?;
    Ok((cfg, model, report))
}

fn cmd_bench(args: &Args) -> i32 {
    let (mut cfg, mut model, _) = match config_and_model(args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let stop = match signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    if args.ops {
        return bench_ops(&cfg, &mut model, &stop, args.frames.unwrap_or(50));
    }
    if let Err(code) = check_rules(&cfg, &model) {
        return code;
    }
    // The configured pipeline as fast as the source goes, decisions made but sent nowhere: no relay
    // switched, no broker told, no journal written, sentences into a sink.
    cfg.source.pace = Some(crate::config::Pace::Fast);
    cfg.source.looping = false;
    cfg.gpio = crate::config::GpioConfig::default();
    cfg.mqtt = None;
    cfg.journal.off = true;
    cfg.heartbeat.interval_ms = 0;
    let name = model.manifest.name.clone();
    let arming = crate::shutdown::Arming::new(true);
    let port = crate::output::serial::Port::Writer(Box::new(std::io::sink()));
    let analyzer =
        pipeline::open_output(&cfg, Some(port), &arming).and_then(|output| Analyzer::new(model, &cfg, output, arming));
    let analyzer = match analyzer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            return 1;
        }
    };
    match pipeline::run(&cfg, analyzer, &stop, &mut crate::service::Notifier::none(), Failpoints::default()) {
        Ok(summary) => {
            let report = crate::bench::report(&summary, &name);
            if args.json {
                println!("{report}");
            } else {
                println!("{}", version());
                print!("{}", crate::bench::text(&report));
            }
            0
        }
        Err(e) => {
            eprintln!("lookout: {e:#}");
            1
        }
    }
}

/// `lookout bench --ops`: the source's first frame through the model `runs` times, every op timed.
fn bench_ops(cfg: &Config, model: &mut Model, stop: &Shutdown, runs: usize) -> i32 {
    let mut frame = crate::frame::Frame::with_capacity(0);
    let profile = pipeline::open_source(cfg, stop).map_err(anyhow::Error::from).and_then(|mut source| {
        frame = crate::frame::Frame::with_capacity(source.info().frame_len());
        source.next_frame(&mut frame)?;
        model.preprocessor.run(&frame, model.engine.input_mut());
        model.engine.run()?;
        model.engine.profile(runs.max(1))
    });
    match profile {
        Ok(ops) => {
            let total: f64 = ops.iter().map(|o| o.1.as_secs_f64()).sum();
            println!("{}; model {}; {runs} runs, time per run by op", version(), model.manifest.name);
            println!("op                         nodes   ms/run   share");
            for (name, d, n) in ops {
                let ms = d.as_secs_f64() * 1e3 / runs.max(1) as f64;
                println!("{name:<26} {n:>5} {ms:>8.3} {:>6.1}%", 100.0 * d.as_secs_f64() / total.max(1e-12));
            }
            println!("all ops                          {:>8.3}", total * 1e3 / runs.max(1) as f64);
            0
        }
        Err(e) => {
            eprintln!("lookout: {e:#}");
            1
        }
    }
}

/// The signals a file command stops on, and its source (a source that fails to open: exit 1).
fn signals_and_source(cfg: &Config) -> Result<(Shutdown, Box<dyn crate::capture::FrameSource>), i32> {
    let stop = signals()?;
    match pipeline::open_source(cfg, &stop) {
        Ok(s) => Ok((stop, s)),
        Err(e) => {
            eprintln!("lookout: {e}");
            Err(1)
        }
    }
}

fn cmd_detect(args: &Args) -> i32 {
    if !args.json {
        eprintln!("lookout: detect writes JSON lines; pass --json\n\n{USAGE}");
        return 2;
    }
    if args.source.is_none() {
        eprintln!("lookout: detect needs --source FILE\n\n{USAGE}");
        return 2;
    }
    let (cfg, mut model, _) = match config_and_model(args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (stop, mut source) = match signals_and_source(&cfg) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match detect_loop(&mut model, source.as_mut(), cfg.source.frames, &stop) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            1
        }
    }
}

/// Reads the next good frame into `frame`: `Ok(false)` at the end of the source or on a stop; corrupt
/// frames are skipped (logged), as `run` skips them.
fn next_good_frame(source: &mut dyn FrameSource, frame: &mut Frame) -> Result<bool, CaptureError> {
    loop {
        match source.next_frame(frame) {
            Ok(Next::Frame) => return Ok(true),
            Ok(Next::End) => return Ok(false),
            Err(CaptureError::Io(e)) if crate::shutdown::is_stopped(&e) => return Ok(false),
            Err(CaptureError::Corrupt { index, reason }) => log::warn!("skipping corrupt frame {index}: {reason}"),
            Err(e) => return Err(e),
        }
    }
}

fn detect_loop(
    model: &mut Model,
    source: &mut dyn FrameSource,
    limit: Option<u64>,
    stop: &Shutdown,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut frame = Frame::with_capacity(source.info().frame_len());
    let mut dets = Vec::with_capacity(model.max_candidates());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut done = 0u64;
    while limit.is_none_or(|n| done < n) && !stop.is_set() && next_good_frame(source, &mut frame)? {
        done = done.saturating_add(1);
        let meta = FrameMeta::from(&frame);
        let geom = model.preprocessor.run(&frame, model.engine.input_mut());
        model.engine.run()?;
        let engine = &model.engine;
        model.decoder.decode(|i| engine.output(i), &geom, &mut dets);
        let list: Vec<serde_json::Value> = dets
            .iter()
            .map(|d| {
                serde_json::json!({
                    "class": model.manifest.labels.get(d.class_id as usize).map(String::as_str).unwrap_or("?"),
                    "class_id": d.class_id,
                    "score": d.score,
                    "box": d.bbox,
                })
            })
            .collect();
        let line = serde_json::json!({"frame": meta.index, "pts_ms": meta.pts_ms, "detections": list});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn cmd_replay(args: &Args) -> i32 {
    if args.source.is_none() {
        eprintln!("lookout: replay needs --source FILE\n\n{USAGE}");
        return 2;
    }
    let (cfg, model, _) = match config_and_model(args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Err(code) = check_rules(&cfg, &model) {
        return code;
    }
    let (stop, mut source) = match signals_and_source(&cfg) {
        Ok(v) => v,
        Err(code) => return code,
    };
    // Decisions only: nothing is sent anywhere, no relay switched, no broker told, no journal written.
    let mut cfg = cfg;
    cfg.gpio = crate::config::GpioConfig::default();
    cfg.mqtt = None;
    cfg.journal.off = true;
    let arming = crate::shutdown::Arming::new(true);
    let port = crate::output::serial::Port::Writer(Box::new(std::io::sink()));
    let analyzer =
        pipeline::open_output(&cfg, Some(port), &arming).and_then(|output| Analyzer::new(model, &cfg, output, arming));
    let mut analyzer = match analyzer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            return 2;
        }
    };
    let result = replay_loop(&mut analyzer, &cfg.gate, source.as_mut(), cfg.source.frames, &stop, args.json);
    analyzer.output.shutdown(std::time::Duration::ZERO);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            1
        }
    }
}

/// Writes one frame's decisions: a JSON object per line, or text for people (frames with nothing in
/// them are left out of the text).
fn write_decisions(
    out: &mut impl std::io::Write,
    a: &Analyzer,
    d: &crate::rules::Decisions,
    meta: FrameMeta,
    json: bool,
    end: bool,
) -> std::io::Result<()> {
    use serde_json::{json, Map, Value};
    let dets = if end { &[][..] } else { a.detections() };
    let rules = &a.rules;
    let track_class = |i: usize| {
        a.tracker.track_of(i).and_then(|id| a.tracker.tracks().iter().find(|t| t.id == id)).map(|t| t.class_id)
    };
    if json {
        let detections: Vec<Value> = dets
            .iter()
            .enumerate()
            .map(|(i, det)| {
                let mut per_rule = Map::new();
                for r in 0..rules.rules.len() {
                    let why = d.reason(i, r).map_or_else(|| "untracked".to_string(), |x| x.to_string());
                    per_rule.insert(rules.name(r).to_string(), Value::String(why));
                }
                json!({
                    "class": a.label(det.class_id),
                    "track_class": track_class(i).map(|c| a.label(c)),
                    "score": det.score,
                    "box": det.bbox,
                    "track": a.tracker.track_of(i),
                    "rules": per_rule,
                })
            })
            .collect();
        let alerts: Vec<Value> = d
            .alerts
            .iter()
            .map(|x| {
                let mut v = json!({
                    "rule": rules.name(x.rule), "track": x.track, "class": a.label(x.class_id),
                    "score": x.score, "box": x.bbox,
                });
                if let (Some(dir), Some(o)) = (x.direction, v.as_object_mut()) {
                    o.insert("direction".into(), Value::String(dir.name().into()));
                }
                v
            })
            .collect();
        let clears: Vec<Value> =
            d.clears.iter().map(|c| json!({"rule": rules.name(c.rule), "track": c.track})).collect();
        let mut line = json!({
            "frame": meta.index, "pts_ms": meta.pts_ms, "detections": detections, "alerts": alerts, "clears": clears,
        });
        if let (true, Some(o)) = (end, line.as_object_mut()) {
            o.insert("end".into(), Value::Bool(true));
        }
        return writeln!(out, "{line}");
    }
    if dets.is_empty() && d.alerts.is_empty() && d.clears.is_empty() {
        return Ok(());
    }
    if end {
        writeln!(out, "end of stream after frame {} ({} ms):", meta.index, meta.pts_ms)?;
    } else {
        writeln!(out, "frame {} ({} ms):", meta.index, meta.pts_ms)?;
    }
    for (i, det) in dets.iter().enumerate() {
        let b = det.bbox.map(|v| v.round() as i64);
        let track = a.tracker.track_of(i).map_or_else(|| "-".to_string(), |t| t.to_string());
        write!(
            out,
            "  {} {:.2} [{},{},{},{}] track {track}:",
            a.label(det.class_id),
            det.score,
            b[0],
            b[1],
            b[2],
            b[3]
        )?;
        for r in 0..rules.rules.len() {
            let why = d.reason(i, r).map_or_else(|| "untracked".to_string(), |x| x.to_string());
            write!(out, " {}={why}", rules.name(r))?;
        }
        writeln!(out)?;
    }
    for x in &d.alerts {
        let dir = x.direction.map_or(String::new(), |d| format!(" crossing {}", d.name()));
        writeln!(out, "  ALERT {} track {} {} {:.2}{dir}", rules.name(x.rule), x.track, a.label(x.class_id), x.score)?;
    }
    for c in &d.clears {
        writeln!(out, "  CLEAR {} track {}", rules.name(c.rule), c.track)?;
    }
    Ok(())
}

fn replay_loop(
    a: &mut Analyzer,
    gate: &crate::config::GateConfig,
    source: &mut dyn FrameSource,
    limit: Option<u64>,
    stop: &Shutdown,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let info = source.info();
    let mut frame = Frame::with_capacity(info.frame_len());
    // The same motion gate as `run`: a skipped frame is decided with the last analysed frame's detections.
    let mut gate = crate::gate::Gate::new(gate, a.rules.zones(), info.width, info.height);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut done = 0u64;
    let mut last = FrameMeta::default();
    let (mut alerts, mut clears) = (0usize, 0usize);
    while limit.is_none_or(|n| done < n) && !stop.is_set() && next_good_frame(source, &mut frame)? {
        done = done.saturating_add(1);
        frame.unix_ms = crate::frame::unix_ms_now();
        let meta = FrameMeta::from(&frame);
        if gate.check(&frame).analyse() {
            let geom = a.prepare(&frame);
            a.infer()?;
            a.decode(&geom);
        }
        a.decide(meta);
        let d = a.decisions();
        (alerts, clears) = (alerts.saturating_add(d.alerts.len()), clears.saturating_add(d.clears.len()));
        write_decisions(&mut out, a, d, meta, json, false)?;
        last = meta;
    }
    if !stop.is_set() {
        a.finish();
        let d = a.decisions();
        clears = clears.saturating_add(d.clears.len());
        write_decisions(&mut out, a, d, last, json, true)?;
    }
    out.flush()?;
    let skipped = gate.skipped;
    log::info!("replay: {done} frames, {skipped} of them skipped by the motion gate, {alerts} alerts, {clears} clears");
    Ok(())
}
