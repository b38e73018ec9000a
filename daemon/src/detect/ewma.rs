//! The `ewma` detector: an exponentially weighted moving average and
//! variance, O(1) time and 24 bytes per series. A point's weight halves
//! every `half_life` points (default `window_size / 2`), so it follows a
//! drifting level sooner than a window of the same memory and forgets a
//! spike gradually instead of all at once.
//!
//! With `α = 1 − 2^(−1/half_life)`, each point `x` is judged against the
//! current mean `μ` and deviation `σ = √var` (floored as every detector's
//! is), then learnt: `d = x − μ`, `μ += α·d`, `var = (1 − α)(var + α·d²)`
//! (West, 1979). These are exactly the weighted mean and population
//! variance of all points so far with weights `α(1 − α)^age`, the first
//! point keeping the rest `(1 − α)^n` (a property test checks it).

use super::persist::Encoder;
use super::{Baseline, DetectorKind, DetectorSettings, SeriesModel, Verdict};

/// The `ewma` entry of the registry.
pub static EWMA: DetectorKind = DetectorKind {
    name: "ewma",
    about: "exponentially weighted mean and variance: follows drift, O(1) memory",
    keys: &["half_life", "min_samples", "window_size"],
    new: |_| Box::new(Ewma::default()),
    restore: |bytes, _| {
        let state = Ewma {
            mean: bytes.f64()?,
            var: bytes.f64()?,
            count: bytes.u64()?,
        };
        Some(Box::new(state))
    },
};

/// The state of one series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    mean: f64,
    var: f64,
    /// Points learnt.
    count: u64,
}

/// The weight of the newest point for a half-life of `half_life` points.
fn alpha(half_life: f64) -> f64 {
    1.0 - (-1.0 / half_life.max(f64::MIN_POSITIVE)).exp2()
}

impl Ewma {
    /// The mean and standard deviation learnt so far.
    pub fn stats(&self) -> (f64, f64) {
        (self.mean, self.var.max(0.0).sqrt())
    }

    fn learn(&mut self, value: f64, settings: &DetectorSettings) {
        if self.count == 0 {
            self.mean = value;
            self.var = 0.0;
        } else {
            let alpha = alpha(settings.half_life);
            let d = value - self.mean;
            let step = alpha * d;
            self.mean += step;
            self.var = (1.0 - alpha) * (self.var + d * step);
        }
        self.count = self.count.saturating_add(1);
    }

    fn warming_up(&self, settings: &DetectorSettings) -> bool {
        self.count == 0 || self.count < settings.min_samples as u64
    }
}

impl SeriesModel for Ewma {
    fn observe(&mut self, value: f64, _timestamp: f64, settings: &DetectorSettings) -> Verdict {
        let verdict = if self.warming_up(settings) {
            Verdict::WarmingUp {
                have: usize::try_from(self.count).unwrap_or(usize::MAX),
                need: settings.min_samples.max(1),
            }
        } else {
            let (mean, std_dev) = self.stats();
            Baseline::around(mean, std_dev, settings).judge(value, settings.direction)
        };
        self.learn(value, settings);
        verdict
    }

    fn current_baseline(&self, _timestamp: f64, settings: &DetectorSettings) -> Option<Baseline> {
        let (mean, std_dev) = self.stats();
        (!self.warming_up(settings)).then(|| Baseline::around(mean, std_dev, settings))
    }

    fn is_warming_up(&self, settings: &DetectorSettings) -> bool {
        self.warming_up(settings)
    }

    fn heap_bytes(&self) -> usize {
        0
    }

    fn kind(&self) -> &'static DetectorKind {
        &EWMA
    }

    fn save(&self, out: &mut Encoder<'_>) {
        out.f64(self.mean);
        out.f64(self.var);
        out.u64(self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The weighted mean and population standard deviation of `xs` with
    /// the weights the recursion stands for, summed directly.
    fn naive(xs: &[f64], half_life: f64) -> (f64, f64) {
        let a = alpha(half_life);
        let n = xs.len() - 1;
        let weight = |i: usize| {
            if i == 0 {
                (1.0 - a).powi(n as i32)
            } else {
                a * (1.0 - a).powi((n - i) as i32)
            }
        };
        let mean: f64 = xs.iter().enumerate().map(|(i, x)| weight(i) * x).sum();
        let var: f64 = xs
            .iter()
            .enumerate()
            .map(|(i, x)| weight(i) * (x - mean) * (x - mean))
            .sum();
        (mean, var.sqrt())
    }

    fn settings(half_life: f64, min_samples: usize) -> DetectorSettings {
        DetectorSettings {
            kind: &EWMA,
            half_life,
            min_samples,
            ..DetectorSettings::default()
        }
    }

    proptest! {
        #[test]
        fn the_recursion_is_the_weighted_mean_and_variance(
            xs in prop::collection::vec(-1e3f64..1e3, 1..200),
            half_life in 0.5f64..100.0,
        ) {
            let s = settings(half_life, 1);
            let mut model = Ewma::default();
            for (i, &x) in xs.iter().enumerate() {
                model.observe(x, 0.0, &s);
                let (mean, std) = model.stats();
                let (want_mean, want_std) = naive(&xs[..=i], half_life);
                prop_assert!((mean - want_mean).abs() <= 1e-9 * (1.0 + want_mean.abs()),
                    "mean {} vs {}", mean, want_mean);
                prop_assert!((std - want_std).abs() <= 1e-6 * (1.0 + want_std),
                    "std {} vs {}", std, want_std);
            }
        }

        #[test]
        fn verdicts_follow_the_baseline_before_the_point(
            xs in prop::collection::vec(0.0f64..100.0, 2..100),
            k in 0.5f64..5.0,
        ) {
            let mut s = settings(10.0, 1);
            s.threshold_multiplier = k;
            s.direction = crate::detect::Direction::Both;
            let mut model = Ewma::default();
            for (i, &x) in xs.iter().enumerate() {
                let before = model.current_baseline(0.0, &s);
                let verdict = model.observe(x, 0.0, &s);
                match (i, before) {
                    (0, None) => {
                        let warming = matches!(verdict, Verdict::WarmingUp { .. });
                        prop_assert!(warming);
                    }
                    (_, Some(b)) => {
                        let (mean, std) = naive(&xs[..i], 10.0);
                        prop_assert!((b.mean - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
                        prop_assert!((b.std_dev - std).abs() <= 1e-6 * (1.0 + std));
                        prop_assert_eq!(verdict, b.judge(x, s.direction));
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }

    #[test]
    fn warms_up_then_flags_a_spike_and_follows_a_shift() {
        let s = settings(5.0, 4);
        let mut model = Ewma::default();
        for (i, x) in [10.0, 11.0, 10.0, 11.0].into_iter().enumerate() {
            assert_eq!(
                model.observe(x, 0.0, &s),
                Verdict::WarmingUp { have: i, need: 4 }
            );
        }
        assert!(model.observe(30.0, 0.0, &s).is_anomaly());
        // A level shift to 50: flagged at first, then learnt.
        let flagged: Vec<bool> = (0..40)
            .map(|_| model.observe(50.0, 0.0, &s).is_anomaly())
            .collect();
        assert!(flagged[0]);
        assert!(!flagged[39], "the new level is the baseline after a while");
    }
}
