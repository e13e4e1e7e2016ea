//! The agent's main loop: announce, heartbeat, read, and say goodbye.

use std::time::Duration;

use fog_proto::{codec, Birth, Encoding, NodeTopic, Status, Topics};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::forward::{ClassTopics, Forwarder, ReplayLimits};
use crate::metrics::Collector;
use crate::store::backlog::Class;
use crate::supervise::{Restarts, Supervised};
use crate::systemd::{human_bytes, SystemdReport};
use crate::transport::{Announce, Link, LinkEvent, LinkOptions, PublishError, Qos};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] crate::transport::LinkError),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: fog_proto::EncodeError,
    },
    #[error("starting the task host: {0}")]
    Tasks(#[from] crate::tasks::host::HostError),
}

/// Wall clock in ms since the Unix epoch (0 if the clock is before 1970).
pub use fog_rt::clock::now_ms;
pub use fog_rt::signals::shutdown_on_signals;

fn encode<M: fog_proto::message::Message>(msg: &M, enc: Encoding) -> Result<Vec<u8>, AgentError> {
    codec::encode(msg, enc).map_err(|source| AgentError::Encode {
        what: M::NAME,
        source,
    })
}

/// The birth record this agent announces.
pub fn birth(config: &Config, memory_bytes: u64, started_at_ms: u64) -> Birth {
    Birth {
        node: config.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes,
        labels: config.labels.clone(),
        encoding: config.encoding,
        task_kinds: {
            let mut k: Vec<String> = config.pool.builtins.clone();
            k.extend(config.commands.keys().cloned());
            k
        },
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
        metrics_interval_ms: config.metrics_interval.as_millis() as u32,
        keep_alive_secs: config.broker.keep_alive.as_secs() as u32,
        started_at_ms,
    }
}

fn fill_task_figures(a: &mut fog_proto::AgentSelf, host: &crate::tasks::host::TaskHost) {
    let load = host.pool().load();
    let arena = host.arena().stats();
    let c = host.counters;
    a.tasks_finished_total = c.finished;
    a.tasks_rejected_total = c.rejected;
    a.tasks_queued = load.queued;
    a.tasks_running = load.running;
    a.arena_capacity_bytes = arena.capacity_bytes;
    a.arena_used_bytes = arena.used_bytes;
    a.arena_high_water_bytes = arena.high_water_bytes;
    a.arena_refused_total = arena.refused_total;
    a.cache_hits_total = c.cache_hits;
    a.cache_misses_total = c.cache_misses;
}

/// The supervised subsystems besides the task host's pool (which supervises its own
/// workers) and the main loop itself (watched by systemd's watchdog).
struct Supervision {
    store: std::sync::Arc<crate::store::cell::DbCell>,
    transport: Restarts,
    collector: Supervised<Collector>,
    alerts: Supervised<crate::alerts::AlertEngine>,
}

impl Supervision {
    /// Subsystems that keep failing, in start order, for heartbeats and readings.
    fn degraded(&self, host: &crate::tasks::host::TaskHost) -> Vec<String> {
        let mut d = Vec::new();
        for (name, bad) in [
            ("store", self.store.degraded()),
            ("transport", self.transport.degraded()),
            ("collector", self.collector.restarts().degraded()),
            ("pool", host.pool().degraded()),
            ("alerts", self.alerts.restarts().degraded()),
        ] {
            if bad {
                d.push(name.to_owned());
            }
        }
        d
    }
}

fn fill_forward_figures(a: &mut fog_proto::AgentSelf, fwd: &Forwarder, degraded: Vec<String>) {
    let s = fwd.stats();
    a.forward_mode = fwd.mode().as_str().to_owned();
    a.backlog_entries = s.len();
    a.backlog_bytes = s.bytes();
    a.backlog_dropped_total = s.dropped_total();
    a.backlog_replayed_total = fwd.replayed_total();
    a.publish_unacked = fwd.unacked() as u64;
    a.degraded = degraded;
}

