//! Loading, defaults, overrides and the errors that name the key, per section.

use std::path::Path;

use super::node::sanitize_hostname;
use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn defaults_load_and_node_id_falls_back_to_hostname() {
    let c = Config::from_toml("").expect("empty config is valid");
    assert_eq!(c.node_id.as_str(), sanitize_hostname(&hostname()));
    assert_eq!(c.broker.port, 1883);
    assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(c.encoding, Encoding::Json);
    assert!(c.broker.tls.is_none());
    let d = Config::from_toml(DEFAULT_CONFIG).expect("default file is valid");
    assert_eq!(d.metrics.exclude_interfaces, vec!["lo".to_owned()]);
}

#[test]
fn default_toml_sets_every_key() {
    // `value` falls back to default.toml alone, so every key must be there.
    let d = defaults();
    assert!(d.node_id.is_some() && d.prefix.is_some() && d.encoding.is_some());
    assert!(d.data_dir.is_some() && d.heartbeat_interval_secs.is_some());
    assert!(d.metrics_interval_secs.is_some() && d.shutdown_grace_secs.is_some());
    let m = d.metrics.expect("[metrics]");
    assert!(m.exclude_interfaces.is_some() && m.exclude_fs_types.is_some());
    let p = d.pool.expect("[pool]");
    assert!(p.workers.is_some() && p.queue_capacity.is_some() && p.arena_bytes.is_some());
    assert!(p.max_task_bytes.is_some() && p.builtins.is_some());
    let s = d.store.expect("[store]");
    assert!(s.result_retention_secs.is_some() && s.result_retention_count.is_some());
    assert!(s.commit_interval_ms.is_some() && s.max_backlog_bytes.is_some());
    assert!(s.replay_per_sec.is_some() && s.replay_in_flight.is_some());
    assert!(s.rerun_after_restart.is_some());
}

#[test]
fn the_broker_defaults_here_and_in_fog_rt_agree() {
    let here = defaults()
        .broker
        .expect("default.toml has a [broker] table");
    let theirs = RawBroker::defaults();
    let d = RawBroker::default();
    // Resolved the same way from an empty table: the same broker settings.
    assert_eq!(
        format!("{:?}", d.resolve(&here, "t").expect("valid")),
        format!("{:?}", d.resolve(&theirs, "t").expect("valid"))
    );
}

#[test]
fn errors_name_the_bad_key() {
    assert!(err("bogus = 1").contains("bogus"));
    assert!(err("[broker]\nurll = \"x\"").contains("urll"));
    assert!(err("node_id = \"a/b\"").contains("`node_id`"));
    assert!(err("prefix = \"fog/#\"").contains("`prefix`"));
    assert!(err("heartbeat_interval_secs = 0").contains("`heartbeat_interval_secs`"));
    assert!(err("heartbeat_interval_secs = \"5\"").contains("heartbeat_interval_secs"));
    assert!(err("encoding = \"xml\"").contains("xml"));
    assert!(err("[broker]\nurl = \"http://x\"").contains("`broker.url`"));
    assert!(err("[broker]\nurl = \"mqtt://h:99999\"").contains("`broker.url`"));
    assert!(err("[broker]\nurl = \"mqtts://h\"").contains("`broker.ca_file`"));
    assert!(err("[broker]\nkeep_alive_secs = 0").contains("`broker.keep_alive_secs`"));
    assert!(err("[broker]\npassword = \"x\"").contains("`broker.username`"));
    assert!(err("heartbeat_interval_secs = 6").contains("`heartbeat_interval_secs`"));
}

#[test]
fn task_sections_validate() {
    let c = Config::from_toml(
        "[pool]\nworkers = 3\n[tasks.resize]\ncommand = \"/usr/local/bin/resize\"\nargs = [\"--width\", \"320\"]\ntimeout_secs = 5\nmemory_limit_bytes = 1000000\n",
    )
    .expect("valid");
    assert_eq!(c.pool.workers, 3);
    let r = &c.commands["resize"];
    assert_eq!(r.args, vec!["--width".to_owned(), "320".to_owned()]);
    assert_eq!(r.timeout, Duration::from_secs(5));
    assert_eq!(c.pool.builtins, vec!["echo", "sha256", "sleep"]);
    assert!(err("[tasks.x]\ncommand = \"resize\"").contains("absolute"));
    assert!(err("[tasks.echo]\ncommand = \"/bin/echo\"").contains("built-in"));
    assert!(err("[tasks.x]\ncommand = \"/bin/x\"\nshell = true").contains("shell"));
    assert!(err("[pool]\nbuiltins = [\"rm\"]").contains("`pool.builtins`"));
    assert!(err("[pool]\nmax_task_bytes = 99999999").contains("`pool.max_task_bytes`"));
    let missing = Config::from_toml("[tasks.x]\ncommand = \"/nonexistent/x\"").expect("parses");
    assert!(check_files(&missing)
        .expect_err("missing program")
        .to_string()
        .contains("/nonexistent/x"));
}

