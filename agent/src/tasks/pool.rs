//! The worker pool: a fixed number of worker threads fed by a bounded queue ordered by
//! priority (high first), then deadline (soonest first, none last), then arrival.
//!
//! Submitting never waits: a full queue answers [`Busy`] at once, so the agent can tell
//! the coordinator to place the task elsewhere. Workers are OS threads, so CPU-bound
//! built-ins and blocking command runs never stall the async reactor. Results go back
//! over a bounded channel whose capacity (queue + workers) means a worker never waits
//! on it in practice.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::arena::Arena;
use super::builtin;
use super::exec::{self, Exit};
use super::job::{Job, JobOutcome, JobResult, Kind};

/// The queue is full.
#[derive(Debug)]
pub struct Busy(pub Job);

struct Queued {
    job: Job,
    seq: u64,
}

impl Queued {
    fn deadline(&self) -> u64 {
        if self.job.deadline_ms == 0 {
            u64::MAX
        } else {
            self.job.deadline_ms
        }
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// The max-heap pops the greatest: highest priority, then earliest deadline, then
    /// earliest arrival.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.job
            .priority
            .cmp(&other.job.priority)
            .then_with(|| other.deadline().cmp(&self.deadline()))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct Shared {
    queue: Mutex<(BinaryHeap<Queued>, u64)>,
    ready: Condvar,
    capacity: usize,
    running: AtomicU32,
    closed: AtomicBool,
    /// Kill running commands and wake sleepers (shutdown after the grace period).
    cancel: AtomicBool,
    arena: Arc<Arena>,
    completed: AtomicU64,
    /// Jobs that panicked in a row (any worker); reset by a job that returns.
    panics_in_row: AtomicU32,
    panics_total: AtomicU64,
}

/// Queue depth and worker use, for heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolLoad {
    pub queued: u32,
    pub running: u32,
    pub free_slots: u32,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// The sha256 of kind and payload: the content cache key.
pub fn cache_key(kind: &str, payload: &[u8]) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(&(kind.len() as u32).to_le_bytes());
    h.update(kind.as_bytes());
    h.update(payload);
    let mut key = [0u8; 32];
    key.copy_from_slice(h.finish().as_ref());
    key
}

impl Pool {
    /// Start `workers` threads. Results are sent on `results`.
    pub fn start(
        workers: usize,
        capacity: usize,
        arena: Arc<Arena>,
        results: tokio::sync::mpsc::Sender<JobResult>,
    ) -> Pool {
        let shared = Arc::new(Shared {
            queue: Mutex::new((BinaryHeap::with_capacity(capacity), 0)),
            ready: Condvar::new(),
            capacity,
            running: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            arena,
            completed: AtomicU64::new(0),
            panics_in_row: AtomicU32::new(0),
            panics_total: AtomicU64::new(0),
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let shared = shared.clone();
                let results = results.clone();
                std::thread::Builder::new()
                    .name(format!("fog-worker-{i}"))
                    .spawn(move || worker(shared, results))
                    .expect("spawning a worker thread at start")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Queue a job, or hand it back at once if the queue is full or closed.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.0.len() >= self.shared.capacity || self.shared.closed.load(Ordering::Relaxed) {
            return Err(Busy(job));
        }
        q.1 += 1;
        let seq = q.1;
        q.0.push(Queued { job, seq });
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Whether jobs keep panicking (supervision reports the pool as degraded).
    pub fn degraded(&self) -> bool {
        self.shared.panics_in_row.load(Ordering::Relaxed) >= crate::supervise::DEGRADED_AFTER
    }

    pub fn panics_total(&self) -> u64 {
        self.shared.panics_total.load(Ordering::Relaxed)
    }

    pub fn load(&self) -> PoolLoad {
        let queued = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .len() as u32;
        let running = self.shared.running.load(Ordering::Relaxed);
        PoolLoad {
            queued,
            running,
            free_slots: (self.workers.len() as u32).saturating_sub(running),
        }
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn completed_total(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }

    /// Stop taking jobs; queued ones are handed back (to be reported as retryable).
    pub fn close(&self) -> Vec<Job> {
        self.shared.closed.store(true, Ordering::Relaxed);
        let drained: Vec<Job> = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut q.0)
                .into_iter()
                .map(|q| q.job)
                .collect()
        };
        self.shared.ready.notify_all();
        drained
    }

    /// Kill running commands and wake sleeping built-ins.
    pub fn cancel_running(&self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
    }

    /// Close, then wait for the workers to finish what they run.
    pub fn join(mut self) {
        self.close();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
    }
}

fn worker(shared: Arc<Shared>, results: tokio::sync::mpsc::Sender<JobResult>) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(next) = q.0.pop() {
                    // Counted as running before the lock is released, so load() never
                    // sees a job in neither place.
                    shared.running.fetch_add(1, Ordering::Relaxed);
                    break next.job;
                }
                if shared.closed.load(Ordering::Relaxed) {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let (id, attempt, kind) = (job.id.clone(), job.attempt, job.kind.name().to_owned());
        let started = Instant::now();
        // A panicking job is a bug, but it must not cost the node a worker or leave
        // its task unanswered: answer it as a retryable failure (the coordinator
        // places it elsewhere) and back off before the next job, as supervision does.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(&shared, job)
        })) {
            Ok(r) => {
                shared.panics_in_row.store(0, Ordering::Relaxed);
                r
            }
            Err(p) => {
                let n = shared.panics_in_row.fetch_add(1, Ordering::Relaxed) + 1;
                shared.panics_total.fetch_add(1, Ordering::Relaxed);
                let error = crate::supervise::panic_message(&*p);
                tracing::error!(task.id = %id, task.kind = %kind, %error, panics_in_row = n, "task worker panicked");
                std::thread::sleep(crate::supervise::delay(n));
                JobResult {
                    id,
                    attempt,
                    kind,
                    cacheable: false,
                    cache_key: [0; 32],
                    outcome: JobOutcome::Failed {
                        error: format!("the worker {error}"),
                        retryable: true,
                        exit_code: None,
                        duration: started.elapsed(),
                    },
                }
            }
        };
        shared.running.fetch_sub(1, Ordering::Relaxed);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        if results.blocking_send(result).is_err() {
            return; // the agent is gone
        }
    }
}

