//! The window rings of one shard, packed into large chunks.
//!
//! One heap allocation per ring costs a pointer plus the allocator's
//! overhead: with glibc, a 240-byte ring (window 30) takes a 256-byte chunk
//! and 8 bytes to point at it. Here rings of the same capacity live side by
//! side in chunks of about 64 KiB (a *pool* per capacity) and are addressed
//! by a [`RingId`] of two `u32`s.
//!
//! Pools stay dense: freeing a ring moves the last ring of its pool into the
//! hole, so memory follows the number of live rings and emptied chunks go
//! back to the allocator. Every ring records its owner (the slot of its
//! series) so that the caller can update the owner of a moved ring.
//!
//! Rings are not cleared when handed out: a window only reads the points it
//! has written.

/// Target size of one chunk, in `f64`s (64 KiB); a chunk holds a power of
/// two of rings, at least one.
const CHUNK_F64S: usize = 8 * 1024;

/// Where a ring lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RingId {
    /// The pool (rings of one capacity).
    pool: u32,
    /// The ring's position in its pool.
    index: u32,
}

/// All the rings of one shard.
#[derive(Debug, Default)]
pub(super) struct Rings {
    /// Indexed by [`RingId::pool`]. A pool left empty is reused for the next
    /// capacity that has none, so this stays as short as the number of
    /// capacities in use at once.
    pools: Vec<Pool>,
}

/// The rings of one capacity.
#[derive(Debug)]
struct Pool {
    /// `f64`s per ring.
    capacity: usize,
    /// log2 of the number of rings per chunk.
    shift: u32,
    /// Each chunk holds `1 << shift` rings.
    chunks: Vec<Box<[f64]>>,
    /// The owner of each ring in use; its length is the number of rings.
    owners: Vec<u32>,
}

