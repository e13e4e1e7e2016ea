//! `fog-coordinator status`: read the coordinator's retained status and print it as a
//! table a person can take in at a glance, or as JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use fog_proto::{codec, CoordinatorStatus, NodeState, NodeSummary, Topics};
use fog_rt::broker::BrokerConfig;
use fog_rt::transport::{Link, LinkEvent, LinkOptions, Qos};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Link(#[from] fog_rt::transport::LinkError),
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

/// Columns padded to their widest cell; columns in `right` right-aligned (numbers).
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if right.contains(&i) {
                let _ = write!(line, "{c:>w$}  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Whose node this is and whose tasks it runs: `approved` (identity) and what it said
/// about tasks when that is not the secure default.
fn trust(n: &fog_proto::NodeSummary) -> String {
    let identity = if n.identity.is_empty() {
        "-"
    } else {
        n.identity.as_str()
    };
    match n.task_trust {
        fog_proto::TaskTrust::NoTrustedKey => format!("{identity}, no tasks (no trusted key)"),
        fog_proto::TaskTrust::AllowUnsigned => format!("{identity}, RUNS UNSIGNED"),
        _ => identity.to_owned(),
    }
}

/// What `status` says about signing, lab-only switches and refusals.
fn security_lines(s: &CoordinatorStatus, out: &mut String) {
    if !s.signing_key.is_empty() {
        let _ = writeln!(out, "assignments signed by key {}", s.signing_key);
    }
    for w in &s.warnings {
        let _ = writeln!(out, "security: {w} (lab only)");
    }
    let distrusted: u64 = [
        "node_messages_unapproved_total",
        "node_messages_impostor_total",
    ]
    .iter()
    .filter_map(|k| s.counters.get(*k))
    .sum();
    if distrusted > 0 {
        let _ = writeln!(
            out,
            "security: {distrusted} node messages not believed (unapproved or impostor; see `fog-coordinator nodes list`)"
        );
    }
    if s.counters.get("submissions_unsigned_allowed") == Some(&1) {
        let _ = writeln!(
            out,
            "security: submissions are taken from anyone, unsigned (allow_unsigned_submissions = true, lab only)"
        );
    }
    let refused: u64 = s
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("submissions_refused_"))
        .map(|(_, v)| v)
        .sum();
    if refused > 0 {
        let _ = writeln!(
            out,
            "security: {refused} submissions refused (see `status --json`, submissions_refused_*)"
        );
    }
}

/// A node's health, its own failing parts and what its readings flag:
/// `healthy, store failing; under-voltage, clock not synchronised`.
fn health(n: &NodeSummary) -> String {
    let mut h = n.health.as_str().to_owned();
    if !n.degraded.is_empty() {
        let _ = write!(h, ", {} failing", n.degraded.join("+"));
    }
    if !n.notices.is_empty() {
        let _ = write!(h, "; {}", n.notices.join(", "));
    }
    h
}

/// The node table.
pub fn render_table(s: &CoordinatorStatus, now_ms: u64) -> String {
    let mut rows = vec![header(&[
        "NODE",
        "ARCH",
        "STATE",
        "HEALTH",
        "CPU %",
        "MEM %",
        "LOAD",
        "QUEUE",
        "IN FLIGHT",
        "BREAKER",
        "LATENCY",
        "TRUST",
        "LAST SEEN",
    ])];
    for n in &s.nodes {
        rows.push(vec![
            n.node.to_string(),
            if n.arch.is_empty() {
                "?".to_owned()
            } else {
                n.arch.clone()
            },
            if n.drained {
                format!("{} (drained)", n.state.as_str())
            } else {
                n.state.as_str().to_owned()
            },
            health(n),
            opt(n.cpu_pct, 1),
            opt(n.mem_pct, 1),
            opt(n.load1, 2),
            format!("{}/{}", n.queued, n.running),
            n.in_flight.to_string(),
            if n.breaker.is_empty() {
                "-".to_owned()
            } else {
                n.breaker.clone()
            },
            if n.latency_ms > 0.0 {
                format!("{:.0} ms", n.latency_ms)
            } else {
                "-".to_owned()
            },
            trust(n),
            ago(now_ms, n.last_seen_ms),
        ]);
    }
    let mut out = table(&rows, &[4, 5, 6, 7, 8, 10]);
    let o = s.omitted;
    let count = |st| s.nodes.iter().filter(|n| n.state == st).count();
    if o.total() > 0 {
        let _ = writeln!(
            out,
            "... and {} more nodes not listed ({} online, {} suspect, {} offline): the retained status lists at most {} (those needing a look first); GET /api/v1/nodes lists all",
            o.total(),
            o.online,
            o.suspect,
            o.offline,
            fog_proto::STATUS_NODES_MAX
        );
    }
    let _ = writeln!(
        out,
        "{} nodes: {} online, {} suspect, {} offline; coordinator {} (updated {})",
        s.nodes.len() + o.total() as usize,
        count(NodeState::Online) + o.online as usize,
        count(NodeState::Suspect) + o.suspect as usize,
        count(NodeState::Offline) + o.offline as usize,
        if s.online { "online" } else { "OFFLINE" },
        ago(now_ms, s.at_ms),
    );
    security_lines(s, &mut out);
    if let Some(a) = &s.scaling {
        let _ = writeln!(
            out,
            "scaling: {} ({} -> {} nodes): {}",
            a.direction.as_str(),
            a.current_nodes,
            a.desired_nodes,
            a.reason
        );
    }
    out
}

/// Which task lists `tasks` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLists {
    pub running: bool,
    pub recent: bool,
    pub dead: bool,
}

/// `fog-coordinator tasks`: running, recent and dead-lettered tasks.
pub fn render_tasks(s: &CoordinatorStatus, now_ms: u64, which: TaskLists) -> String {
    let mut out = String::new();
    let mut section = |title: &str, tasks: &[fog_proto::TaskSummary], when: &str| {
        let _ = writeln!(
            out,
            "{title} ({}{})",
            tasks.len(),
            if tasks.len() >= fog_proto::STATUS_TASKS_MAX {
                ", more not shown"
            } else {
                ""
            }
        );
        if tasks.is_empty() {
            return;
        }
        let mut rows = vec![header(&[
            "ID", "KIND", "NODE", "ATTEMPT", "STATE", when, "DETAIL",
        ])];
        for t in tasks {
            rows.push(vec![
                t.id.clone(),
                t.kind.clone(),
                if t.node.is_empty() {
                    "-".to_owned()
                } else {
                    t.node.clone()
                },
                t.attempt.to_string(),
                t.state.clone(),
                ago(now_ms, t.at_ms),
                t.detail.chars().take(80).collect(),
            ]);
        }
        out.push_str(&table(&rows, &[3]));
    };
    if which.running {
        section("running", &s.running, "SINCE");
    }
    if which.recent {
        section("recent", &s.recent, "ENDED");
    }
    if which.dead {
        section("dead-lettered", &s.dead, "ENDED");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::{NodeId, NodeSummary};

    #[test]
    fn table_aligns_and_summarises() {
        let s = CoordinatorStatus {
            signing_key: Default::default(),
            warnings: Default::default(),
            omitted: Default::default(),
            online: true,
            at_ms: 10_000,
            version: "0.1.0".into(),
            reason: String::new(),
            nodes: vec![
                NodeSummary {
                    identity: String::new(),
                    task_trust: Default::default(),
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
                    health: fog_proto::NodeHealth::Degraded,
                    in_flight: 7,
                    breaker: "closed".into(),
                    latency_ms: 42.0,
                    degraded: vec!["store".into()],
                    notices: vec!["under-voltage".into(), "clock not synchronised".into()],
                    drained: true,
                },
                NodeSummary {
                    identity: String::new(),
                    task_trust: Default::default(),
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
                    health: fog_proto::NodeHealth::Offline,
                    in_flight: 0,
                    breaker: "open".into(),
                    latency_ms: 0.0,
                    degraded: Vec::new(),
                    notices: Vec::new(),
                    drained: false,
                },
            ],
            counters: Default::default(),
            running: Vec::new(),
            recent: Vec::new(),
            dead: Vec::new(),
            scaling: None,
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
        assert!(lines[1].contains("online (drained)"), "{t}");
        assert!(!lines[2].contains("drained"), "{t}");
        assert_eq!(
            lines[0].find("ARCH"),
            lines[1].find("aarch64"),
            "columns align:\n{t}"
        );
        assert!(
            lines[3].contains("2 nodes: 1 online, 0 suspect, 1 offline"),
            "{t}"
        );
        assert!(
            lines[1].contains("degraded, store failing; under-voltage, clock not synchronised"),
            "{t}"
        );
        assert!(
            lines[1].contains("degraded") && lines[1].contains("42 ms"),
            "{t}"
        );
        assert_eq!(lines[0].find("BREAKER"), lines[2].find("open"), "{t}");
    }

    /// Past [`fog_proto::STATUS_NODES_MAX`] the retained status keeps the nodes that
    /// need a look and counts the rest; the table's totals still count every node.
    #[test]
    fn a_large_fleet_is_trimmed_to_the_nodes_that_need_a_look() {
        let mut s = crate::service::empty_snapshot().status.clone();
        s.online = true;
        let node = |i: usize, state: NodeState| NodeSummary {
            node: NodeId::new(format!("n-{i:03}")).expect("valid"),
            state,
            health: if state == NodeState::Online {
                fog_proto::NodeHealth::Healthy
            } else {
                fog_proto::NodeHealth::Offline
            },
            ..crate::http::tests::fleet_view().status.nodes[0].clone()
        };
        s.nodes = (0..100).map(|i| node(i, NodeState::Online)).collect();
        for n in &mut s.nodes {
            n.notices.clear();
            n.degraded.clear();
            n.identity = "approved".into();
        }
        s.nodes[97] = node(97, NodeState::Offline);
        s.nodes[98].drained = true;
        s.nodes[99].notices = vec!["under-voltage".into()];
        let mut same = s.clone();
        same.trim_nodes(100);
        assert_eq!(same, s, "at the bound: untouched");
        assert_eq!(s.cut(usize::MAX, 100), s, "a cut at the bound: a copy");
        let cut = s.cut(usize::MAX, 10);
        s.trim_nodes(10);
        assert_eq!(cut, s, "a cut keeps what trimming keeps");
        let ids: Vec<&str> = s.nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(
            ids,
            [
                "n-000", "n-001", "n-002", "n-003", "n-004", "n-005", "n-006", "n-097", "n-098",
                "n-099"
            ],
            "the three that need a look, then the first calm ones, by id"
        );
        assert_eq!(
            s.omitted,
            fog_proto::OmittedNodes {
                online: 90,
                suspect: 0,
                offline: 0
            }
        );
        let t = render_table(&s, 10_000);
        assert!(
            t.contains("... and 90 more nodes not listed (90 online"),
            "{t}"
        );
        assert!(
            t.contains("100 nodes: 99 online, 0 suspect, 1 offline"),
            "{t}"
        );
    }
}
