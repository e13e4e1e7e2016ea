//! systemd's readiness and watchdog protocol (`sd_notify(3)`), without libsystemd.
//!
//! The protocol is one datagram of `KEY=value` lines sent to the `AF_UNIX` socket
//! named by `$NOTIFY_SOCKET`. It is small enough to speak directly, which keeps the
//! agent free of a C dependency (and of one more library to cross-build for ARM).
//!
//! Everything here is best effort: a failed notification must never stop the agent.
//! If systemd really needed the message (`READY=1` under `Type=notify`, the watchdog
//! pings under `WatchdogSec=`) it will time out and act on that itself, which is the
//! right outcome for a service that cannot reach its supervisor.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Sends state changes to systemd.
///
/// Built with [`Notifier::from_env`]; when the program is not started by systemd
/// (or by a unit without `Type=notify`/`WatchdogSec=`), it is a no-op, so callers
/// notify unconditionally instead of branching on how they were started.
/// `Default` is the no-op notifier, for in-process runs (tests, the demo).
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
    /// A send error is logged once: systemd going away or a full socket queue would
    /// otherwise log at every watchdog ping for the rest of the run.
    logged_error: AtomicBool,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, or a no-op one if it is unset or empty.
    ///
    /// The variable is left in the environment: the agent clears the environment of
    /// the commands it runs, and `NotifyAccess=main` makes systemd ignore any other
    /// process that might still find it, so unsetting it (racy in a threaded
    /// program) would buy nothing.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Notifier::to_path(path),
            _ => Notifier::default(),
        }
    }

    /// A notifier sending to `path`: a file system socket (`/run/systemd/notify`) or,
    /// with a leading `@`, a Linux abstract socket (what systemd uses inside
    /// containers and for user instances). Any other form (systemd 253+ also knows
    /// `vsock:`) gives a no-op notifier, logged at debug.
    pub fn to_path(path: impl AsRef<OsStr>) -> Notifier {
        let path = path.as_ref();
        match connect(path) {
            Ok(target) => Notifier {
                target: Some(target),
                logged_error: AtomicBool::new(false),
            },
            Err(error) => {
                tracing::debug!(socket = ?path, %error, "sd_notify disabled");
                Notifier::default()
            }
        }
    }

    /// Whether notifications go anywhere; lets callers skip building status lines
    /// nobody will read.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup is complete; `systemctl start` returns and units ordered
    /// after this one start.
    pub fn ready(&self) {
        self.send_logged("READY=1");
    }

    /// `STATUS=`: a line for people, shown by `systemctl status`. Newlines would end
    /// the assignment (the rest would be parsed as more variables), so they become
    /// spaces.
    pub fn status(&self, line: &str) {
        if !self.is_enabled() {
            return;
        }
        let line: String = line
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send_logged(&format!("STATUS={line}"));
    }

    /// `STOPPING=1`: shutdown has begun, so systemd shows "deactivating" instead of
    /// counting a slow graceful stop as a hang.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1");
    }

    /// `WATCHDOG=1`: the service is alive. Send it only from a loop that is doing
    /// its work, at [`watchdog_interval`]; a ping from a side thread would keep a
    /// hung service from being restarted.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }

    /// Send `state` (one or more `KEY=value` lines) as one datagram. `Ok` without
    /// sending when the notifier is a no-op.
    ///
    /// The socket is non-blocking: if systemd's queue is full the message is dropped
    /// (`WouldBlock`) rather than stalling the caller's event loop, which would be a
    /// worse failure than a missed status line.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        let sent = t.socket.send_to_addr(state.as_bytes(), &t.addr)?;
        if sent != state.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", state.len()),
            ));
        }
        Ok(())
    }

    fn send_logged(&self, state: &str) {
        if let Err(error) = self.notify(state) {
            if !self.logged_error.swap(true, Ordering::Relaxed) {
                tracing::debug!(
                    %error,
                    state,
                    "sd_notify failed (further failures are not logged)"
                );
            }
        }
    }
}

fn connect(path: &OsStr) -> std::io::Result<Target> {
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(path)?,
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "NOTIFY_SOCKET is neither a path nor an abstract socket (@name)",
            ))
        }
    };
    // Unbound and unconnected: each send names the address, so a socket systemd
    // re-creates (daemon-reexec) is found again. std opens it close-on-exec, so
    // command tasks do not inherit it.
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok(Target { socket, addr })
}

/// How often to send `WATCHDOG=1`, when systemd asked for pings: half of
/// `$WATCHDOG_USEC`, as `sd_watchdog_enabled(3)` advises, so one late ping is not
/// fatal. `None` when the unit has no `WatchdogSec=` or the request is for another
/// process (`$WATCHDOG_PID`, e.g. inherited from a parent).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] without the environment, for tests. A value that does not
/// parse disables the watchdog, as `sd_watchdog_enabled` does.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    // Never zero: an interval timer of zero length is a busy loop (or a panic).
    Some(Duration::from_micros((usec / 2).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(sock: &UnixDatagram) -> impl FnMut() -> String + '_ {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        move || {
            let mut buf = [0u8; 512];
            let n = sock.recv(&mut buf).expect("a notification");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    #[test]
    fn sends_each_state_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let mut recv = receiver(&sock);
        let n = Notifier::to_path(&path);
        assert!(n.is_enabled());

        n.ready();
        assert_eq!(recv(), "READY=1");
        n.status("serving: 3 agents online,\n12 tasks\r\nin flight");
        assert_eq!(
            recv(),
            "STATUS=serving: 3 agents online, 12 tasks  in flight"
        );
        n.watchdog();
        assert_eq!(recv(), "WATCHDOG=1");
        n.stopping();
        assert_eq!(recv(), "STOPPING=1");
        n.notify("READY=1\nSTATUS=two at once").unwrap();
        assert_eq!(recv(), "READY=1\nSTATUS=two at once");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "fog-sdnotify-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let mut recv = receiver(&sock);

        let n = Notifier::to_path(format!("@{name}"));
        assert!(n.is_enabled());
        n.ready();
        assert_eq!(recv(), "READY=1");
        n.watchdog();
        assert_eq!(recv(), "WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        for n in [
            Notifier::default(),
            Notifier::to_path(""),
            Notifier::to_path("vsock:2:1234"),
        ] {
            assert!(!n.is_enabled());
            assert!(n.notify("READY=1").is_ok());
            n.ready();
            n.status("x");
        }
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_but_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::to_path(dir.path().join("gone.sock"));
        assert!(n.is_enabled());
        assert!(n.notify("READY=1").is_err());
        // The helpers swallow it (and log it once).
        n.ready();
        n.watchdog();
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(parse_watchdog(Some("30000000"), None, 42), half);
        assert_eq!(parse_watchdog(Some("30000000"), Some("42"), 42), half);
        assert_eq!(
            parse_watchdog(Some("1"), None, 42),
            Some(Duration::from_micros(1))
        );
    }

    #[test]
    fn watchdog_is_off_when_unset_zero_bad_or_for_another_process() {
        assert_eq!(parse_watchdog(None, None, 42), None);
        assert_eq!(parse_watchdog(None, Some("42"), 42), None);
        assert_eq!(parse_watchdog(Some("0"), None, 42), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 42), None);
        assert_eq!(parse_watchdog(Some("-5"), None, 42), None);
        assert_eq!(parse_watchdog(Some("30000000"), Some("41"), 42), None);
        assert_eq!(parse_watchdog(Some("30000000"), Some("pid"), 42), None);
    }
}
