//! The `[alerts]` section: thresholds per resource kind, holds, hysteresis, trend
//! settings, and the checks that name the refused key.

use serde::Deserialize;

use super::levels::{Kind, Lines};
use super::{MAX_HOLD_SECS, MAX_TREND_WINDOW};

/// The `[alerts]` section. config merges the file over `default.toml`, so every
/// field is present when this is deserialized; [`AlertsConfig::default`] is
/// `default.toml`'s table.
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
    /// The `[alerts]` table of `default.toml`, where these defaults are written (once).
    fn default() -> Self {
        let file: toml::Table = toml::from_str(include_str!("../../default.toml"))
            .expect("default.toml is valid; a unit test checks it");
        file.get("alerts")
            .cloned()
            .expect("default.toml has an [alerts] table")
            .try_into()
            .expect("default.toml's [alerts] is a valid AlertsConfig; a unit test checks it")
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
    pub(super) fn lines(&self, kind: Kind) -> Option<Lines> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
