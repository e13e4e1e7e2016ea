//! Task profiles (the seed system's profiler, for fog's tasks): what each task kind
//! costs, on each node, over the last hour, and what stands out.
//!
//! The dispatcher hands every final result over as a [`TaskSample`] (see
//! `Dispatcher::take_finished`); the main loop moves them here once a second, and
//! readers (the HTTP API, `/metrics`, the console, `fog-coordinator report`) compute
//! summaries on demand. Bounded: per kind the last [`PER_KIND`] samples, per kind and
//! node the last [`PER_NODE`], none older than an hour (about 13 MB for 1,000 nodes
//! running 5 kinds each); counters and histograms since start are a few numbers per
//! kind.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fog_proto::{NodeSummary, Outcome};
use serde::Serialize;

/// Samples kept per kind, and per kind and node.
pub const PER_KIND: usize = 4096;
pub const PER_NODE: usize = 128;
/// The window of every profile.
pub const WINDOW_MS: u64 = 3_600_000;
/// "Recent", for a kind whose p95 is rising: the last five minutes against the hour.
pub const RECENT_MS: u64 = 300_000;
/// Distinct task kinds profiled, at most: kind names come from submissions, and each
/// costs memory and series. Kinds past this are counted together as `other`.
pub const MAX_KINDS: usize = 256;
/// The name those are counted under.
pub const OTHER_KIND: &str = "other";

/// Upper bounds of the duration histograms, seconds (and +Inf).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Completed,
    Failed,
    TimedOut,
    Rejected,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Failed => "failed",
            Ended::TimedOut => "timed_out",
            Ended::Rejected => "rejected",
        }
    }
}

/// One finished task, as the dispatcher saw it end.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSample {
    pub kind: String,
    pub node: String,
    /// When it ended (ms since the epoch).
    pub at_ms: u64,
    /// From submission to its result at the coordinator.
    pub latency_ms: u64,
    pub ended: Ended,
    /// What the agent measured running it (0 where it did not say).
    pub duration_ms: u64,
    pub cpu_ms: u64,
    pub peak_rss_bytes: u64,
    pub from_cache: bool,
}

impl TaskSample {
    /// `None` for outcomes that are not an end (`Accepted`).
    pub fn new(
        kind: &str,
        node: &str,
        outcome: &Outcome,
        submitted_ms: u64,
        at_ms: u64,
    ) -> Option<Self> {
        let (ended, duration_ms, cpu_ms, peak_rss_bytes, from_cache) = match outcome {
            Outcome::Accepted => return None,
            Outcome::Completed {
                duration_ms,
                cpu_ms,
                peak_rss_bytes,
                from_cache,
                ..
            } => (
                Ended::Completed,
                *duration_ms,
                *cpu_ms,
                *peak_rss_bytes,
                *from_cache,
            ),
            Outcome::Failed { duration_ms, .. } => (Ended::Failed, *duration_ms, 0, 0, false),
            Outcome::TimedOut { after_ms } => (Ended::TimedOut, *after_ms, 0, 0, false),
            Outcome::Rejected { .. } => (Ended::Rejected, 0, 0, 0, false),
        };
        Some(TaskSample {
            kind: kind.to_owned(),
            node: node.to_owned(),
            at_ms,
            latency_ms: at_ms.saturating_sub(submitted_ms),
            ended,
            duration_ms,
            cpu_ms,
            peak_rss_bytes,
            from_cache,
        })
    }
}

/// What is kept of a sample in a window (20 bytes).
#[derive(Debug, Clone, Copy)]
struct Point {
    at_s: u32,
    duration_ms: u32,
    cpu_ms: u32,
    rss_kib: u32,
    ended: Ended,
    from_cache: bool,
}

/// A non-cumulative histogram: a count per bucket of [`BUCKETS`] and one for +Inf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_secs: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum_secs += secs;
        self.count += 1;
    }
}

/// Since start, per kind: counts by outcome, run time and latency histograms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindTotals {
    pub ended: BTreeMap<Ended, u64>,
    pub duration: Histogram,
    pub latency: Histogram,
}

#[derive(Debug, Default)]
pub struct Profiles {
    kinds: HashMap<String, VecDeque<Point>>,
    nodes: HashMap<(String, String), VecDeque<Point>>,
    totals: BTreeMap<String, KindTotals>,
}

fn push(ring: &mut VecDeque<Point>, p: Point, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(p);
}

