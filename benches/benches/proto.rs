//! Codec costs: a heartbeat encoded and decoded (target: 2 us), and a full reading.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fog_proto::{codec, Encoding, Heartbeat, Reading};

fn heartbeat() -> Heartbeat {
    Heartbeat {
        seq: 123_456,
        at_ms: 1_790_000_000_000,
        cpu_pct: Some(37.5),
        mem_pct: 41.25,
        load1: 0.73,
        queued: 2,
        running: 4,
        free_slots: 0,
        ..Heartbeat::default()
    }
}

fn bench(c: &mut Criterion) {
    let hb = heartbeat();
    for enc in [Encoding::Json, Encoding::Postcard] {
        let mut buf = Vec::with_capacity(256);
        c.bench_function(&format!("heartbeat encode+decode {}", enc.as_str()), |b| {
            b.iter(|| {
                buf.clear();
                codec::encode_into(black_box(&hb), enc, &mut buf).expect("encodes");
                let back: Heartbeat = codec::decode(black_box(&buf)).expect("decodes");
                black_box(back)
            })
        });
    }
    let mut collector = fog_agent::metrics::Collector::new(
        fog_agent::config::Config::from_toml("")
            .expect("defaults")
            .metrics,
    );
    collector.reading(0);
    let reading: Reading = collector.reading(1);
    for enc in [Encoding::Json, Encoding::Postcard] {
        let mut buf = Vec::with_capacity(4096);
        c.bench_function(&format!("reading encode {}", enc.as_str()), |b| {
            b.iter(|| {
                buf.clear();
                codec::encode_into(black_box(&reading), enc, &mut buf).expect("encodes");
                black_box(buf.len())
            })
        });
        // What the coordinator does with every reading.
        let bytes = codec::encode(&reading, enc).expect("encodes");
        c.bench_function(&format!("reading decode {}", enc.as_str()), |b| {
            b.iter(|| {
                let back: Reading = codec::decode(black_box(&bytes)).expect("decodes");
                black_box(back)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
