//! The dedupe rules against a fake store: what it holds for an id (or that it cannot
//! be read) is set per test, so every rule is reached without a real database.

use std::cell::Cell;

use fog_proto::{Encoding, NodeId, Payload};

use super::*;
use crate::store::{Op, StoreError};

/// A store whose reads of a task record answer what the test says.
struct FakeStore {
    /// `None`: the read fails as a store being reopened after failed writes does.
    task: Option<Option<StoredTask>>,
    reads: Cell<u32>,
}

impl FakeStore {
    fn holding(task: Option<StoredTask>) -> FakeStore {
        FakeStore {
            task: Some(task),
            reads: Cell::new(0),
        }
    }

    fn unreadable() -> FakeStore {
        FakeStore {
            task: None,
            reads: Cell::new(0),
        }
    }
}

impl TaskStore<()> for FakeStore {
    fn submit(&self, _op: Op<()>) -> Result<(), StoreError> {
        panic!("the dedupe rules never write");
    }

    fn task(&self, _id: &str) -> Result<Option<StoredTask>, StoreError> {
        self.reads.set(self.reads.get() + 1);
        self.task.clone().ok_or(StoreError::Unavailable)
    }

    fn cached(&self, _key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        panic!("the dedupe rules never read the cache");
    }
}

fn assignment(id: &str, attempt: u32) -> TaskAssignment {
    TaskAssignment {
        id: id.into(),
        attempt,
        kind: "echo".into(),
        payload: Payload(b"hi".to_vec()),
        timeout_ms: 5_000,
        priority: 0,
        deadline_ms: 0,
        cacheable: false,
    }
}

/// The record of `id` finished under `attempt` with `outcome`, its result encoded as
/// a host with `encoding` stores it.
fn finished(id: &str, attempt: u32, outcome: Outcome, encoding: Encoding) -> StoredTask {
    let result = TaskResult {
        id: id.into(),
        attempt,
        node: NodeId::new("test-node").expect("node id"),
        at_ms: 1,
        outcome,
    };
    StoredTask {
        id: id.into(),
        attempt,
        kind: "echo".into(),
        timeout_ms: 5_000,
        priority: 0,
        deadline_ms: 0,
        cacheable: false,
        accepted_at_ms: 1,
        payload: Vec::new(),
        result: Some(codec::encode(&result, encoding).expect("encodes")),
        finished_at_ms: 2,
    }
}

fn retryable_outcomes() -> [(&'static str, Outcome); 3] {
    [
        ("refused as busy", busy_outcome("the task queue is full")),
        (
            "failed retryably",
            Outcome::Failed {
                error: "cannot hold the task now".into(),
                retryable: true,
                exit_code: None,
                duration_ms: 0,
            },
        ),
        ("timed out", Outcome::TimedOut { after_ms: 10 }),
    ]
}

fn final_outcomes() -> [(&'static str, Outcome); 3] {
    [
        (
            "completed",
            Outcome::Completed {
                output: Payload(b"hi".to_vec()),
                truncated: false,
                exit_code: None,
                duration_ms: 1,
                cpu_ms: 0,
                peak_rss_bytes: 0,
                from_cache: false,
            },
        ),
        (
            "refused for good",
            Outcome::Rejected {
                reason: "kind \"x\" is not allowed on this node".into(),
                retryable: false,
            },
        ),
        (
            "failed for good",
            Outcome::Failed {
                error: "exit 1".into(),
                retryable: false,
                exit_code: Some(1),
                duration_ms: 1,
            },
        ),
    ]
}

#[test]
fn a_new_attempt_of_an_id_whose_stored_result_was_a_refusal_or_retryable_failure_runs_again() {
    for encoding in [Encoding::Json, Encoding::Postcard] {
        for (what, outcome) in retryable_outcomes() {
            let store = FakeStore::holding(Some(finished("a", 2, outcome.clone(), encoding)));
            let mut ledger = Ledger::default();
            // A newer attempt: this id's last answer here was not its final word.
            let d = dedupe(&mut ledger, &store, &assignment("a", 3));
            assert!(
                matches!(d, Dedupe::Run),
                "{what} ({encoding:?}), attempt 3: {d:?}"
            );
            // The same attempt again, or an older one: a redelivery of the answer
            // given, answered from the store under the attempt that was answered.
            for attempt in [2, 1] {
                match dedupe(&mut ledger, &store, &assignment("a", attempt)) {
                    Dedupe::Answered(r) => {
                        assert_eq!(r.outcome, outcome, "{what}, attempt {attempt}");
                        assert_eq!(r.attempt, 2, "{what}, attempt {attempt}");
                    }
                    d => panic!("{what} ({encoding:?}), attempt {attempt}: {d:?}"),
                }
            }
            assert_eq!(
                store.reads.get(),
                3,
                "{what}: every decision read the store"
            );
            assert_eq!(ledger.in_flight(), 0, "deciding starts nothing");
        }
        // A final answer is never run again, whatever the attempt: answered under
        // the attempt asked about.
        for (what, outcome) in final_outcomes() {
            let store = FakeStore::holding(Some(finished("a", 2, outcome.clone(), encoding)));
            match dedupe(&mut Ledger::default(), &store, &assignment("a", 3)) {
                Dedupe::Answered(r) => {
                    assert_eq!(r.outcome, outcome, "{what}");
                    assert_eq!(r.attempt, 3, "{what}");
                }
                d => panic!("{what} ({encoding:?}), attempt 3: {d:?}"),
            }
        }
    }
}

#[test]
fn the_store_cannot_be_read_so_the_task_is_rejected_as_busy_retryable() {
    let store = FakeStore::unreadable();
    let mut ledger = Ledger::default();
    for attempt in [1, 4] {
        match dedupe(&mut ledger, &store, &assignment("a", attempt)) {
            Dedupe::Refused { reason, retryable } => {
                assert_eq!(reason, "busy (retryable): the store is unavailable");
                assert!(retryable, "the coordinator places it again");
            }
            d => panic!("attempt {attempt}: {d:?}"),
        }
    }
    assert_eq!(store.reads.get(), 2);
    // Refused, not admitted: nothing is in flight, so once the store can be read
    // again the same id is decided afresh (here: new, so it runs).
    assert_eq!(ledger.in_flight(), 0);
    let d = dedupe(&mut ledger, &FakeStore::holding(None), &assignment("a", 5));
    assert!(matches!(d, Dedupe::Run), "{d:?}");

    // An id in flight is dropped as a duplicate before the store is asked.
    ledger.start("b");
    let d = dedupe(&mut ledger, &store, &assignment("b", 1));
    assert!(matches!(d, Dedupe::InFlight), "{d:?}");
    assert_eq!(store.reads.get(), 2, "not read for an id in flight");
}
