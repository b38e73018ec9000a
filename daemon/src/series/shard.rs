//! One shard of the series table: the storage of its series, found by name.
//!
//! A series is a [`Slot`] (120 bytes) in a dense vector, its name in
//! [`Keys`], its window ring in [`Rings`] and a `u32` (the slot's index) in a
//! hashbrown index. A `HashMap<Box<str>, State>` paid its load factor (44% to
//! 87.5%) on 113-byte buckets, plus a heap allocation per name and one per
//! ring; here the load factor costs at most 10 bytes per series and nothing
//! but the index grows by doubling.
//!
//! Removing a series moves the last slot into its place (and the last ring
//! of its pool into the place of its ring), so everything stays dense; the
//! index and the rings' owners follow the moves.
//!
//! This module knows nothing of configurations and verdicts: the table
//! decides what the fields of a slot mean.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::Hasher;
use super::episodes::OpenEpisodes;
use super::history::{HistoryPoint, HistoryPool, NO_HISTORY};
use super::keys::Keys;
use super::rings::{RingId, Rings};
use crate::api::EpisodeRecord;
use crate::detect::DetectorState;
use crate::detect::episode::EpisodeState;

/// [`Slot::last_seq`] of a series that has applied no `seq` yet.
pub(super) const NO_SEQ: u64 = u64::MAX;

/// What a series has seen, for `GET /series` and the dashboard: 28 bytes
/// (packed to 4: fields are only read and written by value).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, packed(4))]
pub struct SeriesStats {
    /// Points applied (duplicates not counted).
    pub points: u64,
    /// Of those, anomalies (saturating at 2^32 − 1).
    pub anomalies: u32,
    /// Value of the last applied point.
    pub last_value: f64,
    /// Timestamp of the last applied point (unix seconds).
    pub last_timestamp: f64,
}

/// Series removed by a sweep, how many of them had a history, and the
/// episodes they left open (closed at their last point).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Removed {
    /// Series removed.
    pub(super) series: usize,
    /// Histories freed with them.
    pub(super) histories: usize,
    /// Their open episodes, ended at the series' last point.
    pub(super) episodes: Vec<EpisodeRecord>,
}

/// One series, but its name and ring.
#[derive(Debug)]
pub(super) struct Slot {
    /// The detector, whose ring is [`Slot::ring`].
    pub(super) detector: DetectorState,
    /// The last applied `seq`, or [`NO_SEQ`]: 8 bytes where an
    /// `Option<u64>` takes 16 (a `seq` is below 2^63, validated at ingest).
    pub(super) last_seq: u64,
    /// The series' episode state (12 bytes, in what was padding).
    pub(super) episode: EpisodeState,
    /// Settings profile (0: `[detector]`, `i + 1`: rule `i`; at most
    /// [`crate::config::MAX_RULES`] rules), valid for [`Slot::generation`].
    pub(super) profile: u16,
    /// Configuration generation the profile was resolved in (its low 16
    /// bits: when they wrap, every slot is refreshed).
    pub(super) generation: u16,
    /// When the last point arrived (table clock, seconds).
    pub(super) last_seen: u32,
    /// Index of the series' history in the shard's pool, or
    /// [`NO_HISTORY`].
    pub(super) history: u32,
    /// Counters and the last point.
    pub(super) stats: SeriesStats,
    /// Offset of the name in [`Keys`].
    key: u32,
    ring: RingId,
}

/// The hash of a series name: the table picks the shard with it, the shard
/// looks the name up with it.
pub(super) fn hash_name(hasher: &Hasher, name: &str) -> u64 {
    hash_name_bytes(hasher, name.as_bytes())
}

/// The series of one shard.
#[derive(Debug)]
pub(super) struct Shard {
    /// The table's hasher, to rehash names when the index grows.
    hasher: Hasher,
    /// Slot indices, by the hash of the slot's name.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    keys: Keys,
    rings: Rings,
    histories: HistoryPool,
    /// The summaries of the shard's open episodes.
    pub(super) open_episodes: OpenEpisodes,
    /// Series removed so far. A removal moves a slot, so an id found
    /// while this count was `n` is still that series' id while it is `n`;
    /// adding a series moves none.
    removals: u64,
}

impl Shard {
    /// An empty shard; `hasher` must be the one [`hash_name`] is called with.
    pub(super) fn new(hasher: Hasher) -> Self {
        Shard {
            hasher,
            index: HashTable::new(),
            slots: Vec::new(),
            keys: Keys::default(),
            rings: Rings::default(),
            histories: HistoryPool::default(),
            open_episodes: OpenEpisodes::default(),
            removals: 0,
        }
    }

