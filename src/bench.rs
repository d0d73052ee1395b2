//! `lookout bench`: per-stage timings measured on the device itself.
//!
//! Why in the binary: the numbers that matter are the ones on the board in the field (a Pi 4 is not this
//! workstation), and users compare us with other products by them. The bench runs the real stages, one
//! frame at a time on one thread, over the first frames of a clip, and reports the median and 90th
//! percentile of each stage and its share of the frame, so one run gives comparable ratios even on a
//! noisy machine.

use std::time::{Duration, Instant};

use crate::capture::{CaptureError, FrameSource, Next};
use crate::frame::Frame;
use crate::model::Model;

/// One stage's samples.
#[derive(Debug, Default)]
pub struct Stage {
    pub name: &'static str,
    pub samples: Vec<Duration>,
}

impl Stage {
    fn percentile(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort_unstable();
        s.get(((s.len().saturating_sub(1)) as f64 * p).round() as usize).copied().unwrap_or_default()
    }
    pub fn median(&self) -> Duration {
        self.percentile(0.5)
    }
    pub fn p90(&self) -> Duration {
        self.percentile(0.9)
    }
}

/// Times source (read + decode), preprocess, inference and decode+NMS over up to `frames` frames.
pub fn run(model: &mut Model, source: &mut dyn FrameSource, frames: usize) -> anyhow::Result<Vec<Stage>> {
    let mut stages = ["source", "preprocess", "inference", "decode+nms"]
        .map(|name| Stage { name, samples: Vec::with_capacity(frames) });
    let mut frame = Frame::with_capacity(source.info().frame_len());
    let mut dets = Vec::with_capacity(model.max_candidates());
    // One untimed frame first: tract and the caches warm up.
    let mut warm = true;
    while stages[0].samples.len() < frames {
        let t0 = Instant::now();
        match source.next_frame(&mut frame) {
            Ok(Next::Frame) => {}
            Ok(Next::End) => break,
            Err(CaptureError::Corrupt { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        let t1 = Instant::now();
        let geom = model.preprocessor.run(&frame, model.engine.input_mut());
        let t2 = Instant::now();
        model.engine.run()?;
        let t3 = Instant::now();
        let engine = &model.engine;
        model.decoder.decode(|i| engine.output(i), &geom, &mut dets);
        let t4 = Instant::now();
        if warm {
            warm = false;
            continue;
        }
        for (s, d) in stages.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
            s.samples.push(d);
        }
    }
    Ok(stages.into())
}

/// The report `lookout bench` prints.
pub fn report(stages: &[Stage]) -> String {
    let total: f64 = stages.iter().map(|s| s.median().as_secs_f64()).sum();
    let mut out = format!("{} frames, one thread\n", stages.first().map_or(0, |s| s.samples.len()));
    out.push_str("stage         median ms   p90 ms   share of frame\n");
    for s in stages {
        let m = s.median().as_secs_f64();
        out.push_str(&format!(
            "{:<12} {:>10.2} {:>8.2} {:>10.0}%\n",
            s.name,
            m * 1e3,
            s.p90().as_secs_f64() * 1e3,
            100.0 * m / total.max(1e-12)
        ));
    }
    out.push_str(&format!(
        "sum of medians {:.2} ms = {:.1} frames/s on one core\n",
        total * 1e3,
        1.0 / total.max(1e-12)
    ));
    out
}
