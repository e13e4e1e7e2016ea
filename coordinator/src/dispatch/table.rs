//! The task table: every task not yet finished, the timers that wake them (retry
//! backoffs, timeouts), and the count of those waiting for a node. Where a task is
//! can change only through the table's methods, so `waiting` is always the number of
//! tasks in [`Where::Waiting`] (the limit on how many may wait is checked against it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use fog_proto::{TaskResult, TaskSubmission};
use tokio::time::Instant;

use crate::placement::{hash64, Strategy};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Where {
    Placed {
        slot: usize,
        at: Instant,
        probe: bool,
    },
    /// Waiting for its next try (a retry's backoff, or no eligible node yet).
    Waiting { since: Instant },
}

pub(super) struct Task {
    pub(super) sub: TaskSubmission,
    /// Wall clock at submission, for `fog-coordinator tasks`.
    pub(super) submitted_ms: u64,
    pub(super) strategy: Strategy,
    pub(super) key_hash: u64,
    pub(super) attempt: u32,
    /// Private: moved only by [`TaskTable`], which keeps `waiting` in step.
    at: Where,
    pub(super) refused_by: Vec<usize>,
    pub(super) last_failure: Option<TaskResult>,
    /// Placements that failed on the node's account (failed-retryable, timed out, node
    /// lost); `max_attempts` of them dead-letter the task.
    pub(super) failures: u32,
    /// Since when every node asked has refused it as busy: back-pressure does not use
    /// up attempts, but a task refused for `max_wait` is dead-lettered.
    pub(super) busy_since: Option<Instant>,
    /// Placed at least once since the coordinator took it (the placement latency
    /// counts the first wait only: later ones include a deliberate backoff).
    pub(super) placed_once: bool,
}

impl Task {
    /// A task waiting for its first placement as `attempt` (1, or more after a
    /// restart), placed by the hash of its key (its id if it has none).
    pub(super) fn new(
        sub: TaskSubmission,
        submitted_ms: u64,
        strategy: Strategy,
        attempt: u32,
        now: Instant,
    ) -> Task {
        let key = if sub.key.is_empty() {
            &sub.id
        } else {
            &sub.key
        };
        Task {
            key_hash: hash64(key.as_bytes()),
            sub,
            submitted_ms,
            strategy,
            attempt,
            at: Where::Waiting { since: now },
            refused_by: Vec::new(),
            last_failure: None,
            failures: 0,
            busy_since: None,
            placed_once: false,
        }
    }

    pub(super) fn at(&self) -> Where {
        self.at
    }

    /// The timeout this task runs under on a node.
    pub(super) fn timeout(&self, default: Duration) -> Duration {
        if self.sub.timeout_ms == 0 {
            default
        } else {
            Duration::from_millis(u64::from(self.sub.timeout_ms))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Retry,
    Timeout,
}

/// A wake-up for attempt `attempt` of task `id`; stale once the task moved on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub(super) at: Instant,
    pub(super) kind: TimerKind,
    pub(super) attempt: u32,
    pub(super) id: String,
}

#[derive(Default)]
pub(super) struct TaskTable {
    tasks: HashMap<String, Task>,
    timers: BinaryHeap<Reverse<Timer>>,
    waiting: usize,
}

impl TaskTable {
    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks waiting for a node (not placed).
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.tasks.contains_key(id)
    }

