//! Task dispatch: take submissions, place each on an online agent that runs its kind
//! (round robin for now; the placement strategies are the next issue), relay results
//! to the client's reply topic, re-place work an agent refused as busy, and make the
//! client see exactly one final result per task id.
//!
//! Every decision returns what to send ([`Out`]) instead of publishing, so this module
//! is plain state that unit tests drive directly; the service groups the outputs into
//! list messages per topic.

use std::collections::{HashMap, VecDeque};

use fog_proto::{
    codec, NodeId, Outcome, TaskAssignment, TaskResult, TaskResults, TaskSubmission,
    TaskSubmissions,
};

use crate::registry::Registry;

/// Most placements of one task before its last refusal is passed to the client.
pub const MAX_ATTEMPTS: u32 = 8;
/// Final results remembered to answer a client that submits the same id again.
pub const REMEMBER_FINISHED: usize = 100_000;

/// Something to send (QoS 1, not retained), grouped into lists by the service.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// To `nodes/{node}/tasks`.
    Assign { node: NodeId, task: TaskAssignment },
    /// To a client's reply topic.
    Reply { topic: String, result: TaskResult },
}

struct InFlight {
    sub: TaskSubmission,
    node: NodeId,
    attempt: u32,
    refused_by: Vec<NodeId>,
}

/// Counters, reported in the coordinator status.
#[derive(Debug, Default, Clone, Copy)]
pub struct DispatchCounters {
    pub submitted: u64,
    pub placed: u64,
    pub replaced: u64,
    pub completed: u64,
    pub failed: u64,
    pub duplicate_submissions: u64,
    pub duplicate_results_dropped: u64,
    pub stale_results_dropped: u64,
    pub unplaceable: u64,
    pub malformed: u64,
}

pub struct Dispatcher {
    coordinator: NodeId,
    next: usize,
    inflight: HashMap<String, InFlight>,
    finished: HashMap<String, Out>,
    finished_order: VecDeque<String>,
    pub counters: DispatchCounters,
}

