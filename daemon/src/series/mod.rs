//! The table of live series: one detector per series, looked up by name.
//!
//! It applies points to their series' detector under a per-shard lock, skips
//! repeated `seq`s, enforces `max_series`, forgets series idle for longer than
//! their `series_ttl`, and re-resolves a series' settings (rules) when the
//! configuration changes, keeping the window. Both the server and `replay` go
//! through it, so they give the same verdicts for the same stream.
//!
//! Memory is what limits the number of series, so a series is stored
//! compactly (see the `shard` module): at window 30, about 410 bytes, 240 of
//! them the window's points.

pub mod episodes;
mod history;
mod keys;
pub mod query;
mod rings;
mod shard;
pub mod snapshot;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::api::{AnomalyRecord, EpisodeRecord};
use crate::clock::unix_now;
use crate::config::{Config, SeriesSettings};
use crate::detect::episode::{EpisodeEvent, EpisodeState, EpisodeStep, episode_id};
use crate::detect::{Baseline, DetectorSettings, Direction, Side, Verdict};
use crate::ingest::DataPoint;
pub use episodes::EpisodeQuery;
use episodes::{EpisodeLedger, OpenEpisode};
pub use history::HistoryPoint;
pub use query::{SeriesDetail, SeriesQuery, SeriesSort, SeriesSummary};
pub use shard::SeriesStats;
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

/// What happened to one point (`Copy`, and as small as it can be: a batch
/// holds one per point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The point's `seq` was already applied; nothing else happened.
    pub duplicate: bool,
    /// The detector's verdict (`WarmingUp` for duplicates).
    pub verdict: Verdict,
    /// The direction setting the point was judged with.
    pub direction: Direction,
    /// The point's timestamp, or the server's clock for a point without
    /// one (read once per request).
    pub timestamp: f64,
    /// The episode the point is part of, and whether it opened or closed
    /// it.
    pub episode: EpisodeStep,
}

/// The episodes some points closed, complete, each with the index of the
/// point that closed it (in its batch), in no particular order.
pub type ClosedEpisodes = Vec<(u32, EpisodeRecord)>;

impl Observation {
    /// A slot not filled yet (as a duplicate: it claims nothing).
    const PLACEHOLDER: Observation = Observation {
        duplicate: true,
        verdict: Verdict::WarmingUp { have: 0, need: 0 },
        direction: Direction::Upper,
        timestamp: 0.0,
        episode: EpisodeStep {
            episode: None,
            event: None,
        },
    };

    /// The episode this point opened, as it is at its opening.
    pub fn opened(&self, point: &DataPoint<'_>) -> Option<EpisodeRecord> {
        let (Some(EpisodeEvent::Opened), Some(id), Verdict::Anomaly(baseline, side)) =
            (self.episode.event, self.episode.episode, self.verdict)
        else {
            return None;
        };
        let score = baseline.score(point.value);
        Some(
            OpenEpisode::opened(id, self.timestamp, point.value, score, side)
                .record(&point.series, None),
        )
    }

