//! The `median_mad` detector: the rolling median of the last `window_size`
//! points as the center and `1.4826 × MAD` (the median absolute deviation
//! from that median, scaled to match σ on normal data) as the spread. One
//! outlier moves neither, so a burst does not widen the band for the rest
//! of the window the way it inflates a standard deviation; on the other
//! hand, a window where more than half the points are equal has a MAD of 0,
//! and then any other value is flagged (set `min_std_dev` for such
//! metrics).
//!
//! Exact, in O(log² w) per point: the window's values sit in an order
//! statistic tree ([`OrderTree`], O(log w) per insert, removal and `k`-th
//! value). The median is one or two selections. The MAD is the median of
//! two sorted sequences, the distances from the median of the values below
//! it (read downwards) and of those above it (read upwards): a binary
//! search over how many come from each, O(log w) steps of O(log w)
//! selections. Windows of at most [`SMALL_WINDOW`] points keep their values
//! in a sorted `Vec` instead (O(w) moves of at most 2 KiB per point, but
//! O(1) selections: about ten times faster at window 30). Property tests
//! check both against sorting the window.

use std::collections::VecDeque;

use super::order_tree::OrderTree;
use super::persist::Encoder;
use super::{Baseline, DetectorKind, DetectorSettings, SeriesModel, Verdict};

/// The `median_mad` entry of the registry.
pub static MEDIAN_MAD: DetectorKind = DetectorKind {
    name: "median_mad",
    about: "rolling median and median absolute deviation: robust to outliers in the window",
    keys: &["window_size", "min_samples"],
    new: |settings| Box::new(MedianMad::new(settings.window_capacity())),
    restore: |bytes, settings| {
        let capacity = settings.window_capacity();
        let mut state = MedianMad::new(capacity);
        let values = bytes.f64s()?;
        // The newest `capacity` values, in arrival order.
        for &value in &values[values.len().saturating_sub(capacity)..] {
            state.window.push_back(value);
            state.sorted.insert(value);
        }
        Some(Box::new(state))
    },
};

/// `1 / Φ⁻¹(3/4)`: makes the MAD of normal data an estimate of its σ.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Largest window kept in a sorted `Vec` rather than the tree.
pub const SMALL_WINDOW: usize = 256;

/// The window's values in value order.
#[derive(Clone, Debug)]
enum Sorted {
    /// A sorted `Vec`, for small windows.
    Vec(Vec<f64>),
    /// The order statistic tree, for large ones.
    Tree(OrderTree),
}

impl Sorted {
    fn insert(&mut self, value: f64) {
        match self {
            Sorted::Vec(values) => {
                let at = values.partition_point(|&x| x < value);
                values.insert(at, value);
            }
            Sorted::Tree(tree) => tree.insert(value),
        }
    }

    fn remove(&mut self, value: f64) {
        match self {
            Sorted::Vec(values) => {
                let at = values.partition_point(|&x| x < value);
                if values.get(at) == Some(&value) {
                    values.remove(at);
                }
            }
            Sorted::Tree(tree) => {
                tree.remove(value);
            }
        }
    }

    fn select(&self, k: usize) -> f64 {
        match self {
            Sorted::Vec(values) => values[k],
            Sorted::Tree(tree) => tree.select(k as u32),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Sorted::Vec(values) => values.capacity() * 8,
            Sorted::Tree(tree) => tree.heap_bytes(),
        }
    }
}

/// The state of one series: the window in arrival order and in value
/// order.
#[derive(Clone, Debug)]
pub struct MedianMad {
    window: VecDeque<f64>,
    sorted: Sorted,
}

impl MedianMad {
    /// An empty window with room for `capacity` points.
    pub fn new(capacity: usize) -> Self {
        Self::with_layout(capacity, capacity <= SMALL_WINDOW)
    }

