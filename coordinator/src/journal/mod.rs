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
//! Where the records live is a [`Backend`]: the redb log of a single coordinator
//! ([`redb_log`], the default: nothing to install), or a PostgreSQL database shared by
//! several coordinators ([`postgres`], cluster mode: each owns the tasks it accepted
//! under a lease, and the others adopt them when it dies).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_proto::{codec, Encoding, TaskResult, TaskSubmission};
use fog_rt::group_commit::GroupCommit;

pub mod postgres;
mod redb_log;
#[cfg(test)]
use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};
#[cfg(test)]
use redb_log::*;

pub use postgres::{ClusterConfig, LeaseClock};

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
    #[error("task journal (PostgreSQL): {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("task journal (PostgreSQL): this coordinator ({id}, epoch {epoch}) lost its lease: another coordinator may have adopted its tasks, so it must not write or answer for them")]
    Fenced { id: String, epoch: i64 },
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

/// Something now durable that the client must hear about, or that the main loop must
/// act on.
#[derive(Debug)]
pub enum Durable {
    /// The task is accepted: it will end with exactly one final result.
    Accepted { id: String, reply_to: String },
    /// The task's final result, to forward.
    Finished {
        reply_to: String,
        result: TaskResult,
    },
    /// Cluster mode: unfinished tasks of a coordinator whose lease ran out, now this
    /// one's, to place again with a raised attempt (as after a restart).
    Adopted(Vec<Record>),
    /// Cluster mode: this coordinator lost its lease; it must stop at once (systemd
    /// starts it again, with a new epoch).
    Fenced(String),
}

/// What a commit found besides the writes (cluster mode: tasks other coordinators
/// hold; always empty with one coordinator).
#[derive(Debug, Default)]
struct Committed {
    /// Tasks of this batch now owned by another coordinator: their results are its to
    /// send, not this one's.
    not_ours: std::collections::HashSet<String>,
    /// Submissions of ids the cluster already finished: their stored records, whose
    /// results answer the client.
    finished_elsewhere: Vec<Record>,
}

/// Where the records live. One writer thread owns it.
trait Backend: Send + 'static {
    /// Make `batch` durable in one transaction (`prune`: and drop finished records
    /// past their age or count). An error means none of it is.
    fn commit(&mut self, batch: &[Op], prune: bool) -> Result<Committed, JournalError>;

    /// How often [`idle`](Backend::idle) must run, whether or not there are writes.
    fn idle_every(&self) -> Option<Duration> {
        None
    }

    /// Keep this coordinator's claim alive, and take over what others left: the
    /// records adopted.
    fn idle(&mut self) -> Result<Vec<Record>, JournalError> {
        Ok(Vec::new())
    }

    /// A clean stop, after the last commit.
    fn close(&mut self) {}
}

