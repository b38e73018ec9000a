//! The pure detection logic: the detectors, their verdicts and episodes.
//!
//! Each detector keeps a per-series state and gives a verdict for each new
//! point. Nothing here performs I/O, takes locks or knows of HTTP or
//! tokio: data in, verdicts out.
//!
//! This folder holds the detectors behind one trait ([`SeriesModel`],
//! listed in [`registry`]): the moving average with deviation thresholding
//! (`moving_average`, on the window statistics of `window`, the default
//! and the design's core, described below), `ewma`, `median_mad` (on
//! `order_tree`) and `seasonal`; and episodes ([`episode`]). Settings come
//! in as values, verdicts go out.
//!
//! # The rule
//!
//! Each new point `x` of a series is judged against the window of the
//! `window_size` most recent accepted points *before* `x` is added. With `μ`
//! and `σ` the mean and the population standard deviation of that window and
//! `k` the threshold multiplier, `x` is an anomaly when
//!
//! * (direction `upper` or `both`) `x > μ + k·σ_eff`, strictly, or
//! * (direction `lower` or `both`) `x < μ − k·σ_eff`, strictly,
//!
//! where the *effective* deviation is floored:
//!
//! ```text
//! σ_eff = max(σ, min_std_dev, min_relative_std_dev · |μ|)
//! ```
//!
//! # Why σ is floored
//!
//! A perfectly flat series has `σ = 0`, so without a floor the band collapses
//! onto the mean and any deviation at all is flagged, including the last-bit
//! noise of floating-point arithmetic (`0.1 + 0.2` is `0.30000000000000004`,
//! values near `1e9` move in steps of about `1.2e-7`). The relative floor
//! `min_relative_std_dev · |μ|` has to cover that noise and nothing more, or
//! it hides real changes of series with large values and small spread (a
//! floor of `1e-9`, the old default, is `1.0` at `1e9`: a series there with a
//! real σ of `0.03` would not see a jump of `0.5`, about 17σ).
//!
//! The default [`DEFAULT_MIN_RELATIVE_STD_DEV`] is `1e-14`, about 45 ε
//! (ε = 2.2e-16, and one ulp of `x` is at most `ε·|x|`), so that with `k = 3`
//! the band's half-width is at least 135 ε·|μ|, i.e. at least 135 ulps. What
//! it has to absorb:
//!
//! * the values' own last-bit noise: a point a few ulps from the others;
//! * the running mean's rounding between two exact recomputations: at most
//!   half an ulp per update, over at most `window_size` updates, growing like
//!   the square root of the count when the noise is random (about 50 ulps at
//!   a window of 10,000), and nothing at all on a perfectly flat series
//!   (every update adds `δ = 0`).
//!
//! It stays far below any real change: at `1e9` the floor is `1e-5`.
//! Hence: a series that sits at `42.0` and jumps to `43.0` is flagged (the
//! band is `42 ± 1.3e-12`), a series wobbling between `0.3` and
//! `0.30000000000000004` is not, and neither is one at `1e9` that moves by
//! a few ulps.
//! The absolute floor `min_std_dev` (default `0`) does the same for series that
//! sit at zero, where the relative floor vanishes; with it at `0`, a series of
//! zeros followed by `1.0` is flagged.
//!
//! # Warm-up
//!
//! Until the window holds `min_samples` points there is no verdict
//! ([`Verdict::WarmingUp`]); warm-up points still enter the window. An empty
//! window never gives a verdict, even with `min_samples = 0`. Note that a
//! `min_samples` above `window_size` means the series never leaves warm-up;
//! configuration validation is expected to reject that.
//!
//! # Excluding anomalies
//!
//! With `exclude_anomalies`, a flagged point is kept out of the window so a
//! burst of spikes does not inflate `σ` and mask the rest of the burst. The
//! flagged points are held in a small pending run; a normal point ends the run
//! (the run is dropped). When the run reaches `max_excluded_run` consecutive
//! flagged points, it is taken to be a level shift rather than a burst: the
//! whole run enters the window in order, so the baseline catches up with the
//! new level. `max_excluded_run = 0` lets every flagged point in.
//!
//! # Cost and accuracy
//!
//! [`SlidingWindow`] keeps a running mean and sum of squared deviations (`M2`)
//! updated in O(1) per point with the sliding form of Welford's algorithm
//! (replacing `x_old` by `x_new`: `δ = x_new − x_old`, `μ' = μ + δ/n`,
//! `M2' = M2 + δ·((x_new − μ') + (x_old − μ))`, with `1/n` precomputed). Its
//! rounding error is wiped out by an exact two-pass recomputation over the
//! window:
//!
//! * every `capacity` updates (each time the ring wraps), which costs O(1)
//!   amortised per point whatever the window size;
//! * whenever cancellation is detected: `M2` fell below `1e-4` times the
//!   largest `M2` seen since the last recomputation, or went negative. The
//!   incremental `M2` carries an absolute error of a few ulps of the largest
//!   value it has held, which turns into a large relative error once `M2` has
//!   shrunk by orders of magnitude, typically when a spike leaves the window.
//!   That relative error is about `ε/ratio` times a small factor: at `1e-4`
//!   the worst error measured over adversarial spike patterns (windows 2 to
//!   10,000) is under 1% of the accuracy target below, whereas at `1e-7` it
//!   reaches the target. A larger ratio would only add recomputations:
//!   ordinary fluctuations of `M2` (a window of 30 i.i.d. points does not see
//!   its `M2` shrink 10⁴-fold) do not trigger any.
//!
//! Mean and standard deviation `got` stay within
//! `|got − want| ≤ 1e-9·|want| + 1e-12·|μ|` of the value `want` of a two-pass
//! computation over the same window (the second term covers the rounding of
//! the running mean itself, about `1e-16·|μ|` per update, which dominates the
//! error on σ for series such as `1e9 ± 0.03`).

