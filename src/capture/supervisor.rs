//! Camera supervision: when is a camera lost, when is it back, and when to try it again.
//!
//! Why a separate state machine: a sensor left on a gate for months sees cameras unplugged, USB hubs
//! resetting and drivers wedging. None of that may end the process, and each must be reported exactly
//! once: one `camera_lost` when frames stop, one `camera_restored` when they flow again, however many
//! reopen attempts lie between. Keeping the decisions here, as plain transitions over an injected clock,
//! lets the tests walk through hours of outages in microseconds; the capture loop only does the I/O
//! (open, read a frame, close) and reports what happened.
//!
//! States: `Closed` (no device open; reopen at `next_try`), `Opened` (open, no frame yet) and `Streaming`.
//! A failed open or a failure before the first frame backs off exponentially (`initial`, doubling, capped
//! at `max`); a camera that streamed and then failed is tried again after `initial`, since a replug is
//! usually quick. Stalls are failures too: the capture loop's read times out after the stall timeout.

use std::time::{Duration, Instant};

/// What the output must hear about the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraEvent {
    Lost,
    Restored,
}

impl CameraEvent {
    /// The event's name in `$LKEVT` sentences.
    pub fn name(self) -> &'static str {
        match self {
            CameraEvent::Lost => "camera_lost",
            CameraEvent::Restored => "camera_restored",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No device open. `failures` counts attempts since frames last flowed.
    Closed {
        next_try: Instant,
        failures: u32,
    },
    /// Open, waiting for the first frame.
    Opened {
        failures: u32,
    },
    Streaming,
}

/// The supervisor. Start it with [`Supervisor::new`] (closed, to be opened at once).
#[derive(Debug, Clone)]
pub struct Supervisor {
    state: State,
    initial: Duration,
    max: Duration,
    /// A `Lost` was reported and no `Restored` since.
    lost_since: Option<Instant>,
}

impl Supervisor {
    pub fn new(now: Instant, initial: Duration, max: Duration) -> Supervisor {
        Supervisor {
            state: State::Closed { next_try: now, failures: 0 },
            initial,
            max: max.max(initial),
            lost_since: None,
        }
    }

    /// The delay before attempt number `failures + 1` after `failures` failed ones.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// How long to wait before trying to open, if the camera is closed (zero: now); `None` when open.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Closed { next_try, .. } => Some(next_try.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// The camera is open.
    pub fn opened(&mut self) {
        if let State::Closed { failures, .. } = self.state {
            self.state = State::Opened { failures };
        }
    }

    /// Opening failed, or the open camera failed (I/O error, gone, stalled). Returns `Lost` the first time.
    pub fn failed(&mut self, now: Instant) -> Option<CameraEvent> {
        let failures = match self.state {
            State::Closed { failures, .. } | State::Opened { failures } => failures.saturating_add(1),
            State::Streaming => 1,
        };
        let next_try = now.checked_add(self.backoff(failures)).unwrap_or(now);
        self.state = State::Closed { next_try, failures };
        if self.lost_since.is_none() {
            self.lost_since = Some(now);
            Some(CameraEvent::Lost)
        } else {
            None
        }
    }

    /// A frame arrived. Returns `Restored` (and how long the camera was gone) on the first after a loss.
    pub fn frame(&mut self, now: Instant) -> Option<(CameraEvent, Duration)> {
        self.state = State::Streaming;
        self.lost_since.take().map(|t| (CameraEvent::Restored, now.saturating_duration_since(t)))
    }

    /// Whether a `Lost` is outstanding.
    pub fn is_lost(&self) -> bool {
        self.lost_since.is_some()
    }

    /// Failed attempts since frames last flowed.
    pub fn failures(&self) -> u32 {
        match self.state {
            State::Closed { failures, .. } | State::Opened { failures } => failures,
            State::Streaming => 0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn sup(t0: Instant) -> Supervisor {
        Supervisor::new(t0, MS(250), MS(4000))
    }

    #[test]
    fn a_camera_that_opens_and_streams_reports_nothing() {
        let t0 = Instant::now();
        let mut s = sup(t0);
        assert_eq!(s.wait(t0), Some(Duration::ZERO), "first open is immediate");
        s.opened();
        assert_eq!(s.wait(t0), None);
        assert_eq!(s.frame(t0 + MS(40)), None);
        assert_eq!(s.frame(t0 + MS(80)), None);
        assert!(!s.is_lost());
    }

    #[test]
    fn loss_is_reported_once_and_restore_once_with_capped_exponential_backoff() {
        let t0 = Instant::now();
        let mut s = sup(t0);
        s.opened();
        s.frame(t0);
        // The device goes away at 10 s.
        let mut now = t0 + MS(10_000);
        assert_eq!(s.failed(now), Some(CameraEvent::Lost));
        assert!(s.is_lost());
        assert_eq!(s.wait(now), Some(MS(250)), "a camera that was streaming is retried after the initial delay");
        // Every reopen fails for a while: 250, 500, 1000, 2000, 4000, 4000 ms apart, and no second Lost.
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let w = s.wait(now).unwrap();
            gaps.push(w.as_millis());
            now += w;
            assert_eq!(s.wait(now), Some(Duration::ZERO));
            assert_eq!(s.failed(now), None, "lost is reported once per outage");
        }
        assert_eq!(gaps, [250, 500, 1000, 2000, 4000, 4000]);
        assert_eq!(s.wait(now), Some(MS(4000)), "capped");
        assert_eq!(s.wait(now + MS(1000)), Some(MS(3000)), "the clock counts down");
        // It opens but delivers nothing before the stall timeout: still a failure, still backing off.
        now += MS(4000);
        s.opened();
        assert_eq!(s.failed(now + MS(2000)), None);
        assert_eq!(s.failures(), 8);
        // Then it opens and a frame arrives: restored, with the outage's length.
        now += MS(6000);
        s.opened();
        let (ev, gone) = s.frame(now + MS(100)).unwrap();
        assert_eq!(ev, CameraEvent::Restored);
        assert_eq!(gone, now + MS(100) - (t0 + MS(10_000)));
        assert_eq!(s.frame(now + MS(140)), None, "restored once");
        assert_eq!(s.failures(), 0);
        // The next outage starts the backoff from the beginning again.
        assert_eq!(s.failed(now + MS(500)), Some(CameraEvent::Lost));
        assert_eq!(s.wait(now + MS(500)), Some(MS(250)));
    }

    #[test]
    fn a_camera_missing_at_start_is_lost_until_it_appears() {
        let t0 = Instant::now();
        let mut s = sup(t0);
        assert_eq!(s.failed(t0), Some(CameraEvent::Lost), "no camera at start is a loss: the fault line goes up");
        assert_eq!(s.wait(t0), Some(MS(250)));
        assert_eq!(s.failed(t0 + MS(250)), None);
        assert_eq!(s.wait(t0 + MS(250)), Some(MS(500)));
        s.opened();
        assert_eq!(s.frame(t0 + MS(900)).map(|e| e.0), Some(CameraEvent::Restored));
    }

    #[test]
    fn backoff_never_overflows() {
        let s = Supervisor::new(Instant::now(), MS(250), MS(10_000));
        assert_eq!(s.backoff(1), MS(250));
        assert_eq!(s.backoff(40), MS(10_000));
        assert_eq!(s.backoff(u32::MAX), MS(10_000));
    }
}
