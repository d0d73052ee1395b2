//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Frames of the shipped clip the tests use: all 250, or the first `LOOKOUT_TEST_FRAMES` when that is
/// set. scripts/test-arm.sh sets it for the run under qemu-user, where tract's inference is emulated at
/// about 2 s a frame: the same tests then run on the start of the clip (which still holds a car, the
/// cyclist and his face) instead of taking hours.
pub fn clip_frames() -> usize {
    std::env::var("LOOKOUT_TEST_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(250).clamp(1, 250)
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

/// Runs the real `lookout` binary.
pub fn lookout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lookout")).args(args).current_dir(root()).output().expect("run lookout")
}

/// A fresh directory for one test, in cargo's scratch space for integration tests (inside the target
/// directory, wherever `CARGO_TARGET_DIR` puts it).
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path for a Unix socket a test binds. A socket's path must fit in `sun_path` (108 bytes with its
/// NUL), and cargo's scratch space may be deeper than that (a CI's target directory), so sockets go in
/// the system's temporary directory (or `/tmp` when `TMPDIR` is itself long) under a short unique name.
pub fn socket_path(name: &str) -> PathBuf {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let p = base.join(format!("lk-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    assert!(p.as_os_str().len() < 108, "socket path too long: {}", p.display());
    p
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `frames` of the shipped MJPEG clip (from `start`) as a 4:2:0 Y4M file, converting each decoded
/// RGB frame to BT.601 limited-range YUV. No ffmpeg needed.
pub fn clip_as_y4m(path: &Path, start: usize, frames: usize) {
    let list: Vec<usize> = (start..start + frames).collect();
    frames_as_y4m(path, &list, false);
}

/// Writes the shipped clip's frames with the given numbers, in that order (repeats allowed), as a 4:2:0
/// Y4M file at 25 fps. With `noise`, every frame gets its own sensor-like noise (a deterministic +-3
/// levels a pixel on luma), so a frame repeated is a still scene as a camera sees it, not a copy.
pub fn frames_as_y4m(path: &Path, frames: &[usize], noise: bool) {
    use lookout::capture::mjpeg::{decode_rgb, split_next, Split};
    let bytes = std::fs::read(data("bikes.mjpeg")).unwrap();
    let mut r = std::io::Cursor::new(&bytes[..]);
    let mut jpeg = Vec::new();
    let (w, h) = (640usize, 272usize);
    let last = frames.iter().max().copied().unwrap_or(0);
    let mut decoded = Vec::new();
    for _ in 0..=last {
        assert!(matches!(split_next(&mut r, &mut jpeg).unwrap(), Split::Jpeg { .. }), "clip too short");
        let mut rgb = vec![0u8; w * h * 3];
        decode_rgb(&jpeg, &mut rgb).unwrap();
        decoded.push(rgb);
    }
    let mut out = format!("YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n").into_bytes();
    for (n, &f) in frames.iter().enumerate() {
        let rgb = &decoded[f];
        out.extend_from_slice(b"FRAME\n");
        let px = |x: usize, y: usize| {
            let i = 3 * (y * w + x);
            (rgb[i] as f32, rgb[i + 1] as f32, rgb[i + 2] as f32)
        };
        let mut seed = 0x9e37_79b9u32 ^ (n as u32).wrapping_mul(0x85eb_ca6b);
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = px(x, y);
                let mut v = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
                if noise {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    v += (seed % 7) as f32 - 3.0;
                }
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
        for plane in 0..2 {
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    let (r, g, b) = px(x, y);
                    let v = if plane == 0 {
                        128.0 - 0.148 * r - 0.291 * g + 0.439 * b
                    } else {
                        128.0 + 0.439 * r - 0.368 * g - 0.071 * b
                    };
                    out.push(v.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
    }
    std::fs::write(path, out).unwrap();
}

/// Writes frames `start..end` of the shipped MJPEG clip to `path` (an MJPEG stream of its own).
pub fn clip_part(path: &Path, start: usize, end: usize) {
    let frames: Vec<usize> = (start..end).collect();
    clip_of_frames(path, &frames);
}

/// Writes the shipped clip's frames with the given numbers, in that order (repeats allowed), to `path`.
pub fn clip_of_frames(path: &Path, frames: &[usize]) {
    use lookout::capture::mjpeg::split_next;
    let bytes = std::fs::read(data("bikes.mjpeg")).unwrap();
    let mut r = std::io::Cursor::new(&bytes[..]);
    let mut jpeg = Vec::new();
    let mut all = Vec::new();
    let last = frames.iter().max().copied().unwrap_or(0);
    for _ in 0..=last {
        split_next(&mut r, &mut jpeg).unwrap();
        all.push(jpeg.clone());
    }
    let out: Vec<u8> = frames.iter().flat_map(|&i| all[i].iter().copied()).collect();
    std::fs::write(path, out).unwrap();
}

/// The verified sentences of a `run`'s stdout, split into fields (checksum checked).
pub fn sentences(stdout: &[u8]) -> Vec<Vec<String>> {
    text(stdout)
        .split_inclusive('\n')
        .map(|l| {
            let body = lookout::output::verify(l).unwrap_or_else(|| panic!("bad sentence or checksum: {l:?}"));
            body.split(',').map(str::to_string).collect()
        })
        .collect()
}

/// Opens a pty pair; returns (master, slave fd kept open, slave path).
pub fn pty() -> (std::fs::File, std::os::fd::OwnedFd, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own; name/termios/winsize may be null.
    let rc = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // Not inherited by the lookout the test starts: the test's end of the line must close when the test
    // closes it. SAFETY: fcntl on the two descriptors just opened.
    unsafe {
        assert_eq!(libc::fcntl(m, libc::F_SETFD, libc::FD_CLOEXEC), 0);
        assert_eq!(libc::fcntl(s, libc::F_SETFD, libc::FD_CLOEXEC), 0);
    }
    // Raw from the start, as a real serial line is: what the controller writes before lookout opens
    // the port must not be echoed back or taken as a line discipline's control characters.
    // SAFETY: tcgetattr/tcsetattr on the slave we just opened, with a termios it filled.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(s, &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(s, libc::TCSANOW, &t), 0);
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: buffer and length are valid.
    let rc = unsafe { libc::ttyname_r(s, name.as_mut_ptr(), name.len()) };
    assert_eq!(rc, 0);
    // SAFETY: ttyname_r wrote a NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    // SAFETY: both descriptors were just created and are owned here.
    unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s), path) }
}

/// A command line as a controller sends it: `$LKCMD,...*CS\r\n`.
pub fn command(body: &str) -> String {
    let cs = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{cs:02X}\r\n")
}

/// Reads whole lines from a pty master (or any fd) for up to `limit`, until `done` says so.
pub fn read_lines_until(
    master: &mut std::fs::File,
    limit: std::time::Duration,
    lines: &mut Vec<String>,
    done: &dyn Fn(&[String]) -> bool,
) {
    assert!(read_lines(master, limit, lines, done), "timed out; lines so far: {lines:?}");
}

/// Reads whole lines for up to `limit`, or until `done` says so (then true).
pub fn read_lines(
    master: &mut std::fs::File,
    limit: std::time::Duration,
    lines: &mut Vec<String>,
    done: &dyn Fn(&[String]) -> bool,
) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + limit;
    let mut partial = Vec::new();
    while !done(lines) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
        if n <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        let got = master.read(&mut buf).unwrap();
        partial.extend_from_slice(&buf[..got]);
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
    }
    true
}

/// A GPIO pin that records every change with its time (tests/delivery.rs, tests/gpio_safety.rs).
#[derive(Clone, Default)]
pub struct Timed(pub std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, bool)>>>);
impl embedded_hal::digital::ErrorType for Timed {
    type Error = core::convert::Infallible;
}
impl embedded_hal::digital::OutputPin for Timed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.lock().unwrap().push((std::time::Instant::now(), false));
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.lock().unwrap().push((std::time::Instant::now(), true));
        Ok(())
    }
}
