//! Kernels lookout runs in place of three of tract's on channel-first f32 planes: depthwise
//! convolution, dense convolution of few input channels (a detector's first layer), and max pooling.
//!
//! Why: on the shipped detector (a ShuffleNetV2 with a depthwise head) `lookout bench --ops` showed
//! tract 0.23.9 spending nearly half a run in the first two kinds: its 28 depthwise convolutions (about
//! 15 M multiply-adds) took 4.35 ms of 11.5, and its one 3x3 max pool 1.12 ms, while its 48 dense 1x1
//! convolutions took 2.5 ms; once those were lookout's, the first convolution (3 -> 24 channels, 3x3,
//! stride 2: 20 M multiply-adds, tract's `DirectSpatialConv`) was the largest single node, 0.98 ms of
//! 5.5. These ops are simple enough to write so that the compiler vectorizes them, and that is all this
//! module does; everything else stays tract's.
//! [`substitute`] swaps them into a decluttered model before tract's own optimizer runs, so they
//! cost nothing at run time beyond their eval, and a model without such nodes is left as it was.
//!
//! How, for the convolutions: the input is split into zero-padded *phases* of the stride, so that for
//! every tap of the kernel the inputs of consecutive outputs are consecutive in memory. Depthwise, each
//! channel's plane is copied once into its phase planes, and the output is computed on a grid as wide
//! as a phase plane, one tap at a time: each tap is one long multiply-add of the grid, which stays in
//! L1, with a run of a phase plane; then the grid's valid columns are copied out. The grid's extra
//! columns are the price (2 to 4 of 24 on the head's planes). Dense, the other way round: only the
//! rows the current output row needs are split, into a ring of a few KiB, and a block of 8 output
//! channels by a run of 8 or 16 output columns is held in registers through all its taps, so each load
//! of inputs feeds 8 multiply-adds (0.64-0.66 ms against tract's 0.98 for the first convolution, same
//! runs' neighbours as the yardstick; whole phase planes there cost 1.5 MB of scratch an engine, hence
//! the ring). For the pool, separably: each input row is pooled along x once,
//! and each output row is the max of `kh` pooled rows, so its large input is read once, in order (the
//! phase planes copied it and read it nine times: 0.75-0.9 ms against 1.5-1.6 ms in the same loaded
//! runs). The vector instructions are chosen at run time ([`Simd`]): AVX-512F (the convolutions) or
//! AVX2 on an x86-64 that has them, NEON on aarch64. The arithmetic is a plain multiply then add, in tap order, so every build
//! gives the same bits (a test checks it for each variant the CPU can run).
//!
//! Tried and not kept (`lookout bench --ops`, the same runs' OptMatMul as the yardstick): all taps of
//! 16 lanes accumulated in registers for the depthwise nodes (3.1-4.0 ms for the 28 against 1.5-1.6 ms
//! for the taps-outer loop: a load feeds one multiply-add there); the taps-outer grid for the dense
//! first convolution (1.9 ms against 1.5 ms for tract's `DirectSpatialConv` then); 16 dense lanes left
//! to the compiler under AVX-512 (it splits them into AVX2 registers and spills: 10.6 ms). The first
//! convolution, its ReLU and the max pool fused into one op (each convolution row through the ReLU and
//! pooled as it is made, so the 3 MB convolution output is never written; equal values in that
//! change's test): 3.5% less wall time over 1500 frames of the shipped clip (whole process, 5 interleaved
//! pairs on a loaded machine: 0.965, range 0.957-1.001) but 5.7 MiB more peak memory (60.2 against 54.5
//! MiB median): without the 3 MB block each run started with, glibc's per-thread arena lays out tract's
//! ~770 allocations of a run less tightly (an engine's arena 11648 KiB resident against 8952, smaps).
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
//! paddings, plane sizes and (dense) channel counts; `tests/reference.rs` compares the whole model with onnxruntime.

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

/// Output channels per register block of the dense kernel: with a block's run of output columns (`PX`:
/// 16 on AVX-512, one register; 8 elsewhere, one AVX2 register, two NEON ones) its accumulators stay in
/// registers for all of the block's taps.
const DENSE_CB: usize = 8;
/// Dense convolutions with at most this many input channels run on [`dense_planes`] (the shipped
/// model's first convolution has 3); wider ones are matrix products, tract's.
const DENSE_MAX_CIN: usize = 4;
const DENSE_MAX_TAPS: usize = DENSE_MAX_CIN * MAX_TAPS;

