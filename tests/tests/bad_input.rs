//! Malformed, oversized and wrong-topic messages on every topic the coordinator
//! subscribes to are counted by reason, and nothing stops: good messages sent after
//! them are still taken in.

use std::time::Duration;

use fog_coordinator::registry::LivenessConfig;
use fog_e2e::{init_logging, RunningCoordinator, TestBroker};
use fog_proto::{codec, Encoding, Heartbeat, Status};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, QoS};

const WAIT: Duration = Duration::from_secs(20);

fn status_for(node: &str) -> Status {
    fog_e2e::online_record(node, 1000, 10)
}

/// A plain MQTT client publishing as "hostile-publisher", and its event loop's task.
fn hostile_publisher(port: u16) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new("hostile-publisher", "127.0.0.1", port);
    opts.set_max_packet_size(2 << 20, 2 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    (client, driver)
}

/// Bad messages on every topic the coordinator reads: (topic, payload, counter it
/// must land in).
fn bad_messages() -> Vec<(String, Vec<u8>, &'static str)> {
    let long_node = "n".repeat(65);
    let hb = codec::encode(&Heartbeat::default(), Encoding::Json).expect("encodes");
    let oversized = |n: usize| {
        let mut v = b"{\"v\":1,\"pad\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'x', n));
        v.extend(b"\"}");
        v
    };
    vec![
        // status
        (
            "fog/v1/nodes/x1/status".into(),
            b"not a status".to_vec(),
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/status".into(),
            vec![0xF0, 0x01, 0x02],
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/status".into(),
            oversized(20_000),
            "rejected_oversized_total",
        ),
        (
            "fog/v1/nodes/x1/status".into(),
            codec::encode(&status_for("someone-else"), Encoding::Json).expect("encodes"),
            "rejected_wrong_topic_total",
        ),
        (
            format!("fog/v1/nodes/{long_node}/status"),
            codec::encode(&status_for("x"), Encoding::Json).expect("encodes"),
            "rejected_bad_node_id_total",
        ),
        // heartbeat
        (
            "fog/v1/nodes/x1/heartbeat".into(),
            b"{\"v\":1,\"seq\":\"nope\"}".to_vec(),
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/heartbeat".into(),
            b"{\"v\":99,\"seq\":1}".to_vec(),
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/heartbeat".into(),
            Vec::new(),
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/heartbeat".into(),
            oversized(3_000),
            "rejected_oversized_total",
        ),
        (
            format!("fog/v1/nodes/{long_node}/heartbeat"),
            hb.clone(),
            "rejected_bad_node_id_total",
        ),
        // metrics
        (
            "fog/v1/nodes/x1/metrics".into(),
            hb.clone(),
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/metrics".into(),
            vec![0xff; 64],
            "rejected_malformed_total",
        ),
        (
            "fog/v1/nodes/x1/metrics".into(),
            oversized(300_000),
            "rejected_oversized_total",
        ),
        (
            format!("fog/v1/nodes/{long_node}/metrics"),
            hb.clone(),
            "rejected_bad_node_id_total",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_and_nothing_stops() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord = RunningCoordinator::start_open(&broker.url(), LivenessConfig::default())
        .expect("coordinator");
    coord
        .wait_for("coordinator connected", WAIT, |s| s.online)
        .await;

    let (client, driver) = hostile_publisher(broker.addr.port());
    let hb = codec::encode(&Heartbeat::default(), Encoding::Json).expect("encodes");
    let bad = bad_messages();
    for (topic, payload, _) in &bad {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
    }
    // Then a good one, which must still be taken in.
    client
        .publish(
            "fog/v1/nodes/good-1/heartbeat",
            QoS::AtLeastOnce,
            false,
            hb.clone(),
        )
        .await
        .expect("queued");

    let snap = coord
        .wait_for("the good heartbeat after the bad ones", WAIT, |s| {
            s.nodes.iter().any(|n| n.node.as_str() == "good-1")
        })
        .await;
    // Same publisher, QoS 1: the broker delivers in order, so every bad one came first.
    let c = |k: &str| snap.counters.get(k).copied().unwrap_or(0);
    let expect = |k: &str| bad.iter().filter(|(_, _, r)| *r == k).count() as u64;
    for reason in [
        "rejected_malformed_total",
        "rejected_oversized_total",
        "rejected_wrong_topic_total",
        "rejected_bad_node_id_total",
    ] {
        assert_eq!(c(reason), expect(reason), "{reason}: {:#?}", snap.counters);
    }
    assert_eq!(c("rejected_total"), bad.len() as u64);
    assert_eq!(
        snap.nodes.len(),
        1,
        "no node was created from bad input: {:#?}",
        snap.nodes
    );
    assert!(snap.online, "the coordinator is still serving");

    client.disconnect().await.expect("disconnect");
    let _ = driver.await;
    coord.stop().await;
}
