//! Readings from `/proc` and `/sys`, one file per collector (cpu, memory, disk,
//! network, thermal, host).
//!
//! Why not sysinfo: measured per refresh, its network refresh alone costs ~700 us
//! against ~56 us for reading `/proc/net/dev`, and the agent's budget for a whole
//! reading is 300 us and 4.5 MiB RSS. These files are stable kernel ABI and each parser
//! is a few dozen lines with fixture tests. The root is configurable so tests can point
//! the collector at a fixture tree.
//!
//! Rates (CPU %, disk and network bytes/s) come from deltas between two samples; the
//! first sample after start has none (`None`, empty per-core list) rather than a
//! figure averaged over the whole uptime.

mod block;
mod clock;
mod cpu;
mod disk;
mod freq;
mod host;
mod memory;
mod network;
mod power;
mod thermal;
mod wireless;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fog_proto::{AgentSelf, Cpu, Heartbeat, Reading};

use crate::config::MetricsConfig;

pub use host::ProcessFootprint;

/// Reads files into one reused buffer, so a reading allocates only what it returns.
pub(crate) struct ProcReader {
    root: PathBuf,
    buf: String,
}

impl ProcReader {
    fn new(root: &Path) -> Self {
        ProcReader {
            root: root.to_owned(),
            buf: String::with_capacity(4096),
        }
    }

