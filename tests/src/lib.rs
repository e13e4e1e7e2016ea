//! Harness for fog's end-to-end tests: real brokers started per test on free ports,
//! a TCP proxy that can cut or freeze a connection, and helpers to run the real
//! coordinator and agents in-process (their configs from the coordinator's
//! `FleetBuilder`, see [`fleet`]).
//!
//! Which broker: the embedded rumqttd by default (in a child process, so it can be
//! killed and restarted); a Mosquitto process with its own config when
//! `FOG_E2E_MOSQUITTO=1` is set or the `mosquitto` feature is on. [`generated`]: Mosquitto
//! with the configuration `fog-coordinator broker-config` writes.

pub mod brokers;
pub mod finals;
pub mod generated;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod watcher;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use fog_agent::config::Config as AgentConfig;
use fog_coordinator::config::CoordinatorConfig;
use fog_coordinator::fleet::FleetBuilder;
use fog_coordinator::registry::LivenessConfig;
use fog_coordinator::service::Snapshot;
use fog_proto::{Birth, CoordinatorStatus, Encoding, NodeId, Status};
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

/// The harness's fleet settings: agents heartbeat every 200 ms and read every 500 ms
/// with a 2 s keep-alive; the coordinator publishes every 100 ms with a 5 s
/// keep-alive and keeps task state in memory; both reconnect fast (50 ms to 500 ms).
///
/// Every fleet of one test process shares one set of throwaway keys ([`keys_dir`]), so
/// a coordinator and agents built by separate calls trust each other.
pub fn fleet(broker_url: &str) -> anyhow::Result<FleetBuilder> {
    let reconnect = Some((Duration::from_millis(50), Duration::from_millis(500)));
    Ok(FleetBuilder::with_keys(broker_url, keys_dir())?
        .agent_intervals(Duration::from_millis(200), Duration::from_millis(500))
        .agent_link(Duration::from_secs(2), reconnect)
        .coordinator_link(Duration::from_secs(5), reconnect)
        .status_interval(Duration::from_millis(100)))
}

/// The test process's throwaway keys (the coordinator's signing key, node approvals).
///
/// In `fog-e2e-keys-<pid>` under the temporary folder: a static is never dropped, so a
/// `TempDir` here would be left behind by every test binary of every run. Instead each
/// process removes the folders of test processes that are gone.
pub fn keys_dir() -> &'static std::path::Path {
    static KEYS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let base = std::env::temp_dir();
        remove_stale_key_dirs(&base);
        let dir = base.join(format!("fog-e2e-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary folder for the test keys");
        // Made here, once: tests start fleets on several threads at once.
        fog_rt::keys::KeyPair::create(&fog_coordinator::signing::key_path(&dir))
            .expect("the test coordinator key");
        dir
    })
    .as_path()
}

