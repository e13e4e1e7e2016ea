//! Cost-aware (the seed system's COST scheduler): the cheapest eligible node whose load
//! is under a bound. A node's cost is what running work there costs its owner (an
//! energy price, a battery-backed node, a metered uplink), from the agent's `cost`
//! label; nodes without one cost 0. Under the bound means fewer than
//! [`COST_LOAD_BOUND`] tasks in flight per unit of weight, so cheap nodes take work
//! until they are busy and dearer ones get only the overflow. Among nodes of equal
//! cost the least loaded per weight wins (what p2c approximates; an index gives the
//! exact one here). If every eligible node is at its bound, the least loaded per
//! weight takes the task whatever its cost (the fleet is saturated: spread, do not
//! queue behind the cheapest).
//!
//! Index: the set's nodes grouped by cost into tiers, cheapest first, each an indexed
//! min-heap by load per weight. A decision looks at the top of each tier until one is
//! under the bound: O(tiers), a handful in a real fleet (one per tariff or power
//! source), and O(log n) per load change.

use super::heap::IndexedHeap;
use super::{Balance, NodeLoad, Request};

/// Tasks in flight per unit of weight (about one per free core) a node may hold
/// before dearer nodes are used.
pub const COST_LOAD_BOUND: f64 = 2.0;

#[derive(Debug, Default)]
pub(super) struct CostAware {
    index: Option<Tiers>,
}

/// A node's cost, 0 where the caller gave none.
fn cost(req: &Request<'_>, slot: usize) -> f64 {
    req.node_cost.get(slot).copied().unwrap_or(0.0)
}

fn load(l: &NodeLoad) -> f64 {
    f64::from(l.in_flight) / l.weight
}

/// Which of two candidates wins: under the bound, the cheaper (then the less loaded);
/// at or over it, the less loaded (then the cheaper); ties to the lower slot.
fn key(req: &Request<'_>, slot: usize) -> (bool, f64, f64, usize) {
    let (c, l) = (cost(req, slot), load(&req.loads[slot]));
    if l < COST_LOAD_BOUND {
        (false, c, l, slot)
    } else {
        (true, l, c, slot)
    }
}

fn better(a: (bool, f64, f64, usize), b: (bool, f64, f64, usize)) -> bool {
    a.0.cmp(&b.0)
        .then(a.1.total_cmp(&b.1))
        .then(a.2.total_cmp(&b.2))
        .then(a.3.cmp(&b.3))
        .is_lt()
}

#[derive(Debug)]
struct Tiers {
    /// Cheapest first: the cost and its nodes by load per weight.
    tiers: Vec<(f64, IndexedHeap)>,
    /// By slot: its tier (`u32::MAX` if not in the set).
    tier_of: Vec<u32>,
}

impl Tiers {
    fn build(req: &Request<'_>) -> Tiers {
        let mut by_cost: Vec<(f64, usize)> =
            req.eligible.iter().map(|&s| (cost(req, s), s)).collect();
        by_cost.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let len = req.eligible.iter().max().map_or(0, |&m| m + 1);
        let mut tier_of = vec![u32::MAX; len];
        let mut tiers: Vec<(f64, Vec<(f64, usize)>)> = Vec::new();
        for (c, s) in by_cost {
            if tiers.last().is_none_or(|t| t.0.total_cmp(&c).is_ne()) {
                tiers.push((c, Vec::new()));
            }
            let last = tiers.len() - 1;
            tier_of[s] = u32::try_from(last).unwrap_or(u32::MAX);
            tiers[last].1.push((load(&req.loads[s]), s));
        }
        Tiers {
            tiers: tiers
                .into_iter()
                .map(|(c, nodes)| (c, IndexedHeap::build(nodes)))
                .collect(),
            tier_of,
        }
    }

    fn pick(&self) -> Option<usize> {
        let mut least: Option<(f64, usize)> = None;
        for (_, heap) in &self.tiers {
            let Some((l, s)) = heap.top() else { continue };
            if l < COST_LOAD_BOUND {
                return Some(s);
            }
            // Strictly less: a tie goes to the cheaper tier, seen first.
            if least.is_none_or(|(best, _)| l < best) {
                least = Some((l, s));
            }
        }
        least.map(|(_, s)| s)
    }
}

