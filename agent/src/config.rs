//! The agent's TOML configuration: defaults in `default.toml`, unknown keys refused,
//! every value validated at load so a bad file fails before anything starts, with an
//! error that names the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fog_proto::{Encoding, NodeId, Prefix};

use crate::alerts::AlertsConfig;
use crate::tasks::exec::CommandSpec;
use fog_rt::broker::RawBroker;
use fog_rt::config::{interval, invalid};
use serde::Deserialize;

pub use fog_rt::broker::{BrokerConfig, TlsFiles};
pub use fog_rt::config::ConfigError;
pub use fog_rt::host::hostname;

/// The defaults, also printed by `fog-agent print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "FOG_AGENT_";
const ENV_KEYS: [&str; 3] = ["NODE_ID", "BROKER_URL", "DATA_DIR"];
/// Variables with the prefix that are about logging, not config.
const ENV_IGNORED: [&str; 1] = ["LOG"];

/// The file as written: every field optional, filled from the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: Option<String>,
    prefix: Option<String>,
    encoding: Option<Encoding>,
    data_dir: Option<PathBuf>,
    heartbeat_interval_secs: Option<f64>,
    metrics_interval_secs: Option<f64>,
    shutdown_grace_secs: Option<f64>,
    labels: Option<BTreeMap<String, String>>,
    broker: Option<RawBroker>,
    metrics: Option<RawMetrics>,
    pool: Option<RawPool>,
    store: Option<RawStore>,
    tasks: Option<BTreeMap<String, RawCommand>>,
    /// Kept as a table and merged key by key over the defaults' (see [`resolve_alerts`]).
    alerts: Option<toml::Table>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    workers: Option<usize>,
    queue_capacity: Option<usize>,
    arena_bytes: Option<usize>,
    max_task_bytes: Option<usize>,
    builtins: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    result_retention_secs: Option<u64>,
    result_retention_count: Option<usize>,
    commit_interval_ms: Option<u64>,
    max_backlog_bytes: Option<u64>,
    replay_per_sec: Option<u32>,
    replay_in_flight: Option<u32>,
    rerun_after_restart: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    command: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<PathBuf>,
    timeout_secs: Option<f64>,
    max_output_bytes: Option<usize>,
    memory_limit_bytes: Option<u64>,
    cpu_limit_secs: Option<u64>,
    max_open_files: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    exclude_interfaces: Option<Vec<String>>,
    exclude_fs_types: Option<Vec<String>>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub prefix: Prefix,
    pub encoding: Encoding,
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub metrics_interval: Duration,
    /// How long running tasks may finish after SIGTERM before they are killed and
    /// handed back as retryable failures.
    pub shutdown_grace: Duration,
    pub labels: BTreeMap<String, String>,
    pub broker: BrokerConfig,
    pub metrics: MetricsConfig,
    pub pool: PoolConfig,
    pub store: StoreConfig,
    /// Named command tasks, by kind.
    pub commands: BTreeMap<String, CommandSpec>,
    /// Threshold alerts (`[alerts]`).
    pub alerts: AlertsConfig,
}

/// Built-in task kinds an agent knows.
pub const BUILTINS: [&str; 3] = ["echo", "sha256", "sleep"];

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub arena_bytes: usize,
    pub max_task_bytes: usize,
    /// Enabled built-in kinds.
    pub builtins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub result_retention: Duration,
    pub result_retention_count: usize,
    pub commit_interval: Duration,
    /// Bytes of readings, alerts and results kept while the broker is unreachable.
    pub max_backlog_bytes: u64,
    /// Backlog entries replayed per second once the broker is back.
    pub replay_per_sec: u32,
    /// Replayed entries sent and not yet acknowledged, at most.
    pub replay_in_flight: u32,
    /// Keep each accepted task's payload in the store and run it again after a
    /// restart; off, an unfinished task is handed back (rejected, retryable) and
    /// the coordinator (which journals every payload) places it again.
    pub rerun_after_restart: bool,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub exclude_interfaces: Vec<String>,
    pub exclude_fs_types: Vec<String>,
}

fn defaults() -> RawConfig {
    toml::from_str(DEFAULT_CONFIG).expect("default.toml is valid; a unit test checks it")
}

