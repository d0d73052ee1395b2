//! Service: telling systemd we are up and alive (the sd_notify protocol), without libsystemd.
//!
//! Why: a sensor nobody watches must restart itself when it hangs, not only when it crashes. Under
//! `Type=notify` with `WatchdogSec=`, systemd gives us `NOTIFY_SOCKET` and `WATCHDOG_USEC`; we send
//! `READY=1` once the model has passed its self-test and frames flow, and `WATCHDOG=1` from the inference
//! loop at half the watchdog interval, so a stuck inference (not just a dead process) gets the service
//! restarted. Outside systemd both variables are absent and every call here does nothing. The socket and
//! address are prepared once; a ping is one datagram, no allocation.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    interval: Option<Duration>,
    last_ping: Option<Instant>,
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
        Notifier { socket, interval, last_ping: None }
    }

    /// A notifier that does nothing (tests, tools).
    pub fn none() -> Notifier {
        Notifier { socket: None, interval: None, last_ping: None }
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

    /// Call often from the loop that must stay alive; sends `WATCHDOG=1` every half watchdog interval.
    pub fn tick(&mut self, now: Instant) {
        let Some(every) = self.interval else { return };
        if self.last_ping.is_none_or(|t| now.duration_since(t) >= every) {
            self.last_ping = Some(now);
            self.notify("WATCHDOG=1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_watchdog_pings_reach_the_socket_at_half_the_interval() {
        let dir = std::env::temp_dir().join(format!("lookout-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&path).unwrap())),
            interval: Some(Duration::from_secs(5)),
            last_ping: None,
        };
        n.notify("READY=1");
        let t0 = Instant::now();
        n.tick(t0);
        n.tick(t0 + Duration::from_secs(4)); // too soon: no ping
        n.tick(t0 + Duration::from_secs(5));
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..3 {
            let k = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
        assert_eq!(got, ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]);
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "no extra ping");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
