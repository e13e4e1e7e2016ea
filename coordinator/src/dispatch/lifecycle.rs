//! A task's way through the dispatcher: accepted (or refused) on submission, placed
//! when a node is eligible or kept waiting, retried after a backoff, given up on when
//! no node can take it in time, dead-lettered when out of attempts; finished tasks
//! leave the table for the history and the journal. Also the restore after a restart.

use std::time::Duration;

use fog_proto::{Outcome, TaskAssignment, TaskResult, TaskSubmission};
use tokio::time::Instant;

use super::history::describe;
use super::nodes::Ask;
use super::table::{Task, Where};
use super::{short, DeadLetter, Dispatcher, Out};
use crate::breaker::BreakerState;
use crate::journal::{Op as JournalOp, Record};
use crate::placement::Strategy;
use crate::profiles::TaskSample;

fn valid_reply_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && !t.contains(['+', '#', '\0']) && !t.starts_with('$')
}

/// What a placement decision found.
enum Choice {
    /// This node, and whether the task is its breaker's probe.
    Node { slot: usize, probe: bool },
    /// No node now. `unmet`: the task's requirements, if they are what no eligible
    /// node meets.
    None {
        capable: usize,
        suspect: usize,
        open: usize,
        drained: usize,
        unmet: Option<String>,
    },
}

impl Dispatcher {
    pub(super) fn submit_one(&mut self, mut sub: TaskSubmission, now: Instant) -> Option<Out> {
        if !valid_reply_topic(&sub.reply_to) || sub.id.is_empty() || sub.id.len() > 128 {
            self.counters.malformed += 1;
            tracing::debug!(task.id = %short(&sub.id), "submission without a usable id or reply topic");
            return None;
        }
        if let Some(Out::Reply { result, .. }) = self.history.finished(&sub.id) {
            self.counters.duplicate_submissions += 1;
            return Some(Out::Reply {
                topic: std::mem::take(&mut sub.reply_to),
                result: result.clone(),
            });
        }
        if self.table.contains(&sub.id) {
            self.counters.duplicate_submissions += 1;
            return None;
        }
        let strategy = if sub.strategy.is_empty() {
            self.cfg.strategy
        } else {
            match sub.strategy.parse::<Strategy>() {
                Ok(s) => s,
                Err(e) => return Some(self.refuse(&sub, e.to_string(), false)),
            }
        };
        if self.table.waiting() >= self.cfg.max_waiting {
            let reason = format!(
                "coordinator busy: {} tasks already waiting for a node",
                self.table.waiting()
            );
            return Some(self.refuse(&sub, reason, true));
        }
        self.counters.submitted += 1;
        let id = sub.id.clone();
        let submitted_ms = self.wall_ms();
        self.table
            .insert(Task::new(sub, submitted_ms, strategy, 1, now));
        self.journal_record(&id, None);
        self.try_place(&id, now)
    }

    /// Refuse a submission at once, before it is a task.
    fn refuse(&mut self, sub: &TaskSubmission, reason: String, retryable: bool) -> Out {
        self.counters.unplaceable += 1;
        self.answer(sub, 0, Outcome::Rejected { reason, retryable })
    }

    /// After a restart: tasks from the journal. Unfinished ones are placed again with
    /// a raised attempt (at the next tick, once the registry has its nodes); finished
    /// ones answer resubmissions and late results. Returns the final results of tasks
    /// that finished within `resend` of the restart: the crash may have come between
    /// storing a result and publishing it, so they are sent again (clients drop a
    /// repeat by id; the fog client does).
    pub fn restore(&mut self, records: Vec<Record>, now: Instant, resend: Duration) -> Vec<Out> {
        let mut again = Vec::new();
        let since_ms = self.wall_ms().saturating_sub(resend.as_millis() as u64);
        for r in records {
            match r.result {
                Some(result) => {
                    let id = r.sub.id.clone();
                    if result.at_ms >= since_ms {
                        again.push(Out::Reply {
                            topic: r.sub.reply_to.clone(),
                            result: result.clone(),
                        });
                    }
                    let out = Out::Reply {
                        topic: r.sub.reply_to,
                        result,
                    };
                    self.history.restore(id, out);
                }
                None => {
                    let strategy = r.sub.strategy.parse().unwrap_or(self.cfg.strategy);
                    let id = r.sub.id.clone();
                    let attempt = r.attempt.saturating_add(1);
                    self.table
                        .insert(Task::new(r.sub, r.submitted_ms, strategy, attempt, now));
                    self.counters.restored += 1;
                    self.journal_record(&id, None);
                    self.table.retry_at(&id, attempt, now);
                }
            }
        }
        again
    }

