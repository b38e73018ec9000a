//! What the table remembers of episodes beyond each series' 12-byte state:
//! the summary of each open episode (start, points, peak), kept per shard
//! and updated under the shard's lock in the order the points are applied,
//! and the most recently closed episodes, for `GET /episodes`.
//!
//! Only series with an open episode cost anything here (a map entry of
//! about 100 bytes); closed episodes are bounded by `[log]
//! recent_episodes`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::api::EpisodeRecord;
use crate::config::SeriesGlob;
use crate::detect::Side;

/// Default number of episodes a query returns when it names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` a query may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// The summary of an open episode, but its series' name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OpenEpisode {
    pub(crate) id: u64,
    pub(crate) start: f64,
    pub(crate) points: u64,
    pub(crate) peak_score: f64,
    pub(crate) peak_value: f64,
    pub(crate) direction: Side,
}

impl OpenEpisode {
    /// An episode opened by a point at `timestamp` with `value` and
    /// `score`, which crossed on `side`.
    pub(crate) fn opened(id: u64, timestamp: f64, value: f64, score: f64, side: Side) -> Self {
        OpenEpisode {
            id,
            start: timestamp,
            points: 1,
            peak_score: score,
            peak_value: value,
            direction: side,
        }
    }

    /// One more anomalous point in the episode.
    pub(crate) fn add(&mut self, value: f64, score: f64) {
        self.points += 1;
        if score > self.peak_score {
            self.peak_score = score;
            self.peak_value = value;
        }
    }

    /// The episode as a record; `end` is `None` while it is open.
    pub(crate) fn record(&self, series: &str, end: Option<f64>) -> EpisodeRecord {
        EpisodeRecord {
            series: series.to_owned(),
            episode: self.id,
            start: self.start,
            end,
            points: self.points,
            peak_score: self.peak_score,
            peak_value: self.peak_value,
            direction: self.direction,
        }
    }
}

/// The open episodes of one shard, by series name.
pub(super) type OpenEpisodes = HashMap<Box<str>, OpenEpisode, foldhash::fast::RandomState>;

/// A query on the episodes (`GET /episodes`).
#[derive(Clone, Debug, Default)]
pub struct EpisodeQuery {
    /// Return at most this many (the newest ones); default
    /// [`DEFAULT_LIMIT`].
    pub limit: Option<usize>,
    /// Only this series.
    pub series: Option<String>,
    /// Only series matching this glob.
    pub series_glob: Option<SeriesGlob>,
    /// Only episodes still open at or after this time (unix seconds): open
    /// ones, and closed ones that ended at or after it.
    pub since: Option<f64>,
    /// Only episodes that started before this time (unix seconds).
    pub until: Option<f64>,
    /// Only open episodes.
    pub open: bool,
}

impl EpisodeQuery {
    /// Whether an episode of `series` passes the name filters (checked
    /// before a record is built).
    pub(crate) fn matches_series(&self, series: &str) -> bool {
        self.series.as_deref().is_none_or(|s| s == series)
            && self.series_glob.as_ref().is_none_or(|g| g.matches(series))
    }

    /// Whether `record` passes the time and state filters.
    pub(crate) fn matches(&self, record: &EpisodeRecord) -> bool {
        (!self.open || record.end.is_none())
            && self
                .since
                .is_none_or(|t| record.end.is_none_or(|end| end >= t))
            && self.until.is_none_or(|t| record.start < t)
    }

    /// The limit in force.
    pub(crate) fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }

    /// The answer from the episodes `found`: newest first, at most the
    /// limit.
    pub(crate) fn newest(&self, mut found: Vec<EpisodeRecord>) -> Vec<EpisodeRecord> {
        found.sort_by(newest_first);
        found.truncate(self.limit());
        found
    }
}

/// The most recently closed episodes, oldest closing first, at most
/// `capacity` (`[log] recent_episodes`).
#[derive(Debug, Default)]
pub(crate) struct RecentEpisodes {
    records: VecDeque<EpisodeRecord>,
    capacity: usize,
}

impl RecentEpisodes {
    /// An empty list keeping at most `capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        RecentEpisodes {
            records: VecDeque::new(),
            capacity,
        }
    }

    /// Changes the capacity; returns the oldest records dropped for it.
    pub(crate) fn set_capacity(&mut self, capacity: usize) -> Vec<EpisodeRecord> {
        self.capacity = capacity;
        let excess = self.records.len().saturating_sub(capacity);
        self.records.drain(..excess).collect()
    }

    /// Keeps `record`, dropping the oldest when full; returns the record
    /// dropped (`record` itself when the capacity is 0).
    pub(crate) fn push(&mut self, record: EpisodeRecord) -> Option<EpisodeRecord> {
        if self.capacity == 0 {
            return Some(record);
        }
        let dropped = if self.records.len() >= self.capacity {
            self.records.pop_front()
        } else {
            None
        };
        self.records.push_back(record);
        dropped
    }

    /// Appends the records `query` selects (none when it asks for open
    /// episodes only) to `out`, unsorted.
    pub(crate) fn matching(&self, query: &EpisodeQuery, out: &mut Vec<EpisodeRecord>) {
        if query.open {
            return;
        }
        out.extend(
            self.records
                .iter()
                .filter(|r| query.matches_series(&r.series) && query.matches(r))
                .cloned(),
        );
    }
}

