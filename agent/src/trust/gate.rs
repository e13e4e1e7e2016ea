//! The assignment gate: the agent's half of "only the coordinator assigns work".

use std::time::{Duration, Instant};

use fog_proto::{TaskAssignments, TaskTrust};
use fog_rt::keys::{open, Freshness, PublicKey, SealError};

/// What to do with a list the gate did not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Forged, unsigned, by an unknown key, or for another node: drop it without a
    /// word (answering would let anyone make this node publish).
    Drop(SealError),
    /// Signed by a trusted key for this node but too old or too new: answer each task
    /// `rejected` (retryable, so the coordinator places it elsewhere) with the reason,
    /// which is how an operator learns that this node's clock is off.
    Answer(String),
}

/// Checks every assignment list before any of it is looked at.
pub struct Gate {
    keys: Vec<PublicKey>,
    node: String,
    max_skew: Duration,
    allow_unsigned: bool,
    refused_total: u64,
    last_log: Option<Instant>,
}

impl Gate {
    pub fn new(keys: Vec<PublicKey>, node: &str, max_skew: Duration, allow_unsigned: bool) -> Gate {
        Gate {
            keys,
            node: node.to_owned(),
            max_skew,
            allow_unsigned,
            refused_total: 0,
            last_log: None,
        }
    }

    /// This gate with `old`'s refusal count (a config reload replaced the keys).
    pub fn carrying(mut self, old: &Gate) -> Gate {
        self.refused_total = old.refused_total;
        self.last_log = old.last_log;
        self
    }

    /// What the birth record says about this node and tasks.
    pub fn trust(&self) -> TaskTrust {
        if self.allow_unsigned {
            TaskTrust::AllowUnsigned
        } else if self.keys.is_empty() {
            TaskTrust::NoTrustedKey
        } else {
            TaskTrust::Signed
        }
    }

    /// Lists refused since start (dropped or answered).
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    /// Let `list` through, or say why not. `now_ms` is this node's wall clock.
    pub fn check(&mut self, list: &mut TaskAssignments, now_ms: u64) -> Result<(), Refusal> {
        if self.allow_unsigned {
            return Ok(());
        }
        let fresh = Freshness {
            now_ms,
            max_skew_ms: u64::try_from(self.max_skew.as_millis()).unwrap_or(u64::MAX),
        };
        let refusal = match open(list, &self.keys, &self.node, Some(fresh)) {
            Ok(_) => return Ok(()),
            Err(e @ (SealError::Stale { .. } | SealError::Future { .. })) => {
                Refusal::Answer(format!("assignment refused: {e}"))
            }
            Err(e) => Refusal::Drop(e),
        };
        self.refused_total += 1;
        self.log(&refusal, list.items.len());
        Err(refusal)
    }

    /// One warning per 10 s at most: a flood of forged lists must not flood the journal.
    fn log(&mut self, refusal: &Refusal, tasks: usize) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_log = Some(now);
        let refused_total = self.refused_total;
        match refusal {
            Refusal::Drop(e) if self.keys.is_empty() => tracing::warn!(
                tasks, refused_total, reason = %e,
                "dropping a task assignment: this node trusts no coordinator key (see `fog-agent trust add`)"
            ),
            Refusal::Drop(e) => tracing::warn!(
                tasks, refused_total, why = e.label(), reason = %e,
                "dropping a task assignment that is not from a trusted coordinator"
            ),
            Refusal::Answer(reason) => tracing::warn!(
                tasks, refused_total, %reason,
                "refusing a signed task assignment: check this node's clock"
            ),
        }
    }
}
