//! The coordinator's TOML configuration (defaults in `default.toml`).

use std::path::Path;
use std::time::Duration;

use fog_proto::{Encoding, Prefix};
use fog_rt::broker::BrokerConfig;
use fog_rt::config::{in_range, interval, invalid, percent, ConfigError};
use serde::Deserialize;

use crate::breaker::BreakerConfig;
use crate::dispatch::PlacementConfig;
use crate::home_assistant::HomeAssistantConfig;
use crate::journal::ClusterConfig;
use crate::registry::LivenessConfig;
use crate::scaling::ScalingConfig;

mod security;
pub use security::SecurityConfig;

pub const DEFAULT_CONFIG: &str = include_str!("../../default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    prefix: Option<String>,
    encoding: Option<Encoding>,
    status_interval_secs: Option<f64>,
    suspect_after_missed: Option<u32>,
    offline_after_missed: Option<u32>,
    default_heartbeat_interval_secs: Option<f64>,
    phi_threshold: Option<f64>,
    data_dir: Option<String>,
    http_listen: Option<String>,
    home_assistant: Option<RawHomeAssistant>,
    placement: Option<RawPlacement>,
    breaker: Option<RawBreaker>,
    scaling: Option<RawScaling>,
    broker: Option<toml::Table>,
    security: Option<security::RawSecurity>,
    clients: Option<toml::Table>,
    cluster: Option<RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    postgres_url: Option<String>,
    coordinator_id: Option<String>,
    lease_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHomeAssistant {
    enabled: Option<bool>,
    discovery_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    target_cpu_pct: Option<f32>,
    target_mem_pct: Option<f32>,
    tolerance_pct: Option<f32>,
    window_secs: Option<f64>,
    scale_down_stabilization_secs: Option<f64>,
    min_nodes: Option<u32>,
    max_nodes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    strategy: Option<String>,
    max_attempts: Option<u32>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    timeout_grace_secs: Option<f64>,
    default_timeout_secs: Option<f64>,
    max_wait_secs: Option<f64>,
    max_waiting: Option<usize>,
    degraded_cpu_pct: Option<f32>,
    degraded_mem_pct: Option<f32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failures_to_open: Option<u32>,
    open_secs: Option<f64>,
    half_open_probes: Option<u32>,
    successes_to_close: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub prefix: Prefix,
    pub encoding: Encoding,
    pub status_interval: Duration,
    pub liveness: LivenessConfig,
    pub placement: PlacementConfig,
    pub scaling: ScalingConfig,
    /// Where the task journal lives; `None` keeps task state in memory only (the demo,
    /// tests), so a restart forgets tasks in flight.
    pub data_dir: Option<std::path::PathBuf>,
    /// Where the HTTP API and `/metrics` listen; `None` (an empty `http_listen`)
    /// serves neither.
    pub http_listen: Option<std::net::SocketAddr>,
    pub home_assistant: HomeAssistantConfig,
    pub broker: BrokerConfig,
    pub security: SecurityConfig,
    /// Cluster mode: the shared PostgreSQL journal; `None` keeps the redb journal in
    /// `data_dir`.
    pub cluster: Option<ClusterConfig>,
}

/// Every period the coordinator's config takes, in seconds.
fn secs(origin: &str, key: &'static str, v: f64) -> Result<Duration, ConfigError> {
    interval(origin, key, v, 0.05, 3600.0)
}

/// The value the file sets, else default.toml's. default.toml sets every key, and it
/// is the only place a default is written (the `defaults_and_errors` test loads it).
fn pick<T>(file: Option<T>, default: Option<T>) -> T {
    file.or(default)
        .expect("default.toml sets every key; a unit test checks it")
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let parse = |t: &str| -> Result<Raw, ConfigError> {
            toml::from_str(t).map_err(|e| ConfigError::Parse {
                origin: origin.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })
        };
        let raw = parse(text)?;
        let d = parse(DEFAULT_CONFIG).expect("default.toml is valid; a unit test checks it");
        let prefix = Prefix::new(pick(raw.prefix.clone(), d.prefix.clone()))
            .map_err(|e| invalid(origin, "prefix", e.to_string()))?;
        let liveness = liveness(origin, &raw, &d)?;
        let placement = placement(
            origin,
            raw.placement.unwrap_or_default(),
            d.placement.unwrap_or_default(),
        )?;
        let breaker = breaker(
            origin,
            raw.breaker.unwrap_or_default(),
            d.breaker.unwrap_or_default(),
        )?;
        let scaling = scaling(
            origin,
            raw.scaling.unwrap_or_default(),
            d.scaling.unwrap_or_default(),
        )?;
        let broker_table = match (raw.broker, d.broker) {
            (Some(t), _) => Some(t),
            (None, d) => d,
        };
        let data_dir = pick(raw.data_dir, d.data_dir);
        let data_dir = (!data_dir.is_empty()).then(|| std::path::PathBuf::from(data_dir));
        let security = security::security(
            origin,
            raw.security.unwrap_or_default(),
            d.security.unwrap_or_default(),
            raw.clients,
            data_dir.as_ref(),
        )?;
        Ok(CoordinatorConfig {
            prefix,
            encoding: pick(raw.encoding, d.encoding),
            status_interval: secs(
                origin,
                "status_interval_secs",
                pick(raw.status_interval_secs, d.status_interval_secs),
            )?,
            liveness: LivenessConfig {
                default_heartbeat_interval: secs(
                    origin,
                    "default_heartbeat_interval_secs",
                    pick(
                        raw.default_heartbeat_interval_secs,
                        d.default_heartbeat_interval_secs,
                    ),
                )?,
                ..liveness
            },
            placement: PlacementConfig {
                breaker,
                ..placement
            },
            scaling,
            data_dir,
            http_listen: http_listen(origin, &pick(raw.http_listen, d.http_listen))?,
            home_assistant: home_assistant(
                origin,
                raw.home_assistant.unwrap_or_default(),
                d.home_assistant.unwrap_or_default(),
            )?,
            broker: BrokerConfig::from_table(broker_table, origin)?,
            security,
            cluster: cluster(
                origin,
                raw.cluster.unwrap_or_default(),
                d.cluster.unwrap_or_default(),
            )?,
        })
    }
}

