//! Assignments published straight to an agent's tasks topic, bypassing the coordinator
//! (the attack from issue 14): unsigned, by an unknown key, for another node, tampered
//! after signing, stale, and replayed, in both encodings. The agent runs only the
//! genuine list, once; it drops the forgeries unanswered and answers the stale one
//! `rejected`; its `assignments_refused_total` is exactly the number refused.

use std::collections::BTreeSet;

use fog_e2e::Watcher;
use fog_proto::{codec, Encoding, Outcome, Payload, TaskAssignment, TaskAssignments, TaskResult};
use fog_rt::keys::KeyPair;

use crate::site::{
    enc_name, marks, reading_where, results, Backend, Raw, Site, COORDINATOR, ENCODINGS, WAIT,
};

const TASKS: &str = "fog/v1/nodes/h-1/tasks";

/// The message from the issue, byte for byte (its kind is a command on this node).
const ISSUE_JSON: &str = r#"{"v":1,"items":[{"id":"evil-1","attempt":1,"kind":"whoami","payload":"","timeout_ms":5000,"priority":0,"deadline_ms":0,"cacheable":false}]}"#;

pub fn list(id: &str, kind: &str, payload: &str) -> TaskAssignments {
    TaskAssignments {
        seal: None,
        items: vec![TaskAssignment {
            id: id.into(),
            attempt: 1,
            kind: kind.into(),
            payload: Payload(payload.as_bytes().to_vec()),
            timeout_ms: 5000,
            priority: 0,
            deadline_ms: 0,
            cacheable: false,
        }],
    }
}

/// `list` sealed by `key` for `node`, `age_ms` ago.
pub fn sealed(
    mut list: TaskAssignments,
    key: &KeyPair,
    node: &str,
    age_ms: u64,
) -> TaskAssignments {
    let at = fog_rt::clock::now_ms() - age_ms;
    fog_rt::keys::seal(&mut list, key, node, at).expect("seals");
    list
}

pub fn encode(list: &TaskAssignments, e: Encoding) -> Vec<u8> {
    codec::encode(list, e).expect("encodes")
}

/// The final result of `id` among `seen[from..]`, taking results from `w` into
/// `seen` until there is one (a result list may answer several ids at once).
pub async fn final_of(
    w: &mut Watcher,
    id: &str,
    seen: &mut Vec<TaskResult>,
    from: usize,
) -> TaskResult {
    loop {
        if let Some(r) = seen[from.min(seen.len())..]
            .iter()
            .find(|r| r.id == id && !matches!(r.outcome, Outcome::Accepted))
        {
            return r.clone();
        }
        let a = w
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("no final result for {id}; seen {seen:?}"));
        seen.extend(results(&[a]));
    }
}

/// The attacks in one encoding; returns how many lists the gate must have refused.
async fn attacks(atk: &Raw, w: &mut Watcher, e: Encoding, seen: &mut Vec<TaskResult>) -> u64 {
    let trusted = fog_e2e::coordinator_key();
    let unknown = KeyPair::generate().expect("a key").0;
    let n = enc_name(e);
    // Unsigned: the issue's JSON; in postcard, the same list.
    let unsigned = match e {
        Encoding::Json => ISSUE_JSON.as_bytes().to_vec(),
        Encoding::Postcard => encode(&list("evil-1-postcard", "whoami", ""), e),
    };
    atk.publish(TASKS, unsigned).await;
    // Signed by a key the node does not trust.
    let l = sealed(
        list(&format!("unknown-key-{n}"), "whoami", ""),
        &unknown,
        "h-1",
        0,
    );
    atk.publish(TASKS, encode(&l, e)).await;
    // Signed by the trusted key, for another node.
    let l = sealed(
        list(&format!("other-node-{n}"), "whoami", ""),
        &trusted,
        "h-2",
        0,
    );
    atk.publish(TASKS, encode(&l, e)).await;
    // Signed by the trusted key, then its kind changed.
    let mut l = sealed(
        list(&format!("tampered-kind-{n}"), "mark", "x\n"),
        &trusted,
        "h-1",
        0,
    );
    l.items[0].kind = "whoami".into();
    atk.publish(TASKS, encode(&l, e)).await;
    // Signed by the trusted key, then its payload changed.
    let mut l = sealed(
        list(&format!("tampered-payload-{n}"), "mark", "ok\n"),
        &trusted,
        "h-1",
        0,
    );
    l.items[0].payload = Payload(b"evil\n".to_vec());
    atk.publish(TASKS, encode(&l, e)).await;
    // Signed by the trusted key 10 minutes ago: answered rejected, retryable.
    let stale = format!("stale-{n}");
    let l = sealed(list(&stale, "mark", "stale\n"), &trusted, "h-1", 600_000);
    atk.publish(TASKS, encode(&l, e)).await;
    let r = final_of(w, &stale, seen, 0).await;
    match &r.outcome {
        Outcome::Rejected { reason, retryable } => {
            assert!(*retryable, "{reason}");
            assert!(
                reason.contains("s ago") && reason.contains("300 s allowed"),
                "the reason names the age: {reason}"
            );
        }
        other => panic!("the stale list was not rejected: {other:?}"),
    }
    // A genuine list, twice: runs once, the copy is answered from the store.
    let replay = format!("replay-{n}");
    let bytes = encode(
        &sealed(
            list(&replay, "mark", &format!("{replay}\n")),
            &trusted,
            "h-1",
            0,
        ),
        e,
    );
    atk.publish(TASKS, bytes.clone()).await;
    let first = final_of(w, &replay, seen, 0).await;
    assert!(
        matches!(&first.outcome, Outcome::Completed { output, .. } if output.0 == format!("{replay}\n").as_bytes()),
        "{first:?}"
    );
    let mark = seen.len();
    atk.publish(TASKS, bytes).await;
    let again = final_of(w, &replay, seen, mark).await;
    assert_eq!(
        again.outcome, first.outcome,
        "the replay is answered from the store"
    );
    6
}

