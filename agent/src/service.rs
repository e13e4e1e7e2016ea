//! The agent's main loop: announce, heartbeat, read, and say goodbye.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fog_proto::{codec, Birth, Encoding, NodeTopic, Status, Topics};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Collector;
use crate::transport::{Announce, Link, LinkEvent, LinkOptions, PublishError, Qos};

/// How long running tasks get to finish after a shutdown signal before they are
/// killed and reported as retryable failures.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    #[error("the mqtt link task ended unexpectedly")]
    LinkEnded,
    #[error("starting the task host: {0}")]
    Tasks(#[from] crate::tasks::host::HostError),
}

/// Wall clock in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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

/// Run the agent until `shutdown` is cancelled, then publish the retained offline
/// record and disconnect cleanly.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
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

    let (pool_tx, mut pool_rx) =
        tokio::sync::mpsc::channel(config.pool.queue_capacity + config.pool.workers + 16);
    let (commit_tx, mut commit_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut host = crate::tasks::host::TaskHost::start(
        &config,
        topics.node(&node, NodeTopic::Results),
        pool_tx,
        commit_tx,
    )?;

    let mut collector = Collector::new(config.metrics.clone());
    let started_at_ms = now_ms();
    let online = Status {
        online: true,
        at_ms: started_at_ms,
        reason: String::new(),
        birth: Some(birth(
            &config,
            collector.memory_total_bytes(),
            started_at_ms,
        )),
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
    let mut link = Link::start(LinkOptions {
        broker: config.broker.clone(),
        client_id,
        will: Some(retained(encode(&will, enc)?)),
        on_connect: vec![retained(encode(&online, enc)?)],
        subscriptions: vec![(tasks_topic.clone(), Qos::AtLeastOnce)],
        max_packet_bytes: crate::tasks::host::packet_limit(config.pool.max_task_bytes),
        queue: 1024,
    })?;
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

    loop {
        let (topic, payload, what) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(c) = commit_rx.recv() => {
                host.on_committed(&link, c);
                continue;
            }
            Some(r) = pool_rx.recv() => {
                host.on_result(r);
                continue;
            }
            ev = link.next_event() => {
                match ev {
                    Some(LinkEvent::Connected) | Some(LinkEvent::Subscribed) | Some(LinkEvent::Disconnected) => {}
                    Some(LinkEvent::Message { topic, payload }) if topic == tasks_topic => host.on_assignments(&link, &payload),
                    Some(LinkEvent::Message { topic, .. }) => {
                        tracing::debug!(%topic, "ignoring message on a topic the agent does not handle");
                    }
                    None => return Err(AgentError::LinkEnded),
                }
                continue;
            }
            _ = flush.tick(), if host.outbox_len() > 0 => {
                host.flush(&link);
                continue;
            }
            _ = heartbeat.tick() => {
                let mut hb = collector.heartbeat(now_ms());
                let load = host.pool().load();
                (hb.queued, hb.running, hb.free_slots) = (load.queued, load.running, load.free_slots);
                (&heartbeat_topic, encode(&hb, enc)?, "heartbeat")
            }
            _ = readings.tick() => {
                let mut r = collector.reading(now_ms());
                r.agent.publish_dropped_total = link.stats().dropped_total.load(std::sync::atomic::Ordering::Relaxed);
                fill_task_figures(&mut r.agent, &host);
                (&metrics_topic, encode(&r, enc)?, "reading")
            }
        };
        let res = link.publish(topic, payload, Qos::AtMostOnce, false);
        if res.is_err() {
            link.count_dropped();
        }
        match res {
            Ok(()) => {}
            Err(PublishError::NotConnected) => {
                // Store-and-forward arrives with the outage issue; until then the loss
                // is counted (publish_dropped_total) and logged at most once a minute.
                let now = tokio::time::Instant::now();
                if last_drop_log.is_none_or(|t| now - t >= Duration::from_secs(60)) {
                    last_drop_log = Some(now);
                    tracing::warn!(
                        what,
                        dropped_total = link
                            .stats()
                            .dropped_total
                            .load(std::sync::atomic::Ordering::Relaxed),
                        "not connected; dropping readings until the broker is back"
                    );
                }
            }
            Err(error) => tracing::warn!(what, %error, "publish refused"),
        }
    }

    // Stop taking tasks; queued ones go back as retryable; running ones get a grace
    // period, then are killed and reported as retryable failures.
    host.close();
    let grace_end = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let mut cancelled = false;
    while host.in_flight() > 0 || host.outbox_len() > 0 {
        tokio::select! {
            Some(c) = commit_rx.recv() => host.on_committed(&link, c),
            Some(r) = pool_rx.recv() => host.on_result(r),
            _ = flush.tick() => host.flush(&link),
            _ = tokio::time::sleep_until(grace_end), if !cancelled => {
                tracing::warn!(in_flight = host.in_flight(), "grace period over; killing running tasks");
                host.cancel_running();
                cancelled = true;
            }
            _ = tokio::time::sleep_until(grace_end + Duration::from_secs(5)), if cancelled => break,
        }
        if !link.is_connected() && host.in_flight() == 0 {
            break; // results are in the store; a redelivery will be answered from it
        }
    }
    tracing::info!(node.id = %node, "shutting down: publishing offline status");
    let offline = Status {
        online: false,
        at_ms: now_ms(),
        reason: "shutdown".to_owned(),
        birth: None,
    };
    link.close(
        Some(retained(encode(&offline, enc)?)),
        Duration::from_secs(3),
    )
    .await;
    Ok(())
}

/// First SIGTERM or SIGINT: cancel `shutdown` for a graceful stop. A second one exits
/// at once (for an operator who does not want to wait for the grace period).
pub async fn shutdown_on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n == 0 {
            tracing::info!("signal received; shutting down (send again to exit at once)");
            shutdown.cancel();
        } else {
            std::process::exit(1);
        }
    }
}
