//! The HTTP API's per-request costs for a 1,000-node fleet (targets: `/metrics`
//! rendered in at most 20 ms, `GET /api/v1/nodes` in at most 10 ms, a console update
//! at most 100 KB): a real registry
//! fed a birth record and a full reading per node, its snapshot made the way the
//! coordinator makes it, then rendered and serialised.

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fog_coordinator::registry::{LivenessConfig, Registry};
use fog_coordinator::view::{Health, JournalHealth, View};
use fog_proto::{
    codec, Birth, Disk, Encoding, Network, NodeId, NodeTopic, Reading, Status, Temperature, Topics,
};

fn birth(node: &NodeId) -> Birth {
    Birth {
        node: node.clone(),
        version: "0.1.0".into(),
        arch: "aarch64".into(),
        cores: 4,
        memory_bytes: 4 << 30,
        labels: BTreeMap::from([
            ("site".into(), "farm".into()),
            ("room".into(), "barn".into()),
        ]),
        encoding: Encoding::Json,
        task_kinds: vec!["echo".into(), "sha256".into()],
        heartbeat_interval_ms: 5000,
        metrics_interval_ms: 10_000,
        keep_alive_secs: 30,
        started_at_ms: 1_790_000_000_000,
        node_key: String::new(),
        task_trust: Default::default(),
    }
}

/// What a Raspberry Pi publishes: two filesystems, three interfaces, two sensors.
fn reading(at_ms: u64) -> Reading {
    let mut r = Reading {
        seq: 1,
        at_ms,
        uptime_secs: 86_400,
        ..Default::default()
    };
    r.cpu.total_pct = Some(12.5);
    r.load.one = 0.5;
    r.memory.total_bytes = 4 << 30;
    r.memory.available_bytes = 3 << 30;
    for (mount, device) in [("/", "mmcblk0p2"), ("/boot/firmware", "mmcblk0p1")] {
        r.disks.push(Disk {
            mount: mount.into(),
            device: device.into(),
            fs_type: "ext4".into(),
            total_bytes: 32 << 30,
            available_bytes: 20 << 30,
            ..Default::default()
        });
    }
    for i in ["eth0", "wlan0", "tailscale0"] {
        r.networks.push(Network {
            interface: i.into(),
            rx_bytes_total: 123_456_789,
            tx_bytes_total: 98_765_432,
            ..Default::default()
        });
    }
    for s in ["thermal_zone0/cpu-thermal", "hwmon0/rp1_adc"] {
        r.temperatures.push(Temperature {
            sensor: s.into(),
            celsius: 48.5,
        });
    }
    r
}

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
