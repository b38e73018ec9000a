//! The table of live series: one detector per series, looked up by name.
//!
//! It applies points to their series' detector under a per-shard lock, skips
//! repeated `seq`s, enforces `max_series`, forgets series idle for longer than
//! their `series_ttl`, and re-resolves a series' settings (rules) when the
//! configuration changes, keeping the window. Both the server and `replay` go
//! through it, so they give the same verdicts for the same stream.
//!
//! Memory is what limits the number of series, so a series is stored
//! compactly (see the `shard` module): at window 30, about 350 bytes, 240 of
//! them the window's points.

mod keys;
mod rings;
mod shard;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::api::AnomalyRecord;
use crate::config::{Config, SeriesSettings};
use crate::detect::{Baseline, Direction, Side, Verdict};
use crate::ingest::DataPoint;
use shard::{Shard, Slot, hash_name};

/// Number of independently locked shards; a power of two.
const SHARDS: usize = 64;

/// A point for a new series was refused because the table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many series: the limit of {limit} ([server] max_series) is reached; existing series keep working, idle ones are forgotten after their series_ttl"
)]
pub struct TooManySeries {
    /// The configured limit.
    pub limit: usize,
}

/// What happened to one point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The point's `seq` was already applied; nothing else happened.
    pub duplicate: bool,
    /// The detector's verdict (`WarmingUp` for duplicates).
    pub verdict: Verdict,
    /// The direction setting the point was judged with.
    pub direction: Direction,
}

impl Observation {
    /// A slot not filled yet (as a duplicate: it claims nothing).
    const PLACEHOLDER: Observation = Observation {
        duplicate: true,
        verdict: Verdict::WarmingUp { have: 0, need: 0 },
        direction: Direction::Upper,
    };

    /// The anomaly record for `point`, when the verdict is an anomaly.
    pub fn record(&self, point: &DataPoint<'_>, timestamp: f64) -> Option<AnomalyRecord> {
        let Verdict::Anomaly(baseline, side) = self.verdict else {
            return None;
        };
        Some(AnomalyRecord {
            series: point.series.to_string(),
            value: point.value,
            timestamp,
            mean: baseline.mean,
            std_dev: baseline.std_dev,
            threshold: crossed_threshold(&baseline, side),
            direction: side,
            seq: point.seq,
        })
    }
}

/// The threshold on the side that was crossed.
pub fn crossed_threshold(baseline: &Baseline, side: Side) -> f64 {
    match side {
        Side::Upper => baseline.threshold,
        Side::Lower => baseline.lower_threshold,
    }
}

/// Settings resolved from one configuration: index 0 holds the `[detector]`
/// defaults, index `i + 1` the settings of rule `i`.
struct Profiles {
    generation: u32,
    config: Arc<Config>,
    settings: Vec<SeriesSettings>,
}

impl Profiles {
    fn new(config: Arc<Config>, generation: u32) -> Self {
        let settings = (0..=config.rules.len())
            .map(|i| config.profile_settings(i.checked_sub(1)))
            .collect();
        Profiles {
            generation,
            config,
            settings,
        }
    }

    fn profile_of(&self, series: &str) -> u32 {
        self.config
            .matching_rule(series)
            .map_or(0, |i| i as u32 + 1)
    }

    /// The settings of a stored series, without updating its profile.
    fn settings_of(&self, name: &[u8], state: &Slot) -> &SeriesSettings {
        let profile = if state.generation == self.generation {
            state.profile
        } else {
            // Names are stored from `&str`: the conversion is lossless.
            self.profile_of(&String::from_utf8_lossy(name))
        };
        &self.settings[profile as usize]
    }
}

/// Hashing of series names: foldhash is several times faster than SipHash
/// on short keys and is still seeded per process.
type Hasher = foldhash::fast::RandomState;

/// Counts taken by a scan of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Series currently held.
    pub series: usize,
    /// Of those, series still warming up.
    pub warming_up: usize,
}

/// All live series.
pub struct SeriesTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: Hasher,
    count: AtomicUsize,
    max_series: AtomicUsize,
    profiles: RwLock<Arc<Profiles>>,
    next_generation: AtomicU32,
    started: Instant,
}

