//! End-to-end: the real binary on the shipped clip and models.

mod common;
use common::*;

use lookout::output::verify;

/// `lookout run` with no config: the built-in model (FastestDet fp32, lean graph) on the built-in clip,
/// one implicit rule `default`. The sentences must be exactly the reviewed ones
/// (tests/data/alerts-default.txt, each line prefixed with its frame): one alert per tracked object, not
/// one per cooldown: the car entering top right (frame 17), the cyclist in traffic and the car beside him
/// (31), the cyclist at the shop door once (77), the cars left (48) and the van (82), the cars behind the
/// railing (138, 141), the pedestrians far away (146, 170), the person walking past (188, 201). Detector
/// false positives that hold 2 frames alert too (the confirmation is 2 consecutive frames): blurred car
/// lights and a dark car seen as persons (51, 59, 61, 72), a parked bicycle as a person (204); the int8
/// model, the default before, saw 13 objects here with other mistakes. Each alert's `$LKCLR` comes 3 s
/// (75 frames) after its track was last seen, or at the end of the clip. Valid checksums, one increasing
/// sequence, wall-clock timestamps taken during the run.
#[test]
fn default_run_prints_the_exact_alert_sequence() {
    let n = clip_frames();
    let frames = n.to_string();
    let args: Vec<&str> = if n < 250 { vec!["run", "--frames", &frames] } else { vec![] };
    let t0 = lookout::frame::unix_ms_now();
    let out = lookout(&args);
    let t1 = lookout::frame::unix_ms_now();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut got = Vec::new();
    for (i, line) in stdout.split_inclusive('\n').enumerate() {
        let body = verify(line).unwrap_or_else(|| panic!("bad sentence or checksum: {line:?}"));
        let fields: Vec<&str> = body.split(',').collect();
        assert_eq!(fields[1], (i + 1).to_string(), "one sequence for every sentence, counting up from 1");
        match fields[0] {
            // A heartbeat (every 10 s; how many depends on this machine's speed).
            "LKHBT" => {
                assert_eq!((fields.len(), fields[3]), (7, "cam0"), "{line:?}");
                continue;
            }
            "LKALR" => assert_eq!(fields.len(), 12, "{line:?}"),
            "LKCLR" => assert_eq!(fields.len(), 6, "{line:?}"),
            _ => panic!("unexpected sentence {line:?}"),
        }
        let ts: u64 = fields[2].parse().unwrap();
        assert!((t0..=t1).contains(&ts), "timestamp {ts} outside the run [{t0}, {t1}]");
        got.push(format!("${},*,{}", fields[0], fields[3..].join(",")));
    }
    let want = expected_sentences(n);
    assert_eq!(got, want);
    let stderr = text(&out.stderr);
    let alerts = want.iter().filter(|s| s.starts_with("$LKALR")).count();
    let summary = format!(
        "{n} frames captured, {n} analysed, 0 dropped, 0 corrupt, {alerts} alerts, {} clears",
        want.len() - alerts
    );
    assert!(stderr.contains(&summary), "{stderr}");
}

