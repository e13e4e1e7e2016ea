//! Task dispatch: take submissions, place each on an eligible agent with the configured
//! (or the task's own) strategy, relay results to the client's reply topic, retry what
//! failed elsewhere with fencing, and make the client see exactly one final result per
//! task id.
//!
//! A task's life here ([`lifecycle`] and [`results`]): placed on a node (attempt n),
//! then one of
//! * completed, or failed for good: the result goes to the client, remembered so a
//!   resubmitted id gets the same answer;
//! * refused as busy, failed-retryable, timed out (its timeout plus a grace, or the
//!   agent said so), or its node went offline: placed again after a full-jitter backoff
//!   as attempt n+1, preferring nodes that have not refused it; a late result from an
//!   older attempt is dropped (fencing);
//! * out of attempts: dead-lettered, and the last failure goes to the client.
//!
//! The parts: [`nodes`] (the node view: slots, loads, weights, run times), the
//! [`eligibility`] cache per kind, the [`table`] of unfinished tasks with their timers,
//! [`history`] (finished, recent, dead letters), [`counters`], and the journal records
//! ([`Dispatcher::journal`]).
//!
//! Every decision returns what to send ([`Out`]) instead of publishing, so this module
//! is plain state that unit tests drive directly with paused time; the service groups
//! the outputs into list messages per topic. Monotonic time comes in as `now`; the
//! wall-clock stamps on results and listings (for people and for the journal) come
//! from one clock, [`Dispatcher::wall_ms`].

use std::time::Duration;

use fog_proto::TaskSummary;

use crate::profiles::TaskSample;
use fog_proto::{
    codec, NodeId, Outcome, TaskAssignment, TaskResult, TaskResults, TaskSubmission,
    TaskSubmissions,
};
use tokio::time::Instant;

use crate::breaker::{BreakerConfig, BreakerState};
use crate::clients::Gate;
use crate::journal::Op as JournalOp;
use crate::placement::Strategy;
use crate::registry::Registry;

#[cfg(test)]
mod client_tests;
mod counters;
mod eligibility;
mod history;
mod lifecycle;
mod nodes;
mod results;
mod table;
#[cfg(test)]
mod tests;

pub use counters::DispatchCounters;
pub use history::{DeadLetter, DEAD_LETTERS, RECENT_KEPT, REMEMBER_FINISHED};

use eligibility::Eligibility;
use history::{describe, History};
use nodes::NodeView;
use table::{TaskTable, Where};

#[derive(Debug, Clone)]
pub struct PlacementConfig {
    pub strategy: Strategy,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub timeout_grace: Duration,
    pub default_timeout: Duration,
    pub max_wait: Duration,
    pub max_waiting: usize,
    pub degraded_cpu_pct: f32,
    pub degraded_mem_pct: f32,
    pub breaker: BreakerConfig,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            strategy: Strategy::P2c,
            max_attempts: 3,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            timeout_grace: Duration::from_secs(5),
            default_timeout: Duration::from_secs(60),
            max_wait: Duration::from_secs(30),
            max_waiting: 10_000,
            degraded_cpu_pct: 80.0,
            degraded_mem_pct: 85.0,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Something to send (QoS 1, not retained), grouped into lists by the service.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// To `nodes/{node}/tasks`.
    Assign { node: NodeId, task: TaskAssignment },
    /// To a client's reply topic.
    Reply { topic: String, result: TaskResult },
}

/// Per node figures for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlacement {
    pub node: NodeId,
    pub in_flight: u32,
    pub breaker: BreakerState,
    pub latency_ms: f64,
    pub degraded: bool,
    /// An operator drained it.
    pub drained: bool,
}

pub struct Dispatcher {
    cfg: PlacementConfig,
    coordinator: NodeId,
    nodes: NodeView,
    eligibility: Eligibility,
    table: TaskTable,
    history: History,
    rng: fastrand::Rng,
    /// The wall clock (milliseconds since the epoch).
    wall: fn() -> u64,
    /// Whether state changes are written to `journal` (a coordinator with a data dir).
    journaling: bool,
    /// Until then "no node runs this kind" means "not heard from yet": the task waits
    /// instead of being refused (right after start or a reconnect, while the retained
    /// birth records arrive).
    warm_until: Option<Instant>,
    /// Who may submit what; open (everything taken) unless [`Dispatcher::set_gate`].
    gate: Gate,
    /// Durable-state writes the service hands to the journal after each call.
    pub journal: Vec<JournalOp>,
    pub counters: DispatchCounters,
    /// Tasks that ended since the service last took them, for the task profiles.
    finished: std::collections::VecDeque<TaskSample>,
    /// How long new tasks waited for their first placement.
    pub placement_latency: crate::latency::Histogram,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new(PlacementConfig::default())
    }
}

