//! The engine's behaviour, reading by reading: holds, hysteresis, levels, trends,
//! bounds and forgetting (the config, trend and message tests sit in their modules).

use super::*;
use fog_proto::{Alert, AlertLevel, Reading, Trend};
use fog_proto::{Disk, Network, Temperature};
use proptest::prelude::*;

const T0: u64 = 1_790_000_000_000;
const STEP: u64 = 10_000;

fn cpu(v: f32) -> Reading {
    let mut r = Reading::default();
    r.cpu.total_pct = Some(v);
    r
}

/// Feed `values` as cpu readings every 10 s from `start`; the alerts with the
/// index of the reading that fired them.
fn feed(e: &mut AlertEngine, start: u64, values: &[f32]) -> Vec<(usize, Alert)> {
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        for a in e.evaluate(&cpu(v), start + i as u64 * STEP) {
            out.push((i, a));
        }
    }
    out
}

fn levels(alerts: &[(usize, Alert)]) -> Vec<AlertLevel> {
    alerts.iter().map(|(_, a)| a.level).collect()
}

#[test]
fn defaults_fire_warning_on_the_third_reading_above() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let got = feed(&mut e, T0, &[50.0, 50.0, 85.0, 85.0, 85.0, 85.0, 85.0]);
    assert_eq!(got.len(), 1, "{got:?}");
    let (i, a) = &got[0];
    assert_eq!(*i, 4, "the third reading above (30 s) fires");
    assert_eq!(a.level, AlertLevel::Warning);
    assert_eq!(a.resource, "cpu");
    assert_eq!(a.threshold, 80.0);
    assert_eq!(a.value, 85.0);
    assert_eq!(a.at_ms, T0 + 4 * STEP);
    assert_eq!(a.trend, Trend::Rising);
    assert_eq!(
        a.message,
        "cpu at 85.0 % is above the warning level 80 % (rising)"
    );
}

#[test]
fn two_readings_above_are_not_enough_and_first_sample_gets_no_credit() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    assert!(feed(&mut e, T0, &[50.0, 85.0, 85.0, 50.0, 85.0, 85.0, 50.0]).is_empty());
    // A resource's very first reading stands for nothing before it: 4 readings.
    let mut e = AlertEngine::new(AlertsConfig::default());
    let got = feed(&mut e, T0, &[99.0, 99.0, 99.0, 99.0]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 3);
}

#[test]
fn straight_to_critical_fires_critical_alone_with_a_human_message() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let got = feed(&mut e, T0, &[40.0, 96.3, 96.3, 96.3, 96.3]);
    assert_eq!(levels(&got), [AlertLevel::Critical]);
    assert_eq!(
        got[0].1.message,
        "cpu at 96.3 % is above the critical level 95 % (rising)"
    );
    assert_eq!(got[0].1.threshold, 95.0);
}

#[test]
fn memory_disk_and_temperature_use_their_own_defaults_and_names() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let mut r = Reading::default();
    r.memory.used_pct = 86.0; // warning at 85
    r.disks = vec![
        Disk {
            mount: "/".into(),
            used_pct: 96.0,
            ..Disk::default()
        },
        Disk {
            mount: "/data".into(),
            used_pct: 50.0,
            ..Disk::default()
        },
    ];
    r.temperatures = vec![Temperature {
        sensor: "cpu-thermal".into(),
        celsius: 72.5,
    }];
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(e.evaluate(&r, T0 + i * STEP));
    }
    let summary: Vec<(&str, AlertLevel)> =
        got.iter().map(|a| (a.resource.as_str(), a.level)).collect();
    assert_eq!(
        summary,
        [
            ("memory", AlertLevel::Warning),
            ("disk:/", AlertLevel::Critical),
            ("temperature:cpu-thermal", AlertLevel::Warning),
        ]
    );
    assert_eq!(
        got[2].message,
        "temperature:cpu-thermal at 72.5 °C is above the warning level 70 °C (steady)"
    );
    assert_eq!(
        e.tracked(),
        4,
        "cpu None is not tracked; memory, 2 disks, 1 sensor"
    );
}

