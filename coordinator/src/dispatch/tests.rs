//! Unit tests of the dispatcher, driven with paused time.

use super::*;
use crate::registry::LivenessConfig;
use fog_proto::{Birth, Encoding, Payload, Status, Topics};
use fog_proto::{Outcome, TaskSubmission};
use tokio::time::Instant;

fn registry(nodes: &[&str]) -> Registry {
    let with_arch: Vec<(&str, &str)> = nodes.iter().map(|n| (*n, "x")).collect();
    registry_with_arch(&with_arch)
}

fn registry_with_arch(nodes: &[(&str, &str)]) -> Registry {
    let with_labels: Vec<TestNode> = nodes.iter().map(|(n, arch)| (*n, *arch, &[][..])).collect();
    registry_with_labels(&with_labels)
}

/// A node's id, arch and labels.
pub(super) type TestNode<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

pub(super) fn registry_with_labels(nodes: &[TestNode]) -> Registry {
    let mut r = Registry::new(Topics::default(), LivenessConfig::default());
    for (n, arch, labels) in nodes {
        let s = Status {
            seal: None,
            online: true,
            at_ms: 1,
            reason: String::new(),
            birth: Some(Birth {
                node_key: String::new(),
                task_trust: Default::default(),
                node: NodeId::new(*n).expect("valid"),
                version: "0".into(),
                arch: (*arch).into(),
                cores: 1,
                memory_bytes: 1,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                encoding: Encoding::Json,
                task_kinds: vec!["echo".into()],
                heartbeat_interval_ms: 1000,
                metrics_interval_ms: 1000,
                keep_alive_secs: 10,
                started_at_ms: 1,
            }),
        };
        r.ingest(
            &format!("fog/v1/nodes/{n}/status"),
            &codec::encode(&s, Encoding::Json).expect("encodes"),
            Instant::now(),
            1,
        )
        .expect("birth");
    }
    r
}

fn submit(id: &str, kind: &str) -> Vec<u8> {
    codec::encode(
        &TaskSubmissions {
            seal: None,
            items: vec![TaskSubmission {
                id: id.into(),
                kind: kind.into(),
                payload: Payload(b"x".to_vec()),
                reply_to: "fog/v1/clients/c/results".into(),
                priority: 0,
                timeout_ms: 1000,
                cacheable: false,
                key: String::new(),
                strategy: String::new(),
                requires: Default::default(),
            }],
        },
        Encoding::Json,
    )
    .expect("encodes")
}

fn result(id: &str, attempt: u32, node: &str, outcome: Outcome) -> Vec<u8> {
    codec::encode(
        &TaskResults {
            seal: None,
            items: vec![TaskResult {
                id: id.into(),
                attempt,
                node: NodeId::new(node).expect("valid"),
                at_ms: 1,
                outcome,
            }],
        },
        Encoding::Json,
    )
    .expect("encodes")
}

fn done() -> Outcome {
    Outcome::Completed {
        output: Payload(b"x".to_vec()),
        truncated: false,
        exit_code: None,
        duration_ms: 1,
        cpu_ms: 0,
        peak_rss_bytes: 0,
        from_cache: false,
    }
}

fn now() -> Instant {
    Instant::now()
}

pub(super) fn rr() -> Dispatcher {
    Dispatcher::with_seed(
        PlacementConfig {
            strategy: Strategy::RoundRobin,
            // No backoff: a retry is placed in the same call.
            retry_initial: Duration::ZERO,
            ..Default::default()
        },
        1,
    )
}

pub(super) fn node_of(o: &Out) -> String {
    match o {
        Out::Assign { node, .. } => node.to_string(),
        other => panic!("not an assignment: {other:?}"),
    }
}

#[test]
fn round_robin_over_capable_nodes() {
    let r = registry(&["a", "b", "c"]);
    let mut d = rr();
    let nodes: Vec<String> = (0..6)
        .map(|i| node_of(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), now())[0]))
        .collect();
    let count = |n: &str| nodes.iter().filter(|t| *t == n).count();
    assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
}

