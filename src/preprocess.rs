//! Preprocessing: one pass from a frame slot into the model's input tensor.
//!
//! Why one pass: colour conversion, resizing and normalization each touch every pixel; doing them in
//! separate passes would need intermediate images, i.e. memory per frame. Here each output element is
//! computed directly from the source frame: bilinear sampling (half-pixel centres, like OpenCV's
//! `INTER_LINEAR` without anti-aliasing) of the four neighbouring source pixels, each converted to RGB from
//! whatever format the source delivered (RGB, YUYV, I420, grey; YUV is BT.601 limited range), rounded to
//! a whole 8-bit level (as OpenCV's resize of a uint8 image, the models' own pipelines, gives), then the
//! model's `(pixel * scale - mean) / std` per channel, written planar (NCHW) in the model's channel order.
//! The column and row sampling tables are computed when the frame size is first seen and reused after.
//! `scripts/reference.py` implements the same arithmetic independently for the reference test.

use crate::frame::{Frame, PixelFormat};

/// How a frame is fitted into the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Scale each axis independently (aspect ratio not kept).
    Stretch,
    /// Scale uniformly to fit, centre, and pad the rest.
    Letterbox,
}

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

/// The input a model wants, as its manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub width: usize,
    pub height: usize,
    pub order: ColorOrder,
    pub resize: Resize,
    /// value = (pixel * scale - mean[c]) / std[c], c in R, G, B order.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Raw pixel value (0..255) of letterbox padding.
    pub pad: f32,
}

/// Maps model-input pixel coordinates back to source-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub src_w: f32,
    pub src_h: f32,
}

impl Geometry {
    pub fn new(spec: &InputSpec, src_w: u32, src_h: u32) -> Geometry {
        let (iw, ih, sw, sh) = (spec.width as f32, spec.height as f32, src_w as f32, src_h as f32);
        match spec.resize {
            Resize::Stretch => {
                Geometry { scale_x: iw / sw, scale_y: ih / sh, pad_x: 0.0, pad_y: 0.0, src_w: sw, src_h: sh }
            }
            Resize::Letterbox => {
                let s = (iw / sw).min(ih / sh);
                Geometry {
                    scale_x: s,
                    scale_y: s,
                    pad_x: ((iw - s * sw) / 2.0).floor(),
                    pad_y: ((ih - s * sh) / 2.0).floor(),
                    src_w: sw,
                    src_h: sh,
                }
            }
        }
    }

    /// A box in model-input pixels to source pixels, clipped to the frame.
    pub fn to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let x = |v: f32| ((v - self.pad_x) / self.scale_x).clamp(0.0, self.src_w);
        let y = |v: f32| ((v - self.pad_y) / self.scale_y).clamp(0.0, self.src_h);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// One axis of bilinear sampling: for each output index, the two source indices and the weight of the
/// second; `None` where the output lies in letterbox padding.
#[derive(Debug, Default)]
struct Axis {
    taps: Vec<(u32, u32, f32)>,
    inside: Vec<bool>,
    /// Some output lies in letterbox padding.
    padded: bool,
}

impl Axis {
    fn build(&mut self, out_len: usize, src_len: usize, scale: f32, pad: f32) {
        self.taps.clear();
        self.inside.clear();
        let content = (src_len as f32 * scale).round();
        for o in 0..out_len {
            let inside = (o as f32) >= pad && (o as f32) < pad + content;
            let s = ((o as f32 + 0.5 - pad) / scale - 0.5).clamp(0.0, (src_len - 1) as f32);
            let i0 = s.floor() as u32;
            let i1 = (i0 + 1).min(src_len as u32 - 1);
            self.taps.push((i0, i1, s - i0 as f32));
            self.inside.push(inside);
        }
        self.padded = self.inside.iter().any(|&i| !i);
    }
}

/// Converts frames of one size into one model's input. Holds the sampling tables (rebuilt only when the
/// frame size changes) and nothing per frame.
#[derive(Debug)]
pub struct Preprocessor {
    spec: InputSpec,
    src: (u32, u32),
    geometry: Geometry,
    cols: Axis,
    rows: Axis,
    /// The two source rows an output row blends, interpolated along x (3 x width values each), with the
    /// source row each holds.
    row_bufs: [(Option<u32>, Vec<f32>); 2],
}

#[inline]
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [f32; 3] {
    let c = 1.164_383 * (y as f32 - 16.0);
    let (d, e) = (u as f32 - 128.0, v as f32 - 128.0);
    [
        (c + 1.596_027 * e).clamp(0.0, 255.0),
        (c - 0.391_762 * d - 0.812_968 * e).clamp(0.0, 255.0),
        (c + 2.017_232 * d).clamp(0.0, 255.0),
    ]
}

impl Preprocessor {
    pub fn new(spec: InputSpec) -> Preprocessor {
        let geometry = Geometry::new(&spec, 1, 1);
        let row = || (None, vec![0.0; 3 * spec.width]);
        let row_bufs = [row(), row()];
        let mut p =
            Preprocessor { spec, src: (0, 0), geometry, cols: Axis::default(), rows: Axis::default(), row_bufs };
        p.cols.taps.reserve(p.spec.width);
        p.rows.taps.reserve(p.spec.height);
        p
    }

    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// Number of f32 values in the input tensor.
    pub fn tensor_len(&self) -> usize {
        3 * self.spec.width * self.spec.height
    }

