//! What the HTTP API asks of the main loop (which alone owns the dispatcher): a
//! bounded channel of commands, each with its own reply.

use fog_proto::NodeId;
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the main loop, at most (a full channel is a 503).
pub const QUEUE: usize = 64;

#[derive(Debug)]
pub enum Command {
    /// Place nothing new on `node` (`drain`), or place on it again.
    Drain {
        node: NodeId,
        drain: bool,
        reply: oneshot::Sender<Drained>,
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

pub fn channel() -> (mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    mpsc::channel(QUEUE)
}
