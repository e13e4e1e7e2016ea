//! Submissions to a coordinator with `[clients]` (not in lab mode): unsigned, by an
//! unknown client, signed by a key that is not the client's, altered after signing,
//! a kind or a node the client may not use, a reply topic outside its own, stale,
//! replayed; in both encodings. Each is counted under its reason exactly; only the
//! originals of the replayed lists are placed; only what is provably from a client is
//! answered, on that client's own topic.

use std::collections::BTreeSet;

use fog_e2e::Watcher;
use fog_proto::{
    codec, Encoding, Outcome, Payload, TaskResult, TaskResults, TaskSubmission, TaskSubmissions,
};
use fog_rt::keys::KeyPair;

use crate::site::{enc_name, marks, Backend, Raw, Site, ENCODINGS, WAIT};

const SUBMIT: &str = "fog/v1/tasks/submit";

fn sub(id: &str, kind: &str, reply_client: &str) -> TaskSubmission {
    TaskSubmission {
        id: id.into(),
        kind: kind.into(),
        payload: Payload(b"x".to_vec()),
        reply_to: format!("fog/v1/clients/{reply_client}/attacker/results"),
        priority: 0,
        timeout_ms: 5000,
        cacheable: false,
        key: String::new(),
        strategy: String::new(),
        requires: Default::default(),
    }
}

fn sealed(item: TaskSubmission, key: &KeyPair, client: &str, age_ms: u64) -> TaskSubmissions {
    let mut list = TaskSubmissions {
        items: vec![item],
        seal: None,
    };
    let at = fog_rt::clock::now_ms() - age_ms;
    fog_rt::keys::seal(&mut list, key, client, at).expect("seals");
    list
}

fn bytes(list: &TaskSubmissions, e: Encoding) -> Vec<u8> {
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
        seen.extend(
            codec::decode::<TaskResults>(&a.payload)
                .expect("a result list")
                .items,
        );
    }
}

fn refused_with(r: &TaskResult, what: &str) {
    match &r.outcome {
        Outcome::Rejected { reason, .. } => {
            assert!(reason.contains(what), "{}: {reason}", r.id);
            assert_eq!(r.node.as_str(), "coordinator");
        }
        other => panic!("{} was not rejected: {other:?}", r.id),
    }
}

struct Taps {
    ops: Watcher,
    narrow: Watcher,
    ops_seen: Vec<TaskResult>,
    narrow_seen: Vec<TaskResult>,
}

/// Every attack in one encoding, from `atk` (the client `ops`'s broker login).
async fn attacks(site: &Site, atk: &Raw, taps: &mut Taps, e: Encoding) {
    let n = enc_name(e);
    let id = |what: &str| format!("s-{what}-{n}");
    let stranger = KeyPair::generate().expect("a key").0;
    let unsigned = TaskSubmissions {
        items: vec![sub(&id("unsigned"), "echo", "ops")],
        seal: None,
    };
    atk.publish(SUBMIT, bytes(&unsigned, e)).await;
    let l = sealed(
        sub(&id("unknown-client"), "echo", "mallory"),
        &stranger,
        "mallory",
        0,
    );
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let l = sealed(sub(&id("unknown-key"), "echo", "ops"), &stranger, "ops", 0);
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let l = sealed(
        sub(&id("others-key"), "echo", "ops"),
        &site.narrow,
        "ops",
        0,
    );
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let mut l = sealed(sub(&id("tampered"), "echo", "ops"), &site.ops, "ops", 0);
    l.items[0].kind = "whoami".into();
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let l = sealed(
        sub(&id("kind"), "whoami", "narrow"),
        &site.narrow,
        "narrow",
        0,
    );
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let mut s = sub(&id("target"), "echo", "narrow");
    s.requires.nodes = vec!["h-1".into()];
    let l = sealed(s, &site.narrow, "narrow", 0);
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let l = sealed(
        sub(&id("reply-topic"), "echo", "narrow"),
        &site.ops,
        "ops",
        0,
    );
    atk.publish(SUBMIT, bytes(&l, e)).await;
    let l = sealed(sub(&id("stale"), "echo", "ops"), &site.ops, "ops", 600_000);
    atk.publish(SUBMIT, bytes(&l, e)).await;
    // A genuine list, then the same bytes again.
    let genuine = bytes(
        &sealed(sub(&id("replay"), "echo", "ops"), &site.ops, "ops", 0),
        e,
    );
    atk.publish(SUBMIT, genuine.clone()).await;

    let r = final_of(&mut taps.narrow, &id("kind"), &mut taps.narrow_seen, 0).await;
    refused_with(&r, "may not submit tasks of kind \"whoami\"");
    let r = final_of(&mut taps.narrow, &id("target"), &mut taps.narrow_seen, 0).await;
    refused_with(&r, "h-1");
    let r = final_of(&mut taps.ops, &id("stale"), &mut taps.ops_seen, 0).await;
    refused_with(&r, "s ago");
    let r = final_of(&mut taps.ops, &id("replay"), &mut taps.ops_seen, 0).await;
    assert!(
        matches!(&r.outcome, Outcome::Completed { output, .. } if output.0 == b"x"),
        "{r:?}"
    );
    atk.publish(SUBMIT, genuine).await;
}

