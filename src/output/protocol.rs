//! Serial protocol v1, the controller's side: commands in, and the acknowledged re-sending of alerts.
//!
//! Why plain state machines: the wire is where hostile or broken input arrives (a noisy RS-485 line, a
//! controller in a reboot loop, someone typing at a terminal, a loopback cable echoing our own
//! sentences). Every byte goes through [`LineReader`] (bounded: a line is at most [`MAX_LINE`] bytes, the
//! rest of a longer one is skipped), every line through [`parse`], and only `$LKCMD` lines are ever
//! answered, so an echo of our own sentences cannot start a NAK storm; NAKs are rate-limited too. With
//! `[serial] ack = true`, [`AckTable`] keeps each alert until the controller sends `$LKCMD,ACK,<seq>`,
//! re-sending the same bytes every `resend_ms`, up to a cap. No I/O and no clock inside: time is passed
//! in. `docs/serial-protocol.md` has the sentences with worked examples.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::time::{Duration, Instant};

use super::sentence::{checksum, Sentence};

/// Longest command line, `$` to `\n` (NMEA's 82).
pub const MAX_LINE: usize = 82;

/// What the reader made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A complete line from `$` to before `\r\n` / `\n`, in [`LineReader::line`].
    Ready,
    /// A line longer than [`MAX_LINE`] ended (its bytes were skipped).
    TooLong,
}

/// Assembles lines from bytes: from a `$` to the next `\n`. Bytes outside a line are noise (counted).
#[derive(Debug, Default)]
pub struct LineReader {
    buf: heapless::Vec<u8, MAX_LINE>,
    in_line: bool,
    overlong: bool,
    /// Bytes that were not part of any line (binary noise, stray characters).
    pub noise: u64,
    /// Lines cut off by a new `$` before their end.
    pub broken: u64,
}

impl LineReader {
    /// Feeds one byte; returns what ended with it.
    pub fn push(&mut self, b: u8) -> Option<Line> {
        match b {
            b'$' => {
                if self.in_line {
                    self.broken = self.broken.saturating_add(1);
                }
                self.buf.clear();
                let _ = self.buf.push(b);
                (self.in_line, self.overlong) = (true, false);
                None
            }
            b'\n' if self.in_line => {
                self.in_line = false;
                if std::mem::take(&mut self.overlong) {
                    return Some(Line::TooLong);
                }
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                Some(Line::Ready)
            }
            _ if self.in_line => {
                if !self.overlong && self.buf.push(b).is_err() {
                    self.overlong = true;
                    self.buf.clear();
                }
                None
            }
            _ => {
                self.noise = self.noise.saturating_add(1);
                None
            }
        }
    }

    /// The last complete line (valid after [`Line::Ready`]).
    pub fn line(&self) -> &[u8] {
        &self.buf
    }
}

/// A controller's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Arm,
    Disarm,
    Status,
    Ack(u64),
    Ping,
    /// Releases latched alarm outputs.
    Reset,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Arm => "ARM",
            Command::Disarm => "DISARM",
            Command::Status => "STATUS",
            Command::Ack(_) => "ACK",
            Command::Ping => "PING",
            Command::Reset => "RESET",
        }
    }
}

/// Why a line was not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Answered with `$LKNAK,...,<reason>`.
    Nak(&'static str),
    /// Not for us (another talker, such as an echo of our own sentences): dropped without an answer.
    Ignored,
}

/// Parses one line (`$` up to, not including, the line end): `$LKCMD,<CMD>[,<arg>]*<CS>`.
pub fn parse(line: &[u8]) -> Result<Command, Refused> {
    let Some(rest) = line.strip_prefix(b"$") else { return Err(Refused::Ignored) };
    if !rest.starts_with(b"LKCMD,") {
        return Err(Refused::Ignored);
    }
    if !rest.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(Refused::Nak("bad_bytes"));
    }
    let star = rest.iter().rposition(|&b| b == b'*').ok_or(Refused::Nak("no_checksum"))?;
    let (body, cs) = (rest.get(..star).unwrap_or(&[]), rest.get(star.saturating_add(1)..).unwrap_or(&[]));
    let want = std::str::from_utf8(cs).ok().filter(|c| c.len() == 2).and_then(|c| u8::from_str_radix(c, 16).ok());
    if want != Some(checksum(body)) {
        return Err(Refused::Nak("checksum"));
    }
    let body = std::str::from_utf8(body).map_err(|_| Refused::Nak("bad_bytes"))?;
    let mut f = body.split(',').skip(1);
    let cmd = f.next().unwrap_or("");
    let arg = f.next();
    if f.next().is_some() {
        return Err(Refused::Nak("bad_argument"));
    }
    let no_arg = |c: Command| if arg.is_none() { Ok(c) } else { Err(Refused::Nak("bad_argument")) };
    match cmd {
        "ARM" => no_arg(Command::Arm),
        "DISARM" => no_arg(Command::Disarm),
        "STATUS" => no_arg(Command::Status),
        "PING" => no_arg(Command::Ping),
        "RESET" => no_arg(Command::Reset),
        "ACK" => match arg.map(|a| (a, a.parse::<u64>())) {
            Some((a, Ok(seq))) if !a.starts_with('+') && seq > 0 => Ok(Command::Ack(seq)),
            _ => Err(Refused::Nak("bad_argument")),
        },
        _ => Err(Refused::Nak("unknown_command")),
    }
}

