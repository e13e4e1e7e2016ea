use super::*;
use fog_proto::{NodeId, Outcome, Payload};

fn sub(id: &str) -> TaskSubmission {
    TaskSubmission {
        id: id.into(),
        kind: "echo".into(),
        payload: Payload(b"payload".to_vec()),
        reply_to: "fog/v1/clients/c/results".into(),
        priority: 1,
        timeout_ms: 1000,
        cacheable: false,
        key: String::new(),
        strategy: String::new(),
        requires: Default::default(),
    }
}

#[tokio::test]
async fn accepted_tasks_come_back_after_a_reopen_and_finished_ones_keep_their_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = JournalConfig::default();
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (j, recs) = Journal::open(dir.path(), &cfg, tx).expect("opens");
        assert!(recs.is_empty());
        for id in ["a", "b"] {
            j.write(Op::Accept(Record {
                sub: sub(id),
                attempt: 1,
                submitted_ms: 5,
                result: None,
            }));
        }
        j.write(Op::Attempt(Record {
            sub: sub("a"),
            attempt: 2,
            submitted_ms: 5,
            result: None,
        }));
        let done = TaskResult {
            id: "b".into(),
            attempt: 1,
            node: NodeId::new("n1").expect("valid"),
            at_ms: 9,
            outcome: Outcome::Failed {
                error: "no".into(),
                retryable: false,
                exit_code: Some(1),
                duration_ms: 3,
            },
        };
        j.write(Op::Finish(Record {
            sub: sub("b"),
            attempt: 1,
            submitted_ms: 5,
            result: Some(done),
        }));
        let mut acked = Vec::new();
        let mut finished = Vec::new();
        while acked.len() < 2 || finished.is_empty() {
            match rx.recv().await.expect("notice") {
                Durable::Accepted { id, .. } => acked.push(id),
                Durable::Finished { result, .. } => finished.push(result.id),
                other => panic!("a redb journal adopts nothing and is never fenced: {other:?}"),
            }
        }
        acked.sort();
        assert_eq!(acked, ["a", "b"], "each accept is reported once durable");
        assert_eq!(finished, ["b"], "and each final result");
    }
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (_j, mut recs) = Journal::open(dir.path(), &cfg, tx).expect("reopens");
    recs.sort_by(|x, y| x.sub.id.cmp(&y.sub.id));
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].attempt, recs[0].result.is_none()), (2, true));
    assert_eq!(
        recs[0].sub,
        sub("a"),
        "the payload is kept until the task finishes"
    );
    assert!(
        recs[1].sub.payload.0.is_empty(),
        "a finished record drops the payload"
    );
    assert!(matches!(
        recs[1].result.as_ref().map(|r| &r.outcome),
        Some(Outcome::Failed { .. })
    ));
}

