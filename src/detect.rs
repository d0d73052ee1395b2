//! Detection: turning a model's raw output tensors into boxes in source-frame pixels.
//!
//! Why a module of its own: every detector family encodes boxes differently (grid cells with tanh offsets,
//! pre-decoded normalized corners, anchor-free strides with exp sizes), but what the rules and the outside
//! world need is one thing: class, score and a box in the pixels of the frame the camera gave. Decoders
//! write candidates into a vector allocated once with room for every anchor, then class-aware greedy NMS
//! compacts it in place, so decoding allocates nothing per frame. Decoding follows
//! `../shared/models/README.md`; `scripts/reference.py` decodes the same way, independently, in Python.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::preprocess::Geometry;

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class_id: u16,
    pub score: f32,
    /// x1, y1, x2, y2 in source-frame pixels.
    pub bbox: [f32; 4],
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// Intersection over union of two x1,y1,x2,y2 boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Class-aware greedy non-maximum suppression, in place: sorts by score (descending) and keeps a box only
/// if no kept box of the same class overlaps it by more than `iou_threshold`.
pub fn nms(dets: &mut Vec<Detection>, iou_threshold: f32) {
    dets.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.class_id.cmp(&b.class_id)));
    let mut kept = 0usize;
    for i in 0..dets.len() {
        let Some(&d) = dets.get(i) else { break };
        let before = dets.get(..kept).unwrap_or(&[]);
        let suppressed = before.iter().any(|k| k.class_id == d.class_id && iou(&k.bbox, &d.bbox) > iou_threshold);
        if !suppressed {
            if let Some(slot) = dets.get_mut(kept) {
                *slot = d;
            }
            kept = kept.saturating_add(1);
        }
    }
    dets.truncate(kept);
}

/// Detector output families the product can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// One output, 1 x (5 + classes) x H x W: objectness, tanh offsets, sigmoid sizes, class scores.
    Fastestdet,
    /// Two outputs: scores N x 2 (background, face) and boxes N x 4 (normalized x1, y1, x2, y2).
    Ultraface,
    /// Twelve outputs: cls, obj, bbox, kps for strides 8, 16, 32.
    Yunet,
}

impl DecoderKind {
    pub fn output_count(self) -> usize {
        match self {
            DecoderKind::Fastestdet => 1,
            DecoderKind::Ultraface => 2,
            DecoderKind::Yunet => 12,
        }
    }

    /// The number of classes the family has by design (the face detectors: one), if fixed.
    pub fn fixed_classes(self) -> Option<usize> {
        match self {
            DecoderKind::Fastestdet => None,
            DecoderKind::Ultraface | DecoderKind::Yunet => Some(1),
        }
    }

