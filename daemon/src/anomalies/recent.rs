//! The bounded in-memory list of recent anomalies served by `GET /anomalies`.
//!
//! It keeps the newest `recent_anomalies` records, oldest first, and answers
//! queries by series, time and count. At start-up it is filled from the tail
//! of the anomaly log, so a restart does not empty it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::api::AnomalyRecord;
use crate::config::SeriesGlob;

/// Default number of records a query returns when it names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` a query may ask for: a reply stays a few MB however
/// large `recent_anomalies` is.
pub const MAX_LIMIT: usize = 10_000;

/// A query on the recent anomalies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Return at most this many (the newest ones).
    pub limit: Option<usize>,
    /// Only this series.
    pub series: Option<String>,
    /// Only series matching this glob.
    pub series_glob: Option<SeriesGlob>,
    /// Only points whose timestamp is at or after this (unix seconds).
    pub since: Option<f64>,
    /// Only points whose timestamp is before this (unix seconds).
    pub until: Option<f64>,
    /// Only points of this episode (pair it with `series`: ids are unique
    /// per series).
    pub episode: Option<u64>,
}

impl Query {
    /// Whether `record` passes every filter of the query.
    fn matches(&self, record: &AnomalyRecord) -> bool {
        self.series.as_deref().is_none_or(|s| record.series == s)
            && self
                .series_glob
                .as_ref()
                .is_none_or(|g| g.matches(&record.series))
            && self.since.is_none_or(|t| record.timestamp >= t)
            && self.until.is_none_or(|t| record.timestamp < t)
            && self.episode.is_none_or(|e| record.episode == Some(e))
    }
}

/// Recent anomalies, newest last, bounded in count.
#[derive(Debug)]
pub struct RecentAnomalies {
    capacity: AtomicUsize,
    // A std Mutex: the critical sections are short and never await.
    records: Mutex<VecDeque<AnomalyRecord>>,
    /// Records ever appended (under the `records` lock): the cursor of
    /// [`RecentAnomalies::newer_than`].
    appended: AtomicU64,
}

impl RecentAnomalies {
    /// An empty list holding at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: AtomicUsize::new(capacity.max(1)),
            records: Mutex::new(VecDeque::with_capacity(capacity.clamp(1, 65_536))),
            appended: AtomicU64::new(0),
        }
    }

    /// The most records kept.
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes the capacity (a reload of `recent_anomalies`), dropping the
    /// oldest records beyond it.
    pub fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.max(1);
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        self.capacity.store(capacity, Ordering::Relaxed);
        let excess = records.len().saturating_sub(capacity);
        records.drain(..excess);
    }

    /// Appends records, dropping the oldest beyond the capacity.
    pub fn extend<I: IntoIterator<Item = AnomalyRecord>>(&self, new: I) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = self.capacity();
        let mut appended = 0;
        for record in new {
            if records.len() >= capacity {
                records.pop_front();
            }
            records.push_back(record);
            appended += 1;
        }
        self.appended.fetch_add(appended, Ordering::Release);
    }

    /// The cursor of the newest record: what [`Self::newer_than`] takes to
    /// return only what comes after now.
    pub fn cursor(&self) -> u64 {
        let _records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        self.appended.load(Ordering::Acquire)
    }

    /// The records appended after `cursor`, oldest first, at most the
    /// newest `max`; with the new cursor and how many were skipped (beyond
    /// `max`, or dropped from the list before they were read).
    pub fn newer_than(&self, cursor: u64, max: usize) -> (Vec<AnomalyRecord>, u64, u64) {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.appended.load(Ordering::Acquire);
        let new = now.saturating_sub(cursor);
        let take = new.min(records.len() as u64).min(max as u64) as usize;
        let out = records.iter().skip(records.len() - take).cloned().collect();
        (out, now, new - take as u64)
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest records matching `query`, oldest first. `limit` defaults
    /// to [`DEFAULT_LIMIT`] and is capped at [`MAX_LIMIT`] and the
    /// capacity. Only the records returned are cloned under the lock; the
    /// caller serialises them after it is released.
    pub fn query(&self, query: &Query) -> Vec<AnomalyRecord> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIMIT)
            .min(MAX_LIMIT)
            .min(self.capacity());
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<AnomalyRecord> = records
            .iter()
            .rev()
            .filter(|r| query.matches(r))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Side;

    fn rec(series: &str, ts: f64) -> AnomalyRecord {
        AnomalyRecord {
            series: series.into(),
            value: ts,
            timestamp: ts,
            mean: 0.0,
            std_dev: 1.0,
            threshold: 3.0,
            direction: Side::Upper,
            score: Some(4.0),
            // Two points per episode: 0-1, 2-3, ...
            episode: Some(ts as u64 / 2),
            seq: None,
        }
    }

    #[test]
    fn a_cursor_gives_what_came_after_it() {
        let store = RecentAnomalies::new(4);
        let start = store.cursor();
        store.extend([rec("a", 1.0), rec("a", 2.0)]);
        let (new, cursor, skipped) = store.newer_than(start, 10);
        assert_eq!(new.len(), 2);
        assert_eq!(skipped, 0);
        assert!(store.newer_than(cursor, 10).0.is_empty());
        store.extend((3..9).map(|t| rec("a", f64::from(t))));
        let (new, _, skipped) = store.newer_than(cursor, 3);
        let times: Vec<f64> = new.iter().map(|r| r.timestamp).collect();
        assert_eq!(times, [6.0, 7.0, 8.0], "the newest, oldest first");
        assert_eq!(skipped, 3, "six new, three shown");
    }

    #[test]
    fn keeps_the_newest_and_filters() {
        let store = RecentAnomalies::new(5);
        store.extend((0..8).map(|i| rec(if i % 2 == 0 { "a" } else { "b" }, i as f64)));
        assert_eq!(store.len(), 5);
        let all = store.query(&Query::default());
        let ts: Vec<f64> = all.iter().map(|r| r.timestamp).collect();
        assert_eq!(ts, vec![3.0, 4.0, 5.0, 6.0, 7.0]);
        let a = store.query(&Query {
            series: Some("a".into()),
            ..Query::default()
        });
        assert_eq!(
            a.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            vec![4.0, 6.0]
        );
        let since = store.query(&Query {
            since: Some(6.0),
            ..Query::default()
        });
        assert_eq!(since.len(), 2);
        let window = store.query(&Query {
            since: Some(4.0),
            until: Some(6.0),
            ..Query::default()
        });
        assert_eq!(
            window.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            vec![4.0, 5.0],
            "since is inclusive, until exclusive"
        );
        let glob = store.query(&Query {
            series_glob: Some(SeriesGlob::new("[b]*").unwrap()),
            ..Query::default()
        });
        assert_eq!(
            glob.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            vec![3.0, 5.0, 7.0]
        );
        let episode = store.query(&Query {
            episode: Some(2),
            ..Query::default()
        });
        assert_eq!(
            episode.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            vec![4.0, 5.0]
        );
        let limited = store.query(&Query {
            limit: Some(2),
            ..Query::default()
        });
        assert_eq!(
            limited.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
            vec![6.0, 7.0]
        );
        let capped = store.query(&Query {
            limit: Some(1000),
            ..Query::default()
        });
        assert_eq!(capped.len(), 5);
    }
}