/// At most this many NAKs a second; more malformed lines are only counted (a flood must not make us
/// flood back).
pub const NAKS_PER_SECOND: u32 = 10;

/// The NAK budget.
#[derive(Debug)]
pub struct NakLimit {
    window: Option<Instant>,
    sent: u32,
    /// NAKs not sent because of the limit.
    pub suppressed: u64,
}

impl NakLimit {
    pub fn new() -> NakLimit {
        NakLimit { window: None, sent: 0, suppressed: 0 }
    }

    /// Whether a NAK may go out at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.window.is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1)) {
            (self.window, self.sent) = (Some(now), 0);
        }
        if self.sent < NAKS_PER_SECOND {
            self.sent = self.sent.saturating_add(1);
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            false
        }
    }
}

impl Default for NakLimit {
    fn default() -> Self {
        NakLimit::new()
    }
}

/// Alerts waiting for their ACK.
pub const MAX_UNACKED: usize = 64;

#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    sentence: Sentence,
    due: Instant,
    sends: u32,
}

/// The alerts sent and not yet acknowledged, oldest first, with when each is due again.
#[derive(Debug)]
pub struct AckTable {
    items: heapless::Vec<Pending, MAX_UNACKED>,
    resend: Duration,
    max_sends: u32,
    /// Alerts given up on: sent `max_sends` times, or pushed out by newer ones when the table was full.
    pub given_up: u64,
}

impl AckTable {
    /// Re-send every `resend`, at most `max_sends` sends in all.
    pub fn new(resend: Duration, max_sends: u32) -> AckTable {
        AckTable { items: heapless::Vec::new(), resend, max_sends: max_sends.max(1), given_up: 0 }
    }

    /// An alert was just sent at `now`. Returns the seq of one given up to make room, if any.
    pub fn sent(&mut self, seq: u64, s: &Sentence, now: Instant) -> Option<u64> {
        let mut dropped = None;
        if self.items.is_full() {
            dropped = self.items.first().map(|p| p.seq);
            self.items.remove(0);
            self.given_up = self.given_up.saturating_add(1);
        }
        let due = now.checked_add(self.resend).unwrap_or(now);
        let _ = self.items.push(Pending { seq, sentence: s.clone(), due, sends: 1 });
        dropped
    }

