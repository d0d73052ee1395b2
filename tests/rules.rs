//! Rules end to end: zones, lines, replay's reasons, arming and config errors, on the real binary and
//! the shipped clip. (The state machines' own unit tests are in `src/rules/` and `src/track.rs`.)

mod common;
use common::*;

/// Frames 137..250 of the shipped clip: the street behind the railing (cars on the road, y 0.35..0.7 of
/// the frame, a false "person" on a post at the left), then the pavement (a person walking past, feet at
/// y 0.86). One run, two rules: the road zone alerts for the cars and never for a person; the pavement
/// zone for the person and never for a car. On the int8 model's detections (reviewed for these frames;
/// the fp32 default also boxes the walker's upper body, whose bottom edge lies on the road).
#[test]
fn a_road_zone_alerts_for_cars_and_a_pavement_zone_for_the_pedestrian() {
    let dir = scratch("zones");
    // Under qemu (LOOKOUT_TEST_FRAMES < 250) a shorter part that still holds the cars and the walker.
    let end = if clip_frames() < 250 { 192 } else { 250 };
    clip_part(&dir.join("street.mjpeg"), 137, end);
    std::fs::write(
        dir.join("zones.toml"),
        format!("[model]\nmanifest = \"{}\"\n", root().join("models/fastestdet-int8.toml").display())
            + r#"[source]
kind = "mjpeg"
path = "street.mjpeg"
[[rule]]
name = "road"
classes = ["person", "car"]
zone = [[0.3, 0.35], [1.0, 0.35], [1.0, 0.7], [0.3, 0.7]]
[[rule]]
name = "pavement"
classes = ["person", "car"]
zone = [[0.0, 0.75], [1.0, 0.75], [1.0, 1.0], [0.0, 1.0]]
"#,
    )
    .unwrap();
    let out = lookout(&["run", "--config", dir.join("zones.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = sentences(&out.stdout);
    let alerts = |rule: &str| -> Vec<String> {
        s.iter().filter(|f| f[0] == "LKALR" && f[4] == rule).map(|f| f[6].clone()).collect()
    };
    let (road, pavement) = (alerts("road"), alerts("pavement"));
    assert!(road.len() >= 2 && road.iter().all(|c| c == "car"), "road: {road:?}\n{s:?}");
    assert!(!pavement.is_empty() && pavement.iter().all(|c| c == "person"), "pavement: {pavement:?}\n{s:?}");
    // One alert per track, each cleared once (by the end of the clip at the latest).
    for rule in ["road", "pavement"] {
        let tracks = |kind: &str| -> Vec<String> {
            let mut v: Vec<String> = s.iter().filter(|f| f[0] == kind && f[4] == rule).map(|f| f[5].clone()).collect();
            v.sort();
            v
        };
        let alerted = tracks("LKALR");
        let mut unique = alerted.clone();
        unique.dedup();
        assert_eq!(alerted, unique, "{rule}: a track alerted twice: {s:?}");
        assert_eq!(alerted, tracks("LKCLR"), "{rule}: every alert cleared once: {s:?}");
    }
}

/// Frames 25..50: the cyclist rides left to right across x = 0.6. A left_to_right line alerts once for
/// him, with the direction in the replay; the same line right_to_left never does.
#[test]
fn a_line_crossing_alerts_once_with_its_direction() {
    let dir = scratch("line");
    clip_part(&dir.join("ride.mjpeg"), 25, 50);
    std::fs::write(
        dir.join("line.toml"),
        r#"[[rule]]
name = "ltr"
classes = ["person"]
line = [[0.6, 0.0], [0.6, 1.0]]
direction = "left_to_right"
[[rule]]
name = "rtl"
classes = ["person"]
line = [[0.6, 0.0], [0.6, 1.0]]
direction = "right_to_left"
"#,
    )
    .unwrap();
    let clip = dir.join("ride.mjpeg");
    let out = lookout(&[
        "replay",
        "--source",
        clip.to_str().unwrap(),
        "--config",
        dir.join("line.toml").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut alerts = Vec::new();
    let mut reasons = Vec::new();
    for line in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for a in v["alerts"].as_array().unwrap() {
            alerts.push((
                a["rule"].as_str().unwrap().to_string(),
                a["class"].as_str().unwrap().to_string(),
                a["direction"].as_str().map(str::to_string),
            ));
        }
        for d in v["detections"].as_array().unwrap() {
            reasons.push(d["rules"]["rtl"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(alerts, [("ltr".to_string(), "person".to_string(), Some("left_to_right".to_string()))]);
    assert!(reasons.iter().any(|r| r == "not_crossed"), "{reasons:?}");
    assert!(!reasons.iter().any(|r| r == "alert"));
}

/// A parked car (frame 172 held still) that the detector misses for 2 s (an empty street frame) and
/// then sees again is one alert, cleared once at the end, because a track that stayed in place outlives
/// `max_coast_ms`; with `stationary_coast_ms = max_coast_ms` (what a plain tracker does) it alerts twice.
#[test]
fn a_parked_car_missed_for_two_seconds_is_one_alert() {
    let dir = scratch("parked");
    // Read at 5 fps (stream time 200 ms a frame), so the test is short also under qemu.
    let mut frames = vec![172; 8];
    frames.extend(std::iter::repeat_n(10, 10)); // 2 s: no car in view
    frames.extend(std::iter::repeat_n(172, 8));
    clip_of_frames(&dir.join("parked.mjpeg"), &frames);
    let run = |extra: &str| {
        let cfg = dir.join("parked.toml");
        std::fs::write(&cfg, format!("[source]\nkind = \"mjpeg\"\npath = \"parked.mjpeg\"\nfps = 5\n[track]\n{extra}\n[[rule]]\nname = \"street\"\nclasses = [\"car\"]\n")).unwrap();
        let out = lookout(&["run", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let s = sentences(&out.stdout);
        let count = |kind: &str| s.iter().filter(|f| f[0] == kind).count();
        (count("LKALR"), count("LKCLR"))
    };
    assert_eq!(run(""), (1, 1), "one alert, one clear");
    assert_eq!(run("stationary_coast_ms = 1000"), (2, 2), "a plain tracker loses it");
}

/// `replay --json` on the shipped clip with the default config: its alerts are exactly `run`'s (rule,
/// track, class, score, box, in order), and every detection has a reason for every rule.
#[test]
fn replay_alerts_are_exactly_runs_and_every_detection_has_a_reason() {
    // Under qemu the first 33 frames: two runs of the emulated model, and still four alerts.
    let n = if clip_frames() < 250 { clip_frames().min(33) } else { 250 }.to_string();
    let run = lookout(&["run", "--frames", &n]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let from_run: Vec<String> = sentences(&run.stdout)
        .into_iter()
        .filter(|f| f[0] == "LKALR" || f[0] == "LKCLR")
        .map(|f| f[3..].join(","))
        .collect();
    let clip = data("bikes.mjpeg");
    let replay = lookout(&["replay", "--source", clip.to_str().unwrap(), "--frames", &n, "--json"]);
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    let known = [
        "alert",
        "class",
        "score",
        "area",
        "outside_zone",
        "not_crossed",
        "not_confirmed",
        "dwell",
        "already_alerted",
        "disarmed",
        "outside_schedule",
        "cooldown",
        "untracked",
        "duplicate",
        "no_room",
    ];
    let mut from_replay = Vec::new();
    let mut frames = 0;
    let mut why_not = std::collections::BTreeMap::<String, usize>::new();
    for line in text(&replay.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        frames += usize::from(v.get("end").is_none());
        let mut alerted = 0;
        for d in v["detections"].as_array().unwrap() {
            let r = d["rules"]["default"].as_str().unwrap_or_else(|| panic!("no reason: {d}"));
            assert!(known.contains(&r.split(':').next().unwrap()), "{r}");
            alerted += usize::from(r == "alert");
            *why_not.entry(r.split(':').next().unwrap().to_string()).or_default() += 1;
        }
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerted, alerts.len(), "one detection per alert says alert: {line}");
        for a in alerts {
            let b: Vec<i64> = a["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap().round() as i64).collect();
            from_replay.push(format!(
                "cam0,{},{},{},{:.2},{},{},{},{}",
                a["rule"].as_str().unwrap(),
                a["track"],
                a["class"].as_str().unwrap(),
                a["score"].as_f64().unwrap(),
                b[0],
                b[1],
                b[2],
                b[3]
            ));
        }
        for c in v["clears"].as_array().unwrap() {
            from_replay.push(format!("cam0,{},{}", c["rule"].as_str().unwrap(), c["track"]));
        }
    }
    assert_eq!(frames.to_string(), n);
    assert_eq!(from_replay, from_run);
    assert!(why_not.contains_key("class") && why_not.contains_key("already_alerted"), "{why_not:?}");
}

/// Rules that cannot work are refused at start, naming file, line and field (exit 2).
#[test]
fn bad_rules_name_file_line_and_field() {
    let dir = scratch("badrules");
    let cases = [
        (
            "points.toml",
            "[[rule]]\nname = \"a\"\nzone = [[0.0, 0.0], [1.0, 1.0]]\n",
            ":3:",
            "rule[0].zone",
            "3 to 32 points",
        ),
        (
            "bowtie.toml",
            "[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\nzone = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.5]]\n",
            ":5:",
            "rule[1].zone",
            "crosses itself",
        ),
        (
            "outside.toml",
            "[[rule]]\nname = \"a\"\nzone = [[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]\n",
            ":3:",
            "rule[0].zone",
            "outside the frame",
        ),
        (
            "class.toml",
            "[[rule]]\nname = \"a\"\n\nclasses = [\"unicorn\"]\n",
            ":4:",
            "rule[0].classes",
            "\"unicorn\" is not a label",
        ),
        (
            "window.toml",
            "[[rule]]\nname = \"a\"\nschedule = [\"22:00-6:00\"]\n",
            ":3:",
            "rule[0].schedule",
            "not a time window",
        ),
        ("name.toml", "[[rule]]\nname = \"a,b\"\n", ":2:", "rule[0].name", "not a rule name"),
        ("dup.toml", "[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n", ":4:", "rule[1].name", "unique"),
        ("confirm.toml", "[[rule]]\nname = \"a\"\nconfirm = \"6/5\"\n", ":3:", "rule[0].confirm", "N <= M"),
        ("both.toml", "[rules]\nconfirm_frames = 2\n[[rule]]\nname = \"a\"\n", ":1:", "rules", "not both"),
        (
            "dir.toml",
            "[[rule]]\nname = \"a\"\nline = [[0.1, 0.5], [0.9, 0.5]]\ndirection = \"left_to_right\"\n",
            ":4:",
            "rule[0].direction",
            "up or down",
        ),
    ];
    for (name, body, line, field, what) in cases {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        let out = lookout(&["check", "--config", p.to_str().unwrap(), "--no-devices"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{name}{line}")) && err.contains(field) && err.contains(what), "{name}: {err}");
    }
}

/// SIGUSR2 disarms (reported as `$LKEVT ... disarmed`, and no alert while disarmed); SIGUSR1 arms again
/// and the object already in view, confirmed while disarmed, alerts then. The clip is a parked car (frame
/// 172 held) looping at 2 fps in real time, so the test takes seconds, also where inference is emulated.
#[test]
fn sigusr2_disarms_and_sigusr1_arms_again() {
    use std::io::BufRead;
    let dir = scratch("arming");
    clip_of_frames(&dir.join("parked.mjpeg"), &[172; 4]);
    std::fs::write(
        dir.join("c.toml"),
        "[source]\nkind = \"mjpeg\"\npath = \"parked.mjpeg\"\nfps = 2\npace = \"realtime\"\nloop = true\n[heartbeat]\ninterval_ms = 0\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["run", "--config", dir.join("c.toml").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("ring 4 slots") {
        assert!(err.read_line(&mut log).unwrap() > 0, "lookout ended early: {log}");
    }
    // The first frame is in the ring now; an alert needs two (confirm 2/3), 500 ms apart.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR2) }, 0);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut read = |lines: &mut Vec<String>, until: &dyn Fn(&str) -> bool| loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "{lines:?}");
        let body = lookout::output::verify(&l).unwrap_or_else(|| panic!("{l:?}")).to_string();
        lines.push(body.clone());
        if until(&body) {
            break;
        }
    };
    read(&mut lines, &|b| b.ends_with(",disarmed"));
    // Disarmed for 2 s: the car is confirmed meanwhile, and does not alert.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    read(&mut lines, &|b| b.ends_with(",armed"));
    read(&mut lines, &|b| b.starts_with("LKALR"));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let disarmed = lines.iter().position(|b| b.ends_with(",disarmed")).unwrap();
    let armed = lines.iter().position(|b| b.ends_with(",armed")).unwrap();
    assert_eq!(disarmed, 0, "disarmed before any alert: {lines:?}");
    assert!(!lines[..armed].iter().any(|b| b.starts_with("LKALR")), "no alert while disarmed: {lines:?}");
    assert!(lines[armed + 1].starts_with("LKALR") && lines[armed + 1].contains(",car,"), "{lines:?}");
}
