//! A circuit breaker per node: closed, then open after `failures_to_open` consecutive
//! failures, open for `open_for`, then half-open letting `half_open_probes` tasks
//! through at a time, closed again after `successes_to_close` successes (any failure
//! while half-open opens it again). What counts as a failure: a task that failed or
//! timed out there. A busy refusal is back-pressure, not a fault, and does not count.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub failures_to_open: u32,
    pub open_for: Duration,
    pub half_open_probes: u32,
    pub successes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures_to_open: 5,
            open_for: Duration::from_secs(60),
            half_open_probes: 1,
            successes_to_close: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probes_in_flight: u32,
    probe_successes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            probes_in_flight: 0,
            probe_successes: 0,
        }
    }
}

impl Breaker {
    /// The state at `now` (an open breaker whose time is up becomes half-open).
    pub fn state(&mut self, cfg: &BreakerConfig, now: Instant) -> BreakerState {
        if self.state == BreakerState::Open
            && self
                .opened_at
                .is_some_and(|t| now.saturating_duration_since(t) >= cfg.open_for)
        {
            self.state = BreakerState::HalfOpen;
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
        self.state
    }

    /// The state as last seen, without applying the passage of time.
    /// When an open breaker turns half-open by the clock (`None` unless open).
    pub fn half_open_at(&self, cfg: &BreakerConfig) -> Option<Instant> {
        match self.state {
            BreakerState::Open => self.opened_at.map(|t| t + cfg.open_for),
            _ => None,
        }
    }

    pub fn last_state(&self) -> BreakerState {
        self.state
    }

    /// The state at `now`, for display: like [`state`](Self::state) but changes
    /// nothing, so looking never hides a transition from the dispatcher.
    pub fn peek(&self, cfg: &BreakerConfig, now: Instant) -> BreakerState {
        let due = self
            .opened_at
            .is_some_and(|t| now.saturating_duration_since(t) >= cfg.open_for);
        if self.state == BreakerState::Open && due {
            BreakerState::HalfOpen
        } else {
            self.state
        }
    }

    /// Whether a new task may be placed on this node now.
    pub fn allows(&mut self, cfg: &BreakerConfig, now: Instant) -> bool {
        match self.state(cfg, now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.probes_in_flight < cfg.half_open_probes,
        }
    }

    /// A task was placed here (counts as a probe while half-open).
    pub fn on_placed(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_in_flight += 1;
        }
    }