    /// Geometry of the last frame processed.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn prepare(&mut self, w: u32, h: u32) {
        if self.src != (w, h) {
            self.src = (w, h);
            self.geometry = Geometry::new(&self.spec, w, h);
            let g = self.geometry;
            self.cols.build(self.spec.width, w as usize, g.scale_x, g.pad_x);
            self.rows.build(self.spec.height, h as usize, g.scale_y, g.pad_y);
        }
    }

    /// Writes `frame` into `out` (length [`Self::tensor_len`]). Returns the geometry for mapping boxes back.
    pub fn run(&mut self, frame: &Frame, out: &mut [f32]) -> Geometry {
        self.prepare(frame.width, frame.height);
        let px = frame.pixels();
        let w = frame.width as usize;
        let h = frame.height as usize;
        match frame.format {
            PixelFormat::Rgb24 => {
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    unsafe { self.sample_rgb_avx2(out, px, w) };
                    return self.geometry;
                }
                self.sample_rgb(out, px, w)
            }
            PixelFormat::Grey => self.sample(out, |x, y| {
                let v = px[y * w + x] as f32;
                [v, v, v]
            }),
            PixelFormat::Yuyv => {
                let stride = w.div_ceil(2) * 4;
                self.sample(out, |x, y| {
                    let i = y * stride + (x / 2) * 4;
                    yuv_to_rgb(px[i + (x & 1) * 2], px[i + 1], px[i + 3])
                })
            }
            PixelFormat::I420 => {
                let cw = w.div_ceil(2);
                let ch = h.div_ceil(2);
                let (yp, uv) = px.split_at(w * h);
                let (up, vp) = uv.split_at(cw * ch);
                self.sample(out, |x, y| {
                    let c = (y / 2) * cw + x / 2;
                    yuv_to_rgb(yp[y * w + x], up[c], vp[c])
                })
            }
            PixelFormat::Nv12 => {
                let cw = w.div_ceil(2);
                let (yp, uv) = px.split_at(w * h);
                self.sample(out, |x, y| {
                    let c = 2 * ((y / 2) * cw + x / 2);
                    yuv_to_rgb(yp[y * w + x], uv[c], uv[c + 1])
                })
            }
        }
        self.geometry
    }

    /// [`Self::sample`] of packed RGB with [`hpass_rgb`].
    #[inline(always)]
    fn sample_rgb(&mut self, out: &mut [f32], px: &[u8], w: usize) {
        self.sample_with(out, |y, cols, buf| {
            if let Some(row) = px.get(3 * w * y..3 * w * (y + 1)) {
                hpass_rgb(row, &cols.taps, buf);
            }
        })
    }

    /// [`Self::sample_rgb`] compiled for AVX2: eight lanes where the baseline has four, the same
    /// operations in the same order, so the same bits (a test compares them).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn sample_rgb_avx2(&mut self, out: &mut [f32], px: &[u8], w: usize) {
        self.sample_rgb(out, px, w)
    }

    /// Bilinear sampling in two passes, the same arithmetic as one: each output row blends two source
    /// rows that were first interpolated horizontally (`top` and `bot` below), and a source row is
    /// interpolated once however many output rows use it (an upscaled axis reuses most). The row buffers
    /// are allocated with the preprocessor; the inner loops are plain arrays, which the compiler
    /// vectorizes.
    #[inline(always)]
    fn sample<F: Fn(usize, usize) -> [f32; 3]>(&mut self, out: &mut [f32], fetch: F) {
        let ow = self.spec.width;
        // One source row interpolated along x into `buf` (channel c at c * ow + ox).
        self.sample_with(out, |y, cols, buf| {
            for (ox, &(x0, x1, fx)) in cols.taps.iter().enumerate() {
                let (a, b) = (fetch(x0 as usize, y), fetch(x1 as usize, y));
                for c in 0..3 {
                    buf[c * ow + ox] = a[c] + (b[c] - a[c]) * fx;
                }
            }
        })
    }

    /// [`Self::sample`] with the horizontal pass given: `hpass(y, cols, buf)` interpolates source row `y`
    /// along x into `buf` (channel c at c * width + ox).
    #[inline(always)]
    fn sample_with<H: Fn(usize, &Axis, &mut [f32])>(&mut self, out: &mut [f32], hpass: H) {
        let (ow, oh) = (self.spec.width, self.spec.height);
        let plane = ow * oh;
        let s = &self.spec;
        let mul = [s.scale / s.std[0], s.scale / s.std[1], s.scale / s.std[2]];
        let add = [-s.mean[0] / s.std[0], -s.mean[1] / s.std[1], -s.mean[2] / s.std[2]];
        // Output plane for R, G, B.
        let dst = match s.order {
            ColorOrder::Rgb => [0, plane, 2 * plane],
            ColorOrder::Bgr => [2 * plane, plane, 0],
        };
        let pad = [s.pad * mul[0] + add[0], s.pad * mul[1] + add[1], s.pad * mul[2] + add[2]];
        let cols = &self.cols;
        let hpass = |y: usize, buf: &mut [f32]| hpass(y, cols, buf);
        let [ra, rb] = &mut self.row_bufs;
        for oy in 0..oh {
            let (y0, y1, fy) = self.rows.taps[oy];
            let o = oy * ow;
            if !self.rows.inside[oy] {
                for c in 0..3 {
                    out[dst[c] + o..dst[c] + o + ow].fill(pad[c]);
                }
                continue;
            }
            if ra.0 != Some(y0) {
                if rb.0 == Some(y0) {
                    std::mem::swap(ra, rb);
                } else {
                    hpass(y0 as usize, &mut ra.1);
                    ra.0 = Some(y0);
                }
            }
            if rb.0 != Some(y1) {
                hpass(y1 as usize, &mut rb.1);
                rb.0 = Some(y1);
            }
            for c in 0..3 {
                let top = &ra.1[c * ow..(c + 1) * ow];
                let bot = &rb.1[c * ow..(c + 1) * ow];
                let dst = &mut out[dst[c] + o..dst[c] + o + ow];
                for ((d, &t), &b) in dst.iter_mut().zip(top).zip(bot) {
                    // Rounded to 8-bit levels, as cv2.resize on uint8 images (the models' own pipelines)
                    // gives: int8 models then quantize whole pixel levels, never a half step, so the
                    // result does not depend on how a runtime rounds ties. Adding and taking away 2^23
                    // rounds half to even for 0 <= v < 2^22 (here 0..255) in the default rounding mode,
                    // like `round_ties_even`, which is a libm call on baseline x86-64 and blocks vectors.
                    let v = (t + (b - t) * fy + ROUND) - ROUND;
                    *d = v * mul[c] + add[c];
                }
                if cols.padded {
                    for (d, &inside) in dst.iter_mut().zip(&cols.inside) {
                        if !inside {
                            *d = pad[c];
                        }
                    }
                }
            }
        }
        // The next frame's pixels differ: forget which rows the buffers hold.
        ra.0 = None;
        rb.0 = None;
    }
}

