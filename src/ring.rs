//! The frame ring: a fixed set of frame slots shared by the capture thread and the inference thread.
//!
//! Why: a sensor that runs for months must not grow. All frame memory is allocated here once, at start-up;
//! afterwards only slot *indices* move, through two small fixed-capacity queues (`heapless::Deque`): `free`
//! slots the capture side may fill and `ready` slots holding frames not yet taken. When inference falls
//! behind a live camera the newest frame wins: the inference side takes the newest ready frame and hands the
//! older ones back, counting them as dropped, and a capture side that finds no free slot reclaims the oldest
//! ready one. For a file read as fast as possible, the ring is lossless instead: capture waits for a slot,
//! so every frame of the clip is analysed and the result does not depend on thread timing.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use heapless::Deque;

use crate::frame::Frame;

/// Most slots a ring can have (the queues are fixed-capacity).
pub const MAX_SLOTS: usize = 16;

/// What happens when inference is slower than capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Live sources: the newest frame is analysed, older waiting frames are dropped and counted.
    LatestWins,
    /// Files read as fast as possible: capture waits, nothing is dropped.
    Lossless,
}

struct State {
    free: Deque<u8, MAX_SLOTS>,
    ready: Deque<u8, MAX_SLOTS>,
    closed: bool,
    /// [`Ring::wake`] was called and no `take` has returned `Woken` since.
    woken: bool,
    dropped: u64,
}

/// What the inference side got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Slot(usize),
    /// Nothing arrived within the timeout (the caller can do timed work and ask again).
    Timeout,
    /// The capture side closed the ring and every frame has been taken.
    Closed,
    /// No frame yet, but [`Ring::wake`] was called (an engine finished: the caller has work).
    Woken,
}

pub struct Ring {
    slots: Vec<Mutex<Frame>>,
    state: Mutex<State>,
    changed: Condvar,
    policy: Policy,
}

