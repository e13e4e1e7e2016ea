//! Placement: which eligible node gets a task, by one of seven strategies.
//!
//! This module is pure decision logic over plain numbers, so it is property-tested and
//! benchmarked without a broker. What is *eligible* (the node runs the kind, is healthy
//! enough, its breaker lets work through) is decided by the caller, which passes the
//! eligible node slots; what each strategy reads is in [`NodeLoad`], indexed by slot.
//!
//! Per decision costs at 10,000 eligible nodes (see docs/performance.md): round robin
//! and p2c are O(1); weighted round robin and consistent hashing O(log n) after a
//! rebuild on membership change; least connections, response time and adaptive read the
//! top of an indexed min-heap per kind. The caller reports every node whose load,
//! weight, latency or run time changed ([`Placer::touch`]); the next decision re-keys
//! those, O(log n) each, so nothing scans the set. A request with a filtered eligible
//! list (task requirements, nodes that refused the task) is decided by one scan over it
//! and leaves the cached state alone: that state describes the full set.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::str::FromStr;

/// A placement strategy, chosen in config and overridable per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    ResponseTime,
    ConsistentHash,
    /// Power of two choices: the default, O(1) and near-optimal under load.
    #[default]
    P2c,
    Adaptive,
}

impl Strategy {
    pub const ALL: [Strategy; 7] = [
        Strategy::RoundRobin,
        Strategy::WeightedRoundRobin,
        Strategy::LeastConnections,
        Strategy::ResponseTime,
        Strategy::ConsistentHash,
        Strategy::P2c,
        Strategy::Adaptive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::LeastConnections => "least_connections",
            Strategy::ResponseTime => "response_time",
            Strategy::ConsistentHash => "consistent_hash",
            Strategy::P2c => "p2c",
            Strategy::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name; the message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement strategy {0:?} (one of: round_robin, weighted_round_robin, least_connections, response_time, consistent_hash, p2c, adaptive)")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownStrategy(s.chars().take(64).collect()))
    }
}

/// What the strategies know about one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLoad {
    /// Relative capacity, > 0 (strategies divide by it): cores times free capacity,
    /// scaled down when degraded.
    pub weight: f64,
    /// Tasks this coordinator has placed there and not yet seen finish.
    pub in_flight: u32,
    /// Peak-sensitive EWMA of task latency in ms (0 until the first result).
    pub latency_ms: f64,
}

impl Default for NodeLoad {
    fn default() -> Self {
        NodeLoad {
            weight: 1.0,
            in_flight: 0,
            latency_ms: 0.0,
        }
    }
}

/// Peak-sensitive EWMA (as Finagle's and linkerd's peak EWMA): a sample above the
/// current value replaces it at once, one below decays towards it with `alpha`, so
/// a node that just got slow is avoided at once and trusted again only gradually.
pub fn peak_ewma(current: f64, sample: f64, alpha: f64) -> f64 {
    if current <= 0.0 || sample >= current {
        sample
    } else {
        current + alpha * (sample - current)
    }
}

/// Virtual points per node on the consistent-hash ring.
pub const RING_POINTS_PER_NODE: usize = 64;
/// Bounded load: no node above this factor times the mean load (Mirrokni et al.,
/// "Consistent Hashing with Bounded Loads", as HAProxy's `hash-balance-factor`).
pub const HASH_LOAD_FACTOR: f64 = 1.25;

/// The state some strategies carry between decisions, for one eligible set (one task
/// kind). Rebuilt when the caller's `generation` for that set changes; built only from
/// requests that carry the full set (`Request::full_set`).
#[derive(Debug, Default)]
pub struct SetState {
    generation: u64,
    weights_generation: u64,
    rr: usize,
    wrr: Edf,
    ring: Vec<(u64, usize)>,
    index: Indexes,
}

impl SetState {
    /// Node `slot`'s in-flight count, weight, latency or run time for the kind changed:
    /// it is re-keyed at the next indexed decision (if it is in this set and anything
    /// is indexed yet). The indexes never re-read a node they were not told about.
    pub fn touch(&mut self, slot: usize) {
        self.index.touch(slot);
    }

    /// Drop what a new eligible set or new weights made stale.
    fn refresh(&mut self, generation: u64, weights_generation: u64) {
        if self.generation != generation {
            self.generation = generation;
            self.wrr = Edf::default();
            self.ring.clear();
            self.index = Indexes::default();
        }
        if self.weights_generation != weights_generation {
            // The heaps follow weights through `touch`; the EDF schedule's deadlines
            // hold the old steps, so it starts over.
            self.weights_generation = weights_generation;
            self.wrr = Edf::default();
        }
    }

    fn round_robin(&mut self, eligible: &[usize]) -> usize {
        let slot = eligible[self.rr % eligible.len()];
        self.rr = self.rr.wrapping_add(1);
        slot
    }
}

/// Earliest-deadline-first weighted round robin (as Envoy's EDF scheduler): each node's
/// next deadline advances by 1/weight per pick, so picks interleave smoothly and over a
/// cycle each node gets its share to within one.
#[derive(Debug, Default)]
struct Edf {
    heap: BinaryHeap<EdfEntry>,
    now: f64,
}

#[derive(Debug, PartialEq)]
struct EdfEntry {
    deadline: f64,
    /// Ties go to the lower slot, so the order is deterministic.
    slot: usize,
    step: f64,
}

impl Eq for EdfEntry {}
impl Ord for EdfEntry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest deadline is on top.
        o.deadline
            .total_cmp(&self.deadline)
            .then_with(|| o.slot.cmp(&self.slot))
    }
}
impl PartialOrd for EdfEntry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Edf {
    fn rebuild(&mut self, eligible: &[usize], loads: &[NodeLoad]) {
        self.heap.clear();
        self.now = 0.0;
        for &slot in eligible {
            let step = 1.0 / loads[slot].weight.max(1e-6);
            self.heap.push(EdfEntry {
                deadline: step,
                slot,
                step,
            });
        }
    }

    fn next(&mut self) -> Option<usize> {
        let mut top = self.heap.pop()?;
        let slot = top.slot;
        self.now = top.deadline;
        top.deadline += top.step;
        self.heap.push(top);
        Some(slot)
    }
}

/// Marks a slot that is not in an [`IndexedHeap`].
const ABSENT: u32 = u32::MAX;

/// Node slots are indexes into the caller's node table; the heaps store them (and
/// positions, which are fewer) in 32 bits to halve their position arrays.
fn slot_u32(slot: usize) -> u32 {
    u32::try_from(slot)
        .ok()
        .filter(|&s| s != ABSENT)
        .expect("fewer than 2^32 - 1 node slots")
}

/// `a` before `b`: the lower cost, ties to the lower slot (as the scan gives ties to
/// the first in an eligible list sorted by slot).
fn before(a: (f64, u32), b: (f64, u32)) -> bool {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).is_lt()
}

/// A binary min-heap of (cost, slot) that can find any slot's entry, so one node's
/// new cost is an O(log n) re-key instead of a new scan; the minimum is O(1).
#[derive(Debug, Default)]
struct IndexedHeap {
    heap: Vec<(f64, u32)>,
    /// Position in `heap` by slot, [`ABSENT`] if not in it.
    pos: Vec<u32>,
}

