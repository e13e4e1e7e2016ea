//! `[tasks.<kind>]`: the command tasks a node runs. These tables have no defaults in
//! default.toml (it only shows an example), so the per-command defaults are the
//! constants here, written once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::pool::{PoolConfig, BUILTINS};
use super::ConfigError;
use fog_rt::config::invalid;

/// `timeout_secs` of a command that sets none.
const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
/// `working_dir` of a command that sets none.
const DEFAULT_WORKING_DIR: &str = "/";
/// `max_open_files` (RLIMIT_NOFILE) of a command that sets none.
const DEFAULT_MAX_OPEN_FILES: u64 = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
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

/// A command task as the config declares it (run by `tasks::exec`).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Absolute path of the program.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub timeout: Duration,
    /// RLIMIT_AS; `None` for no limit.
    pub memory_limit_bytes: Option<u64>,
    /// RLIMIT_CPU; `None` for no limit.
    pub cpu_limit_secs: Option<u64>,
    /// RLIMIT_NOFILE.
    pub max_open_files: u64,
    /// stdout beyond this is cut.
    pub max_output_bytes: usize,
}

pub(super) fn resolve_commands(
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
        let timeout = c.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
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
        let working_dir = c
            .working_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKING_DIR));
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
                max_open_files: c.max_open_files.unwrap_or(DEFAULT_MAX_OPEN_FILES),
                max_output_bytes,
            },
        );
    }
    Ok(out)
}
