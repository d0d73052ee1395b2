//! Sentences: the framing every line on the wire has, NMEA-style, so any microcontroller can parse and
//! verify them.
//!
//! `$<talker>,<fields>*<CS>\r\n`, where CS is the XOR of every byte between `$` and `*` in two upper-case
//! hex digits. Why one place for it: the framing is the contract with the controller, and nothing that
//! comes from a file or the wire may break it. So every field that is not a number is checked when it is
//! read ([`field_ok`], the config's names), sentences are formatted into a fixed buffer ([`Sentence`], no
//! allocation), and a sentence that does not fit is refused whole, never cut. The kinds and a worked
//! example of each are in `docs/serial-protocol.md`.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt::Write as _;

/// One sentence, formatted in place. 256 bytes holds any `$LKALR`: a 32-byte camera name, rule name and
/// label, 20-digit sequence and timestamp, a 10-digit track, box coordinates clamped to ±99999.
pub type Sentence = heapless::String<256>;

/// A name or label in a sentence (at most [`MAX_FIELD`] bytes).
pub type Field = heapless::String<MAX_FIELD>;

/// Longest label, camera or rule name in a sentence (bytes).
pub const MAX_FIELD: usize = 32;

/// XOR of the bytes of `body` (the part between `$` and `*`).
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |a, b| a ^ b)
}

/// Formats `$<talker>,<fields>*CS\r\n` into `out`. `fields` writes the comma-separated fields.
pub fn sentence(
    out: &mut Sentence,
    talker: &str,
    fields: impl FnOnce(&mut Sentence) -> std::fmt::Result,
) -> std::fmt::Result {
    out.clear();
    out.push('$').map_err(|_| std::fmt::Error)?;
    out.push_str(talker).map_err(|_| std::fmt::Error)?;
    out.push(',').map_err(|_| std::fmt::Error)?;
    fields(out)?;
    let cs = checksum(out.as_bytes().get(1..).unwrap_or(&[]));
    write!(out, "*{cs:02X}\r\n")
}

/// Whether `text` can go into a sentence field: printable ASCII (spaces allowed), none of the framing
/// characters `$ , * \r \n`, at most [`MAX_FIELD`] bytes. Labels and camera names are checked with it
/// when they are read, so nothing from a file can forge or break a sentence.
pub fn field_ok(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_FIELD
        && text.bytes().all(|b| (0x20..0x7f).contains(&b) && !b"$,*".contains(&b))
}

/// `text` as a [`Field`]: `?` if it cannot be one (it was checked when read, so this does not happen).
pub fn field(text: &str) -> Field {
    let mut f = Field::new();
    if !field_ok(text) || f.push_str(text).is_err() {
        f.clear();
        let _ = f.push('?');
    }
    f
}

/// What a heartbeat reports: rates over the interval since the previous one, drops since start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat {
    pub unix_ms: u64,
    pub capture_fps: f64,
    pub infer_fps: f64,
    /// Frames the ring dropped since start (inference was busy; the newest frame won).
    pub dropped: u64,
}

/// A rule's alert for a track, as the wire carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertData {
    pub unix_ms: u64,
    pub rule: Field,
    pub track: u32,
    pub class: Field,
    pub score: f32,
    /// x1, y1, x2, y2 in source pixels.
    pub bbox: [f32; 4],
}

/// `$LKALR,<seq>,<unix_ms>,<camera>,<rule>,<track>,<class>,<score>,<x1>,<y1>,<x2>,<y2>`.
pub fn alert_sentence(out: &mut Sentence, seq: u64, a: &AlertData, camera: &str) -> std::fmt::Result {
    // Boxes are in source pixels; a wild decoder output cannot widen the sentence past its buffer.
    let [x1, y1, x2, y2] = a.bbox.map(|v| if v.is_finite() { v.round().clamp(-99_999.0, 99_999.0) as i64 } else { 0 });
    // A score is a probability; a wild one (NaN, 1e30) must not widen the sentence either.
    let score = if a.score.is_finite() { a.score.clamp(0.0, 1.0) } else { 0.0 };
    let (unix_ms, rule, track, class) = (a.unix_ms, &a.rule, a.track, &a.class);
    sentence(out, "LKALR", |s| {
        write!(s, "{seq},{unix_ms},{camera},{rule},{track},{class},{score:.2},{x1},{y1},{x2},{y2}")
    })
}

