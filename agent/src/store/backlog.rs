//! The store-and-forward backlog: readings, alerts and finished results that could not
//! be published, kept on disk until the broker has acknowledged them.
//!
//! Each class has its own table keyed by one sequence number shared by all three
//! (big-endian, so a table iterates oldest first and a replay can merge the three in
//! the order the entries were made). The budget (`max_backlog_bytes`) counts key and
//! payload bytes; when a new entry does not fit, the oldest *reading* goes first, then
//! the oldest alert, then the oldest result, because a result is the one thing a
//! coordinator is waiting for. Every drop is counted per class.
//!
//! Writes go through one writer thread that groups them into transactions (one fsync
//! each) like the task store's: each with what is queued behind it. A removal (after
//! the broker's PUBACK) is reported back once it is durable, so the forwarder never
//! sends an entry again that it already saw acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fog_rt::group_commit::GroupCommit;
use redb::{ReadableDatabase, ReadableTable};

use super::cell::DbCell;

use super::error::StoreError;
use super::Bytes;

/// What a backlog entry is; also the order in which a full backlog gives entries up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Reading = 0,
    Alert = 1,
    Result = 2,
}

impl Class {
    /// Drop order: first the readings.
    pub const ALL: [Class; 3] = [Class::Reading, Class::Alert, Class::Result];

    fn table(self) -> Bytes {
        match self {
            Class::Reading => READINGS,
            Class::Alert => ALERTS,
            Class::Result => RESULTS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Reading => "reading",
            Class::Alert => "alert",
            Class::Result => "result",
        }
    }
}

const READINGS: Bytes = redb::TableDefinition::new("v1/backlog/readings");
const ALERTS: Bytes = redb::TableDefinition::new("v1/backlog/alerts");
const RESULTS: Bytes = redb::TableDefinition::new("v1/backlog/results");

/// Bytes an entry counts against the budget: its key and its payload.
fn cost(payload_len: usize) -> u64 {
    payload_len as u64 + 8
}

/// One stored message, ready to publish again as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub class: Class,
    pub payload: Vec<u8>,
}

/// Figures shared between the writer thread and the agent (for heartbeats, readings
/// and the forwarder's mode changes).
#[derive(Debug, Default)]
pub struct BacklogStats {
    /// Entries and bytes durable in the backlog.
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Pushed and not yet committed (or failed).
    queued: AtomicU64,
    /// Entries given up to the budget or lost to a failed write, per class.
    dropped: [AtomicU64; 3],
}

