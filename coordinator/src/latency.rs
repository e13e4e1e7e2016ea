//! The coordinator's own latencies, for `/metrics`: how long a new task waits for its
//! first placement (main loop, [`Histogram`]) and how long a journal group commit takes
//! (the journal's writer thread, [`SharedHistogram`]), and how old heartbeats are when
//! the registry takes them in. Both are finer than the task
//! histograms (a placement or an fsync is usually well under a millisecond).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, seconds (and +Inf): 50 µs to 5 s.
pub const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

fn bucket(secs: f64) -> usize {
    BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BUCKETS.len())
}

/// A non-cumulative histogram over [`BUCKETS`] (the last count is +Inf).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Histogram {
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_secs: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        self.counts[bucket(secs)] += 1;
        self.sum_secs += secs;
        self.count += 1;
    }

    /// `(upper bound, count)` pairs, +Inf last, as the exposition encoder takes them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// A [`Histogram`] written by one thread and read by another, without a lock.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl SharedHistogram {
    pub fn observe(&self, d: Duration) {
        self.counts[bucket(d.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy (each field read on its own: a scrape may see one observation in the
    /// count and not yet in a bucket, which Prometheus tolerates).
    pub fn snapshot(&self) -> Histogram {
        let mut h = Histogram::default();
        for (to, from) in h.counts.iter_mut().zip(&self.counts) {
            *to = from.load(Ordering::Relaxed);
        }
        h.sum_secs = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        h.count = self.count.load(Ordering::Relaxed);
        h
    }
}

/// What one turn of the coordinator's main loop handled: each has its own histogram
/// of how long the turn took (a slow kind of turn delays every message behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// A node's status, heartbeat or reading, into the registry.
    NodeMessage,
    /// A submission or a node's results, into the dispatcher.
    TaskMessage,
    /// Connected, subscribed, disconnected.
    Link,
    /// The journal said something is durable.
    Durable,
    /// The silence rules (every 100 ms).
    Liveness,
    /// Retries, timeouts and re-placement while tasks are in flight.
    Dispatch,
    /// The retained status (and the view with it).
    Publish,
    /// The in-process view: HTTP API, /metrics, charts, Home Assistant.
    View,
    /// A command from the HTTP API.
    Command,
    /// Batched assignments and answers out to the broker.
    Flush,
}

impl Turn {
    pub const ALL: [Turn; 10] = [
        Turn::NodeMessage,
        Turn::TaskMessage,
        Turn::Link,
        Turn::Durable,
        Turn::Liveness,
        Turn::Dispatch,
        Turn::Publish,
        Turn::View,
        Turn::Command,
        Turn::Flush,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Turn::NodeMessage => "node_message",
            Turn::TaskMessage => "task_message",
            Turn::Link => "link",
            Turn::Durable => "durable",
            Turn::Liveness => "liveness",
            Turn::Dispatch => "dispatch",
            Turn::Publish => "publish",
            Turn::View => "view",
            Turn::Command => "command",
            Turn::Flush => "flush",
        }
    }
}

/// One [`Histogram`] per kind of [`Turn`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Turns([Histogram; Turn::ALL.len()]);

impl Turns {
    pub fn observe(&mut self, turn: Turn, d: Duration) {
        self.0[turn as usize].observe(d);
    }

    pub fn get(&self, turn: Turn) -> &Histogram {
        &self.0[turn as usize]
    }
}

/// What `/metrics` shows of them, copied into each view.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latencies {
    /// From a task's acceptance (or its restoring after a restart) to its first
    /// assignment to a node.
    pub placement: Histogram,
    /// One journal group commit (write and fsync); `None` without a journal.
    pub journal_commit: Option<Histogram>,
    /// A heartbeat's age when the registry took it in (the node's clock offset
    /// included: meaningful where nodes keep time, as timesyncd does).
    pub heartbeat_age: Histogram,
    /// The main loop's turns, by what they handled.
    pub turns: Turns,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(9));
        assert_eq!(h.count, 4);
        assert_eq!(
            h.counts[0], 2,
            "50 µs is in the 50 µs bucket (le is inclusive)"
        );
        assert_eq!(h.counts[4], 1, "700 µs: the 1 ms bucket");
        assert_eq!(h.counts[BUCKETS.len()], 1, "9 s: +Inf");
        assert!((h.sum_secs - 9.00079).abs() < 1e-9);
        let b = h.buckets();
        assert_eq!(b.len(), BUCKETS.len() + 1);
        assert!(b.last().is_some_and(|(le, n)| le.is_infinite() && *n == 1));
    }

    #[test]
    fn the_shared_one_reads_the_same() {
        let s = SharedHistogram::default();
        let mut h = Histogram::default();
        for us in [10, 300, 2_000, 80_000] {
            s.observe(Duration::from_micros(us));
            h.observe(Duration::from_micros(us));
        }
        let got = s.snapshot();
        assert_eq!(got.counts, h.counts);
        assert_eq!(got.count, 4);
        assert!((got.sum_secs - h.sum_secs).abs() < 1e-9);
    }

    #[test]
    fn each_kind_of_turn_has_its_own_histogram() {
        let mut t = Turns::default();
        t.observe(Turn::View, Duration::from_millis(30));
        t.observe(Turn::NodeMessage, Duration::from_micros(20));
        t.observe(Turn::NodeMessage, Duration::from_micros(30));
        assert_eq!(t.get(Turn::View).count, 1);
        assert_eq!(t.get(Turn::NodeMessage).count, 2);
        assert_eq!(t.get(Turn::Flush).count, 0);
        for (i, turn) in Turn::ALL.iter().enumerate() {
            assert_eq!(*turn as usize, i, "ALL is in declaration order");
        }
    }
}
