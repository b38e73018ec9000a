//! The recent points of a series with the baseline each was judged
//! against, for the dashboard and `GET /series/{name}`: one bounded ring per
//! series, pooled per shard. A freed ring gives its memory back.

use std::collections::VecDeque;

use crate::detect::{Baseline, Verdict};

/// "No history": the value of a slot's history index when it has none.
pub(super) const NO_HISTORY: u32 = u32::MAX;

/// One point of a series' history, 64 bytes: the baseline it was judged
/// against and its score, NaN while warming up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoryPoint {
    /// The point's timestamp (unix seconds).
    pub timestamp: f64,
    /// The point's value.
    pub value: f64,
    mean: f64,
    std_dev: f64,
    threshold: f64,
    lower_threshold: f64,
    score: f64,
    /// Whether the point was an anomaly.
    pub anomaly: bool,
    /// Whether the point was part of an episode (in what was padding).
    pub in_episode: bool,
}

impl HistoryPoint {
    /// The history entry of a point with this verdict, inside an episode
    /// or not.
    pub fn new(timestamp: f64, value: f64, verdict: &Verdict, in_episode: bool) -> HistoryPoint {
        let baseline = verdict.baseline();
        let field = |f: fn(&Baseline) -> f64| baseline.as_ref().map_or(f64::NAN, f);
        HistoryPoint {
            timestamp,
            value,
            mean: field(|b| b.mean),
            std_dev: field(|b| b.std_dev),
            threshold: field(|b| b.threshold),
            lower_threshold: field(|b| b.lower_threshold),
            score: baseline.map_or(f64::NAN, |b| b.score(value)),
            anomaly: verdict.is_anomaly(),
            in_episode,
        }
    }

    /// Whether the point had a verdict (it was not warming up).
    pub fn judged(&self) -> bool {
        !self.mean.is_nan()
    }

    /// Mean, σ, upper and lower thresholds and score; `None` while warming
    /// up.
    pub fn judgement(&self) -> Option<(f64, f64, f64, f64, f64)> {
        self.judged().then_some((
            self.mean,
            self.std_dev,
            self.threshold,
            self.lower_threshold,
            self.score,
        ))
    }
}

/// The history rings of one shard, addressed by index; freed indices are
/// reused.
#[derive(Debug, Default)]
pub(super) struct HistoryPool {
    rings: Vec<VecDeque<HistoryPoint>>,
    free: Vec<u32>,
}

impl HistoryPool {
    /// A new, empty ring; returns its index.
    pub(super) fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.rings.push(VecDeque::new());
                u32::try_from(self.rings.len() - 1).expect("fewer than 2^32 histories per shard")
            }
        }
    }

    /// Frees ring `id` and its memory.
    pub(super) fn free(&mut self, id: u32) {
        self.rings[id as usize] = VecDeque::new();
        self.free.push(id);
    }

    /// Appends `point` to ring `id`, keeping its newest `capacity` points.
    #[inline]
    pub(super) fn push(&mut self, id: u32, point: HistoryPoint, capacity: usize) {
        let ring = &mut self.rings[id as usize];
        while ring.len() >= capacity.max(1) {
            ring.pop_front();
        }
        if ring.capacity() == 0 {
            ring.reserve_exact(capacity.max(1));
        }
        ring.push_back(point);
    }

    /// The points of ring `id`, oldest first.
    pub(super) fn get(&self, id: u32) -> &VecDeque<HistoryPoint> {
        &self.rings[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64) -> HistoryPoint {
        HistoryPoint::new(t, t, &Verdict::WarmingUp { have: 0, need: 1 }, false)
    }

    #[test]
    fn a_point_keeps_its_judgement_in_64_bytes() {
        assert_eq!(std::mem::size_of::<HistoryPoint>(), 64);
        let mean = 0.1 + 0.2;
        let baseline = Baseline {
            mean,
            std_dev: 0.5,
            threshold: mean + 2.1,
            lower_threshold: mean - 2.1,
            sigma: 0.7,
        };
        let verdict = Verdict::Anomaly(baseline, crate::detect::Side::Upper);
        let point = HistoryPoint::new(1.0, 9.0, &verdict, true);
        assert_eq!(
            point.judgement(),
            Some((mean, 0.5, mean + 2.1, mean - 2.1, baseline.score(9.0)))
        );
        assert!(point.anomaly && point.in_episode);
        assert_eq!(super::tests::point(1.0).judgement(), None);
    }

    #[test]
    fn rings_keep_the_newest_and_are_reused() {
        let mut pool = HistoryPool::default();
        let (a, b) = (pool.alloc(), pool.alloc());
        for t in 0..5 {
            pool.push(a, point(f64::from(t)), 3);
        }
        pool.push(b, point(9.0), 3);
        let times =
            |pool: &HistoryPool, id| pool.get(id).iter().map(|p| p.timestamp).collect::<Vec<_>>();
        assert_eq!(times(&pool, a), [2.0, 3.0, 4.0]);
        assert_eq!(times(&pool, b), [9.0]);
        // A smaller capacity (a reload) trims at the next point.
        pool.push(a, point(5.0), 2);
        assert_eq!(times(&pool, a), [4.0, 5.0]);
        pool.free(a);
        assert_eq!(pool.get(a).capacity(), 0, "memory given back");
        assert_eq!(pool.alloc(), a, "a freed index is reused");
        assert!(pool.get(a).is_empty());
    }
}
