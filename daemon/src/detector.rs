//! Moving average with deviation thresholding: the pure detection logic.
//!
//! This module owns the per-series sliding window and the verdict for each new
//! point. It performs no I/O, takes no locks and knows nothing of HTTP or
//! tokio: data in, verdicts out.

use serde::{Deserialize, Serialize};

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

/// The detector settings that apply to one series.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorSettings {
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
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            window_size: 30,
            threshold_multiplier: 3.0,
            direction: Direction::Upper,
            min_samples: 30,
            min_std_dev: 0.0,
            min_relative_std_dev: 1e-9,
            exclude_anomalies: false,
            max_excluded_run: 10,
        }
    }
}
