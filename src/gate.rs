//! Motion gating: skip inference on frames where nothing moved.
//!
//! Why: a sensor on a gate or a shop door looks at a still scene most of the day, and inference is
//! nearly all of its CPU (and of a board's power and heat). A frame is cut into cells of 16 x 16 pixels;
//! each cell's mean luma (from a sparse sample: every fourth pixel of every fourth row, 16 a cell) is compared with a
//! background that follows the scene slowly (each analysed or skipped frame moves it 1/16 of the way),
//! so lighting that drifts over minutes is not motion, and sensor noise averages out over a cell. When
//! the rules all watch zones, only cells touching a zone count. A frame with at least `min_cells` moved
//! cells is analysed; so is the first frame, a frame of a new size, and the first frame after
//! `max_skip_ms` of skipping, so a still object is re-checked and tracks stay alive. What a skipped frame
//! decides is left to the caller (the pipeline holds the last analysed frame's detections).
//!
//! No I/O and no clock: the frame's own stream time comes in. All memory is allocated with the gate,
//! for the largest frame it will see.

use crate::config::GateConfig;
use crate::frame::{Frame, PixelFormat};
use crate::rules::zone::{self, Point};

/// Cell side in source pixels.
pub const CELL: u32 = 16;

/// Why a frame is analysed, or that it is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Gating is off.
    Off,
    /// The first frame, or the frame size changed.
    First,
    /// This many watched cells moved.
    Motion(u32),
    /// Nothing moved, but `max_skip_ms` has passed since the last analysed frame.
    Recheck,
    /// Nothing moved: no inference.
    Skip,
}

impl Verdict {
    pub fn analyse(self) -> bool {
        self != Verdict::Skip
    }
}

#[derive(Debug)]
pub struct Gate {
    enabled: bool,
    threshold: f32,
    min_cells: u32,
    max_skip_ms: u64,
    zones: Option<Vec<Vec<Point>>>,
    /// Frame size the cells are laid out for.
    size: (u32, u32),
    cols: usize,
    rows: usize,
    /// Per cell: background mean, this frame's mean, watched.
    bg: Vec<f32>,
    cur: Vec<f32>,
    watched: Vec<bool>,
    last_analysed_pts: Option<u64>,
    pub skipped: u64,
}

impl Gate {
    /// A gate for frames up to `max_w` x `max_h` pixels; `zones` as [`crate::rules::RuleSet::zones`].
    pub fn new(cfg: &GateConfig, zones: Option<Vec<Vec<Point>>>, max_w: u32, max_h: u32) -> Gate {
        let cells = (max_w.div_ceil(CELL) as usize).saturating_mul(max_h.div_ceil(CELL) as usize).max(1);
        Gate {
            enabled: cfg.enabled,
            threshold: f32::from(cfg.threshold),
            min_cells: cfg.min_cells,
            max_skip_ms: cfg.max_skip_ms,
            zones,
            size: (0, 0),
            cols: 0,
            rows: 0,
            bg: Vec::with_capacity(cells),
            cur: Vec::with_capacity(cells),
            watched: Vec::with_capacity(cells),
            last_analysed_pts: None,
            skipped: 0,
        }
    }

    /// Lays the cells out for a `w` x `h` frame. Returns false if it would need more cells than were
    /// allocated (a frame larger than the gate was made for: then every frame is analysed).
    fn layout(&mut self, w: u32, h: u32) -> bool {
        let (cols, rows) = (w.div_ceil(CELL) as usize, h.div_ceil(CELL) as usize);
        let n = cols.saturating_mul(rows);
        if n > self.bg.capacity() || n == 0 {
            return false;
        }
        (self.size, self.cols, self.rows) = ((w, h), cols, rows);
        self.bg.clear();
        self.bg.resize(n, 0.0);
        self.cur.clear();
        self.cur.resize(n, 0.0);
        self.watched.clear();
        let (fw, fh) = (w as f32, h as f32);
        for r in 0..rows {
            for c in 0..cols {
                let (x0, y0) = (c as f32 * CELL as f32 / fw, r as f32 * CELL as f32 / fh);
                let (x1, y1) =
                    (((c + 1) as f32 * CELL as f32 / fw).min(1.0), ((r + 1) as f32 * CELL as f32 / fh).min(1.0));
                let probes = [(x0, y0), (x1, y0), (x0, y1), (x1, y1), ((x0 + x1) / 2.0, (y0 + y1) / 2.0)];
                let watched = match &self.zones {
                    None => true,
                    Some(zs) => zs.iter().any(|z| probes.iter().any(|&(x, y)| zone::contains(z, Point { x, y }))),
                };
                self.watched.push(watched);
            }
        }
        true
    }