/// `$LKCLR,<seq>,<unix_ms>,<camera>,<rule>,<track>`: the end of a rule's alert.
pub fn clear_sentence(
    out: &mut Sentence,
    seq: u64,
    unix_ms: u64,
    camera: &str,
    rule: &str,
    track: u32,
) -> std::fmt::Result {
    sentence(out, "LKCLR", |s| write!(s, "{seq},{unix_ms},{camera},{rule},{track}"))
}

/// `$LKEVT,<seq>,<unix_ms>,<camera>,<event>` (`camera_lost`, `camera_restored`, `internal_error`, ...).
pub fn event_sentence(out: &mut Sentence, seq: u64, unix_ms: u64, camera: &str, event: &str) -> std::fmt::Result {
    sentence(out, "LKEVT", |s| write!(s, "{seq},{unix_ms},{camera},{event}"))
}

/// `$LKHBT,<seq>,<unix_ms>,<camera>,<capture_fps>,<infer_fps>,<dropped>` (rates with one decimal).
pub fn heartbeat_sentence(out: &mut Sentence, seq: u64, camera: &str, h: &Heartbeat) -> std::fmt::Result {
    sentence(out, "LKHBT", |s| {
        write!(s, "{seq},{},{camera},{:.1},{:.1},{}", h.unix_ms, h.capture_fps, h.infer_fps, h.dropped)
    })
}

/// Checks a received sentence: `$`, `*`, a matching checksum and `\r\n`. Returns the body on success.
pub fn verify(line: &str) -> Option<&str> {
    let s = line.strip_suffix("\r\n")?.strip_prefix('$')?;
    let (body, cs) = s.rsplit_once('*')?;
    let want = u8::from_str_radix(cs, 16).ok()?;
    (cs.len() == 2 && cs.bytes().all(|c| !c.is_ascii_lowercase()) && checksum(body.as_bytes()) == want).then_some(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn alert(unix_ms: u64, score: f32, bbox: [f32; 4]) -> AlertData {
        AlertData { unix_ms, rule: field("drive"), track: 12, class: field("car"), score, bbox }
    }

    #[test]
    fn alert_sentence_has_the_fixed_shape_and_checksum() {
        let a = alert(1_700_000_000_123, 0.876, [10.4, 20.6, 300.0, 271.5]);
        let mut s = Sentence::new();
        alert_sentence(&mut s, 7, &a, "gate").unwrap();
        let body = "LKALR,7,1700000000123,gate,drive,12,car,0.88,10,21,300,272";
        let cs = body.bytes().fold(0u8, |x, b| x ^ b);
        assert_eq!(s.as_str(), format!("${body}*{cs:02X}\r\n"));
        assert_eq!(verify(&s), Some(body));
        let mut bad = s.as_str().to_string();
        bad.replace_range(7..8, "8");
        assert_eq!(verify(&bad), None);
        clear_sentence(&mut s, 8, 1_700_000_000_123, "gate", "drive", 12).unwrap();
        assert_eq!(verify(&s), Some("LKCLR,8,1700000000123,gate,drive,12"));
        // The longest fields there can be still fit, and wild numbers cannot widen it.
        let long = "x".repeat(32);
        let mut a = alert(u64::MAX, 1e30, [-1e9, 1e9, f32::NAN, 99_999.0]);
        a.track = u32::MAX;
        (a.rule, a.class) = (field(&long), field(&long));
        alert_sentence(&mut s, u64::MAX, &a, &long).unwrap();
        assert!(verify(&s).is_some());
        assert!(s.contains(",1.00,-99999,99999,0,99999*"), "{s}");
    }

    #[test]
    fn fields_that_would_break_the_framing_are_refused() {
        for bad in ["", "a,b", "a*b", "$x", "a\r\n", "\u{7f}", &"x".repeat(33)] {
            assert!(!field_ok(bad), "{bad:?}");
            assert_eq!(field(bad).as_str(), "?");
        }
        assert!(field_ok("cell phone") && field_ok("x".repeat(32).as_str()));
    }
}
