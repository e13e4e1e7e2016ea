//! Least connections: the node with the fewest tasks in flight (ties to the lower
//! slot), the top of an indexed heap.

use super::heap::{cheapest, IndexedHeap};
use super::scan::min_ratio;
use super::{Balance, NodeLoad, Request};

#[derive(Debug, Default)]
pub(super) struct LeastConnections {
    heap: Option<IndexedHeap>,
}

fn cost(l: &NodeLoad) -> f64 {
    f64::from(l.in_flight)
}

impl Balance for LeastConnections {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        let loads = req.loads;
        if !req.full_set {
            return Some(min_ratio(req.eligible, |s| (cost(&loads[s]), 1.0)));
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
