//! The fleet every hostile test attacks: a broker (the embedded one, or Mosquitto with
//! the generated ACL), a coordinator that takes submissions only from its `[clients]`,
//! two agents declaring commands that leave evidence, each fog program behind its own
//! proxy so its connections are counted, and raw MQTT clients for the attackers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fog_coordinator::client::{self, Client, Signer};
use fog_coordinator::clients::{ClientPolicy, Kinds};
use fog_coordinator::config::SecurityConfig;
use fog_e2e::generated::SiteBroker;
use fog_e2e::{fleet, Proxy, RunningAgent, RunningCoordinator, TestBroker, Watcher};
use fog_proto::{codec, Encoding, NodeState, Outcome, Reading, TaskResult, TaskResults, Topics};
use fog_rt::broker::BrokerConfig;
use fog_rt::keys::KeyPair;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(20);
pub const NODES: [&str; 2] = ["h-1", "h-2"];
pub const CLIENTS: [&str; 2] = ["ops", "narrow"];
pub const COORDINATOR: &str = "fog-coordinator";

/// The broker under attack.
pub enum Backend {
    /// `TestBroker::start()`: the embedded rumqttd (or an anonymous Mosquitto with
    /// `FOG_E2E_MOSQUITTO=1`); no users, no ACL.
    Open(TestBroker),
    /// Mosquitto with the configuration `broker-config` generates.
    Generated(SiteBroker),
}

impl Backend {
    pub fn open() -> Backend {
        Backend::Open(TestBroker::start().expect("broker"))
    }

    /// Fails (not skips) without a `mosquitto` program.
    pub fn generated() -> Backend {
        Backend::Generated(
            SiteBroker::generated(&NODES, &CLIENTS)
                .expect("mosquitto is installed (apt-get install mosquitto)"),
        )
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Backend::Open(b) => b.addr,
            Backend::Generated(b) => b.addr,
        }
    }

    /// The broker refuses a packet over fog's ceiling (the embedded broker's
    /// `max_payload_size`, the generated `max_packet_size`); the harness's anonymous
    /// Mosquitto (`FOG_E2E_MOSQUITTO=1`) has no such limit and forwards a 20 MB
    /// publish, which rumqttc cannot skip (docs/security-broker.md, poison.rs).
    pub fn limits_packets(&self) -> bool {
        match self {
            Backend::Open(b) => b.kind == fog_e2e::BrokerKind::Embedded,
            Backend::Generated(_) => true,
        }
    }

    pub fn has_acl(&self) -> bool {
        matches!(self, Backend::Generated(_))
    }

    /// `user`'s generated credentials; `None` (anonymous) on an open broker.
    pub fn creds(&self, user: &str) -> Option<(String, String)> {
        match self {
            Backend::Open(_) => None,
            Backend::Generated(b) => Some((user.to_owned(), b.password(user))),
        }
    }

    /// A `[broker]` for `user` at `url` (a proxy's, or the broker's own).
    pub fn broker_for(&self, user: &str, url: &str) -> BrokerConfig {
        let mut b = BrokerConfig::plain(url).expect("a valid url");
        b.credentials = self.creds(user);
        b.allow_plaintext_password = b.credentials.is_some();
        b
    }

    /// A watcher on `filter`, logged in as `user` on a broker with an ACL.
    pub async fn watch(&self, user: &str, filter: &str) -> Watcher {
        Watcher::start_as(self.addr(), filter, self.creds(user)).await
    }
}

/// The `[tasks]` of the attacked agents: `whoami` touches a marker (nobody is allowed
/// to run it: the marker existing means an unauthorised task ran), `mark` appends its
/// payload to a log (one line per run).
pub fn evidence_toml(dir: &Path) -> String {
    format!(
        "[tasks.whoami]\ncommand = \"/usr/bin/touch\"\nargs = [\"{}\"]\n\n[tasks.mark]\ncommand = \"/usr/bin/tee\"\nargs = [\"-a\", \"{}\"]\n",
        dir.join("whoami-ran").display(),
        dir.join("mark.log").display()
    )
}

pub fn marker(dir: &Path) -> PathBuf {
    dir.join("whoami-ran")
}

