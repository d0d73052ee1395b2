//! The serial link: a tty (or stdout) that never blocks the sensor and comes back when it goes away.
//!
//! Why so careful: the controller on the other end may stop reading (a full pty froze the whole sensor
//! once: inference, heartbeats and the alarm line), be unplugged (a USB adapter: EIO on every write), or
//! be a pipe that closed (`lookout run | head -1`). So the port is opened non-blocking; sentences go into
//! a fixed buffer ([`OUT_BYTES`]) whole or not at all (a full buffer drops the new sentence and counts
//! it, never a part of one), and the buffer drains as fast as the port takes it. A tty that fails is
//! closed, reported and reopened with backoff (250 ms doubling to 5 s), by path, so a re-plugged adapter
//! behind a `/dev/serial/by-id` link is found again; what was queued meanwhile goes out after, in order
//! (a sentence cut by the failure is dropped, not finished with another's bytes). stdout closing is not
//! recoverable: the link reports it and `run` stops with exit 1.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes the link holds for a port that does not take them yet (about 130 alerts).
pub const OUT_BYTES: usize = 16 * 1024;

const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn baud_constant(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        1_000_000 => libc::B1000000,
        _ => return None,
    })
}

/// Opens a tty, non-blocking, and puts it in raw mode, 8 data bits, no parity, 1 stop bit, no flow
/// control, at `baud`.
pub fn open_tty(path: &Path, baud: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let speed = baud_constant(baud).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("unsupported baud rate {baud}"))
    })?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fd is an open descriptor owned by `file`; termios is plain data filled by tcgetattr.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag &= !(libc::CSIZE | libc::PARENB | libc::CSTOPB | libc::CRTSCTS);
        t.c_cflag |= libc::CS8 | libc::CLOCAL | libc::CREAD;
        t.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
        if libc::cfsetispeed(&mut t, speed) != 0 || libc::cfsetospeed(&mut t, speed) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Where sentences go.
pub enum Port {
    Stdout,
    Tty {
        path: PathBuf,
        baud: u32,
    },
    /// Any writer, written through (tests, `replay`).
    Writer(Box<dyn Write + Send>),
}

/// What happened to the link in one [`Link::pump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The port failed and was closed (why); it will be reopened.
    Lost(String),
    /// It was reopened.
    Restored,
    /// stdout closed: nothing can be delivered any more (why).
    Fatal(String),
}

/// Counters of the link.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Sentences queued whole.
    pub queued: u64,
    /// Sentences dropped: the buffer was full (the port stalled or gone for long).
    pub dropped: u64,
    /// Times the port failed and was closed.
    pub lost: u64,
    /// Times it was reopened.
    pub reopened: u64,
    /// Sentences whose end was lost with the port (cut mid-write).
    pub cut: u64,
}

pub struct Link {
    port: Port,
    file: Option<std::fs::File>,
    out: Box<heapless::Deque<u8, OUT_BYTES>>,
    /// The last byte written was not a line end: a sentence is half out.
    mid_sentence: bool,
    retry: Duration,
    next_open: Option<Instant>,
    pub stats: LinkStats,
}

