//! One type per topic. Field names carry their units (`_bytes`, `_pct`, `_ms`).
//!
//! What may change in these types without a schema version bump, and how JSON and
//! postcard differ there, is written down (and tested) in [`crate::schema`]. In short:
//! no `skip_serializing_if` (postcard is positional), no internally tagged enums, no
//! maps keyed by anything but strings; a field appended last with `#[serde(default)]`
//! stays compatible in JSON only, so a node that must talk to older peers uses JSON
//! until every peer has the new build.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::Encoding;
use crate::payload::Payload;
// Re-exported: `fog_proto::message::Message` is where users have always found it.
pub use crate::schema::Message;
use crate::seal::{Seal, Sealed};
use crate::topic::NodeId;

macro_rules! message {
    ($ty:ty, $name:literal, $max:expr) => {
        impl Message for $ty {
            const NAME: &'static str = $name;
            const MAX_BYTES: usize = $max;
        }
    };
    // A type with float fields names them: `|m| first_non_finite! { "field": m.field }`.
    ($ty:ty, $name:literal, $max:expr, |$m:ident| $check:expr) => {
        impl Message for $ty {
            const NAME: &'static str = $name;
            const MAX_BYTES: usize = $max;
            fn non_finite(&self) -> Option<&'static str> {
                let $m = self;
                $check
            }
        }
    };
}

/// The name of the first value that is not finite (a NaN or an infinity, also inside
/// an `Option` or a `Vec`), or `None`.
macro_rules! first_non_finite {
    ($($name:literal: $v:expr),+ $(,)?) => {
        'check: {
            $(
                if !Finite::finite(&$v) {
                    break 'check Some($name);
                }
            )+
            None
        }
    };
}

/// Floats, and the containers of them the messages use.
trait Finite {
    fn finite(&self) -> bool;
}

impl Finite for f32 {
    #[inline]
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

impl Finite for f64 {
    #[inline]
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

impl<T: Finite> Finite for Option<T> {
    #[inline]
    fn finite(&self) -> bool {
        self.as_ref().is_none_or(T::finite)
    }
}

impl<T: Finite> Finite for Vec<T> {
    #[inline]
    fn finite(&self) -> bool {
        self.iter().all(T::finite)
    }
}

/// Largest task payload or output the protocol carries (agents configure lower limits).
pub const MAX_TASK_BYTES: usize = 4 * 1024 * 1024;

/// Retained on `nodes/{node}/status`: the birth record when online, and the offline
/// record (clean exit, or the Last Will the broker publishes for a lost connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub online: bool,
    /// Wall clock (ms since the Unix epoch) when the record was made. For a Last Will
    /// this is when the connection that registered it was opened.
    pub at_ms: u64,
    /// Why the node is offline (`shutdown`, `connection lost`); empty when online.
    pub reason: String,
    /// Present when online.
    pub birth: Option<Birth>,
    /// The node's signature (see [`crate::seal`]); `None` from an agent without a key.
    #[serde(default)]
    pub seal: Option<Seal>,
}

/// What a node is: sent once per connection, retained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    pub node: NodeId,
    /// fog-agent version.
    pub version: String,
    /// CPU architecture (`aarch64`, `arm`, `x86_64`).
    pub arch: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// Encoding the node publishes in.
    pub encoding: Encoding,
    /// Task kinds this node will run.
    pub task_kinds: Vec<String>,
    pub heartbeat_interval_ms: u32,
    pub metrics_interval_ms: u32,
    pub keep_alive_secs: u32,
    /// When this agent process started (ms since the epoch).
    pub started_at_ms: u64,
    /// The node's own public key (`fog-ed25519 <base64>`), which signs its status,
    /// heartbeats and results; empty from an agent without one.
    #[serde(default)]
    pub node_key: String,
    /// Whether, and on whose word, this node runs tasks.
    #[serde(default)]
    pub task_trust: TaskTrust,
}

/// Whether a node runs tasks, and on whose word (in its birth record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskTrust {
    /// From an agent too old to say.
    #[default]
    Unknown,
    /// Runs assignments signed by a coordinator key it trusts.
    Signed,
    /// Runs any assignment (`trust.allow_unsigned`, for a lab only).
    AllowUnsigned,
    /// Trusts no coordinator key, so runs no tasks (readings still flow).
    NoTrustedKey,
}

impl TaskTrust {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskTrust::Unknown => "unknown",
            TaskTrust::Signed => "signed",
            TaskTrust::AllowUnsigned => "allow_unsigned",
            TaskTrust::NoTrustedKey => "no_trusted_key",
        }
    }
}