/// `[cluster]`: on with a PostgreSQL URL; the id defaults to the host name and must be
/// usable as an MQTT topic level and a client id (it names the coordinator there too).
fn cluster(
    origin: &str,
    r: RawCluster,
    d: RawCluster,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let url = pick(r.postgres_url, d.postgres_url);
    let lease = interval(
        origin,
        "cluster.lease_secs",
        pick(r.lease_secs, d.lease_secs),
        1.0,
        300.0,
    )?;
    let id = pick(r.coordinator_id, d.coordinator_id);
    if url.trim().is_empty() {
        return Ok(None);
    }
    let id = if id.is_empty() {
        fog_rt::host::hostname()
    } else {
        id
    };
    if let Err(e) = fog_proto::NodeId::new(&id) {
        return Err(invalid(
            origin,
            "cluster.coordinator_id",
            format!("{id:?} cannot name this coordinator: {e}"),
        ));
    }
    // Checked here, so a typo is a config error at start and not a failed connect.
    if let Err(e) = url.parse::<::postgres::Config>() {
        return Err(invalid(
            origin,
            "cluster.postgres_url",
            format!("not a PostgreSQL connection string: {e}"),
        ));
    }
    Ok(Some(ClusterConfig {
        postgres_url: url,
        coordinator_id: id,
        lease,
    }))
}

/// `[home_assistant]`: a discovery prefix that is a plain topic (no wildcards, no
/// empty level), since it starts every config topic.
fn home_assistant(
    origin: &str,
    r: RawHomeAssistant,
    d: RawHomeAssistant,
) -> Result<HomeAssistantConfig, ConfigError> {
    let prefix = pick(r.discovery_prefix, d.discovery_prefix);
    if prefix.is_empty()
        || prefix
            .split('/')
            .any(|l| l.is_empty() || l.contains(['+', '#']))
    {
        return Err(invalid(
            origin,
            "home_assistant.discovery_prefix",
            format!("{prefix:?} must be a topic without wildcards or empty levels, like \"homeassistant\""),
        ));
    }
    Ok(HomeAssistantConfig {
        enabled: pick(r.enabled, d.enabled),
        discovery_prefix: prefix,
    })
}

/// `http_listen`: an address with a port, or empty for no HTTP server.
pub fn http_listen(origin: &str, v: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        invalid(
            origin,
            "http_listen",
            format!("{v:?} is not an address with a port (like 127.0.0.1:9464), nor empty to serve no HTTP"),
        )
    })
}

/// The silence rules, but for the assumed heartbeat interval (checked after
/// `status_interval_secs`, in the order of the file).
fn liveness(origin: &str, raw: &Raw, d: &Raw) -> Result<LivenessConfig, ConfigError> {
    let suspect = pick(raw.suspect_after_missed, d.suspect_after_missed);
    let offline = pick(raw.offline_after_missed, d.offline_after_missed);
    if suspect == 0 {
        return Err(invalid(
            origin,
            "suspect_after_missed",
            "must be at least 1",
        ));
    }
    if offline <= suspect {
        return Err(invalid(
            origin,
            "offline_after_missed",
            format!("{offline} must be above suspect_after_missed ({suspect})"),
        ));
    }
    let phi_threshold = in_range(
        origin,
        "phi_threshold",
        pick(raw.phi_threshold, d.phi_threshold),
        1.0,
        50.0,
    )?;
    Ok(LivenessConfig {
        suspect_after_missed: suspect,
        offline_after_missed: offline,
        phi_threshold,
        ..LivenessConfig::default()
    })
}

