//! The coordinator's durable task state (redb, `DATA_DIR/coordinator.redb`).
//!
//! Every accepted task is written before the client is told `accepted`, and every
//! change after (a new attempt, the final result). After a crash the coordinator reads
//! it back: unfinished tasks are placed again with a raised attempt (fencing drops
//! whatever the old attempt still reports), finished ones answer resubmissions and
//! late duplicates. Finished records are pruned by age and count.
//!
//! Writes are grouped like the agent's store: one writer thread, one durable commit
//! (one fsync) for each write and whatever is queued behind it, the writes that arrive
//! meanwhile sharing the next ([`fog_rt::group_commit`]), and a notice per accepted
//! task once its commit is durable.
//!
//! Layout: an append-only log with one entry per commit, holding every record of
//! that commit (a group commit, as a write-ahead log does); a task's latest record is
//! its state. A commit is then one B-tree append however many tasks it carries. The
//! first layout (`v1/tasks`, one row per task id, rewritten in place, plus a
//! `v1/finished` index) made three B-tree writes per task and was most of the
//! coordinator's CPU under load (docs/performance.md). The writer keeps, in memory,
//! each task's entry and how many tasks' latest records each entry still holds
//! (rebuilt from the log on open, which reads every record anyway); an entry nobody's
//! latest record is in any more, superseded or pruned, is deleted whole. A v1 file is
//! converted on open.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_proto::{codec, Encoding, TaskResult, TaskSubmission};
use fog_rt::group_commit::GroupCommit;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

/// commit sequence -> the records of that commit (see [`encode_entry`]).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("v2/log");
/// The first layout: task id -> record, and (finished_at_ms ++ id) for pruning. Read
/// and converted on open.
const V1_TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("v1/tasks");
const V1_FINISHED: TableDefinition<&[u8], ()> = TableDefinition::new("v1/finished");

/// What went wrong with the journal, each with its source.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("opening the task journal in {path}: creating the directory: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the task journal {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("opening the task journal in {path}: starting its writer thread: {source}")]
    Writer {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("task journal: starting a transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("task journal: opening a table: {0}")]
    Table(#[from] redb::TableError),
    #[error("task journal: reading or writing: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("task journal: committing: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("task journal: encoding a record: {0}")]
    Encode(#[from] fog_proto::EncodeError),
}

/// One task as stored. Submissions and results are kept in the wire format (postcard),
/// so the journal needs no schema of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub sub: TaskSubmission,
    pub attempt: u32,
    pub submitted_ms: u64,
    pub result: Option<TaskResult>,
}

/// Record layout: tag byte 1 (unfinished) or 2 (finished), attempt u32 LE,
/// submitted_ms u64 LE, then the postcard submission (unfinished) or result (finished;
/// the payload is not kept).
fn encode(r: &Record) -> Result<Vec<u8>, JournalError> {
    let s = &r.sub;
    let mut out = Vec::with_capacity(
        96 + s.payload.0.len() + s.id.len() + s.kind.len() + s.reply_to.len() + s.key.len(),
    );
    out.push(if r.result.is_some() { 2 } else { 1 });
    out.extend_from_slice(&r.attempt.to_le_bytes());
    out.extend_from_slice(&r.submitted_ms.to_le_bytes());
    match &r.result {
        None => codec::encode_into(&r.sub, Encoding::Postcard, &mut out)?,
        Some(res) => {
            // Keep what a resubmission must be answered with: the reply topic and kind,
            // and the result; not the payload.
            let sub = without_payload(&r.sub);
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            codec::encode_into(&sub, Encoding::Postcard, &mut out)?;
            let len = (out.len() - len_at - 4) as u32;
            out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            codec::encode_into(res, Encoding::Postcard, &mut out)?;
        }
    }
    Ok(out)
}

/// A copy of `s` without its payload (not copied only to be dropped). A struct literal,
/// so a new field is a compile error here rather than silently left out.
fn without_payload(s: &TaskSubmission) -> TaskSubmission {
    TaskSubmission {
        id: s.id.clone(),
        kind: s.kind.clone(),
        payload: Default::default(),
        reply_to: s.reply_to.clone(),
        priority: s.priority,
        timeout_ms: s.timeout_ms,
        cacheable: s.cacheable,
        key: s.key.clone(),
        strategy: s.strategy.clone(),
        requires: s.requires.clone(),
    }
}

fn decode(bytes: &[u8]) -> Result<Record, String> {
    let (&tag, rest) = bytes.split_first().ok_or("empty record")?;
    let (attempt, rest) = rest.split_first_chunk::<4>().ok_or("short record")?;
    let (submitted, rest) = rest.split_first_chunk::<8>().ok_or("short record")?;
    let attempt = u32::from_le_bytes(*attempt);
    let submitted_ms = u64::from_le_bytes(*submitted);
    match tag {
        1 => Ok(Record {
            sub: codec::decode(rest).map_err(|e| e.to_string())?,
            attempt,
            submitted_ms,
            result: None,
        }),
        2 => {
            let (len, rest) = rest.split_first_chunk::<4>().ok_or("short record")?;
            let len = u32::from_le_bytes(*len) as usize;
            if rest.len() < len {
                return Err("short record".into());
            }
            let (a, b) = rest.split_at(len);
            Ok(Record {
                sub: codec::decode(a).map_err(|e| e.to_string())?,
                attempt,
                submitted_ms,
                result: Some(codec::decode(b).map_err(|e| e.to_string())?),
            })
        }
        t => Err(format!("unknown record tag {t}")),
    }
}

/// A write for the journal.
#[derive(Debug)]
pub enum Op {
    /// A new task; its id comes back as [`Accepted`] once durable.
    Accept(Record),
    /// A new attempt of a known task.
    Attempt(Record),
    /// The final result.
    Finish(Record),
}

/// Something now durable that the client must hear about.
#[derive(Debug)]
pub enum Durable {
    /// The task is accepted: it will end with exactly one final result.
    Accepted { id: String, reply_to: String },
    /// The task's final result, to forward.
    Finished {
        reply_to: String,
        result: TaskResult,
    },
}

pub struct Journal {
    ops: Option<std::sync::mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Whether the writer's last commit failed (the disk is full, say).
    failing: Arc<AtomicBool>,
    /// How long each group commit took (for `/metrics`).
    commits: Arc<crate::latency::SharedHistogram>,
}

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub commit_interval: Duration,
    pub keep_finished: Duration,
    pub keep_finished_count: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            // Group commit without a timed wait: measured best for latency and
            // throughput alike (docs/performance.md, "Latency").
            commit_interval: Duration::ZERO,
            keep_finished: Duration::from_secs(3600),
            keep_finished_count: 100_000,
        }
    }
}

