//! The in-process worker pool running `sha256` on 1 KiB payloads (target: 200,000
//! tasks per second on this 2-core machine), and heap allocations per task counted by
//! a counting global allocator (printed once before the timing runs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fog_agent::tasks::arena::Arena;
use fog_agent::tasks::job::{Job, Kind};
use fog_agent::tasks::pool::Pool;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 10_000;

/// Submit BATCH tasks (keeping the queue fed) and wait for every result.
fn run_batch(
    pool: &Pool,
    arena: &std::sync::Arc<Arena>,
    rx: &mut tokio::sync::mpsc::Receiver<fog_agent::tasks::job::JobResult>,
    ids: &[String],
) {
    let payload = [7u8; 1024];
    let mut sent = 0;
    let mut got = 0;
    while got < BATCH {
        while sent < BATCH {
            let mut block = match arena.alloc(payload.len()) {
                Ok(b) => b,
                Err(_) => break,
            };
            block.as_mut_slice().copy_from_slice(&payload);
            let job = Job {
                id: ids[sent].clone(),
                attempt: 1,
                kind: Kind::Sha256,
                payload: block,
                timeout: Duration::from_secs(10),
                priority: 0,
                deadline_ms: 0,
                cacheable: false,
            };
            if pool.submit(job).is_err() {
                break;
            }
            sent += 1;
        }
        // Drain what is ready, blocking for at least one.
        if rx.blocking_recv().is_some() {
            got += 1;
        }
        while let Ok(_r) = rx.try_recv() {
            got += 1;
        }
    }
}

fn bench(c: &mut Criterion) {
    let arena = Arena::new(8 << 20);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = Pool::start(workers, 2048, arena.clone(), tx);
    let ids: Vec<String> = (0..BATCH).map(|i| format!("task-{i:08}")).collect();

    run_batch(&pool, &arena, &mut rx, &ids); // warm up
    let before = ALLOCS.load(Ordering::Relaxed);
    run_batch(&pool, &arena, &mut rx, &ids);
    let per_task = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / BATCH as f64;
    println!("heap allocations per task (sha256, 1 KiB, pool path incl. id clone): {per_task:.2}");

    let mut g = c.benchmark_group("worker pool");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.bench_function(format!("sha256 1 KiB x {BATCH}, {workers} workers"), |b| {
        b.iter(|| run_batch(&pool, &arena, &mut rx, &ids))
    });
    g.finish();
    pool.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
