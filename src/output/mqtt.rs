//! MQTT: alerts, clears, events and heartbeats as JSON to a broker, for fleets and Home Assistant.
//!
//! Why it looks like this: the output thread must never wait for a broker, and a broker that goes away
//! (restarted, rebooted, unplugged) must cost us nothing until the outbox is full. rumqttc's client is the
//! protocol (QoS 1, keep-alive, TLS through rustls with the ring provider); this module is the policy
//! around it. The output thread hands messages to rumqttc's bounded request channel with `try_publish`
//! (never blocking; a full channel is counted). A thread of our own drives the connection, reconnects
//! with backoff, and keeps what a lost connection leaves behind: rumqttc moves the unacknowledged
//! publishes and the queued requests into its `pending` list on an error, and drops that list when the
//! next connection is a new session (with `clean_session`, every one is); we take the list on the error
//! and give it back after the next CONNACK, so the broker gets it first, in order. The channel, the
//! publishes in flight and that kept list are the outbox: all bounded by `[mqtt] outbox`. Delivery is at
//! least once (a publish whose PUBACK was lost goes again): consumers tell duplicates by `seq`.
//!
//! Topics: `<prefix>/<camera>/alert`, `clear`, `event`, `status` (heartbeats), `availability` (retained
//! `online`, and `offline` on a clean stop and as the last will); with discovery, a Home Assistant
//! binary sensor per rule (`<discovery_prefix>/binary_sensor/lookout_<camera>/<rule>/config`, retained)
//! whose state is `<prefix>/<camera>/rule/<rule>/state` (`ON` while one of its alerts is active).
//! rumqttc and rustls are used only here.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event as NetEvent, LastWill, MqttOptions, Outgoing, Packet, QoS, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;

use super::sentence::{AlertData, Heartbeat};

/// Publishes one connection may have in flight (rumqttc's `inflight`).
const INFLIGHT: u16 = 32;
/// Reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the MQTT sink needs, from `[mqtt]` (files already read by the config).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub topic_prefix: String,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM text of the CA certificate(s): TLS when set.
    pub tls_ca: Option<Vec<u8>>,
    pub keep_alive: Duration,
    /// Messages the outbox holds while the broker is away.
    pub outbox: usize,
    /// Home Assistant discovery prefix, when discovery is on.
    pub discovery_prefix: Option<String>,
    pub camera: String,
    /// The rules in force (one binary sensor each, with discovery).
    pub rules: Vec<String>,
}

/// Counters, for the summary, `$LKSTA` and the log.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Messages taken into the outbox, and acknowledged by the broker (PUBACK).
    pub queued: AtomicU64,
    pub acked: AtomicU64,
    /// Messages dropped: the outbox was full.
    pub dropped: AtomicU64,
    /// Of those, the ones dropped after they were taken (kept through an outage that filled the outbox).
    pub discarded: AtomicU64,
    /// Connections made, and lost.
    pub connects: AtomicU64,
    pub lost: AtomicU64,
}

struct Shared {
    stats: MqttStats,
    connected: AtomicBool,
    stop: AtomicBool,
    finished: AtomicBool,
}

/// What the connection thread tells the output thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    Connected,
    Lost(String),
}

/// Reads the CA certificates of `pem` (for the config: a file without one is an error there).
pub fn parse_ca(pem: &[u8]) -> Result<usize, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c.len()),
        Ok(_) => Err("no PEM certificate in it".into()),
        Err(e) => Err(format!("not PEM certificates: {e}")),
    }
}

