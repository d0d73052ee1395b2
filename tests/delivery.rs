//! Delivery: the output stage against a controller written in the test, on a real pty pair, and the
//! real binary's stdout.

mod common;
use common::*;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout::output::gpio::{Binding, Lines, Mode, OutputLine};
use lookout::output::serial::{Link, Port};
use lookout::output::{AlertData, Event, Output, Settings};

fn settings(ack: bool) -> Settings {
    Settings {
        camera: "gate".into(),
        ack,
        resend: Duration::from_millis(300),
        max_sends: 30,
        journal: None,
        journal_records: 64,
        #[cfg(feature = "mqtt")]
        mqtt: None,
    }
}

fn alert(track: u32) -> Event {
    Event::Alert(AlertData {
        unix_ms: lookout::frame::unix_ms_now(),
        rule: lookout::output::sentence::field("door"),
        track,
        class: lookout::output::sentence::field("person"),
        score: 0.9,
        bbox: [1.0, 2.0, 3.0, 4.0],
    })
}

/// A controller that stops reading: its pty fills, then our buffer; sentences are dropped and counted,
/// and meanwhile every alarm pulse is 200 ms ± 10 ms long and `send` never blocks, while the producer
/// keeps a core busy as inference does.
#[test]
fn a_stalled_controller_delays_neither_the_pulse_nor_the_producer() {
    let (mut master, _slave, path) = pty();
    let pin = Timed::default();
    let link = Link::open(Port::Tty { path: path.into(), baud: 115_200 }).unwrap();
    let lines = Lines {
        outputs: vec![OutputLine::new(
            pin.clone(),
            false,
            Mode::Pulse(Duration::from_millis(200)),
            Binding::Rules(vec![]),
        )],
    };
    let arming = lookout::shutdown::Arming::new(true);
    let output = Output::spawn(settings(false), link, lines, Box::new(arming)).unwrap();
    // 4000 STATUS commands, never reading the answers (about 250 kB of them).
    let flood: String = (0..4000).map(|_| command("LKCMD,STATUS")).collect();
    let writer = std::thread::spawn(move || {
        let _ = master.write_all(flood.as_bytes());
        master // kept open, never read
    });
    for track in 0..12 {
        output.send(alert(track));
        // Busy, as inference is, for 300 ms.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = output.stats();
    let dropped = stats.link_dropped.load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    output.shutdown(Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(1), "shutdown took {:?}", t.elapsed());
    let _master = writer.join().unwrap();
    assert!(dropped > 0, "the stalled port must have made the link drop sentences");
    let edges = pin.0.lock().unwrap().clone();
    // Off at start, then on/off per alert, all off at the end.
    let pulses: Vec<Duration> = edges.windows(2).filter(|w| w[0].1 && !w[1].1).map(|w| w[1].0 - w[0].0).collect();
    assert_eq!(pulses.len(), 12, "{edges:?}");
    // The GPIO thread times a pulse from just before it writes the line, and the recording pin stamps
    // each edge inside the write: under qemu-arm one write took 0.2 ms longer than the other (a pulse of
    // 199.78 ms), so the lower bound allows 1 ms.
    for p in &pulses {
        assert!(*p >= Duration::from_millis(199) && *p <= Duration::from_millis(210), "pulse {p:?}: {pulses:?}");
    }
}

fn config(dir: &std::path::Path, port: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(&p, format!("[camera]\nname = \"gate\"\n[serial]\nport = \"{port}\"\n{extra}")).unwrap();
    p
}

/// The running binary and a thread collecting its stderr (so its log can never fill the pipe).
struct Run {
    child: std::process::Child,
    stderr: std::thread::JoinHandle<()>,
    log: Arc<Mutex<String>>,
}

impl Run {
    /// Waits until the log contains `what` (the pipeline runs once it says "ring 4 slots").
    fn wait_for_log(&self, what: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while !self.log.lock().unwrap().contains(what) {
            assert!(Instant::now() < end, "no {what:?} in the log: {}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(cfg: &std::path::Path) -> Run {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut e = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let l = log.clone();
    let stderr = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut e, &mut buf) {
            if n == 0 {
                break;
            }
            l.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Run { child, stderr, log }
}

/// Waits for the child to exit; returns its code, its stderr and how long the wait took.
fn wait(mut run: Run) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let status = run.child.wait().unwrap();
    let took = t.elapsed();
    run.stderr.join().unwrap();
    let log = run.log.lock().unwrap().clone();
    (status.code(), log, took)
}

fn sigterm(run: &Run) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) }, 0);
}

