//! Supervision: a subsystem that fails (returns an error or panics) is restarted after
//! 2, 4, then 8 s (capped), and one that keeps failing is reported as degraded in the
//! heartbeat, the readings and the systemd status line instead of taking the agent
//! down. An unattended node is better off publishing readings without, say, its alert
//! engine than not at all.
//!
//! [`Restarts`] is the policy and the bookkeeping (used directly by the store, whose
//! restart is a reopen in its writer thread, and by the transport); [`Supervised`]
//! wraps a value that is rebuilt from a factory after a panic (the collector, the
//! alert engine). The worker pool catches a panicking job in the worker itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tokio::time::Instant;

/// First restart delay; doubled per failure in a row up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(2);
pub const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures in a row that make a subsystem degraded even while it runs.
pub const DEGRADED_AFTER: u32 = 3;
/// Running this long without failing forgets earlier failures.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The delay before restart number `failures_in_row` (1-based): 2, 4, 8, 8, ... s.
pub fn delay(failures_in_row: u32) -> Duration {
    let shift = failures_in_row.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

/// Restart bookkeeping for one subsystem.
#[derive(Debug)]
pub struct Restarts {
    name: &'static str,
    failures_in_row: u32,
    last_failure: Option<Instant>,
    /// Down, to be restarted at this time.
    restart_at: Option<Instant>,
    restarts_total: u64,
}

impl Restarts {
    pub fn new(name: &'static str) -> Restarts {
        Restarts {
            name,
            failures_in_row: 0,
            last_failure: None,
            restart_at: None,
            restarts_total: 0,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The subsystem failed at `now`; it is down until [`due`](Self::due). Returns
    /// the delay chosen.
    pub fn failed(&mut self, now: Instant, error: &str) -> Duration {
        if self
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= HEALTHY_AFTER)
        {
            self.failures_in_row = 0;
        }
        self.failures_in_row += 1;
        self.last_failure = Some(now);
        let d = delay(self.failures_in_row);
        self.restart_at = Some(now + d);
        if self.failures_in_row == DEGRADED_AFTER {
            tracing::error!(
                subsystem = self.name,
                failures = self.failures_in_row,
                %error,
                "subsystem keeps failing; reporting it as degraded and restarting with backoff"
            );
        } else {
            tracing::warn!(
                subsystem = self.name,
                failures = self.failures_in_row,
                restart_in_secs = d.as_secs(),
                %error,
                "subsystem failed; restarting"
            );
        }
        d
    }

    /// Down and its restart time has come.
    pub fn due(&self, now: Instant) -> bool {
        self.restart_at.is_some_and(|t| now >= t)
    }

    /// When a down subsystem is to be restarted.
    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }

    pub fn is_down(&self) -> bool {
        self.restart_at.is_some()
    }

    /// It was restarted (and is running again).
    pub fn restarted(&mut self) {
        self.restart_at = None;
        self.restarts_total += 1;
        tracing::info!(
            subsystem = self.name,
            restarts = self.restarts_total,
            "subsystem restarted"
        );
    }

    /// Worked at `now`: after [`HEALTHY_AFTER`] without a failure, the streak ends.
    pub fn ok(&mut self, now: Instant) {
        if self.failures_in_row > 0
            && self
                .last_failure
                .is_some_and(|t| now.saturating_duration_since(t) >= HEALTHY_AFTER)
        {
            tracing::info!(subsystem = self.name, "subsystem healthy again");
            self.failures_in_row = 0;
        }
    }

    pub fn degraded(&self) -> bool {
        self.is_down() || self.failures_in_row >= DEGRADED_AFTER
    }

    pub fn restarts_total(&self) -> u64 {
        self.restarts_total
    }
}

/// A value rebuilt by its factory after a panic, with [`Restarts`]' backoff.
pub struct Supervised<T> {
    make: Box<dyn FnMut() -> T + Send>,
    inner: Option<T>,
    restarts: Restarts,
}

impl<T> Supervised<T> {
    pub fn new(name: &'static str, mut make: impl FnMut() -> T + Send + 'static) -> Self {
        let inner = Some(make());
        Supervised {
            make: Box::new(make),
            inner,
            restarts: Restarts::new(name),
        }
    }

    /// Run `f` on the value, rebuilding it first if it is down and due. `None` while
    /// it is down, or if `f` panicked (the value is dropped: its state may be broken).
    pub fn with<R>(&mut self, now: Instant, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.inner.is_none() && self.restarts.due(now) {
            let make = &mut self.make;
            match catch_unwind(AssertUnwindSafe(make)) {
                Ok(v) => {
                    self.inner = Some(v);
                    self.restarts.restarted();
                }
                Err(p) => {
                    self.restarts.failed(now, &panic_message(&p));
                    return None;
                }
            }
        }
        let inner = self.inner.as_mut()?;
        match catch_unwind(AssertUnwindSafe(|| f(inner))) {
            Ok(r) => {
                self.restarts.ok(now);
                Some(r)
            }
            Err(p) => {
                self.inner = None;
                self.restarts.failed(now, &panic_message(&p));
                None
            }
        }
    }

    pub fn restarts(&self) -> &Restarts {
        &self.restarts
    }

    /// Rebuild with `make` from now on (after a config reload); the value running now
    /// stays.
    pub fn set_factory(&mut self, make: impl FnMut() -> T + Send + 'static) {
        self.make = Box::new(make);
    }
}

/// The text of a panic payload (`&str` or `String`; anything else is named as such).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_2_4_8_then_capped() {
        let d: Vec<u64> = (1..=6).map(|n| delay(n).as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 8, 8, 8]);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_value_is_rebuilt_after_the_backoff_and_degrades_when_it_keeps_failing() {
        let built = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let b = built.clone();
        let mut s = Supervised::new("collector", move || {
            b.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            0u32
        });
        let t0 = Instant::now();
        assert_eq!(s.with(t0, |v| *v + 1), Some(1));
        // Three panics in a row: down after each, rebuilt only when due.
        let mut now = t0;
        for (n, wait) in [(1, 2), (2, 4), (3, 8)] {
            assert_eq!(s.with(now, |_| -> u32 { panic!("odd /sys file") }), None);
            assert!(s.restarts().is_down());
            assert!(s.restarts().degraded());
            assert_eq!(
                s.with(now + Duration::from_secs(wait - 1), |v| *v),
                None,
                "not yet"
            );
            now += Duration::from_secs(wait);
            assert_eq!(s.with(now, |v| *v), Some(0), "rebuilt after {wait} s");
            assert_eq!(built.load(std::sync::atomic::Ordering::Relaxed), 1 + n);
        }
        // Running again, but it failed three times in a row: still degraded...
        assert!(!s.restarts().is_down());
        assert!(s.restarts().degraded());
        // ...until it has worked for a minute.
        assert_eq!(s.with(now + HEALTHY_AFTER, |v| *v), Some(0));
        assert!(!s.restarts().degraded());
        assert_eq!(s.restarts().restarts_total(), 3);
    }

    #[test]
    fn panic_messages_are_kept() {
        let p = catch_unwind(|| panic!("with {}", 42)).expect_err("panics");
        assert_eq!(panic_message(&*p), "panicked: with 42");
        let p = catch_unwind(|| panic!("plain")).expect_err("panics");
        assert_eq!(panic_message(&*p), "panicked: plain");
    }
}
