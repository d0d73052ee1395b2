//! The per-track state machines of a rule: N-of-M confirmation and presence (dwell and clear).
//!
//! Why state machines of their own: "in 3 of the last 5 frames", "stayed 10 s", "gone for 3 s" are the
//! three timing questions every rule asks of every track, and each is easy to get subtly wrong (a
//! flicker that resets a dwell, a clear that fires while the object is merely missed for a frame). As
//! plain structs that take the frame's stream time as an argument they are tested alone, with an
//! injected clock, like the camera supervisor.

use crate::config::Confirm;

/// The last M analysed frames of one track: in (1) or not (0), newest in bit 0, plus the current run of
/// consecutive frames in (for `N/N` beyond 64 frames).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    bits: u64,
    streak: u32,
}

impl Window {
    /// Records one analysed frame.
    pub fn push(&mut self, present: bool) {
        self.bits = (self.bits << 1) | u64::from(present);
        self.streak = if present { self.streak.saturating_add(1) } else { 0 };
    }

    /// Frames in, counted the way `c` asks: of the last M, or in a row when N = M.
    pub fn count(&self, c: Confirm) -> u32 {
        if c.n == c.m {
            return self.streak.min(c.n);
        }
        let mask = if c.m >= 64 { u64::MAX } else { (1u64 << c.m) - 1 };
        (self.bits & mask).count_ones()
    }

    pub fn confirmed(&self, c: Confirm) -> bool {
        self.count(c) >= c.n
    }
}

/// One stay of a track in a rule's zone: from the first frame it was in, to `clear_ms` after the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    /// Stream time of the first frame in, while a stay lasts.
    since: Option<u64>,
    last_in: u64,
}

impl Presence {
    /// Records that the track is in at `pts_ms`.
    pub fn seen(&mut self, pts_ms: u64) {
        if self.since.is_none() {
            self.since = Some(pts_ms);
        }
        self.last_in = pts_ms;
    }

    /// How long the current stay has lasted at `pts_ms` (0 outside a stay).
    pub fn dwell(&self, pts_ms: u64) -> u64 {
        self.since.map_or(0, |s| pts_ms.saturating_sub(s))
    }

    pub fn active(&self) -> bool {
        self.since.is_some()
    }

    /// Whether the stay is over at `pts_ms`: not in for `clear_ms`. Ends it.
    pub fn expire(&mut self, pts_ms: u64, clear_ms: u64) -> bool {
        if self.since.is_some() && pts_ms.saturating_sub(self.last_in) >= clear_ms {
            self.since = None;
            return true;
        }
        false
    }

    /// Stream time of the last frame in.
    pub fn last_in(&self) -> u64 {
        self.last_in
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn c(n: u32, m: u32) -> Confirm {
        Confirm::new(n, m).unwrap()
    }

    #[test]
    fn n_of_m_counts_the_last_m_frames_only() {
        let mut w = Window::default();
        for present in [true, false, true] {
            w.push(present);
        }
        assert_eq!(w.count(c(3, 5)), 2);
        assert!(!w.confirmed(c(3, 5)));
        w.push(true);
        assert!(w.confirmed(c(3, 5)), "3 of the last 4");
        // Two misses: of the last 5 (1,0,1,1,0,0 → 0,1,1,0,0... newest first 0,0,1,1,0) two are in.
        w.push(false);
        w.push(false);
        assert_eq!(w.count(c(3, 5)), 2);
        assert!(!w.confirmed(c(3, 5)));
        // 2/3 survives one missed frame in the middle.
        let mut w = Window::default();
        w.push(true);
        w.push(false);
        w.push(true);
        assert!(w.confirmed(c(2, 3)));
    }

    #[test]
    fn n_of_n_is_consecutive_even_beyond_64_frames() {
        let mut w = Window::default();
        for _ in 0..99 {
            w.push(true);
        }
        assert!(!w.confirmed(c(100, 100)));
        assert_eq!(w.count(c(100, 100)), 99);
        w.push(true);
        assert!(w.confirmed(c(100, 100)));
        w.push(false);
        assert_eq!(w.count(c(100, 100)), 0);
        w.push(true);
        assert!(!w.confirmed(c(2, 2)) && w.confirmed(c(1, 1)));
    }

    #[test]
    fn dwell_runs_through_short_misses_and_clear_ends_the_stay() {
        let mut p = Presence::default();
        assert_eq!(p.dwell(500), 0);
        p.seen(1000);
        p.seen(1400);
        // Missed for 800 ms (less than clear_ms): the stay and its dwell go on.
        assert!(!p.expire(2200, 3000));
        p.seen(2200);
        assert_eq!(p.dwell(2200), 1200);
        assert!(!p.expire(5199, 3000));
        assert!(p.expire(5200, 3000), "3000 ms after the last frame in");
        assert!(!p.active());
        assert!(!p.expire(9000, 3000), "cleared once");
        p.seen(9000);
        assert_eq!(p.dwell(9500), 500, "a new stay starts its own dwell");
    }
}
