//! An indexed binary min-heap of (cost, node slot): the structure behind the strategies
//! that pick the cheapest node (least connections, response time, adaptive), so one
//! node's new cost is an O(log n) re-key instead of a scan.

/// Marks a slot that is not in an [`IndexedHeap`].
const ABSENT: u32 = u32::MAX;

/// Node slots are indexes into the caller's node table; the heaps store them (and
/// positions, which are fewer) in 32 bits to halve their position arrays.
fn slot_u32(slot: usize) -> u32 {
    u32::try_from(slot)
        .ok()
        .filter(|&s| s != ABSENT)
        .expect("fewer than 2^32 - 1 node slots")
}

/// `a` before `b`: the lower cost, ties to the lower slot (as the scan gives ties to
/// the first in an eligible list sorted by slot).
fn before(a: (f64, u32), b: (f64, u32)) -> bool {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).is_lt()
}

/// A binary min-heap of (cost, slot) that can find any slot's entry, so one node's
/// new cost is an O(log n) re-key instead of a new scan; the minimum is O(1).
#[derive(Debug, Default)]
pub(super) struct IndexedHeap {
    heap: Vec<(f64, u32)>,
    /// Position in `heap` by slot, [`ABSENT`] if not in it.
    pos: Vec<u32>,
}

impl IndexedHeap {
    /// Bottom-up heapify: O(n), cheaper than n inserts on every rebuild.
    pub(super) fn build(entries: impl IntoIterator<Item = (f64, usize)>) -> Self {
        let mut h = IndexedHeap::default();
        for (cost, slot) in entries {
            h.ensure_pos(slot);
            h.pos[slot] = slot_u32(h.heap.len());
            h.heap.push((cost, slot_u32(slot)));
        }
        for i in (0..h.heap.len() / 2).rev() {
            h.sift_down(i);
        }
        h
    }

    pub(super) fn top(&self) -> Option<(f64, usize)> {
        self.heap.first().map(|&(c, s)| (c, s as usize))
    }

    pub(super) fn position(&self, slot: usize) -> Option<usize> {
        match self.pos.get(slot) {
            Some(&p) if p != ABSENT => Some(p as usize),
            _ => None,
        }
    }

    fn ensure_pos(&mut self, slot: usize) {
        if self.pos.len() <= slot {
            self.pos.resize(slot + 1, ABSENT);
        }
    }

    /// Insert `slot`, or move it to its new cost.
    pub(super) fn set(&mut self, slot: usize, cost: f64) {
        let entry = (cost, slot_u32(slot));
        match self.position(slot) {
            Some(i) => {
                let old = self.heap[i];
                self.heap[i] = entry;
                if before(entry, old) {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
            }
            None => {
                self.ensure_pos(slot);
                self.heap.push(entry);
                self.sift_up(self.heap.len() - 1);
            }
        }
    }

    pub(super) fn remove(&mut self, slot: usize) {
        let Some(i) = self.position(slot) else {
            return;
        };
        self.pos[slot] = ABSENT;
        let Some(last) = self.heap.pop() else {
            return;
        };
        if i < self.heap.len() {
            // The last entry fills the hole and moves whichever way it belongs.
            let removed = self.heap[i];
            self.heap[i] = last;
            if before(last, removed) {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
    }

    fn put(&mut self, i: usize, e: (f64, u32)) {
        self.heap[i] = e;
        self.pos[e.1 as usize] = slot_u32(i);
    }

    /// Moves entries down into the hole instead of swapping: one write per level.
    fn sift_up(&mut self, mut i: usize) {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            if !before(e, self.heap[parent]) {
                break;
            }
            self.put(i, self.heap[parent]);
            i = parent;
        }
        self.put(i, e);
    }

    fn sift_down(&mut self, mut i: usize) {
        let e = self.heap[i];
        let n = self.heap.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && before(self.heap[right], self.heap[left]) {
                right
            } else {
                left
            };
            if !before(self.heap[child], e) {
                break;
            }
            self.put(i, self.heap[child]);
            i = child;
        }
        self.put(i, e);
    }
}

/// The cheapest of the set by `cost`: the top of `heap`, built from the set on the
/// first decision (for the strategies whose state is one heap).
pub(super) fn cheapest(
    heap: &mut Option<IndexedHeap>,
    eligible: &[usize],
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    heap.get_or_insert_with(|| IndexedHeap::build(eligible.iter().map(|&s| (cost(s), s))))
        .top()
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert_eq, prop_oneof, Just, Strategy as _};

