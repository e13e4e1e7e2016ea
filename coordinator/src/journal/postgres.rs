//! Cluster mode's journal: one PostgreSQL database shared by several coordinators.
//!
//! Each coordinator registers under its id with a new epoch and a lease
//! (`fog_coordinators`), and owns the tasks it accepted (`fog_tasks.owner`). Every
//! group commit renews the lease in the same transaction as its writes, and so does
//! an idle tick every second; a renewal that matches no row (another process took the
//! id with a newer epoch, or the lease ran out) means this coordinator was fenced: it
//! writes and answers nothing more and stops ([`JournalError::Fenced`]).
//!
//! A coordinator whose lease ran out is dead to the others: each survivor, on its idle
//! tick, takes its unfinished tasks in bounded batches (`FOR UPDATE SKIP LOCKED`, so
//! survivors split them without waiting on each other) and places them again with a
//! raised attempt, as after a restart; agents already drop what an older attempt
//! reports; and those it finished in the last minute, whose results it may not have
//! sent, are sent again. Row locks order the two sides: an adopter holds the dead coordinator's row
//! `FOR SHARE` while it takes tasks, and a renewal must update that row, so either
//! the renewal comes first (and the coordinator is alive: nothing is taken) or the
//! adoption does (and the renewal finds the lease run out: fenced). The database's
//! clock decides when a lease has run out; this machine's clock, with a margin, tells
//! the main loop when to stop acting before it even tries to renew ([`LeaseClock`]).
//!
//! Records are the same bytes as in the redb log ([`super::encode`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use super::{decode, encode, Backend, Committed, JournalConfig, JournalError, Op, Record};

/// `[cluster]`: the shared database and who this coordinator is in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// A libpq connection string or URL (`postgres://fog@db.example/fog`).
    pub postgres_url: String,
    /// Unique in the cluster and stable across restarts (a restarted coordinator
    /// takes back what it still owns): the host name unless set.
    pub coordinator_id: String,
    /// How long a coordinator's claim lasts without a renewal: its tasks wait this
    /// long (plus at most a second) after it dies before another takes them.
    pub lease: Duration,
}

/// A dead coordinator's results finished this recently are sent again by the one that
/// adopts its tasks (as a restarted coordinator sends its own again).
pub const RESEND_ADOPTED: Duration = Duration::from_secs(60);

/// Tasks a survivor takes per transaction, and transactions per idle tick.
const ADOPT_BATCH: i64 = 1_000;
const ADOPT_ROUNDS: usize = 20;

/// Until when this coordinator may act, by this machine's monotonic clock: set after
/// each renewal to the renewal's start plus three quarters of the lease (the database
/// counts the lease from a later instant, and clocks drift).
#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    valid_until_us: AtomicU64,
    /// Why the journal found this coordinator fenced, once it did.
    fenced: std::sync::OnceLock<String>,
}

impl LeaseClock {
    fn new() -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            valid_until_us: AtomicU64::new(0),
            fenced: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn fence(&self, reason: &str) {
        self.valid_until_us.store(0, Ordering::Relaxed);
        let _ = self.fenced.set(reason.to_owned());
    }

    pub fn fenced(&self) -> Option<String> {
        self.fenced.get().cloned()
    }

