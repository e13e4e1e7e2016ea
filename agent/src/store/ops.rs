//! The store's interface to the agent: the writes, their durable confirmations, and
//! what was found at open.

use super::error::StoreError;
use super::record::StoredTask;

/// One write.
pub enum Op<T> {
    Accept {
        task: StoredTask,
        token: T,
    },
    Finish {
        id: String,
        result: Vec<u8>,
        at_ms: u64,
        token: T,
    },
    CachePut {
        key: [u8; 32],
        output: Vec<u8>,
        at_ms: u64,
    },
}

/// Emitted after the commit holding the operation is durable (or failed).
#[derive(Debug)]
pub struct Committed<T> {
    pub token: T,
    pub result: Result<(), String>,
}

/// The narrow interface the agent uses; `RedbStore` is the real one.
pub trait TaskStore<T>: Send {
    /// Queue a write; its `Committed` arrives on the channel given at open.
    fn submit(&self, op: Op<T>) -> Result<(), StoreError>;
    /// The stored record of a task, if any.
    fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError>;
    /// A cached output.
    fn cached(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// What was in the store at open.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Accepted and not finished: to hand back, or run again.
    pub unfinished: Vec<StoredTask>,
    /// Ids of finished tasks still retained.
    pub finished: Vec<String>,
}
