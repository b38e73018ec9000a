//! The moving average detector: judges each point against the window
//! before it, and keeps flagged points out of the window when asked
//! (`exclude_anomalies`).

use super::persist::{Decoder, Encoder};
use super::window::{SlidingWindow, WindowStats};
use super::{Baseline, DetectorKind, DetectorSettings, SeriesModel, Verdict};

/// The default detector: the design's moving average with deviation
/// thresholding.
pub static MOVING_AVERAGE: DetectorKind = DetectorKind {
    name: "moving_average",
    about: "mean and standard deviation of the last window_size points",
    keys: &[
        "window_size",
        "min_samples",
        "exclude_anomalies",
        "max_excluded_run",
    ],
    new: |settings| Box::new(SeriesDetector::new(settings)),
    restore: |bytes, settings| {
        let mut detector = SeriesDetector::new(settings);
        detector.state.restore_window(bytes, &mut detector.ring)?;
        Some(Box::new(detector))
    },
};

/// Per-series detector state without its ring: the window statistics plus
/// the exclusion run (48 bytes). A series whose detector is not the moving
/// average keeps its [`SeriesModel`] in the same 8 bytes as the run (the
/// window statistics then go unused).
///
/// The ring of the window is passed to [`observe`](Self::observe); its length
/// is the window capacity, and the caller moves the window to a ring of
/// another length (with [`move_window`](Self::move_window)) when
/// `window_size` changes. [`SeriesDetector`] does that with a ring of its own.
#[derive(Clone, Debug, Default)]
pub struct DetectorState {
    window: WindowStats,
    /// Consecutive flagged points kept out of the window
    /// (`exclude_anomalies`), or another detector's state. `None` (nothing
    /// allocated, 8 bytes) for a moving average without a run in progress.
    pub(super) pending: Option<Box<Extra>>,
}

/// What a series' state holds beyond the window statistics.
#[derive(Debug)]
pub(super) enum Extra {
    /// A run of flagged points kept out of the window.
    Run(Vec<f64>),
    /// The state of a detector other than the moving average.
    Model(Box<dyn SeriesModel>),
}

