//! Fault injection: the broker stops and comes back, the backlog budget is too small,
//! the agent is killed with a backlog on disk, the agent is stopped with SIGTERM while
//! it runs tasks. Real broker processes, real signals, real files; each test ends with
//! an exact count of what arrived.
//!
//! The agent reaches the broker through a [`Proxy`] that can refuse connections, so a
//! test decides that the agent reconnects only after the test's own subscriber is back
//! (a plain subscriber has no session across a broker restart; without the gate,
//! whichever reconnects first decides what the test sees).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fog_coordinator::client::{self, Client};
use fog_e2e::brokers::harness_bin;
use fog_e2e::watcher::Arrived;
use fog_e2e::{
    init_logging, FinalsTap, Proxy, Resend, RunningAgent, RunningCoordinator, TestBroker, Watcher,
};
use fog_proto::{codec, NodeState, Outcome, Reading, Status, TaskResult, Topics};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// An agent config: readings every second (as the issue asks), fast reconnects.
fn agent_toml(node: &str, url: &str, data: &Path, extra_top: &str, store: &str) -> String {
    let trust = fog_e2e::trust_toml(node, data);
    format!(
        "node_id = \"{node}\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.5\nmetrics_interval_secs = 1.0\n{extra_top}\n{trust}\
         [broker]\nurl = \"{url}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.3\n\
         [store]\ncommit_interval_ms = 5\n{store}\n",
        data.display()
    )
}

fn in_process_agent(node: &str, url: &str, store: &str) -> RunningAgent {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = agent_toml(node, url, &dir.path().join("data"), "", store);
    let cfg = fog_agent::config::Config::from_toml(&text).expect("valid config");
    RunningAgent::start_with(cfg, dir)
}

/// A reading as the watcher saw it.
#[derive(Debug, Clone)]
struct Seen {
    reading: Reading,
    /// Wall clock at arrival, ms.
    arrived_ms: u64,
}

fn decode(a: &Arrived) -> Seen {
    Seen {
        reading: codec::decode::<Reading>(&a.payload).expect("a reading"),
        arrived_ms: now_ms().saturating_sub(a.at.elapsed().as_millis() as u64),
    }
}

/// Collect readings until `done` says so (or panic after WAIT).
async fn collect_until(w: &mut Watcher, all: &mut Vec<Seen>, done: impl Fn(&[Seen]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(all) {
        assert!(
            Instant::now() < deadline,
            "timed out; seqs so far: {:?}",
            all.iter().map(|s| s.reading.seq).collect::<Vec<_>>()
        );
        if let Some(a) = w.next(Duration::from_millis(200)).await {
            all.push(decode(&a));
        }
    }
}

/// Seq -> how many times it arrived.
fn counts(all: &[Seen]) -> BTreeMap<u64, usize> {
    let mut c = BTreeMap::new();
    for s in all {
        *c.entry(s.reading.seq).or_insert(0) += 1;
    }
    c
}

/// Stop the broker with the agent gated out; returns the wall time it went down.
///
/// Callers come here the moment a reading has arrived at the watcher. Its PUBACK is
/// then still on its way back through the broker and the proxy: a broker stopped in
/// that instant leaves the reading unacknowledged, and QoS 1 rightly sends it again
/// (CI saw exactly that once). So the outage begins at a quiet moment, 300 ms into
/// the 1 s between readings.
async fn outage_begins(broker: &mut TestBroker, proxy: &Proxy) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse(true);
    broker.stop();
    now_ms()
}

/// Start the broker, wait for the watcher to subscribe again, then let the agent in.
async fn outage_ends(broker: &mut TestBroker, proxy: &Proxy, w: &mut Watcher) -> u64 {
    broker.start_again().expect("broker restarts");
    w.wait_subscribed(2).await;
    proxy.refuse(false);
    now_ms()
}

