//! `anomalyd evaluate`: how well candidate configurations find labelled
//! incidents in recorded points, so that settings (and the built-in
//! defaults) are chosen on evidence.
//!
//! The points are read once (as `replay` reads them: NDJSON or CSV, with
//! timestamps) and each candidate runs them through a fresh
//! [`SeriesTable`]. Its episodes are matched with the labelled windows:
//!
//! - a window is a run of labelled points of one series (the generator's
//!   `--labels` NDJSON: one line per injected point; adjacent points merge,
//!   so a burst is one window), or a CSV row `series,start,end` (unix
//!   seconds, inclusive);
//! - an episode (from the point that opened it to the one that closed it,
//!   or to the series' last point) **hits** a window of its series when it
//!   overlaps it or starts within `window_size` points after it;
//! - precision is the share of episodes that hit a window, recall the share
//!   of windows hit (a window hit several times counts once), F1 their
//!   harmonic mean; the delay of a hit window is the number of points from
//!   its start to the start of the first episode hitting it (0 when the
//!   episode opened on its first point); false episodes are counted per
//!   10,000 points outside every window.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::replay::{ReplayError, ReplayOptions, ReplaySummary, for_each_point};
use crate::config::Config;
use crate::detect::episode::EpisodeEvent;
use crate::ingest::DataPoint;
use crate::series::SeriesTable;

/// Errors that stop an evaluation (all mean bad input: exit 65).
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The points could not be read.
    #[error(transparent)]
    Points(#[from] ReplayError),
    /// The labels file could not be read.
    #[error("{path}: {source}")]
    LabelsIo {
        /// The labels file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of the labels file is not a label.
    #[error("{path}:{line}: {message}")]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A point has no timestamp, so labels cannot be matched with it.
    #[error("point {index} of series {series:?} has no timestamp; evaluate matches labels by time")]
    NoTimestamp {
        /// The series.
        series: String,
        /// 0-based index of the point in its series.
        index: usize,
    },
}

/// A configuration to score.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// How it is named in the results (its path, or "built-in defaults").
    pub name: String,
    /// The configuration.
    pub config: Arc<Config>,
}

/// The scores of one candidate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    /// The candidate's name.
    pub candidate: String,
    /// Share of episodes that hit a labelled window (0 when there is none).
    pub precision: f64,
    /// Share of labelled windows hit (1 when there is none).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Mean points from a hit window's start to its first episode's start;
    /// `None` when no window was hit.
    pub mean_delay_points: Option<f64>,
    /// Episodes that hit no window, per 10,000 points outside every window.
    pub false_per_10k: f64,
    /// The counts over every series.
    #[serde(flatten)]
    pub totals: Counts,
    /// The counts per series.
    pub series: Vec<SeriesScore>,
}

/// The counts of one series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesScore {
    /// The series.
    pub series: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What the scores are computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Episodes.
    pub episodes: u64,
    /// Episodes that hit no window.
    pub false_episodes: u64,
    /// Labelled windows.
    pub windows: u64,
    /// Windows hit.
    pub windows_hit: u64,
    /// Points.
    pub points: u64,
    /// Points outside every window.
    pub normal_points: u64,
    /// Sum of the delays of the hit windows, in points.
    pub delay_points: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.episodes += other.episodes;
        self.false_episodes += other.false_episodes;
        self.windows += other.windows;
        self.windows_hit += other.windows_hit;
        self.points += other.points;
        self.normal_points += other.normal_points;
        self.delay_points += other.delay_points;
    }
}

/// A labelled window: point indices `first..end` of its series (empty
/// when no point falls in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    first: usize,
    end: usize,
}

impl Window {
    /// Whether an episode over points `start..=last` hits this window: it
    /// overlaps it, or starts within `window_size` points after it.
    fn hit_by(&self, (start, last): (usize, usize), window_size: usize) -> bool {
        let overlaps = start < self.end && last >= self.first;
        let just_after = start >= self.end && start < self.end + window_size;
        overlaps || just_after
    }
}

/// The points of one series, in file order.
#[derive(Debug, Default)]
struct SeriesPoints {
    timestamps: Vec<f64>,
}

