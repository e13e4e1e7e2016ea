use fog_proto::{NodeId, NodeState, Outcome, Payload};

use super::{Ended, Profiles, TaskSample, BUCKETS, PER_NODE, WINDOW_MS};

const NOW: u64 = 1_796_200_000_000;

fn done(ms: u64, cpu: u64, cached: bool) -> Outcome {
    Outcome::Completed {
        output: Payload::default(),
        truncated: false,
        exit_code: Some(0),
        duration_ms: ms,
        cpu_ms: cpu,
        peak_rss_bytes: 4 << 20,
        from_cache: cached,
    }
}

fn sample(kind: &str, node: &str, outcome: &Outcome, at_ms: u64) -> TaskSample {
    TaskSample::new(kind, node, outcome, at_ms - 5, at_ms).expect("an end")
}

#[test]
fn percentiles_rates_and_totals() {
    let mut p = Profiles::default();
    for i in 0..100u64 {
        // 1..=100 ms, every tenth from the cache, a failure and a timeout.
        p.record(&sample(
            "resize",
            "pi-1",
            &done(i + 1, 2 * (i + 1), i % 10 == 0),
            NOW - 1000,
        ));
    }
    p.record(&sample(
        "resize",
        "pi-1",
        &Outcome::Failed {
            error: "exit 1".into(),
            retryable: false,
            exit_code: Some(1),
            duration_ms: 7,
        },
        NOW,
    ));
    p.record(&sample(
        "resize",
        "pi-1",
        &Outcome::TimedOut { after_ms: 5000 },
        NOW,
    ));
    assert!(
        TaskSample::new("resize", "pi-1", &Outcome::Accepted, 0, 1).is_none(),
        "accepted is no end"
    );
    let r = p.report(NOW, &[]);
    let k = &r.kinds[0];
    assert_eq!((k.kind.as_str(), k.count), ("resize", 102));
    assert_eq!(k.p50_ms, 51);
    assert!((95..=97).contains(&k.p95_ms), "{}", k.p95_ms);
    assert_eq!(k.p99_ms, 100, "the 5 s timeout is the top 1 %");
    assert!((k.failure_rate - 1.0 / 102.0).abs() < 1e-9);
    assert!((k.timeout_rate - 1.0 / 102.0).abs() < 1e-9);
    assert!((k.cache_hit_rate - 0.1).abs() < 1e-9);
    assert!((k.mean_cpu_ms - 101.0).abs() < 1e-9);
    assert_eq!(k.max_peak_rss_bytes, 4 << 20);
    assert_eq!(r.nodes.len(), 1);
    let t = &p.totals()["resize"];
    assert_eq!(
        (
            t.ended[&Ended::Completed],
            t.ended[&Ended::Failed],
            t.ended[&Ended::TimedOut]
        ),
        (100, 1, 1)
    );
    assert_eq!(t.duration.count, 102);
    assert_eq!(t.duration.counts.iter().sum::<u64>(), 102);
    // 1..=100 ms: 1 in the 1 ms bucket, 1 more by 2.5 ms, ...; the timeout past 1 s.
    assert_eq!(t.duration.counts[0], 1);
    assert_eq!(
        t.duration.counts[BUCKETS
            .iter()
            .position(|b| *b == 5.0)
            .expect("a 5 s bucket")],
        1
    );
}

#[test]
fn the_window_and_the_rings_are_bounded() {
    let mut p = Profiles::default();
    for i in 0..(PER_NODE as u64 + 50) {
        p.record(&sample(
            "echo",
            "pi-1",
            &done(1, 0, false),
            NOW - WINDOW_MS - 10_000 + i,
        ));
    }
    p.record(&sample("echo", "pi-2", &done(1, 0, false), NOW));
    assert_eq!(
        p.report(NOW, &[])
            .nodes
            .iter()
            .find(|n| n.node.as_deref() == Some("pi-1"))
            .map(|n| n.count),
        None,
        "older than the hour"
    );
    p.expire(NOW);
    let r = p.report(NOW, &[]);
    assert_eq!(r.kinds[0].count, 1, "only pi-2's is in the hour");
    assert_eq!(r.nodes.len(), 1);
    // The coordinator's own verdicts count for the kind, on no node.
    p.record(&sample(
        "echo",
        "",
        &Outcome::Rejected {
            reason: "no node".into(),
            retryable: false,
        },
        NOW,
    ));
    assert_eq!(p.report(NOW, &[]).nodes.len(), 1);
}