impl Dispatcher {
    pub fn new(cfg: PlacementConfig) -> Self {
        Self::with_seed(cfg, fastrand::u64(..))
    }

    /// A dispatcher whose random choices (p2c samples, retry jitter) are reproducible.
    pub fn with_seed(cfg: PlacementConfig, seed: u64) -> Self {
        Dispatcher {
            cfg,
            coordinator: NodeId::new("coordinator").expect("a valid node id"),
            nodes: NodeView::with_seed(seed),
            eligibility: Eligibility::default(),
            table: TaskTable::default(),
            history: History::default(),
            rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
            wall: fog_rt::clock::now_ms,
            journaling: false,
            warm_until: None,
            gate: Gate::default(),
            journal: Vec::new(),
            counters: DispatchCounters::default(),
            finished: Default::default(),
            placement_latency: Default::default(),
        }
    }

    /// Until `until`, a task whose kind no known node runs waits for one instead of
    /// being refused at once (call on start and after every (re)subscription).
    pub fn warm_up(&mut self, until: Instant) {
        self.warm_until = Some(until);
    }

    /// Check every submission against these clients from now on (said in the log).
    pub fn set_gate(&mut self, gate: Gate) {
        gate.announce();
        self.gate = gate;
    }

    /// Who may submit what.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Record every state change in [`Dispatcher::journal`] from now on.
    pub fn enable_journal(&mut self) {
        self.journaling = true;
    }

    /// The wall clock, the only one this module reads itself.
    pub fn wall_ms(&self) -> u64 {
        (self.wall)()
    }

    pub fn in_flight(&self) -> usize {
        self.table.len()
    }

    /// Tasks that ran out of attempts, oldest first.
    pub fn dead_letters(&self) -> impl Iterator<Item = &DeadLetter> {
        self.history.dead_letters()
    }

    /// Drain `node` (place nothing new there; what runs there finishes) or undrain
    /// it. Whether that changed anything.
    pub fn set_drained(&mut self, node: &NodeId, drained: bool) -> bool {
        self.nodes.set_drained(node, drained)
    }

    /// `node` was forgotten by the registry: nothing is placed there, what was placed
    /// there is placed again at the next tick, and it is no longer drained.
    pub fn forget(&mut self, node: &NodeId) {
        self.nodes.forget(node);
    }

    /// The drained nodes.
    pub fn drained(&self) -> &std::collections::BTreeSet<NodeId> {
        self.nodes.drained()
    }

    /// Most samples held between two takes (a second's worth at 100,000 tasks/s);
    /// beyond it the oldest go, counted.
    pub const MAX_FINISHED: usize = 100_000;

    fn sample_finished(&mut self, s: TaskSample) {
        if self.finished.len() >= Self::MAX_FINISHED {
            self.finished.pop_front();
            self.counters.profile_samples_dropped += 1;
        }
        self.finished.push_back(s);
    }

    /// The tasks that ended since the last call, for the task profiles.
    pub fn take_finished(&mut self) -> Vec<TaskSample> {
        self.finished.drain(..).collect()
    }

    /// Running (oldest first), recent and dead-lettered (newest first) tasks, at most
    /// `max` each: [`fog_proto::STATUS_TASKS_MAX`] for the coordinator status, more for the HTTP
    /// API.
    pub fn task_lists(&self, max: usize) -> (Vec<TaskSummary>, Vec<TaskSummary>, Vec<TaskSummary>) {
        let mut running: Vec<TaskSummary> = self
            .table
            .iter()
            .map(|(_, t)| {
                let (node, state) = match t.at() {
                    Where::Placed { slot, .. } => {
                        (self.nodes.slots[slot].id.to_string(), "running")
                    }
                    Where::Waiting { .. } => (String::new(), "waiting"),
                };
                TaskSummary {
                    id: t.sub.id.clone(),
                    kind: t.sub.kind.clone(),
                    node,
                    attempt: t.attempt,
                    state: state.to_owned(),
                    detail: t
                        .last_failure
                        .as_ref()
                        .map(|r| describe(&r.outcome))
                        .unwrap_or_default(),
                    at_ms: t.submitted_ms,
                }
            })
            .collect();
        running.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
        running.truncate(max);
        let (recent, dead) = self.history.summaries(max);
        (running, recent, dead)
    }