impl Balance for CostAware {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        if !req.full_set {
            let mut best = req.eligible[0];
            for &s in &req.eligible[1..] {
                if better(key(req, s), key(req, best)) {
                    best = s;
                }
            }
            return Some(best);
        }
        self.index.get_or_insert_with(|| Tiers::build(req)).pick()
    }

    fn indexed(&self) -> bool {
        true
    }

    fn rekey(&mut self, slot: usize, req: &Request<'_>) {
        let Some(t) = &mut self.index else { return };
        if let Some(&tier) = t.tier_of.get(slot) {
            if let Some((_, heap)) = t.tiers.get_mut(tier as usize) {
                heap.set(slot, load(&req.loads[slot]));
            }
        }
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{hash64, pick, SetState, Strategy};
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    fn req<'a>(
        eligible: &'a [usize],
        loads: &'a [NodeLoad],
        costs: &'a [f64],
        full_set: bool,
    ) -> Request<'a> {
        Request {
            strategy: Strategy::CostAware,
            eligible,
            full_set,
            generation: 1,
            weights_generation: 0,
            loads,
            key_hash: 0,
            node_hash: &|s| hash64(&s.to_le_bytes()),
            kind_ms: &[],
            kind_default_ms: 0.0,
            node_cost: costs,
        }
    }

    fn loaded(in_flight: &[u32]) -> Vec<NodeLoad> {
        in_flight
            .iter()
            .map(|&f| NodeLoad {
                in_flight: f,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn cheap_nodes_fill_to_the_bound_then_the_next_tariff_then_the_least_loaded() {
        // Nodes 0 and 1 on a dear tariff, 2 cheap, 3 without a cost (free).
        let costs = [5.0, 5.0, 1.0];
        let all = [0, 1, 2, 3];
        let mut st = SetState::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut loads = loaded(&[0, 0, 0, 0]);
        let mut picks = Vec::new();
        for _ in 0..8 {
            let s = pick(&mut st, &mut rng, &req(&all, &loads, &costs, true)).expect("a node");
            loads[s].in_flight += 1;
            st.touch(s);
            picks.push(s);
        }
        // Bound 2 per unit of weight: the free node twice, the cheap one twice, then
        // the dear ones (least loaded first, ties to the lower slot).
        assert_eq!(picks, [3, 3, 2, 2, 0, 1, 0, 1]);
        // Everything at the bound: the least loaded whatever the cost.
        loads[1].in_flight = 1;
        st.touch(1);
        let s = pick(&mut st, &mut rng, &req(&all, &loads, &costs, true));
        assert_eq!(s, Some(1));
        // A finished task on the free node brings it back under the bound.
        loads[1].in_flight = 2;
        st.touch(1);
        loads[3].in_flight = 1;
        st.touch(3);
        assert_eq!(
            pick(&mut st, &mut rng, &req(&all, &loads, &costs, true)),
            Some(3)
        );
        // A filtered list is decided by the same rule: all three at the bound and
        // equally loaded, so the cheaper one.
        assert_eq!(
            pick(&mut st, &mut rng, &req(&[0, 1, 2], &loads, &costs, false)),
            Some(2)
        );
    }

    proptest! {
        /// Whatever the costs, weights and loads, and however they move: while some
        /// eligible node is under the load bound the pick is one of them (the bound is
        /// never exceeded when it can be kept), of the lowest cost among them, and the
        /// least loaded of that cost; when none is, the least loaded of all. The index
        /// and the one-pass scan of the same list agree.
        #[test]
        fn never_exceeds_the_load_bound_while_a_node_is_under_it(
            nodes in proptest::collection::vec((0u32..4, 1u32..6, 0u32..14), 1..40),
            ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..120),
        ) {
            let costs: Vec<f64> = nodes.iter().map(|n| f64::from(n.0) * 0.5).collect();
            let mut loads: Vec<NodeLoad> = nodes
                .iter()
                .map(|n| NodeLoad { weight: f64::from(n.1), in_flight: n.2, latency_ms: 0.0 })
                .collect();
            let all: Vec<usize> = (0..nodes.len()).collect();
            let mut st = SetState::default();
            let mut rng = fastrand::Rng::with_seed(1);
            for (place, at) in ops {
                if !place {
                    // A result somewhere: one fewer in flight.
                    let s = usize::from(at) % nodes.len();
                    loads[s].in_flight = loads[s].in_flight.saturating_sub(1);
                    st.touch(s);
                    continue;
                }
                let got = pick(&mut st, &mut rng, &req(&all, &loads, &costs, true)).expect("a node");
                let scanned = pick(&mut SetState::default(), &mut rng, &req(&all, &loads, &costs, false));
                prop_assert_eq!(Some(got), scanned, "index and scan");
                let load = |s: usize| f64::from(loads[s].in_flight) / loads[s].weight;
                let under: Vec<usize> = all.iter().copied().filter(|&s| load(s) < COST_LOAD_BOUND).collect();
                if under.is_empty() {
                    let least = all.iter().map(|&s| load(s)).fold(f64::INFINITY, f64::min);
                    prop_assert_eq!(load(got), least, "saturated: the least loaded");
                } else {
                    prop_assert!(load(got) < COST_LOAD_BOUND, "slot {} is at its bound while {:?} are under it", got, under);
                    let cheapest = under.iter().map(|&s| costs[s]).fold(f64::INFINITY, f64::min);
                    prop_assert_eq!(costs[got], cheapest, "the cheapest under the bound");
                    let least = under.iter().filter(|&&s| costs[s] == cheapest).map(|&s| load(s)).fold(f64::INFINITY, f64::min);
                    prop_assert_eq!(load(got), least, "the least loaded of that cost");
                }
                loads[got].in_flight += 1;
                st.touch(got);
            }
        }
    }
}
