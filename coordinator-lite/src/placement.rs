//! Placement: which eligible node gets a task, by one of seven strategies.
//!
//! This module is pure decision logic over plain numbers, so it is property-tested and
//! benchmarked without a broker. What is *eligible* (the node runs the kind, is healthy
//! enough, its breaker lets work through) is decided by the caller, which passes the
//! eligible node slots; what each strategy reads is in [`NodeLoad`], indexed by slot.
//!
//! Per decision costs at 10,000 eligible nodes (see docs/performance.md): round robin
//! and p2c are O(1); weighted round robin and consistent hashing O(log n) after a
//! rebuild on membership change; least connections, response time and adaptive are one
//! linear scan over a dense array.

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
/// kind). Rebuilt when the caller's `generation` for that set changes.
#[derive(Debug, Default)]
pub struct SetState {
    generation: u64,
    weights_generation: u64,
    rr: usize,
    wrr: Edf,
    ring: Vec<(u64, usize)>,
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
    /// Bumped by the caller whenever `eligible` changes (rebuilds the ring and the
    /// weighted schedule).
    pub generation: u64,
    /// Bumped by the caller whenever a weight changes (rebuilds only the weighted
    /// schedule; the ring does not depend on weights).
    pub weights_generation: u64,
    pub loads: &'a [NodeLoad],
    /// Hash of the task's placement key (consistent hashing).
    pub key_hash: u64,
    /// A stable hash of each node's id, for the ring.
    pub node_hash: &'a dyn Fn(usize) -> u64,
    /// Adaptive: expected ms for this task's kind per node slot (its EWMA); 0 (or a
    /// slot past the end) for a node that has not run the kind yet. Dense, so the scan
    /// is a walk over two arrays.
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
    if state.generation != req.generation {
        state.generation = req.generation;
        state.wrr = Edf::default();
        state.ring.clear();
    }
    if state.weights_generation != req.weights_generation {
        state.weights_generation = req.weights_generation;
        state.wrr = Edf::default();
    }
    let loads = req.loads;
    Some(match req.strategy {
        Strategy::RoundRobin => {
            let slot = eligible[state.rr % eligible.len()];
            state.rr = state.rr.wrapping_add(1);
            slot
        }
        Strategy::WeightedRoundRobin => {
            if state.wrr.heap.is_empty() {
                state.wrr.rebuild(eligible, loads);
            }
            state.wrr.next()?
        }
        Strategy::LeastConnections => min_ratio(eligible, |s| (f64::from(loads[s].in_flight), 1.0)),
        Strategy::ResponseTime => min_ratio(eligible, |s| {
            // Cost = latency x (in flight + 1) / weight: an idle slow node can beat a
            // busy fast one.
            let l = &loads[s];
            (l.latency_ms.max(1.0) * f64::from(l.in_flight + 1), l.weight)
        }),
        Strategy::Adaptive => {
            // Least expected completion time: per-task time for this kind on the node
            // times the tasks it would have to get through.
            let default = if req.kind_default_ms > 0.0 {
                req.kind_default_ms
            } else {
                1.0
            };
            min_ratio(eligible, |s| {
                let known = req.kind_ms.get(s).copied().unwrap_or(0.0);
                let per_task = if known > 0.0 { known } else { default };
                (
                    per_task * f64::from(loads[s].in_flight + 1),
                    loads[s].weight,
                )
            })
        }
        Strategy::ConsistentHash => {
            if state.ring.is_empty() {
                state.ring = build_ring(eligible, req.node_hash);
            }
            bounded_ring_pick(&state.ring, eligible, loads, req.key_hash)
        }
        Strategy::P2c => {
            if eligible.len() == 1 {
                eligible[0]
            } else {
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
        }
    })
}

/// The slot with the lowest cost `num / den` (den > 0); ties go to the first in
/// `eligible`. Compared by cross-multiplying, over four independent running minimums.
/// Still about 2 ns per node at 10,000 nodes (see docs/performance.md, Placement: a
/// single running minimum, a division per node, and a two-pass cost buffer measured
/// no better); an indexed heap per kind is the way to O(log n).
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

/// Walk clockwise from the key's point to the first node under the load bound.
fn bounded_ring_pick(
    ring: &[(u64, usize)],
    eligible: &[usize],
    loads: &[NodeLoad],
    key: u64,
) -> usize {
    let total: u64 = eligible
        .iter()
        .map(|&s| u64::from(loads[s].in_flight))
        .sum();
    // Including the task being placed, as the paper does.
    let bound = (HASH_LOAD_FACTOR * (total + 1) as f64 / eligible.len() as f64).ceil();
    let start = ring.partition_point(|&(h, _)| h < key);
    for i in 0..ring.len() {
        let (_, slot) = ring[(start + i) % ring.len()];
        if f64::from(loads[slot].in_flight) < bound {
            return slot;
        }
    }
    // Unreachable in practice (some node is always at or below the mean).
    ring[start % ring.len()].1
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
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

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
        #[test]
        fn consistent_hash_moves_about_one_nth_of_keys_on_a_join(n in 3usize..30) {
            let keys = 4000u64;
            let before: Vec<usize> = (0..n).collect();
            let after: Vec<usize> = (0..=n).collect();
            let loads = vec![NodeLoad::default(); n + 1];
            let place = |eligible: &[usize]| -> Vec<usize> {
                let mut st = SetState::default();
                let mut rng = fastrand::Rng::with_seed(1);
                (0..keys).map(|k| pick(&mut st, &mut rng, &req(Strategy::ConsistentHash, eligible, &loads, hash64(&k.to_le_bytes()), 1)).unwrap()).collect()
            };
            let (a, b) = (place(&before), place(&after));
            let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            prop_assert!(a.iter().zip(&b).all(|(x, y)| x == y || *y == n), "a key moved between old nodes");
            let expected = keys as f64 / (n + 1) as f64;
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
}
