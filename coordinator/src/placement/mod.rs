//! Placement: which eligible node gets a task, by one of eight strategies.
//!
//! This module is pure decision logic over plain numbers, so it is property-tested and
//! benchmarked without a broker. What is *eligible* (the node runs the kind, is healthy
//! enough, its breaker lets work through) is decided by the caller, which passes the
//! eligible node slots; what each strategy reads is in [`NodeLoad`], indexed by slot.
//!
//! One file per strategy, each a [`Balance`] (its decision state for one eligible set),
//! registered by one line in [`strategy`]; the structures they share are [`heap`] (an
//! indexed min-heap), [`touched`] (which nodes changed since the last decision) and
//! [`scan`] (the one-pass minimum for filtered lists).
//!
//! Per decision costs at 10,000 eligible nodes (see docs/performance.md): round robin
//! and p2c are O(1); weighted round robin and consistent hashing O(log n) after a
//! rebuild on membership change; least connections, response time and adaptive read the
//! top of an indexed min-heap per kind. The caller reports every node whose load,
//! weight, latency or run time changed ([`Placer::touch`]); the next decision re-keys
//! those, O(log n) each, so nothing scans the set. A request with a filtered eligible
//! list (task requirements, nodes that refused the task) is decided by one scan over it
//! and leaves the cached state alone: that state describes the full set.

use std::collections::HashMap;
use std::fmt;

mod adaptive;
mod consistent_hash;
mod cost_aware;
mod heap;
mod least_connections;
mod p2c;
mod response_time;
mod round_robin;
mod scan;
pub mod strategy;
mod touched;
mod weighted_round_robin;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use consistent_hash::{hash64, HASH_LOAD_FACTOR, RING_POINTS_PER_NODE};
pub use cost_aware::COST_LOAD_BOUND;
pub use strategy::{Strategy, UnknownStrategy};

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
    /// Cost-aware: each node's cost by slot (0 past the end); finite, not negative.
    /// A change of cost is a change of the set (`generation`).
    pub node_cost: &'a [f64],
}

/// One strategy's decision state for one eligible set (one task kind): made empty
/// ([`Strategy`]'s registration names the type) on the set's first request with that
/// strategy, built from the full set on first use, dropped when the set changes.
pub trait Balance: fmt::Debug + Send {
    /// Pick one of `req.eligible` (never empty here). With `req.full_set` the state may
    /// build and use indexes over the list; without, it decides from the list alone,
    /// reading at most state that is valid for any subset of the set.
    fn pick(&mut self, rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize>;

    /// Whether the state indexes loads, so it must hear of every change ([`rekey`]).
    ///
    /// [`rekey`]: Balance::rekey
    fn indexed(&self) -> bool {
        false
    }

    /// Node `slot` (in the set) changed load, weight, latency or run time since the
    /// last indexed decision.
    fn rekey(&mut self, _slot: usize, _req: &Request<'_>) {}

    /// Whether the state stays valid when weights change (a schedule built from the
    /// old weights does not).
    fn survives_new_weights(&self) -> bool {
        true
    }

    /// Whether the state stays valid when the eligible set changes (only a position
    /// that means nothing about particular nodes does).
    fn survives_new_set(&self) -> bool {
        false
    }

    /// For tests that look inside one strategy's state.
    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any;
}

// One bit per strategy in `SetState::indexed`.
const _: () = assert!(Strategy::COUNT <= 32);

/// The state the strategies carry between decisions, for one eligible set (one task
/// kind). Rebuilt when the caller's `generation` for that set changes; indexes are
/// built only from requests that carry the full set (`Request::full_set`).
#[derive(Debug, Default)]
pub struct SetState {
    generation: u64,
    weights_generation: u64,
    /// By [`Strategy::index`].
    states: [Option<Box<dyn Balance>>; Strategy::COUNT],
    /// Bit [`Strategy::index`] set: that state is built and indexed (kept here so the
    /// hot path makes one virtual call, the decision itself).
    indexed: u32,
    touched: touched::Touched,
}

impl SetState {
    /// Node `slot`'s in-flight count, weight, latency or run time for the kind changed:
    /// it is re-keyed at the next indexed decision (if it is in this set and anything
    /// is indexed yet). The indexes never re-read a node they were not told about.
    pub fn touch(&mut self, slot: usize) {
        self.touched.touch(slot);
    }

    /// Drop what a new eligible set or new weights made stale.
    fn refresh(&mut self, generation: u64, weights_generation: u64) {
        if self.generation != generation {
            self.generation = generation;
            for s in &mut self.states {
                if s.as_ref().is_some_and(|b| !b.survives_new_set()) {
                    *s = None;
                }
            }
            self.reindex();
            self.touched = touched::Touched::default();
        }
        if self.weights_generation != weights_generation {
            // The heaps follow weights through `touch`; a schedule's deadlines hold
            // the old steps, so it starts over.
            self.weights_generation = weights_generation;
            for s in &mut self.states {
                if s.as_ref().is_some_and(|b| !b.survives_new_weights()) {
                    *s = None;
                }
            }
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.indexed = 0;
        for (i, s) in self.states.iter().enumerate() {
            if s.as_ref().is_some_and(|b| b.indexed()) {
                self.indexed |= 1 << i;
            }
        }
    }

    /// Make `strategy`'s state if this set has none yet.
    fn ensure(&mut self, strategy: Strategy) {
        let i = strategy.index();
        if self.states[i].is_none() {
            let state = strategy.new_state();
            if state.indexed() {
                self.indexed |= 1 << i;
            }
            self.states[i] = Some(state);
        }
    }

    /// Before an indexed decision: note the members if nothing is indexed yet (what
    /// gets built next reads current loads), else re-key every slot touched since in
    /// every indexed state.
    fn catch_up(&mut self, req: &Request<'_>) {
        let (states, indexed) = (&mut self.states, self.indexed);
        self.touched.catch_up(req.eligible, |slot| {
            let mut bits = indexed;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(s) = &mut states[i] {
                    s.rekey(slot, req);
                }
            }
        });
    }

    /// The state of the strategy whose type is `T`, if built (tests).
    #[cfg(test)]
    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.states
            .iter()
            .flatten()
            .find_map(|s| s.as_any().downcast_ref::<T>())
    }
}

/// Pick a slot from `req.eligible`, or `None` if it is empty.
pub fn pick(state: &mut SetState, rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
    if req.eligible.is_empty() {
        return None;
    }
    state.refresh(req.generation, req.weights_generation);
    let i = req.strategy.index();
    state.ensure(req.strategy);
    if req.full_set && state.indexed & (1 << i) != 0 {
        state.catch_up(req);
    }
    state.states[i].as_mut()?.pick(rng, req)
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
