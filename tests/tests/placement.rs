//! Placement end to end against a real broker: an agent killed with kill -9 under load
//! loses nothing, and a node whose breaker is open gets no tasks until its probes
//! succeed. (Busy agents shedding load to the others is in tasks.rs.)

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fog_coordinator::client::{self, Client};
use fog_e2e::{
    brokers::harness_bin, init_logging, FinalsTap, Resend, RunningAgent, RunningCoordinator,
    TestBroker,
};
use fog_proto::{NodeState, Outcome, TaskResult, Topics};

const WAIT: Duration = Duration::from_secs(30);

fn online(s: &fog_proto::CoordinatorStatus, node: &str) -> bool {
    s.nodes
        .iter()
        .any(|n| n.node.as_str() == node && n.state == NodeState::Online)
}

async fn client(broker: &TestBroker) -> Client {
    let cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    Client::connect(&cfg, Topics::default(), Duration::from_secs(10))
        .await
        .expect("client connects")
}

/// An agent in its own process, killed (kill -9) when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn start(node: &str, broker: &TestBroker, dir: &Path) -> Self {
        let cfg = dir.join(format!("{node}.toml"));
        let trust = fog_e2e::trust_toml(node, &dir.join(node));
        std::fs::write(
            &cfg,
            format!(
                "node_id = \"{node}\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.2\n[pool]\nworkers = 2\nqueue_capacity = 512\n{trust}[broker]\nurl = \"{}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n",
                dir.join(node).display(),
                broker.url()
            ),
        )
        .expect("write config");
        let bin = harness_bin("fog-test-agent").expect("harness agent");
        AgentProcess(
            Command::new(bin)
                .args(["run", "--config"])
                .arg(&cfg)
                .stderr(Stdio::null())
                .spawn()
                .expect("agent starts"),
        )
    }

    fn kill9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `check` task, waited for.
async fn run(c: &mut Client) -> TaskResult {
    let sub = client::submission("check", b"x".to_vec(), 0, Duration::from_secs(10), false);
    client::submit_and_wait(c, sub, WAIT)
        .await
        .expect("a result")
}