#[test]
fn damaged_records_are_errors_not_panics() {
    for bad in [
        &b""[..],
        &[1],
        &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        &[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0],
    ] {
        assert!(decode(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn damaged_entries_are_errors_not_panics() {
    let good = encode_entry([&b"abc"[..], &b""[..]].into_iter());
    assert_eq!(
        decode_entry(&good).expect("decodes"),
        [&b"abc"[..], &b""[..]]
    );
    for bad in [
        &b""[..],
        &[1, 0, 0],
        &[1, 0, 0, 0],
        &[1, 0, 0, 0, 9, 0, 0, 0, 1],
        &[255, 255, 255, 255, 0, 0, 0, 0],
        &[0, 0, 0, 0, 7],
    ] {
        assert!(decode_entry(bad).is_err(), "{bad:?}");
    }
}

fn accept(id: &str) -> Op {
    Op::Accept(Record {
        sub: sub(id),
        attempt: 1,
        submitted_ms: 5,
        result: None,
    })
}

fn finish(id: &str) -> Op {
    Op::Finish(Record {
        sub: sub(id),
        attempt: 1,
        submitted_ms: 5,
        result: Some(TaskResult {
            id: id.into(),
            attempt: 1,
            node: NodeId::new("n1").expect("valid"),
            at_ms: 9,
            outcome: Outcome::Completed {
                output: Payload(b"out".to_vec()),
                truncated: false,
                exit_code: None,
                duration_ms: 1,
                cpu_ms: 0,
                peak_rss_bytes: 0,
                from_cache: false,
            },
        }),
    })
}

fn entries(db: &Database) -> Vec<u64> {
    let tx = db.begin_read().expect("read");
    let log = tx.open_table(LOG).expect("log");
    log.iter()
        .expect("iter")
        .map(|r| r.expect("row").0.value())
        .collect()
}

/// One entry per commit; an entry goes once no task's latest record is in it, and
/// not before (the accepts of c stay while c runs, even though a and b finished).
#[test]
fn entries_are_deleted_once_nothing_lives_in_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("j.redb")).expect("db");
    convert_v1(&db).expect("fresh");
    let cfg = JournalConfig::default();
    let mut index = Index::default();
    commit(
        &db,
        &cfg,
        &mut index,
        &[accept("a"), accept("b"), accept("c")],
        false,
    )
    .expect("commit");
    commit(&db, &cfg, &mut index, &[finish("a"), finish("b")], false).expect("commit");
    assert_eq!(entries(&db), [0, 1]);
    commit(&db, &cfg, &mut index, &[accept("d")], false).expect("commit");
    assert_eq!(entries(&db), [0, 1, 2], "c still lives in entry 0");
    commit(&db, &cfg, &mut index, &[finish("c")], false).expect("commit");
    commit(&db, &cfg, &mut index, &[accept("e")], false).expect("commit");
    assert_eq!(
        entries(&db),
        [1, 2, 3, 4],
        "entry 0 deleted at the next commit"
    );
    // And what a reopen reads matches what was written.
    let (again, records) = read_log(&db).expect("reads");
    assert_eq!(again.next_seq, 5);
    let mut ids: Vec<(&str, bool)> = records
        .iter()
        .map(|r| (r.sub.id.as_str(), r.result.is_some()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("a", true),
            ("b", true),
            ("c", true),
            ("d", false),
            ("e", false)
        ]
    );
}

/// Past the count, the oldest finished tasks go, and their entries with them; a
/// running task is never pruned.
#[test]
fn finished_tasks_are_pruned_by_count_and_running_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("j.redb")).expect("db");
    convert_v1(&db).expect("fresh");
    let cfg = JournalConfig {
        keep_finished_count: 2,
        ..Default::default()
    };
    let mut index = Index::default();
    commit(&db, &cfg, &mut index, &[accept("run")], false).expect("commit");
    for id in ["a", "b", "c", "d"] {
        commit(&db, &cfg, &mut index, &[accept(id)], false).expect("commit");
        commit(&db, &cfg, &mut index, &[finish(id)], false).expect("commit");
    }
    commit(&db, &cfg, &mut index, &[accept("x")], true).expect("prune");
    commit(&db, &cfg, &mut index, &[accept("y")], false).expect("deletes");
    let (_, records) = read_log(&db).expect("reads");
    let mut ids: Vec<&str> = records.iter().map(|r| r.sub.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["c", "d", "run", "x", "y"]);
    // Entries: run's accept, c's and d's finishes, x, y.
    assert_eq!(entries(&db).len(), 5, "{:?}", entries(&db));
}

/// A file of the first layout (one row per task id) is read and converted.
#[test]
fn a_v1_journal_is_converted_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::create(dir.path().join("coordinator.redb")).expect("db");
        let tx = db.begin_write().expect("write");
        {
            let mut t = tx.open_table(V1_TASKS).expect("v1");
            for op in [accept("old-running"), finish("old-done")] {
                let (Op::Accept(r) | Op::Attempt(r) | Op::Finish(r)) = &op;
                t.insert(r.sub.id.as_str(), encode(r).expect("enc").as_slice())
                    .expect("insert");
            }
            tx.open_table(V1_FINISHED).expect("v1 index");
        }
        tx.commit().expect("commit");
    }
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (j, mut recs) = Journal::open(dir.path(), &JournalConfig::default(), tx).expect("opens");
    drop(j);
    recs.sort_by(|x, y| x.sub.id.cmp(&y.sub.id));
    assert_eq!(recs.len(), 2);
    assert!(recs[0].result.is_some() && recs[1].result.is_none());
    assert_eq!(recs[1].sub, sub("old-running"), "payload kept");
    let db = Database::create(dir.path().join("coordinator.redb")).expect("reopen");
    let tx = db.begin_read().expect("read");
    let names: Vec<String> = tx
        .list_tables()
        .expect("tables")
        .map(|t| t.name().to_owned())
        .collect();
    assert_eq!(names, ["v2/log"]);
}

#[tokio::test]
async fn cluster_mode_without_its_database_fails_at_open_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cluster = ClusterConfig {
        postgres_url: format!(
            "host=127.0.0.1 port={port} user=fog password=s3cret connect_timeout=2"
        ),
        coordinator_id: "coord-a".into(),
        lease: Duration::from_secs(5),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let e = match Journal::open_cluster(&cluster, &JournalConfig::default(), tx) {
        Ok(_) => panic!("nothing listens there"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("PostgreSQL"), "{e}");
    assert!(
        !e.contains("s3cret"),
        "the password stays out of errors: {e}"
    );
}
