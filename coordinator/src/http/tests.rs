//! The API through a real listener on port 0 and plain HTTP/1.1 requests: every
//! endpoint, its filters, its errors, and the OpenAPI document against the routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use fog_proto::{
    Birth, Disk, NodeHealth, NodeId, NodeState, NodeSummary, Reading, TaskSummary, Temperature,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::HttpServer;
use crate::service::Snapshot;
use crate::view::{Health, JournalHealth, NodeDetail, View};

fn summary(id: &str, state: NodeState) -> NodeSummary {
    NodeSummary {
        node: NodeId::new(id).expect("valid id"),
        arch: "aarch64".into(),
        state,
        cores: 4,
        cpu_pct: Some(12.5),
        mem_pct: Some(40.0),
        load1: Some(0.5),
        last_seen_ms: fog_rt::clock::now_ms(),
        version: "0.1.0".into(),
        queued: 0,
        running: 1,
        health: match state {
            NodeState::Online => NodeHealth::Healthy,
            NodeState::Suspect => NodeHealth::Suspect,
            NodeState::Offline => NodeHealth::Offline,
        },
        in_flight: 1,
        breaker: "closed".into(),
        latency_ms: 3.0,
        degraded: Vec::new(),
        identity: "approved".into(),
        task_trust: Default::default(),
        notices: Vec::new(),
        drained: false,
    }
}

fn birth(id: &str, room: &str) -> Birth {
    Birth {
        node: NodeId::new(id).expect("valid id"),
        version: "0.1.0".into(),
        arch: "aarch64".into(),
        cores: 4,
        memory_bytes: 1 << 30,
        labels: BTreeMap::from([("room".to_owned(), room.to_owned())]),
        encoding: Default::default(),
        task_kinds: vec!["echo".into()],
        heartbeat_interval_ms: 5000,
        metrics_interval_ms: 10000,
        keep_alive_secs: 30,
        started_at_ms: 1,
        node_key: String::new(),
        task_trust: Default::default(),
    }
}

fn reading() -> Reading {
    let mut r = Reading {
        at_ms: fog_rt::clock::now_ms(),
        uptime_secs: 3600,
        ..Default::default()
    };
    r.load.one = 0.5;
    r.memory.total_bytes = 1 << 30;
    r.memory.available_bytes = 1 << 29;
    r.disks.push(Disk {
        mount: "/".into(),
        device: "mmcblk0p2".into(),
        fs_type: "ext4".into(),
        total_bytes: 32 << 30,
        available_bytes: 20 << 30,
        ..Default::default()
    });
    r.temperatures.push(Temperature {
        sensor: "thermal_zone0/cpu-thermal".into(),
        celsius: 48.5,
    });
    r
}

fn task(id: &str, node: &str, state: &str) -> TaskSummary {
    TaskSummary {
        id: id.into(),
        kind: "echo".into(),
        node: node.into(),
        attempt: 1,
        state: state.into(),
        detail: String::new(),
        at_ms: 1,
    }
}

