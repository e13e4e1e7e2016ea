//! What the agent tells systemd: `READY=1` once the store is open and the first
//! connection attempt is over (connected, or backlogging without a broker), a
//! `STATUS=` line a person can read in `systemctl status`, and `WATCHDOG=1` from the
//! main loop as it turns (the owner turns it at least every ping interval).
//!
//! The watchdog is pinged after a turn of the main loop, not from a timer task of its
//! own: if the loop stops turning (blocked in a call, stuck in a handler) the pings
//! stop and systemd restarts the agent. An idle loop still turns: its owner adds a tick
//! at [`SystemdReport::ping_every`].

use std::time::Duration;

use tokio::time::Instant;

use crate::sdnotify::{self, Notifier};

/// How often the status line may change.
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub struct SystemdReport {
    notifier: Notifier,
    ping_every: Option<Duration>,
    next_ping: Instant,
    next_status: Instant,
    last_status: String,
    ready: bool,
}

impl SystemdReport {
    pub fn new(notifier: Notifier) -> SystemdReport {
        let ping_every = notifier
            .is_enabled()
            .then(sdnotify::watchdog_interval)
            .flatten();
        let now = Instant::now();
        SystemdReport {
            notifier,
            ping_every,
            next_ping: now,
            next_status: now,
            last_status: String::new(),
            ready: false,
        }
    }

    /// Say `READY=1` (once).
    pub fn ready(&mut self, status: &str) {
        if !self.ready {
            self.ready = true;
            self.notifier.status(status);
            self.notifier.ready();
            self.last_status = status.to_owned();
            self.next_status = Instant::now() + STATUS_EVERY;
        }
    }

    /// How often the watchdog wants a ping (`None` without `WatchdogSec=`): the owner's
    /// loop must turn at least this often, idle or not.
    pub fn ping_every(&self) -> Option<Duration> {
        self.ping_every
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// After each turn of the main loop: ping the watchdog when due, and refresh the
    /// status line (built only when it may be sent).
    pub fn turned(&mut self, status: impl FnOnce() -> String) {
        if !self.notifier.is_enabled() {
            return;
        }
        let now = Instant::now();
        if let Some(every) = self.ping_every.filter(|_| now >= self.next_ping) {
            self.notifier.watchdog();
            self.next_ping = now + every;
        }
        if self.ready && now >= self.next_status {
            self.next_status = now + STATUS_EVERY;
            let line = status();
            if line != self.last_status {
                self.notifier.status(&line);
                self.last_status = line;
            }
        }
    }

    pub fn stopping(&self, status: &str) {
        self.notifier.stopping();
        self.notifier.status(status);
    }
}

/// Bytes as a person reads them: `512 B`, `3.2 KiB`, `14.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{:.1} MiB", f / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3277), "3.2 KiB");
        assert_eq!(human_bytes(14 << 20), "14.0 MiB");
    }

    #[tokio::test(start_paused = true)]
    async fn ready_status_and_watchdog_reach_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        let mut r = SystemdReport::new(Notifier::to_path(&path));
        r.ping_every = Some(Duration::from_secs(15));
        let mut got = Vec::new();
        let mut recv = || {
            let mut buf = [0u8; 256];
            while let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            std::mem::take(&mut got)
        };
        r.turned(|| "never built before ready".into());
        assert_eq!(recv(), ["WATCHDOG=1"]);
        r.ready("offline: broker unreachable");
        assert_eq!(recv(), ["STATUS=offline: broker unreachable", "READY=1"]);
        // Not due yet: nothing.
        r.turned(|| "live".into());
        assert!(recv().is_empty());
        tokio::time::advance(Duration::from_secs(15)).await;
        r.turned(|| "live".into());
        assert_eq!(recv(), ["WATCHDOG=1", "STATUS=live"]);
        // An unchanged line is not sent again.
        tokio::time::advance(Duration::from_secs(15)).await;
        r.turned(|| "live".into());
        assert_eq!(recv(), ["WATCHDOG=1"]);
    }
}