    /// A task placed here completed.
    pub fn on_success(&mut self, cfg: &BreakerConfig) {
        match self.state {
            BreakerState::Closed => self.consecutive_failures = 0,
            BreakerState::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.probe_successes += 1;
                if self.probe_successes >= cfg.successes_to_close {
                    *self = Breaker::default();
                }
            }
            // A late success from before the breaker opened changes nothing.
            BreakerState::Open => {}
        }
    }

    /// A task placed here failed or timed out.
    pub fn on_failure(&mut self, cfg: &BreakerConfig, now: Instant) {
        match self.state {
            BreakerState::Closed => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= cfg.failures_to_open {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => {}
        }
    }

    /// A task placed here ended without a verdict on the node (refused as busy, or
    /// re-placed because the node went offline): frees its probe slot.
    pub fn on_abandoned(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.consecutive_failures = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest, Strategy as _};

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Place,
        Success,
        Failure,
        Abandon,
        Wait(u64),
    }

    fn ev() -> impl proptest::strategy::Strategy<Value = Ev> {
        (0u8..5, 0u64..90).prop_map(|(k, s)| match k {
            0 => Ev::Place,
            1 => Ev::Success,
            2 => Ev::Failure,
            3 => Ev::Abandon,
            _ => Ev::Wait(s),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_documented_cycle() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::default();
        let mut now = Instant::now();
        for _ in 0..4 {
            b.on_failure(&cfg, now);
        }
        assert_eq!(b.state(&cfg, now), BreakerState::Closed);
        b.on_success(&cfg);
        for _ in 0..4 {
            b.on_failure(&cfg, now);
        }
        assert_eq!(
            b.state(&cfg, now),
            BreakerState::Closed,
            "a success resets the count"
        );
        b.on_failure(&cfg, now);
        assert_eq!(b.state(&cfg, now), BreakerState::Open);
        assert!(!b.allows(&cfg, now));
        now += Duration::from_secs(59);
        assert!(!b.allows(&cfg, now));
        now += Duration::from_secs(1);
        assert_eq!(b.state(&cfg, now), BreakerState::HalfOpen);
        assert!(b.allows(&cfg, now));
        b.on_placed();
        assert!(!b.allows(&cfg, now), "one probe at a time");
        b.on_success(&cfg);
        assert_eq!(b.state(&cfg, now), BreakerState::HalfOpen);
        b.on_placed();
        b.on_success(&cfg);
        assert_eq!(b.state(&cfg, now), BreakerState::Closed);
    }

    proptest! {
        /// Under any sequence of events the breaker only moves along the documented
        /// edges, an open breaker never lets work through, and half-open never has more
        /// probes out than allowed.
        #[test]
        fn transitions_follow_the_rules(events in proptest::collection::vec(ev(), 0..200)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let cfg = BreakerConfig { failures_to_open: 3, open_for: Duration::from_secs(60), half_open_probes: 2, successes_to_close: 2 };
                let mut b = Breaker::default();
                let mut now = Instant::now();
                let mut fails_in_a_row = 0u32;
                let mut probe_ok = 0u32;
                let mut out = 0u32;
                for e in events {
                    let before = b.state(&cfg, now);
                    match e {
                        Ev::Place => {
                            if b.allows(&cfg, now) {
                                b.on_placed();
                                if before == BreakerState::HalfOpen { out += 1; }
                            } else {
                                prop_assert!(before != BreakerState::Closed);
                            }
                        }
                        Ev::Success => { b.on_success(&cfg); if before == BreakerState::HalfOpen { probe_ok += 1; out = out.saturating_sub(1); } }
                        Ev::Failure => b.on_failure(&cfg, now),
                        Ev::Abandon => { b.on_abandoned(); if before == BreakerState::HalfOpen { out = out.saturating_sub(1); } }
                        Ev::Wait(s) => now += Duration::from_secs(s),
                    }
                    let after = b.state(&cfg, now);
                    match e {
                        Ev::Failure if before == BreakerState::Closed => {
                            fails_in_a_row += 1;
                            if fails_in_a_row >= 3 { prop_assert_eq!(after, BreakerState::Open); fails_in_a_row = 0; }
                            else { prop_assert_eq!(after, BreakerState::Closed); }
                        }
                        Ev::Failure if before == BreakerState::HalfOpen => prop_assert_eq!(after, BreakerState::Open),
                        Ev::Success if before == BreakerState::Closed => { fails_in_a_row = 0; prop_assert_eq!(after, BreakerState::Closed); }
                        Ev::Success if before == BreakerState::HalfOpen => {
                            if probe_ok >= 2 { prop_assert_eq!(after, BreakerState::Closed); }
                            else { prop_assert_eq!(after, BreakerState::HalfOpen); }
                        }
                        Ev::Wait(_) if before == BreakerState::Open => prop_assert!(after != BreakerState::Closed),
                        Ev::Wait(_) => prop_assert_eq!(after, before),
                        _ => prop_assert!(after == before),
                    }
                    if after != BreakerState::HalfOpen { probe_ok = 0; out = 0; }
                    if after != BreakerState::Closed { fails_in_a_row = 0; }
                    if after == BreakerState::Open { prop_assert!(!b.clone().allows(&cfg, now)); }
                    prop_assert!(out <= cfg.half_open_probes);
                }
                Ok(())
            })?;
        }
    }
}
