//! The node view: every node placement has heard of, by slot (slots are never reused,
//! so indexes stay valid), with its breaker, what it runs and meets, its load and
//! weight, and how long each kind takes there; kept in step with the registry.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fog_proto::{NodeId, NodeState, Requirements};
use tokio::time::Instant;

use super::PlacementConfig;
use crate::breaker::Breaker;
use crate::placement::{hash64, NodeLoad, Placer, Request, Strategy};
use crate::registry::{NodeEntry as Entry, Registry};

/// Weight of a new sample in the per-kind duration EWMA (adaptive).
const KIND_ALPHA: f64 = 0.2;

/// A node as placement sees it.
pub(super) struct Slot {
    pub(super) id: NodeId,
    pub(super) hash: u64,
    pub(super) breaker: Breaker,
    /// The registry's view at the last sync.
    pub(super) state: NodeState,
    pub(super) kinds: Vec<String>,
    pub(super) degraded: bool,
    arch: String,
    labels: BTreeMap<String, String>,
    /// Free memory at the last heartbeat (bytes), if known.
    free_memory: Option<u64>,
    /// The `cost` label (cost-aware placement): 0 without one.
    cost: f64,
    /// An operator drained it: no new task goes there.
    pub(super) drained: bool,
    /// The birth record the fields above were copied from: a sync compares the
    /// pointer, not every kind and label (at 10,000 nodes, once a second, the string
    /// compares were most of a liveness turn).
    birth: Option<std::sync::Arc<fog_proto::Birth>>,
}

impl Slot {
    fn new(id: &NodeId, state: NodeState) -> Slot {
        Slot {
            id: id.clone(),
            hash: hash64(id.as_str().as_bytes()),
            breaker: Breaker::default(),
            state,
            kinds: Vec::new(),
            degraded: false,
            drained: false,
            arch: String::new(),
            labels: BTreeMap::new(),
            free_memory: None,
            cost: 0.0,
            birth: None,
        }
    }

    /// Whether the node meets a task's requirements.
    pub(super) fn meets(&self, r: &Requirements) -> bool {
        (r.arch.is_empty() || r.arch == self.arch)
            && (r.nodes.is_empty() || r.nodes.iter().any(|n| n == self.id.as_str()))
            && r.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
            && (r.min_free_memory_bytes == 0
                || self
                    .free_memory
                    .is_some_and(|f| f >= r.min_free_memory_bytes))
    }

