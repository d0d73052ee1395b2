//! The steady state allocates nothing: frames go source → ring → preprocess → (tract) → decode → rules →
//! sinks without touching the heap, except inside tract's own `run`.
//!
//! Method: a counting global allocator. The real pipeline (`pipeline::run`, capture thread and all) runs
//! twice on raw Y4M clips of 60 and 160 frames from the shipped footage; everything set up once (threads,
//! ring, buffers) costs the same in both runs, so the difference divided by the extra frames is what
//! one frame costs. tract's `run` is measured alone on the same model and the same frames and subtracted;
//! every measurement runs in a process of its own, as tract keeps caches across runs. A JPEG source is
//! measured the same way and reported: zune-jpeg allocates inside its decoder for every frame.

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(n as u64, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn counts() -> (u64, u64) {
    (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

use lookout::config::{Config, SourceKind};
use lookout::model::{Model, ModelSource};
use lookout::pipeline::{self, Analyzer};

/// Allocations (count, bytes) of one whole `pipeline::run` with the given config. Alerts go to a sink
/// that discards them; GPIO is the logging pin (no logger is installed, so logging is a no-op).
fn run_once(cfg: &Config) -> ((u64, u64), pipeline::Summary) {
    let (model, _) = Model::load_checked(&ModelSource::Builtin).unwrap();
    let port = lookout::output::serial::Port::Writer(Box::new(std::io::sink()));
    let arming = lookout::shutdown::Arming::new(true);
    let output = pipeline::open_output(cfg, Some(port), &arming).unwrap();
    let analyzer = Analyzer::new(model, cfg, output, arming).unwrap();
    let stop = lookout::shutdown::Shutdown::new().unwrap();
    // The output and GPIO threads just started make their one-time allocations (3 each: thread-local
    // set-up, their first wait) in their first milliseconds; let them, so they are not counted in one
    // run and not in the other.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let before = counts();
    let summary =
        pipeline::run(cfg, analyzer, &stop, &mut lookout::service::Notifier::none(), Default::default()).unwrap();
    let after = counts();
    ((after.0 - before.0, after.1 - before.1), summary)
}

/// The shipped clip with tracking and two zone rules (each half of the frame, one with a line-free
/// dwell, one with a schedule that is always on), so every per-frame stage runs.
fn file_config(kind: SourceKind, path: &std::path::Path) -> Config {
    let rules = r#"
[[rule]]
name = "left"
classes = ["person", "car"]
zone = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
confirm = "2/3"
dwell_ms = 40
[[rule]]
name = "right"
zone = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
confirm = "3/5"
schedule = ["00:00-24:00"]
"#;
    let mut cfg = Config::parse(rules, "steady.toml", std::path::Path::new("/")).unwrap();
    assert_eq!(cfg.rule.len(), 2);
    cfg.source.kind = kind;
    cfg.source.path = Some(path.to_path_buf());
    cfg
}

/// tract's own allocations (count, bytes) over the `run`s a pipeline makes on the file at `path`: a
/// fresh model (its self-test is its first run), then every frame of the file in order, counting only
/// inside `Engine::run`. tract's count can vary from input to input (on aarch64 it did, by a few in
/// thousands), so it is measured on exactly the inputs the pipeline saw.
fn tract_allocs_on(kind: SourceKind, path: &std::path::Path) -> (u64, u64) {
    use lookout::capture::Next;
    let cfg = file_config(kind, path);
    let (mut model, _) = Model::load_checked(&ModelSource::Builtin).unwrap();
    let mut source = pipeline::open_source(&cfg, &lookout::shutdown::Shutdown::new().unwrap()).unwrap();
    let mut frame = lookout::frame::Frame::with_capacity(source.info().frame_len());
    let (mut n, mut bytes) = (0, 0);
    while source.next_frame(&mut frame).unwrap() == Next::Frame {
        model.preprocessor.run(&frame, model.engine.input_mut());
        let before = counts();
        model.engine.run().unwrap();
        let after = counts();
        n += after.0 - before.0;
        bytes += after.1 - before.1;
    }
    (n, bytes)
}

/// One measurement, in a process of its own so that no global or per-thread state one measurement leaves
/// (tract keeps caches) changes the next one's count: `LOOKOUT_STEADY_CHILD=MODE:KIND:PATH`, MODE
/// `pipeline` or `tract`, KIND `y4m` or `mjpeg`. Prints `MEASURED <allocations> <bytes> <analysed> <alerts>`.
#[test]
#[ignore = "helper run by steady_state_allocates_nothing_outside_tract in a child process"]
fn measure_in_child() {
    let spec = std::env::var("LOOKOUT_STEADY_CHILD").expect("run by steady_state_allocates_nothing_outside_tract");
    let (mode, rest) = spec.split_once(':').unwrap();
    let (kind, path) = rest.split_once(':').unwrap();
    let kind = if kind == "y4m" { SourceKind::Y4m } else { SourceKind::Mjpeg };
    let path = std::path::Path::new(path);
    let (n, bytes, analysed, alerts) = match mode {
        "pipeline" => {
            let ((n, bytes), s) = run_once(&file_config(kind, path));
            (n, bytes, s.analysed, s.alerts)
        }
        _ => {
            let (n, bytes) = tract_allocs_on(kind, path);
            (n, bytes, 0, 0)
        }
    };
    println!("MEASURED {n} {bytes} {analysed} {alerts}");
}

/// Runs [`measure_in_child`] in a new process and returns (allocations, bytes, analysed, alerts).
fn measure(mode: &str, kind: &str, path: &std::path::Path) -> (u64, u64, u64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "measure_in_child", "--nocapture", "--test-threads", "1"])
        .env("LOOKOUT_STEADY_CHILD", format!("{mode}:{kind}:{}", path.display()))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let line =
        stdout.lines().find_map(|l| l.split_once("MEASURED ").map(|(_, v)| v)).unwrap_or_else(|| panic!("{stdout}"));
    let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2], v[3])
}

