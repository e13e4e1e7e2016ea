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
//! Modules: [`app`] (the program: commands and exit codes), [`cli`], [`config`]
//! (TOML, validation, defaults), [`metrics`] (readings from /proc and /sys),
//! [`forward`] (store-and-forward: live, backlogged, draining, offline), [`store`]
//! (tasks, results and the backlog in redb), [`tasks`], [`alerts`], [`supervise`],
//! [`service`] (the main loop). The MQTT link, systemd notify, logging and backoff
//! come from fog-rt and are re-exported here as [`transport`], [`sdnotify`],
//! [`systemd`], [`logging`] and [`backoff`].

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

// The shared runtime, under the names the agent's modules use.
pub use fog_rt::{backoff, logging, sdnotify, systemd, transport};

pub use service::{run, run_with, AgentError};
