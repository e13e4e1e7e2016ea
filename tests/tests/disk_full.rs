//! The store's filesystem fills up (a small tmpfs, filled by the test): the agent keeps
//! publishing live readings, answers tasks it cannot record as busy (retryable, so a
//! coordinator places them elsewhere), reports the store as degraded, logs it once,
//! and recovers by itself once space returns.
//!
//! Mounting a tmpfs needs root: CI runs as root; elsewhere the test says it was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fog_e2e::brokers::harness_bin;
use fog_e2e::{init_logging, RunningCoordinator, TestBroker, Watcher};
use fog_proto::{
    codec, Encoding, Outcome, Payload, Reading, TaskAssignment, TaskAssignments, TaskResults,
};
use rumqttc::{AsyncClient, MqttOptions, QoS};

const WAIT: Duration = Duration::from_secs(30);

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().expect("id runs");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs")
            .success();
        assert!(ok, "root but cannot mount a tmpfs at {}", at.display());
        Some(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros until the filesystem is full; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = f.flush();
    path
}

fn assignment(id: &str) -> TaskAssignment {
    TaskAssignment {
        id: id.to_owned(),
        attempt: 1,
        kind: "echo".into(),
        // Big enough that storing its result (echo returns it) needs fresh pages.
        payload: Payload(vec![7u8; 256 * 1024]),
        timeout_ms: 5_000,
        priority: 0,
        deadline_ms: 0,
        cacheable: false,
    }
}

/// The next reading, also kept in `all` for the final count.
async fn next_reading(w: &mut Watcher, all: &mut Vec<Reading>) -> Reading {
    let a = w.next(WAIT).await.expect("a reading");
    let r = codec::decode::<Reading>(&a.payload).expect("reading");
    all.push(r.clone());
    r
}

/// Final answers by task id, as the results topic carries them.
async fn finals(w: &mut Watcher, want: usize) -> Vec<(String, Outcome)> {
    let mut got: Vec<(String, Outcome)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want && Instant::now() < deadline {
        if let Some(a) = w.next(Duration::from_millis(200)).await {
            for r in codec::decode::<TaskResults>(&a.payload)
                .expect("results")
                .items
            {
                if !matches!(r.outcome, Outcome::Accepted) {
                    got.push((r.id, r.outcome));
                }
            }
        }
    }
    got
}

/// Publishes assignments straight to d1, as the coordinator would.
struct Tasks(AsyncClient);

impl Tasks {
    fn connect(port: u16) -> Tasks {
        let mut opts = MqttOptions::new("disk-full-test", "127.0.0.1", port);
        opts.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        Tasks(client)
    }

    async fn send(&self, ids: &[&str]) {
        let list = TaskAssignments {
            seal: None,
            items: ids.iter().map(|id| assignment(id)).collect(),
        };
        let bytes = fog_e2e::signed_assignments("d1", list, Encoding::Json);
        self.0
            .publish("fog/v1/nodes/d1/tasks", QoS::AtLeastOnce, false, bytes)
            .await
            .expect("published");
    }
}

/// Agent d1 as a process with its data on `data`; its log goes to `log_path`.
fn start_agent(dir: &Path, data: &Path, broker: &TestBroker, log_path: &Path) -> Child {
    let cfg = dir.join("d1.toml");
    let trust = fog_e2e::trust_toml("d1", data);
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"d1\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.5\nmetrics_interval_secs = 0.5\n{trust}[broker]\nurl = \"{}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.3\n",
            data.display(),
            broker.url()
        ),
    )
    .expect("config");
    Command::new(harness_bin("fog-test-agent").expect("agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("FOG_AGENT_LOG", "info,fog_agent::store=debug")
        .stderr(std::fs::File::create(log_path).expect("log"))
        .stdout(Stdio::null())
        .spawn()
        .expect("agent starts")
}

/// The disk is full. Accepted records are small (payloads stay with the
/// coordinator), so the first task may still be recorded; its 256 KiB result then
/// cannot be, and is published anyway. The first failed write marks the store
/// degraded, and from then on every task is refused as busy (retryable) because of
/// the store, never dropped and never answered twice.
async fn tasks_are_refused_once_the_store_fails(tasks: &Tasks, results: &mut Watcher) {
    let mut refused = 0;
    let mut completed_on_a_full_disk = 0;
    for i in 0..8 {
        let id = format!("full-{i}");
        tasks.send(&[id.as_str()]).await;
        let got = finals(results, 1).await;
        assert_eq!(got.len(), 1, "{id} answered: {got:?}");
        assert_eq!(got[0].0, id);
        match &got[0].1 {
            Outcome::Rejected {
                retryable: true,
                reason,
            } if reason.contains("store") => refused += 1,
            Outcome::Completed { .. } if refused == 0 => completed_on_a_full_disk += 1,
            o => panic!("{id}: neither refused because of the store nor completed before the store failed: {o:?}"),
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "tasks refused as busy once the store failed");
    // Only the first can have been recorded: storing its result is the failed write.
    assert!(
        completed_on_a_full_disk <= 1,
        "{completed_on_a_full_disk} tasks completed after the disk filled"
    );
}

/// Readings keep coming, saying the store is degraded, and the coordinator's status
/// (what `fog-coordinator status` prints) says so too.
async fn readings_report_the_store_degraded(
    readings: &mut Watcher,
    seen: &mut Vec<Reading>,
    coord: &mut RunningCoordinator,
) {
    let mut degraded_seen = 0;
    for _ in 0..4 {
        let r = next_reading(readings, seen).await;
        if r.agent.degraded == ["store"] {
            degraded_seen += 1;
        }
    }
    coord
        .wait_for("d1 reported with a degraded store", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "d1" && n.degraded == ["store"])
        })
        .await;
    assert!(
        degraded_seen >= 3,
        "readings flow and report the store degraded"
    );
}

