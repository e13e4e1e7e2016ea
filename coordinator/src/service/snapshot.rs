//! What the main loop shows: the status it publishes on MQTT and the in-process
//! snapshot (the demo, the HTTP API), and what Home Assistant discovery sends.

use std::sync::Arc;

use fog_proto::{CoordinatorStatus, NodeHealth};
use fog_rt::clock::now_ms;
use fog_rt::transport::{Link, Qos};
use tokio::time::Instant;

use crate::breaker::BreakerState;
use crate::dispatch::Dispatcher;
use crate::home_assistant::HomeAssistant;
use crate::registry::Registry;
use crate::signing::Posture;
use crate::view::{Health, View};

/// Latest snapshot, for in-process viewers (the demo, the HTTP API).
pub type Snapshot = Arc<View>;

/// The snapshot before the first one is published.
pub fn empty_snapshot() -> Snapshot {
    Arc::new(View {
        status: empty_status(),
        details: Default::default(),
        health: Health::default(),
        trends: Default::default(),
        profiles: Default::default(),
        drained: Default::default(),
        latency: Default::default(),
    })
}

fn empty_status() -> CoordinatorStatus {
    CoordinatorStatus {
        online: false,
        at_ms: 0,
        version: String::new(),
        reason: String::new(),
        nodes: Vec::new(),
        counters: Default::default(),
        running: Vec::new(),
        recent: Vec::new(),
        dead: Vec::new(),
        scaling: None,
        signing_key: String::new(),
        warnings: Vec::new(),
        omitted: Default::default(),
    }
}

/// The coordinator's status, with at most `tasks_max` tasks per list.
pub(super) fn status(
    registry: &Registry,
    dispatch: &Dispatcher,
    posture: &Posture,
    online: bool,
    reason: &str,
    tasks_max: usize,
) -> CoordinatorStatus {
    let mut counters = registry.counters();
    counters.extend(
        dispatch
            .counters_map()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut nodes = if online {
        registry.summaries()
    } else {
        Vec::new()
    };
    // Both lists are sorted by node id; walk them together.
    let placements = dispatch.node_placements(Instant::now());
    let mut p = placements.iter().peekable();
    for n in &mut nodes {
        while p.peek().is_some_and(|x| x.node < n.node) {
            p.next();
        }
        if let Some(x) = p.peek().filter(|x| x.node == n.node) {
            n.in_flight = x.in_flight;
            n.breaker = x.breaker.as_str().to_owned();
            n.latency_ms = x.latency_ms as f32;
            n.drained = x.drained;
            if n.health == NodeHealth::Healthy {
                if x.breaker != BreakerState::Closed {
                    n.health = NodeHealth::Unhealthy;
                } else if x.degraded {
                    n.health = NodeHealth::Degraded;
                }
            }
        }
    }
    let (running, recent, dead) = if online {
        dispatch.task_lists(tasks_max)
    } else {
        Default::default()
    };
    CoordinatorStatus {
        online,
        at_ms: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        reason: reason.to_owned(),
        nodes,
        counters,
        running,
        recent,
        dead,
        scaling: None,
        signing_key: posture.signing_key.clone(),
        warnings: posture.warnings.clone(),
        omitted: Default::default(),
    }
}

/// What Home Assistant discovery has to say, paced, until the link's queue is full
/// (the rest waits, in order, for the next second).
pub(super) fn publish_home_assistant(ha: &mut HomeAssistant, link: &Link) {
    let batch: Vec<_> = ha.drain().collect();
    let mut it = batch.into_iter();
    while let Some(m) = it.next() {
        if link
            .publish(&m.topic, m.payload.clone(), Qos::AtLeastOnce, m.retain)
            .is_err()
        {
            let rest: Vec<_> = std::iter::once(m).chain(it).collect();
            for m in rest.into_iter().rev() {
                ha.retry(m);
            }
            break;
        }
    }
}
