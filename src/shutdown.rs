//! Shutdown: one way for SIGTERM / SIGINT to reach every wait in the process.
//!
//! Why: a stop must finish within 2 seconds whatever the sensor is doing (systemd kills after
//! `TimeoutStopSec`, and a relay left on is the one thing that must not happen). A flag checked between
//! frames is not enough: the capture thread may be blocked reading a FIFO, waiting for a camera, or
//! sleeping until a slow clip's next frame. So the handler is installed with `sigaction` *without*
//! `SA_RESTART`, sets a flag and writes one byte to a self-pipe that is never drained: from then on the
//! pipe's read end is readable, and every wait in lookout (`poll` on a device or file together with the
//! pipe, [`Shutdown::sleep`]) returns at once. Condition-variable waits (the ring) use short timeouts
//! and check the flag, and the inference loop closes the ring on a stop.
//!
//! The handler's state (the flag and the pipe's write end) is process-wide because a signal handler can
//! only reach statics; it is written once, at installation. Everything else takes a [`Shutdown`] value,
//! so tests make their own and trigger it with [`Shutdown::request`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static SIGNALLED: AtomicBool = AtomicBool::new(false);
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe (which cannot
        // happen: it is written once per signal and a stop needs one byte) would not block the handler.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

struct Inner {
    /// Set by [`Shutdown::request`]; the signal flag is the static above.
    requested: AtomicBool,
    read: OwnedFd,
    write: OwnedFd,
    /// Whether this value listens to the process's signals.
    signals: bool,
}

/// A stop request that every wait can watch. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

/// What a wait on a device or file ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The descriptor is ready (or in error: the read that follows says which).
    Ready,
    /// A stop was requested.
    Stopped,
    TimedOut,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors on success, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Shutdown {
    /// A shutdown that only [`Shutdown::request`] triggers (tests, tools).
    pub fn new() -> std::io::Result<Shutdown> {
        let (read, write) = pipe()?;
        Ok(Shutdown(Arc::new(Inner { requested: AtomicBool::new(false), read, write, signals: false })))
    }

    /// Installs the SIGTERM and SIGINT handlers (once per process) and returns the shutdown they trigger.
    pub fn from_signals() -> std::io::Result<Shutdown> {
        let (read, write) = pipe()?;
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed sigaction with a handler that only touches atomics and write(2); no
            // SA_RESTART, so blocking calls in the thread that takes the signal return EINTR.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                sa.sa_flags = 0;
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(Shutdown(Arc::new(Inner { requested: AtomicBool::new(false), read, write, signals: true })))
    }

    /// Asks everything to stop (as a signal would).
    pub fn request(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        let b = 1u8;
        // SAFETY: writing one byte from a local to our own non-blocking pipe.
        unsafe { libc::write(self.0.write.as_raw_fd(), (&b as *const u8).cast(), 1) };
    }

    /// Whether a stop was requested.
    pub fn is_set(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst) || (self.0.signals && SIGNALLED.load(Ordering::SeqCst))
    }

    /// Sleeps for `d`, or less if a stop comes first. Returns true when stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        self.wait_fd(None, 0, d) == Wait::Stopped
    }

    /// Waits until `fd` has one of `events` (`libc::POLLIN`, ...), a stop is requested, or `timeout`
    /// passes. `None` waits for the stop or the timeout only. Interrupted polls are resumed with the
    /// remaining time.
    pub fn wait_fd(&self, fd: Option<RawFd>, events: libc::c_short, timeout: Duration) -> Wait {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.is_set() {
                return Wait::Stopped;
            }
            let left = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
            let ms = i32::try_from(left.as_millis().min(i32::MAX as u128)).unwrap_or(i32::MAX);
            let mut fds = [
                libc::pollfd { fd: self.0.read.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: fd.unwrap_or(-1), events, revents: 0 },
            ];
            // SAFETY: `fds` is a valid array of two pollfd; a negative fd is ignored by poll(2).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // poll itself failed (cannot with valid arguments): let the caller's read find out.
                return Wait::Ready;
            }
            let [stop, dev] = fds;
            if stop.revents != 0 || self.is_set() {
                return Wait::Stopped;
            }
            if dev.revents != 0 {
                return Wait::Ready;
            }
            if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Wait::TimedOut;
            }
        }
    }
}

static ARMED: AtomicBool = AtomicBool::new(true);

extern "C" fn on_arm_signal(sig: libc::c_int) {
    ARMED.store(sig == libc::SIGUSR1, Ordering::SeqCst);
}