/// The recorded points, read once.
#[derive(Debug, Default)]
struct Points {
    /// `(series index, value, timestamp, seq)` in file order.
    order: Vec<(u32, f64, f64, Option<u64>)>,
    names: Vec<String>,
    by_name: HashMap<String, u32>,
    series: Vec<SeriesPoints>,
}

impl Points {
    fn push(&mut self, point: &DataPoint<'_>) -> Result<(), EvaluateError> {
        let next = self.names.len() as u32;
        let index = *self
            .by_name
            .entry(point.series.to_string())
            .or_insert_with(|| next);
        if index == next {
            self.names.push(point.series.to_string());
            self.series.push(SeriesPoints::default());
        }
        let series = &mut self.series[index as usize];
        let Some(timestamp) = point.timestamp else {
            return Err(EvaluateError::NoTimestamp {
                series: point.series.to_string(),
                index: series.timestamps.len(),
            });
        };
        series.timestamps.push(timestamp);
        self.order.push((index, point.value, timestamp, point.seq));
        Ok(())
    }
}

/// Reads the points of `options` (as replay does) and the labels of
/// `labels`, then scores each candidate.
pub fn evaluate(
    candidates: &[Candidate],
    labels: &Path,
    options: &ReplayOptions,
    max_line: usize,
) -> Result<(Vec<Score>, ReplaySummary), EvaluateError> {
    let mut points = Points::default();
    let mut summary = ReplaySummary::default();
    let mut failed = None;
    let read = for_each_point(options, max_line, &mut summary, &mut |point| {
        if failed.is_none()
            && let Err(e) = points.push(point)
        {
            failed = Some(e);
        }
        Ok(())
    });
    read?;
    if let Some(e) = failed {
        return Err(e);
    }
    let windows = read_labels(labels, &points)?;
    let progress = progress_bar(candidates.len() as u64 * points.order.len() as u64);
    let scores = candidates
        .iter()
        .map(|candidate| {
            let score = score(candidate, &points, &windows, &progress);
            progress.inc(points.order.len() as u64);
            score
        })
        .collect();
    progress.finish_and_clear();
    Ok((scores, summary))
}

