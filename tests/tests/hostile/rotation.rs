//! Key rotation: an agent trusting the old and the new coordinator key runs lists
//! signed by either; restarted (same data dir) trusting only the new key, it refuses
//! the old key's list (counted, unanswered, not run) and runs the new key's.

use std::path::Path;

use fog_e2e::{coordinator_key, fleet, RunningAgent, TestBroker, Watcher};
use fog_proto::{Encoding, Outcome, TaskResult};
use fog_rt::keys::{KeyPair, PublicKey};

use crate::assignments::{encode, final_of, list, sealed};
use crate::site::{evidence_toml, marks, reading_where, Raw, WAIT};

const TASKS: &str = "fog/v1/nodes/r-1/tasks";

fn agent(broker: &TestBroker, dir: &Path, keys: Vec<PublicKey>) -> RunningAgent {
    let mut cfg = fleet(&broker.url())
        .expect("fleet")
        .agent_from_toml("r-1", &dir.join("data"), &evidence_toml(dir))
        .expect("agent config");
    cfg.trust.coordinator_keys = keys;
    RunningAgent::start_with(cfg, tempfile::tempdir().expect("temp dir"))
}

fn genuine(id: &str, key: &KeyPair) -> Vec<u8> {
    encode(
        &sealed(list(id, "mark", &format!("{id}\n")), key, "r-1", 0),
        Encoding::Json,
    )
}

/// Publish `id` (signed by `key`) until its final result arrives: the first copy may
/// come before the agent has subscribed; later copies are answered from its store.
async fn until_run(
    atk: &Raw,
    w: &mut Watcher,
    id: &str,
    key: &KeyPair,
    seen: &mut Vec<TaskResult>,
) {
    let bytes = genuine(id, key);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        atk.publish(TASKS, bytes.clone()).await;
        let got = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            final_of(w, id, seen, 0),
        )
        .await;
        if let Ok(r) = got {
            assert!(matches!(r.outcome, Outcome::Completed { .. }), "{r:?}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never ran");
    }
}

pub async fn run() {
    let broker = TestBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("temp dir");
    let old = coordinator_key();
    let new = KeyPair::generate().expect("a key").0;
    let mut w = Watcher::start(broker.addr, "fog/v1/nodes/r-1/results").await;
    let mut readings = Watcher::start(broker.addr, "fog/v1/nodes/r-1/metrics").await;
    let atk = Raw::connect(broker.addr, None).await.expect("connects");
    let mut seen = Vec::new();

    let a = agent(
        &broker,
        dir.path(),
        vec![old.public().clone(), new.public().clone()],
    );
    until_run(&atk, &mut w, "rot-old", &old, &mut seen).await;
    until_run(&atk, &mut w, "rot-new", &new, &mut seen).await;
    assert_eq!(marks(dir.path()), ["rot-old", "rot-new"]);
    a.stop().await;

    let a = agent(&broker, dir.path(), vec![new.public().clone()]);
    until_run(&atk, &mut w, "rot-new-2", &new, &mut seen).await;
    let mark = seen.len();
    atk.publish(TASKS, genuine("rot-old-2", &old)).await;
    atk.publish(TASKS, genuine("rot-new-3", &new)).await;
    final_of(&mut w, "rot-new-3", &mut seen, mark).await;
    assert!(
        !seen.iter().any(|r| r.id == "rot-old-2"),
        "the removed key's list was answered: {seen:?}"
    );
    assert_eq!(
        marks(dir.path()),
        ["rot-old", "rot-new", "rot-new-2", "rot-new-3"]
    );
    reading_where(
        &mut readings,
        "one refused, two run since the restart",
        |a| a.assignments_refused_total == 1 && a.tasks_finished_total == 2,
    )
    .await;
    a.stop().await;
}
