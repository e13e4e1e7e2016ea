//! What a worker runs and what it hands back.

use std::sync::Arc;
use std::time::Duration;

use super::arena::Block;
use super::exec::CommandSpec;

/// A task kind this node runs.
#[derive(Debug, Clone)]
pub enum Kind {
    Echo,
    Sha256,
    Sleep,
    Command {
        name: String,
        spec: Arc<CommandSpec>,
    },
}

impl Kind {
    pub fn name(&self) -> &str {
        match self {
            Kind::Echo => "echo",
            Kind::Sha256 => "sha256",
            Kind::Sleep => "sleep",
            Kind::Command { name, .. } => name,
        }
    }
}

/// A task accepted onto this node, its payload in the arena.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub attempt: u32,
    pub kind: Kind,
    pub payload: Block,
    pub timeout: Duration,
    pub priority: u8,
    /// Wall-clock deadline (ms since the epoch); 0 for none.
    pub deadline_ms: u64,
    pub cacheable: bool,
}

/// How a job ended.
#[derive(Debug)]
pub enum JobOutcome {
    Completed {
        output: Block,
        truncated: bool,
        exit_code: Option<i32>,
        duration: Duration,
        cpu: Duration,
        peak_rss_bytes: u64,
    },
    Failed {
        error: String,
        retryable: bool,
        exit_code: Option<i32>,
        duration: Duration,
    },
    TimedOut {
        after: Duration,
    },
}

#[derive(Debug)]
pub struct JobResult {
    pub id: String,
    pub attempt: u32,
    pub kind: String,
    pub cacheable: bool,
    /// Hash of the payload, for the content cache (sha256 of kind and payload).
    pub cache_key: [u8; 32],
    pub outcome: JobOutcome,
}
