//! `POST /api/v1/tasks`: tasks submitted over HTTP by a client of `[clients]`, signed
//! like every change (see [`super::auth`]), checked by the same gate as a signed MQTT
//! list (kinds, nodes, labels) and taken into the same journal and table.
//!
//! The answer waits until every task is accepted (durable, with a journal) or
//! refused, at most [`ACCEPT_WITHIN`]; with `?wait=SECONDS`, until every final
//! result, at most that long. What is not answered by then is `pending` (202): it
//! may still be accepted; `GET /api/v1/tasks/{id}` or a resubmission of the same id
//! says what became of it (the coordinator takes each id once).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use fog_proto::{Outcome, Payload, Requirements, TaskResult, TaskSubmission, BATCH_MAX_ITEMS};
use fog_rt::clock::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::error::json_with;
use super::query::Params;
use super::{ApiError, Shared};
use crate::control::{Answer, Command, Wait};

/// How long a submission waits to be accepted before the answer says `pending`.
pub const ACCEPT_WITHIN: Duration = Duration::from_secs(5);

/// The longest `?wait=` (seconds).
pub const WAIT_MAX_SECS: u64 = 300;

/// A task's time limit when the request gives none (as `fog-coordinator submit`).
const DEFAULT_TIMEOUT_MS: u32 = 60_000;

/// The longest time limit a task may ask for (a day, as `submit --timeout`).
const TIMEOUT_MAX_MS: u32 = 86_400_000;

/// The body: `{"tasks": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    tasks: Vec<NewTask>,
}

/// One task, as a client writes it (docs/api.md, "Submitting tasks").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTask {
    /// Chosen by the client, so that a retry of the request is the same task; made
    /// up when absent.
    id: Option<String>,
    kind: String,
    /// The payload as text...
    payload: Option<String>,
    /// ... or as base64.
    payload_base64: Option<String>,
    #[serde(default)]
    priority: u8,
    timeout_ms: Option<u32>,
    #[serde(default)]
    cacheable: bool,
    #[serde(default)]
    key: String,
    #[serde(default)]
    strategy: String,
    #[serde(default)]
    requires: Requirements,
}

/// What became of one task.
#[derive(Debug, Serialize)]
struct Item {
    id: String,
    /// `accepted`, `running` (accepted before, by an earlier request), `rejected`,
    /// `refused` (the client's policy), `busy`, `finished` or `pending`.
    state: &'static str,
    /// The journal holds it (a restart keeps it).
    durable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The final result (`finished`), as on the client's reply topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<TaskResult>,
    /// Where to follow it.
    task: String,
}

/// `POST /api/v1/tasks[?wait=SECONDS]`, signed.
pub async fn submit(
    State(s): State<std::sync::Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(control) = &s.control else {
        return Err(ApiError::method_not_allowed(
            "this coordinator's API is read-only (started without [clients] control)",
        ));
    };
    let pq = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    // Who asks comes first: a stranger learns nothing about what the body lacks.
    let client = control
        .verifier
        .check(&headers, "POST", pq, &body, now_ms())?;
    let q = Params::parse(query.as_deref(), &["wait"])?;
    let (wait, within) = match q.one("wait")? {
        None => (Wait::Accepted, ACCEPT_WITHIN),
        Some(w) => match w.parse::<u64>() {
            Ok(n) if (1..=WAIT_MAX_SECS).contains(&n) => (Wait::Finished, Duration::from_secs(n)),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "wait must be a whole number of seconds from 1 to {WAIT_MAX_SECS}, not {w:?}"
                )))
            }
        },
    };
    let items = parse(&body)?;
    let ids: Vec<String> = items.iter().map(|s| s.id.clone()).collect();
    // Room for every answer each id can get (accepted, then final), so the main loop
    // never waits for this request.
    let (tx, rx) = mpsc::channel(ids.len() * 2 + 1);
    control
        .commands
        .try_send(Command::Submit {
            client: client.name.clone(),
            items,
            wait,
            answers: tx,
        })
        .map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "busy",
            reason: "the coordinator's main loop did not take the request; try again".into(),
        })?;
    let answers = collect(rx, &ids, wait, within).await;
    tracing::info!(client = %client.name, tasks = ids.len(), "tasks submitted via the API");
    Ok(respond(&ids, &answers))
}

