//! The Mosquitto configuration `fog-coordinator broker-config` generates, run by a
//! real Mosquitto: its password file is accepted, its ACL refuses every publish and
//! read outside a role, and its `max_packet_size` keeps a 20 MB publish from reaching
//! (and disconnecting) the coordinator or an agent. Every refusal is counted next to
//! a positive control on the same connection, sent after it: the control arriving
//! while the refused message did not is what "0 delivered" means (one publisher to
//! one subscriber keeps its order), so an ACL that let everything through, or
//! nothing, fails these tests.
//!
//! They need the `mosquitto` program, so they are `#[ignore]`d in plain `cargo test
//! --workspace` (reported as ignored, not as passed) and run in CI with `cargo test
//! -p fog-e2e -- --include-ignored`.

use std::time::Duration;

use fog_coordinator::client::{self, Client};
use fog_e2e::generated::SiteBroker;
use fog_e2e::{fleet, init_logging, RunningAgent, RunningCoordinator};
use fog_proto::{NodeState, Outcome, Topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);
const NODES: [&str; 2] = ["pi-1", "pi-2"];
const CLIENTS: [&str; 2] = ["ops", "intruder"];
const COORDINATOR: &str = "fog-coordinator";

#[derive(Debug)]
enum Seen {
    SubAck,
    Message(String),
    Down(String),
}

/// A raw rumqttc client (not fog's link), so the test sees exactly what the broker
/// does with each packet.
struct Probe {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// Connect as `user` (password `pw`; `None` for anonymous) and report the CONNACK or
/// the error that ended the attempt.
async fn connect(broker: &SiteBroker, user: Option<(&str, &str)>) -> Result<Probe, String> {
    let id = format!("probe-{}", fastrand::u32(..));
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(32 * 1024 * 1024, 32 * 1024 * 1024);
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let (tx, seen) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(Seen::SubAck);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Seen::Message(p.topic));
                }
                Ok(_) => {}
                Err(e) => {
                    match ready_tx.take() {
                        Some(r) => {
                            let _ = r.send(Err(e.to_string()));
                        }
                        None => {
                            let _ = tx.send(Seen::Down(e.to_string()));
                        }
                    }
                    return;
                }
            }
        }
    });
    match tokio::time::timeout(WAIT, ready).await {
        Ok(Ok(Ok(()))) => Ok(Probe { client, seen }),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err("event loop ended".into()),
        Err(_) => Err("no CONNACK in time".into()),
    }
}

async fn login(broker: &SiteBroker, user: &str) -> Probe {
    connect(broker, Some((user, &broker.password(user))))
        .await
        .unwrap_or_else(|e| panic!("{user} connects with its generated password: {e}"))
}

impl Probe {
    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queued");
        match tokio::time::timeout(WAIT, self.seen.recv()).await {
            Ok(Some(Seen::SubAck)) => {}
            Ok(Some(other)) => panic!("before SUBACK: {other:?}"),
            _ => panic!("no SUBACK for {filter}"),
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queued");
    }

    /// Messages received until one arrives on `fence`: their topics.
    async fn until(&mut self, fence: &str) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.seen.recv()).await {
                Ok(Some(Seen::Message(t))) if t == fence => return got,
                Ok(Some(Seen::Message(t))) => got.push(t),
                other => panic!("waiting for {fence}: {other:?} (after {got:?})"),
            }
        }
    }
}

