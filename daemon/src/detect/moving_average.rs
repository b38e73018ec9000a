//! The moving average detector: judges each point against the window
//! before it, and keeps flagged points out of the window when asked
//! (`exclude_anomalies`).

use super::window::{SlidingWindow, WindowStats, fmax};
use super::{Baseline, DetectorSettings, Direction, Side, Verdict};

/// Per-series detector state without its ring: the window statistics plus
/// the exclusion run (48 bytes).
///
/// The ring of the window is passed to [`observe`](Self::observe); its length
/// is the window capacity, and the caller moves the window to a ring of
/// another length (with [`move_window`](Self::move_window)) when
/// `window_size` changes. [`SeriesDetector`] does that with a ring of its own.
#[derive(Clone, Debug, Default)]
pub struct DetectorState {
    window: WindowStats,
    /// Consecutive flagged points kept out of the window (`exclude_anomalies`).
    /// `None` (nothing allocated, 8 bytes) unless a run is in progress.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes per series instead of 24 for a rarely used run"
    )]
    pub(super) pending: Option<Box<Vec<f64>>>,
}

impl DetectorState {
    /// A detector with an empty window.
    pub const fn new() -> Self {
        Self {
            window: WindowStats::new(),
            pending: None,
        }
    }

    /// Judge `value` against the window BEFORE adding it, then update the
    /// window stored in `ring`.
    ///
    /// The capacity is `ring.len()`, whatever `settings.window_size` says:
    /// resizing is the caller's business.
    #[inline]
    pub fn observe(
        &mut self,
        ring: &mut [f64],
        value: f64,
        settings: &DetectorSettings,
    ) -> Verdict {
        let have = self.window.len();
        let verdict = if have < settings.min_samples || have == 0 {
            // Warm-up points always enter the window.
            Verdict::WarmingUp {
                have,
                need: settings.min_samples.max(1),
            }
        } else {
            let baseline = self.baseline(settings);
            let up = settings.direction != Direction::Lower;
            let down = settings.direction != Direction::Upper;
            if up && value > baseline.threshold {
                Verdict::Anomaly(baseline, Side::Upper)
            } else if down && value < baseline.lower_threshold {
                Verdict::Anomaly(baseline, Side::Lower)
            } else {
                Verdict::Normal(baseline)
            }
        };
        if verdict.is_anomaly() && settings.exclude_anomalies && settings.max_excluded_run > 0 {
            self.exclude(ring, value, settings.max_excluded_run);
        } else {
            // Any point that enters the window ends a pending run.
            self.end_run();
            self.window.push(ring, value);
        }
        verdict
    }

    /// The baseline the next point would be judged against under
    /// `settings`; `None` while warming up.
    pub fn current_baseline(&self, settings: &DetectorSettings) -> Option<Baseline> {
        let have = self.window.len();
        (have >= settings.min_samples && have > 0).then(|| self.baseline(settings))
    }

    /// The baseline of the current window under `settings`.
    #[inline]
    fn baseline(&self, settings: &DetectorSettings) -> Baseline {
        let mean = self.window.mean();
        let std_dev = self.window.std_dev();
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

    /// A flagged point under `exclude_anomalies`: hold it back, or accept the
    /// whole run once it is `max_run` long.
    #[cold]
    #[inline(never)]
    fn exclude(&mut self, ring: &mut [f64], value: f64, max_run: usize) {
        if self.excluded_run().len() + 1 >= max_run {
            if let Some(run) = self.pending.take() {
                for &x in run.iter() {
                    self.window.push(ring, x);
                }
            }
            self.window.push(ring, value);
        } else {
            self.pending.get_or_insert_with(Box::default).push(value);
        }
    }

    /// A point that is not excluded ends the pending run (dropping it).
    #[inline]
    fn end_run(&mut self) {
        if self.pending.is_some() {
            self.pending = None;
        }
    }

    /// Moves the window from ring `old` to ring `new` of another capacity
    /// (at least 1), keeping its most recent points.
    pub fn move_window(&mut self, old: &[f64], new: &mut [f64]) {
        self.window.move_to(old, new);
    }

    /// The statistics of the window.
    pub fn window(&self) -> &WindowStats {
        &self.window
    }

    /// The flagged points currently held out of the window, oldest first
    /// (empty unless `exclude_anomalies` is on and a run is in progress).
    pub fn excluded_run(&self) -> &[f64] {
        self.pending.as_deref().map_or(&[], Vec::as_slice)
    }

    /// `true` while the window holds fewer than `min_samples` points (or
    /// none), i.e. when the next [`observe`](Self::observe) under `settings`
    /// would answer [`Verdict::WarmingUp`] (a pending resize to a smaller
    /// `window_size` is taken into account).
    pub fn is_warming_up(&self, settings: &DetectorSettings) -> bool {
        let len = self.window.len().min(settings.window_capacity());
        len < settings.min_samples || len == 0
    }
}

/// A [`DetectorState`] with a ring of its own.
#[derive(Clone, Debug)]
pub struct SeriesDetector {
    pub(super) state: DetectorState,
    /// The window's ring; its length is the capacity.
    ring: Box<[f64]>,
}

impl SeriesDetector {
    /// A detector with an empty window of `settings.window_size` points.
    pub fn new(settings: &DetectorSettings) -> Self {
        Self {
            state: DetectorState::new(),
            ring: vec![0.0; settings.window_capacity()].into_boxed_slice(),
        }
    }

    /// Judge `value` against the window BEFORE adding it, then update the window.
    ///
    /// If `settings.window_size` differs from the window's capacity (settings
    /// were reloaded), the window is first resized, keeping its most recent
    /// points.
    #[inline]
    pub fn observe(&mut self, value: f64, settings: &DetectorSettings) -> Verdict {
        if settings.window_size != self.ring.len() {
            // Settings reloaded (or a window size outside the clamp range,
            // for which this is a no-op).
            self.resize(settings.window_capacity());
        }
        self.state.observe(&mut self.ring, value, settings)
    }

    #[cold]
    #[inline(never)]
    fn resize(&mut self, capacity: usize) {
        if capacity != self.ring.len() {
            let mut ring = vec![0.0; capacity].into_boxed_slice();
            self.state.move_window(&self.ring, &mut ring);
            self.ring = ring;
        }
    }

    /// The sliding window of accepted points (a view).
    pub fn window(&self) -> SlidingWindow<&[f64]> {
        SlidingWindow {
            stats: self.state.window,
            ring: &self.ring,
        }
    }

    /// The flagged points currently held out of the window, oldest first
    /// (empty unless `exclude_anomalies` is on and a run is in progress).
    pub fn excluded_run(&self) -> &[f64] {
        self.state.excluded_run()
    }

    /// See [`DetectorState::is_warming_up`].
    pub fn is_warming_up(&self, settings: &DetectorSettings) -> bool {
        self.state.is_warming_up(settings)
    }
}
