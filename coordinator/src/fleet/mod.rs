//! A throwaway fleet in one process for `bench --fleet N`: an embedded broker, a
//! coordinator and N agents, each agent on its own runtime so it can be killed the way
//! a crash kills it (`--kill-agent-after`): every task of the runtime is dropped at
//! once, the TCP connection closes without an MQTT DISCONNECT, and the broker
//! publishes the agent's Last Will. That shows a failover under load end to end. The
//! coordinator journals every task to disk as `serve` does (in the fleet's temporary
//! folder, removed at the end), so the figures are those of a durable coordinator.
//!
//! Its configs, like the demo's and the end-to-end harness's, come from
//! [`FleetBuilder`] (`builder.rs`).

use std::time::Duration;

use fog_agent::config::{BrokerConfig, Config as AgentConfig};
use fog_proto::NodeState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, EmbeddedBroker};
use crate::dispatch::PlacementConfig;
use crate::service::{serve, Snapshot};

mod builder;

pub use builder::FleetBuilder;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Config(#[from] fog_rt::config::ConfigError),
    #[error("creating a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("starting an agent runtime: {0}")]
    Runtime(std::io::Error),
    #[error("only {online} of {wanted} agents came online within 15 s")]
    NotOnline { online: usize, wanted: usize },
}

/// An agent on its own runtime; dropping the runtime is the crash.
struct FleetAgent {
    node: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FleetAgent {
    /// Run an agent on a runtime of its own.
    fn spawn(node: String, cfg: AgentConfig) -> Result<FleetAgent, FleetError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{node}-rt"))
            .enable_all()
            .build()
            .map_err(FleetError::Runtime)?;
        let name = node.clone();
        runtime.spawn(async move {
            if let Err(error) = fog_agent::run(cfg, CancellationToken::new()).await {
                tracing::error!(node.id = %name, %error, "bench agent stopped");
            }
        });
        Ok(FleetAgent {
            node,
            runtime: Some(runtime),
        })
    }
}

/// Wait (15 s at most) until `n` nodes are online.
async fn wait_online(view: &mut watch::Receiver<Snapshot>, n: usize) -> Result<(), FleetError> {
    let online = |v: &Snapshot| {
        v.nodes
            .iter()
            .filter(|x| x.state == NodeState::Online)
            .count()
    };
    let ok = tokio::time::timeout(Duration::from_secs(15), async {
        while online(&view.borrow()) < n {
            if view.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    if ok.is_err() {
        return Err(FleetError::NotOnline {
            online: online(&view.borrow()),
            wanted: n,
        });
    }
    Ok(())
}

pub struct Fleet {
    /// Runs until the process exits (rumqttd has no stop).
    _broker: EmbeddedBroker,
    pub broker_cfg: BrokerConfig,
    pub view: watch::Receiver<Snapshot>,
    coordinator_stop: CancellationToken,
    coordinator: tokio::task::JoinHandle<()>,
    agents: Vec<FleetAgent>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Start the broker, the coordinator (with `placement`) and `n` agents, and wait
    /// until every agent is online.
    pub async fn start(n: usize, placement: PlacementConfig) -> Result<Fleet, FleetError> {
        let broker = EmbeddedBroker::start_local()?;
        let dir = tempfile::Builder::new()
            .prefix("fog-bench-")
            .tempdir()
            .map_err(FleetError::TempDir)?;
        let configs = FleetBuilder::new(&broker.url())?
            .coordinator_link(Duration::from_secs(5), None)
            .status_interval(Duration::from_millis(500))
            .coordinator_heartbeat(Duration::from_secs(1))
            .placement(placement)
            // Journaled like a real coordinator (in the run's temporary folder), so the
            // figures a bench prints include the journal's group commits.
            .coordinator_data_dir(Some(dir.path().join("coordinator")))
            .agent_intervals(Duration::from_millis(500), Duration::from_secs(5))
            .agent_pool(1024, 16 << 20)
            // Keep-alive 2 s: a killed agent is offline within 3 s (1.5 x keep-alive).
            .agent_link(
                Duration::from_secs(2),
                Some((Duration::from_millis(50), Duration::from_millis(500))),
            );
        let (tx, mut view) = watch::channel(crate::service::empty_snapshot());
        let coordinator_stop = CancellationToken::new();
        let stop = coordinator_stop.clone();
        let cfg = configs.coordinator();
        let coordinator = tokio::spawn(async move {
            if let Err(error) = serve(cfg, stop, tx).await {
                tracing::error!(%error, "bench coordinator stopped");
            }
        });
        let mut agents = Vec::with_capacity(n);
        for i in 1..=n {
            let node = format!("bench-{i}");
            let cfg = configs.agent(&node, &dir.path().join(&node))?;
            agents.push(FleetAgent::spawn(node, cfg)?);
        }
        wait_online(&mut view, n).await?;
        Ok(Fleet {
            _broker: broker,
            broker_cfg: configs.coordinator_broker().clone(),
            view,
            coordinator_stop,
            coordinator,
            agents,
            _dir: dir,
        })
    }

    /// Kill the first agent still running, as a crash would; returns its node id.
    pub fn kill_one(&mut self) -> Option<String> {
        let a = self.agents.iter_mut().find(|a| a.runtime.is_some())?;
        if let Some(rt) = a.runtime.take() {
            rt.shutdown_background();
        }
        Some(a.node.clone())
    }

    /// The coordinator's latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.view.borrow().clone()
    }

    pub async fn stop(mut self) {
        for a in &mut self.agents {
            if let Some(rt) = a.runtime.take() {
                rt.shutdown_background();
            }
        }
        self.coordinator_stop.cancel();
        let _ = (&mut self.coordinator).await;
    }
}