fn tls_config(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("tls_ca: {e}"))?;
        roots.add(cert).map_err(|e| format!("tls_ca: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The topics of one camera.
#[derive(Debug, Clone)]
struct Topics {
    base: String,
    availability: String,
}

impl Topics {
    fn new(prefix: &str, camera: &str) -> Topics {
        let base = format!("{prefix}/{camera}");
        Topics { availability: format!("{base}/availability"), base }
    }
    fn of(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.base)
    }
    fn rule_state(&self, rule: &str) -> String {
        format!("{}/rule/{rule}/state", self.base)
    }
}

/// Letters, digits, `_` and `-`: what Home Assistant takes in a discovery id.
fn ha_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// The MQTT sink, owned by the output thread.
pub struct Mqtt {
    settings: MqttSettings,
    client: Client,
    topics: Topics,
    shared: Arc<Shared>,
    notes: Receiver<Note>,
    net: Option<std::thread::JoinHandle<()>>,
    /// Alerts active per rule (the Home Assistant state).
    active: BTreeMap<String, u32>,
    /// A stop: `offline` published; DISCONNECT asked for.
    stopping: bool,
    disconnecting: bool,
}

impl Mqtt {
    /// Starts the connection thread; the broker may be down (it is retried with backoff).
    pub fn start(settings: MqttSettings) -> Result<Mqtt, String> {
        let topics = Topics::new(&settings.topic_prefix, &settings.camera);
        let mut opts = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
        opts.set_keep_alive(settings.keep_alive)
            .set_clean_session(true)
            .set_inflight(INFLIGHT)
            .set_last_will(LastWill::new(topics.availability.clone(), "offline", QoS::AtLeastOnce, true));
        if let Some(user) = &settings.username {
            opts.set_credentials(user.clone(), settings.password.clone().unwrap_or_default());
        }
        if let Some(pem) = &settings.tls_ca {
            let tls = tls_config(pem)?;
            opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))));
        }
        let (client, connection) = Client::new(opts, settings.outbox.max(1));
        let shared = Arc::new(Shared {
            stats: MqttStats::default(),
            connected: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        });
        let (tx, notes) = std::sync::mpsc::sync_channel(64);
        let (s, keep) = (shared.clone(), settings.outbox);
        let name = format!("{}:{}", settings.host, settings.port);
        let net = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                drive(connection, &s, &tx, keep, &name);
                s.connected.store(false, Ordering::SeqCst);
                s.finished.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("starting the MQTT thread: {e}"))?;
        let active = settings.rules.iter().map(|r| (r.clone(), 0)).collect();
        Ok(Mqtt {
            settings,
            client,
            topics,
            shared,
            notes,
            net: Some(net),
            active,
            stopping: false,
            disconnecting: false,
        })
    }

    pub fn stats(&self) -> &MqttStats {
        &self.shared.stats
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Messages taken and not yet acknowledged (queued, in flight, or kept for the next connection).
    pub fn outstanding(&self) -> u64 {
        let s = &self.shared.stats;
        s.queued
            .load(Ordering::Relaxed)
            .saturating_sub(s.acked.load(Ordering::Relaxed))
            .saturating_sub(s.discarded.load(Ordering::Relaxed))
    }

    /// The next note of the connection thread, if any.
    pub fn note(&mut self) -> Option<Note> {
        let note = self.notes.try_recv().ok()?;
        if note == Note::Connected {
            self.announce();
        }
        Some(note)
    }

    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        if self.stopping {
            return;
        }
        match self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => {
                self.shared.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let n = self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                // The first, then every 100th: a broker away for hours must not flood the log.
                if n == 1 || n.is_multiple_of(100) {
                    log::error!(
                        "mqtt: a message dropped ({n} so far): the outbox of {} is full ({e})",
                        self.settings.outbox
                    );
                }
            }
        }
    }

    fn json(&self, topic: String, value: &serde_json::Value, retain: bool) {
        self.publish(topic, value.to_string().into_bytes(), retain);
    }

    /// After each CONNACK: `online`, the discovery configs and each rule's state (all retained).
    fn announce(&mut self) {
        self.publish(self.topics.availability.clone(), b"online".to_vec(), true);
        let Some(dp) = self.settings.discovery_prefix.clone() else { return };
        let camera = self.settings.camera.clone();
        let node = format!("lookout_{}", ha_id(&camera));
        for (rule, n) in &self.active {
            let config = json!({
                "name": rule,
                "unique_id": format!("{node}_{}", ha_id(rule)),
                "object_id": format!("{node}_{}", ha_id(rule)),
                "state_topic": self.topics.rule_state(rule),
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": self.topics.availability,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device_class": "occupancy",
                "device": {
                    "identifiers": [node],
                    "name": format!("lookout {camera}"),
                    "manufacturer": "lookout",
                    "sw_version": env!("CARGO_PKG_VERSION"),
                },
            });
            self.json(format!("{dp}/binary_sensor/{node}/{}/config", ha_id(rule)), &config, true);
            let state = if *n > 0 { "ON" } else { "OFF" };
            self.publish(self.topics.rule_state(rule), state.as_bytes().to_vec(), true);
        }
    }

    /// Counts the rule's active alerts up or down; publishes its state when it changes.
    fn rule_state(&mut self, rule: &str, on: bool) {
        let Some(n) = self.active.get_mut(rule) else { return };
        let before = *n > 0;
        *n = if on { n.saturating_add(1) } else { n.saturating_sub(1) };
        let after = *n > 0;
        if before != after && self.settings.discovery_prefix.is_some() {
            let state = if after { "ON" } else { "OFF" };
            self.publish(self.topics.rule_state(rule), state.as_bytes().to_vec(), true);
        }
    }

    pub fn alert(&mut self, seq: u64, a: &AlertData) {
        let [x1, y1, x2, y2] =
            a.bbox.map(|v| if v.is_finite() { v.round().clamp(-99_999.0, 99_999.0) as i64 } else { 0 });
        let score = if a.score.is_finite() { a.score.clamp(0.0, 1.0) } else { 0.0 };
        // Two decimals, as on the serial line.
        let score = (f64::from(score) * 100.0).round() / 100.0;
        let v = json!({
            "seq": seq, "unix_ms": a.unix_ms, "camera": self.settings.camera, "rule": a.rule.as_str(),
            "track": a.track, "class": a.class.as_str(), "score": score, "box": [x1, y1, x2, y2],
        });
        self.json(self.topics.of("alert"), &v, false);
        self.rule_state(a.rule.as_str(), true);
    }

    pub fn clear(&mut self, seq: u64, unix_ms: u64, rule: &str, track: u32) {
        let v = json!({"seq": seq, "unix_ms": unix_ms, "camera": self.settings.camera, "rule": rule, "track": track});
        self.json(self.topics.of("clear"), &v, false);
        self.rule_state(rule, false);
    }

    /// `camera_lost`, `armed`, `serial_lost`, ...; `seq` when the event has one on the serial line too.
    pub fn event(&mut self, seq: Option<u64>, unix_ms: u64, name: &str) {
        let v = json!({"seq": seq, "unix_ms": unix_ms, "camera": self.settings.camera, "event": name});
        self.json(self.topics.of("event"), &v, false);
    }

    /// Heartbeats go to `status` only while connected: a stale one is worth nothing later.
    pub fn status(&mut self, seq: u64, h: &Heartbeat, armed: bool) {
        if !self.is_connected() {
            return;
        }
        let v = json!({
            "seq": seq, "unix_ms": h.unix_ms, "camera": self.settings.camera,
            "capture_fps": (h.capture_fps * 10.0).round() / 10.0, "infer_fps": (h.infer_fps * 10.0).round() / 10.0,
            "dropped": h.dropped, "armed": armed, "mqtt_dropped": self.shared.stats.dropped.load(Ordering::Relaxed),
        });
        self.json(self.topics.of("status"), &v, false);
    }

    /// One step of a clean stop; true once it is done. First `offline` (retained) after what is queued;
    /// once the broker has acknowledged everything, DISCONNECT; then the connection thread ends. With
    /// the broker away there is nothing to say it to: the connection thread gives up at once.
    pub fn stop_step(&mut self) -> bool {
        if !self.stopping {
            if self.is_connected() {
                self.publish(self.topics.availability.clone(), b"offline".to_vec(), true);
            }
            self.stopping = true;
        }
        if !self.disconnecting {
            if self.is_connected() && self.outstanding() > 0 {
                return false;
            }
            if self.is_connected() {
                let _ = self.client.try_disconnect();
            }
            self.disconnecting = true;
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.finished()
    }

    /// True once the connection thread has ended (DISCONNECT sent, or given up).
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// Ends the connection thread: joined if it has finished, otherwise left behind (a connect to a
    /// dead host can take its timeout) with what it had not delivered logged.
    pub fn end(&mut self) {
        self.stop_step();
        self.shared.stop.store(true, Ordering::SeqCst);
        let left = self.outstanding();
        if left > 0 {
            log::error!("mqtt: stopping with {left} messages the broker did not acknowledge");
        }
        match self.net.take() {
            Some(h) if h.is_finished() => {
                let _ = h.join();
            }
            Some(_) => log::warn!("mqtt: the connection thread is still connecting; not waiting for it"),
            None => {}
        }
    }
}

