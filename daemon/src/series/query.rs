//! Reading the table for people and scripts: the list of series
//! (`GET /series`) and one series in detail with its recent history
//! (`GET /series/{name}`). Plain data with serde derives; the HTTP side
//! only parses the query and serialises.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::history::HistoryPoint;
use super::shard::{SeriesStats, Shard};
use super::{Profiles, SeriesTable, hash_name};
use crate::config::SeriesGlob;
use crate::detect::Direction;

/// Default number of series `GET /series` returns.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` of `GET /series`.
pub const MAX_LIMIT: usize = 10_000;

/// The order of `GET /series`; ties are broken by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeriesSort {
    /// Most anomalies first (then most points): the default.
    #[default]
    Anomalies,
    /// Most points first.
    Points,
    /// By name, ascending (byte order).
    Name,
    /// Most recently updated first (by the last point's timestamp).
    LastSeen,
}

impl SeriesSort {
    /// The names the `sort` query parameter takes.
    pub const NAMES: &'static [(&'static str, SeriesSort)] = &[
        ("anomalies", SeriesSort::Anomalies),
        ("points", SeriesSort::Points),
        ("name", SeriesSort::Name),
        ("last_seen", SeriesSort::LastSeen),
    ];

    fn order(self, a: (&SeriesStats, &[u8]), b: (&SeriesStats, &[u8])) -> Ordering {
        // The stats are packed: fields are copied out, never borrowed.
        let (x, y) = (*a.0, *b.0);
        let (x_points, y_points) = (x.points, y.points);
        let primary = match self {
            SeriesSort::Anomalies => {
                let (x_anomalies, y_anomalies) = (x.anomalies, y.anomalies);
                y_anomalies.cmp(&x_anomalies).then(y_points.cmp(&x_points))
            }
            SeriesSort::Points => y_points.cmp(&x_points),
            SeriesSort::Name => Ordering::Equal,
            SeriesSort::LastSeen => {
                let (x_seen, y_seen) = (x.last_timestamp, y.last_timestamp);
                y_seen.total_cmp(&x_seen)
            }
        };
        primary.then_with(|| a.1.cmp(b.1))
    }
}

/// A query of `GET /series`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesQuery {
    /// At most this many series.
    pub limit: usize,
    /// The order.
    pub sort: SeriesSort,
    /// Only series matching this glob.
    pub series_glob: Option<SeriesGlob>,
}

impl Default for SeriesQuery {
    fn default() -> Self {
        SeriesQuery {
            limit: DEFAULT_LIMIT,
            sort: SeriesSort::default(),
            series_glob: None,
        }
    }
}

/// One series in `GET /series`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesSummary {
    /// The series name.
    pub series: String,
    /// Points applied (duplicates not counted).
    pub points: u64,
    /// Value of the last point.
    pub last_value: f64,
    /// Timestamp of the last point (unix seconds).
    pub last_seen: f64,
    /// Anomalies among the points.
    pub anomalies: u64,
    /// True while the window holds fewer than `min_samples` points.
    pub warming_up: bool,
}

/// The detector settings in force for a series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SettingsView {
    /// `detector`.
    pub detector: &'static str,
    /// `window_size`.
    pub window_size: usize,
    /// `threshold_multiplier`.
    pub threshold_multiplier: f64,
    /// `direction`.
    pub direction: Direction,
    /// `min_samples` (resolved).
    pub min_samples: usize,
    /// `min_std_dev`.
    pub min_std_dev: f64,
    /// `min_relative_std_dev`.
    pub min_relative_std_dev: f64,
    /// `exclude_anomalies`.
    pub exclude_anomalies: bool,
    /// `max_excluded_run`.
    pub max_excluded_run: usize,
    /// `min_consecutive`.
    pub min_consecutive: u16,
    /// `resolve_after`.
    pub resolve_after: u16,
    /// `resolve_multiplier` (resolved).
    pub resolve_multiplier: f64,
    /// `series_ttl` in seconds.
    pub series_ttl_seconds: f64,
}

