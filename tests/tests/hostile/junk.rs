//! Junk: random bytes (seeded, so a failure reproduces) on every topic fog subscribes
//! to, then a 20 MB publish on the submit topic and on a node's tasks topic. Every
//! junk message is counted as malformed by its reader, nothing runs, and neither the
//! coordinator nor an agent ever reconnects (one connection each through its proxy).

use std::time::Duration;

use crate::site::{reading_where, Backend, Raw, Site, COORDINATOR, WAIT};

/// The seed of the junk.
const SEED: u64 = 14;
const PER_TOPIC: usize = 5;
const BIG: usize = 20 * 1024 * 1024;

pub async fn run(backend: Backend) {
    let t0 = std::time::Instant::now();
    let mut site = Site::start(backend).await;
    let mut readings = site
        .backend
        .watch(COORDINATOR, "fog/v1/nodes/h-1/metrics")
        .await;
    let base = site.coord.view.borrow().counters.clone();
    let get0 = |k: &str| base.get(k).copied().unwrap_or(0);
    let mut rng = fastrand::Rng::with_seed(SEED);
    // Who may publish where with the generated ACL: a node on its own topics, a
    // client on submit, the coordinator on a node's tasks.
    let node = Raw::login(&site.backend, "h-1").await;
    let ops = Raw::login(&site.backend, "ops").await;
    let coord = Raw::login(&site.backend, COORDINATOR).await;
    let targets: [(&Raw, &str); 7] = [
        (&node, "fog/v1/nodes/h-1/status"),
        (&node, "fog/v1/nodes/h-1/heartbeat"),
        (&node, "fog/v1/nodes/h-1/metrics"),
        (&node, "fog/v1/nodes/h-1/alerts"),
        (&node, "fog/v1/nodes/h-1/results"),
        (&ops, "fog/v1/tasks/submit"),
        (&coord, "fog/v1/nodes/h-1/tasks"),
    ];
    for (who, topic) in targets {
        for _ in 0..PER_TOPIC {
            let len = rng.usize(1..4096);
            let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            who.publish(topic, junk).await;
        }
    }
    // The coordinator reads status, heartbeat and metrics (registry) and results and
    // submit (dispatcher); it does not subscribe to alerts. Of the registry's 15, the
    // seed makes 2 longer than their message type's limit (rejected before decoding):
    // those count as oversized, the other 13 as malformed.
    let n = PER_TOPIC as u64;
    let want_registry = get0("rejected_total") + 3 * n;
    let want_malformed = get0("rejected_malformed_total") + 3 * n - 2;
    let want_oversized = get0("rejected_oversized_total") + 2;
    let want_dispatch = get0("tasks_malformed_total") + 2 * n;
    let counts = |s: &fog_proto::CoordinatorStatus| {
        let g = |k: &str| s.counters.get(k).copied().unwrap_or(0);
        (
            g("rejected_total"),
            g("rejected_malformed_total"),
            g("rejected_oversized_total"),
            g("tasks_malformed_total"),
        )
    };
    let want = (want_registry, want_malformed, want_oversized, want_dispatch);
    site.coord
        .wait_for("the junk counted", WAIT, |s| counts(s) == want)
        .await;
    // The junk on h-1's tasks topic decodes to nothing: not even a refused list.
    let r = reading_where(&mut readings, "the agent untouched", |a| {
        a.assignments_refused_total == 0 && a.tasks_finished_total == 0
    })
    .await;
    assert_eq!(r.agent.tasks_rejected_total, 0);

    if site.backend.limits_packets() {
        big_publishes(&site).await;
    } else {
        eprintln!(
            "hostile junk: no 20 MB publish: this Mosquitto has no max_packet_size \
             (the generated-config variant and poison.rs cover it)"
        );
    }
    // A second of readings and status: a dropped link would reconnect within 0.5 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    site.coord
        .wait_for("a fresh snapshot", WAIT, |s| {
            s.counters.get("readings_total").copied().unwrap_or(0)
                > base.get("readings_total").copied().unwrap_or(0)
        })
        .await;
    site.assert_one_connection_each();
    let s = site.coord.view.borrow().clone();
    assert_eq!(counts(&s), want, "nothing more arrived");
    assert_eq!(
        s.counters
            .get("tasks_submitted_total")
            .copied()
            .unwrap_or(0),
        0
    );
    site.assert_no_whoami();
    let took = site.normal_load(200).await;
    site.assert_one_connection_each();
    eprintln!(
        "hostile junk: {} junk messages, 2 x 20 MB, 200 tasks in {took:?}, {:?} in all",
        7 * PER_TOPIC,
        t0.elapsed()
    );
    site.stop().await;
}

/// 20 MB on the submit topic and on a node's tasks topic, each from a fresh login:
/// the broker refuses a packet over its limit by closing the sender's connection.
async fn big_publishes(site: &Site) {
    let mut big_submit = Raw::login(&site.backend, "ops").await;
    big_submit
        .publish("fog/v1/tasks/submit", vec![b'{'; BIG])
        .await;
    let mut big_tasks = Raw::login(&site.backend, COORDINATOR).await;
    big_tasks
        .publish("fog/v1/nodes/h-1/tasks", vec![b'{'; BIG])
        .await;
    eprintln!(
        "20 MB on submit: sender cut off: {}",
        big_submit.cut_off().await
    );
    eprintln!(
        "20 MB on tasks: sender cut off: {}",
        big_tasks.cut_off().await
    );
}
