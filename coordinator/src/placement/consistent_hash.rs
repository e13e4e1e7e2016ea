//! Consistent hashing with bounded loads (Mirrokni et al., as HAProxy's
//! `hash-balance-factor`): a task's key picks a point on a ring of virtual node
//! points; the first node clockwise under the load bound takes it, so a key sticks to
//! its node while that node is not overloaded, and a join moves about 1/n of keys.

use super::{Balance, NodeLoad, Request};

/// Virtual points per node on the consistent-hash ring.
pub const RING_POINTS_PER_NODE: usize = 64;
/// Bounded load: no node above this factor times the mean load.
pub const HASH_LOAD_FACTOR: f64 = 1.25;

/// The ring of the full set (built on its first decision, also read by filtered
/// decisions) and the set's running total in flight for the bound.
#[derive(Debug, Default)]
pub(super) struct ConsistentHash {
    pub(super) ring: Vec<(u64, usize)>,
    in_flight: Option<InFlightSum>,
}

impl Balance for ConsistentHash {
    fn pick(&mut self, _rng: &mut fastrand::Rng, req: &Request<'_>) -> Option<usize> {
        if !req.full_set {
            return filtered_ring_pick(&self.ring, req);
        }
        if self.ring.is_empty() {
            self.ring = build_ring(req.eligible, req.node_hash);
        }
        let total = self
            .in_flight
            .get_or_insert_with(|| InFlightSum::build(req))
            .total;
        let n = req.eligible.len();
        bounded_ring_pick(&self.ring, total, n, req.loads, req.key_hash, |_| true)
    }

    fn indexed(&self) -> bool {
        true
    }

    fn rekey(&mut self, slot: usize, req: &Request<'_>) {
        if let Some(sum) = &mut self.in_flight {
            sum.set(slot, req.loads[slot].in_flight);
        }
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The load bound needs the set's total in flight: kept as a running sum, adjusted
/// by the difference when a slot is touched.
#[derive(Debug)]
struct InFlightSum {
    by_slot: Vec<u32>,
    total: u64,
}

impl InFlightSum {
    fn build(req: &Request<'_>) -> Self {
        let len = req.eligible.iter().max().map_or(0, |&m| m + 1);
        let mut sum = InFlightSum {
            by_slot: vec![0; len],
            total: 0,
        };
        for &s in req.eligible {
            sum.set(s, req.loads[s].in_flight);
        }
        sum
    }

    fn set(&mut self, slot: usize, in_flight: u32) {
        if let Some(old) = self.by_slot.get_mut(slot) {
            self.total = self.total - u64::from(*old) + u64::from(in_flight);
            *old = in_flight;
        }
    }
}

/// 64-bit FNV-1a then a murmur3 finaliser: stable across runs and platforms (the ring
/// must not move when the coordinator restarts), and well mixed for short keys.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Build the ring for `eligible`, each node named by `name(slot)`.
pub(super) fn build_ring(eligible: &[usize], name: &dyn Fn(usize) -> u64) -> Vec<(u64, usize)> {
    let mut ring = Vec::with_capacity(eligible.len() * RING_POINTS_PER_NODE);
    for &slot in eligible {
        let base = name(slot);
        for i in 0..RING_POINTS_PER_NODE as u64 {
            ring.push((
                hash64(&(base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes()),
                slot,
            ));
        }
    }
    ring.sort_unstable();
    ring
}

pub(super) fn in_flight_sum(eligible: &[usize], loads: &[NodeLoad]) -> u64 {
    eligible
        .iter()
        .map(|&s| u64::from(loads[s].in_flight))
        .sum()
}

/// Walk clockwise from the key's point to the first node in the set (`member`) under
/// the load bound; `total` is the set's in flight, `n` its size. `None` only if no
/// member is on the ring.
pub(super) fn bounded_ring_pick(
    ring: &[(u64, usize)],
    total: u64,
    n: usize,
    loads: &[NodeLoad],
    key: u64,
    member: impl Fn(usize) -> bool,
) -> Option<usize> {
    // Including the task being placed, as the paper does.
    let bound = (HASH_LOAD_FACTOR * (total + 1) as f64 / n as f64).ceil();
    let start = ring.partition_point(|&(h, _)| h < key);
    let mut first = None;
    for i in 0..ring.len() {
        let (_, slot) = ring[(start + i) % ring.len()];
        if !member(slot) {
            continue;
        }
        if f64::from(loads[slot].in_flight) < bound {
            return Some(slot);
        }
        first.get_or_insert(slot);
    }
    // Some member is always at or below the mean, so this is reached only if loads
    // moved without a touch: then the key's own node.
    first
}

/// Consistent hashing over a filtered list. A subset's ring is the full ring without
/// the other nodes' points, so when the full ring is cached (and the list is not so
/// small that most of the walk would be skipped points) walk it, skipping
/// non-members; else build the subset's ring, uncached (O(n log n), the price of a
/// rare path). Same node either way.
fn filtered_ring_pick(full_ring: &[(u64, usize)], req: &Request<'_>) -> Option<usize> {
    let (eligible, loads) = (req.eligible, req.loads);
    let total = in_flight_sum(eligible, loads);
    let set_len = full_ring.len() / RING_POINTS_PER_NODE;
    if !full_ring.is_empty() && eligible.len() * 4 >= set_len {
        let len = eligible.iter().max().map_or(0, |&m| m + 1);
        let mut member = vec![false; len];
        for &s in eligible {
            member[s] = true;
        }
        let is_member = |s: usize| member.get(s) == Some(&true);
        let n = eligible.len();
        // None: the list is not a subset of the ring's set; its own ring, then.
        if let Some(s) = bounded_ring_pick(full_ring, total, n, loads, req.key_hash, is_member) {
            return Some(s);
        }
    }
    let ring = build_ring(eligible, req.node_hash);
    bounded_ring_pick(&ring, total, eligible.len(), loads, req.key_hash, |_| true)
}
