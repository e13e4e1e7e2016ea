//! Authorised submissions end to end: a coordinator with one configured client (`ops`,
//! kind `echo` only) and a real agent. The CLI's `Client` with the key runs an echo;
//! the same client asking for `sha256` is refused with the reason; an unsigned client
//! is refused and not answered. Exact counts, and only the allowed task ran.

use std::collections::BTreeMap;
use std::time::Duration;

use fog_coordinator::client::{self, Client, Signer};
use fog_coordinator::clients::{ClientPolicy, Kinds};
use fog_coordinator::config::SecurityConfig;
use fog_e2e::{fleet, init_logging, RunningAgent, RunningCoordinator, TestBroker};
use fog_proto::{NodeState, Outcome, Topics};
use fog_rt::keys::KeyPair;

const WAIT: Duration = Duration::from_secs(30);

/// Only client `ops`, with `key`, for kind `echo`.
fn only_ops(key: &KeyPair) -> SecurityConfig {
    let mut security = SecurityConfig::lab();
    security.allow_unsigned_submissions = false;
    security.clients = BTreeMap::from([(
        "ops".to_owned(),
        ClientPolicy {
            name: "ops".into(),
            key: key.public().clone(),
            kinds: Kinds::Only(vec!["echo".into()]),
            nodes: Vec::new(),
            labels: BTreeMap::new(),
        },
    )]);
    security
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signed_list_for_an_allowed_kind_runs() {
    init_logging();
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("ops.key");
    let key = KeyPair::create(&key_path).expect("client key");
    let cfg = fleet(&broker.url())
        .expect("fleet")
        .security(only_ops(&key))
        .coordinator();
    let mut coord = RunningCoordinator::start_with(cfg).expect("coordinator");
    let agent = RunningAgent::start("cl-1", &broker.url(), "", "").expect("agent");
    coord
        .wait_for("agent online", WAIT, |s| {
            s.nodes
                .iter()
                .any(|n| n.node.as_str() == "cl-1" && n.state == NodeState::Online)
        })
        .await;
    let broker_cfg = fog_rt::broker::BrokerConfig::plain(&broker.url()).expect("url");

    // Signed, allowed kind: runs. The key file's stem names the client.
    let signer = Signer::load(&key_path, None).expect("key loads");
    assert_eq!(signer.name(), "ops");
    let mut ops = Client::connect_as(&broker_cfg, Topics::default(), WAIT, Some(signer))
        .await
        .expect("client connects");
    assert!(ops.reply_topic().starts_with("fog/v1/clients/ops/"));
    let r = client::submit_and_wait(
        &mut ops,
        client::submission("echo", b"allowed".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("echo answered");
    match &r.outcome {
        Outcome::Completed { output, .. } => assert_eq!(output.0, b"allowed"),
        other => panic!("the allowed echo did not complete: {other:?}"),
    }

    // Signed, a kind `ops` may not submit: refused on its reply topic, with the reason.
    let r = client::submit_and_wait(
        &mut ops,
        client::submission("sha256", b"abc".to_vec(), 0, WAIT, false),
        WAIT,
    )
    .await
    .expect("sha256 answered");
    match &r.outcome {
        Outcome::Rejected { reason, retryable } => {
            assert!(
                reason.contains("may not submit tasks of kind \"sha256\""),
                "{reason}"
            );
            assert!(!retryable);
        }
        other => panic!("the forbidden kind was not rejected: {other:?}"),
    }
    assert_eq!(r.node.as_str(), "coordinator", "refused by the coordinator");

    // Unsigned: refused, counted, and not answered at all.
    let mut anon = Client::connect(&broker_cfg, Topics::default(), WAIT)
        .await
        .expect("client connects");
    let id = anon
        .submit(client::submission(
            "echo",
            b"unsigned".to_vec(),
            0,
            WAIT,
            false,
        ))
        .await
        .expect("published");
    coord
        .wait_for("the unsigned list counted", WAIT, |s| {
            s.counters.get("submissions_refused_unsigned_total") == Some(&1)
        })
        .await;
    let heard = tokio::time::timeout(Duration::from_millis(500), anon.next_result()).await;
    assert!(heard.is_err(), "an unsigned list got an answer: {heard:?}");

    // Let one more snapshot out, then the exact counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = coord.view.borrow().clone();
    exact_counts(&s, &id);

    ops.close().await;
    anon.close().await;
    agent.stop().await;
    coord.stop().await;
}

/// One task submitted, placed and completed; one refusal for the kind, one for the
/// missing signature; the unsigned task `unsigned_id` never ran.
fn exact_counts(s: &fog_proto::CoordinatorStatus, unsigned_id: &str) {
    let get = |k: &str| s.counters.get(k).copied().unwrap_or(0);
    assert_eq!(get("tasks_submitted_total"), 1, "{:?}", s.counters);
    assert_eq!(
        get("tasks_placed_total"),
        1,
        "only the echo was sent to a node"
    );
    assert_eq!(get("tasks_completed_total"), 1);
    assert_eq!(get("submissions_refused_kind_total"), 1);
    assert_eq!(get("submissions_refused_unsigned_total"), 1);
    assert_eq!(get("submissions_unsigned_allowed"), 0);
    let refused: u64 = s
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("submissions_refused_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(refused, 2, "{:?}", s.counters);
    let ran: Vec<&str> = s.recent.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(!ran.contains(&unsigned_id));
}
