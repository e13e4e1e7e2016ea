//! The coordinator's durable task state (redb, `DATA_DIR/coordinator.redb`).
//!
//! Every accepted task is written before the client is told `accepted`, and every
//! change after (a new attempt, the final result). After a crash the coordinator reads
//! it back: unfinished tasks are placed again with a raised attempt (fencing drops
//! whatever the old attempt still reports), finished ones answer resubmissions and
//! late duplicates. Finished records are pruned by age and count.
//!
//! Writes are grouped like the agent's store: one writer thread, one durable commit
//! (one fsync) per `commit_interval`, and a notice per accepted task once its commit
//! is durable.

use std::path::Path;
use std::time::{Duration, Instant};

use fog_proto::{codec, Encoding, TaskResult, TaskSubmission};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// task id -> record (see [`Record`]).
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("v1/tasks");
/// (finished_at_ms big-endian ++ id) -> (), for pruning oldest first.
const FINISHED: TableDefinition<&[u8], ()> = TableDefinition::new("v1/finished");

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("opening the task journal {path}: {message}")]
    Open { path: String, message: String },
    #[error("task journal: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> JournalError {
    JournalError::Db(e.to_string())
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
        None => codec::encode_into(&r.sub, Encoding::Postcard, &mut out).map_err(db_err)?,
        Some(res) => {
            // Keep what a resubmission must be answered with: the reply topic and kind,
            // and the result; not the payload.
            let sub = without_payload(&r.sub);
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            codec::encode_into(&sub, Encoding::Postcard, &mut out).map_err(db_err)?;
            let len = (out.len() - len_at - 4) as u32;
            out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            codec::encode_into(res, Encoding::Postcard, &mut out).map_err(db_err)?;
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
            commit_interval: Duration::from_millis(10),
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
        let open_err = |m: String| JournalError::Open {
            path: dir.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::builder()
            .set_cache_size(8 << 20)
            .create(dir.join("coordinator.redb"))
            .map_err(|e| open_err(e.to_string()))?;
        {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(TASKS).map_err(db_err)?;
            tx.open_table(FINISHED).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        let mut records = Vec::new();
        {
            let tx = db.begin_read().map_err(db_err)?;
            let t = tx.open_table(TASKS).map_err(db_err)?;
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                match decode(v.value()) {
                    Ok(r) => records.push(r),
                    // Logged and left: one bad record never stops the coordinator.
                    Err(e) => {
                        tracing::error!(task.id = %k.value(), error = %e, "skipping unreadable task record")
                    }
                }
            }
        }
        records.sort_by_key(|r| r.submitted_ms);
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg = cfg.clone();
        let writer = std::thread::Builder::new()
            .name("fog-journal".into())
            .spawn(move || write_loop(db, cfg, rx, accepted))
            .map_err(|e| open_err(e.to_string()))?;
        Ok((
            Journal {
                ops: Some(tx),
                writer: Some(writer),
            },
            records,
        ))
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
    db: Database,
    cfg: JournalConfig,
    rx: std::sync::mpsc::Receiver<Op>,
    accepted: tokio::sync::mpsc::UnboundedSender<Durable>,
) {
    let mut batch = Vec::new();
    let mut last_prune = Instant::now();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let until = Instant::now() + cfg.commit_interval;
        while batch.len() < 8192 {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let prune = last_prune.elapsed() >= Duration::from_secs(1);
        if prune {
            last_prune = Instant::now();
        }
        let ok = match commit(&db, &cfg, &batch, prune) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "task journal commit failed");
                false
            }
        };
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

