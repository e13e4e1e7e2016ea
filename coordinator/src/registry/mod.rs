//! The live registry of agents, built only from what they publish.
//!
//! Per node it keeps the birth record, the latest load, when it was last heard from and
//! a state: online, suspect (silent for `suspect_after_missed` heartbeat intervals) or
//! offline (a Last Will or clean offline record at once, or silent for
//! `offline_after_missed` intervals or 1.5 x its MQTT keep-alive, whichever is
//! shorter). State per node is constant in size.
//!
//! Why the keep-alive bound: the broker's own keep-alive check is coarse (Mosquitto
//! 2.0 works in whole seconds and was measured firing its Last Will 5.8 s after a cut
//! with a 2 s keep-alive). Agents heartbeat at least twice per keep-alive (their config
//! refuses anything slower), so a node silent for 1.5 x keep-alive has missed three
//! heartbeats and the coordinator need not wait for the broker.
//!
//! Every message that cannot be used (foreign topic, bad node id, oversized, malformed)
//! is counted by reason and logged at a bounded rate; none of them stops ingestion.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fog_proto::{
    codec, Birth, DecodeError, Heartbeat, NodeHealth, NodeId, NodeState, NodeSummary, NodeTopic,
    Reading, Status, TopicError, Topics,
};
use tokio::time::Instant;

use crate::identity::{Distrust, NodeKeys};
use crate::phi::PhiDetector;

mod forgotten;
pub use forgotten::{Forgotten, MAX_FORGOTTEN};

/// Liveness rules.
#[derive(Debug, Clone)]
pub struct LivenessConfig {
    /// Heartbeat interval assumed for nodes whose birth record has not been seen.
    pub default_heartbeat_interval: Duration,
    /// Missed heartbeat intervals before a silent node is suspect.
    pub suspect_after_missed: u32,
    /// Missed heartbeat intervals before a silent node is offline.
    pub offline_after_missed: u32,
    /// Suspicion (phi accrual over heartbeat gaps) at which a silent node is suspect
    /// before `suspect_after_missed` intervals have passed.
    pub phi_threshold: f64,
    /// Offline after this many MQTT keep-alives of silence (the bound the broker's own
    /// Last Will follows, 1.5 in MQTT 3.1.1); `None` leaves it to the heartbeat rules
    /// and the Will alone (tests that must see the Will itself).
    pub offline_after_keep_alives: Option<f32>,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            default_heartbeat_interval: Duration::from_secs(5),
            suspect_after_missed: 3,
            offline_after_missed: 6,
            phi_threshold: 8.0,
            offline_after_keep_alives: Some(1.5),
        }
    }
}

/// Why a message was not used.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("topic: {0}")]
    Topic(#[from] TopicError),
    #[error("{topic}: {source}")]
    Decode { topic: String, source: DecodeError },
    #[error("{0}: not a topic the registry reads")]
    Unexpected(String),
    #[error("{topic}: not believed: {why}")]
    Distrusted {
        topic: String,
        why: String,
        reason: &'static str,
    },
}

impl IngestError {
    /// The counter this error increments.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Topic(TopicError::Foreign { .. }) | IngestError::Unexpected(_) => {
                "wrong_topic"
            }
            IngestError::Topic(_) => "bad_node_id",
            IngestError::Decode {
                source: DecodeError::TooLarge { .. },
                ..
            } => "oversized",
            IngestError::Decode { .. } => "malformed",
            IngestError::Distrusted { reason, .. } => reason,
        }
    }
}

/// Why a node was not forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("no such node")]
    Unknown,
    #[error("it is {}: a node that speaks comes straight back; stop its agent first", .0.as_str())]
    NotOffline(NodeState),
}

/// What ingesting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Status { node: NodeId, online: bool },
    Heartbeat,
    Reading,
}

