//! One placement decision among 10,000 eligible nodes, per strategy (targets: p2c and
//! round_robin at most 1 us, every other strategy at most 10 us).
//!
//! Loads are random and each decision adds one task to the chosen node and takes one
//! from a random node, so the strategies see a moving fleet, not a constant answer.
//! Every change is reported to the placer (`touch`), as the dispatcher does, so the
//! time includes keeping its indexes current. Every 8th decision a random node also
//! learns a new run time for the kind (what a result does for `adaptive`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fog_coordinator::placement::{hash64, NodeLoad, Placer, Request, Strategy};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement decision");
    for nodes in [100usize, 10_000] {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut loads: Vec<NodeLoad> = (0..nodes)
            .map(|_| NodeLoad {
                weight: f64::from(rng.u32(1..=8)),
                in_flight: rng.u32(0..20),
                latency_ms: rng.f64() * 100.0,
            })
            .collect();
        let eligible: Vec<usize> = (0..nodes).collect();
        let hashes: Vec<u64> = (0..nodes)
            .map(|i| hash64(format!("node-{i:05}").as_bytes()))
            .collect();
        // Half the nodes have run the kind (0 = not yet).
        let mut kind_ms: Vec<f64> = (0..nodes)
            .map(|_| if rng.bool() { rng.f64() * 50.0 } else { 0.0 })
            .collect();
        // Four tariffs (cost-aware); the other strategies ignore them.
        let costs: Vec<f64> = (0..nodes).map(|_| f64::from(rng.u32(0..4))).collect();
        for strategy in Strategy::ALL {
            let mut placer = Placer::with_seed(1);
            let mut key = 0u64;
            let node_hash = |s: usize| hashes[s];
            let decide = |placer: &mut Placer, loads: &[NodeLoad], kind_ms: &[f64], key: u64| {
                placer.pick(
                    "sha256",
                    &Request {
                        strategy,
                        eligible: &eligible,
                        full_set: true,
                        generation: 1,
                        weights_generation: 1,
                        loads,
                        key_hash: hash64(&key.to_le_bytes()),
                        node_hash: &node_hash,
                        kind_ms,
                        kind_default_ms: 25.0,
                        node_cost: &costs,
                    },
                )
            };
            // First decision outside the timing: builds the ring, schedule or heaps.
            decide(&mut placer, &loads, &kind_ms, 0);
            group.bench_function(format!("{strategy} {nodes} nodes"), |b| {
                b.iter(|| {
                    key = key.wrapping_add(1);
                    let s = decide(&mut placer, &loads, &kind_ms, key).expect("a node");
                    loads[s].in_flight += 1;
                    placer.touch(s);
                    let other = rng.usize(..nodes);
                    loads[other].in_flight = loads[other].in_flight.saturating_sub(1);
                    placer.touch(other);
                    if key % 8 == 0 {
                        let learner = rng.usize(..nodes);
                        kind_ms[learner] = rng.f64() * 50.0;
                        placer.touch(learner);
                    }
                    black_box(s)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