#[test]
fn hovering_at_the_line_does_not_flap() {
    let hover: Vec<f32> = (0..200)
        .map(|i| if i % 2 == 0 { 79.9 } else { 80.1 })
        .collect();
    let mut e = AlertEngine::new(AlertsConfig::default());
    let got = feed(&mut e, T0, &hover);
    assert!(got.len() <= 1, "{got:?}");
    // Even with the level raised, hovering neither clears nor re-fires.
    let mut e = AlertEngine::new(AlertsConfig::default());
    let mut values = vec![85.0; 5];
    values.extend(&hover);
    values.extend((0..200).map(|i| if i % 2 == 0 { 75.9 } else { 76.1 }));
    let got = feed(&mut e, T0, &values);
    assert_eq!(levels(&got), [AlertLevel::Warning], "{got:?}");
    // Same at the critical line once critical.
    let mut e = AlertEngine::new(AlertsConfig::default());
    let mut values = vec![99.0; 5];
    values.extend((0..200).map(|i| if i % 2 == 0 { 94.9 } else { 95.1 }));
    let got = feed(&mut e, T0, &values);
    assert_eq!(levels(&got), [AlertLevel::Critical], "{got:?}");
}

#[test]
fn clears_only_below_the_hysteresis_line_for_the_clear_hold() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    // 50, then 85 x3: warning at t=30 s (index 3).
    let mut values = vec![50.0, 85.0, 85.0, 85.0];
    // Below the threshold but above the clear line (76): still warning, to t=200 s.
    values.extend([78.0; 17]);
    // Below 76: the third reading (30 s) clears, at t=230 s.
    values.extend([42.0; 5]);
    let got = feed(&mut e, T0, &values);
    assert_eq!(levels(&got), [AlertLevel::Warning, AlertLevel::Cleared]);
    let (i, c) = &got[1];
    assert_eq!(*i, 23);
    assert_eq!(got[0].0, 3);
    assert_eq!(c.threshold, 76.0);
    assert_eq!(c.value, 42.0);
    assert_eq!(c.trend, Trend::Falling);
    assert_eq!(
        c.message,
        "cpu back to normal: 42.0 % (below 76.0 %) after 3m20s at warning"
    );
    // Two readings below and back up is not a clear.
    let mut e = AlertEngine::new(AlertsConfig::default());
    let got = feed(
        &mut e,
        T0,
        &[50.0, 85.0, 85.0, 85.0, 42.0, 42.0, 85.0, 42.0, 42.0],
    );
    assert_eq!(levels(&got), [AlertLevel::Warning]);
}

#[test]
fn escalates_and_de_escalates_through_the_levels() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let values = [
        50.0, 85.0, 85.0, 85.0, // warning
        97.0, 97.0, 97.0, // critical
        92.0, 92.0, 92.0, // under 95 but not under 90.25: still critical
        88.0, 88.0, 88.0, // under 90.25 for 30 s: back to warning
        60.0, 60.0, 60.0, // cleared
    ];
    let got = feed(&mut e, T0, &values);
    assert_eq!(
        levels(&got),
        [
            AlertLevel::Warning,
            AlertLevel::Critical,
            AlertLevel::Warning,
            AlertLevel::Cleared
        ],
        "{got:?}"
    );
    let idx: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, [3, 6, 12, 15]);
    let down = &got[2].1;
    assert_eq!(down.threshold, 80.0);
    assert_eq!(
        down.message,
        "cpu down to 88.0 % (below 90.2 %), back from critical to the warning level 80 % (falling)"
    );
    assert!(
        got[3].1.message.ends_with("after 2m0s at warning"),
        "{}",
        got[3].1.message
    );
    // From critical, a value that falls below the warning clear line clears at once.
    let mut e = AlertEngine::new(AlertsConfig::default());
    let got = feed(&mut e, T0, &[50.0, 99.0, 99.0, 99.0, 10.0, 10.0, 10.0]);
    assert_eq!(levels(&got), [AlertLevel::Critical, AlertLevel::Cleared]);
    assert!(got[1].1.message.ends_with("after 30s at critical"));
}

