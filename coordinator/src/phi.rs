//! Phi-accrual failure detection (Hayashibara et al., as Akka and Cassandra use it):
//! instead of "silent for N intervals", how unlikely is a silence this long given the
//! gaps seen so far. phi = 8 means about one chance in 10^8 that a live node would be
//! this late.
//!
//! State per node is constant: an exponentially weighted mean and variance of the
//! heartbeat gaps, not a window of samples.

use std::time::Duration;
use tokio::time::Instant;

/// Weight of a new gap in the running mean and variance.
const ALPHA: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct PhiDetector {
    last: Option<Instant>,
    mean_ms: f64,
    var_ms2: f64,
    samples: u32,
    /// Floor under the standard deviation, so a very regular node is not judged on
    /// a millisecond of jitter (Akka's `min-std-deviation`).
    min_std_ms: f64,
}

impl PhiDetector {
    /// `expected`: the announced heartbeat interval, the prior until gaps are seen.
    pub fn new(expected: Duration) -> Self {
        let mean = expected.as_secs_f64() * 1000.0;
        PhiDetector {
            last: None,
            mean_ms: mean,
            var_ms2: (mean / 4.0).powi(2),
            samples: 0,
            min_std_ms: (mean / 10.0).max(20.0),
        }
    }

    /// A heartbeat arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
            let d = gap - self.mean_ms;
            self.mean_ms += ALPHA * d;
            self.var_ms2 = (1.0 - ALPHA) * (self.var_ms2 + ALPHA * d * d);
            self.samples = self.samples.saturating_add(1);
        }
        self.last = Some(now);
    }

    /// Gaps observed so far.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.mean_ms.max(0.0) / 1000.0)
    }

    /// Suspicion after silence since the last heartbeat; 0 before the first one.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let t = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
        let std = self.var_ms2.sqrt().max(self.min_std_ms);
        // Logistic approximation of the normal CDF's tail, as Akka does: accurate to
        // ~1e-4 and free of erf.
        let y = (t - self.mean_ms) / std;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if t > self.mean_ms {
            e / (1.0 + e)
        } else {
            1.0 - 1.0 / (1.0 + e)
        };
        -p_later.max(f64::MIN_POSITIVE).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phi_grows_with_silence_and_regular_nodes_are_judged_quickly() {
        let mut d = PhiDetector::new(Duration::from_millis(1000));
        let mut now = Instant::now();
        assert_eq!(d.phi(now), 0.0);
        for _ in 0..30 {
            d.heartbeat(now);
            now += Duration::from_millis(1000);
        }
        let last = now - Duration::from_millis(1000);
        let at = |ms: u64| d.phi(last + Duration::from_millis(ms));
        assert!(at(1000) < 1.0, "on time: {}", at(1000));
        assert!(
            at(1100) < at(1300) && at(1300) < at(2000),
            "phi rises with silence"
        );
        assert!(
            at(2000) > 8.0,
            "one missed beat of a regular node: {}",
            at(2000)
        );
        assert!(at(60_000).is_finite());
    }

    #[tokio::test(start_paused = true)]
    async fn jittery_nodes_get_more_slack() {
        let mut steady = PhiDetector::new(Duration::from_millis(1000));
        let mut jittery = PhiDetector::new(Duration::from_millis(1000));
        let mut t1 = Instant::now();
        let mut t2 = t1;
        for i in 0..50u64 {
            steady.heartbeat(t1);
            jittery.heartbeat(t2);
            t1 += Duration::from_millis(1000);
            t2 += Duration::from_millis(if i % 2 == 0 { 500 } else { 1500 });
        }
        let after = Duration::from_millis(1800);
        assert!(
            jittery.phi(t2 - Duration::from_millis(500) + after)
                < steady.phi(t1 - Duration::from_millis(1000) + after)
        );
    }
}