pub struct Journal {
    ops: Option<std::sync::mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Whether the writer's last commit failed (the disk is full, say).
    failing: Arc<AtomicBool>,
    /// How long each group commit took (for `/metrics`).
    commits: Arc<crate::latency::SharedHistogram>,
    /// Cluster mode: until when this coordinator's lease holds.
    lease: Option<Arc<LeaseClock>>,
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
        let (log, records) = redb_log::RedbLog::open(dir, cfg)?;
        let journal =
            Journal::start(log, cfg, accepted, None).map_err(|source| JournalError::Writer {
                path: dir.to_owned(),
                source,
            })?;
        Ok((journal, records))
    }

    /// Cluster mode: register with the PostgreSQL database `cluster` names (a new
    /// epoch), and return the journal and this coordinator's own records (those it
    /// owned before a restart).
    pub fn open_cluster(
        cluster: &ClusterConfig,
        cfg: &JournalConfig,
        accepted: tokio::sync::mpsc::UnboundedSender<Durable>,
    ) -> Result<(Journal, Vec<Record>), JournalError> {
        // The PostgreSQL client runs a small runtime of its own, which cannot start (or
        // stop) on a thread of the caller's runtime: it is made on a thread of its own
        // and lives on the writer thread.
        let (pg, records) = std::thread::scope(|s| {
            s.spawn(|| postgres::PgJournal::open(cluster, cfg))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let lease = pg.lease_clock();
        let journal = Journal::start(pg, cfg, accepted, Some(lease)).map_err(|source| {
            JournalError::Writer {
                path: PathBuf::from(cluster.coordinator_id.clone()),
                source,
            }
        })?;
        Ok((journal, records))
    }

    fn start(
        backend: impl Backend,
        cfg: &JournalConfig,
        accepted: tokio::sync::mpsc::UnboundedSender<Durable>,
        lease: Option<Arc<LeaseClock>>,
    ) -> std::io::Result<Journal> {
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg = cfg.clone();
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let commits = Arc::new(crate::latency::SharedHistogram::default());
        let timed = commits.clone();
        let clock = lease.clone();
        let writer = std::thread::Builder::new()
            .name("fog-journal".into())
            .spawn(move || write_loop(backend, cfg, rx, accepted, &flag, &timed, clock))?;
        Ok(Journal {
            ops: Some(tx),
            writer: Some(writer),
            failing,
            commits,
            lease,
        })
    }

    /// Whether this coordinator may still act for the tasks it owns: always with the
    /// redb journal; in cluster mode, while its lease (by this machine's clock, with a
    /// margin) has not run out since the last renewal. A process that was paused past
    /// its lease finds out here before it sends anything.
    pub fn lease_ok(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.is_valid())
    }

    /// Cluster mode: why this coordinator was fenced, once it was.
    pub fn fenced(&self) -> Option<String> {
        self.lease.as_ref().and_then(|l| l.fenced())
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

fn write_loop(
    mut backend: impl Backend,
    cfg: JournalConfig,
    rx: std::sync::mpsc::Receiver<Op>,
    accepted: tokio::sync::mpsc::UnboundedSender<Durable>,
    failing: &AtomicBool,
    commits: &crate::latency::SharedHistogram,
    lease: Option<Arc<LeaseClock>>,
) {
    let mut batch = Vec::new();
    let mut last_prune = Instant::now();
    let mut gather = GroupCommit::new(cfg.commit_interval, 8192);
    let idle_every = backend.idle_every();
    let mut next_idle = idle_every.map(|d| Instant::now() + d);
    loop {
        let first = match next_idle {
            None => rx.recv().ok(),
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        match first {
            Some(first) => {
                batch.push(first);
                gather.fill(&rx, &mut batch);
                let prune = last_prune.elapsed() >= Duration::from_secs(1);
                if prune {
                    last_prune = Instant::now();
                }
                let started = Instant::now();
                let committed = backend.commit(&batch, prune);
                commits.observe(started.elapsed());
                if let Err(e @ JournalError::Fenced { .. }) = committed {
                    // Nothing of this batch is answered: its tasks are another's now.
                    fenced(&e, &accepted, failing, lease.as_deref());
                    return;
                }
                let (ok, found) = match committed {
                    Ok(found) => (true, found),
                    Err(e) => {
                        tracing::error!(error = %e, ops = batch.len(), "task journal commit failed");
                        (false, Committed::default())
                    }
                };
                failing.store(!ok, Ordering::Relaxed);
                answer(batch.drain(..), ok, &found, &accepted);
                for r in found.finished_elsewhere {
                    if let Some(result) = r.result {
                        let _ = accepted.send(Durable::Finished {
                            reply_to: r.sub.reply_to,
                            result,
                        });
                    }
                }
            }
            // Stopped: the journal was dropped.
            None if next_idle.is_none() => break,
            None => {}
        }
        if let (Some(every), Some(at)) = (idle_every, next_idle) {
            if Instant::now() >= at {
                let idled = backend.idle();
                if idled.is_ok() {
                    failing.store(false, Ordering::Relaxed);
                }
                match idled {
                    Ok(adopted) if adopted.is_empty() => {}
                    Ok(adopted) => {
                        let _ = accepted.send(Durable::Adopted(adopted));
                    }
                    Err(e @ JournalError::Fenced { .. }) => {
                        fenced(&e, &accepted, failing, lease.as_deref());
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "task journal: renewing the lease failed");
                        failing.store(true, Ordering::Relaxed);
                    }
                }
                next_idle = Some(Instant::now() + every);
            }
        }
    }
    backend.close();
}

/// The writer stops for good: the main loop hears why.
fn fenced(
    why: &JournalError,
    accepted: &tokio::sync::mpsc::UnboundedSender<Durable>,
    failing: &AtomicBool,
    lease: Option<&LeaseClock>,
) {
    failing.store(true, Ordering::Relaxed);
    let reason = why.to_string();
    if let Some(l) = lease {
        l.fence(&reason);
    }
    tracing::error!(%reason, "task journal fenced");
    let _ = accepted.send(Durable::Fenced(reason));
}

/// After a commit: the notices it owes (none for a task another coordinator owns).
fn answer(
    batch: impl Iterator<Item = Op>,
    ok: bool,
    found: &Committed,
    accepted: &tokio::sync::mpsc::UnboundedSender<Durable>,
) {
    for op in batch {
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
            Op::Finish(r) if !found.not_ours.contains(&r.sub.id) => {
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

#[cfg(test)]
mod tests;