    /// The anomaly record for `point`, when the verdict is an anomaly.
    pub fn record(&self, point: &DataPoint<'_>) -> Option<AnomalyRecord> {
        let Verdict::Anomaly(baseline, side) = self.verdict else {
            return None;
        };
        Some(AnomalyRecord {
            series: point.series.to_string(),
            value: point.value,
            timestamp: self.timestamp,
            mean: baseline.mean,
            std_dev: baseline.std_dev,
            threshold: crossed_threshold(&baseline, side),
            direction: side,
            score: Some(baseline.score(point.value)),
            episode: self.episode.episode,
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
    /// The low 16 bits of the configuration's generation.
    generation: u16,
    config: Arc<Config>,
    settings: Vec<SeriesSettings>,
}

impl Profiles {
    fn new(config: Arc<Config>, generation: u16) -> Self {
        let settings = (0..=config.rules.len())
            .map(|i| config.profile_settings(i.checked_sub(1)))
            .collect();
        Profiles {
            generation,
            config,
            settings,
        }
    }

    /// Whether every profile uses the moving average (then no reload can
    /// switch a series' detector).
    fn only_moving_average(&self) -> bool {
        self.settings.iter().all(|s| s.detector.is_moving_average())
    }

    fn profile_of(&self, series: &str) -> u16 {
        // At most MAX_RULES rules (validated), so the index fits.
        self.config
            .matching_rule(series)
            .map_or(0, |i| i as u16 + 1)
    }

    /// The settings of a stored series, without updating its profile.
    fn settings_of(&self, name: &[u8], state: &Slot) -> &SeriesSettings {
        &self.settings[self.profile_index(name, state)]
    }

    /// The index in `settings` of a stored series' profile, without
    /// updating it.
    fn profile_index(&self, name: &[u8], state: &Slot) -> usize {
        let profile = if state.generation == self.generation {
            state.profile
        } else {
            // Names are stored from `&str`: the conversion is lossless.
            self.profile_of(&String::from_utf8_lossy(name))
        };
        profile as usize
    }
}

/// Hashing of series names: foldhash is several times faster than SipHash
/// on short keys and is still seeded per process.
type Hasher = foldhash::fast::RandomState;

/// When and where a point is applied: the table's clock, the point's
/// timestamp, its index in its batch.
#[derive(Clone, Copy)]
struct Applied {
    now: u32,
    timestamp: f64,
    index: u32,
    duplicates: Duplicates,
}

/// How a point is recognised as one already applied (a resend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    /// By `seq`: a point whose `seq` is not above the last applied one of
    /// its series (`/detect`). Points without `seq` are never duplicates.
    BySeq,
    /// By timestamp: a point whose timestamp is not after the last applied
    /// one of its series (remote-write and line protocol, whose senders
    /// resend samples on retry).
    ByTimestamp,
}

/// Episode counts of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpisodeCounts {
    /// Episodes opened since start.
    pub opened: u64,
    /// Episodes closed since start: by a calm series, or with a series
    /// forgotten after its `series_ttl`.
    pub closed: u64,
    /// Episodes open now.
    pub open: usize,
}

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
    /// Points of history per series; 0: no history (dashboard off).
    history_points: AtomicUsize,
    /// Most series with a history.
    history_series: AtomicUsize,
    /// Series that have a history now.
    history_count: AtomicUsize,
    /// Series a dashboard shows, with how many streams show each.
    watched: Mutex<std::collections::HashMap<String, usize>>,
    /// Episode counters and the recently closed episodes.
    episodes: EpisodeLedger,
    /// Held by whatever removes series ([`Self::sweep_idle`],
    /// [`Self::forget_unless`]): slot ids stay stable while one runs.
    removing: Mutex<()>,
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
            history_points: AtomicUsize::new(history_points(&config)),
            history_series: AtomicUsize::new(config.server.history_series),
            history_count: AtomicUsize::new(0),
            watched: Mutex::default(),
            episodes: EpisodeLedger::new(config.log.recent_episodes),
            removing: Mutex::new(()),
            profiles: RwLock::new(Arc::new(Profiles::new(config, 0))),
            next_generation: AtomicU32::new(1),
            started: Instant::now(),
        }
    }

    /// Switches to a new configuration. Every series keeps its window and
    /// episode state, and its settings are re-resolved (rules) at its next
    /// point; but a series whose detector changes starts over (an episode
    /// it had open ends at its last point). Returns how many series
    /// started over.
    pub fn set_config(&self, config: Arc<Config>) -> usize {
        self.max_series
            .store(config.server.max_series, Ordering::Relaxed);
        self.history_points
            .store(history_points(&config), Ordering::Relaxed);
        self.history_series
            .store(config.server.history_series, Ordering::Relaxed);
        self.episodes.set_capacity(config.log.recent_episodes);
        // Slots keep the low 16 bits of the generation they resolved their
        // profile in; when those wrap, every slot is refreshed at once, so
        // that one untouched for 65,536 reloads cannot look current.
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) as u16;
        let profiles = Arc::new(Profiles::new(config, generation));
        let old = std::mem::replace(
            &mut *self.profiles.write().unwrap_or_else(|p| p.into_inner()),
            profiles.clone(),
        );
        if generation != 0 && old.only_moving_average() && profiles.only_moving_average() {
            return 0;
        }
        self.switch_changed_detectors(&profiles)
    }

    /// Re-resolves every series' profile under `profiles`, and starts over
    /// every series whose detector differs.
    #[cold]
    fn switch_changed_detectors(&self, profiles: &Profiles) -> usize {
        let mut switched = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for id in 0..shard.len() as u32 {
                // Names are stored from `&str`: no copy is made.
                let profile = profiles.profile_of(&String::from_utf8_lossy(shard.name(id)));
                let settings = &profiles.settings[profile as usize].detector;
                let slot = shard.series(id).slot;
                slot.profile = profile;
                slot.generation = profiles.generation;
                if !std::ptr::eq(slot.detector.kind(), settings.kind) {
                    self.switch_detector(&mut shard, id, settings);
                    switched += 1;
                }
            }
        }
        switched
    }

    /// Starts series `id` over with the detector of `settings`: fresh
    /// state, no episode (one it had open ends at its last point), a ring
    /// of the size that detector needs.
    #[cold]
    #[inline(never)]
    fn switch_detector(&self, shard: &mut Shard, id: u32, settings: &DetectorSettings) {
        if let Some(episode) = shard.end_episode(id) {
            self.episodes.closed(episode);
        }
        let slot = shard.series(id).slot;
        slot.episode = EpisodeState::default();
        slot.detector.reset(settings);
        let capacity = ring_capacity(settings);
        if !shard.series(id).fits(capacity) {
            shard.move_ring(id, capacity);
        }
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
        let settings = &profiles.settings[profile as usize].detector;
        let id = shard.insert(
            hash,
            name,
            ring_capacity(settings),
            profile,
            profiles.generation,
            now,
        );
        if !settings.is_moving_average() {
            shard.series(id).slot.detector.reset(settings);
        }
        id
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
        self.observe_point_into(point, &mut Vec::new())
    }

    /// [`Self::observe_point`], adding the episode the point closed, if
    /// any, to `closed` (with index 0).
    pub fn observe_point_into(
        &self,
        point: &DataPoint<'_>,
        closed: &mut ClosedEpisodes,
    ) -> Result<Observation, TooManySeries> {
        let profiles = self.current();
        let now = self.now_secs();
        let timestamp = point.timestamp.unwrap_or_else(unix_now);
        self.observe_one(&profiles, point, now, timestamp, Duplicates::BySeq, closed)
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
        self.observe_batch_into(points, &mut Vec::new())
    }

    /// [`Self::observe_batch`], adding the episodes the points closed to
    /// `closed`, each with the index of the point that closed it.
    pub fn observe_batch_into(
        &self,
        points: &[DataPoint<'_>],
        closed: &mut ClosedEpisodes,
    ) -> Result<Vec<Observation>, TooManySeries> {
        self.observe_batch_with(points, Duplicates::BySeq, closed)
    }

    /// [`Self::observe_batch_into`] for the samples of remote-write or line
    /// protocol: a point whose timestamp is not after the last applied one
    /// of its series is a duplicate (see [`Duplicates::ByTimestamp`]).
    pub fn observe_samples_into(
        &self,
        points: &[DataPoint<'_>],
        closed: &mut ClosedEpisodes,
    ) -> Result<Vec<Observation>, TooManySeries> {
        self.observe_batch_with(points, Duplicates::ByTimestamp, closed)
    }

    fn observe_batch_with(
        &self,
        points: &[DataPoint<'_>],
        duplicates: Duplicates,
        closed: &mut ClosedEpisodes,
    ) -> Result<Vec<Observation>, TooManySeries> {
        let profiles = self.current();
        let now = self.now_secs();
        // The clock is read once per batch, and only if a point needs it.
        let mut wall = None;
        let mut timestamp_of = |point: &DataPoint<'_>| {
            point
                .timestamp
                .unwrap_or_else(|| *wall.get_or_insert_with(unix_now))
        };
        if let [point] = points {
            let timestamp = timestamp_of(point);
            return self
                .observe_one(&profiles, point, now, timestamp, duplicates, closed)
                .map(|obs| vec![obs]);
        }
        let hashes: Vec<u64> = points
            .iter()
            .map(|p| hash_name(&self.hasher, &p.series))
            .collect();
        let groups = ShardGroups::new(&hashes);
        let found = self.look_up(points, &hashes, &groups);
        let missing = found.missing;
        self.reserve(missing)?;
        let mut observations = vec![Observation::PLACEHOLDER; points.len()];
        let mut created = 0usize;
        for (shard_index, indices) in groups.iter() {
            let mut shard = self.lock_shard(shard_index);
            // No series of this shard was removed since the look-up: the
            // ids it found still hold, and need no second probe.
            let unmoved = shard.removals() == found.removals[shard_index];
            for &i in indices {
                let point = &points[i as usize];
                let (hash, name) = (hashes[i as usize], point.series.as_ref());
                let known = found.ids[i as usize];
                let id = if unmoved && known != NOT_FOUND {
                    known
                } else {
                    match shard.find(hash, name) {
                        Some(id) => id,
                        None => {
                            created += 1;
                            Self::create(&profiles, &mut shard, hash, name, now)
                        }
                    }
                };
                let timestamp = timestamp_of(point);
                let at = Applied {
                    now,
                    timestamp,
                    index: i,
                    duplicates,
                };
                observations[i as usize] = self.apply(&profiles, &mut shard, id, point, at, closed);
            }
        }
        self.settle_reservation(missing, created);
        Ok(observations)
    }

    /// Finds the series of `points`: the number of distinct ones not in
    /// the table yet (to reserve before creating any), and the ids of the
    /// others, which the apply pass reuses.
    fn look_up(&self, points: &[DataPoint<'_>], hashes: &[u64], groups: &ShardGroups) -> LookUp {
        let mut missing: Vec<&str> = Vec::new();
        let mut ids = vec![NOT_FOUND; points.len()];
        let mut removals = [0u64; SHARDS];
        for (shard_index, indices) in groups.iter() {
            let shard = self.lock_shard(shard_index);
            removals[shard_index] = shard.removals();
            let first_new = missing.len();
            for &i in indices {
                let name = points[i as usize].series.as_ref();
                match shard.find(hashes[i as usize], name) {
                    Some(id) => ids[i as usize] = id,
                    None if !missing[first_new..].contains(&name) => missing.push(name),
                    None => {}
                }
            }
        }
        LookUp {
            missing: missing.len(),
            ids,
            removals,
        }
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
        timestamp: f64,
        duplicates: Duplicates,
        closed: &mut ClosedEpisodes,
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
        let at = Applied {
            now,
            timestamp,
            index: 0,
            duplicates,
        };
        Ok(self.apply(profiles, &mut shard, id, point, at, closed))
    }

    fn apply(
        &self,
        profiles: &Profiles,
        shard: &mut Shard,
        id: u32,
        point: &DataPoint<'_>,
        at: Applied,
        closed: &mut ClosedEpisodes,
    ) -> Observation {
        let Applied {
            now,
            timestamp,
            index,
            duplicates,
        } = at;
        let mut series = shard.series(id);
        let state = &mut *series.slot;
        state.last_seen = now;
        if state.generation != profiles.generation {
            state.profile = profiles.profile_of(&point.series);
            state.generation = profiles.generation;
        }
        let profile = &profiles.settings[state.profile as usize];
        let settings = &profile.detector;
        let duplicate = match duplicates {
            Duplicates::BySeq => point.seq.is_some_and(|seq| {
                let seen = state.last_seq != shard::NO_SEQ && seq <= state.last_seq;
                if !seen {
                    state.last_seq = seq;
                }
                seen
            }),
            Duplicates::ByTimestamp => {
                state.stats.points > 0 && timestamp <= state.stats.last_timestamp
            }
        };
        if duplicate {
            return Observation {
                duplicate: true,
                verdict: Verdict::WarmingUp {
                    have: state.detector.window().len(),
                    need: settings.min_samples,
                },
                direction: settings.direction,
                timestamp,
                episode: EpisodeStep::default(),
            };
        }
        if !std::ptr::eq(series.slot.detector.kind(), settings.kind) {
            // Another detector (configuration reloaded).
            self.switch_detector(shard, id, settings);
            series = shard.series(id);
        }
        let verdict = if settings.is_moving_average() {
            let capacity = settings.window_capacity();
            if !series.fits(capacity) {
                // A new window size (configuration reloaded).
                shard.move_ring(id, capacity);
                series = shard.series(id);
            }
            let (state, ring) = series.into_ring();
            state.detector.observe(ring, point.value, settings)
        } else {
            Self::observe_model(series.slot, point.value, timestamp, settings)
        };
        let state = shard.series(id).slot;
        let episode = state.episode.step(
            &verdict,
            point.value,
            || episode_id(point.seq, timestamp),
            &profile.episodes,
        );
        let stats = &mut state.stats;
        stats.points += 1;
        stats.anomalies = stats
            .anomalies
            .saturating_add(u32::from(verdict.is_anomaly()));
        stats.last_value = point.value;
        stats.last_timestamp = timestamp;
        self.record_history(
            shard,
            id,
            HistoryPoint::new(timestamp, point.value, &verdict, episode.episode.is_some()),
        );
        if episode.episode.is_some()
            && let Some(record) = self.track_episode(shard, point, &verdict, episode, timestamp)
        {
            closed.push((index, record));
        }
        Observation {
            duplicate: false,
            verdict,
            direction: settings.direction,
            timestamp,
            episode,
        }
    }

    /// A point of a series whose detector is not the moving average.
    #[inline(never)]
    fn observe_model(
        slot: &mut Slot,
        value: f64,
        timestamp: f64,
        settings: &DetectorSettings,
    ) -> Verdict {
        slot.detector
            .model_mut()
            .expect("apply switched the series to this detector, which made its model")
            .observe(value, timestamp, settings)
    }

    /// Keeps the summary of the episode `step` belongs to up to date: a
    /// point that opens one, adds to one or closes one. Returns the episode
    /// it closed.
    #[cold]
    #[inline(never)]
    fn track_episode(
        &self,
        shard: &mut Shard,
        point: &DataPoint<'_>,
        verdict: &Verdict,
        step: EpisodeStep,
        timestamp: f64,
    ) -> Option<EpisodeRecord> {
        let name: &str = &point.series;
        match (step.event, step.episode, verdict) {
            (Some(EpisodeEvent::Opened), Some(id), Verdict::Anomaly(baseline, side)) => {
                let score = baseline.score(point.value);
                let open = OpenEpisode::opened(id, timestamp, point.value, score, *side);
                shard.open_episodes.insert(name.into(), open);
                self.episodes.opened();
                None
            }
            (Some(EpisodeEvent::Closed), ..) => {
                let open = shard.open_episodes.remove(name)?;
                let record = open.record(name, Some(timestamp));
                self.episodes.closed(record.clone());
                Some(record)
            }
            (None, _, Verdict::Anomaly(baseline, _)) => {
                if let Some(open) = shard.open_episodes.get_mut(name) {
                    open.add(point.value, baseline.score(point.value));
                }
                None
            }
            _ => None,
        }
    }

    /// The episodes `query` selects, newest first: the open ones and the
    /// most recently closed ones (`[log] recent_episodes`).
    pub fn episodes(&self, query: &EpisodeQuery) -> Vec<EpisodeRecord> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (name, open) in &shard.open_episodes {
                if query.matches_series(name) {
                    let record = open.record(name, None);
                    if query.matches(&record) {
                        found.push(record);
                    }
                }
            }
        }
        self.episodes.closed_matching(query, &mut found);
        query.newest(found)
    }

    /// Episodes opened and closed since start, and open now.
    pub fn episode_counts(&self) -> EpisodeCounts {
        EpisodeCounts {
            opened: self.episodes.opened.load(Ordering::Relaxed),
            closed: self.episodes.closed.load(Ordering::Relaxed),
            open: self.episodes.open.load(Ordering::Relaxed),
        }
    }

    /// Appends to the history of series `id`, giving it one if there is
    /// room under `history_series`.
    #[inline]
    fn record_history(&self, shard: &mut Shard, id: u32, point: HistoryPoint) {
        let capacity = self.history_points.load(Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        if shard.slot(id).history == history::NO_HISTORY {
            let limit = self.history_series.load(Ordering::Relaxed);
            let room = self
                .history_count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok();
            if !room {
                return;
            }
            shard.add_history(id);
        }
        shard.push_history(id, point, capacity);
    }

    /// Forgets series that received no point for longer than their
    /// `series_ttl`; returns how many were removed, and the episodes they
    /// left open, closed at their last point.
    pub fn sweep_idle(&self) -> (usize, Vec<EpisodeRecord>) {
        // Held through the rebalance too: slot ids stay put.
        let _removing = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        let profiles = self.current();
        let now = self.now_secs();
        let mut closed = Vec::new();
        let removed = self.remove_where(
            |name, state| {
                let settings = profiles.settings_of(name, state);
                u64::from(now.saturating_sub(state.last_seen)) <= settings.series_ttl.as_secs()
            },
            |episode| {
                self.episodes.closed(episode.clone());
                closed.push(episode);
            },
        );
        self.rebalance_histories();
        (removed, closed)
    }

    /// Removes the series for which `keep(name)` is false, with their open
    /// episodes, which are not closed: they go on at the series' next
    /// owner (a cluster member handing a partition over). Returns how many
    /// series were removed.
    pub fn forget_unless(&self, keep: impl Fn(&str) -> bool) -> usize {
        let _removing = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        self.remove_where(
            |name, _| keep(std::str::from_utf8(name).unwrap_or_default()),
            |_| self.episodes.handed_over(),
        )
    }

    /// Removes the series for which `keep(name, slot)` is false and passes
    /// each open episode they ended to `ended`; returns how many series
    /// were removed. The caller holds the removal lock.
    fn remove_where(
        &self,
        mut keep: impl FnMut(&[u8], &Slot) -> bool,
        mut ended: impl FnMut(EpisodeRecord),
    ) -> usize {
        let mut removed = 0;
        let mut histories = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let gone = shard.retain(&mut keep);
            removed += gone.series;
            histories += gone.histories;
            gone.episodes.into_iter().for_each(&mut ended);
        }
        if removed > 0 {
            self.count.fetch_sub(removed, Ordering::AcqRel);
            self.history_count.fetch_sub(histories, Ordering::AcqRel);
        }
        removed
    }

    /// Keeps histories for the most recently updated series: ranks every
    /// series by its last update (a series that has a history first among
    /// equals) and drops the histories beyond the first `history_series`
    /// (all of them when history is off), making room for newer series at
    /// their next point. Watched series keep theirs. Runs from the sweep,
    /// which holds the removal lock, so slot ids are stable here.
    fn rebalance_histories(&self) {
        let limit = if self.history_points.load(Ordering::Relaxed) == 0 {
            0
        } else {
            self.history_series.load(Ordering::Relaxed)
        };
        let with_history = self.history_count.load(Ordering::Acquire);
        if with_history == 0 || (self.len() <= limit && with_history <= limit) {
            return;
        }
        // (last update, has a history, shard, slot), best first.
        let mut ranked: Vec<(u32, bool, u32, u32)> = Vec::with_capacity(self.len());
        for (index, shard) in self.shards.iter().enumerate() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            ranked.extend(shard.iter().enumerate().map(|(id, (_, slot))| {
                let has = slot.history != history::NO_HISTORY;
                (slot.last_seen, has, index as u32, id as u32)
            }));
        }
        let rank =
            |a: &(u32, bool, u32, u32), b: &(u32, bool, u32, u32)| (b.0, b.1).cmp(&(a.0, a.1));
        if limit > 0 && limit < ranked.len() {
            ranked.select_nth_unstable_by(limit - 1, rank);
        }
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut dropped = 0;
        for &(_, _, index, id) in ranked.iter().skip(limit).filter(|entry| entry.1) {
            let mut shard = self.lock_shard(index as usize);
            let name = String::from_utf8_lossy(shard.name(id));
            if !watched.contains_key(name.as_ref()) {
                dropped += usize::from(shard.drop_history(id));
            }
        }
        self.history_count.fetch_sub(dropped, Ordering::AcqRel);
    }

    /// Marks series `name` as watched (a dashboard shows it): it gets a
    /// history now if it has none, even beyond `history_series` (by at most
    /// the number of event streams), and keeps it while watched. Call
    /// [`Self::unwatch`] when done.
    pub fn watch(&self, name: &str) {
        *self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default() += 1;
        if self.history_points.load(Ordering::Relaxed) == 0 {
            return;
        }
        let hash = hash_name(&self.hasher, name);
        let mut shard = self.lock_shard(Self::shard_of(hash));
        if let Some(id) = shard.find(hash, name)
            && shard.slot(id).history == history::NO_HISTORY
        {
            shard.add_history(id);
            self.history_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Ends one [`Self::watch`] of series `name`.
    pub fn unwatch(&self, name: &str) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = watched.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                watched.remove(name);
            }
        }
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
                    .is_warming_up_any(&profiles.settings_of(name, state).detector)
                {
                    stats.warming_up += 1;
                }
            }
        }
        stats
    }
}

