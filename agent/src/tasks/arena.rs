//! The task arena: one region allocated once at start, from which every task's payload
//! and output bytes are carved, so a busy node's memory use is fixed by its config and
//! a burst of large tasks is refused (busy, retryable) instead of growing the heap.
//!
//! A binary buddy allocator over blocks of [`MIN_BLOCK`] bytes: allocation and free are
//! O(log n) (at most one step per order; ~20 orders for 256 MiB), adjacent free buddies
//! coalesce on free, and internal fragmentation is below 2x by construction. All
//! bookkeeping (per-order free lists and per-block indexes) is preallocated too, so the
//! allocator itself never touches the heap after start.
//!
//! [`BuddyCore`] is the single-owner allocator (what the benchmark measures);
//! [`Arena`] shares it between workers behind a mutex and hands out [`Block`]s that give
//! their bytes back when dropped.

use std::cell::UnsafeCell;
use std::sync::{Arc, Mutex};

/// Smallest block handed out, in bytes.
pub const MIN_BLOCK: usize = 256;
const NOT_FREE: u8 = u8::MAX;
const MAX_ORDERS: usize = 32;

/// Why an allocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    /// Not enough contiguous free space now; retry later or elsewhere.
    #[error("arena has no free block of {requested} bytes (retryable)")]
    Full { requested: usize },
    /// Larger than the arena could ever hold.
    #[error("{requested} bytes is larger than the arena ({capacity} bytes)")]
    TooLarge { requested: usize, capacity: usize },
}

/// The buddy allocator's state, in units of `MIN_BLOCK`.
pub struct BuddyCore {
    blocks: u32,
    /// Per block index: the order of the free block starting there, or `NOT_FREE`.
    free_order: Vec<u8>,
    /// Per block index: its position in its order's free list (valid while free).
    pos: Vec<u32>,
    /// Free lists, one per order.
    lists: Vec<Vec<u32>>,
    /// Bit k set when `lists[k]` is non-empty.
    nonempty: u32,
    max_order: u8,
}

fn order_for(blocks: usize) -> u8 {
    blocks.max(1).next_power_of_two().trailing_zeros() as u8
}

impl BuddyCore {
    /// An allocator over `bytes` (rounded down to whole `MIN_BLOCK`s).
    pub fn new(bytes: usize) -> Self {
        let blocks = (bytes / MIN_BLOCK).min(u32::MAX as usize / 2) as u32;
        let max_order = if blocks == 0 {
            0
        } else {
            (31 - blocks.leading_zeros()) as u8
        };
        let mut core = BuddyCore {
            blocks,
            free_order: vec![NOT_FREE; blocks as usize],
            pos: vec![0; blocks as usize],
            lists: (0..MAX_ORDERS)
                .map(|k| Vec::with_capacity(((blocks as usize) >> k) + 1))
                .collect(),
            nonempty: 0,
            max_order,
        };
        // Cover the region with the largest aligned power-of-two blocks, largest first,
        // so every block's offset is a multiple of its size.
        let mut at = 0u32;
        for k in (0..=max_order).rev() {
            if blocks - at >= 1 << k {
                core.push(at, k);
                at += 1 << k;
            }
        }
        core
    }

    pub fn capacity_bytes(&self) -> usize {
        self.blocks as usize * MIN_BLOCK
    }

    fn push(&mut self, idx: u32, k: u8) {
        let list = &mut self.lists[k as usize];
        self.pos[idx as usize] = list.len() as u32;
        list.push(idx);
        self.free_order[idx as usize] = k;
        self.nonempty |= 1 << k;
    }

    fn remove(&mut self, idx: u32, k: u8) {
        let list = &mut self.lists[k as usize];
        let p = self.pos[idx as usize] as usize;
        list.swap_remove(p);
        if let Some(&moved) = list.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        if list.is_empty() {
            self.nonempty &= !(1 << k);
        }
        self.free_order[idx as usize] = NOT_FREE;
    }

    /// Allocate `len` bytes; returns (block index, order).
    pub fn alloc(&mut self, len: usize) -> Result<(u32, u8), ArenaError> {
        let need = order_for(len.div_ceil(MIN_BLOCK));
        if need > self.max_order || len > self.capacity_bytes() {
            return Err(ArenaError::TooLarge {
                requested: len,
                capacity: self.capacity_bytes(),
            });
        }
        let candidates = self.nonempty & !((1u32 << need) - 1);
        if candidates == 0 {
            return Err(ArenaError::Full { requested: len });
        }
        let mut k = candidates.trailing_zeros() as u8;
        let idx = *self.lists[k as usize].last().expect("nonempty bit set");
        self.remove(idx, k);
        while k > need {
            k -= 1;
            self.push(idx + (1 << k), k);
        }
        Ok((idx, need))
    }

