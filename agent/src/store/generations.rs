//! Task records in two generations, so results expire without per-result bookkeeping.
//!
//! Every accepted task and every finished result is written to the *current*
//! generation's table (`v2/tasks/<n>`), a finish over its accept when both fall in the
//! same one. When the current table holds half the retention count of results, or has been
//! current for half the retention time, it becomes the *previous* generation and a new
//! empty table becomes current; the generation before that is dropped whole with
//! `delete_table`. Accepted-and-unfinished records in it are copied forward first, so
//! no accepted task is ever forgotten. A lookup tries the current table, then the
//! previous one (the current always holds the newer record of an id in both).
//!
//! Why: the first layout kept one row per task plus a finished-at index row, and
//! pruned results one by one (an index insert, then an index delete and a task delete
//! per result). In the end-to-end bench that bookkeeping was ~15 % of the whole run
//! (docs/performance.md). The price is coarser retention: about the newest half to all
//! of `result_retention_count` results are kept (a result later replaced by a new
//! attempt of the same task still counts toward its generation), each for at most
//! `result_retention` while the agent is writing.
//!
//! The current generation's number and start time live in `v2/meta`, written in the
//! same transaction as every rotation, so readers and a restarted agent see them
//! consistently with the tables.

use std::collections::HashMap;

use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle,
    WriteTransaction,
};

use super::error::StoreError;
use super::record::{decode_task, StoredTask};
use super::Bytes;

/// `gen` -> u64 big-endian, `since` -> ms big-endian.
const META: Bytes = TableDefinition::new("v2/meta");
const GEN: &[u8] = b"gen";
const SINCE: &[u8] = b"since";
const PREFIX: &str = "v2/tasks/";

/// The first layout's tables, converted on open.
const V1_TASKS: Bytes = TableDefinition::new("v1/tasks");
const V1_FINISHED: Bytes = TableDefinition::new("v1/finished");

fn name(generation: u64) -> String {
    format!("{PREFIX}{generation}")
}

pub(super) fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The generation a table name belongs to, if it is a task table.
fn generation_of(table_name: &str) -> Option<u64> {
    table_name.strip_prefix(PREFIX)?.parse().ok()
}

