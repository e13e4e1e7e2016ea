//! The exactly-once check itself: a [`FinalsTap`] counts final results on the wire, so
//! a duplicate the client library would hide still fails a test. Here duplicates are
//! injected on purpose (a conflicting final, an identical resend) and the check must
//! catch each, with a clean run as the positive control.

use std::time::Duration;

use fog_coordinator::client::{self, Client};
use fog_coordinator::registry::LivenessConfig;
use fog_e2e::{init_logging, FinalsTap, Resend, RunningAgent, RunningCoordinator, TestBroker};
use fog_proto::{codec, Encoding, NodeId, NodeState, Outcome, TaskResult, TaskResults, Topics};
use rumqttc::{AsyncClient, MqttOptions, QoS};

const WAIT: Duration = Duration::from_secs(30);

async fn publish_raw(broker: &TestBroker, topic: &str, payload: Vec<u8>) {
    let mut opts = MqttOptions::new("duplicate-injector", "127.0.0.1", broker.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 8);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queued");
    // Until the PUBACK: then the broker has it.
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                eventloop.poll().await.expect("connected")
            {
                break;
            }
        }
    })
    .await
    .expect("acknowledged");
}

/// Until the tap holds `n` finals for `id` (the injected one has crossed the broker).
async fn wait_for_finals(tap: &mut FinalsTap, id: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tap.finals(id).len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id}: fewer than {n} finals"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_final_result_on_the_wire_fails_the_exactly_once_check() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let agent = RunningAgent::start("once-1", &broker.url(), "", "").expect("agent");
    coord
        .wait_for("once-1 online", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "once-1" && n.state == NodeState::Online)
        })
        .await;
    let mut tap = FinalsTap::start(broker.addr).await;
    let cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");
    let mut c = Client::connect(&cfg, Topics::default(), Duration::from_secs(10))
        .await
        .expect("client");
    let subs: Vec<_> = (0..5)
        .map(|i| client::submission("echo", format!("e{i}").into_bytes(), 0, WAIT, false))
        .collect();
    let ids = c.submit_many(subs).await.expect("submitted");
    let mut finals = 0;
    while finals < ids.len() {
        let r = tokio::time::timeout(WAIT, c.next_result())
            .await
            .expect("results flow")
            .expect("client ok")
            .expect("open");
        if !matches!(r.outcome, Outcome::Accepted) {
            finals += 1;
        }
    }
    // Positive control: a clean run passes, with no repeat hidden by the client.
    let first = tap.assert_exactly_once(&ids, Resend::Never).await;
    assert_eq!(c.repeats_dropped(), 0);

    // An identical resend: fine only where the design allows one.
    let same = TaskResults {
        seal: None,
        items: vec![first[0].clone()],
    };
    publish_raw(
        &broker,
        c.reply_topic(),
        codec::encode(&same, Encoding::Json).expect("encodes"),
    )
    .await;
    wait_for_finals(&mut tap, &ids[0], 2).await;
    let e = tap
        .check(&ids, Resend::Never)
        .expect_err("an identical repeat is still a second final");
    assert!(e.contains(&ids[0]), "{e}");
    tap.check(&ids, Resend::IdenticalOnly)
        .expect("an identical resend is allowed where the design resends");

    // A conflicting final (another attempt on another node) for a second id.
    let conflicting = TaskResults {
        seal: None,
        items: vec![TaskResult {
            attempt: first[1].attempt + 1,
            node: NodeId::new("impostor").expect("valid"),
            ..first[1].clone()
        }],
    };
    publish_raw(
        &broker,
        c.reply_topic(),
        codec::encode(&conflicting, Encoding::Postcard).expect("encodes"),
    )
    .await;
    wait_for_finals(&mut tap, &ids[1], 2).await;
    let e = tap
        .check(&ids, Resend::IdenticalOnly)
        .expect_err("a conflicting repeat fails even where resends are allowed");
    assert!(e.contains(&ids[1]) && e.contains("differs"), "{e}");

    // The client library hid both from its caller; it counts them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.repeats_dropped() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client saw {} of the 2 repeats",
            c.repeats_dropped()
        );
        // Reading is what takes the repeats in; none may come out.
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), c.next_result()).await {
            panic!("a repeat reached the caller: {r:?}");
        }
    }
    assert_eq!(c.repeats_dropped(), 2);

    // And an id that never got a final is reported too.
    let e = tap
        .check(&["never-submitted".to_owned()], Resend::Never)
        .expect_err("missing");
    assert!(e.contains("no final result"), "{e}");
    c.close().await;
    agent.stop().await;
    coord.stop().await;
}