fn placement(
    origin: &str,
    r: RawPlacement,
    d: RawPlacement,
) -> Result<PlacementConfig, ConfigError> {
    let strategy =
        pick(r.strategy, d.strategy)
            .parse()
            .map_err(|e: crate::placement::UnknownStrategy| {
                invalid(origin, "placement.strategy", e.to_string())
            })?;
    let max_attempts = in_range(
        origin,
        "placement.max_attempts",
        pick(r.max_attempts, d.max_attempts),
        1,
        100,
    )?;
    let ms = |key: &'static str, v: u64| -> Result<Duration, ConfigError> {
        if v <= 3_600_000 {
            Ok(Duration::from_millis(v))
        } else {
            Err(invalid(
                origin,
                key,
                format!("{v} is out of range; expected at most 3600000 ms"),
            ))
        }
    };
    let retry_initial = ms(
        "placement.retry_initial_ms",
        pick(r.retry_initial_ms, d.retry_initial_ms),
    )?;
    let retry_max = ms(
        "placement.retry_max_ms",
        pick(r.retry_max_ms, d.retry_max_ms),
    )?;
    if retry_max < retry_initial {
        return Err(invalid(
            origin,
            "placement.retry_max_ms",
            "must be at least retry_initial_ms",
        ));
    }
    Ok(PlacementConfig {
        strategy,
        max_attempts,
        retry_initial,
        retry_max,
        timeout_grace: secs(
            origin,
            "placement.timeout_grace_secs",
            pick(r.timeout_grace_secs, d.timeout_grace_secs),
        )?,
        default_timeout: secs(
            origin,
            "placement.default_timeout_secs",
            pick(r.default_timeout_secs, d.default_timeout_secs),
        )?,
        max_wait: secs(
            origin,
            "placement.max_wait_secs",
            pick(r.max_wait_secs, d.max_wait_secs),
        )?,
        max_waiting: pick(r.max_waiting, d.max_waiting),
        degraded_cpu_pct: percent(
            origin,
            "placement.degraded_cpu_pct",
            pick(r.degraded_cpu_pct, d.degraded_cpu_pct),
            0.0,
        )?,
        degraded_mem_pct: percent(
            origin,
            "placement.degraded_mem_pct",
            pick(r.degraded_mem_pct, d.degraded_mem_pct),
            0.0,
        )?,
        breaker: BreakerConfig::default(),
    })
}

fn scaling(origin: &str, r: RawScaling, d: RawScaling) -> Result<ScalingConfig, ConfigError> {
    let min_nodes = pick(r.min_nodes, d.min_nodes);
    let max_nodes = pick(r.max_nodes, d.max_nodes);
    if min_nodes == 0 || max_nodes < min_nodes {
        return Err(invalid(
            origin,
            "scaling.max_nodes",
            format!("need 1 <= min_nodes ({min_nodes}) <= max_nodes ({max_nodes})"),
        ));
    }
    Ok(ScalingConfig {
        target_cpu_pct: percent(
            origin,
            "scaling.target_cpu_pct",
            pick(r.target_cpu_pct, d.target_cpu_pct),
            1.0,
        )?,
        target_mem_pct: percent(
            origin,
            "scaling.target_mem_pct",
            pick(r.target_mem_pct, d.target_mem_pct),
            1.0,
        )?,
        tolerance: percent(
            origin,
            "scaling.tolerance_pct",
            pick(r.tolerance_pct, d.tolerance_pct),
            0.0,
        )? / 100.0,
        window: secs(
            origin,
            "scaling.window_secs",
            pick(r.window_secs, d.window_secs),
        )?,
        scale_down_stabilization: secs(
            origin,
            "scaling.scale_down_stabilization_secs",
            pick(
                r.scale_down_stabilization_secs,
                d.scale_down_stabilization_secs,
            ),
        )?,
        min_nodes,
        max_nodes,
    })
}

