//! Output: every way an alert leaves the sensor, off the inference thread.
//!
//! Why a stage of its own: a device on the other end of the wire must be able to rely on us, and we must
//! not depend on it. Producers (the inference loop: alerts, clears, heartbeats, arming notices; the
//! capture thread: camera events) hand an [`Event`] to [`Output::send`], which never blocks: GPIO gets
//! its command at once (its own thread and timer: [`gpio`]), and the event goes into a bounded queue to
//! the output thread, which numbers it (one `seq` for every sentence), formats it ([`sentence`]) and
//! queues it on the serial link ([`serial`]), reads the controller's commands ([`protocol`]) and
//! re-sends unacknowledged alerts; with `[mqtt]` it also hands each event to the broker ([`mqtt`]). A
//! full queue or a stalled port is logged and counted
//! ([`OutputStats`]), never silent, and never delays the alarm line. Producers do not import this
//! module's insides, and this module imports no producer: [`Event`] carries plain data.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod gpio;
pub mod journal;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod protocol;
pub mod sentence;
pub mod serial;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpio::{Gpio, GpioCmd, GpioThread};
use protocol::{AckTable, Command, Line, LineReader, NakLimit, Refused};
use sentence::{alert_sentence, clear_sentence, event_sentence, heartbeat_sentence};
pub use sentence::{verify, AlertData, Field, Heartbeat, Sentence};
use serial::{Link, LinkEvent};

/// Events waiting for the output thread.
pub const QUEUE: usize = 256;

/// Something to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Alert(AlertData),
    Clear {
        unix_ms: u64,
        rule: Field,
        track: u32,
    },
    /// The camera was lost (true) or is back (false).
    Camera {
        lost: bool,
        unix_ms: u64,
    },
    /// `armed`, `disarmed`, `internal_error`.
    Notice {
        name: &'static str,
        unix_ms: u64,
    },
    Heartbeat(Heartbeat),
}

/// How the output thread behaves (from `[serial]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub camera: String,
    /// Keep alerts until `$LKCMD,ACK,<seq>`, re-sending them.
    pub ack: bool,
    pub resend: Duration,
    /// Sends of one alert in all (the first and the re-sends).
    pub max_sends: u32,
    /// The journal file (sequence numbers and alerts that survive a restart), and its size in records.
    pub journal: Option<std::path::PathBuf>,
    pub journal_records: u64,
    /// The broker, with `[mqtt]`.
    #[cfg(feature = "mqtt")]
    pub mqtt: Option<mqtt::MqttSettings>,
}

/// Counters of the output stage, for the summary, `$LKSTA` and the log.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Sentences formatted and queued on the link.
    pub sentences: AtomicU64,
    /// Events dropped because the queue to the output thread was full.
    pub queue_full: AtomicU64,
    /// Sentences the link dropped (its buffer full: the port stalled or gone for long).
    pub link_dropped: AtomicU64,
    /// Times the port failed and was closed.
    pub link_lost: AtomicU64,
    /// Alerts re-sent, and given up on (never acknowledged).
    pub resent: AtomicU64,
    pub given_up: AtomicU64,
    /// Controller lines answered with `$LKNAK`, ignored (not `$LKCMD`), noise bytes.
    pub naks: AtomicU64,
    pub ignored: AtomicU64,
    pub noise: AtomicU64,
    /// Alerts sent and waiting for their ACK now.
    pub unacked: AtomicU64,
    /// Journal writes that failed (a full disk, a bad card): the sentences went out anyway.
    pub journal_errors: AtomicU64,
    /// MQTT messages dropped (the outbox full), and connections to the broker lost.
    pub mqtt_dropped: AtomicU64,
    pub mqtt_lost: AtomicU64,
}

struct Shared {
    stats: OutputStats,
    stop: AtomicBool,
    /// How long the stop may drain (milliseconds), set with `stop`.
    drain_ms: AtomicU64,
    failure: Mutex<Option<String>>,
    threads: Mutex<Option<(std::thread::JoinHandle<()>, GpioThread)>>,
}

