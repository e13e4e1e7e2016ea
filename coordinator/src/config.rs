//! The coordinator's TOML configuration (defaults in `default.toml`).

use std::path::Path;
use std::time::Duration;

use fog_proto::{Encoding, Prefix};
use fog_rt::{broker::BrokerConfig, config::ConfigError};
use serde::Deserialize;

use crate::breaker::BreakerConfig;
use crate::dispatch::PlacementConfig;
use crate::registry::LivenessConfig;
use crate::scaling::ScalingConfig;

pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

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
    placement: Option<RawPlacement>,
    breaker: Option<RawBreaker>,
    scaling: Option<RawScaling>,
    broker: Option<toml::Table>,
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
    pub broker: BrokerConfig,
}

fn invalid(origin: &str, key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        key,
        message: message.into(),
    }
}

fn secs(origin: &str, key: &'static str, v: f64) -> Result<Duration, ConfigError> {
    if !v.is_finite() || !(0.05..=3600.0).contains(&v) {
        return Err(invalid(
            origin,
            key,
            format!("{v} is out of range; expected 0.05 to 3600 seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
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
        let prefix = Prefix::new(raw.prefix.or(d.prefix).unwrap_or_default())
            .map_err(|e| invalid(origin, "prefix", e.to_string()))?;
        let suspect = raw
            .suspect_after_missed
            .or(d.suspect_after_missed)
            .unwrap_or(3);
        let offline = raw
            .offline_after_missed
            .or(d.offline_after_missed)
            .unwrap_or(6);
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
        let phi_threshold = raw.phi_threshold.or(d.phi_threshold).unwrap_or(8.0);
        if !phi_threshold.is_finite() || !(1.0..=50.0).contains(&phi_threshold) {
            return Err(invalid(
                origin,
                "phi_threshold",
                format!("{phi_threshold} is out of range; expected 1 to 50"),
            ));
        }
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
        Ok(CoordinatorConfig {
            prefix,
            encoding: raw.encoding.or(d.encoding).unwrap_or_default(),
            status_interval: secs(
                origin,
                "status_interval_secs",
                raw.status_interval_secs
                    .or(d.status_interval_secs)
                    .unwrap_or(2.0),
            )?,
            liveness: LivenessConfig {
                default_heartbeat_interval: secs(
                    origin,
                    "default_heartbeat_interval_secs",
                    raw.default_heartbeat_interval_secs
                        .or(d.default_heartbeat_interval_secs)
                        .unwrap_or(5.0),
                )?,
                suspect_after_missed: suspect,
                offline_after_missed: offline,
                phi_threshold,
                ..LivenessConfig::default()
            },
            placement: PlacementConfig {
                breaker,
                ..placement
            },
            scaling,
            data_dir: match raw.data_dir.or(d.data_dir) {
                Some(p) if p.is_empty() => None,
                Some(p) => Some(p.into()),
                None => None,
            },
            broker: BrokerConfig::from_table(broker_table, origin)?,
        })
    }
}

fn placement(
    origin: &str,
    r: RawPlacement,
    d: RawPlacement,
) -> Result<PlacementConfig, ConfigError> {
    let def = PlacementConfig::default();
    let strategy = match r.strategy.or(d.strategy) {
        Some(s) => s.parse().map_err(|e: crate::placement::UnknownStrategy| {
            invalid(origin, "placement.strategy", e.to_string())
        })?,
        None => def.strategy,
    };
    let max_attempts = r
        .max_attempts
        .or(d.max_attempts)
        .unwrap_or(def.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(invalid(
            origin,
            "placement.max_attempts",
            format!("{max_attempts} is out of range; expected 1 to 100"),
        ));
    }
    let ms = |key: &'static str, v: Option<u64>, dv: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(dv),
            Some(v) if v <= 3_600_000 => Ok(Duration::from_millis(v)),
            Some(v) => Err(invalid(
                origin,
                key,
                format!("{v} is out of range; expected at most 3600000 ms"),
            )),
        }
    };
    let retry_initial = ms(
        "placement.retry_initial_ms",
        r.retry_initial_ms.or(d.retry_initial_ms),
        def.retry_initial,
    )?;
    let retry_max = ms(
        "placement.retry_max_ms",
        r.retry_max_ms.or(d.retry_max_ms),
        def.retry_max,
    )?;
    if retry_max < retry_initial {
        return Err(invalid(
            origin,
            "placement.retry_max_ms",
            "must be at least retry_initial_ms",
        ));
    }
    let opt_secs = |key: &'static str, v: Option<f64>, dv: Duration| match v {
        Some(v) => secs(origin, key, v),
        None => Ok(dv),
    };
    let pct = |key: &'static str, v: Option<f32>, dv: f32| match v {
        Some(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
        Some(v) => Err(invalid(
            origin,
            key,
            format!("{v} is out of range; expected 0 to 100"),
        )),
        None => Ok(dv),
    };
    Ok(PlacementConfig {
        strategy,
        max_attempts,
        retry_initial,
        retry_max,
        timeout_grace: opt_secs(
            "placement.timeout_grace_secs",
            r.timeout_grace_secs.or(d.timeout_grace_secs),
            def.timeout_grace,
        )?,
        default_timeout: opt_secs(
            "placement.default_timeout_secs",
            r.default_timeout_secs.or(d.default_timeout_secs),
            def.default_timeout,
        )?,
        max_wait: opt_secs(
            "placement.max_wait_secs",
            r.max_wait_secs.or(d.max_wait_secs),
            def.max_wait,
        )?,
        max_waiting: r.max_waiting.or(d.max_waiting).unwrap_or(def.max_waiting),
        degraded_cpu_pct: pct(
            "placement.degraded_cpu_pct",
            r.degraded_cpu_pct.or(d.degraded_cpu_pct),
            def.degraded_cpu_pct,
        )?,
        degraded_mem_pct: pct(
            "placement.degraded_mem_pct",
            r.degraded_mem_pct.or(d.degraded_mem_pct),
            def.degraded_mem_pct,
        )?,
        breaker: BreakerConfig::default(),
    })
}

