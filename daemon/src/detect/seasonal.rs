//! The `seasonal` detector: a point is compared with the points at the
//! same time of the previous `seasons` periods of length `season`
//! (default: the same 5-minute `bucket` of each of the last 3 days), not
//! with the points just before it. A daily peak that comes every day is
//! then normal, and a peak at an unusual hour is not.
//!
//! The time axis is cut into periods `⌊t / season⌋` and, within a period,
//! buckets `⌊(t mod season) / bucket⌋` (timestamps are unix seconds, so a
//! `"1d"` season starts at midnight UTC). Each bucket of each of the last
//! `seasons + 1` periods keeps the count, mean and `M2` of its points (24
//! bytes; 3 × 288 buckets at the defaults: 27 KB per series). A point is
//! judged against the pooled mean and standard deviation of its bucket over
//! the `seasons` previous periods, then added to its bucket of the current
//! period: O(seasons) per point, plus clearing a period's buckets when the
//! next period starts (O(1) amortised over a period's points).
//!
//! Warm-up: a point gets a verdict once every one of the `seasons` previous
//! periods has a point in its bucket (at the defaults, after three days).
//! A point older than the periods kept is judged, when it can be, but not
//! learnt. A change of `season`, `seasons` or `bucket` starts the series
//! over.

use super::persist::{Decoder, Encoder};
use super::{Baseline, DetectorKind, DetectorSettings, SeriesModel, Verdict};

/// The `seasonal` entry of the registry.
pub static SEASONAL: DetectorKind = DetectorKind {
    name: "seasonal",
    about: "the same time of the previous periods (daily, weekly): seasonal metrics",
    keys: &["season", "seasons", "bucket"],
    new: |settings| Box::new(Seasonal::new(settings)),
    restore: |bytes, settings| Seasonal::restore(bytes, settings).map(|s| Box::new(s) as _),
};

/// Most buckets per season (`season / bucket`; a year of 5-minute buckets
/// fits), which bounds the memory
/// of a series: `(seasons + 1) × buckets × 24` bytes.
pub const MAX_BUCKETS: usize = 131_072;

/// The points of one bucket of one period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Cell {
    count: u32,
    mean: f64,
    m2: f64,
}

impl Cell {
    fn push(&mut self, x: f64) {
        self.count = self.count.saturating_add(1);
        let delta = x - self.mean;
        self.mean += delta / f64::from(self.count);
        self.m2 += delta * (x - self.mean);
    }

    /// Pools two cells (Chan et al.).
    fn merge(self, other: Cell) -> Cell {
        if self.count == 0 {
            return other;
        }
        if other.count == 0 {
            return self;
        }
        let (a, b) = (f64::from(self.count), f64::from(other.count));
        let n = a + b;
        let delta = other.mean - self.mean;
        Cell {
            count: self.count.saturating_add(other.count),
            mean: self.mean + delta * b / n,
            m2: self.m2 + other.m2 + delta * delta * a * b / n,
        }
    }
}

/// The layout settings ask for: buckets per season and periods kept.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    season: f64,
    bucket: f64,
    buckets: usize,
    seasons: usize,
}

impl Layout {
    fn of(settings: &DetectorSettings) -> Layout {
        let season = settings.season.max(1e-3);
        let bucket = settings.bucket.clamp(1e-3, season);
        let buckets = ((season / bucket).ceil() as usize).clamp(1, MAX_BUCKETS);
        Layout {
            season,
            bucket,
            buckets,
            seasons: settings.seasons.max(1),
        }
    }

    /// Period and bucket of `timestamp`.
    fn place(&self, timestamp: f64) -> (i64, usize) {
        let period = (timestamp / self.season).floor();
        let offset = timestamp - period * self.season;
        let bucket = ((offset / self.bucket) as usize).min(self.buckets - 1);
        (period as i64, bucket)
    }
}

/// The state of one series.
#[derive(Clone, Debug)]
pub struct Seasonal {
    layout: Layout,
    /// The period each row holds (`i64::MIN`: none); row `p mod rows`
    /// holds period `p`.
    periods: Vec<i64>,
    /// `rows × buckets` cells, row-major.
    cells: Vec<Cell>,
    /// Timestamp of the latest point, for [`SeriesModel::is_warming_up`].
    last: f64,
}