/// Tiny load record on `nodes/{node}/heartbeat`, every few seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increments by one per heartbeat since the agent started.
    pub seq: u64,
    pub at_ms: u64,
    /// Total CPU use since the previous sample; `None` right after start.
    pub cpu_pct: Option<f32>,
    pub mem_pct: f32,
    pub load1: f32,
    pub queued: u32,
    pub running: u32,
    pub free_slots: u32,
    /// Store-and-forward backlog held now, and entries it had to drop since start.
    #[serde(default)]
    pub backlog_bytes: u64,
    #[serde(default)]
    pub backlog_dropped_total: u64,
    /// Subsystems that keep failing (e.g. `store`); empty when all is well.
    #[serde(default)]
    pub degraded: Vec<String>,
    #[serde(default)]
    pub seal: Option<Seal>,
}

// The reading and its parts live in `reading` (this file holds the other topics).
pub use crate::reading::*;

/// Threshold crossing on `nodes/{node}/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub at_ms: u64,
    /// `cpu`, `memory`, `disk:/`, `network:eth0`, `temperature:cpu-thermal`.
    pub resource: String,
    pub level: AlertLevel,
    pub value: f64,
    pub threshold: f64,
    pub trend: Trend,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    Warning,
    Critical,
    Cleared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Rising,
    Falling,
    Steady,
}

/// Coordinator to agent on `nodes/{node}/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub id: String,
    /// Starts at 1; raised on every re-placement so late results are fenced off.
    pub attempt: u32,
    pub kind: String,
    pub payload: Payload,
    pub timeout_ms: u32,
    /// Higher runs first.
    pub priority: u8,
    /// Wall-clock deadline (ms since the epoch); 0 for none.
    pub deadline_ms: u64,
    pub cacheable: bool,
}

/// Agent to coordinator on `nodes/{node}/results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub id: String,
    pub attempt: u32,
    pub node: NodeId,
    pub at_ms: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Rejected {
        reason: String,
        retryable: bool,
    },
    Completed {
        output: Payload,
        /// Output was cut at the task's cap.
        truncated: bool,
        exit_code: Option<i32>,
        duration_ms: u64,
        cpu_ms: u64,
        peak_rss_bytes: u64,
        from_cache: bool,
    },
    Failed {
        error: String,
        retryable: bool,
        exit_code: Option<i32>,
        duration_ms: u64,
    },
    TimedOut {
        after_ms: u64,
    },
}

/// What the task topics carry: a list, so one message can move many tasks (a single
/// task is a list of one). `nodes/{node}/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignments {
    pub items: Vec<TaskAssignment>,
    /// Who vouches for the whole list (see [`crate::seal`]).
    #[serde(default)]
    pub seal: Option<Seal>,
}

/// `nodes/{node}/results` and a client's reply topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResults {
    pub items: Vec<TaskResult>,
    /// Who vouches for the whole list (see [`crate::seal`]).
    #[serde(default)]
    pub seal: Option<Seal>,
}

/// `tasks/submit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSubmissions {
    pub items: Vec<TaskSubmission>,
    /// Who vouches for the whole list (see [`crate::seal`]).
    #[serde(default)]
    pub seal: Option<Seal>,
}

/// Most bytes a sender puts in one list message (a single larger task goes alone).
pub const BATCH_TARGET_BYTES: usize = 256 * 1024;
/// Most items a sender puts in one list message.
pub const BATCH_MAX_ITEMS: usize = 256;

/// Client to coordinator on `tasks/submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSubmission {
    /// Client-chosen id; the coordinator answers each id once.
    pub id: String,
    pub kind: String,
    pub payload: Payload,
    /// Topic the coordinator publishes this task's results to.
    pub reply_to: String,
    pub priority: u8,
    pub timeout_ms: u32,
    pub cacheable: bool,
    /// Placement key for consistent hashing; empty means the task id.
    pub key: String,
    /// Strategy override; empty means the coordinator's default.
    pub strategy: String,
    /// What a node must offer to get this task; empty means any node that runs the kind.
    #[serde(default)]
    pub requires: Requirements,
}

/// Placement constraints of one task (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// The node's architecture (`std::env::consts::ARCH` of its agent), if not empty.
    #[serde(default)]
    pub arch: String,
    /// Labels the node must carry with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free memory the node last reported, at least (bytes; 0 = no constraint).
    #[serde(default)]
    pub min_free_memory_bytes: u64,
    /// The node must be one of these (node ids); empty means any. The coordinator sets
    /// it from the submitting client's `nodes` (see `[clients]`).
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.arch.is_empty()
            && self.labels.is_empty()
            && self.min_free_memory_bytes == 0
            && self.nodes.is_empty()
    }
}

