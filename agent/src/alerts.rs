//! Threshold alerts: turns readings into [`Alert`]s for `nodes/{node}/alerts`.
//!
//! Pure and deterministic: no I/O, no runtime, no clock. The caller hands in every
//! [`Reading`] with the time it stands for (`now_ms`, normally `reading.at_ms`) and
//! publishes what comes back. Same readings and times in, same alerts out.
//!
//! Each resource (`cpu`, `memory`, `disk:{mount}`, `network:{interface}`,
//! `temperature:{sensor}`) is judged on its own, with three levels: normal, warning
//! and critical. The rules:
//!
//! * **Hold.** A level fires only when its threshold has been exceeded on consecutive
//!   readings for `hold_secs`. A reading stands for the time since the previous reading
//!   (CPU % is literally the share since then), so at 10 s readings and the default
//!   30 s hold, the third reading above in a row fires. A resource's first reading,
//!   or its first after it was missing from a reading, earns no such credit.
//!   Jumping straight past critical fires critical alone.
//! * **Hysteresis.** A raised level has a clear line below its threshold:
//!   `threshold x (1 - hysteresis_pct / 100)`, one relative rule for every resource
//!   (cpu warning 80 %, hysteresis 5 -> 76 %; temperature warning 70 °C -> 66.5 °C;
//!   network 10 MB/s -> 9.5 MB/s). Values between the clear line and the threshold
//!   keep the level, so a value hovering at a threshold cannot flap.
//! * **Clear hold.** A level is lowered only once the value has stayed below its clear
//!   line on consecutive readings for `clear_hold_secs`: critical to warning fires a
//!   `Warning`; below the warning clear line fires one `Cleared` (also straight from
//!   critical).
//! * **Trend.** Every alert carries the sign of the least-squares slope over the last
//!   `trend_window` readings of the resource; a fitted change across the window of
//!   less than `trend_deadband_pct` % of the resource's lowest threshold is `Steady`.
//! * **Bounds.** At most [`MAX_RESOURCES`] resources are tracked (extra ones are
//!   counted in [`AlertEngine::untracked_total`]); each keeps a fixed ring of at most
//!   [`MAX_TREND_WINDOW`] samples. A resource missing from readings for
//!   [`FORGET_AFTER_MS`] (an unplugged interface, an unmounted disk) is forgotten; if
//!   it was raised, a `Cleared` alert says it is no longer reported.
//!
//! A threshold of 0 turns that level off; network thresholds are off by default. With
//! only one level on, the resource goes straight between normal and that level.

use std::collections::BTreeMap;

use fog_proto::{Alert, AlertLevel, Reading, Trend};
use serde::Deserialize;

/// Most resources tracked at once.
pub const MAX_RESOURCES: usize = 64;
/// Largest `trend_window`.
pub const MAX_TREND_WINDOW: usize = 64;
/// A resource missing from readings this long (ms) is forgotten.
pub const FORGET_AFTER_MS: u64 = 5 * 60 * 1000;
/// Largest `hold_secs` and `clear_hold_secs` (a day).
pub const MAX_HOLD_SECS: u64 = 86_400;

/// The `[alerts]` section. config.rs merges the file over `default.toml`, so every
/// field is present when this is deserialized; [`AlertsConfig::default`] equals the
/// defaults in `default.toml` (a test checks it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Judge readings and publish alerts at all.
    pub enabled: bool,
    /// Seconds a threshold must be exceeded on consecutive readings before its level
    /// fires (0: on the first reading above).
    pub hold_secs: u64,
    /// Seconds a value must stay below a level's clear line on consecutive readings
    /// before the level is lowered (a `Warning` from critical, or one `Cleared`).
    pub clear_hold_secs: u64,
    /// The clear line of a level is its threshold minus this percent of the threshold,
    /// for every resource (0 to 50).
    pub hysteresis_pct: f64,
    /// Readings per resource in the trend's least-squares fit (2 to 64).
    pub trend_window: usize,
    /// The trend is `Steady` while the fitted change across the window stays within
    /// this percent of the resource's lowest threshold (0 to 100).
    pub trend_deadband_pct: f64,
    /// Total CPU busy, percent.
    pub cpu: PctThresholds,
    /// Memory used, percent.
    pub memory: PctThresholds,
    /// Space used, percent, for each mount on its own.
    pub disk: PctThresholds,
    /// Each temperature sensor on its own, degrees Celsius.
    pub temperature: TemperatureThresholds,
    /// Each interface on its own, the busier direction (rx or tx), bytes per second.
    pub network: NetworkThresholds,
}

/// Thresholds of a percent resource; 0 turns a level off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PctThresholds {
    /// Warning above this percent (0 to 100, below `critical_pct`).
    pub warning_pct: f64,
    /// Critical above this percent (0 to 100).
    pub critical_pct: f64,
}

