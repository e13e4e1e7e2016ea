//! Task dispatch: take submissions, place each on an eligible agent with the configured
//! (or the task's own) strategy, relay results to the client's reply topic, retry what
//! failed elsewhere with fencing, and make the client see exactly one final result per
//! task id.
//!
//! A task's life here: placed on a node (attempt n), then one of
//! * completed, or failed for good: the result goes to the client, remembered so a
//!   resubmitted id gets the same answer;
//! * refused as busy, failed-retryable, timed out (its timeout plus a grace, or the
//!   agent said so), or its node went offline: placed again after a full-jitter backoff
//!   as attempt n+1, preferring nodes that have not refused it; a late result from an
//!   older attempt is dropped (fencing);
//! * out of attempts: dead-lettered, and the last failure goes to the client.
//!
//! Eligible means: the node announced the kind, is online (not suspect or offline) and
//! its breaker is closed (or half-open with room for a probe). If more than half of the
//! capable nodes have open breakers, breakers are ignored for that kind (Envoy's panic
//! threshold), so a fleet-wide problem does not turn into a fleet-wide outage.
//!
//! Every decision returns what to send ([`Out`]) instead of publishing, so this module
//! is plain state that unit tests drive directly with paused time; the service groups
//! the outputs into list messages per topic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use fog_proto::{
    codec, NodeId, NodeState, Outcome, TaskAssignment, TaskResult, TaskResults, TaskSubmission,
    TaskSubmissions, TaskSummary, STATUS_TASKS_MAX,
};
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::journal::{Op as JournalOp, Record};
use crate::placement::{hash64, peak_ewma, NodeLoad, Placer, Request, Strategy};
use crate::registry::Registry;

/// Final results remembered to answer a client that submits the same id again.
pub const REMEMBER_FINISHED: usize = 100_000;
/// Dead-lettered tasks kept for `fog-coordinator tasks --dead`.
pub const DEAD_LETTERS: usize = 1_000;
/// Weight of a new sample in the per-kind duration EWMA (adaptive).
const KIND_ALPHA: f64 = 0.2;
/// Decay of the peak EWMA of latency (response_time).
const LATENCY_ALPHA: f64 = 0.1;

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

/// A node as placement sees it. Slots are never reused, so indexes stay valid.
struct Slot {
    id: NodeId,
    hash: u64,
    breaker: Breaker,
    /// The registry's view at the last sync.
    state: NodeState,
    kinds: Vec<String>,
    degraded: bool,
    arch: String,
    labels: std::collections::BTreeMap<String, String>,
    /// Free memory at the last heartbeat (bytes), if known.
    free_memory: Option<u64>,
}

impl Slot {
    fn meets(&self, r: &fog_proto::Requirements) -> bool {
        (r.arch.is_empty() || r.arch == self.arch)
            && r.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
            && (r.min_free_memory_bytes == 0
                || self
                    .free_memory
                    .is_some_and(|f| f >= r.min_free_memory_bytes))
    }
}

enum Where {
    Placed {
        slot: usize,
        at: Instant,
        probe: bool,
    },
    /// Waiting for its next try (a retry's backoff, or no eligible node yet).
    Waiting { since: Instant },
}

struct Task {
    sub: TaskSubmission,
    /// Wall clock at submission, for `fog-coordinator tasks`.
    submitted_ms: u64,
    strategy: Strategy,
    key_hash: u64,
    attempt: u32,
    at: Where,
    refused_by: Vec<usize>,
    last_failure: Option<TaskResult>,
    /// Placements that failed on the node's account (failed-retryable, timed out, node
    /// lost); `max_attempts` of them dead-letter the task.
    failures: u32,
    /// Since when every node asked has refused it as busy: back-pressure does not use
    /// up attempts, but a task refused for `max_wait` is dead-lettered.
    busy_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Retry,
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    kind: TimerKind,
    attempt: u32,
    id: String,
}

/// A task that ran out of attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub kind: String,
    pub attempts: u32,
    pub last_error: String,
    pub at_ms: u64,
}

/// Per node figures for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlacement {
    pub node: NodeId,
    pub in_flight: u32,
    pub breaker: BreakerState,
    pub latency_ms: f64,
    pub degraded: bool,
}

/// Counters, reported in the coordinator status.
#[derive(Debug, Default, Clone, Copy)]
pub struct DispatchCounters {
    pub submitted: u64,
    pub placed: u64,
    pub replaced: u64,
    pub completed: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub timed_out: u64,
    pub node_lost: u64,
    pub duplicate_submissions: u64,
    pub duplicate_results_dropped: u64,
    pub stale_results_dropped: u64,
    pub unplaceable: u64,
    pub malformed: u64,
    pub breaker_opened: u64,
    pub panic_mode: u64,
    pub restored: u64,
}

/// Per kind, how long it takes on each node (adaptive): a dense EWMA of run time by
/// slot (0 = not run there yet) and the running sum of the known ones for their mean.
#[derive(Default)]
struct KindTimes {
    ms: Vec<f64>,
    sum: f64,
    known: u32,
}

impl KindTimes {
    /// Takes the placer so that no run time changes without the placement indexes
    /// hearing of it.
    fn learn(&mut self, slot: usize, sample_ms: f64, placer: &mut Placer) {
        placer.touch(slot);
        if self.ms.len() <= slot {
            self.ms.resize(slot + 1, 0.0);
        }
        let old = self.ms[slot];
        let new = if old > 0.0 {
            old + KIND_ALPHA * (sample_ms - old)
        } else {
            self.known += 1;
            sample_ms
        };
        self.ms[slot] = new;
        self.sum += new - old;
    }

    fn mean(&self) -> f64 {
        if self.known == 0 {
            0.0
        } else {
            self.sum / f64::from(self.known)
        }
    }
}

/// Per kind: who may take it now.
#[derive(Default)]
struct KindSet {
    generation: u64,
    eligible: Vec<usize>,
    half_open: Vec<usize>,
    capable: usize,
    suspect: usize,
    open: usize,
}

pub struct Dispatcher {
    cfg: PlacementConfig,
    coordinator: NodeId,
    slots: Vec<Slot>,
    loads: Vec<NodeLoad>,
    slot_of: HashMap<NodeId, usize>,
    registry_generation: Option<u64>,
    /// Bumped when eligibility may have changed (registry or breakers).
    generation: u64,
    /// Bumped when a node's weight changed.
    weights_generation: u64,
    kinds: HashMap<String, KindSet>,
    kind_times: HashMap<String, KindTimes>,
    placer: Placer,
    rng: fastrand::Rng,
    tasks: HashMap<String, Task>,
    timers: BinaryHeap<Reverse<Timer>>,
    waiting: usize,
    finished: HashMap<String, Out>,
    finished_order: VecDeque<String>,
    dead: VecDeque<DeadLetter>,
    /// The last tasks that ended, newest at the back, for `fog-coordinator tasks`.
    recent: VecDeque<TaskSummary>,
    last_weights: Option<Instant>,
    /// Whether state changes are written to `journal` (a coordinator with a data dir).
    journaling: bool,
    /// Until then "no node runs this kind" means "not heard from yet": the task waits
    /// instead of being refused (right after start or a reconnect, while the retained
    /// birth records arrive).
    warm_until: Option<Instant>,
    /// Durable-state writes the service hands to the journal after each call.
    pub journal: Vec<JournalOp>,
    pub counters: DispatchCounters,
}

