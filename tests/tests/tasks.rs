//! Tasks end to end against a real broker: built-ins through the coordinator, a command
//! fed a hostile payload, rejections by the agent, a redelivered id run once, kill -9
//! with accepted tasks, and busy agents shedding load to others.

use std::time::Duration;

use fog_coordinator::client::{self, Client};
use fog_coordinator::registry::LivenessConfig;
use fog_e2e::{
    brokers::harness_bin, init_logging, FinalsTap, Resend, RunningAgent, RunningCoordinator,
    TestBroker,
};
use fog_proto::{
    codec, Encoding, NodeState, Outcome, Payload, TaskAssignment, TaskAssignments, TaskResult,
    TaskResults, Topics,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

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

fn output(r: &TaskResult) -> &[u8] {
    match &r.outcome {
        Outcome::Completed { output, .. } => &output.0,
        other => panic!("not completed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_ins_run_through_the_coordinator() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let agent = RunningAgent::start("tasks-1", &broker.url(), "", "").expect("agent");
    coord
        .wait_for("agent online", WAIT, |s| online(s, "tasks-1"))
        .await;
    let mut c = client(&broker).await;

    let r = client::submit_and_wait(
        &mut c,
        client::submission("echo", b"hi \x00\xff".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("echo");
    assert_eq!(output(&r), b"hi \x00\xff");
    let r = client::submit_and_wait(
        &mut c,
        client::submission("sha256", b"abc".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("sha256");
    assert_eq!(
        output(&r),
        b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let r = client::submit_and_wait(
        &mut c,
        client::submission("sleep", b"50".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("sleep");
    assert!(
        matches!(r.outcome, Outcome::Completed { duration_ms, .. } if duration_ms >= 50),
        "{r:?}"
    );
    let r = client::submit_and_wait(
        &mut c,
        client::submission(
            "sleep",
            b"5000".to_vec(),
            0,
            Duration::from_millis(100),
            false,
        ),
        WAIT,
    )
    .await
    .expect("sleep past its timeout");
    assert!(matches!(r.outcome, Outcome::TimedOut { .. }), "{r:?}");
    // Cacheable: the second identical request is answered from the agent's cache.
    let a = client::submit_and_wait(
        &mut c,
        client::submission("sha256", b"cache me".to_vec(), 0, WAIT, true),
        WAIT,
    )
    .await
    .expect("first");
    let b = client::submit_and_wait(
        &mut c,
        client::submission("sha256", b"cache me".to_vec(), 0, WAIT, true),
        WAIT,
    )
    .await
    .expect("second");
    assert_eq!(output(&a), output(&b));
    assert!(
        matches!(
            b.outcome,
            Outcome::Completed {
                from_cache: true,
                ..
            }
        ),
        "{b:?}"
    );
    // No agent runs it: a clear answer from the coordinator.
    let r = client::submit_and_wait(
        &mut c,
        client::submission("resize", b"x".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("answer");
    assert!(
        matches!(r.outcome, Outcome::Rejected { ref reason, .. } if reason.contains("resize")),
        "{r:?}"
    );
    c.close().await;
    agent.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_task_gets_a_hostile_payload_on_stdin_only() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let canary = tempfile::tempdir().expect("tempdir");
    let marker = canary.path().join("pwned");
    // `printf %s "$@"` would print injected argv; wc -c counts stdin.
    let extra = "[tasks.count]\ncommand = \"/usr/bin/wc\"\nargs = [\"-c\"]\ntimeout_secs = 5\n[tasks.cat]\ncommand = \"/bin/cat\"\ntimeout_secs = 5\nmax_output_bytes = 100000\n";
    let agent = RunningAgent::start("cmd-1", &broker.url(), extra, "").expect("agent");
    coord
        .wait_for("agent online", WAIT, |s| online(s, "cmd-1"))
        .await;
    let mut c = client(&broker).await;
    let hostile = format!(
        "$(touch {m}); `touch {m}`; touch {m} && rm -rf / ; | & > {m} \\\" ' \n\x00",
        m = marker.display()
    );
    let r = client::submit_and_wait(
        &mut c,
        client::submission("cat", hostile.clone().into_bytes(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("cat");
    assert_eq!(
        output(&r),
        hostile.as_bytes(),
        "the payload came back byte for byte"
    );
    let big = vec![b'$'; 600_000];
    let r = client::submit_and_wait(
        &mut c,
        client::submission("count", big, 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("count");
    assert_eq!(String::from_utf8_lossy(output(&r)).trim(), "600000");
    // Output past max_output_bytes is cut and says so.
    let r = client::submit_and_wait(
        &mut c,
        client::submission("cat", vec![b'z'; 200_000], 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("cat");
    assert!(
        matches!(&r.outcome, Outcome::Completed { output, truncated: true, .. } if output.0.len() == 100_000),
        "{:?}",
        r.outcome
    );
    assert!(!marker.exists(), "no shell ever ran the payload");
    c.close().await;
    agent.stop().await;
    coord.stop().await;
}

/// Publish straight to an agent's tasks topic and read its results topic (no coordinator).
struct Direct {
    client: AsyncClient,
    results: tokio::sync::mpsc::UnboundedReceiver<TaskResult>,
}

impl Direct {
    async fn start(broker: &TestBroker, node: &str) -> Direct {
        let mut opts = MqttOptions::new(format!("direct-{node}"), "127.0.0.1", broker.addr.port());
        opts.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut el) = AsyncClient::new(opts, 64);
        client
            .subscribe(format!("fog/v1/nodes/{node}/results"), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let (tx, results) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(list) = codec::decode::<TaskResults>(&p.payload) {
                            for r in list.items {
                                let _ = tx.send(r);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        ready_rx.await.expect("subscribed");
        Direct { client, results }
    }

    async fn send(&self, node: &str, a: &TaskAssignment) {
        self.client
            .publish(
                format!("fog/v1/nodes/{node}/tasks"),
                QoS::AtLeastOnce,
                false,
                fog_e2e::signed_assignments(
                    node,
                    TaskAssignments {
                        seal: None,
                        items: vec![a.clone()],
                    },
                    Encoding::Json,
                ),
            )
            .await
            .expect("publish");
    }

    /// Probe with echo tasks until the agent answers (it has subscribed), then drain.
    async fn wait_until_listening(&mut self, node: &str) {
        for probe in 0..100 {
            self.send(node, &assignment(&format!("probe-{probe}"), "echo", b"p"))
                .await;
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), self.results.recv()).await
            {
                while tokio::time::timeout(Duration::from_millis(300), self.results.recv())
                    .await
                    .is_ok()
                {}
                return;
            }
        }
        panic!("agent {node} never answered");
    }

    async fn send_raw(&self, node: &str, bytes: Vec<u8>) {
        self.client
            .publish(
                format!("fog/v1/nodes/{node}/tasks"),
                QoS::AtLeastOnce,
                false,
                bytes,
            )
            .await
            .expect("publish");
    }

    /// The next final (non-Accepted) result.
    async fn next_final(&mut self) -> TaskResult {
        loop {
            let r = tokio::time::timeout(WAIT, self.results.recv())
                .await
                .expect("a result in time")
                .expect("open");
            // A late answer to a start-up probe is not what the test waits for.
            if !matches!(r.outcome, Outcome::Accepted) && !r.id.starts_with("probe-") {
                return r;
            }
        }
    }
}

fn assignment(id: &str, kind: &str, payload: &[u8]) -> TaskAssignment {
    TaskAssignment {
        id: id.into(),
        attempt: 1,
        kind: kind.into(),
        payload: Payload(payload.to_vec()),
        timeout_ms: 10_000,
        priority: 0,
        deadline_ms: 0,
        cacheable: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rejects_what_it_must_not_run_and_runs_a_redelivered_id_once() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let log = tempfile::tempdir().expect("tempdir");
    let runs = log.path().join("runs");
    std::fs::write(&runs, "").expect("create");
    // A command with a visible side effect: one line per run.
    let extra = format!(
        "[pool]\nmax_task_bytes = 65536\n[tasks.mark]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo run >> {}; cat\"]\ntimeout_secs = 5\n",
        runs.display()
    );
    let agent = RunningAgent::start("direct-1", &broker.url(), &extra, "").expect("agent");
    let mut d = Direct::start(&broker, "direct-1").await;
    d.wait_until_listening("direct-1").await;

    d.send("direct-1", &assignment("u1", "rm", b"-rf /")).await;
    let r = d.next_final().await;
    assert!(
        matches!(&r.outcome, Outcome::Rejected { reason, retryable: false } if reason.contains("\"rm\"") && reason.contains("not allowed")),
        "{r:?}"
    );

    d.send("direct-1", &assignment("big", "echo", &vec![0u8; 70_000]))
        .await;
    let r = d.next_final().await;
    assert!(
        matches!(&r.outcome, Outcome::Rejected { reason, retryable: false } if reason.contains("too large")),
        "{r:?}"
    );

    d.send_raw("direct-1", b"{\"v\":1,\"id\":".to_vec()).await; // malformed: dropped, counted
                                                                // Redelivery: the same id three times runs once; every copy gets the same answer.
    let a = assignment("once", "mark", b"payload");
    d.send("direct-1", &a).await;
    let first = d.next_final().await;
    assert_eq!(output(&first), b"payload");
    d.send("direct-1", &a).await;
    d.send("direct-1", &a).await;
    let again = d.next_final().await;
    let third = d.next_final().await;
    assert_eq!(again, first, "answered from the store");
    assert_eq!(third, first);
    // The agent remembers only the last 4096 finished ids in memory; an older one is
    // still answered from the store, never run again.
    // In rounds the agent's queue (64) and a broker's per-subscriber queue take.
    for round in 0..84 {
        for i in 0..50 {
            let id = format!("filler-{round}-{i}");
            d.send("direct-1", &assignment(&id, "echo", b"x")).await;
        }
        for _ in 0..50 {
            let r = d.next_final().await;
            assert!(matches!(r.outcome, Outcome::Completed { .. }), "{r:?}");
        }
    }
    d.send("direct-1", &a).await;
    let late = d.next_final().await;
    assert_eq!(late, first, "answered from the store after leaving memory");
    assert_eq!(
        std::fs::read_to_string(&runs)
            .expect("read")
            .lines()
            .count(),
        1,
        "ran exactly once"
    );
    agent.stop().await;
}

/// With `store.rerun_after_restart`, the agent kept each payload and runs the tasks it
/// had accepted again after a kill -9: each ends with exactly one completed result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_with_accepted_tasks_then_restart_runs_each_once_more() {
    kill_nine_then_restart(true).await;
}

/// By default payloads stay with the coordinator's journal, not on the node: after a
/// kill -9 each task the agent had accepted and not finished is handed back once
/// (rejected, retryable; the coordinator places it again); none is forgotten or run
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_with_accepted_tasks_then_restart_hands_each_back_once() {
    kill_nine_then_restart(false).await;
}

async fn kill_nine_then_restart(rerun: bool) {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    let trust = fog_e2e::trust_toml("k9", &dir.path().join("data"));
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"k9\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.2\n[pool]\nworkers = 1\nqueue_capacity = 64\n[store]\nrerun_after_restart = {rerun}\n{trust}[broker]\nurl = \"{}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n",
            dir.path().join("data").display(),
            broker.url()
        ),
    )
    .expect("write config");
    let bin = harness_bin("fog-test-agent").expect("harness agent");
    let spawn = || {
        std::process::Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agent starts")
    };
    let mut agent = spawn();
    let mut d = Direct::start(&broker, "k9").await;
    d.wait_until_listening("k9").await;

    // Ten 300 ms sleeps on one worker: most are accepted and still queued when we kill it.
    let ids: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for id in &ids {
        d.send("k9", &assignment(id, "sleep", b"300")).await;
    }
    let mut accepted = 0;
    while accepted < 10 {
        let r = tokio::time::timeout(WAIT, d.results.recv())
            .await
            .expect("acks")
            .expect("open");
        if matches!(r.outcome, Outcome::Accepted) {
            accepted += 1;
        }
    }
    agent.kill().expect("kill -9");
    agent.wait().expect("reaped");
    let mut finals: std::collections::HashMap<String, u32> = Default::default();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), d.results.recv()).await
    {
        if !matches!(r.outcome, Outcome::Accepted) {
            *finals.entry(r.id).or_default() += 1;
        }
    }
    let before_restart = finals.len();
    assert!(
        before_restart < 10,
        "the kill came too late to test anything ({before_restart} finished)"
    );

    let mut agent = spawn();
    let deadline = tokio::time::Instant::now() + WAIT;
    while finals.len() < 10 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(500), d.results.recv()).await
        {
            if !matches!(r.outcome, Outcome::Accepted) {
                if rerun {
                    assert!(matches!(r.outcome, Outcome::Completed { .. }), "{r:?}");
                } else {
                    assert!(
                        matches!(
                            &r.outcome,
                            Outcome::Rejected {
                                retryable: true,
                                reason,
                            } if reason.contains("restarted")
                        ),
                        "{r:?}"
                    );
                }
                *finals.entry(r.id).or_default() += 1;
            }
        }
    }
    // Linger for duplicates.
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), d.results.recv()).await
    {
        if !matches!(r.outcome, Outcome::Accepted) {
            *finals.entry(r.id).or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            finals.get(id),
            Some(&1),
            "task {id}: results {finals:?} ({before_restart} finished before the kill)"
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_agents_shed_load_to_the_others() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    // "tiny-q": one worker and a queue of one. "tiny-arena": a 64 KiB arena holding
    // at most one 24 KiB payload. "roomy": the defaults.
    let a = RunningAgent::start(
        "tiny-q",
        &broker.url(),
        "[pool]\nworkers = 1\nqueue_capacity = 1",
        "",
    )
    .expect("agent");
    let b = RunningAgent::start(
        "tiny-arena",
        &broker.url(),
        "[pool]\nworkers = 4\narena_bytes = 65536\nmax_task_bytes = 32768",
        "",
    )
    .expect("agent");
    let c_agent = RunningAgent::start("roomy", &broker.url(), "", "").expect("agent");
    coord
        .wait_for("three agents", WAIT, |s| {
            ["tiny-q", "tiny-arena", "roomy"]
                .iter()
                .all(|n| online(s, n))
        })
        .await;
    let mut tap = FinalsTap::start(broker.addr).await;
    let mut c = client(&broker).await;
    let n = 24;
    let payload = {
        // "200" then padding the sleep parser ignores? No: sleep needs a number, so use
        // a 24 KiB echo payload for arena pressure and sleeps for queue pressure.
        vec![b'p'; 24 * 1024]
    };
    let mut ids = Vec::new();
    for i in 0..n {
        let sub = if i % 2 == 0 {
            client::submission("sleep", b"200".to_vec(), 0, WAIT, false)
        } else {
            let mut s = client::submission("sleep", b"200".to_vec(), 0, WAIT, false);
            s.kind = "echo".into();
            s.payload = Payload(payload.clone());
            s
        };
        ids.push(c.submit(sub).await.expect("submitted"));
    }
    let mut seen: std::collections::HashMap<String, u32> = Default::default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < n && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
        {
            if !matches!(r.outcome, Outcome::Accepted) {
                assert!(
                    matches!(r.outcome, Outcome::Completed { .. }),
                    "every task completes somewhere: {r:?}"
                );
                *seen.entry(r.id).or_default() += 1;
            }
        }
    }
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "{id}: {seen:?}");
    }
    // Busy refusals are re-placed, never answered to the client: one final each on
    // the wire too.
    tap.assert_exactly_once(&ids, Resend::Never).await;
    assert_eq!(c.repeats_dropped(), 0);
    let snap = coord
        .wait_for("counters published", WAIT, |s| {
            s.counters
                .get("tasks_completed_total")
                .copied()
                .unwrap_or(0)
                >= n as u64
        })
        .await;
    let replaced = snap
        .counters
        .get("tasks_replaced_total")
        .copied()
        .unwrap_or(0);
    eprintln!("replaced after busy rejections: {replaced}");
    assert!(
        replaced > 0,
        "the small agents refused some work as busy: {:#?}",
        snap.counters
    );
    c.close().await;
    a.stop().await;
    b.stop().await;
    c_agent.stop().await;
    coord.stop().await;
}
