//! The main loop: a router from each event to its handler. The handlers are shared
//! with the shutdown drain, which routes fewer events to the same functions.

use fog_rt::clock::now_ms;
use tokio_util::sync::CancellationToken;

use super::encode;
use super::report::{fill_forward_figures, fill_task_figures, status_line, warn_publish};
use super::start::{Agent, Inbox, Timers};
use super::AgentError;
use crate::store::backlog::{Class, Removed};
use crate::store::Committed;
use crate::tasks::host::Token;
use crate::tasks::job::JobResult;
use crate::transport::{Link, LinkEvent, Qos};

/// What a turn of the loop did.
enum Turn {
    /// Handled an event: the loop turned (the watchdog hears of it).
    Handled,
    /// Nothing was done (the collector is down); not a turn for the watchdog.
    Idle,
    Stop,
}

/// Run until `shutdown` is cancelled. Shutdown comes first (`biased`), then what
/// frees memory (store commits, pool results, backlog removals), then the link.
pub(super) async fn run(
    a: &mut Agent,
    inbox: &mut Inbox,
    t: &mut Timers,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    loop {
        let turn = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Turn::Stop,
            Some(c) = inbox.commits.recv() => {
                a.on_committed(c);
                Turn::Handled
            }
            Some(r) = inbox.results.recv() => {
                a.on_result(r);
                Turn::Handled
            }
            Some(seqs) = inbox.removed.recv() => {
                a.on_removed(seqs);
                Turn::Handled
            }
            ev = a.fwd.link_mut().next_event(), if !a.sup.transport.is_down() => a.on_link_event(ev),
            _ = tokio::time::sleep_until(a.sup.transport.restart_at().unwrap_or_else(tokio::time::Instant::now)), if a.sup.transport.is_down() => a.restart_link(),
            _ = t.flush.tick(), if a.host.outbox_len() > 0 => {
                a.flush();
                Turn::Handled
            }
            _ = t.replay.tick(), if a.fwd.next_tick().is_some() => {
                a.fwd.tick();
                Turn::Handled
            }
            Some(()) = reload_requested(&mut inbox.reloads) => {
                if let Some(r) = &inbox.reloads {
                    a.reload(&r.path, t)?;
                }
                Turn::Handled
            }
            _ = tick(&mut t.watchdog) => Turn::Handled,
            _ = t.heartbeat.tick() => a.heartbeat()?,
            _ = t.readings.tick() => a.reading()?,
            // Last, so it wins only when nothing above is ready: results go out the
            // moment the agent is idle (one task at a time pays no timer), and under
            // load everything that became ready together shares one list.
            () = std::future::ready(()), if a.host.outbox_ready() => {
                a.flush();
                Turn::Handled
            }
        };
        match turn {
            Turn::Stop => return Ok(()),
            Turn::Idle => continue,
            Turn::Handled => {
                let Agent {
                    systemd,
                    fwd,
                    host,
                    sup,
                    ..
                } = &mut *a;
                systemd.turned(|| status_line(fwd, host, sup));
            }
        }
    }
}

/// The next tick of an optional interval; never without one.
async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next reload request; never, for an agent that takes none.
async fn reload_requested(r: &mut Option<super::Reloads>) -> Option<()> {
    match r {
        Some(r) => r.requests.recv().await,
        None => std::future::pending().await,
    }
}

impl Agent {
    /// A store commit became durable.
    pub(super) fn on_committed(&mut self, c: Committed<Token>) {
        self.host.on_committed(&mut self.fwd, c);
    }

    /// A worker finished a job.
    pub(super) fn on_result(&mut self, r: JobResult) {
        self.host.on_result(r);
    }

    /// Backlog entries left the disk.
    pub(super) fn on_removed(&mut self, seqs: Removed) {
        self.fwd.on_removed(seqs);
    }

    /// Publish the results ready now.
    pub(super) fn flush(&mut self) {
        self.host.flush(&mut self.fwd);
    }

