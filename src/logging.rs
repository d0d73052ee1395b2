//! Log lines written without the heap.
//!
//! Why: the daemon's threads log in the steady state (an alert, a GPIO line switching, a corrupt frame
//! skipped), and env_logger's own writer gives every thread a formatter buffer on the heap the first time
//! that thread logs, and grows it whenever a line is longer than any before. So the first alert on the
//! GPIO thread allocated five times, minutes or months into a run, and whether `lookout bench` counted
//! it depended on which thread got the core first (CI, loaded: `allocs_per_frame` 0.05). env_logger
//! still decides what is logged (`RUST_LOG`, same syntax as ever); [`Lines`] formats each line into a
//! buffer on the stack and hands it to stderr in one write, so lines from several threads never
//! interleave. A line longer than the buffer (a long error chain, never a per-frame line) is still
//! written whole, from a heap buffer made for it. The format is env_logger's default without colour:
//! `[2026-12-02T17:26:10Z INFO  lookout::pipeline] alert: ...`.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes a line can have before it goes to a heap buffer.
const LINE: usize = 1024;

/// The logger: env_logger's filter, lookout's writer.
pub struct Lines {
    filter: env_logger::Logger,
}

/// Installs [`Lines`] as the `log` crate's logger, filtered by `RUST_LOG` (default `info`). Once per
/// process; a second call does nothing.
pub fn init() {
    let filter = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = filter.filter();
    if log::set_boxed_logger(Box::new(Lines { filter })).is_ok() {
        log::set_max_level(max);
    }
}

impl log::Log for Lines {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let mut line = Line::default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let _ = format_line(&mut line, now, record);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// One line: `[timestamp LEVEL target] message\n`.
fn format_line(out: &mut impl std::fmt::Write, unix_s: u64, record: &log::Record<'_>) -> std::fmt::Result {
    out.write_char('[')?;
    write_timestamp(out, unix_s)?;
    write!(out, " {:<5} {}] ", record.level(), record.target())?;
    out.write_fmt(*record.args())?;
    out.write_char('\n')
}

/// `unix_s` as RFC 3339 in UTC to the second (`2026-12-02T17:26:10Z`), as env_logger writes it.
fn write_timestamp(out: &mut impl std::fmt::Write, unix_s: u64) -> std::fmt::Result {
    let (days, secs) = (unix_s / 86_400, unix_s % 86_400);
    let (y, m, d) = civil_from_days(days);
    write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A line being formatted: on the stack while it fits, moved to the heap when it does not.
struct Line {
    buf: [u8; LINE],
    len: usize,
    spill: Option<String>,
}

impl Default for Line {
    fn default() -> Line {
        Line { buf: [0; LINE], len: 0, spill: None }
    }
}

impl Line {
    fn as_bytes(&self) -> &[u8] {
        match &self.spill {
            Some(s) => s.as_bytes(),
            None => self.buf.get(..self.len).unwrap_or_default(),
        }
    }
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Some(spill) = &mut self.spill {
            spill.push_str(s);
            return Ok(());
        }
        let end = self.len.saturating_add(s.len());
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                self.len = end;
            }
            None => {
                // Only whole `str`s were copied in, so the bytes so far are UTF-8.
                let mut spill = String::from_utf8_lossy(self.buf.get(..self.len).unwrap_or_default()).into_owned();
                spill.push_str(s);
                self.spill = Some(spill);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(unix_s: u64, level: log::Level, msg: &str) -> String {
        let mut l = Line::default();
        let args = format_args!("{msg}");
        let rec = log::Record::builder().level(level).target("lookout::x").args(args).build();
        format_line(&mut l, unix_s, &rec).unwrap();
        String::from_utf8(l.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn lines_look_like_env_loggers() {
        assert_eq!(line(0, log::Level::Info, "hello"), "[1970-01-01T00:00:00Z INFO  lookout::x] hello\n");
        // 2026-12-02T17:26:10Z, a leap day, the end of a century and a day that ends a year.
        assert_eq!(&line(1_796_232_370, log::Level::Warn, "w")[..27], "[2026-12-02T17:26:10Z WARN ");
        assert_eq!(&line(951_782_400, log::Level::Error, "e")[..28], "[2000-02-29T00:00:00Z ERROR ");
        assert_eq!(&line(4_102_444_799, log::Level::Info, "")[..21], "[2099-12-31T23:59:59Z");
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_written_whole() {
        let long: String = (0..3 * LINE).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let l = line(0, log::Level::Error, &format!("é{long}é"));
        assert!(l.ends_with(&format!("é{long}é\n")), "{}", l.len());
        assert!(l.starts_with("[1970-01-01T00:00:00Z ERROR lookout::x] é"));
        // Exactly at the boundary: nothing lost or doubled.
        for n in LINE - 45..LINE - 35 {
            let msg = "x".repeat(n);
            assert_eq!(line(0, log::Level::Info, &msg), format!("[1970-01-01T00:00:00Z INFO  lookout::x] {msg}\n"));
        }
    }
}
