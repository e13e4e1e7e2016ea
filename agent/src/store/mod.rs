//! The agent's durable store (redb), the only module that imports the database.
//!
//! What it keeps: every accepted task (its payload only with
//! `store.rerun_after_restart`) until it finishes, finished results (in two
//! generations, see [`generations`]), and the content cache of cacheable results. What it guarantees: an operation's `Committed` event is emitted only after
//! the commit that holds it is durable (one fsync), so the agent acknowledges a task
//! only once a crash cannot forget it, and publishes a result only once a redelivery
//! would be answered from the store.
//!
//! Writes are grouped (group commit, [`fog_rt::group_commit`]): one writer thread
//! commits each operation with whatever is already queued behind it (at most
//! [`MAX_BATCH`]); what arrives during a commit forms the next, because every durable
//! commit is an fsync and fsyncs are slow on SD cards. With `commit_interval` above 0,
//! a commit under load also waits that long for company.
//!
//! Files: `redb_store` ([`RedbStore`]: open, recovery, reads), `writer` (the group
//! commit thread), `ops` (the [`TaskStore`] interface: [`Op`], [`Committed`],
//! [`Recovered`]), `record` ([`StoredTask`] on disk), `cache` (the content cache and
//! its pruning), `generations` (task records in two generations), [`backlog`] (the
//! store-and-forward backlog), [`cell`] (the shared handle and its supervision),
//! `error` ([`StoreError`]).

pub mod backlog;
mod cache;
pub mod cell;
mod error;
mod generations;
mod ops;
mod record;
mod redb_store;
#[cfg(test)]
mod tests;
mod writer;

use redb::TableDefinition;

pub use error::StoreError;
pub use ops::{Committed, Op, Recovered, TaskStore};
pub use record::StoredTask;
pub use redb_store::RedbStore;

// Every table maps bytes to bytes, on purpose: redb's B-tree code is generic over key
// and value types, and four different pairs cost ~150 KiB of agent binary (and so of
// resident text) in monomorphised copies. Index keys are `at_ms` big-endian ++ the id,
// so they sort oldest first. Task records (task id -> postcard `StoredTask`) live in
// generation tables, see `generations`.
type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Most operations in one commit.
pub const MAX_BATCH: usize = 4096;
