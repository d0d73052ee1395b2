//! Alerts out: the serial sentences and the GPIO lines.
//!
//! Why these two: a relay, a siren, a PLC input or a LoRa modem on a UART is what an edge sensor is wired
//! to. The serial line carries fixed-format sentences, NMEA-style so any microcontroller can parse and
//! verify them:
//!
//! `$LKALR,<seq>,<unix_ms>,<camera>,<rule>,<track>,<class>,<score 2 decimals>,<x1>,<y1>,<x2>,<y2>*<CS>\r\n`
//! (a rule alerted for a track)
//! `$LKCLR,<seq>,<unix_ms>,<camera>,<rule>,<track>*<CS>\r\n` (that alert is over: the track left)
//! `$LKEVT,<seq>,<unix_ms>,<camera>,<event>*<CS>\r\n` (`camera_lost`, `camera_restored`, `internal_error`,
//! `armed`, `disarmed`)
//! `$LKHBT,<seq>,<unix_ms>,<camera>,<capture_fps>,<infer_fps>,<dropped>*<CS>\r\n` (a heartbeat)
//!
//! where CS is the XOR of every byte between `$` and `*` in two upper-case hex digits and the box is in
//! integer source pixels. All share one sequence counter ([`Sinks`]), so a receiver that sees a gap
//! knows it missed a sentence. Sentences are formatted into a fixed-size buffer (no allocation). The serial
//! port is a real tty put in raw 8N1 mode at the configured baud rate; without a port, sentences go to
//! stdout. The GPIO output is any `embedded_hal::digital::OutputPin`: a Linux GPIO character-device line
//! when configured, a pin that only logs otherwise. An alert turns it on for `pulse_ms`; the inference loop
//! turns it off again on time. A second line can be bound to `camera_lost` (a fault or tamper relay): on
//! while the camera is gone.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt::Write as _;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, OutputPin};

use crate::capture::supervisor::CameraEvent;
use crate::rules::{RuleAlert, RuleClear};

/// One sentence, formatted in place. 256 bytes holds any `$LKALR`: a 32-byte camera name, rule name and
/// label, 20-digit sequence and timestamp, a 10-digit track, box coordinates clamped to ±99999.
pub type Sentence = heapless::String<256>;

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

/// Formats a rule's alert as a `$LKALR` sentence.
pub fn alert_sentence(
    out: &mut Sentence,
    seq: u64,
    a: &RuleAlert,
    camera: &str,
    rule: &str,
    label: &str,
) -> std::fmt::Result {
    // Boxes are in source pixels; a wild decoder output cannot widen the sentence past its buffer.
    let [x1, y1, x2, y2] = a.bbox.map(|v| if v.is_finite() { v.round().clamp(-99_999.0, 99_999.0) as i64 } else { 0 });
    // A score is a probability; a wild one (NaN, 1e30) must not widen the sentence either.
    let score = if a.score.is_finite() { a.score.clamp(0.0, 1.0) } else { 0.0 };
    let (unix_ms, track) = (a.frame.unix_ms, a.track);
    sentence(out, "LKALR", |s| {
        write!(s, "{seq},{unix_ms},{camera},{rule},{track},{label},{score:.2},{x1},{y1},{x2},{y2}")
    })
}

/// Formats the end of a rule's alert as a `$LKCLR` sentence.
pub fn clear_sentence(out: &mut Sentence, seq: u64, c: &RuleClear, camera: &str, rule: &str) -> std::fmt::Result {
    sentence(out, "LKCLR", |s| write!(s, "{seq},{},{camera},{rule},{}", c.frame.unix_ms, c.track))
}

/// Formats an event (`camera_lost`, `camera_restored`, `internal_error`) as a `$LKEVT` sentence.
pub fn event_sentence(out: &mut Sentence, seq: u64, unix_ms: u64, camera: &str, event: &str) -> std::fmt::Result {
    sentence(out, "LKEVT", |s| write!(s, "{seq},{unix_ms},{camera},{event}"))
}

/// Whether `text` can go into a sentence field: printable ASCII (spaces allowed), none of the framing
/// characters `$ , * \r \n`, at most [`MAX_FIELD`] bytes. Labels and camera names are checked with it
/// when they are read, so nothing from a file can forge or break a sentence.
pub fn field_ok(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_FIELD
        && text.bytes().all(|b| (0x20..0x7f).contains(&b) && !b"$,*".contains(&b))
}

