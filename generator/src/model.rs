//! The signal model: pure, seeded, reproducible.
//!
//! A series' value at virtual time `t` (seconds since the run's start) is
//!
//! ```text
//! base + level_shift + amplitude·sin(2π·t / period) + trend·t/3600 + noise·N(0, 1) [+ outlier]
//! ```
//!
//! where `base` is the middle of `value_range`. Outliers add a magnitude
//! drawn in `anomaly_magnitude` (in units of the noise's σ) up or down;
//! bursts are several outliers in a row; a level shift moves `base` for
//! good. Every injected event is returned as a [`Label`], the ground truth
//! that `--labels` writes.
//!
//! Each series draws from its own generator, seeded from the run's seed and
//! the series' name, so a series' values do not depend on which other
//! series exist.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::config::{OutlierDirection, Pattern};

/// What kind of injected event a point carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A lone outlier.
    Spike,
    /// One point of a run of outliers.
    Burst,
    /// The first point after the level moved.
    LevelShift,
}

impl Kind {
    /// The name written in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::Burst => "burst",
            Kind::LevelShift => "level_shift",
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
    /// How far the value was pushed, in units of the noise's σ.
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
        }
    }

    /// The value at virtual time `t` seconds, under `pattern`.
    pub fn sample(&mut self, pattern: &Pattern, t: f64) -> Sample {
        let (lo, hi) = pattern.value_range;
        let base = lo + (hi - lo) / 2.0;
        let season = pattern.amplitude()
            * (std::f64::consts::TAU * t / pattern.season_period.as_secs_f64()).sin();
        let trend = pattern.trend * t / 3600.0;
        let noise = pattern.noise_std_dev() * self.standard_normal();
        let unit = pattern.magnitude_unit();

        let mut label = None;
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
        Sample {
            value: base + self.level + season + trend + noise + outlier,
            label,
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

fn signed(up: bool, magnitude: f64) -> f64 {
    if up { magnitude } else { -magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;
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