/// Three nodes (pi-1 online in the lab, pi-2 offline in the barn, pi-3 suspect with
/// no birth), three running tasks and two that ended.
pub(crate) fn fleet_view() -> View {
    let mut status = crate::service::empty_snapshot().status.clone();
    status.online = true;
    status.at_ms = fog_rt::clock::now_ms();
    status.nodes = vec![
        summary("pi-1", NodeState::Online),
        summary("pi-2", NodeState::Offline),
        summary("pi-3", NodeState::Suspect),
    ];
    status.running = vec![
        task("t1", "pi-1", "running"),
        task("t2", "pi-1", "running"),
        task("t3", "", "waiting"),
    ];
    status.recent = vec![
        task("t4", "pi-2", "completed"),
        task("t5", "pi-2", "failed"),
    ];
    status.counters = BTreeMap::from([
        ("tasks_submitted_total".to_owned(), 5),
        ("tasks_waiting".to_owned(), 1),
        ("tasks_in_flight".to_owned(), 3),
    ]);
    let mut details = BTreeMap::new();
    for (id, room) in [("pi-1", "lab"), ("pi-2", "barn")] {
        details.insert(
            NodeId::new(id).expect("valid id"),
            NodeDetail {
                birth: Some(Arc::new(birth(id, room))),
                reading: Some(Arc::new(reading())),
                offline_reason: String::new(),
            },
        );
    }
    let profiles = crate::profiles::Profiles::default();
    let view = View {
        status,
        details,
        health: Health {
            broker: true,
            journal: JournalHealth::Ok,
            in_flight: 3,
        },
        trends: Default::default(),
        profiles: Arc::new(std::sync::RwLock::new(profiles)),
        drained: Default::default(),
        latency: {
            let mut l = crate::latency::Latencies {
                journal_commit: Some(Default::default()),
                ..Default::default()
            };
            l.placement.observe(std::time::Duration::from_micros(80));
            if let Some(j) = &mut l.journal_commit {
                j.observe(std::time::Duration::from_micros(900));
            }
            l
        },
    };
    // Two echoes ran on pi-1, one failed on pi-2.
    let now = fog_rt::clock::now_ms();
    let ran = fog_proto::Outcome::Completed {
        output: Default::default(),
        truncated: false,
        exit_code: Some(0),
        duration_ms: 3,
        cpu_ms: 1,
        peak_rss_bytes: 1 << 20,
        from_cache: false,
    };
    let failed = fog_proto::Outcome::Failed {
        error: "exit 1".into(),
        retryable: false,
        exit_code: Some(1),
        duration_ms: 40,
    };
    {
        let mut p = view.profiles.write().expect("not poisoned");
        for (node, o) in [("pi-1", &ran), ("pi-1", &ran), ("pi-2", &failed)] {
            let s =
                crate::profiles::TaskSample::new("echo", node, o, now - 10, now).expect("an end");
            p.record(&s);
        }
    }
    view
}

struct Api {
    addr: SocketAddr,
    view: watch::Sender<Snapshot>,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn api(view: View) -> Api {
    let (tx, rx) = watch::channel::<Snapshot>(Arc::new(view));
    let server = HttpServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind port 0");
    let addr = server.addr;
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(rx, stop.clone()));
    Api {
        addr,
        view: tx,
        stop,
    }
}

/// One request on its own connection: status code, content type, body.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    // The server may answer before reading all of a large body, and close.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (code, ctype, body.to_owned())
}