use serde::{Deserialize, Serialize};

use persist::{Decoder, Encoder};

pub mod episode;
mod ewma;
mod median_mad;
mod moving_average;
mod order_tree;
pub mod persist;
pub mod registry;
pub mod seasonal;
mod window;
use window::{clamp_capacity, fmax};

pub use moving_average::{DetectorState, SeriesDetector};
pub use window::{SlidingWindow, WindowStats};

/// Default σ floor relative to `|mean|`: about 45 ε, enough for rounding
/// noise and no more (see "Why σ is floored" above).
pub const DEFAULT_MIN_RELATIVE_STD_DEV: f64 = 1e-14;

/// Which side of the moving average counts as anomalous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Flag points above `mean + k·σ` (the design's original rule).
    Upper,
    /// Flag points below `mean − k·σ`.
    Lower,
    /// Flag points on either side.
    Both,
}

impl Direction {
    /// The configuration / wire name: `"upper"`, `"lower"` or `"both"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upper => "upper",
            Direction::Lower => "lower",
            Direction::Both => "both",
        }
    }
}

/// A detector: its name, what it is for, the keys it reads, and how to
/// make its state for a new series.
#[derive(Debug)]
pub struct DetectorKind {
    /// The name in the configuration.
    pub name: &'static str,
    /// One line on what it suits.
    pub about: &'static str,
    /// The detector-specific keys it reads, beside [`registry::COMMON_KEYS`].
    pub keys: &'static [&'static str],
    /// A fresh state for a series under `settings`.
    pub new: fn(&DetectorSettings) -> Box<dyn SeriesModel>,
    /// A state read back from what [`SeriesModel::save`] wrote under the
    /// same `settings`; `None` when the bytes do not make one.
    pub restore: fn(&mut Decoder<'_>, &DetectorSettings) -> Option<Box<dyn SeriesModel>>,
}

