//! Births reach the registry, readings arrive in both encodings, a cut connection is
//! declared offline within 1.5 x keep-alive, the broker itself publishes the agent's
//! Last Will (watched on the wire, with the registry's own silence rules off), the
//! registry's keep-alive bound holds on its own, and a broker restart is survived. Run
//! against the embedded broker by default and against Mosquitto with
//! `FOG_E2E_MOSQUITTO=1`.

use std::time::Duration;

use fog_coordinator::registry::LivenessConfig;
use fog_e2e::{
    eventually, init_logging, Proxy, RunningAgent, RunningCoordinator, TestBroker, Watcher,
};
use fog_proto::{codec, Encoding, Heartbeat, NodeState, Reading, Status};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(20);

/// Liveness rules that leave offline detection to the Last Will alone: no missed
/// heartbeat count, no phi, no keep-alive silence bound in the registry.
fn will_only() -> LivenessConfig {
    LivenessConfig {
        default_heartbeat_interval: Duration::from_secs(1),
        suspect_after_missed: 1000,
        offline_after_missed: 2000,
        phi_threshold: f64::INFINITY,
        offline_after_keep_alives: None,
    }
}

/// The registry's keep-alive bound alone: the heartbeat rules pushed out of the way.
fn keep_alive_only() -> LivenessConfig {
    LivenessConfig {
        offline_after_keep_alives: Some(1.5),
        ..will_only()
    }
}