fn clamp(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Profiles {
    /// `kind`, or [`OTHER_KIND`] once [`MAX_KINDS`] others are profiled.
    fn kind_name<'a>(&self, kind: &'a str) -> &'a str {
        if self.totals.contains_key(kind) || self.totals.len() < MAX_KINDS {
            kind
        } else {
            OTHER_KIND
        }
    }

    pub fn record(&mut self, s: &TaskSample) {
        let kind = self.kind_name(&s.kind).to_owned();
        let p = Point {
            at_s: clamp(s.at_ms / 1000),
            duration_ms: clamp(s.duration_ms),
            cpu_ms: clamp(s.cpu_ms),
            rss_kib: clamp(s.peak_rss_bytes / 1024),
            ended: s.ended,
            from_cache: s.from_cache,
        };
        push(self.kinds.entry(kind.clone()).or_default(), p, PER_KIND);
        if !s.node.is_empty() {
            push(
                self.nodes
                    .entry((kind.clone(), s.node.clone()))
                    .or_default(),
                p,
                PER_NODE,
            );
        }
        let t = self.totals.entry(kind).or_default();
        *t.ended.entry(s.ended).or_default() += 1;
        if s.ended != Ended::Rejected {
            t.duration.observe(s.duration_ms as f64 / 1000.0);
        }
        t.latency.observe(s.latency_ms as f64 / 1000.0);
    }

    /// Drop what is older than the window (called once a second).
    pub fn expire(&mut self, now_ms: u64) {
        let oldest = clamp(now_ms.saturating_sub(WINDOW_MS) / 1000);
        for ring in self.kinds.values_mut().chain(self.nodes.values_mut()) {
            while ring.front().is_some_and(|p| p.at_s < oldest) {
                ring.pop_front();
            }
        }
        self.nodes.retain(|_, r| !r.is_empty());
        self.kinds.retain(|_, r| !r.is_empty());
    }

    /// Counts and histograms since start, by kind (for `/metrics`).
    pub fn totals(&self) -> &BTreeMap<String, KindTotals> {
        &self.totals
    }

    /// Every profile of the window ending at `now_ms`, and the bottlenecks among them
    /// and among `nodes`.
    pub fn report(&self, now_ms: u64, nodes: &[NodeSummary]) -> Report {
        self.report_over(now_ms, nodes, WINDOW_MS)
    }

    /// [`Profiles::report`] over the last `window_ms` (at most the hour kept).
    pub fn report_over(&self, now_ms: u64, nodes: &[NodeSummary], window_ms: u64) -> Report {
        let window_ms = window_ms.min(WINDOW_MS);
        let mut kinds: Vec<Profile> = self
            .kinds
            .iter()
            .filter_map(|(k, r)| profile(k, None, r, now_ms, window_ms))
            .collect();
        kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
        let mut per_node: Vec<Profile> = self
            .nodes
            .iter()
            .filter_map(|((k, n), r)| profile(k, Some(n), r, now_ms, window_ms))
            .collect();
        per_node.sort_by(|a, b| (&a.kind, &a.node).cmp(&(&b.kind, &b.node)));
        let bottlenecks = bottlenecks(&kinds, &per_node, nodes);
        Report {
            at_ms: now_ms,
            window_secs: window_ms / 1000,
            kinds,
            nodes: per_node,
            bottlenecks,
        }
    }
}

