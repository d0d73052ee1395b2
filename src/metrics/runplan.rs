//! Planned memory for tract's run: each engine's large blocks laid out once, at fixed offsets of a region
//! of its own, from the sequence its runs repeat.
//!
//! Why: tract allocates a run's intermediate tensors as it goes and frees each after its last use, the
//! same sizes in the same order every frame. In glibc's per-thread arena that pattern settled at 8952 KiB
//! resident per engine for FastestDet, while at most 3630 KiB were in use at once during a run (counted by
//! this allocator with a temporary byte counter): freed tensors are split for smaller blocks and the next frame's larger tensor no
//! longer fits where it was. glibc's settings do not help (a fixed mmap threshold faults every page in
//! again each frame, 26% fewer frames a second; a small trim threshold halves them). What does is what
//! an inference runtime's memory planner does: one run of an engine is *recorded* (each block of
//! [`MIN`] bytes or more: its size, when it was allocated and when freed), the blocks are placed in a
//! region so that two that are alive at the same time never overlap (largest first, each at the lowest
//! offset that is free over its lifetime), and from the next run on the k-th large allocation of a run
//! is the k-th placed block. The region's pages are faulted in once and reused every frame: no system
//! call and no page fault per frame, and the memory is about what is alive at once.
//!
//! Safety of a replay does not rest on the sequence repeating: each planned block handed out is checked
//! against the blocks of the region still alive, and a request that differs from the plan (another size,
//! another alignment, more requests than planned, or a block still alive where the plan puts it) is
//! served by the heap instead, for the rest of that run; the engine's next run is then recorded again
//! and planned anew. Blocks freed from any thread are recognised by their address.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Blocks smaller than this stay with the heap (tract's hundreds of small allocations a run).
pub const MIN: usize = 4096;
/// Alignment of every planned block: tract aligns tensor data to 128 bytes at most and its packed
/// matrix panels to 256 (AVX2) or 512 (AVX-512) bytes.
pub const ALIGN: usize = 512;
/// Engines that can have a plan at once; more run on the heap as before.
const SLOTS: usize = 8;
/// Large allocations one run may make and still be planned.
const CAP: usize = 512;
/// Planned blocks alive at once.
const LIVE_CAP: usize = 128;
/// Address space reserved for an engine's region (`MAP_NORESERVE`: only the pages a plan uses become
/// resident or count as committed): 1 GiB on 64-bit, 64 MiB on a 32-bit board, whose 3 GiB of address
/// space several engines share. A run that needs more is the heap's.
const RESERVE: usize = if cfg!(target_pointer_width = "64") { 1 << 30 } else { 64 << 20 };

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The next run (or this one) is recorded.
    Record,
    /// Runs follow the plan.
    Replay,
    /// No plan can be made (too many blocks, no address space): the heap serves everything.
    Off,
}

struct Data {
    mode: Mode,
    /// In a run now.
    running: bool,
    /// Recording: requests so far this run and the event clock.
    n: usize,
    clock: u32,
    /// Per request k: size (rounded to ALIGN), when allocated and freed (u32::MAX: alive at the end),
    /// and while recording the heap's pointer (to recognise its free).
    size: [usize; CAP],
    born: [u32; CAP],
    died: [u32; CAP],
    ptr: [usize; CAP],
    /// The plan: requests and each one's offset in the region.
    planned: usize,
    offset: [usize; CAP],
    order: [u16; CAP],
    /// Replaying: the next request's index, and whether this run left the plan.
    next: usize,
    diverged: bool,
    /// Planned blocks alive: (address, length).
    live: [(usize, usize); LIVE_CAP],
    live_n: usize,
    /// The last plan's extent (bytes) and the plans made, for the debug log and `lookout bench`.
    top: usize,
    plans: u32,
}

struct Slot {
    lock: AtomicBool,
    taken: AtomicBool,
    /// The region's start (0: none yet); read without the lock to recognise a block.
    base: AtomicUsize,
    data: UnsafeCell<Data>,
}