/// The real binary with a controller that floods commands and reads nothing for 10 s: inference goes
/// on (frames analysed keep counting), a SIGTERM still ends it within 2 s, and what the controller then
/// reads are whole sentences with good checksums.
#[test]
fn a_controller_that_stops_reading_for_10_s_stops_nothing() {
    let dir = scratch("stalled");
    let (mut master, _slave, path) = pty();
    let cfg = config(&dir, &path, "[source]\nkind = \"builtin\"\nloop = true\n[heartbeat]\ninterval_ms = 100\n");
    let child = spawn(&cfg);
    let flood: String = (0..4000).map(|_| command("LKCMD,STATUS")).collect();
    master.write_all(flood.as_bytes()).unwrap();
    child.wait_for_log("ring 4 slots", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(10));
    sigterm(&child);
    let (code, err, took) = wait(child);
    assert_eq!(code, Some(0), "{err}");
    let stop_ms = std::env::var("LOOKOUT_TEST_STOP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    assert!(took <= Duration::from_millis(stop_ms), "stop took {took:?}");
    let done = err.lines().find(|l| l.contains("done:")).unwrap_or_else(|| panic!("{err}"));
    let analysed: u64 = done.split(" analysed").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let not_sent: u64 = done.split(" sentences not sent").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(analysed >= 2, "inference stopped: {done}");
    assert!(not_sent > 0, "{done}");
    // What is in the pty now: whole sentences only.
    let mut lines = Vec::new();
    read_lines_until(&mut master, Duration::from_secs(5), &mut lines, &|l| l.len() >= 20);
    for l in &lines {
        assert!(lookout::output::verify(l).is_some(), "broken sentence {l:?}");
    }
}

/// Reads whatever comes for `d` (whole lines).
fn read_for(master: &mut std::fs::File, d: Duration, lines: &mut Vec<String>) {
    read_lines(master, d, lines, &|_| false);
}

/// With `ack = true`, an alert the controller does not acknowledge is re-sent, the same bytes, every
/// `resend_ms`, and no more once it is acknowledged; acknowledged alerts are never re-sent.
#[test]
fn unacknowledged_alerts_are_resent_until_acked() {
    let dir = scratch("ack");
    clip_part(&dir.join("clip.mjpeg"), 15, 35);
    let (mut master, _slave, path) = pty();
    let cfg = config(
        &dir,
        &path,
        "ack = true\nresend_ms = 300\n[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\nloop = true\n[heartbeat]\ninterval_ms = 0\n",
    );
    let child = spawn(&cfg);
    let seq_of = |l: &str| l.split(',').nth(1).unwrap().to_string();
    let mut lines = Vec::new();
    read_lines_until(&mut master, Duration::from_secs(120), &mut lines, &|l| l.iter().any(|x| x.starts_with("$LKALR")));
    let first = lines.iter().find(|x| x.starts_with("$LKALR")).unwrap().clone();
    // Ack every other alert as it comes; leave the first unacknowledged for 1.2 s (four periods).
    let mut acked = std::collections::BTreeSet::new();
    let ack_new = |lines: &[String], acked: &mut std::collections::BTreeSet<String>, master: &mut std::fs::File| {
        for l in lines.iter().filter(|l| l.starts_with("$LKALR") && **l != first) {
            if acked.insert(seq_of(l)) {
                master.write_all(command(&format!("LKCMD,ACK,{}", seq_of(l))).as_bytes()).unwrap();
            }
        }
    };
    for _ in 0..12 {
        read_for(&mut master, Duration::from_millis(100), &mut lines);
        ack_new(&lines, &mut acked, &mut master);
    }
    let copies = lines.iter().filter(|l| **l == first).count();
    assert!(copies >= 3, "the unacknowledged alert came {copies} times in 1.2 s: {lines:?}");
    master.write_all(command(&format!("LKCMD,ACK,{}", seq_of(&first))).as_bytes()).unwrap();
    let mark = lines.len();
    let want = format!(",ACK,{}*", seq_of(&first));
    read_lines_until(&mut master, Duration::from_secs(60), &mut lines, &|l| {
        l[mark..].iter().any(|x| x.starts_with("$LKACK") && x.contains(&want))
    });
    let answered = lines.len();
    for _ in 0..15 {
        read_for(&mut master, Duration::from_millis(100), &mut lines);
        ack_new(&lines, &mut acked, &mut master);
    }
    sigterm(&child);
    let (code, err, _) = wait(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(!lines[answered..].contains(&first), "re-sent after its ACK: {lines:?}");
    for l in &lines {
        assert!(lookout::output::verify(l).is_some(), "{l:?}");
    }
    for s in &acked {
        let n = lines.iter().filter(|l| l.starts_with("$LKALR") && seq_of(l) == *s).count();
        assert!(n <= 2, "alert {s} sent {n} times although acked at once: {lines:?}");
    }
}

/// Malformed input of every kind is answered with a NAK or dropped, and the device keeps alerting and
/// answering.
#[test]
fn malformed_input_is_nacked_or_dropped_and_alerts_go_on() {
    let dir = scratch("malformed");
    clip_part(&dir.join("clip.mjpeg"), 10, 35);
    let (mut master, _slave, path) = pty();
    let cfg = config(
        &dir,
        &path,
        "[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\nloop = true\n[heartbeat]\ninterval_ms = 0\n",
    );
    let child = spawn(&cfg);
    let mut bad = Vec::new();
    bad.extend(b"$LKCMD,PING*00\r\n"); // bad checksum
    bad.extend(command("LKCMD,FIRE").as_bytes()); // unknown command
    bad.extend(command("LKCMD,ACK,x").as_bytes()); // bad argument
    bad.extend(b"$LKCMD,"); // a line over 82 bytes
    bad.extend(std::iter::repeat_n(b'A', 300));
    bad.extend(b"\r\n");
    bad.extend((0..=255u8).cycle().take(5000)); // binary noise
    bad.extend(b"\n");
    bad.extend(command("LKALR,1,2,x,y,3,z,0.5,1,2,3,4").as_bytes()); // an echo of our own sentences
    bad.extend(command("LKCMD,PING").as_bytes());
    // And the good commands between them still work.
    bad.extend(command("LKCMD,STATUS").as_bytes());
    bad.extend(command("LKCMD,RESET").as_bytes());
    master.write_all(&bad).unwrap();
    let mut lines = Vec::new();
    read_lines_until(&mut master, Duration::from_secs(120), &mut lines, &|l| {
        l.iter().any(|x| x.contains(",PING*"))
            && l.iter().any(|x| x.contains(",RESET*"))
            && l.iter().any(|x| x.starts_with("$LKSTA"))
            && l.iter().any(|x| x.starts_with("$LKALR"))
    });
    sigterm(&child);
    let (code, err, _) = wait(child);
    assert_eq!(code, Some(0), "{err}");
    let naks: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("$LKNAK"))
        .map(|l| l.rsplit_once('*').unwrap().0.rsplit(',').next().unwrap())
        .collect();
    for want in ["checksum", "unknown_command", "bad_argument", "too_long"] {
        assert!(naks.contains(&want), "no NAK {want}: {lines:?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("$LKACK") && l.contains(",PING*")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("$LKACK") && l.contains(",RESET*")), "{lines:?}");
    // STATUS: armed, the camera (a file: never lost), nothing unacknowledged (ack is off), nothing dropped.
    let sta = lines.iter().find(|l| l.starts_with("$LKSTA")).unwrap();
    let f: Vec<&str> = sta.rsplit_once('*').unwrap().0.split(',').collect();
    assert_eq!(&f[4..8], ["armed", "camera_ok", "0", "0"], "{sta}");
    for l in &lines {
        assert!(lookout::output::verify(l).is_some(), "{l:?}");
    }
}

/// `lookout run | head -1`: once the reader is gone, lookout stops with exit 1 and says why, instead of
/// carrying on and reporting success.
#[test]
fn a_closed_stdout_is_a_failure_not_a_success() {
    use std::io::BufRead;
    let dir = scratch("epipe");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "[source]\nkind = \"builtin\"\nloop = true\n[heartbeat]\ninterval_ms = 100\n").unwrap();
    let mut child = spawn(&cfg);
    let mut out = std::io::BufReader::new(child.child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(lookout::output::verify(&first).is_some(), "{first:?}");
    drop(out);
    let (code, err, _) = wait(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("stdout") && err.contains("could not be delivered"), "{err}");
}

/// `kill -9` in the middle of a run with `ack = true` and nobody acknowledging, then a restart: the
/// unacknowledged alerts come first, the same bytes in the same order, and the sequence goes on after
/// the last number used: every seq from 1 up appears, none stands for two different sentences.
#[test]
fn after_a_kill_9_a_restart_resends_the_unacked_alerts_and_continues_the_sequence() {
    let dir = scratch("kill9");
    clip_part(&dir.join("clip.mjpeg"), 15, 35);
    let (mut master, _slave, path) = pty();
    let extra = format!(
        "ack = true\nresend_ms = 60000\n[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\nloop = true\n[heartbeat]\ninterval_ms = 0\n[journal]\npath = \"{}\"\n",
        dir.join("journal").display()
    );
    let cfg = config(&dir, &path, &extra);
    let seq_of = |l: &str| -> u64 { l.split(',').nth(1).unwrap().parse().unwrap() };
    let alerts = |l: &[String]| l.iter().filter(|x| x.starts_with("$LKALR")).count();
    let first = spawn(&cfg);
    let mut before = Vec::new();
    read_lines_until(&mut master, Duration::from_secs(240), &mut before, &|l| alerts(l) >= 3);
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) }, 0);
    let (code, _, _) = wait(first);
    assert_eq!(code, None, "killed");
    read_for(&mut master, Duration::from_millis(300), &mut before);
    let sent_before: Vec<String> = before.iter().filter(|l| l.starts_with("$LKALR")).cloned().collect();

    let second = spawn(&cfg);
    let mut after = Vec::new();
    let max_before = before.iter().map(|l| seq_of(l)).max().unwrap();
    read_lines_until(&mut master, Duration::from_secs(240), &mut after, &|l| {
        l.len() > sent_before.len() && l.iter().any(|x| seq_of(x) > max_before + 1)
    });
    sigterm(&second);
    let (code, err, _) = wait(second);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("journal") && err.contains("unacknowledged"), "{err}");
    // First the alerts the first run left unacknowledged, as they were.
    assert_eq!(after[..sent_before.len()], sent_before[..], "{after:?}");
    // Every seq from 1 to the last one appears; a seq seen twice is the same sentence (a re-send).
    let mut by_seq = std::collections::BTreeMap::new();
    for l in before.iter().chain(&after) {
        assert!(lookout::output::verify(l).is_some(), "{l:?}");
        let prev = by_seq.insert(seq_of(l), l.clone());
        assert!(prev.as_ref().is_none_or(|p| p == l), "seq {} reused: {prev:?} and {l:?}", seq_of(l));
    }
    let last = *by_seq.keys().last().unwrap();
    let missing: Vec<u64> = (1..=last).filter(|s| !by_seq.contains_key(s)).collect();
    assert!(missing.is_empty(), "gaps {missing:?}: before {before:?} after {after:?}");
}

