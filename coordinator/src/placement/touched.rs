//! Which nodes of a set changed since the last indexed decision, so the next one
//! re-keys exactly those (O(log n) each) instead of rescanning the set.

/// Dirty slots of one eligible set, recorded once something is indexed.
#[derive(Debug, Default)]
pub(super) struct Touched {
    /// By slot: in the set. Empty until the first index is built: until then there is
    /// nothing to keep current and touches are not recorded.
    member: Vec<bool>,
    /// By slot: already in `dirty` (a busy node is touched several times between
    /// decisions and is re-keyed once).
    marked: Vec<bool>,
    dirty: Vec<usize>,
}

impl Touched {
    pub(super) fn touch(&mut self, slot: usize) {
        if self.member.get(slot) == Some(&true) && !self.marked[slot] {
            self.marked[slot] = true;
            self.dirty.push(slot);
        }
    }

    /// Note the members if nothing is indexed yet (what gets built next reads current
    /// loads), else hand every slot touched since to `rekey`.
    pub(super) fn catch_up(&mut self, eligible: &[usize], mut rekey: impl FnMut(usize)) {
        if self.member.is_empty() {
            let len = eligible.iter().max().map_or(0, |&m| m + 1);
            self.member = vec![false; len];
            self.marked = vec![false; len];
            for &s in eligible {
                self.member[s] = true;
            }
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            self.marked[slot] = false;
            rekey(slot);
        }
        // Keep the allocation.
        dirty.clear();
        self.dirty = dirty;
    }
}