/// Temperature thresholds; 0 turns a level off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureThresholds {
    /// Warning above this many degrees Celsius (0 to 200, below `critical_celsius`).
    pub warning_celsius: f64,
    /// Critical above this many degrees Celsius (0 to 200).
    pub critical_celsius: f64,
}

/// Network rate thresholds; 0 turns a level off (both are off by default).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkThresholds {
    /// Warning above this many bytes per second in either direction.
    pub warning_bytes_per_sec: f64,
    /// Critical above this many bytes per second in either direction.
    pub critical_bytes_per_sec: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            hold_secs: 30,
            clear_hold_secs: 30,
            hysteresis_pct: 5.0,
            trend_window: 6,
            trend_deadband_pct: 5.0,
            cpu: PctThresholds {
                warning_pct: 80.0,
                critical_pct: 95.0,
            },
            memory: PctThresholds {
                warning_pct: 85.0,
                critical_pct: 95.0,
            },
            disk: PctThresholds {
                warning_pct: 85.0,
                critical_pct: 95.0,
            },
            temperature: TemperatureThresholds {
                warning_celsius: 70.0,
                critical_celsius: 80.0,
            },
            network: NetworkThresholds {
                warning_bytes_per_sec: 0.0,
                critical_bytes_per_sec: 0.0,
            },
        }
    }
}

/// A refused `[alerts]` value: the full key (`alerts.cpu.warning_pct`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAlerts {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for InvalidAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for InvalidAlerts {}

fn bad(key: &'static str, message: String) -> InvalidAlerts {
    InvalidAlerts { key, message }
}