#[test]
fn busy_is_placed_elsewhere_and_only_the_first_result_is_forwarded() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let first = d.on_submit(&r, &submit("t", "echo"), now());
    let node1 = if node_of(&first[0]) == "a" { "a" } else { "b" };
    let node2 = if node1 == "a" { "b" } else { "a" };
    let busy = Outcome::Rejected {
        reason: "busy".into(),
        retryable: true,
    };
    let again = d.on_result(&r, node1, &result("t", 1, node1, busy), now());
    assert_eq!(again.len(), 1);
    assert_eq!(node_of(&again[0]), node2);
    // A late result of attempt 1 is fenced off.
    assert!(d
        .on_result(&r, node1, &result("t", 1, node1, done()), now())
        .is_empty());
    let fwd = d.on_result(&r, node2, &result("t", 2, node2, done()), now());
    assert_eq!(fwd.len(), 1);
    assert!(matches!(&fwd[0], Out::Reply { topic, .. } if topic == "fog/v1/clients/c/results"));
    // A redelivered duplicate of the winning result is dropped.
    assert!(d
        .on_result(&r, node2, &result("t", 2, node2, done()), now())
        .is_empty());
    assert_eq!(d.counters.duplicate_results_dropped, 1);
    assert_eq!(d.counters.stale_results_dropped, 1);
    // The client resubmitting the id gets the same answer, without a new run.
    let re = d.on_submit(&r, &submit("t", "echo"), now());
    assert_eq!(re, fwd);
}

#[test]
fn no_capable_node_is_a_clear_answer() {
    let r = registry(&["a"]);
    let mut d = rr();
    let out = d.on_submit(&r, &submit("t", "resize"), now());
    let Out::Reply { result: res, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        matches!(res.outcome, Outcome::Rejected { ref reason, .. } if reason.contains("resize")),
        "{res:?}"
    );
    assert!(d.on_submit(&r, b"garbage", now()).is_empty());
    assert_eq!(d.counters.malformed, 1);
}

fn offline(r: &mut Registry, n: &str, now: Instant) {
    let s = Status {
        seal: None,
        online: false,
        at_ms: 2,
        reason: "connection lost".into(),
        birth: None,
    };
    r.ingest(
        &format!("fog/v1/nodes/{n}/status"),
        &codec::encode(&s, Encoding::Json).expect("encodes"),
        now,
        2,
    )
    .expect("will");
}

fn failed() -> Outcome {
    Outcome::Failed {
        error: "disk on fire".into(),
        retryable: true,
        exit_code: Some(1),
        duration_ms: 1,
    }
}

fn submit_with(id: &str, strategy: &str, timeout_ms: u32) -> Vec<u8> {
    let mut list: TaskSubmissions = codec::decode(&submit(id, "echo")).expect("decodes");
    list.items[0].strategy = strategy.into();
    list.items[0].timeout_ms = timeout_ms;
    codec::encode(&list, Encoding::Json).expect("encodes")
}