// SAFETY: `data` is only touched with `lock` held (`Slot::with`).
unsafe impl Sync for Slot {}

static SLOT: [Slot; SLOTS] = [const {
    Slot {
        lock: AtomicBool::new(false),
        taken: AtomicBool::new(false),
        base: AtomicUsize::new(0),
        data: UnsafeCell::new(Data {
            mode: Mode::Record,
            running: false,
            n: 0,
            clock: 0,
            size: [0; CAP],
            born: [0; CAP],
            died: [0; CAP],
            ptr: [0; CAP],
            planned: 0,
            offset: [0; CAP],
            order: [0; CAP],
            next: 0,
            diverged: false,
            live: [(0, 0); LIVE_CAP],
            live_n: 0,
            plans: 0,
            top: 0,
        }),
    }
}; SLOTS];

impl Slot {
    fn with<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held: no other reference to `data` exists until it is released below.
        let r = f(unsafe { &mut *self.data.get() });
        self.lock.store(false, Ordering::Release);
        r
    }
}

/// A slot for a new engine, if one is free.
pub fn take_slot() -> Option<usize> {
    let i =
        SLOT.iter().position(|s| s.taken.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok())?;
    SLOT.get(i)?.with(|d| {
        (d.mode, d.running, d.n, d.planned, d.next, d.diverged, d.plans) = (Mode::Record, false, 0, 0, 0, false, 0);
    });
    Some(i)
}

/// Gives a slot back when its engine is dropped. Its region is unmapped if no block of it is alive (one
/// that is, an output someone still holds, keeps the region and the slot).
pub fn release_slot(i: usize) {
    let Some(s) = SLOT.get(i) else { return };
    let free = s.with(|d| {
        if d.live_n != 0 {
            return false;
        }
        let base = s.base.swap(0, Ordering::AcqRel);
        if base != 0 {
            // SAFETY: the region was mapped by `plan` with RESERVE bytes and no block of it is alive.
            unsafe { libc::munmap(base as *mut libc::c_void, RESERVE) };
        }
        true
    });
    if free {
        s.taken.store(false, Ordering::Release);
    }
}

/// A run of slot `i`'s engine starts.
pub fn begin(i: usize) {
    if let Some(s) = SLOT.get(i) {
        s.with(|d| {
            (d.running, d.n, d.clock, d.next, d.diverged) = (true, 0, 0, 0, false);
        });
    }
}

/// The run of slot `i`'s engine ended: a recorded run is planned; a replay that left the plan has the
/// next run recorded.
pub fn end(i: usize) {
    let Some(s) = SLOT.get(i) else { return };
    let planned = s.with(|d| {
        d.running = false;
        match d.mode {
            // Nothing large was asked for (or the counting allocator is not installed): record again.
            Mode::Record if d.n == 0 => {}
            Mode::Record => {
                d.mode = if d.n <= CAP && plan(d) && map_region(s) { Mode::Replay } else { Mode::Off };
                if d.mode == Mode::Replay {
                    d.plans = d.plans.saturating_add(1);
                }
            }
            Mode::Replay if d.diverged || d.next != d.planned => d.mode = Mode::Record,
            _ => {}
        }
        d.mode == Mode::Replay && d.next == 0
    });
    // A run was recorded on the heap and the next ones follow the plan: what the recorded run's tensors
    // took in this thread's heap arena is free now, and would stay resident unused.
    #[cfg(target_env = "gnu")]
    if planned {
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
    }
}

/// The largest plan made in this process, in bytes.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The largest plan any engine has made so far, KiB: what one engine's run needs for its large blocks.
pub fn largest_plan_kb() -> u64 {
    (LARGEST.load(Ordering::Relaxed) / 1024) as u64
}

/// Plans made for slot `i` so far (1 when the runs repeat).
pub fn plans(i: usize) -> (u32, usize) {
    SLOT.get(i).map_or((0, 0), |s| s.with(|d| (d.plans, d.top)))
}

fn round(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(ALIGN)
}

