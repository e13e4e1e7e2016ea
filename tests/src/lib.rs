//! Harness for fog's end-to-end tests: real brokers started per test on free ports,
//! a TCP proxy that can cut or freeze a connection, and helpers to run the real
//! coordinator and agents in-process.
//!
//! Which broker: the embedded rumqttd by default (in a child process, so it can be
//! killed and restarted); a Mosquitto process with its own config when
//! `FOG_E2E_MOSQUITTO=1` is set or the `mosquitto` feature is on.

pub mod brokers;
pub mod finals;
pub mod proxy;
pub mod watcher;

use std::future::Future;
use std::time::Duration;

use fog_agent::config::Config as AgentConfig;
use fog_coordinator::config::CoordinatorConfig;
use fog_coordinator::registry::LivenessConfig;
use fog_coordinator::service::Snapshot;
use fog_proto::{Birth, CoordinatorStatus, Encoding, NodeId, Prefix, Status};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use brokers::{BrokerKind, TestBroker};
pub use finals::{FinalsTap, Resend};
pub use proxy::Proxy;
pub use watcher::Watcher;

/// Log to the test's output when `FOG_TEST_LOG` is set (e.g. `FOG_TEST_LOG=debug`).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if let Ok(spec) = std::env::var("FOG_TEST_LOG") {
        let filter = fog_rt::logging::parse_filter(&spec).unwrap_or_default();
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .try_init();
    }
}

/// An in-process coordinator and the stream of its registry snapshots.
pub struct RunningCoordinator {
    pub view: watch::Receiver<Snapshot>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningCoordinator {
    pub fn start(broker_url: &str, liveness: LivenessConfig) -> anyhow::Result<Self> {
        let cfg = CoordinatorConfig {
            prefix: Prefix::default(),
            encoding: Default::default(),
            status_interval: Duration::from_millis(100),
            liveness,
            placement: Default::default(),
            scaling: Default::default(),
            data_dir: None,
            broker: fog_rt::broker::BrokerConfig {
                keep_alive: Duration::from_secs(5),
                reconnect_initial: Duration::from_millis(50),
                reconnect_max: Duration::from_millis(500),
                ..fog_rt::broker::BrokerConfig::plain(broker_url)?
            },
        };
        Self::start_with(cfg)
    }

    /// A coordinator from TOML: `extra` (top-level keys and tables such as
    /// `[placement]` or `[breaker]`) goes before the test's own `[broker]` table.
    pub fn start_toml(broker_url: &str, extra: &str) -> anyhow::Result<Self> {
        // Memory-only task state unless the test gives a data dir.
        let extra = if extra.contains("data_dir") {
            extra.to_owned()
        } else {
            format!("data_dir = \"\"\n{extra}")
        };
        let text = format!(
            "status_interval_secs = 0.1\ndefault_heartbeat_interval_secs = 1.0\n{extra}\n[broker]\nurl = \"{broker_url}\"\nkeep_alive_secs = 5\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n"
        );
        Self::start_with(CoordinatorConfig::from_toml(&text, "test")?)
    }

    pub fn start_with(cfg: CoordinatorConfig) -> anyhow::Result<Self> {
        let (tx, view) = watch::channel(fog_coordinator::service::empty_snapshot());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = fog_coordinator::service::serve(cfg, s, tx).await {
                panic!("coordinator failed: {e}");
            }
        });
        Ok(RunningCoordinator { view, stop, task })
    }

    /// Wait until a snapshot satisfies `pred`; fail with the last snapshot if not.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&CoordinatorStatus) -> bool,
    ) -> Snapshot {
        let res = tokio::time::timeout(timeout, async {
            loop {
                {
                    let s = self.view.borrow_and_update();
                    if pred(&s) {
                        return s.clone();
                    }
                }
                if self.view.changed().await.is_err() {
                    panic!("coordinator stopped while waiting for {what}");
                }
            }
        })
        .await;
        match res {
            Ok(s) => s,
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}; last snapshot: {:#?}",
                self.view.borrow()
            ),
        }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.view.borrow().counters.get(name).copied().unwrap_or(0)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// An in-process agent.
pub struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl RunningAgent {
    /// Start an agent; `extra` is appended to its TOML config (its own `[broker]` etc.
    /// come first, so `extra` may only add top-level keys or new tables).
    pub fn start(
        node: &str,
        broker_url: &str,
        extra_top: &str,
        extra_broker: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let text = format!(
            "node_id = \"{node}\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.2\nmetrics_interval_secs = 0.5\n{extra_top}\n[broker]\nurl = \"{broker_url}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n{extra_broker}\n",
            dir.path().join("data").display()
        );
        let cfg = AgentConfig::from_toml(&text)?;
        Ok(Self::start_with(cfg, dir))
    }

    pub fn start_with(cfg: AgentConfig, dir: tempfile::TempDir) -> Self {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = fog_agent::run(cfg, s).await {
                panic!("agent failed: {e}");
            }
        });
        RunningAgent {
            stop,
            task,
            _dir: dir,
        }
    }

    /// Graceful stop: publishes the retained offline record.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Vanish without a goodbye (the task is aborted; its socket closes).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// A node's retained "online" record with a birth, as a test publishes it for a node
/// that is not a real agent.
pub fn online_record(node: &str, heartbeat_interval_ms: u32, keep_alive_secs: u32) -> Status {
    Status {
        online: true,
        at_ms: 1,
        reason: String::new(),
        birth: Some(Birth {
            node: NodeId::new(node).expect("a valid node id"),
            version: "0.0.0".into(),
            arch: "test".into(),
            cores: 1,
            memory_bytes: 1,
            labels: Default::default(),
            encoding: Encoding::Json,
            task_kinds: vec![],
            heartbeat_interval_ms,
            metrics_interval_ms: 1000,
            keep_alive_secs,
            started_at_ms: 1,
        }),
    }
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