    /// An empty window with room for `capacity` points, in a sorted `Vec`
    /// or in the tree.
    fn with_layout(capacity: usize, small: bool) -> Self {
        let room = capacity.min(4096);
        MedianMad {
            window: VecDeque::with_capacity(room),
            sorted: if small {
                Sorted::Vec(Vec::with_capacity(room))
            } else {
                Sorted::Tree(OrderTree::with_capacity(room))
            },
        }
    }

    /// The median and the MAD of the window (`None` when empty).
    pub fn median_and_mad(&self) -> Option<(f64, f64)> {
        let n = self.window.len();
        if n == 0 {
            return None;
        }
        let median = self.middle(n, |k| self.sorted.select(k));
        let split = n / 2;
        let mad = self.middle(n, |k| self.kth_distance(median, split, k));
        Some((median, mad))
    }

    /// The median of `n` values whose `k`-th smallest is `kth(k)`.
    fn middle(&self, n: usize, kth: impl Fn(usize) -> f64) -> f64 {
        if n % 2 == 1 {
            kth(n / 2)
        } else {
            (kth(n / 2 - 1) + kth(n / 2)) / 2.0
        }
    }

    /// The `k`-th smallest (0-based) distance `|x − median|` over the
    /// window. The sorted values `a[..split]` are at most the median and
    /// `a[split..]` at least, so the distances are two sorted sequences:
    /// `median − a[split − 1 − t]` and `a[split + t] − median`.
    fn kth_distance(&self, median: f64, split: usize, k: usize) -> f64 {
        let n = self.window.len();
        let (below, above) = (split, n - split);
        let down = |t: usize| median - self.sorted.select(split - 1 - t);
        let up = |t: usize| self.sorted.select(split + t) - median;
        // Take i from `down` and j = k + 1 − i from `up`: the k-th is the
        // largest taken once neither side's next exceeds the other's last.
        let (mut lo, mut hi) = ((k + 1).saturating_sub(above), (k + 1).min(below));
        loop {
            let i = (lo + hi) / 2;
            let j = k + 1 - i;
            if i < below && j > 0 && up(j - 1) > down(i) {
                lo = i + 1;
            } else if i > 0 && j < above && down(i - 1) > up(j) {
                hi = i - 1;
            } else {
                let from_down = if i > 0 {
                    down(i - 1)
                } else {
                    f64::NEG_INFINITY
                };
                let from_up = if j > 0 { up(j - 1) } else { f64::NEG_INFINITY };
                return from_down.max(from_up);
            }
        }
    }

    fn warming_up(&self, settings: &DetectorSettings) -> bool {
        let len = self.window.len().min(settings.window_capacity());
        len == 0 || len < settings.min_samples
    }

    fn baseline(&self, settings: &DetectorSettings) -> Option<Baseline> {
        let (median, mad) = self.median_and_mad()?;
        Some(Baseline::around(median, MAD_TO_SIGMA * mad, settings))
    }

    /// Drops the oldest points beyond `capacity` (a smaller `window_size`).
    fn trim(&mut self, capacity: usize) {
        while self.window.len() > capacity {
            if let Some(old) = self.window.pop_front() {
                self.sorted.remove(old);
            }
        }
    }
}

impl SeriesModel for MedianMad {
    fn observe(&mut self, value: f64, _timestamp: f64, settings: &DetectorSettings) -> Verdict {
        let capacity = settings.window_capacity();
        if self.window.len() > capacity {
            self.trim(capacity);
        }
        let verdict = if self.warming_up(settings) {
            Verdict::WarmingUp {
                have: self.window.len(),
                need: settings.min_samples.max(1),
            }
        } else {
            match self.baseline(settings) {
                Some(baseline) => baseline.judge(value, settings.direction),
                None => Verdict::WarmingUp {
                    have: 0,
                    need: settings.min_samples.max(1),
                },
            }
        };
        self.trim(capacity - 1);
        self.window.push_back(value);
        self.sorted.insert(value);
        verdict
    }

