//! The writer thread: groups operations into durable commits (each with what is queued
//! behind it: [`GroupCommit`]), reports each once durable, and probes a degraded store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_rt::group_commit::GroupCommit;
use redb::{Database, TableDefinition};

use super::cache::{self, age_key, CACHE, CACHE_AGE};
use super::cell::DbCell;
use super::error::StoreError;
use super::generations::{self, Generations};
use super::ops::{Committed, Op};
use super::record::StoredTask;
use super::{Bytes, MAX_BATCH};

/// Written and emptied again to test a degraded store.
const PROBE: Bytes = TableDefinition::new("v1/probe");

pub(super) struct Writer<T> {
    pub(super) db: Arc<DbCell>,
    pub(super) interval: Duration,
    pub(super) retention: Duration,
    pub(super) retention_count: usize,
    pub(super) committed: tokio::sync::mpsc::UnboundedSender<Committed<T>>,
    /// `None` after a failed commit: the in-memory view may then be ahead of the
    /// file, so it is read again from the file before the next commit.
    pub(super) generations: Option<Generations>,
}

impl<T> Writer<T> {
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<Op<T>>) {
        // Grows with the load it sees instead of reserving MAX_BATCH slots up front.
        let mut batch: Vec<Op<T>> = Vec::new();
        let mut last_prune = Instant::now();
        let mut gather = GroupCommit::new(self.interval, MAX_BATCH);
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
            gather.fill(&rx, &mut batch);
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
        let tx = self.db.get()?.begin_write()?;
        {
            let mut t = tx.open_table(PROBE)?;
            t.insert(b"probe".as_slice(), vec![0u8; 64 * 1024].as_slice())?;
            t.remove(b"probe".as_slice())?;
        }
        Ok(tx.commit()?)
    }

    fn commit(&mut self, batch: &[Op<T>], prune: bool) -> Result<(), StoreError> {
        let db = self.db.get()?;
        let mut generations = match self.generations.take() {
            Some(g) => g,
            None => Generations::scan(&db)?.generations,
        };
        self.commit_with(&db, &mut generations, batch, prune)?;
        // Only a committed view is kept (a failed commit leaves `None`).
        self.generations = Some(generations);
        Ok(())
    }

    fn commit_with(
        &self,
        db: &Database,
        generations: &mut Generations,
        batch: &[Op<T>],
        prune: bool,
    ) -> Result<(), StoreError> {
        let now_ms = fog_rt::clock::now_ms();
        let retention_ms = self.retention.as_millis() as u64;
        // Each generation holds half the retention, so two hold between half and all.
        let cap = (self.retention_count as u64 / 2).max(1);
        let tx = db.begin_write()?;
        {
            if generations.aged(now_ms, retention_ms / 2) {
                generations.rotate(&tx, now_ms)?;
            }
            let mut tasks = tx.open_table(generations::table(&generations.current_name()))?;
            let mut cache = tx.open_table(CACHE)?;
            let mut cache_age = tx.open_table(CACHE_AGE)?;
            for op in batch {
                let (id, bytes) = match op {
                    Op::Accept { task, .. } => (&task.id, postcard::to_allocvec(task)?),
                    Op::Finish {
                        id, result, at_ms, ..
                    } => {
                        // Written over the accepted record (or beside it, in a newer
                        // generation) without reading it: a finished task is only
                        // ever asked for its result.
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
                        (id, postcard::to_allocvec(&task)?)
                    }
                    Op::CachePut { key, output, at_ms } => {
                        cache.insert(key.as_slice(), output.as_slice())?;
                        cache_age.insert(age_key(*at_ms, key).as_slice(), [].as_slice())?;
                        continue;
                    }
                };
                if matches!(op, Op::Finish { .. }) && generations.full(cap) {
                    drop(tasks);
                    generations.rotate(&tx, now_ms)?;
                    tasks = tx.open_table(generations::table(&generations.current_name()))?;
                }
                let replaced = tasks.insert(id.as_bytes(), bytes.as_slice())?.is_some();
                match op {
                    Op::Accept { .. } => generations.accepted(id, replaced),
                    _ => generations.finished(id, replaced),
                }
            }
            if prune {
                let cutoff = now_ms.saturating_sub(retention_ms);
                cache::prune(&mut cache, &mut cache_age, self.retention_count, cutoff)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
