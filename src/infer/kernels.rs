//! Kernels lookout runs in place of two of tract's: depthwise convolution and max pooling on
//! channel-first f32 planes.
//!
//! Why: on the shipped detector (a ShuffleNetV2 with a depthwise head) `lookout bench --ops` showed
//! tract 0.23.9 spending nearly half a run in these two ops: its 28 depthwise convolutions (about 15 M
//! multiply-adds) took 4.35 ms of 11.5, and its one 3x3 max pool 1.12 ms, while its 48 dense 1x1
//! convolutions took 2.5 ms. Both ops are simple enough to write so that the compiler vectorizes them,
//! and that is all this module does; everything else stays tract's.
//! [`substitute`] swaps them into a decluttered model before tract's own optimizer runs, so they
//! cost nothing at run time beyond their eval, and a model without such nodes is left as it was.
//!
//! How, for the convolution: each channel's input plane is copied once into zero-padded *phase planes*,
//! one per (row, column) phase of the stride, so that for every tap of the kernel the inputs of
//! consecutive outputs are consecutive in memory. The output is computed on a grid as wide as a phase
//! plane, one tap at a time: each tap is one long multiply-add of the grid, which stays in L1, with a run
//! of a phase plane; then the grid's valid columns are copied out. The grid's extra columns are the price
//! (2 to 4 of 24 on the head's planes). For the pool, separably: each input row is pooled along x once,
//! and each output row is the max of `kh` pooled rows, so its large input is read once, in order (the
//! phase planes copied it and read it nine times: 0.75-0.9 ms against 1.5-1.6 ms in the same loaded
//! runs). Those long loops are what the compiler vectorizes: AVX2 on an x86-64 that has it (chosen at
//! run time), NEON on aarch64. The arithmetic is a plain multiply then add, in tap order, so both builds
//! give the same bits.
//!
//! Tried and not kept (`lookout bench --ops`, the same runs' OptMatMul as the yardstick): all taps of
//! 16 lanes accumulated in registers (3.1-4.0 ms for the 28 depthwise nodes against 1.5-1.6 ms for the
//! taps-outer loop); the same phase planes for the dense first convolution (3 -> 24 channels, 1.9 ms
//! against 1.5 ms for tract's DirectSpatialConv), so that one stays tract's.
//!
//! Where they run: `[inference] kernels` (`crate::infer::Kernels`): by default on x86-64 only, where they
//! were measured; on ARM tract has NEON depthwise kernels of its own and no board here could time both.
//! On aarch64 tract also moves every depthwise convolution of 16 channels or more to channel-last
//! during declutter, for its channel-last NEON routine (`Conv::suggested_axis_changes` in tract-core,
//! when `tract_linalg::routines::depthwise_c_f32()` exists; x86-64 has none), so with `kernels =
//! "lookout"` there only the channel-first ones (3 of the shipped model's 28) and the max pool are
//! lookout's; the others stay tract's, each saying why at debug level.
//!
//! `tests` compares each kernel with tract's own op on random inputs over strides, kernel sizes,
//! paddings and plane sizes; `tests/reference.rs` compares the whole model with onnxruntime.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cell::RefCell;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};

/// The grid is a whole number of 16-lane runs (two AVX2 registers, four NEON ones): no remainder loop.
const LANES: usize = 16;
/// Largest kernel handled (7x7); larger ones stay tract's.
const MAX_TAPS: usize = 49;

/// A 2-D window: kernel size, stride and explicit padding (top, left, bottom, right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub pad: [usize; 4],
}

/// Where everything of one plane lives in the scratch buffer, for an input of `h` x `w`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    oh: usize,
    ow: usize,
    /// Width of a phase plane and of the output grid.
    pws: usize,
    plane_len: usize,
    grid_len: usize,
}

