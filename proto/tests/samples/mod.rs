//! One fully populated sample of every message, shared by the golden-vector and
//! property tests.

use std::collections::BTreeMap;

use fog_proto::*;

pub fn node() -> NodeId {
    NodeId::new("pi-07").expect("valid node id")
}

pub fn birth() -> Birth {
    Birth {
        node: node(),
        version: "0.1.0".into(),
        arch: "aarch64".into(),
        cores: 4,
        memory_bytes: 4_000_000_000,
        labels: BTreeMap::from([
            ("site".into(), "barn".into()),
            ("role".into(), "camera".into()),
        ]),
        encoding: Encoding::Json,
        task_kinds: vec!["echo".into(), "sha256".into()],
        heartbeat_interval_ms: 5000,
        metrics_interval_ms: 10000,
        keep_alive_secs: 10,
        started_at_ms: 1_790_000_000_000,
        node_key:
            "fog-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKGt0Wv3yYyUQj9zMXNd2MvmA6w0KcQbm5Bq8zqX0Tn"
                .into(),
        task_trust: TaskTrust::Signed,
    }
}

/// A seal as a node or coordinator puts it on a message (the signature is not real:
/// the codec does not check it).
pub fn seal(scope: &str) -> Option<Seal> {
    Some(Seal {
        key: "3f2a9c1d0b8e7a65".into(),
        scope: scope.into(),
        at_ms: 1_790_000_000_321,
        sig: Payload((0..64).collect()),
    })
}

pub fn status() -> Status {
    Status {
        online: true,
        at_ms: 1_790_000_000_123,
        reason: String::new(),
        birth: Some(birth()),
        seal: seal("pi-07"),
    }
}

pub fn heartbeat() -> Heartbeat {
    Heartbeat {
        seq: 42,
        at_ms: 1_790_000_005_000,
        cpu_pct: Some(12.5),
        mem_pct: 40.25,
        load1: 0.5,
        queued: 1,
        running: 2,
        free_slots: 2,
        backlog_bytes: 4096,
        backlog_dropped_total: 3,
        degraded: vec!["store".to_owned()],
        seal: seal("pi-07"),
    }
}

pub fn reading() -> Reading {
    Reading {
        seq: 3,
        at_ms: 1_790_000_010_000,
        uptime_secs: 86_400,
        cpu: Cpu {
            total_pct: Some(25.0),
            per_core_pct: vec![50.0, 0.0, 25.0, 25.0],
            frequencies: vec![CpuFrequency {
                cpus: "0 1 2 3".into(),
                cur_khz: 600_000,
                min_khz: Some(600_000),
                max_khz: Some(1_500_000),
            }],
        },
        load: Load {
            one: 1.0,
            five: 0.75,
            fifteen: 0.5,
        },
        memory: Memory {
            total_bytes: 4_000_000_000,
            available_bytes: 3_000_000_000,
            used_pct: 25.0,
            swap_total_bytes: 1_000_000,
            swap_used_bytes: 0,
        },
        disks: vec![Disk {
            mount: "/".into(),
            device: "/dev/mmcblk0p2".into(),
            fs_type: "ext4".into(),
            total_bytes: 32_000_000_000,
            available_bytes: 16_000_000_000,
            used_pct: 50.0,
            read_bytes_per_sec: Some(4096.0),
            write_bytes_per_sec: None,
            read_bytes_total: Some(1_234_567_168),
            write_bytes_total: Some(987_654_144),
        }],
        networks: vec![Network {
            interface: "eth0".into(),
            rx_bytes_per_sec: Some(1500.5),
            tx_bytes_per_sec: Some(300.0),
            rx_packets_per_sec: Some(10.0),
            tx_packets_per_sec: Some(2.0),
            rx_errors_total: 1,
            tx_errors_total: 0,
            rx_dropped_total: 3,
            tx_dropped_total: 0,
            rx_bytes_total: 9_000_000,
            tx_bytes_total: 1_500_000,
            rx_packets_total: 60_000,
            tx_packets_total: 12_000,
            wifi: Some(Wifi {
                link_quality: 52,
                signal_dbm: -58,
                noise_dbm: None,
            }),
        }],
        temperatures: vec![Temperature {
            sensor: "thermal_zone0/cpu-thermal".into(),
            celsius: 48.5,
        }],
        agent: agent_self(),
        block_devices: vec![BlockDevice {
            name: "mmcblk0".into(),
            read_bytes_total: 1_300_000_768,
            write_bytes_total: 990_000_128,
            flash: Some(FlashHealth {
                life_used_a_pct: Some(10),
                life_used_b_pct: Some(20),
                pre_eol: Some(PreEol::Normal),
            }),
        }],
        power: Some(Power {
            throttled_flags: Some(0x50005),
            under_voltage_now: Some(true),
            under_voltage_occurred: Some(true),
            freq_capped_now: Some(false),
            freq_capped_occurred: Some(false),
            throttled_now: Some(true),
            throttled_occurred: Some(true),
            soft_temp_limit_now: Some(false),
            soft_temp_limit_occurred: Some(false),
        }),
        clock_synced: Some(true),
    }
}

