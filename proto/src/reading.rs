//! The full reading on `nodes/{node}/metrics` and its parts: what a node measures of
//! itself. Field names carry their units; the compatibility rule in
//! [`crate::schema`] applies (fields appended with `#[serde(default)]`).

use serde::{Deserialize, Serialize};

/// Full reading on `nodes/{node}/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub seq: u64,
    pub at_ms: u64,
    pub uptime_secs: u64,
    pub cpu: Cpu,
    pub load: Load,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub networks: Vec<Network>,
    pub temperatures: Vec<Temperature>,
    pub agent: AgentSelf,
    /// Whole block devices (not partitions): cumulative I/O and, for eMMC, wear.
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    /// Under-voltage and throttling, where the board's firmware says (Raspberry Pi);
    /// `None` on boards that expose neither source.
    #[serde(default)]
    pub power: Option<Power>,
    /// Whether the system clock was synchronised (NTP) when this reading was made;
    /// `None` when the agent cannot tell. A board without an RTC boots with a wrong
    /// clock: while this is `Some(false)`, `at_ms` is not to be trusted, and
    /// [`Reading::corrected_at_ms`] recovers it from a later synchronised reading.
    #[serde(default)]
    pub clock_synced: Option<bool>,
}

impl Reading {
    /// This reading's time on a synchronised clock, from `later`, a reading of the
    /// same boot made while the clock was synchronised: `later.at_ms` less the uptime
    /// between them (to the second, the resolution of `uptime_secs`). `None` if
    /// `later` is not synchronised, is from another boot (its uptime is smaller), or
    /// this reading was synchronised already (its `at_ms` needs no correction).
    pub fn corrected_at_ms(&self, later: &Reading) -> Option<u64> {
        if self.clock_synced != Some(false) || later.clock_synced != Some(true) {
            return None;
        }
        let since = later.uptime_secs.checked_sub(self.uptime_secs)?;
        later.at_ms.checked_sub(since.checked_mul(1000)?)
    }