/// Collect final results until `n` distinct ids have one, then linger for duplicates.
async fn finals(c: &mut Client, n: usize, linger: Duration) -> HashMap<String, Vec<TaskResult>> {
    let mut seen: HashMap<String, Vec<TaskResult>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < n && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
        {
            if !matches!(r.outcome, Outcome::Accepted) {
                seen.entry(r.id.clone()).or_default().push(r);
            }
        }
    }
    while let Ok(Ok(Some(r))) = tokio::time::timeout(linger, c.next_result()).await {
        if !matches!(r.outcome, Outcome::Accepted) {
            seen.entry(r.id.clone()).or_default().push(r);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_under_load_loses_nothing() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord = RunningCoordinator::start_toml(&broker.url(), "").expect("coordinator");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agents: Vec<AgentProcess> = ["k1", "k2", "k3"]
        .iter()
        .map(|n| AgentProcess::start(n, &broker, dir.path()))
        .collect();
    coord
        .wait_for("three agents", WAIT, |s| {
            ["k1", "k2", "k3"].iter().all(|n| online(s, n))
        })
        .await;
    let mut tap = FinalsTap::start(broker.addr).await;
    let mut c = client(&broker).await;
    // 300 sleeps of 40 ms on 3 x 2 workers: about 2 s of work, so the killed agent has
    // plenty accepted and queued when it dies.
    let n = 300;
    let subs: Vec<_> = (0..n)
        .map(|_| client::submission("sleep", b"40".to_vec(), 0, WAIT, false))
        .collect();
    let ids = c.submit_many(subs).await.expect("submitted");
    let mut early: HashMap<String, Vec<TaskResult>> = HashMap::new();
    while early.len() < 30 {
        let r = tokio::time::timeout(WAIT, c.next_result())
            .await
            .expect("results flow")
            .expect("client ok")
            .expect("open");
        if !matches!(r.outcome, Outcome::Accepted) {
            early.entry(r.id.clone()).or_default().push(r);
        }
    }
    agents[0].kill9();
    let mut seen = finals(&mut c, n - early.len(), Duration::from_secs(1)).await;
    for (id, rs) in early {
        seen.entry(id).or_default().extend(rs);
    }
    for id in &ids {
        let rs = seen.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            rs.len(),
            1,
            "task {id}: exactly one final result, got {rs:?}"
        );
        assert!(
            matches!(rs[0].outcome, Outcome::Completed { .. }),
            "{id}: {:?}",
            rs[0]
        );
    }
    let snap = coord
        .wait_for("counters", WAIT, |s| {
            s.counters
                .get("tasks_completed_total")
                .copied()
                .unwrap_or(0)
                >= n as u64
        })
        .await;
    let lost = snap
        .counters
        .get("tasks_node_lost_total")
        .copied()
        .unwrap_or(0);
    assert!(
        lost > 0,
        "the kill must have caught tasks in flight: {:?}",
        snap.counters
    );
    let replaced: Vec<&TaskResult> = seen.values().flatten().filter(|r| r.attempt > 1).collect();
    assert!(
        replaced.iter().all(|r| r.node.as_str() != "k1"),
        "re-placed tasks ran elsewhere"
    );
    assert_eq!(
        replaced.len() as u64,
        lost,
        "every lost task ran again exactly once"
    );
    // What crossed the broker, not what the client chose to hand out: one final each.
    tap.assert_exactly_once(&ids, Resend::Never).await;
    assert_eq!(c.repeats_dropped(), 0, "no repeat hidden by the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_gets_no_tasks_until_its_probes_succeed() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord = RunningCoordinator::start_toml(
        &broker.url(),
        "[placement]\nstrategy = \"round_robin\"\n[breaker]\nfailures_to_open = 3\nopen_secs = 5.0\nsuccesses_to_close = 2\n",
    )
    .expect("coordinator");
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken");
    std::fs::write(&broken, b"").expect("flag");
    // The same kind everywhere; on "flaky" it fails while the flag file exists.
    let check = |cmd: &str| {
        format!(
            "[tasks.check]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"{cmd}\"]\ntimeout_secs = 5\n"
        )
    };
    let flaky = check(&format!("test ! -e {} && exec /bin/cat", broken.display()));
    let _a = RunningAgent::start("flaky", &broker.url(), &flaky, "").expect("agent");
    let _b =
        RunningAgent::start("good-1", &broker.url(), &check("exec /bin/cat"), "").expect("agent");
    let _c =
        RunningAgent::start("good-2", &broker.url(), &check("exec /bin/cat"), "").expect("agent");
    coord
        .wait_for("three agents", WAIT, |s| {
            ["flaky", "good-1", "good-2"].iter().all(|n| online(s, n))
        })
        .await;
    let mut c = client(&broker).await;
    // Round robin: every third task lands on flaky and fails, until three failures
    // open its breaker.
    let mut flaky_failures = 0;
    for _ in 0..30 {
        let r = run(&mut c).await;
        if r.node.as_str() == "flaky" {
            assert!(matches!(r.outcome, Outcome::Failed { .. }), "{r:?}");
            flaky_failures += 1;
            if flaky_failures == 3 {
                break;
            }
        } else {
            assert!(matches!(r.outcome, Outcome::Completed { .. }), "{r:?}");
        }
    }
    assert_eq!(flaky_failures, 3);
    // Open: nothing goes to flaky.
    let opened = tokio::time::Instant::now();
    for _ in 0..8 {
        let r = run(&mut c).await;
        assert_ne!(r.node.as_str(), "flaky", "an open breaker got a task");
    }
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "the check outlived the open period"
    );
    // Fixed; once the open period is over, probes go to flaky, succeed, and close it.
    std::fs::remove_file(&broken).expect("unflag");
    tokio::time::sleep(Duration::from_millis(5100).saturating_sub(opened.elapsed())).await;
    let mut on_flaky = 0;
    for _ in 0..12 {
        let r = run(&mut c).await;
        assert!(matches!(r.outcome, Outcome::Completed { .. }), "{r:?}");
        if r.node.as_str() == "flaky" {
            on_flaky += 1;
        }
    }
    assert!(
        on_flaky >= 3,
        "closed again: flaky back in the rotation ({on_flaky} of 12)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_advice_is_published_retained_and_shown_in_status() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    // Targets no real fleet meets (1 % memory), over a short window: "scale up", to the
    // bound.
    let mut coord = RunningCoordinator::start_toml(
        &broker.url(),
        "[scaling]\ntarget_cpu_pct = 1.0\ntarget_mem_pct = 1.0\nwindow_secs = 0.4\nmax_nodes = 2\n",
    )
    .expect("coordinator");
    let _a = RunningAgent::start("s1", &broker.url(), "", "").expect("agent");
    let snap = coord
        .wait_for("scaling advice in the status", WAIT, |s| {
            s.scaling.is_some()
        })
        .await;
    let advice = snap.scaling.clone().expect("advice");
    assert_eq!(
        advice.direction,
        fog_proto::ScaleDirection::Up,
        "{advice:?}"
    );
    assert_eq!(
        (advice.current_nodes, advice.desired_nodes),
        (1, 2),
        "{advice:?}"
    );
    let table = fog_coordinator::status::render_table(&snap, fog_rt::clock::now_ms());
    assert!(
        table.contains("scaling: scale up (1 -> 2 nodes)"),
        "{table}"
    );
    // A late subscriber gets it retained.
    let cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    let mut link = fog_rt::transport::Link::start(fog_rt::transport::LinkOptions {
        broker: cfg,
        client_id: "scaling-reader".into(),
        will: None,
        on_connect: Vec::new(),
        subscriptions: vec![(
            Topics::default().scaling(),
            fog_rt::transport::Qos::AtLeastOnce,
        )],
        max_packet_bytes: 64 * 1024,
        queue: 16,
    })
    .expect("link");
    let got = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(fog_rt::transport::LinkEvent::Message { payload, .. }) =
                link.next_event().await
            {
                return fog_proto::codec::decode::<fog_proto::ScalingAdvice>(&payload)
                    .expect("decodes");
            }
        }
    })
    .await
    .expect("retained advice");
    assert_eq!(got.desired_nodes, 2);
}