impl std::fmt::Display for Requirements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.arch.is_empty() {
            parts.push(format!("arch {}", self.arch));
        }
        for (k, v) in &self.labels {
            parts.push(format!("label {k}={v}"));
        }
        if self.min_free_memory_bytes > 0 {
            parts.push(format!(
                "{} MiB free",
                self.min_free_memory_bytes / (1024 * 1024)
            ));
        }
        if !self.nodes.is_empty() {
            parts.push(format!("node {}", self.nodes.join("|")));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Retained on `coordinator/status`: liveness plus a snapshot of the registry, which is
/// what `fog-coordinator status` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    pub online: bool,
    pub at_ms: u64,
    pub version: String,
    pub reason: String,
    pub nodes: Vec<NodeSummary>,
    pub counters: BTreeMap<String, u64>,
    /// Tasks in flight (oldest first, at most [`STATUS_TASKS_MAX`]).
    #[serde(default)]
    pub running: Vec<TaskSummary>,
    /// Tasks that ended most recently (newest first, at most [`STATUS_TASKS_MAX`]).
    #[serde(default)]
    pub recent: Vec<TaskSummary>,
    /// Dead-lettered tasks (newest first, at most [`STATUS_TASKS_MAX`]).
    #[serde(default)]
    pub dead: Vec<TaskSummary>,
    /// The current scaling recommendation, once there is one.
    #[serde(default)]
    pub scaling: Option<ScalingAdvice>,
    /// Id of the key that signs this coordinator's assignments (what agents trust).
    #[serde(default)]
    pub signing_key: String,
    /// Settings in effect that weaken security (lab-only switches), said on `status`.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Nodes left out of `nodes`, by state, when there were more than
    /// [`STATUS_NODES_MAX`] (the healthy online ones go first); all zero otherwise.
    #[serde(default)]
    pub omitted: OmittedNodes,
}

/// Most tasks per list in a coordinator status.
pub const STATUS_TASKS_MAX: usize = 50;

/// Most nodes listed in the retained coordinator status: at about 340 bytes a node
/// (JSON), 2,000 are 0.7 MB, published every `status_interval_secs` to every
/// subscriber; a 25,000-node fleet would pass the 8 MiB packet limit. The HTTP API
/// (`GET /api/v1/nodes`) lists every node.
pub const STATUS_NODES_MAX: usize = 2_000;

/// How many nodes a coordinator status leaves out, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmittedNodes {
    pub online: u32,
    pub suspect: u32,
    pub offline: u32,
}

impl OmittedNodes {
    pub fn total(&self) -> u32 {
        self.online + self.suspect + self.offline
    }

    fn add(&mut self, o: OmittedNodes) {
        self.online += o.online;
        self.suspect += o.suspect;
        self.offline += o.offline;
    }
}

impl CoordinatorStatus {
    /// Keep at most `max` nodes, those that need a look first (not online, not
    /// healthy, with notices, drained, or not approved), then by id; the rest are
    /// counted in `omitted`.
    pub fn trim_nodes(&mut self, max: usize) {
        if self.nodes.len() <= max {
            return;
        }
        self.nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let (kept, omitted) = select_nodes(&self.nodes, max);
        let mut keep = vec![false; self.nodes.len()];
        for i in kept {
            keep[i] = true;
        }
        let mut i = 0;
        self.nodes.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.omitted.add(omitted);
    }

    /// A copy for the broker: at most `tasks_max` tasks per list and the nodes
    /// [`trim_nodes`](Self::trim_nodes) would keep, without copying the others (at
    /// 10,000 nodes the status is built once for the in-process view and this is
    /// cut from it).
    pub fn cut(&self, tasks_max: usize, nodes_max: usize) -> CoordinatorStatus {
        let tasks = |v: &[TaskSummary]| v.iter().take(tasks_max).cloned().collect();
        let (nodes, omitted) = if self.nodes.len() <= nodes_max {
            (self.nodes.clone(), self.omitted)
        } else {
            let (kept, more) = select_nodes(&self.nodes, nodes_max);
            let mut nodes: Vec<NodeSummary> =
                kept.into_iter().map(|i| self.nodes[i].clone()).collect();
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            let mut omitted = self.omitted;
            omitted.add(more);
            (nodes, omitted)
        };
        CoordinatorStatus {
            online: self.online,
            at_ms: self.at_ms,
            version: self.version.clone(),
            reason: self.reason.clone(),
            nodes,
            counters: self.counters.clone(),
            running: tasks(&self.running),
            recent: tasks(&self.recent),
            dead: tasks(&self.dead),
            scaling: self.scaling.clone(),
            signing_key: self.signing_key.clone(),
            warnings: self.warnings.clone(),
            omitted,
        }
    }
}

