//! Who may submit tasks, and what: the `[clients]` policies, the check of a signed
//! list of submissions against them ([`Gate::admit`]), and the replay cache.
//!
//! A list is believed only if it is sealed (`fog_rt::keys::seal`) with the key of the
//! client its seal's scope names, fresh (within `security.max_clock_skew_secs`) and
//! not seen before. Then each item must be of a kind the client may submit, ask for
//! its results on a topic under the client's own `clients/NAME/` namespace, and ask
//! for no node or label the client may not use; the client's `labels` and `nodes` are
//! added to the task's requirements, so placement keeps it on them.
//!
//! What is refused is answered only where that cannot be abused: a list that is not
//! provably from a configured client (unsigned, unknown client, wrong key, bad
//! signature) is not answered at all, or anyone could make the coordinator publish on
//! any topic; a replay is not answered either (its original was, and answering again
//! would contradict that answer); the rest is answered on the item's reply topic if
//! that topic is the client's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use fog_proto::{Seal, TaskSubmission, TaskSubmissions, Topics};
use fog_rt::config::ConfigError;
use fog_rt::keys::{Freshness, PublicKey, SealError};
use serde::Deserialize;
use tokio::time::Instant;

/// Longest client name (it is a topic segment and a broker user name).
pub const MAX_CLIENT_NAME_LEN: usize = 64;

/// Signed lists remembered at most (about 40 bytes each, so a few MiB at worst).
pub const REPLAY_CACHE_MAX: usize = 100_000;

/// One refusal reason is logged at most this often (a flood of forged lists must not
/// flood the journal); the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether `name` can be a client's name: 1 to 64 ASCII letters, digits, `-` or `_`
/// (it becomes an MQTT topic segment and a broker user name).
pub fn valid_client_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CLIENT_NAME_LEN {
        return Err(format!(
            "client name {name:?} must be 1 to {MAX_CLIENT_NAME_LEN} characters"
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(format!(
            "client name {name:?} has {c:?}; use only letters, digits, `-` and `_` (it becomes part of MQTT topics and a broker user name)"
        )),
        None => Ok(()),
    }
}

/// Which task kinds a client may submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kinds {
    /// `["*"]`.
    Any,
    Only(Vec<String>),
}

impl Kinds {
    fn allows(&self, kind: &str) -> bool {
        match self {
            Kinds::Any => true,
            Kinds::Only(k) => k.iter().any(|k| k == kind),
        }
    }
}

/// One `[clients.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPolicy {
    pub name: String,
    /// The key its lists must be signed with.
    pub key: PublicKey,
    pub kinds: Kinds,
    /// Node ids its tasks may run on; empty for any.
    pub nodes: Vec<String>,
    /// Labels (with these values) a node must carry to run its tasks.
    pub labels: BTreeMap<String, String>,
}

/// The configured clients by name.
pub type Clients = BTreeMap<String, ClientPolicy>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    key: String,
    kinds: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The `[clients]` table, typed; an error names the key (`clients.NAME.key`).
pub fn parse_clients(origin: &str, table: toml::Table) -> Result<Clients, ConfigError> {
    let bad = |key: String, why: String| ConfigError::Parse {
        origin: origin.to_owned(),
        message: format!("key `{key}`: {why}"),
    };
    let mut out = Clients::new();
    for (name, value) in table {
        valid_client_name(&name).map_err(|why| bad(format!("clients.{name}"), why))?;
        let raw: RawClient = value
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("clients.{name}"), e.message().to_owned()))?;
        let key = PublicKey::from_line(&raw.key)
            .map_err(|e| bad(format!("clients.{name}.key"), e.to_string()))?;
        let kinds = if raw.kinds.iter().any(|k| k == "*") {
            if raw.kinds.len() > 1 {
                return Err(bad(
                    format!("clients.{name}.kinds"),
                    "`*` (any kind) stands alone".into(),
                ));
            }
            Kinds::Any
        } else {
            if let Some(k) = raw.kinds.iter().find(|k| k.is_empty()) {
                return Err(bad(
                    format!("clients.{name}.kinds"),
                    format!("{k:?} is not a kind"),
                ));
            }
            Kinds::Only(raw.kinds)
        };
        for n in &raw.nodes {
            fog_proto::NodeId::new(n.clone())
                .map_err(|e| bad(format!("clients.{name}.nodes"), format!("{n:?}: {e}")))?;
        }
        out.insert(
            name.clone(),
            ClientPolicy {
                name,
                key,
                kinds,
                nodes: raw.nodes,
                labels: raw.labels,
            },
        );
    }
    Ok(out)
}

