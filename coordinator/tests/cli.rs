//! The installed `fog-coordinator` binary: `--broker URL` replaces only the host and
//! port of the configured broker (the scheme must match). It keeps the TLS files and credentials,
//! and it refuses (exit 78, a bad config) a URL that would drop the configured TLS or
//! send a password in cleartext, instead of connecting without them.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fog-coordinator");

fn coordinator(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("fog-coordinator runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn config(dir: &Path, broker: &str) -> String {
    let p = dir.join("coordinator.toml");
    std::fs::write(&p, format!("data_dir = \"\"\n[broker]\n{broker}")).expect("write");
    p.display().to_string()
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn tls_broker(dir: &Path) -> String {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "unused: refused before any connection").expect("write");
    format!(
        "url = \"mqtts://broker.lan:8883\"\nca_file = \"{}\"\nusername = \"fog\"\npassword = \"s3cret\"\n",
        ca.display()
    )
}

#[test]
fn broker_flag_never_drops_the_configured_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &tls_broker(dir.path()));
    let url = format!("mqtt://127.0.0.1:{}", dead_port());
    let o = coordinator(&[
        "status",
        "--config",
        &cfg,
        "--broker",
        &url,
        "--timeout",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--broker") && stderr(&o).contains("TLS"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn broker_flag_with_mqtts_needs_a_ca_in_the_config() {
    let url = format!("mqtts://127.0.0.1:{}", dead_port());
    let o = coordinator(&["status", "--broker", &url, "--timeout", "0.5"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("ca_file"), "{}", stderr(&o));
}

#[test]
fn a_password_over_plain_mqtt_is_refused_unless_the_config_allows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("mqtt://127.0.0.1:{}", dead_port());
    let strict = config(
        dir.path(),
        &format!(
            "url = \"mqtt://127.0.0.1:{}\"\nusername = \"fog\"\npassword = \"s3cret\"\n",
            dead_port()
        ),
    );
    let o = coordinator(&["status", "--config", &strict, "--timeout", "0.5"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("cleartext"), "{}", stderr(&o));

    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = config(
        dir.path(),
        "url = \"mqtt://broker.lan:1883\"\nusername = \"fog\"\npassword = \"s3cret\"\nallow_plaintext_password = true\n",
    );
    // Accepted: it gets as far as trying the (dead) broker, a runtime failure, not 78.
    let o = coordinator(&[
        "status",
        "--config",
        &allowed,
        "--broker",
        &url,
        "--timeout",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cleartext"), "{}", stderr(&o));
}

/// Built without the `demo` feature (`cargo test -p fog-coordinator
/// --no-default-features`), the subcommands that run agents in the process say so and
/// exit 2, a usage error.
#[cfg(not(feature = "demo"))]
#[test]
fn without_the_demo_feature_demo_and_bench_fleet_say_so() {
    for args in [&["demo"][..], &["bench", "--fleet", "2"][..]] {
        let o = coordinator(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("without the `demo` feature"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