impl SeriesTable {
    /// An empty table using `config`; `max_series` caps the number of series.
    pub fn new(config: Arc<Config>) -> Self {
        let max_series = config.server.max_series;
        let hasher = Hasher::default();
        SeriesTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(hasher.clone())))
                .collect(),
            hasher,
            count: AtomicUsize::new(0),
            max_series: AtomicUsize::new(max_series),
            profiles: RwLock::new(Arc::new(Profiles::new(config, 0))),
            next_generation: AtomicU32::new(1),
            started: Instant::now(),
        }
    }

    /// Switches to a new configuration. Every series keeps its window; its
    /// settings are re-resolved (rules) at its next point.
    pub fn set_config(&self, config: Arc<Config>) {
        self.max_series
            .store(config.server.max_series, Ordering::Relaxed);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        *self.profiles.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Profiles::new(config, generation));
    }

    /// Lifts the series limit (for `replay`, which has no memory budget to
    /// defend).
    pub fn unlimited(&self) {
        self.max_series.store(usize::MAX, Ordering::Relaxed);
    }

    /// Number of live series.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no series is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard of a name's hash. Within a shard, the index uses the low
    /// bits (bucket) and the top 7 bits (tag) of the same hash, so the
    /// shard comes from bits in between.
    fn shard_of(hash: u64) -> usize {
        (hash >> 32) as usize & (SHARDS - 1)
    }

    fn lock_shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn current(&self) -> Arc<Profiles> {
        self.profiles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds series `name` to `shard`; returns its slot.
    fn create(profiles: &Profiles, shard: &mut Shard, hash: u64, name: &str, now: u32) -> u32 {
        let profile = profiles.profile_of(name);
        let capacity = profiles.settings[profile as usize]
            .detector
            .window_capacity();
        shard.insert(hash, name, capacity, profile, profiles.generation, now)
    }

    /// Takes room for `wanted` new series, or for none.
    fn reserve(&self, wanted: usize) -> Result<(), TooManySeries> {
        if wanted == 0 {
            return Ok(());
        }
        let limit = self.max_series.load(Ordering::Relaxed);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count.saturating_add(wanted) <= limit).then_some(count + wanted)
            })
            .map(drop)
            .map_err(|_| TooManySeries { limit })
    }

    /// Applies one point (the single-point request path, without the
    /// batch's allocations).
    pub fn observe_point(&self, point: &DataPoint<'_>) -> Result<Observation, TooManySeries> {
        let profiles = self.current();
        let now = self.now_secs();
        self.observe_one(&profiles, point, now)
    }

    /// Applies `points` in order. Either every point is applied or, when new
    /// series would exceed `max_series`, none is.
    ///
    /// Points are processed shard by shard (keeping their order within each
    /// series, which is all that matters), so a batch takes each shard's
    /// lock at most twice: once to count the series it would create, once
    /// to apply.
    pub fn observe_batch(
        &self,
        points: &[DataPoint<'_>],
    ) -> Result<Vec<Observation>, TooManySeries> {
        let profiles = self.current();
        let now = self.now_secs();
        if let [point] = points {
            return self.observe_one(&profiles, point, now).map(|obs| vec![obs]);
        }
        let hashes: Vec<u64> = points
            .iter()
            .map(|p| hash_name(&self.hasher, &p.series))
            .collect();
        let groups = ShardGroups::new(&hashes);
        let missing = self.missing_series(points, &hashes, &groups);
        self.reserve(missing)?;
        let mut observations = vec![Observation::PLACEHOLDER; points.len()];
        let mut created = 0usize;
        for (shard, indices) in groups.iter() {
            let mut shard = self.lock_shard(shard);
            for &i in indices {
                let point = &points[i as usize];
                let (hash, name) = (hashes[i as usize], point.series.as_ref());
                let id = match shard.find(hash, name) {
                    Some(id) => id,
                    None => {
                        created += 1;
                        Self::create(&profiles, &mut shard, hash, name, now)
                    }
                };
                observations[i as usize] = Self::apply(&profiles, &mut shard, id, point, now);
            }
        }
        self.settle_reservation(missing, created);
        Ok(observations)
    }

    /// The number of distinct series of `points` not in the table yet.
    fn missing_series(
        &self,
        points: &[DataPoint<'_>],
        hashes: &[u64],
        groups: &ShardGroups,
    ) -> usize {
        let mut missing: Vec<&str> = Vec::new();
        for (shard, indices) in groups.iter() {
            let shard = self.lock_shard(shard);
            let first_new = missing.len();
            for &i in indices {
                let name = points[i as usize].series.as_ref();
                if shard.find(hashes[i as usize], name).is_none()
                    && !missing[first_new..].contains(&name)
                {
                    missing.push(name);
                }
            }
        }
        missing.len()
    }

    /// Corrects the series count after a batch that reserved `reserved`
    /// new series and created `created`: series created meanwhile by
    /// other requests were reserved but not needed; series swept since the
    /// count were created on top.
    fn settle_reservation(&self, reserved: usize, created: usize) {
        match created.cmp(&reserved) {
            std::cmp::Ordering::Less => {
                self.count.fetch_sub(reserved - created, Ordering::AcqRel);
            }
            std::cmp::Ordering::Greater => {
                self.count.fetch_add(created - reserved, Ordering::AcqRel);
            }
            std::cmp::Ordering::Equal => {}
        }
    }

    /// One point: one lock, one lookup.
    fn observe_one(
        &self,
        profiles: &Profiles,
        point: &DataPoint<'_>,
        now: u32,
    ) -> Result<Observation, TooManySeries> {
        let name = point.series.as_ref();
        let hash = hash_name(&self.hasher, name);
        let mut shard = self.lock_shard(Self::shard_of(hash));
        let id = match shard.find(hash, name) {
            Some(id) => id,
            None => {
                self.reserve(1)?;
                Self::create(profiles, &mut shard, hash, name, now)
            }
        };
        Ok(Self::apply(profiles, &mut shard, id, point, now))
    }

    fn apply(
        profiles: &Profiles,
        shard: &mut Shard,
        id: u32,
        point: &DataPoint<'_>,
        now: u32,
    ) -> Observation {
        let mut series = shard.series(id);
        let state = &mut *series.slot;
        state.last_seen = now;
        if state.generation != profiles.generation {
            state.profile = profiles.profile_of(&point.series);
            state.generation = profiles.generation;
        }
        let settings = &profiles.settings[state.profile as usize].detector;
        if let Some(seq) = point.seq {
            if state.last_seq.is_some_and(|last| seq <= last) {
                return Observation {
                    duplicate: true,
                    verdict: Verdict::WarmingUp {
                        have: state.detector.window().len(),
                        need: settings.min_samples,
                    },
                    direction: settings.direction,
                };
            }
            state.last_seq = Some(seq);
        }
        let capacity = settings.window_capacity();
        if !series.fits(capacity) {
            // A new window size (configuration reloaded).
            shard.move_ring(id, capacity);
            series = shard.series(id);
        }
        let (state, ring) = series.into_ring();
        Observation {
            duplicate: false,
            verdict: state.detector.observe(ring, point.value, settings),
            direction: settings.direction,
        }
    }

    /// Forgets series that received no point for longer than their
    /// `series_ttl`; returns how many were removed.
    pub fn sweep_idle(&self) -> usize {
        let profiles = self.current();
        let now = self.now_secs();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            removed += shard.retain(|name, state| {
                let settings = profiles.settings_of(name, state);
                u64::from(now.saturating_sub(state.last_seen)) <= settings.series_ttl.as_secs()
            });
        }
        if removed > 0 {
            self.count.fetch_sub(removed, Ordering::AcqRel);
        }
        removed
    }

    /// Counts series and series still warming up.
    pub fn stats(&self) -> TableStats {
        let profiles = self.current();
        let mut stats = TableStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            stats.series += shard.len();
            for (name, state) in shard.iter() {
                if state
                    .detector
                    .is_warming_up(&profiles.settings_of(name, state).detector)
                {
                    stats.warming_up += 1;
                }
            }
        }
        stats
    }
}

