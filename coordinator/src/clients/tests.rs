//! The policies as read from TOML, every refusal reason, what is answered, and the
//! replay cache's bound and expiry (explicit times, no sleeping).

use super::*;
use fog_proto::Payload;
use fog_rt::keys::KeyPair;

const NOW: u64 = 1_790_000_000_000;
const SKEW: Duration = Duration::from_secs(300);

fn key() -> KeyPair {
    KeyPair::generate().expect("random").0
}

fn policy(name: &str, key: &KeyPair, kinds: Kinds) -> ClientPolicy {
    ClientPolicy {
        name: name.into(),
        key: key.public().clone(),
        kinds,
        nodes: Vec::new(),
        labels: BTreeMap::new(),
    }
}

fn gate(policies: Vec<ClientPolicy>) -> Gate {
    let clients = policies.into_iter().map(|p| (p.name.clone(), p)).collect();
    Gate::new(false, clients, SKEW, Topics::default())
}

fn sub(id: &str, kind: &str, reply_to: &str) -> TaskSubmission {
    TaskSubmission {
        id: id.into(),
        kind: kind.into(),
        payload: Payload(b"x".to_vec()),
        reply_to: reply_to.into(),
        priority: 0,
        timeout_ms: 1000,
        cacheable: false,
        key: String::new(),
        strategy: String::new(),
        requires: Default::default(),
    }
}

const OPS_REPLY: &str = "fog/v1/clients/ops/cli-1/results";

fn signed(items: Vec<TaskSubmission>, key: &KeyPair, scope: &str, at: u64) -> TaskSubmissions {
    let mut list = TaskSubmissions { items, seal: None };
    fog_rt::keys::seal(&mut list, key, scope, at).expect("seals");
    list
}

fn admit(g: &mut Gate, list: TaskSubmissions) -> Admitted {
    g.admit(list, NOW, Instant::now())
}

/// Admitted nothing, answered nothing, and counted `label` once.
fn refused_silently(g: &mut Gate, list: TaskSubmissions, label: &str) {
    let a = admit(g, list);
    assert!(
        a.accepted.is_empty() && a.answered.is_empty(),
        "{label}: {a:?}"
    );
    assert_eq!(g.refused(label), 1, "{label}");
}

// ---- parsing ----

fn parse(text: &str) -> Result<Clients, String> {
    let table: toml::Table = text.parse().expect("toml");
    parse_clients("t.toml", table).map_err(|e| e.to_string())
}

#[test]
fn a_clients_table_is_typed() {
    let k = key();
    let c = parse(&format!(
        "[ops]\nkey = \"{} ops laptop\"\nkinds = [\"echo\"]\nnodes = [\"pi-1\"]\nlabels = {{ site = \"barn\" }}\n[any]\nkey = \"{}\"\nkinds = [\"*\"]\n",
        k.public().line(),
        k.public().line()
    ))
    .expect("valid");
    let ops = &c["ops"];
    assert_eq!(&ops.key, k.public());
    assert_eq!(ops.kinds, Kinds::Only(vec!["echo".into()]));
    assert_eq!(ops.nodes, vec!["pi-1".to_owned()]);
    assert_eq!(ops.labels["site"], "barn");
    assert_eq!(c["any"].kinds, Kinds::Any);
    assert!(c["any"].nodes.is_empty());
}

