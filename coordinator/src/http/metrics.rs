//! `GET /metrics`: the fleet in the Prometheus text format (docs/metrics.md), with
//! the `prometheus-client` crate's encoder.
//!
//! Rendered from the snapshot at scrape time through a collector, not from gauges
//! kept up to date: a node that leaves the snapshot (forgotten, or silent for longer
//! than [`FORGET_SERIES_AFTER`]) leaves the output with it, and an offline node's
//! readings (old figures, not "now") are not exported at all. Names and base units
//! follow node_exporter's (`fog_node_load1` for `node_load1`, bytes, seconds, ratios
//! from 0 to 1, celsius), so its dashboards translate.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use fog_proto::{NodeState, NodeSummary, Reading};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use smallvec::{smallvec, SmallVec};

use super::Shared;
use crate::profiles::{Histogram, KindTotals, Report, BUCKETS};
use crate::view::{JournalHealth, View};

/// A node silent for this long has no series at all (until it is heard from again).
pub const FORGET_SERIES_AFTER: Duration = Duration::from_secs(3600);

pub async fn handler(State(s): State<Arc<Shared>>) -> Response {
    let body = render(&s.view(), fog_rt::clock::now_ms());
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

/// The exposition for `view` as of `now_ms`.
pub fn render(view: &Arc<View>, now_ms: u64) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fleet {
        view: view.clone(),
        now_ms,
    }));
    // About 3.2 KB a node (a Pi's reading: two filesystems, three interfaces): one
    // allocation, not a dozen growing copies of a 3 MB string.
    let mut out = String::with_capacity(64 * 1024 + 3_300 * view.nodes.len());
    // Writing into a String does not fail, and our collector returns only the
    // writer's errors.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Fleet {
    view: Arc<View>,
    now_ms: u64,
}

impl Collector for Fleet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copied out, so the lock is not held while encoding (the main loop only
        // tries it, but a scrape should not cost it its profile samples). Declared
        // before the families, which borrow their labels from them.
        let (totals, report) = {
            let p = self.view.profiles();
            (p.totals().clone(), p.report(self.now_ms, &self.view.nodes))
        };
        let mut f = Families {
            per_family: self.view.nodes.len().max(4),
            ..Families::default()
        };
        coordinator_series(&mut f, &self.view);
        task_series(&mut f, &totals, &report);
        let forget_ms = FORGET_SERIES_AFTER.as_millis() as u64;
        for n in &self.view.nodes {
            if n.last_seen_ms.saturating_add(forget_ms) < self.now_ms {
                continue;
            }
            node_series(&mut f, n);
            let reading = self
                .view
                .details
                .get(&n.node)
                .and_then(|d| d.reading.as_deref());
            if let (Some(r), false) = (reading, n.state == NodeState::Offline) {
                reading_series(&mut f, n.node.as_str(), r);
            }
        }
        f.write(&mut encoder)
    }
}

/// A sample's labels: up to two inline (most have one or two; a 1,000-node scrape has
/// 50,000 samples, and an allocation each was a tenth of the time).
type Labels<'a> = SmallVec<[(&'static str, &'a str); 2]>;

enum Value {
    Gauge(f64),
    Counter(f64),
    /// Non-cumulative bucket counts (the encoder sums them), sum, count.
    Histogram(Vec<(f64, u64)>, f64, u64),
}

struct Family<'a> {
    name: Cow<'a, str>,
    help: Cow<'a, str>,
    samples: Vec<(Labels<'a>, Value)>,
}

/// Samples grouped by metric name (the format wants each family in one block), in
/// the order the names first appear.
#[derive(Default)]
struct Families<'a> {
    list: Vec<Family<'a>>,
    index: HashMap<Cow<'a, str>, usize>,
    /// The family the last sample went to.
    last: usize,
    /// Samples a family is made room for: one per node (growing a vector of
    /// thousands by doubling was a fifth of the time, in copies).
    per_family: usize,
}