#[test]
fn a_gap_in_the_series_restarts_the_hold() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let mut r = cpu(90.0);
    let mut got = Vec::new();
    got.extend(e.evaluate(&r, T0));
    got.extend(e.evaluate(&r, T0 + STEP));
    r.cpu.total_pct = None; // e.g. a skipped sample
    got.extend(e.evaluate(&r, T0 + 2 * STEP));
    r.cpu.total_pct = Some(90.0);
    got.extend(e.evaluate(&r, T0 + 3 * STEP));
    got.extend(e.evaluate(&r, T0 + 4 * STEP));
    got.extend(e.evaluate(&r, T0 + 5 * STEP));
    assert!(got.is_empty(), "not continuous: {got:?}");
    got.extend(e.evaluate(&r, T0 + 6 * STEP));
    assert_eq!(got.len(), 1);
}

fn disks(mounts: &[(&str, f32)]) -> Reading {
    let mut r = cpu(10.0);
    r.disks = mounts
        .iter()
        .map(|&(m, p)| Disk {
            mount: m.into(),
            used_pct: p,
            ..Disk::default()
        })
        .collect();
    r
}

#[test]
fn disks_alert_per_mount_and_a_vanished_mount_is_forgotten() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let both = disks(&[("/", 50.0), ("/mnt/usb", 90.0)]);
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(e.evaluate(&both, T0 + i * STEP));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].resource, "disk:/mnt/usb");
    assert_eq!(got[0].level, AlertLevel::Warning);
    assert_eq!(e.tracked(), 4); // cpu, memory, two disks
                                // Unplugged: kept for a while (it may come back), then forgotten with a
                                // Cleared saying why.
    let root = disks(&[("/", 50.0)]);
    let gone_at = T0 + 4 * STEP;
    let mut t = gone_at;
    let mut got = Vec::new();
    while t < gone_at + FORGET_AFTER_MS + 2 * STEP {
        got.extend(e.evaluate(&root, t));
        t += STEP;
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].resource, "disk:/mnt/usb");
    assert_eq!(got[0].level, AlertLevel::Cleared);
    assert_eq!(
        got[0].message,
        "disk:/mnt/usb no longer reported for 5m0s; its warning (last 90.0 %) is withdrawn"
    );
    assert_eq!(e.tracked(), 3);
    // Back again: a fresh start, needing the full hold.
    let mut got = Vec::new();
    for i in 0..3 {
        got.extend(e.evaluate(&both, t + i * STEP));
    }
    assert!(got.is_empty());
    got.extend(e.evaluate(&both, t + 3 * STEP));
    assert_eq!(got.len(), 1);
}

#[test]
fn a_resource_back_before_it_is_forgotten_keeps_its_level() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let both = disks(&[("/", 50.0), ("/mnt/usb", 90.0)]);
    let root = disks(&[("/", 50.0)]);
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(e.evaluate(&both, T0 + i * STEP));
    }
    for i in 4..10 {
        got.extend(e.evaluate(&root, T0 + i * STEP));
    }
    for i in 10..20 {
        got.extend(e.evaluate(&both, T0 + i * STEP));
    }
    assert_eq!(
        levels(&got.into_iter().map(|a| (0, a)).collect::<Vec<_>>()),
        [AlertLevel::Warning]
    );
}

#[test]
fn tracked_resources_are_capped() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let names: Vec<String> = (0..100).map(|i| format!("/m{i}")).collect();
    let mounts: Vec<(&str, f32)> = names.iter().map(|n| (n.as_str(), 99.0)).collect();
    let r = disks(&mounts);
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(e.evaluate(&r, T0 + i * STEP));
    }
    assert_eq!(e.tracked(), MAX_RESOURCES);
    assert_eq!(
        got.len(),
        MAX_RESOURCES - 2,
        "cpu and memory come first and stay normal"
    );
    assert_eq!(e.untracked_total(), 4 * (100 - (MAX_RESOURCES as u64 - 2)));
}

