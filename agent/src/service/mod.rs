//! The agent's main loop: announce, heartbeat, read, run tasks, and say goodbye.
//!
//! Three phases, one file each: `start` (store, backlog, collector and alerts, then
//! the link, in that order), `running` (the main loop: a router from each event to its
//! handler), `drain` (on shutdown: hand back tasks, wait for acks, publish the offline
//! record), which reuses the running loop's handlers. `report` holds what the agent
//! says about itself (task and backlog figures, the systemd status line).

use fog_proto::{codec, Birth, Encoding};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

mod drain;
mod reload;
mod report;
mod running;
mod start;

pub use reload::{changes, Changes, Key};

/// Where reload requests come from (SIGHUP, in the binary) and the file to reread
/// (see `reload`).
pub struct Reloads {
    pub path: std::path::PathBuf,
    pub requests: tokio::sync::mpsc::Receiver<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] crate::transport::LinkError),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: fog_proto::EncodeError,
    },
    #[error("starting the task host: {0}")]
    Tasks(#[from] crate::tasks::host::HostError),
    #[error("this node's key: {0}")]
    NodeKey(#[from] fog_rt::keys::KeyError),
    #[error("trusted coordinator keys: {0}")]
    Trust(#[from] crate::trust::store::TrustError),
}

/// Wall clock in ms since the Unix epoch (0 if the clock is before 1970).
pub use fog_rt::clock::now_ms;

fn encode<M: fog_proto::message::Message>(msg: &M, enc: Encoding) -> Result<Vec<u8>, AgentError> {
    codec::encode(msg, enc).map_err(|source| AgentError::Encode {
        what: M::NAME,
        source,
    })
}

/// The birth record this agent announces.
pub fn birth(config: &Config, memory_bytes: u64, started_at_ms: u64) -> Birth {
    Birth {
        node_key: String::new(),
        task_trust: Default::default(),
        node: config.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes,
        labels: config.labels.clone(),
        encoding: config.encoding,
        task_kinds: {
            let mut k: Vec<String> = config.pool.builtins.clone();
            k.extend(config.commands.keys().cloned());
            k
        },
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
        metrics_interval_ms: config.metrics_interval.as_millis() as u32,
        keep_alive_secs: config.broker.keep_alive.as_secs() as u32,
        started_at_ms,
    }
}

/// Run the agent until `shutdown` is cancelled, then publish the retained offline
/// record and disconnect cleanly. Says nothing to systemd (in-process agents in tests
/// and the demo must not speak for their process); the binary uses [`run_with`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_with(config, shutdown, crate::sdnotify::Notifier::default(), None).await
}

/// [`run`], reporting readiness, status and watchdog pings through `notifier`, and
/// rereading the config file on each of `reloads`' requests.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    notifier: crate::sdnotify::Notifier,
    reloads: Option<Reloads>,
) -> Result<(), AgentError> {
    let (mut agent, mut inbox, mut timers) = start::start(config, notifier, reloads)?;
    running::run(&mut agent, &mut inbox, &mut timers, &shutdown).await?;
    drain::drain(&mut agent, &mut inbox, &mut timers).await;
    drain::goodbye(agent).await
}