    /// `ACK,<seq>`: whether it was waiting.
    pub fn ack(&mut self, seq: u64) -> bool {
        match self.items.iter().position(|p| p.seq == seq) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    /// Calls `resend` with each alert due again at `now` (oldest first); those sent `max_sends` times are
    /// given up instead (`give_up` is called with their seq).
    pub fn due(&mut self, now: Instant, mut resend: impl FnMut(u64, &Sentence), mut give_up: impl FnMut(u64)) {
        let (max, every) = (self.max_sends, self.resend);
        let mut gave_up = 0u64;
        self.items.retain_mut(|p| {
            if now < p.due {
                return true;
            }
            if p.sends >= max {
                give_up(p.seq);
                gave_up = gave_up.saturating_add(1);
                return false;
            }
            resend(p.seq, &p.sentence);
            p.sends = p.sends.saturating_add(1);
            p.due = now.checked_add(every).unwrap_or(now);
            true
        });
        self.given_up = self.given_up.saturating_add(gave_up);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the next re-send is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.items.iter().map(|p| p.due).min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn cmd(body: &str) -> Vec<u8> {
        format!("${body}*{:02X}", checksum(body.as_bytes())).into_bytes()
    }

    fn lines(bytes: &[u8]) -> (Vec<Result<Command, Refused>>, usize, LineReader) {
        let mut r = LineReader::default();
        let (mut out, mut too_long) = (Vec::new(), 0);
        for &b in bytes {
            match r.push(b) {
                Some(Line::Ready) => out.push(parse(r.line())),
                Some(Line::TooLong) => too_long += 1,
                None => {}
            }
        }
        (out, too_long, r)
    }

    #[test]
    fn commands_parse_and_everything_else_is_refused_or_ignored() {
        assert_eq!(parse(&cmd("LKCMD,ARM")), Ok(Command::Arm));
        assert_eq!(parse(&cmd("LKCMD,DISARM")), Ok(Command::Disarm));
        assert_eq!(parse(&cmd("LKCMD,STATUS")), Ok(Command::Status));
        assert_eq!(parse(&cmd("LKCMD,PING")), Ok(Command::Ping));
        assert_eq!(parse(&cmd("LKCMD,RESET")), Ok(Command::Reset));
        assert_eq!(parse(&cmd("LKCMD,ACK,42")), Ok(Command::Ack(42)));
        let nak = |r: &str| Err(Refused::Nak(Box::leak(r.to_string().into_boxed_str())));
        assert_eq!(parse(b"$LKCMD,PING*00"), nak("checksum"));
        assert_eq!(parse(b"$LKCMD,PING"), nak("no_checksum"));
        assert_eq!(parse(b"$LKCMD,PING*zz"), nak("checksum"));
        assert_eq!(parse(&cmd("LKCMD,FIRE")), nak("unknown_command"));
        assert_eq!(parse(&cmd("LKCMD,ACK")), nak("bad_argument"));
        assert_eq!(parse(&cmd("LKCMD,ACK,-1")), nak("bad_argument"));
        assert_eq!(parse(&cmd("LKCMD,ACK,0")), nak("bad_argument"));
        assert_eq!(parse(&cmd("LKCMD,ACK,+5")), nak("bad_argument"));
        assert_eq!(parse(&cmd("LKCMD,ACK,99999999999999999999999")), nak("bad_argument"));
        assert_eq!(parse(&cmd("LKCMD,ARM,now")), nak("bad_argument"));
        assert_eq!(parse(&cmd("LKCMD,ACK,1,2")), nak("bad_argument"));
        assert_eq!(parse(b"$LKCMD,\x01\x02*03"), nak("bad_bytes"));
        // Our own sentences echoed back, or another device's: not answered.
        assert_eq!(parse(&cmd("LKALR,1,2,cam0,default,4,car,0.70,1,2,3,4")), Err(Refused::Ignored));
        assert_eq!(parse(&cmd("LKNAK,9,1,cam0,checksum")), Err(Refused::Ignored));
        assert_eq!(parse(b"hello"), Err(Refused::Ignored));
    }

    #[test]
    fn lines_are_bounded_and_noise_is_counted() {
        let mut input = b"\x00\xff garbage ".to_vec();
        input.extend(cmd("LKCMD,PING"));
        input.extend(b"\r\n");
        // 200 bytes without a line end, then a line end: one too-long line, skipped.
        input.extend(b"$LKCMD,");
        input.extend(std::iter::repeat_n(b'A', 200));
        input.extend(b"\n");
        // A line cut by a new `$`, then a good one with only `\n`.
        input.extend(b"$LKCMD,AR");
        input.extend(cmd("LKCMD,ACK,7"));
        input.extend(b"\n");
        let (got, too_long, r) = lines(&input);
        assert_eq!(got, vec![Ok(Command::Ping), Ok(Command::Ack(7))]);
        assert_eq!((too_long, r.noise, r.broken), (1, 11, 1));
        // A megabyte of random bytes: no panic, nothing parsed as a command, memory bounded by MAX_LINE.
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let (got, _, _) = lines(&noise);
        assert!(got.iter().all(|g| g.is_err()));
    }

    #[test]
    fn naks_are_rate_limited() {
        let t0 = Instant::now();
        let mut l = NakLimit::new();
        let sent = (0..100).filter(|_| l.allow(t0)).count();
        assert_eq!((sent, l.suppressed), (10, 90));
        assert!(l.allow(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn unacked_alerts_are_resent_same_bytes_until_acked_or_the_cap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = AckTable::new(ms(2000), 3);
        let mut s = Sentence::new();
        s.push_str("$LKALR,5,...*00\r\n").unwrap();
        t.sent(5, &s, t0);
        t.sent(6, &s, t0 + ms(100));
        let mut resent: Vec<(u64, Sentence)> = Vec::new();
        let mut gone = Vec::new();
        let step = |t: &mut AckTable, at: u64, resent: &mut Vec<(u64, Sentence)>, gone: &mut Vec<u64>| {
            t.due(t0 + ms(at), |q, x| resent.push((q, x.clone())), |q| gone.push(q))
        };
        step(&mut t, 1999, &mut resent, &mut gone);
        assert!(resent.is_empty());
        step(&mut t, 2000, &mut resent, &mut gone);
        assert_eq!(resent.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5]);
        assert_eq!(resent[0].1, s, "the same bytes");
        assert!(t.ack(6) && !t.ack(6), "acked once");
        assert_eq!(t.next_due(), Some(t0 + ms(4000)));
        resent.clear();
        step(&mut t, 4000, &mut resent, &mut gone);
        step(&mut t, 6000, &mut resent, &mut gone);
        assert_eq!(resent.len(), 1, "the third send at 4 s, then the cap");
        assert_eq!((gone, t.given_up, t.len()), (vec![5], 1, 0));
    }
}
