//! Resource kinds, the three levels, and a kind's threshold and clear lines.

use fog_proto::AlertLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Cpu,
    Memory,
    Disk,
    Network,
    Temperature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Pct,
    Celsius,
    BytesPerSec,
}

impl Kind {
    pub(super) fn unit(self) -> Unit {
        match self {
            Kind::Cpu | Kind::Memory | Kind::Disk => Unit::Pct,
            Kind::Temperature => Unit::Celsius,
            Kind::Network => Unit::BytesPerSec,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Lines {
    pub(super) warn: f64,
    pub(super) crit: f64,
    pub(super) warn_clear: f64,
    pub(super) crit_clear: f64,
    pub(super) deadband: f64,
    pub(super) unit: Unit,
}

/// Normal < Warning < Critical; indexes 1 and 2 are the raised levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    Normal = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub(super) fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub(super) fn wire(self) -> AlertLevel {
        match self {
            Level::Normal => AlertLevel::Cleared,
            Level::Warning => AlertLevel::Warning,
            Level::Critical => AlertLevel::Critical,
        }
    }

    /// Slot of a raised level in [`Track::above`].
    pub(super) fn slot(self) -> usize {
        self as usize - 1
    }
}

pub(super) const RAISED: [Level; 2] = [Level::Warning, Level::Critical];

impl Lines {
    pub(super) fn threshold(&self, l: Level) -> f64 {
        match l {
            Level::Normal => 0.0,
            Level::Warning => self.warn,
            Level::Critical => self.crit,
        }
    }

    pub(super) fn clear_line(&self, l: Level) -> f64 {
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
    pub(super) fn at_or_above(&self, v: f64, l: Level, current: Level) -> bool {
        if l <= current {
            v >= self.clear_line(l)
        } else {
            v > self.threshold(l)
        }
    }
}
