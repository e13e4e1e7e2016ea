//! What the coordinator shows of itself to in-process viewers (the HTTP API,
//! `/metrics`, the demo's screen): rebuilt by the main loop at most every second and
//! shared behind an `Arc`, so a scrape or an API call never waits for the main loop
//! and never slows it down.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use fog_proto::{Birth, CoordinatorStatus, NodeId, Reading};

use crate::profiles::Profiles;
use crate::trends::Trends;

/// One snapshot of the coordinator. Derefs to the status it publishes on MQTT, so
/// code that only needs that (the demo, the tests) reads it as before.
#[derive(Debug, Clone)]
pub struct View {
    pub status: CoordinatorStatus,
    /// What a node's summary leaves out, for the nodes in `status.nodes` that the
    /// registry has heard from.
    pub details: BTreeMap<NodeId, NodeDetail>,
    pub health: Health,
    /// The last hour's charts: a live handle shared with the main loop, not a copy
    /// (read it briefly; the main loop writes once a second).
    pub trends: Arc<RwLock<Trends>>,
    /// The task profiles: a live handle too.
    pub profiles: Arc<RwLock<Profiles>>,
    /// Nodes an operator drained (nothing new is placed there).
    pub drained: std::collections::BTreeSet<NodeId>,
    /// Placement and journal commit latencies since start.
    pub latency: crate::latency::Latencies,
}

impl View {
    /// The charts, for reading (a poisoned lock still holds valid samples).
    pub fn trends(&self) -> std::sync::RwLockReadGuard<'_, Trends> {
        self.trends.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The task profiles, for reading.
    pub fn profiles(&self) -> std::sync::RwLockReadGuard<'_, Profiles> {
        self.profiles.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Deref for View {
    type Target = CoordinatorStatus;
    fn deref(&self) -> &CoordinatorStatus {
        &self.status
    }
}

/// A node's birth record and its newest reading, shared with the registry.
#[derive(Debug, Clone, Default)]
pub struct NodeDetail {
    pub birth: Option<Arc<Birth>>,
    pub reading: Option<Arc<Reading>>,
    /// Why it is offline, when it is.
    pub offline_reason: String,
}

/// The coordinator's own parts, for `/api/v1/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Connected to the broker and subscribed to the fleet's topics.
    pub broker: bool,
    pub journal: JournalHealth,
    /// Tasks the dispatcher holds (placed and not finished, or waiting).
    pub in_flight: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JournalHealth {
    /// No data dir: task state lives in memory only (the demo, tests).
    #[default]
    Memory,
    Ok,
    /// The writer stopped or its last commit failed: accepted tasks are not durable.
    Failing,
}

impl JournalHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalHealth::Memory => "memory",
            JournalHealth::Ok => "ok",
            JournalHealth::Failing => "failing",
        }
    }
}

/// Every node's detail, from the registry (cheap: two `Arc`s and a string per node).
pub fn details(registry: &crate::registry::Registry) -> BTreeMap<NodeId, NodeDetail> {
    registry
        .nodes()
        .map(|(id, e)| {
            let detail = NodeDetail {
                birth: e.birth.clone(),
                reading: e.reading.clone(),
                offline_reason: e.offline_reason.clone(),
            };
            (id.clone(), detail)
        })
        .collect()
}

/// What is new in `view` (at `now_ms`) into the charts.
pub fn observe(trends: &mut Trends, view: &View, now_ms: u64) {
    // Every node with a reading is in the details (a walk, not a lookup per node).
    for (id, d) in &view.details {
        if let Some(r) = d.reading.as_deref() {
            trends.sample(id, r, now_ms);
        }
    }
    trends.retain(&view.nodes.iter().map(|n| &n.node).collect());
    let ended = [
        "tasks_completed_total",
        "tasks_failed_total",
        "tasks_dead_lettered_total",
    ]
    .iter()
    .filter_map(|k| view.counters.get(*k))
    .sum();
    let online: Vec<_> = view
        .nodes
        .iter()
        .filter(|n| n.state == fog_proto::NodeState::Online)
        .collect();
    let latency = if online.is_empty() {
        0.0
    } else {
        online.iter().map(|n| n.latency_ms).sum::<f32>() / online.len() as f32
    };
    trends.fleet_point(
        now_ms,
        ended,
        latency,
        online.len() as u32,
        view.health.in_flight as u32,
    );
}