/// The head of an event stream and its first event (the stream never ends).
async fn first_event(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let code: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status");
            if code != 200 {
                return (code, String::new(), body.to_owned());
            }
            // Chunked: the first chunk's size line, then the event up to its blank line.
            if let Some((event, _)) = body
                .split_once("\r\n")
                .and_then(|(_, e)| e.split_once("\n\n"))
            {
                let code = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .expect("status");
                let ctype = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-type: ")
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                return (code, ctype, event.to_owned());
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("an event within 5 s")
            .expect("read");
        assert!(n > 0, "stream closed: {text}");
        raw.extend_from_slice(&buf[..n]);
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (code, ctype, body) = request(addr, "GET", path, b"").await;
    assert_eq!(ctype, "application/json", "{path}: {body}");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

/// A 4xx with the JSON error body that names what was wrong.
async fn refused(addr: SocketAddr, path: &str, code: u16, says: &str) {
    let (c, v) = get(addr, path).await;
    assert_eq!(c, code, "{path}: {v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(says),
        "{path}: {reason:?} should say {says:?}"
    );
    assert!(v["error"].is_string(), "{path}: {v}");
}

#[tokio::test]
async fn health_says_which_part_is_not_well() {
    let a = api(fleet_view()).await;
    let (code, v) = get(a.addr, "/api/v1/health").await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")), "{v}");
    assert_eq!(v["journal"], "ok");

    let mut broken = fleet_view();
    broken.health.journal = JournalHealth::Failing;
    a.view.send_replace(Arc::new(broken));
    let (code, v) = get(a.addr, "/api/v1/health").await;
    assert_eq!((code, v["journal"].as_str()), (503, Some("failing")), "{v}");

    let mut stalled = fleet_view();
    stalled.status.at_ms -= 60_000;
    a.view.send_replace(Arc::new(stalled));
    let (code, v) = get(a.addr, "/api/v1/health").await;
    assert_eq!(
        (code, v["main_loop"].as_str()),
        (503, Some("stalled")),
        "{v}"
    );

    a.view.send_replace(crate::service::empty_snapshot());
    let (code, v) = get(a.addr, "/api/v1/health").await;
    assert_eq!((code, v["status"].as_str()), (503, Some("starting")), "{v}");
}

#[tokio::test]
async fn nodes_filter_by_state_health_and_labels() {
    let a = api(fleet_view()).await;
    let ids = |v: &Value| -> Vec<String> {
        v["nodes"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| n["node"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (code, v) = get(a.addr, "/api/v1/nodes").await;
    assert_eq!(
        (code, ids(&v)),
        (200, vec!["pi-1".into(), "pi-2".into(), "pi-3".into()])
    );
    assert_eq!(v["nodes"][0]["labels"]["room"], "lab");
    let (_, v) = get(a.addr, "/api/v1/nodes?state=offline").await;
    assert_eq!(ids(&v), ["pi-2"]);
    let (_, v) = get(a.addr, "/api/v1/nodes?health=suspect").await;
    assert_eq!(ids(&v), ["pi-3"]);
    let (_, v) = get(a.addr, "/api/v1/nodes?label=room%3Dlab").await;
    assert_eq!(ids(&v), ["pi-1"]);
    let (_, v) = get(a.addr, "/api/v1/nodes?label=room=lab&label=rack=1").await;
    assert!(ids(&v).is_empty());

    refused(
        a.addr,
        "/api/v1/nodes?state=sleeping",
        400,
        "online, suspect, offline",
    )
    .await;
    refused(
        a.addr,
        "/api/v1/nodes?stat=online",
        400,
        "unknown query parameter \"stat\"",
    )
    .await;
    refused(a.addr, "/api/v1/nodes?label=room", 400, "KEY=VALUE").await;
    refused(
        a.addr,
        "/api/v1/nodes?state=online&state=offline",
        400,
        "more than once",
    )
    .await;
}

#[tokio::test]
async fn a_node_shows_its_birth_reading_and_tasks() {
    let a = api(fleet_view()).await;
    let (code, v) = get(a.addr, "/api/v1/nodes/pi-1").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["node"]["state"], "online");
    assert_eq!(v["birth"]["labels"]["room"], "lab");
    assert_eq!(v["reading"]["disks"][0]["mount"], "/");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(2));
    let (_, v) = get(a.addr, "/api/v1/nodes/pi-3").await;
    assert!(v["birth"].is_null() && v["reading"].is_null(), "{v}");
    refused(a.addr, "/api/v1/nodes/nope", 404, "no node \"nope\"").await;
    refused(a.addr, "/api/v1/nodes/%FF", 400, "bad path").await;
}

#[tokio::test]
async fn tasks_page_and_filter() {
    let a = api(fleet_view()).await;
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| t["id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (code, v) = get(a.addr, "/api/v1/tasks").await;
    assert_eq!(
        (code, ids(&v).len(), v["total"].as_u64()),
        (200, 5, Some(5))
    );
    assert!(v["next_offset"].is_null());
    let (_, v) = get(a.addr, "/api/v1/tasks?limit=2&offset=1").await;
    assert_eq!(ids(&v), ["t2", "t3"]);
    assert_eq!(v["next_offset"], 3);
    let (_, v) = get(a.addr, "/api/v1/tasks?offset=10").await;
    assert!(ids(&v).is_empty());
    let (_, v) = get(a.addr, "/api/v1/tasks?state=failed").await;
    assert_eq!(ids(&v), ["t5"]);
    let (_, v) = get(a.addr, "/api/v1/tasks?node=pi-1&kind=echo").await;
    assert_eq!(ids(&v), ["t1", "t2"]);
    let (code, v) = get(a.addr, "/api/v1/tasks/t4").await;
    assert_eq!(
        (code, v["task"]["state"].as_str()),
        (200, Some("completed"))
    );

    refused(a.addr, "/api/v1/tasks?limit=0", 400, "1 to 1000").await;
    refused(a.addr, "/api/v1/tasks?limit=1001", 400, "1 to 1000").await;
    refused(a.addr, "/api/v1/tasks?offset=-1", 400, "offset").await;
    refused(a.addr, "/api/v1/tasks?limit=ten", 400, "limit").await;
    refused(a.addr, "/api/v1/tasks?state=lost", 400, "running").await;
    refused(a.addr, "/api/v1/tasks/t9", 404, "no task \"t9\"").await;
}

#[tokio::test]
async fn unknown_paths_methods_and_bodies_get_json_errors() {
    let a = api(fleet_view()).await;
    refused(a.addr, "/api/v1/nope", 404, "openapi.json").await;
    refused(a.addr, "/index.php", 404, "no such endpoint").await;
    for (method, body) in [
        ("POST", b"{not json".to_vec()),
        ("DELETE", Vec::new()),
        ("POST", vec![b'x'; 20 << 20]),
    ] {
        let (code, ctype, text) = request(a.addr, method, "/api/v1/nodes", &body).await;
        assert_eq!(
            (code, ctype.as_str()),
            (405, "application/json"),
            "{method}: {text}"
        );
        assert!(text.contains("GET only"), "{text}");
    }
    // Still serving after all of it.
    let (code, _) = get(a.addr, "/api/v1/health").await;
    assert_eq!(code, 200);
}

/// `"#/components/x/y"` in the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(doc, |d, k| &d[k]),
        None => v,
    }
}

/// Every route is documented, every documented path answers GET with a documented
/// code, and a JSON answer has the properties its schema requires.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let doc: Value = serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
    let a = api(fleet_view()).await;
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    let mut served = super::ROUTES
        .iter()
        .chain(&super::POST_ROUTES)
        .map(|r| r.replace(":node", "{node}").replace(":id", "{id}"))
        .collect::<Vec<_>>();
    served.sort_unstable();
    // A path may take GET and POST (`/api/v1/tasks`): documented once.
    served.dedup();
    assert_eq!(documented, served);
    for (path, item) in paths {
        let concrete = path.replace("{node}", "pi-1").replace("{id}", "t1");
        if item.get("get").is_none() {
            // A signed POST, here unsigned to a read-only server: a documented 405
            // (the signed cases: only_a_signed_authorised_drain_is_taken).
            let (code, _, body) = request(a.addr, "POST", &concrete, b"").await;
            assert_eq!(code, 405, "{path}: {body}");
            let doc_response = &item["post"]["responses"][code.to_string()];
            assert!(
                resolve(&doc, doc_response).is_object(),
                "{path}: {code} undocumented"
            );
            continue;
        }
        let responses = &item["get"]["responses"];
        if responses["200"]["content"]["text/event-stream"].is_object() {
            let (code, ctype, first) = first_event(a.addr, &concrete).await;
            assert_eq!((code, ctype.as_str()), (200, "text/event-stream"), "{path}");
            assert!(
                first.starts_with("event: fleet\ndata: {"),
                "{path}: {first}"
            );
            continue;
        }
        let (code, ctype, body) = request(a.addr, "GET", &concrete, b"").await;
        let doc_response = resolve(&doc, &responses[code.to_string()]);
        assert!(doc_response.is_object(), "{path}: {code} is not documented");
        if !ctype.starts_with("application/json") {
            let media = ctype.split(';').next().unwrap_or_default();
            assert!(
                doc_response["content"][media].is_object(),
                "{path}: {ctype}"
            );
            continue;
        }
        let schema = resolve(&doc, &doc_response["content"]["application/json"]["schema"]);
        let v: Value = serde_json::from_str(&body).expect("JSON");
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().expect("a name");
            assert!(v.get(key).is_some(), "{path}: no {key:?} in {body}");
        }
    }
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let a = api(fleet_view()).await;
    let (code, ctype, body) = request(a.addr, "GET", "/metrics", b"").await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(body.contains("fog_node_up{node=\"pi-1\"} 1"), "{body}");
}

