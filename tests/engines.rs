//! Throughput features through the real binary: several inference engines decide exactly what one does,
//! the motion gate skips a still street but not what walks into it, and `lookout bench --json` reports
//! what it measured (every key, no allocation per frame outside tract).

mod common;
use common::*;

use std::path::Path;

/// A config `name`.toml in `dir` for a file source read as fast as it goes, with `extra` TOML appended.
fn config(dir: &Path, name: &str, kind: &str, source: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!("[source]\nkind = \"{kind}\"\npath = \"{}\"\npace = \"fast\"\n{extra}\n", source.display()),
    )
    .unwrap();
    p
}

/// The alert and clear sentences of a run, without sequence numbers and timestamps.
fn decisions(stdout: &[u8]) -> Vec<String> {
    sentences(stdout)
        .into_iter()
        .filter(|f| f[0] == "LKALR" || f[0] == "LKCLR")
        .map(|f| format!("{},{}", f[0], f[3..].join(",")))
        .collect()
}

fn run(cfg: &Path) -> (Vec<String>, String) {
    let out = lookout(&["run", "--config", cfg.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (decisions(&out.stdout), stderr)
}

#[test]
fn two_engines_decide_exactly_what_one_does() {
    let dir = scratch("engines-same");
    let clip = data("bikes.mjpeg");
    let frames = clip_frames();
    let limit = format!("frames = {frames}\n");
    let one = config(&dir, "one", "mjpeg", &clip, &format!("{limit}[inference]\nengines = 1\n"));
    let two = config(&dir, "two", "mjpeg", &clip, &format!("{limit}[inference]\nengines = 2\n[ring]\nslots = 4\n"));
    let (a, log_a) = run(&one);
    let (b, log_b) = run(&two);
    assert!(log_a.contains("1 inference engine "), "{log_a}");
    assert!(log_b.contains("2 inference engines"), "{log_b}");
    assert!(a.iter().filter(|s| s.starts_with("LKALR")).count() >= 2, "the clip must alert: {a:?}");
    assert_eq!(a, b, "the sentences of 1 and 2 engines");
    // And `auto` (one per core, at most slots - 1) too; the same again with gating off.
    let auto = config(&dir, "auto", "mjpeg", &clip, &format!("{limit}[gate]\nenabled = false\n"));
    let (c, log_c) = run(&auto);
    assert!(log_c.contains("motion gating off"), "{log_c}");
    assert_eq!(a, c);
    // lookout's depthwise and max pool kernels decide what tract's own do, both ways named.
    for k in ["tract", "lookout"] {
        let kc = config(&dir, k, "mjpeg", &clip, &format!("{limit}[inference]\nkernels = \"{k}\"\n"));
        let (d, _) = run(&kc);
        assert_eq!(a, d, "the sentences with kernels = {k}");
    }
}

#[test]
fn the_gate_skips_a_still_street_and_still_alerts_on_what_comes_in() {
    let dir = scratch("gate-still");
    // 5 s of a still street (frame 0 of the clip, which has nothing to alert on, with fresh sensor
    // noise in every frame), then the clip goes on: a car comes in top right (frame 17 of the clip) and
    // the cyclist (31).
    let still = if clip_frames() < 250 { 50 } else { 125 };
    let moving = if clip_frames() < 250 { 35 } else { 60 };
    let mut frames = vec![0usize; still];
    frames.extend(1..=moving);
    let clip = dir.join("still-street.y4m");
    frames_as_y4m(&clip, &frames, true);

    // The still part alone: at least 90% of the frames skipped (a re-check a second, max_skip_ms).
    let only_still = config(&dir, "only-still", "y4m", &clip, &format!("frames = {still}\n"));
    let out = lookout(&["bench", "--json", "--config", only_still.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = v["skipped"].as_u64().unwrap();
    assert_eq!(v["frames"].as_u64(), Some(still as u64), "{v}");
    assert!(skipped as f64 >= 0.9 * still as f64, "only {skipped} of {still} still frames skipped: {v}");
    assert!(v["analysed"].as_u64().unwrap() >= still as u64 / 25, "re-checked once a second: {v}");

    // The whole clip, gated and not: the same objects alert (what comes in is analysed), and the gated
    // run skipped the still part.
    let gated = config(&dir, "gated", "y4m", &clip, "");
    let ungated = config(&dir, "ungated", "y4m", &clip, "[gate]\nenabled = false\n");
    let (a, log) = run(&gated);
    let (b, _) = run(&ungated);
    // The same objects alert (track and class; a score can differ in its last digit where the first
    // frame a flickering detection is seen differs), each cleared once. When a clear comes may differ: a
    // detection that flickers in the still part is re-checked once a second instead of every frame.
    let objects = |v: &[String]| -> Vec<(String, String)> {
        let mut o: Vec<(String, String)> = v
            .iter()
            .filter(|s| s.starts_with("LKALR"))
            .map(|s| {
                let f: Vec<&str> = s.split(',').collect();
                (f[3].to_string(), f[4].to_string())
            })
            .collect();
        o.sort();
        o
    };
    let cleared = |v: &[String]| -> Vec<String> {
        let mut c: Vec<String> =
            v.iter().filter(|s| s.starts_with("LKCLR")).map(|s| s.rsplit(',').next().unwrap().to_string()).collect();
        c.sort();
        c
    };
    let (oa, ob) = (objects(&a), objects(&b));
    assert!(oa.iter().any(|(_, c)| c == "car"), "the car that came in: {a:?}");
    assert_eq!(oa, ob, "gated and ungated runs alert on the same objects:\n{a:?}\n{b:?}");
    assert_eq!(cleared(&a), oa.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(), "{a:?}");
    let summary = log.lines().find(|l| l.contains("done:")).unwrap_or_default().to_string();
    let analysed: u64 = summary.split(" analysed").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(analysed <= (moving + still / 10) as u64, "the gated run analysed {analysed}: {summary}");
}

#[test]
fn bench_json_reports_every_key_and_no_allocation_outside_tract() {
    let frames = clip_frames().min(120).to_string();
    let out = lookout(&["bench", "--json", "--source", "tests/data/bikes.mjpeg", "--frames", &frames]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "fps",
        "startup_ms",
        "infer_ms_p50",
        "e2e_ms_p50",
        "e2e_ms_p99",
        "peak_rss_kb",
        "allocs_per_frame",
        "allocs_per_frame_tract",
        "skipped",
        "dropped",
        "engines",
    ] {
        assert!(v.get(key).is_some_and(|x| !x.is_null()), "{key} missing or null: {v}");
    }
    assert_eq!(v["frames"].as_u64(), Some(frames.parse().unwrap()), "{v}");
    assert!(v["fps"].as_f64().unwrap() > 0.0 && v["infer_ms_p50"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["e2e_ms_p99"].as_f64().unwrap() >= v["e2e_ms_p50"].as_f64().unwrap(), "{v}");
    assert!(v["alloc_window_frames"].as_u64().unwrap() > 10, "{v}");
    // The JPEG decoder's allocations come from its arena; nothing else allocates per frame.
    assert_eq!(v["allocs_per_frame"].as_f64(), Some(0.0), "{v}");
    assert_eq!(v["jpeg_arena_overflows"].as_u64(), Some(0), "{v}");
    assert!(v["allocs_per_frame_tract"].as_f64().unwrap() > 0.0, "tract's own are counted apart: {v}");
    assert_eq!(v["dropped"].as_u64(), Some(0), "a file read as fast as it goes drops nothing: {v}");
    // The engines' runs are planned (metrics::runplan): FastestDet's large tensors alive at once are
    // about 3.6 MiB, far less than the process.
    let plan = v["engine_plan_kb"].as_u64().unwrap();
    assert!(plan > 1024 && plan < v["peak_rss_kb"].as_u64().unwrap() / 4, "{v}");
    // The people's report says the same.
    let out = lookout(&["bench", "--source", "tests/data/bikes.mjpeg", "--frames", &frames]);
    let report = text(&out.stdout);
    assert!(report.contains("frames/s") && report.contains("0.0 outside tract"), "{report}");
    // The op profile names tract's ops, and lookout's own kernels in place of tract's depthwise
    // convolution and max pool.
    let out = lookout(&["bench", "--ops", "--frames", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ops = text(&out.stdout);
    if cfg!(target_arch = "x86_64") {
        assert!(
            ops.contains("OptMatMul") && ops.contains("lookout.Depthwise") && ops.contains("lookout.MaxPool"),
            "{ops}"
        );
        assert!(!ops.contains("DepthWiseConv") && !ops.contains("OptMaxPool"), "{ops}");
    } else {
        assert!(ops.contains("DepthWiseConv"), "tract's own on ARM: {ops}");
    }
}

#[test]
fn bad_inference_and_gate_settings_are_refused_with_their_line() {
    let dir = scratch("engines-bad");
    for (what, body, field) in [
        ("zero engines", "[inference]\nengines = 0\n", "inference.engines"),
        ("nine engines", "[inference]\nengines = 9\n", "inference.engines"),
        ("a word", "[inference]\nengines = \"many\"\n", "inference.engines"),
        ("a float", "[inference]\nengines = 1.5\n", "inference.engines"),
        ("more engines than the ring holds", "[ring]\nslots = 3\n[inference]\nengines = 3\n", "inference.engines"),
        ("an unknown key", "[inference]\nthreads = 2\n", "inference"),
        ("unknown kernels", "[inference]\nkernels = \"fast\"\n", "inference.kernels"),
        ("kernels not a word", "[inference]\nkernels = 1\n", "inference.kernels"),
        ("a zero threshold", "[gate]\nthreshold = 0\n", "gate.threshold"),
        ("a threshold over 255", "[gate]\nthreshold = 300\n", "gate.threshold"),
        ("no cells", "[gate]\nmin_cells = 0\n", "gate.min_cells"),
        ("a skip too short", "[gate]\nmax_skip_ms = 50\n", "gate.max_skip_ms"),
        ("a skip too long", "[gate]\nmax_skip_ms = 60000\n", "gate.max_skip_ms"),
        ("not a switch", "[gate]\nenabled = \"yes\"\n", "gate.enabled"),
        ("an unknown gate key", "[gate]\nsensitivity = 3\n", "gate"),
    ] {
        let p = dir.join("bad.toml");
        std::fs::write(&p, format!("# a bad config\n{body}")).unwrap();
        for cmd in ["check", "run"] {
            let out =
                lookout(&[cmd, "--config", p.to_str().unwrap(), "--no-devices"][..if cmd == "check" { 4 } else { 3 }]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {what}: {err}");
            assert!(err.contains("bad.toml:") && err.contains(field), "{cmd}: {what}: {err}");
        }
    }
}
