//! `fog-coordinator serve`: subscribe to every node, keep the registry, publish the
//! coordinator's retained status (with the registry snapshot) under a Last Will.

use std::sync::Arc;
use std::time::Duration;

use fog_rt::clock::now_ms;
use fog_rt::sdnotify::Notifier;
use fog_rt::systemd::SystemdReport;

use fog_proto::{codec, CoordinatorStatus, NodeHealth, NodeTopic, ParsedTopic, Topics};
use fog_rt::transport::{Announce, Link, LinkEvent, LinkOptions, Qos};

use crate::breaker::BreakerState;

use crate::batcher::Batcher;
use crate::dispatch::Dispatcher;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::CoordinatorConfig;
use crate::journal::{Durable, Journal, JournalConfig};
use crate::registry::Registry;
use crate::scaling::Scaler;

/// How often silence rules are applied.
const LIVENESS_TICK: Duration = Duration::from_millis(100);
/// Largest MQTT packet the coordinator handles.
pub const MAX_PACKET_BYTES: usize = crate::broker::MAX_PAYLOAD_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Link(#[from] fog_rt::transport::LinkError),
    #[error("encoding coordinator status: {0}")]
    Encode(#[from] fog_proto::EncodeError),
    #[error("the mqtt link task ended unexpectedly")]
    LinkEnded,
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// Latest registry snapshot, for in-process viewers (the demo).
pub type Snapshot = Arc<CoordinatorStatus>;

/// The snapshot before the first one is published.
pub fn empty_snapshot() -> Snapshot {
    Arc::new(CoordinatorStatus {
        online: false,
        at_ms: 0,
        version: String::new(),
        reason: String::new(),
        nodes: Vec::new(),
        counters: Default::default(),
        running: Vec::new(),
        recent: Vec::new(),
        dead: Vec::new(),
        scaling: None,
    })
}

fn status(
    registry: &Registry,
    dispatch: &Dispatcher,
    online: bool,
    reason: &str,
) -> CoordinatorStatus {
    let mut counters = registry.counters();
    counters.extend(
        dispatch
            .counters_map()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut nodes = if online {
        registry.summaries()
    } else {
        Vec::new()
    };
    // Both lists are sorted by node id; walk them together.
    let placements = dispatch.node_placements(Instant::now());
    let mut p = placements.iter().peekable();
    for n in &mut nodes {
        while p.peek().is_some_and(|x| x.node < n.node) {
            p.next();
        }
        if let Some(x) = p.peek().filter(|x| x.node == n.node) {
            n.in_flight = x.in_flight;
            n.breaker = x.breaker.as_str().to_owned();
            n.latency_ms = x.latency_ms as f32;
            if n.health == NodeHealth::Healthy {
                if x.breaker != BreakerState::Closed {
                    n.health = NodeHealth::Unhealthy;
                } else if x.degraded {
                    n.health = NodeHealth::Degraded;
                }
            }
        }
    }
    let (running, recent, dead) = if online {
        dispatch.task_lists()
    } else {
        Default::default()
    };
    CoordinatorStatus {
        online,
        at_ms: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        reason: reason.to_owned(),
        nodes,
        counters,
        running,
        recent,
        dead,
        scaling: None,
    }
}

/// After start and after every (re)subscription, how long a task whose kind no known
/// node runs waits for the retained birth records instead of being refused.
const WARM_UP: Duration = Duration::from_secs(5);

/// After a restart, final results stored this recently are sent again: the crash may
/// have come between storing one and publishing it.
const RESEND_AFTER_RESTART: Duration = Duration::from_secs(60);

/// Rate limit for "rejected message" warnings: one per reason per this period.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Run until `shutdown`; snapshots go to `view` after every status interval.
///
/// Says nothing to systemd: in-process coordinators (the demo, `bench --fleet`, tests)
/// must not speak for the process they run in. `fog-coordinator serve` uses
/// [`serve_with`].
pub async fn serve(
    config: CoordinatorConfig,
    shutdown: CancellationToken,
    view: watch::Sender<Snapshot>,
) -> Result<(), ServeError> {
    serve_with(config, shutdown, view, Notifier::default()).await
}

/// [`serve`], reporting to systemd through `notifier` (see docs/operations.md):
/// `READY=1` once the task journal is open and the broker link is started (connected
/// or still trying), a `STATUS=` line every few seconds, `WATCHDOG=1` from the main
/// loop as it turns, `STOPPING=1` when shutdown begins.
pub async fn serve_with(
    config: CoordinatorConfig,
    shutdown: CancellationToken,
    view: watch::Sender<Snapshot>,
    notifier: Notifier,
) -> Result<(), ServeError> {
    let topics = Topics::new(config.prefix.clone());
    let mut registry = Registry::new(topics.clone(), config.liveness.clone());
    let mut dispatch = Dispatcher::new(config.placement.clone());
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    // Final results to send again once subscribed (see Dispatcher::restore).
    let mut resend = Vec::new();
    let journal = match &config.data_dir {
        Some(dir) => {
            let (j, records) = Journal::open(dir, &JournalConfig::default(), accepted_tx)?;
            let unfinished = records.iter().filter(|r| r.result.is_none()).count();
            tracing::info!(dir = %dir.display(), unfinished, finished = records.len() - unfinished, "task journal open");
            dispatch.enable_journal();
            resend = dispatch.restore(records, Instant::now(), RESEND_AFTER_RESTART);
            Some(j)
        }
        None => {
            drop(accepted_tx);
            None
        }
    };
    let coordinator_id = fog_proto::NodeId::new("coordinator").expect("a valid node id");
    // The registry is empty until the retained birth records arrive.
    dispatch.warm_up(Instant::now() + WARM_UP);
    let mut scaler = Scaler::new(config.scaling.clone());
    let scaling_topic = topics.scaling();
    let mut batcher = Batcher::new(topics.clone(), config.encoding);
    let status_topic = topics.coordinator_status();
    let enc = config.encoding;
    let retained = |payload| Announce {
        topic: status_topic.clone(),
        payload,
        qos: Qos::AtLeastOnce,
        retain: true,
    };
    let client_id = if config.broker.client_id.is_empty() {
        format!(
            "fog-coordinator-{}-{}",
            fog_rt::host::hostname(),
            std::process::id()
        )
    } else {
        config.broker.client_id.clone()
    };
    let mut subscriptions: Vec<(String, Qos)> = [
        NodeTopic::Status,
        NodeTopic::Heartbeat,
        NodeTopic::Metrics,
        NodeTopic::Results,
    ]
    .into_iter()
    .map(|k| (topics.all_nodes(k), Qos::AtLeastOnce))
    .collect();
    subscriptions.push((topics.submit(), Qos::AtLeastOnce));
    let mut link = Link::start(LinkOptions {
        broker: config.broker.clone(),
        client_id,
        will: Some(retained(codec::encode(
            &status(&registry, &dispatch, false, "connection lost"),
            enc,
        )?)),
        on_connect: Vec::new(),
        subscriptions,
        max_packet_bytes: MAX_PACKET_BYTES,
        queue: 4096,
    })?;
    let mut flush_tick = tokio::time::interval(Duration::from_millis(1));
    flush_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tracing::info!(broker = %config.broker.url(), prefix = %config.prefix, "fog-coordinator serving");
    // The journal is open and the link is trying: the coordinator can take work as
    // soon as the broker is there, and waiting for the broker here would only make
    // `systemctl start` hang while it is down.
    // The watchdog is pinged after turns of the main loop (an idle loop still turns:
    // the liveness timer fires every 100 ms), so a stuck loop gets restarted.
    let mut systemd = SystemdReport::new(notifier);
    systemd.ready(&systemd_status(&registry, &dispatch, false));

    let mut liveness = tokio::time::interval(LIVENESS_TICK);
    liveness.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut publish = tokio::time::interval(config.status_interval);
    publish.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Retries, timeouts and re-placement off lost nodes: timers are checked this often
    // while tasks are in flight (a peek at a heap when nothing is due).
    let mut dispatch_tick = tokio::time::interval(Duration::from_millis(10));
    dispatch_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut subscribed = false;
    let mut last_reject_log: std::collections::HashMap<&'static str, Instant> = Default::default();

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ev = link.next_event() => match ev {
                Some(LinkEvent::Message { topic, payload }) if topic.ends_with("/results") || topic.ends_with("/tasks/submit") => {
                    let msgs = match topics.parse(&topic) {
                        Ok(ParsedTopic::Submit) => dispatch.on_submit(&registry, &payload, Instant::now()),
                        Ok(ParsedTopic::Node(node, NodeTopic::Results)) => dispatch.on_result(&registry, node.as_str(), &payload, Instant::now()),
                        _ => Vec::new(),
                    };
                    for m in msgs {
                        batcher.push(m);
                    }
                }
                Some(LinkEvent::Message { topic, payload }) => {
                    let now = Instant::now();
                    let res = registry.ingest(&topic, &payload, now, now_ms());
                    if let Ok(crate::registry::Ingested::Status { node, online }) = &res {
                        let reason = registry.get(node.as_str()).map(|e| e.offline_reason.clone()).unwrap_or_default();
                        tracing::info!(node.id = %node, online, %reason, "node status");
                        // A Last Will: re-place that node's tasks now, not at the next tick.
                        for m in dispatch.tick(&registry, now) {
                            batcher.push(m);
                        }
                    }
                    if let Err(error) = res {
                        let reason = error.reason();
                        let due = last_reject_log.get(reason).is_none_or(|t| now - *t >= REJECT_LOG_EVERY);
                        if due {
                            last_reject_log.insert(reason, now);
                            tracing::warn!(%topic, reason, %error, rejected_total = registry.counter("rejected_total"), "rejected message (further ones of this kind logged at most every 10 s)");
                        } else {
                            tracing::debug!(%topic, reason, %error, "rejected message");
                        }
                    }
                }
                // The coordinator makes no tracked publishes.
                Some(LinkEvent::Connected) | Some(LinkEvent::Acked(_)) | Some(LinkEvent::Unreachable) => {}
                Some(LinkEvent::Subscribed) => {
                    // Online only once the broker routes node messages to us; publish
                    // at once so `status` works right after a (re)connect.
                    subscribed = true;
                    publish.reset_immediately();
                    dispatch.warm_up(Instant::now() + WARM_UP);
                    for m in resend.drain(..) {
                        batcher.push(m);
                    }
                    // The retained advice may have been missed while disconnected.
                    if let Some(advice) = scaler.current() {
                        let _ = link.publish(&scaling_topic, codec::encode(advice, enc)?, Qos::AtLeastOnce, true);
                    }
                }
                Some(LinkEvent::Disconnected) => subscribed = false,
                None => return Err(ServeError::LinkEnded),
            },
            _ = flush_tick.tick(), if !batcher.is_idle() => batcher.flush(&link),
            Some(d) = accepted_rx.recv() => match d {
                // Durable now: tell the client its task is accepted, or its result.
                Durable::Accepted { id, reply_to } => batcher.push(crate::dispatch::Out::Reply {
                    topic: reply_to,
                    result: fog_proto::TaskResult {
                        id,
                        attempt: 1,
                        node: coordinator_id.clone(),
                        at_ms: now_ms(),
                        outcome: fog_proto::Outcome::Accepted,
                    },
                }),
                Durable::Finished { reply_to, result } => batcher.push(crate::dispatch::Out::Reply { topic: reply_to, result }),
            },
            _ = liveness.tick() => {
                let now = Instant::now();
                for t in registry.tick(now) {
                    tracing::info!(node.id = %t.node, from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "node state changed");
                }
                for m in dispatch.tick(&registry, now) {
                    batcher.push(m);
                }
            }
            _ = dispatch_tick.tick(), if dispatch.in_flight() > 0 => {
                for m in dispatch.tick(&registry, Instant::now()) {
                    batcher.push(m);
                }
            }
            _ = publish.tick() => {
                let mut s = status(&registry, &dispatch, subscribed && link.is_connected(), "");
                if let Some(advice) = scaler.observe(Instant::now(), s.at_ms, &s.nodes) {
                    tracing::info!(direction = advice.direction.as_str(), current = advice.current_nodes, desired = advice.desired_nodes, reason = %advice.reason, "scaling advice");
                    if link.is_connected() {
                        let _ = link.publish(&scaling_topic, codec::encode(&advice, enc)?, Qos::AtLeastOnce, true);
                    }
                }
                s.scaling = scaler.current().cloned();
                if link.is_connected() && subscribed {
                    let _ = link.publish(&status_topic, codec::encode(&s, enc)?, Qos::AtLeastOnce, true);
                }
                view.send_replace(Arc::new(s));
            }
        }
        if let Some(j) = &journal {
            for op in dispatch.journal.drain(..) {
                j.write(op);
            }
        }
        systemd.turned(|| systemd_status(&registry, &dispatch, subscribed && link.is_connected()));
    }
    systemd.stopping("stopping: writing the journal, publishing the offline status");
    if let Some(j) = &journal {
        for op in dispatch.journal.drain(..) {
            j.write(op);
        }
    }
    // Dropping the journal (at the end of this function) waits for its last commit.
    let last = status(&registry, &dispatch, false, "shutdown");
    view.send_replace(Arc::new(status(&registry, &dispatch, true, "")));
    link.close(
        Some(retained(codec::encode(&last, enc)?)),
        Duration::from_secs(3),
    )
    .await;
    Ok(())
}

/// The coordinator's `STATUS=` line from its registry and dispatcher.
fn systemd_status(registry: &Registry, dispatch: &Dispatcher, connected: bool) -> String {
    let (mut online, mut suspect) = (0, 0);
    for (_, e) in registry.nodes() {
        match e.state {
            fog_proto::NodeState::Online => online += 1,
            fog_proto::NodeState::Suspect => suspect += 1,
            fog_proto::NodeState::Offline => {}
        }
    }
    status_line(connected, online, suspect, dispatch.in_flight())
}

/// The `STATUS=` line: whether the coordinator is serving, and the two figures an
/// operator looks at first.
fn status_line(connected: bool, online: usize, suspect: usize, in_flight: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let agents = plural(online, "agent online", "agents online");
    let suspect = if suspect > 0 {
        format!(" ({suspect} suspect)")
    } else {
        String::new()
    };
    let tasks = plural(in_flight, "task in flight", "tasks in flight");
    if connected {
        format!("serving: {agents}{suspect}, {tasks}")
    } else {
        format!("waiting for the broker: {agents}{suspect}, {tasks}")
    }
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn status_line_reads_like_a_sentence() {
        assert_eq!(
            status_line(true, 3, 0, 12),
            "serving: 3 agents online, 12 tasks in flight"
        );
        assert_eq!(
            status_line(true, 1, 2, 1),
            "serving: 1 agent online (2 suspect), 1 task in flight"
        );
        assert_eq!(
            status_line(false, 0, 0, 0),
            "waiting for the broker: 0 agents online, 0 tasks in flight"
        );
    }
}