/// The body's tasks, each checked, as submissions (reply topics are the gate's).
fn parse(body: &[u8]) -> Result<Vec<TaskSubmission>, ApiError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "bad_body",
        reason: format!(
            "the body must be JSON {{\"tasks\": [{{\"kind\": ..., ...}}]}} (docs/api.md): {e}"
        ),
    })?;
    let invalid = |reason: String| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "bad_body",
        reason,
    };
    if body.tasks.is_empty() || body.tasks.len() > BATCH_MAX_ITEMS {
        return Err(invalid(format!(
            "tasks must hold 1 to {BATCH_MAX_ITEMS} tasks, not {}",
            body.tasks.len()
        )));
    }
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(body.tasks.len());
    for (i, t) in body.tasks.into_iter().enumerate() {
        let id = match t.id {
            Some(id) => {
                valid_id(&id).map_err(|e| invalid(format!("tasks[{i}].id: {e}")))?;
                id
            }
            None => format!("task-{:08x}{:08x}", fastrand::u32(..), fastrand::u32(..)),
        };
        if let Some(j) = seen.insert(id.clone(), i) {
            return Err(invalid(format!(
                "tasks[{i}] and tasks[{j}] have the same id {id:?}"
            )));
        }
        if t.kind.is_empty() || t.kind.len() > 64 {
            return Err(invalid(format!(
                "tasks[{i}].kind must be 1 to 64 characters"
            )));
        }
        let payload = match (t.payload, t.payload_base64) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "tasks[{i}] has both payload and payload_base64; give one"
                )))
            }
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| invalid(format!("tasks[{i}].payload_base64: {e}")))?,
            (None, None) => Vec::new(),
        };
        let timeout_ms = t.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > TIMEOUT_MAX_MS {
            return Err(invalid(format!(
                "tasks[{i}].timeout_ms must be 1 to {TIMEOUT_MAX_MS} (a day)"
            )));
        }
        if !t.strategy.is_empty() {
            t.strategy
                .parse::<crate::placement::Strategy>()
                .map_err(|e| invalid(format!("tasks[{i}].strategy: {e}")))?;
        }
        out.push(TaskSubmission {
            id,
            kind: t.kind,
            payload: Payload(payload),
            reply_to: String::new(),
            priority: t.priority,
            timeout_ms,
            cacheable: t.cacheable,
            key: t.key,
            strategy: t.strategy,
            requires: t.requires,
        });
    }
    Ok(out)
}

/// A task id over HTTP: 1 to 128 of `A-Z a-z 0-9 . _ : -` (it is a URL segment).
fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_:".contains(*c)))
    {
        Some(c) => Err(format!(
            "{id:?} has {c:?}; use letters, digits, '.', '_', ':' and '-'"
        )),
        None => Ok(()),
    }
}