    /// What a Pi owner checks first, as short phrases for `status`: `under-voltage`
    /// (or `under-voltage since boot`), `throttled` (or `throttled since boot`),
    /// `soft temperature limit`, `clock not synchronised`, and per eMMC
    /// `mmcblk0 wear warning`/`urgent` or `mmcblk0 life 90% used`. Empty when none.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        let yes = |f: Option<bool>| f == Some(true);
        if let Some(p) = &self.power {
            if yes(p.under_voltage_now) {
                out.push("under-voltage".to_owned());
            } else if yes(p.under_voltage_occurred) {
                out.push("under-voltage since boot".to_owned());
            }
            if yes(p.throttled_now) || yes(p.freq_capped_now) {
                out.push("throttled".to_owned());
            } else if yes(p.throttled_occurred) || yes(p.freq_capped_occurred) {
                out.push("throttled since boot".to_owned());
            }
            if yes(p.soft_temp_limit_now) {
                out.push("soft temperature limit".to_owned());
            }
        }
        if self.clock_synced == Some(false) {
            out.push("clock not synchronised".to_owned());
        }
        for d in &self.block_devices {
            let Some(f) = &d.flash else { continue };
            match f.pre_eol {
                Some(PreEol::Urgent) => out.push(format!("{} wear urgent", d.name)),
                Some(PreEol::Warning) => out.push(format!("{} wear warning", d.name)),
                _ => {
                    let used = f.life_used_a_pct.max(f.life_used_b_pct).unwrap_or(0);
                    if used >= 90 {
                        out.push(format!("{} life {}% used", d.name, used.min(100)));
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Busy share of all cores since the previous sample; `None` on the first sample.
    pub total_pct: Option<f32>,
    /// Per core, in core order; empty on the first sample.
    pub per_core_pct: Vec<f32>,
    /// The clock each frequency domain runs at now (one per cpufreq policy: one on a
    /// Pi, two on a big.LITTLE board); empty without cpufreq.
    #[serde(default)]
    pub frequencies: Vec<CpuFrequency>,
}

/// One cpufreq policy: the cores it clocks, and their frequency now and at most.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuFrequency {
    /// The cores, as the kernel lists them (`0 1 2 3`).
    pub cpus: String,
    pub cur_khz: u64,
    /// The hardware's range; a Pi capped by heat or power runs below `max_khz`.
    pub min_khz: Option<u64>,
    pub max_khz: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub one: f32,
    pub five: f32,
    pub fifteen: f32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_pct: f32,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub mount: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_pct: f32,
    /// `None` on the first sample or when the device has no I/O counters.
    pub read_bytes_per_sec: Option<f64>,
    pub write_bytes_per_sec: Option<f64>,
    /// Counters since boot behind the rates (`None` without I/O counters), for
    /// monitoring systems that compute their own rates.
    #[serde(default)]
    pub read_bytes_total: Option<u64>,
    #[serde(default)]
    pub write_bytes_total: Option<u64>,
}

/// A whole block device (`mmcblk0`, `sda`, `nvme0n1`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    /// Since boot, all partitions together: what an SD card has been asked to write.
    pub read_bytes_total: u64,
    pub write_bytes_total: u64,
    /// The device's own wear report, where the kernel exposes one (eMMC does; SD
    /// cards and USB sticks do not).
    pub flash: Option<FlashHealth>,
}

/// An eMMC's wear report (JEDEC `DEVICE_LIFE_TIME_EST_TYP_A/B` and `PRE_EOL_INFO`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlashHealth {
    /// Share of the rated life used, as the top of the 10 % band the device reports
    /// (10 for 0-10 %, ..., 100 for 90-100 %, 110 for "exceeded"), for the two kinds
    /// of cells (A: SLC-mode, B: MLC-mode); `None` when the device does not say.
    pub life_used_a_pct: Option<u8>,
    pub life_used_b_pct: Option<u8>,
    /// Reserved blocks consumed: `normal`, `warning` (80 %) or `urgent` (90 %).
    pub pre_eol: Option<PreEol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreEol {
    Normal,
    Warning,
    Urgent,
}

/// Power and throttling state from the firmware (`get_throttled`) or the
/// `raspberrypi-hwmon` driver. Each flag is `None` when no source reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// The firmware's raw `get_throttled` word, when it is readable.
    pub throttled_flags: Option<u32>,
    /// Supply voltage too low now, and at any time since boot.
    pub under_voltage_now: Option<bool>,
    pub under_voltage_occurred: Option<bool>,
    /// ARM clock capped (heat or power), now and since boot.
    pub freq_capped_now: Option<bool>,
    pub freq_capped_occurred: Option<bool>,
    /// Throttled, now and since boot.
    pub throttled_now: Option<bool>,
    pub throttled_occurred: Option<bool>,
    /// The soft temperature limit (clock lowered before hard throttling), now and since
    /// boot.
    pub soft_temp_limit_now: Option<bool>,
    pub soft_temp_limit_occurred: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub interface: String,
    /// Rates are `None` on the first sample.
    pub rx_bytes_per_sec: Option<f64>,
    pub tx_bytes_per_sec: Option<f64>,
    pub rx_packets_per_sec: Option<f64>,
    pub tx_packets_per_sec: Option<f64>,
    /// Counters since boot.
    pub rx_errors_total: u64,
    pub tx_errors_total: u64,
    pub rx_dropped_total: u64,
    pub tx_dropped_total: u64,
    /// Byte and packet counters since boot behind the rates.
    #[serde(default)]
    pub rx_bytes_total: u64,
    #[serde(default)]
    pub tx_bytes_total: u64,
    #[serde(default)]
    pub rx_packets_total: u64,
    #[serde(default)]
    pub tx_packets_total: u64,
    /// Signal of a wireless interface (`/proc/net/wireless`); `None` for wired ones.
    #[serde(default)]
    pub wifi: Option<Wifi>,
}

/// A wireless interface's link as the driver reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Wifi {
    /// Driver-defined link quality (commonly out of 70).
    pub link_quality: u16,
    pub signal_dbm: i16,
    /// `None` when the driver does not measure noise.
    pub noise_dbm: Option<i16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// `thermal_zone0/cpu-thermal`, `hwmon1/coretemp/Core 0`, ...
    pub sensor: String,
    pub celsius: f32,
}

/// The agent's own footprint and internal figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSelf {
    pub rss_bytes: u64,
    pub cpu_secs: f64,
    /// Messages that could not be published (dropped while disconnected) since start.
    pub publish_dropped_total: u64,
    /// Tasks finished (any outcome) and rejected since start.
    pub tasks_finished_total: u64,
    pub tasks_rejected_total: u64,
    /// Task queue and workers now.
    pub tasks_queued: u32,
    pub tasks_running: u32,
    /// The task arena: capacity, in use now, the most ever in use, refused allocations.
    pub arena_capacity_bytes: u64,
    pub arena_used_bytes: u64,
    pub arena_high_water_bytes: u64,
    pub arena_refused_total: u64,
    /// Content cache of cacheable tasks.
    pub cache_hits_total: u64,
    pub cache_misses_total: u64,
    /// Store-and-forward: `live`, `backlogged`, `draining` or `offline`.
    #[serde(default)]
    pub forward_mode: String,
    /// Entries and bytes in the backlog now.
    #[serde(default)]
    pub backlog_entries: u64,
    #[serde(default)]
    pub backlog_bytes: u64,
    /// Entries the backlog budget (or a failing disk) forced out since start.
    #[serde(default)]
    pub backlog_dropped_total: u64,
    /// Entries replayed and acknowledged since start.
    #[serde(default)]
    pub backlog_replayed_total: u64,
    /// Published and not yet acknowledged by the broker now (bounded by the link's
    /// in-flight window; stays high only while the broker is slow to acknowledge).
    #[serde(default)]
    pub publish_unacked: u64,
    /// Subsystems that keep failing; empty when all is well.
    #[serde(default)]
    pub degraded: Vec<String>,
    /// Assignment lists refused since start: unsigned, forged, by an unknown key, for
    /// another node, or stale.
    #[serde(default)]
    pub assignments_refused_total: u64,
}
