//! A real host (redb store, worker pool, arena) and a real forwarder, driven the way
//! the service loop drives them, one event at a time, so every step is deterministic.
//! The forwarder's link never connects (its "broker" is a socket nobody accepts on),
//! so what the host publishes goes to the backlog, one entry per result list.

use fog_proto::SCHEMA_VERSION;

use super::*;
use crate::forward::{ClassTopics, ReplayLimits};
use crate::store::backlog::Removed;
use crate::transport::{Link, LinkOptions};

/// How long any one store commit or job may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);

struct Rig {
    host: TaskHost,
    fwd: Forwarder,
    commits: tokio::sync::mpsc::UnboundedReceiver<Committed<Token>>,
    jobs: tokio::sync::mpsc::Receiver<JobResult>,
    _removed: tokio::sync::mpsc::UnboundedReceiver<Removed>,
    /// Every result the host published, in order.
    published: Vec<TaskResult>,
    _broker: std::net::TcpListener,
    // Last: the store and the backlog close their database before it is removed.
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bound and never accepted: the link stays "connecting" for the whole test.
    let broker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = broker.local_addr().expect("addr").port();
    let config = Config::from_toml(&format!(
        "node_id = \"test-node\"\n\
         data_dir = {:?}\n\
         [broker]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
         [pool]\nworkers = 1\nqueue_capacity = 8\narena_bytes = 262144\n\
         max_task_bytes = 65536\nbuiltins = [\"echo\", \"sleep\"]\n\
         [store]\ncommit_interval_ms = 1\n",
        dir.path().display().to_string(),
    ))
    .expect("valid config");
    let (pool_tx, jobs) = tokio::sync::mpsc::channel(64);
    let (commit_tx, commits) = tokio::sync::mpsc::unbounded_channel();
    let (identity, _) =
        crate::trust::Identity::load_or_create(dir.path(), "test-node").expect("node key");
    let gate = crate::trust::Gate::new(
        vec![coordinator().public().clone()],
        "test-node",
        Duration::from_secs(300),
        false,
    );
    let host = TaskHost::start(&config, Arc::new(identity), gate, pool_tx, commit_tx)
        .expect("host starts");
    let (removed_tx, removed) = tokio::sync::mpsc::unbounded_channel();
    let backlog = host.open_backlog(&config, removed_tx).expect("backlog");
    let link = Link::start(LinkOptions {
        broker: config.broker.clone(),
        client_id: "fog-agent-host-test".into(),
        will: None,
        on_connect: Vec::new(),
        subscriptions: Vec::new(),
        max_packet_bytes: packet_limit(config.pool.max_task_bytes),
        queue: 64,
    })
    .expect("link");
    let fwd = Forwarder::new(
        link,
        backlog,
        ClassTopics {
            readings: "m".into(),
            alerts: "a".into(),
            results: "r".into(),
        },
        ReplayLimits {
            per_sec: 100,
            in_flight: 32,
        },
    );
    Rig {
        host,
        fwd,
        commits,
        jobs,
        _removed: removed,
        published: Vec::new(),
        _broker: broker,
        _dir: dir,
    }
}

fn assignment(id: &str, payload: &str) -> TaskAssignment {
    TaskAssignment {
        id: id.into(),
        attempt: 1,
        kind: "echo".into(),
        payload: Payload(payload.as_bytes().to_vec()),
        timeout_ms: 5_000,
        priority: 0,
        deadline_ms: 0,
        cacheable: false,
    }
}

/// The coordinator key the rig's host trusts.
fn coordinator() -> &'static fog_rt::keys::KeyPair {
    static KEY: std::sync::OnceLock<fog_rt::keys::KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| fog_rt::keys::KeyPair::generate().expect("key").0)
}

/// A list signed by [`coordinator`] for the rig's node, now.
fn wire(items: Vec<TaskAssignment>, encoding: Encoding) -> Vec<u8> {
    let mut list = TaskAssignments { items, seal: None };
    fog_rt::keys::seal(&mut list, coordinator(), "test-node", now_ms()).expect("seals");
    codec::encode(&list, encoding).expect("encodes")
}

