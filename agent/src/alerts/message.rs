//! The human text of an alert: values in their units, durations, and one sentence per
//! kind of level change.

use fog_proto::Trend;

use super::levels::{Level, Lines, Unit};

/// The threshold an alert reports and its sentence, for `name` going `from` -> `to`
/// at value `v`. `raised_for_ms` is how long the episode has lasted (the cleared
/// sentence says it).
pub(super) fn level_change(
    name: &str,
    (from, to): (Level, Level),
    v: f64,
    lines: &Lines,
    trend: Trend,
    raised_for_ms: u64,
) -> (f64, String) {
    let u = lines.unit;
    if to > from {
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
            fmt_duration(raised_for_ms),
            from.name()
        );
        (lines.warn_clear, message)
    }
}

/// The sentence of the last `Cleared` of a raised resource that stopped being reported.
pub(super) fn withdrawn(name: &str, gone_ms: u64, level: Level, last: f64, unit: Unit) -> String {
    format!(
        "{name} no longer reported for {}; its {} (last {}) is withdrawn",
        fmt_duration(gone_ms),
        level.name(),
        fmt_value(last, unit)
    )
}

fn trend_word(t: Trend) -> &'static str {
    match t {
        Trend::Rising => "rising",
        Trend::Falling => "falling",
        Trend::Steady => "steady",
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
}
