//! The JSON API's handlers (docs/api.md): each reads one snapshot and answers.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fog_proto::{NodeSummary, TaskSummary};
use fog_rt::clock::now_ms;
use serde::Serialize;

use super::error::{json, json_with};
use super::query::Params;
use super::{ApiError, Shared, STALE_AFTER};
use crate::view::{JournalHealth, View};

type St = State<Arc<Shared>>;

#[derive(Serialize)]
struct HealthBody {
    /// `ok` (200) or `degraded` / `starting` (503).
    status: &'static str,
    broker: &'static str,
    journal: &'static str,
    main_loop: &'static str,
    /// How old the snapshot answering this is.
    view_age_ms: u64,
    in_flight: usize,
    version: &'static str,
}

/// `GET /api/v1/health`: 200 when the broker link, the journal and the main loop are
/// all well; 503 (with which part is not) otherwise, for a load balancer or a probe.
pub async fn health(State(s): St) -> Response {
    let v = s.view();
    let age = now_ms().saturating_sub(v.at_ms);
    let main_loop = if v.at_ms == 0 {
        "starting"
    } else if u128::from(age) > STALE_AFTER.as_millis() {
        "stalled"
    } else {
        "turning"
    };
    let h = v.health;
    let ok = h.broker && h.journal != JournalHealth::Failing && main_loop == "turning";
    let body = HealthBody {
        status: match (ok, main_loop) {
            (true, _) => "ok",
            (false, "starting") => "starting",
            (false, _) => "degraded",
        },
        broker: if h.broker {
            "connected"
        } else {
            "disconnected"
        },
        journal: h.journal.as_str(),
        main_loop,
        view_age_ms: if v.at_ms == 0 { 0 } else { age },
        in_flight: h.in_flight,
        version: env!("CARGO_PKG_VERSION"),
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_with(code, &body)
}

/// A node's summary with its labels, as the node list shows it.
#[derive(Serialize)]
struct NodeRow<'a> {
    #[serde(flatten)]
    summary: &'a NodeSummary,
    labels: std::collections::BTreeMap<&'a str, &'a str>,
}

fn row<'a>(v: &'a View, n: &'a NodeSummary) -> NodeRow<'a> {
    let labels = v
        .details
        .get(&n.node)
        .and_then(|d| d.birth.as_ref())
        .map(|b| {
            b.labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    NodeRow { summary: n, labels }
}

/// `GET /api/v1/nodes[?state=S][&health=H][&label=K=V ...]`
pub async fn nodes(State(s): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let v = s.view();
    Ok(json(&node_list(&v, q.as_deref())?))
}

/// The node list for query string `q` (public for the benchmark).
pub fn node_list(v: &View, q: Option<&str>) -> Result<serde_json::Value, ApiError> {
    let p = Params::parse(q, &["state", "health", "label"])?;
    let state = p.choice("state", &["online", "suspect", "offline"])?;
    let health = p.choice(
        "health",
        &["healthy", "degraded", "unhealthy", "suspect", "offline"],
    )?;
    let mut labels = Vec::new();
    for l in p.all("label") {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| ApiError::bad_request(format!("label must be KEY=VALUE, not {l:?}")))?;
        labels.push((k, v));
    }
    let rows: Vec<NodeRow> = v
        .nodes
        .iter()
        .filter(|n| state.as_deref().is_none_or(|st| n.state.as_str() == st))
        .filter(|n| health.as_deref().is_none_or(|h| n.health.as_str() == h))
        .map(|n| row(v, n))
        .filter(|r| labels.iter().all(|(k, val)| r.labels.get(k) == Some(val)))
        .collect();
    Ok(serde_json::json!({ "at_ms": v.at_ms, "nodes": rows }))
}

/// `GET /api/v1/nodes/{node}`: summary, birth record, newest reading, its tasks.
pub async fn node(
    State(s): St,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let v = s.view();
    let n = find_node(&v, &id)?;
    let detail = v.details.get(&n.node);
    let tasks: Vec<&TaskSummary> = v.running.iter().filter(|t| t.node == id).collect();
    Ok(json(&serde_json::json!({
        "at_ms": v.at_ms,
        "node": row(&v, n),
        "birth": detail.and_then(|d| d.birth.as_deref()),
        "reading": detail.and_then(|d| d.reading.as_deref()),
        "offline_reason": detail.map_or("", |d| d.offline_reason.as_str()),
        "tasks": tasks,
    })))
}

/// Most tasks per page.
const PAGE_MAX: usize = 1000;

/// `GET /api/v1/tasks[?state=S][&kind=K][&node=N][&limit=L][&offset=O]`: running and
/// waiting tasks (oldest first), then those that ended (newest first), then the dead
/// letters (newest first).
pub async fn tasks(State(s): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["state", "kind", "node", "limit", "offset"])?;
    let state = p.choice(
        "state",
        &[
            "running",
            "waiting",
            "completed",
            "failed",
            "rejected",
            "dead",
        ],
    )?;
    let kind = p.one("kind")?;
    let node = p.one("node")?;
    let limit = p.number("limit", 100, 1, PAGE_MAX)?;
    let offset = p.number("offset", 0, 0, usize::MAX)?;
    let v = s.view();
    let matching: Vec<&TaskSummary> = all_tasks(&v)
        .filter(|t| state.as_deref().is_none_or(|st| t.state == st))
        .filter(|t| kind.is_none_or(|k| t.kind == k))
        .filter(|t| node.is_none_or(|n| t.node == n))
        .collect();
    let total = matching.len();
    let page: Vec<&TaskSummary> = matching.into_iter().skip(offset).take(limit).collect();
    let next = offset.saturating_add(limit);
    Ok(json(&serde_json::json!({
        "at_ms": v.at_ms,
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": (next < total).then_some(next),
        "tasks": page,
    })))
}