impl Window {
    /// The window of a pool spec, when lookout's kernels cover it: 2-D, no dilation, explicit padding
    /// (or none), strides 1 to 4, at most [`MAX_TAPS`] taps.
    fn of(spec: &PoolSpec) -> Option<Window> {
        let [kh, kw] = <[usize; 2]>::try_from(spec.kernel_shape.as_slice()).ok()?;
        let [sh, sw] = <[usize; 2]>::try_from(&*spec.strides()).ok()?;
        if spec.dilations().iter().any(|&d| d != 1) {
            return None;
        }
        let pad = match &spec.padding {
            PaddingSpec::Valid => [0; 4],
            PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false) => {
                let [t, l] = <[usize; 2]>::try_from(b.as_slice()).ok()?;
                let [bo, r] = <[usize; 2]>::try_from(a.as_slice()).ok()?;
                [t, l, bo, r]
            }
            _ => return None,
        };
        let w = Window { kh, kw, sh, sw, pad };
        let ok = kh >= 1
            && kw >= 1
            && kh.checked_mul(kw).is_some_and(|t| t <= MAX_TAPS)
            && (1..=4).contains(&sh)
            && (1..=4).contains(&sw)
            && pad.iter().all(|&p| p < 16);
        ok.then_some(w)
    }

    /// Output size for an input of `h` x `w`, `None` when the window does not fit.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let ph = h.checked_add(self.pad[0])?.checked_add(self.pad[2])?;
        let pw = w.checked_add(self.pad[1])?.checked_add(self.pad[3])?;
        if ph < self.kh || pw < self.kw || h == 0 || w == 0 {
            return None;
        }
        Some(((ph - self.kh) / self.sh + 1, (pw - self.kw) / self.sw + 1))
    }

    fn layout(&self, h: usize, w: usize) -> Option<Layout> {
        let (oh, ow) = self.output_hw(h, w)?;
        let ph = h + self.pad[0] + self.pad[2];
        let pw = w + self.pad[1] + self.pad[3];
        let phs = ph.div_ceil(self.sh);
        let pws = pw.div_ceil(self.sw);
        let grid_len = oh.checked_mul(pws)?.div_ceil(LANES).checked_mul(LANES)?;
        let max_off = (self.kh - 1) / self.sh * pws + (self.kw - 1) / self.sw;
        let plane_len = phs.checked_mul(pws)?.max(grid_len.checked_add(max_off)?);
        Some(Layout { oh, ow, pws, plane_len, grid_len })
    }

    /// Scratch offset of each tap's first input, in kernel order (row-major).
    fn tap_offsets(&self, l: &Layout) -> heapless::Vec<usize, MAX_TAPS> {
        let mut v = heapless::Vec::new();
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let phase = (ky % self.sh) * self.sw + kx % self.sw;
                let off = phase * l.plane_len + (ky / self.sh) * l.pws + kx / self.sw;
                // At most MAX_TAPS taps: checked in `Window::of`.
                let _ = v.push(off);
            }
        }
        v
    }
}

thread_local! {
    /// Phase planes and output grid of the plane being computed, kept per thread (each engine is a
    /// thread) so the steady state allocates nothing here.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Copies one input plane into its phase planes, which the caller has filled with the pad value.
#[inline(always)]
fn scatter(win: &Window, l: &Layout, input: &[f32], w: usize, planes: &mut [f32]) {
    for (iy, row) in input.chunks_exact(w).enumerate() {
        let y = iy + win.pad[0];
        let (ry, py) = (y % win.sh, y / win.sh);
        let row_start = ry * win.sw * l.plane_len + py * l.pws;
        if win.sw == 1 {
            if let Some(dst) = planes.get_mut(row_start + win.pad[1]..row_start + win.pad[1] + w) {
                dst.copy_from_slice(row);
            }
            continue;
        }
        if win.sw == 2 {
            // Input column `ix` is padded column `ix + pad`: the even input columns go to phase
            // `pad % 2` from `pad / 2` on, the odd ones to the other phase from `(pad + 1) / 2` on.
            let (p0, p1) = planes.split_at_mut(row_start + l.plane_len);
            let (Some(p0), Some(p1)) = (p0.get_mut(row_start..), p1.get_mut(..)) else { continue };
            let (even_plane, odd_plane) = if win.pad[1].is_multiple_of(2) { (p0, p1) } else { (p1, p0) };
            let (Some(even), Some(odd)) =
                (even_plane.get_mut(win.pad[1] / 2..), odd_plane.get_mut(win.pad[1].div_ceil(2)..))
            else {
                continue;
            };
            let mut pairs = row.chunks_exact(2);
            for ((e, o), p) in even.iter_mut().zip(odd.iter_mut()).zip(&mut pairs) {
                if let [x, y] = p {
                    *e = *x;
                    *o = *y;
                }
            }
            if let ([last], Some(e)) = (pairs.remainder(), even.get_mut(w / 2)) {
                *e = *last;
            }
            continue;
        }
        for rx in 0..win.sw {
            // The first input column that lands in column phase `rx`, and where it lands.
            let ix0 = (rx + win.sw - win.pad[1] % win.sw) % win.sw;
            let start = (ry * win.sw + rx) * l.plane_len + py * l.pws + (ix0 + win.pad[1]) / win.sw;
            let (Some(dst), Some(src)) = (planes.get_mut(start..), row.get(ix0..)) else { continue };
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(win.sw)) {
                *d = v;
            }
        }
    }
}

