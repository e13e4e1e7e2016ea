//! `systemctl reload fog-agent` is SIGHUP to the agent binary: it rereads its config,
//! applies labels and intervals at once (a new retained birth record), says on its
//! STATUS= line which changes need a restart, and refuses a bad file whole while it
//! keeps running on the previous one.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fog_e2e::brokers::{harness_bin, TestBroker};
use fog_e2e::process::{exit_within, signal};
use fog_e2e::watcher::Watcher;

fn config(dir: &std::path::Path, broker: &str, room: &str, keep_alive: u32, extra: &str) -> String {
    let data = dir.join("data");
    let trust = fog_e2e::trust_toml("reload-1", &data);
    format!(
        "node_id = \"reload-1\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.2\nmetrics_interval_secs = 0.5\n{extra}\n[labels]\nroom = \"{room}\"\n{trust}[broker]\nurl = \"{broker}\"\nkeep_alive_secs = {keep_alive}\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.2\n",
        data.display()
    )
}

/// The agent process, killed if the test fails before it stops it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hup(child: &Child) {
    signal(child, "HUP");
}

/// The STATUS= lines the agent sent, read until one satisfies `pred`.
fn status_until(sock: &UnixDatagram, pred: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no STATUS= {what}; last: {last:?}"
        );
        let mut buf = [0u8; 2048];
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(s) = msg.strip_prefix("STATUS=") {
                if pred(s) {
                    return s.to_owned();
                }
                last = s.to_owned();
            }
        }
    }
}

/// The birth record of the next online status record on the watcher.
async fn next_birth(status: &mut Watcher) -> serde_json::Value {
    loop {
        let m = status
            .next(Duration::from_secs(20))
            .await
            .expect("a status record");
        let mut v: serde_json::Value = serde_json::from_slice(&m.payload).expect("status is JSON");
        if v["online"] == true {
            return v["birth"].take();
        }
    }
}

/// The room label of the next online status record on the watcher.
async fn next_room(status: &mut Watcher) -> String {
    let birth = next_birth(status).await;
    birth["labels"]["room"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_labels_names_restart_keys_and_refuses_a_bad_file() {
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, config(dir.path(), &broker.url(), "barn", 5, "")).expect("config");
    let mut status = Watcher::start(broker.addr, "fog/v1/nodes/reload-1/status").await;
    let mut heartbeats = Watcher::start(broker.addr, "fog/v1/nodes/reload-1/heartbeat").await;
    let mut agent = Agent(
        Command::new(harness_bin("fog-test-agent").expect("harness agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts"),
    );
    let child = &mut agent.0;
    assert_eq!(next_room(&mut status).await, "barn");
    status_until(&sock, |s| s.starts_with("live"), "live (connected)");

    // A live change and a restart-only one: the label is applied, keep_alive is named.
    std::fs::write(&cfg, config(dir.path(), &broker.url(), "loft", 7, "")).expect("config");
    hup(child);
    assert_eq!(next_room(&mut status).await, "loft");
    let line = status_until(&sock, |s| s.contains("restart to apply"), "restart note");
    assert!(line.contains("broker"), "{line}");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the agent exited"
    );

    // A bad file is refused whole: still running, same birth, said on STATUS=.
    std::fs::write(
        &cfg,
        "heartbeat_interval_secs = \"often\"\n[labels]\nroom = \"attic\"\n",
    )
    .expect("config");
    hup(child);
    let line = status_until(&sock, |s| s.contains("config reload refused"), "refusal");
    assert!(line.contains("heartbeat_interval_secs"), "{line}");
    heartbeats.drain();
    heartbeats
        .next(Duration::from_secs(5))
        .await
        .expect("heartbeats go on after a refused reload");
    let since = status.drain();
    assert!(
        since
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.payload).contains("attic")),
        "a refused file was applied"
    );

    // Fixed again: the note is gone.
    std::fs::write(&cfg, config(dir.path(), &broker.url(), "loft", 5, "")).expect("config");
    hup(child);
    status_until(
        &sock,
        |s| !s.contains("refused") && !s.contains("restart to apply"),
        "a clean line",
    );
    signal(child, "TERM");
    let exit = exit_within(child, Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");
}

/// The task trust in the next online status record on the watcher.
async fn next_trust(status: &mut Watcher) -> String {
    let birth = next_birth(status).await;
    birth["task_trust"].as_str().unwrap_or_default().to_owned()
}

/// `fog-agent trust add` then `systemctl reload`: the config file itself is unchanged,
/// only the trusted-keys folder has a new key. The reload trusts it and says so in a
/// new birth record (before, the birth kept `no_trusted_key` until a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_trusts_a_key_added_to_the_folder_and_announces_it() {
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("trusted-keys");
    std::fs::create_dir_all(&keys).expect("keys folder");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"reload-2\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.2\n[trust]\nkeys_dir = \"{}\"\n[broker]\nurl = \"{}\"\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.2\n",
            dir.path().join("data").display(),
            keys.display(),
            broker.url()
        ),
    )
    .expect("config");
    let mut status = Watcher::start(broker.addr, "fog/v1/nodes/reload-2/status").await;
    let mut agent = Agent(
        Command::new(harness_bin("fog-test-agent").expect("harness agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts"),
    );
    let child = &mut agent.0;
    assert_eq!(next_trust(&mut status).await, "no_trusted_key");

    // What `fog-agent trust add LINE` writes.
    let pair = fog_e2e::coordinator_key();
    let key = pair.public();
    std::fs::write(
        keys.join(format!("{}.pub", key.id())),
        format!("{}\n", key.line()),
    )
    .expect("key file");
    hup(child);
    assert_eq!(next_trust(&mut status).await, "signed");

    signal(child, "TERM");
    let exit = exit_within(child, Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");
}
