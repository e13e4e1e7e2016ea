use std::time::Duration;

use fog_proto::{Heartbeat, NodeId, Sealed};
use fog_rt::keys::{seal, KeyPair};
use tokio::time::Instant;

use super::*;

fn node(n: &str) -> NodeId {
    NodeId::new(n).expect("valid")
}

fn heartbeat(key: &KeyPair, scope: &str) -> Heartbeat {
    let mut hb = Heartbeat {
        seq: 1,
        at_ms: 5,
        ..Heartbeat::default()
    };
    seal(&mut hb, key, scope, 5).expect("seals");
    hb
}

fn closed(dir: &std::path::Path) -> NodeKeys {
    NodeKeys::new(&Default::default(), Some(dir), false).expect("opens")
}

#[tokio::test(start_paused = true)]
async fn a_node_is_believed_once_its_key_is_approved_and_only_with_that_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pi, _) = KeyPair::generate().expect("key");
    let (intruder, _) = KeyPair::generate().expect("key");
    let mut keys = closed(dir.path());
    let n = node("pi-07");
    let line = pi.public().line();

    let e = keys.check(
        &n,
        &mut heartbeat(&pi, "pi-07"),
        Some(&line),
        Instant::now(),
    );
    assert_eq!(e, Err(Distrust::Unapproved));
    assert_eq!(keys.standing(&n), "unapproved");
    let pending = store::pending(dir.path()).expect("lists");
    assert_eq!(
        pending,
        vec![(n.clone(), pi.public().clone())],
        "its key waits"
    );

    store::approve(dir.path(), &n, None).expect("approves");
    assert!(store::pending(dir.path()).expect("lists").is_empty());
    // Looked at again at most once a second.
    tokio::time::advance(Duration::from_secs(2)).await;
    keys.check(
        &n,
        &mut heartbeat(&pi, "pi-07"),
        Some(&line),
        Instant::now(),
    )
    .expect("believed");
    assert_eq!(keys.standing(&n), "approved");
    assert!(keys.claims().is_empty());

    let mut forged = heartbeat(&intruder, "pi-07");
    let e = keys.check(
        &n,
        &mut forged,
        Some(&intruder.public().line()),
        Instant::now(),
    );
    assert!(matches!(e, Err(Distrust::Impostor(_))), "{e:?}");
    assert_eq!(keys.standing(&n), "impostor");
    // The real node goes on being believed, and the flag stays: it is an alarm.
    keys.check(&n, &mut heartbeat(&pi, "pi-07"), None, Instant::now())
        .expect("believed");
    assert_eq!(keys.standing(&n), "impostor");
    let mut unsigned = Heartbeat::default();
    assert!(matches!(
        keys.check(&n, &mut unsigned, None, Instant::now()),
        Err(Distrust::Impostor(fog_rt::keys::SealError::Unsigned))
    ));
    // The real node's own message for another node's topic is not that node's.
    let mut elsewhere = heartbeat(&pi, "pi-08");
    assert!(keys
        .check(&n, &mut elsewhere, None, Instant::now())
        .is_err());
    assert!(elsewhere.seal().is_some());
}

#[test]
fn pinned_keys_in_the_config_need_no_folder_and_open_believes_all() {
    let (pi, _) = KeyPair::generate().expect("key");
    let pinned = std::collections::BTreeMap::from([(node("pi-07"), pi.public().clone())]);
    let mut keys = NodeKeys::new(&pinned, None, false).expect("opens");
    let now = Instant::now();
    keys.check(&node("pi-07"), &mut heartbeat(&pi, "pi-07"), None, now)
        .expect("believed");
    assert_eq!(
        keys.check(&node("pi-08"), &mut heartbeat(&pi, "pi-08"), None, now),
        Err(Distrust::Unapproved)
    );
    let mut open = NodeKeys::open();
    open.check(&node("x"), &mut Heartbeat::default(), None, now)
        .expect("open");
}

#[test]
fn approving_replaces_a_key_and_bad_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = KeyPair::generate().expect("key");
    let (b, _) = KeyPair::generate().expect("key");
    let n = node("pi-07");
    assert!(matches!(
        store::approve(dir.path(), &n, None),
        Err(store::StoreError::NotPending(_))
    ));
    store::approve(dir.path(), &n, Some(a.public().clone())).expect("approves");
    store::put_pending(dir.path(), &n, b.public()).expect("pending");
    let (new, old) = store::approve(dir.path(), &n, None).expect("approves again");
    assert_eq!((&new, old.as_ref()), (b.public(), Some(a.public())));
    assert_eq!(
        store::approved_key(dir.path(), &n).expect("reads"),
        Some(b.public().clone())
    );
    assert!(store::revoke(dir.path(), &n).expect("revokes"));
    assert_eq!(store::approved_key(dir.path(), &n).expect("reads"), None);
    std::fs::write(dir.path().join("approved/pi-09.pub"), "junk").expect("write");
    let e = store::approved(dir.path()).unwrap_err().to_string();
    assert!(e.contains("pi-09.pub"), "{e}");
}
