//! Groups what the dispatcher sends into list messages, one per topic, so many tasks
//! share one MQTT publish: each QoS 1 message costs the broker the same whatever it
//! carries, and the broker's message rate is what limits end-to-end throughput.
//!
//! Lists are sealed when they reach `BATCH_MAX_ITEMS` or about `BATCH_TARGET_BYTES`,
//! and on every flush: the main loop flushes whenever it has nothing else ready (so a
//! lone task waits for no timer, and what became ready together shares a list), and on
//! a millisecond tick, which bounds the wait while the loop stays busy.

use std::collections::{HashMap, VecDeque};

use fog_proto::message::{BATCH_MAX_ITEMS, BATCH_TARGET_BYTES};
use fog_proto::{
    codec, Encoding, NodeId, NodeTopic, Outcome, TaskAssignment, TaskAssignments, TaskResult,
    TaskResults, Topics,
};
use fog_rt::clock::now_ms;
use fog_rt::keys::{seal, KeyPair};
use fog_rt::transport::{Link, PublishError, Qos};

use crate::dispatch::Out;

/// Most messages held (sealed or not) before new ones are dropped with a warning; the
/// clients' and agents' timeouts then tell.
const MAX_HELD: usize = 262_144;

struct List<T> {
    items: Vec<T>,
    bytes: usize,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            items: Vec::new(),
            bytes: 0,
        }
    }
}

pub struct Batcher {
    topics: Topics,
    encoding: Encoding,
    /// Signs every assignment list, for its node: agents run nothing else.
    key: KeyPair,
    assign: HashMap<NodeId, List<TaskAssignment>>,
    replies: HashMap<String, List<TaskResult>>,
    ready: VecDeque<(String, Vec<u8>)>,
    held: usize,
    /// The last flush stopped on a full request queue or no connection: flushing again
    /// before the next tick would only spin.
    blocked: bool,
}

fn result_size(r: &TaskResult) -> usize {
    match &r.outcome {
        Outcome::Completed { output, .. } => output.0.len() * 4 / 3 + 256,
        _ => 256,
    }
}

