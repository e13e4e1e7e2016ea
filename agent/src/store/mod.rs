//! The agent's durable store (redb), the only module that imports the database.
//!
//! What it keeps: every accepted task (with its payload) until it finishes, every
//! finished result (pruned by age and count), and the content cache of cacheable
//! results. What it guarantees: an operation's `Committed` event is emitted only after
//! the commit that holds it is durable (one fsync), so the agent acknowledges a task
//! only once a crash cannot forget it, and publishes a result only once a redelivery
//! would be answered from the store.
//!
//! Writes are grouped: one writer thread takes every operation that arrives within
//! `commit_interval` of the first (at most [`MAX_BATCH`]) into one transaction, because
//! every durable commit is an fsync and fsyncs are slow on SD cards.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::StoreConfig;

pub mod backlog;
pub mod cell;

use cell::DbCell;

// Every table maps bytes to bytes, on purpose: redb's B-tree code is generic over key
// and value types, and four different pairs cost ~150 KiB of agent binary (and so of
// resident text) in monomorphised copies. Index keys are `at_ms` big-endian ++ the id,
// so they sort oldest first.
type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;
/// task id -> postcard `StoredTask`.
const TASKS: Bytes = TableDefinition::new("v1/tasks");
/// (finished_at_ms, id) for pruning finished results oldest first; empty values.
const FINISHED: Bytes = TableDefinition::new("v1/finished");
/// cache key (kind and payload hash) -> output.
const CACHE: Bytes = TableDefinition::new("v1/cache");
/// (stored_at_ms, cache key) for pruning the cache oldest first; empty values.
const CACHE_AGE: Bytes = TableDefinition::new("v1/cache_age");
/// Written and emptied again to test a degraded store.
const PROBE: Bytes = TableDefinition::new("v1/probe");

/// An index key: `at_ms` big-endian, then `rest`.
fn age_key(at_ms: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + rest.len());
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// Split an index key back into `at_ms` and the rest; `None` for a short (corrupt) key.
fn split_age_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (at, rest) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), rest))
}

/// Most operations in one commit.
pub const MAX_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening store {path}: {message}")]
    Open { path: String, message: String },
    #[error("store: {0}")]
    Db(String),
    #[error("store record for {id} is corrupt: {message}")]
    Corrupt { id: String, message: String },
    #[error("the store writer has stopped")]
    Stopped,
    #[error("the store is being reopened after failed writes")]
    Unavailable,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTask {
    pub id: String,
    pub attempt: u32,
    pub kind: String,
    pub timeout_ms: u32,
    pub priority: u8,
    pub deadline_ms: u64,
    pub cacheable: bool,
    pub accepted_at_ms: u64,
    /// Present until the task finishes.
    #[serde(with = "raw_bytes")]
    pub payload: Vec<u8>,
    /// The encoded result message, once finished.
    #[serde(with = "raw_bytes::option")]
    pub result: Option<Vec<u8>>,
    pub finished_at_ms: u64,
}

/// Byte strings as one postcard byte string instead of serde's default sequence of
/// `u8`s. The bytes on disk are the same (length, then bytes); encoding and decoding
/// stop costing a call per byte, which was 3 % of all CPU in the end-to-end bench.
mod raw_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Raw<'a>(&'a [u8]);

    impl Serialize for Raw<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        Raw(v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        fog_proto::Payload::deserialize(d).map(|p| p.0)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            v.as_deref().map(Raw).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Option::<fog_proto::Payload>::deserialize(d).map(|o| o.map(|p| p.0))
        }
    }
}

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

/// The narrow interface the agent uses; [`RedbStore`] is the real one.
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
    /// Accepted and not finished: to run again.
    pub unfinished: Vec<StoredTask>,
    /// Ids of finished tasks still retained.
    pub finished: Vec<String>,
}

