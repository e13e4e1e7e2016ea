//! Start-up, in dependency order: the data directory, the task host and its store,
//! the backlog, the collector and alert engine, then the link (whose birth record
//! needs the collector's memory figure and whose backlog needs the store).

use std::sync::Arc;
use std::time::Duration;

use fog_proto::{Encoding, NodeId, NodeTopic, Status, TaskTrust, Topics};
use fog_rt::clock::now_ms;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver};
use tokio::time::{Interval, MissedTickBehavior};

use super::report::Supervision;
use super::{birth, encode, AgentError};
use crate::config::Config;
use crate::forward::{ClassTopics, Forwarder, ReplayLimits};
use crate::metrics::Collector;
use crate::store::backlog::Removed;
use crate::store::Committed;
use crate::supervise::{Restarts, Supervised};
use crate::systemd::SystemdReport;
use crate::tasks::host::{TaskHost, Token};
use crate::tasks::job::JobResult;
use crate::transport::{Announce, Link, LinkOptions, Qos};
use crate::trust::{trusted_keys, Gate, Identity};
use fog_rt::keys::PublicKey;

/// The running agent: everything the loops' handlers work on.
pub(super) struct Agent {
    pub(super) config: Config,
    pub(super) enc: Encoding,
    pub(super) node: NodeId,
    pub(super) heartbeat_topic: String,
    pub(super) tasks_topic: String,
    /// How to start a link (again).
    pub(super) link: LinkPlan,
    pub(super) host: TaskHost,
    pub(super) fwd: Forwarder,
    pub(super) sup: Supervision,
    pub(super) systemd: SystemdReport,
    /// When an unpublishable message was last logged.
    pub(super) last_drop_log: Option<tokio::time::Instant>,
    /// This node's key: signs its status, heartbeats and results.
    pub(super) identity: Arc<Identity>,
    /// The coordinator keys its gate trusts (config and keys folder), for a reload to
    /// compare.
    pub(super) trusted: Vec<PublicKey>,
}

/// What the store, the pool and the backlog report back.
pub(super) struct Inbox {
    pub(super) commits: UnboundedReceiver<Committed<Token>>,
    pub(super) results: Receiver<JobResult>,
    pub(super) removed: UnboundedReceiver<Removed>,
    /// `systemctl reload` (SIGHUP), in the binary.
    pub(super) reloads: Option<super::Reloads>,
}

pub(super) struct Timers {
    pub(super) heartbeat: Interval,
    pub(super) readings: Interval,
    /// Result flushes the idle flush could not do (a full request queue, no link): retried
    /// this often. Results otherwise leave as soon as the loop is idle.
    pub(super) flush: Interval,
    pub(super) replay: Interval,
    /// Turns the loop at the watchdog's ping interval, so an idle agent whose heartbeat
    /// is slower than `WatchdogSec=` still pings (from the loop: a hung loop does not).
    pub(super) watchdog: Option<Interval>,
}

