//! Signals to a binary a suite started, and waiting for it to exit: what systemd does
//! to the agent (`systemctl reload` is SIGHUP, `stop` is SIGTERM).

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Send `sig` (`TERM`, `HUP`, ...) to `child` with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// `child`'s exit status once it has exited; panics if it is still running after
/// `within`.
pub fn exit_within(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "pid {} still running after {within:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