/// Places the recorded blocks: largest first, each at the lowest offset where it overlaps no placed
/// block alive at the same time. False if the plan does not fit the reservation.
fn plan(d: &mut Data) -> bool {
    let n = d.n.min(CAP);
    let (Some(order), Some(size), Some(born), Some(died), Some(offset)) =
        (d.order.get_mut(..n), d.size.get(..n), d.born.get(..n), d.died.get(..n), d.offset.get_mut(..n))
    else {
        return false;
    };
    for (k, o) in order.iter_mut().enumerate() {
        *o = u16::try_from(k).unwrap_or(0);
    }
    order.sort_unstable_by_key(|&k| std::cmp::Reverse(size.get(usize::from(k)).copied().unwrap_or(0)));
    let mut placed = 0usize;
    let mut top = 0usize;
    for p in 0..n {
        let Some(&k) = order.get(p) else { return false };
        let k = usize::from(k);
        let (Some(&sz), Some(&b), Some(&e)) = (size.get(k), born.get(k), died.get(k)) else { return false };
        let mut at = 0usize;
        'search: loop {
            for &j in order.get(..placed).unwrap_or(&[]) {
                let j = usize::from(j);
                let (Some(&sj), Some(&bj), Some(&ej), Some(&oj)) =
                    (size.get(j), born.get(j), died.get(j), offset.get(j))
                else {
                    return false;
                };
                let alive_together = b < ej && bj < e;
                if alive_together && at < oj.saturating_add(sj) && oj < at.saturating_add(sz) {
                    at = oj.saturating_add(sj);
                    continue 'search;
                }
            }
            break;
        }
        if let Some(o) = offset.get_mut(k) {
            *o = at;
        }
        top = top.max(at.saturating_add(sz));
        placed += 1;
    }
    d.planned = n;
    d.top = top;
    LARGEST.fetch_max(top, Ordering::Relaxed);
    top <= RESERVE
}

fn map_region(s: &Slot) -> bool {
    if s.base.load(Ordering::Acquire) != 0 {
        return true;
    }
    // SAFETY: a new private anonymous reservation; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RESERVE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    s.base.store(p as usize, Ordering::Release);
    true
}

/// A block for the running engine of slot `i`, if the plan has one for this request; `None`: the heap
/// serves it (and, recording, `recorded` is then told its address).
pub fn alloc(i: usize, size: usize, align: usize) -> Option<*mut u8> {
    let s = SLOT.get(i)?;
    let len = round(size)?;
    s.with(|d| {
        if !d.running || d.mode != Mode::Replay || d.diverged || align > ALIGN {
            return None;
        }
        let k = d.next;
        let base = s.base.load(Ordering::Relaxed);
        let (Some(&want), Some(&off)) = (d.size.get(k), d.offset.get(k)) else {
            d.diverged = true;
            return None;
        };
        let at = base.checked_add(off)?;
        let clash = d.live.get(..d.live_n).unwrap_or(&[]).iter().any(|&(a, l)| at < a + l && a < at + len);
        if k >= d.planned || want != len || clash || d.live_n >= LIVE_CAP {
            d.diverged = true;
            return None;
        }
        if let Some(slot) = d.live.get_mut(d.live_n) {
            *slot = (at, len);
        }
        d.live_n += 1;
        d.next = k + 1;
        Some(at as *mut u8)
    })
}

/// Recording: the heap gave `p` for a request of `size` bytes in slot `i`'s run.
pub fn recorded(i: usize, p: *mut u8, size: usize) {
    let Some(s) = SLOT.get(i) else { return };
    s.with(|d| {
        if !d.running || d.mode != Mode::Record {
            return;
        }
        let k = d.n;
        d.n = d.n.saturating_add(1);
        let (Some(sz), Some(b), Some(e), Some(pp), Some(len)) =
            (d.size.get_mut(k), d.born.get_mut(k), d.died.get_mut(k), d.ptr.get_mut(k), round(size))
        else {
            return; // more than CAP: `end` turns planning off
        };
        (*sz, *b, *e, *pp) = (len, d.clock, u32::MAX, p as usize);
        d.clock = d.clock.saturating_add(1);
    });
}

