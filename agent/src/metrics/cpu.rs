//! CPU use from `/proc/stat`: busy share of jiffies between two samples.

use super::{pct, ProcReader};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Times {
    pub busy: u64,
    pub total: u64,
}

/// Parse one `cpu`/`cpuN` line's counters (user nice system idle iowait irq softirq
/// steal ...). Guest time is already counted in user, so it is not added again.
pub(crate) fn parse_line(fields: &str) -> Option<Times> {
    let mut it = fields
        .split_ascii_whitespace()
        .map(|f| f.parse::<u64>().ok());
    let mut v = [0u64; 8];
    let mut n = 0;
    for slot in v.iter_mut() {
        match it.next() {
            Some(Some(x)) => {
                *slot = x;
                n += 1;
            }
            Some(None) => return None,
            None => break,
        }
    }
    if n < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some(Times {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Parse `/proc/stat` into (all cores, per core).
pub(crate) fn parse_stat(text: &str, per_core: &mut Vec<Times>) -> Option<Times> {
    per_core.clear();
    let mut all = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            // cpu lines come first; stop at the first other line.
            if all.is_some() {
                break;
            }
            continue;
        };
        if let Some(fields) = rest.strip_prefix(' ') {
            all = parse_line(fields);
        } else if let Some((_, fields)) = rest.split_once(' ') {
            per_core.push(parse_line(fields)?);
        }
    }
    all
}

fn busy_pct(prev: Times, cur: Times) -> Option<f32> {
    let dt = cur.total.checked_sub(prev.total)?;
    let db = cur.busy.checked_sub(prev.busy)?;
    (dt > 0).then(|| pct(db as f64, dt as f64))
}

/// Previous counters, so each sample reports use since the one before.
#[derive(Default)]
pub(crate) struct CpuTracker {
    prev_all: Option<Times>,
    prev_cores: Vec<Times>,
    cores: Vec<Times>,
}

impl CpuTracker {
    /// Total and per-core busy %, `(None, [])` on the first sample.
    pub fn sample(&mut self, r: &mut ProcReader) -> (Option<f32>, Vec<f32>) {
        let Some(all) = r
            .read("proc/stat")
            .and_then(|t| parse_stat(t, &mut self.cores))
        else {
            return (None, Vec::new());
        };
        let total = self.prev_all.and_then(|p| busy_pct(p, all));
        let per_core = if self.prev_cores.len() == self.cores.len() && total.is_some() {
            self.prev_cores
                .iter()
                .zip(&self.cores)
                .map(|(&p, &c)| busy_pct(p, c).unwrap_or(0.0))
                .collect()
        } else {
            Vec::new()
        };
        self.prev_all = Some(all);
        std::mem::swap(&mut self.prev_cores, &mut self.cores);
        (total, per_core)
    }

    /// Only the total (heartbeats), still tracking its own previous sample.
    pub fn sample_total(&mut self, r: &mut ProcReader) -> (Option<f32>, ()) {
        let Some(all) = r
            .read("proc/stat")
            .and_then(|t| parse_stat(t, &mut self.cores))
        else {
            return (None, ());
        };
        let total = self.prev_all.and_then(|p| busy_pct(p, all));
        self.prev_all = Some(all);
        (total, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1 2 3\nctxt 5\n";
    const STAT2: &str = "cpu  200 0 200 1400 200 0 0 0 0 0\ncpu0 150 0 50 400 100 0 0 0 0 0\ncpu1 50 0 150 1000 100 0 0 0 0 0\n";

    #[test]
    fn parses_totals_and_cores() {
        let mut cores = Vec::new();
        let all = parse_stat(STAT, &mut cores).expect("parses");
        assert_eq!(
            all,
            Times {
                busy: 200,
                total: 1000
            }
        );
        assert_eq!(cores.len(), 2);
        assert_eq!(
            cores[0],
            Times {
                busy: 100,
                total: 500
            }
        );
    }

    #[test]
    fn busy_share_between_samples() {
        let mut c = Vec::new();
        let a = parse_stat(STAT, &mut c).expect("parses");
        let b = parse_stat(STAT2, &mut c).expect("parses");
        assert_eq!(busy_pct(a, b), Some(20.0));
        assert_eq!(
            busy_pct(b, a),
            None,
            "counters going backwards give no figure"
        );
        assert_eq!(busy_pct(a, a), None, "no time passed");
    }

    #[test]
    fn garbage_is_refused() {
        let mut c = Vec::new();
        assert!(parse_stat("cpu  x y z\n", &mut c).is_none());
        assert!(parse_stat("", &mut c).is_none());
        assert!(parse_line("1 2").is_none());
    }
}