impl IndexedHeap {
    /// Bottom-up heapify: O(n), cheaper than n inserts on every rebuild.
    fn build(entries: impl IntoIterator<Item = (f64, usize)>) -> Self {
        let mut h = IndexedHeap::default();
        for (cost, slot) in entries {
            h.ensure_pos(slot);
            h.pos[slot] = slot_u32(h.heap.len());
            h.heap.push((cost, slot_u32(slot)));
        }
        for i in (0..h.heap.len() / 2).rev() {
            h.sift_down(i);
        }
        h
    }

    fn top(&self) -> Option<(f64, usize)> {
        self.heap.first().map(|&(c, s)| (c, s as usize))
    }

    fn position(&self, slot: usize) -> Option<usize> {
        match self.pos.get(slot) {
            Some(&p) if p != ABSENT => Some(p as usize),
            _ => None,
        }
    }

    fn ensure_pos(&mut self, slot: usize) {
        if self.pos.len() <= slot {
            self.pos.resize(slot + 1, ABSENT);
        }
    }

    /// Insert `slot`, or move it to its new cost.
    fn set(&mut self, slot: usize, cost: f64) {
        let entry = (cost, slot_u32(slot));
        match self.position(slot) {
            Some(i) => {
                let old = self.heap[i];
                self.heap[i] = entry;
                if before(entry, old) {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
            }
            None => {
                self.ensure_pos(slot);
                self.heap.push(entry);
                self.sift_up(self.heap.len() - 1);
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        let Some(i) = self.position(slot) else {
            return;
        };
        self.pos[slot] = ABSENT;
        let Some(last) = self.heap.pop() else {
            return;
        };
        if i < self.heap.len() {
            // The last entry fills the hole and moves whichever way it belongs.
            let removed = self.heap[i];
            self.heap[i] = last;
            if before(last, removed) {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
    }

    fn put(&mut self, i: usize, e: (f64, u32)) {
        self.heap[i] = e;
        self.pos[e.1 as usize] = slot_u32(i);
    }

    /// Moves entries down into the hole instead of swapping: one write per level.
    fn sift_up(&mut self, mut i: usize) {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            if !before(e, self.heap[parent]) {
                break;
            }
            self.put(i, self.heap[parent]);
            i = parent;
        }
        self.put(i, e);
    }

    fn sift_down(&mut self, mut i: usize) {
        let e = self.heap[i];
        let n = self.heap.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && before(self.heap[right], self.heap[left]) {
                right
            } else {
                left
            };
            if !before(self.heap[child], e) {
                break;
            }
            self.put(i, self.heap[child]);
            i = child;
        }
        self.put(i, e);
    }
}

/// Least connections' cost.
fn least_cost(l: &NodeLoad) -> f64 {
    f64::from(l.in_flight)
}

/// Expected time to get through this node's queue plus one task of `per_task_ms`:
/// response time's and adaptive's cost (an idle slow node can beat a busy fast one).
/// Evaluated as (per task x queue) / weight, the scan's numerator and denominator.
fn expected_ms(per_task_ms: f64, l: &NodeLoad) -> f64 {
    per_task_ms * (f64::from(l.in_flight) + 1.0) / l.weight
}

/// Response time's per-task figure: the peak EWMA, at least 1 ms so that a node
/// without results yet is priced by its queue, not at zero.
fn response_ms(l: &NodeLoad) -> f64 {
    l.latency_ms.max(1.0)
}

/// Adaptive: this kind's EWMA run time on `slot`, if the node has run it.
fn known_ms(req: &Request<'_>, slot: usize) -> Option<f64> {
    req.kind_ms.get(slot).copied().filter(|&ms| ms > 0.0)
}

/// Adaptive: what an untried node is assumed to take (the kind's fleet mean, or 1 ms
/// before anything is known).
fn default_ms(req: &Request<'_>) -> f64 {
    if req.kind_default_ms > 0.0 {
        req.kind_default_ms
    } else {
        1.0
    }
}

/// Adaptive's two heaps. Untried nodes all share the kind's default per-task time, a
/// positive factor common to all of them, so they are ordered by queue / weight alone
/// and the default (which moves with every result of the kind) multiplies only the top.
#[derive(Debug)]
struct AdaptiveHeaps {
    known: IndexedHeap,
    untried: IndexedHeap,
}

impl AdaptiveHeaps {
    fn build(req: &Request<'_>) -> Self {
        let (mut known, mut untried) = (Vec::new(), Vec::new());
        for &s in req.eligible {
            let l = &req.loads[s];
            match known_ms(req, s) {
                Some(ms) => known.push((expected_ms(ms, l), s)),
                None => untried.push((expected_ms(1.0, l), s)),
            }
        }
        AdaptiveHeaps {
            known: IndexedHeap::build(known),
            untried: IndexedHeap::build(untried),
        }
    }

    /// Re-key `slot`, moving it to `known` once it has a run time.
    fn set(&mut self, slot: usize, req: &Request<'_>) {
        let l = &req.loads[slot];
        match known_ms(req, slot) {
            Some(ms) => {
                self.untried.remove(slot);
                self.known.set(slot, expected_ms(ms, l));
            }
            None => {
                self.known.remove(slot);
                self.untried.set(slot, expected_ms(1.0, l));
            }
        }
    }

    fn pick(&self, default_ms: f64) -> Option<usize> {
        let untried = self.untried.top().map(|(c, s)| (default_ms * c, s));
        match (self.known.top(), untried) {
            // Ties to the lower slot, as within a heap.
            (Some(k), Some(u)) => Some(if k.0.total_cmp(&u.0).then(k.1.cmp(&u.1)).is_lt() {
                k.1
            } else {
                u.1
            }),
            (k, u) => k.or(u).map(|(_, s)| s),
        }
    }
}

/// Consistent hashing's load bound needs the set's total in flight: kept as a running
/// sum, adjusted by the difference when a slot is touched.
#[derive(Debug)]
struct InFlightSum {
    by_slot: Vec<u32>,
    total: u64,
}

impl InFlightSum {
    fn build(req: &Request<'_>) -> Self {
        let len = req.eligible.iter().max().map_or(0, |&m| m + 1);
        let mut sum = InFlightSum {
            by_slot: vec![0; len],
            total: 0,
        };
        for &s in req.eligible {
            sum.set(s, req.loads[s].in_flight);
        }
        sum
    }

    fn set(&mut self, slot: usize, in_flight: u32) {
        if let Some(old) = self.by_slot.get_mut(slot) {
            self.total = self.total - u64::from(*old) + u64::from(in_flight);
            *old = in_flight;
        }
    }
}

/// Per set, indexes over the full eligible list, each built on its strategy's first
/// decision: the cost-minimising strategies read the top of a heap instead of
/// scanning. Between decisions the caller reports every changed slot
/// ([`SetState::touch`]); the next indexed decision re-keys those first, O(log n) each.
#[derive(Debug, Default)]
struct Indexes {
    /// By slot: in the set. Empty until the first index is built: until then there is
    /// nothing to keep current and touches are not recorded.
    member: Vec<bool>,
    /// By slot: already in `dirty` (a busy node is touched several times between
    /// decisions and is re-keyed once).
    marked: Vec<bool>,
    dirty: Vec<usize>,
    least: Option<IndexedHeap>,
    response: Option<IndexedHeap>,
    adaptive: Option<AdaptiveHeaps>,
    in_flight: Option<InFlightSum>,
}

impl Indexes {
    fn touch(&mut self, slot: usize) {
        if self.member.get(slot) == Some(&true) && !self.marked[slot] {
            self.marked[slot] = true;
            self.dirty.push(slot);
        }
    }

    /// Before an indexed decision: note the members if nothing is indexed yet (what
    /// gets built next reads current loads), else re-key every slot touched since.
    fn catch_up(&mut self, req: &Request<'_>) {
        if self.member.is_empty() {
            let len = req.eligible.iter().max().map_or(0, |&m| m + 1);
            self.member = vec![false; len];
            self.marked = vec![false; len];
            for &s in req.eligible {
                self.member[s] = true;
            }
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            self.marked[slot] = false;
            self.rekey(slot, req);
        }
        // Keep the allocation.
        dirty.clear();
        self.dirty = dirty;
    }

    fn rekey(&mut self, slot: usize, req: &Request<'_>) {
        let l = &req.loads[slot];
        if let Some(h) = &mut self.least {
            h.set(slot, least_cost(l));
        }
        if let Some(h) = &mut self.response {
            h.set(slot, expected_ms(response_ms(l), l));
        }
        if let Some(a) = &mut self.adaptive {
            a.set(slot, req);
        }
        if let Some(sum) = &mut self.in_flight {
            sum.set(slot, l.in_flight);
        }
    }

    fn least_connections(&mut self, req: &Request<'_>) -> Option<usize> {
        self.catch_up(req);
        let loads = req.loads;
        self.least
            .get_or_insert_with(|| {
                IndexedHeap::build(req.eligible.iter().map(|&s| (least_cost(&loads[s]), s)))
            })
            .top()
            .map(|(_, s)| s)
    }

    fn response_time(&mut self, req: &Request<'_>) -> Option<usize> {
        self.catch_up(req);
        let loads = req.loads;
        self.response
            .get_or_insert_with(|| {
                IndexedHeap::build(req.eligible.iter().map(|&s| {
                    let l = &loads[s];
                    (expected_ms(response_ms(l), l), s)
                }))
            })
            .top()
            .map(|(_, s)| s)
    }

    fn adaptive(&mut self, req: &Request<'_>) -> Option<usize> {
        self.catch_up(req);
        self.adaptive
            .get_or_insert_with(|| AdaptiveHeaps::build(req))
            .pick(default_ms(req))
    }

    fn in_flight_total(&mut self, req: &Request<'_>) -> u64 {
        self.catch_up(req);
        self.in_flight
            .get_or_insert_with(|| InFlightSum::build(req))
            .total
    }
}

/// 64-bit FNV-1a then a murmur3 finaliser: stable across runs and platforms (the ring
/// must not move when the coordinator restarts), and well mixed for short keys.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Build the ring for `eligible`, each node named by `name(slot)`.
fn build_ring(eligible: &[usize], name: &dyn Fn(usize) -> u64) -> Vec<(u64, usize)> {
    let mut ring = Vec::with_capacity(eligible.len() * RING_POINTS_PER_NODE);
    for &slot in eligible {
        let base = name(slot);
        for i in 0..RING_POINTS_PER_NODE as u64 {
            ring.push((
                hash64(&(base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes()),
                slot,
            ));
        }
    }
    ring.sort_unstable();
    ring
}

/// Everything a decision reads.
pub struct Request<'a> {
    pub strategy: Strategy,
    /// Slots of the nodes that may take this task (non-empty for a decision).
    pub eligible: &'a [usize],
    /// Whether `eligible` is the set's whole list for this `generation`. Only then are
    /// the cached ring, schedule and heaps built or used; a filtered list (a subset:
    /// the task's requirements, nodes that refused it) is decided by one pass over it
    /// instead, reading at most the cached ring.
    pub full_set: bool,
    /// Bumped by the caller whenever `eligible` changes (rebuilds the ring, the
    /// weighted schedule and the heaps).
    pub generation: u64,
    /// Bumped by the caller whenever a weight changes (rebuilds only the weighted
    /// schedule; the ring does not depend on weights, the heaps follow `touch`).
    pub weights_generation: u64,
    /// Indexed by slot. Every change to an entry (or to `kind_ms`) must be reported
    /// with [`Placer::touch`] before the next decision.
    pub loads: &'a [NodeLoad],
    /// Hash of the task's placement key (consistent hashing).
    pub key_hash: u64,
    /// A stable hash of each node's id, for the ring.
    pub node_hash: &'a dyn Fn(usize) -> u64,
    /// Adaptive: expected ms for this task's kind per node slot (its EWMA); 0 (or a
    /// slot past the end) for a node that has not run the kind yet.
    pub kind_ms: &'a [f64],
    /// Adaptive: what an untried node is assumed to take (the kind's fleet mean), so
    /// it gets tried and learned instead of starved or flooded.
    pub kind_default_ms: f64,
}

/// Pick a slot from `req.eligible`, or `None` if it is empty.
pub fn pick(state: &mut SetState, rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
    let eligible = req.eligible;
    if eligible.is_empty() {
        return None;
    }
    state.refresh(req.generation, req.weights_generation);
    match req.strategy {
        Strategy::RoundRobin => Some(state.round_robin(eligible)),
        Strategy::P2c => Some(p2c(rng, eligible, req.loads)),
        // The cached state describes the full set, not this list.
        _ if !req.full_set => scan(state, req),
        Strategy::WeightedRoundRobin => {
            if state.wrr.heap.is_empty() {
                state.wrr.rebuild(eligible, req.loads);
            }
            state.wrr.next()
        }
        Strategy::ConsistentHash => {
            if state.ring.is_empty() {
                state.ring = build_ring(eligible, req.node_hash);
            }
            let total = state.index.in_flight_total(req);
            let n = eligible.len();
            bounded_ring_pick(&state.ring, total, n, req.loads, req.key_hash, |_| true)
        }
        Strategy::LeastConnections => state.index.least_connections(req),
        Strategy::ResponseTime => state.index.response_time(req),
        // Least expected completion time: per-task time for this kind on the node
        // times the tasks it would have to get through.
        Strategy::Adaptive => state.index.adaptive(req),
    }
}

/// Two distinct random nodes, the one with fewer in flight per unit of weight.
fn p2c(rng: &mut fastrand::Rng, eligible: &[usize], loads: &[NodeLoad]) -> usize {
    if eligible.len() == 1 {
        return eligible[0];
    }
    let i = rng.usize(..eligible.len());
    // A second, distinct sample.
    let mut j = rng.usize(..eligible.len() - 1);
    if j >= i {
        j += 1;
    }
    let (a, b) = (eligible[i], eligible[j]);
    let cost = |s: usize| f64::from(loads[s].in_flight) / loads[s].weight;
    if cost(b) < cost(a) {
        b
    } else {
        a
    }
}

/// A decision over a filtered list: one pass over it, the cached state only read
/// where it is valid for any subset of the set (the ring).
fn scan(state: &SetState, req: &Request<'_>) -> Option<usize> {
    let (eligible, loads) = (req.eligible, req.loads);
    Some(match req.strategy {
        Strategy::ConsistentHash => return filtered_ring_pick(&state.ring, req),
        Strategy::LeastConnections => min_ratio(eligible, |s| (least_cost(&loads[s]), 1.0)),
        Strategy::ResponseTime => min_ratio(eligible, |s| {
            let l = &loads[s];
            (response_ms(l) * f64::from(l.in_flight + 1), l.weight)
        }),
        Strategy::Adaptive => {
            let default = default_ms(req);
            min_ratio(eligible, |s| {
                let per_task = known_ms(req, s).unwrap_or(default);
                (
                    per_task * f64::from(loads[s].in_flight + 1),
                    loads[s].weight,
                )
            })
        }
        // Weighted round robin's schedule position belongs to the full set; the
        // fewest in flight per unit of weight is the share it converges to. (Round
        // robin and p2c are decided before and do not get here.)
        Strategy::WeightedRoundRobin | Strategy::RoundRobin | Strategy::P2c => {
            min_ratio(eligible, |s| {
                (f64::from(loads[s].in_flight), loads[s].weight)
            })
        }
    })
}

/// The slot with the lowest cost `num / den` (den > 0); ties go to the first in
/// `eligible`. Compared by cross-multiplying, over four independent running minimums.
/// About 2 ns per node: the reference for the heaps in tests, and the decision for
/// filtered lists, which no index describes.
fn min_ratio(eligible: &[usize], cost: impl Fn(usize) -> (f64, f64)) -> usize {
    const LANES: usize = 4;
    // (position in eligible, num, den) per lane.
    let first = cost(eligible[0]);
    let mut best = [(0usize, first.0, first.1); LANES];
    let chunks = eligible.chunks_exact(LANES);
    let rest = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        for lane in 0..LANES {
            let (num, den) = cost(chunk[lane]);
            let b = &mut best[lane];
            if num * b.2 < b.1 * den {
                *b = (c * LANES + lane, num, den);
            }
        }
    }
    let base = eligible.len() - rest.len();
    for (k, &s) in rest.iter().enumerate() {
        let (num, den) = cost(s);
        let b = &mut best[0];
        if num * b.2 < b.1 * den {
            *b = (base + k, num, den);
        }
    }
    let mut win = best[0];
    for b in &best[1..] {
        let (l, r) = (b.1 * win.2, win.1 * b.2);
        if l < r || (l == r && b.0 < win.0) {
            win = *b;
        }
    }
    eligible[win.0]
}

fn in_flight_sum(eligible: &[usize], loads: &[NodeLoad]) -> u64 {
    eligible
        .iter()
        .map(|&s| u64::from(loads[s].in_flight))
        .sum()
}

/// Walk clockwise from the key's point to the first node in the set (`member`) under
/// the load bound; `total` is the set's in flight, `n` its size. `None` only if no
/// member is on the ring.
fn bounded_ring_pick(
    ring: &[(u64, usize)],
    total: u64,
    n: usize,
    loads: &[NodeLoad],
    key: u64,
    member: impl Fn(usize) -> bool,
) -> Option<usize> {
    // Including the task being placed, as the paper does.
    let bound = (HASH_LOAD_FACTOR * (total + 1) as f64 / n as f64).ceil();
    let start = ring.partition_point(|&(h, _)| h < key);
    let mut first = None;
    for i in 0..ring.len() {
        let (_, slot) = ring[(start + i) % ring.len()];
        if !member(slot) {
            continue;
        }
        if f64::from(loads[slot].in_flight) < bound {
            return Some(slot);
        }
        first.get_or_insert(slot);
    }
    // Some member is always at or below the mean, so this is reached only if loads
    // moved without a touch: then the key's own node.
    first
}

/// Consistent hashing over a filtered list. A subset's ring is the full ring without
/// the other nodes' points, so when the full ring is cached (and the list is not so
/// small that most of the walk would be skipped points) walk it, skipping
/// non-members; else build the subset's ring, uncached (O(n log n), the price of a
/// rare path). Same node either way.
fn filtered_ring_pick(full_ring: &[(u64, usize)], req: &Request<'_>) -> Option<usize> {
    let (eligible, loads) = (req.eligible, req.loads);
    let total = in_flight_sum(eligible, loads);
    let set_len = full_ring.len() / RING_POINTS_PER_NODE;
    if !full_ring.is_empty() && eligible.len() * 4 >= set_len {
        let len = eligible.iter().max().map_or(0, |&m| m + 1);
        let mut member = vec![false; len];
        for &s in eligible {
            member[s] = true;
        }
        let is_member = |s: usize| member.get(s) == Some(&true);
        let n = eligible.len();
        // None: the list is not a subset of the ring's set; its own ring, then.
        if let Some(s) = bounded_ring_pick(full_ring, total, n, loads, req.key_hash, is_member) {
            return Some(s);
        }
    }
    let ring = build_ring(eligible, req.node_hash);
    bounded_ring_pick(&ring, total, eligible.len(), loads, req.key_hash, |_| true)
}

/// Per-kind decision state for a whole fleet, keyed by kind name.
#[derive(Debug, Default)]
pub struct Placer {
    sets: HashMap<String, SetState>,
    rng: fastrand::Rng,
}

impl Placer {
    pub fn with_seed(seed: u64) -> Self {
        Placer {
            sets: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn pick(&mut self, kind: &str, req: &Request<'_>) -> Option<usize> {
        let state = match self.sets.get_mut(kind) {
            Some(s) => s,
            None => self.sets.entry(kind.to_owned()).or_default(),
        };
        pick(state, &mut self.rng, req)
    }

    /// Node `slot`'s entry in `loads` or in any kind's `kind_ms` changed. Call it for
    /// every such change before the next decision: the heaps do not re-read a node
    /// they were not told about. O(kinds); the re-keying waits for the next decision.
    pub fn touch(&mut self, slot: usize) {
        for s in self.sets.values_mut() {
            s.touch(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::{
        any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, Strategy as _, TestCaseError,
    };

    fn req<'a>(
        strategy: Strategy,
        eligible: &'a [usize],
        loads: &'a [NodeLoad],
        key_hash: u64,
        generation: u64,
    ) -> Request<'a> {
        Request {
            strategy,
            eligible,
            full_set: true,
            generation,
            weights_generation: 0,
            loads,
            key_hash,
            node_hash: &|s| hash64(format!("node-{s}").as_bytes()),
            kind_ms: &[],
            kind_default_ms: 0.0,
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        let e = "fastest".parse::<Strategy>().unwrap_err().to_string();
        assert!(
            e.contains("\"fastest\"") && e.contains("p2c") && e.contains("adaptive"),
            "{e}"
        );
        assert_eq!(Strategy::default(), Strategy::P2c);
    }

    #[test]
    fn nothing_eligible_is_none() {
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        for s in Strategy::ALL {
            assert_eq!(pick(&mut st, &mut rng, &req(s, &[], &[], 0, 0)), None);
        }
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        assert_eq!(peak_ewma(0.0, 10.0, 0.3), 10.0);
        assert_eq!(peak_ewma(10.0, 50.0, 0.3), 50.0);
        let d = peak_ewma(50.0, 10.0, 0.25);
        assert!((d - 40.0).abs() < 1e-9, "{d}");
    }

    #[test]
    fn response_time_prefers_the_fast_node_until_its_queue_costs_more() {
        let loads = [
            NodeLoad {
                latency_ms: 10.0,
                in_flight: 0,
                weight: 1.0,
            },
            NodeLoad {
                latency_ms: 100.0,
                in_flight: 0,
                weight: 1.0,
            },
        ];
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            pick(
                &mut st,
                &mut rng,
                &req(Strategy::ResponseTime, &[0, 1], &loads, 0, 0)
            ),
            Some(0)
        );
        let loads = [
            NodeLoad {
                in_flight: 20,
                ..loads[0]
            },
            loads[1],
        ];
        st.touch(0);
        assert_eq!(
            pick(
                &mut st,
                &mut rng,
                &req(Strategy::ResponseTime, &[0, 1], &loads, 0, 0)
            ),
            Some(1)
        );
    }

    #[test]
    fn adaptive_uses_expected_completion_per_kind_and_tries_unknown_nodes() {
        let loads = [NodeLoad::default(); 3];
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let kind_ms = [50.0, 5.0, 0.0];
        let r = Request {
            kind_ms: &kind_ms,
            kind_default_ms: 5.0,
            ..req(Strategy::Adaptive, &[0, 1, 2], &loads, 0, 0)
        };
        // Node 1 is fastest; node 2 is unknown and priced at the default (5 ms): tie,
        // the first wins.
        assert_eq!(pick(&mut st, &mut rng, &r), Some(1));
        let loads = [
            NodeLoad::default(),
            NodeLoad {
                in_flight: 4,
                ..Default::default()
            },
            NodeLoad::default(),
        ];
        st.touch(1);
        let r = Request {
            kind_ms: &kind_ms,
            kind_default_ms: 5.0,
            ..req(Strategy::Adaptive, &[0, 1, 2], &loads, 0, 0)
        };
        assert_eq!(pick(&mut st, &mut rng, &r), Some(2));
    }

    proptest! {
        /// Round robin over a full cycle: every node exactly once per cycle.
        #[test]
        fn round_robin_is_exact_over_a_cycle(n in 1usize..50, cycles in 1usize..5) {
            let eligible: Vec<usize> = (0..n).collect();
            let loads = vec![NodeLoad::default(); n];
            let mut st = SetState::default();
            let mut rng = fastrand::Rng::with_seed(1);
            let mut counts = vec![0usize; n];
            for _ in 0..n * cycles {
                let s = pick(&mut st, &mut rng, &req(Strategy::RoundRobin, &eligible, &loads, 0, 7)).unwrap();
                counts[s] += 1;
            }
            prop_assert!(counts.iter().all(|&c| c == cycles));
        }

        /// Weighted round robin: over a cycle of total weight W, node i gets w_i picks to
        /// within one, and never two picks in a row while another node is owed more.
        #[test]
        fn weighted_round_robin_matches_weights_within_one(weights in proptest::collection::vec(1u32..10, 1..20)) {
            let n = weights.len();
            let eligible: Vec<usize> = (0..n).collect();
            let loads: Vec<NodeLoad> = weights.iter().map(|&w| NodeLoad { weight: f64::from(w), ..Default::default() }).collect();
            let total: u32 = weights.iter().sum();
            let mut st = SetState::default();
            let mut rng = fastrand::Rng::with_seed(1);
            let mut counts = vec![0i64; n];
            for _ in 0..total {
                let s = pick(&mut st, &mut rng, &req(Strategy::WeightedRoundRobin, &eligible, &loads, 0, 1)).unwrap();
                counts[s] += 1;
            }
            for i in 0..n {
                prop_assert!((counts[i] - i64::from(weights[i])).abs() <= 1, "node {} got {} for weight {}", i, counts[i], weights[i]);
            }
        }

        /// p2c never picks the more loaded of its two samples: the node it picks has a
        /// load no higher than at least one other eligible node... checked exactly by
        /// replaying the same random draws.
        #[test]
        fn p2c_picks_the_less_loaded_of_its_two_samples(inflight in proptest::collection::vec(0u32..20, 2..30), seed in any::<u64>()) {
            let n = inflight.len();
            let eligible: Vec<usize> = (0..n).collect();
            let loads: Vec<NodeLoad> = inflight.iter().map(|&f| NodeLoad { in_flight: f, ..Default::default() }).collect();
            let mut st = SetState::default();
            let mut rng = fastrand::Rng::with_seed(seed);
            let picked = pick(&mut st, &mut rng, &req(Strategy::P2c, &eligible, &loads, 0, 1)).unwrap();
            // Replay the draws.
            let mut replay = fastrand::Rng::with_seed(seed);
            let i = replay.usize(..n);
            let mut j = replay.usize(..n - 1);
            if j >= i { j += 1; }
            prop_assert!(i != j);
            prop_assert!(picked == i || picked == j);
            let other = if picked == i { j } else { i };
            prop_assert!(inflight[picked] <= inflight[other]);
        }

        /// Least connections picks a node with the fewest in flight.
        #[test]
        fn least_connections_picks_a_minimum(inflight in proptest::collection::vec(0u32..100, 1..50)) {
            let eligible: Vec<usize> = (0..inflight.len()).collect();
            let loads: Vec<NodeLoad> = inflight.iter().map(|&f| NodeLoad { in_flight: f, ..Default::default() }).collect();
            let mut st = SetState::default();
            let mut rng = fastrand::Rng::with_seed(1);
            let s = pick(&mut st, &mut rng, &req(Strategy::LeastConnections, &eligible, &loads, 0, 1)).unwrap();
            prop_assert_eq!(inflight[s], *inflight.iter().min().unwrap());
        }

        /// Consistent hashing: a join moves about 1/(N+1) of keys, and only to the new node.
        ///
        /// Bounds: with n -> n+1 nodes the new node owns a share of the ring of mean
        /// 1/(n+1), the sum of its RING_POINTS_PER_NODE = 64 arcs, so of relative
        /// standard deviation about 1/sqrt(64) = 0.125; the keys landing on it are
        /// binomial on top of that, relative sd at most sqrt((n+1)/keys) = 5.5 % with
        /// 10,000 keys and n + 1 = 30. Together about 14 %, so 0.4 and 1.6 times the
        /// expected count are over 4 sd away on either side. The ring here is fixed
        /// (node names are hashed), and its new-node shares for n = 3..29 are 0.73 to
        /// 1.18 times the mean; for those the keys' binomial noise alone (random: the
        /// keys are salted) leaves over 7 sd to either bound. A placement that moves
        /// nothing, or moves keys but not to the new node, fails.
        #[test]
        fn consistent_hash_moves_about_one_nth_of_keys_on_a_join(n in 3usize..30, salt in any::<u64>()) {
            let keys = 10_000u64;
            let before: Vec<usize> = (0..n).collect();
            let after: Vec<usize> = (0..=n).collect();
            let loads = vec![NodeLoad::default(); n + 1];
            let key = |k: u64| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&salt.to_le_bytes());
                b[8..].copy_from_slice(&k.to_le_bytes());
                hash64(&b)
            };
            let place = |eligible: &[usize]| -> Vec<usize> {
                let mut st = SetState::default();
                let mut rng = fastrand::Rng::with_seed(1);
                (0..keys).map(|k| pick(&mut st, &mut rng, &req(Strategy::ConsistentHash, eligible, &loads, key(k), 1)).unwrap()).collect()
            };
            let (a, b) = (place(&before), place(&after));
            let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            prop_assert!(a.iter().zip(&b).all(|(x, y)| x == y || *y == n), "a key moved between old nodes");
            let expected = keys as f64 / (n + 1) as f64;
            prop_assert!((moved as f64) > expected * 0.4, "moved {} of {}, expected about {}", moved, keys, expected);
            prop_assert!((moved as f64) < expected * 1.6, "moved {} of {}, expected about {}", moved, keys, expected);
        }

        /// Bounded load: placing a stream of tasks that stay in flight, no node ever
        /// exceeds ceil(1.25 x mean), whatever the keys.
        #[test]
        fn consistent_hash_never_exceeds_the_load_bound(n in 2usize..20, keys in proptest::collection::vec(any::<u64>(), 1..300)) {
            let eligible: Vec<usize> = (0..n).collect();
            let mut loads = vec![NodeLoad::default(); n];
            let mut st = SetState::default();
            let mut rng = fastrand::Rng::with_seed(1);
            for (placed, k) in keys.iter().enumerate() {
                let s = pick(&mut st, &mut rng, &req(Strategy::ConsistentHash, &eligible, &loads, *k, 1)).unwrap();
                loads[s].in_flight += 1;
                st.touch(s);
                let bound = (HASH_LOAD_FACTOR * (placed + 1) as f64 / n as f64).ceil() as u32;
                prop_assert!(loads.iter().all(|l| l.in_flight <= bound));
            }
        }
    }

    #[test]
    fn new_weights_rebuild_the_schedule_but_not_the_ring() {
        let even = vec![NodeLoad::default(); 2];
        let skewed = vec![
            NodeLoad {
                weight: 3.0,
                ..Default::default()
            },
            NodeLoad::default(),
        ];
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let ring_pick = |st: &mut SetState, rng: &mut fastrand::Rng, loads: &[NodeLoad], w: u64| {
            pick(
                st,
                rng,
                &Request {
                    weights_generation: w,
                    ..req(Strategy::ConsistentHash, &[0, 1], loads, 42, 1)
                },
            )
        };
        let before = ring_pick(&mut st, &mut rng, &even, 0);
        let ring_len = st.ring.len();
        for _ in 0..4 {
            pick(
                &mut st,
                &mut rng,
                &req(Strategy::WeightedRoundRobin, &[0, 1], &even, 0, 1),
            );
        }
        let mut counts = [0; 2];
        for _ in 0..8 {
            let r = Request {
                weights_generation: 1,
                ..req(Strategy::WeightedRoundRobin, &[0, 1], &skewed, 0, 1)
            };
            counts[pick(&mut st, &mut rng, &r).unwrap()] += 1;
        }
        assert_eq!(counts, [6, 2], "the schedule follows the new weights");
        assert_eq!(st.ring.len(), ring_len, "the ring was kept");
        assert_eq!(ring_pick(&mut st, &mut rng, &skewed, 1), before);
    }

    #[test]
    fn a_new_generation_rebuilds_the_ring_and_the_schedule() {
        let loads = vec![NodeLoad::default(); 4];
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..10 {
            pick(
                &mut st,
                &mut rng,
                &req(Strategy::WeightedRoundRobin, &[0, 1], &loads, 0, 1),
            );
        }
        // Node 1 left, node 3 joined: the old schedule must not hand out node 1.
        for _ in 0..10 {
            let s = pick(
                &mut st,
                &mut rng,
                &req(Strategy::WeightedRoundRobin, &[0, 3], &loads, 0, 2),
            )
            .unwrap();
            assert!(s == 0 || s == 3);
            let s = pick(
                &mut st,
                &mut rng,
                &req(Strategy::ConsistentHash, &[0, 3], &loads, 99, 2),
            )
            .unwrap();
            assert!(s == 0 || s == 3);
        }
    }

    /// The heap's shape and its position array agree, and every parent comes first.
    fn assert_heap(h: &IndexedHeap) {
        for i in 1..h.heap.len() {
            assert!(!before(h.heap[i], h.heap[(i - 1) / 2]), "heap order at {i}");
        }
        for (i, &(_, s)) in h.heap.iter().enumerate() {
            assert_eq!(h.pos[s as usize] as usize, i, "position of slot {s}");
        }
        let placed = h.pos.iter().filter(|&&p| p != ABSENT).count();
        assert_eq!(placed, h.heap.len(), "stale positions");
    }

    #[test]
    fn indexed_heap_gives_ties_to_the_lower_slot() {
        let h = IndexedHeap::build([(2.0, 7), (1.0, 9), (1.0, 4), (1.0, 6), (3.0, 0)]);
        assert_heap(&h);
        assert_eq!(h.top(), Some((1.0, 4)));
        let mut h = IndexedHeap::default();
        for (c, s) in [(5.0, 3), (5.0, 1), (5.0, 2)] {
            h.set(s, c);
        }
        assert_eq!(h.top(), Some((5.0, 1)));
        // Raising the top to a tie with the others: still the lower slot wins.
        h.set(1, 5.0);
        assert_eq!(h.top(), Some((5.0, 1)));
        h.set(1, 5.5);
        assert_eq!(h.top(), Some((5.0, 2)));
        assert_heap(&h);
    }

    #[test]
    fn indexed_heap_moves_entries_up_and_down_and_removes_any() {
        let mut h = IndexedHeap::build((0..10).map(|s| (f64::from(s as u32) * 10.0, s)));
        assert_eq!(h.top(), Some((0.0, 0)));
        // Down: the top gets expensive.
        h.set(0, 95.0);
        assert_eq!(h.top(), Some((10.0, 1)));
        assert_heap(&h);
        // Up: a leaf gets cheap.
        h.set(9, 1.0);
        assert_eq!(h.top(), Some((1.0, 9)));
        assert_heap(&h);
        // Remove the top, a middle entry, the last entry, and one that is absent.
        h.remove(9);
        assert_eq!(h.top(), Some((10.0, 1)));
        h.remove(5);
        h.remove(h.heap[h.heap.len() - 1].1 as usize);
        h.remove(5);
        h.remove(1000);
        assert_heap(&h);
        assert_eq!(h.heap.len(), 7);
        assert_eq!(h.position(5), None);
        // Back in, past the end of the position array too.
        h.set(5, 0.5);
        h.set(20, 0.25);
        assert_eq!(h.top(), Some((0.25, 20)));
        assert_heap(&h);
        while let Some((_, s)) = h.top() {
            h.remove(s);
            assert_heap(&h);
        }
        assert!(h.heap.is_empty());
    }

    /// What [`pick`] must match: the set as it is now, costs by the same formulas.
    struct World {
        loads: Vec<NodeLoad>,
        kind_ms: Vec<f64>,
        eligible: Vec<usize>,
        generation: u64,
    }

    const INDEXED: [Strategy; 4] = [
        Strategy::LeastConnections,
        Strategy::ResponseTime,
        Strategy::Adaptive,
        Strategy::ConsistentHash,
    ];

    fn node_hash(s: usize) -> u64 {
        hash64(format!("node-{s}").as_bytes())
    }

    impl World {
        /// The kind's fleet mean, as the dispatcher's KindTimes keeps it.
        fn default_ms(&self) -> f64 {
            let known: Vec<f64> = self.kind_ms.iter().copied().filter(|&m| m > 0.0).collect();
            if known.is_empty() {
                0.0
            } else {
                known.iter().sum::<f64>() / known.len() as f64
            }
        }

        fn request<'a>(
            &'a self,
            strategy: Strategy,
            eligible: &'a [usize],
            key: u64,
        ) -> Request<'a> {
            Request {
                strategy,
                eligible,
                full_set: std::ptr::eq(eligible, self.eligible.as_slice()),
                generation: self.generation,
                weights_generation: 0,
                loads: &self.loads,
                key_hash: key,
                node_hash: &node_hash,
                kind_ms: &self.kind_ms,
                kind_default_ms: self.default_ms(),
            }
        }

        /// Each strategy's cost of `slot`, written out again rather than shared with
        /// the heaps' build.
        fn cost(&self, strategy: Strategy, slot: usize) -> f64 {
            let l = &self.loads[slot];
            let queue = f64::from(l.in_flight) + 1.0;
            match strategy {
                Strategy::LeastConnections => f64::from(l.in_flight),
                Strategy::ResponseTime => l.latency_ms.max(1.0) * queue / l.weight,
                _ => match self.kind_ms.get(slot).copied().filter(|&m| m > 0.0) {
                    Some(ms) => ms * queue / l.weight,
                    None => {
                        let d = self.default_ms();
                        (if d > 0.0 { d } else { 1.0 }) * (queue / l.weight)
                    }
                },
            }
        }

        /// The lowest cost over `eligible`, ties to the lower slot.
        fn best(&self, strategy: Strategy, eligible: &[usize]) -> (f64, usize) {
            eligible
                .iter()
                .map(|&s| (self.cost(strategy, s), s))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .expect("a non-empty set")
        }

        /// The summing consistent hash from before the indexes.
        fn ring_pick(&self, eligible: &[usize], key: u64) -> Option<usize> {
            let ring = build_ring(eligible, &node_hash);
            let total = in_flight_sum(eligible, &self.loads);
            bounded_ring_pick(&ring, total, eligible.len(), &self.loads, key, |_| true)
        }

        /// A non-empty subset of `of`, by the bits of `mask`.
        fn subset(of: &[usize], mask: u64) -> Vec<usize> {
            let v: Vec<usize> = of
                .iter()
                .copied()
                .filter(|&s| mask >> (s % 64) & 1 == 1)
                .collect();
            if v.is_empty() {
                vec![of[0]]
            } else {
                v
            }
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    /// The indexed decision for `strategy` against a scan of the set as it is now.
    fn check(p: &mut Placer, w: &World, strategy: Strategy, key: u64) -> Result<(), TestCaseError> {
        let got = p.pick("k", &w.request(strategy, &w.eligible, key));
        if strategy == Strategy::ConsistentHash {
            prop_assert_eq!(got, w.ring_pick(&w.eligible, key), "consistent hash");
            return Ok(());
        }
        let got = got.expect("a node");
        prop_assert!(
            w.eligible.contains(&got),
            "{} picked {} outside the set",
            strategy,
            got
        );
        let (best_cost, best_slot) = w.best(strategy, &w.eligible);
        let cost = w.cost(strategy, got);
        prop_assert_eq!(
            cost.to_bits(),
            best_cost.to_bits(),
            "{}: slot {} costs {} not {}",
            strategy,
            got,
            cost,
            best_cost
        );
        if strategy != Strategy::Adaptive {
            // Adaptive scales untried costs after ordering them, which can round two
            // different costs to one: only the cost is exact there.
            prop_assert_eq!(got, best_slot, "{} tie", strategy);
        }
        // And the production scan, which cross-multiplies instead of dividing.
        let mut fresh = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let scan_req = Request {
            full_set: false,
            ..w.request(strategy, &w.eligible, key)
        };
        let scanned = pick(&mut fresh, &mut rng, &scan_req).expect("a node");
        prop_assert!(
            close(cost, w.cost(strategy, scanned)),
            "{}: scan found {} at {}, index {} at {}",
            strategy,
            scanned,
            w.cost(strategy, scanned),
            got,
            cost
        );
        Ok(())
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Place with one of [`INDEXED`]: one more in flight there.
        Place(usize),
        /// A result from a node (any slot, in the set or not): one fewer in flight, a
        /// new latency and (0 = none yet) run time.
        Finish {
            slot: usize,
            latency_ms: f64,
            kind_ms: f64,
        },
        Weight {
            slot: usize,
            weight: f64,
        },
        /// The set changes.
        Regenerate {
            mask: u64,
        },
        /// A filtered request (requirements, refusals) places a task.
        Filtered {
            strategy: usize,
            mask: u64,
        },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        // Small integers as well as arbitrary fractions, so costs tie often.
        let ms = || prop_oneof![(0u32..40).prop_map(f64::from), 0.0..200.0f64];
        prop_oneof![
            4 => (0usize..4).prop_map(Op::Place),
            3 => (any::<usize>(), ms(), prop_oneof![Just(0.0), ms()])
                .prop_map(|(slot, latency_ms, kind_ms)| Op::Finish { slot, latency_ms, kind_ms }),
            1 => (any::<usize>(), 1u32..33)
                .prop_map(|(slot, q)| Op::Weight { slot, weight: f64::from(q) / 4.0 }),
            1 => any::<u64>().prop_map(|mask| Op::Regenerate { mask }),
            1 => (0usize..4, any::<u64>()).prop_map(|(strategy, mask)| Op::Filtered { strategy, mask }),
        ]
    }

    impl World {
        /// Apply `op` as the dispatcher would, touching every slot it changes.
        fn apply(&mut self, p: &mut Placer, op: &Op, key: u64) -> Result<(), TestCaseError> {
            let n = self.loads.len();
            match *op {
                Op::Place(i) => {
                    let s = p.pick("k", &self.request(INDEXED[i], &self.eligible, key));
                    let s = s.expect("a node");
                    self.loads[s].in_flight += 1;
                    p.touch(s);
                }
                Op::Finish {
                    slot,
                    latency_ms,
                    kind_ms,
                } => {
                    let s = slot % n;
                    let l = &mut self.loads[s];
                    l.in_flight = l.in_flight.saturating_sub(1);
                    l.latency_ms = peak_ewma(l.latency_ms, latency_ms, 0.3);
                    if self.kind_ms.len() <= s {
                        self.kind_ms.resize(s + 1, 0.0);
                    }
                    self.kind_ms[s] = kind_ms;
                    p.touch(s);
                }
                Op::Weight { slot, weight } => {
                    self.loads[slot % n].weight = weight;
                    p.touch(slot % n);
                }
                Op::Regenerate { mask } => {
                    self.eligible = World::subset(&(0..n).collect::<Vec<_>>(), mask);
                    self.generation += 1;
                }
                Op::Filtered { strategy, mask } => {
                    let strategy = INDEXED[strategy];
                    let some = World::subset(&self.eligible, mask);
                    let got = p.pick("k", &self.request(strategy, &some, key));
                    if strategy == Strategy::ConsistentHash {
                        prop_assert_eq!(got, self.ring_pick(&some, key), "filtered ring");
                    }
                    let s = got.expect("a node");
                    prop_assert!(
                        some.contains(&s),
                        "{} filtered pick {} outside {:?}",
                        strategy,
                        s,
                        some
                    );
                    if strategy != Strategy::ConsistentHash {
                        prop_assert!(
                            close(self.cost(strategy, s), self.best(strategy, &some).0),
                            "filtered {}",
                            strategy
                        );
                    }
                    self.loads[s].in_flight += 1;
                    p.touch(s);
                }
            }
            Ok(())
        }
    }

    proptest! {
        /// The heap against a sorted list, over random inserts, re-keys and removals.
        #[test]
        fn indexed_heap_matches_a_sorted_reference(
            ops in proptest::collection::vec((0usize..24, prop_oneof![Just(None), (0u32..6).prop_map(|c| Some(f64::from(c)))]), 1..200)
        ) {
            let mut h = IndexedHeap::default();
            let mut reference: Vec<(f64, usize)> = Vec::new();
            for (slot, cost) in ops {
                reference.retain(|e| e.1 != slot);
                match cost {
                    Some(c) => {
                        h.set(slot, c);
                        reference.push((c, slot));
                    }
                    None => h.remove(slot),
                }
                assert_heap(&h);
                let min = reference.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                prop_assert_eq!(h.top(), min);
            }
        }

        /// Random placements, results, weight changes, filtered requests and new sets,
        /// with touches as the dispatcher makes them: after each, the indexed decisions
        /// (a random few of them, so touches pile up between some) equal a scan's.
        #[test]
        fn indexed_decisions_match_a_scan(
            init in proptest::collection::vec((1u32..33, 0u32..8, 0u32..100), 1..40),
            mask in any::<u64>(),
            ops in proptest::collection::vec((op(), 0u8..16), 1..60),
        ) {
            let n = init.len();
            let mut w = World {
                loads: init.iter().map(|&(q, f, l)| NodeLoad {
                    weight: f64::from(q) / 4.0,
                    in_flight: f,
                    latency_ms: f64::from(l),
                }).collect(),
                kind_ms: Vec::new(),
                eligible: World::subset(&(0..n).collect::<Vec<_>>(), mask),
                generation: 1,
            };
            let mut p = Placer::with_seed(3);
            for (i, (op, checks)) in ops.iter().enumerate() {
                let key = hash64(&(i as u64).to_le_bytes());
                w.apply(&mut p, op, key)?;
                for (b, &strategy) in INDEXED.iter().enumerate() {
                    if checks >> b & 1 == 1 {
                        check(&mut p, &w, strategy, key)?;
                    }
                }
            }
            for strategy in INDEXED {
                for key in 0..4u64 {
                    check(&mut p, &w, strategy, hash64(&key.to_le_bytes()))?;
                }
            }
        }
    }

    #[test]
    fn a_filtered_request_leaves_the_ring_and_the_schedule_to_the_full_set() {
        let loads = vec![NodeLoad::default(); 4];
        let all = [0, 1, 2, 3];
        let filtered = |strategy, eligible, key| Request {
            full_set: false,
            ..req(strategy, eligible, &loads, key, 1)
        };
        let keys: Vec<u64> = (0..200u64).map(|k| hash64(&k.to_le_bytes())).collect();
        let mut rng = fastrand::Rng::with_seed(1);
        // Reference: the full set alone.
        let mut clean = SetState::default();
        let expected: Vec<Option<usize>> = keys
            .iter()
            .map(|&k| {
                pick(
                    &mut clean,
                    &mut rng,
                    &req(Strategy::ConsistentHash, &all, &loads, k, 1),
                )
            })
            .collect();
        // A filtered request first (only node 2 fits), then the full set.
        let mut st = SetState::default();
        assert_eq!(
            pick(
                &mut st,
                &mut rng,
                &filtered(Strategy::ConsistentHash, &[2], 7)
            ),
            Some(2)
        );
        assert_eq!(
            pick(
                &mut st,
                &mut rng,
                &filtered(Strategy::WeightedRoundRobin, &[2], 7)
            ),
            Some(2)
        );
        let got: Vec<Option<usize>> = keys
            .iter()
            .map(|&k| {
                pick(
                    &mut st,
                    &mut rng,
                    &req(Strategy::ConsistentHash, &all, &loads, k, 1),
                )
            })
            .collect();
        assert_eq!(got, expected, "the ring was built from the full set");
        // With the full ring cached, a filtered request still only gets its own nodes.
        for &k in &keys {
            let s = pick(
                &mut st,
                &mut rng,
                &filtered(Strategy::ConsistentHash, &[1, 3], k),
            );
            assert!(s == Some(1) || s == Some(3), "{s:?}");
        }
        let mut counts = [0; 4];
        for _ in 0..8 {
            counts[pick(
                &mut st,
                &mut rng,
                &req(Strategy::WeightedRoundRobin, &all, &loads, 0, 1),
            )
            .unwrap()] += 1;
        }
        assert_eq!(counts, [2, 2, 2, 2], "the schedule covers the full set");
    }

    #[test]
    fn filtered_weighted_round_robin_takes_the_least_in_flight_per_weight() {
        let loads = [
            NodeLoad {
                weight: 4.0,
                in_flight: 6,
                ..Default::default()
            },
            NodeLoad {
                weight: 1.0,
                in_flight: 1,
                ..Default::default()
            },
            NodeLoad {
                weight: 2.0,
                in_flight: 1,
                ..Default::default()
            },
        ];
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let r = Request {
            full_set: false,
            ..req(Strategy::WeightedRoundRobin, &[0, 1, 2], &loads, 0, 1)
        };
        // 6/4, 1/1, 1/2: node 2.
        assert_eq!(pick(&mut st, &mut rng, &r), Some(2));
        assert!(
            st.wrr.heap.is_empty(),
            "no schedule built from a filtered list"
        );
    }

    proptest! {
        /// A filtered consistent-hash decision walks the cached full ring skipping
        /// other nodes, or builds the subset's own ring: the same node either way.
        #[test]
        fn filtered_consistent_hash_is_the_subsets_ring_either_way(
            inflight in proptest::collection::vec(0u32..6, 2..30),
            mask in any::<u64>(),
            keys in proptest::collection::vec(any::<u64>(), 1..20),
        ) {
            let n = inflight.len();
            let all: Vec<usize> = (0..n).collect();
            let loads: Vec<NodeLoad> = inflight.iter().map(|&f| NodeLoad { in_flight: f, ..Default::default() }).collect();
            let some = World::subset(&all, mask);
            let mut rng = fastrand::Rng::with_seed(1);
            let mut cached = SetState::default();
            pick(&mut cached, &mut rng, &req(Strategy::ConsistentHash, &all, &loads, 0, 1));
            prop_assert!(!cached.ring.is_empty());
            for k in keys {
                let r = Request { full_set: false, ..req(Strategy::ConsistentHash, &some, &loads, k, 1) };
                let walked = pick(&mut cached, &mut rng, &r);
                let own = pick(&mut SetState::default(), &mut rng, &r);
                let ring = build_ring(&some, &node_hash);
                let reference = bounded_ring_pick(&ring, in_flight_sum(&some, &loads), some.len(), &loads, k, |_| true);
                prop_assert_eq!(walked, reference);
                prop_assert_eq!(own, reference);
            }
        }
    }
}
