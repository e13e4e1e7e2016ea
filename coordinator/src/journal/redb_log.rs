//! The single coordinator's journal: an append-only redb log in
//! `DATA_DIR/coordinator.redb`.
//!
//! Layout: one entry per group commit, holding every record of that commit (as a
//! write-ahead log does); a task's latest record is its state. A commit is then one
//! B-tree append however many tasks it carries. The first layout (`v1/tasks`, one row
//! per task id, rewritten in place, plus a `v1/finished` index) made three B-tree
//! writes per task and was most of the coordinator's CPU under load
//! (docs/performance.md). The writer keeps, in memory, each task's entry and how many
//! tasks' latest records each entry still holds (rebuilt from the log on open, which
//! reads every record anyway); an entry nobody's latest record is in any more,
//! superseded or pruned, is deleted whole. A v1 file is converted on open.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::{decode, encode, Backend, Committed, JournalConfig, JournalError, Op, Record};

/// commit sequence -> the records of that commit (see [`encode_entry`]).
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("v2/log");
/// The first layout: task id -> record, and (finished_at_ms ++ id) for pruning. Read
/// and converted on open.
pub(super) const V1_TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("v1/tasks");
pub(super) const V1_FINISHED: TableDefinition<&[u8], ()> = TableDefinition::new("v1/finished");

/// Turn a v1 file (records keyed by task id) into the log, in one transaction.
pub(super) fn convert_v1(db: &Database) -> Result<(), JournalError> {
    let tx = db.begin_write()?;
    let has_v1 = tx.list_tables()?.any(|t| t.name() == V1_TASKS.name());
    if has_v1 {
        let mut rows = Vec::new();
        {
            let old = tx.open_table(V1_TASKS)?;
            for row in old.iter()? {
                let (_, v) = row?;
                let bytes = v.value().to_vec();
                // In submission order, so the log reads as if written that way.
                let at = decode(&bytes).map_or(0, |r| r.submitted_ms);
                rows.push((at, bytes));
            }
        }
        rows.sort_by_key(|(at, _)| *at);
        {
            let mut log = tx.open_table(LOG)?;
            let seq = log.last()?.map_or(0, |(k, _)| k.value() + 1);
            let entry = encode_entry(rows.iter().map(|(_, b)| b.as_slice()));
            log.insert(seq, entry.as_slice())?;
        }
        tx.delete_table(V1_TASKS)?;
        tx.delete_table(V1_FINISHED)?;
        tracing::info!(
            records = rows.len(),
            "task journal converted to the log layout"
        );
    } else {
        tx.open_table(LOG)?;
    }
    Ok(tx.commit()?)
}

/// One log entry: a u32 LE count, then per record a u32 LE length and the record.
pub(super) fn encode_entry<'a>(records: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![0; 4];
    let mut n: u32 = 0;
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
        n += 1;
    }
    out[..4].copy_from_slice(&n.to_le_bytes());
    out
}

/// The records of one entry; an entry that does not parse is an error as a whole.
pub(super) fn decode_entry(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let (n, mut rest) = bytes.split_first_chunk::<4>().ok_or("short entry")?;
    let n = u32::from_le_bytes(*n) as usize;
    // Each record takes at least its 4-byte length: a count past that is corrupt.
    if n > rest.len() / 4 {
        return Err(format!("entry claims {n} records in {} bytes", rest.len()));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("short entry")?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err("record runs past its entry".into());
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err("bytes after the last record".into());
    }
    Ok(out)
}

/// What the writer knows about the log: which entry holds each task's latest record,
/// how many latest records each entry still holds, and the finished tasks oldest first.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) next_seq: u64,
    latest: HashMap<String, u64>,
    live: HashMap<u64, u32>,
    /// Entries no task's latest record is in any more: deleted at the next commit.
    dead: Vec<u64>,
    /// (finished at ms, entry of the finish record, task id), in log order.
    finished: VecDeque<(u64, u64, String)>,
}

impl Index {
    /// A record for `id` is durable in entry `seq`.
    fn note(&mut self, id: &str, seq: u64, finished_at: Option<u64>) {
        let old = match self.latest.get_mut(id) {
            Some(old) => Some(std::mem::replace(old, seq)),
            None => {
                self.latest.insert(id.to_owned(), seq);
                None
            }
        };
        *self.live.entry(seq).or_default() += 1;
        if let Some(old) = old {
            self.release(old);
        }
        if let Some(at) = finished_at {
            self.finished.push_back((at, seq, id.to_owned()));
        }
    }