/// Copies the valid columns of the grid to the output plane.
#[inline(always)]
fn gather(l: &Layout, grid: &[f32], out: &mut [f32]) {
    for (orow, grow) in out.chunks_exact_mut(l.ow).zip(grid.chunks(l.pws)) {
        if let Some(src) = grow.get(..l.ow) {
            orow.copy_from_slice(src);
        }
    }
}

/// Depthwise convolution of `c` planes: `weights` is `[c, kh * kw]`, `bias` `[c]`.
#[inline(always)]
fn depthwise_planes(
    win: &Window,
    (h, w): (usize, usize),
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let Some(l) = win.layout(h, w) else { return };
    let taps = win.tap_offsets(&l);
    let planes_len = win.sh * win.sw * l.plane_len;
    scratch.resize(planes_len + l.grid_len, 0.0);
    let (planes, grid) = scratch.split_at_mut(planes_len);
    let k = win.kh * win.kw;
    let chans = input.chunks_exact(h * w).zip(out.chunks_exact_mut(l.oh * l.ow));
    for (ci, (inp, outp)) in chans.enumerate() {
        planes.fill(0.0);
        scatter(win, &l, inp, w, planes);
        let (Some(wc), Some(&b)) = (weights.get(ci * k..ci * k + k), bias.get(ci)) else { return };
        // Taps outer: each is one long multiply-add of the grid with a run of a phase plane.
        grid.fill(b);
        for (&off, &wt) in taps.iter().zip(wc) {
            let Some(src) = planes.get(off..off + l.grid_len) else { return };
            for (a, &s) in grid.iter_mut().zip(src) {
                *a += wt * s;
            }
        }
        gather(&l, grid, outp);
    }
}

/// Max pooling of `c` planes, separably: each input row is max-pooled along x once into a short ring of
/// pooled rows, and each output row is the max of `kh` of those. The input is read once, in order, and
/// everything else stays in L1: the phase planes the convolution uses would copy a pool's large input
/// (the shipped model's is 24 planes of 176 x 176, 3 MB, straight from the first convolution) into
/// scratch and read it nine times. Padding never wins (it is -inf); NaN never wins, as in tract's pool.
#[inline(always)]
fn maxpool_planes(win: &Window, (h, w): (usize, usize), input: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
    let Some((oh, ow)) = win.output_hw(h, w) else { return };
    let [pt, pl, _, _] = win.pad;
    let pw = w + win.pad[1] + win.pad[3];
    // One padded input row and one -inf past it (`pool_row`), then `kh` pooled rows (input row `y` in
    // slot `y % kh`).
    scratch.resize(pw + 1 + win.kh * ow, f32::NEG_INFINITY);
    let (prow, ring) = scratch.split_at_mut(pw + 1);
    prow.fill(f32::NEG_INFINITY);
    for (inp, outp) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        // Input rows pooled so far (rows 0..next).
        let mut next = 0;
        for (oy, orow) in outp.chunks_exact_mut(ow).enumerate() {
            // Padded rows oy * sh .. + kh: input rows from oy * sh - pt on.
            let first = (oy * win.sh).saturating_sub(pt);
            let last = (oy * win.sh + win.kh).saturating_sub(pt).min(h);
            while next < last {
                let (Some(src), Some(dst)) =
                    (inp.get(next * w..next * w + w), ring.get_mut((next % win.kh) * ow..(next % win.kh + 1) * ow))
                else {
                    return;
                };
                let Some(inner) = prow.get_mut(pl..pl + w) else { return };
                inner.copy_from_slice(src);
                pool_row(prow, win.kw, win.sw, dst);
                next += 1;
            }
            orow.fill(f32::NEG_INFINITY);
            for y in first..last {
                let Some(row) = ring.get((y % win.kh) * ow..(y % win.kh + 1) * ow) else { return };
                for (a, &s) in orow.iter_mut().zip(row) {
                    *a = step(*a, s);
                }
            }
        }
    }
}