/// The producers' handle. Cheap to clone.
#[derive(Clone)]
pub struct Output {
    tx: SyncSender<Event>,
    gpio: Gpio,
    shared: Arc<Shared>,
}

/// Arming as the output thread sees it (ARM / DISARM commands; `$LKSTA` reports it).
pub trait ArmSwitch: Send {
    fn is_armed(&self) -> bool;
    fn set(&self, armed: bool);
}

impl ArmSwitch for crate::shutdown::Arming {
    fn is_armed(&self) -> bool {
        crate::shutdown::Arming::is_armed(self)
    }
    fn set(&self, armed: bool) {
        crate::shutdown::Arming::set(self, armed)
    }
}

impl Output {
    /// Starts the output thread on `link` and the GPIO thread on `lines`.
    pub fn spawn<P: embedded_hal::digital::OutputPin + Send + 'static>(
        settings: Settings,
        link: Link,
        lines: gpio::Lines<P>,
        arming: Box<dyn ArmSwitch>,
    ) -> std::io::Result<Output> {
        let (gpio, gpio_thread) = Gpio::spawn(lines)?;
        let journal =
            settings.journal.as_ref().and_then(|p| match journal::Journal::open(p, settings.journal_records) {
                Ok((j, r)) => {
                    log::info!(
                        "journal {}: continuing after seq {}; {} alerts unacknowledged{}",
                        p.display(),
                        r.last_seq,
                        r.unacked.len(),
                        if r.damaged > 0 { format!(", {} damaged records skipped", r.damaged) } else { String::new() }
                    );
                    Some((j, r))
                }
                Err(e) => {
                    log::error!("journal {}: {e}; running without one (sequence numbers restart at 1)", p.display());
                    None
                }
            });
        let (tx, rx) = crate::metrics::alloc::sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            stats: OutputStats::default(),
            stop: AtomicBool::new(false),
            drain_ms: AtomicU64::new(DRAIN.as_millis() as u64),
            failure: Mutex::new(None),
            threads: Mutex::new(None),
        });
        let (s, g) = (shared.clone(), gpio.clone());
        let handle = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || OutputThread::new(settings, link, arming, g, &s, journal).run(rx))?;
        *lock(&shared.threads) = Some((handle, gpio_thread));
        Ok(Output { tx, gpio, shared })
    }

    /// Sends `ev`, never blocking: GPIO at once, the rest through the queue (a full one is counted).
    pub fn send(&self, ev: Event) {
        match &ev {
            Event::Alert(a) => self.gpio.send(GpioCmd::Alert(a.rule.clone())),
            Event::Clear { rule, .. } => self.gpio.send(GpioCmd::Clear(rule.clone())),
            Event::Camera { lost, .. } => self.gpio.send(GpioCmd::CameraLost(*lost)),
            _ => {}
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                let n = self.shared.stats.queue_full.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                // The first, then every 100th: a stuck output thread must not flood the log as well.
                if n == 1 || n.is_multiple_of(100) {
                    log::error!("output queue full ({QUEUE} events): dropped {ev:?} ({n} so far)");
                }
            }
            Err(TrySendError::Disconnected(ev)) => log::error!("the output thread is gone: dropped {ev:?}"),
        }
    }

    /// Every GPIO line off now.
    pub fn lines_off(&self) {
        self.gpio.send(GpioCmd::AllOff);
    }

    pub fn stats(&self) -> &OutputStats {
        &self.shared.stats
    }

    /// Why output cannot go on (stdout closed), if it cannot.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Ends both threads: every line off at once; what is queued goes out for up to `drain` (a port
    /// or broker that does not take it is left behind, counted), then the threads are joined.
    pub fn shutdown(&self, drain: Duration) {
        self.gpio.send(GpioCmd::AllOff);
        self.shared.drain_ms.store(u64::try_from(drain.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
        self.shared.stop.store(true, Ordering::SeqCst);
        let Some((handle, gpio)) = lock(&self.shared.threads).take() else { return };
        let deadline = Instant::now().checked_add(drain.saturating_add(Duration::from_millis(100)));
        while !handle.is_finished() && deadline.is_none_or(|d| Instant::now() < d) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            log::error!("the output thread did not finish in time");
        }
        gpio.stop(Duration::from_millis(200));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The output thread's state.
struct OutputThread<'a> {
    settings: Settings,
    link: Link,
    arming: Box<dyn ArmSwitch>,
    gpio: Gpio,
    shared: &'a Shared,
    seq: u64,
    sentence: Sentence,
    reader: LineReader,
    acks: AckTable,
    naks: NakLimit,
    camera_lost: bool,
    started: Instant,
    /// When the stop came and the drain must end.
    drain_until: Option<Instant>,
    journal: Option<journal::Journal>,
    #[cfg(feature = "mqtt")]
    mqtt: Option<mqtt::Mqtt>,
}

/// How long a stop waits for queued sentences to go out, unless [`Output::shutdown`] says otherwise.
pub const DRAIN: Duration = Duration::from_millis(500);

impl<'a> OutputThread<'a> {
    fn new(
        settings: Settings,
        link: Link,
        arming: Box<dyn ArmSwitch>,
        gpio: Gpio,
        shared: &'a Shared,
        journal: Option<(journal::Journal, journal::Recovered)>,
    ) -> Self {
        let acks = AckTable::new(settings.resend, settings.max_sends);
        #[cfg(feature = "mqtt")]
        let mqtt = settings.mqtt.clone().and_then(|m| {
            let name = format!("{}:{}", m.host, m.port);
            match mqtt::Mqtt::start(m) {
                Ok(m) => Some(m),
                Err(e) => {
                    log::error!("mqtt {name}: {e}; running without it");
                    None
                }
            }
        });
        let (journal, recovered) = match journal {
            Some((j, r)) => (Some(j), Some(r)),
            None => (None, None),
        };
        let mut t = OutputThread {
            settings,
            link,
            arming,
            gpio,
            shared,
            seq: 0,
            sentence: Sentence::new(),
            reader: LineReader::default(),
            acks,
            naks: NakLimit::new(),
            camera_lost: false,
            started: Instant::now(),
            drain_until: None,
            journal,
            #[cfg(feature = "mqtt")]
            mqtt,
        };
        if let Some(r) = recovered {
            t.seq = r.last_seq;
            t.resend_recovered(r.unacked);
        }
        t
    }

    /// A restart: the alerts the journal holds unacknowledged go out first, in order, as they were
    /// (same seq, same bytes), and wait for their ACK again.
    fn resend_recovered(&mut self, unacked: Vec<(u64, Vec<u8>)>) {
        if !self.settings.ack {
            return;
        }
        let now = Instant::now();
        for (seq, bytes) in unacked {
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            self.sentence.clear();
            if self.sentence.push_str(text).is_err() {
                continue;
            }
            log::warn!("alert {seq}: unacknowledged before the restart; sending it again");
            self.shared.stats.resent.fetch_add(1, Ordering::Relaxed);
            self.put("a re-sent alert");
            let _ = self.acks.sent(seq, &self.sentence, now);
        }
    }

    /// A journal write failed: counted, logged (the first and every 100th), and the sentence goes out.
    fn journal_failed(&self, what: &str, e: &std::io::Error) {
        let n = self.shared.stats.journal_errors.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n == 1 || n.is_multiple_of(100) {
            log::error!("journal: {what} failed ({n} so far): {e}; sentences still go out");
        }
    }

    /// Writes `seq` down before its sentence goes out.
    fn journal_seq(&mut self, seq: u64) {
        if let Some(Err(e)) = self.journal.as_mut().map(|j| j.mark_seq(seq)) {
            self.journal_failed("writing the sequence number", &e);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.saturating_add(1);
        let seq = self.seq;
        self.journal_seq(seq);
        seq
    }

    /// Queues the sentence in `self.sentence` on the link.
    fn put(&mut self, what: &str) {
        let stats = &self.shared.stats;
        if self.link.queue(&self.sentence) {
            stats.sentences.fetch_add(1, Ordering::Relaxed);
        } else {
            let n = stats.link_dropped.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            // The first, then every 100th: a stalled port must not flood the log as well.
            if n == 1 || n.is_multiple_of(100) {
                log::error!(
                    "serial {}: {what} dropped ({n} so far): the port is not taking sentences ({} bytes waiting)",
                    self.link.name(),
                    self.link.pending()
                );
            }
        }
    }

    fn event(&mut self, ev: &Event, now: Instant) {
        let seq = self.next_seq();
        let camera = self.settings.camera.as_str();
        let ok = match ev {
            Event::Alert(a) => alert_sentence(&mut self.sentence, seq, a, camera),
            Event::Clear { unix_ms, rule, track } => {
                clear_sentence(&mut self.sentence, seq, *unix_ms, camera, rule, *track)
            }
            Event::Camera { lost, unix_ms } => {
                self.camera_lost = *lost;
                let name = if *lost { "camera_lost" } else { "camera_restored" };
                event_sentence(&mut self.sentence, seq, *unix_ms, camera, name)
            }
            Event::Notice { name, unix_ms } => event_sentence(&mut self.sentence, seq, *unix_ms, camera, name),
            Event::Heartbeat(h) => heartbeat_sentence(&mut self.sentence, seq, camera, h),
        };
        if ok.is_err() {
            log::error!("sentence {seq} does not fit its buffer; not sent");
            return;
        }
        if let Event::Alert(_) = ev {
            let sentence = &self.sentence;
            if let Some(Err(e)) = self.journal.as_mut().map(|j| j.alert(seq, sentence.as_bytes())) {
                self.journal_failed("appending an alert", &e);
            }
        }
        self.put("a sentence");
        #[cfg(feature = "mqtt")]
        if let Some(m) = &mut self.mqtt {
            match ev {
                Event::Alert(a) => m.alert(seq, a),
                Event::Clear { unix_ms, rule, track } => m.clear(seq, *unix_ms, rule, *track),
                Event::Camera { lost, unix_ms } => {
                    m.event(Some(seq), *unix_ms, if *lost { "camera_lost" } else { "camera_restored" })
                }
                Event::Notice { name, unix_ms } => m.event(Some(seq), *unix_ms, name),
                Event::Heartbeat(h) => m.status(seq, h, self.arming.is_armed()),
            }
        }
        if let (Event::Alert(_), true) = (ev, self.settings.ack) {
            if let Some(old) = self.acks.sent(seq, &self.sentence, now) {
                self.shared.stats.given_up.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "alert {old} given up unacknowledged: {} newer alerts wait for their ACK",
                    protocol::MAX_UNACKED
                );
            }
        }
    }

    /// Formats a reply (`$LKACK`, `$LKNAK`, `$LKSTA`) with the next seq and queues it.
    fn reply(&mut self, talker: &str, fields: std::fmt::Arguments<'_>) {
        let seq = self.next_seq();
        let (camera, unix_ms) = (self.settings.camera.as_str(), crate::frame::unix_ms_now());
        if sentence::sentence(&mut self.sentence, talker, |s| write!(s, "{seq},{unix_ms},{camera},{fields}")).is_ok() {
            self.put("a reply");
        }
    }

    fn command(&mut self, now: Instant) {
        match protocol::parse(self.reader.line()) {
            Ok(cmd) => {
                match cmd {
                    Command::Arm => self.arming.set(true),
                    Command::Disarm => self.arming.set(false),
                    Command::Ack(seq) => {
                        if self.acks.ack(seq) {
                            if let Some(Err(e)) = self.journal.as_mut().map(|j| j.ack(seq)) {
                                self.journal_failed("marking an ACK", &e);
                            }
                        } else {
                            // Acknowledged before, given up, or never an alert that waits: say so.
                            if self.naks.allow(now) {
                                self.shared.stats.naks.fetch_add(1, Ordering::Relaxed);
                                self.reply("LKNAK", format_args!("not_pending,{seq}"));
                            }
                            return;
                        }
                    }
                    Command::Status => {
                        let armed = if self.arming.is_armed() { "armed" } else { "disarmed" };
                        let camera = if self.camera_lost { "camera_lost" } else { "camera_ok" };
                        let st = &self.shared.stats;
                        let dropped = st
                            .link_dropped
                            .load(Ordering::Relaxed)
                            .saturating_add(st.queue_full.load(Ordering::Relaxed))
                            .saturating_add(st.mqtt_dropped.load(Ordering::Relaxed));
                        let (unacked, up) = (self.acks.len(), now.saturating_duration_since(self.started).as_secs());
                        self.reply("LKSTA", format_args!("{armed},{camera},{unacked},{dropped},{up}"));
                        return;
                    }
                    Command::Reset => self.gpio.send(GpioCmd::Reset),
                    Command::Ping => {}
                }
                match cmd {
                    Command::Ack(seq) => self.reply("LKACK", format_args!("ACK,{seq}")),
                    other => self.reply("LKACK", format_args!("{}", other.name())),
                }
            }
            Err(Refused::Nak(reason)) => self.nak(reason, now),
            Err(Refused::Ignored) => {
                self.shared.stats.ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn nak(&mut self, reason: &str, now: Instant) {
        self.shared.stats.naks.fetch_add(1, Ordering::Relaxed);
        if self.naks.allow(now) {
            self.reply("LKNAK", format_args!("{reason}"));
        }
    }

    /// Tells the sinks other than the serial port that it was lost or is back.
    fn other_sinks(&mut self, name: &str) {
        #[cfg(feature = "mqtt")]
        if let Some(m) = &mut self.mqtt {
            m.event(None, crate::frame::unix_ms_now(), name);
        }
        let _ = name;
    }

    /// The broker's comings and goings: logged, counted, and told on the serial line.
    #[cfg(feature = "mqtt")]
    fn mqtt_notes(&mut self) {
        let Some(m) = &mut self.mqtt else { return };
        let mut told: heapless::Vec<&'static str, 4> = heapless::Vec::new();
        while let Some(note) = m.note() {
            let name = match note {
                mqtt::Note::Connected => {
                    let s = m.stats();
                    log::info!(
                        "mqtt {}:{}: connected ({} connections so far)",
                        self.settings.mqtt.as_ref().map_or("", |s| s.host.as_str()),
                        self.settings.mqtt.as_ref().map_or(0, |s| s.port),
                        s.connects.load(Ordering::Relaxed)
                    );
                    if s.lost.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    "mqtt_restored"
                }
                mqtt::Note::Lost(why) => {
                    self.shared.stats.mqtt_lost.fetch_add(1, Ordering::Relaxed);
                    log::error!("mqtt: connection lost ({why}); reconnecting with backoff, alerts kept meanwhile");
                    "mqtt_lost"
                }
            };
            let _ = told.push(name);
        }
        self.shared.stats.mqtt_dropped.store(m.stats().dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        for name in told {
            let seq = self.next_seq();
            let (camera, unix_ms) = (self.settings.camera.as_str(), crate::frame::unix_ms_now());
            if event_sentence(&mut self.sentence, seq, unix_ms, camera, name).is_ok() {
                self.put("an event");
            }
        }
    }

    fn pump(&mut self, now: Instant) {
        #[cfg(feature = "mqtt")]
        self.mqtt_notes();
        let mut input = [0u8; 256];
        // A few rounds: a burst of input is answered in one go, a flood cannot keep us here.
        for _ in 0..8 {
            let (ev, n) = self.link.pump(now, &mut input);
            match ev {
                Some(LinkEvent::Lost(why)) => {
                    self.shared.stats.link_lost.fetch_add(1, Ordering::Relaxed);
                    log::error!("serial {}: {why}; closed it, reopening with backoff", self.link.name());
                    self.other_sinks("serial_lost");
                }
                Some(LinkEvent::Restored) => {
                    log::warn!("serial {}: reopened", self.link.name());
                    self.other_sinks("serial_restored");
                }
                Some(LinkEvent::Fatal(why)) => {
                    log::error!("output: {why}: alerts cannot be delivered");
                    *lock(&self.shared.failure) = Some(why);
                }
                None => {}
            }
            if n == 0 {
                break;
            }
            for &b in input.get(..n).unwrap_or(&[]) {
                match self.reader.push(b) {
                    Some(Line::Ready) => self.command(now),
                    Some(Line::TooLong) => self.nak("too_long", now),
                    None => {}
                }
            }
            self.shared.stats.noise.store(self.reader.noise, Ordering::Relaxed);
        }
        if self.settings.ack {
            let mut due: heapless::Vec<Sentence, { protocol::MAX_UNACKED }> = heapless::Vec::new();
            let mut gone: heapless::Vec<u64, { protocol::MAX_UNACKED }> = heapless::Vec::new();
            self.acks.due(
                now,
                |_, s| {
                    let _ = due.push(s.clone());
                },
                |seq| {
                    let _ = gone.push(seq);
                },
            );
            for s in &due {
                self.sentence.clone_from(s);
                self.shared.stats.resent.fetch_add(1, Ordering::Relaxed);
                self.put("a re-sent alert");
            }
            for seq in &gone {
                self.shared.stats.given_up.fetch_add(1, Ordering::Relaxed);
                log::error!("alert {seq} given up: never acknowledged after {} sends", self.settings.max_sends);
            }
            self.shared.stats.unacked.store(self.acks.len() as u64, Ordering::Relaxed);
        }
    }

    /// True when the sinks have nothing left to send (the MQTT sink: its stop begun, and done).
    fn drained(&mut self) -> bool {
        #[cfg(feature = "mqtt")]
        if let Some(m) = &mut self.mqtt {
            if !m.stop_step() {
                return false;
            }
        }
        self.link.pending() == 0
    }

    fn end(&mut self) {
        let left = self.link.pending();
        if left > 0 {
            log::error!("serial {}: stopping with {left} bytes the port did not take", self.link.name());
        }
        #[cfg(feature = "mqtt")]
        if let Some(m) = &mut self.mqtt {
            m.end();
            let s = m.stats();
            log::info!(
                "mqtt: {} messages queued, {} acknowledged, {} dropped; {} connections, {} lost",
                s.queued.load(Ordering::Relaxed),
                s.acked.load(Ordering::Relaxed),
                s.dropped.load(Ordering::Relaxed),
                s.connects.load(Ordering::Relaxed),
                s.lost.load(Ordering::Relaxed)
            );
            self.shared.stats.mqtt_dropped.store(s.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn run(mut self, rx: Receiver<Event>) {
        crate::metrics::alloc::prime_channel_wait();
        loop {
            let now = Instant::now();
            if self.drain_until.is_none() && self.shared.stop.load(Ordering::SeqCst) {
                let drain = Duration::from_millis(self.shared.drain_ms.load(Ordering::SeqCst));
                self.drain_until = now.checked_add(drain);
            }
            let wait = if self.link.pending() > 0 || self.drain_until.is_some() { 5 } else { 20 };
            match rx.recv_timeout(Duration::from_millis(wait)) {
                Ok(ev) => {
                    self.event(&ev, Instant::now());
                    // Everything queued meanwhile, so a stop finds the queue empty.
                    while let Ok(ev) = rx.try_recv() {
                        self.event(&ev, Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let drain = Duration::from_millis(self.shared.drain_ms.load(Ordering::SeqCst));
                    self.drain_until.get_or_insert(now.checked_add(drain).unwrap_or(now));
                }
            }
            self.pump(Instant::now());
            if let Some(until) = self.drain_until {
                if self.drained() || Instant::now() >= until {
                    self.end();
                    return;
                }
            }
        }
    }
}