/// Answers until every id has what `wait` asks, or `within` has passed.
async fn collect(
    mut rx: mpsc::Receiver<Answer>,
    ids: &[String],
    wait: Wait,
    within: Duration,
) -> BTreeMap<String, Answer> {
    let mut got: BTreeMap<String, Answer> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    let done = |got: &BTreeMap<String, Answer>| {
        ids.iter().all(|id| {
            got.get(id)
                .is_some_and(|a| a.is_final() || wait == Wait::Accepted)
        })
    };
    while !done(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(a)) => {
                // A final answer is never replaced by an earlier kind of news.
                let keep = got.get(a.id()).is_some_and(Answer::is_final);
                if !keep {
                    got.insert(a.id().to_owned(), a);
                }
            }
            // The main loop dropped the request (shutting down), or time is up.
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// The response: 200 when every task has its final answer, 202 while some run or
/// are pending, 403 when the client's policy refused them all, 503 when all were
/// turned away busy.
fn respond(ids: &[String], answers: &BTreeMap<String, Answer>) -> Response {
    let items: Vec<Item> = ids.iter().map(|id| item(id, answers.get(id))).collect();
    let all = |state: &str| items.iter().all(|i| i.state == state);
    let (status, error) = if all("refused") {
        (StatusCode::FORBIDDEN, Some("forbidden"))
    } else if all("busy") {
        (StatusCode::SERVICE_UNAVAILABLE, Some("busy"))
    } else if items
        .iter()
        .all(|i| matches!(i.state, "finished" | "rejected" | "refused" | "busy"))
    {
        (StatusCode::OK, None)
    } else {
        (StatusCode::ACCEPTED, None)
    };
    let mut body = serde_json::json!({ "tasks": items });
    if let Some(code) = error {
        body["error"] = code.into();
        body["reason"] = items
            .first()
            .and_then(|i| i.reason.clone())
            .unwrap_or_default()
            .into();
    }
    json_with(status, &body)
}

fn item(id: &str, answer: Option<&Answer>) -> Item {
    let mut it = Item {
        id: id.to_owned(),
        state: "pending",
        durable: false,
        reason: None,
        result: None,
        task: format!("/api/v1/tasks/{id}"),
    };
    match answer {
        None => {
            it.reason = Some(
                "not answered in time; it may still be accepted: follow it, or submit the same id again".into(),
            );
        }
        Some(Answer::Running { .. }) => {
            it.state = "running";
            it.durable = true;
            it.reason = Some("already accepted from an earlier submission of this id".into());
        }
        Some(Answer::Refused { reason, .. }) => {
            it.state = "refused";
            it.reason = Some(reason.clone());
        }
        Some(Answer::Busy { .. }) => {
            it.state = "busy";
            it.reason = Some(format!(
                "the coordinator follows {} submitted tasks already; try again",
                crate::control::WATCHED_MAX
            ));
        }
        Some(Answer::Result { result, durable }) => {
            it.durable = *durable;
            match &result.outcome {
                Outcome::Accepted => it.state = "accepted",
                Outcome::Rejected { reason, .. } => {
                    it.state = "rejected";
                    it.reason = Some(reason.clone());
                }
                _ => {
                    it.state = "finished";
                    it.result = Some(result.clone());
                }
            }
        }
    }
    it
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        let bad = [
            (r#"{}"#, "tasks"),
            (r#"{"tasks": []}"#, "1 to 256"),
            (r#"{"tasks": [{"kind": ""}]}"#, "kind"),
            (r#"{"tasks": [{"kind": "echo", "colour": 1}]}"#, "colour"),
            (r#"{"tasks": [{"kind": "echo", "id": "a/b"}]}"#, "'/'"),
            (
                r#"{"tasks": [{"kind": "echo", "id": "x"}, {"kind": "echo", "id": "x"}]}"#,
                "same id",
            ),
            (
                r#"{"tasks": [{"kind": "echo", "payload": "a", "payload_base64": "YQ=="}]}"#,
                "both",
            ),
            (
                r#"{"tasks": [{"kind": "echo", "payload_base64": "!!"}]}"#,
                "payload_base64",
            ),
            (
                r#"{"tasks": [{"kind": "echo", "timeout_ms": 0}]}"#,
                "timeout_ms",
            ),
            (
                r#"{"tasks": [{"kind": "echo", "strategy": "best"}]}"#,
                "strategy",
            ),
            (r#"{"tasks": [{"kind": "echo", "priority": 300}]}"#, "u8"),
            ("not json", "JSON"),
        ];
        for (body, says) in bad {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(e.reason.contains(says), "{body}: {}", e.reason);
        }
        let ok = parse(
            br#"{"tasks": [{"kind": "echo", "payload": "hi"}, {"kind": "sha256", "id": "t-1", "payload_base64": "AAE=", "timeout_ms": 500, "requires": {"arch": "aarch64"}}]}"#,
        )
        .unwrap();
        assert!(ok[0].id.starts_with("task-"));
        assert_eq!(ok[0].payload.0, b"hi");
        assert_eq!(ok[0].timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(ok[1].id, "t-1");
        assert_eq!(ok[1].payload.0, [0, 1]);
        assert_eq!(ok[1].requires.arch, "aarch64");
    }

    #[test]
    fn the_status_says_what_all_the_tasks_came_to() {
        let ids = ["a".to_string(), "b".to_string()];
        let refused = |id: &str| Answer::Refused {
            id: id.into(),
            reason: "kind".into(),
        };
        let mut m = BTreeMap::new();
        m.insert("a".into(), refused("a"));
        m.insert("b".into(), refused("b"));
        assert_eq!(respond(&ids, &m).status(), StatusCode::FORBIDDEN);
        m.insert("b".into(), Answer::Running { id: "b".into() });
        assert_eq!(respond(&ids, &m).status(), StatusCode::ACCEPTED);
        m.remove("b");
        // b unanswered: pending.
        assert_eq!(respond(&ids, &m).status(), StatusCode::ACCEPTED);
        m.insert("b".into(), Answer::Busy { id: "b".into() });
        assert_eq!(respond(&ids, &m).status(), StatusCode::OK);
    }
}
