//! Arena allocate + free (target: 50 ns median) beside the system allocator for the
//! same sizes. `core` is the buddy allocator alone; `shared` adds the mutex and the
//! handle that returns its block on drop (what workers use).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fog_agent::tasks::arena::{Arena, BuddyCore};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc+free");
    for size in [256usize, 1024, 4096, 65_536] {
        let mut core = BuddyCore::new(8 << 20);
        // A few live blocks so the allocator is not trivially empty.
        let _pinned: Vec<_> = (0..16).map(|_| core.alloc(size).expect("fits")).collect();
        group.bench_function(format!("arena core {size} B"), |b| {
            b.iter(|| {
                let (idx, order) = core.alloc(black_box(size)).expect("fits");
                core.free(black_box(idx), order);
            })
        });
        let arena = Arena::new(8 << 20);
        group.bench_function(format!("arena shared {size} B"), |b| {
            b.iter(|| black_box(arena.alloc(black_box(size)).expect("fits")))
        });
        group.bench_function(format!("system allocator {size} B"), |b| {
            b.iter(|| black_box(Vec::<u8>::with_capacity(black_box(size))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