    pub(super) fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Task)> {
        self.tasks.iter()
    }

    /// Add a task (new ones are waiting).
    pub(super) fn insert(&mut self, task: Task) {
        let waiting = matches!(task.at, Where::Waiting { .. });
        if let Some(old) = self.tasks.insert(task.sub.id.clone(), task) {
            // Callers check first; keep the count right regardless.
            if matches!(old.at, Where::Waiting { .. }) {
                self.waiting -= 1;
            }
        }
        if waiting {
            self.waiting += 1;
        }
    }

    /// Take a task out for good (finished, given up, dead-lettered).
    pub(super) fn remove(&mut self, id: &str) -> Option<Task> {
        let t = self.tasks.remove(id)?;
        if matches!(t.at, Where::Waiting { .. }) {
            self.waiting -= 1;
        }
        Some(t)
    }

    /// A waiting task goes to `slot`; its timeout timer is set.
    pub(super) fn place(
        &mut self,
        id: &str,
        slot: usize,
        now: Instant,
        probe: bool,
        timeout_at: impl FnOnce(&Task) -> Instant,
    ) -> Option<(&Task, Option<Duration>)> {
        let t = self.tasks.get_mut(id)?;
        let mut first_wait = None;
        if let Where::Waiting { since } = t.at {
            self.waiting -= 1;
            if !t.placed_once {
                first_wait = Some(now.saturating_duration_since(since));
            }
        }
        t.placed_once = true;
        t.at = Where::Placed {
            slot,
            at: now,
            probe,
        };
        let timer = Timer {
            at: timeout_at(t),
            kind: TimerKind::Timeout,
            attempt: t.attempt,
            id: id.to_owned(),
        };
        self.timers.push(Reverse(timer));
        self.tasks.get(id).map(|t| (t, first_wait))
    }

    /// Take a task off its node (it will not report there any more): waiting again.
    /// Returns the slot it was on.
    pub(super) fn unplace(&mut self, id: &str, now: Instant) -> Option<usize> {
        let t = self.tasks.get_mut(id)?;
        let Where::Placed { slot, .. } = t.at else {
            return None;
        };
        t.at = Where::Waiting { since: now };
        self.waiting += 1;
        Some(slot)
    }

    /// Waiting from `now` on (a new attempt starts its wait afresh).
    pub(super) fn wait_from(&mut self, id: &str, now: Instant) {
        if let Some(t) = self.tasks.get_mut(id) {
            if matches!(t.at, Where::Placed { .. }) {
                self.waiting += 1;
            }
            t.at = Where::Waiting { since: now };
        }
    }

    /// Look at `id` again at `at` (its retry or its next try for a node).
    pub(super) fn retry_at(&mut self, id: &str, attempt: u32, at: Instant) {
        self.timers.push(Reverse(Timer {
            at,
            kind: TimerKind::Retry,
            attempt,
            id: id.to_owned(),
        }));
    }

    /// The next timer due at `now`, if any (stale ones included: the caller checks
    /// the attempt).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.timers.peek().is_none_or(|Reverse(t)| t.at > now) {
            return None;
        }
        self.timers.pop().map(|Reverse(t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, now: Instant) -> Task {
        let sub = TaskSubmission {
            id: id.to_owned(),
            kind: "echo".to_owned(),
            payload: Default::default(),
            reply_to: "r".to_owned(),
            priority: 0,
            timeout_ms: 0,
            cacheable: false,
            key: String::new(),
            strategy: String::new(),
            requires: Default::default(),
        };
        Task::new(sub, 0, Strategy::P2c, 1, now)
    }

    fn counted(t: &TaskTable) -> usize {
        t.tasks
            .values()
            .filter(|t| matches!(t.at, Where::Waiting { .. }))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_counts_exactly_the_tasks_not_on_a_node() {
        let now = Instant::now();
        let mut t = TaskTable::default();
        for id in ["a", "b", "c"] {
            t.insert(task(id, now));
        }
        assert_eq!((t.waiting(), counted(&t)), (3, 3));
        t.place("a", 0, now, false, |_| now).expect("placed");
        t.place("b", 1, now, false, |_| now).expect("placed");
        assert_eq!((t.waiting(), counted(&t)), (1, 1));
        // Placing a placed task again (a probe re-decided) does not count twice.
        t.place("b", 2, now, false, |_| now).expect("placed");
        assert_eq!((t.waiting(), counted(&t)), (1, 1));
        assert_eq!(t.unplace("a", now), Some(0));
        assert_eq!(t.unplace("a", now), None, "already off its node");
        assert_eq!((t.waiting(), counted(&t)), (2, 2));
        t.wait_from("a", now);
        t.wait_from("b", now);
        assert_eq!((t.waiting(), counted(&t)), (3, 3));
        t.remove("c");
        t.remove("missing");
        assert_eq!((t.waiting(), counted(&t)), (2, 2));
        t.insert(task("a", now));
        assert_eq!((t.waiting(), counted(&t)), (2, 2), "a replaced entry");
        t.remove("a");
        t.remove("b");
        assert_eq!((t.waiting(), t.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn timers_come_due_in_order() {
        let now = Instant::now();
        let mut t = TaskTable::default();
        t.insert(task("a", now));
        t.retry_at("a", 1, now + Duration::from_millis(20));
        t.place("a", 0, now, false, |_| now + Duration::from_millis(10));
        assert_eq!(t.pop_due(now), None);
        let first = t.pop_due(now + Duration::from_millis(30)).expect("due");
        assert_eq!(first.kind, TimerKind::Timeout);
        let second = t.pop_due(now + Duration::from_millis(30)).expect("due");
        assert_eq!(second.kind, TimerKind::Retry);
        assert_eq!(t.pop_due(now + Duration::from_secs(1)), None);
    }
}