#[test]
fn broker_urls_parse() {
    let c = Config::from_toml("[broker]\nurl = \"mqtts://broker.lan:8884\"\nca_file = \"/ca.pem\"")
        .expect("valid");
    assert_eq!(
        (c.broker.host.as_str(), c.broker.port),
        ("broker.lan", 8884)
    );
    assert!(c.broker.tls.is_some());
    let c = Config::from_toml("[broker]\nurl = \"mqtt://[::1]:1884\"").expect("valid");
    assert_eq!((c.broker.host.as_str(), c.broker.port), ("::1", 1884));
    let c = Config::from_toml("[broker]\nurl = \"mqtts://h\"\nca_file = \"/ca\"").expect("valid");
    assert_eq!(c.broker.port, 8883);
}

#[test]
fn environment_overrides_apply_and_unknown_ones_are_ignored() {
    let env = [
        ("FOG_AGENT_NODE_ID".to_owned(), "from-env".to_owned()),
        (
            "FOG_AGENT_BROKER_URL".to_owned(),
            "mqtt://b:1999".to_owned(),
        ),
        ("FOG_AGENT_TYPO".to_owned(), "x".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let c = Config::from_toml_with_env("node_id = \"file\"", "t", env).expect("valid");
    assert_eq!(c.node_id.as_str(), "from-env");
    assert_eq!(c.broker.port, 1999);
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("pw");
    std::fs::write(&p, "s3cret\n").expect("write");
    let text = format!(
        "[broker]\nusername = \"u\"\npassword_file = \"{}\"\nallow_plaintext_password = true",
        p.display()
    );
    let c = Config::from_toml(&text).expect("valid");
    assert_eq!(c.broker.credentials, Some(("u".into(), "s3cret".into())));
}

/// A CA file and a password file, for configs that must pass `check_files`-free
/// parsing with TLS on.
fn tls_table(dir: &Path, url: &str, extra: &str) -> String {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not checked at parse time").expect("write");
    format!(
        "[broker]\nurl = \"{url}\"\nca_file = \"{}\"\nusername = \"u\"\npassword = \"p\"\nkeep_alive_secs = 12\n{extra}",
        ca.display()
    )
}

#[test]
fn a_password_over_plain_mqtt_is_refused_unless_allowed() {
    let e = err("[broker]\nurl = \"mqtt://b:1883\"\nusername = \"u\"\npassword = \"p\"");
    assert!(
        e.contains("cleartext") && e.contains("allow_plaintext_password"),
        "{e}"
    );
    let c = Config::from_toml(
        "[broker]\nurl = \"mqtt://b:1883\"\nusername = \"u\"\npassword = \"p\"\nallow_plaintext_password = true",
    )
    .expect("allowed explicitly");
    assert_eq!(c.broker.credentials, Some(("u".into(), "p".into())));
    // A username alone (some brokers' ACLs key on it) carries no secret.
    Config::from_toml("[broker]\nurl = \"mqtt://b:1883\"\nusername = \"u\"")
        .expect("no password, nothing to leak");
    let dir = tempfile::tempdir().expect("tempdir");
    Config::from_toml(&tls_table(dir.path(), "mqtts://b:8883", "")).expect("TLS carries it");
}

#[test]
fn a_url_override_changes_only_scheme_host_and_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = Config::from_toml(&tls_table(dir.path(), "mqtts://b:8883", ""))
        .expect("valid")
        .broker;
    let o = base
        .with_url("mqtts://other.lan:9883", "--broker")
        .expect("same scheme");
    assert_eq!((o.host.as_str(), o.port), ("other.lan", 9883));
    assert_eq!(
        o.tls.as_ref().map(|t| t.ca_file.clone()),
        base.tls.as_ref().map(|t| t.ca_file.clone()),
        "TLS kept"
    );
    assert_eq!(o.credentials, base.credentials, "credentials kept");
    assert_eq!(o.keep_alive, Duration::from_secs(12));
    // Plain mqtt:// would silently drop TLS and send the password in the clear.
    let e = base
        .with_url("mqtt://other.lan:1883", "--broker")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("--broker") && e.contains("TLS"), "{e}");
    // mqtts:// with no CA in the config cannot verify anything.
    let plain = Config::from_toml("").expect("valid").broker;
    let e = plain
        .with_url("mqtts://b:8883", "--broker")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("ca_file"), "{e}");
    let moved = plain
        .with_url("mqtt://[::1]:1999", "--broker")
        .expect("plain to plain");
    assert_eq!((moved.host.as_str(), moved.port), ("::1", 1999));
    assert!(plain.with_url("http://x", "--broker").is_err());
}

