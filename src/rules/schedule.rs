//! Schedules: when a rule is armed, as windows of local time ("22:00-06:00").
//!
//! Why local time and a clock passed in: the people who set "armed at night" mean the clock on their
//! wall, daylight-saving changes included, so the minute of the day comes from the system's time zone
//! (`localtime_r`). The rules take that minute as an argument, never read a clock, so a test can walk a
//! schedule across midnight with an injected clock.

use crate::config::TimeWindow;

/// A rule's windows; empty means always armed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule(pub Vec<TimeWindow>);

impl Schedule {
    pub fn always(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the rule is armed at `minute` after local midnight.
    pub fn contains(&self, minute: u16) -> bool {
        self.always() || self.0.iter().any(|w| w.contains(minute))
    }
}

/// Minutes after local midnight (0..1440) at `unix_ms`, in the system's time zone (`TZ`,
/// `/etc/localtime`). UTC if the conversion fails.
pub fn local_minute(unix_ms: u64) -> u16 {
    let secs = libc::time_t::try_from(unix_ms / 1000).unwrap_or(0);
    // SAFETY: localtime_r writes into the zeroed tm we own and reads only `secs`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return ((unix_ms / 60_000) % 1440) as u16;
        }
        tm
    };
    u16::try_from(tm.tm_hour.clamp(0, 23) * 60 + tm.tm_min.clamp(0, 59)).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn w(s: &str) -> TimeWindow {
        TimeWindow::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn a_night_schedule_walks_across_midnight() {
        let night = Schedule(vec![w("22:00-06:00")]);
        // An injected clock: every 30 minutes of a day, from noon to noon.
        let armed: Vec<bool> = (0..48u16).map(|i| night.contains((720 + i * 30) % 1440)).collect();
        // 12:00 .. 21:30 off (20 half hours), 22:00 .. 05:30 on (16), 06:00 .. 11:30 off (12).
        let want: Vec<bool> = (0..48).map(|i| (20..36).contains(&i)).collect();
        assert_eq!(armed, want);
        assert!(Schedule::default().contains(0) && Schedule::default().contains(1439));
        let two = Schedule(vec![w("07:00-08:00"), w("18:00-19:30")]);
        assert!(two.contains(7 * 60) && two.contains(19 * 60 + 29));
        assert!(!two.contains(8 * 60) && !two.contains(12 * 60) && !two.contains(19 * 60 + 30));
    }

    #[test]
    fn local_minute_is_within_a_day() {
        for t in [0u64, 1_700_000_000_000, 1_796_116_732_253, u64::MAX] {
            assert!(local_minute(t) < 1440);
        }
    }
}
