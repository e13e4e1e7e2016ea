//! Shutdown, in reverse of start: stop taking tasks, give running ones the grace
//! period, wait (bounded) for acks, keep what is unacknowledged in the backlog, then
//! publish the retained offline record and close the link.

use std::time::Duration;

use fog_proto::Status;
use fog_rt::clock::now_ms;

use super::start::{Agent, Inbox, Timers};
use super::{encode, AgentError};
use crate::transport::LinkEvent;

/// Wait for tasks, results and acks, routing the events that matter now to the
/// running loop's handlers. Bounded: the grace period, then 5 s after the kill.
pub(super) async fn drain(a: &mut Agent, inbox: &mut Inbox, t: &mut Timers) {
    a.systemd
        .stopping("stopping: handing back tasks, flushing the store");
    // Stop taking tasks; queued ones go back as retryable; running ones get a grace
    // period, then are killed and reported as retryable failures.
    a.host.close();
    let grace_end = tokio::time::Instant::now() + a.config.shutdown_grace;
    let mut cancelled = false;
    while a.host.in_flight() > 0 || a.host.outbox_len() > 0 || a.fwd.unacked() > 0 {
        tokio::select! {
            Some(c) = inbox.commits.recv() => a.on_committed(c),
            Some(r) = inbox.results.recv() => a.on_result(r),
            Some(seqs) = inbox.removed.recv() => a.on_removed(seqs),
            ev = a.fwd.link_mut().next_event() => match ev {
                // Assignments are no longer taken; only delivery matters.
                Some(LinkEvent::Message { .. }) => {}
                Some(ev) => a.on_delivery(ev),
                None => break,
            },
            _ = t.flush.tick() => a.flush(),
            _ = tokio::time::sleep_until(grace_end), if !cancelled => {
                tracing::warn!(in_flight = a.host.in_flight(), "grace period over; killing running tasks");
                a.host.cancel_running();
                cancelled = true;
            }
            _ = tokio::time::sleep_until(grace_end + Duration::from_secs(5)), if cancelled => break,
        }
        if !a.fwd.link().is_connected() && a.host.in_flight() == 0 {
            // Results are in the store or the backlog; nothing more can go out now.
            a.flush();
            break;
        }
    }
}

/// Keep the unacknowledged for the next run, say goodbye (retained), close the link.
pub(super) async fn goodbye(mut a: Agent) -> Result<(), AgentError> {
    // Whatever is still unacknowledged is kept for the next run.
    a.fwd.on_disconnected();
    tracing::info!(node.id = %a.node, "shutting down: publishing offline status");
    let mut offline = Status {
        seal: None,
        online: false,
        at_ms: now_ms(),
        reason: "shutdown".to_owned(),
        birth: None,
    };
    let at_ms = offline.at_ms;
    a.identity.seal(&mut offline, at_ms);
    let payload = encode(&offline, a.enc)?;
    let Agent { fwd, link, .. } = a;
    let link_handle = fwd.into_link(); // commits the backlog as it drops
    link_handle
        .close(Some(link.retained(payload)), Duration::from_secs(3))
        .await;
    Ok(())
}
