//! The installed `fog-agent` binary itself (not the library): every startup path ends
//! with the exit code systemd and the operator rely on. 0 done, 2 a usage mistake,
//! 78 a bad config (the unit's `RestartPreventExitStatus=78` stops a restart loop on
//! it), and a SIGTERM'd `run` exits 0. No broker is needed: a `run` that cannot reach
//! one keeps collecting and still stops cleanly.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fog-agent");

/// The binary, through `FOG_TEST_RUNNER` when the tests run under an emulator (the
/// ARM cross-check sets it to its qemu command: cargo's runner wraps only the test
/// executable, not the programs the test starts).
fn fog_agent() -> Command {
    let runner = std::env::var("FOG_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut c = match words.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(words).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    c.env_remove("FOG_AGENT_LOG").stdin(Stdio::null());
    c
}

/// Run to the end, within 20 s: a command that should have exited at once (a refused
/// config) and did not is a failure, not a hung test.
fn agent(args: &[&str]) -> Output {
    let mut child = fog_agent()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fog-agent runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fog-agent {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_config(dir: &Path, body: &str) -> String {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "node_id = \"cli-1\"\ndata_dir = \"{}\"\n{body}",
            dir.join("data").display()
        ),
    )
    .expect("write config");
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

#[test]
fn usage_mistakes_exit_2() {
    let o = agent(&[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("a command is required"),
        "{}",
        stderr(&o)
    );
    let o = agent(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("frobnicate"), "{}", stderr(&o));
}

#[test]
fn help_version_and_the_default_config_exit_0() {
    let o = agent(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains(env!("CARGO_PKG_VERSION")));
    let o = agent(&["print-default-config"]);
    assert_eq!(o.status.code(), Some(0));
    // What it prints is itself a valid config.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("default.toml");
    std::fs::write(&p, &o.stdout).expect("write");
    let o = agent(&["check-config", "--config", p.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": ok"));
}

#[test]
fn a_bad_config_exits_78_naming_the_problem_for_check_config_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere.toml");
    let unknown = write_config(dir.path(), "heartbeat_intervall_secs = 1\n");
    let pw_dir = tempfile::tempdir().expect("tempdir");
    let unreadable_pw = write_config(
        pw_dir.path(),
        "[broker]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\nallow_plaintext_password = true\n",
    );
    let cleartext_dir = tempfile::tempdir().expect("tempdir");
    let cleartext = write_config(
        cleartext_dir.path(),
        "[broker]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"u\"\npassword = \"p\"\n",
    );
    for (path, needle) in [
        (missing.to_str().expect("utf-8"), "nowhere.toml"),
        (unknown.as_str(), "heartbeat_intervall_secs"),
        (unreadable_pw.as_str(), "password_file"),
        (cleartext.as_str(), "cleartext"),
    ] {
        for command in ["check-config", "run"] {
            let o = agent(&[command, "--config", path]);
            assert_eq!(
                o.status.code(),
                Some(78),
                "{command} {path}: {}",
                stderr(&o)
            );
            assert!(
                stderr(&o).contains(needle),
                "{command} {path}: {}",
                stderr(&o)
            );
        }
    }
}

#[test]
fn run_without_a_broker_keeps_going_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &format!(
            "heartbeat_interval_secs = 0.2\nmetrics_interval_secs = 0.5\n[broker]\nurl = \"mqtt://127.0.0.1:{}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.2\n",
            dead_port()
        ),
    );
    let mut child = fog_agent()
        .args(["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fog-agent runs");
    // It opens its store on start: once the file is there the agent is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("data").exists() {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "exited early: {:?}",
            child.wait_with_output()
        );
        assert!(Instant::now() < deadline, "no data dir made");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "an unreachable broker is no reason to exit"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{:?}", child.wait_with_output());
}
