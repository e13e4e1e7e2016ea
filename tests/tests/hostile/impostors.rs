//! Node identity: messages for a node that its approved key did not sign are dropped
//! and counted (a forged offline status, an unsigned heartbeat, forged results, a
//! replayed heartbeat), the node stays online and keeps working; a node nobody
//! approved is listed as `unapproved` with its key pending, and believed as soon as an
//! operator approves it, without a restart.

use fog_e2e::{fleet, RunningAgent};
use fog_proto::{
    codec, Encoding, Heartbeat, NodeId, NodeState, Outcome, Status, TaskResult, TaskResults,
};
use fog_rt::keys::{seal, KeyPair};

use crate::site::{Backend, Raw, Site, COORDINATOR, WAIT};

fn counter(s: &fog_proto::CoordinatorStatus, k: &str) -> u64 {
    s.counters.get(k).copied().unwrap_or(0)
}

fn state_of(s: &fog_proto::CoordinatorStatus, node: &str) -> Option<(NodeState, String)> {
    s.nodes
        .iter()
        .find(|n| n.node.as_str() == node)
        .map(|n| (n.state, n.identity.clone()))
}

pub async fn run(backend: Backend) {
    let mut site = Site::start(backend).await;
    let (intruder, _) = KeyPair::generate().expect("key");
    let now = fog_rt::clock::now_ms();
    let raw = Raw::login(&site.backend, "h-1").await;
    let mut beats = site
        .backend
        .watch(COORDINATOR, "fog/v1/nodes/h-1/heartbeat")
        .await;
    let real_beat = beats.next(WAIT).await.expect("a real heartbeat of h-1");
    let base = site.coord.view.borrow().clone();
    assert_eq!(
        state_of(&base, "h-1"),
        Some((NodeState::Online, "approved".into()))
    );

    // 1. A forged "offline" record, signed by someone else's key.
    let mut offline = Status {
        online: false,
        at_ms: now,
        reason: "shutdown".into(),
        birth: None,
        seal: None,
    };
    seal(&mut offline, &intruder, "h-1", now).expect("seals");
    raw.publish(
        "fog/v1/nodes/h-1/status",
        codec::encode(&offline, Encoding::Json).expect("encodes"),
    )
    .await;
    // 2. An unsigned heartbeat.
    let hb = Heartbeat {
        seq: u64::MAX / 2,
        at_ms: now,
        ..Heartbeat::default()
    };
    raw.publish(
        "fog/v1/nodes/h-1/heartbeat",
        codec::encode(&hb, Encoding::Postcard).expect("encodes"),
    )
    .await;
    // 3. Forged results (a completion for a task id), signed by the intruder.
    let mut results = TaskResults {
        items: vec![TaskResult {
            id: "not-yours".into(),
            attempt: 1,
            node: NodeId::new("h-1").expect("id"),
            at_ms: now,
            outcome: Outcome::Accepted,
        }],
        seal: None,
    };
    seal(&mut results, &intruder, "h-1", now).expect("seals");
    raw.publish(
        "fog/v1/nodes/h-1/results",
        codec::encode(&results, Encoding::Json).expect("encodes"),
    )
    .await;
    // 4. A real heartbeat of h-1, published again.
    raw.publish("fog/v1/nodes/h-1/heartbeat", real_beat.payload.clone())
        .await;

    let want = |s: &fog_proto::CoordinatorStatus| {
        counter(s, "node_messages_impostor_total")
            == counter(&base, "node_messages_impostor_total") + 3
            && counter(s, "rejected_impostor_total")
                == counter(&base, "rejected_impostor_total") + 2
            && counter(s, "rejected_replayed_total")
                == counter(&base, "rejected_replayed_total") + 1
    };
    site.coord
        .wait_for("the forgeries counted", WAIT, want)
        .await;
    let s = site.coord.view.borrow().clone();
    assert_eq!(
        state_of(&s, "h-1").map(|x| x.0),
        Some(NodeState::Online),
        "the forged offline record was not believed"
    );
    assert_eq!(
        state_of(&s, "h-1").map(|x| x.1),
        Some("impostor".into()),
        "flagged: someone else speaks for h-1"
    );
    assert_eq!(counter(&s, "tasks_submitted_total"), 0);

    unapproved_until_approved(&mut site).await;
    let took = site.normal_load(200).await;
    eprintln!("hostile impostors: 3 forgeries and a replay refused, approval picked up; 200 tasks in {took:?}");
    site.stop().await;
}

/// A node nobody approved: unapproved, key pending; approved, it comes online.
async fn unapproved_until_approved(site: &mut Site) {
    let proxy = fog_e2e::Proxy::start(site.backend.addr())
        .await
        .expect("proxy");
    let dir = tempfile::tempdir().expect("agent dir");
    let b = fleet(&proxy.url())
        .expect("fleet")
        .approvals_in(&site.approvals);
    let cfg = b
        .agent(NEW, &dir.path().join("data"))
        .expect("agent config");
    // The fleet approves its agents as it makes them; this one is to wait.
    let nodes = b.nodes_dir();
    let id = NodeId::new(NEW).expect("id");
    fog_coordinator::identity::store::revoke(&nodes, &id).expect("revokes");
    let agent = RunningAgent::start_with(cfg, dir);
    site.coord
        .wait_for("the new node listed as unapproved", WAIT, |s| {
            state_of(s, NEW)
                .is_some_and(|(st, who)| st == NodeState::Offline && who == "unapproved")
        })
        .await;
    let pending = fog_coordinator::identity::store::pending(&nodes).expect("lists");
    assert!(
        pending.iter().any(|(n, _)| n == &id),
        "its key waits in pending/"
    );
    fog_coordinator::identity::store::approve(&nodes, &id, None).expect("approves");
    site.coord
        .wait_for(
            "the new node believed once approved, with its birth record",
            WAIT,
            |s| {
                state_of(s, NEW)
                    .is_some_and(|(st, who)| st == NodeState::Online && who == "approved")
                    && s.nodes
                        .iter()
                        .any(|n| n.node.as_str() == NEW && !n.arch.is_empty())
            },
        )
        .await;
    agent.stop().await;
    drop(proxy);
}

const NEW: &str = "h-new";