    /// Number of series.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot of series `name`, whose hash is `hash`.
    #[inline]
    pub(super) fn find(&self, hash: u64, name: &str) -> Option<u32> {
        let name = name.as_bytes();
        self.index
            .find(hash, |&id| {
                self.keys.get(self.slots[id as usize].key) == name
            })
            .copied()
    }

    /// Adds series `name` (hash `hash`, not in the shard yet) with an empty
    /// window of `capacity` (at least 1) points; returns its slot.
    pub(super) fn insert(
        &mut self,
        hash: u64,
        name: &str,
        capacity: usize,
        profile: u16,
        generation: u16,
        now: u32,
    ) -> u32 {
        let id = u32::try_from(self.slots.len()).expect("fewer than 2^32 series per shard");
        let key = self.keys.push(name.as_bytes());
        let ring = self.rings.alloc(capacity, id);
        self.slots.push(Slot {
            detector: DetectorState::new(),
            last_seq: NO_SEQ,
            episode: EpisodeState::default(),
            profile,
            generation,
            last_seen: now,
            history: NO_HISTORY,
            stats: SeriesStats::default(),
            key,
            ring,
        });
        let Shard {
            hasher,
            index,
            slots,
            keys,
            ..
        } = self;
        index.insert_unique(hash, id, |&id| {
            hash_name_bytes(hasher, keys.get(slots[id as usize].key))
        });
        id
    }

    /// Series `id`.
    #[inline]
    pub(super) fn series(&mut self, id: u32) -> Series<'_> {
        Series {
            slot: &mut self.slots[id as usize],
            rings: &mut self.rings,
        }
    }

    /// Moves the window of series `id` to a ring of `capacity` (at least
    /// 1) points, keeping its most recent points.
    #[cold]
    #[inline(never)]
    pub(super) fn move_ring(&mut self, id: u32, capacity: usize) {
        let slot = &mut self.slots[id as usize];
        let old = slot.ring;
        let detector = &mut slot.detector;
        let (new, moved) = self
            .rings
            .replace(old, capacity, |from, to| detector.move_window(from, to));
        slot.ring = new;
        if let Some(owner) = moved {
            self.slots[owner as usize].ring = old;
        }
    }

    /// Every series: its name and slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.slots.iter().map(|s| (self.keys.get(s.key), s))
    }

    /// The name of series `id`.
    pub(super) fn name(&self, id: u32) -> &[u8] {
        self.keys.get(self.slots[id as usize].key)
    }

    /// The window ring of series `id`, for reading.
    pub(super) fn ring(&self, id: u32) -> &[f64] {
        self.rings.get(self.slots[id as usize].ring)
    }

    /// The slot of series `id`.
    pub(super) fn slot(&self, id: u32) -> &Slot {
        &self.slots[id as usize]
    }

    /// Gives series `id` an empty history.
    pub(super) fn add_history(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        if slot.history == NO_HISTORY {
            slot.history = self.histories.alloc();
        }
    }

    /// Drops the history of series `id`; returns whether it had one.
    pub(super) fn drop_history(&mut self, id: u32) -> bool {
        let slot = &mut self.slots[id as usize];
        let had = slot.history != NO_HISTORY;
        if had {
            self.histories.free(slot.history);
            slot.history = NO_HISTORY;
        }
        had
    }

    /// Appends to the history of series `id`, if it has one, keeping its
    /// newest `capacity` points.
    #[inline]
    pub(super) fn push_history(&mut self, id: u32, point: HistoryPoint, capacity: usize) {
        let history = self.slots[id as usize].history;
        if history != NO_HISTORY {
            self.histories.push(history, point, capacity);
        }
    }

    /// The history of series `id`, oldest first (empty when it has none).
    pub(super) fn history(&self, id: u32) -> impl Iterator<Item = &HistoryPoint> {
        let history = self.slots[id as usize].history;
        (history != NO_HISTORY)
            .then(|| self.histories.get(history).iter())
            .into_iter()
            .flatten()
    }

    /// Removes the series for which `keep(name, slot)` is false.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&[u8], &Slot) -> bool) -> Removed {
        let before = self.slots.len();
        let mut histories = 0;
        let mut episodes = Vec::new();
        let mut i = 0;
        while i < self.slots.len() {
            let slot = &self.slots[i];
            if keep(self.keys.get(slot.key), slot) {
                i += 1;
            } else {
                histories += usize::from(self.drop_history(i as u32));
                if let Some(episode) = self.end_episode(i as u32) {
                    episodes.push(episode);
                }
                // The last slot moves to `i`, which is looked at next.
                self.remove(i);
            }
        }
        let removed = before - self.slots.len();
        if removed > 0 {
            self.shrink();
        }
        Removed {
            series: removed,
            histories,
            episodes,
        }
    }

    /// Ends the open episode of series `id`, if any, at its last point;
    /// returns it.
    pub(super) fn end_episode(&mut self, id: u32) -> Option<EpisodeRecord> {
        let slot = &mut self.slots[id as usize];
        slot.episode.open()?;
        slot.episode = EpisodeState::default();
        let end = slot.stats.last_timestamp;
        let name = String::from_utf8_lossy(self.keys.get(slot.key));
        let open = self.open_episodes.remove(name.as_ref())?;
        Some(open.record(&name, Some(end)))
    }

    /// Series removed so far: ids found under one count stay valid while
    /// it does not change (see [`Shard::find`]).
    pub(super) fn removals(&self) -> u64 {
        self.removals
    }

    /// Removes slot `i`, moving the last slot into its place.
    fn remove(&mut self, i: usize) {
        self.removals += 1;
        let id = i as u32;
        let slot = &self.slots[i];
        let hash = hash_name_bytes(&self.hasher, self.keys.get(slot.key));
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == id) {
            entry.remove();
        }
        self.keys.remove(slot.key);
        let ring = slot.ring;
        if let Some(owner) = self.rings.free(ring) {
            self.slots[owner as usize].ring = ring;
        }
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            let last = self.slots.len() as u32;
            let hash = hash_name_bytes(&self.hasher, self.keys.get(moved.key));
            if let Some(entry) = self.index.find_mut(hash, |&s| s == last) {
                *entry = id;
            }
            self.rings.set_owner(moved.ring, id);
        }
    }

    /// Gives memory back after removals: compacts the names once garbage
    /// outweighs them, and halves the slots and the index once they are
    /// less than a quarter full.
    fn shrink(&mut self) {
        if self.keys.wants_compaction() {
            self.keys.compact(self.slots.iter_mut().map(|s| &mut s.key));
        }
        let len = self.slots.len();
        if self.slots.capacity() > 4 * len {
            self.slots.shrink_to(2 * len);
        }
        if self.open_episodes.capacity() > 4 * self.open_episodes.len().max(8) {
            self.open_episodes.shrink_to_fit();
        }
        if self.index.capacity() > 4 * len {
            let Shard {
                hasher,
                index,
                slots,
                keys,
                ..
            } = self;
            index.shrink_to(2 * len, |&id| {
                hash_name_bytes(hasher, keys.get(slots[id as usize].key))
            });
        }
    }
}