/// The line `systemctl status` shows: mode, tasks, backlog, what is degraded.
fn status_line(fwd: &Forwarder, host: &crate::tasks::host::TaskHost, sup: &Supervision) -> String {
    let load = host.pool().load();
    let s = fwd.stats();
    let mode = match fwd.mode() {
        crate::forward::Mode::Offline => "offline (broker unreachable)",
        m => m.as_str(),
    };
    let mut line = format!(
        "{mode}: {} tasks running, {} queued; ",
        load.running, load.queued
    );
    if s.is_empty() {
        line.push_str("backlog empty");
    } else {
        line.push_str(&format!(
            "backlog {} entries ({})",
            s.len(),
            human_bytes(s.bytes())
        ));
    }
    if s.dropped_total() > 0 {
        line.push_str(&format!(", {} dropped", s.dropped_total()));
    }
    let d = sup.degraded(host);
    if !d.is_empty() {
        line.push_str(&format!("; degraded: {}", d.join(", ")));
    }
    line
}

/// A message that can never be published (too large for the packet limit): logged at
/// most once a minute.
fn warn_publish(last: &mut Option<tokio::time::Instant>, what: &str, error: &PublishError) {
    let now = tokio::time::Instant::now();
    if last.is_none_or(|t| now - t >= Duration::from_secs(60)) {
        *last = Some(now);
        tracing::warn!(what, %error, "cannot publish");
    }
}

/// Run the agent until `shutdown` is cancelled, then publish the retained offline
/// record and disconnect cleanly. Says nothing to systemd (in-process agents in tests
/// and the demo must not speak for their process); the binary uses [`run_with`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_with(config, shutdown, crate::sdnotify::Notifier::default()).await
}

