//! What ended: final results remembered to answer a resubmitted id (bounded), the
//! last tasks that ended and the dead letters, for `fog-coordinator tasks`.

use std::collections::{HashMap, VecDeque};

use fog_proto::{Outcome, TaskSummary};

use super::Out;

/// Final results remembered to answer a client that submits the same id again.
pub const REMEMBER_FINISHED: usize = 100_000;
/// Dead-lettered tasks kept for `fog-coordinator tasks --dead`.
pub const DEAD_LETTERS: usize = 1_000;
/// The last tasks that ended, kept for the HTTP API (the MQTT status lists fewer).
pub const RECENT_KEPT: usize = 1_000;

/// A task that ran out of attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub kind: String,
    pub attempts: u32,
    pub last_error: String,
    pub at_ms: u64,
}

#[derive(Default)]
pub(super) struct History {
    finished: HashMap<String, Out>,
    finished_order: VecDeque<String>,
    dead: VecDeque<DeadLetter>,
    /// The last tasks that ended, newest at the back.
    recent: VecDeque<TaskSummary>,
}

impl History {
    /// The final reply of a finished task.
    pub(super) fn finished(&self, id: &str) -> Option<&Out> {
        self.finished.get(id)
    }

    /// A final reply from the journal after a restart (not listed as recent).
    pub(super) fn restore(&mut self, id: String, out: Out) {
        if self.finished.insert(id.clone(), out).is_none() {
            self.finished_order.push_back(id);
        }
    }

    /// A task ended with `out`: list it as recent (at `at_ms`) and remember its reply.
    pub(super) fn remember(&mut self, id: String, kind: &str, out: Out, at_ms: u64) {
        if let Out::Reply { result, .. } = &out {
            let (state, detail) = match &result.outcome {
                Outcome::Completed { .. } => ("completed", String::new()),
                Outcome::Rejected { reason, .. } => ("rejected", reason.clone()),
                o => ("failed", describe(o)),
            };
            self.recent.push_back(TaskSummary {
                id: id.clone(),
                kind: kind.to_owned(),
                node: result.node.to_string(),
                attempt: result.attempt,
                state: state.to_owned(),
                detail,
                at_ms,
            });
            while self.recent.len() > RECENT_KEPT {
                self.recent.pop_front();
            }
        }
        self.restore(id, out);
        while self.finished_order.len() > REMEMBER_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    pub(super) fn dead_letter(&mut self, d: DeadLetter) {
        self.dead.push_back(d);
        while self.dead.len() > DEAD_LETTERS {
            self.dead.pop_front();
        }
    }

    /// Oldest first.
    pub(super) fn dead_letters(&self) -> impl Iterator<Item = &DeadLetter> {
        self.dead.iter()
    }

    /// Recent and dead-lettered tasks, newest first, at most `max` each.
    pub(super) fn summaries(&self, max: usize) -> (Vec<TaskSummary>, Vec<TaskSummary>) {
        let recent = self.recent.iter().rev().take(max).cloned().collect();
        let dead = self
            .dead
            .iter()
            .rev()
            .take(max)
            .map(|d| TaskSummary {
                id: d.id.clone(),
                kind: d.kind.clone(),
                node: String::new(),
                attempt: d.attempts,
                state: "dead".to_owned(),
                detail: d.last_error.clone(),
                at_ms: d.at_ms,
            })
            .collect();
        (recent, dead)
    }
}

/// A line for the dead-letter list.
pub(super) fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Rejected { reason, .. } => format!("rejected: {reason}"),
        Outcome::Failed { error, .. } => format!("failed: {error}"),
        Outcome::TimedOut { after_ms } if *after_ms > 0 => format!("timed out after {after_ms} ms"),
        Outcome::TimedOut { .. } => "no result within timeout plus grace".to_owned(),
        Outcome::Accepted => "accepted".to_owned(),
        Outcome::Completed { .. } => "completed".to_owned(),
    }
}