pub struct RedbStore<T> {
    db: std::sync::Arc<DbCell>,
    /// Unbounded on purpose, but bounded in practice: every Accept or Finish belongs to a
    /// task holding an arena block, and a CachePut to a finishing task, so the arena
    /// caps what can wait here. A preallocated `sync_channel` of MAX_BATCH slots cost
    /// 2.2 MiB of touched memory on the agent at rest (the footprint target is 4.5 MiB),
    /// and a full one would block the reactor thread.
    ops: Option<std::sync::mpsc::Sender<Op<T>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl<T> Drop for RedbStore<T> {
    /// Flush what was queued and close the database before returning, so the file can
    /// be opened again at once (a restart in the same process, tests).
    fn drop(&mut self) {
        self.ops.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl<T: Send + 'static> RedbStore<T> {
    /// Open (or create) `dir/agent.redb` and start the writer thread.
    pub fn open(
        dir: &Path,
        cfg: &StoreConfig,
        committed: tokio::sync::mpsc::UnboundedSender<Committed<T>>,
    ) -> Result<(Self, Recovered), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = dir.join("agent.redb");
        let cell = DbCell::open(&path)?;
        let db = cell.get()?;
        {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(TASKS).map_err(db_err)?;
            tx.open_table(FINISHED).map_err(db_err)?;
            tx.open_table(CACHE).map_err(db_err)?;
            tx.open_table(CACHE_AGE).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        let recovered = recover(&db)?;
        drop(db);
        let db = cell;
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            interval: cfg.commit_interval,
            retention: cfg.result_retention,
            retention_count: cfg.result_retention_count,
            committed,
        };
        let writer = std::thread::Builder::new()
            .name("fog-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Db(format!("starting the store writer: {e}")))?;
        Ok((
            RedbStore {
                db,
                ops: Some(tx),
                writer: Some(writer),
            },
            recovered,
        ))
    }
}

fn decode_task(id: &str, bytes: &[u8]) -> Result<StoredTask, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

fn recover(db: &Database) -> Result<Recovered, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let t = tx.open_table(TASKS).map_err(db_err)?;
    let mut out = Recovered::default();
    for row in t.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        let id = String::from_utf8_lossy(k.value());
        match decode_task(&id, v.value()) {
            Ok(task) if task.result.is_none() => out.unfinished.push(task),
            Ok(task) => out.finished.push(task.id),
            // A record we cannot read is logged and left; it never stops the agent.
            Err(e) => tracing::error!(error = %e, "skipping unreadable task record"),
        }
    }
    out.unfinished.sort_by_key(|t| t.accepted_at_ms);
    Ok(out)
}

impl<T> RedbStore<T> {
    /// The store's health (degraded while writes fail), shared with its writers.
    pub fn health(&self) -> std::sync::Arc<DbCell> {
        self.db.clone()
    }

    /// Open the store-and-forward backlog in the same database file (one file, one
    /// page cache; redb serialises the two writers' transactions).
    pub fn backlog(
        &self,
        cfg: &StoreConfig,
        removed: tokio::sync::mpsc::UnboundedSender<backlog::Removed>,
    ) -> Result<backlog::Backlog, StoreError> {
        backlog::Backlog::open(
            self.db.clone(),
            cfg.max_backlog_bytes,
            cfg.commit_interval,
            removed,
        )
    }
}