/// One series of a shard: its slot, and access to its ring.
pub(super) struct Series<'a> {
    /// The series' slot.
    pub(super) slot: &'a mut Slot,
    rings: &'a mut Rings,
}

impl<'a> Series<'a> {
    /// `true` when the ring holds `capacity` points; otherwise
    /// [`Shard::move_ring`] must move it before [`into_ring`](Self::into_ring).
    #[inline]
    pub(super) fn fits(&self, capacity: usize) -> bool {
        self.rings.capacity(self.slot.ring) == capacity
    }

    /// The slot and its ring.
    #[inline]
    pub(super) fn into_ring(self) -> (&'a mut Slot, &'a mut [f64]) {
        let ring = self.rings.get_mut(self.slot.ring);
        (self.slot, ring)
    }
}

/// [`hash_name`] of a name stored as bytes.
fn hash_name_bytes(hasher: &Hasher, name: &[u8]) -> u64 {
    hasher.hash_one(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(shard: &mut Shard, hasher: &Hasher, name: &str, capacity: usize) -> u32 {
        let hash = hash_name(hasher, name);
        assert_eq!(shard.find(hash, name), None);
        shard.insert(hash, name, capacity, 0, 0, 0)
    }

    /// The slot and ring of series `id`, moving its window to a ring of
    /// `capacity` first if needed (what the table does).
    fn series_mut(shard: &mut Shard, id: u32, capacity: usize) -> (&mut Slot, &mut [f64]) {
        if !shard.series(id).fits(capacity) {
            shard.move_ring(id, capacity);
        }
        shard.series(id).into_ring()
    }

    fn find(shard: &Shard, hasher: &Hasher, name: &str) -> Option<u32> {
        shard.find(hash_name(hasher, name), name)
    }

    /// Every name is found at a slot whose ring holds its tag, and the
    /// index, slots and rings agree.
    fn check(shard: &Shard, hasher: &Hasher, live: &[(String, f64)]) {
        assert_eq!(shard.len(), live.len());
        assert_eq!(shard.index.len(), live.len());
        for (name, tag) in live {
            let id = find(shard, hasher, name).expect(name);
            let slot = &shard.slots[id as usize];
            assert_eq!(shard.keys.get(slot.key), name.as_bytes());
            assert_eq!(slot.last_seen, *tag as u32);
            assert!(shard.rings.get(slot.ring).iter().all(|x| x == tag));
            // Every seventh series has a history holding its tag.
            let history: Vec<f64> = shard.history(id).map(|p| p.value).collect();
            let expected: &[f64] = if (*tag as u32).is_multiple_of(7) {
                &[*tag]
            } else {
                &[]
            };
            assert_eq!(history, expected, "history of {name}");
        }
    }

    #[test]
    fn series_survive_removals_of_others() {
        let hasher = Hasher::default();
        let mut shard = Shard::new(hasher.clone());
        let mut live = Vec::new();
        for i in 0..2_000u32 {
            let name = format!("s{i}");
            // Three window sizes, so three pools.
            let capacity = [30, 7, 1_000][i as usize % 3];
            let id = insert(&mut shard, &hasher, &name, capacity);
            let (slot, ring) = series_mut(&mut shard, id, capacity);
            slot.last_seen = i;
            ring.fill(f64::from(i));
            if i % 7 == 0 {
                shard.add_history(id);
                let point = HistoryPoint::new(
                    f64::from(i),
                    f64::from(i),
                    &crate::detect::Verdict::WarmingUp { have: 0, need: 1 },
                    false,
                );
                shard.push_history(id, point, 4);
            }
            live.push((name, f64::from(i)));
        }
        check(&shard, &hasher, &live);
        let removed = shard.retain(|name, _| !name.ends_with(b"3") && !name.ends_with(b"5"));
        let histories = (0..2_000u32)
            .filter(|i| i % 7 == 0 && matches!(i % 10, 3 | 5))
            .count();
        live.retain(|(name, _)| !name.ends_with('3') && !name.ends_with('5'));
        assert_eq!(
            removed,
            Removed {
                series: 400,
                histories,
                episodes: Vec::new(),
            }
        );
        check(&shard, &hasher, &live);
        assert_eq!(find(&shard, &hasher, "s13"), None);
        // Removing most series shrinks the slots and compacts the names.
        shard.retain(|name, _| name.len() <= 3);
        live.retain(|(name, _)| name.len() <= 3);
        check(&shard, &hasher, &live);
        assert!(shard.slots.capacity() <= 4 * live.len());
        assert!(!shard.keys.wants_compaction());
        // Names can come back.
        let id = insert(&mut shard, &hasher, "s13", 5);
        shard.series(id).slot.last_seen = 13;
        series_mut(&mut shard, id, 5).1.fill(13.0);
        live.push(("s13".into(), 13.0));
        check(&shard, &hasher, &live);
        shard.retain(|_, _| false);
        assert_eq!(shard.len(), 0);
        assert_eq!(find(&shard, &hasher, "s13"), None);
    }

    #[test]
    fn a_new_capacity_moves_the_window() {
        let hasher = Hasher::default();
        let mut shard = Shard::new(hasher.clone());
        let settings = crate::detect::DetectorSettings {
            window_size: 4,
            min_samples: 1,
            ..Default::default()
        };
        let a = insert(&mut shard, &hasher, "a", 4);
        let b = insert(&mut shard, &hasher, "b", 4);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            for id in [a, b] {
                let (slot, ring) = series_mut(&mut shard, id, 4);
                slot.detector.observe(ring, x, &settings);
            }
        }
        // `a` moves to a ring of 3: `b` takes its place in the pool of 4.
        let (slot, ring) = series_mut(&mut shard, a, 3);
        assert_eq!(ring.len(), 3);
        assert_eq!(
            slot.detector.window().iter(ring).collect::<Vec<_>>(),
            [3.0, 4.0, 5.0]
        );
        let (slot, ring) = series_mut(&mut shard, b, 4);
        assert_eq!(
            slot.detector.window().iter(ring).collect::<Vec<_>>(),
            [2.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn slots_stay_small() {
        // 1M series at window 30 take 1M × (120 + 240 + 4 ring owner + about
        // 8 name + 5 to 10 index) bytes: about 370 MiB, without histories
        // (goal 400 MiB RSS, measured with load.sh).
        assert_eq!(std::mem::size_of::<Slot>(), 120);
        assert_eq!(std::mem::size_of::<SeriesStats>(), 28);
    }
}