/// Longest label or camera name in a sentence (bytes).
pub const MAX_FIELD: usize = 32;

/// What a heartbeat reports: rates over the interval since the previous one, drops since start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat {
    pub unix_ms: u64,
    pub capture_fps: f64,
    pub infer_fps: f64,
    /// Frames the ring dropped since start (inference was busy; the newest frame won).
    pub dropped: u64,
}

/// Formats a heartbeat as a `$LKHBT` sentence (rates with one decimal).
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

fn baud_constant(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        1_000_000 => libc::B1000000,
        _ => return None,
    })
}

/// Opens a tty and puts it in raw mode, 8 data bits, no parity, 1 stop bit, no flow control, at `baud`.
pub fn open_tty(path: &Path, baud: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let speed = baud_constant(baud).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("unsupported baud rate {baud}"))
    })?;
    let file = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fd is an open descriptor owned by `file`; termios is plain data filled by tcgetattr.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag &= !(libc::CSIZE | libc::PARENB | libc::CSTOPB | libc::CRTSCTS);
        t.c_cflag |= libc::CS8 | libc::CLOCAL | libc::CREAD;
        t.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
        if libc::cfsetispeed(&mut t, speed) != 0 || libc::cfsetospeed(&mut t, speed) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Where sentences go: a tty, stdout, or (in tests) any writer.
pub struct SerialSink {
    out: Box<dyn Write + Send>,
    pub written: u64,
    pub errors: u64,
}

impl SerialSink {
    pub fn new(out: Box<dyn Write + Send>) -> SerialSink {
        SerialSink { out, written: 0, errors: 0 }
    }

    pub fn stdout() -> SerialSink {
        SerialSink::new(Box::new(std::io::stdout()))
    }

    pub fn open(path: &Path, baud: u32) -> std::io::Result<SerialSink> {
        Ok(SerialSink::new(Box::new(open_tty(path, baud)?)))
    }

    /// Writes one sentence. A failed write is logged and counted; the loop goes on.
    pub fn send(&mut self, s: &str) {
        match self.out.write_all(s.as_bytes()).and_then(|_| self.out.flush()) {
            Ok(()) => self.written = self.written.saturating_add(1),
            Err(e) => {
                self.errors = self.errors.saturating_add(1);
                log::error!("serial write failed: {e}");
            }
        }
    }
}

/// A pin that only logs its changes: the GPIO output when no chip is configured.
#[derive(Debug, Default)]
pub struct LogPin {
    pub high: bool,
}

impl ErrorType for LogPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for LogPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.high = false;
        log::info!("gpio: line low");
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.high = true;
        log::info!("gpio: line high");
        Ok(())
    }
}

/// The configured GPIO output: a real character-device line or the logging pin.
pub enum AnyPin {
    Cdev(linux_embedded_hal::CdevPin),
    Log(LogPin),
}

#[derive(Debug)]
pub struct PinError(String);
impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}
impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ErrorType for AnyPin {
    type Error = PinError;
}

impl OutputPin for AnyPin {
    fn set_low(&mut self) -> Result<(), PinError> {
        match self {
            AnyPin::Cdev(p) => p.set_low().map_err(|e| PinError(e.to_string())),
            AnyPin::Log(p) => p.set_low().map_err(|e| match e {}),
        }
    }
    fn set_high(&mut self) -> Result<(), PinError> {
        match self {
            AnyPin::Cdev(p) => p.set_high().map_err(|e| PinError(e.to_string())),
            AnyPin::Log(p) => p.set_high().map_err(|e| match e {}),
        }
    }
}

/// Finds a GPIO chip by device path or label (see [`AnyPin::cdev`]).
fn find_chip(chip: &Path) -> anyhow::Result<gpio_cdev::Chip> {
    use anyhow::Context;
    if chip.is_absolute() {
        return gpio_cdev::Chip::new(chip).with_context(|| format!("opening GPIO chip {}", chip.display()));
    }
    let label = chip.to_string_lossy();
    for c in gpio_cdev::chips().context("listing GPIO chips")?.flatten() {
        if c.label() == label {
            return Ok(c);
        }
    }
    anyhow::bail!("no GPIO chip labelled {label:?} (gpiodetect lists them)")
}

