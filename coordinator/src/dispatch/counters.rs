//! The dispatcher's counters, reported in the coordinator status by these names.

/// Counters, reported in the coordinator status.
#[derive(Debug, Default, Clone, Copy)]
pub struct DispatchCounters {
    pub submitted: u64,
    pub placed: u64,
    pub replaced: u64,
    pub completed: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub timed_out: u64,
    pub node_lost: u64,
    pub duplicate_submissions: u64,
    pub duplicate_results_dropped: u64,
    pub stale_results_dropped: u64,
    pub unplaceable: u64,
    pub malformed: u64,
    pub breaker_opened: u64,
    pub panic_mode: u64,
    pub restored: u64,
    /// Ended tasks left out of the task profiles (more than a second's worth waiting).
    pub profile_samples_dropped: u64,
}

impl DispatchCounters {
    /// Every counter by its status name (for tests outside the dispatcher).
    #[cfg(test)]
    pub fn named_for_tests(&self) -> Vec<(&'static str, u64)> {
        self.named(0, 0)
    }

    /// By their status names, with the two gauges the task table gives.
    pub(super) fn named(&self, in_flight: usize, waiting: usize) -> Vec<(&'static str, u64)> {
        let c = self;
        vec![
            ("tasks_submitted_total", c.submitted),
            ("tasks_placed_total", c.placed),
            ("tasks_replaced_total", c.replaced),
            ("tasks_completed_total", c.completed),
            ("tasks_failed_total", c.failed),
            ("tasks_dead_lettered_total", c.dead_lettered),
            ("tasks_timed_out_total", c.timed_out),
            ("tasks_node_lost_total", c.node_lost),
            ("tasks_in_flight", in_flight as u64),
            ("tasks_waiting", waiting as u64),
            ("tasks_duplicate_submissions_total", c.duplicate_submissions),
            (
                "tasks_duplicate_results_dropped_total",
                c.duplicate_results_dropped,
            ),
            ("tasks_stale_results_dropped_total", c.stale_results_dropped),
            ("tasks_unplaceable_total", c.unplaceable),
            ("tasks_malformed_total", c.malformed),
            ("breakers_opened_total", c.breaker_opened),
            ("placement_panic_mode_total", c.panic_mode),
            ("tasks_restored_total", c.restored),
            ("profile_samples_dropped_total", c.profile_samples_dropped),
        ]
    }
}
