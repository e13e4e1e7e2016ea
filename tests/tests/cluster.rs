//! Cluster mode end to end: coordinator processes sharing one real PostgreSQL (started
//! by the harness) and one broker, real agents, a client; one coordinator killed with
//! kill -9 under load loses nothing, and the client sees each task's one result.
//! Needs the `postgresql` package: `#[ignore]`d in `cargo test --workspace`, run by
//! `.ci/run` with `--include-ignored`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fog_coordinator::client::{self, Client};
use fog_e2e::postgres::TestPostgres;
use fog_e2e::{brokers::harness_bin, init_logging, FinalsTap, Resend, RunningAgent, TestBroker};
use fog_proto::{NodeState, Outcome, TaskResult, TaskSubmission, Topics};

const WAIT: Duration = Duration::from_secs(30);
/// Short, so the test is: the default is 5 s.
const LEASE_SECS: f64 = 2.0;

/// `serve` in cluster mode in its own process, killed (kill -9) when dropped.
struct ClusterCoordinator(Child);

impl ClusterCoordinator {
    fn start(id: &str, pg: &TestPostgres, broker: &TestBroker, dir: &Path) -> Self {
        let cfg = dir.join(format!("{id}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"{}\"\nstatus_interval_secs = 0.2\ndefault_heartbeat_interval_secs = 1.0\nhttp_listen = \"\"\n\
                 [cluster]\npostgres_url = \"{}\"\ncoordinator_id = \"{id}\"\nlease_secs = {LEASE_SECS}\n\
                 [security]\nallow_unsigned_submissions = true\nkey_dir = \"{}\"\nnodes_dir = \"{}\"\n\
                 [broker]\nurl = \"{}\"\nkeep_alive_secs = 5\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n",
                dir.join(id).display(),
                pg.url(),
                // One signing key for the cluster: the agents trust it.
                fog_e2e::keys_dir().display(),
                fog_e2e::keys_dir().join("nodes").display(),
                broker.url()
            ),
        )
        .expect("write config");
        let bin = harness_bin("fog-test-coordinator").expect("harness coordinator");
        let stderr = match std::env::var_os("FOG_TEST_LOG_DIR") {
            Some(d) => Stdio::from(
                std::fs::File::create(Path::new(&d).join(format!("{id}.log"))).expect("log file"),
            ),
            None => Stdio::null(),
        };
        ClusterCoordinator(
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

impl Drop for ClusterCoordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cluster for a test: coordinators on one PostgreSQL and one broker, agents, all
/// online and registered, a finals tap and a client.
struct Site {
    coordinators: Vec<ClusterCoordinator>,
    _agents: Vec<RunningAgent>,
    tap: FinalsTap,
    client: Client,
    // Last: dropped after the processes that use them.
    _dir: tempfile::TempDir,
    _broker: TestBroker,
}

impl Site {
    async fn start(pg: &TestPostgres, coordinators: &[&str], nodes: &[&str]) -> Site {
        let broker = TestBroker::start().expect("broker");
        let dir = tempfile::tempdir().expect("tempdir");
        let coordinators: Vec<_> = coordinators
            .iter()
            .map(|id| ClusterCoordinator::start(id, pg, &broker, dir.path()))
            .collect();
        let agents: Vec<RunningAgent> = nodes
            .iter()
            .map(|n| {
                RunningAgent::start(n, &broker.url(), "[pool]\nworkers = 4", "").expect("agent")
            })
            .collect();
        let cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
        agents_online(&cfg, nodes).await;
        let deadline = Instant::now() + WAIT;
        while registered(pg).len() < coordinators.len() {
            assert!(Instant::now() < deadline, "coordinators never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tap = FinalsTap::start(broker.addr).await;
        let client = Client::connect(&cfg, Topics::default(), Duration::from_secs(10))
            .await
            .expect("client connects");
        Site {
            coordinators,
            _agents: agents,
            tap,
            client,
            _dir: dir,
            _broker: broker,
        }
    }

    /// Send `subs` in lists of `per_list` (the broker hands each list to one
    /// coordinator); their ids.
    async fn submit(&mut self, subs: &[TaskSubmission], per_list: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in subs.chunks(per_list) {
            ids.extend(
                self.client
                    .submit_many(chunk.to_vec())
                    .await
                    .expect("submitted"),
            );
        }
        ids
    }
}

/// `n` `sleep` tasks of `ms` milliseconds, named `prefix-i`.
fn sleeps(prefix: &str, n: usize, ms: u32) -> Vec<TaskSubmission> {
    (0..n)
        .map(|i| {
            let mut s = client::submission("sleep", ms.to_string().into_bytes(), 0, WAIT, false);
            s.id = format!("{prefix}-{i}");
            s
        })
        .collect()
}

/// The coordinators' registrations, as the database has them.
fn registered(pg: &TestPostgres) -> Vec<String> {
    pg.with_client(|c| {
        c.query("SELECT id FROM fog_coordinators ORDER BY id", &[])
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// By owner: tasks, and of them unfinished.
fn owners(pg: &TestPostgres) -> HashMap<String, (i64, i64)> {
    pg.with_client(|c| {
        c.query(
            "SELECT owner, count(*), count(*) FILTER (WHERE finished_at IS NULL) FROM fog_tasks GROUP BY owner",
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
    })
    .expect("connects")
}

async fn agents_online(cfg: &fog_rt::broker::BrokerConfig, nodes: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) =
            fog_coordinator::status::fetch(cfg, &Topics::default(), Duration::from_secs(2)).await
        {
            let up = |n: &&str| {
                s.nodes
                    .iter()
                    .any(|x| x.node.as_str() == *n && x.state == NodeState::Online)
            };
            if nodes.iter().all(up) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents never came online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Results until `n` tasks have a final one (or `within` is over); with `settle`, then
/// whatever else comes within a second of the last (a duplicate would).
async fn finals_until(
    c: &mut Client,
    seen: &mut HashMap<String, Vec<TaskResult>>,
    accepted: &mut HashSet<String>,
    n: usize,
    within: Duration,
    settle: bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reached = seen.len() >= n;
        if reached && !settle {
            return;
        }
        let wait = if reached {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, c.next_result()).await {
            Ok(Ok(Some(r))) if matches!(r.outcome, Outcome::Accepted) => {
                accepted.insert(r.id);
            }
            Ok(Ok(Some(r))) => seen.entry(r.id.clone()).or_default().push(r),
            _ => return,
        }
    }
}

/// Each task has exactly one final result at the client, a completed one.
fn each_completed_once(
    ids: &[String],
    seen: &HashMap<String, Vec<TaskResult>>,
    resubmitted: usize,
) {
    for id in ids {
        let rs = seen.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            rs.len(),
            1,
            "task {id}: exactly one final result ({resubmitted} resubmitted), got {rs:?}"
        );
        assert!(
            matches!(rs[0].outcome, Outcome::Completed { .. }),
            "{id}: {:?}",
            rs[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_cluster_coordinator_killed_under_load_loses_nothing_and_its_tasks_move_on() {
    init_logging();
    let pg = TestPostgres::start().expect("postgres");
    let mut site = Site::start(&pg, &["coord-a", "coord-b", "coord-c"], &["c1", "c2", "c3"]).await;
    let n = 600;
    let subs = sleeps("cl", n, 20);
    let ids = site.submit(&subs, 20).await;
    let c = &mut site.client;
    let mut accepted = HashSet::new();
    let mut seen: HashMap<String, Vec<TaskResult>> = HashMap::new();
    finals_until(c, &mut seen, &mut accepted, n * 3 / 10, WAIT, false).await;
    assert!(
        seen.len() >= n * 3 / 10 && seen.len() < n,
        "30 % done before the kill: {}",
        seen.len()
    );
    site.coordinators[0].kill9();
    let killed = Instant::now();
    let owned = owners(&pg);
    assert!(
        owned
            .get("coord-a")
            .is_some_and(|(_, unfinished)| *unfinished > 0),
        "the killed coordinator must have held unfinished tasks: {owned:?}"
    );
    for id in ["coord-b", "coord-c"] {
        assert!(owned.contains_key(id), "the intake is shared: {owned:?}");
    }
    // What was never acknowledged is the client's to send again (same ids); it goes to
    // a survivor.
    let again: Vec<_> = subs
        .into_iter()
        .filter(|s| !accepted.contains(&s.id) && !seen.contains_key(&s.id))
        .collect();
    let resubmitted = again.len();
    site.submit(&again, 20).await;
    let c = &mut site.client;
    finals_until(c, &mut seen, &mut accepted, n, WAIT, true).await;
    // Less the second of settling.
    let took = killed.elapsed().saturating_sub(Duration::from_secs(1));
    each_completed_once(&ids, &seen, resubmitted);
    eprintln!(
        "cluster: {resubmitted} resubmitted; the load done {took:?} after the kill; owners at the kill {owned:?}"
    );
    let wire = site
        .tap
        .assert_exactly_once(&ids, Resend::IdenticalOnly)
        .await;
    for (id, r) in ids.iter().zip(&wire) {
        assert_eq!(seen.get(id).map(|rs| &rs[0]), Some(r), "{id}");
    }
    // The dead coordinator's tasks were taken over within its lease and a bit: the
    // rest of the load (at most 20 ms each on 12 workers) takes well under a second.
    assert!(
        took < Duration::from_secs_f64(LEASE_SECS + 8.0),
        "the load finished {took:?} after the kill"
    );
    let left: i64 = pg
        .with_client(|c| {
            c.query_one(
                "SELECT count(*) FROM fog_tasks WHERE owner = 'coord-a' AND finished_at IS NULL",
                &[],
            )
            .map(|r| r.get(0))
        })
        .expect("connects")
        .expect("query");
    assert_eq!(
        left, 0,
        "nothing unfinished is left with the dead coordinator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_coordinator_paused_past_its_lease_stops_when_it_wakes_and_nothing_is_answered_twice() {
    init_logging();
    let pg = TestPostgres::start().expect("postgres");
    let mut site = Site::start(&pg, &["coord-a", "coord-b"], &["p1", "p2"]).await;
    let n = 200;
    // Long enough that coord-a is paused with tasks of its own still running.
    let subs = sleeps("ps", n, 100);
    let ids = site.submit(&subs, 10).await;
    let mut accepted = HashSet::new();
    let mut seen: HashMap<String, Vec<TaskResult>> = HashMap::new();
    finals_until(
        &mut site.client,
        &mut seen,
        &mut accepted,
        n / 10,
        WAIT,
        false,
    )
    .await;
    fog_e2e::process::signal(&site.coordinators[0].0, "STOP");
    let owned = owners(&pg);
    assert!(
        owned
            .get("coord-a")
            .is_some_and(|(_, unfinished)| *unfinished > 0),
        "the paused coordinator must hold unfinished tasks: {owned:?}"
    );
    // Past its lease: coord-b adopts its tasks and finishes them.
    tokio::time::sleep(Duration::from_secs_f64(LEASE_SECS * 2.0)).await;
    fog_e2e::process::signal(&site.coordinators[0].0, "CONT");
    // It wakes, finds its lease gone and stops (a restart would register again).
    let exit = fog_e2e::process::exit_within(&mut site.coordinators[0].0, Duration::from_secs(10));
    assert!(
        !exit.success(),
        "a fenced coordinator exits with an error: {exit:?}"
    );
    let again: Vec<_> = subs
        .into_iter()
        .filter(|s| !accepted.contains(&s.id) && !seen.contains_key(&s.id))
        .collect();
    let resubmitted = again.len();
    site.submit(&again, 10).await;
    finals_until(&mut site.client, &mut seen, &mut accepted, n, WAIT, true).await;
    each_completed_once(&ids, &seen, resubmitted);
    // On the wire, too: never two different results for one task (a repeat of the
    // same record is what a resend is).
    site.tap
        .assert_exactly_once(&ids, Resend::IdenticalOnly)
        .await;
    let after = owners(&pg);
    assert!(
        after.values().all(|(_, unfinished)| *unfinished == 0),
        "nothing is left unfinished: {after:?} (at the pause: {owned:?})"
    );
}