/// Why a list, or one of its items, was refused. The counter is
/// `submissions_refused_{label}_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("submission refused: it is not signed (sign with `--key`, see `fog-coordinator keys client`)")]
    Unsigned,
    #[error("submission refused: it is signed for client {0:?}, which is not configured here")]
    UnknownClient(String),
    /// The seal's key, signature or time (not `Unsigned`: that is [`Refusal::Unsigned`]).
    #[error("submission refused: {0}")]
    Seal(SealError),
    #[error("submission refused: this signed list was already received (a replay)")]
    Replayed,
    #[error("submission refused: the coordinator received {0} signed lists within the replay window and remembers no more; try again later")]
    Busy(usize),
    #[error("submission refused: client {client:?} may not submit tasks of kind {kind:?}")]
    Kind { client: String, kind: String },
    #[error("submission refused: {0}")]
    Target(String),
    #[error(
        "submission refused: reply topic {topic:?} is not under client {client:?}'s {namespace}"
    )]
    ReplyTopic {
        client: String,
        topic: String,
        namespace: String,
    },
}

impl Refusal {
    /// Short stable name, for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownClient(_) => "unknown_client",
            Refusal::Seal(SealError::UnknownKey(_)) => "unknown_key",
            Refusal::Seal(SealError::Stale { .. } | SealError::Future { .. }) => "stale",
            Refusal::Seal(_) => "bad_signature",
            Refusal::Replayed => "replayed",
            Refusal::Busy(_) => "busy",
            Refusal::Kind { .. } => "kind",
            Refusal::Target(_) => "target",
            Refusal::ReplyTopic { .. } => "reply_topic",
        }
    }

    /// Whether trying the same again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Refusal::Busy(_))
    }
}

/// Every label, in the order the counters are listed.
const LABELS: [&str; 10] = [
    "unsigned",
    "unknown_client",
    "unknown_key",
    "bad_signature",
    "stale",
    "replayed",
    "busy",
    "kind",
    "target",
    "reply_topic",
];

/// Signatures of recently accepted lists, so the same signed list is taken once.
///
/// Entries are forgotten `window` (twice the allowed skew) after they were received,
/// and that is enough: a list received at `r` was signed at `at >= r - skew`... and
/// at most `r + skew`, so from `r + 2 x skew` on, a copy of it is refused as stale
/// before the cache is asked. The cache holds at most `cap` entries; a full one
/// refuses new lists (retryable) rather than forget one that could still be replayed.
#[derive(Debug)]
pub struct ReplayCache {
    window_ms: u64,
    cap: usize,
    seen: HashMap<[u8; 16], u64>,
    /// (signature prefix, when received), oldest first.
    order: VecDeque<([u8; 16], u64)>,
}

impl ReplayCache {
    pub fn new(window: Duration, cap: usize) -> ReplayCache {
        ReplayCache {
            window_ms: window.as_millis() as u64,
            cap,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Take a seal's signature received at `now_ms`: `Replayed` if taken before and
    /// not yet forgotten, `Busy` if the cache is full.
    pub fn take(&mut self, sig: &[u8], now_ms: u64) -> Result<(), Refusal> {
        while let Some(&(k, at)) = self.order.front() {
            if at.saturating_add(self.window_ms) > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&k);
        }
        let mut k = [0u8; 16];
        let n = sig.len().min(16);
        k[..n].copy_from_slice(&sig[..n]);
        if self.seen.contains_key(&k) {
            return Err(Refusal::Replayed);
        }
        if self.order.len() >= self.cap {
            return Err(Refusal::Busy(self.order.len()));
        }
        // A wall clock that stepped back keeps the order: an entry is never stamped
        // before the one ahead of it.
        let at = self.order.back().map_or(now_ms, |&(_, b)| b.max(now_ms));
        self.seen.insert(k, at);
        self.order.push_back((k, at));
        Ok(())
    }
}

/// What [`Gate::admit`] decided for one list.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Items to take (their requirements narrowed to the client's nodes and labels).
    pub accepted: Vec<TaskSubmission>,
    /// Items refused that are answered (their reply topic is the client's).
    pub answered: Vec<(TaskSubmission, Refusal)>,
}

/// The check every list of submissions passes through.
#[derive(Debug)]
pub struct Gate {
    /// `allow_unsigned_submissions`: everything is taken, as before clients existed.
    open: bool,
    clients: Clients,
    max_skew_ms: u64,
    topics: Topics,
    seen: ReplayCache,
    refused: [u64; LABELS.len()],
    last_log: [Option<Instant>; LABELS.len()],
}