/// `lookout check`: the chip is there and has `line` (without requesting it: a running lookout may hold
/// it).
pub fn check_line(chip: &Path, line: u32) -> anyhow::Result<()> {
    let c = find_chip(chip)?;
    if line >= c.num_lines() {
        anyhow::bail!("{} has {} lines; there is no line {line}", chip.display(), c.num_lines());
    }
    Ok(())
}

impl AnyPin {
    /// Requests `line` on `chip` as an output, initially at the electrical level that means "off".
    /// `chip` is a device path (`/dev/gpiochip0`) or a chip label (`pinctrl-rp1`), which stays right when
    /// a kernel update renumbers the chips.
    /// `consumer` is the label `gpioinfo` and debugfs show for the line.
    pub fn cdev(chip: &Path, line: u32, active_low: bool, consumer: &str) -> anyhow::Result<AnyPin> {
        use anyhow::Context;
        let mut c = find_chip(chip)?;
        let l = c.get_line(line).with_context(|| format!("{}: no line {line}", chip.display()))?;
        let off = u8::from(active_low);
        let handle = l
            .request(gpio_cdev::LineRequestFlags::OUTPUT, off, consumer)
            .with_context(|| format!("{} line {line} is busy or not an output", chip.display()))?;
        Ok(AnyPin::Cdev(linux_embedded_hal::CdevPin::new(handle)?))
    }
}

/// Pulses a pin on alerts. `active_low` inverts the electrical level (most relay boards switch on low).
pub struct GpioSink<P: OutputPin> {
    pin: P,
    active_low: bool,
    pulse: Duration,
    on_until: Option<Instant>,
    pub pulses: u64,
    pub errors: u64,
}

impl<P: OutputPin> GpioSink<P> {
    /// Takes the pin and drives it to "off".
    pub fn new(pin: P, active_low: bool, pulse: Duration) -> GpioSink<P> {
        let mut s = GpioSink { pin, active_low, pulse, on_until: None, pulses: 0, errors: 0 };
        s.drive(false);
        s
    }

    fn drive(&mut self, on: bool) {
        let r = if on != self.active_low { self.pin.set_high() } else { self.pin.set_low() };
        if let Err(e) = r {
            self.errors = self.errors.saturating_add(1);
            log::error!("gpio write failed: {e:?}");
        }
    }

    /// An alert at `now`: switch on (or extend the pulse).
    pub fn trigger(&mut self, now: Instant) {
        if self.on_until.is_none() {
            self.drive(true);
        }
        self.pulses = self.pulses.saturating_add(1);
        self.on_until = Some(now.checked_add(self.pulse).unwrap_or(now));
    }

    /// Call regularly: switches off once the pulse has lasted long enough.
    pub fn tick(&mut self, now: Instant) {
        if self.on_until.is_some_and(|t| now >= t) {
            self.on_until = None;
            self.drive(false);
        }
    }

    /// When the pin must next be looked at, if it is on.
    pub fn deadline(&self) -> Option<Instant> {
        self.on_until
    }

    pub fn is_on(&self) -> bool {
        self.on_until.is_some()
    }

    /// Switch off now (shutdown).
    pub fn off(&mut self) {
        if self.on_until.take().is_some() {
            self.drive(false);
        }
    }

    pub fn pin(&self) -> &P {
        &self.pin
    }
}

/// A line that is on while a condition holds (the `camera_lost` fault line).
pub struct LevelPin<P: OutputPin> {
    pin: P,
    active_low: bool,
    on: bool,
    pub errors: u64,
}

impl<P: OutputPin> LevelPin<P> {
    /// Takes the pin and drives it to "off".
    pub fn new(pin: P, active_low: bool) -> LevelPin<P> {
        let mut l = LevelPin { pin, active_low, on: true, errors: 0 };
        l.set(false);
        l
    }