/// `serve` in its own process on a data dir, killed (kill -9) when dropped.
struct CoordinatorProcess(Child);

impl CoordinatorProcess {
    fn start(broker: &TestBroker, dir: &Path) -> Self {
        let cfg = dir.join("coordinator.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"{}\"\nstatus_interval_secs = 0.1\ndefault_heartbeat_interval_secs = 1.0\n[security]\nallow_unsigned_submissions = true\nkey_dir = \"{}\"\nnodes_dir = \"{}\"\n[broker]\nurl = \"{}\"\nkeep_alive_secs = 5\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n",
                dir.join("state").display(),
                fog_e2e::keys_dir().display(),
                fog_e2e::keys_dir().join("nodes").display(),
                broker.url()
            ),
        )
        .expect("write config");
        let bin = harness_bin("fog-test-coordinator").expect("harness coordinator");
        // With FOG_TEST_LOG set, each run logs to coordinator-<pid>.log in the temp dir.
        let stderr = match std::env::var_os("FOG_TEST_LOG_DIR") {
            Some(d) => Stdio::from(
                std::fs::File::create(
                    Path::new(&d).join(format!("coordinator-{}.log", fastrand::u32(..))),
                )
                .expect("log file"),
            ),
            None => Stdio::null(),
        };
        CoordinatorProcess(
            Command::new(bin)
                .arg(&cfg)
                .stderr(stderr)
                .spawn()
                .expect("coordinator starts"),
        )
    }

    fn kill9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until the coordinator's status shows c1, c2 and c3 online.