/// Wait until a live reading made after the outage has arrived (everything replayed
/// before it), then three more seconds for duplicates to show.
async fn until_live_again(w: &mut Watcher, all: &mut Vec<Seen>, up_ms: u64) {
    collect_until(w, all, |a| {
        a.iter()
            .any(|s| s.reading.at_ms > up_ms + 1500 && s.reading.agent.forward_mode == "live")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    all.extend(w.drain().iter().map(decode));
}

/// A broker outage of `ms`, then everything until the agent is live again; returns
/// when the broker went down and when the agent was let back in (wall ms).
async fn outage(
    broker: &mut TestBroker,
    proxy: &Proxy,
    w: &mut Watcher,
    all: &mut Vec<Seen>,
    ms: u64,
) -> (u64, u64) {
    let down_ms = outage_begins(broker, proxy).await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let up_ms = outage_ends(broker, proxy, w).await;
    until_live_again(w, all, up_ms).await;
    (down_ms, up_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_made_while_the_broker_is_down_arrive_once_in_order_with_their_timestamps() {
    init_logging();
    let mut broker = TestBroker::start().expect("broker");
    let proxy = Proxy::start(broker.addr).await.expect("proxy");
    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/o1/metrics").await;
    let agent = in_process_agent("o1", &proxy.url(), "");
    let mut all = Vec::new();
    collect_until(&mut w, &mut all, |a| a.len() >= 2).await;

    let last_before = all.last().expect("two").reading.seq;
    let (down_ms, up_ms) = outage(&mut broker, &proxy, &mut w, &mut all, 5500).await;
    agent.stop().await;

    let c = counts(&all);
    let (first, last) = (
        *c.keys().next().expect("some"),
        *c.keys().last().expect("some"),
    );
    for seq in first..=last {
        assert_eq!(
            c.get(&seq),
            Some(&1),
            "reading {seq} must arrive exactly once: {c:?}"
        );
    }
    // Made during the outage: stored, then replayed in order with original timestamps.
    let mut outage: Vec<&Seen> = all
        .iter()
        .filter(|s| s.reading.at_ms > down_ms && s.reading.at_ms < up_ms)
        .collect();
    assert!(
        outage.len() >= 4,
        "about five readings made during a 5.5 s outage: {}",
        outage.len()
    );
    assert!(outage.iter().all(|s| s.reading.seq > last_before));
    let by_arrival: Vec<u64> = outage.iter().map(|s| s.reading.seq).collect();
    outage.sort_by_key(|s| s.reading.seq);
    let by_seq: Vec<u64> = outage.iter().map(|s| s.reading.seq).collect();
    assert_eq!(by_arrival, by_seq, "replayed in the order they were made");
    for pair in outage.windows(2) {
        let gap = pair[1].reading.at_ms - pair[0].reading.at_ms;
        assert!(
            // 1 s apart, give or take a loaded CI machine's scheduling.
            (500..=1500).contains(&gap),
            "original timestamps, 1 s apart: {gap} ms"
        );
    }
    // Live readings kept flowing while the backlog replayed: none waited an interval.
    for s in all.iter().filter(|s| s.reading.at_ms >= up_ms) {
        let delay = s.arrived_ms.saturating_sub(s.reading.at_ms);
        assert!(
            delay < 1000,
            "live reading {} delayed {delay} ms",
            s.reading.seq
        );
    }
    let end = &all
        .iter()
        .max_by_key(|s| s.reading.seq)
        .expect("some")
        .reading
        .agent;
    assert_eq!(end.backlog_dropped_total, 0);
    assert_eq!(end.backlog_entries, 0, "backlog drained");
    assert!(end.backlog_replayed_total >= outage.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_backlog_budget_drops_exactly_the_oldest_readings_and_counts_them() {
    init_logging();
    let mut broker = TestBroker::start().expect("broker");
    let proxy = Proxy::start(broker.addr).await.expect("proxy");
    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/o2/metrics").await;
    // 4 KiB holds only a few readings.
    let agent = in_process_agent("o2", &proxy.url(), "max_backlog_bytes = 4096");
    let mut all = Vec::new();
    collect_until(&mut w, &mut all, |a| a.len() >= 2).await;
    let reading_bytes = codec::encode(&all[1].reading, fog_proto::Encoding::Json)
        .expect("encodes")
        .len();

    let last_before = all.last().expect("two").reading.seq;
    let (down_ms, up_ms) = outage(&mut broker, &proxy, &mut w, &mut all, 7500).await;
    agent.stop().await;

    let c = counts(&all);
    assert!(c.values().all(|n| *n == 1), "nothing twice: {c:?}");
    let (first, last) = (
        *c.keys().next().expect("some"),
        *c.keys().last().expect("some"),
    );
    let missing: Vec<u64> = (first..=last).filter(|s| !c.contains_key(s)).collect();
    let dropped = all
        .iter()
        .map(|s| s.reading.agent.backlog_dropped_total)
        .max()
        .expect("some");
    assert!(
        dropped >= 2,
        "7 readings of {reading_bytes} bytes cannot fit in 4 KiB; dropped {dropped}"
    );
    assert_eq!(
        missing.len() as u64,
        dropped,
        "the drop count says how many: {missing:?}"
    );
    // The oldest went: the missing ones are one run, older than every stored one that
    // arrived.
    assert_eq!(missing.last().expect("some") - missing[0] + 1, dropped);
    // Made while the agent was offline during the outage (its own word, not a window
    // of wall time: a reading made after `up_ms` but before the agent got back in is
    // one of them too, and on a loaded machine it may be the only one the budget kept;
    // one made before its first connection is offline too, but not the outage's).
    let kept: Vec<&Seen> = all
        .iter()
        .filter(|s| s.reading.seq > last_before && s.reading.agent.forward_mode == "offline")
        .collect();
    let seen: Vec<(u64, u64, &str)> = all
        .iter()
        .map(|s| {
            (
                s.reading.seq,
                s.reading.at_ms,
                s.reading.agent.forward_mode.as_str(),
            )
        })
        .collect();
    let context = format!(
        "outage {down_ms}..{up_ms} ms, dropped {dropped}, missing {missing:?}, \
         arrived (seq, made at, mode): {seen:?}"
    );
    assert!(
        !kept.is_empty(),
        "the newest stored readings arrive: {context}"
    );
    assert!(
        kept.iter()
            .all(|s| s.reading.seq > *missing.last().expect("some")),
        "the ones kept are newer than every one dropped: {context}"
    );
    assert!(all.iter().all(|s| s.reading.agent.backlog_bytes <= 4096));
}

/// An agent in its own process (fog-test-agent), so it can be killed for real.
struct AgentProcess(Child);

impl AgentProcess {
    fn start(config: &Path) -> AgentProcess {
        let bin = harness_bin("fog-test-agent").expect("harness agent");
        AgentProcess(
            Command::new(bin)
                .args(["run", "--config"])
                .arg(config)
                .stderr(Stdio::null())
                .spawn()
                .expect("agent starts"),
        )
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }

    fn kill9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }

    /// Wait for it to exit on its own; its exit status.
    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_a_backlog_on_disk_loses_nothing_and_sends_nothing_twice() {
    init_logging();
    let mut broker = TestBroker::start().expect("broker");
    let proxy = Proxy::start(broker.addr).await.expect("proxy");
    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/o3/metrics").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("o3.toml");
    std::fs::write(
        &cfg,
        agent_toml("o3", &proxy.url(), &dir.path().join("data"), "", ""),
    )
    .expect("config");
    let mut agent = AgentProcess::start(&cfg);
    let mut all = Vec::new();
    collect_until(&mut w, &mut all, |a| a.len() >= 2).await;
    let last = all.last().expect("two").reading.clone();

    outage_begins(&mut broker, &proxy).await;
    // Readings are made at last.at_ms + k s. Kill half way between the third and the
    // fourth, so each of the three is durable (commits take milliseconds) and none is
    // being written.
    let kill_at = last.at_ms + 3500;
    tokio::time::sleep(Duration::from_millis(kill_at.saturating_sub(now_ms()))).await;
    agent.kill9();
    let restart_ms = now_ms();
    let mut again = AgentProcess::start(&cfg);
    // The new run stores its own readings behind the old ones.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let up_ms = outage_ends(&mut broker, &proxy, &mut w).await;
    let first_run = |s: &Seen| s.reading.at_ms < restart_ms;
    until_live_again(&mut w, &mut all, up_ms).await;
    again.signal("-TERM");
    assert!(again.exited(WAIT).await.success());

    let (one, two): (Vec<Seen>, Vec<Seen>) = all.into_iter().partition(first_run);
    let c1 = counts(&one);
    let first = *c1.keys().next().expect("first run");
    let expected: Vec<u64> = (first..=last.seq + 3).collect();
    assert_eq!(
        c1.keys().copied().collect::<Vec<_>>(),
        expected,
        "first run: every reading up to the kill, the three stored ones included"
    );
    assert!(
        c1.values().all(|n| *n == 1),
        "first run, nothing twice: {c1:?}"
    );
    let c2 = counts(&two);
    let max2 = *c2.keys().last().expect("second run");
    assert_eq!(
        c2.keys().copied().collect::<Vec<_>>(),
        (1..=max2).collect::<Vec<_>>(),
        "second run: from its first reading on"
    );
    assert!(
        c2.values().all(|n| *n == 1),
        "second run, nothing twice: {c2:?}"
    );
}

fn online(s: &fog_proto::CoordinatorStatus, node: &str) -> bool {
    s.nodes
        .iter()
        .any(|n| n.node.as_str() == node && n.state == NodeState::Online)
}

/// Each task ends once, completed, on t2.
async fn each_task_ends_once_completed_on_t2(c: &mut Client, ids: &[String]) {
    let mut done: HashMap<String, Vec<TaskResult>> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while done.len() < ids.len() && Instant::now() < deadline {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
        {
            if !matches!(r.outcome, Outcome::Accepted) {
                done.entry(r.id.clone()).or_default().push(r);
            }
        }
    }
    while let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
    {
        if !matches!(r.outcome, Outcome::Accepted) {
            done.entry(r.id.clone()).or_default().push(r);
        }
    }
    for id in ids {
        let rs = done
            .get(id)
            .unwrap_or_else(|| panic!("task {id} got no result"));
        assert_eq!(rs.len(), 1, "one result for {id}: {rs:?}");
        assert!(matches!(rs[0].outcome, Outcome::Completed { .. }), "{rs:?}");
        assert_eq!(rs[0].node.as_str(), "t2", "finished elsewhere");
    }
}

/// The retained record says offline, because of the shutdown (not the Last Will).
async fn the_retained_record_says_shutdown(status: &mut Watcher) {
    let mut last: Option<Status> = None;
    while let Some(a) = status.next(Duration::from_millis(500)).await {
        last = Some(codec::decode::<Status>(&a.payload).expect("status"));
    }
    let last = last.expect("a status record");
    assert!(!last.online);
    assert_eq!(last.reason, "shutdown");
}

/// Readings: every one t1 made before the SIGTERM arrived, once. Whatever it had
/// not sent when it stopped waits in its backlog, so start it again on the same
/// data dir and count both runs (a new run numbers its readings from 1 again).
async fn every_reading_of_the_first_run_arrives_once(
    cfg: &Path,
    readings: &mut Watcher,
    mut first_run: Vec<Reading>,
) {
    first_run.extend(readings.drain().iter().map(|a| decode(a).reading));
    let restarted_ms = now_ms();
    let mut again = AgentProcess::start(cfg);
    let mut second_run = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut replayed = Vec::new();
    while second_run.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted t1 sent no readings"
        );
        if let Some(a) = readings.next(Duration::from_millis(200)).await {
            let r = decode(&a).reading;
            if r.at_ms < restarted_ms {
                replayed.push(r);
            } else {
                second_run.push(r);
            }
        }
    }
    again.signal("-TERM");
    assert!(again.exited(WAIT).await.success());
    let mut seqs: Vec<u64> = first_run.iter().chain(&replayed).map(|r| r.seq).collect();
    seqs.sort_unstable();
    let made = seqs.last().copied().expect("t1 made readings");
    assert!(made >= 2, "t1 ran long enough to make readings: {seqs:?}");
    assert_eq!(
        seqs,
        (1..=made).collect::<Vec<_>>(),
        "every reading of the first run exactly once ({} replayed after the restart)",
        replayed.len()
    );
    assert!(
        first_run
            .iter()
            .chain(&replayed)
            .all(|r| r.agent.backlog_dropped_total == 0),
        "none dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_tasks_back_and_publishes_the_offline_record() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord = RunningCoordinator::start_toml(&broker.url(), "").expect("coordinator");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("t1.toml");
    std::fs::write(
        &cfg,
        agent_toml(
            "t1",
            &broker.url(),
            &dir.path().join("t1"),
            "shutdown_grace_secs = 0.5",
            "",
        ) + "[pool]\nworkers = 2\n",
    )
    .expect("config");
    let mut status = Watcher::start(broker.addr, "fog/v1/nodes/t1/status").await;
    let mut readings = Watcher::start(broker.addr, "fog/v1/nodes/t1/metrics").await;
    let mut tap = FinalsTap::start(broker.addr).await;
    let mut t1 = AgentProcess::start(&cfg);
    coord.wait_for("t1 online", WAIT, |s| online(s, "t1")).await;

    let ccfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    let mut c = Client::connect(&ccfg, Topics::default(), Duration::from_secs(10))
        .await
        .expect("client");
    // Four 3 s sleeps on t1's two workers: two run, two wait in its queue.
    let subs: Vec<_> = (0..4)
        .map(|_| client::submission("sleep", b"3000".to_vec(), 0, WAIT, false))
        .collect();
    let ids = c.submit_many(subs).await.expect("submitted");
    coord
        .wait_for("t1 running tasks", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "t1" && n.in_flight >= 4)
        })
        .await;
    let t2 = in_process_agent("t2", &broker.url(), "");
    coord.wait_for("t2 online", WAIT, |s| online(s, "t2")).await;

    // A few readings first, so there is something to lose.
    let mut first_run: Vec<Reading> = Vec::new();
    while first_run.len() < 2 {
        let a = readings.next(WAIT).await.expect("t1's readings");
        first_run.push(decode(&a).reading);
    }
    let stopped = Instant::now();
    t1.signal("-TERM");
    let exit = t1.exited(WAIT).await;
    assert!(exit.success(), "a graceful stop exits 0: {exit:?}");
    // 0.5 s of grace, then the hand-back and the goodbye: well before the 3 s the
    // tasks wanted.
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "0.5 s grace, not the 3 s the tasks wanted: exited after {took:?}"
    );

    each_task_ends_once_completed_on_t2(&mut c, &ids).await;
    the_retained_record_says_shutdown(&mut status).await;
    tap.assert_exactly_once(&ids, Resend::Never).await;
    assert_eq!(c.repeats_dropped(), 0);

    every_reading_of_the_first_run_arrives_once(&cfg, &mut readings, first_run).await;
    t2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_instead_of_waiting_for_the_grace_period() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("s1.toml");
    std::fs::write(
        &cfg,
        agent_toml(
            "s1",
            &broker.url(),
            &dir.path().join("s1"),
            "shutdown_grace_secs = 60",
            "",
        ),
    )
    .expect("config");
    let mut results = Watcher::start(broker.addr, "fog/v1/nodes/s1/results").await;
    let mut status = Watcher::start(broker.addr, "fog/v1/nodes/s1/status").await;
    let mut agent = AgentProcess::start(&cfg);
    status.next(WAIT).await.expect("birth record");

    // A 50 s task, sent straight to the agent.
    let list = fog_proto::TaskAssignments {
        seal: None,
        items: vec![fog_proto::TaskAssignment {
            id: "long".into(),
            attempt: 1,
            kind: "sleep".into(),
            payload: fog_proto::Payload(b"50000".to_vec()),
            timeout_ms: 60_000,
            priority: 0,
            deadline_ms: 0,
            cacheable: false,
        }],
    };
    let mut opts = rumqttc::MqttOptions::new("second-signal", "127.0.0.1", broker.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 8);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            "fog/v1/nodes/s1/tasks",
            rumqttc::QoS::AtLeastOnce,
            false,
            fog_e2e::signed_assignments("s1", list, fog_proto::Encoding::Json),
        )
        .await
        .expect("published");
    let accepted = results.next(WAIT).await.expect("accepted");
    let r = codec::decode::<fog_proto::TaskResults>(&accepted.payload).expect("results");
    assert!(matches!(r.items[0].outcome, Outcome::Accepted));

    let t = Instant::now();
    agent.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        agent.0.try_wait().expect("wait").is_none(),
        "first signal: graceful, waiting for the task"
    );
    agent.signal("-TERM");
    let exit = agent.exited(Duration::from_secs(5)).await;
    assert!(
        !exit.success(),
        "an impatient exit is not a clean one: {exit:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "not the 60 s grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_task_load_every_publish_has_been_acknowledged() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord = RunningCoordinator::start_toml(&broker.url(), "").expect("coordinator");
    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/u1/metrics").await;
    let agent = in_process_agent("u1", &broker.url(), "");
    coord.wait_for("u1 online", WAIT, |s| online(s, "u1")).await;
    let ccfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    let mut c = Client::connect(&ccfg, Topics::default(), Duration::from_secs(10))
        .await
        .expect("client");
    let n = 2000;
    let subs: Vec<_> = (0..n)
        .map(|i| client::submission("sha256", format!("t{i}").into_bytes(), 0, WAIT, false))
        .collect();
    c.submit_many(subs).await.expect("submitted");
    let mut finals = 0;
    let deadline = Instant::now() + WAIT;
    while finals < n && Instant::now() < deadline {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(1), c.next_result()).await
        {
            if !matches!(r.outcome, Outcome::Accepted) {
                finals += 1;
            }
        }
    }
    assert_eq!(finals, n);
    let done_ms = now_ms();
    // Results and readings were tracked publishes: each one's PUBACK came back, so
    // nothing is held in memory or left in the backlog.
    let deadline = Instant::now() + WAIT;
    loop {
        let a = w.next(WAIT).await.expect("a reading");
        let r = decode(&a).reading;
        if r.at_ms < done_ms {
            continue; // made during the load (or replayed from before the connection)
        }
        if r.agent.publish_unacked == 0 && r.agent.backlog_entries == 0 {
            assert_eq!(r.agent.forward_mode, "live");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unacknowledged: {} (backlog {})",
            r.agent.publish_unacked,
            r.agent.backlog_entries
        );
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossed_threshold_is_published_as_an_alert() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/al1/alerts").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Any machine uses more than 1 % of its memory: a warning at the first readings.
    let text = agent_toml("al1", &broker.url(), &dir.path().join("data"), "", "")
        + "[alerts]\nhold_secs = 0\n[alerts.memory]\nwarning_pct = 1.0\ncritical_pct = 99.99\n";
    let cfg = fog_agent::config::Config::from_toml(&text).expect("valid config");
    let agent = RunningAgent::start_with(cfg, dir);
    // Alerts for 3 s (other resources may be over their defaults on this machine).
    let mut memory = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Some(a) = w.next(Duration::from_millis(200)).await {
            let alert = codec::decode::<fog_proto::Alert>(&a.payload).expect("alert");
            if alert.resource == "memory" {
                memory.push(alert);
            }
        }
    }
    // Raised once and held, not repeated at every reading (three readings here).
    assert_eq!(memory.len(), 1, "{memory:?}");
    let alert = &memory[0];
    assert_eq!(alert.level, fog_proto::AlertLevel::Warning);
    assert_eq!(alert.threshold, 1.0);
    assert!(
        alert.value > 1.0 && alert.message.contains("memory"),
        "{alert:?}"
    );
    agent.stop().await;
}