    /// Per node placement figures, sorted by node id.
    pub fn node_placements(&self, now: Instant) -> Vec<NodePlacement> {
        let cfg = &self.cfg.breaker;
        let mut v: Vec<NodePlacement> = self
            .nodes
            .slots
            .iter()
            .zip(&self.nodes.loads)
            .map(|(s, l)| NodePlacement {
                node: s.id.clone(),
                in_flight: l.in_flight,
                breaker: s.breaker.peek(cfg, now),
                latency_ms: l.latency_ms,
                degraded: s.degraded,
                drained: s.drained,
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// A client's list of submissions.
    pub fn on_submit(&mut self, registry: &Registry, payload: &[u8], now: Instant) -> Vec<Out> {
        let list: TaskSubmissions = match codec::decode(payload) {
            Ok(s) => s,
            Err(error) => {
                self.counters.malformed += 1;
                tracing::debug!(%error, "malformed task submissions");
                return Vec::new();
            }
        };
        // Refused ones are answered (where the gate allows) before anything else
        // happens to them: not journaled, not placed, not remembered.
        let admitted = self.gate.admit(list, self.wall_ms(), now);
        self.take_admitted(registry, admitted, now)
    }

    /// Submissions from `client`, authenticated by the HTTP API: the gate's per-item
    /// rules, then as [`Dispatcher::on_submit`]. Also returns the ids the gate
    /// refused, with why (the API answers 403 when it refused them all).
    pub fn on_client_submit(
        &mut self,
        registry: &Registry,
        client: &str,
        items: Vec<TaskSubmission>,
        now: Instant,
    ) -> (Vec<Out>, Vec<(String, String)>) {
        let admitted = self.gate.admit_client(client, items, now);
        let refused = admitted
            .answered
            .iter()
            .map(|(s, r)| (s.id.clone(), r.to_string()))
            .collect();
        (self.take_admitted(registry, admitted, now), refused)
    }

    /// Whether task `id` is accepted and not finished.
    pub fn is_running(&self, id: &str) -> bool {
        self.table.contains(id)
    }

    /// Whether accepted tasks are journaled (and answered `accepted` once durable).
    pub fn is_journaling(&self) -> bool {
        self.journaling
    }

    /// What the gate let through, to the table; what it refused, answered.
    fn take_admitted(
        &mut self,
        registry: &Registry,
        admitted: crate::clients::Admitted,
        now: Instant,
    ) -> Vec<Out> {
        let mut out = Vec::with_capacity(admitted.accepted.len() + admitted.answered.len());
        for (sub, refusal) in admitted.answered {
            let outcome = Outcome::Rejected {
                reason: refusal.to_string(),
                retryable: refusal.retryable(),
            };
            out.push(self.answer(&sub, 0, outcome));
        }
        if admitted.accepted.is_empty() {
            return out;
        }
        self.nodes.sync(registry, now, &self.cfg);
        for sub in admitted.accepted {
            out.extend(self.submit_one(sub, now));
        }
        out
    }

    /// A list of results from `node`, still encoded.
    pub fn on_result(
        &mut self,
        registry: &Registry,
        node: &str,
        payload: &[u8],
        now: Instant,
    ) -> Vec<Out> {
        let list: TaskResults = match codec::decode(payload) {
            Ok(r) => r,
            Err(error) => {
                self.counters.malformed += 1;
                tracing::debug!(node.id = %node, %error, "malformed task results");
                return Vec::new();
            }
        };
        self.on_result_list(registry, node, list, now)
    }

    /// A decoded list of results from `node` (after the caller checked who sent it).
    pub fn on_result_list(
        &mut self,
        registry: &Registry,
        node: &str,
        list: TaskResults,
        now: Instant,
    ) -> Vec<Out> {
        self.nodes.sync(registry, now, &self.cfg);
        let mut out = Vec::new();
        for r in list.items {
            out.extend(self.result_one(node, r, now));
        }
        out
    }

    /// Timers (retries, timeouts) and nodes that went offline. Call often (every few
    /// ms under load); cheap when nothing is due.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        let moved = self.nodes.registry_moved(registry);
        self.nodes.sync(registry, now, &self.cfg);
        if moved {
            self.replace_lost(now, &mut out);
        }
        while let Some(timer) = self.table.pop_due(now) {
            out.extend(self.on_timer(timer, now));
        }
        out
    }

    pub fn counters_map(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.counters.named(self.table.len(), self.table.waiting());
        v.extend(self.gate.named());
        v
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}
