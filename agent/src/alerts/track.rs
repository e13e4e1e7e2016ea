//! One resource's state machine: whether its value stands above each level's line,
//! since when, and the level change (if any) that a new sample brings.

use fog_proto::Alert;

use super::levels::{Kind, Level, Lines, RAISED};
use super::message;
use super::trend::{trend, Ring};
use super::FORGET_AFTER_MS;

/// State of one resource: a few numbers and the ring.
#[derive(Debug, Clone)]
pub(super) struct Track {
    pub(super) kind: Kind,
    pub(super) level: Level,
    /// When the current episode's first alert fired (for the cleared message).
    raised_at_ms: u64,
    /// Whether the value counts as at-or-above warning, critical.
    above: [bool; 2],
    /// Since when each of `above` has had its value, on consecutive readings.
    since_ms: [u64; 2],
    pub(super) last_seen_ms: u64,
    /// The engine's reading count when last seen.
    pub(super) last_tick: u64,
    pub(super) last_value: f64,
    ring: Ring,
}

/// How long a value must stay past a line before its level changes, in seconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Holds {
    /// Above a threshold, to raise.
    pub(super) hold_secs: u64,
    /// Below a clear line, to lower.
    pub(super) clear_hold_secs: u64,
}

impl Track {
    /// A resource first seen at `now` with value `v`; normal, and earning no hold
    /// credit for the time before.
    pub(super) fn new(kind: Kind, v: f64, now: u64, trend_window: usize) -> Self {
        Track {
            kind,
            level: Level::Normal,
            raised_at_ms: now,
            above: [false; 2],
            since_ms: [now; 2],
            last_seen_ms: now,
            last_tick: 0,
            last_value: v,
            ring: Ring::new(trend_window),
        }
    }

    /// Take sample `v` of reading number `tick`, made at `now`; `prev_reading_ms` is
    /// when the engine's previous reading was made.
    pub(super) fn record(
        &mut self,
        v: f64,
        now: u64,
        tick: u64,
        prev_reading_ms: Option<u64>,
        lines: &Lines,
    ) {
        // The reading stands for the time since the previous reading if this resource
        // was in it (at most FORGET_AFTER_MS); otherwise consecutive readings start over.
        let span_start = match prev_reading_ms {
            Some(p) if self.last_tick + 1 == tick && p <= now => {
                p.max(now.saturating_sub(FORGET_AFTER_MS))
            }
            _ => {
                self.since_ms = [now; 2];
                now
            }
        };
        for l in RAISED {
            let s = l.slot();
            let above = lines.at_or_above(v, l, self.level);
            if above != self.above[s] {
                self.above[s] = above;
                self.since_ms[s] = span_start;
            }
            // After a clock that went back, count from now.
            self.since_ms[s] = self.since_ms[s].min(now);
        }
        self.last_seen_ms = now;
        self.last_tick = tick;
        self.last_value = v;
        self.ring.push(now, v);
    }

    /// The level to move to at `now`, if any: the highest level held long enough;
    /// otherwise the lowest level whose next one up has been left long enough.
    pub(super) fn next_level(&self, now: u64, holds: Holds) -> Option<Level> {
        let held = |l: Level, hold_secs: u64| {
            now - self.since_ms[l.slot()] >= hold_secs.saturating_mul(1000)
        };
        let up = RAISED
            .into_iter()
            .rev()
            .find(|&l| l > self.level && self.above[l.slot()] && held(l, holds.hold_secs));
        up.or_else(|| {
            [Level::Normal, Level::Warning]
                .into_iter()
                .filter(|&to| to < self.level)
                .find(|&to| {
                    let left = RAISED[to as usize];
                    !self.above[left.slot()] && held(left, holds.clear_hold_secs)
                })
        })
    }

    /// Move to level `to` at `now` (value `v`) and say so.
    pub(super) fn change_level(
        &mut self,
        name: String,
        to: Level,
        v: f64,
        now: u64,
        lines: &Lines,
    ) -> Alert {
        let from = self.level;
        let trend = trend(&self.ring.buf, lines.deadband);
        if to > from && from == Level::Normal {
            self.raised_at_ms = now;
        }
        let raised_for = now.saturating_sub(self.raised_at_ms);
        let (threshold, message) =
            message::level_change(&name, (from, to), v, lines, trend, raised_for);
        self.level = to;
        Alert {
            at_ms: now,
            resource: name,
            level: to.wire(),
            value: v,
            threshold,
            trend,
            message,
        }
    }
}