impl Default for Gate {
    /// Open: for tests and in-process fleets that are not about security.
    fn default() -> Gate {
        Gate::new(
            true,
            Clients::new(),
            Duration::from_secs(300),
            Topics::default(),
        )
    }
}

impl Gate {
    pub fn new(open: bool, clients: Clients, max_skew: Duration, topics: Topics) -> Gate {
        Gate {
            open,
            clients,
            max_skew_ms: max_skew.as_millis() as u64,
            topics,
            seen: ReplayCache::new(max_skew * 2, REPLAY_CACHE_MAX),
            refused: [0; LABELS.len()],
            last_log: [None; LABELS.len()],
        }
    }

    /// Say (at start) if submissions are open, or if nobody may submit.
    pub fn announce(&self) {
        if self.open {
            tracing::warn!(
                clients = self.clients.len(),
                "security.allow_unsigned_submissions = true: ANY client that can reach the broker may submit tasks (lab only)"
            );
        } else if self.clients.is_empty() {
            tracing::warn!("no [clients] configured: every submission will be refused (see `fog-coordinator keys client`)");
        } else {
            tracing::info!(
                clients = self.clients.len(),
                "submissions taken only from configured clients"
            );
        }
    }

    /// Check `list` (received at wall-clock `now_ms`, monotonic `now` for the log
    /// limit); what to take and what to answer. Every refusal is counted.
    pub fn admit(&mut self, mut list: TaskSubmissions, now_ms: u64, now: Instant) -> Admitted {
        if self.open {
            return Admitted {
                accepted: list.items,
                answered: Vec::new(),
            };
        }
        let policy = match self.check_seal(&mut list, now_ms) {
            Ok(p) => p,
            Err((refusal, answer_as)) => {
                self.count(&refusal, list.seal.as_ref(), now);
                let Some(name) = answer_as else {
                    return Admitted::default();
                };
                let ns = self.topics.client_namespace(&name);
                let answered = list
                    .items
                    .into_iter()
                    .filter(|s| under(&ns, &s.reply_to))
                    .map(|s| (s, refusal.clone()))
                    .collect();
                return Admitted {
                    accepted: Vec::new(),
                    answered,
                };
            }
        };
        let ns = self.topics.client_namespace(&policy.name);
        let mut out = Admitted::default();
        let mut refusals = Vec::new();
        for mut sub in list.items {
            match item(&policy, &ns, &mut sub) {
                Ok(()) => out.accepted.push(sub),
                Err(r @ Refusal::ReplyTopic { .. }) => refusals.push(r),
                Err(r) => {
                    refusals.push(r.clone());
                    out.answered.push((sub, r));
                }
            }
        }
        for r in &refusals {
            self.count(r, list.seal.as_ref(), now);
        }
        out
    }

    /// Items from `client`, whose request the HTTP API has already authenticated (its
    /// signed `Authorization`): the same per-item rules as a sealed list (kinds,
    /// targets, requirements narrowed to the client's nodes and labels), each refusal
    /// counted and answered. Their results go to the client's `http` reply topic
    /// (`<prefix>/clients/NAME/http`) as well as to the HTTP request.
    pub fn admit_client(
        &mut self,
        client: &str,
        items: Vec<TaskSubmission>,
        now: Instant,
    ) -> Admitted {
        let ns = self.topics.client_namespace(client);
        let reply_to = format!("{ns}http");
        let mut items = items;
        for sub in &mut items {
            sub.reply_to.clone_from(&reply_to);
        }
        let Some(policy) = self.clients.get(client).cloned() else {
            // The HTTP API and the gate read the same [clients]: not reached.
            let r = Refusal::UnknownClient(short(client));
            self.count(&r, None, now);
            return Admitted {
                accepted: Vec::new(),
                answered: items.into_iter().map(|s| (s, r.clone())).collect(),
            };
        };
        let mut out = Admitted::default();
        for mut sub in items {
            match item(&policy, &ns, &mut sub) {
                Ok(()) => out.accepted.push(sub),
                Err(r) => {
                    self.count(&r, None, now);
                    out.answered.push((sub, r));
                }
            }
        }
        out
    }