/// The horizontal pass for packed RGB, the format MJPEG decodes to: [`Preprocessor::sample`]'s
/// arithmetic (`a + (b - a) * fx` per channel, from the same 8-bit values), eight output columns at a
/// time. The bytes of the eight column pairs are gathered first, then converted and interpolated as
/// whole rows of lanes, which the compiler vectorizes; gathering, converting and interpolating one
/// column at a time, as the generic pass does, stays scalar (`perf`: 11% of a whole run's CPU for a
/// 1920x1080 clip, a quarter as much as inference).
#[inline(always)]
fn hpass_rgb(row: &[u8], taps: &[(u32, u32, f32)], buf: &mut [f32]) {
    const L: usize = 8;
    let ow = taps.len();
    let (r, rest) = buf.split_at_mut(ow.min(buf.len()));
    let (g, b) = rest.split_at_mut(ow.min(rest.len()));
    let mut chunks = taps.chunks_exact(L);
    let outs = r.chunks_exact_mut(L).zip(g.chunks_exact_mut(L)).zip(b.chunks_exact_mut(L));
    for (chunk, ((r, g), b)) in (&mut chunks).zip(outs) {
        let (mut a, mut d, mut f) = ([[0u8; L]; 3], [[0u8; L]; 3], [0f32; L]);
        for (l, &(x0, x1, fx)) in chunk.iter().enumerate() {
            let (i0, i1) = (3 * x0 as usize, 3 * x1 as usize);
            if let (Some(&[p0, p1, p2]), Some(&[q0, q1, q2])) = (
                row.get(i0..i0 + 3).map(<[u8; 3]>::try_from).and_then(Result::ok).as_ref(),
                row.get(i1..i1 + 3).map(<[u8; 3]>::try_from).and_then(Result::ok).as_ref(),
            ) {
                (a[0][l], a[1][l], a[2][l]) = (p0, p1, p2);
                (d[0][l], d[1][l], d[2][l]) = (q0, q1, q2);
            }
            f[l] = fx;
        }
        for ((dst, a), d) in [r, g, b].into_iter().zip(&a).zip(&d) {
            for (((o, &a), &d), &f) in dst.iter_mut().zip(a).zip(d).zip(&f) {
                let (a, d) = (a as f32, d as f32);
                *o = a + (d - a) * f;
            }
        }
    }
    // The last columns (fewer than eight), one at a time.
    let done = ow - chunks.remainder().len();
    for (k, &(x0, x1, fx)) in chunks.remainder().iter().enumerate() {
        let (i0, i1) = (3 * x0 as usize, 3 * x1 as usize);
        for c in 0..3 {
            if let (Some(&p), Some(&q), Some(o)) = (row.get(i0 + c), row.get(i1 + c), buf.get_mut(c * ow + done + k)) {
                let (a, d) = (p as f32, q as f32);
                *o = a + (d - a) * fx;
            }
        }
    }
}