fn assigned(outs: &[Out]) -> Vec<(String, u32)> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Assign { node, task } => Some((node.to_string(), task.attempt)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn tasks_on_a_node_that_goes_offline_are_placed_again_and_fenced() {
    let mut r = registry(&["a", "b"]);
    let mut d = rr();
    let t0 = Instant::now();
    let placed: Vec<(String, u32)> = (0..4)
        .flat_map(|i| assigned(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), t0)))
        .collect();
    assert_eq!(placed.iter().filter(|(n, _)| n == "a").count(), 2);
    offline(&mut r, "a", t0);
    let again = assigned(&d.tick(&r, t0));
    assert_eq!(
        again,
        vec![("b".to_owned(), 2), ("b".to_owned(), 2)],
        "a's two tasks go to b as attempt 2"
    );
    assert_eq!(d.counters.node_lost, 2);
    assert_eq!(
        d.placement_latency.count, 4,
        "the placement latency counts first placements, not the two placed again"
    );
    // a comes back and reports its old attempt: fenced off.
    let a_task = (0..4)
        .map(|i| format!("t{i}"))
        .find(|id| d.table.get(id).is_some_and(|t| t.attempt == 2))
        .expect("a re-placed task");
    assert!(d
        .on_result(&r, "a", &result(&a_task, 1, "a", done()), t0)
        .is_empty());
    let fwd = d.on_result(&r, "b", &result(&a_task, 2, "b", done()), t0);
    assert_eq!(fwd.len(), 1);
    assert_eq!(
        d.nodes.loads[d.nodes.slot_of[&NodeId::new("b").unwrap()]].in_flight,
        3
    );
    assert_eq!(
        d.nodes.loads[d.nodes.slot_of[&NodeId::new("a").unwrap()]].in_flight,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn silence_past_timeout_and_grace_is_retried_elsewhere() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let t0 = Instant::now();
    let first = assigned(&d.on_submit(&r, &submit_with("t", "", 1000), t0));
    assert_eq!(first.len(), 1);
    // Timeout 1 s + grace 5 s: nothing at 5.9 s, a retry at 6 s.
    assert!(d.tick(&r, t0 + Duration::from_millis(5900)).is_empty());
    let again = assigned(&d.tick(&r, t0 + Duration::from_secs(6)));
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].0, first[0].0, "placed on the other node");
    assert_eq!(again[0].1, 2);
    assert_eq!(d.counters.timed_out, 1);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opens_after_five_failures_and_closes_after_two_probes() {
    let r = registry(&["a", "b", "c"]);
    let mut d = Dispatcher::with_seed(
        PlacementConfig {
            strategy: Strategy::RoundRobin,
            retry_initial: Duration::ZERO,
            max_attempts: 1,
            ..Default::default()
        },
        1,
    );
    let t0 = Instant::now();
    let mut n = 0;
    let mut submit_one = |d: &mut Dispatcher, at: Instant| {
        n += 1;
        let id = format!("t{n}");
        let out = assigned(&d.on_submit(&r, &submit(&id, "echo"), at));
        (id, out[0].0.clone())
    };
    // Every task that lands on a fails; the others succeed.
    let mut fails = 0;
    while fails < 5 {
        let (id, node) = submit_one(&mut d, t0);
        let outcome = if node == "a" {
            fails += 1;
            failed()
        } else {
            done()
        };
        d.on_result(&r, &node, &result(&id, 1, &node, outcome), t0);
    }
    assert_eq!(d.counters.breaker_opened, 1);
    for _ in 0..20 {
        let (id, node) = submit_one(&mut d, t0 + Duration::from_secs(30));
        assert_ne!(node, "a", "an open breaker gets no tasks");
        d.on_result(&r, &node, &result(&id, 1, &node, done()), t0);
    }
    // After 60 s: half-open, exactly one probe at a time goes to a.
    let t1 = t0 + Duration::from_secs(61);
    let (p1, node) = submit_one(&mut d, t1);
    assert_eq!(node, "a", "the next task is a's probe");
    let (other, node) = submit_one(&mut d, t1);
    assert_ne!(node, "a", "one probe at a time");
    d.on_result(&r, &node, &result(&other, 1, &node, done()), t1);
    d.on_result(&r, "a", &result(&p1, 1, "a", done()), t1);
    let (p2, node) = submit_one(&mut d, t1);
    assert_eq!(node, "a");
    d.on_result(&r, "a", &result(&p2, 1, "a", done()), t1);
    let nodes: Vec<String> = (0..6).map(|_| submit_one(&mut d, t1).1).collect();
    assert_eq!(
        nodes.iter().filter(|n| *n == "a").count(),
        2,
        "closed again: back in the rotation"
    );
}

#[tokio::test(start_paused = true)]
async fn probes_start_when_the_open_period_ends_not_at_the_next_weights_update() {
    let r = registry(&["a", "b", "c"]);
    let mut d = Dispatcher::with_seed(
        PlacementConfig {
            strategy: Strategy::RoundRobin,
            retry_initial: Duration::ZERO,
            max_attempts: 1,
            ..Default::default()
        },
        1,
    );
    let t0 = Instant::now();
    let mut n = 0;
    let mut submit_one = |d: &mut Dispatcher, at: Instant| {
        n += 1;
        let id = format!("t{n}");
        let out = assigned(&d.on_submit(&r, &submit(&id, "echo"), at));
        (id, out[0].0.clone())
    };
    let mut fails = 0;
    while fails < 5 {
        let (id, node) = submit_one(&mut d, t0);
        let outcome = if node == "a" {
            fails += 1;
            failed()
        } else {
            done()
        };
        d.on_result(&r, &node, &result(&id, 1, &node, outcome), t0);
    }
    let open_for = crate::breaker::BreakerConfig::default().open_for;
    // A sync half a second before the open period ends: the weights are then not due
    // again for a second, and the registry does not move.
    // Placements while it is open (they build and cache who may take the kind).
    let (id, node) = submit_one(&mut d, t0 + Duration::from_secs(30));
    assert_ne!(node, "a", "open");
    d.on_result(&r, &node, &result(&id, 1, &node, done()), t0);
    d.tick(&r, t0 + open_for - Duration::from_millis(500));
    let t1 = t0 + open_for + Duration::from_millis(10);
    d.tick(&r, t1);
    let (_, node) = submit_one(&mut d, t1);
    assert_eq!(
        node, "a",
        "a's probe goes out 10 ms after the open period, not at the next weights update"
    );
}

