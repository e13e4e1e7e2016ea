//! [`FleetBuilder`]: the configs of an in-process fleet (agents and a coordinator on one
//! broker) as typed values, for the demo, `bench --fleet` and the end-to-end harness.
//! Each starts from the loader's defaults (`Config::from_toml`, or the struct with
//! `Default` parts for the coordinator) and sets the fields the fleet needs; nothing is
//! written as TOML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fog_agent::config::Config as AgentConfig;
use fog_proto::{NodeId, Prefix};
use fog_rt::broker::BrokerConfig;
use fog_rt::config::{invalid, ConfigError};

use std::sync::Arc;

use fog_rt::keys::{KeyPair, PublicKey};

use crate::config::{CoordinatorConfig, SecurityConfig};
use crate::dispatch::PlacementConfig;
use crate::registry::LivenessConfig;
use crate::signing;

/// Where the builder's own settings come from in an error.
const ORIGIN: &str = "<fleet>";

/// Typed agent and coordinator configs pointed at one plain-TCP broker.
///
/// Agent settings left unset keep the agent's defaults (or what the TOML given to
/// [`FleetBuilder::agent_from_toml`] says).
#[derive(Debug, Clone)]
pub struct FleetBuilder {
    agent_broker: BrokerConfig,
    coordinator_broker: BrokerConfig,
    heartbeat: Option<Duration>,
    metrics_interval: Option<Duration>,
    labels: BTreeMap<String, String>,
    queue_capacity: Option<usize>,
    arena_bytes: Option<usize>,
    status_interval: Duration,
    liveness: LivenessConfig,
    placement: PlacementConfig,
    coordinator_data_dir: Option<PathBuf>,
    /// Throwaway keys for this fleet: the coordinator's signing key (which every agent
    /// trusts) and the approved node keys. Removed when the last clone is dropped.
    keys_dir: PathBuf,
    /// The folder, when this builder made it (`new`); `with_keys` borrows one.
    _keys_owner: Option<Arc<tempfile::TempDir>>,
    coordinator_key: String,
    /// Where approved node keys go, if not `<keys_dir>/nodes`.
    approvals: Option<PathBuf>,
    security: crate::config::SecurityConfig,
}

impl FleetBuilder {
    /// Everything on `broker_url` (`mqtt://host:port`) with default link settings; the
    /// coordinator publishes its status every 2 s and keeps task state in memory.
    pub fn new(broker_url: &str) -> Result<Self, ConfigError> {
        let keys = tempfile::Builder::new()
            .prefix("fog-fleet-keys-")
            .tempdir()
            .map_err(|e| invalid(ORIGIN, "keys", format!("a folder for throwaway keys: {e}")))?;
        let mut b = Self::with_keys(broker_url, keys.path())?;
        b._keys_owner = Some(Arc::new(keys));
        Ok(b)
    }

    /// Like [`FleetBuilder::new`], with the fleet's keys in `keys_dir` (made there if
    /// missing), so fleets built separately (one test's coordinator and agents) share
    /// them.
    pub fn with_keys(broker_url: &str, keys_dir: &Path) -> Result<Self, ConfigError> {
        let broker = BrokerConfig::plain(broker_url)?;
        let coordinator_key = KeyPair::load_or_create(&signing::key_path(keys_dir))
            .map_err(|e| invalid(ORIGIN, "keys", e.to_string()))?
            .0
            .public()
            .line();
        Ok(FleetBuilder {
            keys_dir: keys_dir.to_owned(),
            _keys_owner: None,
            coordinator_key,
            approvals: None,
            agent_broker: broker.clone(),
            coordinator_broker: broker,
            heartbeat: None,
            metrics_interval: None,
            labels: BTreeMap::new(),
            queue_capacity: None,
            arena_bytes: None,
            status_interval: Duration::from_secs(2),
            liveness: LivenessConfig::default(),
            placement: PlacementConfig::default(),
            coordinator_data_dir: None,
            security: crate::config::SecurityConfig::lab(),
        })
    }

    /// The agents' MQTT keep-alive and, if given, reconnect backoff (first, cap).
    pub fn agent_link(
        mut self,
        keep_alive: Duration,
        reconnect: Option<(Duration, Duration)>,
    ) -> Self {
        set_link(&mut self.agent_broker, keep_alive, reconnect);
        self
    }

    /// The coordinator's MQTT keep-alive and, if given, reconnect backoff (first, cap).
    pub fn coordinator_link(
        mut self,
        keep_alive: Duration,
        reconnect: Option<(Duration, Duration)>,
    ) -> Self {
        set_link(&mut self.coordinator_broker, keep_alive, reconnect);
        self
    }

    /// The agents' heartbeat and reading intervals.
    pub fn agent_intervals(mut self, heartbeat: Duration, metrics: Duration) -> Self {
        self.heartbeat = Some(heartbeat);
        self.metrics_interval = Some(metrics);
        self
    }