impl Config {
    /// Load from a file, then apply `FOG_AGENT_*` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parse TOML text (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, "<inline>", std::iter::empty())
    }

    /// Parse TOML text and apply overrides from `env` (pairs of name and value).
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match key {
                "NODE_ID" => raw.node_id = Some(value),
                "BROKER_URL" => raw
                    .broker
                    .get_or_insert_with(RawBroker::default)
                    .set_url(value),
                "DATA_DIR" => raw.data_dir = Some(value.into()),
                k if ENV_IGNORED.contains(&k) => {}
                _ => tracing::warn!(
                    env.name = %name,
                    known = ?ENV_KEYS.map(|k| format!("{ENV_PREFIX}{k}")),
                    "ignoring unknown environment override"
                ),
            }
        }
        resolve(raw, origin)
    }
}

fn resolve(raw: RawConfig, origin: &str) -> Result<Config, ConfigError> {
    let d = defaults();
    let node_id = match raw.node_id.or(d.node_id).filter(|s| !s.is_empty()) {
        Some(id) => NodeId::new(id).map_err(|e| invalid(origin, "node_id", e.to_string()))?,
        None => {
            let host = hostname();
            NodeId::new(sanitize_hostname(&host)).map_err(|e| {
                invalid(
                    origin,
                    "node_id",
                    format!("not set, and the hostname {host:?} is not usable: {e}"),
                )
            })?
        }
    };
    let prefix = Prefix::new(raw.prefix.or(d.prefix).unwrap_or_default())
        .map_err(|e| invalid(origin, "prefix", e.to_string()))?;
    let data_dir = raw.data_dir.or(d.data_dir).unwrap_or_default();
    if data_dir.as_os_str().is_empty() {
        return Err(invalid(origin, "data_dir", "must not be empty"));
    }
    let heartbeat_interval = interval(
        origin,
        "heartbeat_interval_secs",
        raw.heartbeat_interval_secs
            .or(d.heartbeat_interval_secs)
            .unwrap_or(5.0),
        0.05,
        3600.0,
    )?;
    let metrics_interval = interval(
        origin,
        "metrics_interval_secs",
        raw.metrics_interval_secs
            .or(d.metrics_interval_secs)
            .unwrap_or(10.0),
        0.05,
        86_400.0,
    )?;
    let shutdown_grace = interval(
        origin,
        "shutdown_grace_secs",
        raw.shutdown_grace_secs
            .or(d.shutdown_grace_secs)
            .unwrap_or(30.0),
        0.0,
        3600.0,
    )?;
    let broker = raw
        .broker
        .unwrap_or_default()
        .resolve(&d.broker.unwrap_or_default(), origin)?;
    if heartbeat_interval * 2 > broker.keep_alive {
        return Err(invalid(
            origin,
            "heartbeat_interval_secs",
            format!(
                "{:?} is more than half of broker.keep_alive_secs ({:?}); the coordinator declares a node offline after 1.5 x keep-alive of silence, which must span at least three heartbeats",
                heartbeat_interval, broker.keep_alive
            ),
        ));
    }
    let labels = raw.labels.unwrap_or_default();
    for (k, v) in &labels {
        if k.is_empty() || k.len() > 64 || v.len() > 256 {
            return Err(invalid(
                origin,
                "labels",
                format!("label {k:?} = {v:?}: keys are 1 to 64 bytes, values at most 256"),
            ));
        }
    }
    let dm = d.metrics.unwrap_or_default();
    let rm = raw.metrics.unwrap_or_default();
    let pool = resolve_pool(
        raw.pool.unwrap_or_default(),
        d.pool.unwrap_or_default(),
        origin,
    )?;
    let store = resolve_store(
        raw.store.unwrap_or_default(),
        d.store.unwrap_or_default(),
        origin,
    )?;
    let commands = resolve_commands(raw.tasks.unwrap_or_default(), &pool, origin)?;
    let alerts = resolve_alerts(raw.alerts, d.alerts, origin)?;
    Ok(Config {
        alerts,
        pool,
        store,
        commands,
        node_id,
        prefix,
        encoding: raw.encoding.or(d.encoding).unwrap_or_default(),
        data_dir,
        heartbeat_interval,
        metrics_interval,
        shutdown_grace,
        labels,
        broker,
        metrics: MetricsConfig {
            exclude_interfaces: rm
                .exclude_interfaces
                .or(dm.exclude_interfaces)
                .unwrap_or_default(),
            exclude_fs_types: rm
                .exclude_fs_types
                .or(dm.exclude_fs_types)
                .unwrap_or_default(),
        },
    })
}

