//! The result outbox: results waiting to be published (batched, or waiting for room
//! in the MQTT request queue), bounded, and sent as lists of up to
//! [`BATCH_MAX_ITEMS`] / [`BATCH_TARGET_BYTES`]. What goes in was stored first where
//! it had to be (the host's job); the outbox only publishes.

use std::collections::VecDeque;
use std::sync::Arc;

use fog_proto::message::{BATCH_MAX_ITEMS, BATCH_TARGET_BYTES};
use fog_proto::{codec, Encoding, Outcome, TaskResult, TaskResults};

use crate::forward::Forwarder;
use crate::store::backlog::Class;
use crate::transport::PublishError;
use crate::trust::Identity;

/// Results waiting to be published, at most this many.
const OUTBOX_MAX: usize = 65_536;

pub(super) struct Outbox {
    queue: VecDeque<TaskResult>,
    encoding: Encoding,
    /// Signs each list as this node.
    identity: Arc<Identity>,
}

impl Outbox {
    pub(super) fn new(encoding: Encoding, identity: Arc<Identity>) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            encoding,
            identity,
        }
    }

    /// Queue a result; results leave in lists (see [`flush`](Self::flush)), at once
    /// when a list is full.
    pub(super) fn push(&mut self, out: &mut Forwarder, r: TaskResult) {
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
    /// (called on a short timer and when a list is full).
    pub(super) fn flush(&mut self, out: &mut Forwarder) {
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
                Err(PublishError::Busy) | Err(PublishError::NotConnected) => return,
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

    /// The queued results, oldest first.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &TaskResult> {
        self.queue.iter()
    }
}