/// All taps of one dense block: for each, every accumulator of the block gets its weight times the run
/// of `PX` inputs at `g + offs[t]` of the phase planes (weights `wblk`, `[tap][DENSE_CB]`). Written with
/// constant bounds so that the compiler unrolls the channels, makes each channel's lanes one vector
/// operation and keeps the whole block in registers (iterator chains here left it on the stack: 4.7
/// ms for the shipped model's first convolution, against 0.93).
#[inline(always)]
#[allow(clippy::indexing_slicing)] // constant bounds: every index is in range
fn taps_plain<const PX: usize>(
    acc: &mut [[f32; PX]; DENSE_CB],
    planes: &[f32],
    g: usize,
    offs: &[usize],
    wblk: &[f32],
) {
    for (&off, wt) in offs.iter().zip(wblk.chunks_exact(DENSE_CB)) {
        let Some(x) = planes.get(g + off..g + off + PX) else { return };
        let (Ok(x), Ok(wt)) = (<&[f32; PX]>::try_from(x), <&[f32; DENSE_CB]>::try_from(wt)) else { return };
        for c in 0..DENSE_CB {
            for l in 0..PX {
                acc[c][l] += wt[c] * x[l];
            }
        }
    }
}

/// [`taps_plain`] for 16 lanes in AVX-512 registers, written with intrinsics: the compiler, left to
/// itself, splits 16 lanes into two AVX2 registers (its default preference on x86-64) and spills.
/// The same multiply then add per lane, in the same order, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn taps_avx512(acc: &mut [[f32; 16]; DENSE_CB], planes: &[f32], g: usize, offs: &[usize], wblk: &[f32]) {
    use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_storeu_ps};
    // SAFETY (every load and store below): each pointer is to 16 f32 of a slice of 16 f32.
    let mut v: [__m512; DENSE_CB] = acc.map(|a| unsafe { _mm512_loadu_ps(a.as_ptr()) });
    for (&off, wt) in offs.iter().zip(wblk.chunks_exact(DENSE_CB)) {
        let Some(x) = planes.get(g + off..g + off + 16) else { return };
        let (Ok(x), Ok(wt)) = (<&[f32; 16]>::try_from(x), <&[f32; DENSE_CB]>::try_from(wt)) else { return };
        let x = unsafe { _mm512_loadu_ps(x.as_ptr()) };
        for (v, &w) in v.iter_mut().zip(wt) {
            *v = _mm512_add_ps(*v, _mm512_mul_ps(_mm512_set1_ps(w), x));
        }
    }
    for (a, v) in acc.iter_mut().zip(v) {
        unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
    }
}

/// One padded input row (`src`, `None` for a padding row) split into its `sw` column phases, each a row of
/// `rl` values in `dst` (phase `rx` holds padded columns `rx`, `rx + sw`, ...), zero where padded.
#[inline(always)]
fn phase_row(src: Option<&[f32]>, pad_left: usize, sw: usize, rl: usize, dst: &mut [f32]) {
    dst.fill(0.0);
    let Some(src) = src else { return };
    for rx in 0..sw {
        // The first input column that lands in phase `rx`, and where it lands.
        let ix0 = (rx + sw - pad_left % sw) % sw;
        let start = rx * rl + (ix0 + pad_left) / sw;
        let (Some(d), Some(s)) = (dst.get_mut(start..(rx + 1) * rl), src.get(ix0..)) else { continue };
        for (d, &v) in d.iter_mut().zip(s.iter().step_by(sw)) {
            *d = v;
        }
    }
}

