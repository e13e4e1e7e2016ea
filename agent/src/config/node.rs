//! The top-level keys: who the node is (`node_id`, `prefix`, `labels`) and its
//! timing (`heartbeat_interval_secs`, `metrics_interval_secs`, `shutdown_grace_secs`).

use std::collections::BTreeMap;
use std::time::Duration;

use fog_proto::{NodeId, Prefix};
use fog_rt::config::{interval, invalid};

use super::{hostname, value, BrokerConfig, ConfigError};

/// The node id: the file's, else default.toml's, else (both empty) the hostname made
/// into a valid id.
pub(super) fn resolve_node_id(
    raw: Option<String>,
    d: Option<String>,
    origin: &str,
) -> Result<NodeId, ConfigError> {
    match raw.or(d).filter(|s| !s.is_empty()) {
        Some(id) => NodeId::new(id).map_err(|e| invalid(origin, "node_id", e.to_string())),
        None => {
            let host = hostname();
            NodeId::new(sanitize_hostname(&host)).map_err(|e| {
                invalid(
                    origin,
                    "node_id",
                    format!("not set, and the hostname {host:?} is not usable: {e}"),
                )
            })
        }
    }
}

pub(super) fn resolve_prefix(
    raw: Option<String>,
    d: Option<String>,
    origin: &str,
) -> Result<Prefix, ConfigError> {
    Prefix::new(value(origin, "prefix", raw, d)?)
        .map_err(|e| invalid(origin, "prefix", e.to_string()))
}

/// The three intervals, as written in the file (seconds) or default.toml.
pub(super) struct RawTiming {
    pub(super) heartbeat: Option<f64>,
    pub(super) metrics: Option<f64>,
    pub(super) shutdown_grace: Option<f64>,
}

pub(super) struct Timing {
    pub(super) heartbeat: Duration,
    pub(super) metrics: Duration,
    pub(super) shutdown_grace: Duration,
}

/// The intervals, each in its range.
pub(super) fn resolve_timing(
    raw: RawTiming,
    d: RawTiming,
    origin: &str,
) -> Result<Timing, ConfigError> {
    let secs = |key: &'static str, raw: Option<f64>, d: Option<f64>, min: f64, max: f64| {
        interval(origin, key, value(origin, key, raw, d)?, min, max)
    };
    let heartbeat = secs(
        "heartbeat_interval_secs",
        raw.heartbeat,
        d.heartbeat,
        0.05,
        3600.0,
    )?;
    let metrics = secs(
        "metrics_interval_secs",
        raw.metrics,
        d.metrics,
        0.05,
        86_400.0,
    )?;
    let shutdown_grace = secs(
        "shutdown_grace_secs",
        raw.shutdown_grace,
        d.shutdown_grace,
        0.0,
        3600.0,
    )?;
    Ok(Timing {
        heartbeat,
        metrics,
        shutdown_grace,
    })
}

/// Heartbeats at least twice per keep-alive.
pub(super) fn check_heartbeat(
    heartbeat: Duration,
    broker: &BrokerConfig,
    origin: &str,
) -> Result<(), ConfigError> {
    if heartbeat * 2 > broker.keep_alive {
        return Err(invalid(
            origin,
            "heartbeat_interval_secs",
            format!(
                "{:?} is more than half of broker.keep_alive_secs ({:?}); the coordinator declares a node offline after 1.5 x keep-alive of silence, which must span at least three heartbeats",
                heartbeat, broker.keep_alive
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_labels(
    labels: &BTreeMap<String, String>,
    origin: &str,
) -> Result<(), ConfigError> {
    for (k, v) in labels {
        if k.is_empty() || k.len() > 64 || v.len() > 256 {
            return Err(invalid(
                origin,
                "labels",
                format!("label {k:?} = {v:?}: keys are 1 to 64 bytes, values at most 256"),
            ));
        }
    }
    if let Some(cost) = labels.get("cost") {
        check_cost(cost, origin)?;
    }
    Ok(())
}

/// The `cost` label (what the coordinator's `cost_aware` strategy minimises): a
/// finite number, at least 0, read as the coordinator reads it (surrounding
/// whitespace ignored).
fn check_cost(cost: &str, origin: &str) -> Result<(), ConfigError> {
    match cost.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && c >= 0.0 => Ok(()),
        _ => Err(invalid(
            origin,
            "labels.cost",
            format!(
                "{cost:?} is not a cost: expected a finite number at least 0 (e.g. cost = \"0.30\"), used by the coordinator's cost_aware placement"
            ),
        )),
    }
}

/// Hostnames are almost always valid node ids; replace what is not.
pub(super) fn sanitize_hostname(h: &str) -> String {
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