#[test]
fn network_is_off_by_default_and_uses_the_busier_direction() {
    let mut r = cpu(10.0);
    r.networks = vec![Network {
        interface: "eth0".into(),
        rx_bytes_per_sec: Some(1_000.0),
        tx_bytes_per_sec: Some(12_500_000.0),
        ..Network::default()
    }];
    let mut e = AlertEngine::new(AlertsConfig::default());
    for i in 0..10 {
        assert!(e.evaluate(&r, T0 + i * STEP).is_empty());
    }
    assert_eq!(e.tracked(), 2, "no thresholds, not tracked");
    let mut config = AlertsConfig::default();
    config.network.critical_bytes_per_sec = 10_000_000.0;
    let mut e = AlertEngine::new(config);
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(e.evaluate(&r, T0 + i * STEP));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].resource, "network:eth0");
    assert_eq!(got[0].level, AlertLevel::Critical);
    assert_eq!(
        got[0].message,
        "network:eth0 at 12.5 MB/s is above the critical level 10 MB/s (steady)"
    );
    // Only critical is on, so it clears straight to normal below 9.5 MB/s.
    r.networks[0].tx_bytes_per_sec = Some(9_000_000.0);
    let mut got = Vec::new();
    for i in 4..8 {
        got.extend(e.evaluate(&r, T0 + i * STEP));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].level, AlertLevel::Cleared);
    assert!(
        got[0]
            .message
            .starts_with("network:eth0 back to normal: 9 MB/s (below 9.5 MB/s)"),
        "{}",
        got[0].message
    );
}

#[test]
fn none_and_disabled_produce_nothing() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let r = Reading::default(); // cpu None, memory 0
    for i in 0..10 {
        assert!(e.evaluate(&r, T0 + i * STEP).is_empty());
    }
    assert_eq!(e.tracked(), 1, "memory only");
    let mut e = AlertEngine::new(AlertsConfig {
        enabled: false,
        ..AlertsConfig::default()
    });
    assert!(feed(&mut e, T0, &[99.0; 20]).is_empty());
    assert_eq!(e.tracked(), 0);
    let mut e = AlertEngine::new(AlertsConfig::default());
    assert!(feed(&mut e, T0, &[f32::NAN; 20]).is_empty());
}

#[test]
fn a_clock_that_jumps_back_delays_but_does_not_break() {
    let mut e = AlertEngine::new(AlertsConfig::default());
    let mut got = feed(&mut e, T0, &[90.0, 90.0]);
    got.extend(feed(&mut e, T0 - 3_600_000, &[90.0; 5]));
    assert_eq!(levels(&got), [AlertLevel::Warning]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any series (values across both lines, missing samples, any hold and
    /// clear hold), one resource's alerts: never the same level twice in a row,
    /// never a Cleared first, and any three consecutive alerts span at least the
    /// shorter hold in readings (so at most two alerts per hold: a run up through
    /// warning to critical, or down) - hence never more than
    /// 2 x readings / hold readings.
    #[test]
    fn alerts_never_repeat_and_are_paced_by_the_hold(
        values in proptest::collection::vec(
            prop_oneof![1 => Just(None), 12 => (0.0f32..100.0).prop_map(Some)],
            0..300,
        ),
        hold_readings in 0u64..7,
        clear_readings in 0u64..7,
    ) {
        let config = AlertsConfig {
            hold_secs: hold_readings * 10,
            clear_hold_secs: clear_readings * 10,
            ..AlertsConfig::default()
        };
        let mut e = AlertEngine::new(config);
        let mut alerts: Vec<(usize, AlertLevel)> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = Reading::default();
            r.cpu.total_pct = *v;
            for a in e.evaluate(&r, T0 + i as u64 * STEP) {
                if a.resource == "cpu" {
                    alerts.push((i, a.level));
                }
            }
            prop_assert!(e.tracked() <= 2);
        }
        let gap = hold_readings.min(clear_readings).max(1) as usize;
        if let Some((_, first)) = alerts.first() {
            prop_assert_ne!(*first, AlertLevel::Cleared);
        }
        for w in alerts.windows(2) {
            prop_assert_ne!(w[0].1, w[1].1, "{:?}", alerts);
            prop_assert!(w[1].0 > w[0].0, "one alert per reading: {:?}", alerts);
        }
        for w in alerts.windows(3) {
            prop_assert!(w[2].0 - w[0].0 >= gap, "gap {} {:?}", gap, alerts);
        }
        prop_assert!(alerts.len() <= 2 * (values.len() / gap), "{:?}", alerts);
    }
}
