//! [`RedbStore`]: opening the file, reading back what it holds, and the reads the
//! agent makes; writes go to the writer thread.

use std::path::Path;

use redb::{Database, ReadableDatabase};

use super::backlog;
use super::cache::{CACHE, CACHE_AGE};
use super::cell::DbCell;
use super::error::StoreError;
use super::generations::{self, Generations};
use super::ops::{Committed, Op, Recovered, TaskStore};
use super::record::StoredTask;
use super::writer::Writer;
use crate::config::StoreConfig;

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
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("agent.redb");
        let cell = DbCell::open(&path)?;
        let db = cell.get()?;
        {
            let tx = db.begin_write()?;
            Generations::prepare(&tx, fog_rt::clock::now_ms())?;
            tx.open_table(CACHE)?;
            tx.open_table(CACHE_AGE)?;
            tx.commit()?;
        }
        let (recovered, generations) = recover(&db)?;
        drop(db);
        let db = cell;
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            interval: cfg.commit_interval,
            retention: cfg.result_retention,
            retention_count: cfg.result_retention_count,
            committed,
            generations: Some(generations),
        };
        let writer = std::thread::Builder::new()
            .name("fog-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Spawn {
                thread: "store",
                source,
            })?;
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

fn recover(db: &Database) -> Result<(Recovered, Generations), StoreError> {
    let scan = Generations::scan(db)?;
    let mut out = Recovered::default();
    for record in scan.records {
        match record {
            generations::Recovered::Unfinished(task) => out.unfinished.push(task),
            generations::Recovered::Finished(id) => out.finished.push(id),
        }
    }
    out.unfinished.sort_by_key(|t| t.accepted_at_ms);
    Ok((out, scan.generations))
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
        generations::lookup(&*self.db.get()?, id)
    }

    fn cached(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let t = tx.open_table(CACHE)?;
        Ok(t.get(key.as_slice())?.map(|v| v.value().to_vec()))
    }
}
