//! The HTTP API's commands in the main loop: drains and submissions.

use fog_proto::{NodeId, TaskSubmission};
use fog_rt::clock::now_ms;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Server;
use crate::control::{Answer, Command, Drained, Forgot, Wait, WATCHED_MAX};

impl Server {
    /// A command from the HTTP API; its answer to the API.
    pub(super) fn on_command(&mut self, c: Command) {
        match c {
            Command::Drain { node, drain, reply } => {
                let changed = self.dispatch.set_drained(&node, drain);
                if changed {
                    tracing::info!(node.id = %node, drained = drain, "node drain changed");
                    self.save_drained();
                }
                let in_flight = self
                    .dispatch
                    .node_placements(Instant::now())
                    .iter()
                    .find(|p| p.node == node)
                    .map_or(0, |p| p.in_flight);
                let _ = reply.send(Drained {
                    node: node.to_string(),
                    drained: drain,
                    changed,
                    in_flight,
                });
                // Undrained: what waits may go there now.
                let msgs = self.dispatch.tick(&self.registry, Instant::now());
                self.push_all(msgs);
            }
            Command::Forget { node, reply } => {
                let answer = self.forget(&node);
                let _ = reply.send(answer);
            }
            Command::Submit {
                client,
                items,
                wait,
                answers,
            } => self.on_http_submit(&client, items, wait, &answers),
        }
    }

    /// Tasks submitted over HTTP: the gate, the table, and every answer for their ids
    /// to `answers` (the request's own channel, sized for them all).
    fn on_http_submit(
        &mut self,
        client: &str,
        items: Vec<TaskSubmission>,
        wait: Wait,
        answers: &mpsc::Sender<Answer>,
    ) {
        if self.watchers.len() + items.len() > WATCHED_MAX {
            self.watchers.sweep();
        }
        if self.watchers.len() + items.len() > WATCHED_MAX {
            for s in items {
                let _ = answers.try_send(Answer::Busy { id: s.id });
            }
            return;
        }
        let ids: Vec<(String, bool)> = items
            .iter()
            .map(|s| (s.id.clone(), self.dispatch.is_running(&s.id)))
            .collect();
        for (id, _) in &ids {
            self.watchers.watch(id, answers, wait);
        }
        let now = Instant::now();
        let (msgs, refused) = self
            .dispatch
            .on_client_submit(&self.registry, client, items, now);
        for (id, reason) in refused {
            self.watchers
                .offer(&Answer::Refused { id, reason }, Some(answers));
        }
        // Rejections and repeats of finished tasks reach the request from here.
        self.push_all(msgs);
        let journaled = self.dispatch.is_journaling();
        for (id, was_running) in ids {
            if !self.watchers.waits(&id, answers) {
                continue;
            }
            let answer = if was_running {
                Answer::Running { id }
            } else if self.dispatch.is_running(&id) {
                if journaled {
                    // `accepted` comes once the journal holds it (`on_durable`).
                    continue;
                }
                Answer::Result {
                    result: fog_proto::TaskResult {
                        id,
                        attempt: 1,
                        node: self.coordinator_id.clone(),
                        at_ms: now_ms(),
                        outcome: fog_proto::Outcome::Accepted,
                    },
                    durable: false,
                }
            } else {
                // Neither running nor answered: the dispatcher dropped it (an id it
                // cannot use); the API checks ids first, so this is a bug if seen.
                Answer::Refused {
                    reason: format!("task id {id:?} was not taken"),
                    id,
                }
            };
            self.watchers.offer(&answer, Some(answers));
        }
    }

    /// Forget an offline node: out of the registry (so of the view, the metrics and
    /// Home Assistant, which clears its entities), of the dispatcher, and kept so in
    /// `<data_dir>/forgotten`.
    fn forget(&mut self, node: &NodeId) -> Result<Forgot, String> {
        let was = self
            .registry
            .forget(node.as_str(), now_ms())
            .map_err(|e| format!("{node} is not forgotten: {e}"))?;
        let drained = self.dispatch.drained().contains(node);
        self.dispatch.forget(node);
        if drained {
            self.save_drained();
        }
        if let Some(path) = &self.forgotten_file {
            if let Err(error) = self.registry.forgotten().save(path) {
                tracing::error!(%error, path = %path.display(), "could not save the forgotten nodes; a restart brings this one back as offline");
            }
        }
        tracing::info!(node.id = %node, was = was.as_str(), "node forgotten");
        let msgs = self.dispatch.tick(&self.registry, Instant::now());
        self.push_all(msgs);
        Ok(Forgot {
            node: node.to_string(),
            was: was.as_str().to_owned(),
        })
    }

    /// The drained nodes, to `<data_dir>/drained` (one id a line), so a restart keeps
    /// them; a failure is logged, and the drain holds until the restart.
    fn save_drained(&self) {
        let Some(path) = &self.drained_file else {
            return;
        };
        let text: String = self
            .dispatch
            .drained()
            .iter()
            .map(|n| format!("{n}\n"))
            .collect();
        let tmp = path.with_extension("tmp");
        if let Err(error) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::error!(%error, path = %path.display(), "could not save the drained nodes");
        }
    }
}

/// The drained nodes kept by [`Server::save_drained`]; a line that is not a node id
/// is said and skipped.
pub(super) fn load_drained(path: Option<&std::path::Path>) -> Vec<NodeId> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match NodeId::new(l.trim()) {
            Ok(n) => Some(n),
            Err(error) => {
                tracing::warn!(line = l, %error, "skipped a line of the drained nodes file");
                None
            }
        })
        .collect()
}
