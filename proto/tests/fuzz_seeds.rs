//! The fuzzers' seed corpus (`fuzz/seeds/decode_frame/`) is every sample message in
//! both encodings, so fuzzing starts from frames that get past the envelope. This test
//! fails when a seed is missing or no longer what fog encodes (a schema change);
//! `FOG_WRITE_FUZZ_SEEDS=1 cargo test -p fog-proto --test fuzz_seeds` rewrites them.

mod samples;

use std::path::PathBuf;

use fog_proto::codec::encode;
use fog_proto::*;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (tag, enc) in [("json", Encoding::Json), ("postcard", Encoding::Postcard)] {
        let mut put = |name: &str, bytes: Vec<u8>| out.push((format!("{name}.{tag}"), bytes));
        put("status", encode(&samples::status(), enc).expect("encodes"));
        put(
            "heartbeat",
            encode(&samples::heartbeat(), enc).expect("encodes"),
        );
        put(
            "reading",
            encode(&samples::reading(), enc).expect("encodes"),
        );
        put("alert", encode(&samples::alert(), enc).expect("encodes"));
        let assignments = TaskAssignments {
            items: vec![samples::assignment()],
            seal: samples::seal("pi-07"),
        };
        put("assignments", encode(&assignments, enc).expect("encodes"));
        let results = TaskResults {
            items: samples::results(),
            seal: samples::seal("pi-07"),
        };
        put("results", encode(&results, enc).expect("encodes"));
        let submissions = TaskSubmissions {
            items: vec![samples::submission()],
            seal: samples::seal("ops-laptop"),
        };
        put("submissions", encode(&submissions, enc).expect("encodes"));
        put(
            "coordinator_status",
            encode(&samples::coordinator_status(), enc).expect("encodes"),
        );
        put(
            "scaling",
            encode(&samples::scaling(), enc).expect("encodes"),
        );
    }
    out
}

#[test]
fn the_fuzz_seed_corpus_is_what_fog_encodes_today() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/decode_frame");
    let write = std::env::var_os("FOG_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("seed folder");
    }
    for (name, bytes) in seeds() {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &bytes).expect("writes the seed");
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (FOG_WRITE_FUZZ_SEEDS=1 writes it)", path.display())
        });
        assert!(
            on_disk == bytes,
            "{} is stale (FOG_WRITE_FUZZ_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}