pub async fn run(backend: Backend) {
    let t0 = std::time::Instant::now();
    let mut site = Site::start(backend).await;
    let mut taps = Taps {
        ops: site.backend.watch("ops", "fog/v1/clients/ops/#").await,
        narrow: site
            .backend
            .watch("narrow", "fog/v1/clients/narrow/#")
            .await,
        ops_seen: Vec::new(),
        narrow_seen: Vec::new(),
    };
    let atk = Raw::login(&site.backend, "ops").await;
    for e in ENCODINGS {
        attacks(&site, &atk, &mut taps, e).await;
    }
    site.coord
        .wait_for("both replays counted", WAIT, |s| {
            s.counters.get("submissions_refused_replayed_total") == Some(&2)
        })
        .await;
    // One more snapshot, then the exact counts.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let s = site.coord.view.borrow().clone();
    let refused = exact_counts(&s);
    // Answered: only what is provably from a client, on its own topic.
    let ids =
        |seen: &[TaskResult]| -> BTreeSet<String> { seen.iter().map(|r| r.id.clone()).collect() };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for a in taps.ops.drain() {
        let l = codec::decode::<TaskResults>(&a.payload).expect("results");
        taps.ops_seen.extend(l.items);
    }
    for a in taps.narrow.drain() {
        let l = codec::decode::<TaskResults>(&a.payload).expect("results");
        taps.narrow_seen.extend(l.items);
    }
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        ids(&taps.ops_seen),
        set(&[
            "s-stale-json",
            "s-replay-json",
            "s-stale-postcard",
            "s-replay-postcard"
        ]),
        "{:?}",
        taps.ops_seen
    );
    let replay_finals = taps
        .ops_seen
        .iter()
        .filter(|r| r.id.starts_with("s-replay") && !matches!(r.outcome, Outcome::Accepted))
        .count();
    assert_eq!(
        replay_finals, 2,
        "a replay got a second answer: {:?}",
        taps.ops_seen
    );
    assert_eq!(
        ids(&taps.narrow_seen),
        set(&[
            "s-kind-json",
            "s-target-json",
            "s-kind-postcard",
            "s-target-postcard"
        ]),
        "{:?}",
        taps.narrow_seen
    );
    site.assert_no_whoami();
    for n in &site.nodes {
        assert!(marks(&n.evidence).is_empty());
    }
    drop(s);
    site.assert_one_connection_each();
    let took = site.normal_load(200).await;
    site.assert_one_connection_each();
    site.coord
        .wait_for("the load counted", WAIT, |s| {
            s.counters.get("tasks_completed_total") == Some(&202)
        })
        .await;
    eprintln!(
        "hostile submissions: {refused} lists/items refused, 200 tasks in {took:?}, {:?} in all",
        t0.elapsed()
    );
    site.stop().await;
}

/// The refusals counted under each reason, exactly; only the two originals placed.
fn exact_counts(s: &fog_proto::CoordinatorStatus) -> u64 {
    let want: [(&str, u64); 9] = [
        ("unsigned", 2),
        ("unknown_client", 2),
        ("unknown_key", 4),
        ("bad_signature", 2),
        ("kind", 2),
        ("target", 2),
        ("reply_topic", 2),
        ("stale", 2),
        ("replayed", 2),
    ];
    let get = |k: &str| s.counters.get(k).copied().unwrap_or(0);
    for (reason, n) in want {
        assert_eq!(
            get(&format!("submissions_refused_{reason}_total")),
            n,
            "{reason}: {:?}",
            s.counters
        );
    }
    let refused: u64 = s
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("submissions_refused_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(refused, 20, "{:?}", s.counters);
    assert_eq!(
        get("tasks_submitted_total"),
        2,
        "only the two genuine lists"
    );
    assert_eq!(get("tasks_placed_total"), 2);
    assert_eq!(get("tasks_completed_total"), 2);
    let ran: BTreeSet<&str> = s.recent.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ran, BTreeSet::from(["s-replay-json", "s-replay-postcard"]));
    refused
}
