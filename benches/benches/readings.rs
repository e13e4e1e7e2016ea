//! One full reading collected from /proc and /sys and encoded (target: 300 us), and a
//! heartbeat sample, on this machine's real files.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fog_agent::metrics::Collector;
use fog_proto::{codec, Encoding};

fn bench(c: &mut Criterion) {
    let metrics = fog_agent::config::Config::from_toml("")
        .expect("defaults")
        .metrics;
    let mut collector = Collector::new(metrics);
    collector.reading(0);
    let mut buf = Vec::with_capacity(4096);
    c.bench_function("reading collect+encode json", |b| {
        b.iter(|| {
            let r = collector.reading(black_box(1));
            buf.clear();
            codec::encode_into(&r, Encoding::Json, &mut buf).expect("encodes");
            black_box(buf.len())
        })
    });
    c.bench_function("heartbeat collect+encode json", |b| {
        b.iter(|| {
            let h = collector.heartbeat(black_box(1));
            buf.clear();
            codec::encode_into(&h, Encoding::Json, &mut buf).expect("encodes");
            black_box(buf.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