    fn current_baseline(&self, _timestamp: f64, settings: &DetectorSettings) -> Option<Baseline> {
        if self.warming_up(settings) {
            return None;
        }
        self.baseline(settings)
    }

    fn is_warming_up(&self, settings: &DetectorSettings) -> bool {
        self.warming_up(settings)
    }

    fn heap_bytes(&self) -> usize {
        self.window.capacity() * 8 + self.sorted.heap_bytes()
    }

    fn kind(&self) -> &'static DetectorKind {
        &MEDIAN_MAD
    }

    fn save(&self, out: &mut Encoder<'_>) {
        out.f64s(self.window.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Direction;
    use proptest::prelude::*;

    /// Median and MAD by sorting.
    fn naive(window: &[f64]) -> (f64, f64) {
        let median_of = |mut xs: Vec<f64>| {
            xs.sort_by(f64::total_cmp);
            let n = xs.len();
            if n % 2 == 1 {
                xs[n / 2]
            } else {
                (xs[n / 2 - 1] + xs[n / 2]) / 2.0
            }
        };
        let median = median_of(window.to_vec());
        let mad = median_of(window.iter().map(|x| (x - median).abs()).collect());
        (median, mad)
    }

    fn settings(window: usize, min_samples: usize) -> DetectorSettings {
        DetectorSettings {
            kind: &MEDIAN_MAD,
            window_size: window,
            min_samples,
            direction: Direction::Both,
            ..DetectorSettings::default()
        }
    }

    proptest! {
        #[test]
        fn median_and_mad_are_exact(
            // Few distinct values: ties everywhere.
            values in prop::collection::vec(prop_oneof![0u8..8, 0u8..200], 1..300),
            window in 1usize..40,
            // The sorted Vec of small windows, or the tree.
            small in any::<bool>(),
        ) {
            let s = settings(window, 1);
            let mut model = MedianMad::with_layout(window, small);
            for (i, &v) in values.iter().enumerate() {
                let value = f64::from(v) * 0.25;
                let before = model.current_baseline(0.0, &s);
                let verdict = model.observe(value, 0.0, &s);
                if i > 0 {
                    let start = i.saturating_sub(window);
                    let past: Vec<f64> = values[start..i].iter().map(|&v| f64::from(v) * 0.25).collect();
                    let (median, mad) = naive(&past);
                    let b = before.expect("a verdict once a point is in");
                    prop_assert_eq!((b.mean, b.std_dev), (median, MAD_TO_SIGMA * mad));
                    prop_assert_eq!(verdict, b.judge(value, s.direction));
                }
                let start = (i + 1).saturating_sub(window);
                let now: Vec<f64> = values[start..=i].iter().map(|&v| f64::from(v) * 0.25).collect();
                prop_assert_eq!(model.median_and_mad(), Some(naive(&now)));
            }
        }
    }

    #[test]
    fn a_burst_does_not_widen_the_band() {
        let s = settings(21, 21);
        let mut model = MedianMad::new(21);
        for i in 0..21 {
            model.observe(10.0 + f64::from(i % 3) * 0.5, 0.0, &s);
        }
        // Five spikes in a row: all flagged (a moving average's σ would
        // have grown enough after two or three to hide the rest).
        let flagged: Vec<bool> = (0..5)
            .map(|_| model.observe(30.0, 0.0, &s).is_anomaly())
            .collect();
        assert_eq!(flagged, [true; 5]);
        assert!(!model.observe(10.5, 0.0, &s).is_anomaly());
    }

    #[test]
    fn a_smaller_window_keeps_the_newest_points() {
        let mut model = MedianMad::new(5);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            model.observe(x, 0.0, &settings(5, 1));
        }
        model.observe(6.0, 0.0, &settings(3, 1));
        // 4, 5, 6 remain.
        assert_eq!(model.median_and_mad(), Some((5.0, 1.0)));
    }
}