    /// Give back a block from [`alloc`](Self::alloc), merging it with free buddies.
    pub fn free(&mut self, mut idx: u32, mut k: u8) {
        while k < self.max_order {
            let buddy = idx ^ (1 << k);
            let merged = idx.min(buddy);
            if merged as u64 + (2u64 << k) > self.blocks as u64
                || self.free_order.get(buddy as usize) != Some(&k)
            {
                break;
            }
            self.remove(buddy, k);
            idx = merged;
            k += 1;
        }
        self.push(idx, k);
    }

    /// Bytes in free blocks.
    pub fn free_bytes(&self) -> usize {
        (0..MAX_ORDERS)
            .map(|k| self.lists[k].len() << k)
            .sum::<usize>()
            * MIN_BLOCK
    }

    /// Size of the largest free block, in bytes.
    pub fn largest_free_bytes(&self) -> usize {
        if self.nonempty == 0 {
            0
        } else {
            (1usize << (31 - self.nonempty.leading_zeros())) * MIN_BLOCK
        }
    }
}

/// Arena figures for readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaStats {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub high_water_bytes: u64,
    pub refused_total: u64,
}

/// The allocator and its figures, kept under one lock so an allocation costs one
/// lock round trip and no further atomics.
struct Locked {
    core: BuddyCore,
    used: u64,
    high_water: u64,
    refused: u64,
}

/// The shared arena.
pub struct Arena {
    region: Box<[UnsafeCell<u8>]>,
    core: Mutex<Locked>,
}

// SAFETY: the region is only reached through `Block`s; the allocator hands each byte
// range to at most one live Block, so no two threads ever touch the same bytes.
unsafe impl Sync for Arena {}
unsafe impl Send for Arena {}

impl Arena {
    /// Allocate the region (`bytes`, rounded down to whole blocks) once.
    pub fn new(bytes: usize) -> Arc<Arena> {
        let core = BuddyCore::new(bytes);
        let cap = core.capacity_bytes();
        // Zeroed allocation: pages the kernel has not had to touch yet cost no RSS.
        let raw = Box::into_raw(vec![0u8; cap].into_boxed_slice());
        // SAFETY: UnsafeCell<u8> is repr(transparent) over u8, so the slice layouts match.
        let region = unsafe { Box::from_raw(raw as *mut [UnsafeCell<u8>]) };
        Arc::new(Arena {
            region,
            core: Mutex::new(Locked {
                core,
                used: 0,
                high_water: 0,
                refused: 0,
            }),
        })
    }

    pub fn capacity_bytes(&self) -> usize {
        self.region.len()
    }

    /// A block of at least `len` bytes whose visible length is `len`.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Result<Block, ArenaError> {
        let (idx, order) = {
            let mut l = self.core.lock().unwrap_or_else(|p| p.into_inner());
            match l.core.alloc(len.max(1)) {
                Ok((idx, order)) => {
                    l.used += (MIN_BLOCK << order) as u64;
                    l.high_water = l.high_water.max(l.used);
                    (idx, order)
                }
                Err(e) => {
                    l.refused += 1;
                    return Err(e);
                }
            }
        };
        Ok(Block {
            arena: self.clone(),
            idx,
            order,
            len,
        })
    }

    pub fn stats(&self) -> ArenaStats {
        let l = self.core.lock().unwrap_or_else(|p| p.into_inner());
        ArenaStats {
            capacity_bytes: self.capacity_bytes() as u64,
            used_bytes: l.used,
            high_water_bytes: l.high_water,
            refused_total: l.refused,
        }
    }

    /// Free bytes and the largest free block (for tests and diagnostics).
    pub fn free_and_largest(&self) -> (usize, usize) {
        let l = self.core.lock().unwrap_or_else(|p| p.into_inner());
        (l.core.free_bytes(), l.core.largest_free_bytes())
    }
}

/// Exclusive use of a range of the arena; returned when dropped.
pub struct Block {
    arena: Arc<Arena>,
    idx: u32,
    order: u8,
    len: usize,
}

impl Block {
    fn start(&self) -> usize {
        self.idx as usize * MIN_BLOCK
    }