/// Which of `nodes` (sorted by id) a status of at most `max` keeps, by index in
/// ascending order: those that need a look first, then the calm ones, each group by
/// id; and what it leaves out, by state.
fn select_nodes(nodes: &[NodeSummary], max: usize) -> (Vec<usize>, OmittedNodes) {
    let calm = |n: &NodeSummary| {
        n.state == NodeState::Online
            && n.health == NodeHealth::Healthy
            && n.notices.is_empty()
            && n.degraded.is_empty()
            && !n.drained
            && (n.identity.is_empty() || n.identity == "approved" || n.identity == "unchecked")
    };
    let (mut kept, calm_ones): (Vec<usize>, Vec<usize>) =
        (0..nodes.len()).partition(|&i| !calm(&nodes[i]));
    kept.extend(calm_ones);
    let mut omitted = OmittedNodes::default();
    for &i in kept.get(max..).unwrap_or_default() {
        match nodes[i].state {
            NodeState::Online => omitted.online += 1,
            NodeState::Suspect => omitted.suspect += 1,
            NodeState::Offline => omitted.offline += 1,
        }
    }
    kept.truncate(max);
    kept.sort_unstable();
    (kept, omitted)
}

/// One task in the coordinator status (for `fog-coordinator tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub id: String,
    pub kind: String,
    /// Where it runs or ran last; empty while waiting for a node.
    pub node: String,
    pub attempt: u32,
    /// running, waiting, completed, failed, rejected or dead.
    pub state: String,
    /// The error, or the reason, for a task that did not complete.
    pub detail: String,
    /// When it was submitted (running, waiting) or ended.
    pub at_ms: u64,
}

/// Health as placement judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    #[default]
    Healthy,
    /// CPU or memory above its threshold: used at half weight.
    Degraded,
    /// Its circuit breaker is open or half-open.
    Unhealthy,
    Suspect,
    Offline,
}

impl NodeHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeHealth::Healthy => "healthy",
            NodeHealth::Degraded => "degraded",
            NodeHealth::Unhealthy => "unhealthy",
            NodeHealth::Suspect => "suspect",
            NodeHealth::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Online,
    Suspect,
    Offline,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Suspect => "suspect",
            NodeState::Offline => "offline",
        }
    }
}

/// One node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node: NodeId,
    pub arch: String,
    pub state: NodeState,
    pub cores: u32,
    pub cpu_pct: Option<f32>,
    pub mem_pct: Option<f32>,
    pub load1: Option<f32>,
    /// Wall clock of the last message from the node (ms since the epoch).
    pub last_seen_ms: u64,
    pub version: String,
    pub queued: u32,
    pub running: u32,
    #[serde(default)]
    pub health: NodeHealth,
    /// Tasks the coordinator has placed there and not seen finish.
    #[serde(default)]
    pub in_flight: u32,
    /// closed, open or half_open.
    #[serde(default)]
    pub breaker: String,
    /// Peak EWMA of task latency seen by the coordinator, ms.
    #[serde(default)]
    pub latency_ms: f32,
    /// The agent's subsystems that keep failing, from its last heartbeat (`store`,
    /// `transport`, `collector`, `pool`, `alerts`); empty when all is well.
    #[serde(default)]
    pub degraded: Vec<String>,
    /// `approved`, `unapproved` (its key waits for `fog-coordinator nodes approve`) or
    /// `impostor` (messages signed by another key than the approved one were dropped).
    #[serde(default)]
    pub identity: String,
    /// What the node said about running tasks in its birth record.
    #[serde(default)]
    pub task_trust: TaskTrust,
    /// What its last reading says needs a look ([`Reading::notices`]): under-voltage,
    /// throttling, an unsynchronised clock, a worn eMMC. Empty when all is well.
    #[serde(default)]
    pub notices: Vec<String>,
    /// An operator drained it (`fog-coordinator drain`): nothing new is placed there.
    #[serde(default)]
    pub drained: bool,
}

/// On `cluster/scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingAdvice {
    pub at_ms: u64,
    pub direction: ScaleDirection,
    pub current_nodes: u32,
    pub desired_nodes: u32,
    pub cpu_pct: f32,
    pub mem_pct: f32,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleDirection {
    Up,
    Down,
    Hold,
}