/// The lines `mark` wrote on a node (its payloads, in order).
pub fn marks(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("mark.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A client policy for the coordinator's `[clients]`.
fn policy(name: &str, key: &KeyPair, kinds: &[&str], nodes: &[&str]) -> ClientPolicy {
    ClientPolicy {
        name: name.into(),
        key: key.public().clone(),
        kinds: Kinds::Only(kinds.iter().map(|k| k.to_string()).collect()),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        labels: BTreeMap::new(),
    }
}

pub struct Node {
    pub id: &'static str,
    pub agent: RunningAgent,
    pub proxy: Proxy,
    /// Where its commands leave their evidence.
    pub evidence: PathBuf,
}

pub struct Site {
    pub backend: Backend,
    pub coord: RunningCoordinator,
    pub coord_proxy: Proxy,
    pub nodes: Vec<Node>,
    /// `ops`: kinds echo and sha256, any node.
    pub ops: KeyPair,
    pub ops_key: PathBuf,
    /// `narrow`: kind echo only, on h-2 only.
    pub narrow: KeyPair,
    /// This site's approved node keys.
    pub approvals: PathBuf,
    _dir: tempfile::TempDir,
}

impl Site {
    pub async fn start(backend: Backend) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let ops_key = dir.path().join("ops.key");
        let ops = KeyPair::create(&ops_key).expect("ops key");
        let narrow = KeyPair::create(&dir.path().join("narrow.key")).expect("narrow key");
        let mut security = SecurityConfig::lab();
        security.allow_unsigned_submissions = false;
        security.clients = BTreeMap::from([
            (
                "ops".to_owned(),
                policy("ops", &ops, &["echo", "sha256"], &[]),
            ),
            (
                "narrow".to_owned(),
                policy("narrow", &narrow, &["echo"], &["h-2"]),
            ),
        ]);
        let coord_proxy = Proxy::start(backend.addr()).await.expect("proxy");
        // Node approvals of this site only: other sites run at once with the same
        // node names (and their own node keys).
        let approvals = dir.path().join("approved-nodes");
        let mut cfg = fleet(&coord_proxy.url())
            .expect("fleet")
            .approvals_in(&approvals)
            .security(security)
            .coordinator();
        let b = backend.broker_for(COORDINATOR, &coord_proxy.url());
        cfg.broker.credentials = b.credentials;
        cfg.broker.allow_plaintext_password = b.allow_plaintext_password;
        let mut coord = RunningCoordinator::start_with(cfg).expect("coordinator");
        let mut nodes = Vec::new();
        for id in NODES {
            let proxy = Proxy::start(backend.addr()).await.expect("proxy");
            let agent_dir = tempfile::tempdir().expect("agent dir");
            let evidence = dir.path().join(id);
            std::fs::create_dir_all(&evidence).expect("evidence dir");
            let mut cfg = fleet(&proxy.url())
                .expect("fleet")
                .approvals_in(&approvals)
                .agent_from_toml(
                    id,
                    &agent_dir.path().join("data"),
                    &evidence_toml(&evidence),
                )
                .expect("agent config");
            let b = backend.broker_for(id, &proxy.url());
            cfg.broker.credentials = b.credentials;
            cfg.broker.allow_plaintext_password = b.allow_plaintext_password;
            nodes.push(Node {
                id,
                agent: RunningAgent::start_with(cfg, agent_dir),
                proxy,
                evidence,
            });
        }
        coord
            .wait_for("both agents online", WAIT, |s| {
                NODES.iter().all(|id| {
                    s.nodes
                        .iter()
                        .any(|n| n.node.as_str() == *id && n.state == NodeState::Online)
                })
            })
            .await;
        Site {
            backend,
            coord,
            coord_proxy,
            nodes,
            ops,
            ops_key,
            narrow,
            approvals,
            _dir: dir,
        }
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("a site node")
    }

    /// No unauthorised task ran anywhere: no `whoami` marker on any node.
    pub fn assert_no_whoami(&self) {
        for n in &self.nodes {
            assert!(
                !marker(&n.evidence).exists(),
                "an unauthorised whoami ran on {}",
                n.id
            );
        }
    }

    /// Every fog program connected exactly once so far (no drop, no reconnect).
    pub fn assert_one_connection_each(&self) {
        assert_eq!(
            self.coord_proxy.connections(),
            1,
            "the coordinator reconnected"
        );
        for n in &self.nodes {
            assert_eq!(n.proxy.connections(), 1, "agent {} reconnected", n.id);
        }
    }

    /// A signing client `ops` (its key file names it).
    pub async fn ops_client(&self) -> Client {
        let signer = Signer::load(&self.ops_key, None).expect("ops key loads");
        let broker = self.backend.broker_for("ops", &url(self.backend.addr()));
        Client::connect_as(&broker, Topics::default(), WAIT, Some(signer))
            .await
            .expect("ops connects")
    }

    /// The normal load after the attacks: `n` sha256 tasks from `ops`, in lists of 50,
    /// each answered exactly once on the wire (a second subscriber counts what the
    /// coordinator published), none lost. Returns the time it took.
    pub async fn normal_load(&self, n: usize) -> Duration {
        let mut tap = self.backend.watch("ops", "fog/v1/clients/ops/#").await;
        let mut c = self.ops_client().await;
        let t0 = std::time::Instant::now();
        let mut ids = Vec::new();
        let subs: Vec<_> = (0..n)
            .map(|i| client::submission("sha256", format!("load-{i}").into_bytes(), 0, WAIT, false))
            .collect();
        for chunk in subs.chunks(50) {
            ids.extend(c.submit_many(chunk.to_vec()).await.expect("submitted"));
        }
        let mut finals: HashMap<String, TaskResult> = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while finals.len() < n && tokio::time::Instant::now() < deadline {
            if let Ok(Ok(Some(r))) =
                tokio::time::timeout(Duration::from_millis(500), c.next_result()).await
            {
                if !matches!(r.outcome, Outcome::Accepted) {
                    finals.insert(r.id.clone(), r);
                }
            }
        }
        let took = t0.elapsed();
        let lost: Vec<&String> = ids.iter().filter(|id| !finals.contains_key(*id)).collect();
        assert!(lost.is_empty(), "{} of {n} lost: {lost:?}", lost.len());
        for (i, id) in ids.iter().enumerate() {
            match &finals[id].outcome {
                Outcome::Completed { output, .. } => assert_eq!(
                    output.0.len(),
                    64,
                    "load-{i}: not a sha256 hex digest: {output:?}"
                ),
                other => panic!("load-{i} did not complete: {other:?}"),
            }
        }
        // On the wire: one final result per id, nothing else.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut wire: HashMap<String, usize> = HashMap::new();
        for a in tap.drain() {
            let list = codec::decode::<TaskResults>(&a.payload).expect("a result list");
            for r in list.items {
                if !matches!(r.outcome, Outcome::Accepted) {
                    *wire.entry(r.id).or_default() += 1;
                }
            }
        }
        let dups: Vec<_> = wire.iter().filter(|(_, k)| **k > 1).collect();
        assert!(dups.is_empty(), "duplicated finals on the wire: {dups:?}");
        assert_eq!(wire.len(), n, "finals on the wire");
        assert_eq!(c.repeats_dropped(), 0, "repeats the client dropped");
        c.close().await;
        took
    }

    pub async fn stop(self) {
        for n in self.nodes {
            n.agent.stop().await;
        }
        self.coord.stop().await;
    }
}

pub fn url(addr: SocketAddr) -> String {
    format!("mqtt://{addr}")
}

/// What a raw client saw.
#[derive(Debug)]
pub enum Seen {
    Message,
    Down(String),
}

/// A raw rumqttc client (not fog's link): the attacker.
pub struct Raw {
    pub client: AsyncClient,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

impl Raw {
    /// Connect as `user` (`None`: anonymous); the CONNACK, or the error that ended it.
    pub async fn connect(addr: SocketAddr, user: Option<(String, String)>) -> Result<Raw, String> {
        let mut o = MqttOptions::new(
            format!("attacker-{}", fastrand::u32(..)),
            addr.ip().to_string(),
            addr.port(),
        );
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(32 * 1024 * 1024, 32 * 1024 * 1024);
        if let Some((u, p)) = user {
            o.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (tx, seen) = mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        let _ = tx.send(Seen::Message);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        match ready_tx.take() {
                            Some(r) => {
                                let _ = r.send(Err(e.to_string()));
                            }
                            None => {
                                let _ = tx.send(Seen::Down(e.to_string()));
                            }
                        }
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(WAIT, ready).await {
            Ok(Ok(Ok(()))) => Ok(Raw { client, seen }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("event loop ended".into()),
            Err(_) => Err("no CONNACK in time".into()),
        }
    }

    /// As `user` on `backend` (its generated password; anonymous on an open broker).
    pub async fn login(backend: &Backend, user: &str) -> Raw {
        Raw::connect(backend.addr(), backend.creds(user))
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"))
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queued");
    }

    /// The broker closed this connection (the sender of an oversized publish).
    pub async fn cut_off(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.seen.recv()).await {
                Ok(Some(Seen::Down(e))) => return e,
                Ok(Some(Seen::Message)) => {}
                other => panic!("the sender of a 20 MB publish was not cut off: {other:?}"),
            }
        }
    }
}

/// Results published by an agent (its results topic), one watcher.
pub fn results(arrived: &[fog_e2e::watcher::Arrived]) -> Vec<TaskResult> {
    arrived
        .iter()
        .flat_map(|a| {
            codec::decode::<TaskResults>(&a.payload)
                .expect("the agent's results decode")
                .items
        })
        .collect()
}

/// Wait for a reading of the node whose agent counters satisfy `pred`, then check the
/// next one too (a later reading could show more); returns the last.
pub async fn reading_where(
    w: &mut Watcher,
    what: &str,
    pred: impl Fn(&fog_proto::AgentSelf) -> bool,
) -> Reading {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = w
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("no reading while waiting for {what}"));
        // Junk a test published on the topic itself is not a reading.
        let Ok(r) = codec::decode::<Reading>(&a.payload) else {
            continue;
        };
        if pred(&r.agent) {
            let a = w.next(WAIT).await.expect("one more reading");
            let next = codec::decode::<Reading>(&a.payload).expect("a reading");
            assert!(
                pred(&next.agent),
                "{what}: the next reading differs: {:?}",
                next.agent
            );
            return next;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; last: {:?}", r.agent);
        }
    }
}

/// The encodings every attack is tried in.
pub const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Postcard];

pub fn enc_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Json => "json",
        Encoding::Postcard => "postcard",
    }
}
