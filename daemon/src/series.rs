//! The table of live series: one detector per series, looked up by name.
//!
//! It applies points to their series' detector under a per-shard lock, skips
//! repeated `seq`s, enforces `max_series`, forgets series idle for longer than
//! their `series_ttl`, and re-resolves a series' settings (rules) when the
//! configuration changes, keeping the window. Both the server and `replay` go
//! through it, so they give the same verdicts for the same stream.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::api::{AnomalyRecord, DataPoint};
use crate::config::{Config, SeriesSettings};
use crate::detector::{Baseline, Direction, SeriesDetector, Side, Verdict};

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
}

/// One series' state.
struct SeriesState {
    detector: SeriesDetector,
    /// Index into [`Profiles::settings`] of the generation below.
    profile: u32,
    generation: u32,
    last_seq: Option<u64>,
    /// Seconds since the table was created, when the last point arrived.
    last_seen: u32,
}

/// One independently locked part of the table.
type Shard = Mutex<HashMap<Box<str>, SeriesState, Hasher>>;

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
    shards: Box<[Shard]>,
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
        SeriesTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
            hasher: Hasher::default(),
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

    fn shard_index(&self, series: &str) -> usize {
        self.hasher.hash_one(series) as usize & (SHARDS - 1)
    }

    fn lock_shard(&self, index: usize) -> MutexGuard<'_, HashMap<Box<str>, SeriesState, Hasher>> {
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

    fn new_state(profiles: &Profiles, series: &str, now: u32) -> SeriesState {
        let profile = profiles.profile_of(series);
        SeriesState {
            detector: SeriesDetector::new(&profiles.settings[profile as usize].detector),
            profile,
            generation: profiles.generation,
            last_seq: None,
            last_seen: now,
        }
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
        // Indices of the points grouped by shard, in batch order within each.
        let shard_of: Vec<u8> = points
            .iter()
            .map(|p| self.shard_index(&p.series) as u8)
            .collect();
        let mut starts = [0usize; SHARDS + 1];
        for &shard in &shard_of {
            starts[shard as usize + 1] += 1;
        }
        for i in 0..SHARDS {
            starts[i + 1] += starts[i];
        }
        let mut order = vec![0u32; points.len()];
        let mut fill = starts;
        for (i, &shard) in shard_of.iter().enumerate() {
            order[fill[shard as usize]] = i as u32;
            fill[shard as usize] += 1;
        }
        let groups = || {
            (0..SHARDS)
                .filter(|&s| starts[s] < starts[s + 1])
                .map(|s| (s, &order[starts[s]..starts[s + 1]]))
        };

        // Count the distinct series this batch would create.
        let mut missing: Vec<&str> = Vec::new();
        for (shard, indices) in groups() {
            let map = self.lock_shard(shard);
            let first_new = missing.len();
            for &i in indices {
                let name = points[i as usize].series.as_ref();
                if !map.contains_key(name) && !missing[first_new..].contains(&name) {
                    missing.push(name);
                }
            }
        }
        self.reserve(missing.len())?;

        let placeholder = Observation {
            duplicate: true,
            verdict: Verdict::WarmingUp { have: 0, need: 0 },
            direction: Direction::Upper,
        };
        let mut observations = vec![placeholder; points.len()];
        let mut created = 0usize;
        for (shard, indices) in groups() {
            let mut map = self.lock_shard(shard);
            for &i in indices {
                let point = &points[i as usize];
                let name = point.series.as_ref();
                let state = match map.get_mut(name) {
                    Some(state) => state,
                    None => {
                        created += 1;
                        map.entry(name.into())
                            .or_insert_with(|| Self::new_state(&profiles, name, now))
                    }
                };
                observations[i as usize] = Self::apply(&profiles, state, point, now);
            }
        }
        // Series created meanwhile by other requests were reserved but not
        // needed; series swept since the count were created on top.
        match created.cmp(&missing.len()) {
            std::cmp::Ordering::Less => {
                self.count
                    .fetch_sub(missing.len() - created, Ordering::AcqRel);
            }
            std::cmp::Ordering::Greater => {
                self.count
                    .fetch_add(created - missing.len(), Ordering::AcqRel);
            }
            std::cmp::Ordering::Equal => {}
        }
        Ok(observations)
    }

    /// One point: one lock, one lookup.
    fn observe_one(
        &self,
        profiles: &Profiles,
        point: &DataPoint<'_>,
        now: u32,
    ) -> Result<Observation, TooManySeries> {
        let name = point.series.as_ref();
        let mut map = self.lock_shard(self.shard_index(name));
        let state = match map.get_mut(name) {
            Some(state) => state,
            None => {
                self.reserve(1)?;
                map.entry(name.into())
                    .or_insert_with(|| Self::new_state(profiles, name, now))
            }
        };
        Ok(Self::apply(profiles, state, point, now))
    }

    fn apply(
        profiles: &Profiles,
        state: &mut SeriesState,
        point: &DataPoint<'_>,
        now: u32,
    ) -> Observation {
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
        Observation {
            duplicate: false,
            verdict: state.detector.observe(point.value, settings),
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
            let before = shard.len();
            shard.retain(|name, state| {
                let profile = if state.generation == profiles.generation {
                    state.profile
                } else {
                    profiles.profile_of(name)
                };
                let ttl = profiles.settings[profile as usize].series_ttl.as_secs();
                u64::from(now.saturating_sub(state.last_seen)) <= ttl
            });
            removed += before - shard.len();
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
                let profile = if state.generation == profiles.generation {
                    state.profile
                } else {
                    profiles.profile_of(name)
                };
                if state
                    .detector
                    .is_warming_up(&profiles.settings[profile as usize].detector)
                {
                    stats.warming_up += 1;
                }
            }
        }
        stats
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
}