/// The slot whose region holds `p`, if any.
fn region_of(p: *mut u8) -> Option<&'static Slot> {
    let a = p as usize;
    SLOT.iter().find(|s| {
        let base = s.base.load(Ordering::Acquire);
        base != 0 && a >= base && a < base + RESERVE
    })
}

/// Whether `p` lies in some engine's region.
pub fn is_planned(p: *mut u8) -> bool {
    region_of(p).is_some()
}

/// Whether `p` is a planned block of some region; if so it is freed (it never goes to the heap).
pub fn free(p: *mut u8) -> bool {
    let Some(s) = region_of(p) else { return false };
    let a = p as usize;
    s.with(|d| {
        let n = d.live_n;
        if let Some(pos) = d.live.get(..n).and_then(|l| l.iter().position(|&(b, _)| b == a)) {
            d.live.swap(pos, n - 1);
            d.live_n = n - 1;
        }
    });
    true
}

/// Recording: the heap's block `p` is freed; if slot `i` recorded it this run, its lifetime ends now.
pub fn heap_freed(i: usize, p: *mut u8) {
    let Some(s) = SLOT.get(i) else { return };
    s.with(|d| {
        if !d.running || d.mode != Mode::Record {
            return;
        }
        let n = d.n.min(CAP);
        let a = p as usize;
        let clock = d.clock;
        if let Some(k) = (0..n).rev().find(|&k| d.ptr.get(k) == Some(&a) && d.died.get(k) == Some(&u32::MAX)) {
            if let Some(e) = d.died.get_mut(k) {
                *e = clock;
            }
            d.clock = clock.saturating_add(1);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    /// One step of a run: allocate request `k` of `size` bytes, or free request `k`.
    #[derive(Clone, Copy)]
    enum Step {
        Alloc(usize, usize),
        Free(usize),
    }
    use Step::{Alloc, Free};

    /// Runs `steps` as one run of slot `i`, the heap's blocks stood in for by fake addresses (never
    /// touched): returns each request's planned address (None: the heap's) and frees what the run frees.
    fn run(i: usize, steps: &[Step]) -> Vec<Option<usize>> {
        let mut got = vec![None; steps.len()];
        let mut addr = vec![0usize; steps.len()];
        begin(i);
        for (t, step) in steps.iter().enumerate() {
            match *step {
                Alloc(k, size) => match alloc(i, size, 64) {
                    Some(p) => {
                        // The block is real memory of the region: writable over its whole length.
                        // SAFETY: a planned block of at least `size` bytes, handed out to this test.
                        unsafe { p.write_bytes(0xA5, size) };
                        (got[k], addr[k]) = (Some(p as usize), p as usize);
                    }
                    None => {
                        let fake = 0x1000_0000 + t * 0x10_0000;
                        recorded(i, fake as *mut u8, size);
                        addr[k] = fake;
                    }
                },
                Free(k) => {
                    if !free(addr[k] as *mut u8) {
                        heap_freed(i, addr[k] as *mut u8);
                    }
                }
            }
        }
        end(i);
        got.truncate(steps.iter().filter(|s| matches!(s, Alloc(..))).count());
        got
    }

    /// The blocks of a run alive at the same time, by the steps: request pairs that must not overlap.
    fn together(steps: &[Step]) -> Vec<(usize, usize)> {
        let mut alive: Vec<usize> = Vec::new();
        let mut pairs = Vec::new();
        for s in steps {
            match *s {
                Alloc(k, _) => {
                    pairs.extend(alive.iter().map(|&j| (j, k)));
                    alive.push(k);
                }
                Free(k) => alive.retain(|&j| j != k),
            }
        }
        pairs
    }

    fn size_of(steps: &[Step], k: usize) -> usize {
        steps.iter().find_map(|s| if let Alloc(j, n) = *s { (j == k).then_some(n) } else { None }).unwrap()
    }

    // A run shaped like a network's: a large input to a layer, its output, the input freed, and so on;
    // one block (an output) alive at the end.
    const RUN: &[Step] = &[
        Alloc(0, 300_000),
        Alloc(1, 80_000),
        Free(0),
        Alloc(2, 80_000),
        Alloc(3, 20_000),
        Free(1),
        Alloc(4, 150_000),
        Free(2),
        Free(3),
        Alloc(5, 5_000),
        Free(4),
    ];

    #[test]
    fn a_repeated_run_is_planned_once_and_replayed_without_overlap_in_less_than_its_sum() {
        let i = take_slot().unwrap();
        let first = run(i, RUN);
        assert!(first.iter().all(Option::is_none), "the first run is recorded on the heap");
        let (made, bytes) = plans(i);
        assert_eq!(made, 1);
        let sum: usize = (0..6).map(|k| size_of(RUN, k)).sum();
        // At most 300000 + 80000 are alive at once (rounded to ALIGN); the plan reuses space.
        assert!(bytes < sum, "plan of {bytes} bytes for blocks of {sum}");
        assert!(bytes >= 300_000 + 80_000);
        for _ in 0..3 {
            let out = run(i, RUN);
            let addrs: Vec<usize> = out.iter().flatten().copied().collect();
            assert_eq!(addrs.len(), 6, "every request replayed: {out:?}");
            let at = |k: usize| addrs[k];
            for (a, b) in together(RUN) {
                let (ea, eb) = (at(a) + size_of(RUN, a), at(b) + size_of(RUN, b));
                assert!(ea <= at(b) || eb <= at(a), "requests {a} and {b} overlap");
            }
            // The output is freed before the next run, as an engine does with its last outputs.
            assert!(free(at(5) as *mut u8));
        }
        assert_eq!(plans(i).0, 1, "no new plan while the runs repeat");
        release_slot(i);
    }

    #[test]
    fn a_run_that_leaves_the_plan_goes_to_the_heap_and_the_next_is_planned_again() {
        let i = take_slot().unwrap();
        run(i, RUN);
        let mut other = RUN.to_vec();
        other[4] = Alloc(3, 24_000); // another size at request 3
        let out = run(i, &other);
        assert!(out[0].is_some() && out[1].is_some() && out[2].is_some());
        assert!(out[3].is_none() && out[4].is_none() && out[5].is_none(), "after the difference, the heap: {out:?}");
        for a in &out[..3] {
            free(a.unwrap() as *mut u8);
        }
        // The next run is recorded (the heap) and planned again; the one after follows the new plan.
        assert!(run(i, &other).iter().all(Option::is_none));
        assert_eq!(plans(i).0, 2);
        let out = run(i, &other);
        assert!(out.iter().all(Option::is_some), "{out:?}");
        free(out[5].unwrap() as *mut u8);
        release_slot(i);
    }

    #[test]
    fn a_block_still_alive_where_the_plan_puts_another_sends_that_one_to_the_heap() {
        let i = take_slot().unwrap();
        run(i, RUN);
        let out = run(i, RUN);
        let kept = out[5].unwrap(); // the output, not freed before the next run this time
        let again = run(i, RUN);
        // Wherever the plan puts a block over the kept one, the heap serves it instead; nothing planned
        // overlaps the kept block.
        for (k, a) in again.iter().enumerate() {
            if let Some(a) = *a {
                let n = size_of(RUN, k);
                assert!(a + n <= kept || kept + size_of(RUN, 5) <= a, "request {k} overlaps the kept block");
            }
        }
        assert!(again.iter().any(Option::is_none), "the kept block clashed with nothing: {again:?}");
        assert!(free(kept as *mut u8));
        release_slot(i);
    }

    #[test]
    fn larger_runs_than_the_plan_holds_are_the_heaps() {
        let i = take_slot().unwrap();
        let many: Vec<Step> = (0..CAP + 1).map(|k| Alloc(k, MIN)).collect();
        run(i, &many);
        assert_eq!(plans(i).0, 0);
        assert!(run(i, &many).iter().all(Option::is_none));
        release_slot(i);
    }
}
