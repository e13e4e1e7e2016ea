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

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// (finished_at_ms, id) for pruning finished results oldest first.
const FINISHED: TableDefinition<(u64, &str), ()> = TableDefinition::new("finished");
const CACHE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cache");
/// (stored_at_ms, key) for pruning the cache oldest first.
const CACHE_AGE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("cache_age");

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
    pub payload: Vec<u8>,
    /// The encoded result message, once finished.
    pub result: Option<Vec<u8>>,
    pub finished_at_ms: u64,
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
    db: std::sync::Arc<Database>,
    ops: Option<std::sync::mpsc::SyncSender<Op<T>>>,
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
        let db = Database::builder()
            // A small cache: this runs on 512 MB boards.
            .set_cache_size(1 << 20)
            .create(&path)
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(TASKS).map_err(db_err)?;
            tx.open_table(FINISHED).map_err(db_err)?;
            tx.open_table(CACHE).map_err(db_err)?;
            tx.open_table(CACHE_AGE).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        let db = std::sync::Arc::new(db);
        let recovered = recover(&db)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(MAX_BATCH * 2);
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
        match decode_task(k.value(), v.value()) {
            Ok(task) if task.result.is_none() => out.unfinished.push(task),
            Ok(task) => out.finished.push(task.id),
            // A record we cannot read is logged and left; it never stops the agent.
            Err(e) => tracing::error!(error = %e, "skipping unreadable task record"),
        }
    }
    out.unfinished.sort_by_key(|t| t.accepted_at_ms);
    Ok(out)
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
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(TASKS).map_err(db_err)?;
        match t.get(id).map_err(db_err)? {
            Some(v) => Ok(Some(decode_task(id, v.value())?)),
            None => Ok(None),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(CACHE).map_err(db_err)?;
        Ok(t.get(key.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }
}

struct Writer<T> {
    db: std::sync::Arc<Database>,
    interval: Duration,
    retention: Duration,
    retention_count: usize,
    committed: tokio::sync::mpsc::UnboundedSender<Committed<T>>,
}

impl<T> Writer<T> {
    fn run(self, rx: std::sync::mpsc::Receiver<Op<T>>) {
        let mut batch: Vec<Op<T>> = Vec::with_capacity(MAX_BATCH);
        let mut last_prune = Instant::now();
        while let Ok(first) = rx.recv() {
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
            let res = self.commit(&batch, prune).map_err(|e| e.to_string());
            if let Err(e) = &res {
                tracing::error!(error = %e, ops = batch.len(), "store commit failed");
            }
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

    fn commit(&self, batch: &[Op<T>], prune: bool) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
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
                            .insert(task.id.as_str(), bytes.as_slice())
                            .map_err(db_err)?;
                    }
                    Op::Finish {
                        id, result, at_ms, ..
                    } => {
                        let prev = tasks
                            .get(id.as_str())
                            .map_err(db_err)?
                            .map(|v| v.value().to_vec());
                        let mut task = match prev {
                            Some(b) => decode_task(id, &b)?,
                            // Rejected before it was ever accepted: keep the answer anyway.
                            None => StoredTask {
                                id: id.clone(),
                                attempt: 0,
                                kind: String::new(),
                                timeout_ms: 0,
                                priority: 0,
                                deadline_ms: 0,
                                cacheable: false,
                                accepted_at_ms: *at_ms,
                                payload: Vec::new(),
                                result: None,
                                finished_at_ms: 0,
                            },
                        };
                        task.payload = Vec::new();
                        task.result = Some(result.clone());
                        task.finished_at_ms = *at_ms;
                        let bytes = postcard::to_allocvec(&task).map_err(db_err)?;
                        tasks
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(db_err)?;
                        finished.insert((*at_ms, id.as_str()), ()).map_err(db_err)?;
                    }
                    Op::CachePut { key, output, at_ms } => {
                        cache
                            .insert(key.as_slice(), output.as_slice())
                            .map_err(db_err)?;
                        cache_age
                            .insert((*at_ms, key.as_slice()), ())
                            .map_err(db_err)?;
                    }
                }
            }
            if prune {
                let now_ms = crate::service::now_ms();
                let cutoff = now_ms.saturating_sub(self.retention.as_millis() as u64);
                let mut excess =
                    (finished.len().map_err(db_err)? as usize).saturating_sub(self.retention_count);
                let mut doomed: Vec<(u64, String)> = Vec::new();
                for row in finished.iter().map_err(db_err)? {
                    let (k, _) = row.map_err(db_err)?;
                    let (at, id) = k.value();
                    if excess == 0 && at >= cutoff {
                        break;
                    }
                    excess = excess.saturating_sub(1);
                    doomed.push((at, id.to_owned()));
                }
                for (at, id) in &doomed {
                    finished.remove((*at, id.as_str())).map_err(db_err)?;
                    tasks.remove(id.as_str()).map_err(db_err)?;
                }
                let mut excess = (cache_age.len().map_err(db_err)? as usize)
                    .saturating_sub(self.retention_count);
                let mut doomed: Vec<(u64, Vec<u8>)> = Vec::new();
                for row in cache_age.iter().map_err(db_err)? {
                    let (k, _) = row.map_err(db_err)?;
                    let (at, key) = k.value();
                    if excess == 0 && at >= cutoff {
                        break;
                    }
                    excess = excess.saturating_sub(1);
                    doomed.push((at, key.to_vec()));
                }
                for (at, key) in &doomed {
                    cache_age.remove((*at, key.as_slice())).map_err(db_err)?;
                    cache.remove(key.as_slice()).map_err(db_err)?;
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StoreConfig {
        StoreConfig {
            result_retention: Duration::from_secs(3600),
            result_retention_count: 3,
            commit_interval: Duration::from_millis(5),
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
