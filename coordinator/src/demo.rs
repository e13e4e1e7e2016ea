//! `fog-coordinator demo`: the whole system in one process. An embedded broker on a
//! free port, a coordinator, and N agents with their own node ids and data directories
//! in a temporary folder, with a live view that refreshes every second. The configs
//! come from [`FleetBuilder`].

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use fog_agent::config::BrokerConfig;
use fog_proto::{Encoding, NodeState};
use fog_rt::clock::now_ms;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::EmbeddedBroker;
use crate::fleet::FleetBuilder;
use crate::service::{serve, Snapshot};
use crate::status::render_table;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub agents: usize,
    /// `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    /// Redraw the screen in place (a terminal) or print a table each refresh.
    pub redraw: bool,
    /// Print the live view (off in tests).
    pub show: bool,
    /// Tasks submitted per second by the demo's own client (0: none).
    pub tasks_per_sec: u32,
    /// Serve the console, the HTTP API and /metrics here (port 0: a free one);
    /// `None` serves nothing.
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("demo config: {0}")]
    Config(#[from] fog_rt::config::ConfigError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
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
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    /// Where the console was served.
    pub console: Option<std::net::SocketAddr>,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "demo ran {:.1}s: {} nodes seen, {} online at the end; {} heartbeats and {} readings received, {} messages rejected; {} tasks completed, {} failed",
            self.ran_for.as_secs_f32(),
            self.nodes_seen,
            self.nodes_online_at_end,
            self.heartbeats,
            self.readings,
            self.rejected,
            self.tasks_completed,
            self.tasks_failed
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
    let configs = FleetBuilder::new(&broker.url())?
        .coordinator_link(Duration::from_secs(5), None)
        .status_interval(Duration::from_secs(1))
        .coordinator_heartbeat(Duration::from_secs(1))
        .agent_link(Duration::from_secs(5), None)
        .agent_intervals(Duration::from_secs(1), Duration::from_secs(2))
        .label("role", "demo");
    let broker_cfg = configs.coordinator_broker().clone();

    let coordinator_stop = CancellationToken::new();
    let (view_tx, mut view) = watch::channel::<Snapshot>(crate::service::empty_snapshot());
    let coordinator = tokio::spawn(serve(
        configs.coordinator(),
        coordinator_stop.clone(),
        view_tx,
    ));
    let console = match opts.http {
        Some(addr) => {
            let http = crate::http::HttpServer::bind(addr).await?;
            let at = http.addr;
            if opts.show {
                // First, so the URL is on screen before the live view takes it over.
                println!("fog demo: console at http://{at}/");
            }
            tokio::spawn(http.serve(view.clone(), coordinator_stop.clone()));
            Some(at)
        }
        None => None,
    };
    let agents_stop = CancellationToken::new();
    let mut agents = spawn_agents(&configs, opts.agents, tmp.path(), &agents_stop)?;

    // A steady stream of tasks: sha256 of small payloads, echoes and short sleeps,
    // submitted by an in-process client; results are counted per node.
    // Start the stream once the agents are registered, so the first tasks have
    // somewhere to go (bounded: the view shows what is missing if they never come).
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if online(&view.borrow()) >= opts.agents || view.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let load_stop = CancellationToken::new();
    let (stats_tx, stats_rx) = watch::channel(TaskStats::default());
    let load = tokio::spawn(task_stream(
        broker_cfg,
        opts.tasks_per_sec,
        load_stop.clone(),
        stats_tx,
    ));
    let header = format!(
        "{}fog demo: embedded broker {} with {} agents; data in {}  (Ctrl-C to stop)\n\n",
        console.map_or(String::new(), |a| format!("console: http://{a}/\n")),
        broker.url(),
        opts.agents,
        tmp.path().display()
    );
    live_view(&opts, &shutdown, started, &mut view, &stats_rx, &header).await;

    load_stop.cancel();
    let _ = load.await;
    let tasks = stats_rx.borrow().clone();
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
        nodes_online_at_end: online(&snap),
        heartbeats: c("heartbeats_total"),
        readings: c("readings_total"),
        rejected: c("rejected_total"),
        tasks_completed: tasks.completed,
        tasks_failed: tasks.failed,
        console,
    })
}

fn online(s: &Snapshot) -> usize {
    s.nodes
        .iter()
        .filter(|n| n.state == NodeState::Online)
        .count()
}

