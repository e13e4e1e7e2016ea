//! Response time: the least expected time to get through a node's queue, priced by
//! its peak-EWMA latency (an idle slow node can beat a busy fast one).

use super::heap::{cheapest, IndexedHeap};
use super::scan::min_ratio;
use super::{Balance, NodeLoad, Request};

#[derive(Debug, Default)]
pub(super) struct ResponseTime {
    heap: Option<IndexedHeap>,
}

/// Expected time to get through this node's queue plus one task of `per_task_ms`:
/// response time's and adaptive's cost. Evaluated as (per task x queue) / weight, the
/// scan's numerator and denominator.
pub(super) fn expected_ms(per_task_ms: f64, l: &NodeLoad) -> f64 {
    per_task_ms * (f64::from(l.in_flight) + 1.0) / l.weight
}

/// The per-task figure: the peak EWMA, at least 1 ms so that a node without results
/// yet is priced by its queue, not at zero.
fn response_ms(l: &NodeLoad) -> f64 {
    l.latency_ms.max(1.0)
}

fn cost(l: &NodeLoad) -> f64 {
    expected_ms(response_ms(l), l)
}

impl Balance for ResponseTime {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        let loads = req.loads;
        if !req.full_set {
            return Some(min_ratio(req.eligible, |s| {
                let l = &loads[s];
                (response_ms(l) * f64::from(l.in_flight + 1), l.weight)
            }));
        }
        cheapest(&mut self.heap, req.eligible, |s| cost(&loads[s]))
    }

    fn indexed(&self) -> bool {
        true
    }

    fn rekey(&mut self, slot: usize, req: &Request<'_>) {
        if let Some(h) = &mut self.heap {
            h.set(slot, cost(&req.loads[slot]));
        }
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
