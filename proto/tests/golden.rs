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
