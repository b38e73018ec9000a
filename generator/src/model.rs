//! The signal model: pure, seeded, reproducible.
//!
//! A series' value at virtual time `t` (seconds since the run's start) is
//!
//! ```text
//! base + level_shift + amplitude·sin(2π·t / period) + trend·t/3600 + drift(t)
//!      + noise·scale·ε [+ outlier]
//! ```
//!
//! where `base` is the middle of `value_range` and `ε` is standard normal
//! (or Student-t with ν = 3, scaled to unit variance, with
//! `noise_distribution = "student_t"`: heavy tails, normal in nothing but
//! its variance). Outliers add a magnitude drawn in `anomaly_magnitude` (in
//! units of the noise's σ) up or down; bursts are several outliers in a
//! row; a level shift moves `base` for good; a trend change adds to the
//! slope of `drift` (in σ per hour); a variance change multiplies (or
//! divides) `scale`. With `counter = true` the series is a counter: each
//! point adds that value (floored at 0) to a running total, which is what
//! is sent, and a counter reset sets the total back to 0. Every injected
//! event is returned as a [`Label`], the ground truth that `--labels`
//! writes.
//!
//! Each series draws from its own generator, seeded from the run's seed and
//! the series' name, so a series' values do not depend on which other
//! series exist.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::config::{NoiseDistribution, OutlierDirection, Pattern};

/// What kind of injected event a point carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A lone outlier.
    Spike,
    /// One point of a run of outliers.
    Burst,
    /// The first point after the level moved.
    LevelShift,
    /// The first point after the slope changed.
    TrendChange,
    /// The first point after the noise's σ changed.
    VarianceChange,
    /// The first point after a counter went back to 0.
    CounterReset,
}

impl Kind {
    /// The name written in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::Burst => "burst",
            Kind::LevelShift => "level_shift",
            Kind::TrendChange => "trend_change",
            Kind::VarianceChange => "variance_change",
            Kind::CounterReset => "counter_reset",
        }
    }
}

/// The ground truth of one injected event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Label {
    /// Spike, burst point or level shift.
    pub kind: Kind,
    /// `true` when the value was pushed up (`"upper"` in labels, as in
    /// anomalyd's records).
    pub up: bool,
    /// How far the value was pushed, in units of the noise's σ (a trend
    /// change: σ per hour; a variance change: the factor; a counter reset:
    /// the total it dropped, in σ).
    pub magnitude: f64,
}

/// One generated value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The value.
    pub value: f64,
    /// The injected event, if any.
    pub label: Option<Label>,
}

/// The state of one series' generator.
#[derive(Clone, Debug)]
pub struct SeriesModel {
    rng: Xoshiro256PlusPlus,
    /// Accumulated level shifts.
    level: f64,
    /// Outliers left in the current burst, and its direction.
    burst_left: u32,
    burst_up: bool,
    /// The drift: its value at `drift_at` and its slope per hour since.
    drift: f64,
    drift_at: f64,
    slope: f64,
    /// What the noise's σ is multiplied by (variance changes).
    noise_scale: f64,
    /// A counter's running total.
    total: f64,
}