pub(super) fn skipping(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

/// What every link of this agent is started with: the first and each restart.
pub(super) struct LinkPlan {
    broker: crate::config::BrokerConfig,
    client_id: String,
    pub(super) status_topic: String,
    tasks_topic: String,
    /// The encoded Last Will and birth record (a reload may replace the latter).
    will: Vec<u8>,
    pub(super) online: Vec<u8>,
    /// When this run started, as its birth records say.
    pub(super) started_at_ms: u64,
    max_packet_bytes: usize,
}

impl LinkPlan {
    /// A retained message on this node's status topic.
    pub(super) fn retained(&self, payload: Vec<u8>) -> Announce {
        Announce {
            topic: self.status_topic.clone(),
            payload,
            qos: Qos::AtLeastOnce,
            retain: true,
        }
    }

    pub(super) fn options(&self) -> LinkOptions {
        LinkOptions {
            broker: self.broker.clone(),
            client_id: self.client_id.clone(),
            will: Some(self.retained(self.will.clone())),
            on_connect: vec![
                // Nothing retained on our tasks topic is an assignment (the coordinator
                // never retains them), but a retained poison there (an oversized
                // message, on a broker without fog's config) would come back on every
                // subscribe and cut every connection: clear it before subscribing.
                // Under the generated ACL the broker drops this publish, harmlessly.
                Announce {
                    topic: self.tasks_topic.clone(),
                    payload: Vec::new(),
                    qos: Qos::AtMostOnce,
                    retain: true,
                },
                self.retained(self.online.clone()),
            ],
            subscriptions: vec![(self.tasks_topic.clone(), Qos::AtLeastOnce)],
            max_packet_bytes: self.max_packet_bytes,
            queue: 1024,
        }
    }
}

/// The birth record and the Last Will, encoded.
fn announcements(
    config: &Config,
    sup: &mut Supervision,
    enc: Encoding,
    identity: &Identity,
    task_trust: TaskTrust,
    started_at_ms: u64,
) -> Result<(Vec<u8>, Vec<u8>), AgentError> {
    let memory_bytes = sup
        .collector
        .with(tokio::time::Instant::now(), |c| c.memory_total_bytes())
        .unwrap_or(0);
    let mut b = birth(config, memory_bytes, started_at_ms);
    b.node_key = identity.line();
    b.task_trust = task_trust;
    let mut online = Status {
        seal: None,
        online: true,
        at_ms: started_at_ms,
        reason: String::new(),
        birth: Some(b),
    };
    // The will is signed now, when it is registered; the coordinator takes a status
    // only if it is not older than the last one it believed, so a copy of this will
    // replayed after the next birth is refused.
    let mut will = Status {
        seal: None,
        online: false,
        at_ms: started_at_ms,
        reason: "connection lost".to_owned(),
        birth: None,
    };
    identity.seal(&mut online, started_at_ms);
    identity.seal(&mut will, started_at_ms);
    Ok((encode(&will, enc)?, encode(&online, enc)?))
}

/// This node's key (made on first start) and the gate its assignments pass, with a
/// word at start on whose tasks run here.
fn trust(
    config: &Config,
    node: &NodeId,
) -> Result<(Arc<Identity>, Gate, Vec<PublicKey>), AgentError> {
    let (identity, made) = Identity::load_or_create(&config.data_dir, node.as_str())?;
    if made {
        tracing::info!(node.key = %identity.line(), key.id = identity.key_id(), "made this node's key; approve it on the coordinator with `fog-coordinator nodes approve {node}`");
    }
    let identity = Arc::new(identity);
    let trusted = trusted_keys(config)?;
    let gate = Gate::new(
        trusted.clone(),
        node.as_str(),
        config.trust.max_clock_skew,
        config.trust.allow_unsigned,
    );
    say_trust(&gate, &trusted);
    Ok((identity, gate, trusted))
}

/// Whose tasks run here, in the log: at start and after a reload.
pub(super) fn say_trust(gate: &Gate, trusted: &[PublicKey]) {
    match gate.trust() {
        TaskTrust::AllowUnsigned => tracing::warn!(
            "trust.allow_unsigned = true: this node runs ANY task assignment, signed or not; anyone who can publish to the broker can run its tasks (lab only)"
        ),
        TaskTrust::NoTrustedKey => tracing::warn!(
            "this node trusts no coordinator key, so it will run no tasks (readings still flow); add one with `fog-agent trust add LINE`"
        ),
        _ => tracing::info!(keys = ?trusted.iter().map(|k| k.id().to_owned()).collect::<Vec<_>>(), "running tasks signed by these coordinator keys"),
    }
}

/// The collector, the alert engine and the health of the store and the link.
fn supervision(config: &Config, host: &TaskHost) -> Supervision {
    let metrics_cfg = config.metrics.clone();
    let alerts_cfg = config.alerts.clone();
    Supervision {
        store: host.store_health(),
        transport: Restarts::new("transport"),
        collector: Supervised::new("collector", move || Collector::new(metrics_cfg.clone())),
        alerts: Supervised::new("alerts", move || {
            crate::alerts::AlertEngine::new(alerts_cfg.clone())
        }),
        config_note: None,
    }
}

pub(super) fn start(
    config: Config,
    notifier: crate::sdnotify::Notifier,
    reloads: Option<super::Reloads>,
) -> Result<(Agent, Inbox, Timers), AgentError> {
    let systemd = SystemdReport::new(notifier);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let topics = Topics::new(config.prefix.clone());
    let enc = config.encoding;
    let node = config.node_id.clone();

    let (pool_tx, results) =
        tokio::sync::mpsc::channel(config.pool.queue_capacity + config.pool.workers + 16);
    let (commit_tx, commits) = tokio::sync::mpsc::unbounded_channel();
    let (identity, gate, trusted) = trust(&config, &node)?;
    let host = TaskHost::start(&config, identity.clone(), gate, pool_tx, commit_tx)?;
    let (removed_tx, removed) = tokio::sync::mpsc::unbounded_channel();
    let backlog = host.open_backlog(&config, removed_tx)?;
    if !backlog.stats().is_empty() {
        tracing::info!(
            backlog.entries = backlog.stats().len(),
            backlog.bytes = backlog.stats().bytes(),
            "found a backlog from an earlier run; it is replayed once the broker is reachable"
        );
    }

    // Started after the store and before the link, as they depend on each other.
    let mut sup = supervision(&config, &host);
    let started_at_ms = now_ms();
    let (will, online) = announcements(
        &config,
        &mut sup,
        enc,
        &identity,
        host.task_trust(),
        started_at_ms,
    )?;
    let client_id = if config.broker.client_id.is_empty() {
        format!("fog-agent-{node}")
    } else {
        config.broker.client_id.clone()
    };
    let class_topics = ClassTopics {
        readings: topics.node(&node, NodeTopic::Metrics),
        alerts: topics.node(&node, NodeTopic::Alerts),
        results: topics.node(&node, NodeTopic::Results),
    };
    let replay_limits = ReplayLimits {
        per_sec: config.store.replay_per_sec,
        in_flight: config.store.replay_in_flight,
    };
    let tasks_topic = topics.node(&node, NodeTopic::Tasks);
    let link = LinkPlan {
        broker: config.broker.clone(),
        client_id,
        status_topic: topics.node(&node, NodeTopic::Status),
        tasks_topic: tasks_topic.clone(),
        will,
        online,
        started_at_ms,
        max_packet_bytes: crate::tasks::host::packet_limit(config.pool.max_task_bytes),
    };
    let fwd = Forwarder::new(
        Link::start(link.options())?,
        backlog,
        class_topics,
        replay_limits,
    );
    let agent = Agent {
        enc,
        heartbeat_topic: topics.node(&node, NodeTopic::Heartbeat),
        tasks_topic,
        node,
        link,
        host,
        fwd,
        sup,
        systemd,
        last_drop_log: None,
        identity,
        trusted,
        config,
    };
    tracing::info!(
        node.id = %agent.node,
        broker = %agent.config.broker.url(),
        encoding = enc.as_str(),
        heartbeat_secs = agent.config.heartbeat_interval.as_secs_f32(),
        metrics_secs = agent.config.metrics_interval.as_secs_f32(),
        "fog-agent started"
    );
    let timers = Timers {
        heartbeat: skipping(agent.config.heartbeat_interval),
        readings: skipping(agent.config.metrics_interval),
        flush: skipping(Duration::from_millis(2)),
        replay: skipping(Duration::from_millis(10)),
        watchdog: agent.systemd.ping_every().map(skipping),
    };
    let inbox = Inbox {
        commits,
        results,
        removed,
        reloads,
    };
    Ok((agent, inbox, timers))
}
