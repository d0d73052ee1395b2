//! `lookout bench`: the configured pipeline, run as fast as the source allows, measured from inside.
//!
//! Why in the binary: the numbers that matter are the ones on the board in the field (a Pi 4 is not this
//! workstation), and users compare us with other products by them. The bench runs the real pipeline
//! (`pipeline::run`: capture thread, motion gate, every engine, tracking and rules) with the outputs
//! replaced by a sink and the source read as fast as it goes, and reports what a user compares: frames a
//! second, the time from process start to the first decision, per-stage and end-to-end latency
//! percentiles, dropped and skipped frames, peak memory, and the heap allocations per frame in the steady
//! state, outside tract and inside it (the binary's counting allocator, [`crate::metrics::alloc`]).

use serde_json::{json, Value};

use crate::metrics::{alloc, Histogram};
use crate::pipeline::Summary;

fn ms(h: &Histogram, p: f64) -> f64 {
    (h.percentile(p).as_secs_f64() * 1e5).round() / 100.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The report as one JSON object (`--json` prints it as is).
pub fn report(s: &Summary, model: &str) -> Value {
    let r = &s.report;
    let t = &r.timings;
    let span = match (r.first_decision, r.last_decision) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    // Frames a second between the first decision and the last (start-up is reported on its own).
    let fps = if span > 0.0 { r.decided.saturating_sub(1) as f64 / span } else { 0.0 };
    let startup_ms = r.first_decision.and_then(|first| {
        crate::metrics::ms_since_process_start().map(|now| now - first.elapsed().as_secs_f64() * 1e3)
    });
    let per_frame = |n: u64| -> Value {
        match r.allocs {
            Some(w) if alloc::installed() && w.frames > 0 => json!(round2(n as f64 / w.frames as f64)),
            _ => Value::Null,
        }
    };
    let (outside, tract) = r.allocs.map_or((0, 0), |w| (w.all.saturating_sub(w.tract), w.tract));
    let stage = |h: &Histogram| json!({"p50": ms(h, 0.5), "p99": ms(h, 0.99), "n": h.count()});
    json!({
        "fps": round2(fps),
        "startup_ms": startup_ms.map(round2),
        "infer_ms_p50": ms(&t.inference, 0.5),
        "e2e_ms_p50": ms(&t.end_to_end, 0.5),
        "e2e_ms_p99": ms(&t.end_to_end, 0.99),
        "peak_rss_kb": crate::metrics::peak_rss_kb(),
        "allocs_per_frame": per_frame(outside),
        "allocs_per_frame_tract": per_frame(tract),
        "skipped": s.skipped,
        "dropped": s.dropped,
        "engines": r.engines,
        "model": model,
        "frames": r.decided,
        "analysed": s.analysed,
        "corrupt": s.corrupt,
        "alerts": s.alerts,
        "engine_rss_kb": r.engine_rss_kb,
        "engine_plan_kb": crate::metrics::runplan::largest_plan_kb(),
        "alloc_window_frames": r.allocs.map_or(0, |w| w.frames),
        "jpeg_arena_overflows": alloc::Arena::overflows(),
        "stages_ms": {
            "gate": stage(&t.gate),
            "preprocess": stage(&t.preprocess),
            "inference": stage(&t.inference),
            "decode": stage(&t.decode),
            "decide": stage(&t.decide),
            "end_to_end": stage(&t.end_to_end),
        },
    })
}

/// The report for people.
pub fn text(v: &Value) -> String {
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let mut out = format!(
        "{} frames ({} analysed, {} skipped by the motion gate, {} dropped) on {} engine(s), model {}\n",
        g("frames"),
        g("analysed"),
        g("skipped"),
        g("dropped"),
        g("engines"),
        g("model").as_str().unwrap_or("?")
    );
    out.push_str(&format!(
        "{} frames/s; first decision {} ms after the process started; peak memory {} KiB\n",
        g("fps"),
        g("startup_ms"),
        g("peak_rss_kb")
    ));
    out.push_str("stage          p50 ms    p99 ms   samples\n");
    if let Some(Value::Object(stages)) = v.get("stages_ms") {
        for (name, s) in stages {
            let f = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
            out.push_str(&format!("{name:<12} {:>8} {:>9} {:>9}\n", f("p50"), f("p99"), f("n")));
        }
    }
    out.push_str(&format!(
        "heap allocations per frame in the steady state: {} outside tract, {} inside tract's run\n",
        g("allocs_per_frame"),
        g("allocs_per_frame_tract")
    ));
    out
}