    /// Decides whether `frame` is analysed, and updates the background.
    pub fn check(&mut self, frame: &Frame) -> Verdict {
        if !self.enabled {
            return Verdict::Off;
        }
        let first = (frame.width, frame.height) != self.size;
        if first && !self.layout(frame.width, frame.height) {
            return Verdict::First;
        }
        self.measure(frame);
        let alpha = 1.0 / 16.0;
        let mut moved = 0u32;
        for ((bg, &cur), &watched) in self.bg.iter_mut().zip(&self.cur).zip(&self.watched) {
            if first {
                *bg = cur;
                continue;
            }
            if watched && (cur - *bg).abs() > self.threshold {
                moved = moved.saturating_add(1);
            }
            *bg += (cur - *bg) * alpha;
        }
        let pts = frame.pts_ms;
        let verdict = if first || self.last_analysed_pts.is_none() {
            Verdict::First
        } else if moved >= self.min_cells {
            Verdict::Motion(moved)
        } else if self.last_analysed_pts.is_some_and(|t| pts.saturating_sub(t) >= self.max_skip_ms) {
            Verdict::Recheck
        } else {
            Verdict::Skip
        };
        if verdict.analyse() {
            self.last_analysed_pts = Some(pts);
        } else {
            self.skipped = self.skipped.saturating_add(1);
        }
        verdict
    }