/// One point of a series' history in `GET /series/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryView {
    /// The point's timestamp (unix seconds).
    pub timestamp: f64,
    /// The point's value.
    pub value: f64,
    /// Moving average the point was judged against (null while warming up).
    pub mean: Option<f64>,
    /// Standard deviation of that window (null while warming up).
    pub std_dev: Option<f64>,
    /// Upper threshold `mean + k·σ` (null while warming up).
    pub threshold: Option<f64>,
    /// Lower threshold `mean − k·σ` (null while warming up).
    pub lower_threshold: Option<f64>,
    /// The point's score (null while warming up).
    pub score: Option<f64>,
    /// Whether the point was an anomaly.
    pub anomaly: bool,
    /// Whether the point was part of an episode (from the point that
    /// opened it to the one that closed it): the dashboard shades these.
    pub in_episode: bool,
}

impl From<&HistoryPoint> for HistoryView {
    fn from(point: &HistoryPoint) -> Self {
        let judgement = point.judgement();
        HistoryView {
            timestamp: point.timestamp,
            value: point.value,
            mean: judgement.map(|j| j.0),
            std_dev: judgement.map(|j| j.1),
            threshold: judgement.map(|j| j.2),
            lower_threshold: judgement.map(|j| j.3),
            score: judgement.map(|j| j.4),
            anomaly: point.anomaly,
            in_episode: point.in_episode,
        }
    }
}

/// One series in detail: `GET /series/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesDetail {
    /// What `GET /series` shows.
    #[serde(flatten)]
    pub summary: SeriesSummary,
    /// The `series` glob of the `[[rule]]` that applies; `None` for the
    /// `[detector]` defaults.
    pub rule: Option<String>,
    /// The settings in force.
    pub settings: SettingsView,
    /// Mean of the current window (null while warming up).
    pub mean: Option<f64>,
    /// Standard deviation of the current window (null while warming up).
    pub std_dev: Option<f64>,
    /// Upper threshold for the next point (null while warming up).
    pub threshold: Option<f64>,
    /// Lower threshold for the next point (null while warming up).
    pub lower_threshold: Option<f64>,
    /// The id of the series' open episode (null when none is open).
    pub episode: Option<u64>,
    /// The recent points, oldest first (empty when the series has no
    /// history: the dashboard is off, or `history_series` others are
    /// more recent). Named `history` because the summary's `points` is
    /// the count of points.
    pub history: Vec<HistoryView>,
}

impl SeriesTable {
    /// The series matching `query`, in its order, at most `limit`.
    pub fn list(&self, query: &SeriesQuery) -> Vec<SeriesSummary> {
        let profiles = self.current();
        let sort = query.sort;
        let mut out: Vec<SeriesSummary> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let key = |id: &u32| (&shard.slot(*id).stats, shard.name(*id));
            let mut ids: Vec<u32> = (0..shard.len() as u32)
                .filter(|&id| {
                    query.series_glob.as_ref().is_none_or(|glob| {
                        glob.matches(std::str::from_utf8(shard.name(id)).unwrap_or_default())
                    })
                })
                .collect();
            if ids.len() > query.limit {
                if query.limit == 0 {
                    continue;
                }
                ids.select_nth_unstable_by(query.limit - 1, |a, b| sort.order(key(a), key(b)));
                ids.truncate(query.limit);
            }
            out.extend(ids.iter().map(|&id| summary(&profiles, &shard, id)));
        }
        out.sort_by(|a, b| {
            sort.order(
                (&stats_of(a), a.series.as_bytes()),
                (&stats_of(b), b.series.as_bytes()),
            )
        });
        out.truncate(query.limit);
        out
    }

    /// Merges the lists several tables (cluster members) gave for `query`:
    /// in its order, at most `limit`.
    pub fn merge_lists(query: &SeriesQuery, lists: Vec<Vec<SeriesSummary>>) -> Vec<SeriesSummary> {
        let mut out: Vec<SeriesSummary> = lists.into_iter().flatten().collect();
        out.sort_by(|a, b| {
            query.sort.order(
                (&stats_of(a), a.series.as_bytes()),
                (&stats_of(b), b.series.as_bytes()),
            )
        });
        out.truncate(query.limit);
        out
    }

    /// Series `name` in detail, with its history; `None` when unknown.
    pub fn detail(&self, name: &str) -> Option<SeriesDetail> {
        let profiles = self.current();
        let hash = hash_name(&self.hasher, name);
        let shard = self.lock_shard(Self::shard_of(hash));
        let id = shard.find(hash, name)?;
        let slot = shard.slot(id);
        let rule = profiles
            .config
            .matching_rule(name)
            .map(|i| profiles.config.rules[i].describe());
        let settings = profiles.settings_of(shard.name(id), slot);
        let detector = &settings.detector;
        let baseline = slot
            .detector
            .baseline_any(slot.stats.last_timestamp, detector);
        Some(SeriesDetail {
            summary: summary(&profiles, &shard, id),
            rule,
            settings: SettingsView {
                detector: detector.kind.name,
                window_size: detector.window_size,
                threshold_multiplier: detector.threshold_multiplier,
                direction: detector.direction,
                min_samples: detector.min_samples,
                min_std_dev: detector.min_std_dev,
                min_relative_std_dev: detector.min_relative_std_dev,
                exclude_anomalies: detector.exclude_anomalies,
                max_excluded_run: detector.max_excluded_run,
                min_consecutive: settings.episodes.min_consecutive,
                resolve_after: settings.episodes.resolve_after,
                resolve_multiplier: settings.episodes.resolve_multiplier,
                series_ttl_seconds: settings.series_ttl.as_secs_f64(),
            },
            mean: baseline.map(|b| b.mean),
            std_dev: baseline.map(|b| b.std_dev),
            threshold: baseline.map(|b| b.threshold),
            lower_threshold: baseline.map(|b| b.lower_threshold),
            episode: slot.episode.open(),
            history: shard.history(id).map(HistoryView::from).collect(),
        })
    }
}

