//! `bench`: submit a load of tasks and count what comes back, closed loop (at most
//! `concurrency` outstanding, the next sent when a result frees room) or open loop (at
//! a fixed rate whatever comes back, the way independent clients arrive).
//!
//! Latency is measured from when a task was due to be sent: in the closed loop that is
//! when it was submitted; in the open loop it is its slot in the schedule, so a client,
//! link or coordinator that falls behind shows up as latency instead of quietly
//! sending later (coordinated omission).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use fog_proto::{Outcome, TaskResult, TaskSubmission};

use super::{random_id, submission, Client, ClientError};

/// What a bench run saw.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub tasks: usize,
    pub completed: usize,
    pub failed: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub elapsed: Duration,
    /// The open loop's target rate, if it ran one.
    pub rate: Option<f64>,
    pub p50: Duration,
    pub p90: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tasks in {:.2}s: {:.0} tasks/s",
            self.tasks,
            self.elapsed.as_secs_f64(),
            self.tasks as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )?;
        match self.rate {
            Some(r) => writeln!(f, " (open loop, {r} tasks/s offered)")?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "completed {}, failed {}, lost {}, duplicated {}",
            self.completed, self.failed, self.lost, self.duplicated
        )?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "latency p50 {:.2} ms, p90 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p95),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// Nearest rank on sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What `bench` submits.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub kind: String,
    pub tasks: usize,
    /// Closed loop: most tasks outstanding at once.
    pub concurrency: usize,
    /// Open loop: submit at this many tasks per second, whatever comes back
    /// (`concurrency` is then not used). Must be finite and above 0.
    pub rate: Option<f64>,
    pub payload_bytes: usize,
    /// Give up on stragglers this long after the last result arrived.
    pub wait: Duration,
    /// Placement strategy for every task; empty for the coordinator's default.
    pub strategy: String,
    /// Show progress on stderr: a bar redrawn in place on a terminal, a line every
    /// few seconds otherwise (a log gets no carriage-return updates).
    pub progress: bool,
}

/// Submit `tasks` tasks, closed or open loop (see [`BenchOptions`]), and wait for every
/// result (giving up on stragglers `wait` after the last result arrived).
pub async fn bench(client: &mut Client, o: &BenchOptions) -> Result<BenchReport, ClientError> {
    let mut run = BenchRun::new(o);
    let started = Instant::now();
    let mut last_result = Instant::now();
    while run.done.len() < o.tasks {
        let batch = match o.rate {
            Some(rate) => run.due(started, rate),
            None => run.refill(),
        };
        if !batch.is_empty() {
            client.submit_many(batch).await?;
            continue;
        }
        let give_up = last_result + o.wait;
        let next_send = o.rate.and_then(|rate| run.next_slot(started, rate));
        let r = tokio::select! {
            r = tokio::time::timeout_at(give_up.into(), client.next_result()) => match r {
                Ok(r) => r?,
                Err(_) => break, // nothing for `wait`: the rest are lost
            },
            // The open loop's next send is due: back to the top to send it.
            () = sleep_until_some(next_send) => continue,
        };
        let Some(r) = r else { continue };
        if matches!(r.outcome, Outcome::Accepted) {
            continue;
        }
        last_result = Instant::now();
        if run.on_final(r) {
            run.progress.update(run.done.len(), o.tasks);
        }
    }
    let elapsed = started.elapsed();
    // Late duplicates: listen briefly for results of ids already answered.
    let linger = Instant::now() + Duration::from_millis(500);
    while let Ok(r) = tokio::time::timeout_at(linger.into(), client.next_result()).await {
        if let Some(r) = r? {
            if !matches!(r.outcome, Outcome::Accepted) && run.done.contains_key(&r.id) {
                run.duplicated += 1;
            }
        }
    }
    run.progress.finish();
    run.latencies.sort();
    let at = |p| percentile(&run.latencies, p);
    Ok(BenchReport {
        tasks: o.tasks,
        completed: run.completed,
        failed: run.failed,
        lost: o.tasks - run.done.len(),
        // Repeats the client library dropped count too: the bench measures the system.
        duplicated: run.duplicated + client.repeats_dropped() as usize,
        elapsed,
        rate: o.rate,
        p50: at(0.50),
        p90: at(0.90),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: run.latencies.last().copied().unwrap_or_default(),
    })
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A bench's tasks and what came back.
struct BenchRun<'a> {
    o: &'a BenchOptions,
    payload: Vec<u8>,
    run: String,
    /// When each task was due: its submission (closed loop) or its slot (open loop).
    sent_at: HashMap<String, Instant>,
    done: HashMap<String, ()>,
    latencies: Vec<Duration>,
    completed: usize,
    failed: usize,
    duplicated: usize,
    next: usize,
    concurrency: usize,
    refill_at: usize,
    progress: Progress,
}

impl<'a> BenchRun<'a> {
    fn new(o: &'a BenchOptions) -> Self {
        // Top the window up only once this much of it is free (or the rest of the tasks
        // fit): a refill per result would send one-task messages, and every message costs
        // the broker, the coordinator and its journal the same whatever it carries. A
        // sixteenth keeps the window at least ~94 % full.
        let concurrency = o.concurrency.max(1);
        BenchRun {
            o,
            payload: (0..o.payload_bytes)
                .map(|i| b'a' + (i % 26) as u8)
                .collect(),
            run: random_id("bench"),
            sent_at: HashMap::with_capacity(o.tasks),
            done: HashMap::with_capacity(o.tasks),
            latencies: Vec::with_capacity(o.tasks),
            completed: 0,
            failed: 0,
            duplicated: 0,
            next: 0,
            concurrency,
            refill_at: (concurrency / 16).clamp(1, fog_proto::message::BATCH_MAX_ITEMS),
            progress: Progress::new(o.progress),
        }
    }

