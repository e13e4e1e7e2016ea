//! Weighted round robin: earliest-deadline-first (as Envoy's EDF scheduler). Each
//! node's next deadline advances by 1/weight per pick, so picks interleave smoothly
//! and over a cycle each node gets its share to within one.

use std::collections::BinaryHeap;

use super::scan::min_ratio;
use super::{Balance, NodeLoad, Request};

/// The schedule for the full set, built on its first decision.
#[derive(Debug, Default)]
pub(super) struct WeightedRoundRobin {
    pub(super) heap: BinaryHeap<EdfEntry>,
    now: f64,
}

#[derive(Debug, PartialEq)]
pub(super) struct EdfEntry {
    deadline: f64,
    /// Ties go to the lower slot, so the order is deterministic.
    slot: usize,
    step: f64,
}

impl Eq for EdfEntry {}
impl Ord for EdfEntry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest deadline is on top.
        o.deadline
            .total_cmp(&self.deadline)
            .then_with(|| o.slot.cmp(&self.slot))
    }
}
impl PartialOrd for EdfEntry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl WeightedRoundRobin {
    fn rebuild(&mut self, eligible: &[usize], loads: &[NodeLoad]) {
        self.heap.clear();
        self.now = 0.0;
        for &slot in eligible {
            let step = 1.0 / loads[slot].weight.max(1e-6);
            self.heap.push(EdfEntry {
                deadline: step,
                slot,
                step,
            });
        }
    }

    fn next(&mut self) -> Option<usize> {
        let mut top = self.heap.pop()?;
        let slot = top.slot;
        self.now = top.deadline;
        top.deadline += top.step;
        self.heap.push(top);
        Some(slot)
    }
}

impl Balance for WeightedRoundRobin {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        let (eligible, loads) = (req.eligible, req.loads);
        if !req.full_set {
            // The schedule's position belongs to the full set; the fewest in flight
            // per unit of weight is the share it converges to.
            return Some(min_ratio(eligible, |s| {
                (f64::from(loads[s].in_flight), loads[s].weight)
            }));
        }
        if self.heap.is_empty() {
            self.rebuild(eligible, loads);
        }
        self.next()
    }

    fn survives_new_weights(&self) -> bool {
        false
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