    /// Each cell's mean luma over a sparse sample (16 of its 256 pixels), into `cur`.
    fn measure(&mut self, frame: &Frame) {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let px = frame.pixels();
        let cols = self.cols;
        self.cur.iter_mut().for_each(|v| *v = 0.0);
        let luma = |x: usize, y: usize| -> f32 {
            match frame.format {
                PixelFormat::Rgb24 => {
                    let i = y.saturating_mul(w).saturating_add(x).saturating_mul(3);
                    match px.get(i..i.saturating_add(3)) {
                        Some(&[r, g, b]) => 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b),
                        _ => 0.0,
                    }
                }
                PixelFormat::Yuyv => {
                    let i = y.saturating_mul(w.div_ceil(2).saturating_mul(4)).saturating_add(x.saturating_mul(2));
                    px.get(i).copied().map_or(0.0, f32::from)
                }
                // Grey, I420 and NV12 start with the full-size luma plane.
                PixelFormat::Grey | PixelFormat::I420 | PixelFormat::Nv12 => {
                    px.get(y.saturating_mul(w).saturating_add(x)).copied().map_or(0.0, f32::from)
                }
            }
        };
        let cell = CELL as usize;
        for r in 0..self.rows {
            let (y0, y1) = (r.saturating_mul(cell), r.saturating_add(1).saturating_mul(cell).min(h));
            for c in 0..cols {
                let (x0, x1) = (c.saturating_mul(cell), c.saturating_add(1).saturating_mul(cell).min(w));
                let (mut sum, mut n) = (0.0f32, 0u32);
                for y in (y0..y1).step_by(4) {
                    for x in (x0..x1).step_by(4) {
                        sum += luma(x, y);
                        n = n.saturating_add(1);
                    }
                }
                if let Some(v) = self.cur.get_mut(r.saturating_mul(cols).saturating_add(c)) {
                    *v = sum / n.max(1) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn grey(w: u32, h: u32, pts: u64, f: impl Fn(u32, u32) -> u8) -> Frame {
        let mut fr = Frame::with_capacity((w * h) as usize);
        fr.format = PixelFormat::Grey;
        (fr.width, fr.height, fr.pts_ms, fr.len) = (w, h, pts, (w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                fr.data[(y * w + x) as usize] = f(x, y);
            }
        }
        fr
    }

    fn cfg() -> GateConfig {
        GateConfig { enabled: true, threshold: 10, min_cells: 2, max_skip_ms: 1000 }
    }

    /// Deterministic noise of +-4 levels, like a sensor's.
    fn noise(x: u32, y: u32, t: u64) -> u8 {
        let h = (x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ (t as u32).wrapping_mul(83492791)) % 9;
        120 + h as u8
    }

    #[test]
    fn a_still_noisy_scene_is_skipped_but_rechecked_and_motion_is_analysed() {
        let mut g = Gate::new(&cfg(), None, 160, 96);
        assert_eq!(g.check(&grey(160, 96, 0, |x, y| noise(x, y, 0))), Verdict::First);
        let mut verdicts = Vec::new();
        for t in 1..=50 {
            verdicts.push(g.check(&grey(160, 96, t * 40, |x, y| noise(x, y, t))));
        }
        // 50 frames over 2 s: skipped but for one re-check at 1 s and one at 2 s.
        let rechecks = verdicts.iter().filter(|v| **v == Verdict::Recheck).count();
        assert_eq!(rechecks, 2, "{verdicts:?}");
        assert_eq!(g.skipped, 48);
        // A 40 x 40 block of dark pixels walks in: motion (several cells).
        let v = g.check(&grey(160, 96, 51 * 40, |x, y| {
            if (20..60).contains(&x) && (30..70).contains(&y) {
                20
            } else {
                noise(x, y, 51)
            }
        }));
        assert!(matches!(v, Verdict::Motion(n) if n >= 4), "{v:?}");
    }

    #[test]
    fn slow_lighting_drift_is_not_motion_and_off_means_off() {
        let mut g = Gate::new(&cfg(), None, 64, 64);
        for t in 0..120u64 {
            // One level brighter every fourth frame (6 levels a second at 25 fps): 30 levels in all, which
            // the background follows (it lags 4 levels behind).
            let v = g.check(&grey(64, 64, t * 40, |_, _| 100 + (t / 4) as u8));
            assert!(matches!(v, Verdict::First | Verdict::Skip | Verdict::Recheck), "frame {t}: {v:?}");
        }
        let mut off = Gate::new(&GateConfig { enabled: false, ..cfg() }, None, 64, 64);
        assert_eq!(off.check(&grey(64, 64, 0, |_, _| 0)), Verdict::Off);
        assert!(Verdict::Off.analyse());
    }

    #[test]
    fn only_cells_touching_a_zone_count() {
        // The zone is the left half; motion on the right half is ignored, on the left it is not.
        let left = vec![
            Point { x: 0.0, y: 0.0 },
            Point { x: 0.5, y: 0.0 },
            Point { x: 0.5, y: 1.0 },
            Point { x: 0.0, y: 1.0 },
        ];
        let mut g = Gate::new(&cfg(), Some(vec![left]), 128, 64);
        g.check(&grey(128, 64, 0, |_, _| 100));
        let right = g.check(&grey(128, 64, 40, |x, _| if x >= 80 { 200 } else { 100 }));
        assert_eq!(right, Verdict::Skip);
        let left = g.check(&grey(128, 64, 80, |x, _| if x < 40 { 200 } else { 100 }));
        assert!(matches!(left, Verdict::Motion(_)), "{left:?}");
    }

    #[test]
    fn a_new_size_starts_over_and_a_frame_too_large_is_analysed() {
        let mut g = Gate::new(&cfg(), None, 64, 64);
        assert_eq!(g.check(&grey(64, 64, 0, |_, _| 100)), Verdict::First);
        assert_eq!(g.check(&grey(32, 32, 40, |_, _| 100)), Verdict::First);
        assert_eq!(g.check(&grey(32, 32, 80, |_, _| 100)), Verdict::Skip);
        assert_eq!(g.check(&grey(128, 128, 120, |_, _| 100)), Verdict::First);
        assert_eq!(g.check(&grey(128, 128, 160, |_, _| 100)), Verdict::First);
    }
}
