//! The agent speaks systemd's notify protocol as a `Type=notify` unit with
//! `WatchdogSec=` needs: READY=1 once the store is open and the first connection
//! attempt is over (here the broker is down: ready anyway, backlogging), a readable
//! STATUS= line, WATCHDOG=1 while the loop turns, STOPPING=1 on SIGTERM, exit 0.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fog_e2e::brokers::{free_port, harness_bin};
use fog_e2e::process::{exit_within, signal};

#[test]
fn the_agent_reports_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // Nobody listens on this port: the agent must not wait for a broker to be ready.
    let port = free_port().expect("port");
    let cfg = dir.path().join("agent.toml");
    let trust = fog_e2e::trust_toml("sd-1", &dir.path().join("data"));
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"sd-1\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.2\nmetrics_interval_secs = 0.5\n{trust}[broker]\nurl = \"mqtt://127.0.0.1:{port}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.2\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(harness_bin("fog-test-agent").expect("harness agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        // 1 s watchdog: pings every 0.5 s.
        .env("WATCHDOG_USEC", "1000000")
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let mut got: Vec<String> = Vec::new();
    let mut recv_until = |pred: &dyn Fn(&[String]) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pred(&got) {
            assert!(Instant::now() < deadline, "no {what}; got {got:?}");
            let mut buf = [0u8; 1024];
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got.clone()
    };
    let seen = recv_until(&|g| g.iter().any(|m| m == "READY=1"), "READY=1");
    let status = seen
        .iter()
        .find(|m| m.starts_with("STATUS="))
        .expect("a status line before READY");
    assert!(status.contains("offline (broker unreachable)"), "{status}");
    // Readings made meanwhile are kept: the status line shows the backlog grow.
    let seen = recv_until(
        &|g| {
            g.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3
                && g.iter().any(|m| {
                    m.starts_with("STATUS=")
                        && m.contains("backlog")
                        && !m.contains("backlog empty")
                })
        },
        "three watchdog pings and a backlog",
    );
    assert!(seen.iter().all(|m| !m.contains('\n')), "{seen:?}");
    signal(&child, "TERM");
    recv_until(&|g| g.iter().any(|m| m == "STOPPING=1"), "STOPPING=1");
    let status = exit_within(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}