#[test]
fn a_url_override_never_sends_a_password_in_cleartext_unless_allowed() {
    let text = "[broker]\nurl = \"mqtt://b:1883\"\nusername = \"u\"\npassword = \"p\"\nallow_plaintext_password = true";
    let allowed = Config::from_toml(text).expect("valid").broker;
    allowed
        .with_url("mqtt://c:1883", "--broker")
        .expect("the config allows it");
    let mut strict = allowed.clone();
    strict.allow_plaintext_password = false;
    let e = strict
        .with_url("mqtt://c:1883", "--broker")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("cleartext"), "{e}");
}

#[test]
fn alerts_default_from_the_file_and_merge_key_by_key() {
    let d = Config::from_toml("").expect("valid");
    assert_eq!(
        d.alerts,
        AlertsConfig::default(),
        "default.toml and Default agree"
    );
    let c = Config::from_toml(
        "[alerts]\nhold_secs = 60\n[alerts.cpu]\ncritical_pct = 99\n[alerts.network]\nwarning_bytes_per_sec = 5e6",
    )
    .expect("valid");
    assert_eq!(c.alerts.hold_secs, 60);
    assert_eq!(c.alerts.clear_hold_secs, 30);
    assert_eq!(
        (c.alerts.cpu.warning_pct, c.alerts.cpu.critical_pct),
        (80.0, 99.0)
    );
    assert_eq!(c.alerts.memory, AlertsConfig::default().memory);
    assert_eq!(c.alerts.network.warning_bytes_per_sec, 5e6);
    assert!(err("[alerts.cpu]\nwarning_pct = 96").contains("`alerts.cpu.critical_pct`"));
    assert!(err("[alerts]\nhysteresis_pct = 80").contains("`alerts.hysteresis_pct`"));
    assert!(err("[alerts]\ntrend_window = 1").contains("`alerts.trend_window`"));
    assert!(err("[alerts.cpu]\nwarnign_pct = 70").contains("warnign_pct"));
    assert!(err("[alerts.gpu]\nwarning_pct = 70").contains("gpu"));
    assert!(err("[alerts]\nenabled = \"yes\"").contains("[alerts]"));
}

#[test]
fn a_cost_label_must_be_a_finite_non_negative_number() {
    for good in ["0.30", "0", "12", " 1.5 ", "1e3"] {
        let c = Config::from_toml(&format!("[labels]\ncost = {good:?}\n"))
            .unwrap_or_else(|e| panic!("cost = {good:?} is valid: {e}"));
        assert_eq!(c.labels["cost"], good, "kept as written");
    }
    for bad in ["abc", "-1", "NaN", "inf", "-inf", "", "0.3 EUR"] {
        let e = err(&format!("[labels]\ncost = {bad:?}\n"));
        assert!(
            e.contains("`labels.cost`"),
            "cost = {bad:?}: names the key: {e}"
        );
        assert!(
            e.contains("finite number at least 0"),
            "cost = {bad:?}: says what is expected: {e}"
        );
    }
    // Other labels are free-form: only `cost` is a number.
    let c = Config::from_toml("[labels]\nprice = \"abc\"\nzone = \"-1\"\n").expect("valid");
    assert_eq!(c.labels.len(), 2);
}