/// The connection thread: polls rumqttc's event loop (blocking: it wakes for the network, for requests
/// and for keep-alive), counts PUBACKs, reconnects with backoff and keeps the unacknowledged publishes.
fn drive(mut conn: Connection, shared: &Shared, notes: &SyncSender<Note>, keep: usize, name: &str) {
    let mut kept: VecDeque<Request> = VecDeque::new();
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    let mut up = false;
    loop {
        let ev = match conn.recv() {
            Ok(ev) => ev,
            // Every client handle is gone.
            Err(_) => return,
        };
        match ev {
            Ok(NetEvent::Incoming(Packet::ConnAck(_))) => {
                // rumqttc dropped its pending list for the new session: ours goes first instead.
                let mut pending = std::mem::take(&mut kept);
                pending.append(&mut conn.eventloop.pending);
                conn.eventloop.pending = pending;
                up = true;
                backoff = BACKOFF_MIN;
                failures = 0;
                shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                shared.connected.store(true, Ordering::SeqCst);
                let _ = notes.try_send(Note::Connected);
            }
            Ok(NetEvent::Incoming(Packet::PubAck(_))) => {
                shared.stats.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(NetEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                // What the connection left unacknowledged, and what was queued, is in `pending` now.
                kept.append(&mut conn.eventloop.pending);
                // A PUBACK or DISCONNECT of the old connection means nothing to the next one.
                kept.retain(|r| matches!(r, Request::Publish(_)));
                if kept.len() > keep {
                    // The oldest `keep` stay; the rest were queued last.
                    let over = kept.len().saturating_sub(keep);
                    kept.truncate(keep);
                    shared.stats.dropped.fetch_add(over as u64, Ordering::Relaxed);
                    shared.stats.discarded.fetch_add(over as u64, Ordering::Relaxed);
                    log::error!("mqtt: {over} messages dropped: the outbox of {keep} is full");
                }
                failures = failures.saturating_add(1);
                if up {
                    up = false;
                    shared.stats.lost.fetch_add(1, Ordering::Relaxed);
                    shared.connected.store(false, Ordering::SeqCst);
                    let _ = notes.try_send(Note::Lost(e.to_string()));
                } else if failures == 1 || failures.is_multiple_of(20) {
                    log::warn!("mqtt {name}: {e} ({failures} tries; retrying every {} ms)", backoff.as_millis());
                }
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let until = Instant::now().checked_add(backoff);
                while until.is_some_and(|u| Instant::now() < u) {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
            }
        }
        if shared.stop.load(Ordering::SeqCst) && !up {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_discovery_ids() {
        let t = Topics::new("lookout", "gate");
        assert_eq!(t.of("alert"), "lookout/gate/alert");
        assert_eq!(t.availability, "lookout/gate/availability");
        assert_eq!(t.rule_state("road"), "lookout/gate/rule/road/state");
        assert_eq!(ha_id("cam.1 x"), "cam_1_x");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        assert!(parse_ca(b"").is_err());
        assert!(parse_ca(b"hello\n").is_err());
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(parse_ca(bad).is_err());
    }
}