/// Remove `fog-e2e-keys-<pid>` folders whose process no longer runs.
fn remove_stale_key_dirs(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("fog-e2e-keys-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The coordinator key every harness agent trusts, for tests that play the
/// coordinator themselves.
pub fn coordinator_key() -> fog_rt::keys::KeyPair {
    fog_rt::keys::KeyPair::load_or_create(&fog_coordinator::signing::key_path(keys_dir()))
        .expect("the test coordinator key")
        .0
}

/// The `[trust]` table of an agent config written as TOML: trusts [`coordinator_key`].
/// Also makes the agent's node key in `data_dir` now and approves it, as the harness's
/// fleets do for their in-process agents.
pub fn trust_toml(node: &str, data_dir: &std::path::Path) -> String {
    approve_node(node, data_dir);
    format!(
        "[trust]\ncoordinator_keys = [\"{}\"]\nkeys_dir = \"\"\n",
        coordinator_key().public().line()
    )
}

/// Make `node`'s key in `data_dir` (if missing) and approve it for the harness's
/// coordinators.
pub fn approve_node(node: &str, data_dir: &std::path::Path) -> fog_rt::keys::PublicKey {
    let (identity, _) =
        fog_agent::trust::Identity::load_or_create(data_dir, node).expect("the node key");
    let key = fog_rt::keys::PublicKey::from_line(&identity.line()).expect("a key line");
    let id = NodeId::new(node).expect("a valid node id");
    fog_coordinator::identity::store::approve(&keys_dir().join("nodes"), &id, Some(key.clone()))
        .expect("approving the node key");
    key
}

/// `list` signed by [`coordinator_key`] for `node`, now, and encoded.
pub fn signed_assignments(
    node: &str,
    mut list: fog_proto::TaskAssignments,
    encoding: Encoding,
) -> Vec<u8> {
    fog_rt::keys::seal(&mut list, &coordinator_key(), node, fog_rt::clock::now_ms())
        .expect("assignments encode");
    fog_proto::codec::encode(&list, encoding).expect("assignments encode")
}

/// An in-process coordinator and the stream of its registry snapshots.
pub struct RunningCoordinator {
    pub view: watch::Receiver<Snapshot>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningCoordinator {
    pub fn start(broker_url: &str, liveness: LivenessConfig) -> anyhow::Result<Self> {
        Self::start_with(fleet(broker_url)?.liveness(liveness).coordinator())
    }

    /// A coordinator that believes unapproved nodes (`allow_unapproved_nodes`), for
    /// tests that play a node by hand with unsigned messages.
    pub fn start_open(broker_url: &str, liveness: LivenessConfig) -> anyhow::Result<Self> {
        let mut cfg = fleet(broker_url)?.liveness(liveness).coordinator();
        cfg.security.allow_unapproved_nodes = true;
        Self::start_with(cfg)
    }

    /// A coordinator from TOML: `extra` (top-level keys and tables such as
    /// `[placement]` or `[breaker]`), with the harness's status interval, an assumed
    /// heartbeat interval of 1 s and its broker link set over it; unsigned submissions
    /// allowed unless `extra` has a `[security]` table.
    pub fn start_toml(broker_url: &str, extra: &str) -> anyhow::Result<Self> {
        // Memory-only task state unless the test gives a data dir.
        let mut extra = if extra.contains("data_dir") {
            extra.to_owned()
        } else {
            format!("data_dir = \"\"\n{extra}")
        };
        // Unsigned submissions, as the harness's clients send, unless the test sets
        // its own [security].
        if !extra.contains("[security]") {
            extra.push_str("\n[security]\nallow_unsigned_submissions = true\n");
        }
        let cfg = fleet(broker_url)?
            .coordinator_heartbeat(Duration::from_secs(1))
            .coordinator_from_toml(&extra, "test")?;
        Self::start_with(cfg)
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

    /// [`RunningCoordinator::start_with`], serving its HTTP API on a free loopback
    /// port, signed changes (drain, submissions) taken from `cfg`'s `[clients]`.
    pub async fn start_with_api(cfg: CoordinatorConfig) -> anyhow::Result<(Self, SocketAddr)> {
        let (tx, view) = watch::channel(fog_coordinator::service::empty_snapshot());
        let stop = CancellationToken::new();
        let http =
            fog_coordinator::http::HttpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = http.addr;
        let (commands, rx) = fog_coordinator::control::channel();
        let control = fog_coordinator::http::Control::new(
            cfg.security.clients.clone(),
            cfg.security.max_clock_skew,
            commands,
        );
        tokio::spawn(http.serve_with_control(view.clone(), control, stop.clone()));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let notifier = fog_rt::sdnotify::Notifier::default();
            if let Err(e) =
                fog_coordinator::service::serve_with(cfg, s, tx, notifier, Some(rx)).await
            {
                panic!("coordinator failed: {e}");
            }
        });
        Ok((RunningCoordinator { view, stop, task }, addr))
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
    /// Start an agent; `extra_top` (top-level keys and tables such as `[pool]` or
    /// `[tasks.x]`) and `extra_broker` (keys of its `[broker]` table) are its TOML, and
    /// the harness sets its node id, data directory, intervals and broker link over it.
    pub fn start(
        node: &str,
        broker_url: &str,
        extra_top: &str,
        extra_broker: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let text = if extra_broker.is_empty() {
            extra_top.to_owned()
        } else {
            format!("{extra_top}\n[broker]\n{extra_broker}\n")
        };
        let cfg = fleet(broker_url)?.agent_from_toml(node, &dir.path().join("data"), &text)?;
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
        seal: None,
        online: true,
        at_ms: 1,
        reason: String::new(),
        birth: Some(Birth {
            node_key: String::new(),
            task_trust: Default::default(),
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
