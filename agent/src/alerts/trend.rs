//! A resource's recent samples and the sign of their trend.

use fog_proto::Trend;

use super::MAX_TREND_WINDOW;

/// The last few samples of one resource, in a ring allocated once.
#[derive(Debug, Clone)]
pub(super) struct Ring {
    /// (time ms, value); at most `cap` entries.
    pub(super) buf: Vec<(u64, f64)>,
    next: usize,
    cap: usize,
}

impl Ring {
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.clamp(2, MAX_TREND_WINDOW);
        Ring {
            buf: Vec::with_capacity(cap),
            next: 0,
            cap,
        }
    }

    pub(super) fn push(&mut self, t: u64, v: f64) {
        if self.buf.len() < self.cap {
            self.buf.push((t, v));
        } else {
            self.buf[self.next] = (t, v);
        }
        self.next = (self.next + 1) % self.cap;
    }
}

/// Sign of the least-squares slope of `points` (time ms, value), as the fitted change
/// across their time span compared with `deadband` (value units).
pub(super) fn trend(points: &[(u64, f64)], deadband: f64) -> Trend {
    let n = points.len();
    if n < 2 {
        return Trend::Steady;
    }
    // Times relative to the earliest, in seconds (exact for ms up to 2^53).
    let t0 = points.iter().map(|p| p.0).min().unwrap_or(0);
    let t1 = points.iter().map(|p| p.0).max().unwrap_or(0);
    let xs = points.iter().map(|p| (p.0 - t0) as f64 / 1000.0);
    let nf = n as f64;
    let mx = xs.clone().sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, (_, y)) in xs.zip(points) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx <= 0.0 {
        return Trend::Steady;
    }
    let change = sxy / sxx * ((t1 - t0) as f64 / 1000.0);
    if change > deadband {
        Trend::Rising
    } else if change < -deadband {
        Trend::Falling
    } else {
        Trend::Steady
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_790_000_000_000;
    const STEP: u64 = 10_000;

    #[test]
    fn trend_is_the_sign_of_the_fit_beyond_the_deadband() {
        let pts = |vs: &[f64]| -> Vec<(u64, f64)> {
            vs.iter()
                .enumerate()
                .map(|(i, &v)| (T0 + i as u64 * STEP, v))
                .collect()
        };
        // Deadband 4 points (5 % of 80).
        assert_eq!(
            trend(&pts(&[50.0, 52.0, 54.0, 56.0, 58.0, 60.0]), 4.0),
            Trend::Rising
        );
        assert_eq!(
            trend(&pts(&[60.0, 58.0, 56.0, 54.0, 52.0, 50.0]), 4.0),
            Trend::Falling
        );
        // Noise of +-3 around a level, and a drift too small to matter.
        assert_eq!(
            trend(&pts(&[53.0, 47.0, 53.0, 47.0, 53.0, 47.0]), 4.0),
            Trend::Steady
        );
        assert_eq!(
            trend(&pts(&[50.0, 51.5, 49.0, 52.0, 50.5, 51.0]), 4.0),
            Trend::Steady
        );
        // A rise through noise is still a rise.
        assert_eq!(
            trend(&pts(&[50.0, 56.0, 53.0, 60.0, 57.0, 64.0]), 4.0),
            Trend::Rising
        );
        assert_eq!(trend(&pts(&[70.0]), 4.0), Trend::Steady);
        assert_eq!(trend(&[(T0, 1.0), (T0, 9.0)], 0.0), Trend::Steady);
        // Uneven sampling: time, not index, is the x axis; ring order does not matter.
        assert_eq!(
            trend(&[(T0 + 60_000, 80.0), (T0, 50.0), (T0 + 5_000, 52.0)], 4.0),
            Trend::Rising
        );
    }

    #[test]
    fn the_trend_ring_is_bounded_and_keeps_the_latest() {
        let mut ring = Ring::new(6);
        for i in 0..1000u64 {
            ring.push(i, i as f64);
        }
        assert_eq!(ring.buf.len(), 6);
        assert_eq!(ring.buf.capacity(), 6);
        let mut ts: Vec<u64> = ring.buf.iter().map(|p| p.0).collect();
        ts.sort_unstable();
        assert_eq!(ts, [994, 995, 996, 997, 998, 999]);
        // Falling now after a long rise: the window sees only the fall.
        for i in 0..6u64 {
            ring.push(1000 * 1000 + i * STEP, 90.0 - i as f64 * 5.0);
        }
        assert_eq!(trend(&ring.buf, 4.0), Trend::Falling);
    }
}