/// One pair of thresholds: keys, allowed range and unit for messages.
fn check_pair(
    (wkey, w): (&'static str, f64),
    (ckey, c): (&'static str, f64),
    max: f64,
    unit: &str,
) -> Result<(), InvalidAlerts> {
    for (key, v) in [(wkey, w), (ckey, c)] {
        if !v.is_finite() || v < 0.0 || v > max {
            return Err(bad(
                key,
                format!("{v} is out of range; expected 0 (off) to {max}{unit}"),
            ));
        }
    }
    if w > 0.0 && c > 0.0 && w >= c {
        return Err(bad(
            ckey,
            format!(
                "{c} must be above {wkey} ({w}); set {wkey} = 0 to have only the critical level"
            ),
        ));
    }
    Ok(())
}

impl AlertsConfig {
    /// Check every value; the error names the key (`alerts.cpu.critical_pct`).
    pub fn validate(&self) -> Result<(), InvalidAlerts> {
        for (key, secs) in [
            ("alerts.hold_secs", self.hold_secs),
            ("alerts.clear_hold_secs", self.clear_hold_secs),
        ] {
            if secs > MAX_HOLD_SECS {
                return Err(bad(
                    key,
                    format!("{secs} is out of range; expected 0 to {MAX_HOLD_SECS} seconds"),
                ));
            }
        }
        let h = self.hysteresis_pct;
        if !h.is_finite() || !(0.0..=50.0).contains(&h) {
            return Err(bad(
                "alerts.hysteresis_pct",
                format!("{h} is out of range; expected 0 to 50 (percent of the threshold)"),
            ));
        }
        if !(2..=MAX_TREND_WINDOW).contains(&self.trend_window) {
            return Err(bad(
                "alerts.trend_window",
                format!(
                    "{} is out of range; expected 2 to {MAX_TREND_WINDOW} readings (a slope needs two)",
                    self.trend_window
                ),
            ));
        }
        let d = self.trend_deadband_pct;
        if !d.is_finite() || !(0.0..=100.0).contains(&d) {
            return Err(bad(
                "alerts.trend_deadband_pct",
                format!("{d} is out of range; expected 0 to 100 (percent of the threshold)"),
            ));
        }
        for (section, t) in [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("disk", &self.disk),
        ] {
            let (wkey, ckey) = match section {
                "cpu" => ("alerts.cpu.warning_pct", "alerts.cpu.critical_pct"),
                "memory" => ("alerts.memory.warning_pct", "alerts.memory.critical_pct"),
                _ => ("alerts.disk.warning_pct", "alerts.disk.critical_pct"),
            };
            check_pair((wkey, t.warning_pct), (ckey, t.critical_pct), 100.0, " %")?;
        }
        check_pair(
            (
                "alerts.temperature.warning_celsius",
                self.temperature.warning_celsius,
            ),
            (
                "alerts.temperature.critical_celsius",
                self.temperature.critical_celsius,
            ),
            200.0,
            " °C",
        )?;
        check_pair(
            (
                "alerts.network.warning_bytes_per_sec",
                self.network.warning_bytes_per_sec,
            ),
            (
                "alerts.network.critical_bytes_per_sec",
                self.network.critical_bytes_per_sec,
            ),
            1e12,
            " bytes/s",
        )?;
        Ok(())
    }

    fn thresholds(&self, kind: Kind) -> (f64, f64) {
        match kind {
            Kind::Cpu => (self.cpu.warning_pct, self.cpu.critical_pct),
            Kind::Memory => (self.memory.warning_pct, self.memory.critical_pct),
            Kind::Disk => (self.disk.warning_pct, self.disk.critical_pct),
            Kind::Temperature => (
                self.temperature.warning_celsius,
                self.temperature.critical_celsius,
            ),
            Kind::Network => (
                self.network.warning_bytes_per_sec,
                self.network.critical_bytes_per_sec,
            ),
        }
    }

    /// The lines of a resource kind; `None` when both levels are off.
    fn lines(&self, kind: Kind) -> Option<Lines> {
        let (w, c) = self.thresholds(kind);
        let on = |x: f64| (x > 0.0).then_some(x);
        let (warn, crit) = match (on(w), on(c)) {
            (None, None) => return None,
            // With one level off, the other stands for both: they fire and clear together,
            // and the higher (or only real) one is what fires.
            (Some(w), None) => (w, f64::INFINITY),
            (None, Some(c)) => (c, c),
            (Some(w), Some(c)) => (w, c),
        };
        let keep = 1.0 - self.hysteresis_pct / 100.0;
        Some(Lines {
            warn,
            crit,
            warn_clear: warn * keep,
            crit_clear: crit * keep,
            deadband: warn * self.trend_deadband_pct / 100.0,
            unit: kind.unit(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Memory,
    Disk,
    Network,
    Temperature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Pct,
    Celsius,
    BytesPerSec,
}

impl Kind {
    fn unit(self) -> Unit {
        match self {
            Kind::Cpu | Kind::Memory | Kind::Disk => Unit::Pct,
            Kind::Temperature => Unit::Celsius,
            Kind::Network => Unit::BytesPerSec,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lines {
    warn: f64,
    crit: f64,
    warn_clear: f64,
    crit_clear: f64,
    deadband: f64,
    unit: Unit,
}

/// Normal < Warning < Critical; indexes 1 and 2 are the raised levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Normal = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    fn wire(self) -> AlertLevel {
        match self {
            Level::Normal => AlertLevel::Cleared,
            Level::Warning => AlertLevel::Warning,
            Level::Critical => AlertLevel::Critical,
        }
    }

    /// Slot of a raised level in [`Track::above`].
    fn slot(self) -> usize {
        self as usize - 1
    }
}

const RAISED: [Level; 2] = [Level::Warning, Level::Critical];

impl Lines {
    fn threshold(&self, l: Level) -> f64 {
        match l {
            Level::Normal => 0.0,
            Level::Warning => self.warn,
            Level::Critical => self.crit,
        }
    }

    fn clear_line(&self, l: Level) -> f64 {
        match l {
            Level::Normal => 0.0,
            Level::Warning => self.warn_clear,
            Level::Critical => self.crit_clear,
        }
    }

    /// Whether `v` counts as at level `l` or above, given the current level: levels
    /// already raised hold down to their clear line, others need their threshold
    /// exceeded. (The clear line is below the threshold, so this never flips when the
    /// current level changes.)
    fn at_or_above(&self, v: f64, l: Level, current: Level) -> bool {
        if l <= current {
            v >= self.clear_line(l)
        } else {
            v > self.threshold(l)
        }
    }
}

/// The last few samples of one resource, in a ring allocated once.
#[derive(Debug, Clone)]
struct Ring {
    /// (time ms, value); at most `cap` entries.
    buf: Vec<(u64, f64)>,
    next: usize,
    cap: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        let cap = cap.clamp(2, MAX_TREND_WINDOW);
        Ring {
            buf: Vec::with_capacity(cap),
            next: 0,
            cap,
        }
    }

    fn push(&mut self, t: u64, v: f64) {
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
fn trend(points: &[(u64, f64)], deadband: f64) -> Trend {
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

fn trend_word(t: Trend) -> &'static str {
    match t {
        Trend::Rising => "rising",
        Trend::Falling => "falling",
        Trend::Steady => "steady",
    }
}

/// State of one resource: a few numbers and the ring.
#[derive(Debug, Clone)]
struct Track {
    kind: Kind,
    level: Level,
    /// When the current episode's first alert fired (for the cleared message).
    raised_at_ms: u64,
    /// Whether the value counts as at-or-above warning, critical.
    above: [bool; 2],
    /// Since when each of `above` has had its value, on consecutive readings.
    since_ms: [u64; 2],
    last_seen_ms: u64,
    /// [`AlertEngine`] reading count when last seen.
    last_tick: u64,
    last_value: f64,
    ring: Ring,
}

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

    fn observe(&mut self, name: String, kind: Kind, v: f64, now: u64, out: &mut Vec<Alert>) {
        let Some(lines) = self.config.lines(kind) else {
            return;
        };
        let tick = self.tick;
        if !self.tracks.contains_key(&name) {
            if self.tracks.len() >= MAX_RESOURCES {
                self.untracked_total += 1;
                return;
            }
            let track = Track {
                kind,
                level: Level::Normal,
                raised_at_ms: now,
                above: [false; 2],
                since_ms: [now; 2],
                last_seen_ms: now,
                last_tick: 0,
                last_value: v,
                ring: Ring::new(self.config.trend_window),
            };
            self.tracks.insert(name.clone(), track);
        }
        let Some(t) = self.tracks.get_mut(&name) else {
            return;
        };
        if t.last_tick == tick {
            // The same name twice in one reading (duplicate sensor names): first wins.
            return;
        }
        // The reading stands for the time since the previous reading if this resource
        // was in it (at most FORGET_AFTER_MS); otherwise consecutive readings start over.
        let span_start = match self.prev_reading_ms {
            Some(p) if t.last_tick + 1 == tick && p <= now => {
                p.max(now.saturating_sub(FORGET_AFTER_MS))
            }
            _ => {
                t.since_ms = [now; 2];
                now
            }
        };
        for l in RAISED {
            let s = l.slot();
            let above = lines.at_or_above(v, l, t.level);
            if above != t.above[s] {
                t.above[s] = above;
                t.since_ms[s] = span_start;
            }
            // After a clock that went back, count from now.
            t.since_ms[s] = t.since_ms[s].min(now);
        }
        t.last_seen_ms = now;
        t.last_tick = tick;
        t.last_value = v;
        t.ring.push(now, v);

        let held = |t: &Track, l: Level, hold_secs: u64| {
            now - t.since_ms[l.slot()] >= hold_secs.saturating_mul(1000)
        };
        // Escalate to the highest level held long enough; otherwise lower to the lowest
        // level whose next one up has been left long enough.
        let (hold, clear_hold) = (self.config.hold_secs, self.config.clear_hold_secs);
        let up = RAISED
            .into_iter()
            .rev()
            .find(|&l| l > t.level && t.above[l.slot()] && held(t, l, hold));
        let to = up.or_else(|| {
            [Level::Normal, Level::Warning]
                .into_iter()
                .filter(|&to| to < t.level)
                .find(|&to| {
                    let left = RAISED[to as usize];
                    !t.above[left.slot()] && held(t, left, clear_hold)
                })
        });
        let Some(to) = to else {
            return;
        };
        let from = t.level;
        let trend = trend(&t.ring.buf, lines.deadband);
        let u = lines.unit;
        let (threshold, message) = if to > from {
            if from == Level::Normal {
                t.raised_at_ms = now;
            }
            let thr = lines.threshold(to);
            let message = format!(
                "{name} at {} is above the {} level {} ({})",
                fmt_value(v, u),
                to.name(),
                fmt_threshold(thr, u),
                trend_word(trend)
            );
            (thr, message)
        } else if to == Level::Warning {
            let message = format!(
                "{name} down to {} (below {}), back from critical to the warning level {} ({})",
                fmt_value(v, u),
                fmt_value(lines.crit_clear, u),
                fmt_threshold(lines.warn, u),
                trend_word(trend)
            );
            (lines.warn, message)
        } else {
            let message = format!(
                "{name} back to normal: {} (below {}) after {} at {}",
                fmt_value(v, u),
                fmt_value(lines.warn_clear, u),
                fmt_duration(now.saturating_sub(t.raised_at_ms)),
                from.name()
            );
            (lines.warn_clear, message)
        };
        t.level = to;
        out.push(Alert {
            at_ms: now,
            resource: name,
            level: to.wire(),
            value: v,
            threshold,
            trend,
            message,
        });
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
                    message: format!(
                        "{name} no longer reported for {}; its {} (last {}) is withdrawn",
                        fmt_duration(gone),
                        t.level.name(),
                        fmt_value(t.last_value, lines.unit)
                    ),
                });
            }
            false
        });
    }
}

/// `96.3 %`, `71.5 °C`, `12.5 MB/s`.
fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Pct => format!("{v:.1} %"),
        Unit::Celsius => format!("{v:.1} °C"),
        Unit::BytesPerSec => fmt_rate(v),
    }
}

