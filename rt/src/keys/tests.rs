use std::os::unix::fs::PermissionsExt as _;

use fog_proto::{Payload, Sealed, TaskAssignment, TaskAssignments};

use super::*;

fn list(attempt: u32) -> TaskAssignments {
    TaskAssignments {
        items: vec![TaskAssignment {
            id: "t-1".into(),
            attempt,
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

const NOW: u64 = 1_790_000_000_000;
const FRESH: Freshness = Freshness {
    now_ms: NOW,
    max_skew_ms: 300_000,
};

fn sealed(key: &KeyPair, scope: &str, at: u64) -> TaskAssignments {
    let mut m = list(1);
    seal(&mut m, key, scope, at).expect("seals");
    m
}

#[test]
fn a_sealed_message_opens_with_its_key_and_only_for_its_scope_and_time() {
    let (k, _) = KeyPair::generate().expect("key");
    let (other, _) = KeyPair::generate().expect("key");
    let keys = [other.public().clone(), k.public().clone()];

    let mut m = sealed(&k, "node-1", NOW);
    let by = open(&mut m, &keys, "node-1", Some(FRESH)).expect("opens");
    assert_eq!(by.id(), k.public().id());
    assert!(m.seal().is_some(), "the seal stays on");

    let e = open(&mut list(1), &keys, "node-1", Some(FRESH)).unwrap_err();
    assert_eq!(e, SealError::Unsigned);
    let e = open(&mut m, &keys[..1], "node-1", Some(FRESH)).unwrap_err();
    assert_eq!(e.label(), "unknown_key");
    let e = open(&mut m, &keys, "node-2", Some(FRESH)).unwrap_err();
    assert_eq!(e.label(), "wrong_scope");
    assert!(e.to_string().contains("\"node-1\""), "{e}");

    let mut old = sealed(&k, "node-1", NOW - 301_000);
    let e = open(&mut old, &keys, "node-1", Some(FRESH)).unwrap_err();
    assert_eq!(e.label(), "stale");
    assert!(e.to_string().contains("301 s ago"), "{e}");
    let mut ahead = sealed(&k, "node-1", NOW + 400_000);
    let e = open(&mut ahead, &keys, "node-1", Some(FRESH)).unwrap_err();
    assert_eq!(e.label(), "future");
    // Within the skew either way is fine; without a freshness check any age is.
    open(
        &mut sealed(&k, "node-1", NOW - 299_000),
        &keys,
        "node-1",
        Some(FRESH),
    )
    .expect("fresh enough");
    open(&mut old, &keys, "node-1", None).expect("no age check asked");
}

#[test]
fn any_change_to_a_sealed_message_breaks_it() {
    let (k, _) = KeyPair::generate().expect("key");
    let keys = [k.public().clone()];
    let tamper: [fn(&mut TaskAssignments); 5] = [
        |m| m.items[0].attempt = 2,
        |m| m.items[0].kind = "reboot".into(),
        |m| m.items.push(m.items[0].clone()),
        |m| m.seal.as_mut().expect("sealed").at_ms += 1,
        |m| m.seal.as_mut().expect("sealed").scope = "node-2".into(),
    ];
    for (i, t) in tamper.iter().enumerate() {
        let mut m = sealed(&k, "node-1", NOW);
        t(&mut m);
        let scope = m.seal.as_ref().map(|s| s.scope.clone()).unwrap_or_default();
        let e = open(&mut m, &keys, &scope, Some(FRESH)).unwrap_err();
        assert_eq!(e.label(), "bad_signature", "tamper {i}");
    }
    let mut m = sealed(&k, "node-1", NOW);
    m.seal.as_mut().expect("sealed").sig.0.truncate(10);
    let e = open(&mut m, &keys, "node-1", Some(FRESH)).unwrap_err();
    assert_eq!(e.label(), "bad_signature");
}

#[test]
fn public_key_lines_round_trip_and_bad_lines_say_why() {
    let (k, _) = KeyPair::generate().expect("key");
    let line = format!("  {} coordinator@barn \n", k.public().line());
    let back = PublicKey::from_line(&line).expect("parses");
    assert_eq!(&back, k.public());
    assert_eq!(back.id().len(), 16);
    for (bad, why) in [
        ("", "empty"),
        ("ssh-ed25519 AAAA", "does not start"),
        ("fog-ed25519", "missing"),
        ("fog-ed25519 !!!", "not base64"),
        ("fog-ed25519 AAAA", "3 bytes, not 32"),
    ] {
        let e = PublicKey::from_line(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn key_files_are_private_never_replaced_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys/coordinator.key");
    let made = KeyPair::create(&path).expect("creates");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let line = std::fs::read_to_string(dir.path().join("keys/coordinator.key.pub")).expect("pub");
    assert_eq!(line.trim(), made.public().line());

    let e = KeyPair::create(&path).unwrap_err();
    assert!(matches!(e, KeyError::Exists { .. }), "{e}");
    let loaded = KeyPair::load(&path).expect("loads");
    assert_eq!(loaded.public(), made.public());
    let (again, new) = KeyPair::load_or_create(&path).expect("loads");
    assert!(!new);
    assert_eq!(again.public(), made.public());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = KeyPair::load(&path).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");

    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "hello").expect("write");
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let e = KeyPair::load(&junk).unwrap_err().to_string();
    assert!(e.contains("not an Ed25519 private key"), "{e}");
}

/// A key made by OpenSSL (PKCS#8 v1, no public key inside) loads.
#[test]
fn an_openssl_key_loads() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("openssl.key");
    std::fs::write(&path, pem).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let k = KeyPair::load(&path).expect("loads");
    // RFC 8410's example key: its public key is 19bf44096984cdfe8541bac167dc3b96...
    assert_eq!(
        k.public().line(),
        "fog-ed25519 Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="
    );
}
