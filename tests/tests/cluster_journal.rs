//! Cluster mode's journal against a real PostgreSQL (started by the harness): what a
//! coordinator owns comes back after its restart, a peer that stops or whose lease
//! runs out has its unfinished tasks adopted, and a fenced coordinator's late writes
//! never land. Needs the `postgresql` package: `#[ignore]`d in `cargo test
//! --workspace`, run by `.ci/run` with `--include-ignored`.

use std::time::Duration;

use fog_coordinator::journal::{ClusterConfig, Durable, Journal, JournalConfig, Op, Record};
use fog_e2e::postgres::TestPostgres;
use fog_proto::{NodeId, Outcome, TaskResult, TaskSubmission};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn sub(id: &str) -> TaskSubmission {
    TaskSubmission {
        id: id.into(),
        kind: "echo".into(),
        payload: fog_proto::Payload(b"payload".to_vec()),
        reply_to: "fog/v1/clients/c/results".into(),
        priority: 1,
        timeout_ms: 1000,
        cacheable: false,
        key: String::new(),
        strategy: String::new(),
        requires: Default::default(),
    }
}

fn record(id: &str, attempt: u32, done: bool) -> Record {
    Record {
        sub: sub(id),
        attempt,
        submitted_ms: 5,
        result: done.then(|| TaskResult {
            id: id.into(),
            attempt,
            node: NodeId::new("pi-1").expect("node id"),
            at_ms: 9,
            outcome: Outcome::Completed {
                output: fog_proto::Payload(b"out".to_vec()),
                truncated: false,
                exit_code: Some(0),
                duration_ms: 1,
                cpu_ms: 0,
                peak_rss_bytes: 0,
                from_cache: false,
            },
        }),
    }
}

fn cluster(pg: &TestPostgres, id: &str, lease: Duration) -> ClusterConfig {
    ClusterConfig {
        postgres_url: pg.url(),
        coordinator_id: id.into(),
        lease,
    }
}

struct Member {
    journal: Journal,
    rx: UnboundedReceiver<Durable>,
}

fn open(pg: &TestPostgres, id: &str, lease: Duration) -> (Member, Vec<Record>) {
    let (tx, rx) = unbounded_channel();
    let (journal, records) =
        Journal::open_cluster(&cluster(pg, id, lease), &JournalConfig::default(), tx)
            .expect("opens");
    (Member { journal, rx }, records)
}

impl Member {
    /// The next notice, within `secs`.
    async fn next(&mut self, secs: u64) -> Durable {
        tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
            .await
            .expect("a notice in time")
            .expect("the journal is open")
    }

    /// Accept `ids` and wait until each is durable.
    async fn accept(&mut self, ids: &[&str]) {
        for id in ids {
            self.journal.write(Op::Accept(record(id, 1, false)));
        }
        let mut acked = Vec::new();
        while acked.len() < ids.len() {
            match self.next(10).await {
                Durable::Accepted { id, .. } => acked.push(id),
                other => panic!("expected accepts, got {other:?}"),
            }
        }
    }
}

