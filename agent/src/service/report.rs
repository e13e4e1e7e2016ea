//! What the agent says about itself: task and backlog figures in readings, the
//! subsystems that keep failing, and the line `systemctl status` shows.

use std::time::Duration;

use crate::forward::Forwarder;
use crate::metrics::Collector;
use crate::supervise::{Restarts, Supervised};
use crate::systemd::human_bytes;
use crate::tasks::host::TaskHost;
use crate::transport::PublishError;

pub(super) fn fill_task_figures(a: &mut fog_proto::AgentSelf, host: &TaskHost) {
    let load = host.pool().load();
    let arena = host.arena().stats();
    let c = host.counters;
    a.tasks_finished_total = c.finished;
    a.tasks_rejected_total = c.rejected;
    a.assignments_refused_total = host.assignments_refused_total();
    a.tasks_queued = load.queued;
    a.tasks_running = load.running;
    a.arena_capacity_bytes = arena.capacity_bytes;
    a.arena_used_bytes = arena.used_bytes;
    a.arena_high_water_bytes = arena.high_water_bytes;
    a.arena_refused_total = arena.refused_total;
    a.cache_hits_total = c.cache_hits;
    a.cache_misses_total = c.cache_misses;
}

/// The supervised subsystems besides the task host's pool (which supervises its own
/// workers) and the main loop itself (watched by systemd's watchdog).
pub(super) struct Supervision {
    pub(super) store: std::sync::Arc<crate::store::cell::DbCell>,
    pub(super) transport: Restarts,
    pub(super) collector: Supervised<Collector>,
    pub(super) alerts: Supervised<crate::alerts::AlertEngine>,
    /// What the last config reload left to say (refused, or keys that need a
    /// restart), for the STATUS= line.
    pub(super) config_note: Option<String>,
}

impl Supervision {
    /// Subsystems that keep failing, in start order, for heartbeats and readings.
    pub(super) fn degraded(&self, host: &TaskHost) -> Vec<String> {
        let mut d = Vec::new();
        for (name, bad) in [
            ("store", self.store.degraded()),
            ("transport", self.transport.degraded()),
            ("collector", self.collector.restarts().degraded()),
            ("pool", host.pool().degraded()),
            ("alerts", self.alerts.restarts().degraded()),
        ] {
            if bad {
                d.push(name.to_owned());
            }
        }
        d
    }
}

pub(super) fn fill_forward_figures(
    a: &mut fog_proto::AgentSelf,
    fwd: &Forwarder,
    degraded: Vec<String>,
) {
    let s = fwd.stats();
    a.forward_mode = fwd.mode().as_str().to_owned();
    a.backlog_entries = s.len();
    a.backlog_bytes = s.bytes();
    a.backlog_dropped_total = s.dropped_total();
    a.backlog_replayed_total = fwd.replayed_total();
    a.publish_unacked = fwd.unacked() as u64;
    a.degraded = degraded;
}

/// The line `systemctl status` shows: mode, tasks, backlog, what is degraded.
pub(super) fn status_line(fwd: &Forwarder, host: &TaskHost, sup: &Supervision) -> String {
    let load = host.pool().load();
    let s = fwd.stats();
    let mode = match fwd.mode() {
        crate::forward::Mode::Offline => "offline (broker unreachable)",
        m => m.as_str(),
    };
    let mut line = format!(
        "{mode}: {} tasks running, {} queued; ",
        load.running, load.queued
    );
    if s.is_empty() {
        line.push_str("backlog empty");
    } else {
        line.push_str(&format!(
            "backlog {} entries ({})",
            s.len(),
            human_bytes(s.bytes())
        ));
    }
    if s.dropped_total() > 0 {
        line.push_str(&format!(", {} dropped", s.dropped_total()));
    }
    let d = sup.degraded(host);
    if !d.is_empty() {
        line.push_str(&format!("; degraded: {}", d.join(", ")));
    }
    if let Some(note) = &sup.config_note {
        line.push_str("; ");
        line.push_str(note);
    }
    line
}

/// A message that can never be published (too large for the packet limit): logged at
/// most once a minute.
pub(super) fn warn_publish(
    last: &mut Option<tokio::time::Instant>,
    what: &str,
    error: &PublishError,
) {
    let now = tokio::time::Instant::now();
    if last.is_none_or(|t| now - t >= Duration::from_secs(60)) {
        *last = Some(now);
        tracing::warn!(what, %error, "cannot publish");
    }
}