#[tokio::test(start_paused = true)]
async fn out_of_attempts_is_dead_lettered_with_the_last_failure() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let t0 = Instant::now();
    let mut out = d.on_submit(&r, &submit("t", "echo"), t0);
    for attempt in 1..=3 {
        let (node, a) = assigned(&out)[0].clone();
        assert_eq!(a, attempt);
        out = d.on_result(&r, &node, &result("t", attempt, &node, failed()), t0);
    }
    let Out::Reply { result: res, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        matches!(&res.outcome, Outcome::Failed { error, .. } if error == "disk on fire"),
        "{res:?}"
    );
    let dead: Vec<&DeadLetter> = d.dead_letters().collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].last_error.contains("disk on fire"));
    assert_eq!(d.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn past_the_panic_threshold_breakers_are_ignored() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let now = Instant::now();
    // Slots exist only after a sync; do one, then open both breakers.
    let _ = d.on_submit(&r, &submit("warm", "echo"), now);
    for s in &mut d.nodes.slots {
        for _ in 0..5 {
            s.breaker.on_failure(&BreakerConfig::default(), now);
        }
    }
    d.nodes.generation += 1;
    let out = assigned(&d.on_submit(&r, &submit("t", "echo"), now));
    assert_eq!(
        out.len(),
        1,
        "both breakers open: balance across all instead of refusing"
    );
    assert!(d.counters.panic_mode >= 1);
}