    fn renewed(&self, started: Instant, lease: Duration) {
        let until = started.saturating_duration_since(self.base) + lease.mul_f32(0.75);
        let us = u64::try_from(until.as_micros()).unwrap_or(u64::MAX);
        self.valid_until_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn is_valid(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        now < self.valid_until_us.load(Ordering::Relaxed)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fog_coordinators (
    id text PRIMARY KEY,
    epoch bigint NOT NULL,
    lease_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS fog_tasks (
    id text PRIMARY KEY,
    owner text NOT NULL,
    submitted_ms bigint NOT NULL,
    finished_at timestamptz,
    record bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS fog_tasks_unfinished ON fog_tasks (owner) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS fog_tasks_finished ON fog_tasks (finished_at) WHERE finished_at IS NOT NULL;
";

/// Held while the schema is made: several coordinators starting at once would
/// otherwise race on `CREATE TABLE IF NOT EXISTS` (it is not atomic in PostgreSQL).
const SCHEMA_LOCK: i64 = 0x666f_675f_7363_6865;

/// The lease renewal: only this epoch, only while the lease has not run out.
const RENEW: &str =
    "UPDATE fog_coordinators SET lease_until = now() + $3 * interval '1 millisecond' \
     WHERE id = $1 AND epoch = $2 AND lease_until >= now()";

pub(super) struct PgJournal {
    client: Client,
    url: String,
    me: Claim,
    keep: Keep,
}

/// This coordinator's registration.
struct Claim {
    id: String,
    epoch: i64,
    lease: Duration,
    clock: Arc<LeaseClock>,
}

impl Claim {
    fn fenced(&self) -> JournalError {
        JournalError::Fenced {
            id: self.id.clone(),
            epoch: self.epoch,
        }
    }

    /// Renew inside `tx`; fenced if no row matched.
    fn renew(&self, tx: &mut postgres::Transaction<'_>) -> Result<(), JournalError> {
        let n = tx.execute(RENEW, &[&self.id, &self.epoch, &lease_ms(self.lease)])?;
        if n == 0 {
            return Err(self.fenced());
        }
        Ok(())
    }
}

/// How long finished records are kept.
struct Keep {
    finished: Duration,
    count: usize,
    last_count_prune: Instant,
}

impl PgJournal {
    /// Connect, make the schema if missing, register with a new epoch; this
    /// coordinator's own records (unfinished, and finished within the keep time).
    pub(super) fn open(
        cluster: &ClusterConfig,
        cfg: &JournalConfig,
    ) -> Result<(PgJournal, Vec<Record>), JournalError> {
        let mut client = Client::connect(&cluster.postgres_url, NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
        let started = Instant::now();
        let lease_ms = lease_ms(cluster.lease);
        let row = client.query_one(
            "INSERT INTO fog_coordinators (id, epoch, lease_until) \
             VALUES ($1, 1, now() + $2 * interval '1 millisecond') \
             ON CONFLICT (id) DO UPDATE SET epoch = fog_coordinators.epoch + 1, \
             lease_until = EXCLUDED.lease_until RETURNING epoch",
            &[&cluster.coordinator_id, &lease_ms],
        )?;
        let epoch: i64 = row.get(0);
        let clock = Arc::new(LeaseClock::new());
        clock.renewed(started, cluster.lease);
        let keep_ms = self::lease_ms(cfg.keep_finished);
        let rows = client.query(
            "SELECT record FROM fog_tasks WHERE owner = $1 AND \
             (finished_at IS NULL OR finished_at > now() - $2 * interval '1 millisecond') \
             ORDER BY submitted_ms",
            &[&cluster.coordinator_id, &keep_ms],
        )?;
        let records = decode_rows(&rows);
        tracing::info!(id = %cluster.coordinator_id, epoch, records = records.len(), "cluster journal open (PostgreSQL)");
        let pg = PgJournal {
            client,
            url: cluster.postgres_url.clone(),
            me: Claim {
                id: cluster.coordinator_id.clone(),
                epoch,
                lease: cluster.lease,
                clock,
            },
            keep: Keep {
                finished: cfg.keep_finished,
                count: cfg.keep_finished_count,
                last_count_prune: Instant::now(),
            },
        };
        Ok((pg, records))
    }

    pub(super) fn lease_clock(&self) -> Arc<LeaseClock> {
        self.me.clock.clone()
    }

    /// The connection, made again if it broke (the database restarted): the lease
    /// decides whether this coordinator may go on, not the connection.
    fn connected(&mut self) -> Result<&mut Client, JournalError> {
        if self.client.is_closed() {
            tracing::warn!("cluster journal: the connection to PostgreSQL broke; connecting again");
            self.client = Client::connect(&self.url, NoTls)?;
        }
        Ok(&mut self.client)
    }

    /// One batch of a dead coordinator's unfinished tasks, now ours.
    fn adopt_batch(&mut self) -> Result<Vec<Record>, JournalError> {
        let started = Instant::now();
        self.connected()?;
        let mut tx = self.client.transaction()?;
        self.me.renew(&mut tx)?;
        let dead: Vec<String> = tx
            .query(
                "SELECT id FROM fog_coordinators WHERE id <> $1 AND lease_until < now() FOR SHARE",
                &[&self.me.id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if dead.is_empty() {
            tx.commit()?;
            self.me.clock.renewed(started, self.me.lease);
            return Ok(Vec::new());
        }
        // The unfinished ones, to place again; and those finished in the last minute,
        // whose results the dead coordinator may not have sent before it died: sent
        // again (the same record: a client drops a repeat).
        let rows = tx.query(
            "SELECT id, record FROM fog_tasks WHERE owner = ANY($1) \
             AND (finished_at IS NULL OR finished_at > now() - $3 * interval '1 millisecond') \
             ORDER BY submitted_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&dead, &ADOPT_BATCH, &lease_ms(RESEND_ADOPTED)],
        )?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !ids.is_empty() {
            tx.execute(
                "UPDATE fog_tasks SET owner = $1 WHERE id = ANY($2)",
                &[&self.me.id, &ids],
            )?;
        }
        let records: Vec<Record> = rows
            .iter()
            .filter_map(|r| {
                let bytes: &[u8] = r.get(1);
                decode(bytes)
                    .map_err(|e| tracing::error!(error = %e, "skipping an unreadable adopted task record"))
                    .ok()
            })
            .collect();
        tx.commit()?;
        self.me.clock.renewed(started, self.me.lease);
        if !records.is_empty() {
            tracing::warn!(from = ?dead, tasks = records.len(), "adopted the unfinished tasks of coordinators whose lease ran out");
        }
        Ok(records)
    }
}

impl Keep {
    fn prune(&mut self, tx: &mut postgres::Transaction<'_>) -> Result<(), JournalError> {
        tx.execute(
            "DELETE FROM fog_tasks WHERE finished_at < now() - $1 * interval '1 millisecond'",
            &[&lease_ms(self.finished)],
        )?;
        // The count bound is a sort over the finished rows: once a minute is enough.
        if self.last_count_prune.elapsed() >= Duration::from_secs(60) {
            self.last_count_prune = Instant::now();
            let keep = i64::try_from(self.count).unwrap_or(i64::MAX);
            tx.execute(
                "DELETE FROM fog_tasks WHERE id IN (SELECT id FROM fog_tasks \
                 WHERE finished_at IS NOT NULL ORDER BY finished_at DESC OFFSET $1)",
                &[&keep],
            )?;
        }
        Ok(())
    }
}

impl Backend for PgJournal {
    fn commit(&mut self, batch: &[Op], prune: bool) -> Result<Committed, JournalError> {
        let started = Instant::now();
        let writes = Writes::of(batch)?;
        self.connected()?;
        let mut tx = self.client.transaction()?;
        self.me.renew(&mut tx)?;
        let mut done = Committed::default();
        if !writes.new_ids.is_empty() {
            // A task id the cluster already holds unfinished (the client resubmitted
            // it, here, because its acknowledgement did not come: its coordinator may
            // have died) becomes this coordinator's: the latest intake owns it, and the
            // former owner's answers for it are dropped below. One held finished keeps
            // its result, which answers the client.
            let taken: std::collections::HashSet<String> = tx
                .query(
                    "INSERT INTO fog_tasks (id, owner, submitted_ms, finished_at, record) \
                     SELECT u.id, $1, u.submitted_ms, CASE WHEN u.finished THEN now() END, u.record \
                     FROM unnest($2::text[], $3::bigint[], $4::bool[], $5::bytea[]) \
                     AS u(id, submitted_ms, finished, record) \
                     ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, \
                     record = EXCLUDED.record, finished_at = EXCLUDED.finished_at \
                     WHERE fog_tasks.finished_at IS NULL RETURNING id",
                    &[
                        &self.me.id,
                        &writes.new_ids,
                        &writes.new_submitted,
                        &writes.new_finished,
                        &writes.new_records,
                    ],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let finished: Vec<&String> = writes
                .new_ids
                .iter()
                .filter(|id| !taken.contains(*id))
                .collect();
            if !finished.is_empty() {
                let rows = tx.query(
                    "SELECT record FROM fog_tasks WHERE id = ANY($1)",
                    &[&finished],
                )?;
                done.finished_elsewhere = decode_rows(&rows);
                // Its stored result answers: not a result this coordinator ran (an
                // accept and a finish in one batch), which may differ.
                done.not_ours.extend(finished.into_iter().cloned());
            }
        }
        if !writes.ids.is_empty() {
            let ours: std::collections::HashSet<String> = tx
                .query(
                    "UPDATE fog_tasks AS t SET record = u.record, \
                     finished_at = CASE WHEN u.finished THEN now() END \
                     FROM unnest($2::text[], $3::bool[], $4::bytea[]) AS u(id, finished, record) \
                     WHERE t.id = u.id AND t.owner = $1 RETURNING t.id",
                    &[&self.me.id, &writes.ids, &writes.finished, &writes.records],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            done.not_ours
                .extend(writes.ids.iter().filter(|id| !ours.contains(*id)).cloned());
        }
        if prune {
            self.keep.prune(&mut tx)?;
        }
        tx.commit()?;
        self.me.clock.renewed(started, self.me.lease);
        if !done.not_ours.is_empty() || !done.finished_elsewhere.is_empty() {
            tracing::info!(
                not_ours = done.not_ours.len(),
                finished_elsewhere = done.finished_elsewhere.len(),
                "cluster journal: tasks another coordinator owns (their answers are its) or finished before"
            );
        }
        Ok(done)
    }

    fn idle_every(&self) -> Option<Duration> {
        // Renewals well inside the lease, adoption soon after a peer's runs out.
        Some((self.me.lease / 5).clamp(Duration::from_millis(50), Duration::from_secs(1)))
    }

    fn idle(&mut self) -> Result<Vec<Record>, JournalError> {
        let mut adopted = Vec::new();
        for _ in 0..ADOPT_ROUNDS {
            let batch = self.adopt_batch()?;
            let full = batch.len() as i64 >= ADOPT_BATCH;
            adopted.extend(batch);
            if !full {
                break;
            }
        }
        Ok(adopted)
    }

    /// A clean stop: the lease ends now, so the others take what is left at once.
    fn close(&mut self) {
        let ended = self.client.execute(
            "UPDATE fog_coordinators SET lease_until = now() - interval '1 millisecond' \
             WHERE id = $1 AND epoch = $2",
            &[&self.me.id, &self.me.epoch],
        );
        if let Err(e) = ended {
            tracing::warn!(error = %e, "cluster journal: ending the lease at stop failed (the others wait for it to run out)");
        }
    }
}

/// A batch as rows: each task's latest record, new ones (accepted in this batch) to
/// insert, known ones to update.
#[derive(Default)]
struct Writes {
    new_ids: Vec<String>,
    new_submitted: Vec<i64>,
    new_finished: Vec<bool>,
    new_records: Vec<Vec<u8>>,
    ids: Vec<String>,
    finished: Vec<bool>,
    records: Vec<Vec<u8>>,
}

impl Writes {
    fn of(batch: &[Op]) -> Result<Writes, JournalError> {
        // The last op for each id wins; whether it is new is decided by its first.
        let mut order: Vec<(&str, bool, &Record)> = Vec::with_capacity(batch.len());
        let mut at: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(batch.len());
        for op in batch {
            let (new, r) = match op {
                Op::Accept(r) => (true, r),
                Op::Attempt(r) | Op::Finish(r) => (false, r),
            };
            match at.get(r.sub.id.as_str()) {
                Some(&i) => order[i].2 = r,
                None => {
                    at.insert(&r.sub.id, order.len());
                    order.push((&r.sub.id, new, r));
                }
            }
        }
        let mut w = Writes::default();
        for (id, new, r) in order {
            let bytes = encode(r)?;
            let finished = r.result.is_some();
            if new {
                w.new_ids.push(id.to_owned());
                w.new_submitted
                    .push(i64::try_from(r.submitted_ms).unwrap_or(i64::MAX));
                w.new_finished.push(finished);
                w.new_records.push(bytes);
            } else {
                w.ids.push(id.to_owned());
                w.finished.push(finished);
                w.records.push(bytes);
            }
        }
        Ok(w)
    }
}

fn decode_rows(rows: &[postgres::Row]) -> Vec<Record> {
    rows.iter()
        .filter_map(|r| {
            let bytes: &[u8] = r.get(0);
            decode(bytes)
                .map_err(|e| tracing::error!(error = %e, "skipping an unreadable task record"))
                .ok()
        })
        .collect()
}

/// A duration as PostgreSQL multiplies an interval by it.
fn lease_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