impl Batcher {
    pub fn new(topics: Topics, encoding: Encoding, key: KeyPair) -> Self {
        Batcher {
            topics,
            encoding,
            key,
            assign: HashMap::new(),
            replies: HashMap::new(),
            ready: VecDeque::new(),
            held: 0,
            blocked: false,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.held == 0
    }

    /// Something is held and the last flush was not stopped by a full queue or no
    /// connection: worth flushing as soon as the main loop is idle.
    pub fn ready_to_flush(&self) -> bool {
        self.held > 0 && !self.blocked
    }

    pub fn push(&mut self, out: Out) {
        if self.held >= MAX_HELD {
            tracing::warn!(
                "outgoing task messages backed up; dropping one (its sender's timeout will tell)"
            );
            return;
        }
        self.held += 1;
        match out {
            Out::Assign { node, task } => {
                let size = task.payload.0.len() * 4 / 3 + 256;
                let l = self.assign.entry(node.clone()).or_default();
                if !l.items.is_empty() && l.bytes + size > BATCH_TARGET_BYTES {
                    self.seal_assign(&node);
                }
                let l = self.assign.entry(node.clone()).or_default();
                l.items.push(task);
                l.bytes += size;
                if l.items.len() >= BATCH_MAX_ITEMS {
                    self.seal_assign(&node);
                }
            }
            Out::Reply { topic, result } => {
                let size = result_size(&result);
                let l = self.replies.entry(topic.clone()).or_default();
                if !l.items.is_empty() && l.bytes + size > BATCH_TARGET_BYTES {
                    self.seal_reply(&topic);
                }
                let l = self.replies.entry(topic.clone()).or_default();
                l.items.push(result);
                l.bytes += size;
                if l.items.len() >= BATCH_MAX_ITEMS {
                    self.seal_reply(&topic);
                }
            }
        }
    }

    fn seal_assign(&mut self, node: &NodeId) {
        if let Some(l) = self.assign.get_mut(node) {
            if l.items.is_empty() {
                return;
            }
            let n = l.items.len();
            let mut list = TaskAssignments {
                seal: None,
                items: std::mem::take(&mut l.items),
            };
            // One signature per list (up to BATCH_MAX_ITEMS tasks), not per task.
            seal(&mut list, &self.key, node.as_str(), now_ms()).expect("assignments always encode");
            // Sized from the estimate, so a 256-task list is not copied through a
            // dozen doublings.
            let mut wire = Vec::with_capacity(std::mem::take(&mut l.bytes) + 64);
            codec::encode_into(&list, self.encoding, &mut wire).expect("assignments always encode");
            self.ready
                .push_back((self.topics.node(node, NodeTopic::Tasks), wire));
            // Held counts messages from here on, not items.
            self.held = self.held + 1 - n;
        }
    }

    fn seal_reply(&mut self, topic: &str) {
        if let Some(l) = self.replies.get_mut(topic) {
            if l.items.is_empty() {
                return;
            }
            let n = l.items.len();
            let list = TaskResults {
                seal: None,
                items: std::mem::take(&mut l.items),
            };
            let mut wire = Vec::with_capacity(std::mem::take(&mut l.bytes) + 64);
            codec::encode_into(&list, self.encoding, &mut wire).expect("results always encode");
            self.ready.push_back((topic.to_owned(), wire));
            self.held = self.held + 1 - n;
        }
    }

    /// Seal every open list and publish what the request queue takes.
    pub fn flush(&mut self, link: &Link) {
        self.blocked = false;
        let nodes: Vec<NodeId> = self
            .assign
            .iter()
            .filter(|(_, l)| !l.items.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for n in nodes {
            self.seal_assign(&n);
        }
        let topics: Vec<String> = self
            .replies
            .iter()
            .filter(|(_, l)| !l.items.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        for t in topics {
            self.seal_reply(&t);
        }
        // Forget empty lists of clients that went away, so the maps stay small.
        if self.replies.len() > 1024 {
            self.replies.retain(|_, l| !l.items.is_empty());
        }
        while let Some((topic, wire)) = self.ready.front() {
            match link.publish(topic, wire.clone(), Qos::AtLeastOnce, false) {
                Ok(()) => {}
                // No room or no connection: keep it for the next tick.
                Err(PublishError::Busy) | Err(PublishError::NotConnected) => {
                    self.blocked = true;
                    return;
                }
                Err(error) => tracing::warn!(%topic, %error, "task message not published"),
            }
            self.ready.pop_front();
            self.held -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use fog_rt::broker::BrokerConfig;
    use fog_rt::transport::LinkOptions;

    use super::*;

    fn reply(id: &str) -> Out {
        Out::Reply {
            topic: "fog/v1/clients/c1/results".into(),
            result: TaskResult {
                id: id.into(),
                attempt: 1,
                node: NodeId::new("n1").expect("valid id"),
                at_ms: 0,
                outcome: Outcome::Accepted,
            },
        }
    }

    /// The main loop's idle flush must not spin while nothing can be published: after
    /// a flush stopped by no connection, the batcher waits for the tick's flush.
    #[tokio::test]
    async fn a_flush_stopped_by_no_connection_waits_for_the_tick() {
        // A port nobody listens on: the link never connects.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let link = Link::start(LinkOptions {
            broker: BrokerConfig::plain(&format!("mqtt://127.0.0.1:{port}")).expect("url"),
            client_id: "batcher-test".into(),
            will: None,
            on_connect: Vec::new(),
            subscriptions: Vec::new(),
            max_packet_bytes: 1 << 20,
            queue: 8,
        })
        .expect("link");
        let key = KeyPair::generate().expect("key").0;
        let mut b = Batcher::new(Topics::default(), Encoding::Json, key);
        assert!(!b.ready_to_flush(), "nothing held");
        b.push(reply("t1"));
        assert!(b.ready_to_flush(), "held and not blocked: flush when idle");
        b.flush(&link);
        assert!(!b.is_idle(), "kept for later, not dropped");
        assert!(!b.ready_to_flush(), "blocked until the tick");
        b.push(reply("t2"));
        assert!(!b.ready_to_flush(), "still blocked with more held");
    }
}
