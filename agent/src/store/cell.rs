//! The database handle shared by the task writer, the backlog writer and readers, and
//! the store's supervision: when a write fails (a full SD card, an I/O error) the
//! store is reported degraded, logged once, and reopened with backoff (2, 4, 8 s)
//! until writes succeed again. Reopening matters: after an I/O error during a commit
//! redb refuses every later write (`PreviousIo`) until the file is closed and opened
//! again, so without it a node whose disk filled up once would never store again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::error::StoreError;

/// The shared handle and its health.
pub struct DbCell {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    degraded: AtomicBool,
    write_failures_total: AtomicU64,
    reopens_total: AtomicU64,
    state: Mutex<Failing>,
}

#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    /// Failed writes in this streak (for the recovery log line).
    in_row: u32,
    /// Reopens tried in this streak; the next waits `delay(reopens + 1)`.
    reopens: u32,
    next_reopen: Option<Instant>,
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        // A small cache: this runs on 512 MB boards.
        .set_cache_size(1 << 20)
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })
}

/// How long a reopen waits for other threads to let go of the old handle.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl DbCell {
    pub fn open(path: &Path) -> Result<Arc<DbCell>, StoreError> {
        let db = open_db(path)?;
        Ok(Arc::new(DbCell {
            path: path.to_owned(),
            db: RwLock::new(Some(Arc::new(db))),
            degraded: AtomicBool::new(false),
            write_failures_total: AtomicU64::new(0),
            reopens_total: AtomicU64::new(0),
            state: Mutex::new(Failing::default()),
        }))
    }

    /// The database, for one operation (do not keep it: a reopen waits for it).
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn write_failures_total(&self) -> u64 {
        self.write_failures_total.load(Ordering::Relaxed)
    }

    pub fn reopens_total(&self) -> u64 {
        self.reopens_total.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Failing> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A commit failed. The first failure of a streak is logged at ERROR, the rest
    /// at debug: a full disk must not write a line per reading into the journal.
    pub fn write_failed(&self, what: &str, error: &StoreError) {
        self.write_failures_total.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state();
        st.in_row += 1;
        let now = Instant::now();
        if st.since.is_none() {
            st.next_reopen = Some(now + crate::supervise::delay(1));
            st.since = Some(now);
            self.degraded.store(true, Ordering::Relaxed);
            tracing::error!(
                store = %self.path.display(),
                what,
                %error,
                "store writes fail; reporting the store as degraded and reopening it with backoff (logged once until it recovers)"
            );
        } else {
            tracing::debug!(what, %error, "store write failed again");
        }
    }

    /// A commit succeeded: the end of a failing streak is logged once.
    pub fn write_ok(&self) {
        if !self.degraded.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.state();
        if let Some(since) = st.since.take() {
            tracing::info!(
                store = %self.path.display(),
                failing_secs = since.elapsed().as_secs(),
                failed_writes = st.in_row,
                "store writes succeed again; no longer degraded"
            );
        }
        *st = Failing::default();
        self.degraded.store(false, Ordering::Relaxed);
    }

    /// While degraded, when the backoff allows: close and reopen the file. Called by
    /// the writers before a commit and when idle, never by the async reactor.
    pub fn reopen_if_due(&self) {
        {
            let mut st = self.state();
            match st.next_reopen {
                Some(t) if Instant::now() >= t => {
                    // Claim this attempt; the other writer waits for the next one.
                    st.reopens += 1;
                    let wait = crate::supervise::delay(st.reopens + 1);
                    st.next_reopen = Some(Instant::now() + wait);
                }
                _ => return,
            }
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            // Readers and the other writer hold clones only for one operation.
            let deadline = Instant::now() + RELEASE_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&old) > 1 {
                tracing::debug!("store still in use; reopening later");
                *slot = Some(old);
                return;
            }
            drop(old);
        }
        match open_db(&self.path) {
            Ok(db) => {
                *slot = Some(Arc::new(db));
                self.reopens_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(store = %self.path.display(), "store reopened");
            }
            Err(error) => {
                // Still None: reads and writes fail fast until the next attempt.
                tracing::debug!(%error, "reopening the store failed; retrying with backoff");
            }
        }
    }
}