async fn c_agents_online(cfg: &fog_rt::broker::BrokerConfig) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) =
            fog_coordinator::status::fetch(cfg, &Topics::default(), Duration::from_secs(2)).await
        {
            if ["c1", "c2", "c3"].iter().all(|n| online(&s, n)) {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents never came online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Final results until there is one for each of `n` tasks (or `WAIT` is over), then
/// whatever else comes within a second of the last.
async fn rest_of_finals(c: &mut Client, seen: &mut HashMap<String, Vec<TaskResult>>, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < n && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
        {
            if !matches!(r.outcome, Outcome::Accepted) {
                seen.entry(r.id.clone()).or_default().push(r);
            }
        }
    }
    while let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
    {
        if !matches!(r.outcome, Outcome::Accepted) {
            seen.entry(r.id.clone()).or_default().push(r);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_under_load_loses_no_accepted_task() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut coordinator = CoordinatorProcess::start(&broker, dir.path());
    let _agents: Vec<RunningAgent> = ["c1", "c2", "c3"]
        .iter()
        .map(|n| RunningAgent::start(n, &broker.url(), "[pool]\nworkers = 2", "").expect("agent"))
        .collect();
    let cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    c_agents_online(&cfg).await;
    let mut tap = FinalsTap::start(broker.addr).await;
    let mut c = client(&broker).await;
    let n = 240;
    let subs: Vec<_> = (0..n)
        .map(|i| {
            let mut s = client::submission("sleep", b"30".to_vec(), 0, WAIT, false);
            s.id = format!("ck-{i}");
            s
        })
        .collect();
    let ids = c.submit_many(subs.clone()).await.expect("submitted");
    let mut accepted = std::collections::HashSet::new();
    let mut seen: HashMap<String, Vec<TaskResult>> = HashMap::new();
    while seen.len() < 40 {
        let r = tokio::time::timeout(WAIT, c.next_result())
            .await
            .expect("results flow")
            .expect("client ok")
            .expect("open");
        match r.outcome {
            Outcome::Accepted => {
                accepted.insert(r.id);
            }
            _ => seen.entry(r.id.clone()).or_default().push(r),
        }
    }
    coordinator.kill9();
    let accepted_before_kill = accepted.len();
    let mut coordinator = CoordinatorProcess::start(&broker, dir.path());
    // What was never acknowledged is the client's to send again (same ids).
    let again: Vec<_> = subs
        .into_iter()
        .filter(|s| !accepted.contains(&s.id) && !seen.contains_key(&s.id))
        .collect();
    let resubmitted = again.len();
    if !again.is_empty() {
        c.submit_many(again).await.expect("resubmitted");
    }
    rest_of_finals(&mut c, &mut seen, n).await;
    for id in &ids {
        let rs = seen.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            rs.len(),
            1,
            "task {id}: exactly one final result ({accepted_before_kill} accepted before the kill, {resubmitted} resubmitted), got {rs:?}"
        );
        assert!(
            matches!(rs[0].outcome, Outcome::Completed { .. }),
            "{id}: {:?}",
            rs[0]
        );
    }
    // On the wire: one final per task, or the same record again where the restarted
    // coordinator relayed a journaled result a second time (at-least-once around a
    // crash); never two different ones.
    let wire = tap.assert_exactly_once(&ids, Resend::IdenticalOnly).await;
    for (id, r) in ids.iter().zip(&wire) {
        assert_eq!(
            seen.get(id).map(|rs| &rs[0]),
            Some(r),
            "the client handed out what the wire carried first"
        );
    }
    let s = fog_coordinator::status::fetch(&cfg, &Topics::default(), Duration::from_secs(5))
        .await
        .expect("status");
    let restored = s.counters.get("tasks_restored_total").copied().unwrap_or(0);
    assert!(
        restored > 0,
        "the restart must have had accepted tasks to restore: {:?}",
        s.counters
    );
    coordinator.kill9();
}

/// Every id the tap saw a final result for (a bench names its own ids).
async fn tap_ids(tap: &mut FinalsTap) -> Vec<String> {
    tap.settle(Duration::from_secs(1)).await;
    tap.ids()
}

/// What `fog-coordinator bench --fleet 3 --kill-agent-after SECS` does, as a test: an
/// in-process fleet, one agent killed mid-run, nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fleet_failover_loses_nothing() {
    init_logging();
    let mut fleet = fog_coordinator::fleet::Fleet::start(3, Default::default())
        .await
        .expect("fleet");
    let addr = format!("{}:{}", fleet.broker_cfg.host, fleet.broker_cfg.port)
        .parse()
        .expect("loopback address");
    let mut tap = FinalsTap::start(addr).await;
    let mut c = Client::connect(
        &fleet.broker_cfg,
        Topics::default(),
        Duration::from_secs(10),
    )
    .await
    .expect("client");
    let n = 3000;
    let opts = client::BenchOptions {
        kind: "sha256".into(),
        tasks: n,
        concurrency: 500,
        rate: None,
        payload_bytes: 4096,
        wait: Duration::from_secs(20),
        strategy: String::new(),
        progress: false,
    };
    let (report, killed) = {
        let run = client::bench(&mut c, &opts);
        tokio::pin!(run);
        let kill = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(kill);
        let mut killed = None;
        let report = loop {
            tokio::select! {
                r = &mut run => break r.expect("bench"),
                _ = &mut kill, if killed.is_none() => killed = fleet.kill_one(),
            }
        };
        (report, killed)
    };
    assert!(killed.is_some(), "the run ended before the kill: {report}");
    assert_eq!((report.lost, report.duplicated), (0, 0), "{report}");
    assert_eq!(report.completed, n, "{report}");
    // The bench's own count includes what the client dropped; the tap counts the wire.
    let ids: Vec<String> = tap_ids(&mut tap).await;
    assert_eq!(ids.len(), n, "one id per task on the wire");
    tap.assert_exactly_once(&ids, Resend::Never).await;
    fleet.stop().await;
}