pub async fn run(backend: Backend) {
    let t0 = std::time::Instant::now();
    let site = Site::start(backend).await;
    let ev = site.node("h-1").evidence.clone();
    let mut w = site
        .backend
        .watch(COORDINATOR, "fog/v1/nodes/h-1/results")
        .await;
    let mut readings = site
        .backend
        .watch(COORDINATOR, "fog/v1/nodes/h-1/metrics")
        .await;
    // With an ACL only the coordinator's user may publish assignments: the attacker
    // has stolen its broker password (but not its signing key).
    let atk = Raw::login(&site.backend, COORDINATOR).await;
    let mut seen = Vec::new();
    let mut refused = 0;
    for e in ENCODINGS {
        refused += attacks(&atk, &mut w, e, &mut seen).await;
    }
    assert_eq!(refused, 12);
    let r = reading_where(&mut readings, "12 refused lists", |a| {
        a.assignments_refused_total == refused
    })
    .await;
    assert_eq!(
        r.agent.tasks_finished_total, 2,
        "only the two genuine lists ran"
    );
    // Only the stale lists (rejected) and the genuine ones were answered.
    let answered: BTreeSet<&str> = seen.iter().map(|r| r.id.as_str()).collect();
    let want = BTreeSet::from([
        "replay-json",
        "replay-postcard",
        "stale-json",
        "stale-postcard",
    ]);
    assert_eq!(answered, want, "{seen:?}");
    assert_eq!(
        marks(&ev),
        ["replay-json", "replay-postcard"],
        "what `mark` ran"
    );
    site.assert_no_whoami();

    if site.backend.has_acl() {
        broker_refusals(&site, &mut w, &mut seen).await;
        let r = reading_where(&mut readings, "still 12 refused", |a| {
            a.assignments_refused_total == refused
        })
        .await;
        assert_eq!(r.agent.tasks_finished_total, 3, "the fence too");
    }
    w.drain();
    site.assert_one_connection_each();
    let took = site.normal_load(200).await;
    site.assert_one_connection_each();
    site.assert_no_whoami();
    eprintln!(
        "hostile assignments: {refused} lists refused, 200 tasks in {took:?}, {:?} in all",
        t0.elapsed()
    );
    site.stop().await;
}

/// The generated ACL: nobody but the coordinator's user may publish on a node's tasks
/// topic, so even a validly signed list from a node or a client is never delivered
/// (0 deliveries: the coordinator user's fence, sent after, arrives; they do not).
async fn broker_refusals(site: &Site, w: &mut Watcher, seen: &mut Vec<TaskResult>) {
    let anon = Raw::connect(site.backend.addr(), None).await;
    assert!(anon.is_err(), "an anonymous connection was admitted");
    let trusted = fog_e2e::coordinator_key();
    let genuine = |id: &str| {
        encode(
            &sealed(list(id, "mark", &format!("{id}\n")), &trusted, "h-1", 0),
            Encoding::Json,
        )
    };
    let node = Raw::login(&site.backend, "h-2").await;
    node.publish(TASKS, genuine("acl-node")).await;
    let ops = Raw::login(&site.backend, "ops").await;
    ops.publish(TASKS, genuine("acl-client")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let coord = Raw::login(&site.backend, COORDINATOR).await;
    coord.publish(TASKS, genuine("acl-fence")).await;
    let before = seen.len();
    final_of(w, "acl-fence", seen, before).await;
    let ids: Vec<&str> = seen[before..].iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["acl-fence", "acl-fence"],
        "accepted and completed, nothing else"
    );
    assert_eq!(
        marks(&site.node("h-1").evidence),
        ["replay-json", "replay-postcard", "acl-fence"]
    );
}