fn nonblocking(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold, with flag values from libc.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// write(2) on `fd`.
fn write_fd(fd: i32, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `bytes` is a valid slice for the length given.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

impl Link {
    /// Opens the port. A tty that is missing or fails now is a device fault (the caller exits 1).
    pub fn open(port: Port) -> std::io::Result<Link> {
        let file = match &port {
            Port::Tty { path, baud } => Some(open_tty(path, *baud)?),
            Port::Stdout => {
                nonblocking(1)?;
                None
            }
            Port::Writer(_) => None,
        };
        Ok(Link {
            port,
            file,
            out: Box::new(heapless::Deque::new()),
            mid_sentence: false,
            retry: RETRY_FIRST,
            next_open: None,
            stats: LinkStats::default(),
        })
    }

    /// Queues a whole sentence, or drops it (counted) if the buffer cannot hold all of it.
    pub fn queue(&mut self, s: &str) -> bool {
        if let Port::Writer(w) = &mut self.port {
            self.stats.queued = self.stats.queued.saturating_add(1);
            return w.write_all(s.as_bytes()).and_then(|_| w.flush()).is_ok();
        }
        if self.out.capacity().saturating_sub(self.out.len()) < s.len() {
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            return false;
        }
        for &b in s.as_bytes() {
            let _ = self.out.push_back(b);
        }
        self.stats.queued = self.stats.queued.saturating_add(1);
        true
    }

    /// Bytes waiting for the port.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Whether the port is open now.
    pub fn is_open(&self) -> bool {
        !matches!(self.port, Port::Tty { .. }) || self.file.is_some()
    }

    fn lose(&mut self, why: String, now: Instant) -> LinkEvent {
        self.file = None;
        self.stats.lost = self.stats.lost.saturating_add(1);
        self.next_open = now.checked_add(self.retry);
        self.retry = self.retry.saturating_mul(2).min(RETRY_MAX);
        LinkEvent::Lost(why)
    }

    /// Reopens a lost tty when due, writes what the port takes, and reads what came in into `input`
    /// (returns how many bytes). Never blocks.
    pub fn pump(&mut self, now: Instant, input: &mut [u8]) -> (Option<LinkEvent>, usize) {
        let mut event = None;
        if let (Port::Tty { path, baud }, None) = (&self.port, &self.file) {
            if self.next_open.is_some_and(|t| now < t) {
                return (None, 0);
            }
            match open_tty(path, *baud) {
                Ok(f) => {
                    self.file = Some(f);
                    self.retry = RETRY_FIRST;
                    self.stats.reopened = self.stats.reopened.saturating_add(1);
                    // A sentence cut when the port went: drop its tail, the next one starts clean.
                    if self.mid_sentence {
                        while self.out.front().is_some_and(|&b| b != b'$') {
                            self.out.pop_front();
                        }
                        self.mid_sentence = false;
                        self.stats.cut = self.stats.cut.saturating_add(1);
                    }
                    event = Some(LinkEvent::Restored);
                }
                Err(e) => {
                    self.next_open = now.checked_add(self.retry);
                    self.retry = self.retry.saturating_mul(2).min(RETRY_MAX);
                    log::debug!("serial {}: reopening failed: {e}", path.display());
                    return (None, 0);
                }
            }
        }
        let fd = match (&self.port, &self.file) {
            (Port::Stdout, _) => 1,
            (Port::Tty { .. }, Some(f)) => f.as_raw_fd(),
            _ => return (event, 0),
        };
        while !self.out.is_empty() {
            let (head, _) = self.out.as_slices();
            match write_fd(fd, head) {
                Ok(0) => break,
                Ok(n) => {
                    let last = head.get(n.saturating_sub(1)).copied();
                    for _ in 0..n {
                        self.out.pop_front();
                    }
                    self.mid_sentence = last != Some(b'\n');
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return match &self.port {
                        Port::Stdout => (Some(LinkEvent::Fatal(format!("stdout: {e}"))), 0),
                        _ => (Some(self.lose(format!("write: {e}"), now)), 0),
                    };
                }
            }
        }
        let mut got = 0;
        if let (Port::Tty { .. }, Some(f)) = (&self.port, &self.file) {
            // SAFETY: reading into our own buffer of the given length.
            let n = unsafe { libc::read(f.as_raw_fd(), input.as_mut_ptr().cast(), input.len()) };
            match usize::try_from(n) {
                // A tty in raw mode reads 0 bytes only when hung up (the other end of a pty closed).
                Ok(0) => return (Some(self.lose("read: hung up".into(), now)), 0),
                Ok(n) => got = n,
                Err(_) => {
                    let e = std::io::Error::last_os_error();
                    if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) {
                        return (Some(self.lose(format!("read: {e}"), now)), 0);
                    }
                }
            }
        }
        (event, got)
    }

    /// The port's name for messages.
    pub fn name(&self) -> String {
        match &self.port {
            Port::Stdout => "stdout".into(),
            Port::Tty { path, .. } => path.display().to_string(),
            Port::Writer(_) => "(writer)".into(),
        }
    }

    /// The descriptor to wait on for input, if any.
    pub fn input_fd(&self) -> Option<i32> {
        match (&self.port, &self.file) {
            (Port::Tty { .. }, Some(f)) => Some(f.as_raw_fd()),
            _ => None,
        }
    }
}