impl<T: Send + 'static> TaskStore<T> for RedbStore<T> {
    fn submit(&self, op: Op<T>) -> Result<(), StoreError> {
        self.ops
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(op)
            .map_err(|_| StoreError::Stopped)
    }

    fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        let tx = self.db.get()?.begin_read().map_err(db_err)?;
        let t = tx.open_table(TASKS).map_err(db_err)?;
        match t.get(id.as_bytes()).map_err(db_err)? {
            Some(v) => Ok(Some(decode_task(id, v.value())?)),
            None => Ok(None),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.get()?.begin_read().map_err(db_err)?;
        let t = tx.open_table(CACHE).map_err(db_err)?;
        Ok(t.get(key.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }
}

struct Writer<T> {
    db: std::sync::Arc<DbCell>,
    interval: Duration,
    retention: Duration,
    retention_count: usize,
    committed: tokio::sync::mpsc::UnboundedSender<Committed<T>>,
}

impl<T> Writer<T> {
    fn run(self, rx: std::sync::mpsc::Receiver<Op<T>>) {
        // Grows with the load it sees instead of reserving MAX_BATCH slots up front.
        let mut batch: Vec<Op<T>> = Vec::new();
        let mut last_prune = Instant::now();
        loop {
            // Healthy: sleep until there is work. Degraded: wake every second to
            // reopen and probe, so recovery is seen without waiting for a task.
            let first = if self.db.degraded() {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(op) => op,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        self.db.reopen_if_due();
                        if self.db.get().is_ok() {
                            match self.probe() {
                                Ok(()) => self.db.write_ok(),
                                Err(e) => self.db.write_failed("probe", &e),
                            }
                        }
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                }
            };
            batch.push(first);
            let until = Instant::now() + self.interval;
            while batch.len() < MAX_BATCH {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let prune = last_prune.elapsed() >= Duration::from_secs(1);
            if prune {
                last_prune = Instant::now();
            }
            self.db.reopen_if_due();
            let res = match self.commit(&batch, prune) {
                Ok(()) => {
                    self.db.write_ok();
                    Ok(())
                }
                Err(e) => {
                    // Logged once per failing streak by the cell; each task answers
                    // for itself (rejected as busy, retryable).
                    self.db.write_failed("tasks", &e);
                    Err(e.to_string())
                }
            };
            for op in batch.drain(..) {
                let token = match op {
                    Op::Accept { token, .. } | Op::Finish { token, .. } => token,
                    Op::CachePut { .. } => continue,
                };
                if self
                    .committed
                    .send(Committed {
                        token,
                        result: res.clone(),
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    /// A real write (insert and remove 64 KiB, about what a few task records take),
    /// to see whether the disk takes writes again. Small enough to cost nothing once a
    /// second while degraded; large enough that a few free pages left inside the file
    /// on a still-full disk do not pass for recovery.
    fn probe(&self) -> Result<(), StoreError> {
        let tx = self.db.get()?.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(PROBE).map_err(db_err)?;
            t.insert(b"probe".as_slice(), vec![0u8; 64 * 1024].as_slice())
                .map_err(db_err)?;
            t.remove(b"probe".as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn commit(&self, batch: &[Op<T>], prune: bool) -> Result<(), StoreError> {
        let tx = self.db.get()?.begin_write().map_err(db_err)?;
        {
            let mut tasks = tx.open_table(TASKS).map_err(db_err)?;
            let mut finished = tx.open_table(FINISHED).map_err(db_err)?;
            let mut cache = tx.open_table(CACHE).map_err(db_err)?;
            let mut cache_age = tx.open_table(CACHE_AGE).map_err(db_err)?;
            for op in batch {
                match op {
                    Op::Accept { task, .. } => {
                        let bytes = postcard::to_allocvec(task).map_err(db_err)?;
                        tasks
                            .insert(task.id.as_bytes(), bytes.as_slice())
                            .map_err(db_err)?;
                    }
                    Op::Finish {
                        id, result, at_ms, ..
                    } => {
                        // Written over the accepted record without reading it (a
                        // lookup, a decode and a payload copy per task): a finished
                        // task is only ever asked for its result.
                        let task = StoredTask {
                            id: id.clone(),
                            attempt: 0,
                            kind: String::new(),
                            timeout_ms: 0,
                            priority: 0,
                            deadline_ms: 0,
                            cacheable: false,
                            accepted_at_ms: 0,
                            payload: Vec::new(),
                            result: Some(result.clone()),
                            finished_at_ms: *at_ms,
                        };
                        let bytes = postcard::to_allocvec(&task).map_err(db_err)?;
                        tasks
                            .insert(id.as_bytes(), bytes.as_slice())
                            .map_err(db_err)?;
                        finished
                            .insert(age_key(*at_ms, id.as_bytes()).as_slice(), [].as_slice())
                            .map_err(db_err)?;
                    }
                    Op::CachePut { key, output, at_ms } => {
                        cache
                            .insert(key.as_slice(), output.as_slice())
                            .map_err(db_err)?;
                        cache_age
                            .insert(age_key(*at_ms, key).as_slice(), [].as_slice())
                            .map_err(db_err)?;
                    }
                }
            }
            if prune {
                let now_ms = crate::service::now_ms();
                let cutoff = now_ms.saturating_sub(self.retention.as_millis() as u64);
                let excess =
                    (finished.len().map_err(db_err)? as usize).saturating_sub(self.retention_count);
                for key in oldest(&finished, excess, cutoff)? {
                    finished.remove(key.as_slice()).map_err(db_err)?;
                    if let Some((_, id)) = split_age_key(&key) {
                        tasks.remove(id).map_err(db_err)?;
                    }
                }
                let excess = (cache_age.len().map_err(db_err)? as usize)
                    .saturating_sub(self.retention_count);
                for key in oldest(&cache_age, excess, cutoff)? {
                    cache_age.remove(key.as_slice()).map_err(db_err)?;
                    if let Some((_, cache_key)) = split_age_key(&key) {
                        cache.remove(cache_key).map_err(db_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }
}

/// The index keys to prune: the `excess` oldest, then any older than `cutoff`. A key too
/// short to hold a time (never written by us) is pruned too, so it cannot stick.
fn oldest(
    index: &redb::Table<'_, &'static [u8], &'static [u8]>,
    mut excess: usize,
    cutoff: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut doomed = Vec::new();
    for row in index.iter().map_err(db_err)? {
        let (k, _) = row.map_err(db_err)?;
        let key = k.value();
        let at = split_age_key(key).map_or(0, |(at, _)| at);
        if excess == 0 && at >= cutoff {
            break;
        }
        excess = excess.saturating_sub(1);
        doomed.push(key.to_vec());
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StoreConfig {
        StoreConfig {
            result_retention: Duration::from_secs(3600),
            result_retention_count: 3,
            commit_interval: Duration::from_millis(5),
            max_backlog_bytes: 1 << 20,
            replay_per_sec: 100,
            replay_in_flight: 32,
        }
    }

    fn task(id: &str) -> StoredTask {
        StoredTask {
            id: id.into(),
            attempt: 1,
            kind: "echo".into(),
            timeout_ms: 1000,
            priority: 0,
            deadline_ms: 0,
            cacheable: false,
            accepted_at_ms: 1,
            payload: b"payload".to_vec(),
            result: None,
            finished_at_ms: 0,
        }
    }

    #[test]
    fn accepted_tasks_survive_a_reopen_and_finished_ones_are_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (store, rec) = RedbStore::<u32>::open(dir.path(), &cfg(), tx).expect("opens");
            assert!(rec.unfinished.is_empty());
            store
                .submit(Op::Accept {
                    task: task("a"),
                    token: 1,
                })
                .expect("queued");
            store
                .submit(Op::Accept {
                    task: task("b"),
                    token: 2,
                })
                .expect("queued");
            store
                .submit(Op::Finish {
                    id: "b".into(),
                    result: b"done".to_vec(),
                    at_ms: 10,
                    token: 3,
                })
                .expect("queued");
            let mut got: Vec<u32> = (0..3)
                .map(|_| rx.blocking_recv().expect("committed").token)
                .collect();
            got.sort();
            assert_eq!(got, [1, 2, 3]);
            assert_eq!(
                store
                    .task("b")
                    .expect("reads")
                    .expect("present")
                    .result
                    .as_deref(),
                Some(&b"done"[..])
            );
        }
        // Reopen, as after a crash: "a" is unfinished with its payload; "b" is finished.
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<Committed<u32>>();
        let (store, rec) = RedbStore::<u32>::open(dir.path(), &cfg(), tx).expect("reopens");
        assert_eq!(rec.unfinished.len(), 1);
        assert_eq!(rec.unfinished[0].id, "a");
        assert_eq!(rec.unfinished[0].payload, b"payload");
        assert_eq!(rec.finished, vec!["b".to_owned()]);
        assert!(
            store
                .task("b")
                .expect("reads")
                .expect("present")
                .payload
                .is_empty(),
            "payload dropped once finished"
        );
    }

    #[test]
    fn results_are_pruned_by_count_and_cache_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (store, _) = RedbStore::<u32>::open(dir.path(), &cfg(), tx).expect("opens");
        let now = crate::service::now_ms();
        for i in 0..6u32 {
            store
                .submit(Op::Finish {
                    id: format!("t{i}"),
                    result: vec![i as u8],
                    at_ms: now + u64::from(i),
                    token: i,
                })
                .expect("queued");
        }
        store
            .submit(Op::CachePut {
                key: [7; 32],
                output: b"cached".to_vec(),
                at_ms: now,
            })
            .expect("queued");
        for _ in 0..6 {
            rx.blocking_recv().expect("committed");
        }
        assert_eq!(
            store.cached(&[7; 32]).expect("reads").as_deref(),
            Some(&b"cached"[..])
        );
        assert_eq!(store.cached(&[8; 32]).expect("reads"), None);
        // Pruning runs at most once a second, on the next commit.
        std::thread::sleep(Duration::from_millis(1100));
        store
            .submit(Op::Finish {
                id: "t6".into(),
                result: vec![6],
                at_ms: now + 6,
                token: 6,
            })
            .expect("queued");
        rx.blocking_recv().expect("committed");
        let kept: Vec<bool> = (0..7)
            .map(|i| store.task(&format!("t{i}")).expect("reads").is_some())
            .collect();
        assert_eq!(
            kept,
            [false, false, false, false, true, true, true],
            "the three newest remain"
        );
    }
}

#[cfg(test)]
mod raw_bytes_tests {
    use super::*;

    #[test]
    fn byte_fields_keep_postcards_length_then_bytes_layout() {
        #[derive(Serialize)]
        struct Plain {
            payload: Vec<u8>,
            result: Option<Vec<u8>>,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Raw {
            #[serde(with = "raw_bytes")]
            payload: Vec<u8>,
            #[serde(with = "raw_bytes::option")]
            result: Option<Vec<u8>>,
        }
        for (payload, result) in [(vec![1, 2, 3], Some(vec![9; 300])), (vec![], None)] {
            let plain = postcard::to_allocvec(&Plain {
                payload: payload.clone(),
                result: result.clone(),
            })
            .expect("encodes");
            let raw = Raw { payload, result };
            let bytes = postcard::to_allocvec(&raw).expect("encodes");
            assert_eq!(
                bytes, plain,
                "records written before this change still decode"
            );
            assert_eq!(postcard::from_bytes::<Raw>(&bytes).expect("decodes"), raw);
        }
    }
}