    /// One latest record fewer in entry `seq`.
    fn release(&mut self, seq: u64) {
        if let Some(n) = self.live.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                self.live.remove(&seq);
                self.dead.push(seq);
            }
        }
    }

    /// Forget finished tasks past the count or the age, oldest first.
    fn expire(&mut self, keep_count: usize, cutoff_ms: u64) {
        while let Some((at, seq, _)) = self.finished.front() {
            if self.finished.len() <= keep_count && *at >= cutoff_ms {
                break;
            }
            let seq = *seq;
            if let Some((_, _, id)) = self.finished.pop_front() {
                if self.latest.get(&id) == Some(&seq) {
                    self.latest.remove(&id);
                    self.release(seq);
                }
            }
        }
    }
}

/// Read the whole log: each task's latest record, and the writer's index.
pub(super) fn read_log(db: &Database) -> Result<(Index, Vec<Record>), JournalError> {
    let mut index = Index::default();
    let mut records: HashMap<String, Record> = HashMap::new();
    let tx = db.begin_read()?;
    let log = tx.open_table(LOG)?;
    for row in log.iter()? {
        let (k, v) = row?;
        let seq = k.value();
        index.next_seq = seq + 1;
        let entry = match decode_entry(v.value()) {
            Ok(e) => e,
            // Logged and left: one bad entry never stops the coordinator.
            Err(e) => {
                tracing::error!(seq, error = %e, "skipping an unreadable task journal entry");
                continue;
            }
        };
        for bytes in entry {
            match decode(bytes) {
                Ok(r) => {
                    let id = r.sub.id.clone();
                    index.note(&id, seq, r.result.as_ref().map(|x| x.at_ms));
                    records.insert(id, r);
                }
                Err(e) => tracing::error!(seq, error = %e, "skipping an unreadable task record"),
            }
        }
    }
    let mut records: Vec<Record> = records.into_values().collect();
    records.sort_by_key(|r| r.submitted_ms);
    Ok((index, records))
}

/// The redb log as a journal backend.
pub(super) struct RedbLog {
    db: Database,
    cfg: JournalConfig,
    index: Index,
}

impl RedbLog {
    /// Open (or create) `dir/coordinator.redb`; the backend and every record.
    pub(super) fn open(
        dir: &Path,
        cfg: &JournalConfig,
    ) -> Result<(RedbLog, Vec<Record>), JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let file = dir.join("coordinator.redb");
        let db = Database::builder()
            .set_cache_size(8 << 20)
            .create(&file)
            .map_err(|source| JournalError::Open { path: file, source })?;
        convert_v1(&db)?;
        let (index, records) = read_log(&db)?;
        let log = RedbLog {
            db,
            cfg: cfg.clone(),
            index,
        };
        Ok((log, records))
    }
}

impl Backend for RedbLog {
    fn commit(&mut self, batch: &[Op], prune: bool) -> Result<Committed, JournalError> {
        commit(&self.db, &self.cfg, &mut self.index, batch, prune)?;
        // One coordinator: every task in it is its own.
        Ok(Committed::default())
    }
}

/// Append `batch` as one entry, and delete the entries nothing lives in any more, in
/// one transaction. `index` changes only once the commit is durable: an entry must
/// never be deleted because a newer record was written that did not survive.
pub(super) fn commit(
    db: &Database,
    cfg: &JournalConfig,
    index: &mut Index,
    batch: &[Op],
    prune: bool,
) -> Result<(), JournalError> {
    if prune {
        let cutoff = fog_rt::clock::now_ms().saturating_sub(cfg.keep_finished.as_millis() as u64);
        // Only in memory until the deletes below commit; a failed commit leaves the
        // entries in the file, where the next open finds them (and expires them again).
        index.expire(cfg.keep_finished_count, cutoff);
    }
    let mut records = Vec::with_capacity(batch.len());
    for op in batch {
        let (Op::Accept(r) | Op::Attempt(r) | Op::Finish(r)) = op;
        records.push(encode(r)?);
    }
    let entry = encode_entry(records.iter().map(Vec::as_slice));
    let seq = index.next_seq;
    let dead = std::mem::take(&mut index.dead);
    let tx = db.begin_write()?;
    let written = (|| {
        let mut log = tx.open_table(LOG)?;
        log.insert(seq, entry.as_slice())?;
        for s in &dead {
            log.remove(*s)?;
        }
        Ok::<(), JournalError>(())
    })();
    if let Err(e) = written.and_then(|()| Ok(tx.commit()?)) {
        // Nothing was deleted: try again at the next commit.
        index.dead.extend(dead);
        return Err(e);
    }
    index.next_seq += 1;
    let now = fog_rt::clock::now_ms();
    for op in batch {
        let (Op::Accept(r) | Op::Attempt(r) | Op::Finish(r)) = op;
        let finished_at = matches!(op, Op::Finish(_)).then_some(now);
        index.note(&r.sub.id, seq, finished_at);
    }
    Ok(())
}