#[tokio::test(start_paused = true)]
async fn with_only_suspect_nodes_a_task_waits_then_is_refused_with_the_reason() {
    let mut r = registry(&["a"]);
    let mut d = rr();
    let t0 = Instant::now();
    // a falls silent: suspect after 3 missed 1 s intervals.
    r.tick(t0 + Duration::from_millis(3500));
    let t1 = t0 + Duration::from_millis(3500);
    assert!(
        d.on_submit(&r, &submit("t", "echo"), t1).is_empty(),
        "waits"
    );
    assert_eq!(
        d.counters_map()
            .iter()
            .find(|(k, _)| *k == "tasks_waiting")
            .map(|x| x.1),
        Some(1)
    );
    let out = d.tick(&r, t1 + Duration::from_secs(31));
    let Out::Reply { result: res, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        matches!(&res.outcome, Outcome::Rejected { reason, .. } if reason.contains("1 suspect")),
        "{res:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_may_name_its_strategy_and_a_bad_name_is_refused() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let now = Instant::now();
    let out = d.on_submit(&r, &submit_with("t1", "least_connections", 0), now);
    assert_eq!(assigned(&out).len(), 1);
    let out = d.on_submit(&r, &submit_with("t2", "fastest", 0), now);
    let Out::Reply { result: res, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        matches!(&res.outcome, Outcome::Rejected { reason, retryable: false } if reason.contains("fastest")),
        "{res:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requirements_filter_nodes_and_an_unmet_one_is_named() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let t0 = Instant::now();
    let with = |id: &str, arch: &str| {
        let mut list: TaskSubmissions = codec::decode(&submit(id, "echo")).expect("decodes");
        list.items[0].requires.arch = arch.into();
        codec::encode(&list, Encoding::Json).expect("encodes")
    };
    assert_eq!(assigned(&d.on_submit(&r, &with("fits", "x"), t0)).len(), 1);
    assert!(
        d.on_submit(&r, &with("arm-only", "aarch64"), t0).is_empty(),
        "waits for a node that fits"
    );
    let out = d.tick(&r, t0 + Duration::from_secs(31));
    let Out::Reply { result: res, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(
        matches!(&res.outcome, Outcome::Rejected { reason, .. } if reason.contains("requirements (arch aarch64)")),
        "{res:?}"
    );
}

fn submit_keyed(id: &str, key: &str, arch: &str) -> Vec<u8> {
    let mut list: TaskSubmissions = codec::decode(&submit(id, "echo")).expect("decodes");
    list.items[0].key = key.into();
    list.items[0].requires.arch = arch.into();
    codec::encode(&list, Encoding::Json).expect("encodes")
}

/// A task whose requirements narrow the set is decided over its own list; the
/// ring the others use is still built from (and walks) the whole set. Before the
/// fix, the first consistent-hash call for a kind built the cached ring from
/// whatever list it was given, here [c], and every later key went to c.
#[tokio::test(start_paused = true)]
async fn a_filtered_consistent_hash_task_does_not_narrow_the_ring_for_the_rest() {
    let r = registry_with_arch(&[("a", "x"), ("b", "x"), ("c", "arm")]);
    let dispatcher = || {
        Dispatcher::with_seed(
            PlacementConfig {
                strategy: Strategy::ConsistentHash,
                retry_initial: Duration::ZERO,
                ..Default::default()
            },
            1,
        )
    };
    let t0 = Instant::now();
    let mut d = dispatcher();
    let out = assigned(&d.on_submit(&r, &submit_keyed("arm", "k", "arm"), t0));
    assert_eq!(out, vec![("c".to_owned(), 1)], "only c fits");
    assert_eq!(
        d.on_result(&r, "c", &result("arm", 1, "c", done()), t0)
            .len(),
        1
    );
    // The same keys on a dispatcher that never saw the filtered task.
    let mut fresh = dispatcher();
    let mut nodes = Vec::new();
    for i in 0..30 {
        let task = submit_keyed(&format!("t{i}"), &format!("key-{i}"), "");
        let got = assigned(&d.on_submit(&r, &task, t0));
        let want = assigned(&fresh.on_submit(&r, &task, t0));
        assert_eq!(got, want, "key-{i}");
        nodes.push(got[0].0.clone());
    }
    for n in ["a", "b", "c"] {
        assert!(nodes.iter().any(|x| x == n), "no key on {n}: {nodes:?}");
    }
}

/// Least connections decides from the placer's heap, which only knows what the
/// dispatcher tells it: every placement and every result must reach it.
#[test]
fn least_connections_follows_every_placement_and_result() {
    let r = registry(&["a", "b", "c"]);
    let mut d = Dispatcher::with_seed(
        PlacementConfig {
            strategy: Strategy::LeastConnections,
            ..Default::default()
        },
        1,
    );
    let mut nodes: Vec<String> = (0..3)
        .map(|i| node_of(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), now())[0]))
        .collect();
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one each: {nodes:?}");
    // The last node placed on has the highest slot of the three (ties go to the
    // lowest), so it wins the next one only if its finished task was counted.
    let last = nodes.pop().expect("three");
    assert_eq!(
        d.on_result(&r, &last, &result("t2", 1, &last, done()), now())
            .len(),
        1
    );
    let next = node_of(&d.on_submit(&r, &submit("t3", "echo"), now())[0]);
    assert_eq!(next, last);
}

#[test]
fn cost_aware_places_on_the_cheapest_node_by_its_cost_label_until_it_is_busy() {
    // "dear" has no room problem but costs more; "solar" costs nothing; "odd" has a
    // cost label that is not a number, so it is used last.
    let r = registry_with_labels(&[
        ("dear", "x", &[("cost", "0.30")]),
        ("odd", "x", &[("cost", "cheap")]),
        ("solar", "x", &[("cost", "0")]),
    ]);
    let mut d = rr();
    let nodes: Vec<String> = (0..4)
        .map(|i| {
            let id = format!("t{i}");
            node_of(&d.on_submit(&r, &submit_with(&id, "cost_aware", 1000), now())[0])
        })
        .collect();
    // One core each: two in flight per node is the bound, so solar takes two, then
    // the priced node, and the unreadable one only when both are at the bound.
    assert_eq!(nodes, ["solar", "solar", "dear", "dear"]);
    let next = node_of(&d.on_submit(&r, &submit_with("t4", "cost_aware", 1000), now())[0]);
    assert_eq!(
        next, "odd",
        "the readable ones at their bound: the unreadable one"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drained_node_takes_nothing_new_and_tasks_wait_for_an_undrained_one() {
    let r = registry(&["a", "b"]);
    let mut d = rr();
    let a = NodeId::new("a").expect("valid");
    let b = NodeId::new("b").expect("valid");
    assert!(d.set_drained(&a, true), "drained");
    assert!(!d.set_drained(&a, true), "already");
    let placed: Vec<String> = (0..4)
        .flat_map(|i| assigned(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"), now())))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(placed, ["b", "b", "b", "b"], "only on the node not drained");
    // Both drained: a task waits (nothing is refused while a drain may be lifted)...
    d.set_drained(&b, true);
    assert!(
        d.on_submit(&r, &submit("w", "echo"), now()).is_empty(),
        "waits"
    );
    // ...and goes as soon as one is undrained.
    d.set_drained(&a, false);
    let out = d.tick(&r, now() + Duration::from_millis(50));
    assert_eq!(assigned(&out), [("a".to_owned(), 1)], "{out:?}");
    // Waiting out max_wait with every node drained says why.
    d.set_drained(&a, true);
    assert!(d.on_submit(&r, &submit("late", "echo"), now()).is_empty());
    let out = d.tick(&r, now() + Duration::from_secs(31));
    let refused = out.iter().find_map(|o| match o {
        Out::Reply { result, .. } => Some(result.outcome.clone()),
        _ => None,
    });
    assert!(
        matches!(&refused, Some(Outcome::Rejected { reason, .. }) if reason.contains("2 drained")),
        "{refused:?}"
    );
}
