//! What the main loop shows, each status interval and each second: the retained
//! status on MQTT (with the scaling advice) and the in-process view (HTTP API,
//! /metrics, charts, task profiles, Home Assistant).

use std::sync::Arc;

use fog_proto::{codec, CoordinatorStatus, STATUS_TASKS_MAX};
use fog_rt::clock::now_ms;
use fog_rt::transport::Qos;
use tokio::time::Instant;

use super::snapshot::{publish_home_assistant, status};
use super::{ServeError, Server, VIEW_TASKS_MAX};
use crate::view::{Health, JournalHealth, View};

impl Server {
    /// The status (and scaling advice) out, retained; the snapshot to the view.
    ///
    /// One status is built (every node, the view's task lists) and the broker's is cut
    /// from it: at 10,000 nodes building it is the longest turn the loop takes.
    pub(super) fn on_publish_tick(&mut self) -> Result<(), ServeError> {
        self.watchers.sweep();
        let serving = self.subscribed && self.link.is_connected();
        let mut full = self.view_status(serving);
        // Advice from what the coordinator serves: nothing while off the broker.
        let nodes = if serving { &full.nodes[..] } else { &[] };
        if let Some(advice) = self.scaler.observe(Instant::now(), full.at_ms, nodes) {
            tracing::info!(direction = advice.direction.as_str(), current = advice.current_nodes, desired = advice.desired_nodes, reason = %advice.reason, "scaling advice");
            if self.link.is_connected() {
                let _ = self.link.publish(
                    &self.scaling_topic,
                    codec::encode(&advice, self.enc)?,
                    Qos::AtLeastOnce,
                    true,
                );
            }
        }
        full.scaling = self.scaler.current().cloned();
        if serving {
            let s = full.cut(STATUS_TASKS_MAX, fog_proto::STATUS_NODES_MAX);
            let _ = self.link.publish(
                &self.status_topic,
                codec::encode(&s, self.enc)?,
                Qos::AtLeastOnce,
                true,
            );
        }
        self.send_view(Some(full));
        Ok(())
    }

    /// The status as the in-process view shows it: the registry and the tasks as they
    /// are, even while the broker is away (the nodes are not forgotten for a blip:
    /// the charts and /metrics keep them); `online` says whether the coordinator is
    /// serving.
    fn view_status(&self, serving: bool) -> CoordinatorStatus {
        let mut s = self::status(
            &self.registry,
            &self.dispatch,
            &self.posture,
            true,
            "",
            VIEW_TASKS_MAX,
        );
        s.online = serving;
        s.scaling = self.scaler.current().cloned();
        s
    }

    /// A new snapshot to the in-process viewers: `status` if just made, else a fresh
    /// one (with the scaling advice last published).
    pub(super) fn send_view(&mut self, status: Option<CoordinatorStatus>) {
        let connected = self.subscribed && self.link.is_connected();
        let status = status.unwrap_or_else(|| self.view_status(connected));
        let journal = match &self.journal {
            None => JournalHealth::Memory,
            Some(j) if j.is_healthy() => JournalHealth::Ok,
            Some(_) => JournalHealth::Failing,
        };
        let view = View {
            status,
            details: crate::view::details(&self.registry),
            health: Health {
                broker: connected,
                journal,
                in_flight: self.dispatch.in_flight(),
            },
            trends: self.trends.clone(),
            profiles: self.profiles.clone(),
            drained: self.dispatch.drained().clone(),
            latency: crate::latency::Latencies {
                placement: self.dispatch.placement_latency,
                journal_commit: self.journal.as_ref().map(|j| j.commit_latency()),
                heartbeat_age: self.registry.heartbeat_age,
                turns: self.turns,
            },
        };
        // Never wait for a reader (a scrape holds the profiles while it reports): if
        // one holds them, the samples wait for the next second (bounded).
        let fresh = self.dispatch.take_finished();
        for s in &fresh {
            // Each node's chart of its tasks (those that ran there: not rejections).
            if s.ended != crate::profiles::Ended::Rejected && !s.node.is_empty() {
                let t = self.node_tasks.entry(s.node.clone()).or_default();
                t.0 = t.0.saturating_add(1);
                t.1 = t.1.saturating_add(s.latency_ms);
            }
        }
        self.pending_samples.extend(fresh);
        if self.pending_samples.len() > crate::dispatch::Dispatcher::MAX_FINISHED {
            let extra = self.pending_samples.len() - crate::dispatch::Dispatcher::MAX_FINISHED;
            self.pending_samples.drain(..extra);
        }
        if let Ok(mut p) = self.profiles.try_write() {
            for s in self.pending_samples.drain(..) {
                p.record(&s);
            }
            p.expire(now_ms());
        }
        // The same for the charts: a second missed is a sample missed, no more.
        if let Ok(mut t) = self.trends.try_write() {
            t.count_tasks(std::mem::take(&mut self.node_tasks));
            crate::view::observe(&mut t, &view, now_ms());
        }
        if let Some((ha, _)) = &mut self.home_assistant {
            ha.on_view(&view, now_ms());
            if connected {
                publish_home_assistant(ha, &self.link);
            }
        }
        self.view.send_replace(Arc::new(view));
    }
}
