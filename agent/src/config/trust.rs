//! `[trust]`: the coordinator keys whose signed assignments this node runs.

use std::path::PathBuf;
use std::time::Duration;

use fog_rt::config::{interval, invalid, nonempty};
use fog_rt::keys::PublicKey;
use serde::Deserialize;

use super::{value, ConfigError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    pub(super) coordinator_keys: Option<Vec<String>>,
    pub(super) keys_dir: Option<PathBuf>,
    pub(super) max_clock_skew_secs: Option<f64>,
    pub(super) allow_unsigned: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    /// Keys written in the config.
    pub coordinator_keys: Vec<PublicKey>,
    /// Folder of more keys, one `<id>.pub` each (`fog-agent trust add` writes there).
    pub keys_dir: Option<PathBuf>,
    /// An assignment signed further than this from this node's clock is refused.
    pub max_clock_skew: Duration,
    /// LAB ONLY: run assignments nobody signed.
    pub allow_unsigned: bool,
}

pub(super) fn resolve_trust(
    raw: RawTrust,
    d: RawTrust,
    origin: &str,
) -> Result<TrustConfig, ConfigError> {
    let lines = value(
        origin,
        "trust.coordinator_keys",
        raw.coordinator_keys,
        d.coordinator_keys,
    )?;
    let mut coordinator_keys = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let key = PublicKey::from_line(line).map_err(|e| {
            invalid(
                origin,
                "trust.coordinator_keys",
                format!("entry {}: {e}", i + 1),
            )
        })?;
        coordinator_keys.push(key);
    }
    let skew = value(
        origin,
        "trust.max_clock_skew_secs",
        raw.max_clock_skew_secs,
        d.max_clock_skew_secs,
    )?;
    Ok(TrustConfig {
        coordinator_keys,
        keys_dir: nonempty(Some(value(
            origin,
            "trust.keys_dir",
            raw.keys_dir,
            d.keys_dir,
        )?)),
        max_clock_skew: interval(origin, "trust.max_clock_skew_secs", skew, 1.0, 86_400.0)?,
        allow_unsigned: value(
            origin,
            "trust.allow_unsigned",
            raw.allow_unsigned,
            d.allow_unsigned,
        )?,
    })
}
