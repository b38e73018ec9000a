//! The cluster's episodes as every member sees them, for `GET /episodes`:
//! built from the anomalies stream, where each owner publishes the
//! anomaly records it logs (each names its episode) and every episode it
//! closes (complete, on `<prefix>.episodes.<N>`).
//!
//! An open episode is summed up from its anomaly records as the owner's
//! table sums it up: the first record seen opens it (the opening point,
//! unless the stream no longer keeps it), each further one adds a point
//! and may raise the peak. A closing replaces that summary with the
//! owner's complete record. Records a partition's next owner produces
//! again are dropped before they reach this view (by the follower in
//! `app::cluster::reads`); a closing seen again is recognised here by its
//! `(series, episode)`.
//!
//! Pure: no I/O.

use std::collections::{HashMap, HashSet};

use crate::api::{AnomalyRecord, EpisodeRecord};
use crate::series::episodes::{EpisodeQuery, OpenEpisode, RecentEpisodes};

/// `(series, episode)`: what identifies an episode.
type EpisodeKey = (String, u64);

/// Open and recently closed episodes of the whole cluster.
#[derive(Debug, Default)]
pub struct EpisodeView {
    open: HashMap<EpisodeKey, OpenEpisode>,
    closed: RecentEpisodes,
    /// The keys of `closed`.
    closed_keys: HashSet<EpisodeKey>,
    open_capacity: usize,
}

impl EpisodeView {
    /// A view keeping the `closed_capacity` most recently closed episodes
    /// (`[log] recent_episodes`) and at most `open_capacity` open ones
    /// (`[server] max_series`: an owner has at most one per series).
    pub fn new(closed_capacity: usize, open_capacity: usize) -> Self {
        EpisodeView {
            closed: RecentEpisodes::new(closed_capacity),
            open_capacity: open_capacity.max(1),
            ..EpisodeView::default()
        }
    }

    /// Changes the capacities (after a reload), dropping the oldest
    /// closed episodes beyond the new one.
    pub fn set_capacities(&mut self, closed_capacity: usize, open_capacity: usize) {
        self.open_capacity = open_capacity.max(1);
        for dropped in self.closed.set_capacity(closed_capacity) {
            self.closed_keys.remove(&(dropped.series, dropped.episode));
        }
    }

    /// Counts an anomaly record (seen for the first time) into its episode.
    pub fn anomaly(&mut self, record: &AnomalyRecord) {
        let Some(id) = record.episode else { return };
        let key = (record.series.clone(), id);
        if self.closed_keys.contains(&key) {
            return;
        }
        let score = record.score.unwrap_or(0.0);
        if let Some(open) = self.open.get_mut(&key) {
            open.add(record.value, score);
            return;
        }
        if self.open.len() >= self.open_capacity {
            self.drop_oldest_open();
        }
        self.open.insert(
            key,
            OpenEpisode::opened(id, record.timestamp, record.value, score, record.direction),
        );
    }

