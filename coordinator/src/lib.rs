//! fog-coordinator (coordinator-lite): keeps a live registry of the agents from what
//! they publish, serves its snapshot as a retained status, and carries the command-line
//! client and an embedded broker for one-command demos.
//!
//! Modules: [`registry`] (node states from status, heartbeats and readings),
//! [`service`] (`serve`: the MQTT loop around the registry), [`status`] (`status`: fetch
//! and render), [`broker`] (embedded rumqttd), [`demo`] (everything in one process),
//! [`config`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let config = fog_coordinator::config::CoordinatorConfig::from_toml("", "inline")?;
//! let (view, _rx) = tokio::sync::watch::channel(Arc::new(fog_proto::CoordinatorStatus {
//!     online: false, at_ms: 0, version: String::new(), reason: String::new(),
//!     nodes: vec![], counters: Default::default(),
//!     running: vec![], recent: vec![], dead: vec![], scaling: None,
//! }));
//! fog_coordinator::service::serve(config, tokio_util::sync::CancellationToken::new(), view).await?;
//! # Ok(()) }
//! ```

pub mod batcher;
pub mod breaker;
pub mod broker;
pub mod client;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dispatch;
#[cfg(feature = "demo")]
pub mod fleet;
pub mod journal;
pub mod phi;
pub mod placement;
pub mod registry;
pub mod scaling;
pub mod service;
pub mod status;