impl Seasonal {
    /// An empty state laid out for `settings`.
    pub fn new(settings: &DetectorSettings) -> Self {
        let layout = Layout::of(settings);
        let rows = layout.seasons + 1;
        Seasonal {
            layout,
            periods: vec![i64::MIN; rows],
            cells: vec![Cell::default(); rows * layout.buckets],
            last: f64::NAN,
        }
    }

    fn row_of(&self, period: i64) -> usize {
        period.rem_euclid(self.periods.len() as i64) as usize
    }

    /// The pooled cell of `bucket` over the `seasons` periods before
    /// `period`, and whether each of them had a point there.
    fn history(&self, period: i64, bucket: usize) -> (Cell, bool) {
        let mut pooled = Cell::default();
        let mut complete = true;
        for back in 1..=self.layout.seasons as i64 {
            let past = period - back;
            let row = self.row_of(past);
            let cell = self.cells[row * self.layout.buckets + bucket];
            if self.periods[row] == past && cell.count > 0 {
                pooled = pooled.merge(cell);
            } else {
                complete = false;
            }
        }
        (pooled, complete)
    }

    fn baseline_at(&self, timestamp: f64, settings: &DetectorSettings) -> Option<Baseline> {
        let (period, bucket) = self.layout.place(timestamp);
        let (pooled, complete) = self.history(period, bucket);
        complete.then(|| {
            let std_dev = (pooled.m2 / f64::from(pooled.count)).max(0.0).sqrt();
            Baseline::around(pooled.mean, std_dev, settings)
        })
    }

    fn learn(&mut self, value: f64, timestamp: f64) {
        let (period, bucket) = self.layout.place(timestamp);
        let row = self.row_of(period);
        let buckets = self.layout.buckets;
        if self.periods[row] < period {
            self.periods[row] = period;
            self.cells[row * buckets..(row + 1) * buckets].fill(Cell::default());
        }
        if self.periods[row] == period {
            self.cells[row * buckets + bucket].push(value);
        }
        // The latest timestamp (NaN until the first point).
        if self.last.is_nan() || timestamp > self.last {
            self.last = timestamp;
        }
    }
}

impl Seasonal {
    /// The state [`SeriesModel::save`] wrote, when its layout is the one
    /// `settings` give.
    fn restore(bytes: &mut Decoder<'_>, settings: &DetectorSettings) -> Option<Seasonal> {
        let mut state = Seasonal::new(settings);
        let rows = bytes.u32()? as usize;
        let buckets = bytes.u32()? as usize;
        if rows != state.periods.len() || buckets != state.layout.buckets {
            return None;
        }
        for period in &mut state.periods {
            *period = bytes.u64()? as i64;
        }
        for cell in &mut state.cells {
            *cell = Cell {
                count: bytes.u32()?,
                mean: bytes.f64()?,
                m2: bytes.f64()?,
            };
        }
        state.last = bytes.f64()?;
        Some(state)
    }
}

impl SeriesModel for Seasonal {
    fn observe(&mut self, value: f64, timestamp: f64, settings: &DetectorSettings) -> Verdict {
        if Layout::of(settings) != self.layout {
            *self = Seasonal::new(settings);
        }
        let verdict = match self.baseline_at(timestamp, settings) {
            Some(baseline) => baseline.judge(value, settings.direction),
            None => Verdict::WarmingUp {
                have: 0,
                need: self.layout.seasons,
            },
        };
        self.learn(value, timestamp);
        verdict
    }

    fn current_baseline(&self, timestamp: f64, settings: &DetectorSettings) -> Option<Baseline> {
        if Layout::of(settings) != self.layout {
            return None;
        }
        self.baseline_at(timestamp, settings)
    }

    fn is_warming_up(&self, settings: &DetectorSettings) -> bool {
        !self.last.is_finite() || self.current_baseline(self.last, settings).is_none()
    }