/// [`run`], reporting readiness, status and watchdog pings through `notifier`.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    notifier: crate::sdnotify::Notifier,
) -> Result<(), AgentError> {
    let mut systemd = SystemdReport::new(notifier);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let topics = Topics::new(config.prefix.clone());
    let enc = config.encoding;
    let node = config.node_id.clone();
    let status_topic = topics.node(&node, NodeTopic::Status);
    let heartbeat_topic = topics.node(&node, NodeTopic::Heartbeat);
    let metrics_topic = topics.node(&node, NodeTopic::Metrics);
    let tasks_topic = topics.node(&node, NodeTopic::Tasks);
    let alerts_topic = topics.node(&node, NodeTopic::Alerts);
    let results_topic = topics.node(&node, NodeTopic::Results);

    let (pool_tx, mut pool_rx) =
        tokio::sync::mpsc::channel(config.pool.queue_capacity + config.pool.workers + 16);
    let (commit_tx, mut commit_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut host = crate::tasks::host::TaskHost::start(&config, pool_tx, commit_tx)?;
    let (removed_tx, mut removed_rx) = tokio::sync::mpsc::unbounded_channel();
    let backlog = host.open_backlog(&config, removed_tx)?;
    if !backlog.stats().is_empty() {
        tracing::info!(
            backlog.entries = backlog.stats().len(),
            backlog.bytes = backlog.stats().bytes(),
            "found a backlog from an earlier run; it is replayed once the broker is reachable"
        );
    }

    let metrics_cfg = config.metrics.clone();
    let alerts_cfg = config.alerts.clone();
    // Started after the store and before the link, as they depend on each other.
    let mut sup = Supervision {
        store: host.store_health(),
        transport: Restarts::new("transport"),
        collector: Supervised::new("collector", move || Collector::new(metrics_cfg.clone())),
        alerts: Supervised::new("alerts", move || {
            crate::alerts::AlertEngine::new(alerts_cfg.clone())
        }),
    };
    let memory_bytes = sup
        .collector
        .with(tokio::time::Instant::now(), |c| c.memory_total_bytes())
        .unwrap_or(0);
    let started_at_ms = now_ms();
    let online = Status {
        online: true,
        at_ms: started_at_ms,
        reason: String::new(),
        birth: Some(birth(&config, memory_bytes, started_at_ms)),
    };
    let will = Status {
        online: false,
        at_ms: started_at_ms,
        reason: "connection lost".to_owned(),
        birth: None,
    };
    let retained = |payload| Announce {
        topic: status_topic.clone(),
        payload,
        qos: Qos::AtLeastOnce,
        retain: true,
    };
    let client_id = if config.broker.client_id.is_empty() {
        format!("fog-agent-{node}")
    } else {
        config.broker.client_id.clone()
    };
    let (will, online) = (encode(&will, enc)?, encode(&online, enc)?);
    let link_options = || LinkOptions {
        broker: config.broker.clone(),
        client_id: client_id.clone(),
        will: Some(retained(will.clone())),
        on_connect: vec![retained(online.clone())],
        subscriptions: vec![(tasks_topic.clone(), Qos::AtLeastOnce)],
        max_packet_bytes: crate::tasks::host::packet_limit(config.pool.max_task_bytes),
        queue: 1024,
    };
    let link = Link::start(link_options())?;
    let mut fwd = Forwarder::new(
        link,
        backlog,
        ClassTopics {
            readings: metrics_topic,
            alerts: alerts_topic,
            results: results_topic,
        },
        ReplayLimits {
            per_sec: config.store.replay_per_sec,
            in_flight: config.store.replay_in_flight,
        },
    );
    tracing::info!(
        node.id = %node,
        broker = %config.broker.url(),
        encoding = enc.as_str(),
        heartbeat_secs = config.heartbeat_interval.as_secs_f32(),
        metrics_secs = config.metrics_interval.as_secs_f32(),
        "fog-agent started"
    );

    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut readings = tokio::time::interval(config.metrics_interval);
    readings.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_drop_log: Option<tokio::time::Instant> = None;
    let mut flush = tokio::time::interval(Duration::from_millis(2));
    flush.set_missed_tick_behavior(MissedTickBehavior::Skip);

    let mut replay = tokio::time::interval(Duration::from_millis(10));
    replay.set_missed_tick_behavior(MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(c) = commit_rx.recv() => host.on_committed(&mut fwd, c),
            Some(r) = pool_rx.recv() => host.on_result(r),
            Some(seqs) = removed_rx.recv() => fwd.on_removed(seqs),
            ev = fwd.link_mut().next_event(), if !sup.transport.is_down() => {
                match ev {
                    Some(LinkEvent::Connected) => {
                        fwd.on_connected();
                        systemd.ready(&status_line(&fwd, &host, &sup));
                    }
                    Some(LinkEvent::Unreachable) => {
                        // The first attempt is over: run (and store) without a broker.
                        systemd.ready(&status_line(&fwd, &host, &sup));
                    }
                    Some(LinkEvent::Disconnected) => fwd.on_disconnected(),
                    Some(LinkEvent::Acked(token)) => fwd.on_acked(token),
                    Some(LinkEvent::Subscribed) => {}
                    Some(LinkEvent::Message { topic, payload }) if topic == tasks_topic => host.on_assignments(&mut fwd, &payload),
                    Some(LinkEvent::Message { topic, .. }) => {
                        tracing::debug!(%topic, "ignoring message on a topic the agent does not handle");
                    }
                    None => {
                        // The link's task died (a panic in it): keep everything in
                        // the backlog and start a new link after the backoff.
                        fwd.on_disconnected();
                        sup.transport.failed(tokio::time::Instant::now(), "the mqtt link task ended");
                    }
                }
            }
            _ = tokio::time::sleep_until(sup.transport.restart_at().unwrap_or_else(tokio::time::Instant::now)), if sup.transport.is_down() => {
                match Link::start(link_options()) {
                    Ok(link) => {
                        fwd.replace_link(link);
                        sup.transport.restarted();
                    }
                    Err(e) => {
                        sup.transport.failed(tokio::time::Instant::now(), &e.to_string());
                    }
                }
            }
            _ = flush.tick(), if host.outbox_len() > 0 => host.flush(&mut fwd),
            _ = replay.tick(), if fwd.next_tick().is_some() => fwd.tick(),
            _ = heartbeat.tick() => {
                let at_ms = now_ms();
                // Without its collector the heartbeat still says the node is alive.
                let mut hb = sup
                    .collector
                    .with(tokio::time::Instant::now(), |c| c.heartbeat(at_ms))
                    .unwrap_or_else(|| fog_proto::Heartbeat { at_ms, ..Default::default() });
                let load = host.pool().load();
                (hb.queued, hb.running, hb.free_slots) = (load.queued, load.running, load.free_slots);
                hb.backlog_bytes = fwd.stats().bytes();
                hb.backlog_dropped_total = fwd.stats().dropped_total();
                hb.degraded = sup.degraded(&host);
                // Liveness is about now: a heartbeat that cannot go out is not kept.
                if fwd.link().publish(&heartbeat_topic, encode(&hb, enc)?, Qos::AtMostOnce, false).is_err() {
                    fwd.link().count_dropped();
                }
            }
            _ = readings.tick() => {
                let Some(mut r) = sup.collector.with(tokio::time::Instant::now(), |c| c.reading(now_ms())) else {
                    continue; // the collector is down; restarted with backoff
                };
                r.agent.publish_dropped_total = fwd.link().stats().dropped_total.load(std::sync::atomic::Ordering::Relaxed);
                fill_task_figures(&mut r.agent, &host);
                fill_forward_figures(&mut r.agent, &fwd, sup.degraded(&host));
                let raised = sup
                    .alerts
                    .with(tokio::time::Instant::now(), |a| a.evaluate(&r, r.at_ms))
                    .unwrap_or_default();
                for alert in raised {
                    tracing::warn!(
                        alert.resource = %alert.resource,
                        alert.level = ?alert.level,
                        alert.value = alert.value,
                        "{}", alert.message
                    );
                    if let Err(error) = fwd.publish(Class::Alert, encode(&alert, enc)?) {
                        warn_publish(&mut last_drop_log, "alert", &error);
                    }
                }
                if let Err(error) = fwd.publish(Class::Reading, encode(&r, enc)?) {
                    warn_publish(&mut last_drop_log, "reading", &error);
                }
            }
        }
        systemd.turned(|| status_line(&fwd, &host, &sup));
    }
    systemd.stopping("stopping: handing back tasks, flushing the store");

    // Stop taking tasks; queued ones go back as retryable; running ones get a grace
    // period, then are killed and reported as retryable failures.
    host.close();
    let grace_end = tokio::time::Instant::now() + config.shutdown_grace;
    let mut cancelled = false;
    while host.in_flight() > 0 || host.outbox_len() > 0 || fwd.unacked() > 0 {
        tokio::select! {
            Some(c) = commit_rx.recv() => host.on_committed(&mut fwd, c),
            Some(r) = pool_rx.recv() => host.on_result(r),
            Some(seqs) = removed_rx.recv() => fwd.on_removed(seqs),
            ev = fwd.link_mut().next_event() => match ev {
                Some(LinkEvent::Acked(token)) => fwd.on_acked(token),
                Some(LinkEvent::Disconnected) => fwd.on_disconnected(),
                Some(LinkEvent::Connected) => fwd.on_connected(),
                Some(_) => {}
                None => break,
            },
            _ = flush.tick() => host.flush(&mut fwd),
            _ = tokio::time::sleep_until(grace_end), if !cancelled => {
                tracing::warn!(in_flight = host.in_flight(), "grace period over; killing running tasks");
                host.cancel_running();
                cancelled = true;
            }
            _ = tokio::time::sleep_until(grace_end + Duration::from_secs(5)), if cancelled => break,
        }
        if !fwd.link().is_connected() && host.in_flight() == 0 {
            // Results are in the store or the backlog; nothing more can go out now.
            host.flush(&mut fwd);
            break;
        }
    }
    // Whatever is still unacknowledged is kept for the next run.
    fwd.on_disconnected();
    tracing::info!(node.id = %node, "shutting down: publishing offline status");
    let offline = Status {
        online: false,
        at_ms: now_ms(),
        reason: "shutdown".to_owned(),
        birth: None,
    };
    let link = fwd.into_link(); // commits the backlog as it drops
    link.close(
        Some(retained(encode(&offline, enc)?)),
        Duration::from_secs(3),
    )
    .await;
    Ok(())
}