    /// Bytes this block can hold.
    pub fn capacity(&self) -> usize {
        MIN_BLOCK << self.order
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Change the visible length (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    /// Offset of the block in the arena (for tests).
    pub fn offset(&self) -> usize {
        self.start()
    }

    pub fn as_slice(&self) -> &[u8] {
        let cells = &self.arena.region[self.start()..self.start() + self.len];
        // SAFETY: this Block owns these bytes exclusively (see `Arena`); UnsafeCell<u8>
        // has the layout of u8.
        unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const u8, cells.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let cells = &self.arena.region[self.start()..self.start() + self.len];
        // SAFETY: as above, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len()) }
    }

    /// The whole capacity, for writers that do not know the final length yet.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let cap = self.capacity();
        let cells = &self.arena.region[self.start()..self.start() + cap];
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cap) }
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Block(offset {}, len {}, capacity {})",
            self.start(),
            self.len,
            self.capacity()
        )
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let size = self.capacity() as u64;
        let mut l = self.arena.core.lock().unwrap_or_else(|p| p.into_inner());
        l.core.free(self.idx, self.order);
        l.used -= size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_and_coalesce() {
        let mut c = BuddyCore::new(16 * MIN_BLOCK);
        let (a, ka) = c.alloc(1).expect("fits");
        let (b, kb) = c.alloc(MIN_BLOCK + 1).expect("fits");
        assert_eq!((a, ka), (0, 0));
        assert_eq!(kb, 1);
        assert_eq!(c.free_bytes(), 13 * MIN_BLOCK);
        c.free(a, ka);
        c.free(b, kb);
        assert_eq!(c.free_bytes(), 16 * MIN_BLOCK);
        assert_eq!(c.largest_free_bytes(), 16 * MIN_BLOCK, "fully coalesced");
    }

    #[test]
    fn odd_sizes_full_and_too_large() {
        let mut c = BuddyCore::new(6 * MIN_BLOCK + 100);
        assert_eq!(c.capacity_bytes(), 6 * MIN_BLOCK);
        assert!(matches!(
            c.alloc(8 * MIN_BLOCK),
            Err(ArenaError::TooLarge { .. })
        ));
        let (x, k) = c.alloc(4 * MIN_BLOCK).expect("fits");
        assert!(matches!(
            c.alloc(4 * MIN_BLOCK),
            Err(ArenaError::Full { .. })
        ));
        let y = c.alloc(2 * MIN_BLOCK).expect("fits");
        assert!(matches!(c.alloc(1), Err(ArenaError::Full { .. })));
        c.free(x, k);
        c.free(y.0, y.1);
        assert_eq!(c.free_bytes(), 6 * MIN_BLOCK);
    }

    #[test]
    fn blocks_return_on_drop_and_stats_track() {
        let arena = Arena::new(64 * 1024);
        let mut b = arena.alloc(1000).expect("fits");
        b.as_mut_slice().fill(7);
        assert_eq!(b.as_slice().len(), 1000);
        assert!(b.as_slice().iter().all(|&x| x == 7));
        assert_eq!(arena.stats().used_bytes, 1024);
        drop(b);
        let s = arena.stats();
        assert_eq!((s.used_bytes, s.high_water_bytes), (0, 1024));
        assert!(arena.alloc(1 << 20).is_err());
        assert_eq!(arena.stats().refused_total, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Random alloc/free sequences: live blocks never overlap, stay in bounds, the
        /// free + used accounting always adds up, and once everything is freed the
        /// arena is one block again (every byte reusable).
        #[test]
        fn never_overlaps_and_fully_recovers(ops in proptest::collection::vec((any::<bool>(), 1usize..20_000, any::<usize>()), 1..400)) {
            let cap = 256 * 1024;
            let arena = Arena::new(cap);
            let mut live: Vec<Block> = Vec::new();
            for (alloc, size, pick) in ops {
                if alloc || live.is_empty() {
                    if let Ok(b) = arena.alloc(size) {
                        prop_assert!(b.capacity() >= size && b.capacity() < 2 * size.max(MIN_BLOCK) + MIN_BLOCK);
                        prop_assert!(b.offset() + b.capacity() <= cap);
                        prop_assert_eq!(b.offset() % b.capacity(), 0, "aligned to its size");
                        for o in &live {
                            let disjoint = b.offset() + b.capacity() <= o.offset() || o.offset() + o.capacity() <= b.offset();
                            prop_assert!(disjoint, "{:?} overlaps {:?}", b, o);
                        }
                        live.push(b);
                    }
                } else {
                    live.swap_remove(pick % live.len());
                }
                let used: usize = live.iter().map(Block::capacity).sum();
                let (free, _) = arena.free_and_largest();
                prop_assert_eq!(used + free, cap);
                prop_assert_eq!(arena.stats().used_bytes as usize, used);
            }
            drop(live);
            prop_assert_eq!(arena.free_and_largest(), (cap, cap));
        }

        /// Bounded fragmentation: cut the arena into 2^m aligned regions with
        /// 2^m > live blocks. Some region holds no live block, and buddies always
        /// merge, so that region is one free block: the largest free block is at
        /// least cap / 2^m, however the workload interleaved.
        #[test]
        fn fragmentation_is_bounded(sizes in proptest::collection::vec(1usize..4096, 1..200), keep_every in 2usize..5) {
            let cap = 1 << 20;
            let arena = Arena::new(cap);
            let mut live: Vec<Block> = sizes.iter().filter_map(|&s| arena.alloc(s).ok()).collect();
            // Free all but every n-th block.
            let mut i = 0;
            live.retain(|_| { i += 1; i % keep_every == 0 });
            let used: usize = live.iter().map(Block::capacity).sum();
            let (free, largest) = arena.free_and_largest();
            prop_assert_eq!(free + used, cap);
            let bound = cap >> ((live.len() + 1).next_power_of_two().trailing_zeros());
            prop_assert!(largest >= bound.min(cap / 2), "largest free {} < bound {} with {} live", largest, bound, live.len());
        }
    }
}