/// A change of a node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub node: NodeId,
    pub from: NodeState,
    pub to: NodeState,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Shared with the HTTP view, which takes a copy every second.
    pub birth: Option<Arc<Birth>>,
    pub state: NodeState,
    /// Monotonic time of the last message, for liveness.
    pub last_seen: Instant,
    /// Wall clock of the last message, for display.
    pub last_seen_ms: u64,
    pub heartbeat: Option<Heartbeat>,
    /// CPU and memory % from the latest full reading.
    pub reading_cpu_pct: Option<f32>,
    pub reading_mem_pct: Option<f32>,
    /// What the last reading said needs a look (under-voltage, throttling, ...).
    pub reading_notices: Vec<String>,
    /// The newest reading by the node's clock (a replayed backlog reading is older and
    /// does not replace it), for the HTTP API and `/metrics`.
    pub reading: Option<Arc<Reading>>,
    pub offline_reason: String,
    /// Offline by its own record (will or clean exit): only a new birth revives it.
    offline_by_record: bool,
    /// Heartbeat gaps, for phi-accrual suspicion.
    pub gaps: PhiDetector,
    /// Time of the newest status record believed, and the newest heartbeat's sequence
    /// number in this session: what a replayed copy is measured against.
    last_status_ms: u64,
    last_heartbeat_seq: Option<u64>,
}

impl NodeEntry {
    /// A reading: its figures for the summary, and the reading itself if it is the
    /// newest seen (backlog replays arrive after fresher ones).
    fn take_reading(&mut self, r: Reading) {
        self.reading_cpu_pct = r.cpu.total_pct;
        self.reading_mem_pct = Some(r.memory.used_pct);
        self.reading_notices = r.notices();
        if self.reading.as_ref().is_none_or(|old| r.at_ms >= old.at_ms) {
            self.reading = Some(Arc::new(r));
        }
    }

    fn new(now: Instant, wall_ms: u64) -> Self {
        NodeEntry {
            birth: None,
            state: NodeState::Online,
            last_seen: now,
            last_seen_ms: wall_ms,
            heartbeat: None,
            reading_cpu_pct: None,
            reading_mem_pct: None,
            reading_notices: Vec::new(),
            reading: None,
            gaps: PhiDetector::new(Duration::from_secs(5)),
            offline_reason: String::new(),
            offline_by_record: false,
            last_status_ms: 0,
            last_heartbeat_seq: None,
        }
    }
}

#[derive(Debug)]
pub struct Registry {
    topics: Topics,
    liveness: LivenessConfig,
    nodes: HashMap<NodeId, NodeEntry>,
    counters: BTreeMap<&'static str, u64>,
    /// Bumped on every change of a node's state or birth record, so placement can
    /// rebuild its eligible sets only when something it depends on changed.
    generation: u64,
    /// Whose messages are believed (open unless [`Registry::set_node_keys`]).
    keys: NodeKeys,
    /// How far a believed status may be older than the last one (a replayed will).
    max_skew_ms: u64,
    /// Births from nodes waiting for approval, applied once approved.
    waiting_births: HashMap<NodeId, Status>,
    /// Nodes an operator forgot: what they left retained is not believed again.
    forgotten: Forgotten,
    /// How old each heartbeat was when it was taken in (our clock minus the node's
    /// stamp: the broker's and our delay, plus the node's clock offset).
    pub heartbeat_age: crate::latency::Histogram,
}

/// Most births kept for nodes waiting for approval.
const MAX_WAITING_BIRTHS: usize = 10_000;

impl Registry {
    pub fn new(topics: Topics, liveness: LivenessConfig) -> Self {
        Registry {
            topics,
            liveness,
            nodes: HashMap::new(),
            counters: BTreeMap::new(),
            generation: 0,
            keys: NodeKeys::open(),
            max_skew_ms: 300_000,
            waiting_births: HashMap::new(),
            forgotten: Forgotten::default(),
            heartbeat_age: Default::default(),
        }
    }

    /// Forget `node`, which must be offline, at `wall_ms`: it leaves the registry,
    /// and what it sent before now is not believed again (see [`Forgotten`]).
    pub fn forget(&mut self, node: &str, wall_ms: u64) -> Result<NodeState, ForgetError> {
        let Some(e) = self.nodes.get(node) else {
            return Err(ForgetError::Unknown);
        };
        if e.state != NodeState::Offline {
            return Err(ForgetError::NotOffline(e.state));
        }
        let Some((id, e)) = self.nodes.remove_entry(node) else {
            return Err(ForgetError::Unknown);
        };
        self.waiting_births.remove(node);
        self.forgotten.insert(id, wall_ms);
        self.generation += 1;
        Ok(e.state)
    }