/// Newest first: later start, then larger id, then series name.
fn newest_first(a: &EpisodeRecord, b: &EpisodeRecord) -> std::cmp::Ordering {
    b.start
        .total_cmp(&a.start)
        .then(b.episode.cmp(&a.episode))
        .then_with(|| a.series.cmp(&b.series))
}

/// Episode counters and the recently closed episodes.
#[derive(Debug, Default)]
pub(super) struct EpisodeLedger {
    /// Episodes opened since start.
    pub(super) opened: AtomicU64,
    /// Episodes closed since start (by their series, or when it was
    /// forgotten).
    pub(super) closed: AtomicU64,
    /// Episodes open now.
    pub(super) open: AtomicUsize,
    /// The recently closed episodes.
    recent: Mutex<RecentEpisodes>,
}

impl EpisodeLedger {
    /// A ledger keeping the `capacity` most recently closed episodes.
    pub(super) fn new(capacity: usize) -> Self {
        EpisodeLedger {
            recent: Mutex::new(RecentEpisodes::new(capacity)),
            ..EpisodeLedger::default()
        }
    }

    /// Changes how many closed episodes are kept.
    pub(super) fn set_capacity(&self, capacity: usize) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_capacity(capacity);
    }

    /// Counts an opened episode.
    pub(super) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open episode restored from a snapshot (opened by an
    /// earlier run: the gauge, not the counter).
    pub(super) fn restored_open(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open episode whose series moved to another cluster member
    /// (the gauge only: it did not close).
    pub(super) fn handed_over(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts and keeps a closed episode.
    pub(super) fn closed(&self, record: EpisodeRecord) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    /// The closed episodes `query` selects (all of them, unsorted).
    pub(super) fn closed_matching(&self, query: &EpisodeQuery, out: &mut Vec<EpisodeRecord>) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .matching(query, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(series: &str, id: u64, start: f64, end: Option<f64>) -> EpisodeRecord {
        OpenEpisode::opened(id, start, 9.0, 5.0, Side::Upper).record(series, end)
    }

    #[test]
    fn peaks_follow_the_highest_score() {
        let mut open = OpenEpisode::opened(7, 10.0, 50.0, 4.0, Side::Lower);
        open.add(60.0, 9.0);
        open.add(55.0, 6.0);
        let r = open.record("cpu", Some(13.0));
        assert_eq!(
            (r.points, r.peak_score, r.peak_value, r.start, r.end),
            (3, 9.0, 60.0, 10.0, Some(13.0))
        );
        assert_eq!((r.episode, r.direction), (7, Side::Lower));
    }

    #[test]
    fn queries_select_by_overlap_and_state() {
        let open = record("a", 1, 10.0, None);
        let closed = record("b", 2, 10.0, Some(20.0));
        let q = |f: fn(&mut EpisodeQuery)| {
            let mut q = EpisodeQuery::default();
            f(&mut q);
            (q.matches(&open), q.matches(&closed))
        };
        assert_eq!(q(|_| {}), (true, true));
        assert_eq!(q(|q| q.open = true), (true, false));
        assert_eq!(q(|q| q.since = Some(20.0)), (true, true), "ended at since");
        assert_eq!(q(|q| q.since = Some(20.5)), (true, false));
        assert_eq!(
            q(|q| q.until = Some(10.0)),
            (false, false),
            "started at until"
        );
        assert_eq!(q(|q| q.until = Some(10.5)), (true, true));
        let by_name = EpisodeQuery {
            series: Some("a".into()),
            ..EpisodeQuery::default()
        };
        assert!(by_name.matches_series("a") && !by_name.matches_series("b"));
    }

    #[test]
    fn the_ledger_keeps_the_newest_closed_episodes() {
        let ledger = EpisodeLedger::new(2);
        for id in 0..3 {
            ledger.opened();
            ledger.closed(record("s", id, id as f64, Some(id as f64 + 1.0)));
        }
        let mut out = Vec::new();
        ledger.closed_matching(&EpisodeQuery::default(), &mut out);
        let ids: Vec<u64> = EpisodeQuery::default()
            .newest(out)
            .iter()
            .map(|r| r.episode)
            .collect();
        assert_eq!(ids, [2, 1]);
        assert_eq!(ledger.opened.load(Ordering::Relaxed), 3);
        assert_eq!(ledger.closed.load(Ordering::Relaxed), 3);
        assert_eq!(ledger.open.load(Ordering::Relaxed), 0);
        ledger.set_capacity(1);
        let mut out = Vec::new();
        ledger.closed_matching(&EpisodeQuery::default(), &mut out);
        assert_eq!(out.len(), 1);
    }
}
