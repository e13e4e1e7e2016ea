//! `fog-coordinator status`: read the coordinator's retained status and print it as a
//! table a person can take in at a glance, or as JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use fog_agent::config::BrokerConfig;
use fog_agent::transport::{Link, LinkEvent, LinkOptions, Qos};
use fog_proto::{codec, CoordinatorStatus, NodeState, Topics};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Link(#[from] fog_agent::transport::LinkError),
    #[error("no coordinator status on {topic} within {timeout:?} (is `fog-coordinator serve` running against {broker}?)")]
    Timeout {
        topic: String,
        broker: String,
        timeout: Duration,
    },
    #[error("could not connect to {broker} within {timeout:?}")]
    NoBroker { broker: String, timeout: Duration },
    #[error("decoding coordinator status: {0}")]
    Decode(#[from] fog_proto::DecodeError),
}

/// Fetch the retained coordinator status.
pub async fn fetch(
    broker: &BrokerConfig,
    topics: &Topics,
    timeout: Duration,
) -> Result<CoordinatorStatus, StatusError> {
    let topic = topics.coordinator_status();
    let mut link = Link::start(LinkOptions {
        broker: broker.clone(),
        client_id: format!("fog-cli-{}-{}", std::process::id(), fastrand::u32(..)),
        will: None,
        on_connect: Vec::new(),
        subscriptions: vec![(topic.clone(), Qos::AtLeastOnce)],
        max_packet_bytes: crate::service::MAX_PACKET_BYTES,
        queue: 16,
    })?;
    let mut connected = false;
    let wait = async {
        while let Some(ev) = link.next_event().await {
            match ev {
                LinkEvent::Connected => connected = true,
                LinkEvent::Message { topic: t, payload } if t == topic => {
                    return Some(codec::decode(&payload))
                }
                _ => {}
            }
        }
        None
    };
    let res = tokio::time::timeout(timeout, wait).await;
    let out = match res {
        Ok(Some(decoded)) => Ok(decoded?),
        _ if !connected => Err(StatusError::NoBroker {
            broker: broker.url(),
            timeout,
        }),
        _ => Err(StatusError::Timeout {
            topic,
            broker: broker.url(),
            timeout,
        }),
    };
    link.close(None, Duration::from_secs(1)).await;
    out
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "never".to_owned();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn opt(v: Option<f32>, precision: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.precision$}"))
}

/// The node table.
pub fn render_table(s: &CoordinatorStatus, now_ms: u64) -> String {
    let mut rows = vec![[
        "NODE".to_owned(),
        "ARCH".to_owned(),
        "STATE".to_owned(),
        "CPU %".to_owned(),
        "MEM %".to_owned(),
        "LOAD".to_owned(),
        "QUEUE".to_owned(),
        "LAST SEEN".to_owned(),
    ]];
    for n in &s.nodes {
        rows.push([
            n.node.to_string(),
            if n.arch.is_empty() {
                "?".to_owned()
            } else {
                n.arch.clone()
            },
            n.state.as_str().to_owned(),
            opt(n.cpu_pct, 1),
            opt(n.mem_pct, 1),
            opt(n.load1, 2),
            format!("{}/{}", n.queued, n.running),
            ago(now_ms, n.last_seen_ms),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            // Numbers right-aligned, words left-aligned.
            if (3..=6).contains(&i) {
                let _ = write!(line, "{c:>w$}  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let count = |st| s.nodes.iter().filter(|n| n.state == st).count();
    let _ = writeln!(
        out,
        "{} nodes: {} online, {} suspect, {} offline; coordinator {} (updated {})",
        s.nodes.len(),
        count(NodeState::Online),
        count(NodeState::Suspect),
        count(NodeState::Offline),
        if s.online { "online" } else { "OFFLINE" },
        ago(now_ms, s.at_ms),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::{NodeId, NodeSummary};

    #[test]
    fn table_aligns_and_summarises() {
        let s = CoordinatorStatus {
            online: true,
            at_ms: 10_000,
            version: "0.1.0".into(),
            reason: String::new(),
            nodes: vec![
                NodeSummary {
                    node: NodeId::new("pi-1").expect("valid"),
                    arch: "aarch64".into(),
                    state: NodeState::Online,
                    cores: 4,
                    cpu_pct: Some(12.345),
                    mem_pct: Some(40.0),
                    load1: Some(0.5),
                    last_seen_ms: 9_000,
                    version: "0.1.0".into(),
                    queued: 0,
                    running: 1,
                },
                NodeSummary {
                    node: NodeId::new("a-much-longer-node").expect("valid"),
                    arch: String::new(),
                    state: NodeState::Offline,
                    cores: 0,
                    cpu_pct: None,
                    mem_pct: None,
                    load1: None,
                    last_seen_ms: 0,
                    version: String::new(),
                    queued: 0,
                    running: 0,
                },
            ],
            counters: Default::default(),
        };
        let t = render_table(&s, 10_000);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{t}");
        assert!(
            lines[1].contains("12.3") && lines[1].contains("1s ago"),
            "{t}"
        );
        assert!(
            lines[2].contains("offline") && lines[2].contains("never"),
            "{t}"
        );
        assert_eq!(
            lines[0].find("ARCH"),
            lines[1].find("aarch64"),
            "columns align:\n{t}"
        );
        assert!(
            lines[3].contains("2 nodes: 1 online, 0 suspect, 1 offline"),
            "{t}"
        );
    }
}
