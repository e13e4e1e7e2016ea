//! What a Raspberry Pi announces and publishes, for the benchmarks and the simulator:
//! a birth record, and a reading with two filesystems, three interfaces, two sensors.

use std::collections::BTreeMap;

use fog_proto::{Birth, Disk, Encoding, Network, NodeId, Reading, Temperature};

pub fn birth(node: &NodeId) -> Birth {
    Birth {
        node: node.clone(),
        version: "0.1.0".into(),
        arch: "aarch64".into(),
        cores: 4,
        memory_bytes: 4 << 30,
        labels: BTreeMap::from([
            ("site".into(), "farm".into()),
            ("room".into(), "barn".into()),
        ]),
        encoding: Encoding::Json,
        task_kinds: vec!["echo".into(), "sha256".into()],
        heartbeat_interval_ms: 5000,
        metrics_interval_ms: 10_000,
        keep_alive_secs: 30,
        started_at_ms: 1_790_000_000_000,
        node_key: String::new(),
        task_trust: Default::default(),
    }
}

pub fn reading(at_ms: u64) -> Reading {
    let mut r = Reading {
        seq: 1,
        at_ms,
        uptime_secs: 86_400,
        ..Default::default()
    };
    r.cpu.total_pct = Some(12.5);
    r.load.one = 0.5;
    r.memory.total_bytes = 4 << 30;
    r.memory.available_bytes = 3 << 30;
    for (mount, device) in [("/", "mmcblk0p2"), ("/boot/firmware", "mmcblk0p1")] {
        r.disks.push(Disk {
            mount: mount.into(),
            device: device.into(),
            fs_type: "ext4".into(),
            total_bytes: 32 << 30,
            available_bytes: 20 << 30,
            ..Default::default()
        });
    }
    for i in ["eth0", "wlan0", "tailscale0"] {
        r.networks.push(Network {
            interface: i.into(),
            rx_bytes_total: 123_456_789,
            tx_bytes_total: 98_765_432,
            ..Default::default()
        });
    }
    for s in ["thermal_zone0/cpu-thermal", "hwmon0/rp1_adc"] {
        r.temperatures.push(Temperature {
            sensor: s.into(),
            celsius: 48.5,
        });
    }
    r
}
