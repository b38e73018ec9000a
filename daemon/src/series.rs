//! The table of live series: one detector per series, looked up by name.
//!
//! It applies points to their series' detector under a per-shard lock, skips
//! repeated `seq`s, enforces `max_series`, forgets series idle for longer than
//! their `series_ttl`, and re-resolves a series' settings (rules) when the
//! configuration changes, keeping the window. Both the server and `replay` go
//! through it, so they give the same verdicts for the same stream.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
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
type Shard = Mutex<HashMap<Box<str>, SeriesState>>;

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
    hasher: RandomState,
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
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
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

    fn shard(&self, series: &str) -> MutexGuard<'_, HashMap<Box<str>, SeriesState>> {
        let index = self.hasher.hash_one(series) as usize & (SHARDS - 1);
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

    /// Makes sure every series named in `points` exists, creating the missing
    /// ones only if all of them fit under `max_series`. On failure nothing is
    /// created, so a refused batch leaves no trace.
    fn ensure_series(
        &self,
        profiles: &Profiles,
        points: &[DataPoint<'_>],
    ) -> Result<(), TooManySeries> {
        let now = self.now_secs();
        let mut missing: Vec<&str> = Vec::new();
        for point in points {
            let name = point.series.as_ref();
            if !missing.contains(&name) && !self.shard(name).contains_key(name) {
                missing.push(name);
            }
            if missing.len() > 64 {
                // Large batches of new series: dedupe by sorting below.
                break;
            }
        }
        if missing.len() > 64 {
            missing = points.iter().map(|p| p.series.as_ref()).collect();
            missing.sort_unstable();
            missing.dedup();
            missing.retain(|name| !self.shard(name).contains_key(*name));
        }
        if missing.is_empty() {
            return Ok(());
        }
        let limit = self.max_series.load(Ordering::Relaxed);
        let wanted = missing.len();
        // Reserve room for all of them at once, or for none.
        let reserved = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count.saturating_add(wanted) <= limit).then_some(count + wanted)
            })
            .is_ok();
        if !reserved {
            return Err(TooManySeries { limit });
        }
        let mut unused = 0;
        for name in missing {
            let mut shard = self.shard(name);
            if shard.contains_key(name) {
                // Another request created it meanwhile.
                unused += 1;
            } else {
                shard.insert(name.into(), Self::new_state(profiles, name, now));
            }
        }
        if unused > 0 {
            self.count.fetch_sub(unused, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Applies `points` in order. Either every point is applied or, when new
    /// series would exceed `max_series`, none is.
    pub fn observe_batch(
        &self,
        points: &[DataPoint<'_>],
    ) -> Result<Vec<Observation>, TooManySeries> {
        let profiles = self.current();
        self.ensure_series(&profiles, points)?;
        let now = self.now_secs();
        let observations = points
            .iter()
            .map(|point| self.apply(&profiles, point, now))
            .collect();
        Ok(observations)
    }

    fn apply(&self, profiles: &Profiles, point: &DataPoint<'_>, now: u32) -> Observation {
        let name = point.series.as_ref();
        let mut shard = self.shard(name);
        let state = match shard.get_mut(name) {
            Some(state) => state,
            None => {
                // Swept between ensure_series and here (it was idle before
                // this very batch): re-create it; the limit was already
                // reserved for it once.
                self.count.fetch_add(1, Ordering::AcqRel);
                shard
                    .entry(name.into())
                    .or_insert_with(|| Self::new_state(profiles, name, now))
            }
        };
        state.last_seen = now;
        if state.generation != profiles.generation {
            state.profile = profiles.profile_of(name);
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