fn valid_reply_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && !t.contains(['+', '#', '\0']) && !t.starts_with('$')
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
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
            slots: Vec::new(),
            loads: Vec::new(),
            slot_of: HashMap::new(),
            registry_generation: None,
            generation: 0,
            weights_generation: 0,
            kinds: HashMap::new(),
            kind_times: HashMap::new(),
            placer: Placer::with_seed(seed),
            rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
            tasks: HashMap::new(),
            timers: BinaryHeap::new(),
            waiting: 0,
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            dead: VecDeque::new(),
            recent: VecDeque::new(),
            last_weights: None,
            journaling: false,
            warm_until: None,
            journal: Vec::new(),
            counters: DispatchCounters::default(),
        }
    }

    /// Until `until`, a task whose kind no known node runs waits for one instead of
    /// being refused at once (call on start and after every (re)subscription).
    pub fn warm_up(&mut self, until: Instant) {
        self.warm_until = Some(until);
    }

    /// Record every state change in [`Dispatcher::journal`] from now on.
    pub fn enable_journal(&mut self) {
        self.journaling = true;
    }

    fn journal_record(&mut self, id: &str, finished: Option<&TaskResult>) {
        if !self.journaling {
            return;
        }
        let Some(t) = self.tasks.get(id) else { return };
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

    /// After a restart: tasks from the journal. Unfinished ones are placed again with
    /// a raised attempt (at the next tick, once the registry has its nodes); finished
    /// ones answer resubmissions and late results. Returns the final results of tasks
    /// that finished within `resend` of the restart: the crash may have come between
    /// storing a result and publishing it, so they are sent again (clients drop a
    /// repeat by id; the fog client does).
    pub fn restore(&mut self, records: Vec<Record>, now: Instant, resend: Duration) -> Vec<Out> {
        let mut again = Vec::new();
        let since_ms = fog_rt::clock::now_ms().saturating_sub(resend.as_millis() as u64);
        for r in records {
            match r.result {
                Some(result) => {
                    let id = r.sub.id.clone();
                    let out = Out::Reply {
                        topic: r.sub.reply_to,
                        result,
                    };
                    if let Out::Reply { result, .. } = &out {
                        if result.at_ms >= since_ms {
                            again.push(out.clone());
                        }
                    }
                    if self.finished.insert(id.clone(), out).is_none() {
                        self.finished_order.push_back(id);
                    }
                }
                None => {
                    let strategy = r.sub.strategy.parse().unwrap_or(self.cfg.strategy);
                    let key_hash = hash64(
                        if r.sub.key.is_empty() {
                            &r.sub.id
                        } else {
                            &r.sub.key
                        }
                        .as_bytes(),
                    );
                    let id = r.sub.id.clone();
                    let attempt = r.attempt.saturating_add(1);
                    self.tasks.insert(
                        id.clone(),
                        Task {
                            sub: r.sub,
                            submitted_ms: r.submitted_ms,
                            strategy,
                            key_hash,
                            attempt,
                            at: Where::Waiting { since: now },
                            refused_by: Vec::new(),
                            last_failure: None,
                            failures: 0,
                            busy_since: None,
                        },
                    );
                    self.waiting += 1;
                    self.counters.restored += 1;
                    self.journal_record(&id, None);
                    self.timers.push(Reverse(Timer {
                        at: now,
                        kind: TimerKind::Retry,
                        attempt,
                        id,
                    }));
                }
            }
        }
        again
    }

    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks that ran out of attempts, oldest first.
    pub fn dead_letters(&self) -> impl Iterator<Item = &DeadLetter> {
        self.dead.iter()
    }

    /// Running (oldest first), recent and dead-lettered (newest first) tasks, at most
    /// [`STATUS_TASKS_MAX`] each, for the coordinator status.
    pub fn task_lists(&self) -> (Vec<TaskSummary>, Vec<TaskSummary>, Vec<TaskSummary>) {
        let mut running: Vec<TaskSummary> = self
            .tasks
            .values()
            .map(|t| {
                let (node, state) = match t.at {
                    Where::Placed { slot, .. } => (self.slots[slot].id.to_string(), "running"),
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
        running.truncate(STATUS_TASKS_MAX);
        let recent = self.recent.iter().rev().cloned().collect();
        let dead = self
            .dead
            .iter()
            .rev()
            .take(STATUS_TASKS_MAX)
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
        (running, recent, dead)
    }

    /// Per node placement figures, sorted by node id.
    pub fn node_placements(&self, now: Instant) -> Vec<NodePlacement> {
        let cfg = self.cfg.breaker.clone();
        let mut v: Vec<NodePlacement> = self
            .slots
            .iter()
            .zip(&self.loads)
            .map(|(s, l)| NodePlacement {
                node: s.id.clone(),
                in_flight: l.in_flight,
                breaker: s.breaker.peek(&cfg, now),
                latency_ms: l.latency_ms,
                degraded: s.degraded,
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    fn answer(&self, sub: &TaskSubmission, attempt: u32, outcome: Outcome) -> Out {
        Out::Reply {
            topic: sub.reply_to.clone(),
            result: TaskResult {
                id: sub.id.clone(),
                attempt,
                node: self.coordinator.clone(),
                at_ms: fog_rt::clock::now_ms(),
                outcome,
            },
        }
    }

    /// A task ended with `out` (its final reply): list it, remember it, and return the
    /// reply to send. With a journal the reply is not returned: the journal sends it
    /// once the result is durable, so a crash cannot make a client see a task finish
    /// twice (once before the crash, once more after it was placed again).
    fn finish(&mut self, t: Task, out: Out) -> Option<Out> {
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
        self.remember(id, &kind, out.clone());
        (!journaled).then_some(out)
    }

    fn remember(&mut self, id: String, kind: &str, out: Out) {
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
                at_ms: fog_rt::clock::now_ms(),
            });
            while self.recent.len() > STATUS_TASKS_MAX {
                self.recent.pop_front();
            }
        }
        if self.finished.insert(id.clone(), out).is_none() {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > REMEMBER_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Bring slots and eligibility up to date with the registry.
    fn sync(&mut self, registry: &Registry, now: Instant) {
        let weights_due = self
            .last_weights
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if self.registry_generation == Some(registry.generation()) && !weights_due {
            return;
        }
        let mut moved = self.registry_generation != Some(registry.generation());
        self.registry_generation = Some(registry.generation());
        self.last_weights = Some(now);
        let mut weights_changed = false;
        // An open breaker whose time is up turns half-open by the clock alone; its
        // node becomes a probe candidate, so the eligible sets must be rebuilt.
        let bcfg = &self.cfg.breaker;
        for s in &mut self.slots {
            let before = s.breaker.last_state();
            if s.breaker.state(bcfg, now) != before {
                moved = true;
            }
        }
        for (id, e) in registry.nodes() {
            let slot = match self.slot_of.get(id) {
                Some(&s) => s,
                None => {
                    self.slots.push(Slot {
                        id: id.clone(),
                        hash: hash64(id.as_str().as_bytes()),
                        breaker: Breaker::default(),
                        state: e.state,
                        kinds: Vec::new(),
                        degraded: false,
                        arch: String::new(),
                        labels: Default::default(),
                        free_memory: None,
                    });
                    self.loads.push(NodeLoad::default());
                    let slot = self.slots.len() - 1;
                    self.placer.touch(slot);
                    self.slot_of.insert(id.clone(), slot);
                    slot
                }
            };
            let s = &mut self.slots[slot];
            s.state = e.state;
            if let Some(b) = &e.birth {
                if s.kinds != b.task_kinds {
                    s.kinds = b.task_kinds.clone();
                }
                if s.arch != b.arch {
                    s.arch = b.arch.clone();
                }
                if s.labels != b.labels {
                    s.labels = b.labels.clone();
                }
                s.free_memory = e.heartbeat.as_ref().map(|h| {
                    (b.memory_bytes as f64 * (1.0 - f64::from(h.mem_pct) / 100.0).clamp(0.0, 1.0))
                        as u64
                });
            }
            // Weight: cores x free CPU, halved when degraded. Never zero, so a busy
            // node is used less, not starved of the tasks that tell us it recovered.
            let cores = e.birth.as_ref().map_or(1, |b| b.cores.max(1));
            let hb = e.heartbeat.as_ref();
            let cpu = hb
                .and_then(|h| h.cpu_pct)
                .or(e.reading_cpu_pct)
                .unwrap_or(0.0);
            let mem = hb.map(|h| h.mem_pct).or(e.reading_mem_pct).unwrap_or(0.0);
            s.degraded = cpu > self.cfg.degraded_cpu_pct || mem > self.cfg.degraded_mem_pct;
            let free = (1.0 - f64::from(cpu) / 100.0).clamp(0.1, 1.0);
            let w = f64::from(cores) * free * if s.degraded { 0.5 } else { 1.0 };
            // Quantised, so a wobble of a percent does not rebuild schedules.
            let w = (w * 4.0).round().max(1.0) / 4.0;
            if self.loads[slot].weight != w {
                self.load_mut(slot).weight = w;
                weights_changed = true;
            }
        }
        // Eligible sets and rings are rebuilt only when the registry moved; the
        // weighted schedule only when a weight did.
        if moved {
            self.generation += 1;
        }
        if weights_changed {
            self.weights_generation += 1;
        }
    }

    /// A node's load for changing: the placement indexes are told (they re-key it at
    /// the next decision instead of rescanning every node), so use this for every
    /// write to `loads`.
    fn load_mut(&mut self, slot: usize) -> &mut NodeLoad {
        self.placer.touch(slot);
        &mut self.loads[slot]
    }

    /// Who may take `kind` now, rebuilt when the generation moved.
    fn kind_set(&mut self, kind: &str, now: Instant) -> &KindSet {
        let generation = self.generation;
        let stale = self
            .kinds
            .get(kind)
            .is_none_or(|k| k.generation != generation);
        if stale {
            let bcfg = self.cfg.breaker.clone();
            let mut set = KindSet {
                generation,
                ..Default::default()
            };
            let mut blocked = Vec::new();
            for (i, s) in self.slots.iter_mut().enumerate() {
                if !s.kinds.iter().any(|k| k == kind) {
                    continue;
                }
                match s.state {
                    NodeState::Offline => continue,
                    NodeState::Suspect => {
                        set.capable += 1;
                        set.suspect += 1;
                        continue;
                    }
                    NodeState::Online => set.capable += 1,
                }
                match s.breaker.state(&bcfg, now) {
                    BreakerState::Closed => set.eligible.push(i),
                    BreakerState::HalfOpen => {
                        set.open += 1;
                        set.half_open.push(i);
                        blocked.push(i);
                    }
                    BreakerState::Open => {
                        set.open += 1;
                        blocked.push(i);
                    }
                }
            }
            let online = set.capable - set.suspect;
            if set.open > 0 && set.open * 2 > online {
                // Panic threshold: too much of the fleet is ejected; balance across all.
                self.counters.panic_mode += 1;
                set.eligible.extend(blocked);
                set.eligible.sort_unstable();
                set.half_open.clear();
            }
            self.kinds.insert(kind.to_owned(), set);
        }
        &self.kinds[kind]
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .retry_initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.cfg.retry_max).mul_f64(self.rng.f64())
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
        self.sync(registry, now);
        let mut out = Vec::with_capacity(list.items.len());
        for sub in list.items {
            out.extend(self.submit_one(sub, now));
        }
        out
    }

    fn submit_one(&mut self, mut sub: TaskSubmission, now: Instant) -> Option<Out> {
        if !valid_reply_topic(&sub.reply_to) || sub.id.is_empty() || sub.id.len() > 128 {
            self.counters.malformed += 1;
            tracing::debug!(task.id = %short(&sub.id), "submission without a usable id or reply topic");
            return None;
        }
        if let Some(Out::Reply { result, .. }) = self.finished.get(&sub.id) {
            self.counters.duplicate_submissions += 1;
            return Some(Out::Reply {
                topic: std::mem::take(&mut sub.reply_to),
                result: result.clone(),
            });
        }
        if self.tasks.contains_key(&sub.id) {
            self.counters.duplicate_submissions += 1;
            return None;
        }
        let strategy = if sub.strategy.is_empty() {
            self.cfg.strategy
        } else {
            match sub.strategy.parse::<Strategy>() {
                Ok(s) => s,
                Err(e) => {
                    self.counters.unplaceable += 1;
                    return Some(self.answer(
                        &sub,
                        0,
                        Outcome::Rejected {
                            reason: e.to_string(),
                            retryable: false,
                        },
                    ));
                }
            }
        };
        if self.waiting >= self.cfg.max_waiting {
            self.counters.unplaceable += 1;
            return Some(self.answer(
                &sub,
                0,
                Outcome::Rejected {
                    reason: format!(
                        "coordinator busy: {} tasks already waiting for a node",
                        self.waiting
                    ),
                    retryable: true,
                },
            ));
        }
        self.counters.submitted += 1;
        let key_hash = hash64(
            if sub.key.is_empty() {
                &sub.id
            } else {
                &sub.key
            }
            .as_bytes(),
        );
        let id = sub.id.clone();
        self.tasks.insert(
            id.clone(),
            Task {
                sub,
                submitted_ms: fog_rt::clock::now_ms(),
                strategy,
                key_hash,
                attempt: 1,
                at: Where::Waiting { since: now },
                refused_by: Vec::new(),
                last_failure: None,
                failures: 0,
                busy_since: None,
            },
        );
        self.waiting += 1;
        self.journal_record(&id, None);
        self.try_place(&id, now)
    }

    /// Place a waiting task now, or keep it waiting, or give up on it.
    fn try_place(&mut self, id: &str, now: Instant) -> Option<Out> {
        let (kind, strategy, key_hash, since, refused, requires) = {
            let t = self.tasks.get(id)?;
            let Where::Waiting { since } = t.at else {
                return None;
            };
            (
                t.sub.kind.clone(),
                t.strategy,
                t.key_hash,
                since,
                t.refused_by.clone(),
                (!t.sub.requires.is_empty()).then(|| t.sub.requires.clone()),
            )
        };
        self.kind_set(&kind, now);
        let set = &self.kinds[&kind];
        let (capable, suspect, open) = (set.capable, set.suspect, set.open);
        let meets = |s: usize| requires.as_ref().is_none_or(|r| self.slots[s].meets(r));
        // A half-open node with room for a probe gets this task as its probe.
        let probe = set.half_open.iter().copied().find(|&s| {
            let bcfg = &self.cfg.breaker;
            meets(s) && self.slots[s].breaker.clone().allows(bcfg, now)
        });
        // Only the kind's whole eligible list may use (and build) the placer's cached
        // ring, schedule and heaps; a filtered one is decided by a scan.
        let full_set = refused.is_empty() && requires.is_none();
        let mut eligible: Vec<usize>;
        let eligible_ref: &[usize] = if full_set {
            &self.kinds[&kind].eligible
        } else {
            // Only nodes that meet the task's requirements; among them, prefer nodes
            // that have not refused this task (if all have, all again).
            let fit: Vec<usize> = self.kinds[&kind]
                .eligible
                .iter()
                .copied()
                .filter(|&s| meets(s))
                .collect();
            eligible = fit
                .iter()
                .copied()
                .filter(|s| !refused.contains(s))
                .collect();
            if eligible.is_empty() {
                eligible = fit;
            }
            &eligible
        };
        let unmet = requires
            .as_ref()
            .filter(|_| {
                eligible_ref.is_empty() && probe.is_none() && !self.kinds[&kind].eligible.is_empty()
            })
            .map(|r| r.to_string());
        let picked = match probe {
            Some(s) => Some((s, true)),
            None => {
                let slots = &self.slots;
                let loads = &self.loads;
                let node_hash = |s: usize| slots[s].hash;
                let (kind_ms, kind_default_ms) = match self.kind_times.get(&kind) {
                    Some(k) => (k.ms.as_slice(), k.mean()),
                    None => (&[][..], 0.0),
                };
                let req = Request {
                    strategy,
                    eligible: eligible_ref,
                    full_set,
                    generation: self.generation,
                    weights_generation: self.weights_generation,
                    loads,
                    key_hash,
                    node_hash: &node_hash,
                    kind_ms,
                    kind_default_ms,
                };
                self.placer.pick(&kind, &req).map(|s| (s, false))
            }
        };
        let Some((slot, probe)) = picked else {
            let warming = self.warm_until.is_some_and(|t| now < t);
            if capable == 0 && !warming {
                self.counters.unplaceable += 1;
                return self.give_up(
                    id,
                    format!("no online node runs kind {:?}", short(&kind)),
                    true,
                );
            }
            if let Some(unmet) =
                unmet.filter(|_| now.saturating_duration_since(since) >= self.cfg.max_wait)
            {
                self.counters.unplaceable += 1;
                return self.give_up(
                    id,
                    format!(
                        "no node that runs kind {:?} met the task's requirements ({unmet}) within {:.0}s",
                        short(&kind),
                        self.cfg.max_wait.as_secs_f64()
                    ),
                    true,
                );
            }
            if now.saturating_duration_since(since) >= self.cfg.max_wait {
                self.counters.unplaceable += 1;
                return self.give_up(
                    id,
                    format!(
                        "no eligible node for kind {:?} within {:.0}s: {capable} run it, {suspect} suspect, {open} with an open breaker",
                        short(&kind),
                        self.cfg.max_wait.as_secs_f64()
                    ),
                    true,
                );
            }
            // Wait and look again.
            let attempt = self.tasks.get(id).map_or(1, |t| t.attempt);
            let delay = self.cfg.retry_initial.max(Duration::from_millis(10));
            self.timers.push(Reverse(Timer {
                at: now + delay,
                kind: TimerKind::Retry,
                attempt,
                id: id.to_owned(),
            }));
            return None;
        };
        let bcfg = self.cfg.breaker.clone();
        let timeout = {
            let t = self.tasks.get_mut(id)?;
            t.at = Where::Placed {
                slot,
                at: now,
                probe,
            };
            if t.sub.timeout_ms == 0 {
                self.cfg.default_timeout
            } else {
                Duration::from_millis(u64::from(t.sub.timeout_ms))
            }
        };
        self.waiting = self.waiting.saturating_sub(1);
        let s = &mut self.slots[slot];
        if s.breaker.state(&bcfg, now) == BreakerState::HalfOpen {
            s.breaker.on_placed();
        }
        self.load_mut(slot).in_flight += 1;
        self.counters.placed += 1;
        let t = &self.tasks[id];
        self.timers.push(Reverse(Timer {
            at: now + timeout + self.cfg.timeout_grace,
            kind: TimerKind::Timeout,
            attempt: t.attempt,
            id: id.to_owned(),
        }));
        Some(Out::Assign {
            node: self.slots[slot].id.clone(),
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
        let t = self.tasks.remove(id)?;
        if matches!(t.at, Where::Waiting { .. }) {
            self.waiting = self.waiting.saturating_sub(1);
        }
        let out = self.answer(&t.sub, t.attempt, Outcome::Rejected { reason, retryable });
        self.finish(t, out)
    }

    /// Take a task off its node (it will not report there any more).
    fn unplace(&mut self, id: &str, now: Instant) -> Option<usize> {
        let t = self.tasks.get_mut(id)?;
        let Where::Placed { slot, .. } = t.at else {
            return None;
        };
        t.at = Where::Waiting { since: now };
        self.waiting += 1;
        let load = self.load_mut(slot);
        load.in_flight = load.in_flight.saturating_sub(1);
        Some(slot)
    }

    /// Schedule the next attempt, or dead-letter the task if it has had them all.
    /// `node_fault`: the placement failed on the node's account (not a busy refusal).
    fn retry(
        &mut self,
        id: &str,
        now: Instant,
        failure: Option<TaskResult>,
        node_fault: bool,
    ) -> Option<Out> {
        let max_wait = self.cfg.max_wait;
        let (attempt, out_of_tries) = {
            let t = self.tasks.get_mut(id)?;
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
        let t = self.tasks.get_mut(id)?;
        t.attempt += 1;
        t.at = Where::Waiting { since: now };
        self.counters.replaced += 1;
        let attempt = t.attempt;
        self.journal_record(id, None);
        if delay.is_zero() {
            return self.try_place(id, now);
        }
        self.timers.push(Reverse(Timer {
            at: now + delay,
            kind: TimerKind::Retry,
            attempt,
            id: id.to_owned(),
        }));
        None
    }

    fn dead_letter(&mut self, id: &str) -> Option<Out> {
        let mut t = self.tasks.remove(id)?;
        if matches!(t.at, Where::Waiting { .. }) {
            self.waiting = self.waiting.saturating_sub(1);
        }
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
                    at_ms: fog_rt::clock::now_ms(),
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
        self.dead.push_back(DeadLetter {
            id: t.sub.id.clone(),
            kind: t.sub.kind.clone(),
            attempts: t.attempt,
            last_error,
            at_ms: fog_rt::clock::now_ms(),
        });
        while self.dead.len() > DEAD_LETTERS {
            self.dead.pop_front();
        }
        let out = Out::Reply {
            topic: t.sub.reply_to.clone(),
            result,
        };
        self.finish(t, out)
    }

    /// A list of results from `node`.
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
        self.sync(registry, now);
        let mut out = Vec::new();
        for r in list.items {
            out.extend(self.result_one(node, r, now));
        }
        out
    }

    fn result_one(&mut self, node: &str, r: TaskResult, now: Instant) -> Option<Out> {
        let Some(t) = self.tasks.get(&r.id) else {
            if self.finished.contains_key(&r.id) {
                self.counters.duplicate_results_dropped += 1;
            } else {
                self.counters.stale_results_dropped += 1;
            }
            return None;
        };
        // Fencing: only the current attempt, from the node it was placed on, counts.
        let Where::Placed { slot, at, probe } = t.at else {
            self.counters.stale_results_dropped += 1;
            return None;
        };
        if r.attempt != t.attempt || self.slots[slot].id.as_str() != node {
            self.counters.stale_results_dropped += 1;
            return None;
        }
        let bcfg = self.cfg.breaker.clone();
        let verdict = match &r.outcome {
            Outcome::Accepted => return None,
            Outcome::Completed { duration_ms, .. } => {
                let times = match self.kind_times.get_mut(&t.sub.kind) {
                    Some(k) => k,
                    None => self.kind_times.entry(t.sub.kind.clone()).or_default(),
                };
                times.learn(slot, (*duration_ms as f64).max(0.001), &mut self.placer);
                Verdict::Done
            }
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
        };
        let latency = now.saturating_duration_since(at).as_secs_f64() * 1000.0;
        let load = self.load_mut(slot);
        load.latency_ms = peak_ewma(load.latency_ms, latency, LATENCY_ALPHA);
        self.unplace(&r.id, now);
        let before = self.slots[slot].breaker.last_state();
        match verdict {
            Verdict::Done => self.slots[slot].breaker.on_success(&bcfg),
            Verdict::Retry { node_fault: true } | Verdict::Final { node_fault: true } => {
                self.slots[slot].breaker.on_failure(&bcfg, now)
            }
            Verdict::Retry { node_fault: false } | Verdict::Final { node_fault: false } => {
                if probe {
                    self.slots[slot].breaker.on_abandoned()
                }
            }
        }
        let after = self.slots[slot].breaker.state(&bcfg, now);
        if before != after {
            self.generation += 1;
            if after == BreakerState::Open {
                self.counters.breaker_opened += 1;
                tracing::warn!(node.id = %node, "circuit breaker opened");
            } else {
                tracing::info!(node.id = %node, from = before.as_str(), to = after.as_str(), "circuit breaker");
            }
        }
        match verdict {
            Verdict::Retry { node_fault } => {
                if let Some(t) = self.tasks.get_mut(&r.id) {
                    t.refused_by.push(slot);
                }
                if matches!(r.outcome, Outcome::TimedOut { .. }) {
                    self.counters.timed_out += 1;
                }
                let id = r.id.clone();
                self.retry(&id, now, Some(r), node_fault)
            }
            Verdict::Done | Verdict::Final { .. } => {
                let t = self.tasks.remove(&r.id)?;
                self.waiting = self.waiting.saturating_sub(1);
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

    /// Timers (retries, timeouts) and nodes that went offline. Call often (every few
    /// ms under load); cheap when nothing is due.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        let moved = self.registry_generation != Some(registry.generation());
        self.sync(registry, now);
        if moved {
            // Re-place everything on nodes that are now offline (or forgotten).
            let lost: Vec<String> = self
                .tasks
                .iter()
                .filter_map(|(id, t)| match t.at {
                    Where::Placed { slot, .. } if self.slots[slot].state == NodeState::Offline => {
                        Some(id.clone())
                    }
                    _ => None,
                })
                .collect();
            for id in lost {
                if let Some(slot) = self.unplace(&id, now) {
                    self.counters.node_lost += 1;
                    self.slots[slot].breaker.on_abandoned();
                    tracing::debug!(task.id = %short(&id), node.id = %self.slots[slot].id, "node offline; placing again");
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.refused_by.push(slot);
                    }
                    out.extend(self.retry(&id, now, None, true));
                }
            }
        }
        while let Some(Reverse(top)) = self.timers.peek() {
            if top.at > now {
                break;
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            let Some(t) = self.tasks.get(&timer.id) else {
                continue;
            };
            if t.attempt != timer.attempt {
                continue;
            }
            match (timer.kind, &t.at) {
                (TimerKind::Retry, Where::Waiting { .. }) => {
                    out.extend(self.try_place(&timer.id, now));
                }
                (TimerKind::Timeout, Where::Placed { slot, .. }) => {
                    let slot = *slot;
                    let node = self.slots[slot].id.clone();
                    let bcfg = self.cfg.breaker.clone();
                    self.unplace(&timer.id, now);
                    self.slots[slot].breaker.on_failure(&bcfg, now);
                    self.generation += 1;
                    self.counters.timed_out += 1;
                    tracing::debug!(task.id = %short(&timer.id), node.id = %node, "no result within the task's timeout plus grace; placing again");
                    if let Some(t) = self.tasks.get_mut(&timer.id) {
                        t.refused_by.push(slot);
                    }
                    let failure = TaskResult {
                        id: timer.id.clone(),
                        attempt: timer.attempt,
                        node,
                        at_ms: fog_rt::clock::now_ms(),
                        outcome: Outcome::TimedOut { after_ms: 0 },
                    };
                    out.extend(self.retry(&timer.id, now, Some(failure), true));
                }
                _ => {}
            }
        }
        out
    }

    pub fn counters_map(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        vec![
            ("tasks_submitted_total", c.submitted),
            ("tasks_placed_total", c.placed),
            ("tasks_replaced_total", c.replaced),
            ("tasks_completed_total", c.completed),
            ("tasks_failed_total", c.failed),
            ("tasks_dead_lettered_total", c.dead_lettered),
            ("tasks_timed_out_total", c.timed_out),
            ("tasks_node_lost_total", c.node_lost),
            ("tasks_in_flight", self.tasks.len() as u64),
            ("tasks_waiting", self.waiting as u64),
            ("tasks_duplicate_submissions_total", c.duplicate_submissions),
            (
                "tasks_duplicate_results_dropped_total",
                c.duplicate_results_dropped,
            ),
            ("tasks_stale_results_dropped_total", c.stale_results_dropped),
            ("tasks_unplaceable_total", c.unplaceable),
            ("tasks_malformed_total", c.malformed),
            ("breakers_opened_total", c.breaker_opened),
            ("placement_panic_mode_total", c.panic_mode),
            ("tasks_restored_total", c.restored),
        ]
    }
}

enum Verdict {
    Done,
    Retry { node_fault: bool },
    Final { node_fault: bool },
}

/// A line for the dead-letter list.
fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Rejected { reason, .. } => format!("rejected: {reason}"),
        Outcome::Failed { error, .. } => format!("failed: {error}"),
        Outcome::TimedOut { after_ms } if *after_ms > 0 => format!("timed out after {after_ms} ms"),
        Outcome::TimedOut { .. } => "no result within timeout plus grace".to_owned(),
        Outcome::Accepted => "accepted".to_owned(),
        Outcome::Completed { .. } => "completed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LivenessConfig;
    use fog_proto::{Birth, Encoding, Payload, Status, Topics};
    use tokio::time::Instant;

    fn registry(nodes: &[&str]) -> Registry {
        let with_arch: Vec<(&str, &str)> = nodes.iter().map(|n| (*n, "x")).collect();
        registry_with_arch(&with_arch)
    }

    fn registry_with_arch(nodes: &[(&str, &str)]) -> Registry {
        let mut r = Registry::new(Topics::default(), LivenessConfig::default());
        for (n, arch) in nodes {
            let s = Status {
                online: true,
                at_ms: 1,
                reason: String::new(),
                birth: Some(Birth {
                    node: NodeId::new(*n).expect("valid"),
                    version: "0".into(),
                    arch: (*arch).into(),
                    cores: 1,
                    memory_bytes: 1,
                    labels: Default::default(),
                    encoding: Encoding::Json,
                    task_kinds: vec!["echo".into()],
                    heartbeat_interval_ms: 1000,
                    metrics_interval_ms: 1000,
                    keep_alive_secs: 10,
                    started_at_ms: 1,
                }),
            };
            r.ingest(
                &format!("fog/v1/nodes/{n}/status"),
                &codec::encode(&s, Encoding::Json).expect("encodes"),
                Instant::now(),
                1,
            )
            .expect("birth");
        }
        r
    }

    fn submit(id: &str, kind: &str) -> Vec<u8> {
        codec::encode(
            &TaskSubmissions {
                items: vec![TaskSubmission {
                    id: id.into(),
                    kind: kind.into(),
                    payload: Payload(b"x".to_vec()),
                    reply_to: "fog/v1/clients/c/results".into(),
                    priority: 0,
                    timeout_ms: 1000,
                    cacheable: false,
                    key: String::new(),
                    strategy: String::new(),
                    requires: Default::default(),
                }],
            },
            Encoding::Json,
        )
        .expect("encodes")
    }

    fn result(id: &str, attempt: u32, node: &str, outcome: Outcome) -> Vec<u8> {
        codec::encode(
            &TaskResults {
                items: vec![TaskResult {
                    id: id.into(),
                    attempt,
                    node: NodeId::new(node).expect("valid"),
                    at_ms: 1,
                    outcome,
                }],
            },
            Encoding::Json,
        )
        .expect("encodes")
    }

    fn done() -> Outcome {
        Outcome::Completed {
            output: Payload(b"x".to_vec()),
            truncated: false,
            exit_code: None,
            duration_ms: 1,
            cpu_ms: 0,
            peak_rss_bytes: 0,
            from_cache: false,
        }
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn rr() -> Dispatcher {
        Dispatcher::with_seed(
            PlacementConfig {
                strategy: Strategy::RoundRobin,
                // No backoff: a retry is placed in the same call.
                retry_initial: Duration::ZERO,
                ..Default::default()
            },
            1,
        )
    }

    fn node_of(o: &Out) -> String {
        match o {
            Out::Assign { node, .. } => node.to_string(),
            other => panic!("not an assignment: {other:?}"),
        }
    }

    #[test]
    fn round_robin_over_capable_nodes() {
        let r = registry(&["a", "b", "c"]);
        let mut d = rr();
        let nodes: Vec<String> = (0..6)
            .map(|i| node_of(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), now())[0]))
            .collect();
        let count = |n: &str| nodes.iter().filter(|t| *t == n).count();
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
    }

    #[test]
    fn busy_is_placed_elsewhere_and_only_the_first_result_is_forwarded() {
        let r = registry(&["a", "b"]);
        let mut d = rr();
        let first = d.on_submit(&r, &submit("t", "echo"), now());
        let node1 = if node_of(&first[0]) == "a" { "a" } else { "b" };
        let node2 = if node1 == "a" { "b" } else { "a" };
        let busy = Outcome::Rejected {
            reason: "busy".into(),
            retryable: true,
        };
        let again = d.on_result(&r, node1, &result("t", 1, node1, busy), now());
        assert_eq!(again.len(), 1);
        assert_eq!(node_of(&again[0]), node2);
        // A late result of attempt 1 is fenced off.
        assert!(d
            .on_result(&r, node1, &result("t", 1, node1, done()), now())
            .is_empty());
        let fwd = d.on_result(&r, node2, &result("t", 2, node2, done()), now());
        assert_eq!(fwd.len(), 1);
        assert!(matches!(&fwd[0], Out::Reply { topic, .. } if topic == "fog/v1/clients/c/results"));
        // A redelivered duplicate of the winning result is dropped.
        assert!(d
            .on_result(&r, node2, &result("t", 2, node2, done()), now())
            .is_empty());
        assert_eq!(d.counters.duplicate_results_dropped, 1);
        assert_eq!(d.counters.stale_results_dropped, 1);
        // The client resubmitting the id gets the same answer, without a new run.
        let re = d.on_submit(&r, &submit("t", "echo"), now());
        assert_eq!(re, fwd);
    }

    #[test]
    fn no_capable_node_is_a_clear_answer() {
        let r = registry(&["a"]);
        let mut d = rr();
        let out = d.on_submit(&r, &submit("t", "resize"), now());
        let Out::Reply { result: res, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            matches!(res.outcome, Outcome::Rejected { ref reason, .. } if reason.contains("resize")),
            "{res:?}"
        );
        assert!(d.on_submit(&r, b"garbage", now()).is_empty());
        assert_eq!(d.counters.malformed, 1);
    }

    fn offline(r: &mut Registry, n: &str, now: Instant) {
        let s = Status {
            online: false,
            at_ms: 2,
            reason: "connection lost".into(),
            birth: None,
        };
        r.ingest(
            &format!("fog/v1/nodes/{n}/status"),
            &codec::encode(&s, Encoding::Json).expect("encodes"),
            now,
            2,
        )
        .expect("will");
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            error: "disk on fire".into(),
            retryable: true,
            exit_code: Some(1),
            duration_ms: 1,
        }
    }

    fn submit_with(id: &str, strategy: &str, timeout_ms: u32) -> Vec<u8> {
        let mut list: TaskSubmissions = codec::decode(&submit(id, "echo")).expect("decodes");
        list.items[0].strategy = strategy.into();
        list.items[0].timeout_ms = timeout_ms;
        codec::encode(&list, Encoding::Json).expect("encodes")
    }

    fn assigned(outs: &[Out]) -> Vec<(String, u32)> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Assign { node, task } => Some((node.to_string(), task.attempt)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_on_a_node_that_goes_offline_are_placed_again_and_fenced() {
        let mut r = registry(&["a", "b"]);
        let mut d = rr();
        let t0 = Instant::now();
        let placed: Vec<(String, u32)> = (0..4)
            .flat_map(|i| assigned(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), t0)))
            .collect();
        assert_eq!(placed.iter().filter(|(n, _)| n == "a").count(), 2);
        offline(&mut r, "a", t0);
        let again = assigned(&d.tick(&r, t0));
        assert_eq!(
            again,
            vec![("b".to_owned(), 2), ("b".to_owned(), 2)],
            "a's two tasks go to b as attempt 2"
        );
        assert_eq!(d.counters.node_lost, 2);
        // a comes back and reports its old attempt: fenced off.
        let a_task = (0..4)
            .map(|i| format!("t{i}"))
            .find(|id| d.tasks.get(id).is_some_and(|t| t.attempt == 2))
            .expect("a re-placed task");
        assert!(d
            .on_result(&r, "a", &result(&a_task, 1, "a", done()), t0)
            .is_empty());
        let fwd = d.on_result(&r, "b", &result(&a_task, 2, "b", done()), t0);
        assert_eq!(fwd.len(), 1);
        assert_eq!(d.loads[d.slot_of[&NodeId::new("b").unwrap()]].in_flight, 3);
        assert_eq!(d.loads[d.slot_of[&NodeId::new("a").unwrap()]].in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_timeout_and_grace_is_retried_elsewhere() {
        let r = registry(&["a", "b"]);
        let mut d = rr();
        let t0 = Instant::now();
        let first = assigned(&d.on_submit(&r, &submit_with("t", "", 1000), t0));
        assert_eq!(first.len(), 1);
        // Timeout 1 s + grace 5 s: nothing at 5.9 s, a retry at 6 s.
        assert!(d.tick(&r, t0 + Duration::from_millis(5900)).is_empty());
        let again = assigned(&d.tick(&r, t0 + Duration::from_secs(6)));
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].0, first[0].0, "placed on the other node");
        assert_eq!(again[0].1, 2);
        assert_eq!(d.counters.timed_out, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opens_after_five_failures_and_closes_after_two_probes() {
        let r = registry(&["a", "b", "c"]);
        let mut d = Dispatcher::with_seed(
            PlacementConfig {
                strategy: Strategy::RoundRobin,
                retry_initial: Duration::ZERO,
                max_attempts: 1,
                ..Default::default()
            },
            1,
        );
        let t0 = Instant::now();
        let mut n = 0;
        let mut submit_one = |d: &mut Dispatcher, at: Instant| {
            n += 1;
            let id = format!("t{n}");
            let out = assigned(&d.on_submit(&r, &submit(&id, "echo"), at));
            (id, out[0].0.clone())
        };
        // Every task that lands on a fails; the others succeed.
        let mut fails = 0;
        while fails < 5 {
            let (id, node) = submit_one(&mut d, t0);
            let outcome = if node == "a" {
                fails += 1;
                failed()
            } else {
                done()
            };
            d.on_result(&r, &node, &result(&id, 1, &node, outcome), t0);
        }
        assert_eq!(d.counters.breaker_opened, 1);
        for _ in 0..20 {
            let (id, node) = submit_one(&mut d, t0 + Duration::from_secs(30));
            assert_ne!(node, "a", "an open breaker gets no tasks");
            d.on_result(&r, &node, &result(&id, 1, &node, done()), t0);
        }
        // After 60 s: half-open, exactly one probe at a time goes to a.
        let t1 = t0 + Duration::from_secs(61);
        let (p1, node) = submit_one(&mut d, t1);
        assert_eq!(node, "a", "the next task is a's probe");
        let (other, node) = submit_one(&mut d, t1);
        assert_ne!(node, "a", "one probe at a time");
        d.on_result(&r, &node, &result(&other, 1, &node, done()), t1);
        d.on_result(&r, "a", &result(&p1, 1, "a", done()), t1);
        let (p2, node) = submit_one(&mut d, t1);
        assert_eq!(node, "a");
        d.on_result(&r, "a", &result(&p2, 1, "a", done()), t1);
        let nodes: Vec<String> = (0..6).map(|_| submit_one(&mut d, t1).1).collect();
        assert_eq!(
            nodes.iter().filter(|n| *n == "a").count(),
            2,
            "closed again: back in the rotation"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_attempts_is_dead_lettered_with_the_last_failure() {
        let r = registry(&["a", "b"]);
        let mut d = rr();
        let t0 = Instant::now();
        let mut out = d.on_submit(&r, &submit("t", "echo"), t0);
        for attempt in 1..=3 {
            let (node, a) = assigned(&out)[0].clone();
            assert_eq!(a, attempt);
            out = d.on_result(&r, &node, &result("t", attempt, &node, failed()), t0);
        }
        let Out::Reply { result: res, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            matches!(&res.outcome, Outcome::Failed { error, .. } if error == "disk on fire"),
            "{res:?}"
        );
        let dead: Vec<&DeadLetter> = d.dead_letters().collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 3);
        assert!(dead[0].last_error.contains("disk on fire"));
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_panic_threshold_breakers_are_ignored() {
        let r = registry(&["a", "b"]);
        let mut d = rr();
        let now = Instant::now();
        // Slots exist only after a sync; do one, then open both breakers.
        let _ = d.on_submit(&r, &submit("warm", "echo"), now);
        for s in &mut d.slots {
            for _ in 0..5 {
                s.breaker.on_failure(&BreakerConfig::default(), now);
            }
        }
        d.generation += 1;
        let out = assigned(&d.on_submit(&r, &submit("t", "echo"), now));
        assert_eq!(
            out.len(),
            1,
            "both breakers open: balance across all instead of refusing"
        );
        assert!(d.counters.panic_mode >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_only_suspect_nodes_a_task_waits_then_is_refused_with_the_reason() {
        let mut r = registry(&["a"]);
        let mut d = rr();
        let t0 = Instant::now();
        // a falls silent: suspect after 3 missed 1 s intervals.
        r.tick(t0 + Duration::from_millis(3500));
        let t1 = t0 + Duration::from_millis(3500);
        assert!(
            d.on_submit(&r, &submit("t", "echo"), t1).is_empty(),
            "waits"
        );
        assert_eq!(
            d.counters_map()
                .iter()
                .find(|(k, _)| *k == "tasks_waiting")
                .map(|x| x.1),
            Some(1)
        );
        let out = d.tick(&r, t1 + Duration::from_secs(31));
        let Out::Reply { result: res, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            matches!(&res.outcome, Outcome::Rejected { reason, .. } if reason.contains("1 suspect")),
            "{res:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_may_name_its_strategy_and_a_bad_name_is_refused() {
        let r = registry(&["a", "b"]);
        let mut d = rr();
        let now = Instant::now();
        let out = d.on_submit(&r, &submit_with("t1", "least_connections", 0), now);
        assert_eq!(assigned(&out).len(), 1);
        let out = d.on_submit(&r, &submit_with("t2", "fastest", 0), now);
        let Out::Reply { result: res, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            matches!(&res.outcome, Outcome::Rejected { reason, retryable: false } if reason.contains("fastest")),
            "{res:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requirements_filter_nodes_and_an_unmet_one_is_named() {
        let r = registry(&["a", "b"]);
        let mut d = rr();
        let t0 = Instant::now();
        let with = |id: &str, arch: &str| {
            let mut list: TaskSubmissions = codec::decode(&submit(id, "echo")).expect("decodes");
            list.items[0].requires.arch = arch.into();
            codec::encode(&list, Encoding::Json).expect("encodes")
        };
        assert_eq!(assigned(&d.on_submit(&r, &with("fits", "x"), t0)).len(), 1);
        assert!(
            d.on_submit(&r, &with("arm-only", "aarch64"), t0).is_empty(),
            "waits for a node that fits"
        );
        let out = d.tick(&r, t0 + Duration::from_secs(31));
        let Out::Reply { result: res, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            matches!(&res.outcome, Outcome::Rejected { reason, .. } if reason.contains("requirements (arch aarch64)")),
            "{res:?}"
        );
    }

    fn submit_keyed(id: &str, key: &str, arch: &str) -> Vec<u8> {
        let mut list: TaskSubmissions = codec::decode(&submit(id, "echo")).expect("decodes");
        list.items[0].key = key.into();
        list.items[0].requires.arch = arch.into();
        codec::encode(&list, Encoding::Json).expect("encodes")
    }

    /// A task whose requirements narrow the set is decided over its own list; the
    /// ring the others use is still built from (and walks) the whole set. Before the
    /// fix, the first consistent-hash call for a kind built the cached ring from
    /// whatever list it was given, here [c], and every later key went to c.
    #[tokio::test(start_paused = true)]
    async fn a_filtered_consistent_hash_task_does_not_narrow_the_ring_for_the_rest() {
        let r = registry_with_arch(&[("a", "x"), ("b", "x"), ("c", "arm")]);
        let dispatcher = || {
            Dispatcher::with_seed(
                PlacementConfig {
                    strategy: Strategy::ConsistentHash,
                    retry_initial: Duration::ZERO,
                    ..Default::default()
                },
                1,
            )
        };
        let t0 = Instant::now();
        let mut d = dispatcher();
        let out = assigned(&d.on_submit(&r, &submit_keyed("arm", "k", "arm"), t0));
        assert_eq!(out, vec![("c".to_owned(), 1)], "only c fits");
        assert_eq!(
            d.on_result(&r, "c", &result("arm", 1, "c", done()), t0)
                .len(),
            1
        );
        // The same keys on a dispatcher that never saw the filtered task.
        let mut fresh = dispatcher();
        let mut nodes = Vec::new();
        for i in 0..30 {
            let task = submit_keyed(&format!("t{i}"), &format!("key-{i}"), "");
            let got = assigned(&d.on_submit(&r, &task, t0));
            let want = assigned(&fresh.on_submit(&r, &task, t0));
            assert_eq!(got, want, "key-{i}");
            nodes.push(got[0].0.clone());
        }
        for n in ["a", "b", "c"] {
            assert!(nodes.iter().any(|x| x == n), "no key on {n}: {nodes:?}");
        }
    }

    /// Least connections decides from the placer's heap, which only knows what the
    /// dispatcher tells it: every placement and every result must reach it.
    #[test]
    fn least_connections_follows_every_placement_and_result() {
        let r = registry(&["a", "b", "c"]);
        let mut d = Dispatcher::with_seed(
            PlacementConfig {
                strategy: Strategy::LeastConnections,
                ..Default::default()
            },
            1,
        );
        let mut nodes: Vec<String> = (0..3)
            .map(|i| node_of(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), now())[0]))
            .collect();
        let mut distinct = nodes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "one each: {nodes:?}");
        // The last node placed on has the highest slot of the three (ties go to the
        // lowest), so it wins the next one only if its finished task was counted.
        let last = nodes.pop().expect("three");
        assert_eq!(
            d.on_result(&r, &last, &result("t2", 1, &last, done()), now())
                .len(),
            1
        );
        let next = node_of(&d.on_submit(&r, &submit("t3", "echo"), now())[0]);
        assert_eq!(next, last);
    }
}
