//! MQTT: the real binary against a real mosquitto on 127.0.0.1 (started here; scripts/test.sh installs
//! it), with a subscriber written in the test (rumqttc, a persistent session, QoS 1).
#![cfg(feature = "mqtt")]

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

fn mosquitto_bin() -> PathBuf {
    for d in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/local/sbin"]) {
        let p = Path::new(d).join("mosquitto");
        if p.exists() {
            return p;
        }
    }
    panic!("mosquitto is not installed (scripts/test.sh installs it)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A mosquitto of the test's own: loopback only, persistence in the test's directory (so a restart keeps
/// the subscriber's session, as a broker in the field does), killed when dropped.
struct Broker {
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Configured on a free port, not started.
    fn new(dir: &Path, extra: &str) -> Broker {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 user root\nlog_dest file {}/mosquitto.log\n{extra}",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        Broker { conf, port, child: None }
    }

    fn start(dir: &Path, extra: &str) -> Broker {
        let mut b = Broker::new(dir, extra);
        b.up();
        b
    }

    fn up(&mut self) {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "mosquitto did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: mosquitto writes its persistence file and exits.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
}

/// A subscriber to `lookout/#` and `homeassistant/#` that reconnects (with its session kept by the
/// broker) and records every message.
struct Subscriber {
    got: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn new(port: u16, id: &str, persistent: bool) -> Subscriber {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(!persistent).set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 16, 1 << 16);
        let (client, mut conn) = Client::new(o, 16);
        let (got, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (g, s) = (got.clone(), stop.clone());
        let subscribed = Arc::new(AtomicBool::new(false));
        let sub = subscribed.clone();
        let thread = std::thread::spawn(move || {
            for ev in conn.iter() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client.try_subscribe("lookout/#", QoS::AtLeastOnce).unwrap();
                        client.try_subscribe("homeassistant/#", QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub.store(true, Ordering::SeqCst),
                    Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(10);
        while !subscribed.load(Ordering::SeqCst) {
            assert!(Instant::now() < end, "the subscriber did not subscribe");
            std::thread::sleep(Duration::from_millis(10));
        }
        Subscriber { got, stop, thread: Some(thread) }
    }

    fn messages(&self) -> Vec<Msg> {
        self.got.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&[Msg]) -> bool) {
        let end = Instant::now() + limit;
        while !ok(&self.messages()) {
            assert!(Instant::now() < end, "{what}: not seen in {limit:?}; got {:#?}", self.messages());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The thread ends at its next event (a keep-alive at the latest); not waited for.
        drop(self.thread.take());
    }
}

fn config(dir: &Path, clip: &str, pace: &str, mqtt: &str) -> PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[camera]\nname = \"gate\"\n[source]\nkind = \"mjpeg\"\npath = \"{clip}\"\npace = \"{pace}\"\n\
             [heartbeat]\ninterval_ms = 300\n[mqtt]\n{mqtt}"
        ),
    )
    .unwrap();
    p
}

/// Replaces `from` with `to` in the config file at `cfg`.
fn edit(cfg: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(cfg, text.replace(from, to)).unwrap();
}

/// `lookout run --config cfg`, started.
fn spawn_run(cfg: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Alerts as the serial line gave them: seq -> (rule, track, class, score, box).
fn serial_alerts(stdout: &[u8]) -> BTreeMap<u64, Vec<String>> {
    sentences(stdout)
        .into_iter()
        .filter(|f| f[0] == "LKALR")
        .map(|f| {
            (f[1].parse().unwrap(), vec![f[4].clone(), f[5].clone(), f[6].clone(), f[7].clone(), f[8..12].join(",")])
        })
        .collect()
}

fn serial_clears(stdout: &[u8]) -> BTreeMap<u64, Vec<String>> {
    sentences(stdout)
        .into_iter()
        .filter(|f| f[0] == "LKCLR")
        .map(|f| (f[1].parse().unwrap(), f[4..6].to_vec()))
        .collect()
}

/// The same, from the broker (a duplicate of QoS 1 has the same seq and the same content).
fn mqtt_alerts(msgs: &[Msg]) -> BTreeMap<u64, Vec<String>> {
    let mut out = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.topic == "lookout/gate/alert") {
        let v: Value = serde_json::from_str(&m.payload).unwrap();
        let b: Vec<String> = v["box"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap().to_string()).collect();
        let fields = vec![
            v["rule"].as_str().unwrap().to_string(),
            v["track"].as_u64().unwrap().to_string(),
            v["class"].as_str().unwrap().to_string(),
            format!("{:.2}", v["score"].as_f64().unwrap()),
            b.join(","),
        ];
        assert_eq!(v["camera"], "gate");
        let seq = v["seq"].as_u64().unwrap();
        if let Some(old) = out.insert(seq, fields.clone()) {
            assert_eq!(old, fields, "two alerts with seq {seq}");
        }
    }
    out
}

fn mqtt_clears(msgs: &[Msg]) -> BTreeMap<u64, Vec<String>> {
    msgs.iter()
        .filter(|m| m.topic == "lookout/gate/clear")
        .map(|m| {
            let v: Value = serde_json::from_str(&m.payload).unwrap();
            (v["seq"].as_u64().unwrap(), vec![v["rule"].as_str().unwrap().to_string(), v["track"].to_string()])
        })
        .collect()
}

fn availability(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter(|m| m.topic == "lookout/gate/availability").map(|m| m.payload.clone()).collect()
}

/// Runs lookout to its end with a time limit (a hang fails the test instead of hanging it).
fn run_to_end(cfg: &Path, limit: Duration) -> std::process::Output {
    let child = spawn_run(cfg, Stdio::piped(), Stdio::piped());
    let pid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let watchdog = std::thread::spawn(move || {
        let end = Instant::now() + limit;
        while !d.load(Ordering::SeqCst) {
            if Instant::now() > end {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    assert!(!watchdog.join().unwrap(), "lookout did not end within {limit:?}: {}", text(&out.stderr));
    out
}

/// The broker gets what the serial line gets: every alert and clear (same seq, rule, track, class,
/// score and box), heartbeats on `status`, a retained `online` while running and a retained `offline`
/// after the stop, and the Home Assistant discovery config and state of the rule.
#[test]
fn the_broker_gets_what_the_serial_line_gets() {
    let dir = scratch("mqtt-same");
    clip_part(&dir.join("clip.mjpeg"), 0, clip_frames());
    let mut broker = Broker::start(&dir, "");
    let sub = Subscriber::new(broker.port, "test-same", true);
    let cfg = config(&dir, "clip.mjpeg", "fast", &format!("port = {}\ndiscovery = true\n", broker.port));
    let out = run_to_end(&cfg, Duration::from_secs(120));
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    let (alerts, clears) = (serial_alerts(&out.stdout), serial_clears(&out.stdout));
    assert!(alerts.len() >= 2, "too few alerts to compare: {alerts:?}");
    sub.wait_for("offline after the stop", Duration::from_secs(10), |m| {
        availability(m).last().map(String::as_str) == Some("offline")
    });
    let msgs = sub.messages();
    assert_eq!(mqtt_alerts(&msgs), alerts, "alerts differ; log: {log}");
    assert_eq!(mqtt_clears(&msgs), clears);
    let av = availability(&msgs);
    assert_eq!(av.first().map(String::as_str), Some("online"), "{av:?}");
    assert!(msgs.iter().any(|m| m.topic == "lookout/gate/status" && m.payload.contains("\"infer_fps\"")), "no status");
    // Discovery: one binary sensor for the rule, retained, and its state ON then OFF at the end.
    let config = msgs.iter().find(|m| m.topic == "homeassistant/binary_sensor/lookout_gate/default/config").unwrap();
    let v: Value = serde_json::from_str(&config.payload).unwrap();
    assert_eq!(v["state_topic"], "lookout/gate/rule/default/state");
    assert_eq!(v["availability_topic"], "lookout/gate/availability");
    let states: Vec<&str> =
        msgs.iter().filter(|m| m.topic == "lookout/gate/rule/default/state").map(|m| m.payload.as_str()).collect();
    assert!(states.contains(&"ON") && states.last() == Some(&"OFF"), "{states:?}");
    drop(sub);
    // A subscriber that comes later sees the retained messages: offline, the config, the state.
    let late = Subscriber::new(broker.port, "test-late", false);
    late.wait_for("retained messages", Duration::from_secs(5), |m| {
        let retained =
            |t: &str, p: Option<&str>| m.iter().any(|x| x.topic == t && x.retain && p.is_none_or(|p| x.payload == p));
        retained("lookout/gate/availability", Some("offline"))
            && retained("lookout/gate/rule/default/state", Some("OFF"))
            && retained("homeassistant/binary_sensor/lookout_gate/default/config", None)
    });
    broker.down();
}

/// A broker stopped in the middle of a run and started again (a reboot of the hub): the alerts of the
/// outage are kept and go out after, so the broker gets every alert the serial line got. The serial
/// line is told (`$LKEVT ... mqtt_lost` / `mqtt_restored`).
#[test]
fn a_broker_restart_loses_nothing() {
    let dir = scratch("mqtt-restart");
    // The clip in real time, looping (a camera): alerts every few seconds until the stop.
    clip_part(&dir.join("clip.mjpeg"), 0, 250);
    let mut broker = Broker::start(&dir, "");
    let sub = Subscriber::new(broker.port, "test-restart", true);
    let cfg = config(&dir, "clip.mjpeg", "realtime", &format!("port = {}\n", broker.port));
    edit(&cfg, "pace = ", "loop = true\npace = ");
    let mut child = spawn_run(&cfg, Stdio::piped(), Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).unwrap() > 0 {
            l.lock().unwrap().push(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    sub.wait_for("a first alert", Duration::from_secs(30), |m| m.iter().any(|x| x.topic == "lookout/gate/alert"));
    assert!(child.try_wait().unwrap().is_none(), "lookout ended early");
    let down = lookout::frame::unix_ms_now();
    broker.down();
    std::thread::sleep(Duration::from_millis(3000));
    let up = lookout::frame::unix_ms_now();
    broker.up();
    // Alerts after the restart too, then the stop.
    sub.wait_for("an alert made after the restart", Duration::from_secs(30), |m| {
        m.iter().any(|x| {
            x.topic == "lookout/gate/alert"
                && serde_json::from_str::<Value>(&x.payload).unwrap()["unix_ms"].as_u64().unwrap() > up + 500
        })
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stop = Instant::now();
    let status = child.wait().unwrap();
    let took = stop.elapsed();
    reader.join().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(took < Duration::from_secs(2), "the stop took {took:?}");
    sub.wait_for("offline after SIGTERM", Duration::from_secs(10), |m| {
        availability(m).last().map(String::as_str) == Some("offline")
    });
    let stdout: Vec<u8> = lines.lock().unwrap().concat().into_bytes();
    let alerts = serial_alerts(&stdout);
    let during: Vec<u64> = sentences(&stdout)
        .iter()
        .filter(|f| f[0] == "LKALR" && (down..up).contains(&f[2].parse::<u64>().unwrap()))
        .map(|f| f[1].parse().unwrap())
        .collect();
    assert!(!during.is_empty(), "no alert while the broker was down ({down}..{up}): the test proves nothing");
    sub.wait_for("every alert", Duration::from_secs(20), |m| mqtt_alerts(m).len() >= alerts.len());
    let got = mqtt_alerts(&sub.messages());
    assert_eq!(got, alerts, "alerts of the outage ({during:?}) lost; log: {log}");
    let events: Vec<String> = sentences(&stdout).iter().filter(|f| f[0] == "LKEVT").map(|f| f[4].clone()).collect();
    assert!(events.contains(&"mqtt_lost".to_string()) && events.contains(&"mqtt_restored".to_string()), "{events:?}");
    assert!(log.contains("mqtt: connection lost"), "{log}");
    drop(sub);
    broker.down();
}

/// A TCP relay between lookout and the broker that can cut the network the way Wi-Fi does: `Cut` swallows
/// what lookout sends (publishes in flight, never acknowledged), then `drop_all` closes the connections,
/// and while `Refuse` new ones are closed at once.
#[derive(Clone, Copy, PartialEq)]
enum Link {
    Forward,
    Cut,
    Refuse,
}

struct Relay {
    port: u16,
    mode: Arc<Mutex<Link>>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn new(to: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Link::Forward));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (m, c) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if *m.lock().unwrap() == Link::Refuse {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else { continue };
                c.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut into, up) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap(), true), (server, client, false)]
                {
                    let m = m.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = std::io::Read::read(&mut from, &mut buf) {
                            let cut = *m.lock().unwrap() != Link::Forward;
                            if cut && up {
                                continue; // swallowed: the broker never sees it
                            }
                            if into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, mode, conns }
    }

    fn set(&self, l: Link) {
        *self.mode.lock().unwrap() = l;
    }

    fn drop_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The network to the broker cut in the middle of a run: the alerts sent meanwhile were never
/// acknowledged (the broker never got them); when the connection is found dead and made again they go
/// out first, so the broker gets every alert the serial line got.
#[test]
fn a_network_cut_loses_nothing() {
    let dir = scratch("mqtt-cut");
    clip_part(&dir.join("clip.mjpeg"), 0, 250);
    let broker = Broker::start(&dir, "");
    let relay = Relay::new(broker.port);
    let sub = Subscriber::new(broker.port, "test-cut", false);
    let cfg = config(&dir, "clip.mjpeg", "realtime", &format!("port = {}\nkeep_alive_s = 5\n", relay.port));
    let child = spawn_run(&cfg, Stdio::piped(), Stdio::piped());
    sub.wait_for("a first alert", Duration::from_secs(30), |m| m.iter().any(|x| x.topic == "lookout/gate/alert"));
    let cut = lookout::frame::unix_ms_now();
    relay.set(Link::Cut);
    std::thread::sleep(Duration::from_millis(2500));
    let restored = lookout::frame::unix_ms_now();
    relay.set(Link::Refuse);
    relay.drop_all();
    std::thread::sleep(Duration::from_millis(1000));
    relay.set(Link::Forward);
    let out = child.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    let alerts = serial_alerts(&out.stdout);
    let during: Vec<u64> = sentences(&out.stdout)
        .iter()
        .filter(|f| f[0] == "LKALR" && (cut..restored).contains(&f[2].parse::<u64>().unwrap()))
        .map(|f| f[1].parse().unwrap())
        .collect();
    assert!(!during.is_empty(), "no alert while the network was cut: the test proves nothing");
    sub.wait_for("every alert", Duration::from_secs(20), |m| mqtt_alerts(m).len() >= alerts.len());
    assert_eq!(mqtt_alerts(&sub.messages()), alerts, "alerts sent into the cut ({during:?}) lost; log: {log}");
}

/// A "broker" that answers garbage, a CONNACK that refuses, a packet announcing 256 MB, or nothing at
/// all: lookout goes on alerting on the serial line exactly as without MQTT, its memory does not grow
/// with the garbage, and it stops on time at the end.
#[test]
fn a_hostile_broker_does_not_stop_the_alerts() {
    let dir = scratch("mqtt-hostile");
    clip_part(&dir.join("clip.mjpeg"), 0, clip_frames().min(100));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut c) = conn else { continue };
            let _ = match n % 4 {
                0 => c.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7]),
                1 => c.write_all(&[0x20, 0x02, 0x00, 0x05]), // CONNACK: not authorised
                2 => c.write_all(&[0x30, 0xff, 0xff, 0xff, 0x7f]), // PUBLISH of 268 MB
                _ => Ok(()),                                 // silence
            };
            keep.push(c);
        }
    });
    let without = config(&dir, "clip.mjpeg", "fast", "");
    // The same config without [mqtt]: the reference.
    let reference = std::fs::read_to_string(&without).unwrap().replace("[mqtt]\n", "");
    std::fs::write(dir.join("ref.toml"), reference).unwrap();
    let expected = run_to_end(&dir.join("ref.toml"), Duration::from_secs(120));
    assert!(expected.status.success());
    let cfg = config(&dir, "clip.mjpeg", "fast", &format!("port = {port}\n"));
    let out = run_to_end(&cfg, Duration::from_secs(120));
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Heartbeats interleave by time, so the seqs may differ; the alerts may not.
    let values = |o: &std::process::Output| serial_alerts(&o.stdout).into_values().collect::<Vec<_>>();
    assert_eq!(values(&out), values(&expected), "{log}");
    assert!(log.contains("mqtt 127.0.0.1:"), "no MQTT error logged: {log}");
}

/// Bad `[mqtt]` values are config errors with the file, line and field (exit 2).
#[test]
fn bad_mqtt_config_is_refused() {
    let dir = scratch("mqtt-config");
    std::fs::write(dir.join("notpem.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("empty-password"), "\n").unwrap();
    let cases = [
        ("port = 0\n", "mqtt.port"),
        ("port = 70000\n", "mqtt.port"),
        ("topic_prefix = \"a/#\"\n", "mqtt.topic_prefix"),
        ("topic_prefix = \"a//b\"\n", "mqtt.topic_prefix"),
        ("host = \"a b\"\n", "mqtt.host"),
        ("client_id = \"x+y\"\n", "mqtt.client_id"),
        ("outbox = 1\n", "mqtt.outbox"),
        ("keep_alive_s = 0\n", "mqtt.keep_alive_s"),
        ("username = \"u\"\npassword_file = \"missing\"\n", "mqtt.password_file"),
        ("username = \"u\"\npassword_file = \"empty-password\"\n", "mqtt.password_file"),
        ("password_file = \"empty-password\"\n", "mqtt.password_file"),
        ("tls_ca = \"notpem.txt\"\n", "mqtt.tls_ca"),
        ("hots = \"x\"\n", "mqtt"),
    ];
    for (body, field) in cases {
        let p = dir.join("bad.toml");
        std::fs::write(&p, format!("[camera]\nname = \"gate\"\n\n[mqtt]\n{body}")).unwrap();
        let out = lookout(&["check", "--no-devices", "--config", p.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains("bad.toml:5:") || err.contains("bad.toml:6:"), "{body}: no line: {err}");
        assert!(err.contains(field), "{body}: no {field}: {err}");
    }
}

/// TLS: a broker with a certificate of a CA made here; lookout with `tls_ca` delivers, and without the
/// right CA it does not (and says why).
#[test]
fn tls_with_the_brokers_ca() {
    let dir = scratch("mqtt-tls");
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test ca",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=other ca",
    ]);
    // The TLS listener for lookout, and a plain one for the test's subscriber.
    let (d, plain) = (dir.display(), free_port());
    let mut broker = Broker::start(
        &dir,
        &format!("cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nlistener {plain} 127.0.0.1\n"),
    );
    clip_part(&dir.join("clip.mjpeg"), 0, clip_frames().min(60));
    let sub = Subscriber::new(plain, "test-tls", false);
    let cfg = config(&dir, "clip.mjpeg", "fast", &format!("port = {}\ntls_ca = \"ca.pem\"\n", broker.port));
    let out = run_to_end(&cfg, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alerts = serial_alerts(&out.stdout);
    sub.wait_for("offline over TLS", Duration::from_secs(10), |m| {
        availability(m).last().map(String::as_str) == Some("offline")
    });
    assert_eq!(mqtt_alerts(&sub.messages()), alerts);
    // The wrong CA: the broker's certificate is refused, nothing is published, the run still ends well.
    let before = sub.messages().len();
    let cfg = config(&dir, "clip.mjpeg", "fast", &format!("port = {}\ntls_ca = \"other.pem\"\n", broker.port));
    let out = run_to_end(&cfg, Duration::from_secs(120));
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sub.messages().len(), before);
    broker.down();
}

/// `replay` decides, and sends nothing: no connection to the configured broker, no journal written.
#[test]
fn replay_tells_the_broker_nothing() {
    let dir = scratch("mqtt-replay");
    clip_part(&dir.join("clip.mjpeg"), 15, 15 + clip_frames().min(20));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = config(&dir, "clip.mjpeg", "fast", &format!("port = {port}\n[journal]\npath = \"journal\"\n"));
    let out = lookout(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        dir.join("clip.mjpeg").to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"alerts\":[{"), "no alert decided: {}", text(&out.stdout));
    assert!(listener.accept().is_err(), "replay connected to the broker");
    assert!(!dir.join("journal").exists(), "replay wrote a journal");
}

/// A lookout that dies (`kill -9`: no clean stop, no `offline` of its own) is marked `offline` by its
/// last will, retained, as soon as the broker sees the connection drop.
#[test]
fn a_killed_lookout_is_offline_by_its_last_will() {
    let dir = scratch("mqtt-will");
    clip_part(&dir.join("clip.mjpeg"), 0, clip_frames().min(50));
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::new(broker.port, "test-will", false);
    let cfg = config(&dir, "clip.mjpeg", "realtime", &format!("port = {}\n", broker.port));
    edit(&cfg, "pace = ", "loop = true\npace = ");
    let mut child = spawn_run(&cfg, Stdio::null(), Stdio::null());
    sub.wait_for("online", Duration::from_secs(30), |m| availability(m).last().map(String::as_str) == Some("online"));
    child.kill().unwrap();
    child.wait().unwrap();
    sub.wait_for("offline by the will", Duration::from_secs(10), |m| {
        availability(m).last().map(String::as_str) == Some("offline")
    });
    drop(sub);
    let late = Subscriber::new(broker.port, "test-will-late", false);
    late.wait_for("the retained offline", Duration::from_secs(5), |m| {
        m.iter().any(|x| x.topic == "lookout/gate/availability" && x.retain && x.payload == "offline")
    });
}

/// A broker that cannot be reached yet: the outbox keeps the first `outbox` messages, drops the rest and
/// counts them; when the broker comes, the kept ones go out first and the run goes on. What the broker
/// lacks of the serial line's alerts and clears is exactly what was counted as dropped.
#[test]
fn a_full_outbox_drops_the_newest_and_counts_them() {
    let dir = scratch("mqtt-outbox");
    clip_part(&dir.join("clip.mjpeg"), 0, clip_frames());
    // The broker is up, the subscriber on it; the way to it is closed until the outbox is full.
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::new(broker.port, "test-outbox", false);
    let relay = Relay::new(broker.port);
    relay.set(Link::Refuse);
    let cfg = config(&dir, "clip.mjpeg", "fast", &format!("port = {}\noutbox = 16\n", relay.port));
    edit(&cfg, "pace = ", "loop = true\npace = ");
    edit(&cfg, "interval_ms = 300", "interval_ms = 0");
    let mut child = spawn_run(&cfg, Stdio::piped(), Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut BufReader::new(stdout), &mut v).unwrap();
        v
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // Until the outbox is full.
    let end = Instant::now() + Duration::from_secs(120);
    while !log.contains("mqtt: a message dropped") {
        assert!(Instant::now() < end, "the outbox never filled: {log}");
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "lookout ended: {log}");
        log.push_str(&line);
    }
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    relay.set(Link::Forward);
    sub.wait_for("the kept messages and newer ones", Duration::from_secs(60), |m| {
        mqtt_alerts(m).len() + mqtt_clears(m).len() > 16
    });
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let stdout = out.join().unwrap();
    log.push_str(&rest.join().unwrap());
    sub.wait_for("offline", Duration::from_secs(10), |m| availability(m).last().map(String::as_str) == Some("offline"));
    let msgs = sub.messages();
    let (alerts, clears) = (serial_alerts(&stdout), serial_clears(&stdout));
    let (got_a, got_c) = (mqtt_alerts(&msgs), mqtt_clears(&msgs));
    for (seq, a) in &got_a {
        assert_eq!(alerts.get(seq), Some(a), "alert {seq} on MQTT is not the serial line's");
    }
    let missing = alerts.keys().filter(|s| !got_a.contains_key(s)).count()
        + clears.keys().filter(|s| !got_c.contains_key(s)).count();
    // The 16 oldest were kept: the first 16 alerts and clears of the serial line all arrived.
    let mut first: Vec<u64> = alerts.keys().chain(clears.keys()).copied().collect();
    first.sort();
    for seq in first.iter().take(16) {
        assert!(got_a.contains_key(seq) || got_c.contains_key(seq), "kept message {seq} lost: {log}");
    }
    let summary =
        log.lines().find(|l| l.contains("mqtt:") && l.contains("messages queued")).unwrap_or_else(|| panic!("{log}"));
    let dropped: usize = summary.split(" dropped").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(missing > 0, "nothing was dropped: the test proves nothing");
    assert_eq!(missing, dropped, "{summary}");
}