/// Whether the rules are armed: `SIGUSR1` arms, `SIGUSR2` disarms (`kill -USR2 $(pidof lookout)`, or
/// `systemctl kill -s USR2 lookout`). A disarmed rule goes on tracking but does not alert. Rules start
/// armed. The same process-wide reason as the stop: a handler can only reach a static.
#[derive(Clone)]
pub struct Arming {
    local: Arc<AtomicBool>,
    signals: bool,
}

impl Arming {
    /// An arming switch that only [`Arming::set`] moves (tests, tools).
    pub fn new(armed: bool) -> Arming {
        Arming { local: Arc::new(AtomicBool::new(armed)), signals: false }
    }

    /// Installs the SIGUSR1 / SIGUSR2 handlers. With `SA_RESTART`: arming must not disturb a read.
    pub fn from_signals() -> std::io::Result<Arming> {
        for sig in [libc::SIGUSR1, libc::SIGUSR2] {
            // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_arm_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                sa.sa_flags = libc::SA_RESTART;
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(Arming { local: Arc::new(AtomicBool::new(true)), signals: true })
    }

    pub fn is_armed(&self) -> bool {
        if self.signals {
            ARMED.load(Ordering::SeqCst)
        } else {
            self.local.load(Ordering::SeqCst)
        }
    }

    pub fn set(&self, armed: bool) {
        if self.signals {
            ARMED.store(armed, Ordering::SeqCst);
        }
        self.local.store(armed, Ordering::SeqCst);
    }
}

/// A reader that never blocks past a stop: before each read it waits (with [`Shutdown::wait_fd`]) until
/// the descriptor is readable or a stop is requested; after a stop it fails with the "stopped" error the
/// capture loop recognises ([`is_stopped`]). For a regular file the wait returns at
/// once; for a FIFO or a character device it is what makes a stalled writer interruptible.
pub struct StopRead<R> {
    inner: R,
    fd: RawFd,
    stop: Shutdown,
}

impl<R: std::io::Read + AsRawFd> StopRead<R> {
    pub fn new(inner: R, stop: Shutdown) -> StopRead<R> {
        let fd = inner.as_raw_fd();
        StopRead { inner, fd, stop }
    }
}

/// The error a [`StopRead`] returns once a stop was requested.
pub fn stopped_error() -> std::io::Error {
    std::io::Error::other(StoppedMarker)
}

/// True for the error [`stopped_error`] makes.
pub fn is_stopped(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<StoppedMarker>())
}

#[derive(Debug)]
struct StoppedMarker;
impl std::fmt::Display for StoppedMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}
impl std::error::Error for StoppedMarker {}

impl<R: std::io::Read> std::io::Read for StopRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.stop.wait_fd(Some(self.fd), libc::POLLIN, Duration::from_secs(3600)) {
                Wait::Stopped => return Err(stopped_error()),
                Wait::TimedOut => continue,
                Wait::Ready => {}
            }
            match self.inner.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}

/// Opens a file source without blocking (a FIFO's `open` would wait for a writer) and wraps it in a
/// [`StopRead`]. The descriptor is made blocking again after the open; [`StopRead`] does the waiting.
pub fn open_file(path: &std::path::Path, stop: &Shutdown) -> std::io::Result<StopRead<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, clearing one status flag.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(StopRead::new(file, stop.clone()))
}

impl<R: std::io::Seek> std::io::Seek for StopRead<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn sleep_and_fd_waits_end_at_a_request() {
        let s = Shutdown::new().unwrap();
        let t0 = Instant::now();
        assert!(!s.sleep(Duration::from_millis(20)));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        let s2 = s.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s2.request();
        });
        let t0 = Instant::now();
        assert!(s.sleep(Duration::from_secs(30)));
        assert!(t0.elapsed() < Duration::from_secs(10), "the sleep ended at the request");
        waker.join().unwrap();
        assert!(s.is_set());
        // Level-triggered: later waits return at once.
        assert_eq!(s.wait_fd(None, 0, Duration::from_secs(30)), Wait::Stopped);
    }

    #[test]
    fn a_read_from_a_stalled_fifo_ends_at_a_request() {
        let (r, _w) = pipe().unwrap();
        let s = Shutdown::new().unwrap();
        let file = std::fs::File::from(r);
        let mut reader = StopRead::new(file, s.clone());
        let s2 = s.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s2.request();
        });
        let mut buf = [0u8; 16];
        let e = reader.read(&mut buf).unwrap_err();
        assert!(is_stopped(&e), "{e}");
        waker.join().unwrap();
    }
}
