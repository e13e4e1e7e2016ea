//! Admission: what an arriving assignment gets. Delivery is at-least-once on the
//! wire, so the dedupe rules come first ([`dedupe`]):
//! * an id in flight (accepting, queued or running) is dropped, and its result will go
//!   out under the newest attempt asked for;
//! * an id finished here is answered from the store, never run again, unless its
//!   stored answer was retryable (a refusal, a retryable failure, a timeout) and this
//!   is a newer attempt: then it runs again;
//! * the store cannot be read: rejected as busy (retryable).
//!
//! Then what the node can take ([`check_fit`]): a kind it allows, a payload within
//! its limit. (The cache, the queue and the arena are the host's: they need its pool.)

use std::collections::{HashMap, VecDeque};

use fog_proto::{codec, Outcome, TaskAssignment, TaskResult};

use crate::store::{StoredTask, TaskStore};
use crate::tasks::job::Kind;

/// Finished task ids remembered in memory. An id not in memory is looked up in the
/// store, so forgetting loses nothing; remembering every id was a leak (~100 bytes per
/// task, found by the soak).
const FINISHED_IN_MEMORY: usize = 4096;

enum State {
    InFlight,
    Finished,
}

/// The ids this host knows about.
#[derive(Default)]
pub(super) struct Ledger {
    /// Tasks in flight, and the most recently finished ones (at most
    /// [`FINISHED_IN_MEMORY`], oldest forgotten first: the store is the record of
    /// what finished; memory only saves it a lookup for a quick redelivery).
    states: HashMap<String, State>,
    finished_order: VecDeque<String>,
    /// A task in flight that the coordinator has since placed here again with a newer
    /// attempt (it re-placed it after losing track, e.g. after its own restart): the
    /// result goes out under the newest attempt, or the coordinator would fence it off.
    newer_attempt: HashMap<String, u32>,
}

impl Ledger {
    /// `id` is in flight (accepting, queued, running, or its result being stored).
    pub(super) fn start(&mut self, id: &str) {
        self.states.insert(id.to_owned(), State::InFlight);
    }

    /// `id` is no longer in flight and did not finish (its acceptance was not stored).
    pub(super) fn forget(&mut self, id: &str) {
        self.states.remove(id);
    }

    /// The attempt a result for `id` goes out under: the newest asked for.
    pub(super) fn result_attempt(&self, id: &str, attempt: u32) -> u32 {
        self.newer_attempt
            .get(id)
            .map_or(attempt, |&n| n.max(attempt))
    }

    /// The newer attempt recorded for `id`, if any, now accounted for.
    pub(super) fn take_newer(&mut self, id: &str) -> Option<u32> {
        self.newer_attempt.remove(id)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.states
            .values()
            .filter(|s| matches!(s, State::InFlight))
            .count()
    }

    pub(super) fn remember_finished(&mut self, id: String) {
        self.states.insert(id.clone(), State::Finished);
        self.finished_order.push_back(id);
        while self.finished_order.len() > FINISHED_IN_MEMORY {
            if let Some(old) = self.finished_order.pop_front() {
                // Only if it is still finished (not run again under a newer attempt).
                if matches!(self.states.get(&old), Some(State::Finished)) {
                    self.states.remove(&old);
                }
            }
        }
    }
}

/// What the dedupe rules decide for an arriving assignment.
#[derive(Debug)]
pub(super) enum Dedupe {
    /// New here, or a new attempt after a retryable answer: admit it and run it.
    Run,
    /// In flight here: dropped (a duplicate).
    InFlight,
    /// Finished here: answered with the stored result (a duplicate).
    Answered(TaskResult),
    /// Answered with a refusal, not stored.
    Refused { reason: String, retryable: bool },
}

/// The dedupe rules (see the module's doc).
pub(super) fn dedupe<T>(
    ledger: &mut Ledger,
    store: &impl TaskStore<T>,
    a: &TaskAssignment,
) -> Dedupe {
    if let Some(State::InFlight) = ledger.states.get(&a.id) {
        tracing::debug!(task.id = %a.id, attempt = a.attempt, "duplicate of a task in flight; not run again");
        let newest = ledger
            .newer_attempt
            .entry(a.id.clone())
            .or_insert(a.attempt);
        *newest = (*newest).max(a.attempt);
        return Dedupe::InFlight;
    }
    // Finished here recently, or not in memory: the store knows.
    match store.task(&a.id) {
        Ok(Some(StoredTask {
            result: Some(wire), ..
        })) => match codec::decode::<TaskResult>(&wire) {
            // A retryable answer (busy, failed-retryable, timed out) is not this id's
            // final word: a new attempt runs again.
            Ok(r) if retryable(&r.outcome) && a.attempt > r.attempt => {
                tracing::debug!(task.id = %a.id, attempt = a.attempt, "new attempt of a task that was refused or failed retryably here; running it");
                Dedupe::Run
            }
            Ok(mut r) => {
                tracing::debug!(task.id = %a.id, "redelivered task answered from the store");
                // Answer under the attempt asked about, so the coordinator takes it
                // (the result is the same whichever attempt ran).
                r.attempt = r.attempt.max(a.attempt);
                Dedupe::Answered(r)
            }
            Err(e) => {
                tracing::error!(task.id = %a.id, error = %e, "stored result unreadable; running again");
                Dedupe::Run
            }
        },
        Ok(_) => Dedupe::Run, // new, or pruned meanwhile: run it
        Err(e) => {
            tracing::debug!(task.id = %a.id, error = %e, "reading stored result");
            Dedupe::Refused {
                reason: busy_reason("the store is unavailable"),
                retryable: true,
            }
        }
    }
}

fn retryable(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Rejected {
            retryable: true,
            ..
        } | Outcome::Failed {
            retryable: true,
            ..
        } | Outcome::TimedOut { .. }
    )
}

/// Whether this node can take `a` at all: its kind, if allowed, else the refusal
/// (reason, never retryable: another node may take it, this one never will).
pub(super) fn check_fit(
    kinds: &HashMap<String, Kind>,
    max_task_bytes: usize,
    a: &TaskAssignment,
) -> Result<Kind, String> {
    let Some(kind) = kinds.get(&a.kind).cloned() else {
        return Err(format!(
            "kind {:?} is not allowed on this node",
            a.kind.chars().take(64).collect::<String>()
        ));
    };
    if a.payload.0.len() > max_task_bytes {
        return Err(format!(
            "too large: payload of {} bytes exceeds this node's limit of {}",
            a.payload.0.len(),
            max_task_bytes
        ));
    }
    Ok(kind)
}

pub(super) fn busy_reason(why: &str) -> String {
    format!("busy (retryable): {why}")
}

pub(super) fn busy_outcome(why: &str) -> Outcome {
    Outcome::Rejected {
        reason: busy_reason(why),
        retryable: true,
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
