//! Power of two choices (the default): two distinct random nodes, the one with fewer
//! in flight per unit of weight. O(1), and near the best a full scan could do under
//! load (Mitzenmacher), without herding every decision onto one node.

use super::{Balance, NodeLoad, Request};

#[derive(Debug, Default)]
pub(super) struct P2c;

impl Balance for P2c {
    fn pick(&mut self, rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        Some(p2c(rng, req.eligible, req.loads))
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Two distinct random nodes of `eligible` (not empty), the less loaded per weight.
pub(super) fn p2c(rng: &mut fastrand::Rng, eligible: &[usize], loads: &[NodeLoad]) -> usize {
    if eligible.len() == 1 {
        return eligible[0];
    }
    let i = rng.usize(..eligible.len());
    // A second, distinct sample.
    let mut j = rng.usize(..eligible.len() - 1);
    if j >= i {
        j += 1;
    }
    let (a, b) = (eligible[i], eligible[j]);
    let cost = |s: usize| f64::from(loads[s].in_flight) / loads[s].weight;
    if cost(b) < cost(a) {
        b
    } else {
        a
    }
}