    /// Makes room among the open episodes: only needed when closings went
    /// missing (their series were forgotten, or the stream no longer keeps
    /// them), so the oldest are the likeliest to be over. One pass over
    /// the map drops the oldest sixteenth (at least one), so that a full
    /// map costs O(1) per new episode, amortised, not a scan each time.
    fn drop_oldest_open(&mut self) {
        let count = (self.open.len() / 16).max(1);
        let mut starts: Vec<f64> = self.open.values().map(|open| open.start).collect();
        let (_, cutoff, _) = starts.select_nth_unstable_by(count - 1, f64::total_cmp);
        let cutoff = *cutoff;
        let mut left = count;
        self.open.retain(|_, open| {
            if left > 0 && open.start.total_cmp(&cutoff).is_le() {
                left -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Records an episode's closing, as its owner published it.
    pub fn closed(&mut self, record: EpisodeRecord) {
        let key = (record.series.clone(), record.episode);
        self.open.remove(&key);
        if !self.closed_keys.insert(key) {
            return;
        }
        if let Some(dropped) = self.closed.push(record) {
            self.closed_keys.remove(&(dropped.series, dropped.episode));
        }
    }

    /// The episodes `query` selects, newest first, at most its limit.
    pub fn query(&self, query: &EpisodeQuery) -> Vec<EpisodeRecord> {
        let mut found: Vec<EpisodeRecord> = self
            .open
            .iter()
            .filter(|((series, _), _)| query.matches_series(series))
            .map(|((series, _), open)| open.record(series, None))
            .filter(|record| query.matches(record))
            .collect();
        self.closed.matching(query, &mut found);
        query.newest(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Side;

    fn anomaly(
        series: &str,
        seq: u64,
        episode: Option<u64>,
        value: f64,
        score: f64,
    ) -> AnomalyRecord {
        AnomalyRecord {
            series: series.into(),
            value,
            timestamp: seq as f64,
            mean: 10.0,
            std_dev: 1.0,
            threshold: 13.0,
            direction: Side::Upper,
            score: Some(score),
            episode,
            seq: Some(seq),
        }
    }

    fn closing(series: &str, episode: u64, end: f64, points: u64) -> EpisodeRecord {
        EpisodeRecord {
            series: series.into(),
            episode,
            start: episode as f64,
            end: Some(end),
            points,
            peak_score: 9.0,
            peak_value: 90.0,
            direction: Side::Upper,
        }
    }

    #[test]
    fn an_open_episode_is_summed_up_from_its_anomalies() {
        let mut view = EpisodeView::new(10, 10);
        // Before the episode opened: outside any.
        view.anomaly(&anomaly("cpu", 40, None, 50.0, 4.0));
        view.anomaly(&anomaly("cpu", 41, Some(41), 60.0, 5.0));
        view.anomaly(&anomaly("cpu", 42, Some(41), 80.0, 8.0));
        view.anomaly(&anomaly("cpu", 43, Some(41), 70.0, 7.0));
        let listed = view.query(&EpisodeQuery::default());
        assert_eq!(listed.len(), 1);
        let e = &listed[0];
        assert_eq!((e.series.as_str(), e.episode, e.start), ("cpu", 41, 41.0));
        assert_eq!(
            (e.end, e.points, e.peak_score, e.peak_value),
            (None, 3, 8.0, 80.0)
        );
    }

    #[test]
    fn a_closing_replaces_the_summary_once() {
        let mut view = EpisodeView::new(10, 10);
        view.anomaly(&anomaly("cpu", 41, Some(41), 60.0, 5.0));
        view.closed(closing("cpu", 41, 45.0, 4));
        // Seen again (the next owner after a kill -9): still one.
        view.closed(closing("cpu", 41, 45.0, 4));
        view.anomaly(&anomaly("cpu", 42, Some(41), 80.0, 8.0));
        let listed = view.query(&EpisodeQuery::default());
        assert_eq!(listed, vec![closing("cpu", 41, 45.0, 4)]);
        let open_only = EpisodeQuery {
            open: true,
            ..EpisodeQuery::default()
        };
        assert!(view.query(&open_only).is_empty());
    }

    #[test]
    fn queries_filter_sort_and_limit() {
        let mut view = EpisodeView::new(10, 10);
        view.closed(closing("a", 1, 2.0, 1));
        view.anomaly(&anomaly("b", 5, Some(5), 60.0, 5.0));
        view.closed(closing("c", 3, 4.0, 1));
        let ids =
            |q: &EpisodeQuery| -> Vec<u64> { view.query(q).iter().map(|e| e.episode).collect() };
        assert_eq!(ids(&EpisodeQuery::default()), [5, 3, 1]);
        let limited = EpisodeQuery {
            limit: Some(2),
            ..EpisodeQuery::default()
        };
        assert_eq!(ids(&limited), [5, 3]);
        let by_name = EpisodeQuery {
            series: Some("a".into()),
            ..EpisodeQuery::default()
        };
        assert_eq!(ids(&by_name), [1]);
        let since = EpisodeQuery {
            since: Some(3.0),
            ..EpisodeQuery::default()
        };
        assert_eq!(ids(&since), [5, 3]);
    }

    #[test]
    fn capacities_bound_both_lists() {
        let mut view = EpisodeView::new(2, 2);
        for id in 0..3 {
            view.closed(closing("s", id, id as f64 + 0.5, 1));
        }
        for id in 10..13 {
            view.anomaly(&anomaly("t", id, Some(id), 60.0, 5.0));
        }
        let ids: Vec<u64> = view
            .query(&EpisodeQuery::default())
            .iter()
            .map(|e| e.episode)
            .collect();
        assert_eq!(ids, [12, 11, 2, 1], "the oldest of each went");
        view.set_capacities(1, 2);
        assert_eq!(view.query(&EpisodeQuery::default()).len(), 3);
        // A closing forgotten for room may come again: it is kept again.
        view.closed(closing("s", 0, 0.5, 1));
        assert_eq!(view.query(&EpisodeQuery::default()).len(), 3);
    }

    #[test]
    fn a_full_open_list_drops_its_oldest_sixteenth_at_once() {
        let mut view = EpisodeView::new(1, 64);
        // Opened out of order: the age is the start, not the arrival.
        for id in (0..64).rev() {
            view.anomaly(&anomaly(&format!("s{id}"), id, Some(id), 60.0, 5.0));
        }
        assert_eq!(view.query(&EpisodeQuery::default()).len(), 64);
        view.anomaly(&anomaly("new", 100, Some(100), 60.0, 5.0));
        let mut ids: Vec<u64> = view
            .query(&EpisodeQuery::default())
            .iter()
            .map(|e| e.episode)
            .collect();
        ids.sort_unstable();
        let expected: Vec<u64> = (4..64).chain([100]).collect();
        assert_eq!(ids, expected, "the four oldest went, the new one is in");
    }
}