/// Owner and whether finished, by task id, as the database has them.
fn rows(pg: &TestPostgres) -> Vec<(String, String, bool)> {
    pg.with_client(|c| {
        c.query(
            "SELECT id, owner, finished_at IS NOT NULL FROM fog_tasks ORDER BY id",
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    })
    .expect("connects")
}

fn ids(records: &[Record]) -> Vec<&str> {
    let mut v: Vec<&str> = records.iter().map(|r| r.sub.id.as_str()).collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn what_a_coordinator_owns_comes_back_after_its_restart() {
    let pg = TestPostgres::start().expect("postgres");
    {
        let (mut a, records) = open(&pg, "coord-a", Duration::from_secs(5));
        assert!(records.is_empty(), "a new cluster holds nothing");
        a.accept(&["t1", "t2"]).await;
        a.journal.write(Op::Attempt(record("t1", 2, false)));
        a.journal.write(Op::Finish(record("t2", 1, true)));
        match a.next(10).await {
            Durable::Finished { result, .. } => assert_eq!(result.id, "t2"),
            other => panic!("expected t2's result, got {other:?}"),
        }
    }
    let (_a, mut records) = open(&pg, "coord-a", Duration::from_secs(5));
    records.sort_by(|x, y| x.sub.id.cmp(&y.sub.id));
    assert_eq!(ids(&records), ["t1", "t2"]);
    assert_eq!(
        (records[0].attempt, records[0].result.is_none()),
        (2, true),
        "t1 at its last attempt, unfinished"
    );
    assert_eq!(
        records[1].result,
        record("t2", 1, true).result,
        "t2 with its result"
    );
    assert!(
        records[1].sub.payload.0.is_empty(),
        "a finished task's payload is not kept (as in the redb journal)"
    );
    let (_b, others) = open(&pg, "coord-b", Duration::from_secs(5));
    assert!(
        others.is_empty(),
        "another coordinator reads none of a's tasks"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_peer_that_stops_hands_its_unfinished_tasks_over_at_once() {
    let pg = TestPostgres::start().expect("postgres");
    let (mut b, _) = open(&pg, "coord-b", Duration::from_secs(30));
    {
        let (mut a, _) = open(&pg, "coord-a", Duration::from_secs(30));
        a.accept(&["a1", "a2", "a3"]).await;
        a.journal.write(Op::Finish(record("a3", 1, true)));
        assert!(matches!(a.next(10).await, Durable::Finished { .. }));
    }
    // A 30 s lease: only the clean stop (its lease ended at once) explains this.
    match b.next(5).await {
        Durable::Adopted(records) => {
            assert_eq!(ids(&records), ["a1", "a2", "a3"]);
            let finished: Vec<bool> = records.iter().map(|r| r.result.is_some()).collect();
            assert_eq!(
                finished,
                [false, false, true],
                "the unfinished to place again, and the one just finished (coord-a may not have sent its result) to send again"
            );
        }
        other => panic!("expected an adoption, got {other:?}"),
    }
    let now = rows(&pg);
    assert_eq!(
        now,
        [
            ("a1".into(), "coord-b".into(), false),
            ("a2".into(), "coord-b".into(), false),
            ("a3".into(), "coord-b".into(), true),
        ]
    );
    // The adopter writes them as its own.
    b.journal.write(Op::Finish(record("a1", 2, true)));
    assert!(matches!(b.next(10).await, Durable::Finished { .. }));
    assert!(rows(&pg)[0].2, "a1 finished by its new owner");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_coordinator_past_its_lease_is_fenced_and_its_late_writes_never_land() {
    let pg = TestPostgres::start().expect("postgres");
    let (mut a, _) = open(&pg, "coord-a", Duration::from_secs(30));
    let (mut b, _) = open(&pg, "coord-b", Duration::from_secs(30));
    a.accept(&["x1", "x2"]).await;
    // As if coord-a had been paused past its lease (SIGSTOP, a long GC, a VM frozen):
    // the database's clock says it ran out.
    pg.execute(
        "UPDATE fog_coordinators SET lease_until = now() - interval '1 second' WHERE id = 'coord-a'",
    )
    .expect("update");
    match b.next(5).await {
        Durable::Adopted(records) => assert_eq!(ids(&records), ["x1", "x2"]),
        other => panic!("expected an adoption, got {other:?}"),
    }
    // coord-a wakes up and reports x1 finished: fenced, and nothing of it lands or is
    // answered.
    a.journal.write(Op::Finish(record("x1", 1, true)));
    match a.next(5).await {
        Durable::Fenced(reason) => assert!(reason.contains("lost its lease"), "{reason}"),
        other => panic!("expected fenced, got {other:?}"),
    }
    assert!(!a.journal.lease_ok(), "the main loop stops acting");
    assert!(a.journal.fenced().is_some());
    assert!(!a.journal.is_healthy());
    assert_eq!(
        rows(&pg),
        [
            ("x1".into(), "coord-b".into(), false),
            ("x2".into(), "coord-b".into(), false),
        ],
        "the fenced write did not land"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_second_process_with_the_same_id_fences_the_first() {
    let pg = TestPostgres::start().expect("postgres");
    let (mut first, _) = open(&pg, "coord-a", Duration::from_secs(5));
    first.accept(&["y1"]).await;
    let (_second, records) = open(&pg, "coord-a", Duration::from_secs(5));
    assert_eq!(
        ids(&records),
        ["y1"],
        "the newer epoch owns what the id owned"
    );
    // The first learns it at its next renewal (every second at most).
    match first.next(5).await {
        Durable::Fenced(reason) => assert!(reason.contains("epoch 1"), "{reason}"),
        other => panic!("expected fenced, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_database_restart_loses_nothing_accepted() {
    let mut pg = TestPostgres::start().expect("postgres");
    let (mut a, _) = open(&pg, "coord-a", Duration::from_secs(30));
    a.accept(&["z1"]).await;
    pg.stop();
    a.journal.write(Op::Accept(record("z2", 1, false)));
    // Not acknowledged while the database is away: the client resubmits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        a.rx.try_recv().is_err(),
        "nothing is acknowledged while the database is down"
    );
    assert!(!a.journal.is_healthy(), "the health check says so");
    pg.start_again().expect("restarts");
    // The resubmission after the database is back.
    a.accept(&["z2"]).await;
    assert!(a.journal.is_healthy());
    drop(a);
    let (_a, records) = open(&pg, "coord-a", Duration::from_secs(30));
    assert_eq!(ids(&records), ["z1", "z2"]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL (apt-get install postgresql); .ci/run runs it"]
async fn a_resubmission_elsewhere_takes_the_task_over_and_only_its_owner_answers() {
    let pg = TestPostgres::start().expect("postgres");
    let (mut a, _) = open(&pg, "coord-a", Duration::from_secs(30));
    let (mut b, _) = open(&pg, "coord-b", Duration::from_secs(30));
    a.accept(&["r1", "f1"]).await;
    a.journal.write(Op::Finish(record("f1", 1, true)));
    match a.next(10).await {
        Durable::Finished { result, .. } => assert_eq!(result.id, "f1"),
        other => panic!("expected f1's result, got {other:?}"),
    }
    // The client did not hear "accepted" for r1 in time and sent it again; it reached
    // coord-b, which owns it from now on.
    b.accept(&["r1"]).await;
    assert_eq!(rows(&pg)[1], ("r1".into(), "coord-b".into(), false));
    // coord-a's run of r1 ends: not its task any more, so it does not answer.
    a.journal.write(Op::Finish(record("r1", 1, true)));
    a.journal.write(Op::Accept(record("sync", 1, false)));
    match a.next(10).await {
        Durable::Accepted { id, .. } => assert_eq!(id, "sync", "r1's result was not forwarded"),
        other => panic!("expected only the accept after r1's result, got {other:?}"),
    }
    assert!(!rows(&pg)[1].2, "and it did not land");
    b.journal.write(Op::Finish(record("r1", 1, true)));
    assert!(matches!(b.next(10).await, Durable::Finished { .. }));
    // f1 was finished at coord-a before the client heard; sent again to coord-b, the
    // stored result answers it (the same record, not a second run's).
    b.journal.write(Op::Accept(record("f1", 1, false)));
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(b.next(10).await);
    }
    assert!(
        got.iter()
            .any(|d| matches!(d, Durable::Accepted { id, .. } if id == "f1")),
        "{got:?}"
    );
    let stored = got.iter().find_map(|d| match d {
        Durable::Finished { result, .. } => Some(result.clone()),
        _ => None,
    });
    assert_eq!(stored, record("f1", 1, true).result, "the stored result");
    assert_eq!(rows(&pg)[0], ("f1".into(), "coord-a".into(), true));
}