/// Agents `demo-1` to `demo-{n}`, each with a data directory under `dir`.
fn spawn_agents(
    configs: &FleetBuilder,
    n: usize,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<JoinSet<()>, DemoError> {
    let mut agents = JoinSet::new();
    for i in 1..=n {
        let mut cfg = configs.agent(&format!("demo-{i}"), &dir.join(format!("agent-{i}")))?;
        // Half the agents speak postcard, to show both encodings side by side.
        cfg.encoding = if i % 2 == 0 {
            Encoding::Postcard
        } else {
            Encoding::Json
        };
        let stop = stop.clone();
        agents.spawn(async move {
            let node = cfg.node_id.clone();
            if let Err(error) = fog_agent::run(cfg, stop).await {
                tracing::error!(node.id = %node, %error, "demo agent stopped");
            }
        });
    }
    Ok(agents)
}

/// Refresh the view every second until `shutdown` or the demo's duration is over.
async fn live_view(
    opts: &DemoOptions,
    shutdown: &CancellationToken,
    started: tokio::time::Instant,
    view: &mut watch::Receiver<Snapshot>,
    stats: &watch::Receiver<TaskStats>,
    header: &str,
) {
    let mut last_done = 0u64;
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
                let t = stats.borrow().clone();
                let rate = t.completed.saturating_sub(last_done);
                last_done = t.completed;
                let mut screen = String::new();
                if opts.redraw {
                    screen.push_str("\x1b[H\x1b[2J");
                }
                screen.push_str(header);
                screen.push_str(&screen_body(&snap, &t, rate));
                if opts.show {
                    let _ = out.write_all(screen.as_bytes());
                    let _ = out.flush();
                }
            }
        }
    }
}

/// One refresh of the view below its header: the node table, what was received, and
/// the task stream (`rate` tasks completed in the last second).
fn screen_body(snap: &Snapshot, t: &TaskStats, rate: u64) -> String {
    let mut screen = render_table(snap, now_ms());
    let c = |k: &str| snap.counters.get(k).copied().unwrap_or(0);
    screen.push_str(&format!(
        "received: {} heartbeats, {} readings, {} status records; rejected {}\n\n",
        c("heartbeats_total"),
        c("readings_total"),
        c("status_total"),
        c("rejected_total")
    ));
    screen.push_str(&format!(
        "tasks: {} submitted, {} completed ({rate}/s), {} failed, {} in flight\n",
        t.submitted,
        t.completed,
        t.failed,
        t.submitted.saturating_sub(t.completed + t.failed)
    ));
    let mut per_node: Vec<_> = t.per_node.iter().collect();
    per_node.sort();
    for (node, n) in per_node {
        let q = snap
            .nodes
            .iter()
            .find(|s| s.node.as_str() == node.as_str())
            .map(|s| (s.queued, s.running))
            .unwrap_or_default();
        screen.push_str(&format!(
            "  {node:<12} {n:>8} done   queue {:>3}  running {:>2}\n",
            q.0, q.1
        ));
    }
    screen.push('\n');
    screen
}

/// What the demo's task stream has seen.
#[derive(Debug, Clone, Default)]
pub struct TaskStats {
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub per_node: std::collections::HashMap<String, u64>,
}

async fn task_stream(
    broker: BrokerConfig,
    per_sec: u32,
    stop: CancellationToken,
    stats: watch::Sender<TaskStats>,
) {
    use fog_proto::Outcome;
    let mut client = match crate::client::Client::connect(
        &broker,
        fog_proto::Topics::default(),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "demo task stream cannot connect");
            return;
        }
    };
    if per_sec == 0 {
        stop.cancelled().await;
        client.close().await;
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec)));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                n += 1;
                let (kind, payload) = match n % 10 {
                    0 => ("sleep", b"200".to_vec()),
                    1..=3 => ("echo", format!("hello {n}").into_bytes()),
                    _ => ("sha256", format!("payload {n}").into_bytes()),
                };
                let sub = crate::client::submission(kind, payload, (n % 3) as u8, Duration::from_secs(10), false);
                if client.submit(sub).await.is_ok() {
                    stats.send_modify(|s| s.submitted += 1);
                }
            }
            r = client.next_result() => match r {
                Ok(Some(r)) => stats.send_modify(|s| match r.outcome {
                    Outcome::Accepted => {}
                    Outcome::Completed { .. } => {
                        s.completed += 1;
                        *s.per_node.entry(r.node.to_string()).or_default() += 1;
                    }
                    _ => s.failed += 1,
                }),
                Ok(None) => {}
                Err(_) => break,
            },
        }
    }
    client.close().await;
}

/// Whether stdout is a terminal we can redraw.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
