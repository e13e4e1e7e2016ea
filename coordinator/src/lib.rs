//! fog-coordinator (coordinator-lite): keeps a live registry of the agents from what
//! they publish, places tasks on them, serves its snapshot as a retained status, and
//! carries the command-line client and an embedded broker for one-command demos.
//!
//! Modules:
//! * [`registry`]: node states from status records, heartbeats and readings; the
//!   silence rules. [`phi`]: phi-accrual suspicion from heartbeat gaps.
//! * [`service`]: `serve`, the MQTT loop around the registry and the dispatcher (setup,
//!   a main loop that only routes, one handler per event).
//! * [`dispatch`]: a task's life from submission to final result; [`placement`]: the
//!   strategies; [`breaker`]: the per-node circuit breaker; [`batcher`]: groups the
//!   dispatcher's output into list messages per topic.
//! * [`journal`]: the redb task journal (group commits, read back on start).
//! * [`scaling`]: scaling advice from the fleet's figures.
//! * [`clients`]: who may submit what (`[clients]`), checked on every submission.
//! * [`client`]: `submit` and `bench`, the CLI's client side; [`status`]: fetch the
//!   retained snapshot and render it (`status`, `tasks`).
//! * [`config`]: TOML → `CoordinatorConfig`, defaults in `default.toml`.
//! * [`broker`]: the embedded rumqttd.
//! * With the default-on `demo` feature (which brings fog-agent and tempfile):
//!   `fleet` (`FleetBuilder`, the typed agent and coordinator configs of an in-process
//!   fleet, and the `Fleet` that `bench --fleet` runs) and `demo` (broker, coordinator
//!   and agents in one process with a live view).
//!
//! The binary's `src/cli/` holds one file per subcommand; `main.rs` only parses the
//! arguments and exits with the subcommand's code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = fog_coordinator::config::CoordinatorConfig::from_toml("", "inline")?;
//! let (view, _rx) = tokio::sync::watch::channel(fog_coordinator::service::empty_snapshot());
//! fog_coordinator::service::serve(config, tokio_util::sync::CancellationToken::new(), view).await?;
//! # Ok(()) }
//! ```

pub mod batcher;
pub mod breaker;
pub mod broker;
pub mod client;
pub mod clients;
pub mod config;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dispatch;
#[cfg(feature = "demo")]
pub mod fleet;
pub mod home_assistant;
pub mod http;
pub mod identity;
pub mod journal;
pub mod latency;
pub mod mosquitto;
pub mod phi;
pub mod placement;
pub mod profiles;
pub mod registry;
pub mod report;
pub mod scaling;
pub mod service;
pub mod signing;
pub mod status;
pub mod trends;
pub mod view;
