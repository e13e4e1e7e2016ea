use std::time::Duration;

use fog_proto::{Payload, TaskAssignment, TaskAssignments, TaskTrust};
use fog_rt::keys::{seal, KeyPair, SealError};

use super::store;
use super::*;
use crate::config::Config;

const NOW: u64 = 1_790_000_000_000;

fn list() -> TaskAssignments {
    TaskAssignments {
        items: vec![TaskAssignment {
            id: "evil-1".into(),
            attempt: 1,
            kind: "whoami".into(),
            payload: Payload(Vec::new()),
            timeout_ms: 5000,
            priority: 0,
            deadline_ms: 0,
            cacheable: false,
        }],
        seal: None,
    }
}

fn signed(key: &KeyPair, node: &str, at: u64) -> TaskAssignments {
    let mut l = list();
    seal(&mut l, key, node, at).expect("seals");
    l
}

fn gate(keys: &[&KeyPair]) -> Gate {
    Gate::new(
        keys.iter().map(|k| k.public().clone()).collect(),
        "pi-07",
        Duration::from_secs(300),
        false,
    )
}

fn label(r: Result<(), Refusal>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(Refusal::Drop(e)) => e.label().into(),
        Err(Refusal::Answer(reason)) => format!("answer: {reason}"),
    }
}

#[test]
fn only_fresh_lists_signed_by_a_trusted_key_for_this_node_pass() {
    let (coord, _) = KeyPair::generate().expect("key");
    let (other, _) = KeyPair::generate().expect("key");
    let mut g = gate(&[&coord]);
    assert_eq!(g.trust(), TaskTrust::Signed);
    assert_eq!(label(g.check(&mut signed(&coord, "pi-07", NOW), NOW)), "ok");
    assert_eq!(label(g.check(&mut list(), NOW)), "unsigned");
    assert_eq!(
        label(g.check(&mut signed(&other, "pi-07", NOW), NOW)),
        "unknown_key"
    );
    assert_eq!(
        label(g.check(&mut signed(&coord, "pi-08", NOW), NOW)),
        "wrong_scope"
    );
    let stale = label(g.check(&mut signed(&coord, "pi-07", NOW - 600_000), NOW));
    assert!(
        stale.starts_with("answer: assignment refused: it was signed 600 s ago"),
        "{stale}"
    );
    let ahead = label(g.check(&mut signed(&coord, "pi-07", NOW + 600_000), NOW));
    assert!(ahead.contains("in the future"), "{ahead}");
    let mut forged = signed(&coord, "pi-07", NOW);
    forged.items[0].kind = "reboot".into();
    assert_eq!(label(g.check(&mut forged, NOW)), "bad_signature");
    assert_eq!(g.refused_total(), 6);
}

#[test]
fn a_rotation_trusts_both_keys_then_only_the_new_one() {
    let (old, _) = KeyPair::generate().expect("key");
    let (new, _) = KeyPair::generate().expect("key");
    let mut both = gate(&[&old, &new]);
    assert_eq!(
        label(both.check(&mut signed(&old, "pi-07", NOW), NOW)),
        "ok"
    );
    assert_eq!(
        label(both.check(&mut signed(&new, "pi-07", NOW), NOW)),
        "ok"
    );
    let mut after = gate(&[&new]);
    assert_eq!(
        label(after.check(&mut signed(&new, "pi-07", NOW), NOW)),
        "ok"
    );
    assert_eq!(
        label(after.check(&mut signed(&old, "pi-07", NOW), NOW)),
        "unknown_key"
    );
}

#[test]
fn no_key_runs_nothing_and_allow_unsigned_runs_anything() {
    let (coord, _) = KeyPair::generate().expect("key");
    let mut none = gate(&[]);
    assert_eq!(none.trust(), TaskTrust::NoTrustedKey);
    assert_eq!(
        label(none.check(&mut signed(&coord, "pi-07", NOW), NOW)),
        "unknown_key"
    );
    let mut lab = Gate::new(Vec::new(), "pi-07", Duration::from_secs(300), true);
    assert_eq!(lab.trust(), TaskTrust::AllowUnsigned);
    assert_eq!(label(lab.check(&mut list(), NOW)), "ok");
    assert_eq!(lab.refused_total(), 0);
    assert!(matches!(
        none.check(&mut list(), NOW),
        Err(Refusal::Drop(SealError::Unsigned))
    ));
}

#[test]
fn the_trusted_keys_folder_adds_lists_and_removes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("trusted-keys");
    let (a, _) = KeyPair::generate().expect("key");
    let (b, _) = KeyPair::generate().expect("key");
    let (k, new) =
        store::add(&keys, &format!("{} coordinator@barn", a.public().line())).expect("adds");
    assert!(new);
    assert_eq!(&k, a.public());
    assert!(
        !store::add(&keys, &a.public().line()).expect("again").1,
        "idempotent"
    );
    let e = store::add(&keys, "ssh-ed25519 AAAA")
        .unwrap_err()
        .to_string();
    assert!(e.contains("fog-ed25519"), "{e}");

    let toml = format!(
        "data_dir = {:?}\n[trust]\ncoordinator_keys = [{:?}]\nkeys_dir = {:?}\n",
        dir.path().display().to_string(),
        b.public().line(),
        keys.display().to_string()
    );
    let config = Config::from_toml(&toml).expect("valid");
    let all = trusted_keys(&config).expect("reads");
    assert_eq!(all, vec![b.public().clone(), a.public().clone()]);
    assert!(store::describe(&config, &all).contains("2 trusted coordinator keys"));

    let removed = store::remove(&keys, &a.public().id()[..6]).expect("removes");
    assert_eq!(&removed, a.public());
    assert_eq!(
        trusted_keys(&config).expect("reads"),
        vec![b.public().clone()]
    );
    assert!(store::remove(&keys, "ffff").is_err());

    std::fs::write(keys.join("junk.pub"), "not a key").expect("write");
    let e = trusted_keys(&config).unwrap_err().to_string();
    assert!(e.contains("junk.pub"), "{e}");
}

#[test]
fn bad_trust_config_names_the_key() {
    let e = Config::from_toml("[trust]\ncoordinator_keys = [\"fog-ed25519 AAAA\"]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`trust.coordinator_keys`") && e.contains("entry 1"),
        "{e}"
    );
    let e = Config::from_toml("[trust]\nmax_clock_skew_secs = 0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`trust.max_clock_skew_secs`"), "{e}");
}

#[test]
fn the_node_key_is_made_once_and_signs_as_this_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, made) = Identity::load_or_create(dir.path(), "pi-07").expect("makes");
    assert!(made);
    let (again, made) = Identity::load_or_create(dir.path(), "pi-07").expect("loads");
    assert!(!made);
    assert_eq!(id.line(), again.line());
    let mut l = list();
    id.seal(&mut l, NOW);
    let key = fog_rt::keys::PublicKey::from_line(&id.line()).expect("line");
    fog_rt::keys::open(&mut l, &[key], "pi-07", None).expect("verifies");
}