#[test]
fn steady_state_allocates_nothing_outside_tract() {
    let dir = scratch("steady");
    // 60 and 160 frames; under qemu-user (LOOKOUT_TEST_FRAMES=40) 10 and 20, which still hold the cyclist's
    // alert (frame 31), as this test runs the pipeline eight times.
    let (short_n, long_n) = if clip_frames() < 250 { (clip_frames() / 4, clip_frames() / 2) } else { (60, 160) };
    let (short_y4m, long_y4m) = (dir.join("short.y4m"), dir.join("long.y4m"));
    clip_as_y4m(&short_y4m, 20, short_n);
    clip_as_y4m(&long_y4m, 20, long_n);

    let short = measure("pipeline", "y4m", &short_y4m);
    let long = measure("pipeline", "y4m", &long_y4m);
    assert_eq!((short.2, long.2), (short_n as u64, long_n as u64));
    assert!(long.3 > 0, "the frames must exercise rules and sinks, not only the model");
    let extra_frames = long.2 - short.2;
    let tract_short = measure("tract", "y4m", &short_y4m);
    let tract_long = measure("tract", "y4m", &long_y4m);
    let tract = ((tract_long.0 - tract_short.0) / extra_frames, (tract_long.1 - tract_short.1) / extra_frames);
    let per_frame_total = (long.0 - short.0) as f64 / extra_frames as f64;
    let outside_tract = (long.0 - short.0) as i64 - (tract_long.0 - tract_short.0) as i64;
    println!(
        "per frame: {per_frame_total:.1} allocations in all; tract's run: {} allocations, {} bytes a frame; \
         outside tract over {extra_frames} frames: {outside_tract} allocations ({} vs {} alerts)",
        tract.0, tract.1, short.3, long.3
    );
    assert_eq!(outside_tract, 0, "the pipeline outside tract allocated in the steady state");

    // The JPEG source, reported rather than asserted: zune-jpeg builds its decoder state per frame.
    let bytes = std::fs::read(data("bikes.mjpeg")).unwrap();
    let mut r = std::io::Cursor::new(&bytes[..]);
    let mut jpeg = Vec::new();
    let mut short = Vec::new();
    let mut long = Vec::new();
    for i in 0..long_n {
        lookout::capture::mjpeg::split_next(&mut r, &mut jpeg).unwrap();
        if i < short_n {
            short.extend_from_slice(&jpeg);
        }
        long.extend_from_slice(&jpeg);
    }
    let (short_mjpeg, long_mjpeg) = (dir.join("short.mjpeg"), dir.join("long.mjpeg"));
    std::fs::write(&short_mjpeg, short).unwrap();
    std::fs::write(&long_mjpeg, long).unwrap();
    let (a, b) = (measure("pipeline", "mjpeg", &short_mjpeg), measure("pipeline", "mjpeg", &long_mjpeg));
    let (ta, tb) = (measure("tract", "mjpeg", &short_mjpeg), measure("tract", "mjpeg", &long_mjpeg));
    let extra = (long_n - short_n) as f64;
    let outside = ((b.0 - a.0) as f64 - (tb.0 - ta.0) as f64) / extra;
    let outside_bytes = ((b.1 - a.1) as f64 - (tb.1 - ta.1) as f64) / extra;
    println!(
        "MJPEG source: {outside:.1} allocations ({outside_bytes:.0} bytes) per frame outside tract (JPEG decoder)"
    );
}