/// Space returns: the store reopens and probes by itself (backoff at most 8 s).
async fn the_store_recovers(readings: &mut Watcher, seen: &mut Vec<Reading>, log_path: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = next_reading(readings, seen).await;
        if r.agent.degraded.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store still degraded: {:?}\n{}",
            r.agent.degraded,
            std::fs::read_to_string(log_path).unwrap_or_default()
        );
    }
}

/// Readings: live all along (the broker was up), so every one made arrived once, in
/// order, the full disk notwithstanding; the failure and the recovery logged once.
async fn every_reading_arrived_and_each_change_was_logged_once(
    readings: &mut Watcher,
    mut seen: Vec<Reading>,
    log_path: &Path,
) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    for a in readings.drain() {
        seen.push(codec::decode::<Reading>(&a.payload).expect("reading"));
    }
    let seqs: Vec<u64> = seen.iter().map(|r| r.seq).collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "no reading lost or repeated while the disk was full"
    );
    assert!(seen.iter().all(|r| r.agent.backlog_dropped_total == 0));
    let log = std::fs::read_to_string(log_path).expect("log");
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("store writes fail"), 1, "logged once:\n{log}");
    assert_eq!(
        count("store writes succeed again"),
        1,
        "recovery logged once:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_store_without_stopping_readings_and_recovers() {
    init_logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mnt) = Tmpfs::mount(&dir.path().join("mnt"), 8 << 20) else {
        // CI runs as root: there a skip would hide the test, so it is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but this is not root: the full-disk test cannot run"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let broker = TestBroker::start().expect("broker");
    let mut coord = RunningCoordinator::start_toml(&broker.url(), "").expect("coordinator");
    let mut readings = Watcher::start(broker.addr, "fog/v1/nodes/d1/metrics").await;
    let mut results = Watcher::start(broker.addr, "fog/v1/nodes/d1/results").await;
    let log_path = dir.path().join("agent.log");
    let mut agent = start_agent(dir.path(), &mnt.0.join("data"), &broker, &log_path);

    let mut seen: Vec<Reading> = Vec::new();
    next_reading(&mut readings, &mut seen).await;

    let tasks = Tasks::connect(broker.addr.port());
    // Healthy: a task is recorded and runs.
    tasks.send(&["before"]).await;
    let got = finals(&mut results, 1).await;
    assert!(matches!(got[0].1, Outcome::Completed { .. }), "{got:?}");

    let filler = fill(&mnt.0);
    tasks_are_refused_once_the_store_fails(&tasks, &mut results).await;
    readings_report_the_store_degraded(&mut readings, &mut seen, &mut coord).await;

    std::fs::remove_file(&filler).expect("free space");
    the_store_recovers(&mut readings, &mut seen, &log_path).await;
    tasks.send(&["after"]).await;
    let got = finals(&mut results, 1).await;
    assert!(matches!(got[0].1, Outcome::Completed { .. }), "{got:?}");

    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let exit = agent.wait().expect("reaped");
    assert!(exit.success(), "a clean exit after the recovery: {exit:?}");
    every_reading_arrived_and_each_change_was_logged_once(&mut readings, seen, &log_path).await;
}