/// The seed of a series: the run's seed mixed with the name (FNV-1a, so it
/// is stable across builds and platforms).
pub fn series_seed(seed: u64, name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl SeriesModel {
    /// A fresh model for the series `name` of a run seeded with `seed`.
    pub fn new(seed: u64, name: &str) -> SeriesModel {
        SeriesModel {
            rng: Xoshiro256PlusPlus::seed_from_u64(series_seed(seed, name)),
            level: 0.0,
            burst_left: 0,
            burst_up: true,
            drift: 0.0,
            drift_at: 0.0,
            slope: 0.0,
            noise_scale: 1.0,
            total: 0.0,
        }
    }

    /// The value at virtual time `t` seconds, under `pattern`.
    pub fn sample(&mut self, pattern: &Pattern, t: f64) -> Sample {
        let (lo, hi) = pattern.value_range;
        let base = lo + (hi - lo) / 2.0;
        let season = pattern.amplitude()
            * (std::f64::consts::TAU * t / pattern.season_period.as_secs_f64()).sin();
        let trend = pattern.trend * t / 3600.0;
        let unit = pattern.magnitude_unit();
        // Events that change the series for good come first; a draw with
        // probability 0 takes no randomness, so that a pattern without
        // them gives the values it always gave.
        let mut label = if self.burst_left == 0 {
            self.change(pattern, t, unit)
        } else {
            None
        };
        let drift = self.drift + self.slope * (t - self.drift_at) / 3600.0;
        let noise = pattern.noise_std_dev() * self.noise_scale * self.noise(pattern);
        let mut outlier = 0.0;
        if self.burst_left > 0 {
            self.burst_left -= 1;
            let magnitude = self.draw(pattern.anomaly_magnitude);
            outlier = signed(self.burst_up, magnitude * unit);
            label = Some(Label {
                kind: Kind::Burst,
                up: self.burst_up,
                magnitude,
            });
        } else if label.is_some() {
            // One event per point.
        } else if self.rng.random_bool(pattern.level_shift_probability) {
            let magnitude = self.draw(pattern.level_shift_magnitude);
            let up = self.direction(pattern.anomaly_direction);
            self.level += signed(up, magnitude * unit);
            label = Some(Label {
                kind: Kind::LevelShift,
                up,
                magnitude,
            });
        } else if self.rng.random_bool(pattern.anomaly_probability) {
            let magnitude = self.draw(pattern.anomaly_magnitude);
            let up = self.direction(pattern.anomaly_direction);
            outlier = signed(up, magnitude * unit);
            let kind = if self.rng.random_bool(pattern.burst_probability) {
                let (min, max) = pattern.burst_length;
                let length = self.rng.random_range(min..=max);
                self.burst_left = length - 1;
                self.burst_up = up;
                Kind::Burst
            } else {
                Kind::Spike
            };
            label = Some(Label {
                kind,
                up,
                magnitude,
            });
        }
        let value = base + self.level + season + trend + drift + noise + outlier;
        if !pattern.counter {
            return Sample { value, label };
        }
        if chance(&mut self.rng, pattern.counter_reset_probability) && label.is_none() {
            label = Some(Label {
                kind: Kind::CounterReset,
                up: false,
                magnitude: self.total / unit,
            });
            self.total = 0.0;
        }
        self.total += value.max(0.0);
        Sample {
            value: self.total,
            label,
        }
    }

    /// A trend change or a variance change at time `t`, if one happens.
    fn change(&mut self, pattern: &Pattern, t: f64, unit: f64) -> Option<Label> {
        if chance(&mut self.rng, pattern.trend_change_probability) {
            let magnitude = self.draw(pattern.trend_change_magnitude);
            let up = self.direction(pattern.anomaly_direction);
            self.drift += self.slope * (t - self.drift_at) / 3600.0;
            self.drift_at = t;
            self.slope += signed(up, magnitude * unit);
            return Some(Label {
                kind: Kind::TrendChange,
                up,
                magnitude,
            });
        }
        if chance(&mut self.rng, pattern.variance_change_probability) {
            let factor = self.draw(pattern.variance_change_factor);
            let up = self.direction(pattern.anomaly_direction);
            self.noise_scale = if up {
                self.noise_scale * factor
            } else {
                self.noise_scale / factor
            };
            return Some(Label {
                kind: Kind::VarianceChange,
                up,
                magnitude: factor,
            });
        }
        None
    }

    /// One draw of the noise, of unit variance.
    fn noise(&mut self, pattern: &Pattern) -> f64 {
        match pattern.noise_distribution {
            NoiseDistribution::Normal => self.standard_normal(),
            NoiseDistribution::StudentT => {
                // t with ν = 3: Z / sqrt(χ²₃ / 3), whose variance is 3.
                let z = self.standard_normal();
                let chi2: f64 = (0..3).map(|_| self.standard_normal().powi(2)).sum();
                z / (chi2 / 3.0).sqrt() / 3f64.sqrt()
            }
        }
    }

    fn draw(&mut self, (min, max): (f64, f64)) -> f64 {
        if min == max {
            min
        } else {
            self.rng.random_range(min..max)
        }
    }

    fn direction(&mut self, direction: OutlierDirection) -> bool {
        match direction {
            OutlierDirection::Up => true,
            OutlierDirection::Down => false,
            OutlierDirection::Both => self.rng.random_bool(0.5),
        }
    }

    /// A standard normal variate (Box–Muller; one of the pair is used).
    fn standard_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.rng.random::<f64>();
        let u2 = self.rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `true` with probability `p`, taking no randomness when `p` is 0.
fn chance(rng: &mut Xoshiro256PlusPlus, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p)
}

fn signed(up: bool, magnitude: f64) -> f64 {
    if up { magnitude } else { -magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoiseDistribution;
    use std::time::Duration;

    fn run(pattern: &Pattern, seed: u64, n: usize) -> Vec<Sample> {
        let mut model = SeriesModel::new(seed, "s");
        (0..n)
            .map(|i| model.sample(pattern, i as f64 * pattern.data_frequency))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_samples() {
        let pattern = Pattern {
            burst_probability: 0.3,
            level_shift_probability: 0.01,
            anomaly_direction: OutlierDirection::Both,
            ..Pattern::default()
        };
        assert_eq!(run(&pattern, 42, 2000), run(&pattern, 42, 2000));
        assert_ne!(run(&pattern, 42, 2000), run(&pattern, 43, 2000));
    }

    #[test]
    fn a_series_does_not_depend_on_other_names() {
        assert_ne!(series_seed(1, "a"), series_seed(1, "b"));
        assert_eq!(series_seed(1, "a"), series_seed(1, "a"));
    }

    #[test]
    fn the_outlier_rate_is_within_statistical_bounds() {
        let pattern = Pattern {
            anomaly_probability: 0.1,
            ..Pattern::default()
        };
        let n = 20_000;
        let outliers = run(&pattern, 7, n)
            .iter()
            .filter(|s| s.label.is_some())
            .count() as f64;
        // Binomial(20000, 0.1): σ = sqrt(n·p·(1-p)) ≈ 42.4; allow 5σ.
        let expected = n as f64 * 0.1;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        assert!(
            (outliers - expected).abs() < 5.0 * sigma,
            "{outliers} outliers, expected {expected} ± {}",
            5.0 * sigma
        );
    }

    #[test]
    fn noise_has_the_configured_standard_deviation() {
        let pattern = Pattern {
            anomaly_probability: 0.0,
            season_amplitude: Some(0.0),
            noise: Some(2.0),
            ..Pattern::default()
        };
        let values: Vec<f64> = run(&pattern, 3, 50_000).iter().map(|s| s.value).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((mean - 45.0).abs() < 0.05, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "{}", var.sqrt());
    }

    #[test]
    fn the_season_period_can_be_recovered_from_the_data() {
        // Period 60 s at one point per second, noise smaller than the
        // amplitude: the autocorrelation peaks at lag 60.
        let pattern = Pattern {
            anomaly_probability: 0.0,
            season_period: Duration::from_secs(60),
            season_amplitude: Some(5.0),
            noise: Some(1.0),
            ..Pattern::default()
        };
        let values: Vec<f64> = run(&pattern, 11, 3_000).iter().map(|s| s.value).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let autocorrelation = |lag: usize| {
            values
                .iter()
                .zip(&values[lag..])
                .map(|(a, b)| (a - mean) * (b - mean))
                .sum::<f64>()
        };
        let best = (30..=120).max_by(|&a, &b| autocorrelation(a).total_cmp(&autocorrelation(b)));
        assert_eq!(best, Some(60));
    }

    #[test]
    fn the_trend_and_level_shifts_move_the_level() {
        let trend = Pattern {
            anomaly_probability: 0.0,
            season_amplitude: Some(0.0),
            noise: Some(0.0),
            trend: 36.0,
            ..Pattern::default()
        };
        let samples = run(&trend, 1, 101);
        // 36 per hour = 0.01 per second, over 100 s.
        assert!((samples[100].value - samples[0].value - 1.0).abs() < 1e-9);

        let shifts = Pattern {
            anomaly_probability: 0.0,
            level_shift_probability: 0.01,
            level_shift_magnitude: (5.0, 5.0),
            season_amplitude: Some(0.0),
            noise: Some(1.0),
            ..Pattern::default()
        };
        let samples = run(&shifts, 5, 5_000);
        let labels: Vec<&Label> = samples.iter().filter_map(|s| s.label.as_ref()).collect();
        assert!(!labels.is_empty());
        assert!(labels.iter().all(|l| l.kind == Kind::LevelShift && l.up));
        // Every shift raised the level by 5σ: the last 100 points sit there.
        let tail = &samples[samples.len() - 100..];
        let mean = tail.iter().map(|s| s.value).sum::<f64>() / 100.0;
        let expected = 45.0 + 5.0 * labels.len() as f64;
        assert!((mean - expected).abs() < 0.5, "{mean} vs {expected}");
    }

    /// A quiet pattern: no outliers, no season, noise σ 1.
    fn quiet() -> Pattern {
        Pattern {
            anomaly_probability: 0.0,
            season_amplitude: Some(0.0),
            noise: Some(1.0),
            ..Pattern::default()
        }
    }

    #[test]
    fn a_trend_change_bends_the_series() {
        let pattern = Pattern {
            trend_change_probability: 0.001,
            trend_change_magnitude: (36.0, 36.0),
            noise: Some(0.0),
            ..quiet()
        };
        let samples = run(&pattern, 4, 5_000);
        let changes: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].label.is_some())
            .collect();
        assert!(!changes.is_empty());
        assert!(
            samples
                .iter()
                .filter_map(|s| s.label)
                .all(|l| l.kind == Kind::TrendChange)
        );
        // Between changes the slope is constant: 36 σ (of 1, the unit of a
        // noiseless series is a tenth of the range) per hour more at each.
        let first = changes[0];
        let step = |i: usize| samples[i + 1].value - samples[i].value;
        assert!(step(first.saturating_sub(2)).abs() < 1e-9, "flat before");
        assert!((step(first + 1) - 0.01).abs() < 1e-9, "{}", step(first + 1));
    }

    #[test]
    fn a_variance_change_scales_the_noise() {
        let pattern = Pattern {
            variance_change_probability: 0.0005,
            variance_change_factor: (4.0, 4.0),
            ..quiet()
        };
        // The first seed whose first change has 500 points either side.
        let (samples, at, next) = (0..100)
            .find_map(|seed| {
                let samples = run(&pattern, seed, 20_000);
                let at = samples.iter().position(|s| s.label.is_some())?;
                let next = samples[at + 1..]
                    .iter()
                    .position(|s| s.label.is_some())
                    .map_or(samples.len(), |n| at + 1 + n);
                (at > 500 && next - at > 500).then_some((samples, at, next))
            })
            .expect("a seed with a lone change");
        let label = samples[at].label.unwrap();
        assert_eq!(
            (label.kind, label.up, label.magnitude),
            (Kind::VarianceChange, true, 4.0)
        );
        let sd = |xs: &[Sample]| {
            let n = xs.len() as f64;
            let mean = xs.iter().map(|s| s.value).sum::<f64>() / n;
            (xs.iter().map(|s| (s.value - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        let (before, after) = (sd(&samples[..at]), sd(&samples[at..next]));
        assert!(
            (before - 1.0).abs() < 0.1 && (after - 4.0).abs() < 0.4,
            "{before} {after}"
        );
    }

    #[test]
    fn a_counter_only_grows_but_at_its_resets() {
        let pattern = Pattern {
            counter: true,
            counter_reset_probability: 0.002,
            ..quiet()
        };
        let samples = run(&pattern, 2, 5_000);
        let mut resets = 0;
        for pair in samples.windows(2) {
            match pair[1].label {
                Some(label) => {
                    assert_eq!((label.kind, label.up), (Kind::CounterReset, false));
                    assert!(pair[1].value < pair[0].value);
                    resets += 1;
                }
                None => assert!(pair[1].value >= pair[0].value),
            }
        }
        assert!(resets > 2, "{resets}");
    }

    #[test]
    fn student_t_noise_has_the_variance_and_heavier_tails() {
        let pattern = Pattern {
            noise_distribution: NoiseDistribution::StudentT,
            noise: Some(2.0),
            ..quiet()
        };
        let values: Vec<f64> = run(&pattern, 6, 200_000)
            .iter()
            .map(|s| s.value - 45.0)
            .collect();
        let n = values.len() as f64;
        let var = values.iter().map(|v| v * v).sum::<f64>() / n;
        // Beyond 5σ: about 6e-7 of normal draws, about 0.2% of t3's.
        let far = values.iter().filter(|v| v.abs() > 10.0).count();
        assert!((var.sqrt() - 2.0).abs() < 0.15, "{}", var.sqrt());
        assert!(far > 50, "{far}");
    }

    #[test]
    fn bursts_are_runs_of_outliers_in_one_direction() {
        let pattern = Pattern {
            anomaly_probability: 0.02,
            burst_probability: 1.0,
            burst_length: (4, 4),
            anomaly_direction: OutlierDirection::Down,
            ..Pattern::default()
        };
        let samples = run(&pattern, 9, 5_000);
        let mut run_length = 0;
        let mut runs = Vec::new();
        for sample in &samples {
            match sample.label {
                Some(label) => {
                    assert_eq!(label.kind, Kind::Burst);
                    assert!(!label.up);
                    run_length += 1;
                }
                None if run_length > 0 => {
                    runs.push(run_length);
                    run_length = 0;
                }
                None => {}
            }
        }
        assert!(!runs.is_empty());
        // Back-to-back bursts can join; every run is a multiple of 4.
        assert!(runs.iter().all(|r| r % 4 == 0), "{runs:?}");
    }
}