/// `dst[x]` = the max of `prow[x * sw .. x * sw + kw]`.
#[inline(always)]
fn pool_row(prow: &[f32], kw: usize, sw: usize, dst: &mut [f32]) {
    match (kw, sw) {
        // The common windows, written out so that the compiler vectorizes the strided loads.
        (3, 2) => {
            // Pairs (2x, 2x + 1) and the next pair's first: `prow` has one -inf past the padded row.
            let (Some(a), Some(b)) = (prow.get(..2 * dst.len()), prow.get(2..2 * dst.len() + 2)) else { return };
            for ((d, p), q) in dst.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
                if let ([x, y], [z, _]) = (p, q) {
                    *d = step(step(step(f32::NEG_INFINITY, *x), *y), *z);
                }
            }
        }
        (2, 2) => {
            for (d, p) in dst.iter_mut().zip(prow.chunks_exact(2)) {
                if let [a, b] = p {
                    *d = step(step(f32::NEG_INFINITY, *a), *b);
                }
            }
        }
        (3, 1) => {
            for (d, w) in dst.iter_mut().zip(prow.windows(3)) {
                if let [a, b, c] = w {
                    *d = step(step(step(f32::NEG_INFINITY, *a), *b), *c);
                }
            }
        }
        _ => {
            for (x, d) in dst.iter_mut().enumerate() {
                let Some(win) = prow.get(x * sw..x * sw + kw) else { return };
                *d = win.iter().fold(f32::NEG_INFINITY, |m, &v| step(m, v));
            }
        }
    }
}