/// Dense convolution of `cin` input planes into `cout` output planes (one batch item). `packed` holds the
/// weights by block of [`DENSE_CB`] output channels, tap-major inside a block (`[block][ci * k + t][c]`,
/// zero past `cout`), `bias` is `[cout]`.
///
/// The padded input rows an output row needs (`kh` per input channel) are kept split into their column
/// phases in a small ring (row `py` in slot `py % kh`; each input row is split once), so for every tap
/// the inputs of consecutive outputs are consecutive in memory; the ring is a few KiB, in L1. Then for
/// each run of `PX` outputs of a row and each block of output channels, every tap is one load of `PX`
/// consecutive inputs, multiplied into all the block's accumulators, which stay in registers: a load
/// feeds 8 multiply-adds, where the depthwise kernel's feeds one.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dense_planes<const PX: usize>(
    win: &Window,
    (h, w): (usize, usize),
    (cin, cout): (usize, usize),
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
    block_taps: impl Fn(&mut [[f32; PX]; DENSE_CB], &[f32], usize, &[usize], &[f32]),
) {
    let Some((oh, ow)) = win.output_hw(h, w) else { return };
    let (kh, kw, sw) = (win.kh, win.kw, win.sw);
    let pws = (w + win.pad[1] + win.pad[3]).div_ceil(sw);
    // A phase row: every padded column of its phase, and room for the last run of a row to read `PX`
    // past the last output.
    let rl = pws.max(ow + (kw - 1) / sw) + PX;
    let row_set = sw * rl;
    scratch.resize(cin * kh * row_set, 0.0);
    let ntaps = cin * kh * kw;
    let block_len = ntaps * DENSE_CB;
    let plane_out = oh * ow;
    // Padded rows split so far: 0..next.
    let mut next = 0;
    for oy in 0..oh {
        let first = oy * win.sh;
        next = next.max(first);
        while next < first + kh {
            let iy = next.checked_sub(win.pad[0]).filter(|&y| y < h);
            for ci in 0..cin {
                let at = (ci * kh + next % kh) * row_set;
                let src = iy.and_then(|y| input.get((ci * h + y) * w..(ci * h + y + 1) * w));
                let Some(dst) = scratch.get_mut(at..at + row_set) else { return };
                phase_row(src, win.pad[1], sw, rl, dst);
            }
            next += 1;
        }
        // Where each tap's input run starts in the ring for this output row, in weight order.
        let mut offs: heapless::Vec<usize, DENSE_MAX_TAPS> = heapless::Vec::new();
        for ci in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = (ci * kh + (first + ky) % kh) * row_set;
                    if offs.push(row + (kx % sw) * rl + kx / sw).is_err() {
                        return; // more taps than `dense_replacement` admits
                    }
                }
            }
        }
        if offs.len() != ntaps {
            return;
        }
        for ox in (0..ow).step_by(PX) {
            let n = PX.min(ow - ox);
            for (cb, wblk) in packed.chunks_exact(block_len).enumerate() {
                let mut acc = [[0f32; PX]; DENSE_CB];
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = [bias.get(cb * DENSE_CB + c).copied().unwrap_or(0.0); PX];
                }
                block_taps(&mut acc, scratch, ox, &offs, wblk);
                for (c, a) in acc.iter().enumerate() {
                    let co = cb * DENSE_CB + c;
                    if co >= cout {
                        break;
                    }
                    let at = co * plane_out + oy * ow + ox;
                    if let (Some(dst), Some(src)) = (out.get_mut(at..at + n), a.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
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

/// Vector instructions the kernels are compiled for, beyond the target's baseline, chosen at run time
/// (the std macro caches what the CPU has): the same source compiled for each, so every variant does
/// the same operations in the same order and gives the same bits, only more lanes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    /// x86-64 with AVX-512F and AVX2 (Zen 4, Ice Lake and later servers): 16 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// x86-64 with AVX2: 8 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
}

fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx2") {
            return Simd::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Wrappers of an `#[inline(always)]` kernel compiled with AVX2 and with AVX-512F, and a function that
/// runs the best one this CPU has.
macro_rules! simd_kernel {
    ($run:ident, $avx2:ident, $avx512:ident, $kernel:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn $avx2($($arg: $ty),*) {
            $kernel($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        fn $avx512($($arg: $ty),*) {
            $kernel($($arg),*)
        }

        #[allow(clippy::too_many_arguments)]
        fn $run($($arg: $ty),*) {
            match simd() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F (`simd` asked it).
                Simd::Avx512 => unsafe { $avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 (`simd` asked it).
                Simd::Avx2 => unsafe { $avx2($($arg),*) },
                _ => $kernel($($arg),*),
            }
        }
    };
}

simd_kernel!(depthwise, depthwise_avx2, depthwise_avx512, depthwise_planes, (
    win: &Window, hw: (usize, usize), input: &[f32], weights: &[f32], bias: &[f32], out: &mut [f32],
    scratch: &mut Vec<f32>
));

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn maxpool_avx2(win: &Window, hw: (usize, usize), input: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
    maxpool_planes(win, hw, input, out, scratch)
}

/// The pool on AVX2 even where the CPU has AVX-512F: built for AVX-512 it was no faster (`lookout
/// bench --ops`, three runs each on a busy machine: 0.40-0.49 ms against 0.34-0.39).
fn maxpool(win: &Window, hw: (usize, usize), input: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
    match simd() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (`simd` found it, with or without AVX-512F).
        Simd::Avx512 | Simd::Avx2 => unsafe { maxpool_avx2(win, hw, input, out, scratch) },
        _ => maxpool_planes(win, hw, input, out, scratch),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn dense_avx2(
    win: &Window,
    hw: (usize, usize),
    chans: (usize, usize),
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    dense_planes::<8>(win, hw, chans, input, packed, bias, out, scratch, taps_plain)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn dense_avx512(
    win: &Window,
    hw: (usize, usize),
    chans: (usize, usize),
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    // The closure has this function's target features, so it may call `taps_avx512`.
    dense_planes::<16>(win, hw, chans, input, packed, bias, out, scratch, |a, p, g, o, w| taps_avx512(a, p, g, o, w))
}

#[allow(clippy::too_many_arguments)]
fn dense(
    win: &Window,
    hw: (usize, usize),
    chans: (usize, usize),
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    match simd() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F (`simd` asked it).
        Simd::Avx512 => unsafe { dense_avx512(win, hw, chans, input, packed, bias, out, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 (`simd` asked it).
        Simd::Avx2 => unsafe { dense_avx2(win, hw, chans, input, packed, bias, out, scratch) },
        _ => dense_planes::<8>(win, hw, chans, input, packed, bias, out, scratch, taps_plain),
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
                depthwise(win, (h, w), inp, weights, bias, out, scratch);
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

/// Dense 2-D convolution of a few input channels ([`DENSE_MAX_CIN`]), channel-first, f32, weights and
/// bias held by the op.
#[derive(Debug, Clone)]
pub struct Dense {
    pub window: Window,
    pub cin: usize,
    pub cout: usize,
    /// `[cout.div_ceil(DENSE_CB)][cin * kh * kw][DENSE_CB]`: see [`dense_planes`].
    pub packed: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    /// From OIHW weights `[cout, cin, kh, kw]`.
    fn new(window: Window, cin: usize, cout: usize, oihw: &[f32], bias: Vec<f32>) -> Dense {
        let taps = cin * window.kh * window.kw;
        let mut packed = vec![0.0; cout.div_ceil(DENSE_CB) * taps * DENSE_CB];
        for (co, wo) in oihw.chunks_exact(taps).enumerate().take(cout) {
            let (b, c) = (co / DENSE_CB, co % DENSE_CB);
            for (t, &v) in wo.iter().enumerate() {
                if let Some(p) = packed.get_mut((b * taps + t) * DENSE_CB + c) {
                    *p = v;
                }
            }
        }
        Dense { window, cin, cout, packed, bias }
    }

    fn output_shape(&self, shape: &[usize]) -> TractResult<TVec<usize>> {
        let mut s = output_shape(&self.window, shape)?;
        let [.., c, _, _] = s.as_mut_slice() else { bail!("expected a channel-first shape, got {shape:?}") };
        *c = self.cout;
        Ok(s)
    }
}

/// Equal when the weights are the same bits (tract compares ops to merge duplicates).
impl PartialEq for Dense {
    fn eq(&self, o: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.window == o.window
            && (self.cin, self.cout) == (o.cin, o.cout)
            && bits(&self.packed) == bits(&o.packed)
            && bits(&self.bias) == bits(&o.bias)
    }
}

impl Eq for Dense {}

impl Op for Dense {
    fn name(&self) -> StaticName {
        "lookout.Conv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, {} -> {} channels", self.window, self.cin, self.cout)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Dense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        anyhow::ensure!(
            matches!(shape, [_, c, _, _] if *c == self.cin),
            "lookout.Conv: input {shape:?} is not [n, {}, h, w]",
            self.cin
        );
        let (_, h, w) = planes_of(shape)?;
        let (oh, ow) = self.window.output_hw(h, w).context("lookout.Conv: the window does not fit")?;
        let mut output = Tensor::zero::<f32>(&self.output_shape(shape)?)?;
        let inp = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut out_view = output.try_as_plain_ram_mut()?;
        let out = out_view.as_slice_mut::<f32>()?;
        let (win, chans, packed, bias) = (&self.window, (self.cin, self.cout), &self.packed[..], &self.bias[..]);
        SCRATCH.with_borrow_mut(|scratch| {
            let items = inp.chunks_exact(self.cin * h * w).zip(out.chunks_exact_mut(self.cout * oh * ow));
            for (inp, out) in items {
                dense(win, (h, w), chans, inp, packed, bias, out, scratch);
            }
        });
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Dense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [input] = inputs else { bail!("lookout.Conv takes one input") };
        let shape = input.shape.as_concrete().context("lookout's kernels need a fixed input shape")?;
        anyhow::ensure!(input.datum_type == f32::datum_type(), "lookout's kernels run f32 only");
        Ok(tvec!(f32::fact(&*self.output_shape(shape)?)))
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
            maxpool(win, hw, inp, out, scratch);
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
        if conv.group == 1 && c <= DENSE_MAX_CIN {
            return dense_replacement(model, node, conv);
        }
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
        let (weights, bias) = match constants(model, node, &[c, 1, window.kh, window.kw], c) {
            Ok(wb) => wb,
            Err(why) => return refuse(&why),
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

/// The constant kernel and bias of a convolution node, f32, the bias one per output channel.
fn constants(
    model: &TypedModel,
    node: &TypedNode,
    kernel_shape: &[usize],
    cout: usize,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let [_, kernel, bias] = node.inputs.as_slice() else { return Err("not three inputs".into()) };
    let fact = |o: &OutletId| model.outlet_fact(*o).ok().and_then(|f| f.konst.clone());
    let (Some(kernel), Some(bias)) = (fact(kernel), fact(bias)) else {
        return Err("kernel or bias not constant".into());
    };
    if kernel.datum_type() != f32::datum_type()
        || kernel.shape() != kernel_shape
        || bias.datum_type() != f32::datum_type()
    {
        return Err(format!("kernel {:?} {:?}, bias {:?}", kernel.datum_type(), kernel.shape(), bias.datum_type()));
    }
    let (Ok(k), Ok(b)) = (kernel.try_as_plain_ram(), bias.try_as_plain_ram()) else {
        return Err("kernel or bias not in plain memory".into());
    };
    let (Ok(k), Ok(b)) = (k.as_slice::<f32>(), b.as_slice::<f32>()) else {
        return Err("kernel or bias not f32".into());
    };
    let bias = match b.len() {
        n if n == cout => b.to_vec(),
        1 => b.repeat(cout),
        n => return Err(format!("{n} biases for {cout} channels")),
    };
    Ok((k.to_vec(), bias))
}

/// A dense convolution of few input channels, when [`Dense`] covers it.
fn dense_replacement(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Box<dyn TypedOp>>> {
    let refuse = |why: &str| {
        log::debug!("{} ({}) stays tract's: {why}", node.name, node.op().name());
        Ok(None)
    };
    let spec = &conv.pool_spec;
    let (cin, cout) = (spec.input_channels, spec.output_channels);
    let Some(window) = Window::of(spec) else { return refuse(&format!("window not covered: {spec:?}")) };
    let fact = node.inputs.first().and_then(|o| model.outlet_fact(*o).ok());
    let batch_planes = fact.as_ref().and_then(|f| f.shape.as_concrete()).is_some_and(|s| s.len() == 4);
    if channel_first_f32(model, node, spec) != Some(cin) || !batch_planes || cout == 0 {
        return refuse(&format!(
            "input {fact:?} ({:?}) not fixed [n, c, h, w] f32 planes that the window fits",
            spec.data_format
        ));
    }
    if conv.q_params.is_some() || conv.kernel_fmt != KernelFormat::OIHW {
        return refuse(&format!("quantized or kernel format {:?}", conv.kernel_fmt));
    }
    match constants(model, node, &[cout, cin, window.kh, window.kw], cout) {
        Ok((k, b)) => Ok(Some(Box::new(Dense::new(window, cin, cout, &k, b)))),
        Err(why) => refuse(&why),
    }
}

/// Replaces the depthwise and few-channel dense convolutions and the max pools of a decluttered model that these kernels cover
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
    fn dense_matches_tract() {
        for (i, &(k, s, pad, (h, w))) in CASES.iter().enumerate() {
            if k == (1, 1) {
                continue; // tract's declutter makes a 1x1 convolution a matrix product
            }
            for (n, cin, cout) in [(1usize, 3usize, 24usize), (2, 1, 5), (1, 4, 9), (1, 2, 8)] {
                let mut model = TypedModel::default();
                let x = model.add_source("x", f32::fact([n, cin, h, w])).unwrap();
                let len = cout * cin * k.0 * k.1;
                let kernel = Tensor::from_shape(&[cout, cin, k.0, k.1], &values(len, 30 + i as u64)).unwrap();
                let bias = Tensor::from_shape(&[cout], &values(cout, 130 + i as u64)).unwrap();
                let kw = model.add_const("k", kernel).unwrap();
                let bw = model.add_const("b", bias).unwrap();
                let mut pool_spec = spec(cin, k, s, pad);
                pool_spec.output_channels = cout;
                let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
                let y = model.wire_node("conv", conv, &[x, kw, bw]).unwrap();
                model.select_output_outlets(&y).unwrap();
                let input = Tensor::from_shape(&[n, cin, h, w], &values(n * cin * h * w, 70 + i as u64)).unwrap();
                let (ours, ops) = run(&model, &input, true);
                assert!(ops.iter().any(|o| o == "lookout.Conv"), "case {i}: {ops:?}");
                let (theirs, _) = run(&model, &input, false);
                assert_close(&ours, &theirs, &format!("dense case {i}, {n}x{cin} -> {cout}"));
            }
        }
    }

    /// Every build of a kernel this CPU can run gives the same bits as the baseline one (x86-64 only:
    /// elsewhere the baseline is the only build).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_variants_agree_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let simd = simd();
        for (i, &(k, s, pad, (h, w))) in CASES.iter().enumerate() {
            let win = Window::of(&spec(3, k, s, pad)).unwrap();
            let Some((oh, ow)) = win.output_hw(h, w) else { continue };
            let (cin, cout) = (3, 11);
            let input = values(cin * h * w, 200 + i as u64);
            let oihw = values(cout * cin * k.0 * k.1, 300 + i as u64);
            let dense_op = Dense::new(win, cin, cout, &oihw, values(cout, 400 + i as u64));
            let dw_weights = values(cin * k.0 * k.1, 500 + i as u64);
            let mut scratch = Vec::new();
            let mut base = (vec![0.0; cout * oh * ow], vec![0.0; cin * oh * ow], vec![0.0; cin * oh * ow]);
            let (p, b) = (&dense_op.packed, &dense_op.bias);
            dense_planes::<8>(&win, (h, w), (cin, cout), &input, p, b, &mut base.0, &mut scratch, taps_plain);
            depthwise_planes(&win, (h, w), &input, &dw_weights, &b[..cin], &mut base.1, &mut scratch);
            maxpool_planes(&win, (h, w), &input, &mut base.2, &mut scratch);
            let runs = match simd {
                Simd::Avx512 => &["avx2", "avx512"][..],
                Simd::Avx2 => &["avx2"][..],
                Simd::Baseline => &[][..],
            };
            for &run in runs {
                let mut got = (vec![0.0; cout * oh * ow], vec![0.0; cin * oh * ow], vec![0.0; cin * oh * ow]);
                // SAFETY: each variant runs only where `simd` found its instructions.
                unsafe {
                    if run == "avx2" {
                        dense_avx2(&win, (h, w), (cin, cout), &input, p, b, &mut got.0, &mut scratch);
                        depthwise_avx2(&win, (h, w), &input, &dw_weights, &b[..cin], &mut got.1, &mut scratch);
                        maxpool_avx2(&win, (h, w), &input, &mut got.2, &mut scratch);
                    } else {
                        dense_avx512(&win, (h, w), (cin, cout), &input, p, b, &mut got.0, &mut scratch);
                        depthwise_avx512(&win, (h, w), &input, &dw_weights, &b[..cin], &mut got.1, &mut scratch);
                        maxpool(&win, (h, w), &input, &mut got.2, &mut scratch);
                        // AVX2 there too
                    }
                }
                assert_eq!(bits(&got.0), bits(&base.0), "dense, {run}, case {i}");
                assert_eq!(bits(&got.1), bits(&base.1), "depthwise, {run}, case {i}");
                assert_eq!(bits(&got.2), bits(&base.2), "max pool, {run}, case {i}");
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
