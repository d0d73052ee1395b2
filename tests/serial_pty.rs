//! The serial sink on a real tty: a pseudo-terminal pair, the sink on the slave side, the test reading
//! the master side as the device on the other end of the cable would.

mod common;
use common::*;

use std::io::Read;

fn termios_of(path: &str) -> libc::termios {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd and a zeroed plain-data struct for tcgetattr to fill.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(f.as_raw_fd(), &mut t), 0);
        t
    }
}

#[test]
fn sink_sets_raw_8n1_at_the_baud_rate_and_writes_exact_sentences() {
    let (mut master, _slave, path) = pty();
    use lookout::output::serial::{Link, Port};
    let mut link = Link::open(Port::Tty { path: path.clone().into(), baud: 9600 }).unwrap();
    let t = termios_of(&path);
    // SAFETY: reading speeds from an initialized termios.
    let (ispeed, ospeed) = unsafe { (libc::cfgetispeed(&t), libc::cfgetospeed(&t)) };
    assert_eq!((ispeed, ospeed), (libc::B9600, libc::B9600));
    assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8);
    assert_eq!(t.c_cflag & (libc::PARENB | libc::CSTOPB | libc::CRTSCTS), 0, "8N1, no hardware flow control");
    assert_eq!(t.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0, "raw input");
    assert_eq!(t.c_oflag & libc::OPOST, 0, "no output processing: \\r\\n must go out as is");

    let alert = lookout::output::AlertData {
        unix_ms: 1_764_500_000_000,
        rule: lookout::output::sentence::field("lawn"),
        track: 9,
        class: lookout::output::sentence::field("person"),
        score: 0.914,
        bbox: [1.0, 2.0, 300.4, 200.6],
    };
    let mut s = lookout::output::Sentence::new();
    lookout::output::sentence::alert_sentence(&mut s, 3, &alert, "gate").unwrap();
    assert!(link.queue(&s) && link.queue(&s));
    let mut input = [0u8; 64];
    while link.pending() > 0 {
        let (ev, _) = link.pump(std::time::Instant::now(), &mut input);
        assert_eq!(ev, None);
    }
    let mut got = vec![0u8; 2 * s.len()];
    master.read_exact(&mut got).unwrap();
    let line = "$LKALR,3,1764500000000,gate,lawn,9,person,0.91,1,2,300,201*";
    let one = std::str::from_utf8(&got[..s.len()]).unwrap();
    assert!(one.starts_with(line) && one.ends_with("\r\n"), "{one:?}");
    assert!(lookout::output::verify(one).is_some());
    assert_eq!(&got[..s.len()], &got[s.len()..]);
    assert_eq!((link.stats.queued, link.stats.dropped), (2, 0));
}

/// `lookout run` with `serial.port` set: the alerts arrive on the tty, not on stdout.
#[test]
fn run_sends_alerts_to_the_configured_tty() {
    use lookout::capture::mjpeg::split_next;
    let (mut master, _slave, path) = pty();
    let dir = scratch("pty-run");
    let bytes = std::fs::read(data("bikes.mjpeg")).unwrap();
    let mut r = std::io::Cursor::new(&bytes[..]);
    let (mut jpeg, mut clip) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        split_next(&mut r, &mut jpeg).unwrap();
        clip.extend_from_slice(&jpeg);
    }
    std::fs::write(dir.join("clip.mjpeg"), clip).unwrap();
    std::fs::write(
        dir.join("c.toml"),
        format!("[camera]\nname = \"shop\"\n[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\n[serial]\nport = \"{path}\"\nbaud = 115200\n"),
    )
    .unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        // The first 40 frames give three alerts (a car at 17; the cyclist and the car beside him at 31)
        // and, at the end of the clip, their three clears; read until the last is in. Heartbeats (every
        // 10 s) come between them where the run is slow (under qemu).
        while String::from_utf8_lossy(&buf).matches("$LKCLR").count() < 3 || buf.last() != Some(&b'\n') {
            let n = master.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(buf).unwrap()
    });
    let out = lookout(&["run", "--config", dir.join("c.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "alerts must not go to stdout when a port is set");
    let got = reader.join().unwrap();
    let (mut alerts, mut clears) = (Vec::new(), Vec::new());
    for (i, l) in got.split_inclusive('\n').enumerate() {
        let body = lookout::output::verify(l).unwrap_or_else(|| panic!("bad checksum: {l:?}"));
        let f: Vec<&str> = body.split(',').collect();
        assert_eq!((f[1], f[3]), ((i + 1).to_string().as_str(), "shop"), "one sequence for all sentences: {l:?}");
        match f[0] {
            "LKALR" => alerts.push((f[5].to_string(), f[6].to_string())),
            "LKCLR" => clears.push(f[5].to_string()),
            "LKHBT" => assert_eq!(f.len(), 7, "{l:?}"),
            _ => panic!("unexpected sentence {l:?}"),
        }
    }
    let classes: Vec<&str> = alerts.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(classes, ["car", "person", "car"], "{got:?}");
    let tracks: Vec<&str> = alerts.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(clears, tracks, "each alert cleared at the end of the clip: {got:?}");
}
