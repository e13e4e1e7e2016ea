//! Adaptive: least expected completion time, learned per kind and node: the kind's
//! EWMA run time on the node (or the kind's fleet mean for an untried node, so it gets
//! tried and learned) times the tasks it would have to get through, per weight.

use super::heap::IndexedHeap;
use super::response_time::expected_ms;
use super::scan::min_ratio;
use super::{Balance, Request};

#[derive(Debug, Default)]
pub(super) struct Adaptive {
    heaps: Option<AdaptiveHeaps>,
}

/// This kind's EWMA run time on `slot`, if the node has run it.
fn known_ms(req: &Request<'_>, slot: usize) -> Option<f64> {
    req.kind_ms.get(slot).copied().filter(|&ms| ms > 0.0)
}

/// What an untried node is assumed to take (the kind's fleet mean, or 1 ms before
/// anything is known).
fn default_ms(req: &Request<'_>) -> f64 {
    if req.kind_default_ms > 0.0 {
        req.kind_default_ms
    } else {
        1.0
    }
}

/// Two heaps. Untried nodes all share the kind's default per-task time, a positive
/// factor common to all of them, so they are ordered by queue / weight alone and the
/// default (which moves with every result of the kind) multiplies only the top.
#[derive(Debug)]
struct AdaptiveHeaps {
    known: IndexedHeap,
    untried: IndexedHeap,
}

impl AdaptiveHeaps {
    fn build(req: &Request<'_>) -> Self {
        let (mut known, mut untried) = (Vec::new(), Vec::new());
        for &s in req.eligible {
            let l = &req.loads[s];
            match known_ms(req, s) {
                Some(ms) => known.push((expected_ms(ms, l), s)),
                None => untried.push((expected_ms(1.0, l), s)),
            }
        }
        AdaptiveHeaps {
            known: IndexedHeap::build(known),
            untried: IndexedHeap::build(untried),
        }
    }

    /// Re-key `slot`, moving it to `known` once it has a run time.
    fn set(&mut self, slot: usize, req: &Request<'_>) {
        let l = &req.loads[slot];
        match known_ms(req, slot) {
            Some(ms) => {
                self.untried.remove(slot);
                self.known.set(slot, expected_ms(ms, l));
            }
            None => {
                self.known.remove(slot);
                self.untried.set(slot, expected_ms(1.0, l));
            }
        }
    }

    fn pick(&self, default_ms: f64) -> Option<usize> {
        let untried = self.untried.top().map(|(c, s)| (default_ms * c, s));
        match (self.known.top(), untried) {
            // Ties to the lower slot, as within a heap.
            (Some(k), Some(u)) => Some(if k.0.total_cmp(&u.0).then(k.1.cmp(&u.1)).is_lt() {
                k.1
            } else {
                u.1
            }),
            (k, u) => k.or(u).map(|(_, s)| s),
        }
    }
}

impl Balance for Adaptive {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        if !req.full_set {
            let (default, loads) = (default_ms(req), req.loads);
            return Some(min_ratio(req.eligible, |s| {
                let per_task = known_ms(req, s).unwrap_or(default);
                (
                    per_task * f64::from(loads[s].in_flight + 1),
                    loads[s].weight,
                )
            }));
        }
        self.heaps
            .get_or_insert_with(|| AdaptiveHeaps::build(req))
            .pick(default_ms(req))
    }

    fn indexed(&self) -> bool {
        true
    }

    fn rekey(&mut self, slot: usize, req: &Request<'_>) {
        if let Some(a) = &mut self.heaps {
            a.set(slot, req);
        }
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