/// The port goes away mid-run (the controller's end of the pty closes: EIO, as an unplugged USB
/// adapter) and comes back under the same name (a `/dev/serial/by-id`-style link, re-pointed): lookout
/// reopens it, and with `ack = true` no alert is lost: every alert it logged reaches the controller, and
/// what was queued meanwhile comes in order.
#[test]
fn a_port_that_goes_away_and_comes_back_loses_no_alert() {
    let dir = scratch("replug");
    clip_part(&dir.join("clip.mjpeg"), 15, 35);
    let (mut master, slave, path) = pty();
    let link = dir.join("port");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let cfg = config(
        &dir,
        link.to_str().unwrap(),
        // Tracks end 100 ms after they are last seen, so every pass of the looping clip alerts anew.
        "ack = true\nresend_ms = 300\n[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\nloop = true\n[heartbeat]\ninterval_ms = 0\n[track]\nmax_coast_ms = 100\nstationary_coast_ms = 100\n",
    );
    let seq_of = |l: &str| -> u64 { l.split(',').nth(1).unwrap().parse().unwrap() };
    let run = spawn(&cfg);
    let mut first = Vec::new();
    read_lines_until(&mut master, Duration::from_secs(240), &mut first, &|l| {
        l.iter().filter(|x| x.starts_with("$LKALR")).count() >= 2
    });
    // Unplugged: the controller's end closes; nothing is acknowledged.
    drop(master);
    drop(slave);
    run.wait_for_log("reopening with backoff", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    // Plugged in again, under the same name.
    let (mut master, _slave, path2) = pty();
    let tmp = dir.join("port.new");
    std::os::unix::fs::symlink(&path2, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    let mut second = Vec::new();
    let mut acked = std::collections::BTreeSet::new();
    let seen_first: std::collections::BTreeSet<u64> =
        first.iter().filter(|l| l.starts_with("$LKALR")).map(|l| seq_of(l)).collect();
    let max_first = first.iter().map(|l| seq_of(l)).max().unwrap();
    let t = Instant::now();
    loop {
        read_for(&mut master, Duration::from_millis(200), &mut second);
        for l in second.iter().filter(|l| l.starts_with("$LKALR")) {
            if acked.insert(seq_of(l)) {
                master.write_all(command(&format!("LKCMD,ACK,{}", seq_of(l))).as_bytes()).unwrap();
            }
        }
        let new_alerts = acked.iter().filter(|s| **s > max_first).count();
        if new_alerts >= 2 || t.elapsed() > Duration::from_secs(240) {
            break;
        }
    }
    sigterm(&run);
    // Until it has exited (an alert of the frame in flight goes out during the stop), then what is left.
    let mut run = run;
    let t = Instant::now();
    while run.child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(30) {
        read_for(&mut master, Duration::from_millis(100), &mut second);
    }
    read_for(&mut master, Duration::from_millis(300), &mut second);
    let (code, err, _) = wait(run);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("reopened"), "{err}");
    for l in first.iter().chain(&second) {
        assert!(lookout::output::verify(l).is_some(), "broken sentence {l:?}");
    }
    // Every alert lookout decided reached the controller, on one port or the other.
    let decided = err.lines().filter(|l| l.contains("alert: rule")).count();
    let mut got: std::collections::BTreeSet<u64> = seen_first.clone();
    got.extend(second.iter().filter(|l| l.starts_with("$LKALR")).map(|l| seq_of(l)));
    assert_eq!(got.len(), decided, "alerts decided {decided}, received {got:?}\nfirst {first:?}\nsecond {second:?}");
    // On the new port, first sendings come in order (re-sends of older ones may come between).
    let fresh: Vec<u64> = second
        .iter()
        .filter(|l| !seen_first.contains(&seq_of(l)))
        .map(|l| seq_of(l))
        .scan(0u64, |max, s| {
            let fresh = s > *max;
            *max = (*max).max(s);
            Some((s, fresh))
        })
        .filter(|(_, fresh)| !*fresh)
        .map(|(s, _)| s)
        .collect();
    let resent: std::collections::BTreeSet<u64> = second.iter().map(|l| seq_of(l)).collect();
    assert!(fresh.iter().all(|s| resent.contains(s)), "out of order: {fresh:?} in {second:?}");
}

/// The journal where it cannot be written: at start (a path that cannot be created) lookout runs
/// without one; on a full disk (a small tmpfs, filled up after the journal was made) every journal write
/// fails, is logged and counted. Either way every alert goes out, the same as with a working journal.
#[test]
fn a_journal_that_cannot_be_written_loses_no_alert() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root (the test command runs as root)");
        return;
    }
    let dir = scratch("journal-full");
    // Three runs: under emulation (2 s a frame) only the frames around the first car's alert.
    let frames = if std::env::var_os("LOOKOUT_TEST_FRAMES").is_some() { 12 } else { 60 };
    clip_part(&dir.join("clip.mjpeg"), 15, 15 + frames);
    let run = |journal: &std::path::Path| {
        let cfg = dir.join("c.toml");
        let body = format!(
            "[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\n[heartbeat]\ninterval_ms = 0\n[journal]\npath = \"{}\"\n",
            journal.display()
        );
        std::fs::write(&cfg, body).unwrap();
        let out = lookout(&["run", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let alerts: Vec<Vec<String>> = sentences(&out.stdout).into_iter().filter(|f| f[0] == "LKALR").collect();
        (alerts, text(&out.stderr))
    };
    let (expected, _) = run(&dir.join("journal"));
    assert!(!expected.is_empty(), "no alerts to compare");
    // Cannot be created.
    // The same sentences but for their time.
    let strip = |a: &[Vec<String>]| a.iter().map(|f| [&f[..2], &f[3..]].concat()).collect::<Vec<_>>();
    let (alerts, log) = run(std::path::Path::new("/proc/lookout/journal"));
    assert_eq!(strip(&alerts), strip(&expected), "{log}");
    assert!(log.contains("running without one"), "{log}");
    // A full disk.
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _mount = Mount(mnt.clone());
    let journal = mnt.join("journal");
    drop(lookout::output::journal::Journal::open(&journal, 4096).unwrap());
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    let (alerts, log) = run(&journal);
    // The sequence starts at 1 (the journal was new), and goes on with no gap though nothing of it is kept.
    assert_eq!(strip(&alerts), strip(&expected), "{log}");
    assert!(log.contains("No space left on device") && log.contains("sentences still go out"), "{log}");
}
