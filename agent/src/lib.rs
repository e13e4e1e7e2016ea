//! fog-agent: the per-node program. It publishes the node's readings and liveness over
//! MQTT (and, with the tasks issue, runs the tasks a coordinator sends it).
//!
//! The binary is a thin shell around [`run`]; tests and the coordinator's demo drive
//! the same function in-process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = fog_agent::config::Config::from_toml("node_id = \"pi-1\"")?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! fog_agent::run(config, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Modules:
//! * [`app`]: the program: parse the command line, run the command, exit codes.
//! * [`cli`]: the command line (commands and flags, no dependency).
//! * [`config`]: TOML to a validated [`config::Config`], one file per section;
//!   defaults written once, in `default.toml`.
//! * [`metrics`]: readings from /proc and /sys, one collector per resource.
//! * [`alerts`]: threshold alerts over readings (hold, hysteresis, trend), pure logic.
//! * [`forward`]: store-and-forward of readings, alerts and results (live,
//!   backlogged, draining, offline).
//! * [`store`]: tasks, results, the content cache and the backlog in redb.
//! * [`tasks`]: the arena, the worker pool, built-ins, command execution, and the task
//!   host (assignments in, results out).
//! * [`supervise`]: restart policy and supervised subsystems.
//! * [`service`]: start, the main loop, and the shutdown drain.
//! * From fog-rt, re-exported under the names the agent's modules use: [`transport`]
//!   (the MQTT link), [`sdnotify`], [`systemd`], [`logging`], [`backoff`].

pub mod alerts;
pub mod app;
pub mod cli;
pub mod config;
pub mod forward;
pub mod metrics;
pub mod service;
pub mod store;
pub mod supervise;
pub mod tasks;
#[cfg(test)]
mod testing;
pub mod trust;

// The shared runtime, under the names the agent's modules use.
pub use fog_rt::{backoff, logging, sdnotify, systemd, transport};

pub use service::{run, run_with, AgentError, Reloads};
