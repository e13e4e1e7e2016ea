//! What ends an attempt: a result from its node (fenced: only the current attempt
//! from the node it was placed on counts), its timeout, or its node going offline.
//! Each feeds the node's breaker and load, then finishes the task or retries it.

use fog_proto::{NodeState, Outcome, TaskResult};
use tokio::time::Instant;

use super::table::{TimerKind, Where};
use super::{short, Dispatcher, Out};
use crate::breaker::BreakerState;
use crate::placement::peak_ewma;

/// Decay of the peak EWMA of latency (response_time).
const LATENCY_ALPHA: f64 = 0.1;

/// What a result means for the task and for the node's breaker.
#[derive(Clone, Copy)]
enum Verdict {
    Done,
    Retry { node_fault: bool },
    Final { node_fault: bool },
}

impl Verdict {
    /// `None` for an acceptance, which changes nothing.
    fn of(outcome: &Outcome) -> Option<Verdict> {
        Some(match outcome {
            Outcome::Accepted => return None,
            Outcome::Completed { .. } => Verdict::Done,
            Outcome::Rejected {
                retryable: true, ..
            } => Verdict::Retry { node_fault: false },
            Outcome::Failed {
                retryable: true, ..
            }
            | Outcome::TimedOut { .. } => Verdict::Retry { node_fault: true },
            // A command that fails for good is still a failure of the node for the
            // breaker (as a 5xx is for Envoy's outlier detection); a refusal is not.
            Outcome::Failed { .. } => Verdict::Final { node_fault: true },
            Outcome::Rejected { .. } => Verdict::Final { node_fault: false },
        })
    }
}

impl Dispatcher {
    pub(super) fn result_one(&mut self, node: &str, r: TaskResult, now: Instant) -> Option<Out> {
        let Some(t) = self.table.get(&r.id) else {
            if self.history.finished(&r.id).is_some() {
                self.counters.duplicate_results_dropped += 1;
            } else {
                self.counters.stale_results_dropped += 1;
            }
            return None;
        };
        // Fencing: only the current attempt, from the node it was placed on, counts.
        let Where::Placed { slot, at, probe } = t.at() else {
            self.counters.stale_results_dropped += 1;
            return None;
        };
        if r.attempt != t.attempt || self.nodes.slots[slot].id.as_str() != node {
            self.counters.stale_results_dropped += 1;
            return None;
        }
        let verdict = Verdict::of(&r.outcome)?;
        if let Outcome::Completed { duration_ms, .. } = &r.outcome {
            let kind = t.sub.kind.clone();
            self.nodes
                .learn(&kind, slot, (*duration_ms as f64).max(0.001));
        }
        let latency = now.saturating_duration_since(at).as_secs_f64() * 1000.0;
        let load = self.nodes.load_mut(slot);
        load.latency_ms = peak_ewma(load.latency_ms, latency, LATENCY_ALPHA);
        self.unplace(&r.id, now);
        self.judge(slot, verdict, probe, node, now);
        match verdict {
            Verdict::Retry { node_fault } => {
                if let Some(t) = self.table.get_mut(&r.id) {
                    t.refused_by.push(slot);
                }
                if matches!(r.outcome, Outcome::TimedOut { .. }) {
                    self.counters.timed_out += 1;
                }
                let id = r.id.clone();
                self.retry(&id, now, Some(r), node_fault)
            }
            Verdict::Done | Verdict::Final { .. } => {
                let t = self.table.remove(&r.id)?;
                if matches!(r.outcome, Outcome::Completed { .. }) {
                    self.counters.completed += 1;
                } else {
                    self.counters.failed += 1;
                }
                let out = Out::Reply {
                    topic: t.sub.reply_to.clone(),
                    result: r,
                };
                self.finish(t, out)
            }
        }
    }

    /// The node's breaker hears the verdict; a change of state changes eligibility.
    fn judge(&mut self, slot: usize, verdict: Verdict, probe: bool, node: &str, now: Instant) {
        let bcfg = &self.cfg.breaker;
        let breaker = &mut self.nodes.slots[slot].breaker;
        let before = breaker.last_state();
        match verdict {
            Verdict::Done => breaker.on_success(bcfg),
            Verdict::Retry { node_fault: true } | Verdict::Final { node_fault: true } => {
                breaker.on_failure(bcfg, now)
            }
            Verdict::Retry { node_fault: false } | Verdict::Final { node_fault: false } => {
                if probe {
                    breaker.on_abandoned()
                }
            }
        }
        let after = breaker.state(bcfg, now);
        let half_open_at = breaker.half_open_at(bcfg);
        self.nodes.half_open_at(half_open_at);
        if before != after {
            self.nodes.eligibility_changed();
            if after == BreakerState::Open {
                self.counters.breaker_opened += 1;
                tracing::warn!(node.id = %node, "circuit breaker opened");
            } else {
                tracing::info!(node.id = %node, from = before.as_str(), to = after.as_str(), "circuit breaker");
            }
        }
    }

    /// Take a task off its node and lower the node's in-flight count.
    fn unplace(&mut self, id: &str, now: Instant) -> Option<usize> {
        let slot = self.table.unplace(id, now)?;
        let load = self.nodes.load_mut(slot);
        load.in_flight = load.in_flight.saturating_sub(1);
        Some(slot)
    }

    /// Place again everything on nodes that are now offline (or forgotten).
    pub(super) fn replace_lost(&mut self, now: Instant, out: &mut Vec<Out>) {
        let lost: Vec<String> = self
            .table
            .iter()
            .filter_map(|(id, t)| match t.at() {
                Where::Placed { slot, .. }
                    if self.nodes.slots[slot].state == NodeState::Offline =>
                {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect();
        for id in lost {
            if let Some(slot) = self.unplace(&id, now) {
                self.counters.node_lost += 1;
                self.nodes.slots[slot].breaker.on_abandoned();
                tracing::debug!(task.id = %short(&id), node.id = %self.nodes.slots[slot].id, "node offline; placing again");
                if let Some(t) = self.table.get_mut(&id) {
                    t.refused_by.push(slot);
                }
                out.extend(self.retry(&id, now, None, true));
            }
        }
    }

    /// A timer came due: a retry of a waiting task, or the timeout of a placed one.
    pub(super) fn on_timer(&mut self, timer: super::table::Timer, now: Instant) -> Option<Out> {
        let t = self.table.get(&timer.id)?;
        if t.attempt != timer.attempt {
            return None;
        }
        match (timer.kind, t.at()) {
            (TimerKind::Retry, Where::Waiting { .. }) => self.try_place(&timer.id, now),
            (TimerKind::Timeout, Where::Placed { slot, .. }) => {
                let node = self.nodes.slots[slot].id.clone();
                self.unplace(&timer.id, now);
                self.nodes.slots[slot]
                    .breaker
                    .on_failure(&self.cfg.breaker, now);
                self.nodes.eligibility_changed();
                self.counters.timed_out += 1;
                tracing::debug!(task.id = %short(&timer.id), node.id = %node, "no result within the task's timeout plus grace; placing again");
                if let Some(t) = self.table.get_mut(&timer.id) {
                    t.refused_by.push(slot);
                }
                let failure = TaskResult {
                    id: timer.id.clone(),
                    attempt: timer.attempt,
                    node,
                    at_ms: self.wall_ms(),
                    outcome: Outcome::TimedOut { after_ms: 0 },
                };
                self.retry(&timer.id, now, Some(failure), true)
            }
            _ => None,
        }
    }
}