/// A bar over every point of every candidate, on a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || total < 1_000_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} points eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// The windows of each series (by series index), from the generator's
/// labels NDJSON or a CSV `series,start,end`.
fn read_labels(path: &Path, points: &Points) -> Result<Vec<Vec<Window>>, EvaluateError> {
    let io = |source| EvaluateError::LabelsIo {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut windows: Vec<Vec<Window>> = vec![Vec::new(); points.series.len()];
    let mut labelled: Vec<Vec<usize>> = vec![Vec::new(); points.series.len()];
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let number = number as u64 + 1;
        let bad = |message: String| EvaluateError::BadLabel {
            path: path.to_owned(),
            line: number,
            message,
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with('{') {
            let label: serde_json::Value =
                serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let series = label["series"]
                .as_str()
                .ok_or_else(|| bad("no `series` string".into()))?;
            let timestamp = label["timestamp"]
                .as_f64()
                .ok_or_else(|| bad("no `timestamp` number".into()))?;
            if let Some(&s) = points.by_name.get(series) {
                let times = &points.series[s as usize].timestamps;
                let at = times.partition_point(|&t| t < timestamp);
                if at < times.len() {
                    labelled[s as usize].push(at);
                }
            }
            continue;
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        let [series, start, end] = fields[..] else {
            return Err(bad(format!(
                "expected `series,start,end` or a JSON label, got {} fields",
                fields.len()
            )));
        };
        let (Ok(start), Ok(end)) = (start.parse::<f64>(), end.parse::<f64>()) else {
            if number == 1 {
                continue; // A header.
            }
            return Err(bad(format!(
                "start and end must be unix seconds, got `{start}` and `{end}`"
            )));
        };
        if let Some(&s) = points.by_name.get(series) {
            let times = &points.series[s as usize].timestamps;
            let first = times.partition_point(|&t| t < start);
            windows[s as usize].push(Window {
                first,
                end: times.partition_point(|&t| t <= end).max(first),
            });
        }
    }
    for (series, mut indices) in labelled.into_iter().enumerate() {
        indices.sort_unstable();
        indices.dedup();
        for index in indices {
            match windows[series].last_mut() {
                Some(w) if w.first < w.end && w.end == index => w.end = index + 1,
                _ => windows[series].push(Window {
                    first: index,
                    end: index + 1,
                }),
            }
        }
    }
    Ok(windows)
}

/// Runs one candidate over the points and matches its episodes.
fn score(
    candidate: &Candidate,
    points: &Points,
    windows: &[Vec<Window>],
    progress: &indicatif::ProgressBar,
) -> Score {
    let table = SeriesTable::new(candidate.config.clone());
    table.unlimited();
    // Per series: points seen, and episodes as (first, last) indices.
    let mut seen = vec![0usize; points.series.len()];
    let mut episodes: Vec<Vec<(usize, usize)>> = vec![Vec::new(); points.series.len()];
    let mut open: Vec<Option<usize>> = vec![None; points.series.len()];
    for (n, &(series, value, timestamp, seq)) in points.order.iter().enumerate() {
        let s = series as usize;
        let point = DataPoint {
            value,
            timestamp: Some(timestamp),
            series: std::borrow::Cow::Borrowed(&points.names[s]),
            seq,
        };
        let observation = table
            .observe_point(&point)
            .expect("evaluate has no series limit");
        let index = seen[s];
        seen[s] += 1;
        match observation.episode.event {
            Some(EpisodeEvent::Opened) => open[s] = Some(index),
            Some(EpisodeEvent::Closed) => {
                if let Some(first) = open[s].take() {
                    episodes[s].push((first, index));
                }
            }
            None => {}
        }
        if n % 65_536 == 0 {
            progress.set_position(progress.position().max(n as u64));
        }
    }
    let mut per_series = Vec::new();
    for (s, name) in points.names.iter().enumerate() {
        if let Some(first) = open[s] {
            episodes[s].push((first, seen[s].saturating_sub(1)));
        }
        let window_size = candidate.config.series_settings(name).detector.window_size;
        per_series.push(match_series(
            name,
            &episodes[s],
            &windows[s],
            seen[s],
            window_size,
        ));
    }
    summarise(&candidate.name, per_series)
}

/// Matches the episodes of one series with its windows.
fn match_series(
    name: &str,
    episodes: &[(usize, usize)],
    windows: &[Window],
    points: usize,
    window_size: usize,
) -> SeriesScore {
    let hits = |&episode: &(usize, usize), w: &Window| w.hit_by(episode, window_size);
    let false_episodes = episodes
        .iter()
        .filter(|e| !windows.iter().any(|w| hits(e, w)))
        .count() as u64;
    let mut windows_hit = 0;
    let mut delay_points = 0;
    for w in windows {
        if let Some(&(start, _)) = episodes.iter().find(|e| hits(e, w)) {
            windows_hit += 1;
            delay_points += start.saturating_sub(w.first) as u64;
        }
    }
    let labelled: usize = windows.iter().map(|w| w.end - w.first).sum();
    SeriesScore {
        series: name.to_owned(),
        counts: Counts {
            episodes: episodes.len() as u64,
            false_episodes,
            windows: windows.len() as u64,
            windows_hit,
            points: points as u64,
            normal_points: points.saturating_sub(labelled) as u64,
            delay_points,
        },
    }
}

/// The totals of a candidate.
fn summarise(candidate: &str, series: Vec<SeriesScore>) -> Score {
    let mut t = Counts::default();
    for s in &series {
        t += s.counts;
    }
    let precision = if t.episodes == 0 {
        0.0
    } else {
        (t.episodes - t.false_episodes) as f64 / t.episodes as f64
    };
    let recall = if t.windows == 0 {
        1.0
    } else {
        t.windows_hit as f64 / t.windows as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Score {
        candidate: candidate.to_owned(),
        precision,
        recall,
        f1,
        mean_delay_points: (t.windows_hit > 0)
            .then(|| t.delay_points as f64 / t.windows_hit as f64),
        false_per_10k: t.false_episodes as f64 * 10_000.0 / t.normal_points.max(1) as f64,
        totals: t,
        series,
    }
}

/// The results as a table, one row per candidate.
pub fn table(scores: &[Score]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<40} {:>9} {:>7} {:>6} {:>7} {:>9} {:>9}\n",
        "candidate", "precision", "recall", "F1", "delay", "false/10k", "episodes"
    );
    for s in scores {
        let delay = s
            .mean_delay_points
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.1}"));
        let _ = writeln!(
            out,
            "{:<40} {:>9.3} {:>7.3} {:>6.3} {:>7} {:>9.2} {:>9}",
            s.candidate, s.precision, s.recall, s.f1, delay, s.false_per_10k, s.totals.episodes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_hits_a_window_it_overlaps_or_follows_closely() {
        let w = Window { first: 10, end: 13 };
        for (episode, hit) in [
            ((8, 9), false),
            ((8, 10), true),
            ((12, 20), true),
            ((13, 13), true),
            ((17, 18), true),
            ((18, 18), false),
        ] {
            assert_eq!(w.hit_by(episode, 5), hit, "{episode:?}");
        }
        // A window no point falls in, between points 9 and 10.
        let empty = Window { first: 10, end: 10 };
        assert!(empty.hit_by((10, 10), 5) && empty.hit_by((9, 12), 5) && !empty.hit_by((2, 9), 5));
    }

    #[test]
    fn scores_count_each_window_once_and_false_episodes_per_normal_point() {
        let windows = [Window { first: 10, end: 12 }, Window { first: 50, end: 51 }];
        // Two episodes on the first window, one false, none on the second.
        let s = match_series("cpu", &[(11, 12), (13, 14), (30, 31)], &windows, 1_000, 3);
        let c = s.counts;
        assert_eq!(
            (
                c.episodes,
                c.false_episodes,
                c.windows,
                c.windows_hit,
                c.delay_points
            ),
            (3, 1, 2, 1, 1)
        );
        assert_eq!(c.normal_points, 997);
        let score = summarise("x", vec![s]);
        assert_eq!((score.precision, score.recall), (2.0 / 3.0, 0.5));
        assert!((score.f1 - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(score.mean_delay_points, Some(1.0));
        assert!((score.false_per_10k - 10_000.0 / 997.0).abs() < 1e-9);
    }

    #[test]
    fn points_need_timestamps() {
        let mut points = Points::default();
        let point = DataPoint {
            value: 1.0,
            timestamp: None,
            series: "a".into(),
            seq: None,
        };
        let err = points.push(&point).unwrap_err();
        assert_eq!(
            err.to_string(),
            "point 0 of series \"a\" has no timestamp; evaluate matches labels by time"
        );
    }

    #[test]
    fn labels_merge_adjacent_points_and_read_csv_windows() {
        let dir = tempfile::tempdir().unwrap();
        let mut points = Points::default();
        for i in 0..20 {
            for series in ["a", "b"] {
                let point = DataPoint {
                    value: 1.0,
                    timestamp: Some(100.0 + f64::from(i)),
                    series: series.into(),
                    seq: None,
                };
                points.push(&point).unwrap();
            }
        }
        let ndjson = dir.path().join("labels.ndjson");
        let label = |t: u32| format!("{{\"series\":\"a\",\"timestamp\":{}}}\n", 100 + t);
        std::fs::write(&ndjson, [3, 4, 5, 9].map(label).concat()).unwrap();
        let windows = read_labels(&ndjson, &points).unwrap();
        assert_eq!(
            windows[0],
            [Window { first: 3, end: 6 }, Window { first: 9, end: 10 }]
        );
        assert!(windows[1].is_empty());
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "series,start,end\nb,104.5,107\nb,200,300\n").unwrap();
        let windows = read_labels(&csv, &points).unwrap();
        assert_eq!(
            windows[1],
            [Window { first: 5, end: 8 }, Window { first: 20, end: 20 }]
        );
        std::fs::write(&csv, "b,1,2\nb,x,3\n").unwrap();
        let err = read_labels(&csv, &points).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("labels.csv:2: start and end must be unix seconds, got `x` and `3`"),
            "{err}"
        );
    }
}
