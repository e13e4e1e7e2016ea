//! How a writer thread gathers operations into one durable commit (one fsync): the
//! classic group commit. A commit takes the first operation and whatever is already
//! queued behind it; what arrives while that commit is being written waits in the
//! queue and forms the next batch, so batches grow with the load by themselves and a
//! lone operation is committed at once.
//!
//! A fixed window (wait `window` after the first operation, then commit) cost every
//! operation that window even on an idle system: one task at a time paid the agent
//! store's 10 ms twice and the journal's once. An optional window remains for a writer
//! that wants fewer fsyncs under load (flash wear) at the price of latency: when the
//! previous batch had more than one operation, the next one lingers for it. Both
//! fog writers default to none: measured side by side, no window was as fast or
//! faster under load too (docs/performance.md, "Latency").

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// The gathering policy of one writer thread.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    window: Duration,
    max: usize,
    /// The previous batch had company: writes are arriving faster than one commit.
    loaded: bool,
}

impl GroupCommit {
    /// At most `max` operations per batch, lingering at most `window` under load.
    pub fn new(window: Duration, max: usize) -> GroupCommit {
        GroupCommit {
            window,
            max: max.max(1),
            loaded: false,
        }
    }

    /// Adds to `batch` (which holds the first operation, received by the caller)
    /// what is already queued, then, if the previous batch had company, what arrives
    /// within the window; at most `max` in all. Returns early when every sender is
    /// gone: the caller commits the batch and its next `recv` says so.
    pub fn fill<T>(&mut self, rx: &Receiver<T>, batch: &mut Vec<T>) {
        let mut open = true;
        while batch.len() < self.max {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if self.loaded && open {
            let until = Instant::now() + self.window;
            while batch.len() < self.max {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(op) => batch.push(op),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        self.loaded = batch.len() > 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_lone_operation_is_committed_at_once_whatever_the_window() {
        let (tx, rx) = channel();
        let mut g = GroupCommit::new(Duration::from_secs(3600), 64);
        tx.send(1).expect("send");
        let mut batch = vec![rx.recv().expect("first")];
        let started = Instant::now();
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [1]);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited for the window"
        );
    }

    #[test]
    fn what_is_queued_goes_in_the_same_batch_up_to_the_limit() {
        let (tx, rx) = channel();
        let mut g = GroupCommit::new(Duration::ZERO, 3);
        for i in 0..5 {
            tx.send(i).expect("send");
        }
        let mut batch = vec![rx.recv().expect("first")];
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [0, 1, 2]);
        batch.clear();
        batch.push(rx.recv().expect("next"));
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [3, 4]);
    }

    #[test]
    fn after_a_batch_with_company_the_next_one_waits_for_more() {
        let (tx, rx) = channel();
        let mut g = GroupCommit::new(Duration::from_secs(3600), 3);
        tx.send(0).expect("send");
        tx.send(1).expect("send");
        let mut batch = vec![rx.recv().expect("first")];
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [0, 1], "under load from here on");
        tx.send(2).expect("send");
        let late = tx.clone();
        // Arrives while the next batch lingers: without the linger it would be a
        // batch of its own.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            late.send(3).expect("send");
            late.send(4).expect("send");
        });
        batch.clear();
        batch.push(rx.recv().expect("next"));
        g.fill(&rx, &mut batch);
        sender.join().expect("sender");
        assert_eq!(batch, [2, 3, 4], "lingered until the batch was full");
    }

    #[test]
    fn a_lone_operation_after_a_busy_spell_ends_the_lingering() {
        let (tx, rx) = channel();
        let mut g = GroupCommit::new(Duration::from_millis(20), 64);
        tx.send(0).expect("send");
        tx.send(1).expect("send");
        let mut batch = vec![rx.recv().expect("first")];
        g.fill(&rx, &mut batch);
        // The next batch lingers (20 ms) and finds no company: the one after is
        // idle again and does not wait, whatever the window.
        tx.send(2).expect("send");
        batch.clear();
        batch.push(rx.recv().expect("next"));
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [2]);
        g.window = Duration::from_secs(3600);
        tx.send(3).expect("send");
        batch.clear();
        batch.push(rx.recv().expect("next"));
        let started = Instant::now();
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [3]);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited for the window"
        );
    }

    #[test]
    fn a_closed_channel_ends_the_batch_with_what_was_queued() {
        let (tx, rx) = channel();
        let mut g = GroupCommit::new(Duration::from_secs(3600), 64);
        tx.send(0).expect("send");
        tx.send(1).expect("send");
        let mut batch = vec![rx.recv().expect("first")];
        g.fill(&rx, &mut batch);
        // Loaded now: the next fill would linger for an hour, but the senders are gone.
        tx.send(2).expect("send");
        drop(tx);
        batch.clear();
        batch.push(rx.recv().expect("next"));
        let started = Instant::now();
        g.fill(&rx, &mut batch);
        assert_eq!(batch, [2]);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited on a closed channel"
        );
    }
}