    /// The nodes forgotten (to keep across a restart).
    pub fn forgotten(&self) -> &Forgotten {
        &self.forgotten
    }

    /// The nodes forgotten before a restart.
    pub fn set_forgotten(&mut self, f: Forgotten) {
        self.forgotten = f;
    }

    /// Drop a message stamped before its node was forgotten (counted as `forgotten`).
    fn not_forgotten(&mut self, topic: &str, node: &str, at_ms: u64) -> Result<(), IngestError> {
        if !self.forgotten.is_empty() && self.forgotten.is_old_news(node, at_ms) {
            return Err(IngestError::Distrusted {
                topic: topic.to_owned(),
                why: "stamped before the node was forgotten (what the broker kept retained)".into(),
                reason: "forgotten",
            });
        }
        Ok(())
    }

    /// Believe only nodes signing with their approved keys.
    pub fn set_node_keys(&mut self, keys: NodeKeys, max_skew: Duration) {
        self.keys = keys;
        self.max_skew_ms = u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX);
    }

    pub fn node_keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// Check a node's results list before the dispatcher sees it; refusals counted.
    pub fn believe_results(
        &mut self,
        node: &NodeId,
        list: &mut fog_proto::TaskResults,
        now: Instant,
    ) -> bool {
        match self.keys.check(node, list, None, now) {
            Ok(()) => true,
            Err(d) => {
                self.count(d.counter());
                false
            }
        }
    }

    fn distrusted(&mut self, topic: &str, d: &Distrust) -> IngestError {
        self.count(d.counter());
        let (reason, why) = match d {
            Distrust::Unapproved => (
                "unapproved",
                "its key is not approved (see `fog-coordinator nodes list`)".to_owned(),
            ),
            Distrust::Impostor(e) => ("impostor", format!("not signed by its approved key: {e}")),
        };
        IngestError::Distrusted {
            topic: topic.to_owned(),
            why,
            reason,
        }
    }

    /// Changes whenever any node's state or birth record changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every known node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &NodeEntry)> {
        self.nodes.iter()
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn get(&self, node: &str) -> Option<&NodeEntry> {
        self.nodes.get(node)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_insert(0) += 1;
    }

    /// Take in one message from a node topic. Errors are already counted.
    pub fn ingest(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Instant,
        wall_ms: u64,
    ) -> Result<Ingested, IngestError> {
        let res = self.ingest_inner(topic, payload, now, wall_ms);
        match &res {
            Ok(Ingested::Status { .. }) => self.count("status_total"),
            Ok(Ingested::Heartbeat) => self.count("heartbeats_total"),
            Ok(Ingested::Reading) => self.count("readings_total"),
            Err(e) => {
                self.count("rejected_total");
                self.count(match e.reason() {
                    "wrong_topic" => "rejected_wrong_topic_total",
                    "bad_node_id" => "rejected_bad_node_id_total",
                    "oversized" => "rejected_oversized_total",
                    "unapproved" => "rejected_unapproved_total",
                    "impostor" => "rejected_impostor_total",
                    "replayed" => "rejected_replayed_total",
                    "forgotten" => "rejected_forgotten_total",
                    _ => "rejected_malformed_total",
                });
            }
        }
        res
    }

    fn ingest_inner(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Instant,
        wall_ms: u64,
    ) -> Result<Ingested, IngestError> {
        let (node, kind) = self.topics.parse_node(topic)?;
        let decode_err = |source| IngestError::Decode {
            topic: topic.to_owned(),
            source,
        };
        match kind {
            NodeTopic::Heartbeat => {
                let mut hb: Heartbeat = codec::decode(payload).map_err(decode_err)?;
                self.not_forgotten(topic, node, hb.at_ms)?;
                self.believe_heartbeat(topic, node, &mut hb, now)?;
                self.birth_after_approval(topic, node, now, wall_ms);
                self.heartbeat_age
                    .observe(Duration::from_millis(wall_ms.saturating_sub(hb.at_ms)));
                let e = self.touch(node, now, wall_ms);
                e.last_heartbeat_seq = Some(hb.seq);
                e.gaps.heartbeat(now);
                e.heartbeat = Some(hb);
                Ok(Ingested::Heartbeat)
            }
            NodeTopic::Metrics => {
                let r: Reading = codec::decode(payload).map_err(decode_err)?;
                self.not_forgotten(topic, node, r.at_ms)?;
                // Readings are not signed (they are history, replayed from a node's
                // backlog), so a coordinator that checks identities takes them only for
                // a node it already believes, and never as a sign of life: liveness
                // comes from signed heartbeats.
                if !self.keys.is_open() {
                    let Some(e) = self.nodes.get_mut(node) else {
                        return Err(IngestError::Distrusted {
                            topic: topic.to_owned(),
                            why: "a reading from a node not believed yet".into(),
                            reason: "unapproved",
                        });
                    };
                    e.take_reading(r);
                    return Ok(Ingested::Reading);
                }
                self.touch(node, now, wall_ms).take_reading(r);
                Ok(Ingested::Reading)
            }
            NodeTopic::Status => {
                let mut s: Status = codec::decode(payload).map_err(decode_err)?;
                self.not_forgotten(topic, node, s.at_ms)?;
                let id = NodeId::new(node)?;
                if let Err(e) = self.believe_status(topic, &id, &mut s, now) {
                    // A birth from a node not approved yet is kept (the newest per node,
                    // a bounded number of nodes): it is retained once per connection,
                    // so after the approval it would not come again.
                    let waits = matches!(
                        &e,
                        IngestError::Distrusted {
                            reason: "unapproved",
                            ..
                        }
                    );
                    if waits
                        && s.online
                        && s.birth.is_some()
                        && self.waiting_births.len() < MAX_WAITING_BIRTHS
                    {
                        self.waiting_births.insert(id, s);
                    }
                    return Err(e);
                }
                self.apply_status(topic, id, s, now, wall_ms)
            }
            NodeTopic::Alerts | NodeTopic::Tasks | NodeTopic::Results => {
                Err(IngestError::Unexpected(topic.to_owned()))
            }
        }
    }

    /// A believed status record: the node's birth (online) or its goodbye.
    fn apply_status(
        &mut self,
        topic: &str,
        id: NodeId,
        s: Status,
        now: Instant,
        wall_ms: u64,
    ) -> Result<Ingested, IngestError> {
        if let Some(b) = &s.birth {
            if b.node != id {
                return Err(IngestError::Unexpected(format!(
                    "{topic} carries the birth record of {}",
                    b.node
                )));
            }
        }
        let entry = self
            .nodes
            .entry(id.clone())
            .or_insert_with(|| NodeEntry::new(now, wall_ms));
        self.generation += 1;
        entry.last_status_ms = entry.last_status_ms.max(s.at_ms);
        entry.last_heartbeat_seq = None;
        if s.online {
            let interval = s
                .birth
                .as_ref()
                .map(|b| Duration::from_millis(u64::from(b.heartbeat_interval_ms)))
                .filter(|d| !d.is_zero())
                .unwrap_or(self.liveness.default_heartbeat_interval);
            entry.gaps = PhiDetector::new(interval);
            entry.birth = s.birth.map(Arc::new);
            entry.state = NodeState::Online;
            entry.offline_by_record = false;
            entry.offline_reason.clear();
            entry.last_seen = now;
            entry.last_seen_ms = wall_ms;
        } else {
            entry.state = NodeState::Offline;
            entry.offline_by_record = true;
            entry.offline_reason = s.reason;
            entry.heartbeat = None;
        }
        Ok(Ingested::Status {
            node: id,
            online: s.online,
        })
    }

    /// The first believed heartbeat of a node approved since its birth arrived: take
    /// the birth it announced then (checked again, now against the approved key).
    fn birth_after_approval(&mut self, topic: &str, node: &str, now: Instant, wall_ms: u64) {
        if self.nodes.get(node).is_some_and(|e| e.birth.is_some()) {
            return;
        }
        let Some(mut s) = self.waiting_births.remove(node) else {
            return;
        };
        let Ok(id) = NodeId::new(node) else { return };
        if self.believe_status(topic, &id, &mut s, now).is_ok() {
            tracing::info!(node.id = %id, "node approved: taking the birth record it announced");
            let _ = self.apply_status(topic, id, s, now, wall_ms);
        }
    }

    /// With identities checked: signed by the node's approved key, not a replay.
    fn believe_heartbeat(
        &mut self,
        topic: &str,
        node: &str,
        hb: &mut Heartbeat,
        now: Instant,
    ) -> Result<(), IngestError> {
        if self.keys.is_open() {
            return Ok(());
        }
        let id = NodeId::new(node)?;
        if let Err(d) = self.keys.check(&id, hb, None, now) {
            return Err(self.distrusted(topic, &d));
        }
        if let Some(e) = self.nodes.get(node) {
            let started = e.birth.as_ref().map_or(0, |b| b.started_at_ms);
            let old_session = hb.at_ms.saturating_add(self.max_skew_ms) < started;
            let seen = e.last_heartbeat_seq.is_some_and(|s| hb.seq <= s);
            if old_session || seen {
                return Err(IngestError::Distrusted {
                    topic: topic.to_owned(),
                    why: "a heartbeat already seen, or from an earlier run (replayed)".into(),
                    reason: "replayed",
                });
            }
        }
        Ok(())
    }

    /// With identities checked: signed by the node's approved key (the birth's own
    /// key is only a claim), and not older than the status already believed.
    fn believe_status(
        &mut self,
        topic: &str,
        id: &NodeId,
        s: &mut Status,
        now: Instant,
    ) -> Result<(), IngestError> {
        if self.keys.is_open() {
            return Ok(());
        }
        let announced = s.birth.as_ref().map(|b| b.node_key.clone());
        if let Err(d) = self.keys.check(id, s, announced.as_deref(), now) {
            return Err(self.distrusted(topic, &d));
        }
        let last = self.nodes.get(id.as_str()).map_or(0, |e| e.last_status_ms);
        if s.at_ms.saturating_add(self.max_skew_ms) < last {
            return Err(IngestError::Distrusted {
                topic: topic.to_owned(),
                why: "older than the status already believed (a replayed record)".into(),
                reason: "replayed",
            });
        }
        Ok(())
    }

    /// Record that `node` spoke. Looks up by `&str` so the hot path does not allocate.
    fn touch(&mut self, node: &str, now: Instant, wall_ms: u64) -> &mut NodeEntry {
        if !self.nodes.contains_key(node) {
            let id = NodeId::new(node).expect("parse_node validated the node id");
            let mut e = NodeEntry::new(now, wall_ms);
            e.gaps = PhiDetector::new(self.liveness.default_heartbeat_interval);
            self.nodes.insert(id, e);
            self.generation += 1;
        }
        let e = self.nodes.get_mut(node).expect("inserted above");
        e.last_seen = now;
        e.last_seen_ms = wall_ms;
        // A suspect or silence-offline node that speaks again is back; one that said
        // goodbye itself waits for its birth record.
        if e.state != NodeState::Online && !e.offline_by_record {
            e.state = NodeState::Online;
            e.offline_reason.clear();
            self.generation += 1;
        }
        e
    }

    /// Apply silence rules; returns the transitions made.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        let l = &self.liveness;
        for (id, e) in self.nodes.iter_mut() {
            if e.state == NodeState::Offline {
                continue;
            }
            let interval = e
                .birth
                .as_ref()
                .map(|b| Duration::from_millis(u64::from(b.heartbeat_interval_ms)))
                .filter(|d| !d.is_zero())
                .unwrap_or(l.default_heartbeat_interval);
            let silent = now.saturating_duration_since(e.last_seen);
            let mut offline_after = interval * l.offline_after_missed;
            if let (Some(ka), Some(factor)) = (
                e.birth
                    .as_ref()
                    .map(|b| Duration::from_secs(u64::from(b.keep_alive_secs)))
                    .filter(|d| !d.is_zero()),
                l.offline_after_keep_alives,
            ) {
                offline_after = offline_after.min(ka.mul_f32(factor));
            }
            // Suspect by phi once there are gaps to judge by, and after a fixed count of
            // missed intervals in any case; offline only by the hard silence limit.
            let phi_suspect = e.gaps.samples() >= 3 && e.gaps.phi(now) >= l.phi_threshold;
            let to = if silent >= offline_after {
                NodeState::Offline
            } else if phi_suspect || silent >= interval * l.suspect_after_missed {
                NodeState::Suspect
            } else {
                NodeState::Online
            };
            if to != e.state {
                let reason = format!("silent for {:.1}s", silent.as_secs_f32());
                if to == NodeState::Offline {
                    e.offline_reason = reason.clone();
                }
                out.push(Transition {
                    node: id.clone(),
                    from: e.state,
                    to,
                    reason,
                });
                e.state = to;
                self.generation += 1;
            }
        }
        out
    }

    /// Online nodes that announced `kind`, sorted by id (stable for round robin).
    pub fn candidates(&self, kind: &str) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, e)| {
                e.state == NodeState::Online
                    && e.birth
                        .as_ref()
                        .is_some_and(|b| b.task_kinds.iter().any(|k| k == kind))
            })
            .map(|(id, _)| id.clone())
            .collect();
        v.sort();
        v
    }

    /// One row per node, sorted by node id.
    pub fn summaries(&self) -> Vec<NodeSummary> {
        let mut v: Vec<NodeSummary> = self
            .nodes
            .iter()
            .map(|(id, e)| {
                let hb = e.heartbeat.as_ref();
                NodeSummary {
                    identity: self.keys.standing(id).to_owned(),
                    task_trust: e.birth.as_ref().map(|b| b.task_trust).unwrap_or_default(),
                    node: id.clone(),
                    arch: e.birth.as_ref().map(|b| b.arch.clone()).unwrap_or_default(),
                    state: e.state,
                    cores: e.birth.as_ref().map_or(0, |b| b.cores),
                    cpu_pct: hb.and_then(|h| h.cpu_pct).or(e.reading_cpu_pct),
                    mem_pct: hb.map(|h| h.mem_pct).or(e.reading_mem_pct),
                    load1: hb.map(|h| h.load1),
                    last_seen_ms: e.last_seen_ms,
                    version: e
                        .birth
                        .as_ref()
                        .map(|b| b.version.clone())
                        .unwrap_or_default(),
                    queued: hb.map_or(0, |h| h.queued),
                    running: hb.map_or(0, |h| h.running),
                    // Placement fills these in (see service::status).
                    health: match e.state {
                        NodeState::Online => NodeHealth::Healthy,
                        NodeState::Suspect => NodeHealth::Suspect,
                        NodeState::Offline => NodeHealth::Offline,
                    },
                    in_flight: 0,
                    breaker: String::new(),
                    latency_ms: 0.0,
                    degraded: match e.state {
                        NodeState::Offline => Vec::new(),
                        _ => hb.map(|h| h.degraded.clone()).unwrap_or_default(),
                    },
                    notices: match e.state {
                        NodeState::Offline => Vec::new(),
                        _ => e.reading_notices.clone(),
                    },
                    drained: false,
                }
            })
            .collect();
        // Nodes heard from but not believed, so an operator sees who waits.
        for (node, claim) in self.keys.claims() {
            if self.nodes.contains_key(node) && !claim.impostor {
                continue;
            }
            if let Some(n) = v.iter_mut().find(|n| &n.node == node) {
                n.identity = "impostor".into();
                continue;
            }
            v.push(NodeSummary {
                node: node.clone(),
                arch: String::new(),
                state: NodeState::Offline,
                cores: 0,
                cpu_pct: None,
                mem_pct: None,
                load1: None,
                last_seen_ms: 0,
                version: format!("key {}", claim.key_id),
                queued: 0,
                running: 0,
                health: NodeHealth::Offline,
                in_flight: 0,
                breaker: String::new(),
                latency_ms: 0.0,
                degraded: Vec::new(),
                identity: self.keys.standing(node).to_owned(),
                task_trust: Default::default(),
                notices: Vec::new(),
                drained: false,
            });
        }
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }
}

#[cfg(test)]
mod tests;
