//! `[store]`: result retention, the group commit interval, the backlog budget and its
//! replay, and whether payloads are kept to rerun after a restart.

use std::time::Duration;

use serde::Deserialize;

use super::{value, ConfigError};
use fog_rt::config::invalid;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) result_retention_secs: Option<u64>,
    pub(super) result_retention_count: Option<usize>,
    pub(super) commit_interval_ms: Option<u64>,
    pub(super) max_backlog_bytes: Option<u64>,
    pub(super) replay_per_sec: Option<u32>,
    pub(super) replay_in_flight: Option<u32>,
    pub(super) rerun_after_restart: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
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

pub(super) fn resolve_store(
    raw: RawStore,
    d: RawStore,
    origin: &str,
) -> Result<StoreConfig, ConfigError> {
    let retention = value(
        origin,
        "store.result_retention_secs",
        raw.result_retention_secs,
        d.result_retention_secs,
    )?;
    let count = value(
        origin,
        "store.result_retention_count",
        raw.result_retention_count,
        d.result_retention_count,
    )?;
    let commit_ms = value(
        origin,
        "store.commit_interval_ms",
        raw.commit_interval_ms,
        d.commit_interval_ms,
    )?;
    if count == 0 {
        return Err(invalid(
            origin,
            "store.result_retention_count",
            "must be at least 1",
        ));
    }
    let max_backlog_bytes = value(
        origin,
        "store.max_backlog_bytes",
        raw.max_backlog_bytes,
        d.max_backlog_bytes,
    )?;
    if max_backlog_bytes < 4096 {
        return Err(invalid(
            origin,
            "store.max_backlog_bytes",
            format!("{max_backlog_bytes} is less than 4096 (one reading must fit)"),
        ));
    }
    let replay_per_sec = value(
        origin,
        "store.replay_per_sec",
        raw.replay_per_sec,
        d.replay_per_sec,
    )?;
    if !(1..=100_000).contains(&replay_per_sec) {
        return Err(invalid(
            origin,
            "store.replay_per_sec",
            format!("{replay_per_sec} is not between 1 and 100000"),
        ));
    }
    let replay_in_flight = value(
        origin,
        "store.replay_in_flight",
        raw.replay_in_flight,
        d.replay_in_flight,
    )?;
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
        rerun_after_restart: value(
            origin,
            "store.rerun_after_restart",
            raw.rerun_after_restart,
            d.rerun_after_restart,
        )?,
        max_backlog_bytes,
        replay_per_sec,
        replay_in_flight,
        result_retention: Duration::from_secs(retention),
        result_retention_count: count,
        commit_interval: Duration::from_millis(commit_ms),
    })
}