impl BacklogStats {
    /// Entries waiting: durable plus queued for the next commit.
    pub fn len(&self) -> u64 {
        self.entries.load(Ordering::Relaxed) + self.queued.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Pushed and not yet committed.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn dropped(&self, class: Class) -> u64 {
        self.dropped[class as usize].load(Ordering::Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        Class::ALL.iter().map(|c| self.dropped(*c)).sum()
    }
}

enum BacklogOp {
    Push(Entry),
    Remove(Class, u64),
}

/// The agent's handle on the backlog. Pushes and removals are queued to the writer;
/// reads go to the database directly (redb readers never wait for the writer).
pub struct Backlog {
    db: Arc<DbCell>,
    next_seq: u64,
    #[cfg(test)]
    first_seq: u64,
    stats: Arc<BacklogStats>,
    ops: Option<std::sync::mpsc::Sender<BacklogOp>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Backlog {
    /// Commit what was queued before returning (a clean shutdown loses nothing).
    fn drop(&mut self) {
        self.ops.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Sequence numbers whose removal is durable, sent after each commit.
pub type Removed = Vec<u64>;

impl Backlog {
    pub(super) fn open(
        db: Arc<DbCell>,
        max_bytes: u64,
        commit_interval: Duration,
        removed: tokio::sync::mpsc::UnboundedSender<Removed>,
    ) -> Result<Backlog, StoreError> {
        let stats = Arc::new(BacklogStats::default());
        let mut last_seq = 0;
        {
            let db = db.get()?;
            let tx = db.begin_write()?;
            for class in Class::ALL {
                tx.open_table(class.table())?;
            }
            tx.commit()?;
            let tx = db.begin_read()?;
            for class in Class::ALL {
                let t = tx.open_table(class.table())?;
                for row in t.iter()? {
                    let (k, v) = row?;
                    last_seq = last_seq.max(seq_of(k.value()));
                    stats.entries.fetch_add(1, Ordering::Relaxed);
                    stats
                        .bytes
                        .fetch_add(cost(v.value().len()), Ordering::Relaxed);
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            max_bytes,
            interval: commit_interval,
            stats: stats.clone(),
            removed,
        };
        let writer = std::thread::Builder::new()
            .name("fog-backlog".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Spawn {
                thread: "backlog",
                source,
            })?;
        Ok(Backlog {
            db,
            next_seq: last_seq + 1,
            #[cfg(test)]
            first_seq: last_seq + 1,
            stats,
            ops: Some(tx),
            writer: Some(writer),
        })
    }

    pub fn stats(&self) -> &Arc<BacklogStats> {
        &self.stats
    }

    /// Keep `payload` until [`remove`](Self::remove) is called with the returned
    /// sequence number. It is durable after the next commit.
    pub fn push(&mut self, class: Class, payload: Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let op = BacklogOp::Push(Entry {
            seq,
            class,
            payload,
        });
        if self.send(op).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped[class as usize].fetch_add(1, Ordering::Relaxed);
        }
        seq
    }

    /// Entries pushed since this backlog was opened (each push takes the next sequence
    /// number): exact at once, unlike [`BacklogStats::len`], which the writer thread
    /// updates in two steps after each commit.
    #[cfg(test)]
    pub(crate) fn pushed_since_open(&self) -> u64 {
        self.next_seq - self.first_seq
    }

    /// Forget an entry the broker acknowledged; its sequence number comes back on the
    /// `removed` channel once that is durable.
    pub fn remove(&self, class: Class, seq: u64) {
        let _ = self.send(BacklogOp::Remove(class, seq));
    }

    fn send(&self, op: BacklogOp) -> Result<(), StoreError> {
        self.ops
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(op)
            .map_err(|_| StoreError::Stopped)
    }

    /// Up to `max` durable entries after sequence number `after`, oldest first.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<Entry>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let from = (after.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for class in Class::ALL {
            let t = tx.open_table(class.table())?;
            for row in t.range(from.as_slice()..)?.take(max) {
                let (k, v) = row?;
                out.push(Entry {
                    seq: seq_of(k.value()),
                    class,
                    payload: v.value().to_vec(),
                });
            }
        }
        out.sort_unstable_by_key(|e| e.seq);
        out.truncate(max);
        Ok(out)
    }
}

/// A key's sequence number; a key we never wrote (short) reads as 0 and sorts first.
fn seq_of(key: &[u8]) -> u64 {
    key.first_chunk::<8>().map_or(0, |b| u64::from_be_bytes(*b))
}

struct Writer {
    db: Arc<DbCell>,
    max_bytes: u64,
    interval: Duration,
    stats: Arc<BacklogStats>,
    removed: tokio::sync::mpsc::UnboundedSender<Removed>,
}

impl Writer {
    fn run(self, rx: std::sync::mpsc::Receiver<BacklogOp>) {
        let mut batch = Vec::new();
        // Removals that failed to commit are tried again with the next batch, so an
        // acknowledged entry is not replayed once the disk recovers.
        let mut retry: Vec<(Class, u64)> = Vec::new();
        let mut gather = GroupCommit::new(self.interval, super::MAX_BATCH);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            gather.fill(&rx, &mut batch);
            let mut removes = std::mem::take(&mut retry);
            let mut pushes = Vec::new();
            for op in batch.drain(..) {
                match op {
                    BacklogOp::Push(e) => pushes.push(e),
                    BacklogOp::Remove(c, s) => removes.push((c, s)),
                }
            }
            let pushed = pushes.len() as u64;
            self.db.reopen_if_due();
            match self.commit(&pushes, &removes) {
                Ok(()) => {
                    self.db.write_ok();
                    self.stats.queued.fetch_sub(pushed, Ordering::Relaxed);
                    let seqs: Removed = removes.iter().map(|(_, s)| *s).collect();
                    if !seqs.is_empty() && self.removed.send(seqs).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    self.db.write_failed("backlog", &error);
                    // What could not be written is lost: count it (the cell logs once).
                    self.stats.queued.fetch_sub(pushed, Ordering::Relaxed);
                    for e in &pushes {
                        self.stats.dropped[e.class as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    retry = removes;
                }
            }
        }
    }

    fn commit(&self, pushes: &[Entry], removes: &[(Class, u64)]) -> Result<(), StoreError> {
        let tx = self.db.get()?.begin_write()?;
        // Applied to the shared figures only after the commit succeeded.
        let mut entries: i64 = 0;
        let mut bytes: i64 = 0;
        let mut dropped = [0u64; 3];
        {
            let mut tables = [
                tx.open_table(READINGS)?,
                tx.open_table(ALERTS)?,
                tx.open_table(RESULTS)?,
            ];
            for (class, seq) in removes {
                if let Some(v) = tables[*class as usize].remove(seq.to_be_bytes().as_slice())? {
                    entries -= 1;
                    bytes -= cost(v.value().len()) as i64;
                }
            }
            let mut held = self.stats.bytes() as i64 + bytes;
            for e in pushes {
                let need = cost(e.payload.len()) as i64;
                // Make room: oldest readings first, then alerts, then results.
                let mut fits = true;
                while held + need > self.max_bytes as i64 {
                    let mut freed = None;
                    for class in Class::ALL {
                        if let Some((k, v)) = tables[class as usize].pop_first()? {
                            let _ = k;
                            freed = Some((class, cost(v.value().len()) as i64));
                            break;
                        }
                    }
                    match freed {
                        Some((class, n)) => {
                            held -= n;
                            bytes -= n;
                            entries -= 1;
                            dropped[class as usize] += 1;
                        }
                        None => {
                            fits = false;
                            break;
                        }
                    }
                }
                if !fits {
                    dropped[e.class as usize] += 1;
                    continue;
                }
                tables[e.class as usize]
                    .insert(e.seq.to_be_bytes().as_slice(), e.payload.as_slice())?;
                held += need;
                bytes += need;
                entries += 1;
            }
        }
        tx.commit()?;
        let add = |a: &AtomicU64, d: i64| {
            if d >= 0 {
                a.fetch_add(d as u64, Ordering::Relaxed);
            } else {
                a.fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
            }
        };
        add(&self.stats.entries, entries);
        add(&self.stats.bytes, bytes);
        for class in Class::ALL {
            let n = dropped[class as usize];
            if n > 0 {
                self.stats.dropped[class as usize].fetch_add(n, Ordering::Relaxed);
                tracing::debug!(
                    class = class.as_str(),
                    dropped = n,
                    "backlog full; dropped the oldest"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn open(
        dir: &std::path::Path,
        max: u64,
    ) -> (Backlog, tokio::sync::mpsc::UnboundedReceiver<Removed>) {
        let db = DbCell::open(&dir.join("b.redb")).expect("db");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let b = Backlog::open(db, max, Duration::from_millis(1), tx).expect("opens");
        (b, rx)
    }

    /// Wait (bounded) until the writer has committed everything queued.
    fn settle(b: &Backlog) {
        let until = Instant::now() + Duration::from_secs(10);
        while b.stats.queued.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < until, "writer stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn entries_come_back_in_order_across_classes_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut b, _rx) = open(dir.path(), 1 << 20);
            b.push(Class::Reading, b"r1".to_vec());
            b.push(Class::Result, b"x1".to_vec());
            b.push(Class::Alert, b"a1".to_vec());
            b.push(Class::Reading, b"r2".to_vec());
        }
        let (mut b, _rx) = open(dir.path(), 1 << 20);
        assert_eq!(b.stats().len(), 4);
        assert_eq!(b.stats().bytes(), 4 * 10);
        let all = b.read_after(0, 10).expect("reads");
        let got: Vec<(u64, Class, &[u8])> = all
            .iter()
            .map(|e| (e.seq, e.class, e.payload.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (1, Class::Reading, &b"r1"[..]),
                (2, Class::Result, b"x1"),
                (3, Class::Alert, b"a1"),
                (4, Class::Reading, b"r2")
            ]
        );
        assert_eq!(b.read_after(2, 1).expect("reads")[0].seq, 3);
        // Numbering continues after a reopen instead of reusing keys.
        assert_eq!(b.push(Class::Reading, b"r3".to_vec()), 5);
    }

    #[test]
    fn removal_is_reported_once_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut b, mut rx) = open(dir.path(), 1 << 20);
        let s = b.push(Class::Reading, b"r".to_vec());
        settle(&b);
        b.remove(Class::Reading, s);
        assert_eq!(rx.blocking_recv().expect("removed"), vec![s]);
        assert!(b.stats().is_empty());
        assert_eq!(b.stats().bytes(), 0);
        assert!(b.read_after(0, 10).expect("reads").is_empty());
    }

    #[test]
    fn a_full_backlog_drops_oldest_readings_then_alerts_and_keeps_results_longest() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for exactly four 92-byte payloads (100 bytes with the key).
        let (mut b, _rx) = open(dir.path(), 400);
        let p = |tag: u8| vec![tag; 92];
        b.push(Class::Result, p(1));
        b.push(Class::Reading, p(2));
        b.push(Class::Alert, p(3));
        b.push(Class::Reading, p(4));
        settle(&b);
        assert_eq!(b.stats().bytes(), 400);
        b.push(Class::Reading, p(5)); // drops reading 2
        b.push(Class::Reading, p(6)); // drops reading 4
        b.push(Class::Reading, p(7)); // drops reading 5
        settle(&b);
        let tags: Vec<u8> = b
            .read_after(0, 10)
            .expect("reads")
            .iter()
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(tags, [1, 3, 6, 7]);
        assert_eq!(b.stats().dropped(Class::Reading), 3);
        b.push(Class::Result, p(8)); // readings gone first: 6
        b.push(Class::Result, p(9)); // then 7
        b.push(Class::Result, p(10)); // then the alert
        b.push(Class::Result, p(11)); // then the oldest result
        settle(&b);
        let tags: Vec<u8> = b
            .read_after(0, 10)
            .expect("reads")
            .iter()
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(tags, [8, 9, 10, 11]);
        assert_eq!(b.stats().dropped(Class::Reading), 5);
        assert_eq!(b.stats().dropped(Class::Alert), 1);
        assert_eq!(b.stats().dropped(Class::Result), 1);
        assert_eq!(b.stats().dropped_total(), 7);
        assert_eq!(b.stats().len(), 4);
        assert_eq!(b.stats().bytes(), 400);
    }

    #[test]
    fn an_entry_larger_than_the_whole_budget_is_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut b, _rx) = open(dir.path(), 100);
        b.push(Class::Alert, vec![0; 200]);
        settle(&b);
        assert!(b.stats().is_empty());
        assert_eq!(b.stats().dropped(Class::Alert), 1);
    }
}