impl<'a> Families<'a> {
    fn push(
        &mut self,
        name: impl Into<Cow<'a, str>>,
        help: impl Into<Cow<'a, str>>,
        labels: Labels<'a>,
        v: Value,
    ) {
        let name = name.into();
        // Families come in the same order for every node: the next one is almost
        // always the one after the last, and comparing a name is cheaper than hashing it.
        let guess = self.last + 1;
        let i = if self.list.get(guess).is_some_and(|f| f.name == name) {
            guess
        } else if self.list.get(self.last).is_some_and(|f| f.name == name) {
            self.last
        } else {
            self.lookup(name, help)
        };
        self.last = i;
        self.list[i].samples.push((labels, v));
    }

    fn lookup(&mut self, name: Cow<'a, str>, help: impl Into<Cow<'a, str>>) -> usize {
        match self.index.get(&name) {
            Some(i) => *i,
            None => {
                self.list.push(Family {
                    name: name.clone(),
                    help: help.into(),
                    samples: Vec::with_capacity(self.per_family),
                });
                self.index.insert(name, self.list.len() - 1);
                self.list.len() - 1
            }
        }
    }

    fn gauge(
        &mut self,
        name: impl Into<Cow<'a, str>>,
        help: impl Into<Cow<'a, str>>,
        labels: Labels<'a>,
        v: f64,
    ) {
        self.push(name, help, labels, Value::Gauge(v));
    }

    /// `name` without `_total`: the encoder appends it.
    fn counter(
        &mut self,
        name: impl Into<Cow<'a, str>>,
        help: impl Into<Cow<'a, str>>,
        labels: Labels<'a>,
        v: f64,
    ) {
        self.push(name, help, labels, Value::Counter(v));
    }

    fn write(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in &self.list {
            let ty = match fam.samples.first() {
                Some((_, Value::Counter(_))) => MetricType::Counter,
                Some((_, Value::Histogram(..))) => MetricType::Histogram,
                _ => MetricType::Gauge,
            };
            let mut m = encoder.encode_descriptor(&fam.name, &fam.help, None, ty)?;
            for (labels, v) in &fam.samples {
                let labels = labels.as_slice();
                let mut e = m.encode_family(&labels)?;
                // Whole numbers without the ".0" (most of them: bytes, counts).
                if let Value::Histogram(buckets, sum, count) = v {
                    e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
                    continue;
                }
                match (v, whole(v.get())) {
                    (Value::Gauge(_), Some(i)) => e.encode_gauge(&i)?,
                    (Value::Gauge(g), None) => e.encode_gauge(g)?,
                    (Value::Counter(_), Some(i)) => {
                        e.encode_counter::<NoLabelSet, _, u64>(&(i as u64), None)?
                    }
                    (Value::Counter(c), None) => e.encode_counter::<NoLabelSet, _, u64>(c, None)?,
                    (Value::Histogram(..), _) => {}
                }
            }
        }
        Ok(())
    }
}

impl Value {
    fn get(&self) -> f64 {
        match self {
            Value::Gauge(v) | Value::Counter(v) => *v,
            Value::Histogram(..) => f64::NAN,
        }
    }
}

/// `v` as an integer if it is one that an f64 holds exactly (counters are never
/// negative, so a whole counter fits a u64 too).
fn whole(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0).then_some(v as i64)
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Tasks by kind since start (outcome counts, run time and latency histograms), and
/// what the profiles flag.
fn task_series<'a>(
    f: &mut Families<'a>,
    totals: &'a std::collections::BTreeMap<String, KindTotals>,
    report: &'a Report,
) {
    let buckets = |h: &Histogram| -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.counts.iter().copied())
            .collect()
    };
    for (kind, t) in totals {
        for (ended, n) in &t.ended {
            f.counter(
                "fog_tasks_finished",
                "Tasks that ended, by kind and outcome (completed, failed, timed_out, rejected).",
                smallvec![("kind", kind.as_str()), ("outcome", ended.as_str())],
                *n as f64,
            );
        }
        f.push(
            "fog_task_duration_seconds",
            "How long tasks ran on their node, as the agent measured, by kind.",
            smallvec![("kind", kind.as_str())],
            Value::Histogram(buckets(&t.duration), t.duration.sum_secs, t.duration.count),
        );
        f.push(
            "fog_task_latency_seconds",
            "From a task's submission to its result at the coordinator, by kind.",
            smallvec![("kind", kind.as_str())],
            Value::Histogram(buckets(&t.latency), t.latency.sum_secs, t.latency.count),
        );
    }
    for b in &report.bottlenecks {
        let labels = smallvec![
            ("what", b.what),
            ("kind", b.kind.as_deref().unwrap_or("")),
            ("node", b.node.as_deref().unwrap_or("")),
        ];
        f.gauge(
            "fog_task_bottleneck",
            "What the task profiles flag over the last hour (value 1): node_saturated, p95_rising, slow_node.",
            labels,
            1.0,
        );
    }
    for p in &report.kinds {
        f.gauge(
            "fog_task_profile_p95_seconds",
            "The 95th percentile of a kind's run time over the last hour.",
            smallvec![("kind", p.kind.as_str())],
            f64::from(p.p95_ms) / 1000.0,
        );
    }
}