#[test]
fn bottlenecks_name_what_stands_out() {
    let mut p = Profiles::default();
    // pi-3 is five times slower than its peers at the same kind.
    for i in 0..20u64 {
        for (node, ms) in [("pi-1", 10), ("pi-2", 12), ("pi-3", 60)] {
            p.record(&sample(
                "resize",
                node,
                &done(ms, 1, false),
                NOW - 3_000_000 + i,
            ));
        }
    }
    // "encode" got slower in the last five minutes.
    for i in 0..60u64 {
        p.record(&sample(
            "encode",
            "pi-1",
            &done(10, 1, false),
            NOW - 3_000_000 + i,
        ));
    }
    for i in 0..30u64 {
        p.record(&sample(
            "encode",
            "pi-1",
            &done(100, 1, false),
            NOW - 60_000 + i,
        ));
    }
    let mut hot = crate::http::tests::fleet_view().status.nodes[0].clone();
    hot.node = NodeId::new("pi-9").expect("valid");
    hot.cpu_pct = Some(97.0);
    hot.state = NodeState::Online;
    let r = p.report(NOW, &[hot]);
    let has = |what: &str, node: Option<&str>, kind: Option<&str>| {
        r.bottlenecks
            .iter()
            .any(|b| b.what == what && b.node.as_deref() == node && b.kind.as_deref() == kind)
    };
    assert!(
        has("slow_node", Some("pi-3"), Some("resize")),
        "{:?}",
        r.bottlenecks
    );
    assert!(!has("slow_node", Some("pi-1"), Some("resize")));
    assert!(
        has("p95_rising", None, Some("encode")),
        "{:?}",
        r.bottlenecks
    );
    assert!(!has("p95_rising", None, Some("resize")));
    assert!(
        has("node_saturated", Some("pi-9"), None),
        "{:?}",
        r.bottlenecks
    );
}

#[test]
fn kinds_past_the_cap_are_counted_as_other_and_empty_rings_go() {
    let mut p = Profiles::default();
    for i in 0..(super::MAX_KINDS + 10) {
        p.record(&sample(&format!("k{i}"), "pi-1", &done(1, 0, false), NOW));
    }
    assert_eq!(p.totals().len(), super::MAX_KINDS + 1, "the cap, and other");
    assert_eq!(p.totals()[super::OTHER_KIND].ended[&Ended::Completed], 10);
    p.expire(NOW + WINDOW_MS + 10_000);
    assert!(
        p.report(NOW + WINDOW_MS + 10_000, &[]).kinds.is_empty(),
        "nothing in the window"
    );
    assert!(
        p.kinds.is_empty() && p.nodes.is_empty(),
        "empty rings are dropped"
    );
}

#[test]
fn a_node_hot_on_cpu_and_memory_is_one_bottleneck() {
    let mut hot = crate::http::tests::fleet_view().status.nodes[0].clone();
    hot.cpu_pct = Some(97.0);
    hot.mem_pct = Some(95.0);
    hot.state = NodeState::Online;
    let r = Profiles::default().report(NOW, &[hot]);
    assert_eq!(r.bottlenecks.len(), 1, "{:?}", r.bottlenecks);
    assert!(
        r.bottlenecks[0]
            .detail
            .contains("CPU at 97%, memory at 95%"),
        "{:?}",
        r.bottlenecks
    );
}
