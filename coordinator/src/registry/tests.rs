use super::*;
use fog_proto::{Encoding, Prefix};

fn birth(node: &str, hb_ms: u32) -> Status {
    Status {
        seal: None,
        online: true,
        at_ms: 1,
        reason: String::new(),
        birth: Some(Birth {
            node_key: String::new(),
            task_trust: Default::default(),
            node: NodeId::new(node).expect("valid"),
            version: "0.1.0".into(),
            arch: "aarch64".into(),
            cores: 4,
            memory_bytes: 1 << 30,
            labels: Default::default(),
            encoding: Encoding::Json,
            task_kinds: vec![],
            heartbeat_interval_ms: hb_ms,
            metrics_interval_ms: 10_000,
            keep_alive_secs: 10,
            started_at_ms: 1,
        }),
    }
}

fn reg() -> Registry {
    Registry::new(Topics::new(Prefix::default()), LivenessConfig::default())
}

fn enc<M: fog_proto::message::Message>(m: &M, e: Encoding) -> Vec<u8> {
    codec::encode(m, e).expect("encodes")
}

#[tokio::test(start_paused = true)]
async fn birth_heartbeat_silence_and_recovery() {
    let mut r = reg();
    let t0 = Instant::now();
    r.ingest(
        "fog/v1/nodes/pi-1/status",
        &enc(&birth("pi-1", 1000), Encoding::Json),
        t0,
        1,
    )
    .expect("birth");
    assert_eq!(r.get("pi-1").expect("known").state, NodeState::Online);
    let hb = Heartbeat {
        seq: 1,
        cpu_pct: Some(50.0),
        mem_pct: 20.0,
        ..Heartbeat::default()
    };
    r.ingest(
        "fog/v1/nodes/pi-1/heartbeat",
        &enc(&hb, Encoding::Postcard),
        t0,
        2,
    )
    .expect("heartbeat");
    assert!(r.tick(t0 + Duration::from_millis(2900)).is_empty());
    let t = r.tick(t0 + Duration::from_millis(3000));
    assert_eq!(t[0].to, NodeState::Suspect);
    let t = r.tick(t0 + Duration::from_millis(6000));
    assert_eq!(t[0].to, NodeState::Offline);
    // It speaks again: back online.
    r.ingest(
        "fog/v1/nodes/pi-1/heartbeat",
        &enc(&hb, Encoding::Json),
        t0 + Duration::from_secs(7),
        3,
    )
    .expect("heartbeat");
    assert_eq!(r.get("pi-1").expect("known").state, NodeState::Online);
    let s = r.summaries();
    assert_eq!(s[0].cpu_pct, Some(50.0));
    assert_eq!(s[0].arch, "aarch64");
    // Both heartbeats were stamped 0 and taken at 2 and 3 ms: their ages.
    assert_eq!(r.heartbeat_age.count, 2);
    assert!((r.heartbeat_age.sum_secs - 0.005).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn silence_past_one_and_a_half_keep_alives_is_offline() {
    let mut r = Registry::new(
        Topics::default(),
        LivenessConfig {
            suspect_after_missed: 1,
            offline_after_missed: 1000,
            ..LivenessConfig::default()
        },
    );
    let t0 = Instant::now();
    // keep_alive_secs = 10 in the helper's birth record.
    r.ingest(
        "fog/v1/nodes/k/status",
        &enc(&birth("k", 1000), Encoding::Json),
        t0,
        1,
    )
    .expect("birth");
    let t = r.tick(t0 + Duration::from_millis(14_900));
    assert_eq!(t[0].to, NodeState::Suspect);
    let t = r.tick(t0 + Duration::from_secs(15));
    assert_eq!(t[0].to, NodeState::Offline);
}

#[tokio::test(start_paused = true)]
async fn without_the_keep_alive_rule_only_missed_heartbeats_count() {
    let mut r = Registry::new(
        Topics::default(),
        LivenessConfig {
            suspect_after_missed: 1000,
            offline_after_missed: 2000,
            phi_threshold: f64::INFINITY,
            offline_after_keep_alives: None,
            ..LivenessConfig::default()
        },
    );
    let t0 = Instant::now();
    // keep_alive_secs = 10 in the helper's birth record: 15 s would be offline.
    r.ingest(
        "fog/v1/nodes/k/status",
        &enc(&birth("k", 1000), Encoding::Json),
        t0,
        1,
    )
    .expect("birth");
    assert!(r.tick(t0 + Duration::from_secs(60)).is_empty());
    assert_eq!(r.get("k").expect("known").state, NodeState::Online);
    // The heartbeat rule still applies: 2000 intervals of 1 s.
    let t = r.tick(t0 + Duration::from_secs(2000));
    assert_eq!(t[0].to, NodeState::Offline);
}

#[tokio::test(start_paused = true)]
async fn last_will_marks_offline_at_once_and_only_a_birth_revives() {
    let mut r = reg();
    let t0 = Instant::now();
    r.ingest(
        "fog/v1/nodes/pi-2/status",
        &enc(&birth("pi-2", 1000), Encoding::Json),
        t0,
        1,
    )
    .expect("birth");
    let will = Status {
        seal: None,
        online: false,
        at_ms: 1,
        reason: "connection lost".into(),
        birth: None,
    };
    r.ingest(
        "fog/v1/nodes/pi-2/status",
        &enc(&will, Encoding::Json),
        t0,
        2,
    )
    .expect("will");
    assert_eq!(r.get("pi-2").expect("known").state, NodeState::Offline);
    // A straggling heartbeat does not revive a node that said goodbye.
    r.ingest(
        "fog/v1/nodes/pi-2/heartbeat",
        &enc(&Heartbeat::default(), Encoding::Json),
        t0,
        3,
    )
    .expect("heartbeat");
    assert_eq!(r.get("pi-2").expect("known").state, NodeState::Offline);
    r.ingest(
        "fog/v1/nodes/pi-2/status",
        &enc(&birth("pi-2", 1000), Encoding::Json),
        t0,
        4,
    )
    .expect("birth");
    assert_eq!(r.get("pi-2").expect("known").state, NodeState::Online);
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_counted_by_reason_and_changes_nothing() {
    let mut r = reg();
    let now = Instant::now();
    let hb = enc(&Heartbeat::default(), Encoding::Json);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "fog/v1/nodes/a/heartbeat",
            b"{not json".to_vec(),
            "malformed",
        ),
        (
            "fog/v1/nodes/a/heartbeat",
            vec![0xF0, 0x01, 0xff],
            "malformed",
        ),
        ("fog/v1/nodes/a/heartbeat", vec![b' '; 4096], "oversized"),
        ("fog/v1/nodes/a/metrics", b"\x00\x01".to_vec(), "malformed"),
        ("fog/v1/nodes/a/status", b"[]".to_vec(), "malformed"),
        (
            "fog/v1/nodes/a/status",
            enc(&birth("b", 1000), Encoding::Json),
            "wrong_topic",
        ),
        ("fog/v1/nodes/a/bogus", hb.clone(), "wrong_topic"),
        ("elsewhere/v1/nodes/a/heartbeat", hb.clone(), "wrong_topic"),
        ("fog/v1/nodes/a/results", hb.clone(), "wrong_topic"),
    ];
    for (topic, payload, reason) in &cases {
        let err = r.ingest(topic, payload, now, 0).expect_err("refused");
        assert_eq!(err.reason(), *reason, "{topic}: {err}");
    }
    assert!(r.is_empty(), "no node was created from bad input");
    assert_eq!(r.counter("rejected_total"), cases.len() as u64);
    assert_eq!(r.counter("rejected_oversized_total"), 1);
    r.ingest("fog/v1/nodes/a/heartbeat", &hb, now, 0)
        .expect("good input still flows");
    assert_eq!(r.len(), 1);
}

/// Forgetting: refused while the node is online (it would come straight back) or
/// unknown; an offline node leaves, its retained status (stamped before) does not
/// bring it back, a newer message does.
#[tokio::test(start_paused = true)]
async fn a_forgotten_node_stays_forgotten_until_it_speaks_again() {
    let mut r = reg();
    let t0 = Instant::now();
    let status = "fog/v1/nodes/pi-1/status";
    let mut b = birth("pi-1", 1000);
    b.at_ms = 5_000;
    r.ingest(status, &enc(&b, Encoding::Json), t0, 5_000)
        .expect("birth");
    assert_eq!(r.forget("pi-2", 9_000), Err(ForgetError::Unknown));
    assert_eq!(
        r.forget("pi-1", 9_000),
        Err(ForgetError::NotOffline(NodeState::Online))
    );
    let will = Status {
        seal: None,
        online: false,
        at_ms: 5_000,
        reason: "connection lost".into(),
        birth: None,
    };
    r.ingest(status, &enc(&will, Encoding::Json), t0, 6_000)
        .expect("will");
    let generation = r.generation();
    assert_eq!(r.forget("pi-1", 9_000), Ok(NodeState::Offline));
    assert!(r.get("pi-1").is_none() && r.is_empty());
    assert!(r.generation() > generation, "placement learns of it");

    // What the broker kept retained, again (a reconnect, a restart): dropped.
    for m in [&b, &will] {
        let e = r
            .ingest(status, &enc(m, Encoding::Json), t0, 10_000)
            .expect_err("old news");
        assert_eq!(e.reason(), "forgotten");
    }
    let old_hb = Heartbeat {
        seq: 9,
        at_ms: 8_000,
        ..Heartbeat::default()
    };
    let hb_topic = "fog/v1/nodes/pi-1/heartbeat";
    assert!(r
        .ingest(hb_topic, &enc(&old_hb, Encoding::Json), t0, 10_000)
        .is_err());
    assert!(r.is_empty());
    assert_eq!(r.counter("rejected_forgotten_total"), 3);

    // Started again: its new birth is believed, and it is forgotten no more.
    let mut again = birth("pi-1", 1000);
    again.at_ms = 20_000;
    r.ingest(status, &enc(&again, Encoding::Json), t0, 20_000)
        .expect("a new birth");
    assert_eq!(r.get("pi-1").expect("back").state, NodeState::Online);
    assert!(r.forgotten().is_empty());
}