impl SeriesTable {
    /// The table's clock (seconds since it was created), the unit of
    /// [`Self::updated_since`].
    pub fn clock(&self) -> u32 {
        self.now_secs()
    }

    /// The series that received a point at or after `since` (the table's
    /// clock), at most `limit` of them (any), in no order.
    pub fn updated_since(&self, since: u32, limit: usize) -> Vec<SeriesSummary> {
        let profiles = self.current();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for id in 0..shard.len() as u32 {
                if out.len() >= limit {
                    return out;
                }
                if shard.slot(id).last_seen >= since {
                    out.push(summary(&profiles, &shard, id));
                }
            }
        }
        out
    }

    /// The history points of series `name` applied after `cursor` (its
    /// point count when last asked; 0 for all), oldest first, with the new
    /// cursor; `None` for an unknown series.
    pub fn history_after(&self, name: &str, cursor: u64) -> Option<(Vec<HistoryView>, u64)> {
        let hash = hash_name(&self.hasher, name);
        let shard = self.lock_shard(Self::shard_of(hash));
        let id = shard.find(hash, name)?;
        let points = shard.slot(id).stats.points;
        let new = points.saturating_sub(cursor);
        let history: Vec<&HistoryPoint> = shard.history(id).collect();
        let take = (new.min(history.len() as u64)) as usize;
        let views = history[history.len() - take..]
            .iter()
            .map(|p| HistoryView::from(*p))
            .collect();
        Some((views, points))
    }
}

fn summary(profiles: &Profiles, shard: &Shard, id: u32) -> SeriesSummary {
    let (name, slot) = (shard.name(id), shard.slot(id));
    let settings = profiles.settings_of(name, slot);
    SeriesSummary {
        // Names are stored from `&str`: the conversion is lossless.
        series: String::from_utf8_lossy(name).into_owned(),
        points: slot.stats.points,
        last_value: slot.stats.last_value,
        last_seen: slot.stats.last_timestamp,
        anomalies: u64::from(slot.stats.anomalies),
        warming_up: slot.detector.is_warming_up_any(&settings.detector),
    }
}

fn stats_of(summary: &SeriesSummary) -> SeriesStats {
    SeriesStats {
        points: summary.points,
        anomalies: u32::try_from(summary.anomalies).unwrap_or(u32::MAX),
        last_value: summary.last_value,
        last_timestamp: summary.last_seen,
    }
}