impl Pool {
    fn new(capacity: usize) -> Self {
        let per_chunk = (CHUNK_F64S / capacity).max(1);
        Pool {
            capacity,
            shift: per_chunk.ilog2(),
            chunks: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// Chunk and offset in it of ring `index`.
    #[inline]
    fn locate(&self, index: usize) -> (usize, usize) {
        let mask = (1 << self.shift) - 1;
        (index >> self.shift, (index & mask) * self.capacity)
    }

    #[inline]
    fn ring(&self, index: usize) -> &[f64] {
        let (chunk, start) = self.locate(index);
        &self.chunks[chunk][start..start + self.capacity]
    }

    #[inline]
    fn ring_mut(&mut self, index: usize) -> &mut [f64] {
        let (chunk, start) = self.locate(index);
        &mut self.chunks[chunk][start..start + self.capacity]
    }

    fn push(&mut self, owner: u32) -> usize {
        let index = self.owners.len();
        if index >> self.shift == self.chunks.len() {
            // Zeroed memory comes from calloc: pages are only committed
            // once rings are written.
            self.chunks
                .push(vec![0.0; self.capacity << self.shift].into_boxed_slice());
        }
        self.owners.push(owner);
        index
    }

    /// Removes ring `index`, moving the last ring into its place; returns the
    /// owner of the moved ring.
    fn swap_remove(&mut self, index: usize) -> Option<u32> {
        let last = self.owners.len() - 1;
        let moved = (index != last).then(|| {
            let (from_chunk, from) = self.locate(last);
            let (to_chunk, to) = self.locate(index);
            let len = self.capacity;
            if from_chunk == to_chunk {
                self.chunks[to_chunk].copy_within(from..from + len, to);
            } else {
                // `last > index`, so the source chunk comes after.
                let (head, tail) = self.chunks.split_at_mut(from_chunk);
                head[to_chunk][to..to + len].copy_from_slice(&tail[0][from..from + len]);
            }
            self.owners[index] = self.owners[last];
            self.owners[index]
        });
        self.owners.pop();
        self.trim();
        moved
    }

    /// Frees chunks no longer needed, keeping one spare so that a series
    /// coming and going at a chunk boundary does not allocate every time.
    /// An empty pool keeps nothing.
    fn trim(&mut self) {
        let len = self.owners.len();
        if len == 0 {
            self.chunks = Vec::new();
            self.owners = Vec::new();
            return;
        }
        let needed = ((len - 1) >> self.shift) + 1;
        if self.chunks.len() > needed + 1 {
            self.chunks.truncate(needed + 1);
        }
        if self.owners.capacity() > 4 * len {
            self.owners.shrink_to(2 * len);
        }
    }
}

impl Rings {
    /// A new ring of `capacity` (at least 1) `f64`s for `owner`.
    pub(super) fn alloc(&mut self, capacity: usize, owner: u32) -> RingId {
        let pool = self.pool_for(capacity);
        let index = self.pools[pool].push(owner);
        RingId {
            pool: to_u32(pool),
            index: to_u32(index),
        }
    }

    /// The pool of rings of `capacity`, reusing an empty pool or adding one.
    fn pool_for(&mut self, capacity: usize) -> usize {
        if let Some(i) = self.pools.iter().position(|p| p.capacity == capacity) {
            return i;
        }
        if let Some(i) = self.pools.iter().position(|p| p.owners.is_empty()) {
            self.pools[i] = Pool::new(capacity);
            return i;
        }
        self.pools.push(Pool::new(capacity));
        self.pools.len() - 1
    }

    /// The capacity of ring `id`.
    #[inline]
    pub(super) fn capacity(&self, id: RingId) -> usize {
        self.pools[id.pool as usize].capacity
    }

    /// Ring `id`.
    pub(super) fn get(&self, id: RingId) -> &[f64] {
        self.pools[id.pool as usize].ring(id.index as usize)
    }

    /// Ring `id`, for writing.
    #[inline]
    pub(super) fn get_mut(&mut self, id: RingId) -> &mut [f64] {
        self.pools[id.pool as usize].ring_mut(id.index as usize)
    }

    /// Frees ring `id`. Another ring of the pool may move into `id`: then
    /// its owner is returned, and that owner's ring is now `id`.
    pub(super) fn free(&mut self, id: RingId) -> Option<u32> {
        self.pools[id.pool as usize].swap_remove(id.index as usize)
    }

    /// Records that ring `id` now belongs to `owner`.
    pub(super) fn set_owner(&mut self, id: RingId, owner: u32) {
        self.pools[id.pool as usize].owners[id.index as usize] = owner;
    }

    /// Replaces ring `old` by a new ring of `capacity` (different from the
    /// old one), for the same owner: `fill(old, new)` copies what it needs
    /// before the old ring is freed. Returns the new ring and what
    /// [`free`](Self::free) returns for the old one.
    pub(super) fn replace(
        &mut self,
        old: RingId,
        capacity: usize,
        fill: impl FnOnce(&[f64], &mut [f64]),
    ) -> (RingId, Option<u32>) {
        debug_assert_ne!(self.capacity(old), capacity);
        let owner = self.pools[old.pool as usize].owners[old.index as usize];
        // The old pool holds `old`, so it is neither empty nor of this
        // capacity: the new ring is in another pool.
        let new = self.alloc(capacity, owner);
        let [from, to] = self
            .pools
            .get_disjoint_mut([old.pool as usize, new.pool as usize])
            .expect("rings of different capacities are in different pools");
        fill(
            from.ring(old.index as usize),
            to.ring_mut(new.index as usize),
        );
        (new, self.free(old))
    }

    /// Number of rings in use.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pools.iter().map(|p| p.owners.len()).sum()
    }
}

/// Indices are `u32` to keep slots small. A shard would need more than 4
/// billion series to overflow them: memory runs out long before.
fn to_u32(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 rings per pool")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills ring `id` with `tag`.
    fn mark(rings: &mut Rings, id: RingId, tag: f64) {
        rings.get_mut(id).fill(tag);
    }

    #[test]
    fn rings_are_separate_and_survive_moves() {
        let mut rings = Rings::default();
        // Window 30: 256 rings per chunk, so 600 rings span 3 chunks.
        let mut ids: Vec<RingId> = (0..600).map(|owner| rings.alloc(30, owner)).collect();
        assert_eq!(rings.pools[0].chunks.len(), 3);
        for (owner, &id) in ids.iter().enumerate() {
            assert_eq!(rings.get(id).len(), 30);
            mark(&mut rings, id, owner as f64);
        }
        // Free every third ring, then the others, following the moves as a
        // shard does.
        let mut live = vec![true; 600];
        let order = (0..600).step_by(3).chain((0..600).filter(|o| o % 3 != 0));
        for (n, owner) in order.enumerate() {
            if let Some(moved) = rings.free(ids[owner]) {
                assert!(live[moved as usize] && moved as usize != owner);
                ids[moved as usize] = ids[owner];
            }
            live[owner] = false;
            for o in (0..600).filter(|&o| live[o]) {
                assert!(rings.get(ids[o]).iter().all(|&x| x == o as f64));
            }
            if n == 199 {
                assert_eq!(rings.len(), 400);
                // 400 rings need 2 chunks; the pool keeps one spare.
                assert_eq!(rings.pools[0].chunks.len(), 3);
            }
            if n == 450 {
                assert_eq!(rings.pools[0].chunks.len(), 2);
            }
        }
        assert_eq!(rings.len(), 0);
        assert!(
            rings.pools[0].chunks.is_empty(),
            "an empty pool keeps nothing"
        );
    }

    #[test]
    fn capacities_get_their_own_pools_and_empty_pools_are_reused() {
        let mut rings = Rings::default();
        let a = rings.alloc(30, 0);
        let b = rings.alloc(10_000, 1);
        let c = rings.alloc(1, 2);
        assert_eq!(rings.pools.len(), 3);
        assert_eq!([a, b, c].map(|id| rings.capacity(id)), [30, 10_000, 1]);
        // Window 10,000 is larger than a chunk: one ring per chunk.
        assert_eq!(rings.pools[1].shift, 0);
        assert_eq!(rings.free(b), None);
        let d = rings.alloc(77, 3);
        assert_eq!(d.pool, b.pool, "the empty pool is reused");
        assert_eq!(rings.get(d).len(), 77);
    }

    #[test]
    fn replace_keeps_the_owner_and_reports_the_move() {
        let mut rings = Rings::default();
        let a = rings.alloc(4, 10);
        let b = rings.alloc(4, 11);
        rings.get_mut(a).copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        rings.get_mut(b).copy_from_slice(&[5.0; 4]);
        let (new, moved) = rings.replace(a, 2, |old, new| new.copy_from_slice(&old[2..]));
        assert_eq!(rings.get(new), &[3.0, 4.0]);
        assert_eq!(rings.pools[new.pool as usize].owners, [10]);
        // Ring `b` moved into the place of `a`.
        assert_eq!(moved, Some(11));
        assert_eq!(rings.get(a), &[5.0; 4]);
        rings.set_owner(a, 12);
        assert_eq!(rings.pools[a.pool as usize].owners, [12]);
    }
}