fn commit(
    db: &Database,
    cfg: &JournalConfig,
    batch: &[Op],
    prune: bool,
) -> Result<(), JournalError> {
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut tasks = tx.open_table(TASKS).map_err(db_err)?;
        let mut finished = tx.open_table(FINISHED).map_err(db_err)?;
        for op in batch {
            let (Op::Accept(r) | Op::Attempt(r) | Op::Finish(r)) = op;
            tasks
                .insert(r.sub.id.as_str(), encode(r)?.as_slice())
                .map_err(db_err)?;
            if let Op::Finish(r) = op {
                let at = r.result.as_ref().map_or(0, |x| x.at_ms);
                let mut k = at.to_be_bytes().to_vec();
                k.extend_from_slice(r.sub.id.as_bytes());
                finished.insert(k.as_slice(), ()).map_err(db_err)?;
            }
        }
        if prune {
            let cutoff =
                fog_agent::service::now_ms().saturating_sub(cfg.keep_finished.as_millis() as u64);
            let mut excess =
                (finished.len().map_err(db_err)? as usize).saturating_sub(cfg.keep_finished_count);
            let mut doomed = Vec::new();
            for row in finished.iter().map_err(db_err)? {
                let (k, _) = row.map_err(db_err)?;
                let key = k.value();
                let at = key.first_chunk::<8>().map_or(0, |b| u64::from_be_bytes(*b));
                if excess == 0 && at >= cutoff {
                    break;
                }
                excess = excess.saturating_sub(1);
                doomed.push(key.to_vec());
            }
            for key in doomed {
                finished.remove(key.as_slice()).map_err(db_err)?;
                if let Some(id) = key.get(8..).and_then(|b| std::str::from_utf8(b).ok()) {
                    tasks.remove(id).map_err(db_err)?;
                }
            }
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::{NodeId, Outcome, Payload};

    fn sub(id: &str) -> TaskSubmission {
        TaskSubmission {
            id: id.into(),
            kind: "echo".into(),
            payload: Payload(b"payload".to_vec()),
            reply_to: "fog/v1/clients/c/results".into(),
            priority: 1,
            timeout_ms: 1000,
            cacheable: false,
            key: String::new(),
            strategy: String::new(),
            requires: Default::default(),
        }
    }

    #[tokio::test]
    async fn accepted_tasks_come_back_after_a_reopen_and_finished_ones_keep_their_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = JournalConfig::default();
        {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (j, recs) = Journal::open(dir.path(), &cfg, tx).expect("opens");
            assert!(recs.is_empty());
            for id in ["a", "b"] {
                j.write(Op::Accept(Record {
                    sub: sub(id),
                    attempt: 1,
                    submitted_ms: 5,
                    result: None,
                }));
            }
            j.write(Op::Attempt(Record {
                sub: sub("a"),
                attempt: 2,
                submitted_ms: 5,
                result: None,
            }));
            let done = TaskResult {
                id: "b".into(),
                attempt: 1,
                node: NodeId::new("n1").expect("valid"),
                at_ms: 9,
                outcome: Outcome::Failed {
                    error: "no".into(),
                    retryable: false,
                    exit_code: Some(1),
                    duration_ms: 3,
                },
            };
            j.write(Op::Finish(Record {
                sub: sub("b"),
                attempt: 1,
                submitted_ms: 5,
                result: Some(done),
            }));
            let mut acked = Vec::new();
            let mut finished = Vec::new();
            while acked.len() < 2 || finished.is_empty() {
                match rx.recv().await.expect("notice") {
                    Durable::Accepted { id, .. } => acked.push(id),
                    Durable::Finished { result, .. } => finished.push(result.id),
                }
            }
            acked.sort();
            assert_eq!(acked, ["a", "b"], "each accept is reported once durable");
            assert_eq!(finished, ["b"], "and each final result");
        }
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (_j, mut recs) = Journal::open(dir.path(), &cfg, tx).expect("reopens");
        recs.sort_by(|x, y| x.sub.id.cmp(&y.sub.id));
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].attempt, recs[0].result.is_none()), (2, true));
        assert_eq!(
            recs[0].sub,
            sub("a"),
            "the payload is kept until the task finishes"
        );
        assert!(
            recs[1].sub.payload.0.is_empty(),
            "a finished record drops the payload"
        );
        assert!(matches!(
            recs[1].result.as_ref().map(|r| &r.outcome),
            Some(Outcome::Failed { .. })
        ));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        for bad in [
            &b""[..],
            &[1],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            &[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
