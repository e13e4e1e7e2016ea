//! The agent's main loop: announce, heartbeat, read, and say goodbye.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fog_proto::{codec, Birth, Encoding, NodeTopic, Status, Topics};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Collector;
use crate::transport::{Announce, Link, LinkEvent, LinkOptions, PublishError, Qos};

/// Task kinds this build runs (the task executor arrives with the tasks issue).
pub const TASK_KINDS: &[&str] = &[];

/// Largest MQTT packet the agent sends or accepts.
pub const MAX_PACKET_BYTES: usize = 512 * 1024;

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
        task_kinds: TASK_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u32,
        metrics_interval_ms: config.metrics_interval.as_millis() as u32,
        keep_alive_secs: config.broker.keep_alive.as_secs() as u32,
        started_at_ms,
    }
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
        subscriptions: Vec::new(),
        max_packet_bytes: MAX_PACKET_BYTES,
        queue: 64,
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

    loop {
        let (topic, payload, what) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ev = link.next_event() => {
                match ev {
                    Some(LinkEvent::Connected) | Some(LinkEvent::Disconnected) => {}
                    Some(LinkEvent::Message { topic, .. }) => {
                        tracing::debug!(%topic, "ignoring message on a topic the agent does not handle");
                    }
                    None => return Err(AgentError::LinkEnded),
                }
                continue;
            }
            _ = heartbeat.tick() => {
                let hb = collector.heartbeat(now_ms());
                (&heartbeat_topic, encode(&hb, enc)?, "heartbeat")
            }
            _ = readings.tick() => {
                let mut r = collector.reading(now_ms());
                r.agent.publish_dropped_total = link.stats().dropped_total.load(std::sync::atomic::Ordering::Relaxed);
                (&metrics_topic, encode(&r, enc)?, "reading")
            }
        };
        match link.publish(topic, payload, Qos::AtMostOnce, false) {
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