fn resolve_pool(raw: RawPool, d: RawPool, origin: &str) -> Result<PoolConfig, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match raw.workers.or(d.workers).unwrap_or(0) {
        0 => cores,
        n if n > 1024 => {
            return Err(invalid(
                origin,
                "pool.workers",
                format!("{n} is more than 1024"),
            ))
        }
        n => n,
    };
    let queue_capacity = raw.queue_capacity.or(d.queue_capacity).unwrap_or(64);
    if !(1..=1_000_000).contains(&queue_capacity) {
        return Err(invalid(
            origin,
            "pool.queue_capacity",
            format!("{queue_capacity} is out of range; expected 1 to 1000000"),
        ));
    }
    let arena_bytes = raw.arena_bytes.or(d.arena_bytes).unwrap_or(4 << 20);
    if arena_bytes < 64 * 1024 || arena_bytes as u64 > 4 << 30 {
        return Err(invalid(
            origin,
            "pool.arena_bytes",
            format!("{arena_bytes} is out of range; expected 64 KiB to 4 GiB"),
        ));
    }
    let max_task_bytes = raw.max_task_bytes.or(d.max_task_bytes).unwrap_or(1 << 20);
    if max_task_bytes == 0
        || max_task_bytes > arena_bytes / 2
        || max_task_bytes > fog_proto::message::MAX_TASK_BYTES
    {
        return Err(invalid(
            origin,
            "pool.max_task_bytes",
            format!(
                "{max_task_bytes} must be at least 1, at most half of pool.arena_bytes ({arena_bytes}) and at most {}",
                fog_proto::message::MAX_TASK_BYTES
            ),
        ));
    }
    let builtins = raw.builtins.or(d.builtins).unwrap_or_default();
    if let Some(b) = builtins.iter().find(|b| !BUILTINS.contains(&b.as_str())) {
        return Err(invalid(
            origin,
            "pool.builtins",
            format!("unknown built-in {b:?}; known: {}", BUILTINS.join(", ")),
        ));
    }
    Ok(PoolConfig {
        workers,
        queue_capacity,
        arena_bytes,
        max_task_bytes,
        builtins,
    })
}

fn resolve_store(raw: RawStore, d: RawStore, origin: &str) -> Result<StoreConfig, ConfigError> {
    let retention = raw
        .result_retention_secs
        .or(d.result_retention_secs)
        .unwrap_or(3600);
    let count = raw
        .result_retention_count
        .or(d.result_retention_count)
        .unwrap_or(10_000);
    let commit_ms = raw
        .commit_interval_ms
        .or(d.commit_interval_ms)
        .unwrap_or(10);
    if count == 0 {
        return Err(invalid(
            origin,
            "store.result_retention_count",
            "must be at least 1",
        ));
    }
    let max_backlog_bytes = raw
        .max_backlog_bytes
        .or(d.max_backlog_bytes)
        .unwrap_or(16 << 20);
    if max_backlog_bytes < 4096 {
        return Err(invalid(
            origin,
            "store.max_backlog_bytes",
            format!("{max_backlog_bytes} is less than 4096 (one reading must fit)"),
        ));
    }
    let replay_per_sec = raw.replay_per_sec.or(d.replay_per_sec).unwrap_or(100);
    if !(1..=100_000).contains(&replay_per_sec) {
        return Err(invalid(
            origin,
            "store.replay_per_sec",
            format!("{replay_per_sec} is not between 1 and 100000"),
        ));
    }
    let replay_in_flight = raw.replay_in_flight.or(d.replay_in_flight).unwrap_or(32);
    if !(1..=1000).contains(&replay_in_flight) {
        return Err(invalid(
            origin,
            "store.replay_in_flight",
            format!("{replay_in_flight} is not between 1 and 1000"),
        ));
    }
    if commit_ms > 10_000 {
        return Err(invalid(
            origin,
            "store.commit_interval_ms",
            format!("{commit_ms} is more than 10000"),
        ));
    }
    Ok(StoreConfig {
        rerun_after_restart: raw
            .rerun_after_restart
            .or(d.rerun_after_restart)
            .unwrap_or(false),
        max_backlog_bytes,
        replay_per_sec,
        replay_in_flight,
        result_retention: Duration::from_secs(retention),
        result_retention_count: count,
        commit_interval: Duration::from_millis(commit_ms),
    })
}