fn site() -> SiteBroker {
    SiteBroker::generated(&NODES, &CLIENTS)
        .expect("mosquitto is installed (apt-get install mosquitto)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run with --include-ignored (CI does)"]
async fn anonymous_and_wrong_passwords_are_refused_and_the_generated_ones_accepted() {
    init_logging();
    let broker = site();
    let anon = connect(&broker, None).await;
    assert!(anon.is_err(), "anonymous connect admitted");
    let wrong = connect(&broker, Some(("pi-1", "not-the-password"))).await;
    assert!(wrong.is_err(), "a wrong password admitted");
    let other = connect(&broker, Some(("pi-1", &broker.password("pi-2")))).await;
    assert!(other.is_err(), "pi-2's password admitted pi-1");
    let nobody = connect(&broker, Some(("pi-9", &broker.password("pi-1")))).await;
    assert!(nobody.is_err(), "an unknown user admitted");
    // Positive control: every generated user gets in.
    for user in NODES.iter().chain(&CLIENTS).chain(&[COORDINATOR]) {
        login(&broker, user).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run with --include-ignored (CI does)"]
async fn a_node_publishes_only_on_its_own_topics_and_never_on_tasks() {
    init_logging();
    let broker = site();
    let t = Topics::default();
    let pi1 = fog_proto::NodeId::new("pi-1").expect("valid");
    let pi2 = fog_proto::NodeId::new("pi-2").expect("valid");
    let mut coord = login(&broker, COORDINATOR).await;
    for k in fog_coordinator::mosquitto::acl::node_outbound() {
        coord.subscribe(&t.all_nodes(k)).await;
    }
    let node = login(&broker, "pi-1").await;
    for k in fog_coordinator::mosquitto::acl::node_outbound() {
        node.publish(&t.node(&pi2, k), b"forged".to_vec()).await;
    }
    // Its own results: the fence, published after the forgeries.
    let own = t.node(&pi1, fog_proto::NodeTopic::Results);
    node.publish(&own, b"mine".to_vec()).await;
    assert_eq!(
        coord.until(&own).await,
        Vec::<String>::new(),
        "forged topics delivered"
    );
    // Every one of its own topics works (status last, as the fence).
    let own_status = t.node(&pi1, fog_proto::NodeTopic::Status);
    let others: Vec<String> = fog_coordinator::mosquitto::acl::node_outbound()
        .map(|k| t.node(&pi1, k))
        .filter(|topic| *topic != own_status)
        .collect();
    for topic in &others {
        node.publish(topic, b"mine".to_vec()).await;
    }
    node.publish(&own_status, b"fence".to_vec()).await;
    assert_eq!(
        coord.until(&own_status).await,
        others,
        "a node's own topics all work"
    );

    // Its own tasks topic: it reads it, but only the coordinator writes it.
    let mut reader = login(&broker, "pi-1").await;
    let tasks = t.node(&pi1, fog_proto::NodeTopic::Tasks);
    reader.subscribe(&tasks).await;
    node.publish(&tasks, b"self-assigned".to_vec()).await;
    let ops = login(&broker, "ops").await;
    ops.publish(&tasks, b"client-assigned".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    coord.publish(&tasks, b"assigned".to_vec()).await;
    assert_eq!(reader.until(&tasks).await, Vec::<String>::new());
    // The fence was the coordinator's; nothing else follows it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reader.seen.try_recv().is_err(),
        "a forged assignment arrived late"
    );
    // pi-2 cannot read pi-1's tasks.
    let mut snoop = login(&broker, "pi-2").await;
    snoop.subscribe(&tasks).await;
    let own2 = t.node(&pi2, fog_proto::NodeTopic::Tasks);
    snoop.subscribe(&own2).await;
    coord.publish(&tasks, b"for pi-1".to_vec()).await;
    coord.publish(&own2, b"for pi-2".to_vec()).await;
    assert_eq!(snoop.until(&own2).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run with --include-ignored (CI does)"]
async fn a_client_submits_and_reads_only_its_own_replies_and_the_status() {
    init_logging();
    let broker = site();
    let t = Topics::default();
    let mut coord = login(&broker, COORDINATOR).await;
    coord.subscribe(&t.submit()).await;
    let mut ops = login(&broker, "ops").await;
    ops.subscribe("fog/v1/clients/ops/#").await;
    ops.subscribe(&t.coordinator_status()).await;
    let mut intruder = login(&broker, "intruder").await;
    intruder.subscribe("fog/v1/clients/ops/#").await;
    intruder.subscribe("fog/v1/clients/#").await;
    intruder.subscribe("fog/v1/clients/intruder/#").await;

    ops.publish(&t.submit(), b"submission".to_vec()).await;
    assert!(coord.until(&t.submit()).await.is_empty());

    let ops_reply = "fog/v1/clients/ops/fog-cli-1/results";
    let own_reply = "fog/v1/clients/intruder/fog-cli-2/results";
    coord.publish(ops_reply, b"result".to_vec()).await;
    coord.publish(own_reply, b"result".to_vec()).await;
    assert!(ops.until(ops_reply).await.is_empty());
    assert_eq!(
        intruder.until(own_reply).await,
        Vec::<String>::new(),
        "read another client's replies"
    );

    // A client cannot assign, nor speak for the coordinator or a node.
    let tasks = "fog/v1/nodes/pi-1/tasks";
    let mut node = login(&broker, "pi-1").await;
    node.subscribe(tasks).await;
    intruder.publish(tasks, b"assignment".to_vec()).await;
    intruder
        .publish(&t.coordinator_status(), b"forged".to_vec())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    coord.publish(tasks, b"real".to_vec()).await;
    coord
        .publish(&t.coordinator_status(), b"real".to_vec())
        .await;
    assert!(
        node.until(tasks).await.is_empty(),
        "a client assigned a task"
    );
    assert!(
        ops.until(&t.coordinator_status()).await.is_empty(),
        "a client forged the status"
    );
}

/// The broker closes the sender's connection.
async fn cut_off(p: &mut Probe) {
    match tokio::time::timeout(WAIT, p.seen.recv()).await {
        Ok(Some(Seen::Down(error))) => eprintln!("sender cut off: {error}"),
        other => panic!("the sender of a 20 MB publish was not cut off: {other:?}"),
    }
}

fn online(s: &fog_proto::CoordinatorStatus, node: &str) -> bool {
    s.nodes
        .iter()
        .any(|n| n.node.as_str() == node && n.state == NodeState::Online)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run with --include-ignored (CI does)"]
async fn a_20_mb_publish_is_refused_by_the_broker_and_fog_stays_connected() {
    init_logging();
    let broker = site();
    let mut cfg = fleet(&broker.url()).expect("fleet").coordinator();
    cfg.broker.credentials = broker.broker_for(COORDINATOR).credentials;
    cfg.broker.allow_plaintext_password = true;
    let mut coord = RunningCoordinator::start_with(cfg).expect("coordinator");
    let agent_broker = format!(
        "username = \"pi-1\"\npassword = \"{}\"\nallow_plaintext_password = true\n",
        broker.password("pi-1")
    );
    let agent = RunningAgent::start("pi-1", &broker.url(), "", &agent_broker).expect("agent");
    coord
        .wait_for("pi-1 online", WAIT, |s| online(s, "pi-1"))
        .await;
    assert_eq!(broker.connections("u'fog-coordinator'"), 1);
    assert_eq!(broker.connections("u'pi-1'"), 1);

    let big = vec![b'{'; 20 * 1024 * 1024];
    // On the submit topic, from a client allowed to publish there.
    let mut ops = login(&broker, "ops").await;
    ops.publish("fog/v1/tasks/submit", big.clone()).await;
    cut_off(&mut ops).await;
    // On the node's tasks topic, even with the coordinator's own credentials.
    let mut stolen = login(&broker, COORDINATOR).await;
    stolen.publish("fog/v1/nodes/pi-1/tasks", big).await;
    cut_off(&mut stolen).await;
    let oversize = broker.log().matches("oversize packet").count();
    assert_eq!(oversize, 2, "broker log:\n{}", broker.log());

    // A normal task still runs, from a client with its own reply topic.
    let mut c = Client::connect(&broker.broker_for("ops"), Topics::default(), WAIT)
        .await
        .expect("client connects");
    assert!(
        c.reply_topic().starts_with("fog/v1/clients/ops/"),
        "{}",
        c.reply_topic()
    );
    let r = client::submit_and_wait(
        &mut c,
        client::submission("echo", b"still here".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("echo runs");
    assert!(
        matches!(&r.outcome, Outcome::Completed { output, .. } if output.0 == b"still here"),
        "{r:?}"
    );
    // Neither fog program reconnected: one connection each, the first.
    assert_eq!(
        broker.connections("u'fog-coordinator'"),
        2,
        "the coordinator's and the stolen one"
    );
    assert_eq!(broker.connections("u'pi-1'"), 1);
    c.close().await;
    agent.stop().await;
    coord.stop().await;
}
