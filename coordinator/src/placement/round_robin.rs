//! Round robin: each eligible node in turn.

use super::{Balance, Request};

/// The position in the set's list; it survives membership changes (it names no
/// node, only a place in whatever the list is now).
#[derive(Debug, Default)]
pub(super) struct RoundRobin {
    next: usize,
}

impl Balance for RoundRobin {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        let slot = req.eligible[self.next % req.eligible.len()];
        self.next = self.next.wrapping_add(1);
        Some(slot)
    }

    fn survives_new_set(&self) -> bool {
        true
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