/// The reviewed sentences of the first `n` frames: those decided before frame `n`, then, for the alerts
/// whose clear comes later, the clear the end of the stream gives (in track order).
fn expected_sentences(n: usize) -> Vec<String> {
    let lines: Vec<(usize, String)> = std::fs::read_to_string(data("alerts-default.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(f, s)| (f.parse().unwrap(), s.to_string()))
        .collect();
    let mut want: Vec<String> = lines.iter().filter(|(f, _)| *f < n).map(|(_, s)| s.clone()).collect();
    if n < 250 {
        let track = |s: &str| s.split(',').nth(4).unwrap().parse::<u32>().unwrap();
        let mut open: Vec<u32> = want.iter().filter(|s| s.starts_with("$LKALR")).map(|s| track(s)).collect();
        open.retain(|t| !want.iter().any(|s| s.starts_with("$LKCLR") && track(s) == *t));
        open.sort();
        want.extend(open.iter().map(|t| format!("$LKCLR,*,cam0,default,{t}")));
    }
    want
}

#[test]
fn check_refuses_the_bad_quantization_by_its_self_test() {
    let out = lookout(&["check", "--model", "models/ultraface-rfb320.int8-softmax-qdq.bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("failed its self-test") && err.contains("output scores"), "{err}");
}

#[test]
fn check_accepts_every_shipped_model() {
    for entry in std::fs::read_dir(root().join("models")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".toml") || name.contains(".bad.") {
            continue;
        }
        let out = lookout(&["check", "--model", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("passed its self-test"), "{name}");
    }
}

#[test]
fn a_modified_model_file_is_refused_by_its_sha256() {
    let dir = scratch("tampered");
    for f in ["fastestdet-int8.toml", "fastestdet.int8.onnx"] {
        std::fs::copy(root().join("models").join(f), dir.join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.join("selftest")).unwrap();
    let mut model = std::fs::read(dir.join("fastestdet.int8.onnx")).unwrap();
    let n = model.len();
    model[n - 100] ^= 0x01;
    std::fs::write(dir.join("fastestdet.int8.onnx"), model).unwrap();
    let out = lookout(&["check", "--model", dir.join("fastestdet-int8.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("sha256 mismatch") && err.contains("refusing a modified model"), "{err}");
}

#[test]
fn config_errors_name_file_line_and_field_and_exit_2() {
    let dir = scratch("badconfig");
    let cases = [
        (
            "unknown.toml",
            "[camera]\nname = \"gate\"\n[rules]\nconfirm_frame = 3\n",
            ":4:",
            "unknown field `confirm_frame`",
        ),
        ("baud.toml", "[serial]\nport = \"/dev/ttyS0\"\nbaud = 1234\n", ":3:", "serial.baud"),
        ("label.toml", "[rules]\nclasses = [\"unicorn\"]\n", ":2:", "rules.classes: \"unicorn\" is not a label"),
    ];
    for (name, body, line, what) in cases {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        for cmd in ["check", "run"] {
            let out = lookout(&[cmd, "--config", p.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}");
            let err = text(&out.stderr);
            assert!(err.contains("config error"), "{err}");
            assert!(err.contains(what), "{cmd} {name}: {err}");
            if !line.is_empty() {
                assert!(err.contains(&format!("{name}{line}")), "{cmd} {name}: no file:line in {err}");
            }
            assert!(out.stdout.is_empty(), "no alerts from a bad config");
        }
    }
}

/// A damaged frame in the middle of a stream is skipped and counted; the run goes on and exits 0.
#[test]
fn corrupt_frames_are_skipped_and_counted() {
    use lookout::capture::mjpeg::{split_next, Split};
    let dir = scratch("corrupt");
    let bytes = std::fs::read(data("bikes.mjpeg")).unwrap();
    let mut r = std::io::Cursor::new(&bytes[..]);
    let mut jpeg = Vec::new();
    let mut stream = Vec::new();
    for i in 0..20 {
        assert!(matches!(split_next(&mut r, &mut jpeg).unwrap(), Split::Jpeg { .. }));
        if i == 7 {
            // Garbage where the frame header should be: SOI, then a SOF0 claiming 0x0 pixels.
            stream.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0, 0, 0, 0, 1, 1, 0x11, 0, 0xFF, 0xD9]);
        } else {
            stream.extend_from_slice(&jpeg);
        }
    }
    std::fs::write(dir.join("clip.mjpeg"), &stream).unwrap();
    std::fs::write(dir.join("c.toml"), "[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\n").unwrap();
    let out = lookout(&["run", "--config", dir.join("c.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("skipping corrupt frame 7"), "{err}");
    assert!(err.contains("19 frames captured, 19 analysed, 0 dropped, 1 corrupt"), "{err}");
}

/// UVC cameras send MJPEG frames without Huffman tables. A frame encoded with the standard tables,
/// stripped of its DHT segment, must decode to exactly the same pixels after the fix-up.
#[test]
fn frames_without_huffman_tables_decode_after_the_fixup() {
    use lookout::capture::mjpeg::{decode_rgb, split_next, Split};
    let full = std::fs::read(data("std-huffman.jpg")).unwrap();
    // Remove the DHT segment (FF C4 + length).
    let at = full.windows(2).position(|w| w == [0xFF, 0xC4]).expect("fixture has a DHT");
    let len = u16::from_be_bytes([full[at + 2], full[at + 3]]) as usize;
    let mut stripped = full[..at].to_vec();
    stripped.extend_from_slice(&full[at + 2 + len..]);
    let mut want = vec![0u8; 640 * 272 * 3];
    decode_rgb(&full, &mut want).unwrap();
    let mut raw = vec![0u8; 640 * 272 * 3];
    assert!(decode_rgb(&stripped, &mut raw).is_err(), "the stripped frame should not decode as is");
    let mut fixed = Vec::new();
    let split = split_next(&mut std::io::Cursor::new(&stripped[..]), &mut fixed).unwrap();
    assert_eq!(split, Split::Jpeg { dht_inserted: true });
    let mut got = vec![0u8; 640 * 272 * 3];
    decode_rgb(&fixed, &mut got).unwrap();
    assert!(got == want, "fixed-up frame decodes differently");
}

#[test]
fn version_names_the_target_and_tract() {
    let out = lookout(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let v = text(&out.stdout);
    assert!(v.starts_with("lookout 0.") && v.contains(std::env::consts::ARCH) && v.contains("tract 0.23.9"), "{v}");
}

/// A Y4M (raw 4:2:0) file gives the same kind of result as the MJPEG it was made from.
#[test]
fn y4m_source_runs_end_to_end() {
    let dir = scratch("y4m");
    clip_as_y4m(&dir.join("clip.y4m"), 20, 40);
    std::fs::write(dir.join("c.toml"), "[camera]\nname = \"door\"\n[source]\nkind = \"y4m\"\npath = \"clip.y4m\"\n")
        .unwrap();
    let out = lookout(&["run", "--config", dir.join("c.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let alerts = text(&out.stdout);
    // Frames 20..60 hold the cyclist (a person from frame ~30).
    assert!(alerts.lines().any(|l| l.contains(",door,default,") && l.contains(",person,")), "{alerts}");
    assert!(text(&out.stderr).contains("40 frames captured, 40 analysed"));
}

/// A live-paced source faster than inference: the newest frame wins, the rest are dropped and counted,
/// and every captured frame is either analysed or counted as dropped.
#[test]
fn realtime_pacing_drops_and_counts_when_inference_is_slower() {
    let dir = scratch("realtime");
    std::fs::write(
        dir.join("c.toml"),
        "[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\nfps = 1000\nframes = 100\npace = \"realtime\"\n",
    )
    .unwrap();
    let out = lookout(&["run", "--config", dir.join("c.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let line = err.lines().find(|l| l.contains("done:")).unwrap_or_else(|| panic!("{err}"));
    let num = |what: &str| -> u64 {
        let before = line.split(&format!(" {what}")).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (captured, analysed, dropped) = (num("frames captured"), num("analysed"), num("dropped"));
    let skipped = num("skipped by the motion gate");
    assert_eq!(captured, 100, "{line}");
    assert!(dropped > 0, "inference (about 10 ms an engine) cannot keep up with 1000 fps: {line}");
    assert_eq!(analysed + skipped + dropped, captured, "{line}");
}

/// SIGTERM (what systemd sends) stops an endless run cleanly: exit 0 and a summary.
#[test]
fn sigterm_stops_an_endless_run_cleanly() {
    let dir = scratch("sigterm");
    use std::io::BufRead;
    std::fs::write(dir.join("c.toml"), "[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\nfps = 30\n").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["run", "--config", dir.join("c.toml").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the pipeline runs (model loaded and self-tested), then stop it as systemd would.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("ring 4 slots") {
        assert!(err.read_line(&mut log).unwrap() > 0, "lookout ended early: {log}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    std::io::Read::read_to_string(&mut err, &mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("done:") && log.contains("frames captured"), "{log}");
}

/// `lookout probe` answers plainly and exits 0 whether or not a camera is there (this machine has none;
/// the VM test runs it against vivid).
#[test]
fn probe_says_plainly_when_there_is_no_camera() {
    let out = lookout(&["probe"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let cameras =
        std::fs::read_dir("/dev").unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("video"));
    if cameras {
        assert!(stdout.contains("driver"), "{stdout}");
    } else {
        assert!(stdout.starts_with("no camera: there are no video devices"), "{stdout}");
    }
}