impl PartialEq for DetectorKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// One detector's state for one series: it judges each point against the
/// baseline it has learned from the points before, then learns from the
/// point. Every detector expresses its baseline as a center and a spread
/// ([`Baseline::around`]), so that the σ floors, `threshold_multiplier`,
/// `direction` and the score mean the same thing for all of them.
///
/// A new detector is one module implementing this trait plus one line in
/// [`registry::DETECTORS`]. (The table stores `moving_average` apart, in
/// pooled rings, for memory; its [`SeriesDetector`] implements the trait
/// too.)
pub trait SeriesModel: Send + Sync + std::fmt::Debug {
    /// Judges `value` at `timestamp` (unix seconds) against the baseline
    /// before it, then updates the state with it.
    fn observe(&mut self, value: f64, timestamp: f64, settings: &DetectorSettings) -> Verdict;

    /// The baseline a point at `timestamp` would be judged against now;
    /// `None` while warming up.
    fn current_baseline(&self, timestamp: f64, settings: &DetectorSettings) -> Option<Baseline>;

    /// Whether the next point would get no verdict.
    fn is_warming_up(&self, settings: &DetectorSettings) -> bool;

    /// Heap bytes this state holds (beyond its own `size_of`).
    fn heap_bytes(&self) -> usize;

    /// The detector this state belongs to.
    fn kind(&self) -> &'static DetectorKind;

    /// Writes the state, for a snapshot; its kind's `restore` reads it.
    fn save(&self, out: &mut Encoder<'_>);
}

/// The detector settings that apply to one series.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorSettings {
    /// The detector (`detector` key): `moving_average` unless set.
    pub kind: &'static DetectorKind,
    /// Number of most recent points in the sliding window.
    pub window_size: usize,
    /// `k` in `mean ± k·σ`.
    pub threshold_multiplier: f64,
    /// Which side(s) are flagged.
    pub direction: Direction,
    /// Points the window must hold before a verdict is given.
    pub min_samples: usize,
    /// Absolute floor for σ when computing thresholds.
    pub min_std_dev: f64,
    /// Floor for σ relative to `|mean|` when computing thresholds.
    pub min_relative_std_dev: f64,
    /// Keep flagged points out of the window.
    pub exclude_anomalies: bool,
    /// After this many consecutive excluded points, accept the run.
    pub max_excluded_run: usize,
    /// `ewma`: points after which an observation's weight has halved.
    pub half_life: f64,
    /// `seasonal`: the period, in seconds.
    pub season: f64,
    /// `seasonal`: past periods compared.
    pub seasons: usize,
    /// `seasonal`: the width of a bucket, in seconds.
    pub bucket: f64,
}

impl Default for DetectorSettings {
    /// The design's original settings (window 30, `k` 3, upper), which the
    /// detectors' tests build on. The configuration's built-in defaults
    /// are [`crate::config::DetectorConfig::default`].
    fn default() -> Self {
        Self {
            kind: &registry::MOVING_AVERAGE,
            window_size: 30,
            threshold_multiplier: 3.0,
            direction: Direction::Upper,
            min_samples: 30,
            min_std_dev: 0.0,
            min_relative_std_dev: DEFAULT_MIN_RELATIVE_STD_DEV,
            exclude_anomalies: false,
            max_excluded_run: 10,
            half_life: 15.0,
            season: 86_400.0,
            seasons: 3,
            bucket: 300.0,
        }
    }
}

impl DetectorSettings {
    /// Whether these settings use the moving average (the default), which
    /// the series table stores inline.
    #[inline]
    pub fn is_moving_average(&self) -> bool {
        std::ptr::eq(self.kind, &registry::MOVING_AVERAGE)
    }

    /// The window capacity these settings ask for: `window_size` clamped to
    /// `1..=u32::MAX`.
    #[inline]
    pub fn window_capacity(&self) -> usize {
        clamp_capacity(self.window_size)
    }
}

