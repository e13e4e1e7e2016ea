//! The coordinator's HTTP API and /metrics over a real fleet (a real agent, the
//! embedded broker, or Mosquitto with `FOG_E2E_MOSQUITTO=1`): the node appears with
//! its labels and readings, the health endpoint sees the broker, and an agent killed
//! without a goodbye turns offline in both the API and the metrics once the broker
//! publishes its Last Will.

use std::net::SocketAddr;
use std::time::Duration;

use fog_coordinator::http::HttpServer;
use fog_coordinator::registry::LivenessConfig;
use fog_e2e::{eventually, init_logging, RunningAgent, RunningCoordinator, TestBroker};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// `GET path`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (code, body.to_owned())
}

async fn node_state(addr: SocketAddr, node: &str) -> Option<String> {
    let (code, body) = get(addr, &format!("/api/v1/nodes/{node}")).await;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["node"]["state"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_fleet_through_the_api_and_metrics() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    // Offline detection by the Last Will and the keep-alive bound, as deployed.
    let coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let http = HttpServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind port 0");
    let addr = http.addr;
    let stop = CancellationToken::new();
    tokio::spawn(http.serve(coord.view.clone(), stop.clone()));

    let agent = RunningAgent::start(
        "http-1",
        &broker.url(),
        "metrics_interval_secs = 0.5\n[labels]\nroom = \"barn\"",
        "",
    )
    .expect("agent");
    // Listed with its label, and its first reading in the metrics.
    let row = eventually("http-1 online with its label", WAIT, || async {
        let (_, body) = get(addr, "/api/v1/nodes?state=online&label=room=barn").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["nodes"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(row["node"], "http-1");
    assert_eq!(row["arch"], std::env::consts::ARCH);
    eventually("a reading in /metrics", WAIT, || async {
        let (_, text) = get(addr, "/metrics").await;
        (text.contains("fog_node_up{node=\"http-1\"} 1")
            && text.contains("fog_node_memory_available_bytes{node=\"http-1\"}"))
        .then_some(())
    })
    .await;
    let (code, body) = get(addr, "/api/v1/nodes/http-1").await;
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(code, 200, "{body}");
    assert!(
        v["reading"]["memory"]["total_bytes"].as_u64() > Some(0),
        "{body}"
    );
    assert_eq!(v["birth"]["labels"]["room"], "barn");
    let (code, body) = get(addr, "/api/v1/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"broker\":\"connected\""), "{body}");

    // Killed without a goodbye: the broker's Last Will turns it offline.
    agent.abort();
    eventually("http-1 offline in the API", WAIT, || async {
        (node_state(addr, "http-1").await.as_deref() == Some("offline")).then_some(())
    })
    .await;
    let (_, text) = get(addr, "/metrics").await;
    assert!(text.contains("fog_node_up{node=\"http-1\"} 0"), "{text}");
    assert!(
        !text.contains("fog_node_load1{node=\"http-1\"}"),
        "an offline node's last reading is not exported: {text}"
    );
    stop.cancel();
    coord.stop().await;
}

/// `POST path` with `authorization` (none when empty): the status and the JSON body.
async fn post(addr: SocketAddr, path: &str, authorization: &str, body: &[u8]) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = if authorization.is_empty() {
        String::new()
    } else {
        format!("Authorization: {authorization}\r\n")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, v)
}

/// A real coordinator (journal on disk, its HTTP API) with one signing client, `ops`
/// (kinds echo and sleep only), and one real agent, `node`, online.
struct SignedFleet {
    broker: TestBroker,
    _dir: tempfile::TempDir,
    cfg: fog_coordinator::config::CoordinatorConfig,
    key: fog_rt::keys::KeyPair,
    coord: RunningCoordinator,
    addr: SocketAddr,
    agent: Option<RunningAgent>,
}

impl SignedFleet {
    async fn start(node: &str) -> SignedFleet {
        use fog_coordinator::clients::{ClientPolicy, Kinds};
        use fog_rt::keys::KeyPair;

        init_logging();
        let broker = TestBroker::start().expect("broker");
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::create(&dir.path().join("ops.key")).expect("client key");
        let mut cfg = fog_e2e::fleet(&broker.url()).expect("fleet").coordinator();
        cfg.data_dir = Some(dir.path().join("coordinator"));
        cfg.security.allow_unsigned_submissions = false;
        cfg.security.clients = std::collections::BTreeMap::from([(
            "ops".to_owned(),
            ClientPolicy {
                name: "ops".into(),
                key: key.public().clone(),
                kinds: Kinds::Only(vec!["echo".into(), "sleep".into()]),
                nodes: Vec::new(),
                labels: Default::default(),
            },
        )]);
        let (mut coord, addr) = RunningCoordinator::start_with_api(cfg.clone())
            .await
            .expect("coordinator");
        let agent = RunningAgent::start(node, &broker.url(), "", "").expect("agent");
        coord
            .wait_for("the agent online", WAIT, |s| {
                s.nodes
                    .iter()
                    .any(|n| n.node.as_str() == node && n.state == fog_proto::NodeState::Online)
            })
            .await;
        SignedFleet {
            broker,
            _dir: dir,
            cfg,
            key,
            coord,
            addr,
            agent: Some(agent),
        }
    }

    /// The `Authorization` header of `ops` for `POST path` with `body`, now.
    fn signed(&self, path: &str, body: &[u8]) -> String {
        fog_coordinator::http::auth::authorization(
            "ops",
            &self.key,
            "POST",
            path,
            fog_rt::clock::now_ms(),
            body,
        )
    }
}

/// Tasks submitted over HTTP to a real coordinator (journal on disk) and a real agent:
/// only a signed request of a configured client is taken; its policy holds (kind
/// `sha256` refused, 403); an allowed task is accepted once durable (202), runs, and
/// is followed to its result with `?wait=`; the same id again is answered from the
/// journal (`finished`) or as `running`; a replayed request, a forged one and bad
/// input are refused with the right code, and none of them ran anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submitted_over_http_are_signed_checked_and_journaled() {
    use fog_coordinator::http::auth::authorization;
    use fog_rt::keys::KeyPair;

    let f = SignedFleet::start("post-1").await;
    let addr = f.addr;
    let signed = |path: &str, body: &[u8]| f.signed(path, body);
    let tasks = "/api/v1/tasks";

    // Unsigned, forged, by a stranger: 401, nothing taken.
    let one = br#"{"tasks": [{"id": "h-0", "kind": "echo", "payload": "no"}]}"#;
    let (code, v) = post(addr, tasks, "", one).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let other = KeyPair::generate().expect("a key").0;
    let forged = authorization("ops", &other, "POST", tasks, fog_rt::clock::now_ms(), one);
    let (code, v) = post(addr, tasks, &forged, one).await;
    assert_eq!(code, 401, "{v}");
    // Signed for another body: the signature covers it.
    let (code, v) = post(addr, tasks, &signed(tasks, b"{}"), one).await;
    assert_eq!(code, 401, "{v}");

    // Bad input, signed: 422 / 400 with the field named.
    let bad = br#"{"tasks": [{"kind": "echo", "timeout_ms": 0}]}"#;
    let (code, v) = post(addr, tasks, &signed(tasks, bad), bad).await;
    assert_eq!(code, 422, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("timeout_ms"), "{v}");
    let q = "/api/v1/tasks?wait=forever";
    let (code, v) = post(addr, q, &signed(q, one), one).await;
    assert_eq!(code, 400, "{v}");

    // A kind the client may not submit: 403, refused, with the reason.
    let sha = br#"{"tasks": [{"id": "h-sha", "kind": "sha256", "payload": "x"}]}"#;
    let (code, v) = post(addr, tasks, &signed(tasks, sha), sha).await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(v["tasks"][0]["state"], "refused", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("sha256"), "{v}");

    // Allowed: accepted once durable.
    let hello = br#"{"tasks": [{"id": "h-1", "kind": "echo", "payload": "hello"}]}"#;
    let auth = signed(tasks, hello);
    let (code, v) = post(addr, tasks, &auth, hello).await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["tasks"][0]["state"], "accepted", "{v}");
    assert_eq!(v["tasks"][0]["durable"], true, "{v}");
    assert_eq!(v["tasks"][0]["task"], "/api/v1/tasks/h-1", "{v}");
    // The same signed request again: a replay.
    let (code, v) = post(addr, tasks, &auth, hello).await;
    assert_eq!(code, 401, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("replay"), "{v}");

    // Followed to its result.
    let q = "/api/v1/tasks?wait=20";
    let hi = br#"{"tasks": [{"id": "h-2", "kind": "echo", "payload": "hi"}]}"#;
    let (code, v) = post(addr, q, &signed(q, hi), hi).await;
    assert_eq!(code, 200, "{v}");
    let t = &v["tasks"][0];
    assert_eq!(t["state"], "finished", "{v}");
    assert_eq!(t["result"]["node"], "post-1", "{v}");
    assert_eq!(
        t["result"]["outcome"]["completed"]["output"], "aGk=",
        "echo's output is its payload (base64): {v}"
    );
    // The same id, a new request: answered from the journal, not run again.
    let (code, v) = post(addr, q, &signed(q, hi), hi).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["tasks"][0]["state"], "finished", "{v}");
    assert_eq!(v["tasks"][0]["durable"], true, "{v}");

    // Still running when the same id comes again: `running`, one task.
    let nap = br#"{"tasks": [{"id": "h-3", "kind": "sleep", "payload": "1500"}]}"#;
    let (code, v) = post(addr, tasks, &signed(tasks, nap), nap).await;
    assert_eq!(
        (code, v["tasks"][0]["state"].as_str()),
        (202, Some("accepted")),
        "{v}"
    );
    let (code, v) = post(addr, tasks, &signed(tasks, nap), nap).await;
    assert_eq!(
        (code, v["tasks"][0]["state"].as_str()),
        (202, Some("running")),
        "{v}"
    );

    // h-1 is in the task list, finished; what was refused never became a task.
    eventually("h-1 and h-3 finished in the API", WAIT, || async {
        let (_, body) = get(addr, "/api/v1/tasks/h-3").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["task"]["state"] == "completed").then_some(())
    })
    .await;
    let (_, body) = get(addr, "/api/v1/tasks/h-1").await;
    assert!(body.contains("\"state\":\"completed\""), "{body}");
    for never in ["h-0", "h-sha"] {
        let (code, body) = get(addr, &format!("/api/v1/tasks/{never}")).await;
        assert_eq!(code, 404, "{never}: {body}");
    }
    assert_eq!(
        f.coord.counter("tasks_submitted_total"),
        3,
        "h-1, h-2 and h-3, once each"
    );
    f.coord.stop().await;
}