fn run_job(shared: &Shared, job: Job) -> JobResult {
    let started = Instant::now();
    let cache_key = if job.cacheable {
        cache_key(job.kind.name(), job.payload.as_slice())
    } else {
        [0; 32]
    };
    let kind_name = job.kind.name().to_owned();
    let outcome = match &job.kind {
        Kind::Echo => builtin::echo(job.payload, started),
        Kind::Sha256 => builtin::sha256(&shared.arena, job.payload.as_slice(), started),
        Kind::Sleep => builtin::sleep(job.payload, job.timeout, &shared.cancel, started),
        Kind::Command { spec, .. } => run_command(
            shared,
            spec,
            &job.payload,
            job.timeout.min(spec.timeout),
            started,
        ),
    };
    JobResult {
        id: job.id,
        attempt: job.attempt,
        kind: kind_name,
        cacheable: job.cacheable,
        cache_key,
        outcome,
    }
}

fn run_command(
    shared: &Shared,
    spec: &exec::CommandSpec,
    payload: &super::arena::Block,
    timeout: std::time::Duration,
    started: Instant,
) -> JobOutcome {
    let mut out = match shared.arena.alloc(spec.max_output_bytes) {
        Ok(b) => b,
        Err(e) => {
            return JobOutcome::Failed {
                error: format!("busy: no room for the output: {e}"),
                retryable: true,
                exit_code: None,
                duration: started.elapsed(),
            }
        }
    };
    let spec = exec::CommandSpec {
        timeout,
        ..spec.clone()
    };
    match exec::run(
        &spec,
        payload.as_slice(),
        out.as_mut_slice(),
        &shared.cancel,
    ) {
        Err(e) => JobOutcome::Failed {
            error: e.to_string(),
            retryable: false,
            exit_code: None,
            duration: started.elapsed(),
        },
        Ok(o) => match o.exit {
            Exit::Code(0) => {
                out.set_len(o.stdout_len);
                JobOutcome::Completed {
                    output: out,
                    truncated: o.truncated,
                    exit_code: Some(0),
                    duration: o.wall,
                    cpu: o.cpu,
                    peak_rss_bytes: o.peak_rss_bytes,
                }
            }
            Exit::Code(code) => JobOutcome::Failed {
                error: format!("exit status {code}: {}", o.stderr_tail),
                retryable: false,
                exit_code: Some(code),
                duration: o.wall,
            },
            Exit::Signal(sig) => JobOutcome::Failed {
                error: format!(
                    "killed by {} ({sig}): {}",
                    exec::signal_name(sig),
                    o.stderr_tail
                ),
                retryable: false,
                exit_code: None,
                duration: o.wall,
            },
            Exit::TimedOut => JobOutcome::TimedOut { after: o.wall },
            Exit::Cancelled => JobOutcome::Failed {
                error: "cancelled: the agent is shutting down".into(),
                retryable: true,
                exit_code: None,
                duration: o.wall,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(
        arena: &Arc<Arena>,
        id: &str,
        kind: Kind,
        payload: &[u8],
        priority: u8,
        deadline_ms: u64,
    ) -> Job {
        let mut b = arena.alloc(payload.len()).expect("fits");
        b.as_mut_slice().copy_from_slice(payload);
        Job {
            id: id.into(),
            attempt: 1,
            kind,
            payload: b,
            timeout: Duration::from_secs(5),
            priority,
            deadline_ms,
            cacheable: false,
        }
    }

    #[test]
    fn order_is_priority_then_deadline_then_arrival() {
        let arena = Arena::new(1 << 16);
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        // One worker, blocked on a sleep while the others queue up.
        let pool = Pool::start(1, 16, arena.clone(), tx);
        pool.submit(job(&arena, "blocker", Kind::Sleep, b"100", 0, 0))
            .expect("queued");
        std::thread::sleep(Duration::from_millis(20));
        for (id, prio, deadline) in [
            ("a", 0, 0),
            ("b", 5, 0),
            ("c", 5, 2000),
            ("d", 5, 1000),
            ("e", 0, 0),
            ("f", 9, 0),
        ] {
            pool.submit(job(&arena, id, Kind::Echo, b"x", prio, deadline))
                .expect("queued");
        }
        assert_eq!(pool.load().queued, 6);
        let order: Vec<String> = (0..7)
            .map(|_| rx.blocking_recv().expect("result").id)
            .collect();
        assert_eq!(order, ["blocker", "f", "d", "c", "b", "a", "e"]);
        pool.join();
    }

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        let arena = Arena::new(1 << 16);
        let (tx, _rx) = tokio::sync::mpsc::channel(64);
        let pool = Pool::start(1, 2, arena.clone(), tx);
        pool.submit(job(&arena, "run", Kind::Sleep, b"200", 0, 0))
            .expect("queued");
        std::thread::sleep(Duration::from_millis(20));
        pool.submit(job(&arena, "q1", Kind::Echo, b"x", 0, 0))
            .expect("queued");
        pool.submit(job(&arena, "q2", Kind::Echo, b"x", 0, 0))
            .expect("queued");
        let t = Instant::now();
        let Busy(back) = pool
            .submit(job(&arena, "q3", Kind::Echo, b"x", 0, 0))
            .expect_err("full");
        assert!(t.elapsed() < Duration::from_millis(50));
        assert_eq!(back.id, "q3");
        assert_eq!(
            pool.load(),
            PoolLoad {
                queued: 2,
                running: 1,
                free_slots: 0
            }
        );
        pool.cancel_running();
        pool.join();
    }

    #[test]
    fn every_payload_byte_returns_to_the_arena() {
        let arena = Arena::new(1 << 20);
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let pool = Pool::start(2, 200, arena.clone(), tx);
        for i in 0..200 {
            let kind = if i % 2 == 0 { Kind::Sha256 } else { Kind::Echo };
            pool.submit(job(&arena, &format!("t{i}"), kind, &[i as u8; 1000], 0, 0))
                .expect("queued");
        }
        let results: Vec<JobResult> = (0..200)
            .map(|_| rx.blocking_recv().expect("result"))
            .collect();
        assert!(results
            .iter()
            .all(|r| matches!(r.outcome, JobOutcome::Completed { .. })));
        drop(results);
        pool.join();
        assert_eq!(arena.stats().used_bytes, 0);
        assert_eq!(
            arena.free_and_largest(),
            (arena.capacity_bytes(), arena.capacity_bytes())
        );
    }
}