    fn heap_bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<Cell>() + self.periods.capacity() * 8
    }

    fn kind(&self) -> &'static DetectorKind {
        &SEASONAL
    }

    fn save(&self, out: &mut Encoder<'_>) {
        out.u32(self.periods.len() as u32);
        out.u32(self.layout.buckets as u32);
        for &period in &self.periods {
            out.u64(period as u64);
        }
        for cell in &self.cells {
            out.u32(cell.count);
            out.f64(cell.mean);
            out.f64(cell.m2);
        }
        out.f64(self.last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Direction;
    use proptest::prelude::*;

    const DAY: f64 = 86_400.0;

    fn settings(season: f64, seasons: usize, bucket: f64) -> DetectorSettings {
        DetectorSettings {
            kind: &SEASONAL,
            season,
            seasons,
            bucket,
            direction: Direction::Both,
            ..DetectorSettings::default()
        }
    }

    /// Mean and population σ of the points in the same bucket of the
    /// `seasons` previous periods, if each has one: by scanning every
    /// earlier point.
    fn naive(points: &[(f64, f64)], t: f64, s: &DetectorSettings) -> Option<(f64, f64)> {
        let layout = Layout::of(s);
        let (period, bucket) = layout.place(t);
        let mut values = Vec::new();
        for back in 1..=layout.seasons as i64 {
            let before: Vec<f64> = points
                .iter()
                .filter(|&&(pt, _)| layout.place(pt) == (period - back, bucket))
                .map(|&(_, v)| v)
                .collect();
            if before.is_empty() {
                return None;
            }
            values.extend(before);
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Some((mean, var.sqrt()))
    }

    proptest! {
        #[test]
        fn the_baseline_is_the_same_bucket_of_the_previous_periods(
            steps in prop::collection::vec((1u32..400, 0u32..100), 1..300),
            seasons in 1usize..4,
        ) {
            // A season of 1000 s in buckets of 100 s; timestamps move
            // forward by 1 to 399 s.
            let s = settings(1000.0, seasons, 100.0);
            let mut model = Seasonal::new(&s);
            let mut seen: Vec<(f64, f64)> = Vec::new();
            let mut t = 5_000.0;
            for (dt, v) in steps {
                t += f64::from(dt);
                let value = f64::from(v);
                let verdict = model.observe(value, t, &s);
                match (naive(&seen, t, &s), verdict.baseline()) {
                    (None, None) => {}
                    (Some((mean, std)), Some(b)) => {
                        prop_assert!((b.mean - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
                        prop_assert!((b.std_dev - std).abs() <= 1e-6 * (1.0 + std));
                        prop_assert_eq!(verdict, b.judge(value, s.direction));
                    }
                    (want, got) => prop_assert!(false, "want {:?}, got {:?}", want, got),
                }
                seen.push((t, value));
            }
        }
    }

    #[test]
    fn a_daily_peak_is_normal_and_a_peak_at_night_is_not() {
        let s = settings(DAY, 3, 300.0);
        let mut model = Seasonal::new(&s);
        // Ten days, a point every 5 minutes: 100 at noon ± 1 h, else 10,
        // with noise from 0 to 2 that differs from day to day.
        let value = |t: f64, i: u32| {
            let hour = (t % DAY) / 3600.0;
            let base = if (11.0..13.0).contains(&hour) {
                100.0
            } else {
                10.0
            };
            base + f64::from((i * 7 + i / 288) % 5) * 0.5
        };
        let mut flagged = 0;
        for i in 0..(10 * 288) {
            let t = f64::from(i) * 300.0;
            let verdict = model.observe(value(t, i), t, &s);
            flagged += u32::from(verdict.is_anomaly());
        }
        assert_eq!(flagged, 0, "the daily peak is the norm");
        // A peak at 3 am on day 10.
        let t = 10.0 * DAY + 3.0 * 3600.0;
        assert!(model.observe(100.0, t, &s).is_anomaly());
        let (t, i) = (t + 300.0, (t + 300.0) as u32 / 300);
        assert!(!model.observe(value(t, i), t, &s).is_anomaly());
    }

    #[test]
    fn warms_up_for_seasons_periods_and_restarts_on_a_new_layout() {
        let s = settings(100.0, 2, 10.0);
        let mut model = Seasonal::new(&s);
        let mut verdicts = Vec::new();
        for i in 0..30 {
            let t = f64::from(i) * 10.0;
            verdicts.push(matches!(
                model.observe(5.0 + f64::from(i % 2), t, &s),
                Verdict::WarmingUp { .. }
            ));
        }
        // Periods 0 and 1 warm up; period 2 has both before it.
        assert!(verdicts[..20].iter().all(|&w| w));
        assert!(verdicts[20..].iter().all(|&w| !w));
        assert!(!model.is_warming_up(&s));
        let other = settings(100.0, 2, 20.0);
        assert!(model.is_warming_up(&other));
        assert!(matches!(
            model.observe(5.0, 300.0, &other),
            Verdict::WarmingUp { .. }
        ));
        assert_eq!(model.layout, Layout::of(&other));
    }
}