    /// A label every agent announces.
    /// The coordinator's `[security]` and `[clients]` (default: `SecurityConfig::lab()`,
    /// everything open).
    pub fn security(mut self, security: crate::config::SecurityConfig) -> Self {
        self.security = security;
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The agents' task queue capacity and arena size.
    pub fn agent_pool(mut self, queue_capacity: usize, arena_bytes: usize) -> Self {
        self.queue_capacity = Some(queue_capacity);
        self.arena_bytes = Some(arena_bytes);
        self
    }

    /// How often the coordinator publishes its status (and its snapshot).
    pub fn status_interval(mut self, every: Duration) -> Self {
        self.status_interval = every;
        self
    }

    /// The coordinator's liveness rules, whole.
    pub fn liveness(mut self, liveness: LivenessConfig) -> Self {
        self.liveness = liveness;
        self
    }

    /// The heartbeat interval the coordinator assumes before a node's birth record.
    pub fn coordinator_heartbeat(mut self, every: Duration) -> Self {
        self.liveness.default_heartbeat_interval = every;
        self
    }

    pub fn placement(mut self, placement: PlacementConfig) -> Self {
        self.placement = placement;
        self
    }

    /// Where the coordinator journals tasks (`None`: in memory only).
    pub fn coordinator_data_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.coordinator_data_dir = dir;
        self
    }

    /// The broker settings the coordinator (and a client beside it) uses.
    pub fn coordinator_broker(&self) -> &BrokerConfig {
        &self.coordinator_broker
    }

    /// Agent `node`, keeping its state in `data_dir`.
    pub fn agent(&self, node: &str, data_dir: &Path) -> Result<AgentConfig, ConfigError> {
        self.agent_from_toml(node, data_dir, "")
    }

    /// Agent `node` from the agent's TOML `text` (tables such as `[pool]` or
    /// `[tasks.x]`), with the node id, data directory and the builder's settings set
    /// over it; in `[broker]` the builder sets the address, keep-alive and backoff.
    pub fn agent_from_toml(
        &self,
        node: &str,
        data_dir: &Path,
        text: &str,
    ) -> Result<AgentConfig, ConfigError> {
        let mut cfg = AgentConfig::from_toml(text)?;
        cfg.node_id = NodeId::new(node).map_err(|e| invalid(ORIGIN, "node_id", e.to_string()))?;
        data_dir.clone_into(&mut cfg.data_dir);
        if let Some(every) = self.heartbeat {
            cfg.heartbeat_interval = every;
        }
        if let Some(every) = self.metrics_interval {
            cfg.metrics_interval = every;
        }
        cfg.labels.extend(self.labels.clone());
        if let Some(n) = self.queue_capacity {
            cfg.pool.queue_capacity = n;
        }
        if let Some(n) = self.arena_bytes {
            cfg.pool.arena_bytes = n;
        }
        aim(&mut cfg.broker, &self.agent_broker);
        cfg.trust.coordinator_keys = vec![PublicKey::from_line(&self.coordinator_key)
            .map_err(|e| invalid(ORIGIN, "trust", e.to_string()))?];
        cfg.trust.keys_dir = None;
        // The agent's own key, made now and approved at once: a fleet approves its
        // own agents.
        let (identity, _) = fog_agent::trust::Identity::load_or_create(data_dir, node)
            .map_err(|e| invalid(ORIGIN, "node key", e.to_string()))?;
        let key = PublicKey::from_line(&identity.line())
            .map_err(|e| invalid(ORIGIN, "node key", e.to_string()))?;
        crate::identity::store::approve(&self.nodes_dir(), &cfg.node_id, Some(key))
            .map_err(|e| invalid(ORIGIN, "node key", e.to_string()))?;
        Ok(cfg)
    }

    /// The public key line of the coordinator's signing key (what the agents trust).
    pub fn coordinator_key(&self) -> &str {
        &self.coordinator_key
    }