    /// Read `rel` (relative to the root, e.g. `proc/stat`); `None` if it is missing or
    /// unreadable, which collectors treat as "this kernel does not expose it".
    fn read(&mut self, rel: &str) -> Option<&str> {
        use std::io::Read as _;
        self.buf.clear();
        let mut f = std::fs::File::open(self.root.join(rel)).ok()?;
        f.read_to_string(&mut self.buf).ok()?;
        Some(&self.buf)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Whether `rel` exists (following symlinks, as sysfs needs).
    fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).exists()
    }

    /// The names in directory `rel`, sorted; empty if it is missing.
    fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join(rel))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The first whitespace-separated word of `rel`, parsed.
    fn read_value<T: std::str::FromStr>(&mut self, rel: &str) -> Option<T> {
        self.read(rel)?
            .split_ascii_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// Collects readings and heartbeats, keeping the previous counters for rates.
pub struct Collector {
    reader: ProcReader,
    config: MetricsConfig,
    reading_cpu: cpu::CpuTracker,
    heartbeat_cpu: cpu::CpuTracker,
    disks: disk::DiskTracker,
    networks: network::NetworkTracker,
    thermal: thermal::Sensors,
    frequencies: freq::Policies,
    power: power::PowerSources,
    clock: clock::ClockProbe,
    reading_seq: u64,
    heartbeat_seq: u64,
}

impl Collector {
    /// A collector over the live system.
    pub fn new(config: MetricsConfig) -> Self {
        Self::with_root(Path::new("/"), config)
    }

    /// A collector over a tree laid out like `/` (`proc/stat`, `sys/class/...`).
    pub fn with_root(root: &Path, config: MetricsConfig) -> Self {
        let mut reader = ProcReader::new(root);
        let thermal = thermal::Sensors::discover(&mut reader);
        let frequencies = freq::Policies::discover(&mut reader);
        let power = power::PowerSources::discover(&mut reader);
        // Only the live root has a kernel clock to ask; a fixture tree has files.
        let clock = if root == Path::new("/") {
            clock::ClockProbe::Kernel
        } else {
            clock::ClockProbe::FilesOnly
        };
        Collector {
            reader,
            config,
            reading_cpu: cpu::CpuTracker::default(),
            heartbeat_cpu: cpu::CpuTracker::default(),
            disks: disk::DiskTracker::default(),
            networks: network::NetworkTracker::default(),
            thermal,
            frequencies,
            power,
            clock,
            reading_seq: 0,
            heartbeat_seq: 0,
        }
    }

    /// One full reading. `at_ms` is the wall clock to stamp it with.
    pub fn reading(&mut self, at_ms: u64) -> Reading {
        let now = Instant::now();
        self.reading_seq += 1;
        // Asked first, so the flag describes the clock `at_ms` was read from.
        let clock_synced = clock::synced(self.clock, &self.reader);
        let (total_pct, per_core_pct) = self.reading_cpu.sample(&mut self.reader);
        let footprint = host::footprint(&mut self.reader);
        // One pass over /proc/diskstats for both the mounts and the whole devices.
        let io: Vec<(String, u64, u64)> = self
            .reader
            .read("proc/diskstats")
            .map(|t| {
                disk::parse_diskstats(t)
                    .map(|(n, rd, wr)| (n.to_owned(), rd, wr))
                    .collect()
            })
            .unwrap_or_default();
        Reading {
            seq: self.reading_seq,
            at_ms,
            uptime_secs: host::uptime_secs(&mut self.reader),
            cpu: Cpu {
                total_pct,
                per_core_pct,
                frequencies: self.frequencies.read(&mut self.reader),
            },
            load: host::load(&mut self.reader),
            memory: memory::read(&mut self.reader),
            disks: self
                .disks
                .sample(&mut self.reader, &io, &self.config.exclude_fs_types, now),
            networks: self
                .networks
                .sample(&mut self.reader, &self.config.exclude_interfaces, now),
            temperatures: self.thermal.read(&mut self.reader),
            agent: AgentSelf {
                rss_bytes: footprint.rss_bytes,
                cpu_secs: footprint.cpu_secs,
                ..AgentSelf::default()
            },
            block_devices: block::read(&mut self.reader, &io),
            power: self.power.read(&mut self.reader),
            clock_synced,
        }
    }

    /// A heartbeat's load figures (queue fields are filled by the caller).
    pub fn heartbeat(&mut self, at_ms: u64) -> Heartbeat {
        self.heartbeat_seq += 1;
        let (cpu_pct, _) = self.heartbeat_cpu.sample_total(&mut self.reader);
        Heartbeat {
            seq: self.heartbeat_seq,
            at_ms,
            cpu_pct,
            mem_pct: memory::read(&mut self.reader).used_pct,
            load1: host::load(&mut self.reader).one,
            ..Heartbeat::default()
        }
    }

    /// Total memory, for the birth record.
    pub fn memory_total_bytes(&mut self) -> u64 {
        memory::read(&mut self.reader).total_bytes
    }

    /// The agent's own RSS and CPU time.
    pub fn footprint(&mut self) -> ProcessFootprint {
        host::footprint(&mut self.reader)
    }
}

/// `a / b * 100`, or 0 for an empty denominator; never NaN (JSON cannot carry NaN).
pub(crate) fn pct(a: f64, b: f64) -> f32 {
    if b > 0.0 && a.is_finite() {
        ((a / b) * 100.0).clamp(0.0, 100.0) as f32
    } else {
        0.0
    }
}

/// Counter delta per second; `None` if there is no earlier sample, time did not pass,
/// the counter went backwards (wrapped or reset, e.g. an interface re-created), or the
/// quotient is not finite (no fog message may carry NaN or an infinity).
pub(crate) fn rate(prev: Option<(u64, Instant)>, cur: u64, now: Instant) -> Option<f64> {
    let (p, t) = prev?;
    let dt = now.checked_duration_since(t)?.as_secs_f64();
    if dt <= 0.0 || cur < p {
        return None;
    }
    Some((cur - p) as f64 / dt).filter(|r| r.is_finite())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary tree laid out like `/`, for the collectors' fixture tests.
    pub(crate) struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        pub fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        pub fn root(&self) -> &Path {
            self.dir.path()
        }

        /// Write `text` at `rel`, making its directories.
        pub fn put(&self, rel: &str, text: &str) {
            let p = self.dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
            std::fs::write(p, text).expect("write fixture");
        }

        pub fn reader(&self) -> ProcReader {
            ProcReader::new(self.dir.path())
        }
    }

    #[test]
    fn live_system_readings_are_sane() {
        let mut c = Collector::new(MetricsConfig {
            exclude_interfaces: vec!["lo".into()],
            exclude_fs_types: vec![],
        });
        let first = c.reading(1);
        assert!(first.cpu.total_pct.is_none(), "no rate on the first sample");
        assert!(first.cpu.per_core_pct.is_empty());
        assert!(first.memory.total_bytes > 0);
        assert!(first.uptime_secs > 0);
        assert!(first.agent.rss_bytes > 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = c.reading(2);
        let total = second.cpu.total_pct.expect("rate on the second sample");
        assert!((0.0..=100.0).contains(&total));
        assert_eq!(
            second.cpu.per_core_pct.len(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        assert_eq!(second.seq, 2);
        assert!(second.networks.iter().all(|n| n.interface != "lo"));
        // The encoded reading must be valid JSON (no NaN).
        let bytes = fog_proto::codec::encode(&second, fog_proto::Encoding::Json).expect("encodes");
        let _: Reading = fog_proto::codec::decode(&bytes).expect("decodes");
    }

    #[test]
    fn rate_handles_first_sample_and_counter_reset() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(2);
        assert_eq!(rate(None, 10, t1), None);
        assert_eq!(rate(Some((10, t0)), 30, t1), Some(10.0));
        assert_eq!(rate(Some((50, t0)), 30, t1), None);
        assert_eq!(rate(Some((10, t1)), 30, t1), None);
        let tiny = t0 + std::time::Duration::from_nanos(1);
        let fast = rate(Some((0, t0)), u64::MAX, tiny).expect("finite");
        assert!(fast.is_finite());
    }

    #[test]
    fn percentages_are_never_nan() {
        assert_eq!(pct(0.0, 0.0), 0.0, "0/0");
        assert_eq!(pct(5.0, 0.0), 0.0);
        assert_eq!(pct(f64::NAN, 10.0), 0.0);
        assert_eq!(pct(f64::INFINITY, 10.0), 0.0);
        assert_eq!(pct(5.0, f64::NAN), 0.0);
        assert_eq!(pct(20.0, 10.0), 100.0, "clamped");
    }

    /// A Raspberry Pi 4 as its files lay it out: an SD card, Wi-Fi and Ethernet, the
    /// firmware's throttled word, cpufreq, timesyncd not yet synchronised. Every Pi
    /// figure arrives, and survives both encodings.
    #[test]
    fn a_pi_tree_gives_the_pi_readings() {
        let f = Fixture::new();
        f.put(
            "proc/stat",
            "cpu  10 0 10 80 0 0 0 0\ncpu0 10 0 10 80 0 0 0 0\n",
        );
        f.put(
            "proc/meminfo",
            "MemTotal: 3884000 kB\nMemAvailable: 3000000 kB\n",
        );
        f.put("proc/uptime", "42.5 40.0\n");
        f.put("proc/loadavg", "0.10 0.05 0.01 1/100 999\n");
        f.put(
            "proc/self/mounts",
            "/dev/mmcblk0p2 / ext4 rw 0 0\n/dev/mmcblk0p1 /boot/firmware vfat rw 0 0\n",
        );
        f.put("boot/firmware/.keep", "");
        f.put(
            "proc/diskstats",
            " 179 0 mmcblk0 900 0 8000 0 300 0 6000 0 0 0 0\n 179 1 mmcblk0p1 10 0 80 0 0 0 0 0 0 0 0\n 179 2 mmcblk0p2 890 0 7920 0 300 0 6000 0 0 0 0\n",
        );
        f.put(
            "proc/net/dev",
            "Inter-|   Receive\n face |bytes\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n wlan0: 5000 50 0 0 0 0 0 0 700 7 0 0 0 0 0 0\n",
        );
        f.put(
            "proc/net/wireless",
            "Inter-| sta-|   Quality\n face | tus | link level noise\n wlan0: 0000   52.  -58.  -256        0      0      0      0     12        0\n",
        );
        f.put("sys/block/mmcblk0/device/type", "SD\n");
        f.put(
            "sys/devices/platform/soc/soc:firmware/get_throttled",
            "50005\n",
        );
        f.put("sys/class/hwmon/hwmon1/name", "rpi_volt\n");
        f.put("sys/class/hwmon/hwmon1/in0_lcrit_alarm", "1\n");
        let p0 = "sys/devices/system/cpu/cpufreq/policy0";
        f.put(&format!("{p0}/affected_cpus"), "0 1 2 3\n");
        f.put(&format!("{p0}/scaling_cur_freq"), "600000\n");
        f.put(&format!("{p0}/cpuinfo_max_freq"), "1800000\n");
        f.put("run/systemd/timesync/.keep", "");
        let mut c = Collector::with_root(
            f.root(),
            MetricsConfig {
                exclude_interfaces: vec![],
                exclude_fs_types: vec![],
            },
        );
        let r = c.reading(1_000);
        assert_eq!(
            r.clock_synced,
            Some(false),
            "timesyncd has not synchronised"
        );
        let power = r.power.clone().expect("a Pi reports power");
        assert_eq!(
            (power.under_voltage_now, power.throttled_now),
            (Some(true), Some(true))
        );
        assert_eq!(r.cpu.frequencies.len(), 1);
        assert_eq!(r.cpu.frequencies[0].cur_khz, 600_000);
        assert_eq!(r.cpu.frequencies[0].max_khz, Some(1_800_000));
        let wlan = r
            .networks
            .iter()
            .find(|n| n.interface == "wlan0")
            .expect("wlan0");
        assert_eq!(wlan.wifi.as_ref().map(|w| w.signal_dbm), Some(-58));
        assert_eq!((wlan.rx_bytes_total, wlan.tx_packets_total), (5000, 7));
        let eth = r
            .networks
            .iter()
            .find(|n| n.interface == "eth0")
            .expect("eth0");
        assert_eq!(eth.wifi, None);
        assert_eq!(eth.tx_bytes_total, 2000);
        let root = r.disks.iter().find(|d| d.mount == "/").expect("root mount");
        assert_eq!(root.write_bytes_total, Some(6000 * 512));
        assert_eq!(r.block_devices.len(), 1);
        assert_eq!(r.block_devices[0].name, "mmcblk0");
        assert_eq!(r.block_devices[0].write_bytes_total, 6000 * 512);
        f.put("run/systemd/timesync/synchronized", "");
        let later = c.reading(2_000);
        assert_eq!(later.clock_synced, Some(true));
        for enc in [fog_proto::Encoding::Json, fog_proto::Encoding::Postcard] {
            let bytes = fog_proto::codec::encode(&r, enc).expect("encodes");
            let back: Reading = fog_proto::codec::decode(&bytes).expect("decodes");
            assert_eq!(back, r);
        }
    }

    /// A board with none of the Pi's files: each source is absent, nothing fails.
    #[test]
    fn a_bare_tree_has_no_pi_readings() {
        let f = Fixture::new();
        let mut c = Collector::with_root(
            f.root(),
            MetricsConfig {
                exclude_interfaces: vec![],
                exclude_fs_types: vec![],
            },
        );
        let r = c.reading(1);
        assert_eq!((r.power, r.clock_synced), (None, None));
        assert!(r.cpu.frequencies.is_empty() && r.block_devices.is_empty());
    }

    /// A `/proc` that hands out "nan" and "inf", counters that did not move (0/0) and
    /// no memory total: what the agent sends still encodes and decodes in both
    /// encodings (the codec refuses any non-finite float).
    #[test]
    fn hostile_proc_files_give_finite_figures() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_dir = root.path().join("proc/self");
        std::fs::create_dir_all(&proc_dir).expect("proc");
        let put = |rel: &str, text: &str| {
            std::fs::write(root.path().join(rel), text).expect("fixture");
        };
        put("proc/loadavg", "nan inf -inf 1/1 1\n");
        put("proc/stat", "cpu  0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0\n");
        put("proc/meminfo", "MemTotal: 0 kB\nMemAvailable: 0 kB\n");
        put("proc/uptime", "nan nan\n");
        let config = MetricsConfig {
            exclude_interfaces: vec![],
            exclude_fs_types: vec![],
        };
        let mut c = Collector::with_root(root.path(), config);
        for at in 0..3 {
            let hb = c.heartbeat(at);
            let reading = c.reading(at);
            assert_eq!((hb.load1, hb.mem_pct), (0.0, 0.0));
            assert_eq!(reading.load.five, 0.0);
            for enc in [fog_proto::Encoding::Json, fog_proto::Encoding::Postcard] {
                let bytes = fog_proto::codec::encode(&hb, enc).expect("heartbeat encodes");
                let back: Heartbeat = fog_proto::codec::decode(&bytes).expect("decodes");
                assert_eq!(back, hb);
                let bytes = fog_proto::codec::encode(&reading, enc).expect("reading encodes");
                let back: Reading = fog_proto::codec::decode(&bytes).expect("decodes");
                assert_eq!(back, reading);
            }
        }
    }
}