/// 2^23: see the rounding in [`Preprocessor::sample`].
const ROUND: f32 = 8_388_608.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: usize, h: usize, order: ColorOrder, resize: Resize) -> InputSpec {
        InputSpec { width: w, height: h, order, resize, scale: 1.0, mean: [0.0; 3], std: [1.0; 3], pad: 0.0 }
    }

    fn rgb_frame(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Frame {
        let mut fr = Frame::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let i = 3 * (y * w + x) as usize;
                fr.data[i..i + 3].copy_from_slice(&f(x, y));
            }
        }
        fr.len = (w * h * 3) as usize;
        fr.width = w;
        fr.height = h;
        fr
    }

    #[test]
    fn same_size_is_identity_and_bgr_swaps_planes() {
        let fr = rgb_frame(4, 3, |x, y| [(x * 10) as u8, (y * 10) as u8, 7]);
        let mut p = Preprocessor::new(spec(4, 3, ColorOrder::Bgr, Resize::Stretch));
        let mut out = vec![0.0; p.tensor_len()];
        p.run(&fr, &mut out);
        // Plane 0 is B (constant 7), plane 2 is R (x*10).
        assert!(out[..12].iter().all(|&v| v == 7.0));
        assert_eq!(&out[24..28], &[0.0, 10.0, 20.0, 30.0]);
        assert_eq!(out[12 + 4], 10.0); // G at (0, 1)
    }

    #[test]
    fn halving_averages_neighbours_and_normalizes() {
        let fr = rgb_frame(4, 2, |x, _| [if x % 2 == 0 { 0 } else { 200 }, 0, 0]);
        let mut s = spec(2, 1, ColorOrder::Rgb, Resize::Stretch);
        s.scale = 1.0 / 100.0;
        s.mean = [1.0, 0.0, 0.0];
        let mut p = Preprocessor::new(s);
        let mut out = vec![0.0; p.tensor_len()];
        p.run(&fr, &mut out);
        // Output x=0 samples source x=0.5: mean of 0 and 200 = 100 -> 100/100 - 1 = 0.
        assert!((out[0] - 0.0).abs() < 1e-6, "{out:?}");
    }

    /// The packed-RGB pass (eight columns at a time, AVX2 where the CPU has it) gives the generic pass's
    /// bits, over downscaling, upscaling, letterboxing and widths that leave a remainder.
    #[test]
    fn rgb_pass_matches_the_generic_pass_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (sw, sh, ow, oh, resize) in [
            (37, 23, 16, 11, Resize::Stretch),
            (13, 7, 20, 30, Resize::Stretch),
            (50, 20, 24, 24, Resize::Letterbox),
            (640, 360, 352, 352, Resize::Stretch),
        ] {
            let fr = rgb_frame(sw, sh, |x, y| [(x * 7 + y) as u8, (x * y % 251) as u8, ((x * 13 + y * 5) % 256) as u8]);
            let mut s = spec(ow, oh, ColorOrder::Bgr, resize);
            (s.scale, s.mean, s.std, s.pad) = (1.0 / 255.0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 114.0);
            let mut p = Preprocessor::new(s);
            let mut fast = vec![0.0; p.tensor_len()];
            p.run(&fr, &mut fast);
            let (px, w) = (fr.pixels(), sw as usize);
            let mut generic = vec![0.0; p.tensor_len()];
            p.sample(&mut generic, |x, y| {
                let i = 3 * (y * w + x);
                [px[i] as f32, px[i + 1] as f32, px[i + 2] as f32]
            });
            assert_eq!(bits(&fast), bits(&generic), "{sw}x{sh} -> {ow}x{oh} {resize:?}");
            let mut baseline = vec![0.0; p.tensor_len()];
            p.sample_rgb(&mut baseline, px, w);
            assert_eq!(bits(&baseline), bits(&generic), "baseline build, {sw}x{sh} -> {ow}x{oh}");
            // The tensor holds whole 8-bit levels, which hide a small change of the pass: compare the
            // interpolated rows themselves too.
            let (mut ours, mut theirs) = (vec![0.0; 3 * ow], vec![0.0; 3 * ow]);
            for y in 0..sh as usize {
                hpass_rgb(&px[3 * w * y..3 * w * (y + 1)], &p.cols.taps, &mut ours);
                for (ox, &(x0, x1, fx)) in p.cols.taps.iter().enumerate() {
                    for c in 0..3 {
                        let (a, b) =
                            (px[3 * (y * w + x0 as usize) + c] as f32, px[3 * (y * w + x1 as usize) + c] as f32);
                        theirs[c * ow + ox] = a + (b - a) * fx;
                    }
                }
                assert_eq!(bits(&ours), bits(&theirs), "row {y} of {sw}x{sh} -> {ow}x{oh}");
            }
        }
    }

    #[test]
    fn nv12_reads_interleaved_chroma() {
        // 2x2 frame: Y = 81 (limited-range level for pure red's luma), UV = (90, 240): red.
        let mut f = Frame::with_capacity(6);
        f.data.copy_from_slice(&[81, 81, 81, 81, 90, 240]);
        (f.len, f.width, f.height, f.format) = (6, 2, 2, PixelFormat::Nv12);
        let mut p = Preprocessor::new(spec(2, 2, ColorOrder::Rgb, Resize::Stretch));
        let mut out = vec![0.0; p.tensor_len()];
        p.run(&f, &mut out);
        assert!(out[0] > 250.0 && out[4] < 5.0 && out[8] < 5.0, "{out:?}");
    }

    #[test]
    fn letterbox_pads_and_maps_boxes_back() {
        let fr = rgb_frame(8, 4, |_, _| [255, 255, 255]);
        let mut s = spec(8, 8, ColorOrder::Rgb, Resize::Letterbox);
        s.pad = 0.0;
        let mut p = Preprocessor::new(s);
        let mut out = vec![-1.0; p.tensor_len()];
        let g = p.run(&fr, &mut out);
        assert_eq!((g.pad_x, g.pad_y), (0.0, 2.0));
        assert_eq!(&out[0..8], &[0.0; 8]); // first two rows are padding
        assert_eq!(&out[16..24], &[255.0; 8]);
        assert_eq!(g.to_source([0.0, 2.0, 8.0, 6.0]), [0.0, 0.0, 8.0, 4.0]);
    }

    #[test]
    fn yuv_formats_agree_with_rgb_conversion() {
        // A flat mid-grey in YUYV and I420 (Y=126, U=V=128) converts to ~128 grey.
        let mut yuyv = Frame::with_capacity(16);
        yuyv.data.copy_from_slice(&[126, 128, 126, 128].repeat(4));
        (yuyv.len, yuyv.width, yuyv.height, yuyv.format) = (16, 4, 2, PixelFormat::Yuyv);
        let mut i420 = Frame::with_capacity(12);
        i420.data.copy_from_slice(&[126, 126, 126, 126, 126, 126, 126, 126, 128, 128, 128, 128]);
        (i420.len, i420.width, i420.height, i420.format) = (12, 4, 2, PixelFormat::I420);
        let mut nv12 = Frame::with_capacity(12);
        nv12.data.copy_from_slice(&[126, 126, 126, 126, 126, 126, 126, 126, 128, 128, 128, 128]);
        (nv12.len, nv12.width, nv12.height, nv12.format) = (12, 4, 2, PixelFormat::Nv12);
        for fr in [yuyv, i420, nv12] {
            let mut p = Preprocessor::new(spec(2, 2, ColorOrder::Rgb, Resize::Stretch));
            let mut out = vec![0.0; p.tensor_len()];
            p.run(&fr, &mut out);
            for v in out {
                assert_eq!(v, 128.0);
            }
        }
    }
}