    /// The journal record of task `id`'s new state (accepted, a new attempt, or
    /// finished with `finished`).
    pub(super) fn journal_record(&mut self, id: &str, finished: Option<&TaskResult>) {
        if !self.journaling {
            return;
        }
        let Some(t) = self.table.get(id) else { return };
        let r = Record {
            sub: t.sub.clone(),
            attempt: t.attempt,
            submitted_ms: t.submitted_ms,
            result: finished.cloned(),
        };
        self.journal.push(match (finished, t.attempt) {
            (Some(_), _) => JournalOp::Finish(r),
            (None, 1) => JournalOp::Accept(r),
            (None, _) => JournalOp::Attempt(r),
        });
    }

    /// A reply from the coordinator itself (the task never ran, or ran out of tries).
    pub(super) fn answer(&self, sub: &TaskSubmission, attempt: u32, outcome: Outcome) -> Out {
        Out::Reply {
            topic: sub.reply_to.clone(),
            result: TaskResult {
                id: sub.id.clone(),
                attempt,
                node: self.coordinator.clone(),
                at_ms: self.wall_ms(),
                outcome,
            },
        }
    }

    /// A task ended with `out` (its final reply): list it, remember it, and return the
    /// reply to send. With a journal the reply is not returned: the journal sends it
    /// once the result is durable, so a crash cannot make a client see a task finish
    /// twice (once before the crash, once more after it was placed again).
    pub(super) fn finish(&mut self, t: Task, out: Out) -> Option<Out> {
        let journaled = self.journaling;
        let (id, kind) = (t.sub.id.clone(), t.sub.kind.clone());
        if journaled {
            if let Out::Reply { result, .. } = &out {
                // Moved, not cloned: the payload is not journaled with a result.
                let mut sub = t.sub;
                sub.payload = Default::default();
                self.journal.push(JournalOp::Finish(Record {
                    sub,
                    attempt: t.attempt,
                    submitted_ms: t.submitted_ms,
                    result: Some(result.clone()),
                }));
            }
        }
        let at_ms = self.wall_ms();
        if let Out::Reply { result, .. } = &out {
            // The coordinator's own verdicts (refused, dead-lettered) belong to no node.
            let node = if result.node == self.coordinator {
                ""
            } else {
                result.node.as_str()
            };
            if let Some(s) = TaskSample::new(&kind, node, &result.outcome, t.submitted_ms, at_ms) {
                self.sample_finished(s);
            }
        }
        self.history.remember(id, &kind, out.clone(), at_ms);
        (!journaled).then_some(out)
    }

    /// Place a waiting task now, or keep it waiting, or give up on it.
    pub(super) fn try_place(&mut self, id: &str, now: Instant) -> Option<Out> {
        match self.choose(id, now)? {
            Choice::Node { slot, probe } => self.assign(id, slot, probe, now),
            Choice::None {
                capable,
                suspect,
                open,
                drained,
                unmet,
            } => self.no_node(id, now, [capable, suspect, open, drained], unmet),
        }
    }

