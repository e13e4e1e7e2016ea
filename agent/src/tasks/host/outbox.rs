//! The result outbox: results waiting to be published (batched, or waiting for room
//! in the MQTT request queue), bounded, and sent as lists of up to
//! [`BATCH_MAX_ITEMS`] / [`BATCH_TARGET_BYTES`]. What goes in was stored first where
//! it had to be (the host's job); the outbox only publishes.

use std::collections::VecDeque;
use std::sync::Arc;

use fog_proto::message::{BATCH_MAX_ITEMS, BATCH_TARGET_BYTES};
use fog_proto::{codec, Encoding, Outcome, TaskResult, TaskResults};

use crate::forward::{Forwarder, Uplink};
use crate::store::backlog::Class;
use crate::transport::PublishError;
use crate::trust::Identity;

/// Results waiting to be published, at most this many.
const OUTBOX_MAX: usize = 65_536;

pub(super) struct Outbox {
    queue: VecDeque<TaskResult>,
    /// The last flush stopped on a full request queue or a dropped link: flushing again
    /// before the next tick would only spin.
    blocked: bool,
    encoding: Encoding,
    /// Signs each list as this node.
    identity: Arc<Identity>,
}

impl Outbox {
    pub(super) fn new(encoding: Encoding, identity: Arc<Identity>) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            blocked: false,
            encoding,
            identity,
        }
    }

    /// Queue a result; results leave in lists (see [`flush`](Self::flush)), at once
    /// when a list is full.
    pub(super) fn push<L: Uplink>(&mut self, out: &mut Forwarder<L>, r: TaskResult) {
        if self.queue.len() >= OUTBOX_MAX {
            tracing::warn!(task.id = %r.id, "result outbox full; the coordinator will ask again");
            return;
        }
        self.queue.push_back(r);
        if self.queue.len() >= BATCH_MAX_ITEMS {
            self.flush(out);
        }
    }

    /// Publish queued results as lists of up to BATCH_MAX_ITEMS / BATCH_TARGET_BYTES
    /// (called when the agent's loop has nothing else ready, on a short timer, and
    /// when a list is full).
    pub(super) fn flush<L: Uplink>(&mut self, out: &mut Forwarder<L>) {
        self.blocked = false;
        while !self.queue.is_empty() {
            let (n, bytes) = self.next_list();
            let mut list = TaskResults {
                seal: None,
                items: self.queue.iter().take(n).cloned().collect(),
            };
            // One signature per list, not per result.
            self.identity.seal(&mut list, fog_rt::clock::now_ms());
            // Sized from the estimate: a full list is not copied through doublings.
            let mut wire = Vec::with_capacity(bytes + 64);
            codec::encode_into(&list, self.encoding, &mut wire)
                .expect("task results always encode");
            match out.publish(Class::Result, wire) {
                Ok(()) => {
                    self.queue.drain(..n);
                }
                Err(PublishError::Busy) | Err(PublishError::NotConnected) => {
                    self.blocked = true;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "task results not published; the coordinator will ask again");
                    self.queue.drain(..n);
                }
            }
        }
    }

    /// How many results from the front make the next list, and its estimated size.
    fn next_list(&self) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for r in self.queue.iter().take(BATCH_MAX_ITEMS) {
            let size = match &r.outcome {
                Outcome::Completed { output, .. } => output.0.len() * 4 / 3 + 256,
                _ => 256,
            };
            if n > 0 && bytes + size > BATCH_TARGET_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        (n, bytes)
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Results wait and the last flush was not stopped by a full queue or no link:
    /// worth flushing as soon as the agent is idle.
    pub(super) fn ready_to_flush(&self) -> bool {
        !self.queue.is_empty() && !self.blocked
    }

    /// The queued results, oldest first.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &TaskResult> {
        self.queue.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::time::Duration;

    use fog_proto::NodeId;

    use super::*;
    use crate::config::StoreConfig;
    use crate::forward::{ClassTopics, ReplayLimits};
    use crate::store::RedbStore;

    /// A live link that takes publishes, or says its request queue is full.
    #[derive(Default)]
    struct Queue {
        full: Cell<bool>,
        sent: RefCell<usize>,
    }

    impl Uplink for Queue {
        fn publish_tracked(&self, _: &str, _: Vec<u8>, _: u64) -> Result<(), PublishError> {
            if self.full.get() {
                return Err(PublishError::Busy);
            }
            *self.sent.borrow_mut() += 1;
            Ok(())
        }
    }

    fn result(id: &str) -> TaskResult {
        TaskResult {
            id: id.into(),
            attempt: 1,
            node: NodeId::new("n1").expect("valid id"),
            at_ms: 0,
            outcome: Outcome::Rejected {
                reason: "test".into(),
                retryable: false,
            },
        }
    }

    /// The idle flush must not spin on a full request queue: after a flush that the
    /// queue stopped, the outbox waits for the timer's flush; once one gets through it
    /// is ready again.
    #[tokio::test]
    async fn a_flush_stopped_by_a_full_queue_waits_for_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig {
            result_retention: Duration::from_secs(60),
            result_retention_count: 10,
            commit_interval: Duration::ZERO,
            max_backlog_bytes: 1 << 20,
            replay_per_sec: 100,
            replay_in_flight: 10,
            rerun_after_restart: false,
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (store, _) = RedbStore::<u32>::open(dir.path(), &cfg, tx).expect("store");
        let (rtx, _removed) = tokio::sync::mpsc::unbounded_channel();
        let topics = ClassTopics {
            readings: "m".into(),
            alerts: "a".into(),
            results: "r".into(),
        };
        let limits = ReplayLimits {
            per_sec: 100,
            in_flight: 10,
        };
        let backlog = store.backlog(&cfg, rtx).expect("backlog");
        let mut fwd = Forwarder::new(Queue::default(), backlog, topics, limits);
        fwd.on_connected();
        let (identity, _) = Identity::load_or_create(dir.path(), "n1").expect("node key");
        let mut outbox = Outbox::new(Encoding::Json, Arc::new(identity));

        assert!(!outbox.ready_to_flush(), "nothing queued");
        outbox.push(&mut fwd, result("t1"));
        assert!(outbox.ready_to_flush(), "a queued result is ready at once");

        fwd.link().full.set(true);
        outbox.flush(&mut fwd);
        assert_eq!(outbox.len(), 1, "kept, not dropped");
        assert!(
            !outbox.ready_to_flush(),
            "blocked until the next timed flush"
        );
        outbox.push(&mut fwd, result("t2"));
        assert!(!outbox.ready_to_flush(), "still blocked with more queued");

        fwd.link().full.set(false);
        outbox.flush(&mut fwd);
        assert_eq!(
            (outbox.len(), *fwd.link().sent.borrow()),
            (0, 1),
            "one list of both"
        );
        outbox.push(&mut fwd, result("t3"));
        assert!(
            outbox.ready_to_flush(),
            "ready again after a flush got through"
        );
    }
}