/// The side of the band a flagged point crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The point was above `mean + k·σ_eff`.
    Upper,
    /// The point was below `mean − k·σ_eff`.
    Lower,
}

impl Side {
    /// The wire name: `"upper"` or `"lower"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Upper => "upper",
            Side::Lower => "lower",
        }
    }
}

/// Baseline of the window before the point was added.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    /// Mean of the window.
    pub mean: f64,
    /// Population standard deviation of the window (not floored).
    pub std_dev: f64,
    /// Upper threshold `mean + k·σ_eff`, with
    /// `σ_eff = max(std_dev, min_std_dev, min_relative_std_dev·|mean|)`.
    pub threshold: f64,
    /// Lower threshold `mean − k·σ_eff`.
    pub lower_threshold: f64,
    /// The effective deviation `σ_eff` the thresholds are built on.
    pub sigma: f64,
}

/// The largest score: what a point off a perfectly flat series (`σ_eff =
/// 0`) gets, and the cap of every other.
pub const MAX_SCORE: f64 = 1e6;

impl Baseline {
    /// The baseline of a detector whose center is `mean` and spread
    /// `std_dev` (a standard deviation, or what stands for one): floors the
    /// spread into `σ_eff = max(std_dev, min_std_dev, min_relative_std_dev
    /// · |mean|)` and puts the thresholds `k·σ_eff` either side.
    #[inline]
    pub fn around(mean: f64, std_dev: f64, settings: &DetectorSettings) -> Baseline {
        let sigma = fmax(
            fmax(std_dev, settings.min_std_dev),
            settings.min_relative_std_dev * mean.abs(),
        );
        let band = settings.threshold_multiplier * sigma;
        Baseline {
            mean,
            std_dev,
            threshold: mean + band,
            lower_threshold: mean - band,
            sigma,
        }
    }

    /// The verdict on `value` under `direction`: an anomaly strictly beyond
    /// a threshold on a side the direction checks.
    #[inline]
    pub fn judge(self, value: f64, direction: Direction) -> Verdict {
        let up = direction != Direction::Lower;
        let down = direction != Direction::Upper;
        if up && value > self.threshold {
            Verdict::Anomaly(self, Side::Upper)
        } else if down && value < self.lower_threshold {
            Verdict::Anomaly(self, Side::Lower)
        } else {
            Verdict::Normal(self)
        }
    }

    /// How far `value` lies from the mean, in effective standard deviations:
    /// `|value − mean| / σ_eff`, finite, at most [`MAX_SCORE`] (a point off a
    /// flat series at `σ_eff = 0` gets the cap, one on it 0). An anomaly's
    /// score exceeds `threshold_multiplier` (up to the rounding of the two
    /// computations at the very edge of the band).
    pub fn score(&self, value: f64) -> f64 {
        let distance = (value - self.mean).abs();
        if distance == 0.0 {
            0.0
        } else if self.sigma > 0.0 {
            (distance / self.sigma).min(MAX_SCORE)
        } else {
            MAX_SCORE
        }
    }
}

/// The judgement on one point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// The window holds fewer than min_samples points; no verdict. `have` =
    /// points in window (before this point was added), `need` = min_samples.
    WarmingUp {
        /// Points in the window before this point was added.
        have: usize,
        /// Points needed for a verdict (`min_samples`, at least 1).
        need: usize,
    },
    /// The point is within the band.
    Normal(Baseline),
    /// The point crossed the band on the given side.
    Anomaly(Baseline, Side),
}

impl Verdict {
    /// `true` for [`Verdict::Anomaly`].
    pub fn is_anomaly(&self) -> bool {
        matches!(self, Verdict::Anomaly(..))
    }

    /// The baseline the point was judged against, if there was a verdict.
    pub fn baseline(&self) -> Option<Baseline> {
        match *self {
            Verdict::WarmingUp { .. } => None,
            Verdict::Normal(b) | Verdict::Anomaly(b, _) => Some(b),
        }
    }
}

#[cfg(test)]
mod tests;
