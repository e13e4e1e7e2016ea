//! What a seal costs: signing and opening one assignment list of 256 tasks (what the
//! coordinator does per list, and each agent per list it receives), and one heartbeat
//! (what an agent signs every few seconds and the coordinator opens).
use criterion::{criterion_group, criterion_main, Criterion};
use fog_proto::{Heartbeat, Payload, TaskAssignment, TaskAssignments};
use fog_rt::keys::{open, seal, KeyPair};

fn list() -> TaskAssignments {
    TaskAssignments {
        items: (0..256)
            .map(|i| TaskAssignment {
                id: format!("bench-{i:08}"),
                attempt: 1,
                kind: "sha256".into(),
                payload: Payload(vec![7; 1024]),
                timeout_ms: 60_000,
                priority: 0,
                deadline_ms: 0,
                cacheable: false,
            })
            .collect(),
        seal: None,
    }
}

fn bench(c: &mut Criterion) {
    let (key, _) = KeyPair::generate().expect("key");
    let keys = [key.public().clone()];
    let mut l = list();
    c.bench_function("seal a 256-task list", |b| {
        b.iter(|| seal(&mut l, &key, "bench-1", 1).expect("seals"))
    });
    c.bench_function("open a 256-task list", |b| {
        b.iter(|| open(&mut l, &keys, "bench-1", None).expect("opens"))
    });
    let mut hb = Heartbeat {
        seq: 9,
        at_ms: 1,
        ..Heartbeat::default()
    };
    c.bench_function("seal a heartbeat", |b| {
        b.iter(|| seal(&mut hb, &key, "bench-1", 1).expect("seals"))
    });
    c.bench_function("open a heartbeat", |b| {
        b.iter(|| open(&mut hb, &keys, "bench-1", None).expect("opens"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
