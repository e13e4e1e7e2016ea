//! `[pool]`: the worker threads, their queue, the task arena and the built-in kinds.

use serde::Deserialize;

use super::{value, ConfigError};
use fog_rt::config::invalid;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) workers: Option<usize>,
    pub(super) queue_capacity: Option<usize>,
    pub(super) arena_bytes: Option<usize>,
    pub(super) max_task_bytes: Option<usize>,
    pub(super) builtins: Option<Vec<String>>,
}

/// Built-in task kinds an agent knows.
pub const BUILTINS: [&str; 3] = ["echo", "sha256", "sleep"];

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub arena_bytes: usize,
    pub max_task_bytes: usize,
    /// Enabled built-in kinds.
    pub builtins: Vec<String>,
}

pub(super) fn resolve_pool(
    raw: RawPool,
    d: RawPool,
    origin: &str,
) -> Result<PoolConfig, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match value(origin, "pool.workers", raw.workers, d.workers)? {
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
    let queue_capacity = value(
        origin,
        "pool.queue_capacity",
        raw.queue_capacity,
        d.queue_capacity,
    )?;
    if !(1..=1_000_000).contains(&queue_capacity) {
        return Err(invalid(
            origin,
            "pool.queue_capacity",
            format!("{queue_capacity} is out of range; expected 1 to 1000000"),
        ));
    }
    let arena_bytes = value(origin, "pool.arena_bytes", raw.arena_bytes, d.arena_bytes)?;
    if arena_bytes < 64 * 1024 || arena_bytes as u64 > 4 << 30 {
        return Err(invalid(
            origin,
            "pool.arena_bytes",
            format!("{arena_bytes} is out of range; expected 64 KiB to 4 GiB"),
        ));
    }
    let max_task_bytes = value(
        origin,
        "pool.max_task_bytes",
        raw.max_task_bytes,
        d.max_task_bytes,
    )?;
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
    let builtins = value(origin, "pool.builtins", raw.builtins, d.builtins)?;
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