impl Journal {
    /// Open (or create) `dir/coordinator.redb`; returns the journal and every record.
    pub fn open(
        dir: &Path,
        cfg: &JournalConfig,
        accepted: tokio::sync::mpsc::UnboundedSender<Durable>,
    ) -> Result<(Journal, Vec<Record>), JournalError> {
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
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg = cfg.clone();
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let commits = Arc::new(crate::latency::SharedHistogram::default());
        let timed = commits.clone();
        let writer = std::thread::Builder::new()
            .name("fog-journal".into())
            .spawn(move || write_loop(db, cfg, index, rx, accepted, &flag, &timed))
            .map_err(|source| JournalError::Writer {
                path: dir.to_owned(),
                source,
            })?;
        Ok((
            Journal {
                ops: Some(tx),
                writer: Some(writer),
                failing,
                commits,
            },
            records,
        ))
    }

    /// Whether the journal takes writes: its writer thread runs and its last commit
    /// succeeded (the journal part of `/api/v1/health`).
    pub fn is_healthy(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| !w.is_finished())
            && !self.failing.load(Ordering::Relaxed)
    }

    /// The group commits' durations so far.
    pub fn commit_latency(&self) -> crate::latency::Histogram {
        self.commits.snapshot()
    }

    pub fn write(&self, op: Op) {
        if let Some(tx) = &self.ops {
            // The writer only stops when the journal is dropped.
            let _ = tx.send(op);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.ops.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Turn a v1 file (records keyed by task id) into the log, in one transaction.
fn convert_v1(db: &Database) -> Result<(), JournalError> {
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
fn encode_entry<'a>(records: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
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
fn decode_entry(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
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
struct Index {
    next_seq: u64,
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
fn read_log(db: &Database) -> Result<(Index, Vec<Record>), JournalError> {
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

fn write_loop(
    db: Database,
    cfg: JournalConfig,
    mut index: Index,
    rx: std::sync::mpsc::Receiver<Op>,
    accepted: tokio::sync::mpsc::UnboundedSender<Durable>,
    failing: &AtomicBool,
    commits: &crate::latency::SharedHistogram,
) {
    let mut batch = Vec::new();
    let mut last_prune = Instant::now();
    let mut gather = GroupCommit::new(cfg.commit_interval, 8192);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        gather.fill(&rx, &mut batch);
        let prune = last_prune.elapsed() >= Duration::from_secs(1);
        if prune {
            last_prune = Instant::now();
        }
        let started = Instant::now();
        let committed = commit(&db, &cfg, &mut index, &batch, prune);
        commits.observe(started.elapsed());
        let ok = match committed {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "task journal commit failed");
                false
            }
        };
        failing.store(!ok, Ordering::Relaxed);
        for op in batch.drain(..) {
            match op {
                // Not acknowledged if not durable: the client resubmits.
                Op::Accept(r) if ok => {
                    let _ = accepted.send(Durable::Accepted {
                        id: r.sub.id,
                        reply_to: r.sub.reply_to,
                    });
                }
                // A result is forwarded even if its commit failed: the task is done
                // and the client waits for it; only a crash now could repeat it.
                Op::Finish(r) => {
                    if let Some(result) = r.result {
                        let _ = accepted.send(Durable::Finished {
                            reply_to: r.sub.reply_to,
                            result,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// Append `batch` as one entry, and delete the entries nothing lives in any more, in
/// one transaction. `index` changes only once the commit is durable: an entry must
/// never be deleted because a newer record was written that did not survive.
fn commit(
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

#[cfg(test)]
mod tests;