/// `nodes forget` through the API: refused unsigned (401), for an unknown node
/// (404) and while the node is online (409); an offline node leaves the API and the
/// metrics, a restarted coordinator does not take it back from its retained
/// goodbye, and its agent started again brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_node_stays_gone_until_its_agent_starts_again() {
    let mut f = SignedFleet::start("gone-1").await;
    let path = "/api/v1/nodes/gone-1/forget";
    let (code, v) = post(f.addr, path, "", b"").await;
    assert_eq!(
        (code, v["error"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let nobody = "/api/v1/nodes/nobody/forget";
    let (code, v) = post(f.addr, nobody, &f.signed(nobody, b""), b"").await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = post(f.addr, path, &f.signed(path, b""), b"").await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("node_online")),
        "{v}"
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("stop its agent"),
        "{v}"
    );

    // Stopped: offline by its goodbye (retained), then forgotten.
    f.agent.take().expect("the agent").stop().await;
    let addr = f.addr;
    eventually("gone-1 offline", WAIT, || async {
        (node_state(addr, "gone-1").await.as_deref() == Some("offline")).then_some(())
    })
    .await;
    let (code, v) = post(addr, path, &f.signed(path, b""), b"").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["node"].as_str(), v["was"].as_str()),
        (Some("gone-1"), Some("offline"))
    );
    eventually("gone-1 gone from the API", WAIT, || async {
        (get(addr, "/api/v1/nodes/gone-1").await.0 == 404).then_some(())
    })
    .await;
    let (_, text) = get(addr, "/metrics").await;
    assert!(!text.contains("gone-1"), "{text}");
    f.coord.stop().await;

    // A restart receives the retained goodbye again: dropped, still forgotten.
    let (coord, addr) = RunningCoordinator::start_with_api(f.cfg.clone())
        .await
        .expect("coordinator again");
    eventually("the retained goodbye dropped", WAIT, || async {
        (coord.counter("rejected_forgotten_total") >= 1).then_some(())
    })
    .await;
    assert_eq!(get(addr, "/api/v1/nodes/gone-1").await.0, 404);

    // Its agent started again: back.
    let agent = RunningAgent::start("gone-1", &f.broker.url(), "", "").expect("agent");
    eventually("gone-1 back", WAIT, || async {
        (node_state(addr, "gone-1").await.as_deref() == Some("online")).then_some(())
    })
    .await;
    agent.stop().await;
    coord.stop().await;
}
