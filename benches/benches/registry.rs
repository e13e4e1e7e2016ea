//! The coordinator's registry ingesting heartbeats (topic parse + decode + update) from
//! 1,000 and 10,000 nodes, on one core (target: 500,000 per second).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fog_coordinator::registry::{LivenessConfig, Registry};
use fog_proto::{codec, Encoding, Heartbeat, Topics};
use tokio::time::Instant;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry ingest heartbeats");
    for nodes in [1_000usize, 10_000] {
        for enc in [Encoding::Json, Encoding::Postcard] {
            let topics = Topics::default();
            let msgs: Vec<(String, Vec<u8>)> = (0..nodes)
                .map(|i| {
                    let hb = Heartbeat {
                        seq: i as u64,
                        at_ms: 1_790_000_000_000,
                        cpu_pct: Some(12.5),
                        mem_pct: 40.0,
                        load1: 0.5,
                        queued: 0,
                        running: 1,
                        free_slots: 3,
                        ..Heartbeat::default()
                    };
                    let node = fog_proto::NodeId::new(format!("node-{i:05}")).expect("valid");
                    (
                        topics.node(&node, fog_proto::NodeTopic::Heartbeat),
                        codec::encode(&hb, enc).expect("encodes"),
                    )
                })
                .collect();
            let mut registry = Registry::new(topics.clone(), LivenessConfig::default());
            let now = Instant::now();
            for (t, p) in &msgs {
                registry.ingest(t, p, now, 0).expect("valid");
            }
            group.throughput(Throughput::Elements(nodes as u64));
            group.bench_function(format!("{nodes} nodes {}", enc.as_str()), |b| {
                b.iter_batched(
                    || (),
                    |_| {
                        for (t, p) in &msgs {
                            black_box(registry.ingest(t, p, now, 0).expect("valid"));
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