/// A meta value: `None` if absent; a value of the wrong size is a corrupt store, not
/// an absent one (reading it as absent would restart the numbering over live tables).
fn read_u64(
    meta: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<u64>, StoreError> {
    let Some(v) = meta.get(key)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = v.value().try_into().map_err(|_| StoreError::Corrupt {
        id: format!("v2/meta {}", String::from_utf8_lossy(key)),
        message: format!("{} bytes where 8 were expected", v.value().len()),
    })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// Every task generation table in the store.
fn existing(tables: impl Iterator<Item = redb::UntypedTableHandle>) -> Vec<u64> {
    let mut gens: Vec<u64> = tables.filter_map(|t| generation_of(t.name())).collect();
    gens.sort_unstable();
    gens
}

/// Only what a scan keeps of a record: borrowed, so finished results are never copied.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    id: &'a str,
    _attempt: u32,
    _kind: &'a str,
    _timeout_ms: u32,
    _priority: u8,
    _deadline_ms: u64,
    _cacheable: bool,
    _accepted_at_ms: u64,
    _payload: &'a [u8],
    #[serde(borrow)]
    result: Option<&'a [u8]>,
}

/// The writer's view of the generations.
#[derive(Debug)]
pub(super) struct Generations {
    pub current: u64,
    /// When the current generation became current (ms since the epoch).
    pub since_ms: u64,
    /// Accepted, unfinished tasks: id -> the generation holding the accepted record.
    /// Bounded by what the agent holds in flight (its queue and arena), empty at rest.
    pending: HashMap<String, u64>,
    /// Finished results in the current generation; it rotates at the cap. Accepted
    /// records do not count: a burst of accepts must not push results out early.
    results: u64,
}

/// What a scan of every generation found: the newest record of each id.
pub(super) struct Scan {
    pub generations: Generations,
    pub records: Vec<Recovered>,
}

pub(super) enum Recovered {
    Unfinished(StoredTask),
    Finished(String),
}

impl Generations {
    /// Make sure the layout exists: convert the first layout's tables, or start
    /// generation 1 in an empty store. Idempotent.
    pub fn prepare(tx: &WriteTransaction, now_ms: u64) -> Result<(), StoreError> {
        let mut meta = tx.open_table(META)?;
        let tables: Vec<String> = tx.list_tables()?.map(|t| t.name().to_owned()).collect();
        let has_v1 = tables.iter().any(|t| t == V1_TASKS.name());
        // A damaged number is repaired from the tables rather than stopping the agent
        // (readings and liveness do not depend on the task store).
        let recorded = read_u64(&meta, GEN).unwrap_or_else(|e| {
            tracing::error!(error = %e, "repairing the store's generation number from its tables");
            None
        });
        if recorded.is_some() && !has_v1 {
            return Ok(());
        }
        // Past every generation that exists, so no table is ever reused.
        let highest = tables
            .iter()
            .filter_map(|t| generation_of(t))
            .chain(recorded)
            .max();
        let generation = if has_v1 {
            // The first layout's table becomes the newest generation as it is (same
            // keys, same records). Newest, because an older binary that ran after this
            // one (a downgrade) wrote there last.
            let g = highest.map_or(1, |h| h + 1);
            tx.rename_table(V1_TASKS, table(&name(g)))?;
            tx.delete_table(V1_FINISHED)?;
            g
        } else if let Some(h) = highest {
            // Tables without a (readable) meta row: carry on with the newest of them.
            h
        } else {
            tx.open_table(table(&name(1)))?;
            1
        };
        meta.insert(GEN, generation.to_be_bytes().as_slice())?;
        meta.insert(SINCE, now_ms.to_be_bytes().as_slice())?;
        Ok(())
    }

    /// Read every generation (oldest first, so a newer record of an id wins).
    /// A record that does not decode is logged and skipped; it never stops the agent.
    pub fn scan(db: &Database) -> Result<Scan, StoreError> {
        let tx = db.begin_read()?;
        let meta = tx.open_table(META)?;
        let current = read_u64(&meta, GEN)?.ok_or(StoreError::NoGeneration)?;
        // A damaged start time only makes the next rotation come early.
        let since_ms = read_u64(&meta, SINCE).ok().flatten().unwrap_or(0);
        // id -> (generation of its newest record, finished?). Finished records are
        // only peeked at: their results (up to 10,000 kept, each up to a task's output
        // limit) are never held in memory at once.
        let mut newest: HashMap<String, (u64, bool)> = HashMap::new();
        for g in existing(tx.list_tables()?) {
            let t = tx.open_table(table(&name(g)))?;
            for row in t.iter()? {
                let (_, v) = row?;
                match postcard::from_bytes::<Peek<'_>>(v.value()) {
                    Ok(p) => {
                        newest.insert(p.id.to_owned(), (g, p.result.is_some()));
                    }
                    Err(e) => tracing::error!(error = %e, "skipping unreadable task record"),
                }
            }
        }
        let mut records = Vec::new();
        let mut pending = HashMap::new();
        let mut results = 0;
        for (id, (g, finished)) in newest {
            if finished {
                results += u64::from(g == current);
                records.push(Recovered::Finished(id));
                continue;
            }
            // Unfinished: the whole record (with its payload, if kept) to run again.
            let t = tx.open_table(table(&name(g)))?;
            let bytes = t
                .get(id.as_bytes())?
                .ok_or_else(|| StoreError::Vanished { id: id.clone() })?;
            match decode_task(&id, bytes.value()) {
                Ok(task) => {
                    pending.insert(id, g);
                    records.push(Recovered::Unfinished(task));
                }
                Err(e) => tracing::error!(error = %e, "skipping unreadable task record"),
            }
        }
        Ok(Scan {
            generations: Generations {
                current,
                since_ms,
                pending,
                results,
            },
            records,
        })
    }

    /// The current generation's table definition.
    pub fn current_name(&self) -> String {
        name(self.current)
    }

    /// An accepted record was written to the current generation; `replaced` says
    /// whether it overwrote a record of the same id there.
    pub fn accepted(&mut self, id: &str, replaced: bool) {
        let was_pending = self.pending.insert(id.to_owned(), self.current).is_some();
        if replaced && !was_pending {
            // It overwrote this id's earlier result (a new attempt of a task that
            // failed retryably here).
            self.results = self.results.saturating_sub(1);
        }
    }

    /// A result was written to the current generation; `replaced` as for
    /// [`Self::accepted`].
    pub fn finished(&mut self, id: &str, replaced: bool) {
        let accepted_here = self.pending.remove(id) == Some(self.current);
        // Over its own accepted record, or a new row: one more result here. Over an
        // earlier result of the same id: still one.
        if !replaced || accepted_here {
            self.results += 1;
        }
    }

    /// Whether the current generation holds its share of results.
    pub fn full(&self, cap: u64) -> bool {
        self.results >= cap
    }

    /// Start a new current generation and drop every generation before the one that
    /// was current, copying its unfinished records forward first. The caller must not
    /// hold the new generation's table open.
    pub fn rotate(&mut self, tx: &WriteTransaction, now_ms: u64) -> Result<(), StoreError> {
        let all = existing(tx.list_tables()?);
        // Past every table that exists: a table is never reused.
        let next = all.last().map_or(self.current, |h| (*h).max(self.current)) + 1;
        let doomed: Vec<u64> = all.into_iter().filter(|g| *g < self.current).collect();
        {
            let next_name = name(next);
            let mut into = tx.open_table(table(&next_name))?;
            for g in &doomed {
                let from_name = name(*g);
                let from = tx.open_table(table(&from_name))?;
                for (id, at) in self.pending.iter_mut().filter(|(_, at)| **at == *g) {
                    if let Some(v) = from.get(id.as_bytes())? {
                        into.insert(id.as_bytes(), v.value())?;
                    }
                    *at = next;
                }
            }
        }
        for g in doomed {
            tx.delete_table(table(&name(g)))?;
        }
        // An id whose accepted record was in a table that no longer existed (never
        // written by us) must not point at a dropped generation forever.
        for at in self.pending.values_mut() {
            if *at < self.current {
                *at = next;
            }
        }
        let mut meta = tx.open_table(META)?;
        meta.insert(GEN, next.to_be_bytes().as_slice())?;
        meta.insert(SINCE, now_ms.to_be_bytes().as_slice())?;
        self.current = next;
        self.since_ms = now_ms;
        self.results = 0;
        // A burst's worth of in-flight ids must not stay reserved on a quiet node.
        if self.pending.capacity() > 4 * self.pending.len().max(64) {
            self.pending.shrink_to_fit();
        }
        Ok(())
    }

    /// Whether the current generation has been current for `half` of the retention
    /// time.
    pub fn aged(&self, now_ms: u64, half_ms: u64) -> bool {
        now_ms.saturating_sub(self.since_ms) >= half_ms
    }
}

/// The newest stored record of `id`, from the current generation or the previous one.
pub(super) fn lookup(db: &Database, id: &str) -> Result<Option<StoredTask>, StoreError> {
    let tx = db.begin_read()?;
    let current = {
        let meta = tx.open_table(META)?;
        read_u64(&meta, GEN)?
    };
    let Some(current) = current else {
        return Ok(None);
    };
    for g in [current, current.saturating_sub(1)] {
        let n = name(g);
        let t = match tx.open_table(table(&n)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(v) = t.get(id.as_bytes())? {
            return decode_task(id, v.value()).map(Some);
        }
    }
    Ok(None)
}
