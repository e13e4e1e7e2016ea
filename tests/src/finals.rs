//! Final results counted on the wire. The client library drops a repeated final
//! result for an id (that is its job: callers see each task end once), so a test that
//! reads only what the client hands out cannot see a duplicate. A [`FinalsTap`] is a
//! second, plain subscriber on every client's reply topic: it decodes each result list
//! the coordinator publishes and keeps every final result per id, so
//! [`FinalsTap::check`] can say "exactly one" about what crossed the broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use fog_proto::{codec, Outcome, TaskResult, TaskResults};

use crate::watcher::Watcher;

/// May the coordinator publish the same final result again?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// No: a second final result for an id is a bug.
    Never,
    /// Only the very same record again, field for field (after a coordinator restart
    /// the journal's finished results are relayed again: at-least-once around a crash).
    /// A second final that differs in anything (another attempt, node or outcome) is
    /// a bug.
    IdenticalOnly,
}

pub struct FinalsTap {
    watcher: Watcher,
    finals: HashMap<String, Vec<TaskResult>>,
    undecodable: usize,
}

impl FinalsTap {
    /// Subscribe to every client's reply topic under the default prefix; returns once
    /// subscribed, so start it before submitting.
    pub async fn start(broker: SocketAddr) -> FinalsTap {
        FinalsTap {
            watcher: Watcher::start(broker, "fog/v1/clients/+/results").await,
            finals: HashMap::new(),
            undecodable: 0,
        }
    }

    /// Take in what has arrived so far.
    fn pump(&mut self) {
        for a in self.watcher.drain() {
            self.record(&a.payload);
        }
    }

    fn record(&mut self, payload: &[u8]) {
        match codec::decode::<TaskResults>(payload) {
            Ok(list) => {
                for r in list.items {
                    if !matches!(r.outcome, Outcome::Accepted) {
                        self.finals.entry(r.id.clone()).or_default().push(r);
                    }
                }
            }
            Err(_) => self.undecodable += 1,
        }
    }

    /// Wait until nothing has arrived for `quiet` (late duplicates included), or for
    /// 30 s in all.
    pub async fn settle(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Some(a) = self.watcher.next(quiet).await {
            self.record(&a.payload);
            if tokio::time::Instant::now() > deadline {
                break;
            }
        }
        self.pump();
    }

    /// Every id with at least one final result so far.
    pub fn ids(&mut self) -> Vec<String> {
        self.pump();
        self.finals.keys().cloned().collect()
    }

    /// Every final result seen for `id`, in arrival order.
    pub fn finals(&mut self, id: &str) -> Vec<TaskResult> {
        self.pump();
        self.finals.get(id).cloned().unwrap_or_default()
    }

    /// The one final result of each of `ids`, or every problem found: an id with no
    /// final result, an id with more than one (where `resend` forbids it), a repeat
    /// that differs from the first, an undecodable result list.
    pub fn check(&mut self, ids: &[String], resend: Resend) -> Result<Vec<TaskResult>, String> {
        self.pump();
        let mut problems = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        if self.undecodable > 0 {
            problems.push(format!("{} result lists did not decode", self.undecodable));
        }
        for id in ids {
            let rs = self.finals.get(id).map(Vec::as_slice).unwrap_or_default();
            match rs {
                [] => problems.push(format!("{id}: no final result on the wire")),
                [first, rest @ ..] => {
                    if !rest.is_empty() && resend == Resend::Never {
                        problems.push(format!(
                            "{id}: {} final results on the wire: {rs:?}",
                            rs.len()
                        ));
                    } else if let Some(other) = rest.iter().find(|r| *r != first) {
                        problems.push(format!(
                            "{id}: a repeated final result differs from the first: {first:?} then {other:?}"
                        ));
                    }
                    out.push(first.clone());
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            let n = problems.len();
            problems.truncate(10);
            Err(format!(
                "{n} problem(s) with exactly-once delivery:\n{}",
                problems.join("\n")
            ))
        }
    }

    /// [`check`](Self::check) after the wire has been quiet for a second; panics with
    /// the problems found.
    pub async fn assert_exactly_once(&mut self, ids: &[String], resend: Resend) -> Vec<TaskResult> {
        self.settle(Duration::from_secs(1)).await;
        self.check(ids, resend).unwrap_or_else(|e| panic!("{e}"))
    }
}