/// The ring a series needs under `settings`: the window for the moving
/// average, one (unused) point for the other detectors, which keep their
/// state elsewhere.
fn ring_capacity(settings: &DetectorSettings) -> usize {
    if settings.is_moving_average() {
        settings.window_capacity()
    } else {
        1
    }
}

/// The history length the configuration asks for: 0 when the dashboard
/// is off (nothing reads a history then).
fn history_points(config: &Config) -> usize {
    if config.server.dashboard {
        config.server.history_points
    } else {
        0
    }
}

/// The indices of a batch's points grouped by shard, in batch order
/// within each shard (a counting sort on the shard of each hash).
/// What a batch's look-up found: how many of its series are new, the id
/// of each point's series ([`NOT_FOUND`] for a new one), and each shard's
/// removal count at the time (the ids hold while it is unchanged).
struct LookUp {
    missing: usize,
    ids: Vec<u32>,
    removals: [u64; SHARDS],
}

/// [`LookUp::ids`] of a point whose series did not exist yet.
const NOT_FOUND: u32 = u32::MAX;

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
    fn samples_are_duplicates_unless_after_the_last_timestamp() {
        let table = SeriesTable::new(config("[detector]\nwindow_size = 3\n"));
        let at = |series: &str, value: f64, timestamp: f64| DataPoint {
            timestamp: Some(timestamp),
            ..point(series, value, None)
        };
        let observe = |points: &[DataPoint<'_>]| {
            let observations = table.observe_samples_into(points, &mut Vec::new()).unwrap();
            observations.iter().map(|o| o.duplicate).collect::<Vec<_>>()
        };
        // A retried batch overlapping the last one, and an older sample
        // within one batch: each series keeps its own last timestamp.
        assert_eq!(
            observe(&[at("a", 1.0, 10.0), at("a", 1.0, 20.0)]),
            [false, false]
        );
        assert_eq!(
            observe(&[
                at("a", 9.0, 10.0),
                at("a", 9.0, 20.0),
                at("b", 1.0, 15.0),
                at("a", 1.0, 30.0),
                at("a", 9.0, 25.0),
            ]),
            [true, true, false, false, true]
        );
        let obs = table.observe_samples_into(&[at("a", 1.0, 31.0)], &mut Vec::new());
        let Verdict::Normal(baseline) = obs.unwrap()[0].verdict else {
            panic!("three samples of `a` entered the window: it is warm");
        };
        assert_eq!(baseline.mean, 1.0, "the resent 9s did not enter the window");
        // `/detect` points (by seq) at an old timestamp are still applied.
        let obs = table.observe_batch(&[at("a", 1.0, 5.0)]).unwrap();
        assert!(!obs[0].duplicate);
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
            .map(|p| single.observe_point(p).unwrap())
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
        assert_eq!(table.sweep_idle().0, 0);
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
        assert_eq!(table.sweep_idle().0, 1, "`a` is 16 s old");
        assert_eq!(table.stats().series, 2);
        advance(&mut table, 8);
        assert_eq!(table.sweep_idle().0, 1, "`b` is 16 s old");
        // `a` comes back as a new series.
        let obs = table.observe_batch(&[point("a", 1.0, None)]).unwrap();
        assert_eq!(obs[0].verdict, Verdict::WarmingUp { have: 0, need: 120 });
        assert_eq!(table.len(), 2);
    }

    fn at(series: &str, value: f64, timestamp: f64) -> DataPoint<'static> {
        DataPoint {
            timestamp: Some(timestamp),
            ..point(series, value, None)
        }
    }

    /// Sends `series` four points of 10.0 then `spike`, at timestamps 0..5.
    fn warm_then(table: &SeriesTable, series: &str, spike: f64) {
        for t in 0..4 {
            table
                .observe_point(&at(series, 10.0 + f64::from(t % 2), f64::from(t)))
                .unwrap();
        }
        table.observe_point(&at(series, spike, 4.0)).unwrap();
    }

    #[test]
    fn the_list_counts_orders_filters_and_limits() {
        let table = SeriesTable::new(config(
            "[detector]
window_size = 4
threshold_multiplier = 3.0
",
        ));
        warm_then(&table, "b.calm", 10.0);
        warm_then(&table, "a.spiky", 100.0);
        table.observe_point(&at("a.spiky", 200.0, 5.0)).unwrap();
        table.observe_point(&at("c.new", 1.0, 9.0)).unwrap();
        // A duplicate counts nothing.
        let with_seq = DataPoint {
            seq: Some(1),
            ..at("c.new", 1.0, 9.5)
        };
        table.observe_point(&with_seq).unwrap();
        table.observe_point(&with_seq).unwrap();
        let names = |query: &SeriesQuery| -> Vec<String> {
            table.list(query).into_iter().map(|s| s.series).collect()
        };
        let all = table.list(&SeriesQuery::default());
        assert_eq!(
            all.iter().map(|s| s.series.as_str()).collect::<Vec<_>>(),
            ["a.spiky", "b.calm", "c.new"],
            "most anomalies first, then most points"
        );
        let spiky = &all[0];
        assert_eq!((spiky.points, spiky.anomalies), (6, 2));
        assert_eq!((spiky.last_value, spiky.last_seen), (200.0, 5.0));
        assert!(!spiky.warming_up);
        let new = &all[2];
        assert_eq!((new.points, new.anomalies, new.warming_up), (2, 0, true));
        let sort = |sort| SeriesQuery {
            sort,
            ..SeriesQuery::default()
        };
        assert_eq!(
            names(&sort(SeriesSort::Name)),
            ["a.spiky", "b.calm", "c.new"]
        );
        assert_eq!(names(&sort(SeriesSort::LastSeen))[0], "c.new");
        assert_eq!(
            names(&sort(SeriesSort::Points)),
            ["a.spiky", "b.calm", "c.new"]
        );
        let limited = SeriesQuery {
            limit: 1,
            sort: SeriesSort::Name,
            series_glob: None,
        };
        assert_eq!(names(&limited), ["a.spiky"]);
        let glob = SeriesQuery {
            series_glob: Some(crate::config::SeriesGlob::new("{b,c}.*").unwrap()),
            ..SeriesQuery::default()
        };
        assert_eq!(names(&glob), ["b.calm", "c.new"]);
    }

    #[test]
    fn the_list_limit_holds_across_shards() {
        let table = SeriesTable::new(config(""));
        for i in 0..500 {
            for _ in 0..=(i % 7) {
                table
                    .observe_point(&point(&format!("s{i:03}"), 1.0, None))
                    .unwrap();
            }
        }
        let query = SeriesQuery {
            limit: 10,
            sort: SeriesSort::Points,
            series_glob: None,
        };
        let top = table.list(&query);
        assert_eq!(top.len(), 10);
        assert!(top.iter().all(|s| s.points == 7), "the busiest: {top:?}");
        let names: Vec<&str> = top.iter().map(|s| s.series.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "ties by name");
        assert_eq!(names[0], "s006");
    }

    #[test]
    fn detail_shows_rule_settings_baseline_and_history() {
        let table = SeriesTable::new(config(
            "[detector]
window_size = 4
[[rule]]
series = \"lat.*\"
direction = \"both\"
[server]
history_points = 3
",
        ));
        warm_then(&table, "lat.api", 100.0);
        let detail = table.detail("lat.api").unwrap();
        assert_eq!(detail.rule.as_deref(), Some("lat.*"));
        assert_eq!(detail.settings.direction, Direction::Both);
        assert_eq!(detail.settings.window_size, 4);
        assert_eq!(detail.summary.points, 5);
        // The spike entered the window (exclude_anomalies is off).
        assert_eq!(detail.mean, Some((10.0 + 11.0 + 11.0 + 100.0) / 4.0));
        assert!(detail.threshold.unwrap() > detail.mean.unwrap());
        let times: Vec<f64> = detail.history.iter().map(|p| p.timestamp).collect();
        assert_eq!(times, [2.0, 3.0, 4.0], "the newest history_points");
        let last = detail.history.last().unwrap();
        assert!(last.anomaly);
        assert_eq!((last.value, last.mean), (100.0, Some(10.5)));
        assert_eq!(detail.history[0].mean, None, "warming up");
        warm_then(&table, "cpu", 10.0);
        assert_eq!(table.detail("cpu").unwrap().rule, None);
        assert!(table.detail("nope").is_none());
    }

    #[test]
    fn history_goes_to_the_most_recently_updated_series() {
        let mut table = SeriesTable::new(config(
            "[server]
history_series = 2
",
        ));
        let history = |table: &SeriesTable, name| table.detail(name).unwrap().history.len();
        table.observe_point(&point("a", 1.0, None)).unwrap();
        table.observe_point(&point("b", 1.0, None)).unwrap();
        advance(&mut table, 2);
        table.observe_point(&point("c", 1.0, None)).unwrap();
        assert_eq!((history(&table, "a"), history(&table, "b")), (1, 1));
        assert_eq!(history(&table, "c"), 0, "no room yet");
        advance(&mut table, 2);
        table.observe_point(&point("b", 2.0, None)).unwrap();
        table.sweep_idle();
        // `a` is the least recently updated: it makes room for `c`.
        assert_eq!(history(&table, "a"), 0);
        table.observe_point(&point("c", 2.0, None)).unwrap();
        assert_eq!((history(&table, "b"), history(&table, "c")), (2, 1));
        // Off: every history goes at the next sweep, and none is kept.
        table.set_config(config(
            "[server]
dashboard = false
",
        ));
        table.sweep_idle();
        table.observe_point(&point("b", 3.0, None)).unwrap();
        assert_eq!((history(&table, "b"), history(&table, "c")), (0, 0));
        assert_eq!(table.history_count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_newer_series_displaces_an_older_history_and_watched_ones_stay() {
        let mut table = SeriesTable::new(config("[server]\nhistory_series = 2\n"));
        let history = |table: &SeriesTable, name| table.detail(name).unwrap().history.len();
        for name in ["a", "b"] {
            table.observe_point(&point(name, 1.0, None)).unwrap();
        }
        advance(&mut table, 2);
        table.observe_point(&point("new", 1.0, None)).unwrap();
        assert_eq!(history(&table, "new"), 0, "the cap is reached");
        // `a` and `b` are equally old: one of them makes room.
        table.sweep_idle();
        table.observe_point(&point("new", 2.0, None)).unwrap();
        assert_eq!(history(&table, "new"), 1);
        assert_eq!(history(&table, "a") + history(&table, "b"), 1);
        // A watched series gets a history at once, beyond the cap, and
        // keeps it however old it gets.
        let old = if history(&table, "a") == 0 { "a" } else { "b" };
        table.watch(old);
        table.observe_point(&point(old, 2.0, None)).unwrap();
        assert_eq!(history(&table, old), 1);
        advance(&mut table, 5);
        table.observe_point(&point("new", 3.0, None)).unwrap();
        table.sweep_idle();
        assert_eq!(history(&table, old), 1, "watched");
        table.unwatch(old);
        table.observe_point(&point("newer", 1.0, None)).unwrap();
        table.sweep_idle();
        assert_eq!(history(&table, old), 0, "no longer watched, and older");
        table.observe_point(&point("newer", 2.0, None)).unwrap();
        assert_eq!((history(&table, "new"), history(&table, "newer")), (2, 1));
    }

    #[test]
    fn a_series_untouched_for_65536_reloads_gets_the_current_rules() {
        let with_rule =
            config("[detector]\nwindow_size = 4\n[[rule]]\nseries = \"s\"\nwindow_size = 7\n");
        let table = SeriesTable::new(with_rule);
        table.observe_point(&point("s", 1.0, None)).unwrap();
        // Slots keep 16 bits of the generation: without the refresh when
        // they wrap, `s` would look resolved in the last of these and use
        // profile 1, which this configuration does not have.
        let without = config("[detector]\nwindow_size = 5\n");
        for _ in 0..(1 << 16) {
            table.set_config(without.clone());
        }
        let obs = table.observe_point(&point("s", 1.0, None)).unwrap();
        assert_eq!(obs.verdict, Verdict::WarmingUp { have: 1, need: 5 });
        assert_eq!(table.detail("s").unwrap().settings.window_size, 5);
    }

    #[test]
    fn a_new_detector_resets_only_its_series() {
        let ewma = "[detector]\nwindow_size = 4\n[[rule]]\nseries = \"e*\"\ndetector = \"ewma\"\n";
        let table = SeriesTable::new(config(ewma));
        for i in 0..6 {
            let v = 10.0 + f64::from(i % 2);
            table
                .observe_batch(&[point("e1", v, None), point("m1", v, None)])
                .unwrap();
        }
        let detail = |name: &str| table.detail(name).unwrap();
        assert!(!detail("e1").summary.warming_up && !detail("m1").summary.warming_up);
        assert_eq!(detail("e1").settings.window_size, 4);
        // The ewma series flags a spike too.
        let obs = table.observe_point(&point("e1", 100.0, None)).unwrap();
        assert!(obs.verdict.is_anomaly());
        assert_eq!(table.episode_counts().open, 1);
        // Same detectors, other keys: nothing is reset.
        assert_eq!(table.set_config(config(&ewma.replace("= 4", "= 5"))), 0);
        assert!(!detail("e1").summary.warming_up);
        // e* back to the moving average: only e1 starts over, and its open
        // episode ends.
        assert_eq!(table.set_config(config("[detector]\nwindow_size = 4\n")), 1);
        assert!(detail("e1").summary.warming_up && !detail("m1").summary.warming_up);
        assert_eq!(table.episode_counts().open, 0);
        let obs = table.observe_point(&point("e1", 10.0, None)).unwrap();
        assert_eq!(obs.verdict, Verdict::WarmingUp { have: 0, need: 4 });
    }

    mod props {
        use super::*;
        use crate::detect::SeriesDetector;
        use crate::detect::episode::EpisodeState;
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
            "[detector]\nwindow_size = 5\nthreshold_multiplier = 1.0\nseries_ttl = \"4s\"\n\
             min_consecutive = 2\nresolve_after = 3\nresolve_multiplier = 0.5\n\
             [[rule]]\nseries = \"r*\"\nmin_consecutive = 1\n",
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
            series: HashMap<String, (SeriesDetector, EpisodeState, Option<u64>, u64)>,
            now: u64,
            counts: EpisodeCounts,
        }

        impl Reference {
            fn settings(config: &Config, name: &str) -> SeriesSettings {
                config.profile_settings(config.matching_rule(name))
            }

            fn observe(&mut self, config: &Config, point: &DataPoint<'_>) -> Observation {
                let settings = Self::settings(config, &point.series);
                let s = &settings.detector;
                let (detector, episode, last_seq, last_seen) = self
                    .series
                    .entry(point.series.to_string())
                    .or_insert_with(|| (SeriesDetector::new(s), EpisodeState::default(), None, 0));
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
                            timestamp: point.timestamp.expect("test points carry timestamps"),
                            episode: EpisodeStep::default(),
                        };
                    }
                    *last_seq = Some(seq);
                }
                let timestamp = point.timestamp.expect("test points carry timestamps");
                let verdict = detector.observe(point.value, s);
                let step = episode.step(
                    &verdict,
                    point.value,
                    || episode_id(point.seq, timestamp),
                    &settings.episodes,
                );
                match step.event {
                    Some(EpisodeEvent::Opened) => {
                        self.counts.opened += 1;
                        self.counts.open += 1;
                    }
                    Some(EpisodeEvent::Closed) => {
                        self.counts.closed += 1;
                        self.counts.open -= 1;
                    }
                    None => {}
                }
                Observation {
                    duplicate: false,
                    verdict,
                    direction: s.direction,
                    timestamp,
                    episode: step,
                }
            }

            fn sweep(&mut self, config: &Config) -> usize {
                let before = self.series.len();
                let now = self.now;
                let counts = &mut self.counts;
                self.series.retain(|name, (_, episode, _, last_seen)| {
                    let keep =
                        now - *last_seen <= Self::settings(config, name).series_ttl.as_secs();
                    if !keep && episode.open().is_some() {
                        counts.closed += 1;
                        counts.open -= 1;
                    }
                    keep
                });
                before - self.series.len()
            }

            fn stats(&self, config: &Config) -> TableStats {
                TableStats {
                    series: self.series.len(),
                    warming_up: self
                        .series
                        .iter()
                        .filter(|(name, (d, _, _, _))| {
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
                            let mut closed = Vec::new();
                            let got = table.observe_batch_into(&points, &mut closed).unwrap();
                            // A closing record for each point that closed
                            // an episode, and for no other.
                            let mut closers: Vec<(u32, u64)> =
                                closed.iter().map(|(i, r)| (*i, r.episode)).collect();
                            closers.sort_unstable();
                            let want_closers: Vec<(u32, u64)> = got
                                .iter()
                                .enumerate()
                                .filter(|(_, o)| o.episode.event == Some(EpisodeEvent::Closed))
                                .map(|(i, o)| (i as u32, o.episode.episode.unwrap()))
                                .collect();
                            prop_assert_eq!(closers, want_closers);
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
                            prop_assert_eq!(table.sweep_idle().0, reference.sweep(&current));
                        }
                    }
                    prop_assert_eq!(table.len(), reference.series.len());
                    prop_assert_eq!(table.stats(), reference.stats(&current));
                    prop_assert_eq!(table.episode_counts(), reference.counts);
                    let open = table.episodes(&EpisodeQuery { open: true, limit: Some(1000), ..Default::default() });
                    prop_assert_eq!(open.len(), reference.counts.open);
                }
            }
        }
    }
}