/// One step of a running max that starts at -inf: `v` replaces `m` only when larger, so a NaN never wins
/// (as in tract's pool) and the result is NaN-free.
#[inline(always)]
fn step(m: f32, v: f32) -> f32 {
    if v > m {
        v
    } else {
        m
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn depthwise_avx2(
    win: &Window,
    hw: (usize, usize),
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    depthwise_planes(win, hw, input, weights, bias, out, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn maxpool_avx2(win: &Window, hw: (usize, usize), input: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
    maxpool_planes(win, hw, input, out, scratch)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Splits a channel-first shape `[.., c, h, w]` into (planes, h, w).
fn planes_of(shape: &[usize]) -> TractResult<(usize, usize, usize)> {
    let [.., h, w] = shape else { bail!("expected a channel-first shape, got {shape:?}") };
    let planes = shape.iter().rev().skip(2).product();
    Ok((planes, *h, *w))
}

fn output_shape(win: &Window, shape: &[usize]) -> TractResult<TVec<usize>> {
    let (_, h, w) = planes_of(shape)?;
    let (oh, ow) = win.output_hw(h, w).with_context(|| format!("window {win:?} does not fit {shape:?}"))?;
    let [lead @ .., _, _] = shape else { bail!("expected a channel-first shape, got {shape:?}") };
    let mut s: TVec<usize> = lead.into();
    s.push(oh);
    s.push(ow);
    Ok(s)
}

fn output_fact(win: &Window, input: &TypedFact) -> TractResult<TypedFact> {
    let shape = input.shape.as_concrete().context("lookout's kernels need a fixed input shape")?;
    anyhow::ensure!(input.datum_type == f32::datum_type(), "lookout's kernels run f32 only");
    Ok(f32::fact(&*output_shape(win, shape)?))
}

/// What both ops' evals share: a new output tensor for `input` (channel-first f32) through `win`, filled
/// by `kernel` from the input planes with this thread's scratch buffer.
fn eval_planes(
    win: &Window,
    input: &Tensor,
    kernel: impl FnOnce(&Window, (usize, usize), &[f32], &mut [f32], &mut Vec<f32>),
) -> TractResult<Tensor> {
    let shape = input.shape();
    let (_, h, w) = planes_of(shape)?;
    let mut output = Tensor::zero::<f32>(&output_shape(win, shape)?)?;
    let inp = input.try_as_plain_ram()?.as_slice::<f32>()?;
    let mut out_view = output.try_as_plain_ram_mut()?;
    let out = out_view.as_slice_mut::<f32>()?;
    SCRATCH.with_borrow_mut(|scratch| kernel(win, (h, w), inp, out, scratch));
    Ok(output)
}

/// Depthwise 2-D convolution, channel-first, f32, weights and bias held by the op.
#[derive(Debug, Clone)]
pub struct Depthwise {
    pub window: Window,
    pub channels: usize,
    /// `[channels, kh * kw]`.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Equal when the weights are the same bits (tract compares ops to merge duplicates).
impl PartialEq for Depthwise {
    fn eq(&self, o: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.window == o.window
            && self.channels == o.channels
            && bits(&self.weights) == bits(&o.weights)
            && bits(&self.bias) == bits(&o.bias)
    }
}

impl Eq for Depthwise {}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "lookout.Depthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, {} channels", self.window, self.channels)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        anyhow::ensure!(
            matches!(shape, [.., c, _, _] if *c == self.channels),
            "lookout.Depthwise: input {shape:?} does not have {} channels",
            self.channels
        );
        let (weights, bias, c) = (self.weights.as_slice(), self.bias.as_slice(), self.channels);
        let output = eval_planes(&self.window, &input, |win, (h, w), inp, out, scratch| {
            let Some((oh, ow)) = win.output_hw(h, w) else { return };
            // Batch item by batch item, each with the same weights.
            for (inp, out) in inp.chunks_exact(c * h * w).zip(out.chunks_exact_mut(c * oh * ow)) {
                if has_avx2() {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU has AVX2 (checked just above).
                    unsafe {
                        depthwise_avx2(win, (h, w), inp, weights, bias, out, scratch)
                    };
                } else {
                    depthwise_planes(win, (h, w), inp, weights, bias, out, scratch)
                }
            }
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [input] = inputs else { bail!("lookout.Depthwise takes one input") };
        Ok(tvec!(output_fact(&self.window, input)?))
    }

    as_op!();
}

/// Max pooling 2-D, channel-first, f32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxPool2d {
    pub window: Window,
}

impl Op for MaxPool2d {
    fn name(&self) -> StaticName {
        "lookout.MaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.window)])
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let output = eval_planes(&self.window, &input, |win, hw, inp, out, scratch| {
            if has_avx2() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe {
                    maxpool_avx2(win, hw, inp, out, scratch)
                };
            } else {
                maxpool_planes(win, hw, inp, out, scratch)
            }
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for MaxPool2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [input] = inputs else { bail!("lookout.MaxPool takes one input") };
        Ok(tvec!(output_fact(&self.window, input)?))
    }

    as_op!();
}

/// A channel-first f32 input of fixed shape `[.., c, h, w]` that the window fits: its channel count.
fn channel_first_f32(model: &TypedModel, node: &TypedNode, spec: &PoolSpec) -> Option<usize> {
    if spec.data_format.c_is_last() {
        return None;
    }
    let fact = model.outlet_fact(*node.inputs.first()?).ok()?;
    if fact.datum_type != f32::datum_type() {
        return None;
    }
    let shape = fact.shape.as_concrete()?;
    let [.., c, h, w] = shape else { return None };
    // A window that does not fit is tract's to report.
    Window::of(spec)?.output_hw(*h, *w)?;
    Some(*c)
}

/// The lookout op for a tract node, when it is one these kernels cover. A depthwise convolution or max
/// pool that stays tract's says why in the debug log (`RUST_LOG=lookout::infer=debug`).
fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Box<dyn TypedOp>>> {
    let refuse = |why: &str| {
        log::debug!("{} ({}) stays tract's: {why}", node.name, node.op().name());
        Ok(None)
    };
    if let Some(conv) = node.op_as::<Conv>() {
        let spec = &conv.pool_spec;
        let c = spec.input_channels;
        if !(conv.group == c && spec.output_channels == c) {
            return Ok(None); // not depthwise: tract's matrix products run those
        }
        let Some(window) = Window::of(spec) else { return refuse(&format!("window not covered: {spec:?}")) };
        if channel_first_f32(model, node, spec) != Some(c) {
            let fact = node.inputs.first().and_then(|o| model.outlet_fact(*o).ok());
            return refuse(&format!(
                "input {fact:?} ({:?}) not fixed channel-first f32 planes that the window fits",
                spec.data_format
            ));
        }
        if conv.q_params.is_some() || conv.kernel_fmt != KernelFormat::OIHW {
            return refuse(&format!("quantized or kernel format {:?}", conv.kernel_fmt));
        }
        let [_, kernel, bias] = node.inputs.as_slice() else { return refuse("not three inputs") };
        let kernel = model.outlet_fact(*kernel)?.konst.clone();
        let bias = model.outlet_fact(*bias)?.konst.clone();
        let (Some(kernel), Some(bias)) = (kernel, bias) else { return refuse("kernel or bias not constant") };
        if kernel.datum_type() != f32::datum_type()
            || kernel.shape() != [c, 1, window.kh, window.kw]
            || bias.datum_type() != f32::datum_type()
        {
            return refuse(&format!(
                "kernel {:?} {:?}, bias {:?}",
                kernel.datum_type(),
                kernel.shape(),
                bias.datum_type()
            ));
        }
        let (Ok(k), Ok(b)) = (kernel.try_as_plain_ram(), bias.try_as_plain_ram()) else {
            return refuse("kernel or bias not in plain memory");
        };
        let weights = k.as_slice::<f32>()?.to_vec();
        let b = b.as_slice::<f32>()?;
        let bias = match b.len() {
            n if n == c => b.to_vec(),
            1 => b.repeat(c),
            n => return refuse(&format!("{n} biases for {c} channels")),
        };
        return Ok(Some(Box::new(Depthwise { window, channels: c, weights, bias })));
    }
    if let Some(pool) = node.op_as::<MaxPool>() {
        if pool.with_index_outputs.is_some() {
            return refuse("index outputs");
        }
        let Some(window) = Window::of(&pool.pool_spec) else { return refuse("window not covered") };
        if channel_first_f32(model, node, &pool.pool_spec).is_none() {
            return refuse("input not a fixed channel-first f32 plane set that the window fits");
        }
        return Ok(Some(Box::new(MaxPool2d { window })));
    }
    Ok(None)
}

/// Replaces the depthwise convolutions and max pools of a decluttered model that these kernels cover
/// with lookout's ops; returns how many were replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(op) = replacement(model, node)? else { continue };
        let Some(&data) = node.inputs.first() else { continue };
        let patch = TypedModelPatch::replace_single_op(model, node, &[data], op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    // The replaced nodes are left unconnected; tract's optimize compacts the model.
    Ok(replaced)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// A small deterministic generator: the tests need varied values, not a crate.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn spec(c: usize, k: (usize, usize), s: (usize, usize), pad: [usize; 4]) -> PoolSpec {
        PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(k.0, k.1),
            padding: PaddingSpec::Explicit(tvec!(pad[0], pad[1]), tvec!(pad[2], pad[3])),
            dilations: None,
            strides: Some(tvec!(s.0, s.1)),
            input_channels: c,
            output_channels: c,
        }
    }

    /// Runs a one-op model through tract's optimizer and plan, with or without `substitute`.
    fn run(model: &TypedModel, input: &Tensor, ours: bool) -> (Tensor, Vec<String>) {
        let mut m = model.clone().into_decluttered().unwrap();
        if ours {
            assert!(substitute(&mut m).unwrap() > 0, "nothing substituted");
        }
        m.optimize().unwrap();
        let ops = m.nodes().iter().map(|n| n.op().name().to_string()).collect();
        let plan = m.into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        (out[0].clone().into_tensor(), ops)
    }

    fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}");
        let (a, b) = (a.try_as_plain_ram().unwrap(), b.try_as_plain_ram().unwrap());
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 + 1e-5 * y.abs(), "{what}: value {i}: ours {x}, tract {y}");
        }
    }

    /// Kernel (h, w), stride (h, w), padding (top, left, bottom, right), input (h, w).
    type Case = ((usize, usize), (usize, usize), [usize; 4], (usize, usize));

    const CASES: &[Case] = &[
        ((3, 3), (1, 1), [1, 1, 1, 1], (22, 22)),
        ((3, 3), (2, 2), [1, 1, 1, 1], (44, 44)),
        ((5, 5), (1, 1), [2, 2, 2, 2], (22, 22)),
        ((3, 3), (2, 2), [1, 1, 1, 1], (11, 13)),
        ((3, 3), (1, 1), [0, 0, 0, 0], (7, 5)),
        ((1, 1), (1, 1), [0, 0, 0, 0], (3, 17)),
        ((5, 3), (2, 1), [2, 0, 1, 1], (9, 10)),
        ((3, 3), (2, 2), [1, 1, 1, 1], (176, 176)),
        ((7, 7), (3, 3), [3, 3, 3, 3], (20, 19)),
        ((2, 2), (2, 2), [0, 0, 0, 0], (3, 2)),
        ((3, 2), (2, 2), [0, 1, 2, 0], (9, 8)),
        ((3, 3), (2, 2), [0, 0, 1, 1], (10, 9)),
    ];

    #[test]
    fn depthwise_matches_tract() {
        for (i, &(k, s, pad, (h, w))) in CASES.iter().enumerate() {
            for (n, c) in [(1usize, 5usize), (2, 3)] {
                let mut model = TypedModel::default();
                let x = model.add_source("x", f32::fact([n, c, h, w])).unwrap();
                let kernel = Tensor::from_shape(&[c, 1, k.0, k.1], &values(c * k.0 * k.1, i as u64)).unwrap();
                let bias = Tensor::from_shape(&[c], &values(c, 100 + i as u64)).unwrap();
                let kw = model.add_const("k", kernel).unwrap();
                let bw = model.add_const("b", bias).unwrap();
                let conv =
                    Conv { pool_spec: spec(c, k, s, pad), kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
                let y = model.wire_node("conv", conv, &[x, kw, bw]).unwrap();
                model.select_output_outlets(&y).unwrap();
                let input = Tensor::from_shape(&[n, c, h, w], &values(n * c * h * w, 7 + i as u64)).unwrap();
                let (ours, ops) = run(&model, &input, true);
                assert!(ops.iter().any(|o| o == "lookout.Depthwise"), "case {i}: {ops:?}");
                let (theirs, _) = run(&model, &input, false);
                assert_close(&ours, &theirs, &format!("depthwise case {i}, n {n}"));
            }
        }
    }

    #[test]
    fn maxpool_matches_tract() {
        for (i, &(k, s, pad, (h, w))) in CASES.iter().enumerate() {
            // tract's pool needs the padding smaller than the kernel.
            if pad.iter().any(|&p| p >= k.0.min(k.1)) {
                continue;
            }
            let c = 4;
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
            let y = model
                .wire_node("pool", MaxPool { pool_spec: spec(c, k, s, pad), with_index_outputs: None }, &[x])
                .unwrap();
            model.select_output_outlets(&y).unwrap();
            let input = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, 50 + i as u64)).unwrap();
            let (ours, ops) = run(&model, &input, true);
            assert!(ops.iter().any(|o| o == "lookout.MaxPool"), "case {i}: {ops:?}");
            let (theirs, _) = run(&model, &input, false);
            assert_close(&ours, &theirs, &format!("maxpool case {i}"));
        }
    }

    #[test]
    fn windows_lookout_does_not_cover_stay_tracts() {
        let mut s = spec(4, (3, 3), (1, 1), [1, 1, 1, 1]);
        s.dilations = Some(tvec!(2, 2));
        assert!(Window::of(&s).is_none(), "dilation");
        let s = spec(4, (9, 9), (1, 1), [0; 4]);
        assert!(Window::of(&s).is_none(), "81 taps");
        let mut s = spec(4, (3, 3), (1, 1), [0; 4]);
        s.padding = PaddingSpec::SameUpper;
        assert!(Window::of(&s).is_none(), "same padding");
        assert_eq!(Window::of(&spec(4, (3, 3), (2, 2), [1; 4])).unwrap().output_hw(88, 88), Some((44, 44)));
        assert_eq!(Window::of(&spec(4, (5, 5), (1, 1), [0; 4])).unwrap().output_hw(4, 9), None);
    }
}