    /// The heap's shape and its position array agree, and every parent comes first.
    fn assert_heap(h: &IndexedHeap) {
        for i in 1..h.heap.len() {
            assert!(!before(h.heap[i], h.heap[(i - 1) / 2]), "heap order at {i}");
        }
        for (i, &(_, s)) in h.heap.iter().enumerate() {
            assert_eq!(h.pos[s as usize] as usize, i, "position of slot {s}");
        }
        let placed = h.pos.iter().filter(|&&p| p != ABSENT).count();
        assert_eq!(placed, h.heap.len(), "stale positions");
    }

    #[test]
    fn indexed_heap_gives_ties_to_the_lower_slot() {
        let h = IndexedHeap::build([(2.0, 7), (1.0, 9), (1.0, 4), (1.0, 6), (3.0, 0)]);
        assert_heap(&h);
        assert_eq!(h.top(), Some((1.0, 4)));
        let mut h = IndexedHeap::default();
        for (c, s) in [(5.0, 3), (5.0, 1), (5.0, 2)] {
            h.set(s, c);
        }
        assert_eq!(h.top(), Some((5.0, 1)));
        // Raising the top to a tie with the others: still the lower slot wins.
        h.set(1, 5.0);
        assert_eq!(h.top(), Some((5.0, 1)));
        h.set(1, 5.5);
        assert_eq!(h.top(), Some((5.0, 2)));
        assert_heap(&h);
    }

    #[test]
    fn indexed_heap_moves_entries_up_and_down_and_removes_any() {
        let mut h = IndexedHeap::build((0..10).map(|s| (f64::from(s as u32) * 10.0, s)));
        assert_eq!(h.top(), Some((0.0, 0)));
        // Down: the top gets expensive.
        h.set(0, 95.0);
        assert_eq!(h.top(), Some((10.0, 1)));
        assert_heap(&h);
        // Up: a leaf gets cheap.
        h.set(9, 1.0);
        assert_eq!(h.top(), Some((1.0, 9)));
        assert_heap(&h);
        // Remove the top, a middle entry, the last entry, and one that is absent.
        h.remove(9);
        assert_eq!(h.top(), Some((10.0, 1)));
        h.remove(5);
        h.remove(h.heap[h.heap.len() - 1].1 as usize);
        h.remove(5);
        h.remove(1000);
        assert_heap(&h);
        assert_eq!(h.heap.len(), 7);
        assert_eq!(h.position(5), None);
        // Back in, past the end of the position array too.
        h.set(5, 0.5);
        h.set(20, 0.25);
        assert_eq!(h.top(), Some((0.25, 20)));
        assert_heap(&h);
        while let Some((_, s)) = h.top() {
            h.remove(s);
            assert_heap(&h);
        }
        assert!(h.heap.is_empty());
    }

    proptest::proptest! {
        /// The heap against a sorted list, over random inserts, re-keys and removals.
        #[test]
        fn indexed_heap_matches_a_sorted_reference(
            ops in proptest::collection::vec((0usize..24, prop_oneof![Just(None), (0u32..6).prop_map(|c| Some(f64::from(c)))]), 1..200)
        ) {
            let mut h = IndexedHeap::default();
            let mut reference: Vec<(f64, usize)> = Vec::new();
            for (slot, cost) in ops {
                reference.retain(|e| e.1 != slot);
                match cost {
                    Some(c) => {
                        h.set(slot, c);
                        reference.push((c, slot));
                    }
                    None => h.remove(slot),
                }
                assert_heap(&h);
                let min = reference.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                prop_assert_eq!(h.top(), min);
            }
        }

    }
}
