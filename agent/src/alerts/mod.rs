//! Threshold alerts: turns readings into [`Alert`](fog_proto::Alert)s for `nodes/{node}/alerts`.
//!
//! Pure and deterministic: no I/O, no runtime, no clock. The caller hands in every
//! [`Reading`](fog_proto::Reading) with the time it stands for (`now_ms`, normally `reading.at_ms`) and
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

//!
//! Files: `config` (the `[alerts]` section and its checks), `levels` (resource
//! kinds, levels, threshold and clear lines), `trend` (the sample ring and the
//! least-squares sign), `track` (one resource's state machine: the observe step and
//! its level changes), `engine` ([`AlertEngine`]: readings in, alerts out, forgetting),
//! `message` (the human text of an alert).

mod config;
mod engine;
mod levels;
mod message;
mod track;
mod trend;

pub use config::{
    AlertsConfig, InvalidAlerts, NetworkThresholds, PctThresholds, TemperatureThresholds,
};
pub use engine::AlertEngine;

/// Most resources tracked at once.
pub const MAX_RESOURCES: usize = 64;
/// Largest `trend_window`.
pub const MAX_TREND_WINDOW: usize = 64;
/// A resource missing from readings this long (ms) is forgotten.
pub const FORGET_AFTER_MS: u64 = 5 * 60 * 1000;
/// Largest `hold_secs` and `clear_hold_secs` (a day).
pub const MAX_HOLD_SECS: u64 = 86_400;

#[cfg(test)]
mod tests;
