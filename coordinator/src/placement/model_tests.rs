//! Model-based tests: the indexed decisions against a scan of the set as it is now,
//! over random sequences of placements, results, weight and membership changes, and
//! filtered requests.

use super::consistent_hash::{bounded_ring_pick, build_ring, in_flight_sum, ConsistentHash};
use super::tests::req;
use super::weighted_round_robin::WeightedRoundRobin;
use super::Strategy;
use super::*;
use proptest::prelude::{
    any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, Strategy as _, TestCaseError,
};

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

    fn request<'a>(&'a self, strategy: Strategy, eligible: &'a [usize], key: u64) -> Request<'a> {
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
            node_cost: &[],
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
        st.get::<WeightedRoundRobin>()
            .is_none_or(|w| w.heap.is_empty()),
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
        prop_assert!(!cached.get::<ConsistentHash>().is_none_or(|c| c.ring.is_empty()));
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
