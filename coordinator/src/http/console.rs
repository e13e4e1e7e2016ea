//! The live console: one page embedded in the binary (`/`, no build step, nothing
//! from a CDN), fed by server-sent events (`/api/v1/events`, one compact fleet
//! summary per snapshot) and the history endpoints for its charts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use fog_proto::NodeState;
use serde_json::json;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamExt;

use super::error::json;
use super::{ApiError, Shared};
use crate::view::View;

/// The page (HTML, CSS and script in one file).
pub const PAGE: &str = include_str!("console.html");

/// Live event streams served at once, at most: each holds a task and a copy of every
/// update, and the API needs no authentication to open one.
pub const MAX_STREAMS: usize = 64;

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /api/v1/events`: a `fleet` event with [`fleet_event`] for every snapshot.
pub async fn events(State(s): State<Arc<Shared>>) -> Response {
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "busy",
            reason: format!("{MAX_STREAMS} live streams are open already"),
        }
        .into_response();
    };
    let stream = WatchStream::new(s.view.clone()).map(move |v| {
        // Held as long as the stream, released when the client goes.
        let _held = &permit;
        Ok::<_, Infallible>(Event::default().event("fleet").data(fleet_event(&v)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The fleet at a glance, compact (about 60 bytes a node): the coordinator's health,
/// counts, scaling advice, the newest throughput point, every node as
/// `[id, state, health, cpu %, memory %, root disk %, hottest °C, alerts, arch]`, and
/// the alerts as `[node, what]`.
pub fn fleet_event(v: &View) -> String {
    let count = |st: NodeState| v.nodes.iter().filter(|n| n.state == st).count();
    let mut alerts = Vec::new();
    let nodes: Vec<serde_json::Value> = v
        .nodes
        .iter()
        .map(|n| {
            let reading = v.details.get(&n.node).and_then(|d| d.reading.as_deref());
            let disk = reading
                .and_then(|r| r.disks.iter().find(|d| d.mount == "/"))
                .map(|d| d.used_pct);
            let temp =
                reading.and_then(|r| r.temperatures.iter().map(|t| t.celsius).reduce(f32::max));
            for a in n.notices.iter().chain(&n.degraded) {
                alerts.push(json!([n.node.as_str(), a]));
            }
            if v.drained.contains(&n.node) {
                alerts.push(json!([
                    n.node.as_str(),
                    "drained: nothing new is placed here"
                ]));
            }
            if n.breaker != "closed" && !n.breaker.is_empty() {
                alerts.push(json!([n.node.as_str(), format!("breaker {}", n.breaker)]));
            }
            json!([
                n.node.as_str(),
                n.state.as_str(),
                n.health.as_str(),
                n.cpu_pct.map(|c| (c * 10.0).round() / 10.0),
                n.mem_pct.map(|c| (c * 10.0).round() / 10.0),
                disk.map(|c| (c * 10.0).round() / 10.0),
                temp.map(|c| (c * 10.0).round() / 10.0),
                n.notices.len() + n.degraded.len(),
                n.arch,
            ])
        })
        .collect();
    let h = v.health;
    json!({
        "at_ms": v.at_ms,
        "version": v.version,
        "health": {"broker": h.broker, "journal": h.journal.as_str(), "in_flight": h.in_flight},
        "counts": {"online": count(NodeState::Online), "suspect": count(NodeState::Suspect), "offline": count(NodeState::Offline)},
        "scaling": v.scaling,
        "fleet": v.trends().fleet().last(),
        "warnings": v.warnings,
        "nodes": nodes,
        "alerts": alerts,
    })
    .to_string()
}

/// `GET /api/v1/nodes/{node}/history`: the last hour of its readings, for charts.
pub async fn node_history(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = super::api::path_id(path)?;
    let v = s.view();
    super::api::find_node(&v, &id)?;
    let samples = v.trends().node(&id).unwrap_or_default();
    Ok(json(
        &json!({ "at_ms": v.at_ms, "node": id, "samples": samples }),
    ))
}

/// `GET /api/v1/fleet/history`: the last hour of task throughput and latency.
pub async fn fleet_history(State(s): State<Arc<Shared>>) -> Response {
    let v = s.view();
    let samples = v.trends().fleet();
    json(&json!({ "at_ms": v.at_ms, "samples": samples }))
}
