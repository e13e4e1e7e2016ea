//! The agent's TOML configuration: defaults in `default.toml`, unknown keys refused,
//! every value validated at load so a bad file fails before anything starts, with an
//! error that names the key.
//!
//! `agent/default.toml` is the one place a default is written: the file is merged
//! over it key by key, and the code below falls back to nothing else (see [`value`]);
//! only per-command defaults, which default.toml cannot hold, are constants in `tasks`.
//! One file per section: `node` (top-level keys), `pool`, `store`, `metrics`, `tasks`
//! (`[tasks.<kind>]` and [`CommandSpec`]), `alerts` (merging `[alerts]` for
//! [`AlertsConfig`]); `[broker]` is fog-rt's, re-exported here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fog_proto::{Encoding, NodeId, Prefix};

use crate::alerts::AlertsConfig;
use fog_rt::broker::RawBroker;
use fog_rt::config::invalid;
use serde::Deserialize;

mod alerts;
mod metrics;
mod node;
mod pool;
mod store;
mod tasks;
#[cfg(test)]
mod tests;
mod trust;

pub use metrics::MetricsConfig;
pub use pool::{PoolConfig, BUILTINS};
pub use store::StoreConfig;
pub use tasks::CommandSpec;
pub use trust::TrustConfig;

use metrics::RawMetrics;
use node::{RawTiming, Timing};
use pool::RawPool;
use store::RawStore;
use tasks::RawCommand;
use trust::RawTrust;

pub use fog_rt::broker::{BrokerConfig, TlsFiles};
pub use fog_rt::config::ConfigError;
pub use fog_rt::host::hostname;

/// The defaults, also printed by `fog-agent print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../default.toml");

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
    /// Kept as a table and merged key by key over the defaults' (see `alerts::resolve_alerts`).
    alerts: Option<toml::Table>,
    trust: Option<RawTrust>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
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
    /// Whose assignments run here (`[trust]`).
    pub trust: TrustConfig,
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
    let timing = |c: &RawConfig| RawTiming {
        heartbeat: c.heartbeat_interval_secs,
        metrics: c.metrics_interval_secs,
        shutdown_grace: c.shutdown_grace_secs,
    };
    let (raw_timing, d_timing) = (timing(&raw), timing(&d));
    let node_id = node::resolve_node_id(raw.node_id, d.node_id, origin)?;
    let prefix = node::resolve_prefix(raw.prefix, d.prefix, origin)?;
    let data_dir = value(origin, "data_dir", raw.data_dir, d.data_dir)?;
    if data_dir.as_os_str().is_empty() {
        return Err(invalid(origin, "data_dir", "must not be empty"));
    }
    let Timing {
        heartbeat,
        metrics: metrics_interval,
        shutdown_grace,
    } = node::resolve_timing(raw_timing, d_timing, origin)?;
    let broker = raw
        .broker
        .unwrap_or_default()
        .resolve(&d.broker.unwrap_or_default(), origin)?;
    node::check_heartbeat(heartbeat, &broker, origin)?;
    let labels = raw.labels.unwrap_or_default();
    node::check_labels(&labels, origin)?;
    let metrics = metrics::resolve_metrics(
        raw.metrics.unwrap_or_default(),
        d.metrics.unwrap_or_default(),
        origin,
    )?;
    let pool = pool::resolve_pool(
        raw.pool.unwrap_or_default(),
        d.pool.unwrap_or_default(),
        origin,
    )?;
    let store = store::resolve_store(
        raw.store.unwrap_or_default(),
        d.store.unwrap_or_default(),
        origin,
    )?;
    let commands = tasks::resolve_commands(raw.tasks.unwrap_or_default(), &pool, origin)?;
    let alerts = alerts::resolve_alerts(raw.alerts, d.alerts, origin)?;
    let trust = trust::resolve_trust(
        raw.trust.unwrap_or_default(),
        d.trust.unwrap_or_default(),
        origin,
    )?;
    Ok(Config {
        trust,
        alerts,
        pool,
        store,
        commands,
        node_id,
        prefix,
        encoding: value(origin, "encoding", raw.encoding, d.encoding)?,
        data_dir,
        heartbeat_interval: heartbeat,
        metrics_interval,
        shutdown_grace,
        labels,
        broker,
        metrics,
    })
}

/// The file's value of `key`, else default.toml's. default.toml is where every default
/// is written, once: it sets every key (a test checks it), so the error is for a
/// default.toml that lost one.
fn value<T>(
    origin: &str,
    key: &'static str,
    raw: Option<T>,
    default: Option<T>,
) -> Result<T, ConfigError> {
    raw.or(default)
        .ok_or_else(|| invalid(origin, key, "not set, and default.toml has no default"))
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
