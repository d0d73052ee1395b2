//! GPIO: the alarm line and the camera_lost fault line, on a thread of their own.
//!
//! Why a thread: a relay wired to this sensor must switch on when an alert is decided and off exactly
//! `pulse_ms` later, whatever inference, a stalled serial port or a slow disk is doing. So the lines are
//! owned by one small thread that only waits for commands ([`GpioCmd`], through a bounded queue the
//! producers never block on) or for its next deadline. The line is any `embedded_hal::digital::OutputPin`:
//! a Linux GPIO character-device line when configured, a pin that only logs otherwise. Every line is at
//! its safe level ("off", electrically inverted with `active_low`) when requested, on a stop, when the
//! thread ends for any reason (the pins' owner drives them off as it is dropped, unwinding included), and
//! after a panic anywhere in the process (the panic hook sets a flag the thread watches: see
//! [`install_panic_hook`]).

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, OutputPin};

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

/// Set by the panic hook: every line goes off, whatever thread panicked.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Chains a panic hook that switches every GPIO line off (through the GPIO thread, within its 20 ms
/// wake-up) before the default report. Installed once by `run`.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        previous(info);
    }));
}

/// What the GPIO thread is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpioCmd {
    /// An alert: pulse the alarm line.
    Alert,
    /// The camera is lost (true) or back (false).
    CameraLost(bool),
    /// Every line off now (a stop, a caught panic).
    AllOff,
    /// The alarm line off now (`$LKCMD,RESET`).
    AlarmOff,
}

/// The lines the GPIO thread owns.
pub struct Lines<P: OutputPin> {
    pub alarm: GpioSink<P>,
    pub fault: Option<LevelPin<P>>,
}

impl<P: OutputPin> Lines<P> {
    fn off(&mut self) {
        self.alarm.off();
        if let Some(f) = &mut self.fault {
            f.set(false);
        }
    }
}

impl<P: OutputPin> Drop for Lines<P> {
    /// However the thread ends, the lines end off.
    fn drop(&mut self) {
        self.off();
    }
}

/// Counters of the GPIO thread.
#[derive(Debug, Default)]
pub struct GpioStats {
    pub pulses: AtomicU64,
    /// Commands dropped because the queue was full (the thread cannot keep up: does not happen).
    pub queue_full: AtomicU64,
}

/// The producers' side of the GPIO thread. Cheap to clone.
#[derive(Clone)]
pub struct Gpio {
    tx: SyncSender<GpioCmd>,
    pub stats: Arc<GpioStats>,
}

/// The thread, to be joined at the end.
pub struct GpioThread {
    handle: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Gpio {
    /// Starts the thread with `lines` (driven off at once).
    pub fn spawn<P: OutputPin + Send + 'static>(mut lines: Lines<P>) -> std::io::Result<(Gpio, GpioThread)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let stats = Arc::new(GpioStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        lines.off();
        let (s, st) = (stats.clone(), stop.clone());
        let handle = std::thread::Builder::new().name("gpio".into()).spawn(move || gpio_loop(lines, rx, &s, &st))?;
        Ok((Gpio { tx, stats }, GpioThread { handle, stop }))
    }

    /// Asks for `cmd` without ever blocking.
    pub fn send(&self, cmd: GpioCmd) {
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                log::error!("gpio: command queue full; {cmd:?} dropped");
            }
            Err(TrySendError::Disconnected(_)) => log::error!("gpio: the GPIO thread is gone; {cmd:?} dropped"),
        }
    }
}

impl GpioThread {
    /// Every line off, the thread ended (within `limit`; it wakes every 20 ms at most).
    pub fn stop(self, limit: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now().checked_add(limit);
        while !self.handle.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                log::error!("gpio: the GPIO thread did not end in time");
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.handle.join();
    }
}

fn gpio_loop<P: OutputPin>(mut lines: Lines<P>, rx: Receiver<GpioCmd>, stats: &GpioStats, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::SeqCst) || PANICKED.load(Ordering::SeqCst) {
            lines.off();
            if stop.load(Ordering::SeqCst) {
                return;
            }
        }
        let now = Instant::now();
        let mut wait = Duration::from_millis(20);
        if let Some(d) = lines.alarm.deadline() {
            wait = wait.min(d.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(GpioCmd::Alert) => {
                lines.alarm.trigger(Instant::now());
                stats.pulses.fetch_add(1, Ordering::Relaxed);
            }
            Ok(GpioCmd::CameraLost(lost)) => {
                if let Some(f) = &mut lines.fault {
                    f.set(lost);
                }
            }
            Ok(GpioCmd::AllOff) => lines.off(),
            Ok(GpioCmd::AlarmOff) => lines.alarm.off(),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        lines.alarm.tick(Instant::now());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

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

    #[derive(Clone, Default)]
    struct Timed(std::sync::Arc<std::sync::Mutex<Vec<(Instant, bool)>>>);
    impl ErrorType for Timed {
        type Error = core::convert::Infallible;
    }
    impl OutputPin for Timed {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push((Instant::now(), false));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push((Instant::now(), true));
            Ok(())
        }
    }

    #[test]
    fn the_thread_times_the_pulse_and_ends_with_every_line_off() {
        let (alarm, fault) = (Timed::default(), Timed::default());
        let lines = Lines {
            alarm: GpioSink::new(alarm.clone(), true, Duration::from_millis(200)),
            fault: Some(LevelPin::new(fault.clone(), true)),
        };
        let (gpio, thread) = Gpio::spawn(lines).unwrap();
        gpio.send(GpioCmd::CameraLost(true));
        gpio.send(GpioCmd::Alert);
        std::thread::sleep(Duration::from_millis(400));
        gpio.send(GpioCmd::Alert);
        std::thread::sleep(Duration::from_millis(50));
        thread.stop(Duration::from_secs(1));
        let a = alarm.0.lock().unwrap().clone();
        // active low: true = off. Off at start, on, off 200 ms later, on again, off at the stop.
        let levels: Vec<bool> = a.iter().map(|x| x.1).collect();
        assert_eq!(&levels[levels.len() - 4..], [false, true, false, true], "{levels:?}");
        let n = a.len();
        let pulse = a[n - 3].0 - a[n - 4].0;
        assert!(pulse >= Duration::from_millis(200) && pulse < Duration::from_millis(230), "{pulse:?}");
        assert!(a[n - 1].0 - a[n - 2].0 < Duration::from_millis(100), "cut short by the stop");
        assert!(fault.0.lock().unwrap().last().unwrap().1, "fault line off (high) at the end");
    }
}