#[test]
fn a_bad_clients_table_names_its_key() {
    let line = key().public().line();
    let cases = [
        (
            "[ops]\nkey = \"fog-ed25519 nope\"\nkinds = []\n".to_owned(),
            "key `clients.ops.key`",
        ),
        (
            format!("[\"a b\"]\nkey = \"{line}\"\nkinds = []\n"),
            "key `clients.a b`",
        ),
        (
            format!("[ops]\nkey = \"{line}\"\nkinds = []\ncolour = 1\n"),
            "key `clients.ops`",
        ),
        ("[ops]\nkinds = []\n".to_owned(), "key `clients.ops`"),
        (
            format!("[ops]\nkey = \"{line}\"\nkinds = [\"*\", \"echo\"]\n"),
            "key `clients.ops.kinds`",
        ),
        (
            format!("[ops]\nkey = \"{line}\"\nkinds = []\nnodes = [\"a/b\"]\n"),
            "key `clients.ops.nodes`",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text).expect_err(&text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn client_names_are_topic_segments() {
    for ok in ["ops", "a-b_C9", &"x".repeat(64)] {
        assert!(valid_client_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a/b", "a+b", "#", "a b", "é", &"x".repeat(65)] {
        assert!(valid_client_name(bad).is_err(), "{bad:?}");
    }
}

// ---- refusals ----

#[test]
fn a_signed_list_from_a_client_is_taken_and_narrowed_to_its_targets() {
    let k = key();
    let mut p = policy("ops", &k, Kinds::Only(vec!["echo".into()]));
    p.nodes = vec!["pi-1".into(), "pi-2".into()];
    p.labels = BTreeMap::from([("site".into(), "barn".into())]);
    let mut g = gate(vec![p]);
    let a = admit(
        &mut g,
        signed(vec![sub("t1", "echo", OPS_REPLY)], &k, "ops", NOW),
    );
    assert!(a.answered.is_empty());
    let r = &a.accepted[0].requires;
    assert_eq!(r.nodes, vec!["pi-1".to_owned(), "pi-2".to_owned()]);
    assert_eq!(r.labels["site"], "barn");
    assert!(g.named().all(|(_, v)| v == 0), "nothing refused");
}

#[test]
fn unsigned_unknown_and_forged_lists_are_not_answered() {
    let k = key();
    let items = || vec![sub("t1", "echo", OPS_REPLY)];
    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    refused_silently(
        &mut g,
        TaskSubmissions {
            items: items(),
            seal: None,
        },
        "unsigned",
    );

    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    refused_silently(&mut g, signed(items(), &k, "ghost", NOW), "unknown_client");

    // Signed for `ops`, but with another key.
    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    let other = key();
    let list = signed(items(), &other, "ops", NOW);
    refused_silently(&mut g, list, "unknown_key");

    // Altered after signing: the reply topic moved elsewhere.
    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    let mut list = signed(items(), &k, "ops", NOW);
    list.items[0].reply_to = "fog/v1/nodes/pi-1/tasks".into();
    refused_silently(&mut g, list, "bad_signature");
}

#[test]
fn the_unknown_key_reason_names_the_key() {
    let k = key();
    let other = key();
    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    let mut list = signed(vec![sub("t1", "echo", OPS_REPLY)], &other, "ops", NOW);
    let e = g.check_seal(&mut list, NOW).expect_err("refused").0;
    assert_eq!(
        e.to_string(),
        format!(
            "submission refused: it is signed by key {}, which is not trusted here",
            other.public().id()
        )
    );
}

#[test]
fn stale_and_future_lists_are_answered_on_the_clients_topics_only() {
    let k = key();
    for at in [NOW - 301_000, NOW + 301_000] {
        let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
        let items = vec![
            sub("t1", "echo", OPS_REPLY),
            sub("t2", "echo", "fog/v1/clients/other/x/results"),
        ];
        let a = admit(&mut g, signed(items, &k, "ops", at));
        assert!(a.accepted.is_empty());
        assert_eq!(a.answered.len(), 1, "only the item with the client's topic");
        assert_eq!(a.answered[0].0.id, "t1");
        assert!(matches!(a.answered[0].1, Refusal::Seal(_)));
        assert!(!a.answered[0].1.retryable());
        assert_eq!(g.refused("stale"), 1);
    }
    // Within the skew either way: taken.
    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    for at in [NOW - 299_000, NOW + 299_000] {
        let a = admit(
            &mut g,
            signed(vec![sub("t", "echo", OPS_REPLY)], &k, "ops", at),
        );
        assert_eq!(a.accepted.len(), 1, "{at}");
    }
}

#[test]
fn a_replayed_list_is_refused_and_not_answered() {
    let k = key();
    let mut g = gate(vec![policy("ops", &k, Kinds::Any)]);
    let list = signed(vec![sub("t1", "echo", OPS_REPLY)], &k, "ops", NOW);
    assert_eq!(admit(&mut g, list.clone()).accepted.len(), 1);
    refused_silently(&mut g, list.clone(), "replayed");
    // Even once its items were refused, a signed list is taken once.
    let mut g = gate(vec![policy("ops", &k, Kinds::Only(vec![]))]);
    let a = admit(&mut g, list.clone());
    assert_eq!(a.answered.len(), 1);
    assert!(admit(&mut g, list).answered.is_empty());
    assert_eq!(g.refused("replayed"), 1);
}

#[test]
fn items_are_checked_one_by_one() {
    let k = key();
    let mut p = policy("ops", &k, Kinds::Only(vec!["echo".into()]));
    p.nodes = vec!["pi-1".into()];
    p.labels = BTreeMap::from([("site".into(), "barn".into())]);
    let mut g = gate(vec![p]);
    let mut wrong_label = sub("label", "echo", OPS_REPLY);
    wrong_label
        .requires
        .labels
        .insert("site".into(), "house".into());
    let mut same_label = sub("same", "echo", OPS_REPLY);
    same_label
        .requires
        .labels
        .insert("site".into(), "barn".into());
    let mut wrong_node = sub("node", "echo", OPS_REPLY);
    wrong_node.requires.nodes = vec!["pi-9".into()];
    let mut own_node = sub("own", "echo", OPS_REPLY);
    own_node.requires.nodes = vec!["pi-1".into()];
    let items = vec![
        sub("ok", "echo", OPS_REPLY),
        sub("kind", "sha256", OPS_REPLY),
        sub("topic", "echo", "fog/v1/clients/other/c/results"),
        sub("wild", "echo", "fog/v1/clients/ops/#"),
        sub("bare", "echo", "fog/v1/clients/ops/"),
        wrong_label,
        same_label,
        wrong_node,
        own_node,
    ];
    let a = admit(&mut g, signed(items, &k, "ops", NOW));
    let ids = |v: Vec<&TaskSubmission>| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(a.accepted.iter().collect()), ["ok", "same", "own"]);
    assert_eq!(
        ids(a.answered.iter().map(|(s, _)| s).collect()),
        ["kind", "label", "node"]
    );
    let reasons: Vec<String> = a.answered.iter().map(|(_, r)| r.to_string()).collect();
    assert!(
        reasons[0].contains("may not submit tasks of kind \"sha256\""),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("label site=house"), "{}", reasons[1]);
    assert!(reasons[2].contains("node \"pi-9\""), "{}", reasons[2]);
    assert_eq!(g.refused("kind"), 1);
    assert_eq!(g.refused("target"), 2);
    assert_eq!(g.refused("reply_topic"), 3);
}

#[test]
fn an_open_gate_takes_everything_and_says_so() {
    let mut g = Gate::default();
    let list = TaskSubmissions {
        items: vec![sub("t1", "anything", "anywhere/results")],
        seal: None,
    };
    assert_eq!(admit(&mut g, list).accepted.len(), 1);
    let named: BTreeMap<_, _> = g.named().collect();
    assert_eq!(named["submissions_unsigned_allowed"], 1);
    assert_eq!(named["submissions_refused_unsigned_total"], 0);
    assert_eq!(
        gate(vec![]).named().last(),
        Some(("submissions_unsigned_allowed", 0))
    );
}

#[test]
fn refusals_are_logged_at_most_once_per_period_but_all_counted() {
    let mut g = gate(vec![]);
    let t0 = Instant::now();
    for i in 0..100 {
        let list = TaskSubmissions {
            items: vec![],
            seal: None,
        };
        g.admit(list, NOW, t0 + Duration::from_millis(i));
    }
    assert_eq!(g.refused("unsigned"), 100);
    let i = LABELS
        .iter()
        .position(|l| *l == "unsigned")
        .expect("listed");
    assert_eq!(g.last_log[i], Some(t0), "logged once, at the first");
}

// ---- the replay cache ----

#[test]
fn the_replay_cache_forgets_after_its_window() {
    let mut c = ReplayCache::new(Duration::from_secs(600), 10);
    c.take(&[1; 64], 1_000).expect("new");
    assert_eq!(c.take(&[1; 64], 1_000 + 599_999), Err(Refusal::Replayed));
    c.take(&[2; 64], 2_000).expect("new");
    // At 601 s the first is forgotten (by then a copy of it is stale), the second not.
    c.take(&[1; 64], 1_000 + 600_000).expect("forgotten");
    assert_eq!(c.take(&[2; 64], 601_999), Err(Refusal::Replayed));
    assert_eq!(c.len(), 2);
}

#[test]
fn the_replay_cache_is_bounded_and_refuses_when_full() {
    let mut c = ReplayCache::new(Duration::from_secs(600), 3);
    for i in 0..3u8 {
        c.take(&[i; 64], 1_000).expect("room");
    }
    let full = c.take(&[9; 64], 2_000);
    assert_eq!(full, Err(Refusal::Busy(3)));
    assert!(full.expect_err("busy").retryable());
    assert_eq!(c.len(), 3);
    // Room again once the old ones expire.
    c.take(&[9; 64], 601_000).expect("expired ones made room");
    assert_eq!(c.len(), 1);
}

#[test]
fn the_replay_cache_keys_on_the_signature_prefix_and_survives_a_clock_step_back() {
    let mut c = ReplayCache::new(Duration::from_secs(10), 10);
    let mut a = [7u8; 64];
    c.take(&a, 50_000).expect("new");
    a[40] = 0; // differs after the 16 bytes kept
    assert_eq!(c.take(&a, 50_000), Err(Refusal::Replayed));
    // The wall clock stepped back: the new entry is stamped no earlier than the last.
    c.take(&[8; 64], 10_000).expect("new");
    assert_eq!(c.take(&[8; 64], 59_999), Err(Refusal::Replayed));
    c.take(&[8; 64], 60_000).expect("forgotten with the others");
}