    /// Checks that outputs of these lengths are what this family gives for `classes` classes at a
    /// `w` x `h` input: a manifest whose labels do not match the model is refused at load, not left to
    /// decode nothing forever.
    pub fn check_outputs(self, lens: &[usize], classes: usize, w: usize, h: usize) -> Result<(), String> {
        let len = |i: usize| lens.get(i).copied().unwrap_or(0);
        match self {
            DecoderKind::Fastestdet => {
                let ch = classes.saturating_add(5);
                let grid = [8usize, 16, 32].into_iter().find(|s| {
                    let (gw, gh) = (w.checked_div(*s).unwrap_or(0), h.checked_div(*s).unwrap_or(0));
                    gw == gh && gw.saturating_mul(gh).saturating_mul(ch) == len(0)
                });
                if grid.is_none() {
                    return Err(format!(
                        "its output has {} values, not (5 + {classes} classes) x a square grid of a {w}x{h} input",
                        len(0)
                    ));
                }
            }
            DecoderKind::Ultraface => {
                if len(0) % 2 != 0 || len(1) % 4 != 0 || len(0) / 2 != len(1) / 4 || len(0) == 0 {
                    return Err(format!(
                        "scores ({}) and boxes ({}) do not pair up as N x 2 and N x 4",
                        len(0),
                        len(1)
                    ));
                }
            }
            DecoderKind::Yunet => {
                for (k, stride) in [8usize, 16, 32].into_iter().enumerate() {
                    let cells = w.checked_div(stride).unwrap_or(0).saturating_mul(h.checked_div(stride).unwrap_or(0));
                    let got = (len(k), len(k.saturating_add(3)), len(k.saturating_add(6)));
                    if got != (cells, cells, cells.saturating_mul(4)) || cells == 0 {
                        return Err(format!(
                            "stride {stride} outputs {got:?}, want ({cells}, {cells}, {})",
                            cells.saturating_mul(4)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Most candidates one frame can produce (the capacity of the candidate vector).
    pub fn max_candidates(self, output_lens: &[usize]) -> usize {
        match self {
            DecoderKind::Fastestdet => output_lens.first().copied().unwrap_or(0),
            DecoderKind::Ultraface => output_lens.first().copied().unwrap_or(0) / 2,
            DecoderKind::Yunet => output_lens.iter().take(3).sum(),
        }
    }
}

/// Decoding parameters for one model.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub kind: DecoderKind,
    pub classes: usize,
    pub input_w: usize,
    pub input_h: usize,
    pub score_threshold: f32,
    pub nms_iou: f32,
    /// FastestDet: the class channels are logits (see `DecoderManifest::class_logits`).
    pub class_logits: bool,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Decoder {
    /// Decodes the outputs of one run into `out` (cleared first; its capacity must be at least
    /// [`DecoderKind::max_candidates`]), mapped to source pixels with `geom`, after NMS. `outputs(i)` gives
    /// output tensor `i` flattened.
    pub fn decode<'a>(&self, outputs: impl Fn(usize) -> &'a [f32], geom: &Geometry, out: &mut Vec<Detection>) {
        out.clear();
        let (iw, ih) = (self.input_w as f32, self.input_h as f32);
        let mut push = |class_id: usize, score: f32, b: [f32; 4]| {
            if out.len() < out.capacity() {
                out.push(Detection { class_id: class_id as u16, score, bbox: geom.to_source(b) });
            }
        };
        match self.kind {
            DecoderKind::Fastestdet => {
                let f = outputs(0);
                let ch = self.classes.saturating_add(5);
                let cells = f.len().checked_div(ch).unwrap_or(0);
                let side = (cells as f64).sqrt().round() as usize;
                if side.saturating_mul(side).saturating_mul(ch) != f.len() || side == 0 {
                    return;
                }
                // Channel c of cell i is at c * cells + i (checked: `check_outputs` proved the shape at load).
                let at = |c: usize, i: usize| f.get(c.saturating_mul(cells).saturating_add(i)).copied().unwrap_or(0.0);
                // score = obj^0.6 * p^0.4 with the best class's p <= 1, so a cell whose objectness alone
                // cannot pass is skipped before its 80 class channels are read.
                // (A hair below the bound, so rounding never skips a cell the full test would keep.)
                let obj_min = self.score_threshold.max(0.0).powf(1.0 / 0.6) * 0.9999;
                for i in 0..cells {
                    let (y, x) = (i.checked_div(side).unwrap_or(0), i.checked_rem(side).unwrap_or(0));
                    let obj = at(0, i).clamp(0.0, 1.0);
                    if obj < obj_min {
                        continue;
                    }
                    let (mut best, mut best_c) = (f32::MIN, 0);
                    for c in 0..self.classes {
                        let s = at(c.saturating_add(5), i);
                        if s > best {
                            best = s;
                            best_c = c;
                        }
                    }
                    if self.class_logits {
                        // The softmax of the best logit: 1 / sum(exp(l - best)).
                        let sum: f32 = (0..self.classes).map(|c| (at(c.saturating_add(5), i) - best).exp()).sum();
                        best = 1.0 / sum.max(1.0);
                    }
                    let score = obj.powf(0.6) * best.clamp(0.0, 1.0).powf(0.4);
                    if score <= self.score_threshold {
                        continue;
                    }
                    let g = side as f32;
                    let cx = (x as f32 + at(1, i).tanh()) / g;
                    let cy = (y as f32 + at(2, i).tanh()) / g;
                    let w = sigmoid(at(3, i));
                    let h = sigmoid(at(4, i));
                    push(
                        best_c,
                        score,
                        [(cx - w / 2.0) * iw, (cy - h / 2.0) * ih, (cx + w / 2.0) * iw, (cy + h / 2.0) * ih],
                    );
                }
            }
            DecoderKind::Ultraface => {
                let (scores, boxes) = (outputs(0), outputs(1));
                for (sc, b) in scores.chunks_exact(2).zip(boxes.chunks_exact(4)) {
                    let (&[_, score], &[x1, y1, x2, y2]) = (sc, b) else { continue };
                    if score <= self.score_threshold {
                        continue;
                    }
                    push(0, score, [x1 * iw, y1 * ih, x2 * iw, y2 * ih]);
                }
            }
            DecoderKind::Yunet => {
                for (k, stride) in [8usize, 16, 32].into_iter().enumerate() {
                    let (cls, obj, bbox) = (outputs(k), outputs(k.saturating_add(3)), outputs(k.saturating_add(6)));
                    // At least 1: a manifest narrower than the stride would divide by zero below.
                    let cols = self.input_w.checked_div(stride).unwrap_or(0).max(1);
                    let s = stride as f32;
                    for (i, ((&c, &o), b)) in cls.iter().zip(obj).zip(bbox.chunks_exact(4)).enumerate() {
                        let score = (c.clamp(0.0, 1.0) * o.clamp(0.0, 1.0)).sqrt();
                        if score <= self.score_threshold {
                            continue;
                        }
                        let &[bx, by, bw, bh] = b else { continue };
                        let (row, col) =
                            (i.checked_div(cols).unwrap_or(0) as f32, i.checked_rem(cols).unwrap_or(0) as f32);
                        let (cx, cy) = ((col + bx) * s, (row + by) * s);
                        let (w, h) = (bw.exp() * s, bh.exp() * s);
                        push(0, score, [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
                    }
                }
            }
        }
        nms(out, self.nms_iou);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;
    use crate::preprocess::{ColorOrder, InputSpec, Resize};

    fn det(c: u16, s: f32, b: [f32; 4]) -> Detection {
        Detection { class_id: c, score: s, bbox: b }
    }

    #[test]
    fn nms_is_class_aware_and_keeps_the_best() {
        let mut d = vec![
            det(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
            det(1, 0.8, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.7, [50.0, 50.0, 60.0, 60.0]),
        ];
        nms(&mut d, 0.45);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].score, 0.9);
        assert_eq!(d[1].class_id, 1);
        assert_eq!(d[2].bbox[0], 50.0);
    }

    #[test]
    fn fastestdet_cell_decodes_to_source_pixels() {
        // 2 classes, 2x2 grid; one hot cell at (y=1, x=0) of class 1.
        let (classes, g) = (2, 2);
        let mut f = vec![0.0f32; (5 + classes) * g * g];
        let cell = g; // y=1, x=0
        f[cell] = 1.0; // obj
        f[g * g + cell] = 0.0; // tanh(0) = 0 -> cx = 0/2
        f[2 * g * g + cell] = 0.0; // cy = 1/2
        f[3 * g * g + cell] = 0.0; // w = sigmoid(0) = 0.5
        f[4 * g * g + cell] = 0.0;
        f[6 * g * g + cell] = 1.0; // class 1 score
        let spec = InputSpec {
            width: 100,
            height: 100,
            order: ColorOrder::Bgr,
            resize: Resize::Stretch,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad: 0.0,
        };
        let geom = Geometry::new(&spec, 200, 100);
        let dec = Decoder {
            kind: DecoderKind::Fastestdet,
            classes,
            input_w: 100,
            input_h: 100,
            score_threshold: 0.5,
            nms_iou: 0.45,
            class_logits: false,
        };
        let mut out = Vec::with_capacity(8);
        dec.decode(|_| &f[..], &geom, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        assert!((out[0].score - 1.0).abs() < 1e-6);
        // cx = 0, w = 0.5 -> x in [-25, 25] input px -> clipped to [0, 50] source px (x scale 0.5).
        assert_eq!(out[0].bbox, [0.0, 25.0, 50.0, 75.0]);
    }

    #[test]
    fn fastestdet_logits_give_the_softmax_score_and_weak_cells_are_skipped() {
        // 3 classes, 1x1 grid: logits (0, ln 2, ln 5) -> p = 5/8 for class 2.
        let spec = InputSpec {
            width: 10,
            height: 10,
            order: ColorOrder::Rgb,
            resize: Resize::Stretch,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad: 0.0,
        };
        let geom = Geometry::new(&spec, 10, 10);
        let dec = |threshold, class_logits| Decoder {
            kind: DecoderKind::Fastestdet,
            classes: 3,
            input_w: 10,
            input_h: 10,
            score_threshold: threshold,
            nms_iou: 0.45,
            class_logits,
        };
        let logits = [0.9f32, 0.0, 0.0, 0.0, 0.0, 0.0, 2f32.ln(), 5f32.ln()];
        let mut probs = logits;
        probs[5..].copy_from_slice(&[1.0 / 8.0, 2.0 / 8.0, 5.0 / 8.0]);
        let want = 0.9f32.powf(0.6) * (5.0f32 / 8.0).powf(0.4);
        let mut a = Vec::with_capacity(8);
        let mut b = Vec::with_capacity(8);
        dec(0.5, true).decode(|_| &logits[..], &geom, &mut a);
        dec(0.5, false).decode(|_| &probs[..], &geom, &mut b);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].class_id, b[0].class_id), (2, 2));
        assert!((a[0].score - want).abs() < 1e-6 && (b[0].score - want).abs() < 1e-6, "{a:?} {b:?}");
        // Just under the score the cell can reach, and just over: kept, then not.
        dec(want - 1e-4, true).decode(|_| &logits[..], &geom, &mut a);
        assert_eq!(a.len(), 1);
        dec(want + 1e-4, true).decode(|_| &logits[..], &geom, &mut a);
        assert!(a.is_empty());
        // An objectness that cannot pass whatever the classes say.
        let mut weak = logits;
        weak[0] = 0.3;
        dec(0.5, true).decode(|_| &weak[..], &geom, &mut a);
        assert!(a.is_empty());
    }
}