/// The coordinator's own latency histograms: placement, heartbeat age, the main
/// loop's turns, journal commits.
fn latency_series(f: &mut Families<'_>, l: &crate::latency::Latencies) {
    f.push(
        "fog_coordinator_placement_seconds",
        "From a task's acceptance to its first assignment to a node (waits for a free or eligible node included).",
        smallvec![],
        Value::Histogram(l.placement.buckets(), l.placement.sum_secs, l.placement.count),
    );
    f.push(
        "fog_coordinator_heartbeat_age_seconds",
        "A heartbeat's age when the registry took it in: the coordinator's clock minus the node's stamp (broker and coordinator delay, plus the node's clock offset).",
        smallvec![],
        Value::Histogram(l.heartbeat_age.buckets(), l.heartbeat_age.sum_secs, l.heartbeat_age.count),
    );
    for turn in crate::latency::Turn::ALL {
        let t = l.turns.get(turn);
        f.push(
            "fog_coordinator_loop_turn_seconds",
            "One turn of the coordinator's main loop, by what it handled (messages wait behind a slow turn).",
            smallvec![("handled", turn.as_str())],
            Value::Histogram(t.buckets(), t.sum_secs, t.count),
        );
    }
    if let Some(j) = &l.journal_commit {
        f.push(
            "fog_coordinator_journal_commit_seconds",
            "One group commit of the task journal (its write and fsync); absent without a journal.",
            smallvec![],
            Value::Histogram(j.buckets(), j.sum_secs, j.count),
        );
    }
}

fn coordinator_series<'a>(f: &mut Families<'a>, v: &'a View) {
    let h = v.health;
    f.gauge(
        "fog_coordinator_info",
        "The coordinator's version and the id of the key that signs its assignments.",
        smallvec![
            ("version", v.version.as_str()),
            ("signing_key", v.signing_key.as_str()),
        ],
        1.0,
    );
    f.gauge(
        "fog_coordinator_broker_connected",
        "1 while connected to the broker and subscribed to the fleet's topics.",
        smallvec![],
        flag(h.broker),
    );
    if h.journal != JournalHealth::Memory {
        f.gauge(
            "fog_coordinator_journal_up",
            "1 while the task journal takes writes, 0 if its last commit failed; absent without a journal.",
            smallvec![],
            flag(h.journal == JournalHealth::Ok),
        );
    }
    latency_series(f, &v.latency);
    f.gauge(
        "fog_coordinator_tasks_in_flight",
        "Tasks accepted and not finished: placed on a node or waiting for one.",
        smallvec![],
        h.in_flight as f64,
    );
    for state in [NodeState::Online, NodeState::Suspect, NodeState::Offline] {
        let n = v.nodes.iter().filter(|n| n.state == state).count();
        f.gauge(
            "fog_coordinator_nodes",
            "Nodes the registry knows, by liveness state.",
            smallvec![("state", state.as_str())],
            n as f64,
        );
    }
    // The dispatcher's and the registry's own counters, each as a metric of its
    // own name (`tasks_completed_total` is `fog_coordinator_tasks_completed_total`);
    // the few that are levels, not counts, as gauges.
    for (name, n) in &v.counters {
        if name == "tasks_in_flight"
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        let help = format!("The coordinator's {name} (docs/metrics.md).");
        match name.strip_suffix("_total") {
            Some(base) => f.counter(
                format!("fog_coordinator_{base}"),
                help,
                smallvec![],
                *n as f64,
            ),
            None => f.gauge(
                format!("fog_coordinator_{name}"),
                help,
                smallvec![],
                *n as f64,
            ),
        }
    }
    if let Some(s) = &v.scaling {
        f.gauge(
            "fog_coordinator_scaling_desired_nodes",
            "Nodes the scaling advice asks for.",
            smallvec![("direction", s.direction.as_str())],
            f64::from(s.desired_nodes),
        );
    }
}