/// One kind's (or one kind on one node's) last hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub count: usize,
    pub p50_ms: u32,
    pub p95_ms: u32,
    pub p99_ms: u32,
    /// p95 of the last five minutes, and of the rest of the hour before them (`None`
    /// with fewer than 20 samples in either).
    pub recent_p95_ms: Option<u32>,
    pub earlier_p95_ms: Option<u32>,
    pub mean_cpu_ms: f64,
    pub max_peak_rss_bytes: u64,
    pub failure_rate: f64,
    pub timeout_rate: f64,
    pub cache_hit_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bottleneck {
    /// `node_saturated`, `p95_rising` or `slow_node`.
    pub what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub at_ms: u64,
    pub window_secs: u64,
    pub kinds: Vec<Profile>,
    pub nodes: Vec<Profile>,
    pub bottlenecks: Vec<Bottleneck>,
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn profile(
    kind: &str,
    node: Option<&String>,
    ring: &VecDeque<Point>,
    now_ms: u64,
    window_ms: u64,
) -> Option<Profile> {
    let oldest = clamp(now_ms.saturating_sub(window_ms) / 1000);
    let recent_from = clamp(now_ms.saturating_sub(RECENT_MS) / 1000);
    let window: Vec<&Point> = ring.iter().filter(|p| p.at_s >= oldest).collect();
    if window.is_empty() {
        return None;
    }
    // Run times of the tasks that ran (a rejection never started).
    let mut ran: Vec<u32> = window
        .iter()
        .filter(|p| p.ended != Ended::Rejected)
        .map(|p| p.duration_ms)
        .collect();
    ran.sort_unstable();
    let (mut recent, mut earlier): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for p in window.iter().filter(|p| p.ended != Ended::Rejected) {
        if p.at_s >= recent_from {
            recent.push(p.duration_ms);
        } else {
            earlier.push(p.duration_ms);
        }
    }
    recent.sort_unstable();
    earlier.sort_unstable();
    let n = window.len() as f64;
    let share = |f: &dyn Fn(&Point) -> bool| window.iter().filter(|p| f(p)).count() as f64 / n;
    let completed: Vec<&&Point> = window
        .iter()
        .filter(|p| p.ended == Ended::Completed)
        .collect();
    Some(Profile {
        kind: kind.to_owned(),
        node: node.cloned(),
        count: window.len(),
        p50_ms: percentile(&ran, 0.50),
        p95_ms: percentile(&ran, 0.95),
        p99_ms: percentile(&ran, 0.99),
        recent_p95_ms: (recent.len() >= 20).then(|| percentile(&recent, 0.95)),
        earlier_p95_ms: (earlier.len() >= 20).then(|| percentile(&earlier, 0.95)),
        mean_cpu_ms: if completed.is_empty() {
            0.0
        } else {
            completed.iter().map(|p| f64::from(p.cpu_ms)).sum::<f64>() / completed.len() as f64
        },
        max_peak_rss_bytes: window
            .iter()
            .map(|p| u64::from(p.rss_kib) * 1024)
            .max()
            .unwrap_or(0),
        failure_rate: share(&|p| p.ended == Ended::Failed),
        timeout_rate: share(&|p| p.ended == Ended::TimedOut),
        cache_hit_rate: if completed.is_empty() {
            0.0
        } else {
            completed.iter().filter(|p| p.from_cache).count() as f64 / completed.len() as f64
        },
    })
}

/// CPU or memory above this is a saturated node.
pub const SATURATED_PCT: f32 = 90.0;

/// What stands out: saturated nodes, kinds getting slower, nodes slower than their
/// peers at the same kind.
fn bottlenecks(kinds: &[Profile], per_node: &[Profile], nodes: &[NodeSummary]) -> Vec<Bottleneck> {
    let mut out = Vec::new();
    for n in nodes
        .iter()
        .filter(|n| n.state == fog_proto::NodeState::Online)
    {
        // One flag a node (CPU, memory or both), so its series is one series.
        let hot: Vec<String> = [("CPU", n.cpu_pct), ("memory", n.mem_pct)]
            .into_iter()
            .filter_map(|(what, v)| {
                v.filter(|v| *v >= SATURATED_PCT)
                    .map(|v| format!("{what} at {v:.0}%"))
            })
            .collect();
        if !hot.is_empty() {
            out.push(Bottleneck {
                what: "node_saturated",
                kind: None,
                node: Some(n.node.to_string()),
                detail: format!("{} (at or above {SATURATED_PCT:.0}%)", hot.join(", ")),
            });
        }
    }
    for k in kinds {
        if let (Some(recent), Some(earlier)) = (k.recent_p95_ms, k.earlier_p95_ms) {
            if f64::from(recent) > 1.5 * f64::from(earlier.max(1)) {
                out.push(Bottleneck {
                    what: "p95_rising",
                    kind: Some(k.kind.clone()),
                    node: None,
                    detail: format!(
                        "p95 {recent} ms in the last 5 min against {earlier} ms earlier in the hour"
                    ),
                });
            }
        }
    }
    // A node whose median run time of a kind is over twice its peers' median.
    let mut by_kind: BTreeMap<&str, Vec<&Profile>> = BTreeMap::new();
    for p in per_node.iter().filter(|p| p.count >= 10) {
        by_kind.entry(&p.kind).or_default().push(p);
    }
    for (kind, ps) in by_kind.into_iter().filter(|(_, ps)| ps.len() >= 2) {
        for p in &ps {
            let mut peers: Vec<u32> = ps
                .iter()
                .filter(|q| q.node != p.node)
                .map(|q| q.p50_ms)
                .collect();
            peers.sort_unstable();
            let peer = percentile(&peers, 0.5);
            if u64::from(p.p50_ms) > 2 * u64::from(peer.max(1)) {
                out.push(Bottleneck {
                    what: "slow_node",
                    kind: Some(kind.to_owned()),
                    node: p.node.clone(),
                    detail: format!(
                        "p50 {} ms at {kind} against {peer} ms on its peers",
                        p.p50_ms
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