fn online(s: &fog_proto::CoordinatorStatus, node: &str) -> bool {
    s.nodes
        .iter()
        .any(|n| n.node.as_str() == node && n.state == NodeState::Online)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birth_reaches_the_registry() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let agent = RunningAgent::start("birth-1", &broker.url(), "[labels]\nsite = \"lab\"", "")
        .expect("agent");
    let snap = coord
        .wait_for("birth-1 online", WAIT, |s| online(s, "birth-1"))
        .await;
    let n = snap
        .nodes
        .iter()
        .find(|n| n.node.as_str() == "birth-1")
        .expect("listed");
    assert_eq!(n.arch, std::env::consts::ARCH);
    assert!(n.cores >= 1);
    assert_eq!(n.version, env!("CARGO_PKG_VERSION"));
    // Heartbeats fill in load figures.
    coord
        .wait_for("a heartbeat with memory use", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "birth-1" && n.mem_pct.is_some_and(|m| m > 0.0))
        })
        .await;
    // A clean stop publishes the retained offline record.
    agent.stop().await;
    coord
        .wait_for("birth-1 offline after clean stop", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "birth-1" && n.state == NodeState::Offline)
        })
        .await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_and_decode_in_both_encodings() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut opts = MqttOptions::new("reading-watcher", "127.0.0.1", broker.addr.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    client
        .subscribe("fog/v1/nodes/+/metrics", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    // Wait for the subscription to be in place before agents publish.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.expect("connected") {
            break;
        }
    }
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let a =
        RunningAgent::start("enc-json", &broker.url(), "encoding = \"json\"", "").expect("agent");
    let b = RunningAgent::start("enc-postcard", &broker.url(), "encoding = \"postcard\"", "")
        .expect("agent");

    let mut seen_json = 0;
    let mut seen_postcard = 0;
    let mut with_rates = 0;
    tokio::time::timeout(WAIT, async {
        while seen_json < 3 || seen_postcard < 3 {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await.expect("poll") {
                let enc = Encoding::sniff(&p.payload).expect("known encoding");
                let r: Reading = codec::decode(&p.payload).expect("reading decodes");
                assert!(r.memory.total_bytes > 0);
                if r.cpu.total_pct.is_some() {
                    with_rates += 1;
                }
                match (p.topic.as_str(), enc) {
                    ("fog/v1/nodes/enc-json/metrics", Encoding::Json) => seen_json += 1,
                    ("fog/v1/nodes/enc-postcard/metrics", Encoding::Postcard) => seen_postcard += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    })
    .await
    .expect("readings from both agents");
    assert!(with_rates >= 2, "readings after the first carry CPU rates");
    coord
        .wait_for("registry counts readings from both", WAIT, |s| {
            s.counters.get("readings_total").copied().unwrap_or(0) >= 4
                && online(s, "enc-json")
                && online(s, "enc-postcard")
        })
        .await;
    assert_eq!(coord.counter("rejected_total"), 0);
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_is_offline_within_one_and_a_half_keep_alives() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let proxy = Proxy::start(broker.addr).await.expect("proxy");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    // keep_alive_secs = 2 (set by the harness).
    let keep_alive = Duration::from_secs(2);
    let agent = RunningAgent::start("cut-1", &proxy.url(), "", "").expect("agent");
    coord
        .wait_for("cut-1 online", WAIT, |s| online(s, "cut-1"))
        .await;

    // The node goes silent without a DISCONNECT: only keep-alive can tell.
    let cut_at = tokio::time::Instant::now();
    proxy.freeze();
    let snap = coord
        .wait_for("cut-1 offline", keep_alive * 3, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "cut-1" && n.state == NodeState::Offline)
        })
        .await;
    let took = cut_at.elapsed();
    eprintln!(
        "offline detected {took:?} after the cut (keep-alive {keep_alive:?}, broker {:?})",
        broker.kind
    );
    // 1.5 x keep-alive, plus the 100 ms snapshot interval and scheduling slack.
    assert!(
        took <= keep_alive.mul_f32(1.5) + Duration::from_millis(300),
        "took {took:?}"
    );
    assert!(snap.nodes.iter().any(|n| n.node.as_str() == "cut-1"));
    agent.abort();
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_publishes_the_last_will_of_a_silent_agent() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let proxy = Proxy::start(broker.addr).await.expect("proxy");
    // Every silence rule off: only the broker's Last Will can mark the node offline.
    let mut coord = RunningCoordinator::start(&broker.url(), will_only()).expect("coordinator");
    let mut status = Watcher::start(broker.addr, "fog/v1/nodes/will-1/status").await;
    let agent = RunningAgent::start("will-1", &proxy.url(), "", "").expect("agent");
    coord
        .wait_for("will-1 online", WAIT, |s| online(s, "will-1"))
        .await;
    let birth = codec::decode::<Status>(&status.next(WAIT).await.expect("birth").payload)
        .expect("a status record");
    assert!(birth.online && birth.birth.is_some(), "{birth:?}");

    // The node goes silent without a DISCONNECT; only the broker's keep-alive check
    // (1.5 x 2 s, coarser on Mosquitto) can tell, and then it publishes the Will.
    let keep_alive = Duration::from_secs(2);
    let cut_at = tokio::time::Instant::now();
    proxy.freeze();
    let will = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            let a = status.next(WAIT).await.expect("a status message");
            let s = codec::decode::<Status>(&a.payload).expect("a status record");
            if !s.online {
                return s;
            }
        }
    })
    .await
    .expect("the broker published the Last Will");
    let took = cut_at.elapsed();
    eprintln!(
        "Last Will arrived {took:?} after the cut (keep-alive {keep_alive:?}, broker {:?})",
        broker.kind
    );
    assert_eq!(will.reason, "connection lost", "{will:?}");
    assert!(will.birth.is_none(), "{will:?}");
    // Not before a keep-alive had passed without a packet: the broker's doing, not a
    // goodbye from the agent (the broker counts from the last packet it read, up to a
    // heartbeat interval before the cut, so 1.5 x is not a safe floor here).
    assert!(
        took >= keep_alive,
        "the Will came after {took:?}, within one keep-alive of the cut"
    );
    coord
        .wait_for("will-1 offline by its Last Will", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "will-1" && n.state == NodeState::Offline)
        })
        .await;
    // Retained: whoever subscribes later is told the node is offline.
    let mut late = Watcher::start(broker.addr, "fog/v1/nodes/will-1/status").await;
    let a = late.next(WAIT).await.expect("the retained record");
    assert!(a.retained, "sent as retained");
    assert_eq!(
        codec::decode::<Status>(&a.payload).expect("status"),
        will,
        "the retained record is the Will"
    );
    assert_eq!(coord.counter("rejected_total"), 0);
    agent.abort();
    coord.stop().await;
}