fn all_tasks(v: &View) -> impl Iterator<Item = &TaskSummary> {
    v.running.iter().chain(&v.recent).chain(&v.dead)
}

/// `GET /api/v1/tasks/{id}`
pub async fn task(
    State(s): St,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let v = s.view();
    let t = all_tasks(&v).find(|t| t.id == id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no task {id:?} among the {} in flight and the last {} ended that the coordinator keeps",
            v.running.len(),
            v.recent.len() + v.dead.len()
        ))
    })?;
    Ok(json(&serde_json::json!({ "at_ms": v.at_ms, "task": t })))
}

/// Node `id` in the snapshot, or a JSON 404.
pub(super) fn find_node<'v>(v: &'v View, id: &str) -> Result<&'v NodeSummary, ApiError> {
    v.nodes
        .iter()
        .find(|n| n.node.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("no node {id:?} is known")))
}

/// The id in the path, or a JSON 400 (it was not valid UTF-8 once percent-decoded).
pub(super) fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

/// `GET /api/v1/profiles[?since_secs=N]`: per kind and per kind and node over the
/// last hour (or N seconds of it), and the bottlenecks.
pub async fn profiles(State(s): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["since_secs"])?;
    let since = p.number("since_secs", 3600, 1, 3600)?;
    let v = s.view();
    let report = v
        .profiles()
        .report_over(now_ms(), &v.nodes, since as u64 * 1000);
    Ok(json(&report))
}

/// `POST /api/v1/nodes/{node}/drain`, signed: place nothing new on the node; what
/// runs there finishes.
pub async fn drain(
    State(s): St,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_drained(&s, &headers, &uri, path, &body, true).await
}

/// `POST /api/v1/nodes/{node}/undrain`, signed: place on it again.
pub async fn undrain(
    State(s): St,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_drained(&s, &headers, &uri, path, &body, false).await
}

async fn set_drained(
    s: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    path: Result<Path<String>, PathRejection>,
    body: &[u8],
    drain: bool,
) -> Result<Response, ApiError> {
    let (client, done) = node_command(s, headers, uri, path, body, |node, reply| {
        crate::control::Command::Drain { node, drain, reply }
    })
    .await?;
    tracing::info!(client = %client, node.id = %done.node, drain, changed = done.changed, "drain via the API");
    Ok(json(&done))
}

/// `POST /api/v1/nodes/{node}/forget`, signed: an offline node leaves the fleet view
/// (registry, console, metrics, Home Assistant); refused (409) while it is online
/// or suspect, since a node that speaks comes straight back.
pub async fn forget(
    State(s): St,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (client, done) = node_command(&s, &headers, &uri, path, &body, |node, reply| {
        crate::control::Command::Forget { node, reply }
    })
    .await?;
    let done = done.map_err(|reason| ApiError {
        status: StatusCode::CONFLICT,
        code: "node_online",
        reason,
    })?;
    tracing::info!(client = %client, node.id = %done.node, was = %done.was, "node forgotten via the API");
    Ok(json(&done))
}

/// A signed command about one known node, which the client's policy may target,
/// through the main loop: the client's name and the loop's answer.
async fn node_command<T>(
    s: &Shared,
    headers: &HeaderMap,
    uri: &Uri,
    path: Result<Path<String>, PathRejection>,
    body: &[u8],
    make: impl FnOnce(fog_proto::NodeId, tokio::sync::oneshot::Sender<T>) -> crate::control::Command,
) -> Result<(String, T), ApiError> {
    let Some(control) = &s.control else {
        return Err(ApiError::method_not_allowed(
            "this coordinator's API is read-only (started without [clients] control)",
        ));
    };
    let pq = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let client = control
        .verifier
        .check(headers, "POST", pq, body, now_ms())?;
    let id = path_id(path)?;
    let v = s.view();
    let node = find_node(&v, &id)?;
    let labels = v
        .details
        .get(&node.node)
        .and_then(|d| d.birth.as_ref())
        .map(|b| b.labels.clone())
        .unwrap_or_default();
    super::auth::may_target(client, &id, &labels)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let busy = || ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "busy",
        reason: "the coordinator's main loop did not take the command; try again".into(),
    };
    control
        .commands
        .try_send(make(node.node.clone(), reply))
        .map_err(|_| busy())?;
    // Taken but not answered in time: it may still be applied, so say so.
    let unconfirmed = || {
        ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unconfirmed",
        reason: "the command was queued but not confirmed within 5 s; it may still apply: check GET /api/v1/nodes".into(),
    }
    };
    let done = tokio::time::timeout(std::time::Duration::from_secs(5), answer)
        .await
        .map_err(|_| unconfirmed())?
        .map_err(|_| unconfirmed())?;
    Ok((client.name.clone(), done))
}

/// `GET /api/v1/scaling`: the current advice (`null` before there is one).
pub async fn scaling(State(s): St) -> Response {
    let v = s.view();
    json(&serde_json::json!({ "at_ms": v.at_ms, "scaling": v.scaling }))
}

/// `GET /api/v1/openapi.json`
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}; see /api/v1/openapi.json",
        uri.path()
    ))
}

pub async fn method_not_allowed(uri: Uri) -> ApiError {
    let only = if ["/drain", "/undrain", "/forget"]
        .iter()
        .any(|end| uri.path().ends_with(end))
    {
        "POST only, signed"
    } else if uri.path() == "/api/v1/tasks" {
        "GET, or POST signed"
    } else {
        "GET only"
    };
    ApiError::method_not_allowed(format!("{} takes {only}", uri.path()))
}