    /// Which node should take waiting task `id`, if any. `None` if it is not waiting.
    fn choose(&mut self, id: &str, now: Instant) -> Option<Choice> {
        let t = self.table.get(id)?;
        if !matches!(t.at(), Where::Waiting { .. }) {
            return None;
        }
        let (kind, strategy, key_hash) = (t.sub.kind.clone(), t.strategy, t.key_hash);
        let refused = t.refused_by.clone();
        let requires = (!t.sub.requires.is_empty()).then(|| t.sub.requires.clone());
        let bcfg = &self.cfg.breaker;
        let set = self.eligibility.kind_set(
            &mut self.nodes,
            bcfg,
            &kind,
            now,
            &mut self.counters.panic_mode,
        );
        let slots = &self.nodes.slots;
        let meets = |s: usize| requires.as_ref().is_none_or(|r| slots[s].meets(r));
        // A half-open node with room for a probe gets this task as its probe.
        let probe = set
            .half_open
            .iter()
            .copied()
            .find(|&s| meets(s) && slots[s].breaker.clone().allows(bcfg, now));
        // Only the kind's whole eligible list may use (and build) the placer's cached
        // ring, schedule and heaps; a filtered one is decided by a scan.
        let full_set = refused.is_empty() && requires.is_none();
        let filtered: Vec<usize>;
        let eligible: &[usize] = if full_set {
            &set.eligible
        } else {
            // Only nodes that meet the task's requirements; among them, prefer nodes
            // that have not refused this task (if all have, all again).
            let fit: Vec<usize> = set.eligible.iter().copied().filter(|&s| meets(s)).collect();
            let fresh: Vec<usize> = fit
                .iter()
                .copied()
                .filter(|s| !refused.contains(s))
                .collect();
            filtered = if fresh.is_empty() { fit } else { fresh };
            &filtered
        };
        if let Some(slot) = probe {
            return Some(Choice::Node { slot, probe: true });
        }
        let unmet = requires
            .as_ref()
            .filter(|_| eligible.is_empty() && !set.eligible.is_empty())
            .map(|r| r.to_string());
        let (capable, suspect, open, drained) = (set.capable, set.suspect, set.open, set.drained);
        let ask = Ask {
            kind: &kind,
            strategy,
            eligible,
            full_set,
            key_hash,
        };
        Some(match self.nodes.pick(&ask) {
            Some(slot) => Choice::Node { slot, probe: false },
            None => Choice::None {
                capable,
                suspect,
                open,
                drained,
                unmet,
            },
        })
    }

    /// No node for waiting task `id` now: refuse it if no node runs the kind (after
    /// the warm-up) or it has waited `max_wait`, else look again shortly.
    /// `counts`: nodes that run the kind, suspect, with an open breaker, drained.
    fn no_node(
        &mut self,
        id: &str,
        now: Instant,
        counts: [usize; 4],
        unmet: Option<String>,
    ) -> Option<Out> {
        let [capable, suspect, open, drained] = counts;
        let t = self.table.get(id)?;
        let (kind, attempt) = (short(&t.sub.kind), t.attempt);
        let Where::Waiting { since } = t.at() else {
            return None;
        };
        let warming = self.warm_until.is_some_and(|t| now < t);
        let waited_out = now.saturating_duration_since(since) >= self.cfg.max_wait;
        let max_wait = self.cfg.max_wait.as_secs_f64();
        let reason = if capable == 0 && !warming {
            format!("no online node runs kind {kind:?}")
        } else if let Some(unmet) = unmet.filter(|_| waited_out) {
            format!(
                "no node that runs kind {kind:?} met the task's requirements ({unmet}) within {max_wait:.0}s"
            )
        } else if waited_out {
            format!(
                "no eligible node for kind {kind:?} within {max_wait:.0}s: {capable} run it, {suspect} suspect, {open} with an open breaker, {drained} drained"
            )
        } else {
            // Wait and look again.
            let delay = self.cfg.retry_initial.max(Duration::from_millis(10));
            self.table.retry_at(id, attempt, now + delay);
            return None;
        };
        self.counters.unplaceable += 1;
        self.give_up(id, reason, true)
    }

