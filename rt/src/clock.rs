//! Wall-clock time as the protocol carries it. State machines take `now` as an
//! argument; only the edges (a reading's timestamp, a record's `at_ms`) read this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