fn valid_reply_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && !t.contains(['+', '#', '\0']) && !t.starts_with('$')
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher {
            coordinator: NodeId::new("coordinator").expect("a valid node id"),
            next: 0,
            inflight: HashMap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            counters: DispatchCounters::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn answer(&self, sub: &TaskSubmission, outcome: Outcome) -> Out {
        Out::Reply {
            topic: sub.reply_to.clone(),
            result: TaskResult {
                id: sub.id.clone(),
                attempt: 0,
                node: self.coordinator.clone(),
                at_ms: fog_agent::service::now_ms(),
                outcome,
            },
        }
    }

    fn remember(&mut self, id: String, out: Out) {
        if self.finished.insert(id.clone(), out).is_none() {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > REMEMBER_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// A client's list of submissions.
    pub fn on_submit(&mut self, registry: &Registry, payload: &[u8]) -> Vec<Out> {
        let list: TaskSubmissions = match codec::decode(payload) {
            Ok(s) => s,
            Err(error) => {
                self.counters.malformed += 1;
                tracing::debug!(%error, "malformed task submissions");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(list.items.len());
        for sub in list.items {
            out.extend(self.submit_one(registry, sub));
        }
        out
    }

    fn submit_one(&mut self, registry: &Registry, mut sub: TaskSubmission) -> Option<Out> {
        if !valid_reply_topic(&sub.reply_to) || sub.id.is_empty() || sub.id.len() > 128 {
            self.counters.malformed += 1;
            tracing::debug!(task.id = %sub.id.chars().take(64).collect::<String>(), "submission without a usable id or reply topic");
            return None;
        }
        if let Some(Out::Reply { result, .. }) = self.finished.get(&sub.id) {
            self.counters.duplicate_submissions += 1;
            return Some(Out::Reply {
                topic: std::mem::take(&mut sub.reply_to),
                result: result.clone(),
            });
        }
        if self.inflight.contains_key(&sub.id) {
            self.counters.duplicate_submissions += 1;
            return None;
        }
        self.counters.submitted += 1;
        Some(self.place(registry, sub, 1, Vec::new()))
    }

    fn place(
        &mut self,
        registry: &Registry,
        sub: TaskSubmission,
        attempt: u32,
        refused_by: Vec<NodeId>,
    ) -> Out {
        let all = registry.candidates(&sub.kind);
        // Prefer nodes that have not refused this task; if all have, try them again.
        let fresh: Vec<&NodeId> = all.iter().filter(|n| !refused_by.contains(n)).collect();
        let pool: Vec<&NodeId> = if fresh.is_empty() {
            all.iter().collect()
        } else {
            fresh
        };
        if pool.is_empty() {
            self.counters.unplaceable += 1;
            let reason = format!(
                "no online node runs kind {:?}",
                sub.kind.chars().take(64).collect::<String>()
            );
            let p = self.answer(
                &sub,
                Outcome::Rejected {
                    reason,
                    retryable: true,
                },
            );
            self.remember(sub.id.clone(), p.clone());
            return p;
        }
        let node = pool[self.next % pool.len()].clone();
        self.next = self.next.wrapping_add(1);
        let a = TaskAssignment {
            id: sub.id.clone(),
            attempt,
            kind: sub.kind.clone(),
            payload: sub.payload.clone(),
            timeout_ms: sub.timeout_ms,
            priority: sub.priority,
            deadline_ms: 0,
            cacheable: sub.cacheable,
        };
        let out = Out::Assign {
            node: node.clone(),
            task: a,
        };
        self.counters.placed += 1;
        self.inflight.insert(
            sub.id.clone(),
            InFlight {
                sub,
                node,
                attempt,
                refused_by,
            },
        );
        out
    }

    /// A list of results from `node`.
    pub fn on_result(&mut self, registry: &Registry, node: &str, payload: &[u8]) -> Vec<Out> {
        let list: TaskResults = match codec::decode(payload) {
            Ok(r) => r,
            Err(error) => {
                self.counters.malformed += 1;
                tracing::debug!(node.id = %node, %error, "malformed task results");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for r in list.items {
            out.extend(self.result_one(registry, node, r));
        }
        out
    }

    fn result_one(&mut self, registry: &Registry, node: &str, r: TaskResult) -> Option<Out> {
        let Some(f) = self.inflight.get(&r.id) else {
            if self.finished.contains_key(&r.id) {
                self.counters.duplicate_results_dropped += 1;
            } else {
                self.counters.stale_results_dropped += 1;
            }
            return None;
        };
        // Fencing: only the current attempt, from the node it was placed on, counts.
        if r.attempt != f.attempt || f.node.as_str() != node {
            self.counters.stale_results_dropped += 1;
            return None;
        }
        let retry = match &r.outcome {
            Outcome::Accepted => return None,
            Outcome::Rejected {
                retryable: true, ..
            }
            | Outcome::Failed {
                retryable: true, ..
            } => true,
            _ => false,
        };
        let f = self.inflight.remove(&r.id).expect("looked up above");
        if retry && f.attempt < MAX_ATTEMPTS {
            self.counters.replaced += 1;
            let mut refused = f.refused_by;
            refused.push(f.node);
            return Some(self.place(registry, f.sub, f.attempt + 1, refused));
        }
        match r.outcome {
            Outcome::Completed { .. } => self.counters.completed += 1,
            _ => self.counters.failed += 1,
        }
        let id = r.id.clone();
        let p = Out::Reply {
            topic: f.sub.reply_to,
            result: r,
        };
        self.remember(id, p.clone());
        Some(p)
    }

    pub fn counters_map(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        vec![
            ("tasks_submitted_total", c.submitted),
            ("tasks_placed_total", c.placed),
            ("tasks_replaced_total", c.replaced),
            ("tasks_completed_total", c.completed),
            ("tasks_failed_total", c.failed),
            ("tasks_in_flight", self.inflight.len() as u64),
            ("tasks_duplicate_submissions_total", c.duplicate_submissions),
            (
                "tasks_duplicate_results_dropped_total",
                c.duplicate_results_dropped,
            ),
            ("tasks_stale_results_dropped_total", c.stale_results_dropped),
            ("tasks_unplaceable_total", c.unplaceable),
            ("tasks_malformed_total", c.malformed),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LivenessConfig;
    use fog_proto::{Birth, Encoding, Payload, Status, Topics};
    use tokio::time::Instant;

    fn registry(nodes: &[&str]) -> Registry {
        let mut r = Registry::new(Topics::default(), LivenessConfig::default());
        for n in nodes {
            let s = Status {
                online: true,
                at_ms: 1,
                reason: String::new(),
                birth: Some(Birth {
                    node: NodeId::new(*n).expect("valid"),
                    version: "0".into(),
                    arch: "x".into(),
                    cores: 1,
                    memory_bytes: 1,
                    labels: Default::default(),
                    encoding: Encoding::Json,
                    task_kinds: vec!["echo".into()],
                    heartbeat_interval_ms: 1000,
                    metrics_interval_ms: 1000,
                    keep_alive_secs: 10,
                    started_at_ms: 1,
                }),
            };
            r.ingest(
                &format!("fog/v1/nodes/{n}/status"),
                &codec::encode(&s, Encoding::Json).expect("encodes"),
                Instant::now(),
                1,
            )
            .expect("birth");
        }
        r
    }

    fn submit(id: &str, kind: &str) -> Vec<u8> {
        codec::encode(
            &TaskSubmissions {
                items: vec![TaskSubmission {
                    id: id.into(),
                    kind: kind.into(),
                    payload: Payload(b"x".to_vec()),
                    reply_to: "fog/v1/clients/c/results".into(),
                    priority: 0,
                    timeout_ms: 1000,
                    cacheable: false,
                    key: String::new(),
                    strategy: String::new(),
                }],
            },
            Encoding::Json,
        )
        .expect("encodes")
    }

    fn result(id: &str, attempt: u32, node: &str, outcome: Outcome) -> Vec<u8> {
        codec::encode(
            &TaskResults {
                items: vec![TaskResult {
                    id: id.into(),
                    attempt,
                    node: NodeId::new(node).expect("valid"),
                    at_ms: 1,
                    outcome,
                }],
            },
            Encoding::Json,
        )
        .expect("encodes")
    }

    fn done() -> Outcome {
        Outcome::Completed {
            output: Payload(b"x".to_vec()),
            truncated: false,
            exit_code: None,
            duration_ms: 1,
            cpu_ms: 0,
            peak_rss_bytes: 0,
            from_cache: false,
        }
    }

    fn node_of(o: &Out) -> String {
        match o {
            Out::Assign { node, .. } => node.to_string(),
            other => panic!("not an assignment: {other:?}"),
        }
    }

    #[test]
    fn round_robin_over_capable_nodes() {
        let r = registry(&["a", "b", "c"]);
        let mut d = Dispatcher::new();
        let nodes: Vec<String> = (0..6)
            .map(|i| node_of(&d.on_submit(&r, &submit(&format!("t{i}"), "echo"))[0]))
            .collect();
        let count = |n: &str| nodes.iter().filter(|t| *t == n).count();
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
    }

    #[test]
    fn busy_is_placed_elsewhere_and_only_the_first_result_is_forwarded() {
        let r = registry(&["a", "b"]);
        let mut d = Dispatcher::new();
        let first = d.on_submit(&r, &submit("t", "echo"));
        let node1 = if node_of(&first[0]) == "a" { "a" } else { "b" };
        let node2 = if node1 == "a" { "b" } else { "a" };
        let busy = Outcome::Rejected {
            reason: "busy".into(),
            retryable: true,
        };
        let again = d.on_result(&r, node1, &result("t", 1, node1, busy));
        assert_eq!(again.len(), 1);
        assert_eq!(node_of(&again[0]), node2);
        // A late result of attempt 1 is fenced off.
        assert!(d
            .on_result(&r, node1, &result("t", 1, node1, done()))
            .is_empty());
        let fwd = d.on_result(&r, node2, &result("t", 2, node2, done()));
        assert_eq!(fwd.len(), 1);
        assert!(matches!(&fwd[0], Out::Reply { topic, .. } if topic == "fog/v1/clients/c/results"));
        // A redelivered duplicate of the winning result is dropped.
        assert!(d
            .on_result(&r, node2, &result("t", 2, node2, done()))
            .is_empty());
        assert_eq!(d.counters.duplicate_results_dropped, 1);
        assert_eq!(d.counters.stale_results_dropped, 1);
        // The client resubmitting the id gets the same answer, without a new run.
        let re = d.on_submit(&r, &submit("t", "echo"));
        assert_eq!(re, fwd);
    }

    #[test]
    fn no_capable_node_is_a_clear_answer() {
        let r = registry(&["a"]);
        let mut d = Dispatcher::new();
        let out = d.on_submit(&r, &submit("t", "resize"));
        let Out::Reply { result: res, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            matches!(res.outcome, Outcome::Rejected { ref reason, .. } if reason.contains("resize")),
            "{res:?}"
        );
        assert!(d.on_submit(&r, b"garbage").is_empty());
        assert_eq!(d.counters.malformed, 1);
    }
}