#[allow(clippy::too_many_lines)] // one call per series, nothing to split
fn node_series<'a>(f: &mut Families<'a>, n: &'a NodeSummary) {
    let node = n.node.as_str();
    let l = || smallvec![("node", node)];
    f.gauge(
        "fog_node_info",
        "A node's architecture, agent version and identity standing (value 1).",
        smallvec![
            ("node", node),
            ("arch", n.arch.as_str()),
            ("version", n.version.as_str()),
            ("identity", n.identity.as_str()),
        ],
        1.0,
    );
    f.gauge(
        "fog_node_up",
        "1 while the node is online (not suspect, not offline).",
        l(),
        flag(n.state == NodeState::Online),
    );
    f.gauge(
        "fog_node_health",
        "The node's health as placement judges it (value 1, the health in a label).",
        smallvec![("node", node), ("health", n.health.as_str())],
        1.0,
    );
    f.gauge(
        "fog_node_last_seen_timestamp_seconds",
        "When the coordinator last heard from the node (seconds since the epoch).",
        l(),
        n.last_seen_ms as f64 / 1000.0,
    );
    f.gauge("fog_node_cores", "CPU cores.", l(), f64::from(n.cores));
    f.gauge(
        "fog_node_tasks_queued",
        "Tasks queued on the node, from its last heartbeat.",
        l(),
        f64::from(n.queued),
    );
    f.gauge(
        "fog_node_tasks_running",
        "Tasks running on the node, from its last heartbeat.",
        l(),
        f64::from(n.running),
    );
    f.gauge(
        "fog_node_tasks_in_flight",
        "Tasks the coordinator placed on the node and has not seen finish.",
        l(),
        f64::from(n.in_flight),
    );
    f.gauge(
        "fog_node_task_latency_seconds",
        "Peak EWMA of task round-trip latency seen by the coordinator.",
        l(),
        f64::from(n.latency_ms) / 1000.0,
    );
    f.gauge(
        "fog_node_breaker_open",
        "1 while the node's circuit breaker is open or half-open.",
        l(),
        flag(!n.breaker.is_empty() && n.breaker != "closed"),
    );
    let mut seen = std::collections::HashSet::new();
    for notice in n.notices.iter().filter(|x| seen.insert(x.as_str())) {
        f.gauge(
            "fog_node_notice",
            "What the node's last reading says needs a look (value 1, the notice in a label).",
            smallvec![("node", node), ("notice", notice.as_str())],
            1.0,
        );
    }
}

