//! The HTTP API's per-request costs for a 1,000-node fleet (targets: `/metrics`
//! rendered in at most 20 ms, `GET /api/v1/nodes` in at most 10 ms, a console update
//! at most 100 KB): a real registry
//! fed a birth record and a full reading per node, its snapshot made the way the
//! coordinator makes it, then rendered and serialised.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fog_benches::pi::{birth, reading};
use fog_coordinator::registry::{LivenessConfig, Registry};
use fog_coordinator::view::{Health, JournalHealth, View};
use fog_proto::{codec, Encoding, NodeId, NodeTopic, Status, Topics};

fn fleet(nodes: usize) -> Arc<View> {
    let topics = Topics::default();
    let mut registry = Registry::new(topics.clone(), LivenessConfig::default());
    let now = tokio::time::Instant::now();
    let wall = fog_rt::clock::now_ms();
    for i in 0..nodes {
        let node = NodeId::new(format!("pi-{i:04}")).expect("valid");
        let status = Status {
            online: true,
            at_ms: wall,
            reason: String::new(),
            birth: Some(birth(&node)),
            seal: None,
        };
        let s = codec::encode(&status, Encoding::Json).expect("encodes");
        registry
            .ingest(&topics.node(&node, NodeTopic::Status), &s, now, wall)
            .expect("status");
        let r = codec::encode(&reading(wall), Encoding::Json).expect("encodes");
        registry
            .ingest(&topics.node(&node, NodeTopic::Metrics), &r, now, wall)
            .expect("reading");
    }
    let mut status = fog_coordinator::service::empty_snapshot().status.clone();
    status.online = true;
    status.at_ms = wall;
    status.nodes = registry.summaries();
    Arc::new(View {
        status,
        details: fog_coordinator::view::details(&registry),
        health: Health {
            broker: true,
            journal: JournalHealth::Ok,
            in_flight: 0,
        },
        trends: Default::default(),
        profiles: Default::default(),
        drained: Default::default(),
        latency: Default::default(),
    })
}

fn bench(c: &mut Criterion) {
    let view = fleet(1000);
    let now = fog_rt::clock::now_ms();
    let metrics = fog_coordinator::http::metrics::render(&view, now);
    let nodes = serde_json::to_string(&fog_coordinator::http::node_list(&view, None).expect("ok"))
        .expect("serialises");
    let event = fog_coordinator::http::console::fleet_event(&view);
    eprintln!(
        "1,000 nodes: /metrics {} bytes in {} lines, /api/v1/nodes {} bytes, one console update {} bytes",
        metrics.len(),
        metrics.lines().count(),
        nodes.len(),
        event.len()
    );
    let mut group = c.benchmark_group("http 1000 nodes");
    group.bench_function("/metrics render", |b| {
        b.iter(|| black_box(fog_coordinator::http::metrics::render(&view, now)))
    });
    group.bench_function("/api/v1/nodes", |b| {
        b.iter(|| {
            let v = fog_coordinator::http::node_list(&view, None).expect("ok");
            black_box(serde_json::to_string(&v).expect("serialises"))
        })
    });
    group.bench_function("console update (/api/v1/events)", |b| {
        b.iter(|| black_box(fog_coordinator::http::console::fleet_event(&view)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