/// `95 %`, `70 °C`, `10 MB/s`: configured numbers without needless decimals.
fn fmt_threshold(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Pct => format!("{} %", trim(v, 2)),
        Unit::Celsius => format!("{} °C", trim(v, 2)),
        Unit::BytesPerSec => fmt_rate(v),
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Decimal (SI) units, as link speeds are quoted.
fn fmt_rate(v: f64) -> String {
    let (div, unit) = if v >= 1e9 {
        (1e9, "GB/s")
    } else if v >= 1e6 {
        (1e6, "MB/s")
    } else if v >= 1e3 {
        (1e3, "kB/s")
    } else {
        (1.0, "B/s")
    };
    format!("{} {unit}", trim(v / div, 1))
}

/// `45s`, `3m20s`, `2h5m`, `3d4h`.
fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::{Disk, Network, Temperature};
    use proptest::prelude::*;

    const T0: u64 = 1_790_000_000_000;
    const STEP: u64 = 10_000;

    fn cpu(v: f32) -> Reading {
        let mut r = Reading::default();
        r.cpu.total_pct = Some(v);
        r
    }

    /// Feed `values` as cpu readings every 10 s from `start`; the alerts with the
    /// index of the reading that fired them.
    fn feed(e: &mut AlertEngine, start: u64, values: &[f32]) -> Vec<(usize, Alert)> {
        let mut out = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            for a in e.evaluate(&cpu(v), start + i as u64 * STEP) {
                out.push((i, a));
            }
        }
        out
    }

    fn levels(alerts: &[(usize, Alert)]) -> Vec<AlertLevel> {
        alerts.iter().map(|(_, a)| a.level).collect()
    }

    #[test]
    fn defaults_fire_warning_on_the_third_reading_above() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let got = feed(&mut e, T0, &[50.0, 50.0, 85.0, 85.0, 85.0, 85.0, 85.0]);
        assert_eq!(got.len(), 1, "{got:?}");
        let (i, a) = &got[0];
        assert_eq!(*i, 4, "the third reading above (30 s) fires");
        assert_eq!(a.level, AlertLevel::Warning);
        assert_eq!(a.resource, "cpu");
        assert_eq!(a.threshold, 80.0);
        assert_eq!(a.value, 85.0);
        assert_eq!(a.at_ms, T0 + 4 * STEP);
        assert_eq!(a.trend, Trend::Rising);
        assert_eq!(
            a.message,
            "cpu at 85.0 % is above the warning level 80 % (rising)"
        );
    }

    #[test]
    fn two_readings_above_are_not_enough_and_first_sample_gets_no_credit() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        assert!(feed(&mut e, T0, &[50.0, 85.0, 85.0, 50.0, 85.0, 85.0, 50.0]).is_empty());
        // A resource's very first reading stands for nothing before it: 4 readings.
        let mut e = AlertEngine::new(AlertsConfig::default());
        let got = feed(&mut e, T0, &[99.0, 99.0, 99.0, 99.0]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 3);
    }

    #[test]
    fn straight_to_critical_fires_critical_alone_with_a_human_message() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let got = feed(&mut e, T0, &[40.0, 96.3, 96.3, 96.3, 96.3]);
        assert_eq!(levels(&got), [AlertLevel::Critical]);
        assert_eq!(
            got[0].1.message,
            "cpu at 96.3 % is above the critical level 95 % (rising)"
        );
        assert_eq!(got[0].1.threshold, 95.0);
    }

    #[test]
    fn memory_disk_and_temperature_use_their_own_defaults_and_names() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let mut r = Reading::default();
        r.memory.used_pct = 86.0; // warning at 85
        r.disks = vec![
            Disk {
                mount: "/".into(),
                used_pct: 96.0,
                ..Disk::default()
            },
            Disk {
                mount: "/data".into(),
                used_pct: 50.0,
                ..Disk::default()
            },
        ];
        r.temperatures = vec![Temperature {
            sensor: "cpu-thermal".into(),
            celsius: 72.5,
        }];
        let mut got = Vec::new();
        for i in 0..4 {
            got.extend(e.evaluate(&r, T0 + i * STEP));
        }
        let summary: Vec<(&str, AlertLevel)> =
            got.iter().map(|a| (a.resource.as_str(), a.level)).collect();
        assert_eq!(
            summary,
            [
                ("memory", AlertLevel::Warning),
                ("disk:/", AlertLevel::Critical),
                ("temperature:cpu-thermal", AlertLevel::Warning),
            ]
        );
        assert_eq!(
            got[2].message,
            "temperature:cpu-thermal at 72.5 °C is above the warning level 70 °C (steady)"
        );
        assert_eq!(
            e.tracked(),
            4,
            "cpu None is not tracked; memory, 2 disks, 1 sensor"
        );
    }

    #[test]
    fn hovering_at_the_line_does_not_flap() {
        let hover: Vec<f32> = (0..200)
            .map(|i| if i % 2 == 0 { 79.9 } else { 80.1 })
            .collect();
        let mut e = AlertEngine::new(AlertsConfig::default());
        let got = feed(&mut e, T0, &hover);
        assert!(got.len() <= 1, "{got:?}");
        // Even with the level raised, hovering neither clears nor re-fires.
        let mut e = AlertEngine::new(AlertsConfig::default());
        let mut values = vec![85.0; 5];
        values.extend(&hover);
        values.extend((0..200).map(|i| if i % 2 == 0 { 75.9 } else { 76.1 }));
        let got = feed(&mut e, T0, &values);
        assert_eq!(levels(&got), [AlertLevel::Warning], "{got:?}");
        // Same at the critical line once critical.
        let mut e = AlertEngine::new(AlertsConfig::default());
        let mut values = vec![99.0; 5];
        values.extend((0..200).map(|i| if i % 2 == 0 { 94.9 } else { 95.1 }));
        let got = feed(&mut e, T0, &values);
        assert_eq!(levels(&got), [AlertLevel::Critical], "{got:?}");
    }

    #[test]
    fn clears_only_below_the_hysteresis_line_for_the_clear_hold() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        // 50, then 85 x3: warning at t=30 s (index 3).
        let mut values = vec![50.0, 85.0, 85.0, 85.0];
        // Below the threshold but above the clear line (76): still warning, to t=200 s.
        values.extend([78.0; 17]);
        // Below 76: the third reading (30 s) clears, at t=230 s.
        values.extend([42.0; 5]);
        let got = feed(&mut e, T0, &values);
        assert_eq!(levels(&got), [AlertLevel::Warning, AlertLevel::Cleared]);
        let (i, c) = &got[1];
        assert_eq!(*i, 23);
        assert_eq!(got[0].0, 3);
        assert_eq!(c.threshold, 76.0);
        assert_eq!(c.value, 42.0);
        assert_eq!(c.trend, Trend::Falling);
        assert_eq!(
            c.message,
            "cpu back to normal: 42.0 % (below 76.0 %) after 3m20s at warning"
        );
        // Two readings below and back up is not a clear.
        let mut e = AlertEngine::new(AlertsConfig::default());
        let got = feed(
            &mut e,
            T0,
            &[50.0, 85.0, 85.0, 85.0, 42.0, 42.0, 85.0, 42.0, 42.0],
        );
        assert_eq!(levels(&got), [AlertLevel::Warning]);
    }

    #[test]
    fn escalates_and_de_escalates_through_the_levels() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let values = [
            50.0, 85.0, 85.0, 85.0, // warning
            97.0, 97.0, 97.0, // critical
            92.0, 92.0, 92.0, // under 95 but not under 90.25: still critical
            88.0, 88.0, 88.0, // under 90.25 for 30 s: back to warning
            60.0, 60.0, 60.0, // cleared
        ];
        let got = feed(&mut e, T0, &values);
        assert_eq!(
            levels(&got),
            [
                AlertLevel::Warning,
                AlertLevel::Critical,
                AlertLevel::Warning,
                AlertLevel::Cleared
            ],
            "{got:?}"
        );
        let idx: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [3, 6, 12, 15]);
        let down = &got[2].1;
        assert_eq!(down.threshold, 80.0);
        assert_eq!(
            down.message,
            "cpu down to 88.0 % (below 90.2 %), back from critical to the warning level 80 % (falling)"
        );
        assert!(
            got[3].1.message.ends_with("after 2m0s at warning"),
            "{}",
            got[3].1.message
        );
        // From critical, a value that falls below the warning clear line clears at once.
        let mut e = AlertEngine::new(AlertsConfig::default());
        let got = feed(&mut e, T0, &[50.0, 99.0, 99.0, 99.0, 10.0, 10.0, 10.0]);
        assert_eq!(levels(&got), [AlertLevel::Critical, AlertLevel::Cleared]);
        assert!(got[1].1.message.ends_with("after 30s at critical"));
    }

    #[test]
    fn a_gap_in_the_series_restarts_the_hold() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let mut r = cpu(90.0);
        let mut got = Vec::new();
        got.extend(e.evaluate(&r, T0));
        got.extend(e.evaluate(&r, T0 + STEP));
        r.cpu.total_pct = None; // e.g. a skipped sample
        got.extend(e.evaluate(&r, T0 + 2 * STEP));
        r.cpu.total_pct = Some(90.0);
        got.extend(e.evaluate(&r, T0 + 3 * STEP));
        got.extend(e.evaluate(&r, T0 + 4 * STEP));
        got.extend(e.evaluate(&r, T0 + 5 * STEP));
        assert!(got.is_empty(), "not continuous: {got:?}");
        got.extend(e.evaluate(&r, T0 + 6 * STEP));
        assert_eq!(got.len(), 1);
    }

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

    fn disks(mounts: &[(&str, f32)]) -> Reading {
        let mut r = cpu(10.0);
        r.disks = mounts
            .iter()
            .map(|&(m, p)| Disk {
                mount: m.into(),
                used_pct: p,
                ..Disk::default()
            })
            .collect();
        r
    }

    #[test]
    fn disks_alert_per_mount_and_a_vanished_mount_is_forgotten() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let both = disks(&[("/", 50.0), ("/mnt/usb", 90.0)]);
        let mut got = Vec::new();
        for i in 0..4 {
            got.extend(e.evaluate(&both, T0 + i * STEP));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].resource, "disk:/mnt/usb");
        assert_eq!(got[0].level, AlertLevel::Warning);
        assert_eq!(e.tracked(), 4); // cpu, memory, two disks
                                    // Unplugged: kept for a while (it may come back), then forgotten with a
                                    // Cleared saying why.
        let root = disks(&[("/", 50.0)]);
        let gone_at = T0 + 4 * STEP;
        let mut t = gone_at;
        let mut got = Vec::new();
        while t < gone_at + FORGET_AFTER_MS + 2 * STEP {
            got.extend(e.evaluate(&root, t));
            t += STEP;
        }
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].resource, "disk:/mnt/usb");
        assert_eq!(got[0].level, AlertLevel::Cleared);
        assert_eq!(
            got[0].message,
            "disk:/mnt/usb no longer reported for 5m0s; its warning (last 90.0 %) is withdrawn"
        );
        assert_eq!(e.tracked(), 3);
        // Back again: a fresh start, needing the full hold.
        let mut got = Vec::new();
        for i in 0..3 {
            got.extend(e.evaluate(&both, t + i * STEP));
        }
        assert!(got.is_empty());
        got.extend(e.evaluate(&both, t + 3 * STEP));
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn a_resource_back_before_it_is_forgotten_keeps_its_level() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let both = disks(&[("/", 50.0), ("/mnt/usb", 90.0)]);
        let root = disks(&[("/", 50.0)]);
        let mut got = Vec::new();
        for i in 0..4 {
            got.extend(e.evaluate(&both, T0 + i * STEP));
        }
        for i in 4..10 {
            got.extend(e.evaluate(&root, T0 + i * STEP));
        }
        for i in 10..20 {
            got.extend(e.evaluate(&both, T0 + i * STEP));
        }
        assert_eq!(
            levels(&got.into_iter().map(|a| (0, a)).collect::<Vec<_>>()),
            [AlertLevel::Warning]
        );
    }

    #[test]
    fn tracked_resources_are_capped() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let names: Vec<String> = (0..100).map(|i| format!("/m{i}")).collect();
        let mounts: Vec<(&str, f32)> = names.iter().map(|n| (n.as_str(), 99.0)).collect();
        let r = disks(&mounts);
        let mut got = Vec::new();
        for i in 0..4 {
            got.extend(e.evaluate(&r, T0 + i * STEP));
        }
        assert_eq!(e.tracked(), MAX_RESOURCES);
        assert_eq!(
            got.len(),
            MAX_RESOURCES - 2,
            "cpu and memory come first and stay normal"
        );
        assert_eq!(e.untracked_total(), 4 * (100 - (MAX_RESOURCES as u64 - 2)));
    }

    #[test]
    fn network_is_off_by_default_and_uses_the_busier_direction() {
        let mut r = cpu(10.0);
        r.networks = vec![Network {
            interface: "eth0".into(),
            rx_bytes_per_sec: Some(1_000.0),
            tx_bytes_per_sec: Some(12_500_000.0),
            ..Network::default()
        }];
        let mut e = AlertEngine::new(AlertsConfig::default());
        for i in 0..10 {
            assert!(e.evaluate(&r, T0 + i * STEP).is_empty());
        }
        assert_eq!(e.tracked(), 2, "no thresholds, not tracked");
        let mut config = AlertsConfig::default();
        config.network.critical_bytes_per_sec = 10_000_000.0;
        let mut e = AlertEngine::new(config);
        let mut got = Vec::new();
        for i in 0..4 {
            got.extend(e.evaluate(&r, T0 + i * STEP));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].resource, "network:eth0");
        assert_eq!(got[0].level, AlertLevel::Critical);
        assert_eq!(
            got[0].message,
            "network:eth0 at 12.5 MB/s is above the critical level 10 MB/s (steady)"
        );
        // Only critical is on, so it clears straight to normal below 9.5 MB/s.
        r.networks[0].tx_bytes_per_sec = Some(9_000_000.0);
        let mut got = Vec::new();
        for i in 4..8 {
            got.extend(e.evaluate(&r, T0 + i * STEP));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].level, AlertLevel::Cleared);
        assert!(
            got[0]
                .message
                .starts_with("network:eth0 back to normal: 9 MB/s (below 9.5 MB/s)"),
            "{}",
            got[0].message
        );
    }

    #[test]
    fn none_and_disabled_produce_nothing() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let r = Reading::default(); // cpu None, memory 0
        for i in 0..10 {
            assert!(e.evaluate(&r, T0 + i * STEP).is_empty());
        }
        assert_eq!(e.tracked(), 1, "memory only");
        let mut e = AlertEngine::new(AlertsConfig {
            enabled: false,
            ..AlertsConfig::default()
        });
        assert!(feed(&mut e, T0, &[99.0; 20]).is_empty());
        assert_eq!(e.tracked(), 0);
        let mut e = AlertEngine::new(AlertsConfig::default());
        assert!(feed(&mut e, T0, &[f32::NAN; 20]).is_empty());
    }

    #[test]
    fn a_clock_that_jumps_back_delays_but_does_not_break() {
        let mut e = AlertEngine::new(AlertsConfig::default());
        let mut got = feed(&mut e, T0, &[90.0, 90.0]);
        got.extend(feed(&mut e, T0 - 3_600_000, &[90.0; 5]));
        assert_eq!(levels(&got), [AlertLevel::Warning]);
    }

    fn config_err(f: impl FnOnce(&mut AlertsConfig)) -> InvalidAlerts {
        let mut c = AlertsConfig::default();
        f(&mut c);
        c.validate().expect_err("should be refused")
    }

    #[test]
    fn validation_names_the_key() {
        AlertsConfig::default()
            .validate()
            .expect("defaults are valid");
        let e = config_err(|c| c.cpu.warning_pct = 96.0);
        assert_eq!(e.key, "alerts.cpu.critical_pct");
        assert!(
            e.message
                .contains("must be above alerts.cpu.warning_pct (96)"),
            "{e}"
        );
        let e = config_err(|c| c.memory.critical_pct = 120.0);
        assert_eq!(e.key, "alerts.memory.critical_pct");
        assert!(e.message.contains("0 (off) to 100 %"), "{e}");
        let e = config_err(|c| c.disk.warning_pct = f64::NAN);
        assert_eq!(e.key, "alerts.disk.warning_pct");
        let e = config_err(|c| c.temperature.warning_celsius = 80.0);
        assert_eq!(e.key, "alerts.temperature.critical_celsius");
        let e = config_err(|c| c.network.warning_bytes_per_sec = -1.0);
        assert_eq!(e.key, "alerts.network.warning_bytes_per_sec");
        let e = config_err(|c| {
            c.network.warning_bytes_per_sec = 2e6;
            c.network.critical_bytes_per_sec = 1e6;
        });
        assert_eq!(e.key, "alerts.network.critical_bytes_per_sec");
        let e = config_err(|c| c.hysteresis_pct = 60.0);
        assert_eq!(e.key, "alerts.hysteresis_pct");
        assert!(e.message.contains("expected 0 to 50"), "{e}");
        let e = config_err(|c| c.trend_window = 1);
        assert_eq!(e.key, "alerts.trend_window");
        assert!(e.message.contains("a slope needs two"), "{e}");
        assert_eq!(
            config_err(|c| c.trend_window = 65).key,
            "alerts.trend_window"
        );
        assert_eq!(
            config_err(|c| c.hold_secs = 100_000).key,
            "alerts.hold_secs"
        );
        assert_eq!(
            config_err(|c| c.trend_deadband_pct = -1.0).key,
            "alerts.trend_deadband_pct"
        );
        // One level off is fine, whatever the other.
        let mut c = AlertsConfig::default();
        c.cpu.warning_pct = 0.0;
        c.network.warning_bytes_per_sec = 5e6;
        c.validate().expect("valid");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_duration(200_000), "3m20s");
        assert_eq!(fmt_duration(59_999), "59s");
        assert_eq!(fmt_duration(7_500_000), "2h5m");
        assert_eq!(fmt_duration(3 * 86_400_000 + 3_600_000), "3d1h");
        assert_eq!(fmt_threshold(95.0, Unit::Pct), "95 %");
        assert_eq!(fmt_threshold(90.25, Unit::Pct), "90.25 %");
        assert_eq!(fmt_rate(950.0), "950 B/s");
        assert_eq!(fmt_rate(1_250.0), "1.2 kB/s");
        assert_eq!(fmt_rate(2e9), "2 GB/s");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// For any series (values across both lines, missing samples, any hold and
        /// clear hold), one resource's alerts: never the same level twice in a row,
        /// never a Cleared first, and any three consecutive alerts span at least the
        /// shorter hold in readings (so at most two alerts per hold: a run up through
        /// warning to critical, or down) - hence never more than
        /// 2 x readings / hold readings.
        #[test]
        fn alerts_never_repeat_and_are_paced_by_the_hold(
            values in proptest::collection::vec(
                prop_oneof![1 => Just(None), 12 => (0.0f32..100.0).prop_map(Some)],
                0..300,
            ),
            hold_readings in 0u64..7,
            clear_readings in 0u64..7,
        ) {
            let config = AlertsConfig {
                hold_secs: hold_readings * 10,
                clear_hold_secs: clear_readings * 10,
                ..AlertsConfig::default()
            };
            let mut e = AlertEngine::new(config);
            let mut alerts: Vec<(usize, AlertLevel)> = Vec::new();
            for (i, v) in values.iter().enumerate() {
                let mut r = Reading::default();
                r.cpu.total_pct = *v;
                for a in e.evaluate(&r, T0 + i as u64 * STEP) {
                    if a.resource == "cpu" {
                        alerts.push((i, a.level));
                    }
                }
                prop_assert!(e.tracked() <= 2);
            }
            let gap = hold_readings.min(clear_readings).max(1) as usize;
            if let Some((_, first)) = alerts.first() {
                prop_assert_ne!(*first, AlertLevel::Cleared);
            }
            for w in alerts.windows(2) {
                prop_assert_ne!(w[0].1, w[1].1, "{:?}", alerts);
                prop_assert!(w[1].0 > w[0].0, "one alert per reading: {:?}", alerts);
            }
            for w in alerts.windows(3) {
                prop_assert!(w[2].0 - w[0].0 >= gap, "gap {} {:?}", gap, alerts);
            }
            prop_assert!(alerts.len() <= 2 * (values.len() / gap), "{:?}", alerts);
        }
    }
}