/// `[alerts]` has nested tables (`[alerts.cpu]`, ...), so rather than an all-`Option`
/// mirror of it, the file's table is merged key by key over the one in `default.toml`
/// (which has every key) and the result deserialized, unknown keys refused.
fn resolve_alerts(
    raw: Option<toml::Table>,
    d: Option<toml::Table>,
    origin: &str,
) -> Result<AlertsConfig, ConfigError> {
    fn merge(base: &mut toml::Table, over: toml::Table) {
        for (k, v) in over {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }
    let mut table = d.unwrap_or_default();
    merge(&mut table, raw.unwrap_or_default());
    let alerts: AlertsConfig =
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: origin.to_owned(),
                message: format!("[alerts]: {}", e.to_string().trim_end()),
            })?;
    alerts
        .validate()
        .map_err(|e| invalid(origin, e.key, e.message))?;
    Ok(alerts)
}

fn resolve_commands(
    raw: BTreeMap<String, RawCommand>,
    pool: &PoolConfig,
    origin: &str,
) -> Result<BTreeMap<String, CommandSpec>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, c) in raw {
        let bad = |m: String| invalid(origin, "tasks", format!("[tasks.{name}]: {m}"));
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(bad(
                "task names are 1 to 64 letters, digits, '-' or '_'".into()
            ));
        }
        if BUILTINS.contains(&name.as_str()) {
            return Err(bad(format!(
                "{name:?} is a built-in kind; pick another name"
            )));
        }
        if !c.command.is_absolute() {
            return Err(bad(format!(
                "command {:?} must be an absolute path (no shell, no PATH lookup)",
                c.command
            )));
        }
        let timeout = c.timeout_secs.unwrap_or(60.0);
        if !timeout.is_finite() || !(0.01..=86_400.0).contains(&timeout) {
            return Err(bad(format!(
                "timeout_secs {timeout} is out of range; expected 0.01 to 86400"
            )));
        }
        let max_output_bytes = c.max_output_bytes.unwrap_or(pool.max_task_bytes);
        if max_output_bytes == 0 || max_output_bytes > pool.max_task_bytes {
            return Err(bad(format!(
                "max_output_bytes {max_output_bytes} must be 1 to pool.max_task_bytes ({})",
                pool.max_task_bytes
            )));
        }
        let working_dir = c.working_dir.unwrap_or_else(|| PathBuf::from("/"));
        if !working_dir.is_absolute() {
            return Err(bad(format!("working_dir {working_dir:?} must be absolute")));
        }
        out.insert(
            name,
            CommandSpec {
                program: c.command,
                args: c.args,
                env: c.env.into_iter().collect(),
                working_dir,
                timeout: Duration::from_secs_f64(timeout),
                memory_limit_bytes: c.memory_limit_bytes,
                cpu_limit_secs: c.cpu_limit_secs,
                max_open_files: c.max_open_files.unwrap_or(64),
                max_output_bytes,
            },
        );
    }
    Ok(out)
}

/// Hostnames are almost always valid node ids; replace what is not.
fn sanitize_hostname(h: &str) -> String {
    h.chars()
        .map(|c| {
            if c == '/' || c == '+' || c == '#' || c.is_whitespace() || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .take(fog_proto::topic::MAX_NODE_ID_LEN)
        .collect()
}

/// Check that files the config names are readable (what `check-config` adds to parsing).
pub fn check_files(c: &Config) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    for (name, spec) in &c.commands {
        let meta = std::fs::metadata(&spec.program).map_err(|e| {
            invalid(
                "<config>",
                "tasks",
                format!("[tasks.{name}]: command {}: {e}", spec.program.display()),
            )
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(invalid(
                "<config>",
                "tasks",
                format!(
                    "[tasks.{name}]: {} is not an executable file",
                    spec.program.display()
                ),
            ));
        }
    }
    let Some(tls) = &c.broker.tls else {
        return Ok(());
    };
    let mut files = vec![("broker.ca_file", &tls.ca_file)];
    if let Some((cert, key)) = &tls.client_cert {
        files.push(("broker.cert_file", cert));
        files.push(("broker.key_file", key));
    }
    for (key, path) in files {
        std::fs::File::open(path).map_err(|e| {
            invalid(
                "<config>",
                key,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let c =
            Config::from_toml("[broker]\nurl = \"mqtts://broker.lan:8884\"\nca_file = \"/ca.pem\"")
                .expect("valid");
        assert_eq!(
            (c.broker.host.as_str(), c.broker.port),
            ("broker.lan", 8884)
        );
        assert!(c.broker.tls.is_some());
        let c = Config::from_toml("[broker]\nurl = \"mqtt://[::1]:1884\"").expect("valid");
        assert_eq!((c.broker.host.as_str(), c.broker.port), ("::1", 1884));
        let c =
            Config::from_toml("[broker]\nurl = \"mqtts://h\"\nca_file = \"/ca\"").expect("valid");
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
}
