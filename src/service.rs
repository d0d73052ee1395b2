//! Service: telling systemd we are up and alive (the sd_notify protocol), without libsystemd.
//!
//! Why: a sensor nobody watches must restart itself when it hangs, not only when it crashes. Under
//! `Type=notify` with `WatchdogSec=`, systemd gives us `NOTIFY_SOCKET` and `WATCHDOG_USEC`; we send
//! `READY=1` once the model has passed its self-test and frames flow, and `WATCHDOG=1` from the inference
//! loop at half the watchdog interval, so a stuck inference (not just a dead process) gets the service
//! restarted. Outside systemd both variables are absent and every call here does nothing. The socket and
//! address are prepared once; a ping is one datagram, no allocation.
//!
//! What "alive" means ([`Notifier::tick`]): a frame was analysed since the last ping, or the camera is
//! known lost and being retried. A loop that spins without analysing anything (a dead or hung capture
//! thread, a wedged inference) stops feeding the watchdog, and systemd restarts the sensor; an unplugged
//! camera does not, because lookout is doing its job (reporting `camera_lost` and retrying). `READY=1`
//! goes out on the first analysed frame or the first `camera_lost`, whichever comes first.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    interval: Option<Duration>,
    last_ping: Option<Instant>,
    /// Frames analysed at the last ping.
    progress_at_ping: u64,
    ready: bool,
    /// Pings are being held back (logged once per stretch).
    starving: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            use std::os::unix::ffi::OsStrExt;
            let addr = match p.as_bytes().strip_prefix(b"@") {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name).ok()?
                }
                None => SocketAddr::from_pathname(&p).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let interval = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(|us| Duration::from_micros(us) / 2);
        Notifier::with(socket, interval)
    }

    fn with(socket: Option<(UnixDatagram, SocketAddr)>, interval: Option<Duration>) -> Notifier {
        Notifier { socket, interval, last_ping: None, progress_at_ping: 0, ready: false, starving: false }
    }

    /// A notifier that does nothing (tests, tools).
    pub fn none() -> Notifier {
        Notifier::with(None, None)
    }

    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one state line (e.g. `READY=1`). Failures are logged once per call and otherwise ignored:
    /// losing systemd must not stop the sensor.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                log::warn!("sd_notify {state:?} failed: {e}");
            }
        }
    }

    /// Call often from the inference loop with the number of frames analysed so far and whether the
    /// camera is known lost: sends `READY=1` once there is either, and `WATCHDOG=1` every half watchdog
    /// interval while lookout is alive (see the module documentation).
    pub fn tick(&mut self, now: Instant, analysed: u64, camera_lost: bool) {
        if !self.ready && (analysed > 0 || camera_lost) {
            self.ready = true;
            self.notify("READY=1");
        }
        let Some(every) = self.interval else { return };
        if self.last_ping.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return;
        }
        let alive = analysed != self.progress_at_ping || camera_lost;
        if !alive {
            if !self.starving {
                self.starving = true;
                log::error!("no frame analysed in the last {} ms: not feeding the watchdog", every.as_millis());
            }
            return;
        }
        self.starving = false;
        self.last_ping = Some(now);
        self.progress_at_ping = analysed;
        self.notify("WATCHDOG=1");
    }

    /// Whether `READY=1` was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_watchdog_pings_reach_the_socket_only_while_alive() {
        let dir = std::env::temp_dir().join(format!("lookout-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let sock = || Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&path).unwrap()));
        let mut n = Notifier::with(sock(), Some(Duration::from_secs(5)));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        n.tick(t0, 0, false); // nothing analysed yet: not ready, no ping
        n.tick(t0 + s(1), 1, false); // first frame: READY=1 and the first ping
        n.tick(t0 + s(4), 2, false); // too soon: no ping
        n.tick(t0 + s(6), 3, false); // due and frames flowed: ping
        n.tick(t0 + s(12), 3, false); // due but nothing analysed since: held back
        n.tick(t0 + s(13), 3, true); // the camera is known lost: alive
        n.tick(t0 + s(19), 3, false); // nothing since, camera not lost: held back
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..4 {
            let k = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
        assert_eq!(got, ["READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"]);
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "no extra ping");
        // A camera missing at start makes the service ready too (it is doing its job: waiting).
        let mut n = Notifier::with(sock(), Some(Duration::from_secs(5)));
        n.tick(t0, 0, true);
        assert!(n.is_ready());
        server.set_nonblocking(false).unwrap();
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