    /// Send waiting task `id` to `slot`.
    fn assign(&mut self, id: &str, slot: usize, probe: bool, now: Instant) -> Option<Out> {
        let bcfg = &self.cfg.breaker;
        let s = &mut self.nodes.slots[slot];
        if s.breaker.state(bcfg, now) == BreakerState::HalfOpen {
            s.breaker.on_placed();
        }
        self.nodes.load_mut(slot).in_flight += 1;
        self.counters.placed += 1;
        let (default_timeout, grace) = (self.cfg.default_timeout, self.cfg.timeout_grace);
        let (t, first_wait) = self.table.place(id, slot, now, probe, |t| {
            now + t.timeout(default_timeout) + grace
        })?;
        if let Some(waited) = first_wait {
            self.placement_latency.observe(waited);
        }
        Some(Out::Assign {
            node: self.nodes.slots[slot].id.clone(),
            task: TaskAssignment {
                id: t.sub.id.clone(),
                attempt: t.attempt,
                kind: t.sub.kind.clone(),
                payload: t.sub.payload.clone(),
                timeout_ms: t.sub.timeout_ms,
                priority: t.sub.priority,
                deadline_ms: 0,
                cacheable: t.sub.cacheable,
            },
        })
    }

    /// End a task that never got (or can no longer get) a node: reject it to the client.
    fn give_up(&mut self, id: &str, reason: String, retryable: bool) -> Option<Out> {
        let t = self.table.remove(id)?;
        let out = self.answer(&t.sub, t.attempt, Outcome::Rejected { reason, retryable });
        self.finish(t, out)
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .retry_initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.cfg.retry_max).mul_f64(self.rng.f64())
    }

    /// Schedule the next attempt, or dead-letter the task if it has had them all.
    /// `node_fault`: the placement failed on the node's account (not a busy refusal).
    pub(super) fn retry(
        &mut self,
        id: &str,
        now: Instant,
        failure: Option<TaskResult>,
        node_fault: bool,
    ) -> Option<Out> {
        let max_wait = self.cfg.max_wait;
        let (attempt, out_of_tries) = {
            let t = self.table.get_mut(id)?;
            if let Some(f) = failure {
                t.last_failure = Some(f);
            }
            if node_fault {
                t.failures += 1;
                t.busy_since = None;
            } else {
                t.busy_since.get_or_insert(now);
            }
            let busy_too_long = t
                .busy_since
                .is_some_and(|b| now.saturating_duration_since(b) >= max_wait);
            (
                t.attempt,
                t.failures >= self.cfg.max_attempts || busy_too_long,
            )
        };
        if out_of_tries {
            return self.dead_letter(id);
        }
        let delay = self.backoff(attempt);
        let t = self.table.get_mut(id)?;
        t.attempt += 1;
        let attempt = t.attempt;
        self.table.wait_from(id, now);
        self.counters.replaced += 1;
        self.journal_record(id, None);
        if delay.is_zero() {
            return self.try_place(id, now);
        }
        self.table.retry_at(id, attempt, now + delay);
        None
    }

    fn dead_letter(&mut self, id: &str) -> Option<Out> {
        let mut t = self.table.remove(id)?;
        self.counters.dead_lettered += 1;
        self.counters.failed += 1;
        let (last_error, result) = match t.last_failure.take() {
            Some(r) => (describe(&r.outcome), r),
            None => (
                "no result".to_owned(),
                TaskResult {
                    id: t.sub.id.clone(),
                    attempt: t.attempt,
                    node: self.coordinator.clone(),
                    at_ms: self.wall_ms(),
                    outcome: Outcome::Failed {
                        error: format!("gave up after {} attempts", t.attempt),
                        retryable: false,
                        exit_code: None,
                        duration_ms: 0,
                    },
                },
            ),
        };
        tracing::warn!(task.id = %short(id), kind = %short(&t.sub.kind), attempts = t.attempt, error = %last_error, "task dead-lettered");
        self.history.dead_letter(DeadLetter {
            id: t.sub.id.clone(),
            kind: t.sub.kind.clone(),
            attempts: t.attempt,
            last_error,
            at_ms: self.wall_ms(),
        });
        let out = Out::Reply {
            topic: t.sub.reply_to.clone(),
            result,
        };
        self.finish(t, out)
    }
}