#[tokio::test]
async fn history_and_a_bounded_number_of_live_streams() {
    let a = api(fleet_view()).await;
    let (code, v) = get(a.addr, "/api/v1/nodes/pi-1/history").await;
    assert_eq!(
        (code, v["samples"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    refused(a.addr, "/api/v1/nodes/nope/history", 404, "no node").await;
    let (code, v) = get(a.addr, "/api/v1/fleet/history").await;
    assert_eq!((code, v["samples"].is_array()), (200, true));

    // Every stream the server allows, held open; one more is refused, and served
    // again once one closes.
    let mut open = Vec::new();
    for _ in 0..super::console::MAX_STREAMS {
        let mut s = tokio::net::TcpStream::connect(a.addr)
            .await
            .expect("connect");
        s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        open.push(s);
    }
    let (code, _, body) = request(a.addr, "GET", "/api/v1/events", b"").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("live streams are open already"), "{body}");
    drop(open.pop());
    // The server sees the close when it next reads that connection.
    let mut served = false;
    for _ in 0..40 {
        let (code, _, _) = first_event(a.addr, "/api/v1/events").await;
        if code == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "a stream is served again once one closes");
    // The page is the one in the binary.
    let (code, ctype, page) = request(a.addr, "GET", "/", b"").await;
    assert_eq!((code, ctype.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        page.contains("EventSource(\"/api/v1/events\")")
            && !page.contains("http://")
            && !page.contains("https://"),
        "everything from the coordinator, nothing from a CDN"
    );
}

/// A server that takes signed drains, for client `ops` (who may act on pi-1 only),
/// and a stand-in main loop that answers them.
async fn controlled() -> (Api, fog_rt::keys::KeyPair) {
    let (key, _) = fog_rt::keys::KeyPair::generate().expect("a key");
    let clients = crate::clients::Clients::from([(
        "ops".to_owned(),
        crate::clients::ClientPolicy {
            name: "ops".into(),
            key: key.public().clone(),
            kinds: crate::clients::Kinds::Any,
            nodes: vec!["pi-1".into()],
            labels: BTreeMap::new(),
        },
    )]);
    let (tx, mut rx) = crate::control::channel();
    tokio::spawn(async move {
        while let Some(crate::control::Command::Drain { node, drain, reply }) = rx.recv().await {
            let _ = reply.send(crate::control::Drained {
                node: node.to_string(),
                drained: drain,
                changed: true,
                in_flight: 1,
            });
        }
    });
    let (vtx, vrx) = watch::channel::<Snapshot>(Arc::new(fleet_view()));
    let server = HttpServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = server.addr;
    let stop = CancellationToken::new();
    let control = super::Control::new(clients, std::time::Duration::from_secs(300), tx);
    tokio::spawn(server.serve_with_control(vrx, control, stop.clone()));
    (
        Api {
            addr,
            view: vtx,
            stop,
        },
        key,
    )
}

/// A POST with `auth` as its Authorization header (none if empty).
async fn post(addr: SocketAddr, path: &str, auth: &str, body: &[u8]) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("Authorization: {auth}\r\n")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn only_a_signed_authorised_drain_is_taken() {
    let (a, key) = controlled().await;
    let now = fog_rt::clock::now_ms();
    let sign = |path: &str, at: u64, body: &[u8]| {
        super::auth::authorization("ops", &key, "POST", path, at, body)
    };
    let drain = "/api/v1/nodes/pi-1/drain";
    let reason = |v: &Value| v["reason"].as_str().unwrap_or_default().to_owned();

    // The attacks, each refused with what failed.
    let (code, v) = post(a.addr, drain, "", b"").await;
    assert_eq!(code, 401, "unsigned: {v}");
    assert!(reason(&v).contains("signed request"));
    let (other, _) = fog_rt::keys::KeyPair::generate().expect("a key");
    let forged = super::auth::authorization("ops", &other, "POST", drain, now, b"");
    let (code, v) = post(a.addr, drain, &forged, b"").await;
    assert_eq!(code, 401, "signed by another key: {v}");
    assert!(reason(&v).contains("not client \"ops\"'s"), "{v}");
    let stranger = super::auth::authorization("mallory", &other, "POST", drain, now, b"");
    let (code, v) = post(a.addr, drain, &stranger, b"").await;
    assert_eq!(
        (code, reason(&v).contains("not configured")),
        (401, true),
        "{v}"
    );
    let (code, v) = post(
        a.addr,
        drain,
        &sign("/api/v1/nodes/pi-1/undrain", now, b""),
        b"",
    )
    .await;
    assert_eq!(code, 401, "signed for another path: {v}");
    let (code, v) = post(a.addr, drain, &sign(drain, now - 600_000, b""), b"").await;
    assert_eq!(
        (code, reason(&v).contains("from this coordinator's clock")),
        (401, true),
        "stale: {v}"
    );
    let (code, v) = post(
        a.addr,
        "/api/v1/nodes/pi-2/drain",
        &sign("/api/v1/nodes/pi-2/drain", now, b""),
        b"",
    )
    .await;
    assert_eq!(code, 403, "a node the client may not act on: {v}");
    let (code, v) = post(a.addr, drain, "Basic b3BzOm9wcw==", b"").await;
    assert_eq!(code, 401, "another scheme: {v}");
    let big = vec![b'x'; super::MAX_BODY_BYTES + 1];
    let (code, _) = post(a.addr, drain, &sign(drain, now, &big), &big).await;
    assert_eq!(code, 413, "a body over the limit");
    assert_eq!(
        v_err_code(a.addr, drain, &big).await,
        "too_large",
        "in the JSON shape"
    );

    // The real thing, once; its replay is refused.
    let good = sign(drain, now, b"");
    let (code, v) = post(a.addr, drain, &good, b"").await;
    assert_eq!(
        (code, v["drained"].as_bool(), v["node"].as_str()),
        (200, Some(true), Some("pi-1")),
        "{v}"
    );
    let (code, v) = post(a.addr, drain, &good, b"").await;
    assert_eq!(
        (code, reason(&v).contains("already received")),
        (401, true),
        "replayed: {v}"
    );
    let undrain = "/api/v1/nodes/pi-1/undrain";
    let (code, v) = post(a.addr, undrain, &sign(undrain, now + 1, b""), b"").await;
    assert_eq!((code, v["drained"].as_bool()), (200, Some(false)), "{v}");
    let (code, _) = post(
        a.addr,
        "/api/v1/nodes/nope/drain",
        &sign("/api/v1/nodes/nope/drain", now, b""),
        b"",
    )
    .await;
    assert_eq!(code, 404);

    // A page elsewhere that rebinds its name to 127.0.0.1 is refused (DNS rebinding).
    let mut sock = tokio::net::TcpStream::connect(a.addr)
        .await
        .expect("connect");
    sock.write_all(
        b"GET /api/v1/nodes HTTP/1.1\r\nHost: evil.example:9464\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut raw = Vec::new();
    let _ = sock.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains("forbidden_host"),
        "{text}"
    );

    // A read-only server takes no change at all.
    let ro = api(fleet_view()).await;
    let (code, v) = post(ro.addr, drain, &sign(drain, now + 2, b""), b"").await;
    assert_eq!((code, reason(&v).contains("read-only")), (405, true), "{v}");
}

/// The JSON `error` code of an unsigned POST of `body`.
async fn v_err_code(addr: SocketAddr, path: &str, body: &[u8]) -> String {
    let (_, v) = post(addr, path, "", body).await;
    v["error"].as_str().unwrap_or_default().to_owned()
}
