//! Golden vectors: checked-in bytes for every message in both encodings. A change to
//! the wire format fails here; regenerate deliberately with `FOG_BLESS=1 cargo test
//! -p fog-proto --test golden` and bump SCHEMA_VERSION when old readers would break.

mod samples;

use std::path::PathBuf;

use fog_proto::codec::{decode, encode};
use fog_proto::message::Message;
use fog_proto::Encoding;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check<M: Message + PartialEq + std::fmt::Debug>(name: &str, msg: &M) {
    for (enc, ext) in [(Encoding::Json, "json"), (Encoding::Postcard, "postcard")] {
        let path = golden_dir().join(format!("{name}.{ext}"));
        let bytes = encode(msg, enc).expect("sample encodes");
        if std::env::var_os("FOG_BLESS").is_some() {
            std::fs::write(&path, &bytes).expect("write golden vector");
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "missing golden vector {}: {e}; run with FOG_BLESS=1",
                path.display()
            )
        });
        assert_eq!(
            bytes,
            golden,
            "{name} in {ext} no longer matches {}",
            path.display()
        );
        let back: M = decode(&golden).expect("golden vector decodes");
        assert_eq!(&back, msg, "{name} in {ext} decodes to something else");
    }
}

#[test]
fn status() {
    check("status", &samples::status());
    let offline = fog_proto::Status {
        online: false,
        at_ms: 1_790_000_000_000,
        reason: "connection lost".into(),
        birth: None,
        seal: None,
    };
    check("status-offline", &offline);
}

#[test]
fn heartbeat() {
    check("heartbeat", &samples::heartbeat());
}

#[test]
fn reading() {
    check("reading", &samples::reading());
}

/// A reading as published before the Pi fields (block devices, power, clock, CPU
/// frequency, Wi-Fi, byte counters) were appended: a new reader fills their defaults,
/// so a coordinator upgraded first still reads older agents' JSON.
#[test]
fn reading_from_before_the_pi_fields_still_decodes() {
    let old = std::fs::read(golden_dir().join("reading-before-pi-fields.json")).expect("vector");
    let back: fog_proto::Reading = decode(&old).expect("an older reading decodes");
    let mut expected = samples::reading();
    expected.block_devices.clear();
    expected.power = None;
    expected.clock_synced = None;
    expected.cpu.frequencies.clear();
    for d in &mut expected.disks {
        (d.read_bytes_total, d.write_bytes_total) = (None, None);
    }
    for n in &mut expected.networks {
        n.rx_bytes_total = 0;
        n.tx_bytes_total = 0;
        n.rx_packets_total = 0;
        n.tx_packets_total = 0;
        n.wifi = None;
    }
    assert_eq!(back, expected);
}

#[test]
fn a_reading_names_what_needs_a_look() {
    let r = samples::reading(); // under-voltage and throttled now, clock synchronised
    assert_eq!(r.notices(), ["under-voltage", "throttled"]);
    let mut r = samples::reading();
    let p = r.power.as_mut().expect("sample has power");
    (p.under_voltage_now, p.throttled_now) = (Some(false), Some(false));
    r.clock_synced = Some(false);
    let flash = r.block_devices[0].flash.as_mut().expect("sample has flash");
    flash.life_used_b_pct = Some(110);
    assert_eq!(
        r.notices(),
        [
            "under-voltage since boot",
            "throttled since boot",
            "clock not synchronised",
            "mmcblk0 life 100% used"
        ]
    );
    let flash = r.block_devices[0].flash.as_mut().expect("sample has flash");
    flash.pre_eol = Some(fog_proto::PreEol::Warning);
    assert!(r.notices().contains(&"mmcblk0 wear warning".to_owned()));
    assert!(fog_proto::Reading::default().notices().is_empty());
}

#[test]
fn readings_made_before_clock_sync_are_corrected_from_a_later_one() {
    let mut early = samples::reading();
    early.clock_synced = Some(false);
    early.uptime_secs = 20;
    early.at_ms = 1_000; // 1970: a Pi without an RTC, before NTP
    let mut later = samples::reading();
    later.clock_synced = Some(true);
    later.uptime_secs = 95;
    later.at_ms = 1_790_000_075_000;
    assert_eq!(early.corrected_at_ms(&later), Some(1_790_000_000_000));
    // Not from a synchronised reading, not across a reboot, not for a good stamp.
    assert_eq!(early.corrected_at_ms(&early), None);
    let mut rebooted = later.clone();
    rebooted.uptime_secs = 5;
    assert_eq!(early.corrected_at_ms(&rebooted), None);
    assert_eq!(later.corrected_at_ms(&later), None);
    let mut unknown = early.clone();
    unknown.clock_synced = None;
    assert_eq!(unknown.corrected_at_ms(&later), None);
}

#[test]
fn alert() {
    check("alert", &samples::alert());
}

#[test]
fn task_assignment() {
    check("task-assignment", &samples::assignment());
}

#[test]
fn task_results() {
    for (i, r) in samples::results().iter().enumerate() {
        check(&format!("task-result-{i}"), r);
    }
}

#[test]
fn task_submission() {
    check("task-submission", &samples::submission());
}

#[test]
fn coordinator_status() {
    check("coordinator-status", &samples::coordinator_status());
}

#[test]
fn scaling_advice() {
    check("scaling-advice", &samples::scaling());
}

#[test]
fn task_lists() {
    check(
        "task-assignments",
        &fog_proto::TaskAssignments {
            items: vec![samples::assignment(), samples::assignment()],
            seal: samples::seal("pi-07"),
        },
    );
    check(
        "task-results",
        &fog_proto::TaskResults {
            items: samples::results(),
            seal: samples::seal("pi-07"),
        },
    );
    check(
        "task-submissions",
        &fog_proto::TaskSubmissions {
            items: vec![samples::submission()],
            seal: samples::seal("ops-laptop"),
        },
    );
}

/// A coordinator status from before `drained` and `omitted` (JSON): `fog-coordinator status` of a
/// newer build still reads an older coordinator's retained status.
#[test]
fn a_coordinator_status_from_before_drained_still_decodes() {
    let old =
        std::fs::read(golden_dir().join("coordinator-status-before-drained.json")).expect("vector");
    let back: fog_proto::CoordinatorStatus = decode(&old).expect("an older status decodes");
    let mut expected = samples::coordinator_status();
    for n in &mut expected.nodes {
        n.drained = false;
    }
    assert_eq!(back, expected);
}
