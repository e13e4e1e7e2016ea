//! The clock each cpufreq policy runs at (`/sys/devices/system/cpu/cpufreq/policy*`).
//! A Pi that is too hot or under-powered runs below its maximum; this is the figure
//! `vcgencmd measure_clock arm` gives, without a shell.

use fog_proto::CpuFrequency;

use super::ProcReader;

const CPUFREQ: &str = "sys/devices/system/cpu/cpufreq";

struct Policy {
    cpus: String,
    cur: String,
    min_khz: Option<u64>,
    max_khz: Option<u64>,
}

/// Policies found once at start; their range does not change, only the current clock.
pub(crate) struct Policies {
    found: Vec<Policy>,
}

impl Policies {
    pub fn discover(r: &mut ProcReader) -> Self {
        let mut dirs: Vec<(u32, String)> = r
            .list(CPUFREQ)
            .into_iter()
            .filter_map(|d| Some((d.strip_prefix("policy")?.parse().ok()?, d)))
            .collect();
        dirs.sort(); // numerically: policy10 after policy2
        let mut found = Vec::with_capacity(dirs.len());
        for (_, dir) in dirs {
            let base = format!("{CPUFREQ}/{dir}");
            // scaling_cur_freq is what the governor set; cpuinfo_cur_freq (root only on
            // most kernels) what the hardware reports. Prefer the one we can read.
            let Some(cur) = ["scaling_cur_freq", "cpuinfo_cur_freq"]
                .into_iter()
                .map(|f| format!("{base}/{f}"))
                .find(|p| r.read_value::<u64>(p).is_some())
            else {
                continue;
            };
            let cpus = r
                .read(&format!("{base}/affected_cpus"))
                .map(|t| t.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            found.push(Policy {
                cpus,
                cur,
                min_khz: r.read_value(&format!("{base}/cpuinfo_min_freq")),
                max_khz: r.read_value(&format!("{base}/cpuinfo_max_freq")),
            });
        }
        Policies { found }
    }

    pub fn read(&self, r: &mut ProcReader) -> Vec<CpuFrequency> {
        self.found
            .iter()
            .filter_map(|p| {
                Some(CpuFrequency {
                    cpus: p.cpus.clone(),
                    cur_khz: r.read_value(&p.cur)?,
                    min_khz: p.min_khz,
                    max_khz: p.max_khz,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::Fixture;

    /// A Raspberry Pi 4's layout: one policy for four cores, capped at 600 MHz.
    #[test]
    fn reads_a_pi_policy_and_orders_big_little_numerically() {
        let f = Fixture::new();
        let p0 = "sys/devices/system/cpu/cpufreq/policy0";
        f.put(&format!("{p0}/affected_cpus"), "0 1 2 3\n");
        f.put(&format!("{p0}/scaling_cur_freq"), "600000\n");
        f.put(&format!("{p0}/cpuinfo_min_freq"), "600000\n");
        f.put(&format!("{p0}/cpuinfo_max_freq"), "1500000\n");
        let p10 = "sys/devices/system/cpu/cpufreq/policy10";
        f.put(&format!("{p10}/affected_cpus"), "10 11\n");
        f.put(&format!("{p10}/scaling_cur_freq"), "2000000\n");
        let p2 = "sys/devices/system/cpu/cpufreq/policy2";
        f.put(&format!("{p2}/affected_cpus"), "2\n");
        f.put(&format!("{p2}/scaling_cur_freq"), "garbage\n"); // unreadable: skipped
        let mut r = f.reader();
        let found = Policies::discover(&mut r).read(&mut r);
        assert_eq!(
            found,
            vec![
                CpuFrequency {
                    cpus: "0 1 2 3".into(),
                    cur_khz: 600_000,
                    min_khz: Some(600_000),
                    max_khz: Some(1_500_000),
                },
                CpuFrequency {
                    cpus: "10 11".into(),
                    cur_khz: 2_000_000,
                    min_khz: None,
                    max_khz: None,
                },
            ]
        );
    }

    #[test]
    fn no_cpufreq_is_an_empty_list() {
        let f = Fixture::new();
        let mut r = f.reader();
        assert!(Policies::discover(&mut r).read(&mut r).is_empty());
    }
}