/// A poisoned lock only means another thread panicked while holding it; the data (indices and pixels) is
/// still consistent, so keep going rather than spreading the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ring {
    /// Allocates `slots` frames of `frame_len` bytes each. `slots` must be 2..=MAX_SLOTS.
    pub fn new(slots: usize, frame_len: usize, policy: Policy) -> Ring {
        assert!((2..=MAX_SLOTS).contains(&slots), "ring slots must be 2..={MAX_SLOTS}, got {slots}");
        let mut free = Deque::new();
        for i in 0..slots {
            // Cannot fail: slots <= MAX_SLOTS.
            let _ = free.push_back(i as u8);
        }
        Ring {
            slots: (0..slots).map(|_| Mutex::new(Frame::with_capacity(frame_len))).collect(),
            state: Mutex::new(State { free, ready: Deque::new(), closed: false, woken: false, dropped: 0 }),
            changed: Condvar::new(),
            policy,
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The frame in slot `i`. The queue protocol guarantees only one side uses a slot at a time; the lock
    /// only makes that safe to express.
    pub fn slot(&self, i: usize) -> MutexGuard<'_, Frame> {
        lock(&self.slots[i])
    }

    /// Capture side: a slot to fill. Under `LatestWins` this never waits (it reclaims the oldest ready
    /// frame if needed); under `Lossless` it waits for the inference side. `None` once the ring is closed.
    pub fn acquire(&self) -> Option<usize> {
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return None;
            }
            if let Some(i) = st.free.pop_front() {
                return Some(i as usize);
            }
            if self.policy == Policy::LatestWins {
                if let Some(i) = st.ready.pop_front() {
                    st.dropped = st.dropped.saturating_add(1);
                    return Some(i as usize);
                }
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Capture side: slot `i` now holds a frame for the inference side.
    pub fn publish(&self, i: usize) {
        let mut st = lock(&self.state);
        let _ = st.ready.push_back(i as u8);
        drop(st);
        self.changed.notify_all();
    }

    /// Either side: slot `i` is free again (processed, or its capture failed).
    pub fn release(&self, i: usize) {
        let mut st = lock(&self.state);
        let _ = st.free.push_back(i as u8);
        drop(st);
        self.changed.notify_all();
    }

    /// Inference side: the frame to analyse next, waiting at most `timeout` in all. The deadline is
    /// fixed on entry: wake-ups that bring no frame (a corrupt frame's slot coming back, a rewind) do not
    /// restart it, so the caller's timed work (heartbeats, the alarm pulse, a stop) always gets its turn.
    pub fn take(&self, timeout: Duration) -> Take {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = lock(&self.state);
        loop {
            let got = match self.policy {
                Policy::Lossless => st.ready.pop_front(),
                Policy::LatestWins => {
                    let newest = st.ready.pop_back();
                    if newest.is_some() {
                        while let Some(old) = st.ready.pop_front() {
                            st.dropped = st.dropped.saturating_add(1);
                            let _ = st.free.push_back(old);
                        }
                    }
                    newest
                }
            };
            if let Some(i) = got {
                drop(st);
                self.changed.notify_all();
                return Take::Slot(usize::from(i));
            }
            if st.closed {
                return Take::Closed;
            }
            if st.woken {
                st.woken = false;
                return Take::Woken;
            }
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Take::Timeout;
            }
            st = self.changed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Ends a `take` that is waiting (or the next one) with [`Take::Woken`] if no frame is there: another
    /// thread has something for the taker.
    pub fn wake(&self) {
        lock(&self.state).woken = true;
        self.changed.notify_all();
    }

    /// Capture side: no more frames will come. Frames already published can still be taken.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }

    /// Frames discarded because inference was behind.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(10);

    #[test]
    fn latest_wins_drops_older_frames_and_counts_them() {
        let ring = Ring::new(4, 8, Policy::LatestWins);
        for _ in 0..3 {
            let i = ring.acquire().unwrap();
            ring.publish(i);
        }
        // Three ready: the newest is taken, two are dropped back to free.
        let Take::Slot(i) = ring.take(T) else { panic!() };
        assert_eq!(ring.dropped(), 2);
        ring.release(i);
        assert_eq!(ring.take(T), Take::Timeout);
    }

    #[test]
    fn capture_reclaims_the_oldest_ready_slot_when_none_is_free() {
        let ring = Ring::new(2, 8, Policy::LatestWins);
        let a = ring.acquire().unwrap();
        ring.publish(a);
        let b = ring.acquire().unwrap();
        ring.publish(b);
        let c = ring.acquire().unwrap();
        assert_eq!(c, a);
        assert_eq!(ring.dropped(), 1);
    }

    #[test]
    fn lossless_keeps_order_and_drops_nothing() {
        let ring = std::sync::Arc::new(Ring::new(2, 8, Policy::Lossless));
        let r2 = ring.clone();
        let producer = std::thread::spawn(move || {
            for n in 0..50u64 {
                let i = r2.acquire().unwrap();
                r2.slot(i).index = n;
                r2.publish(i);
            }
            r2.close();
        });
        let mut seen = Vec::new();
        loop {
            match ring.take(Duration::from_secs(5)) {
                Take::Slot(i) => {
                    seen.push(ring.slot(i).index);
                    ring.release(i);
                }
                Take::Closed => break,
                Take::Timeout | Take::Woken => panic!("producer stalled"),
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn take_times_out_on_time_while_slots_keep_coming_back() {
        // The capture side releases slots (corrupt frames) faster than the timeout: take must still
        // return at its deadline.
        let ring = std::sync::Arc::new(Ring::new(2, 8, Policy::Lossless));
        let r2 = ring.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let churn = std::thread::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(i) = r2.acquire() {
                    r2.release(i);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let t0 = Instant::now();
        assert_eq!(ring.take(Duration::from_millis(100)), Take::Timeout);
        let took = t0.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert!(took < Duration::from_secs(2), "take waited {took:?} for a 100 ms timeout");
    }

    #[test]
    fn a_wake_ends_a_wait_once_and_frames_come_first() {
        let ring = std::sync::Arc::new(Ring::new(2, 4, Policy::LatestWins));
        let r = ring.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            r.wake();
        });
        let t = Instant::now();
        assert_eq!(ring.take(Duration::from_secs(5)), Take::Woken);
        assert!(t.elapsed() < Duration::from_secs(4));
        waker.join().unwrap();
        assert_eq!(ring.take(Duration::from_millis(10)), Take::Timeout);
        ring.wake();
        let i = ring.acquire().unwrap();
        ring.publish(i);
        assert_eq!(ring.take(T), Take::Slot(i));
        assert_eq!(ring.take(T), Take::Woken);
    }
}
