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