/// A node that registered no Last Will and falls silent while its connection stays
/// open: the broker says nothing, the heartbeat rules are off, so only the registry's
/// own 1.5 x keep-alive bound can declare it offline, and it must do so on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_declares_a_silent_node_offline_at_one_and_a_half_keep_alives() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start_open(&broker.url(), keep_alive_only()).expect("coordinator");
    coord
        .wait_for("coordinator subscribed", WAIT, |s| s.online)
        .await;
    let keep_alive_secs = 2u16;
    let mut opts = MqttOptions::new("ka-node", "127.0.0.1", broker.addr.port());
    // Its real MQTT keep-alive is long: the broker will not end this connection.
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let record = fog_e2e::online_record("ka-1", 200, keep_alive_secs.into());
    client
        .publish(
            "fog/v1/nodes/ka-1/status",
            QoS::AtLeastOnce,
            true,
            codec::encode(&record, Encoding::Json).expect("encodes"),
        )
        .await
        .expect("queued");
    for seq in 1..=3 {
        if seq > 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let hb = Heartbeat {
            seq,
            ..Heartbeat::default()
        };
        client
            .publish(
                "fog/v1/nodes/ka-1/heartbeat",
                QoS::AtLeastOnce,
                false,
                codec::encode(&hb, Encoding::Json).expect("encodes"),
            )
            .await
            .expect("queued");
    }
    // The registry hears the last heartbeat this instant or later, never earlier.
    let silent_from = tokio::time::Instant::now();
    coord
        .wait_for("three heartbeats in", WAIT, |s| {
            online(s, "ka-1") && s.counters.get("heartbeats_total").copied() >= Some(3)
        })
        .await;
    coord
        .wait_for("ka-1 offline", Duration::from_secs(10), |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "ka-1" && n.state == NodeState::Offline)
        })
        .await;
    let took = silent_from.elapsed();
    let bound = Duration::from_secs(keep_alive_secs.into()).mul_f32(1.5);
    eprintln!("offline {took:?} after the last heartbeat (bound {bound:?})");
    // Not earlier than the bound (no other rule fired; 15 heartbeat intervals passed;
    // the registry heard the last heartbeat no earlier than it was sent), and not
    // later than the bound plus delivery, the registry's tick and the snapshot
    // interval.
    assert!(
        took >= bound - Duration::from_millis(150),
        "offline after {took:?}, before 1.5 x keep-alive"
    );
    assert!(
        took <= bound + Duration::from_millis(600),
        "offline after {took:?}, later than 1.5 x keep-alive"
    );
    driver.abort();
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_registry_recover_after_a_broker_restart() {
    init_logging();
    let mut broker = TestBroker::start().expect("broker");
    let mut coord =
        RunningCoordinator::start(&broker.url(), LivenessConfig::default()).expect("coordinator");
    let agents: Vec<_> = (1..=3)
        .map(|i| {
            RunningAgent::start(&format!("restart-{i}"), &broker.url(), "", "").expect("agent")
        })
        .collect();
    coord
        .wait_for("three agents online", WAIT, |s| {
            (1..=3).all(|i| online(s, &format!("restart-{i}")))
        })
        .await;
    let births_before = coord.counter("status_total");

    broker.kill();
    // Heartbeats stop arriving: after 6 intervals of 0.2 s every node is offline.
    coord
        .wait_for("all offline while the broker is down", WAIT, |s| {
            s.nodes.iter().all(|n| n.state == NodeState::Offline)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().expect("broker restarts");

    coord
        .wait_for("three agents online again", WAIT, |s| {
            (1..=3).all(|i| online(s, &format!("restart-{i}")))
        })
        .await;
    // Each agent announced itself again on reconnect.
    let births = eventually("re-announced births", WAIT, || {
        let n = coord.counter("status_total");
        async move { (n >= births_before + 3).then_some(n) }
    })
    .await;
    assert!(births >= births_before + 3);
    let hb_before = coord.counter("heartbeats_total");
    eventually("heartbeats flowing again", WAIT, || {
        let n = coord.counter("heartbeats_total");
        async move { (n > hb_before + 6).then_some(()) }
    })
    .await;
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
}