    pub fn set(&mut self, on: bool) {
        if on == self.on {
            return;
        }
        self.on = on;
        let r = if on != self.active_low { self.pin.set_high() } else { self.pin.set_low() };
        if let Err(e) = r {
            self.errors = self.errors.saturating_add(1);
            log::error!("gpio (camera_lost line) write failed: {e:?}");
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn pin(&self) -> &P {
        &self.pin
    }
}

/// Every output, behind one lock in the pipeline: the inference thread sends alerts and heartbeats, the
/// capture thread camera events. One sequence counter numbers every sentence from 1.
pub struct Sinks<P: OutputPin = AnyPin> {
    pub serial: SerialSink,
    /// The alarm line, pulsed on alerts.
    pub alarm: GpioSink<P>,
    /// The line bound to `camera_lost`, if configured.
    pub fault: Option<LevelPin<P>>,
    camera: String,
    seq: u64,
    sentence: Sentence,
}

impl<P: OutputPin> Sinks<P> {
    pub fn new(serial: SerialSink, alarm: GpioSink<P>, fault: Option<LevelPin<P>>, camera: &str) -> Sinks<P> {
        Sinks { serial, alarm, fault, camera: camera.to_string(), seq: 0, sentence: Sentence::new() }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.saturating_add(1);
        self.seq
    }

    /// Sentences sent so far (the last sequence number).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Sends an alert on every sink: sentence, log line, alarm pulse. Returns its sequence number.
    pub fn alert(&mut self, a: &RuleAlert, rule: &str, label: &str, now: Instant) -> u64 {
        let seq = self.next_seq();
        match alert_sentence(&mut self.sentence, seq, a, &self.camera, rule, label) {
            Ok(()) => self.serial.send(&self.sentence),
            Err(_) => log::error!("alert {seq}: the sentence does not fit its buffer; not sent"),
        }
        log::info!(
            "alert {seq}: rule {rule} track {} {label} {:.2} in frame {} ({} ms)",
            a.track,
            a.score,
            a.frame.index,
            a.frame.pts_ms
        );
        self.alarm.trigger(now);
        seq
    }

    /// Sends the end of an alert (`$LKCLR`). Returns its sequence number.
    pub fn clear(&mut self, c: &RuleClear, rule: &str) -> u64 {
        let seq = self.next_seq();
        match clear_sentence(&mut self.sentence, seq, c, &self.camera, rule) {
            Ok(()) => self.serial.send(&self.sentence),
            Err(_) => log::error!("clear {seq}: the sentence does not fit its buffer; not sent"),
        }
        log::info!("clear {seq}: rule {rule} track {} in frame {} ({} ms)", c.track, c.frame.index, c.frame.pts_ms);
        seq
    }

    /// Sends a named event that is not the camera's (`armed`, `disarmed`).
    pub fn notice(&mut self, name: &str, unix_ms: u64) {
        let seq = self.next_seq();
        if event_sentence(&mut self.sentence, seq, unix_ms, &self.camera, name).is_ok() {
            self.serial.send(&self.sentence);
        }
        log::info!("event {seq}: {} {name}", self.camera);
    }

    /// Sends a camera event on every sink: sentence, log line, fault line.
    pub fn event(&mut self, ev: CameraEvent, unix_ms: u64) {
        let seq = self.next_seq();
        if event_sentence(&mut self.sentence, seq, unix_ms, &self.camera, ev.name()).is_ok() {
            self.serial.send(&self.sentence);
        }
        match ev {
            CameraEvent::Lost => log::warn!("event {seq}: {} {}", self.camera, ev.name()),
            CameraEvent::Restored => log::info!("event {seq}: {} {}", self.camera, ev.name()),
        }
        if let Some(f) = &mut self.fault {
            f.set(ev == CameraEvent::Lost);
        }
    }

    /// Reports that lookout failed inside (a panic was caught) and is about to exit for a restart.
    pub fn internal_error(&mut self, unix_ms: u64) {
        let seq = self.next_seq();
        if event_sentence(&mut self.sentence, seq, unix_ms, &self.camera, "internal_error").is_ok() {
            self.serial.send(&self.sentence);
        }
        log::error!("event {seq}: {} internal_error", self.camera);
    }

    /// Sends a heartbeat sentence.
    pub fn heartbeat(&mut self, h: &Heartbeat) {
        let seq = self.next_seq();
        if heartbeat_sentence(&mut self.sentence, seq, &self.camera, h).is_ok() {
            self.serial.send(&self.sentence);
        }
        log::debug!(
            "heartbeat {seq}: {:.1} fps captured, {:.1} analysed, {} dropped",
            h.capture_fps,
            h.infer_fps,
            h.dropped
        );
    }

    /// Shutdown: every line off.
    pub fn off(&mut self) {
        self.alarm.off();
        if let Some(f) = &mut self.fault {
            f.set(false);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn alert_sentence_has_the_fixed_shape_and_checksum() {
        let a = alert(1_700_000_000_123, 0.876, [10.4, 20.6, 300.0, 271.5]);
        let mut s = Sentence::new();
        alert_sentence(&mut s, 7, &a, "gate", "drive", "car").unwrap();
        let body = "LKALR,7,1700000000123,gate,drive,12,car,0.88,10,21,300,272";
        let cs = body.bytes().fold(0u8, |x, b| x ^ b);
        assert_eq!(s.as_str(), format!("${body}*{cs:02X}\r\n"));
        assert_eq!(verify(&s), Some(body));
        let mut bad = s.as_str().to_string();
        bad.replace_range(7..8, "8");
        assert_eq!(verify(&bad), None);
        let c = RuleClear { rule: 0, track: 12, frame: a.frame };
        clear_sentence(&mut s, 8, &c, "gate", "drive").unwrap();
        assert_eq!(verify(&s), Some("LKCLR,8,1700000000123,gate,drive,12"));
        // The longest fields there can be still fit.
        let long = "x".repeat(32);
        let mut a = alert(u64::MAX, 1e30, [-1e9, 1e9, f32::NAN, 99_999.0]);
        a.track = u32::MAX;
        alert_sentence(&mut s, u64::MAX, &a, &long, &long, &long).unwrap();
        assert!(verify(&s).is_some());
    }

    fn alert(unix_ms: u64, score: f32, bbox: [f32; 4]) -> RuleAlert {
        let frame = crate::frame::FrameMeta { unix_ms, ..Default::default() };
        RuleAlert { rule: 0, track: 12, class_id: 2, score, bbox, frame, direction: None }
    }

    #[derive(Default)]
    struct Recorder(Vec<bool>);
    impl ErrorType for Recorder {
        type Error = core::convert::Infallible;
    }
    impl OutputPin for Recorder {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.0.push(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.0.push(true);
            Ok(())
        }
    }

    #[test]
    fn pulse_turns_off_after_its_time_and_active_low_inverts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = GpioSink::new(Recorder::default(), false, ms(500));
        g.trigger(t0);
        g.tick(t0 + ms(499));
        assert!(g.is_on());
        g.trigger(t0 + ms(400)); // extends, no extra edge
        g.tick(t0 + ms(899));
        assert!(g.is_on());
        g.tick(t0 + ms(900));
        assert!(!g.is_on());
        assert_eq!(g.pin().0, vec![false, true, false]);

        let mut g = GpioSink::new(Recorder::default(), true, ms(10));
        g.trigger(t0);
        g.tick(t0 + ms(10));
        assert_eq!(g.pin().0, vec![true, false, true]);
    }

    /// A writer the test can read back after the sink took it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_heartbeats_and_alerts_share_one_sequence_and_drive_the_fault_line() {
        let out = Shared::default();
        let alarm = GpioSink::new(Recorder::default(), false, Duration::from_millis(100));
        let fault = LevelPin::new(Recorder::default(), false);
        let mut sinks = Sinks::new(SerialSink::new(Box::new(out.clone())), alarm, Some(fault), "gate");
        let hb = Heartbeat { unix_ms: 5, capture_fps: 29.97, infer_fps: 0.5, dropped: 12 };
        sinks.heartbeat(&hb);
        sinks.event(CameraEvent::Lost, 10);
        assert!(sinks.fault.as_ref().unwrap().is_on());
        sinks.event(CameraEvent::Restored, 20);
        assert!(!sinks.fault.as_ref().unwrap().is_on());
        let a = alert(30, 0.5, [0.0; 4]);
        assert_eq!(sinks.alert(&a, "door", "person", Instant::now()), 4);
        assert_eq!(sinks.clear(&RuleClear { rule: 0, track: 12, frame: a.frame }, "door"), 5);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let bodies: Vec<&str> = text.split_inclusive("\r\n").map(|l| verify(l).unwrap()).collect();
        assert_eq!(
            bodies,
            [
                "LKHBT,1,5,gate,30.0,0.5,12",
                "LKEVT,2,10,gate,camera_lost",
                "LKEVT,3,20,gate,camera_restored",
                "LKALR,4,30,gate,door,12,person,0.50,0,0,0,0",
                "LKCLR,5,30,gate,door,12"
            ]
        );
        // Fault line: off at start, on while lost, off again; the alarm pulsed once.
        assert_eq!(sinks.fault.as_ref().unwrap().pin().0, vec![false, true, false]);
        assert_eq!(sinks.alarm.pin().0, vec![false, true]);
    }
}