#[allow(clippy::too_many_lines)] // one call per series, nothing to split
fn reading_series<'a>(f: &mut Families<'a>, node: &'a str, r: &'a Reading) {
    let l = || smallvec![("node", node)];
    f.gauge(
        "fog_node_load1",
        "1-minute load average.",
        l(),
        f64::from(r.load.one),
    );
    f.gauge(
        "fog_node_load5",
        "5-minute load average.",
        l(),
        f64::from(r.load.five),
    );
    f.gauge(
        "fog_node_load15",
        "15-minute load average.",
        l(),
        f64::from(r.load.fifteen),
    );
    if let Some(pct) = r.cpu.total_pct {
        f.gauge(
            "fog_node_cpu_usage_ratio",
            "Share of all CPU time that was busy over the last reading interval (0-1).",
            l(),
            f64::from(pct) / 100.0,
        );
    }
    f.gauge(
        "fog_node_memory_total_bytes",
        "Memory in all.",
        l(),
        r.memory.total_bytes as f64,
    );
    f.gauge(
        "fog_node_memory_available_bytes",
        "Memory available for new work (MemAvailable).",
        l(),
        r.memory.available_bytes as f64,
    );
    f.gauge(
        "fog_node_memory_swap_total_bytes",
        "Swap in all.",
        l(),
        r.memory.swap_total_bytes as f64,
    );
    f.gauge(
        "fog_node_memory_swap_used_bytes",
        "Swap in use.",
        l(),
        r.memory.swap_used_bytes as f64,
    );
    f.gauge(
        "fog_node_uptime_seconds",
        "Seconds since the node booted.",
        l(),
        r.uptime_secs as f64,
    );
    // Label sets from a node's reading are its own names: a mountpoint, sensor or
    // interface listed twice would be a duplicate series, which Prometheus refuses.
    let mut seen = std::collections::HashSet::new();
    for d in r.disks.iter().filter(|d| seen.insert(d.mount.as_str())) {
        let labels = || {
            smallvec![
                ("node", node),
                ("mountpoint", d.mount.as_str()),
                ("device", d.device.as_str()),
                ("fstype", d.fs_type.as_str()),
            ]
        };
        f.gauge(
            "fog_node_filesystem_size_bytes",
            "Filesystem size.",
            labels(),
            d.total_bytes as f64,
        );
        f.gauge(
            "fog_node_filesystem_avail_bytes",
            "Filesystem space available to unprivileged users.",
            labels(),
            d.available_bytes as f64,
        );
    }
    let mut seen = std::collections::HashSet::new();
    for n in r
        .networks
        .iter()
        .filter(|n| seen.insert(n.interface.as_str()))
    {
        let labels = || smallvec![("node", node), ("device", n.interface.as_str())];
        f.counter(
            "fog_node_network_receive_bytes",
            "Bytes received.",
            labels(),
            n.rx_bytes_total as f64,
        );
        f.counter(
            "fog_node_network_transmit_bytes",
            "Bytes sent.",
            labels(),
            n.tx_bytes_total as f64,
        );
        f.counter(
            "fog_node_network_receive_errs",
            "Receive errors.",
            labels(),
            n.rx_errors_total as f64,
        );
        f.counter(
            "fog_node_network_transmit_errs",
            "Transmit errors.",
            labels(),
            n.tx_errors_total as f64,
        );
        f.counter(
            "fog_node_network_receive_drop",
            "Received packets dropped.",
            labels(),
            n.rx_dropped_total as f64,
        );
        f.counter(
            "fog_node_network_transmit_drop",
            "Packets to send dropped.",
            labels(),
            n.tx_dropped_total as f64,
        );
    }
    let mut seen = std::collections::HashSet::new();
    for t in r
        .temperatures
        .iter()
        .filter(|t| seen.insert(t.sensor.as_str()))
    {
        f.gauge(
            "fog_node_temperature_celsius",
            "A temperature sensor's reading.",
            smallvec![("node", node), ("sensor", t.sensor.as_str())],
            f64::from(t.celsius),
        );
    }
    if let Some(p) = &r.power {
        if let Some(now) = p.under_voltage_now {
            f.gauge(
                "fog_node_under_voltage",
                "1 while the board reports under-voltage (Raspberry Pi).",
                l(),
                flag(now),
            );
        }
        if let Some(now) = p.throttled_now {
            f.gauge(
                "fog_node_throttled",
                "1 while the board's firmware throttles the CPU (Raspberry Pi).",
                l(),
                flag(now),
            );
        }
    }
    let a = &r.agent;
    f.gauge(
        "fog_node_agent_resident_memory_bytes",
        "fog-agent's resident memory.",
        l(),
        a.rss_bytes as f64,
    );
    f.counter(
        "fog_node_agent_cpu_seconds",
        "CPU time fog-agent used since it started.",
        l(),
        a.cpu_secs,
    );
    f.counter(
        "fog_node_agent_publish_dropped",
        "Messages fog-agent could not publish (dropped while disconnected) since it started.",
        l(),
        a.publish_dropped_total as f64,
    );
    f.gauge(
        "fog_node_backlog_entries",
        "Readings kept on the node's disk for the broker.",
        l(),
        a.backlog_entries as f64,
    );
    f.gauge(
        "fog_node_backlog_bytes",
        "Bytes of the node's backlog.",
        l(),
        a.backlog_bytes as f64,
    );
    f.counter(
        "fog_node_backlog_dropped",
        "Backlog entries the node's budget (or a failing disk) forced out since the agent started.",
        l(),
        a.backlog_dropped_total as f64,
    );
    f.counter(
        "fog_node_assignments_refused",
        "Assignment lists the node refused (unsigned, forged, stale, for another node) since the agent started.",
        l(),
        a.assignments_refused_total as f64,
    );
}

#[cfg(test)]
mod tests;