impl Clone for Extra {
    fn clone(&self) -> Self {
        match self {
            Extra::Run(run) => Extra::Run(run.clone()),
            // Only a moving average's state is cloned (SeriesDetector).
            Extra::Model(model) => panic!("the state of {} is not cloned", model.kind().name),
        }
    }
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
            self.baseline(settings).judge(value, settings.direction)
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
        Baseline::around(self.window.mean(), self.window.std_dev(), settings)
    }

    /// A flagged point under `exclude_anomalies`: hold it back, or accept the
    /// whole run once it is `max_run` long.
    #[cold]
    #[inline(never)]
    fn exclude(&mut self, ring: &mut [f64], value: f64, max_run: usize) {
        if self.excluded_run().len() + 1 >= max_run {
            if let Some(Extra::Run(run)) = self.pending.take().map(|extra| *extra) {
                for &x in run.iter() {
                    self.window.push(ring, x);
                }
            }
            self.window.push(ring, value);
        } else {
            match self.pending.as_deref_mut() {
                Some(Extra::Run(run)) => run.push(value),
                _ => self.pending = Some(Box::new(Extra::Run(vec![value]))),
            }
        }
    }

    /// A point that is not excluded ends the pending run (dropping it).
    #[inline]
    fn end_run(&mut self) {
        if matches!(self.pending.as_deref(), Some(Extra::Run(_))) {
            self.pending = None;
        }
    }

    /// Moves the window from ring `old` to ring `new` of another capacity
    /// (at least 1), keeping its most recent points.
    pub fn move_window(&mut self, old: &[f64], new: &mut [f64]) {
        self.window.move_to(old, new);
    }

    /// Writes the window (oldest first) and the excluded run, for a
    /// snapshot; the window lives in `ring`.
    pub fn save_window(&self, ring: &[f64], out: &mut Encoder<'_>) {
        out.f64s_counted(self.window.len(), self.window.iter(ring));
        out.f64s(self.excluded_run().iter().copied());
    }

    /// Reads what [`save_window`](Self::save_window) wrote into this
    /// (fresh) state and `ring`, keeping the newest `ring.len()` points.
    pub fn restore_window(&mut self, bytes: &mut Decoder<'_>, ring: &mut [f64]) -> Option<()> {
        let window = bytes.f64s()?;
        let run = bytes.f64s()?;
        *self = DetectorState::new();
        for &value in &window[window.len().saturating_sub(ring.len())..] {
            self.window.push(ring, value);
        }
        if !run.is_empty() {
            self.pending = Some(Box::new(Extra::Run(run)));
        }
        Some(())
    }

    /// The statistics of the window.
    pub fn window(&self) -> &WindowStats {
        &self.window
    }

    /// The flagged points currently held out of the window, oldest first
    /// (empty unless `exclude_anomalies` is on and a run is in progress).
    pub fn excluded_run(&self) -> &[f64] {
        match self.pending.as_deref() {
            Some(Extra::Run(run)) => run,
            _ => &[],
        }
    }

    /// The state of the series' detector when it is not the moving
    /// average.
    pub fn model(&self) -> Option<&dyn SeriesModel> {
        match self.pending.as_deref() {
            Some(Extra::Model(model)) => Some(&**model),
            _ => None,
        }
    }

    /// See [`Self::model`].
    pub fn model_mut(&mut self) -> Option<&mut dyn SeriesModel> {
        match self.pending.as_deref_mut() {
            Some(Extra::Model(model)) => Some(&mut **model),
            _ => None,
        }
    }

    /// The detector this state belongs to.
    pub fn kind(&self) -> &'static DetectorKind {
        self.model().map_or(&MOVING_AVERAGE, |m| m.kind())
    }

    /// Holds `model`, the restored state of a detector other than the
    /// moving average.
    pub fn set_model(&mut self, model: Box<dyn SeriesModel>) {
        *self = DetectorState::new();
        self.pending = Some(Box::new(Extra::Model(model)));
    }

    /// Starts over as a fresh state of the detector of `settings`: an
    /// empty window for the moving average, a new model for another.
    pub fn reset(&mut self, settings: &DetectorSettings) {
        *self = DetectorState::new();
        if !settings.is_moving_average() {
            self.pending = Some(Box::new(Extra::Model((settings.kind.new)(settings))));
        }
    }

    /// Whether the next point would get no verdict under `settings`,
    /// whatever the detector.
    pub fn is_warming_up_any(&self, settings: &DetectorSettings) -> bool {
        match self.model() {
            Some(model) => model.is_warming_up(settings),
            None => self.is_warming_up(settings),
        }
    }

    /// The baseline a point at `timestamp` would be judged against,
    /// whatever the detector; `None` while warming up.
    pub fn baseline_any(&self, timestamp: f64, settings: &DetectorSettings) -> Option<Baseline> {
        match self.model() {
            Some(model) => model.current_baseline(timestamp, settings),
            None => self.current_baseline(settings),
        }
    }

    /// Heap bytes held beyond the slot and ring.
    pub fn heap_bytes(&self) -> usize {
        match self.pending.as_deref() {
            None => 0,
            Some(Extra::Run(run)) => 24 + run.capacity() * 8,
            Some(Extra::Model(model)) => 24 + std::mem::size_of_val(&**model) + model.heap_bytes(),
        }
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

impl SeriesModel for SeriesDetector {
    fn observe(&mut self, value: f64, _timestamp: f64, settings: &DetectorSettings) -> Verdict {
        SeriesDetector::observe(self, value, settings)
    }

    fn current_baseline(&self, _timestamp: f64, settings: &DetectorSettings) -> Option<Baseline> {
        self.state.current_baseline(settings)
    }

    fn is_warming_up(&self, settings: &DetectorSettings) -> bool {
        self.state.is_warming_up(settings)
    }

    fn heap_bytes(&self) -> usize {
        self.ring.len() * 8 + self.state.excluded_run().len() * 8
    }

    fn kind(&self) -> &'static DetectorKind {
        &MOVING_AVERAGE
    }

    fn save(&self, out: &mut Encoder<'_>) {
        self.state.save_window(&self.ring, out);
    }
}