impl ScaleDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleDirection::Up => "scale up",
            ScaleDirection::Down => "scale down",
            ScaleDirection::Hold => "hold",
        }
    }
}

message!(Status, "status", 16 * 1024);
message!(Heartbeat, "heartbeat", 2048, |m| first_non_finite! {
    "cpu_pct": m.cpu_pct,
    "mem_pct": m.mem_pct,
    "load1": m.load1,
});
message!(Reading, "reading", 256 * 1024, |m| reading_non_finite(m));
message!(Alert, "alert", 8 * 1024, |m| first_non_finite! {
    "value": m.value,
    "threshold": m.threshold,
});
// Task messages: payload plus headroom; base64 in JSON costs 4/3.
message!(
    TaskAssignment,
    "task assignment",
    MAX_TASK_BYTES * 4 / 3 + 4096
);
message!(TaskResult, "task result", MAX_TASK_BYTES * 4 / 3 + 8192);
message!(
    TaskSubmission,
    "task submission",
    MAX_TASK_BYTES * 4 / 3 + 4096
);
message!(
    TaskAssignments,
    "task assignments",
    MAX_TASK_BYTES * 4 / 3 + BATCH_TARGET_BYTES * 2
);
message!(
    TaskResults,
    "task results",
    MAX_TASK_BYTES * 4 / 3 + BATCH_TARGET_BYTES * 2
);
message!(
    TaskSubmissions,
    "task submissions",
    MAX_TASK_BYTES * 4 / 3 + BATCH_TARGET_BYTES * 2
);
macro_rules! sealed {
    ($($ty:ty),*) => {$(
        impl Sealed for $ty {
            fn seal(&self) -> Option<&Seal> {
                self.seal.as_ref()
            }
            fn take_seal(&mut self) -> Option<Seal> {
                self.seal.take()
            }
            fn put_seal(&mut self, seal: Option<Seal>) {
                self.seal = seal;
            }
        }
    )*};
}

sealed!(
    Status,
    Heartbeat,
    TaskAssignments,
    TaskResults,
    TaskSubmissions
);

message!(
    CoordinatorStatus,
    "coordinator status",
    8 * 1024 * 1024,
    |m| coordinator_status_non_finite(m)
);
message!(
    ScalingAdvice,
    "scaling advice",
    8 * 1024,
    |m| first_non_finite! {
        "cpu_pct": m.cpu_pct,
        "mem_pct": m.mem_pct,
    }
);

fn reading_non_finite(m: &Reading) -> Option<&'static str> {
    first_non_finite! {
        "cpu.total_pct": m.cpu.total_pct,
        "cpu.per_core_pct": m.cpu.per_core_pct,
        "load.one": m.load.one,
        "load.five": m.load.five,
        "load.fifteen": m.load.fifteen,
        "memory.used_pct": m.memory.used_pct,
        "agent.cpu_secs": m.agent.cpu_secs,
    }
    .or_else(|| {
        m.disks.iter().find_map(|d| {
            first_non_finite! {
                "disks[].used_pct": d.used_pct,
                "disks[].read_bytes_per_sec": d.read_bytes_per_sec,
                "disks[].write_bytes_per_sec": d.write_bytes_per_sec,
            }
        })
    })
    .or_else(|| {
        m.networks.iter().find_map(|n| {
            first_non_finite! {
                "networks[].rx_bytes_per_sec": n.rx_bytes_per_sec,
                "networks[].tx_bytes_per_sec": n.tx_bytes_per_sec,
                "networks[].rx_packets_per_sec": n.rx_packets_per_sec,
                "networks[].tx_packets_per_sec": n.tx_packets_per_sec,
            }
        })
    })
    .or_else(|| {
        m.temperatures
            .iter()
            .find_map(|t| first_non_finite! { "temperatures[].celsius": t.celsius })
    })
}

fn coordinator_status_non_finite(m: &CoordinatorStatus) -> Option<&'static str> {
    m.nodes
        .iter()
        .find_map(|n| {
            first_non_finite! {
                "nodes[].cpu_pct": n.cpu_pct,
                "nodes[].mem_pct": n.mem_pct,
                "nodes[].load1": n.load1,
                "nodes[].latency_ms": n.latency_ms,
            }
        })
        .or_else(|| {
            m.scaling.as_ref().and_then(|s| {
                first_non_finite! {
                    "scaling.cpu_pct": s.cpu_pct,
                    "scaling.mem_pct": s.mem_pct,
                }
            })
        })
}