    /// The next task's submission, noted as due at `due`.
    fn take_next(&mut self, due: Instant) -> TaskSubmission {
        let mut sub = submission(
            &self.o.kind,
            self.payload.clone(),
            0,
            Duration::from_secs(60),
            false,
        );
        sub.id = format!("{}-{}", self.run, self.next);
        sub.strategy.clone_from(&self.o.strategy);
        self.sent_at.insert(sub.id.clone(), due);
        self.next += 1;
        sub
    }

    /// Closed loop: the next list of submissions if enough of the window is free,
    /// else an empty one.
    fn refill(&mut self) -> Vec<TaskSubmission> {
        let tasks = self.o.tasks;
        let outstanding = self.sent_at.len() - self.done.len();
        let free = self.concurrency.saturating_sub(outstanding);
        let mut batch = Vec::new();
        if self.next >= tasks || free < self.refill_at.min(tasks - self.next) {
            return batch;
        }
        let now = Instant::now();
        while self.next < tasks
            && self.sent_at.len() - self.done.len() < self.concurrency
            && batch.len() < fog_proto::message::BATCH_MAX_ITEMS
        {
            batch.push(self.take_next(now));
        }
        batch
    }

    /// When the open loop's next task is due at `rate` tasks/s from `started`; None
    /// once every task is sent.
    fn next_slot(&self, started: Instant, rate: f64) -> Option<Instant> {
        (self.next < self.o.tasks)
            .then(|| started + Duration::from_secs_f64(self.next as f64 / rate))
    }

    /// Open loop: every task whose slot has come (in lists of at most
    /// BATCH_MAX_ITEMS), each timed from its slot, not from when it went out.
    fn due(&mut self, started: Instant, rate: f64) -> Vec<TaskSubmission> {
        let now = Instant::now();
        let mut batch = Vec::new();
        while batch.len() < fog_proto::message::BATCH_MAX_ITEMS {
            match self.next_slot(started, rate) {
                Some(slot) if slot <= now => batch.push(self.take_next(slot)),
                _ => break,
            }
        }
        batch
    }

    /// Count a final result; whether it was the first for one of this run's tasks.
    fn on_final(&mut self, r: TaskResult) -> bool {
        let Some(at) = self.sent_at.get(&r.id) else {
            return false;
        };
        let elapsed = at.elapsed();
        if self.done.insert(r.id, ()).is_some() {
            self.duplicated += 1;
            return false;
        }
        self.latencies.push(elapsed);
        match r.outcome {
            Outcome::Completed { .. } => self.completed += 1,
            _ => self.failed += 1,
        }
        true
    }
}

/// Progress on stderr: redrawn in place every 200 ms on a terminal; a plain line every
/// 5 s when stderr is a file or a pipe.
struct Progress {
    mode: Option<bool>,
    last: Instant,
}

impl Progress {
    fn new(wanted: bool) -> Progress {
        Progress {
            mode: wanted.then(|| std::io::stderr().is_terminal()),
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: usize, tasks: usize) {
        let Some(terminal) = self.mode else { return };
        let every = Duration::from_millis(if terminal { 200 } else { 5000 });
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let pct = done * 100 / tasks.max(1);
        let mut err = std::io::stderr();
        let _ = if terminal {
            let bar = "#".repeat(pct / 4) + &"-".repeat(25 - pct / 4);
            write!(err, "\r[{bar}] {pct:3}% {done}/{tasks}")
        } else {
            writeln!(err, "bench: {done}/{tasks} done ({pct}%)")
        };
    }

    fn finish(&self) {
        if self.mode == Some(true) {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(tasks: usize, rate: Option<f64>) -> BenchOptions {
        BenchOptions {
            kind: "echo".into(),
            tasks,
            concurrency: 4,
            rate,
            payload_bytes: 8,
            wait: Duration::from_secs(1),
            strategy: String::new(),
            progress: false,
        }
    }

    #[test]
    fn the_open_loop_sends_by_the_schedule_and_times_each_task_from_its_slot() {
        let o = options(10, Some(100.0));
        let mut run = BenchRun::new(&o);
        let started = Instant::now() - Duration::from_millis(45);
        // 45 ms in at 100 tasks/s: slots 0, 10, 20, 30 and 40 ms have come.
        let batch = run.due(started, 100.0);
        assert_eq!(batch.len(), 5);
        for (i, s) in batch.iter().enumerate() {
            let due = run.sent_at[&s.id];
            assert_eq!(due, started + Duration::from_millis(10 * i as u64));
        }
        assert_eq!(
            run.next_slot(started, 100.0),
            Some(started + Duration::from_millis(50))
        );
        // Nothing more is due until then, however many are outstanding.
        assert!(run.due(started, 100.0).is_empty());
    }

    #[test]
    fn the_open_loop_stops_at_the_task_count() {
        let o = options(3, Some(1000.0));
        let mut run = BenchRun::new(&o);
        let started = Instant::now() - Duration::from_secs(1);
        assert_eq!(run.due(started, 1000.0).len(), 3);
        assert_eq!(run.next_slot(started, 1000.0), None);
    }

    #[test]
    fn the_closed_loop_keeps_the_window_full_and_no_fuller() {
        let o = options(10, None);
        let mut run = BenchRun::new(&o);
        assert_eq!(run.refill().len(), 4);
        assert!(run.refill().is_empty(), "the window is full");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(501));
        assert_eq!(percentile(&sorted, 0.999), Duration::from_millis(999));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