    /// The link events about delivery, handled alike while running and draining.
    pub(super) fn on_delivery(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => self.fwd.on_connected(),
            LinkEvent::Disconnected => self.fwd.on_disconnected(),
            LinkEvent::Acked(token) => self.fwd.on_acked(token),
            LinkEvent::Unreachable | LinkEvent::Subscribed | LinkEvent::Message { .. } => {}
        }
    }

    fn ready(&mut self) {
        let line = status_line(&self.fwd, &self.host, &self.sup);
        self.systemd.ready(&line);
    }

    fn on_link_event(&mut self, ev: Option<LinkEvent>) -> Turn {
        match ev {
            Some(LinkEvent::Connected) => {
                self.on_delivery(LinkEvent::Connected);
                self.ready();
            }
            // The first attempt is over: run (and store) without a broker.
            Some(LinkEvent::Unreachable) => self.ready(),
            Some(LinkEvent::Message { topic, payload }) if topic == self.tasks_topic => {
                self.host.on_assignments(&mut self.fwd, &payload);
            }
            Some(LinkEvent::Message { topic, .. }) => {
                tracing::debug!(%topic, "ignoring message on a topic the agent does not handle");
            }
            Some(ev) => self.on_delivery(ev),
            None => {
                // The link's task died (a panic in it): keep everything in the backlog
                // and start a new link after the backoff.
                self.fwd.on_disconnected();
                self.sup
                    .transport
                    .failed(tokio::time::Instant::now(), "the mqtt link task ended");
            }
        }
        Turn::Handled
    }

    fn restart_link(&mut self) -> Turn {
        match Link::start(self.link.options()) {
            Ok(link) => {
                self.fwd.replace_link(link);
                self.sup.transport.restarted();
            }
            Err(e) => {
                self.sup
                    .transport
                    .failed(tokio::time::Instant::now(), &e.to_string());
            }
        }
        Turn::Handled
    }

    fn heartbeat(&mut self) -> Result<Turn, AgentError> {
        let at_ms = now_ms();
        // Without its collector the heartbeat still says the node is alive.
        let mut hb = self
            .sup
            .collector
            .with(tokio::time::Instant::now(), |c| c.heartbeat(at_ms))
            .unwrap_or_else(|| fog_proto::Heartbeat {
                at_ms,
                ..Default::default()
            });
        let load = self.host.pool().load();
        (hb.queued, hb.running, hb.free_slots) = (load.queued, load.running, load.free_slots);
        hb.backlog_bytes = self.fwd.stats().bytes();
        hb.backlog_dropped_total = self.fwd.stats().dropped_total();
        hb.degraded = self.sup.degraded(&self.host);
        let at_ms = hb.at_ms;
        self.identity.seal(&mut hb, at_ms);
        // Liveness is about now: a heartbeat that cannot go out is not kept.
        let bytes = encode(&hb, self.enc)?;
        let link = self.fwd.link();
        if link
            .publish(&self.heartbeat_topic, bytes, Qos::AtMostOnce, false)
            .is_err()
        {
            link.count_dropped();
        }
        Ok(Turn::Handled)
    }

    fn reading(&mut self) -> Result<Turn, AgentError> {
        let Some(mut r) = self
            .sup
            .collector
            .with(tokio::time::Instant::now(), |c| c.reading(now_ms()))
        else {
            return Ok(Turn::Idle); // the collector is down; restarted with backoff
        };
        r.agent.publish_dropped_total = self
            .fwd
            .link()
            .stats()
            .dropped_total
            .load(std::sync::atomic::Ordering::Relaxed);
        fill_task_figures(&mut r.agent, &self.host);
        fill_forward_figures(&mut r.agent, &self.fwd, self.sup.degraded(&self.host));
        let raised = self
            .sup
            .alerts
            .with(tokio::time::Instant::now(), |a| a.evaluate(&r, r.at_ms))
            .unwrap_or_default();
        for alert in raised {
            tracing::warn!(
                alert.resource = %alert.resource,
                alert.level = ?alert.level,
                alert.value = alert.value,
                "{}", alert.message
            );
            if let Err(error) = self.fwd.publish(Class::Alert, encode(&alert, self.enc)?) {
                warn_publish(&mut self.last_drop_log, "alert", &error);
            }
        }
        if let Err(error) = self.fwd.publish(Class::Reading, encode(&r, self.enc)?) {
            warn_publish(&mut self.last_drop_log, "reading", &error);
        }
        Ok(Turn::Handled)
    }
}
