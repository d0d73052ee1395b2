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

/// How an output follows what it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On for this long at each alert (an alert during a pulse extends it).
    Pulse(Duration),
    /// On at an alert, until every alert it is bound to has cleared, or `$LKCMD,RESET`.
    Latched,
    /// On while an alert it is bound to stands (from `$LKALR` to its `$LKCLR`); a level for events.
    Follow,
}

/// What an output is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Alerts of these rules; empty: of every rule.
    Rules(Vec<crate::output::Field>),
    /// On while the camera is lost (a fault or tamper relay).
    CameraLost,
}

/// One GPIO output line and its state.
pub struct OutputLine<P: OutputPin> {
    pin: P,
    active_low: bool,
    mode: Mode,
    binding: Binding,
    /// What the line is now (logically: true = on).
    on: bool,
    /// A pulse ends then.
    on_until: Option<Instant>,
    /// Alerts of the bound rules standing now (alerted, not yet cleared).
    standing: u32,
    pub errors: u64,
}

impl<P: OutputPin> OutputLine<P> {
    /// Takes the pin and drives it to "off" (`active_low` inverts the electrical level: most relay
    /// boards switch on low).
    pub fn new(pin: P, active_low: bool, mode: Mode, binding: Binding) -> OutputLine<P> {
        let mut l = OutputLine { pin, active_low, mode, binding, on: true, on_until: None, standing: 0, errors: 0 };
        l.set(false);
        l
    }

    fn set(&mut self, on: bool) {
        if on == self.on {
            return;
        }
        self.on = on;
        let r = if on != self.active_low { self.pin.set_high() } else { self.pin.set_low() };
        if let Err(e) = r {
            self.errors = self.errors.saturating_add(1);
            log::error!("gpio write failed: {e:?}");
        }
    }

    fn bound_to(&self, rule: &str) -> bool {
        matches!(&self.binding, Binding::Rules(r) if r.is_empty() || r.iter().any(|x| x.as_str() == rule))
    }

    fn alert(&mut self, rule: &str, now: Instant) -> bool {
        if !self.bound_to(rule) {
            return false;
        }
        self.standing = self.standing.saturating_add(1);
        if let Mode::Pulse(d) = self.mode {
            self.on_until = Some(now.checked_add(d).unwrap_or(now));
        }
        self.set(true);
        true
    }

    fn clear(&mut self, rule: &str) {
        if !self.bound_to(rule) {
            return;
        }
        self.standing = self.standing.saturating_sub(1);
        if self.standing == 0 && matches!(self.mode, Mode::Latched | Mode::Follow) {
            self.set(false);
        }
    }

    fn camera(&mut self, lost: bool) {
        if self.binding == Binding::CameraLost {
            self.set(lost);
        }
    }