fn scaling(origin: &str, r: RawScaling, d: RawScaling) -> Result<ScalingConfig, ConfigError> {
    let def = ScalingConfig::default();
    let pct = |key: &'static str, v: Option<f32>, dv: f32, lo: f32| match v {
        Some(v) if v.is_finite() && (lo..=100.0).contains(&v) => Ok(v),
        Some(v) => Err(invalid(
            origin,
            key,
            format!("{v} is out of range; expected {lo} to 100"),
        )),
        None => Ok(dv),
    };
    let opt_secs = |key: &'static str, v: Option<f64>, dv: Duration| match v {
        Some(v) => secs(origin, key, v),
        None => Ok(dv),
    };
    let min_nodes = r.min_nodes.or(d.min_nodes).unwrap_or(def.min_nodes);
    let max_nodes = r.max_nodes.or(d.max_nodes).unwrap_or(def.max_nodes);
    if min_nodes == 0 || max_nodes < min_nodes {
        return Err(invalid(
            origin,
            "scaling.max_nodes",
            format!("need 1 <= min_nodes ({min_nodes}) <= max_nodes ({max_nodes})"),
        ));
    }
    Ok(ScalingConfig {
        target_cpu_pct: pct(
            "scaling.target_cpu_pct",
            r.target_cpu_pct.or(d.target_cpu_pct),
            def.target_cpu_pct,
            1.0,
        )?,
        target_mem_pct: pct(
            "scaling.target_mem_pct",
            r.target_mem_pct.or(d.target_mem_pct),
            def.target_mem_pct,
            1.0,
        )?,
        tolerance: pct(
            "scaling.tolerance_pct",
            r.tolerance_pct.or(d.tolerance_pct),
            def.tolerance * 100.0,
            0.0,
        )? / 100.0,
        window: opt_secs(
            "scaling.window_secs",
            r.window_secs.or(d.window_secs),
            def.window,
        )?,
        scale_down_stabilization: opt_secs(
            "scaling.scale_down_stabilization_secs",
            r.scale_down_stabilization_secs
                .or(d.scale_down_stabilization_secs),
            def.scale_down_stabilization,
        )?,
        min_nodes,
        max_nodes,
    })
}

fn breaker(origin: &str, r: RawBreaker, d: RawBreaker) -> Result<BreakerConfig, ConfigError> {
    let def = BreakerConfig::default();
    let count = |key: &'static str, v: Option<u32>, dv: u32| match v {
        Some(v) if (1..=1000).contains(&v) => Ok(v),
        Some(v) => Err(invalid(
            origin,
            key,
            format!("{v} is out of range; expected 1 to 1000"),
        )),
        None => Ok(dv),
    };
    Ok(BreakerConfig {
        failures_to_open: count(
            "breaker.failures_to_open",
            r.failures_to_open.or(d.failures_to_open),
            def.failures_to_open,
        )?,
        open_for: match r.open_secs.or(d.open_secs) {
            Some(v) => secs(origin, "breaker.open_secs", v)?,
            None => def.open_for,
        },
        half_open_probes: count(
            "breaker.half_open_probes",
            r.half_open_probes.or(d.half_open_probes),
            def.half_open_probes,
        )?,
        successes_to_close: count(
            "breaker.successes_to_close",
            r.successes_to_close.or(d.successes_to_close),
            def.successes_to_close,
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
}
