//! What the HTTP API asks of the main loop (which alone owns the dispatcher): a
//! bounded channel of commands, each with its own reply; and the submissions the API
//! waits on ([`Watchers`]).

use std::collections::HashMap;

use fog_proto::{NodeId, Outcome, TaskResult, TaskSubmission};
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the main loop, at most (a full channel is a 503).
pub const QUEUE: usize = 64;

/// Task ids the API waits on at most, over every request (a request past it is
/// answered busy): each costs a map entry until its answer or its request is gone.
pub const WATCHED_MAX: usize = 10_000;

#[derive(Debug)]
pub enum Command {
    /// Place nothing new on `node` (`drain`), or place on it again.
    Drain {
        node: NodeId,
        drain: bool,
        reply: oneshot::Sender<Drained>,
    },
    /// Take an offline node out of the fleet view (`Err`: why not, it is online).
    Forget {
        node: NodeId,
        reply: oneshot::Sender<Result<Forgot, String>>,
    },
    /// Tasks from `client` (whose signed request the API checked): through the gate
    /// and into the table; every answer for their ids to `answers` until each is
    /// `wait`ed for.
    Submit {
        client: String,
        items: Vec<TaskSubmission>,
        wait: Wait,
        answers: mpsc::Sender<Answer>,
    },
}

/// What a drain or undrain did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drained {
    pub node: String,
    pub drained: bool,
    /// Whether it was not already so.
    pub changed: bool,
    /// Tasks still running there (they finish; nothing new goes there).
    pub in_flight: u32,
}

/// What forgetting a node did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forgot {
    pub node: String,
    /// Its state when it was forgotten (`offline`).
    pub was: String,
}

/// How far a submission over HTTP is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until it is accepted (durable, with a journal), refused or finished.
    Accepted,
    /// Until its final result.
    Finished,
}

/// One answer about one submitted id.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// What the coordinator answered (also on the client's reply topic): accepted,
    /// rejected, or the final result; `durable` when the journal holds it.
    Result { result: TaskResult, durable: bool },
    /// The id was already accepted from an earlier submission and has not finished.
    Running { id: String },
    /// The client's policy (`[clients]` kinds, nodes, labels) refused it.
    Refused { id: String, reason: String },
    /// The coordinator waits on too many submissions already; try again.
    Busy { id: String },
}

impl Answer {
    pub fn id(&self) -> &str {
        match self {
            Answer::Result { result, .. } => &result.id,
            Answer::Running { id } | Answer::Refused { id, .. } | Answer::Busy { id } => id,
        }
    }

    /// Whether nothing more will come for this id.
    pub fn is_final(&self) -> bool {
        match self {
            Answer::Result { result, .. } => !matches!(result.outcome, Outcome::Accepted),
            Answer::Refused { .. } | Answer::Busy { .. } => true,
            Answer::Running { .. } => false,
        }
    }
}

/// The API requests waiting on task ids: each answer the coordinator gives for a
/// watched id is offered here and sent on to every request that waits on it.
#[derive(Debug, Default)]
pub struct Watchers {
    by_id: HashMap<String, Vec<Watch>>,
    len: usize,
}

#[derive(Debug)]
struct Watch {
    to: mpsc::Sender<Answer>,
    wait: Wait,
}

impl Watchers {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Send `id`'s answers to `to` until `wait` is met.
    pub fn watch(&mut self, id: &str, to: &mpsc::Sender<Answer>, wait: Wait) {
        self.by_id.entry(id.to_owned()).or_default().push(Watch {
            to: to.clone(),
            wait,
        });
        self.len += 1;
    }

    /// Whether `to` still waits on `id` (nothing it waited for came yet).
    pub fn waits(&self, id: &str, to: &mpsc::Sender<Answer>) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|ws| ws.iter().any(|w| w.to.same_channel(to)))
    }

    /// `answer` to every request waiting on its id; those it satisfies stop waiting.
    /// Only to `only`, if given (an answer about one request's own submission).
    pub fn offer(&mut self, answer: &Answer, only: Option<&mpsc::Sender<Answer>>) {
        let Some(ws) = self.by_id.get_mut(answer.id()) else {
            return;
        };
        let before = ws.len();
        ws.retain(|w| {
            if only.is_some_and(|o| !w.to.same_channel(o)) {
                return !w.to.is_closed();
            }
            // Sized by the API for every answer of its ids: full means gone astray.
            let sent = w.to.try_send(answer.clone()).is_ok();
            let done = answer.is_final() || w.wait == Wait::Accepted;
            sent && !done
        });
        self.len -= before - ws.len();
        if ws.is_empty() {
            self.by_id.remove(answer.id());
        }
    }

    /// A result the coordinator is sending (cheap when nobody waits).
    pub fn offer_result(&mut self, result: &TaskResult, durable: bool) {
        if self.is_empty() || !self.by_id.contains_key(&result.id) {
            return;
        }
        self.offer(
            &Answer::Result {
                result: result.clone(),
                durable,
            },
            None,
        );
    }

    /// Forget the requests that went away (their client hung up or timed out).
    pub fn sweep(&mut self) {
        let mut len = 0;
        self.by_id.retain(|_, ws| {
            ws.retain(|w| !w.to.is_closed());
            len += ws.len();
            !ws.is_empty()
        });
        self.len = len;
    }
}

pub fn channel() -> (mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    mpsc::channel(QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, outcome: Outcome) -> TaskResult {
        TaskResult {
            id: id.into(),
            attempt: 1,
            node: NodeId::new("coordinator").unwrap(),
            at_ms: 1,
            outcome,
        }
    }

    #[test]
    fn an_accepted_wait_ends_at_accepted_a_finished_wait_at_the_result() {
        let mut w = Watchers::default();
        let (a, mut ra) = mpsc::channel(4);
        let (f, mut rf) = mpsc::channel(4);
        w.watch("t1", &a, Wait::Accepted);
        w.watch("t1", &f, Wait::Finished);
        assert_eq!(w.len(), 2);
        w.offer_result(&result("t1", Outcome::Accepted), true);
        assert!(!w.waits("t1", &a));
        assert!(w.waits("t1", &f));
        assert_eq!(w.len(), 1);
        let done = Outcome::TimedOut { after_ms: 5 };
        w.offer_result(&result("t1", done), true);
        assert!(w.is_empty());
        assert_eq!(ra.try_recv().unwrap().id(), "t1");
        assert!(ra.try_recv().is_err());
        assert!(!rf.try_recv().unwrap().is_final());
        assert!(rf.try_recv().unwrap().is_final());
        // Nobody waits: nothing is kept.
        w.offer_result(&result("t2", Outcome::Accepted), true);
        assert!(w.is_empty());
    }

    #[test]
    fn a_request_that_went_away_is_forgotten() {
        let mut w = Watchers::default();
        let (a, ra) = mpsc::channel(4);
        w.watch("t1", &a, Wait::Finished);
        w.watch("t2", &a, Wait::Finished);
        drop(ra);
        w.sweep();
        assert!(w.is_empty());
        assert!(!w.waits("t1", &a));
    }

    #[test]
    fn an_answer_for_one_request_reaches_only_it() {
        let mut w = Watchers::default();
        let (a, mut ra) = mpsc::channel(4);
        let (b, mut rb) = mpsc::channel(4);
        w.watch("t1", &a, Wait::Accepted);
        w.watch("t1", &b, Wait::Accepted);
        w.offer(&Answer::Running { id: "t1".into() }, Some(&a));
        assert!(ra.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        assert!(!w.waits("t1", &a));
        assert!(w.waits("t1", &b));
    }
}