    /// What the birth record and the last heartbeat say.
    fn update(&mut self, e: &Entry) {
        self.state = e.state;
        let Some(b) = &e.birth else { return };
        self.free_memory = e.heartbeat.as_ref().map(|h| {
            (b.memory_bytes as f64 * (1.0 - f64::from(h.mem_pct) / 100.0).clamp(0.0, 1.0)) as u64
        });
        if self
            .birth
            .as_ref()
            .is_some_and(|seen| std::sync::Arc::ptr_eq(seen, b))
        {
            return;
        }
        self.birth = Some(b.clone());
        if self.kinds != b.task_kinds {
            self.kinds = b.task_kinds.clone();
        }
        if self.arch != b.arch {
            self.arch = b.arch.clone();
        }
        if self.labels != b.labels {
            self.labels = b.labels.clone();
            self.cost = label_cost(&self.id, &self.labels);
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A node's `cost` label as a number. The agent refuses a label that is not a finite,
/// non-negative number; from an older or foreign agent such a label makes the node
/// the dearest (it is used only when nothing else can take the task), said once.
fn label_cost(node: &NodeId, labels: &BTreeMap<String, String>) -> f64 {
    let Some(text) = labels.get("cost") else {
        return 0.0;
    };
    match text.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && c >= 0.0 => c,
        _ => {
            tracing::warn!(node.id = %node, cost = %text, "cost label is not a non-negative number; placing there last");
            f64::MAX
        }
    }
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
    fn learn(&mut self, slot: usize, sample_ms: f64) {
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

/// A decision's inputs besides the node view.
pub(super) struct Ask<'a> {
    pub(super) kind: &'a str,
    pub(super) strategy: Strategy,
    pub(super) eligible: &'a [usize],
    pub(super) full_set: bool,
    pub(super) key_hash: u64,
}

pub(super) struct NodeView {
    pub(super) slots: Vec<Slot>,
    pub(super) loads: Vec<NodeLoad>,
    /// By slot, the node's cost (cost-aware placement).
    costs: Vec<f64>,
    pub(super) slot_of: HashMap<NodeId, usize>,
    registry_generation: Option<u64>,
    /// Bumped when eligibility may have changed (registry or breakers).
    pub(super) generation: u64,
    /// Bumped when a node's weight changed.
    weights_generation: u64,
    last_weights: Option<Instant>,
    /// The earliest time an open breaker turns half-open: a sync then looks at the
    /// breakers whatever else is due, so probes start when the open period ends (not
    /// up to the next weights update, a second later).
    half_open_due: Option<Instant>,
    kind_times: HashMap<String, KindTimes>,
    placer: Placer,
    /// Drained nodes, also those without a slot yet (they get the flag with one).
    drained: std::collections::BTreeSet<NodeId>,
}

impl NodeView {
    pub(super) fn with_seed(seed: u64) -> Self {
        NodeView {
            slots: Vec::new(),
            loads: Vec::new(),
            costs: Vec::new(),
            slot_of: HashMap::new(),
            registry_generation: None,
            generation: 0,
            weights_generation: 0,
            last_weights: None,
            half_open_due: None,
            kind_times: HashMap::new(),
            placer: Placer::with_seed(seed),
            drained: Default::default(),
        }
    }

    /// Drain `id` (no new task goes there) or undrain it; whether that changed it.
    pub(super) fn set_drained(&mut self, id: &NodeId, drained: bool) -> bool {
        let changed = if drained {
            self.drained.insert(id.clone())
        } else {
            self.drained.remove(id)
        };
        if let Some(&slot) = self.slot_of.get(id) {
            self.slots[slot].drained = drained;
        }
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// `id` left the registry (forgotten): its slot stays (slots are never reused)
    /// but counts as offline until the node is back, and it is no longer drained.
    pub(super) fn forget(&mut self, id: &NodeId) {
        self.set_drained(id, false);
        if let Some(&slot) = self.slot_of.get(id) {
            self.slots[slot].state = NodeState::Offline;
            self.generation += 1;
        }
    }

    pub(super) fn drained(&self) -> &std::collections::BTreeSet<NodeId> {
        &self.drained
    }

    /// Whether the registry changed since the last sync.
    pub(super) fn registry_moved(&self, registry: &Registry) -> bool {
        self.registry_generation != Some(registry.generation())
    }

    /// Bring slots and weights up to date with the registry (weights at most once a
    /// second when the registry did not move).
    pub(super) fn sync(&mut self, registry: &Registry, now: Instant, cfg: &PlacementConfig) {
        let weights_due = self
            .last_weights
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        let registry_moved = self.registry_moved(registry);
        let mut moved = registry_moved;
        let breakers_due = self.half_open_due.is_some_and(|t| now >= t);
        if !moved && !weights_due && !breakers_due {
            return;
        }
        // An open breaker whose time is up turns half-open by the clock alone; its
        // node becomes a probe candidate, so the eligible sets must be rebuilt.
        self.half_open_due = None;
        for s in &mut self.slots {
            let before = s.breaker.last_state();
            if s.breaker.state(&cfg.breaker, now) != before {
                moved = true;
            }
            let due = s.breaker.half_open_at(&cfg.breaker);
            self.half_open_due = earliest(self.half_open_due, due);
        }
        if !registry_moved && !weights_due {
            // Only the breakers were due: the registry need not be read again.
            if moved {
                self.generation += 1;
            }
            return;
        }
        self.registry_generation = Some(registry.generation());
        self.last_weights = Some(now);
        let mut weights_changed = false;
        for (id, e) in registry.nodes() {
            let slot = self.slot_for(id, e.state);
            self.slots[slot].update(e);
            self.costs[slot] = self.slots[slot].cost;
            let w = self.weigh(slot, e, cfg);
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

    fn slot_for(&mut self, id: &NodeId, state: NodeState) -> usize {
        if let Some(&s) = self.slot_of.get(id) {
            return s;
        }
        let mut new = Slot::new(id, state);
        new.drained = self.drained.contains(id);
        self.slots.push(new);
        self.loads.push(NodeLoad::default());
        self.costs.push(0.0);
        let slot = self.slots.len() - 1;
        self.placer.touch(slot);
        self.slot_of.insert(id.clone(), slot);
        slot
    }

    /// Weight: cores x free CPU, halved when degraded (which it also records). Never
    /// zero, so a busy node is used less, not starved of the tasks that tell us it
    /// recovered.
    fn weigh(&mut self, slot: usize, e: &Entry, cfg: &PlacementConfig) -> f64 {
        let cores = e.birth.as_ref().map_or(1, |b| b.cores.max(1));
        let hb = e.heartbeat.as_ref();
        let cpu = hb
            .and_then(|h| h.cpu_pct)
            .or(e.reading_cpu_pct)
            .unwrap_or(0.0);
        let mem = hb.map(|h| h.mem_pct).or(e.reading_mem_pct).unwrap_or(0.0);
        let s = &mut self.slots[slot];
        s.degraded = cpu > cfg.degraded_cpu_pct || mem > cfg.degraded_mem_pct;
        let free = (1.0 - f64::from(cpu) / 100.0).clamp(0.1, 1.0);
        let w = f64::from(cores) * free * if s.degraded { 0.5 } else { 1.0 };
        // Quantised, so a wobble of a percent does not rebuild schedules.
        (w * 4.0).round().max(1.0) / 4.0
    }

    /// A node's load for changing: the placement indexes are told (they re-key it at
    /// the next decision instead of rescanning every node), so use this for every
    /// write to `loads`.
    pub(super) fn load_mut(&mut self, slot: usize) -> &mut NodeLoad {
        self.placer.touch(slot);
        &mut self.loads[slot]
    }

    /// A run of `kind` on `slot` took `sample_ms`; the placement indexes hear of it.
    pub(super) fn learn(&mut self, kind: &str, slot: usize, sample_ms: f64) {
        self.placer.touch(slot);
        let times = match self.kind_times.get_mut(kind) {
            Some(k) => k,
            None => self.kind_times.entry(kind.to_owned()).or_default(),
        };
        times.learn(slot, sample_ms);
    }

    /// A breaker may have opened: when it turns half-open, the next sync sees it.
    pub(super) fn half_open_at(&mut self, at: Option<Instant>) {
        self.half_open_due = earliest(self.half_open_due, at);
    }

    /// Eligibility changed outside a sync (a breaker moved).
    pub(super) fn eligibility_changed(&mut self) {
        self.generation += 1;
    }

    /// Ask the placement strategy for one of `ask.eligible`.
    pub(super) fn pick(&mut self, ask: &Ask<'_>) -> Option<usize> {
        let slots = &self.slots;
        let node_hash = |s: usize| slots[s].hash;
        let (kind_ms, kind_default_ms) = match self.kind_times.get(ask.kind) {
            Some(k) => (k.ms.as_slice(), k.mean()),
            None => (&[][..], 0.0),
        };
        let req = Request {
            strategy: ask.strategy,
            eligible: ask.eligible,
            full_set: ask.full_set,
            generation: self.generation,
            weights_generation: self.weights_generation,
            loads: &self.loads,
            key_hash: ask.key_hash,
            node_hash: &node_hash,
            kind_ms,
            kind_default_ms,
            node_cost: &self.costs,
        };
        self.placer.pick(ask.kind, &req)
    }
}