fn agent_self() -> AgentSelf {
    AgentSelf {
        assignments_refused_total: Default::default(),
        rss_bytes: 3_500_000,
        cpu_secs: 0.25,
        publish_dropped_total: 0,
        tasks_finished_total: 120,
        tasks_rejected_total: 2,
        tasks_queued: 1,
        tasks_running: 2,
        arena_capacity_bytes: 4_194_304,
        arena_used_bytes: 8192,
        arena_high_water_bytes: 65_536,
        arena_refused_total: 1,
        cache_hits_total: 10,
        cache_misses_total: 30,
        forward_mode: "draining".to_owned(),
        backlog_entries: 12,
        backlog_bytes: 4096,
        backlog_dropped_total: 3,
        backlog_replayed_total: 40,
        publish_unacked: 2,
        degraded: Vec::new(),
    }
}

pub fn alert() -> Alert {
    Alert {
        at_ms: 1_790_000_020_000,
        resource: "cpu".into(),
        level: AlertLevel::Warning,
        value: 85.0,
        threshold: 80.0,
        trend: Trend::Rising,
        message: "cpu at 85.0 % is above the warning level of 80 %".into(),
    }
}

pub fn assignment() -> TaskAssignment {
    TaskAssignment {
        id: "t-1".into(),
        attempt: 1,
        kind: "sha256".into(),
        payload: Payload(b"hello \x00\xff".to_vec()),
        timeout_ms: 30_000,
        priority: 5,
        deadline_ms: 0,
        cacheable: true,
    }
}

pub fn results() -> Vec<TaskResult> {
    let outcomes = vec![
        Outcome::Accepted,
        Outcome::Rejected {
            reason: "busy".into(),
            retryable: true,
        },
        Outcome::Completed {
            output: Payload(b"abc".to_vec()),
            truncated: false,
            exit_code: Some(0),
            duration_ms: 12,
            cpu_ms: 10,
            peak_rss_bytes: 1_000_000,
            from_cache: false,
        },
        Outcome::Failed {
            error: "exit status 2: bad input".into(),
            retryable: false,
            exit_code: Some(2),
            duration_ms: 3,
        },
        Outcome::TimedOut { after_ms: 30_000 },
    ];
    outcomes
        .into_iter()
        .map(|outcome| TaskResult {
            id: "t-1".into(),
            attempt: 1,
            node: node(),
            at_ms: 1_790_000_030_000,
            outcome,
        })
        .collect()
}

pub fn submission() -> TaskSubmission {
    TaskSubmission {
        id: "client-9".into(),
        kind: "echo".into(),
        payload: Payload(b"ping".to_vec()),
        reply_to: "fog/v1/clients/cli-1/results".into(),
        priority: 0,
        timeout_ms: 10_000,
        cacheable: false,
        key: String::new(),
        requires: Requirements {
            arch: "aarch64".into(),
            labels: BTreeMap::from([("zone".into(), "north".into())]),
            min_free_memory_bytes: 64 * 1024 * 1024,
            nodes: vec!["pi-1".into()],
        },
        strategy: String::new(),
    }
}

pub fn coordinator_status() -> CoordinatorStatus {
    CoordinatorStatus {
        signing_key: Default::default(),
        warnings: Default::default(),
        omitted: Default::default(),
        online: true,
        at_ms: 1_790_000_040_000,
        version: "0.1.0".into(),
        reason: String::new(),
        nodes: vec![NodeSummary {
            node: node(),
            arch: "aarch64".into(),
            state: NodeState::Online,
            cores: 4,
            cpu_pct: Some(12.5),
            mem_pct: Some(40.0),
            load1: Some(0.5),
            last_seen_ms: 1_790_000_039_000,
            version: "0.1.0".into(),
            queued: 0,
            running: 1,
            health: NodeHealth::Degraded,
            in_flight: 3,
            breaker: "closed".into(),
            latency_ms: 12.5,
            degraded: Vec::new(),
            identity: "approved".into(),
            task_trust: TaskTrust::Signed,
            notices: vec!["under-voltage".into()],
            drained: true,
        }],
        counters: BTreeMap::from([("malformed_total".into(), 2)]),
        running: vec![TaskSummary {
            id: "job-7".into(),
            kind: "sha256".into(),
            node: "pi-1".into(),
            attempt: 2,
            state: "running".into(),
            detail: String::new(),
            at_ms: 1_790_000_039_500,
        }],
        recent: Vec::new(),
        dead: vec![TaskSummary {
            id: "job-3".into(),
            kind: "resize".into(),
            node: "pi-2".into(),
            attempt: 3,
            state: "dead".into(),
            detail: "failed: exit status 1".into(),
            at_ms: 1_790_000_030_000,
        }],
        scaling: Some(scaling()),
    }
}

pub fn scaling() -> ScalingAdvice {
    ScalingAdvice {
        at_ms: 1_790_000_050_000,
        direction: ScaleDirection::Up,
        current_nodes: 3,
        desired_nodes: 4,
        cpu_pct: 91.0,
        mem_pct: 50.0,
        reason: "fleet cpu 91 % over the target 70 % for 5 min".into(),
    }
}