/// The indices of a batch's points grouped by shard, in batch order
/// within each shard (a counting sort on the shard of each hash).
struct ShardGroups {
    /// `starts[s]..starts[s + 1]` is shard `s`'s range of `order`.
    starts: [usize; SHARDS + 1],
    order: Vec<u32>,
}

impl ShardGroups {
    fn new(hashes: &[u64]) -> ShardGroups {
        let mut starts = [0usize; SHARDS + 1];
        for &hash in hashes {
            starts[SeriesTable::shard_of(hash) + 1] += 1;
        }
        for i in 0..SHARDS {
            starts[i + 1] += starts[i];
        }
        let mut order = vec![0u32; hashes.len()];
        let mut fill = starts;
        for (i, &hash) in hashes.iter().enumerate() {
            let shard = SeriesTable::shard_of(hash);
            order[fill[shard]] = i as u32;
            fill[shard] += 1;
        }
        ShardGroups { starts, order }
    }

    /// `(shard, point indices)` for every shard the batch touches.
    fn iter(&self) -> impl Iterator<Item = (usize, &[u32])> {
        (0..SHARDS)
            .filter(|&s| self.starts[s] < self.starts[s + 1])
            .map(|s| (s, &self.order[self.starts[s]..self.starts[s + 1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn config(text: &str) -> Arc<Config> {
        Arc::new(Config::from_toml_str(text, std::path::Path::new("test.toml")).unwrap())
    }

    fn point(series: &str, value: f64, seq: Option<u64>) -> DataPoint<'static> {
        DataPoint {
            value,
            timestamp: Some(1.0),
            series: Cow::Owned(series.to_owned()),
            seq,
        }
    }

    #[test]
    fn duplicate_seq_is_not_applied() {
        let table = SeriesTable::new(config("[detector]\nwindow_size = 3\n"));
        let obs = table.observe_batch(&[point("a", 1.0, Some(5))]).unwrap();
        assert!(!obs[0].duplicate);
        for seq in [5, 4] {
            let obs = table
                .observe_batch(&[point("a", 100.0, Some(seq))])
                .unwrap();
            assert!(obs[0].duplicate);
        }
        // Only one point entered the window: still warming up with 1 of 3.
        let obs = table.observe_batch(&[point("a", 1.0, Some(6))]).unwrap();
        assert_eq!(obs[0].verdict, Verdict::WarmingUp { have: 1, need: 3 });
    }

    #[test]
    fn max_series_refuses_new_series_whole_batch() {
        let table = SeriesTable::new(config("[server]\nmax_series = 2\n"));
        table.observe_batch(&[point("a", 1.0, None)]).unwrap();
        let err = table
            .observe_batch(&[
                point("a", 1.0, None),
                point("b", 1.0, None),
                point("c", 1.0, None),
            ])
            .unwrap_err();
        assert_eq!(err.limit, 2);
        assert_eq!(table.len(), 1, "a refused batch creates no series");
        table.observe_batch(&[point("b", 1.0, None)]).unwrap();
        assert_eq!(table.len(), 2);
        assert!(table.observe_batch(&[point("c", 1.0, None)]).is_err());
        assert!(table.observe_batch(&[point("a", 2.0, None)]).is_ok());
    }

    #[test]
    fn rules_apply_per_series() {
        let table = SeriesTable::new(config(
            "[detector]\nwindow_size = 4\n[[rule]]\nseries = \"fast.*\"\nwindow_size = 2\n",
        ));
        let obs = table
            .observe_batch(&[point("fast.x", 1.0, None), point("slow", 1.0, None)])
            .unwrap();
        assert_eq!(obs[0].verdict, Verdict::WarmingUp { have: 0, need: 2 });
        assert_eq!(obs[1].verdict, Verdict::WarmingUp { have: 0, need: 4 });
    }

    #[test]
    fn a_new_config_keeps_windows() {
        let table = SeriesTable::new(config("[detector]\nwindow_size = 4\n"));
        for v in [1.0, 2.0, 1.0] {
            table.observe_batch(&[point("a", v, None)]).unwrap();
        }
        table.set_config(config("[detector]\nwindow_size = 3\n"));
        let obs = table.observe_batch(&[point("a", 1.5, None)]).unwrap();
        assert!(matches!(obs[0].verdict, Verdict::Normal(_)), "{:?}", obs[0]);
    }

    #[test]
    fn a_batch_gives_the_same_verdicts_as_points_one_by_one() {
        let text = "[detector]\nwindow_size = 4\ndirection = \"both\"\n";
        let batched = SeriesTable::new(config(text));
        let single = SeriesTable::new(config(text));
        // 100 series interleaved, with spikes, so every shard is used and
        // order within a series matters.
        let points: Vec<DataPoint<'static>> = (0..1000u64)
            .map(|i| {
                let value = if i % 37 == 0 { 50.0 } else { (i % 7) as f64 };
                point(&format!("s{}", i % 100), value, Some(i))
            })
            .collect();
        let from_batch = batched.observe_batch(&points).unwrap();
        let one_by_one: Vec<Observation> = points
            .iter()
            .map(|p| single.observe_batch(std::slice::from_ref(p)).unwrap()[0])
            .collect();
        assert_eq!(from_batch, one_by_one);
        assert!(
            from_batch
                .iter()
                .any(|o| matches!(o.verdict, Verdict::Anomaly(..)))
        );
        assert_eq!(batched.len(), 100);
        // A resent batch is all duplicates.
        let again = batched.observe_batch(&points).unwrap();
        assert!(again.iter().all(|o| o.duplicate));
        assert_eq!(batched.len(), 100);
    }

    #[test]
    fn stats_count_warming_series() {
        let table = SeriesTable::new(config("[detector]\nwindow_size = 2\n"));
        table
            .observe_batch(&[
                point("a", 1.0, None),
                point("a", 1.0, None),
                point("b", 1.0, None),
            ])
            .unwrap();
        assert_eq!(
            table.stats(),
            TableStats {
                series: 2,
                warming_up: 1
            }
        );
        assert_eq!(table.sweep_idle(), 0);
    }

    /// Moves the table's clock `secs` seconds forward.
    fn advance(table: &mut SeriesTable, secs: u64) {
        table.started = table
            .started
            .checked_sub(std::time::Duration::from_secs(secs))
            .expect("the clock starts late enough");
    }

    #[test]
    fn sweep_forgets_idle_series_by_their_ttl() {
        let mut table = SeriesTable::new(config(
            "[detector]\nseries_ttl = \"10s\"\n[[rule]]\nseries = \"long.*\"\nseries_ttl = \"1h\"\n",
        ));
        table
            .observe_batch(&[point("a", 1.0, None), point("long.a", 1.0, None)])
            .unwrap();
        advance(&mut table, 8);
        table.observe_batch(&[point("b", 1.0, None)]).unwrap();
        advance(&mut table, 8);
        assert_eq!(table.sweep_idle(), 1, "`a` is 16 s old");
        assert_eq!(table.stats().series, 2);
        advance(&mut table, 8);
        assert_eq!(table.sweep_idle(), 1, "`b` is 16 s old");
        // `a` comes back as a new series.
        let obs = table.observe_batch(&[point("a", 1.0, None)]).unwrap();
        assert_eq!(obs[0].verdict, Verdict::WarmingUp { have: 0, need: 30 });
        assert_eq!(table.len(), 2);
    }

    mod props {
        use super::*;
        use crate::detect::SeriesDetector;
        use proptest::prelude::*;
        use std::collections::HashMap;

        /// Configurations switched between: different window sizes per
        /// rule, so that windows move between pools.
        const CONFIGS: [&str; 3] = [
            "[detector]\nwindow_size = 4\ndirection = \"both\"\nseries_ttl = \"5s\"\n\
             [[rule]]\nseries = \"r*\"\nwindow_size = 7\nseries_ttl = \"20s\"\n",
            "[detector]\nwindow_size = 3\nmin_samples = 1\nexclude_anomalies = true\n\
             max_excluded_run = 3\nseries_ttl = \"9s\"\n\
             [[rule]]\nseries = \"s1*\"\nwindow_size = 40\n\
             [[rule]]\nseries = \"r*\"\nwindow_size = 2\nseries_ttl = \"3s\"\n",
            "[detector]\nwindow_size = 5\nthreshold_multiplier = 1.0\nseries_ttl = \"4s\"\n",
        ];

        #[derive(Clone, Debug)]
        enum Op {
            /// Points: (name index, value, seq).
            Batch(Vec<(usize, f64, Option<u64>)>),
            Reload(usize),
            Advance(u64),
            Sweep,
        }

        fn name(i: usize) -> String {
            if i < 20 {
                format!("s{i}")
            } else {
                format!("r{i}")
            }
        }

        fn op() -> impl Strategy<Value = Op> {
            let value = prop_oneof![8 => 0.0f64..10.0, 1 => 100.0f64..200.0];
            let point = (0usize..30, value, prop::option::of(0u64..40));
            prop_oneof![
                10 => prop::collection::vec(point, 1..40).prop_map(Op::Batch),
                1 => (0..CONFIGS.len()).prop_map(Op::Reload),
                2 => (0u64..6).prop_map(Op::Advance),
                2 => Just(Op::Sweep),
            ]
        }

        /// The table's semantics, one `SeriesDetector` per series in a
        /// `HashMap`: settings are those of the current configuration.
        #[derive(Default)]
        struct Reference {
            series: HashMap<String, (SeriesDetector, Option<u64>, u64)>,
            now: u64,
        }

        impl Reference {
            fn settings(config: &Config, name: &str) -> SeriesSettings {
                config.profile_settings(config.matching_rule(name))
            }

            fn observe(&mut self, config: &Config, point: &DataPoint<'_>) -> Observation {
                let settings = Self::settings(config, &point.series);
                let s = &settings.detector;
                let (detector, last_seq, last_seen) = self
                    .series
                    .entry(point.series.to_string())
                    .or_insert_with(|| (SeriesDetector::new(s), None, 0));
                *last_seen = self.now;
                if let Some(seq) = point.seq {
                    if last_seq.is_some_and(|last| seq <= last) {
                        return Observation {
                            duplicate: true,
                            verdict: Verdict::WarmingUp {
                                have: detector.window().len(),
                                need: s.min_samples,
                            },
                            direction: s.direction,
                        };
                    }
                    *last_seq = Some(seq);
                }
                Observation {
                    duplicate: false,
                    verdict: detector.observe(point.value, s),
                    direction: s.direction,
                }
            }

            fn sweep(&mut self, config: &Config) -> usize {
                let before = self.series.len();
                let now = self.now;
                self.series.retain(|name, (_, _, last_seen)| {
                    now - *last_seen <= Self::settings(config, name).series_ttl.as_secs()
                });
                before - self.series.len()
            }

            fn stats(&self, config: &Config) -> TableStats {
                TableStats {
                    series: self.series.len(),
                    warming_up: self
                        .series
                        .iter()
                        .filter(|(name, (d, _, _))| {
                            d.is_warming_up(&Self::settings(config, name).detector)
                        })
                        .count(),
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 300,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn table_matches_a_map_of_detectors(ops in prop::collection::vec(op(), 1..60)) {
                let configs: Vec<Arc<Config>> = CONFIGS.iter().map(|text| config(text)).collect();
                let mut current = configs[0].clone();
                let mut table = SeriesTable::new(current.clone());
                table.unlimited();
                let mut reference = Reference::default();
                for op in ops {
                    match op {
                        Op::Batch(points) => {
                            let points: Vec<DataPoint<'static>> = points
                                .iter()
                                .map(|&(i, value, seq)| point(&name(i), value, seq))
                                .collect();
                            let got = table.observe_batch(&points).unwrap();
                            let want: Vec<Observation> = points
                                .iter()
                                .map(|p| reference.observe(&current, p))
                                .collect();
                            prop_assert_eq!(got, want);
                        }
                        Op::Reload(i) => {
                            current = configs[i].clone();
                            table.set_config(current.clone());
                        }
                        Op::Advance(secs) => {
                            advance(&mut table, secs);
                            reference.now += secs;
                        }
                        Op::Sweep => {
                            prop_assert_eq!(table.sweep_idle(), reference.sweep(&current));
                        }
                    }
                    prop_assert_eq!(table.len(), reference.series.len());
                    prop_assert_eq!(table.stats(), reference.stats(&current));
                }
            }
        }
    }
}
