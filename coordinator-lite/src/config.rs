//! The coordinator's TOML configuration (defaults in `default.toml`).

use std::path::Path;
use std::time::Duration;

use fog_agent::config::{BrokerConfig, ConfigError};
use fog_proto::{Encoding, Prefix};
use serde::Deserialize;

use crate::registry::LivenessConfig;

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
    broker: Option<toml::Table>,
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub prefix: Prefix,
    pub encoding: Encoding,
    pub status_interval: Duration,
    pub liveness: LivenessConfig,
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
            },
            broker: BrokerConfig::from_table(broker_table, origin)?,
        })
    }
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
        let e = CoordinatorConfig::from_toml("[broker]\nbogus = 1", "t").expect_err("refused");
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