    /// Where the fleet's throwaway keys live.
    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    /// The coordinator: its defaults with the builder's status interval, liveness,
    /// placement, data directory and broker.
    pub fn coordinator(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            prefix: Prefix::default(),
            encoding: Default::default(),
            status_interval: self.status_interval,
            liveness: self.liveness.clone(),
            placement: self.placement.clone(),
            scaling: Default::default(),
            data_dir: self.coordinator_data_dir.clone(),
            http_listen: None,
            home_assistant: Default::default(),
            broker: self.coordinator_broker.clone(),
            security: self.with_fleet_key(self.security.clone()),
            cluster: None,
        }
    }

    /// The coordinator from its TOML `text` (`origin` names it in errors), with the
    /// builder's status interval, assumed heartbeat interval and broker address,
    /// keep-alive and backoff set over it.
    pub fn coordinator_from_toml(
        &self,
        text: &str,
        origin: &str,
    ) -> Result<CoordinatorConfig, ConfigError> {
        let mut cfg = CoordinatorConfig::from_toml(text, origin)?;
        cfg.status_interval = self.status_interval;
        cfg.liveness.default_heartbeat_interval = self.liveness.default_heartbeat_interval;
        aim(&mut cfg.broker, &self.coordinator_broker);
        // The TOML decides allow_unapproved_nodes (default: no).
        let open = cfg.security.allow_unapproved_nodes;
        cfg.security = self.with_fleet_key(cfg.security);
        cfg.security.allow_unapproved_nodes = open;
        Ok(cfg)
    }

    /// `security` with the fleet's signing key.
    fn with_fleet_key(&self, mut security: SecurityConfig) -> SecurityConfig {
        security.key_dir = Some(self.keys_dir.clone());
        security.nodes_dir = Some(self.nodes_dir());
        security.allow_unapproved_nodes = false;
        security
    }

    /// Where the fleet's approved node keys live.
    pub fn nodes_dir(&self) -> PathBuf {
        self.approvals
            .clone()
            .unwrap_or_else(|| self.keys_dir.join("nodes"))
    }

    /// Approve node keys in `dir` instead (fleets sharing a signing key but not their
    /// node ids, e.g. tests running at once with the same node names).
    pub fn approvals_in(mut self, dir: &Path) -> Self {
        self.approvals = Some(dir.to_owned());
        self
    }
}

fn set_link(b: &mut BrokerConfig, keep_alive: Duration, reconnect: Option<(Duration, Duration)>) {
    b.keep_alive = keep_alive;
    if let Some((initial, max)) = reconnect {
        b.reconnect_initial = initial;
        b.reconnect_max = max;
    }
}

/// Point `to` at `from`'s broker with `from`'s timers, keeping its client id and
/// credentials.
fn aim(to: &mut BrokerConfig, from: &BrokerConfig) {
    to.host.clone_from(&from.host);
    to.port = from.port;
    to.tls.clone_from(&from.tls);
    to.keep_alive = from.keep_alive;
    to.reconnect_initial = from.reconnect_initial;
    to.reconnect_max = from.reconnect_max;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed configs say what the TOML the demo, the bench fleet and the harness
    /// used to write said.
    #[test]
    fn typed_configs_match_the_toml_they_replace() {
        let url = "mqtt://127.0.0.1:18830";
        let dir = Path::new("/tmp/fog-fleet-test/a1");
        let b = FleetBuilder::new(url)
            .expect("url")
            .agent_intervals(Duration::from_millis(500), Duration::from_secs(5))
            .agent_pool(1024, 16 << 20)
            .agent_link(
                Duration::from_secs(2),
                Some((Duration::from_millis(50), Duration::from_millis(500))),
            )
            .label("role", "demo");
        let typed = b
            .agent_from_toml("a1", dir, "[pool]\nworkers = 2\n")
            .expect("valid");
        let text = format!(
            "node_id = \"a1\"\ndata_dir = \"{}\"\nheartbeat_interval_secs = 0.5\nmetrics_interval_secs = 5.0\n[labels]\nrole = \"demo\"\n[pool]\nworkers = 2\nqueue_capacity = 1024\narena_bytes = 16777216\n[broker]\nurl = \"{url}\"\nkeep_alive_secs = 2\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n[trust]\ncoordinator_keys = [\"{}\"]\nkeys_dir = \"\"\n",
            dir.display(),
            b.coordinator_key()
        );
        let toml = AgentConfig::from_toml(&text).expect("valid");
        assert_eq!(format!("{typed:?}"), format!("{toml:?}"));

        let b = b
            .coordinator_link(
                Duration::from_secs(5),
                Some((Duration::from_millis(50), Duration::from_millis(500))),
            )
            .status_interval(Duration::from_millis(100))
            .coordinator_heartbeat(Duration::from_secs(1));
        let typed = b
            .coordinator_from_toml("data_dir = \"\"\n[placement]\nmax_attempts = 5\n", "t")
            .expect("valid");
        let text = format!("data_dir = \"\"\nstatus_interval_secs = 0.1\ndefault_heartbeat_interval_secs = 1.0\n[placement]\nmax_attempts = 5\n[broker]\nurl = \"{url}\"\nkeep_alive_secs = 5\nreconnect_initial_secs = 0.05\nreconnect_max_secs = 0.5\n[security]\nkey_dir = {:?}\nnodes_dir = {:?}\n", b.keys_dir().display().to_string(), b.nodes_dir().display().to_string());
        let toml = CoordinatorConfig::from_toml(&text, "t").expect("valid");
        assert_eq!(format!("{typed:?}"), format!("{toml:?}"));
    }
}