/// [finished, rejected, duplicates, malformed, cache_hits, cache_misses]
fn counts(c: TaskCounters) -> [u64; 6] {
    [
        c.finished,
        c.rejected,
        c.duplicates,
        c.malformed,
        c.cache_hits,
        c.cache_misses,
    ]
}

fn label(o: &Outcome) -> String {
    match o {
        Outcome::Accepted => "accepted".into(),
        Outcome::Completed { output, .. } => {
            format!("completed {}", String::from_utf8_lossy(&output.0))
        }
        Outcome::Rejected { reason, .. } => format!("rejected {reason}"),
        Outcome::Failed { error, .. } => format!("failed {error}"),
        Outcome::TimedOut { .. } => "timed out".into(),
    }
}

impl Rig {
    /// A message on the tasks topic, then the flush the service's timer would do.
    fn send(&mut self, bytes: &[u8]) {
        self.host.on_assignments(&mut self.fwd, bytes);
        self.flush();
    }

    /// Publish the host's outbox through the forwarder and record what went out.
    fn flush(&mut self) {
        let queued: Vec<TaskResult> = self.host.outbox.iter().cloned().collect();
        let before = self.fwd.backlogged_total();
        self.host.flush(&mut self.fwd);
        assert_eq!(self.host.outbox_len(), 0, "flush empties the outbox");
        assert_eq!(
            self.fwd.backlogged_total() - before,
            u64::from(!queued.is_empty()),
            "a flush publishes one list (into the backlog: the link is down)"
        );
        self.published.extend(queued);
    }

    async fn next_commit(&mut self) -> Committed<Token> {
        tokio::time::timeout(WAIT, self.commits.recv())
            .await
            .expect("a store commit in time")
            .expect("store running")
    }

    /// The next store commit must be the acceptance of `id`; hand it to the host.
    async fn accepted(&mut self, id: &str) {
        let c = self.next_commit().await;
        match &c.token {
            Token::Accepted(job) => assert_eq!(job.id, id, "next accepted task"),
            Token::Finished { result } => {
                panic!("expected {id} accepted, got {} finished", result.id)
            }
        }
        assert_eq!(c.result, Ok(()));
        self.host.on_committed(&mut self.fwd, c);
        self.flush();
    }

    /// The next job the pool finishes must be `id`; hand it to the host.
    async fn ran(&mut self, id: &str) {
        let r = tokio::time::timeout(WAIT, self.jobs.recv())
            .await
            .expect("a job result in time")
            .expect("pool running");
        assert_eq!(r.id, id, "next job the pool ran");
        self.host.on_result(r);
    }

    /// The next store commit must be the result of `id`; hand it to the host.
    async fn finished(&mut self, id: &str) {
        let c = self.next_commit().await;
        match &c.token {
            Token::Finished { result } => assert_eq!(result.id, id, "next finished task"),
            Token::Accepted(job) => panic!("expected {id} finished, got {} accepted", job.id),
        }
        assert_eq!(c.result, Ok(()));
        self.host.on_committed(&mut self.fwd, c);
        self.flush();
    }

    /// What was published for `id`, in order (all under attempt 1, from this node).
    fn outcomes(&self, id: &str) -> Vec<String> {
        self.published
            .iter()
            .filter(|r| r.id == id)
            .inspect(|r| {
                assert_eq!(r.attempt, 1);
                assert_eq!(r.node.as_str(), "test-node");
            })
            .map(|r| label(&r.outcome))
            .collect()
    }

    /// Nothing queued anywhere: no store write or job result pending, nothing in
    /// flight, nothing waiting to be published.
    fn assert_idle(&mut self) {
        assert!(self.commits.try_recv().is_err(), "no store commit pending");
        assert!(self.jobs.try_recv().is_err(), "no job result pending");
        assert_eq!(self.host.in_flight(), 0);
        assert_eq!(self.host.outbox_len(), 0);
        let load = self.host.pool().load();
        assert_eq!((load.queued, load.running), (0, 0));
    }
}

