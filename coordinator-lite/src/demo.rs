//! `fog-coordinator demo`: the whole system in one process. An embedded broker on a
//! free port, a coordinator, and N agents with their own node ids and data directories
//! in a temporary folder, with a live view that refreshes every second.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use fog_agent::config::{BrokerConfig, Config as AgentConfig};
use fog_agent::service::now_ms;
use fog_proto::{CoordinatorStatus, NodeState, Prefix};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::EmbeddedBroker;
use crate::config::CoordinatorConfig;
use crate::registry::LivenessConfig;
use crate::service::{serve, Snapshot};
use crate::status::render_table;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub agents: usize,
    /// `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    /// Redraw the screen in place (a terminal) or print a table each refresh.
    pub redraw: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("demo config: {0}")]
    Config(#[from] fog_agent::config::ConfigError),
}

/// What the demo saw, printed at the end.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub ran_for: Duration,
    pub nodes_seen: usize,
    pub nodes_online_at_end: usize,
    pub heartbeats: u64,
    pub readings: u64,
    pub rejected: u64,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "demo ran {:.1}s: {} nodes seen, {} online at the end; {} heartbeats and {} readings received, {} messages rejected",
            self.ran_for.as_secs_f32(),
            self.nodes_seen,
            self.nodes_online_at_end,
            self.heartbeats,
            self.readings,
            self.rejected
        )
    }
}

pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<DemoSummary, DemoError> {
    let started = tokio::time::Instant::now();
    let broker = EmbeddedBroker::start_local()?;
    let tmp = tempfile::Builder::new()
        .prefix("fog-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let broker_cfg = BrokerConfig {
        keep_alive: Duration::from_secs(5),
        ..BrokerConfig::plain(&broker.url())?
    };

    let coordinator_cfg = CoordinatorConfig {
        prefix: Prefix::default(),
        encoding: Default::default(),
        status_interval: Duration::from_secs(1),
        liveness: LivenessConfig {
            default_heartbeat_interval: Duration::from_secs(1),
            ..LivenessConfig::default()
        },
        broker: broker_cfg.clone(),
    };
    let coordinator_stop = CancellationToken::new();
    let (view_tx, mut view) = watch::channel::<Snapshot>(Arc::new(CoordinatorStatus {
        online: false,
        at_ms: now_ms(),
        version: String::new(),
        reason: String::new(),
        nodes: Vec::new(),
        counters: Default::default(),
    }));
    let coordinator = tokio::spawn(serve(coordinator_cfg, coordinator_stop.clone(), view_tx));

    let agents_stop = CancellationToken::new();
    let mut agents = JoinSet::new();
    for i in 1..=opts.agents {
        let dir = tmp.path().join(format!("agent-{i}"));
        // Half the agents speak postcard, to show both encodings side by side.
        let encoding = if i % 2 == 0 { "postcard" } else { "json" };
        let text = format!(
            "node_id = \"demo-{i}\"\nencoding = \"{encoding}\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 1.0\nmetrics_interval_secs = 2.0\n[labels]\nrole = \"demo\"\n[broker]\nurl = \"{}\"\nkeep_alive_secs = 5\n",
            dir.display(),
            broker.url()
        );
        let cfg = AgentConfig::from_toml(&text)?;
        let stop = agents_stop.clone();
        agents.spawn(async move {
            let node = cfg.node_id.clone();
            if let Err(error) = fog_agent::run(cfg, stop).await {
                tracing::error!(node.id = %node, %error, "demo agent stopped");
            }
        });
    }

    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let deadline = opts.duration.map(|d| started + d);
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = refresh.tick() => {
                let snap = view.borrow_and_update().clone();
                let mut screen = String::new();
                if opts.redraw {
                    screen.push_str("\x1b[H\x1b[2J");
                }
                screen.push_str(&format!(
                    "fog demo: embedded broker {} with {} agents; data in {}  (Ctrl-C to stop)\n\n",
                    broker.url(),
                    opts.agents,
                    tmp.path().display()
                ));
                screen.push_str(&render_table(&snap, now_ms()));
                let c = |k: &str| snap.counters.get(k).copied().unwrap_or(0);
                screen.push_str(&format!(
                    "received: {} heartbeats, {} readings, {} status records; rejected {}\n\n",
                    c("heartbeats_total"), c("readings_total"), c("status_total"), c("rejected_total")
                ));
                let _ = out.write_all(screen.as_bytes());
                let _ = out.flush();
            }
        }
    }

    // Agents first, so the coordinator sees them go offline cleanly.
    agents_stop.cancel();
    while agents.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    coordinator_stop.cancel();
    let _ = coordinator.await;
    let snap = view.borrow().clone();
    let c = |k: &str| snap.counters.get(k).copied().unwrap_or(0);
    Ok(DemoSummary {
        ran_for: started.elapsed(),
        nodes_seen: snap.nodes.len(),
        nodes_online_at_end: snap
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Online)
            .count(),
        heartbeats: c("heartbeats_total"),
        readings: c("readings_total"),
        rejected: c("rejected_total"),
    })
}

/// Whether stdout is a terminal we can redraw.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
