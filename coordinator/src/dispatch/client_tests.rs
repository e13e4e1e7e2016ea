//! The dispatcher behind a closed gate: what a refused submission leaves behind
//! (nothing, and a count), and where a restricted client's tasks may go.

use std::collections::BTreeMap;

use fog_proto::{Encoding, Payload, TaskSubmission, Topics};
use fog_rt::keys::KeyPair;

use super::tests::{node_of, registry_with_labels, rr};
use super::*;
use crate::clients::{ClientPolicy, Clients, Kinds};

const REPLY: &str = "fog/v1/clients/ops/cli-1/results";

fn sub(id: &str, kind: &str) -> TaskSubmission {
    TaskSubmission {
        id: id.into(),
        kind: kind.into(),
        payload: Payload(b"x".to_vec()),
        reply_to: REPLY.into(),
        priority: 0,
        timeout_ms: 1000,
        cacheable: false,
        key: String::new(),
        strategy: String::new(),
        requires: Default::default(),
    }
}

/// A round-robin dispatcher (journaling) that takes only client `ops`'s lists.
fn closed(key: &KeyPair, nodes: &[&str], labels: &[(&str, &str)]) -> Dispatcher {
    let mut d = rr();
    d.enable_journal();
    let policy = ClientPolicy {
        name: "ops".into(),
        key: key.public().clone(),
        kinds: Kinds::Only(vec!["echo".into()]),
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let clients = Clients::from([("ops".to_owned(), policy)]);
    d.set_gate(Gate::new(
        false,
        clients,
        Duration::from_secs(300),
        Topics::default(),
    ));
    d
}

fn signed(items: Vec<TaskSubmission>, key: &KeyPair, at_ms: u64) -> Vec<u8> {
    let mut list = TaskSubmissions { items, seal: None };
    fog_rt::keys::seal(&mut list, key, "ops", at_ms).expect("seals");
    codec::encode(&list, Encoding::Json).expect("encodes")
}

fn unsigned(items: Vec<TaskSubmission>) -> Vec<u8> {
    codec::encode(&TaskSubmissions { items, seal: None }, Encoding::Json).expect("encodes")
}

fn counters(d: &Dispatcher) -> BTreeMap<&'static str, u64> {
    d.counters_map().into_iter().collect()
}

fn three_nodes() -> Registry {
    registry_with_labels(&[
        ("a", "x", &[("site", "house")]),
        ("b", "x", &[("site", "barn")]),
        ("c", "x", &[("site", "barn")]),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_refused_submission_leaves_nothing_behind_and_is_counted() {
    let key = KeyPair::generate().expect("random").0;
    let r = three_nodes();
    let mut d = closed(&key, &[], &[]);
    let now = Instant::now();
    let wall = d.wall_ms();

    // Unsigned, signed by a stranger, stale: nothing sent for the first two.
    assert!(d
        .on_submit(&r, &unsigned(vec![sub("u", "echo")]), now)
        .is_empty());
    let stranger = KeyPair::generate().expect("random").0;
    let forged = signed(vec![sub("f", "echo")], &stranger, wall);
    assert!(d.on_submit(&r, &forged, now).is_empty());
    let stale = d.on_submit(
        &r,
        &signed(vec![sub("s", "echo")], &key, wall - 600_000),
        now,
    );
    // A kind the client may not use.
    let kind = d.on_submit(&r, &signed(vec![sub("k", "sha256")], &key, wall), now);

    for (out, id, why) in [
        (&stale, "s", "signed 600 s ago"),
        (&kind, "k", "kind \"sha256\""),
    ] {
        assert_eq!(out.len(), 1, "{id}: {out:?}");
        match &out[0] {
            Out::Reply { topic, result } => {
                assert_eq!(topic, REPLY);
                assert_eq!(result.id, id);
                match &result.outcome {
                    Outcome::Rejected { reason, retryable } => {
                        assert!(reason.contains(why), "{id}: {reason}");
                        assert!(!retryable);
                    }
                    other => panic!("{id}: not rejected: {other:?}"),
                }
            }
            other => panic!("{id}: not a reply: {other:?}"),
        }
    }
    assert_eq!(d.in_flight(), 0);
    assert!(d.journal.is_empty(), "nothing journaled: {:?}", d.journal);
    assert_eq!(
        d.task_lists(fog_proto::STATUS_TASKS_MAX).1.len(),
        0,
        "nothing remembered as finished"
    );
    let c = counters(&d);
    assert_eq!(c["tasks_submitted_total"], 0);
    assert_eq!(c["tasks_placed_total"], 0);
    assert_eq!(c["submissions_refused_unsigned_total"], 1);
    assert_eq!(c["submissions_refused_unknown_key_total"], 1);
    assert_eq!(c["submissions_refused_stale_total"], 1);
    assert_eq!(c["submissions_refused_kind_total"], 1);
    assert_eq!(c["submissions_unsigned_allowed"], 0);

    // The same id, now allowed, is taken: the refusal left no trace of it.
    let ok = d.on_submit(&r, &signed(vec![sub("k", "echo")], &key, wall), now);
    assert!(matches!(ok[..], [Out::Assign { .. }]), "{ok:?}");
    assert_eq!(d.in_flight(), 1);
    assert_eq!(counters(&d)["tasks_submitted_total"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_restricted_clients_tasks_go_only_to_its_nodes_and_labels() {
    let key = KeyPair::generate().expect("random").0;
    let r = three_nodes();
    let wall = fog_rt::clock::now_ms();

    // nodes = ["a", "c"]: round robin over those two only.
    let mut d = closed(&key, &["a", "c"], &[]);
    let items = (0..6).map(|i| sub(&format!("n{i}"), "echo")).collect();
    let out = d.on_submit(&r, &signed(items, &key, wall), Instant::now());
    let nodes: Vec<String> = out.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n == "a" || n == "c"), "{nodes:?}");
    assert!(nodes.iter().any(|n| n == "a") && nodes.iter().any(|n| n == "c"));

    // labels = { site = "barn" }: b and c only.
    let mut d = closed(&key, &[], &[("site", "barn")]);
    let items = (0..6).map(|i| sub(&format!("l{i}"), "echo")).collect();
    let out = d.on_submit(&r, &signed(items, &key, wall), Instant::now());
    let nodes: Vec<String> = out.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n == "b" || n == "c"), "{nodes:?}");

    // Both: only c; asking for a node outside the list is refused.
    let mut d = closed(&key, &["a", "c"], &[("site", "barn")]);
    let mut elsewhere = sub("x", "echo");
    elsewhere.requires.nodes = vec!["b".into()];
    let items = vec![sub("y", "echo"), elsewhere];
    let out = d.on_submit(&r, &signed(items, &key, wall), Instant::now());
    assert_eq!(out.len(), 2);
    let assigned: Vec<String> = out
        .iter()
        .filter(|o| matches!(o, Out::Assign { .. }))
        .map(node_of)
        .collect();
    assert_eq!(assigned, ["c"]);
    assert_eq!(counters(&d)["submissions_refused_target_total"], 1);
    assert_eq!(d.in_flight(), 1);
}
