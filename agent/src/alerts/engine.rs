//! The alert engine: each reading's resources in, through their tracks, and the
//! alerts out; resources that stopped being reported are forgotten.

use std::collections::BTreeMap;

use fog_proto::{Alert, AlertLevel, Reading, Trend};

use super::config::AlertsConfig;
use super::levels::{Kind, Level};
use super::message;
use super::track::{Holds, Track};
use super::{FORGET_AFTER_MS, MAX_RESOURCES};

/// The alert engine: one per agent, fed every reading.
///
/// ```
/// use fog_agent::alerts::{AlertEngine, AlertsConfig};
/// let mut engine = AlertEngine::new(AlertsConfig::default());
/// let mut reading = fog_proto::Reading::default();
/// reading.cpu.total_pct = Some(97.0);
/// let mut fired = Vec::new();
/// for i in 0..4 {
///     fired.extend(engine.evaluate(&reading, 1_000_000 + i * 10_000));
/// }
/// assert_eq!(fired.len(), 1);
/// assert_eq!(fired[0].level, fog_proto::AlertLevel::Critical);
/// ```
#[derive(Debug, Clone)]
pub struct AlertEngine {
    config: AlertsConfig,
    tracks: BTreeMap<String, Track>,
    /// Readings evaluated so far.
    tick: u64,
    prev_reading_ms: Option<u64>,
    untracked_total: u64,
}

impl AlertEngine {
    /// An engine for `config`, which should have passed [`AlertsConfig::validate`]
    /// (config.rs does that at load); out-of-range values do not panic, but their
    /// alerts make no sense.
    pub fn new(config: AlertsConfig) -> Self {
        AlertEngine {
            config,
            tracks: BTreeMap::new(),
            tick: 0,
            prev_reading_ms: None,
            untracked_total: 0,
        }
    }

    /// New thresholds (a config reload), keeping each resource's state: the next
    /// reading is judged by them, with the usual hysteresis.
    pub fn set_config(&mut self, config: AlertsConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Resources tracked now (at most [`MAX_RESOURCES`]).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Resource samples ignored since start because [`MAX_RESOURCES`] were tracked.
    pub fn untracked_total(&self) -> u64 {
        self.untracked_total
    }

    /// Judge one reading taken at `now_ms` (ms; normally `reading.at_ms`) and return
    /// the alerts it fires, in resource order: cpu, memory, disks, networks,
    /// temperatures, then forgotten resources. Usually empty.
    pub fn evaluate(&mut self, reading: &Reading, now_ms: u64) -> Vec<Alert> {
        let mut out = Vec::new();
        if !self.config.enabled {
            return out;
        }
        self.tick += 1;
        let mut observe = |name: String, kind: Kind, value: Option<f64>| {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                self.observe(name, kind, v, now_ms, &mut out);
            }
        };
        observe(
            "cpu".to_owned(),
            Kind::Cpu,
            reading.cpu.total_pct.map(f64::from),
        );
        observe(
            "memory".to_owned(),
            Kind::Memory,
            Some(f64::from(reading.memory.used_pct)),
        );
        for d in &reading.disks {
            observe(
                format!("disk:{}", d.mount),
                Kind::Disk,
                Some(f64::from(d.used_pct)),
            );
        }
        for n in &reading.networks {
            let rate = match (n.rx_bytes_per_sec, n.tx_bytes_per_sec) {
                (Some(rx), Some(tx)) => Some(rx.max(tx)),
                (rx, tx) => rx.or(tx),
            };
            observe(format!("network:{}", n.interface), Kind::Network, rate);
        }
        for t in &reading.temperatures {
            observe(
                format!("temperature:{}", t.sensor),
                Kind::Temperature,
                Some(f64::from(t.celsius)),
            );
        }
        self.forget(now_ms, &mut out);
        self.prev_reading_ms = Some(now_ms);
        out
    }

    /// One resource's sample: its track takes it, and a level change it brings is
    /// pushed to `out`.
    fn observe(&mut self, name: String, kind: Kind, v: f64, now: u64, out: &mut Vec<Alert>) {
        let Some(lines) = self.config.lines(kind) else {
            return;
        };
        let (tick, prev_reading_ms) = (self.tick, self.prev_reading_ms);
        let holds = Holds {
            hold_secs: self.config.hold_secs,
            clear_hold_secs: self.config.clear_hold_secs,
        };
        let Some(t) = self.track(&name, kind, v, now) else {
            return;
        };
        if t.last_tick == tick {
            // The same name twice in one reading (duplicate sensor names): first wins.
            return;
        }
        t.record(v, now, tick, prev_reading_ms, &lines);
        if let Some(to) = t.next_level(now, holds) {
            out.push(t.change_level(name, to, v, now, &lines));
        }
    }

    /// The track of `name`, started if it is new and there is room for it (else the
    /// sample is counted as untracked).
    fn track(&mut self, name: &str, kind: Kind, v: f64, now: u64) -> Option<&mut Track> {
        if !self.tracks.contains_key(name) {
            if self.tracks.len() >= MAX_RESOURCES {
                self.untracked_total += 1;
                return None;
            }
            let track = Track::new(kind, v, now, self.config.trend_window);
            self.tracks.insert(name.to_owned(), track);
        }
        self.tracks.get_mut(name)
    }

    /// Drop resources missing from readings for [`FORGET_AFTER_MS`]; a raised one
    /// gets a last `Cleared` saying it is no longer reported.
    fn forget(&mut self, now: u64, out: &mut Vec<Alert>) {
        let tick = self.tick;
        let config = &self.config;
        self.tracks.retain(|name, t| {
            if t.last_tick == tick {
                return true;
            }
            t.last_seen_ms = t.last_seen_ms.min(now);
            let gone = now - t.last_seen_ms;
            if gone < FORGET_AFTER_MS {
                return true;
            }
            if let (true, Some(lines)) = (t.level > Level::Normal, config.lines(t.kind)) {
                out.push(Alert {
                    at_ms: now,
                    resource: name.clone(),
                    level: AlertLevel::Cleared,
                    value: t.last_value,
                    threshold: lines.warn_clear,
                    trend: Trend::Steady,
                    message: message::withdrawn(name, gone, t.level, t.last_value, lines.unit),
                });
            }
            false
        });
    }
}