    /// The list's seal: the client it proves, or the refusal and the client to answer
    /// as (`None`: not provably from a client, so not answered).
    fn check_seal(
        &mut self,
        list: &mut TaskSubmissions,
        now_ms: u64,
    ) -> Result<ClientPolicy, (Refusal, Option<String>)> {
        let Some(scope) = list.seal.as_ref().map(|s| s.scope.clone()) else {
            return Err((Refusal::Unsigned, None));
        };
        let Some(policy) = self.clients.get(&scope) else {
            return Err((Refusal::UnknownClient(short(&scope)), None));
        };
        let fresh = Freshness {
            now_ms,
            max_skew_ms: self.max_skew_ms,
        };
        let keys = std::slice::from_ref(&policy.key);
        match fog_rt::keys::open(list, keys, &policy.name, Some(fresh)) {
            Ok(_) => {}
            Err(e @ (SealError::Stale { .. } | SealError::Future { .. })) => {
                return Err((Refusal::Seal(e), Some(policy.name.clone())))
            }
            Err(e) => return Err((Refusal::Seal(e), None)),
        }
        let sig = list
            .seal
            .as_ref()
            .map(|s| s.sig.0.as_slice())
            .unwrap_or(&[]);
        match self.seen.take(sig, now_ms) {
            Ok(()) => Ok(policy.clone()),
            Err(r @ Refusal::Busy(_)) => Err((r, Some(policy.name.clone()))),
            Err(r) => Err((r, None)),
        }
    }

    fn count(&mut self, r: &Refusal, seal: Option<&Seal>, now: Instant) {
        let i = LABELS
            .iter()
            .position(|l| *l == r.label())
            .expect("every label is listed");
        self.refused[i] += 1;
        if self.last_log[i].is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY) {
            return;
        }
        self.last_log[i] = Some(now);
        let client = seal.map(|s| short(&s.scope)).unwrap_or_default();
        tracing::warn!(
            reason = r.label(),
            client = %client,
            refused = self.refused[i],
            error = %r,
            "submission refused (logged once per {}s per reason)",
            LOG_EVERY.as_secs()
        );
    }

    /// Counters by their status names: refusals per reason, and whether submissions
    /// are open (1) or need a client's signature (0).
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        const NAMES: [&str; LABELS.len()] = [
            "submissions_refused_unsigned_total",
            "submissions_refused_unknown_client_total",
            "submissions_refused_unknown_key_total",
            "submissions_refused_bad_signature_total",
            "submissions_refused_stale_total",
            "submissions_refused_replayed_total",
            "submissions_refused_busy_total",
            "submissions_refused_kind_total",
            "submissions_refused_target_total",
            "submissions_refused_reply_topic_total",
        ];
        NAMES
            .into_iter()
            .zip(self.refused)
            .chain([("submissions_unsigned_allowed", u64::from(self.open))])
    }

    /// How many refusals had this label (see [`Refusal::label`]).
    pub fn refused(&self, label: &str) -> u64 {
        LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.refused[i])
    }
}

/// One item of a list from `policy`'s client: allowed, and narrowed to its targets.
fn item(policy: &ClientPolicy, ns: &str, sub: &mut TaskSubmission) -> Result<(), Refusal> {
    if !under(ns, &sub.reply_to) {
        return Err(Refusal::ReplyTopic {
            client: policy.name.clone(),
            topic: short(&sub.reply_to),
            namespace: format!("{ns}#"),
        });
    }
    if !policy.kinds.allows(&sub.kind) {
        return Err(Refusal::Kind {
            client: policy.name.clone(),
            kind: short(&sub.kind),
        });
    }
    let r = &mut sub.requires;
    for (k, v) in &policy.labels {
        match r.labels.get(k) {
            Some(asked) if asked != v => {
                return Err(Refusal::Target(format!(
                "it asks for label {k}={}, but client {:?}'s tasks run only on nodes with {k}={v}",
                short(asked),
                policy.name
            )))
            }
            Some(_) => {}
            None => {
                r.labels.insert(k.clone(), v.clone());
            }
        }
    }
    if !policy.nodes.is_empty() {
        if let Some(n) = r.nodes.iter().find(|n| !policy.nodes.contains(n)) {
            return Err(Refusal::Target(format!(
                "it asks for node {:?}, which client {:?} may not use (only {})",
                short(n),
                policy.name,
                policy.nodes.join(", ")
            )));
        }
        if r.nodes.is_empty() {
            r.nodes.clone_from(&policy.nodes);
        }
    }
    Ok(())
}

/// Whether `topic` is a topic (no wildcard, not too long) under namespace `ns`.
fn under(ns: &str, topic: &str) -> bool {
    topic.len() > ns.len()
        && topic.len() <= 256
        && topic.starts_with(ns)
        && !topic.contains(['+', '#', '\0'])
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests;
