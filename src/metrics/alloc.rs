//! Heap accounting, and a scratch arena for a decoder that allocates per frame.
//!
//! Why: "the steady state allocates nothing per frame" is a claim `lookout bench` checks on the real
//! pipeline, so the binary's global allocator is [`Counting`]: it counts every allocation, and separately
//! those made inside tract's run ([`in_tract`]), which lookout does not control. The one other
//! per-frame allocator is zune-jpeg, which builds its decoder state for every JPEG; its allocations are
//! served from an [`Arena`], a block allocated once for the source and reused for every frame (a bump
//! pointer, reset when everything it gave out has been freed), so an MJPEG camera runs in fixed memory
//! too. The large blocks of an engine's tract run ([`in_run`]) are served from the engine's planned
//! region ([`super::runplan`]) once one run has been recorded. Without [`Counting`] as the global
//! allocator (a test binary with its own, a library user) the arena, the plans and the counters do
//! nothing and allocations go to that allocator as usual.

use std::alloc::{GlobalAlloc, Layout, System};

use super::runplan;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static TRACT_ALLOCS: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Most arenas alive at once (one per JPEG source; a pipeline has one).
const MAX_ARENAS: usize = 8;
/// The address ranges of the live arenas, so a block is recognised whichever thread frees it.
static RANGES: [(AtomicUsize, AtomicUsize); MAX_ARENAS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_ARENAS];
/// Blocks each arena has given out and not had back.
static LIVE: [AtomicUsize; MAX_ARENAS] = [const { AtomicUsize::new(0) }; MAX_ARENAS];
/// Each arena's bump pointer (bytes used). Only the thread inside the arena's `scope` moves it.
static TOPS: [AtomicUsize; MAX_ARENAS] = [const { AtomicUsize::new(0) }; MAX_ARENAS];
/// Allocations made in an arena's scope that did not fit it (they went to the heap, counted).
static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_TRACT: Cell<bool> = const { Cell::new(false) };
    /// The engine whose run this thread is in ([`in_run`]): its run-plan slot + 1; 0: none.
    static RUN_SLOT: Cell<usize> = const { Cell::new(0) };
    /// The arena this thread allocates from (an index into RANGES + 1; 0: none).
    static ARENA: Cell<usize> = const { Cell::new(0) };
}

/// The counting global allocator (installed by the `lookout` binary).
pub struct Counting;

/// Allocations so far: (all, inside tract's run). Both 0 unless [`Counting`] is the global allocator.
pub fn counts() -> (u64, u64) {
    (ALLOCS.load(Ordering::Relaxed), TRACT_ALLOCS.load(Ordering::Relaxed))
}

/// Whether [`Counting`] is the global allocator (it has served an allocation).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Runs `f` (tract's run), its allocations counted as tract's.
pub fn in_tract<R>(f: impl FnOnce() -> R) -> R {
    let before = IN_TRACT.with(|c| c.replace(true));
    let r = f();
    IN_TRACT.with(|c| c.set(before));
    r
}

/// Runs `f` (an engine's tract run), its allocations counted as tract's and its large blocks served from
/// the engine's planned region when `slot` (from [`super::runplan::take_slot`]) is given (see
/// [`super::runplan`]).
pub fn in_run<R>(slot: Option<usize>, f: impl FnOnce() -> R) -> R {
    let Some(i) = slot else { return in_tract(f) };
    runplan::begin(i);
    let before = RUN_SLOT.with(|c| c.replace(i.saturating_add(1)));
    let r = in_tract(f);
    RUN_SLOT.with(|c| c.set(before));
    runplan::end(i);
    r
}

/// The run-plan slot of the run this thread is in, if any.
fn run_slot() -> Option<usize> {
    RUN_SLOT.try_with(Cell::get).ok()?.checked_sub(1)
}

