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

mod cpu;
mod disk;
mod host;
mod memory;
mod network;
mod thermal;

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
        Collector {
            reader,
            config,
            reading_cpu: cpu::CpuTracker::default(),
            heartbeat_cpu: cpu::CpuTracker::default(),
            disks: disk::DiskTracker::default(),
            networks: network::NetworkTracker::default(),
            thermal,
            reading_seq: 0,
            heartbeat_seq: 0,
        }
    }

    /// One full reading. `at_ms` is the wall clock to stamp it with.
    pub fn reading(&mut self, at_ms: u64) -> Reading {
        let now = Instant::now();
        self.reading_seq += 1;
        let (total_pct, per_core_pct) = self.reading_cpu.sample(&mut self.reader);
        let footprint = host::footprint(&mut self.reader);
        Reading {
            seq: self.reading_seq,
            at_ms,
            uptime_secs: host::uptime_secs(&mut self.reader),
            cpu: Cpu {
                total_pct,
                per_core_pct,
            },
            load: host::load(&mut self.reader),
            memory: memory::read(&mut self.reader),
            disks: self
                .disks
                .sample(&mut self.reader, &self.config.exclude_fs_types, now),
            networks: self
                .networks
                .sample(&mut self.reader, &self.config.exclude_interfaces, now),
            temperatures: self.thermal.read(&mut self.reader),
            agent: AgentSelf {
                rss_bytes: footprint.rss_bytes,
                cpu_secs: footprint.cpu_secs,
                ..AgentSelf::default()
            },
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
mod tests {
    use super::*;

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
