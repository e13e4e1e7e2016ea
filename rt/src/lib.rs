//! fog-rt: what both fog programs stand on, so the coordinator needs nothing of the
//! agent's to talk MQTT, report to systemd or read its broker config.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fog_rt::broker::BrokerConfig;
//! use fog_rt::transport::{Link, LinkOptions, Qos};
//! let broker = BrokerConfig::plain("mqtt://127.0.0.1:1883")?;
//! let link = Link::start(LinkOptions {
//!     broker,
//!     client_id: "example".into(),
//!     will: None,
//!     on_connect: Vec::new(),
//!     subscriptions: vec![("fog/v1/nodes/+/status".into(), Qos::AtLeastOnce)],
//!     max_packet_bytes: 64 * 1024,
//!     queue: 64,
//! })?;
//! # drop(link); Ok(()) }
//! ```
//!
//! Modules: [`broker`] (the `[broker]` table, URL, TLS files, credentials),
//! [`config`] (the shared config error and value checks), [`transport`] (the MQTT
//! link, the only importer of rumqttc) with [`backoff`], [`clock`] (wall-clock
//! milliseconds), [`signals`] (SIGTERM/SIGINT to a cancellation), [`logging`],
//! [`sdnotify`] (systemd's notify protocol) and [`systemd`] (the readiness, status and
//! watchdog policy), [`host`] (the hostname), [`keys`] (Ed25519 keys and message seals),
//! [`limits`] (the packet-size ceiling fog and its broker share), [`group_commit`] (how
//! the writer threads batch their durable commits).

pub mod backoff;
pub mod broker;
pub mod clock;
pub mod config;
pub mod group_commit;
pub mod host;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod sdnotify;
pub mod signals;
pub mod systemd;
pub mod transport;