#[tokio::test]
async fn each_malformed_assignment_is_counted_once_and_answered_with_nothing() {
    let mut r = rig();
    let limit = r.host.decode_limit;

    let two = wire(
        vec![assignment("t1", "one"), assignment("t2", "two")],
        Encoding::Json,
    );
    let truncated = two[..two.len() / 2].to_vec();
    let current = format!("{{\"v\":{SCHEMA_VERSION},");
    let newer = String::from_utf8(two.clone()).expect("json").replacen(
        &current,
        &format!("{{\"v\":{},", SCHEMA_VERSION + 1),
        1,
    );
    assert!(newer.starts_with(&format!("{{\"v\":{},", SCHEMA_VERSION + 1)));
    // Well-formed but larger than this node's limit: refused before parsing. (Were it
    // parsed, its payload would be rejected as too large: `rejected` would move.)
    let oversized = wire(
        vec![TaskAssignment {
            payload: Payload(vec![b'x'; limit]),
            ..assignment("big", "")
        }],
        Encoding::Json,
    );
    assert!(oversized.len() > limit);
    codec::decode_with_limit::<TaskAssignments>(&oversized, usize::MAX)
        .expect("only its size is wrong");

    let cases: [(&str, Vec<u8>); 6] = [
        ("not json", b"this is not json".to_vec()),
        ("empty", Vec::new()),
        ("truncated json list", truncated),
        (
            "wrong shape",
            format!(r#"{{"v":{SCHEMA_VERSION},"items":"none"}}"#).into_bytes(),
        ),
        ("unknown schema version", newer.into_bytes()),
        ("oversized", oversized),
    ];
    for (n, (what, bytes)) in cases.iter().enumerate() {
        assert!(
            codec::decode_with_limit::<TaskAssignments>(bytes, limit).is_err(),
            "{what} must not decode"
        );
        r.send(bytes);
        assert_eq!(
            counts(r.host.counters),
            [0, 0, 0, n as u64 + 1, 0, 0],
            "{what}: malformed +1, nothing else"
        );
        assert!(r.published.is_empty(), "{what}: nothing published");
        assert_eq!(r.fwd.stats().len(), 0, "{what}: nothing in the backlog");
        r.assert_idle();
    }

    // The host still takes a good assignment, and it is the first thing stored and
    // run (nothing was stored or queued for the malformed ones before it).
    r.send(&wire(vec![assignment("good", "hello")], Encoding::Json));
    assert_eq!(r.host.in_flight(), 1);
    r.accepted("good").await;
    r.ran("good").await;
    r.finished("good").await;
    assert_eq!(r.outcomes("good"), ["accepted", "completed hello"]);
    assert_eq!(r.published.len(), 2);
    assert_eq!(counts(r.host.counters), [1, 0, 0, 6, 0, 0]);
    assert_eq!(r.host.pool().completed_total(), 1);
    r.assert_idle();
}

#[tokio::test]
async fn good_assignment_lists_are_not_counted_as_malformed() {
    let mut r = rig();
    let json = wire(
        vec![
            assignment("j1", "a"),
            assignment("j2", "bb"),
            assignment("j3", "ccc"),
        ],
        Encoding::Json,
    );
    r.send(&json);
    assert_eq!(counts(r.host.counters), [0; 6]);
    // The node's encoding is only what it publishes: it takes either.
    r.send(&wire(vec![assignment("p1", "dddd")], Encoding::Postcard));
    assert_eq!(counts(r.host.counters), [0; 6]);
    assert_eq!(r.host.in_flight(), 4);
    let ids = ["j1", "j2", "j3", "p1"];
    for id in ids {
        r.accepted(id).await;
    }
    for id in ids {
        r.ran(id).await;
        r.finished(id).await;
    }
    for (id, out) in ids.into_iter().zip(["a", "bb", "ccc", "dddd"]) {
        assert_eq!(
            r.outcomes(id),
            ["accepted".to_owned(), format!("completed {out}")]
        );
    }
    assert_eq!(counts(r.host.counters), [4, 0, 0, 0, 0, 0]);
    r.assert_idle();
}

#[tokio::test]
async fn a_duplicate_of_a_task_in_flight_is_counted_and_not_run_again() {
    let mut r = rig();
    let a = wire(vec![assignment("a", "hello")], Encoding::Json);

    // Accepting (its store write not yet durable).
    r.send(&a);
    assert_eq!(counts(r.host.counters), [0; 6]);
    r.send(&a);
    assert_eq!(counts(r.host.counters), [0, 0, 1, 0, 0, 0], "accepting");
    r.accepted("a").await;
    // Queued or running on the pool.
    r.send(&a);
    assert_eq!(
        counts(r.host.counters),
        [0, 0, 2, 0, 0, 0],
        "queued/running"
    );
    r.ran("a").await;
    // Run, its result being stored.
    r.send(&a);
    assert_eq!(counts(r.host.counters), [0, 0, 3, 0, 0, 0], "finishing");
    r.finished("a").await;
    assert_eq!(counts(r.host.counters), [1, 0, 3, 0, 0, 0]);
    assert_eq!(r.outcomes("a"), ["accepted", "completed hello"]);

    // Run once: a second run would have been stored and queued ahead of this one.
    r.send(&wire(vec![assignment("b", "bye")], Encoding::Json));
    r.accepted("b").await;
    r.ran("b").await;
    r.finished("b").await;
    assert_eq!(r.host.pool().completed_total(), 2, "a and b, each once");
    assert_eq!(r.outcomes("a"), ["accepted", "completed hello"]);
    r.assert_idle();

    // Once finished, a redelivery is answered from the store, still not run.
    r.send(&a);
    assert_eq!(counts(r.host.counters), [2, 0, 4, 0, 0, 0], "finished");
    assert_eq!(
        r.outcomes("a"),
        ["accepted", "completed hello", "completed hello"]
    );
    assert_eq!(r.host.pool().completed_total(), 2);
    r.assert_idle();
}

/// What was published for `id`: (attempt, outcome), in order.
fn attempts(r: &Rig, id: &str) -> Vec<(u32, String)> {
    r.published
        .iter()
        .filter(|p| p.id == id)
        .map(|p| (p.attempt, label(&p.outcome)))
        .collect()
}

#[tokio::test]
async fn a_newer_attempt_of_a_task_in_flight_gets_the_result_under_that_attempt() {
    let mut r = rig();
    r.send(&wire(vec![assignment("a", "hi")], Encoding::Json));
    r.accepted("a").await;
    // Re-placed by the coordinator while it runs here: not run twice, but the
    // result must carry attempt 3 or the coordinator fences it off.
    let mut again = assignment("a", "hi");
    again.attempt = 3;
    r.send(&wire(vec![again], Encoding::Json));
    assert_eq!(counts(r.host.counters), [0, 0, 1, 0, 0, 0]);
    r.ran("a").await;
    r.finished("a").await;
    assert_eq!(
        attempts(&r, "a"),
        [(1, "accepted".into()), (3, "completed hi".into())]
    );
    assert_eq!(r.host.pool().completed_total(), 1);
    r.assert_idle();
}

#[tokio::test]
async fn a_finished_id_is_answered_from_the_store_under_the_newest_attempt() {
    let mut r = rig();
    let mut first = assignment("a", "hi");
    first.attempt = 2;
    r.send(&wire(vec![first], Encoding::Json));
    r.accepted("a").await;
    r.ran("a").await;
    r.finished("a").await;
    // A newer attempt of a completed task: answered, under the attempt asked about.
    let mut newer = assignment("a", "hi");
    newer.attempt = 5;
    r.send(&wire(vec![newer], Encoding::Json));
    // An older attempt: answered too, under the attempt that ran (what the store holds).
    r.send(&wire(vec![assignment("a", "hi")], Encoding::Json));
    assert_eq!(
        attempts(&r, "a"),
        [
            (2, "accepted".into()),
            (2, "completed hi".into()),
            (5, "completed hi".into()),
            (2, "completed hi".into()),
        ]
    );
    assert_eq!(counts(r.host.counters), [1, 0, 2, 0, 0, 0]);
    assert_eq!(r.host.pool().completed_total(), 1, "run once");
    r.assert_idle();
}

#[tokio::test]
async fn a_new_attempt_of_a_task_that_timed_out_here_runs_again() {
    let mut r = rig();
    // Asked to sleep far longer than it may run: times out (a retryable answer).
    let slow = TaskAssignment {
        kind: "sleep".into(),
        timeout_ms: 20,
        ..assignment("s", "60000")
    };
    r.send(&wire(vec![slow.clone()], Encoding::Json));
    r.accepted("s").await;
    r.ran("s").await;
    r.finished("s").await;
    // The same attempt again: a redelivery, answered from the store.
    r.send(&wire(vec![slow.clone()], Encoding::Json));
    assert_eq!(counts(r.host.counters), [1, 0, 1, 0, 0, 0]);
    // A newer attempt (with time enough): run again, stored and answered under it.
    let again = TaskAssignment {
        attempt: 2,
        timeout_ms: 5_000,
        payload: Payload(b"1".to_vec()),
        ..slow
    };
    r.send(&wire(vec![again], Encoding::Json));
    r.accepted("s").await;
    r.ran("s").await;
    r.finished("s").await;
    assert_eq!(
        attempts(&r, "s"),
        [
            (1, "accepted".into()),
            (1, "timed out".into()),
            (1, "timed out".into()),
            (2, "accepted".into()),
            (2, "completed ".into()),
        ]
    );
    assert_eq!(counts(r.host.counters), [2, 0, 1, 0, 0, 0]);
    r.assert_idle();
}

/// The attack from issue 14: a list nobody trusted signed never reaches the store or
/// the pool, and nothing is answered; a stale one signed by the trusted key is
/// answered `rejected` (retryable) with the reason; then a good one still runs.
#[tokio::test]
async fn only_lists_the_gate_lets_through_are_stored_or_run() {
    let mut r = rig();
    let (intruder, _) = fog_rt::keys::KeyPair::generate().expect("key");
    let unsigned = codec::encode(
        &TaskAssignments {
            items: vec![assignment("evil-1", "x")],
            seal: None,
        },
        Encoding::Json,
    )
    .expect("encodes");
    let mut by_intruder = TaskAssignments {
        items: vec![assignment("evil-2", "x")],
        seal: None,
    };
    fog_rt::keys::seal(&mut by_intruder, &intruder, "test-node", now_ms()).expect("seals");
    let mut other_node = TaskAssignments {
        items: vec![assignment("evil-3", "x")],
        seal: None,
    };
    fog_rt::keys::seal(&mut other_node, coordinator(), "node-2", now_ms()).expect("seals");
    for bytes in [
        unsigned,
        codec::encode(&by_intruder, Encoding::Postcard).expect("encodes"),
        codec::encode(&other_node, Encoding::Json).expect("encodes"),
    ] {
        r.send(&bytes);
        assert!(r.published.is_empty(), "a refused list is not answered");
        r.assert_idle();
    }
    assert_eq!(r.host.assignments_refused_total(), 3);
    assert_eq!(counts(r.host.counters), [0; 6]);

    let mut stale = TaskAssignments {
        items: vec![assignment("late", "x")],
        seal: None,
    };
    fog_rt::keys::seal(&mut stale, coordinator(), "test-node", now_ms() - 3_600_000)
        .expect("seals");
    r.send(&codec::encode(&stale, Encoding::Json).expect("encodes"));
    assert_eq!(r.host.assignments_refused_total(), 4);
    match &r.published[..] {
        [TaskResult {
            id,
            outcome:
                Outcome::Rejected {
                    reason,
                    retryable: true,
                },
            ..
        }] => {
            assert_eq!(id, "late");
            assert!(reason.contains("3600 s ago"), "{reason}");
        }
        other => panic!("expected one retryable rejection, got {other:?}"),
    }
    r.assert_idle();

    r.send(&wire(vec![assignment("good", "hello")], Encoding::Json));
    r.accepted("good").await;
    r.ran("good").await;
    r.finished("good").await;
    assert_eq!(r.outcomes("good"), ["accepted", "completed hello"]);
    assert_eq!(r.host.pool().completed_total(), 1, "only the good one ran");
}