    /// `$LKCMD,RESET`: latched outputs and pulses off (a standing alert does not latch them again).
    fn reset(&mut self) {
        if matches!(self.mode, Mode::Latched | Mode::Pulse(_)) && self.binding != Binding::CameraLost {
            self.on_until = None;
            self.set(false);
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.on_until.is_some_and(|t| now >= t) {
            self.on_until = None;
            self.set(false);
        }
    }

    /// Off now, whatever it is bound to (a stop, a panic).
    pub fn off(&mut self) {
        self.on_until = None;
        self.standing = 0;
        self.set(false);
    }

    pub fn is_on(&self) -> bool {
        self.on
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpioCmd {
    /// A rule alerted.
    Alert(crate::output::Field),
    /// A rule's alert cleared.
    Clear(crate::output::Field),
    /// The camera is lost (true) or back (false).
    CameraLost(bool),
    /// `$LKCMD,RESET`: latched outputs and pulses off.
    Reset,
    /// Every line off now (a stop, a caught panic).
    AllOff,
}

/// The lines the GPIO thread owns.
pub struct Lines<P: OutputPin> {
    pub outputs: Vec<OutputLine<P>>,
}

impl<P: OutputPin> Lines<P> {
    fn off(&mut self) {
        for o in &mut self.outputs {
            o.off();
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.outputs.iter().filter_map(|o| o.on_until).min()
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
        let (tx, rx) = crate::metrics::alloc::sync_channel(64);
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
            Err(TrySendError::Full(cmd)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                log::error!("gpio: command queue full; {cmd:?} dropped");
            }
            Err(TrySendError::Disconnected(cmd)) => log::error!("gpio: the GPIO thread is gone; {cmd:?} dropped"),
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
    crate::metrics::alloc::prime_channel_wait();
    loop {
        if stop.load(Ordering::SeqCst) || PANICKED.load(Ordering::SeqCst) {
            lines.off();
            if stop.load(Ordering::SeqCst) {
                return;
            }
        }
        let now = Instant::now();
        let mut wait = Duration::from_millis(20);
        if let Some(d) = lines.deadline() {
            wait = wait.min(d.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(GpioCmd::Alert(rule)) => {
                let now = Instant::now();
                let mut any = false;
                for o in &mut lines.outputs {
                    any |= o.alert(&rule, now);
                }
                if any {
                    stats.pulses.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(GpioCmd::Clear(rule)) => lines.outputs.iter_mut().for_each(|o| o.clear(&rule)),
            Ok(GpioCmd::CameraLost(lost)) => lines.outputs.iter_mut().for_each(|o| o.camera(lost)),
            Ok(GpioCmd::Reset) => lines.outputs.iter_mut().for_each(|o| o.reset()),
            Ok(GpioCmd::AllOff) => lines.off(),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        lines.outputs.iter_mut().for_each(|o| o.tick(now));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;
    use crate::output::sentence::field;

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
    impl Timed {
        fn levels(&self) -> Vec<bool> {
            self.0.lock().unwrap().iter().map(|x| x.1).collect()
        }
    }

    fn rules(names: &[&str]) -> Binding {
        Binding::Rules(names.iter().map(|n| field(n)).collect())
    }

    fn states<P: OutputPin>(o: &[OutputLine<P>]) -> Vec<bool> {
        o.iter().map(|x| x.is_on()).collect()
    }

    #[test]
    fn modes_pulse_latch_and_follow() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (p, l, f, c) = (Timed::default(), Timed::default(), Timed::default(), Timed::default());
        let mut lines = Lines {
            outputs: vec![
                OutputLine::new(p.clone(), false, Mode::Pulse(ms(500)), rules(&[])),
                OutputLine::new(l.clone(), true, Mode::Latched, rules(&["gate"])),
                OutputLine::new(f.clone(), false, Mode::Follow, rules(&["gate", "lawn"])),
                OutputLine::new(c.clone(), false, Mode::Follow, Binding::CameraLost),
            ],
        };
        let o = &mut lines.outputs;
        o.iter_mut().for_each(|x| {
            x.alert("gate", t0);
        });
        o.iter_mut().for_each(|x| {
            x.alert("lawn", t0 + ms(100));
        });
        o.iter_mut().for_each(|x| x.tick(t0 + ms(599)));
        assert_eq!(states(o), [true, true, true, false], "the second alert extended the pulse");
        o.iter_mut().for_each(|x| x.tick(t0 + ms(600)));
        o.iter_mut().for_each(|x| x.clear("gate"));
        // The latched line (bound to gate only) is off once gate cleared; follow waits for lawn too.
        assert_eq!(states(o), [false, false, true, false]);
        o.iter_mut().for_each(|x| x.clear("lawn"));
        o.iter_mut().for_each(|x| x.camera(true));
        assert_eq!(states(o), [false, false, false, true]);
        // RESET releases a latched line while its alert stands, and leaves follow and events alone.
        o.iter_mut().for_each(|x| {
            x.alert("gate", t0 + ms(1000));
        });
        o.iter_mut().for_each(|x| x.reset());
        assert_eq!(states(o), [false, false, true, true]);
        drop(lines);
        // Active low inverts; every line ended off when dropped.
        assert_eq!(l.levels(), [true, false, true, false, true]);
        for pin in [&p, &f, &c] {
            assert!(!pin.levels().last().unwrap());
        }
    }

    #[test]
    fn the_thread_times_the_pulse_and_ends_with_every_line_off() {
        let (alarm, fault) = (Timed::default(), Timed::default());
        let lines = Lines {
            outputs: vec![
                OutputLine::new(alarm.clone(), true, Mode::Pulse(Duration::from_millis(200)), rules(&[])),
                OutputLine::new(fault.clone(), true, Mode::Follow, Binding::CameraLost),
            ],
        };
        let (gpio, thread) = Gpio::spawn(lines).unwrap();
        gpio.send(GpioCmd::CameraLost(true));
        gpio.send(GpioCmd::Alert(field("door")));
        std::thread::sleep(Duration::from_millis(400));
        gpio.send(GpioCmd::Alert(field("door")));
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