fn breaker(origin: &str, r: RawBreaker, d: RawBreaker) -> Result<BreakerConfig, ConfigError> {
    let count = |key: &'static str, v: Option<u32>, dv: Option<u32>| {
        in_range(origin, key, pick(v, dv), 1, 1000)
    };
    Ok(BreakerConfig {
        failures_to_open: count(
            "breaker.failures_to_open",
            r.failures_to_open,
            d.failures_to_open,
        )?,
        open_for: secs(origin, "breaker.open_secs", pick(r.open_secs, d.open_secs))?,
        half_open_probes: count(
            "breaker.half_open_probes",
            r.half_open_probes,
            d.half_open_probes,
        )?,
        successes_to_close: count(
            "breaker.successes_to_close",
            r.successes_to_close,
            d.successes_to_close,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = CoordinatorConfig::from_toml("", "t").expect("empty is valid");
        assert_eq!(c.liveness.suspect_after_missed, 3);
        assert_eq!(c.broker.port, 1883);
        CoordinatorConfig::from_toml(DEFAULT_CONFIG, "t").expect("default file is valid");
        let e = CoordinatorConfig::from_toml("offline_after_missed = 2", "t").expect_err("refused");
        assert!(e.to_string().contains("`offline_after_missed`"), "{e}");
        let e =
            CoordinatorConfig::from_toml("[broker]\nurl = \"tcp://x\"", "t").expect_err("refused");
        assert!(e.to_string().contains("`broker.url`"), "{e}");
        let e = CoordinatorConfig::from_toml("[placement]\nstrategy = \"fastest\"", "t")
            .expect_err("refused");
        assert!(
            e.to_string().contains("`placement.strategy`") && e.to_string().contains("p2c"),
            "{e}"
        );
        let e = CoordinatorConfig::from_toml("[breaker]\nfailures_to_open = 0", "t")
            .expect_err("refused");
        assert!(e.to_string().contains("`breaker.failures_to_open`"), "{e}");
        let e = CoordinatorConfig::from_toml(
            "[placement]\nretry_initial_ms = 500\nretry_max_ms = 100",
            "t",
        )
        .expect_err("refused");
        assert!(e.to_string().contains("`placement.retry_max_ms`"), "{e}");
        let c = CoordinatorConfig::from_toml("[placement]\nstrategy = \"least_connections\"\nmax_attempts = 5\n[breaker]\nopen_secs = 10", "t").expect("valid");
        assert_eq!(
            c.placement.strategy,
            crate::placement::Strategy::LeastConnections
        );
        assert_eq!(c.placement.max_attempts, 5);
        assert_eq!(c.placement.breaker.open_for, Duration::from_secs(10));
        assert_eq!(c.placement.breaker.failures_to_open, 5);
        let e = CoordinatorConfig::from_toml("[scaling]\nmin_nodes = 5\nmax_nodes = 2", "t")
            .expect_err("refused");
        assert!(e.to_string().contains("`scaling.max_nodes`"), "{e}");
        let e = CoordinatorConfig::from_toml("[scaling]\ntarget_cpu_pct = 150", "t")
            .expect_err("refused");
        assert!(e.to_string().contains("`scaling.target_cpu_pct`"), "{e}");
        let c = CoordinatorConfig::from_toml("[scaling]\ntolerance_pct = 5", "t").expect("valid");
        assert!((c.scaling.tolerance - 0.05).abs() < 1e-6);
        let e = CoordinatorConfig::from_toml("[broker]\nbogus = 1", "t").expect_err("refused");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_its_keys_are_checked() {
        let c = CoordinatorConfig::from_toml("", "t").expect("valid");
        assert_eq!(c.cluster, None, "one coordinator, redb, by default");
        let c = CoordinatorConfig::from_toml(
            "[cluster]\npostgres_url = \"postgres://fog@db/fog\"\ncoordinator_id = \"coord-1\"",
            "t",
        )
        .expect("valid");
        let cluster = c.cluster.expect("cluster mode");
        assert_eq!(cluster.coordinator_id, "coord-1");
        assert_eq!(cluster.lease, Duration::from_secs(5));
        let c = CoordinatorConfig::from_toml("[cluster]\npostgres_url = \"host=db user=fog\"", "t")
            .expect("valid");
        assert_eq!(
            c.cluster.expect("cluster mode").coordinator_id,
            fog_rt::host::hostname(),
            "the host name unless set"
        );
        for (text, key) in [
            (
                "[cluster]\npostgres_url = \"postgres://db:notaport/fog\"",
                "`cluster.postgres_url`",
            ),
            (
                "[cluster]\npostgres_url = \"host=db\"\ncoordinator_id = \"a/b\"",
                "`cluster.coordinator_id`",
            ),
            (
                "[cluster]\npostgres_url = \"host=db\"\nlease_secs = 0.1",
                "`cluster.lease_secs`",
            ),
            ("[cluster]\npostgres = \"host=db\"", "postgres"),
        ] {
            let e = CoordinatorConfig::from_toml(text, "t").expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        // The URL's password never shows in an error.
        let e = CoordinatorConfig::from_toml(
            "[cluster]\npostgres_url = \"postgres://fog:s3cret@db:notaport/fog\"",
            "t",
        )
        .expect_err("refused");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