/// A large block of a planned run: the plan's, or the heap's (recorded, when the run is recorded).
fn planned_alloc(l: Layout, zeroed: bool) -> Option<*mut u8> {
    // Blocks aligned more strictly than a plan places them are the heap's, in every run alike.
    if l.size() < runplan::MIN || l.align() > runplan::ALIGN {
        return None;
    }
    let i = run_slot()?;
    if let Some(p) = runplan::alloc(i, l.size(), l.align()) {
        if zeroed {
            // SAFETY: the planned block is at least `l.size()` bytes and ours alone.
            unsafe { p.write_bytes(0, l.size()) };
        }
        return Some(p);
    }
    // SAFETY: forwarded as is.
    let p = unsafe {
        if zeroed {
            System.alloc_zeroed(l)
        } else {
            System.alloc(l)
        }
    };
    if !p.is_null() {
        runplan::recorded(i, p, l.size());
    }
    Some(p)
}

fn count() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    // try_with: during thread teardown the flag may be gone; then it is not tract.
    if IN_TRACT.try_with(Cell::get).unwrap_or(false) {
        TRACT_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes this thread's first blocking wait on a std channel now. std's channels give a thread a wait
/// context (one heap allocation, kept for the thread's life) the first time it blocks on one, which in
/// the steady state would be whenever a busy thread first finds its queue empty (an engine under load:
/// found by `lookout bench` in CI). Threads that wait on channels call this as they start.
pub fn prime_channel_wait() {
    let (_tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let _ = rx.recv_timeout(PRIME_WAIT);
}

/// How long a priming wait lasts: long enough that its deadline has not passed when the channel,
/// after spinning, decides to wait.
const PRIME_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// A bounded std channel ([`std::sync::mpsc::sync_channel`]) whose receiving side has waited once. Each
/// std channel keeps its waiting receivers in a list on the heap that it allocates the first time a
/// receive waits on it (kept for the channel's life): in the steady state that was whenever the
/// dispatcher first found every engine busy, or a thread first found its queue empty, at a moment that
/// depends on the load. Waiting here once, before any sender exists elsewhere, makes it now (1 ms on
/// this thread, whose own wait context it also makes). The sending side has a list of its own, made
/// when a send first finds the channel full; lookout's senders never wait (`try_send`, or a channel
/// that holds every message there is).
pub fn sync_channel<T>(cap: usize) -> (std::sync::mpsc::SyncSender<T>, std::sync::mpsc::Receiver<T>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(cap);
    // Nothing can have been sent: the only sender is here. Times out, having waited.
    let _ = rx.recv_timeout(PRIME_WAIT);
    (tx, rx)
}

/// The arena (index) holding `p`, if any.
fn arena_of(p: *mut u8) -> Option<usize> {
    let a = p as usize;
    RANGES.iter().position(|(base, end)| {
        let b = base.load(Ordering::Acquire);
        b != 0 && a >= b && a < end.load(Ordering::Acquire)
    })
}

/// A bump allocation from this thread's arena, if it has one and the block fits.
fn arena_alloc(l: Layout) -> Option<*mut u8> {
    let slot = ARENA.try_with(Cell::get).ok()?.checked_sub(1)?;
    let (base, end) = RANGES.get(slot).map(|(b, e)| (b.load(Ordering::Relaxed), e.load(Ordering::Relaxed)))?;
    let top = TOPS.get(slot)?;
    let start = base.checked_add(top.load(Ordering::Relaxed))?.checked_next_multiple_of(l.align())?;
    let stop = start.checked_add(l.size().max(1))?;
    if stop > end {
        OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    top.store(stop.saturating_sub(base), Ordering::Relaxed);
    LIVE.get(slot)?.fetch_add(1, Ordering::Relaxed);
    Some(start as *mut u8)
}

// SAFETY: every block comes from `System` or from an arena block that `System` allocated and that is
// never freed while a block of it is live (`Arena::drop`); arena blocks are aligned and within bounds
// (`arena_alloc`), never handed out twice before a reset, and a reset happens only with none live.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        if let Some(p) = arena_alloc(l) {
            return p;
        }
        count();
        if let Some(p) = planned_alloc(l, false) {
            return p;
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        if let Some(p) = arena_alloc(l) {
            // SAFETY: the block is `l.size()` bytes of the arena, ours alone.
            unsafe { p.write_bytes(0, l.size()) };
            return p;
        }
        count();
        if let Some(p) = planned_alloc(l, true) {
            return p;
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let in_arena = ARENA.try_with(Cell::get).unwrap_or(0) != 0;
        let planned = run_slot().is_some() && l.size().max(n) >= runplan::MIN;
        if in_arena || planned || arena_of(p).is_some() || runplan::is_planned(p) {
            // SAFETY: `n` with the old alignment is a valid layout (the caller's contract).
            let new_l = unsafe { Layout::from_size_align_unchecked(n, l.align()) };
            // SAFETY: as `alloc`.
            let q = unsafe { self.alloc(new_l) };
            if !q.is_null() {
                // SAFETY: both blocks are at least min(old, new) bytes and distinct.
                unsafe { std::ptr::copy_nonoverlapping(p, q, l.size().min(n)) };
                // SAFETY: `p` was allocated with `l` (the caller's contract).
                unsafe { self.dealloc(p, l) };
            }
            return q;
        }
        count();
        // SAFETY: forwarded as is.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if let Some(i) = arena_of(p) {
            if let Some(live) = LIVE.get(i) {
                live.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        if runplan::free(p) {
            return;
        }
        if l.size() >= runplan::MIN && l.align() <= runplan::ALIGN {
            if let Some(i) = run_slot() {
                runplan::heap_freed(i, p);
            }
        }
        // SAFETY: not an arena block nor a planned one, so `System` gave it.
        unsafe { System.dealloc(p, l) }
    }
}

/// A fixed block that a decoder's per-frame allocations come from (see the module doc).
#[derive(Debug)]
pub struct Arena {
    /// Index into RANGES; `None` when no slot was free or the block could not be had (then `scope`
    /// just runs its closure).
    slot: Option<usize>,
    layout: Layout,
    base: *mut u8,
}

// SAFETY: the arena is a block of memory and an index; which thread allocates from it is the
// thread-local ARENA, set only inside `scope` by the thread that owns the `Arena`.
unsafe impl Send for Arena {}

impl Arena {
    /// An arena of `bytes`, allocated now (only when [`Counting`] is the global allocator).
    pub fn new(bytes: usize) -> Arena {
        let none = Arena { slot: None, layout: Layout::new::<u8>(), base: std::ptr::null_mut() };
        let Ok(layout) = Layout::from_size_align(bytes.max(64), 64) else { return none };
        if !installed() {
            return none;
        }
        // SAFETY: a non-zero size.
        let base = unsafe { System.alloc(layout) };
        if base.is_null() {
            return none;
        }
        let (b, e) = (base as usize, (base as usize).saturating_add(layout.size()));
        for (i, (rb, re)) in RANGES.iter().enumerate() {
            if rb.compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                re.store(e, Ordering::Release);
                rb.store(b, Ordering::Release);
                if let (Some(l), Some(t)) = (LIVE.get(i), TOPS.get(i)) {
                    l.store(0, Ordering::Relaxed);
                    t.store(0, Ordering::Relaxed);
                }
                return Arena { slot: Some(i), layout, base };
            }
        }
        // SAFETY: allocated just above with this layout, never handed out.
        unsafe { System.dealloc(base, layout) };
        none
    }

    /// Runs `f` with this thread's allocations served from the arena (those that do not fit go to the
    /// heap, counted). Starts from the arena's beginning when nothing it gave out is still live.
    pub fn scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let Some(slot) = self.slot else { return f() };
        if LIVE.get(slot).is_some_and(|l| l.load(Ordering::Acquire) == 0) {
            if let Some(t) = TOPS.get(slot) {
                t.store(0, Ordering::Relaxed);
            }
        }
        let before = ARENA.with(|c| c.replace(slot.saturating_add(1)));
        let r = f();
        ARENA.with(|c| c.set(before));
        r
    }

    /// Allocations that did not fit an arena (they went to the heap and were counted).
    pub fn overflows() -> u64 {
        OVERFLOWS.load(Ordering::Relaxed)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let Some(slot) = self.slot else { return };
        // A block still live (a decoder that kept something) keeps the memory and its range: freeing
        // it would hand that block's memory to the heap under its owner.
        if LIVE.get(slot).is_some_and(|l| l.load(Ordering::Acquire) != 0) {
            return;
        }
        if let Some((b, e)) = RANGES.get(slot) {
            b.store(usize::MAX, Ordering::Release);
            e.store(0, Ordering::Release);
            // SAFETY: allocated in `new` with this layout; no block of it is live.
            unsafe { System.dealloc(self.base, self.layout) };
            b.store(0, Ordering::Release);
        }
    }
}
