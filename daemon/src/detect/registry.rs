//! The detectors a configuration may name (`detector = "NAME"`), with the
//! keys each one uses. Adding a detector: a module implementing
//! [`SeriesModel`](super::SeriesModel), one `DetectorKind` constant in it,
//! and one line in [`DETECTORS`].

use super::{DetectorSettings, SeriesModel};

/// A detector: its name, what it is for, the keys it reads, and how to
/// make its state for a new series.
#[derive(Debug)]
pub struct DetectorKind {
    /// The name in the configuration.
    pub name: &'static str,
    /// One line on what it suits.
    pub about: &'static str,
    /// The detector-specific keys it reads, beside [`COMMON_KEYS`].
    pub keys: &'static [&'static str],
    /// A fresh state for a series under `settings`.
    pub new: fn(&DetectorSettings) -> Box<dyn SeriesModel>,
}

impl PartialEq for DetectorKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// The keys of `[detector]` and `[[rule]]` every detector honours.
pub const COMMON_KEYS: &[&str] = &[
    "detector",
    "threshold_multiplier",
    "direction",
    "min_std_dev",
    "min_relative_std_dev",
    "min_consecutive",
    "resolve_after",
    "resolve_multiplier",
    "series_ttl",
];

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
    new: |settings| Box::new(super::SeriesDetector::new(settings)),
};

/// Every detector, the default first.
pub static DETECTORS: &[&DetectorKind] = &[
    &MOVING_AVERAGE,
    &super::ewma::EWMA,
    &super::median_mad::MEDIAN_MAD,
    &super::seasonal::SEASONAL,
];

/// The detector called `name`.
pub fn by_name(name: &str) -> Option<&'static DetectorKind> {
    DETECTORS.iter().copied().find(|kind| kind.name == name)
}

/// `(name, kind)` pairs, as the configuration's choice parser takes them.
pub fn choices() -> Vec<(&'static str, &'static DetectorKind)> {
    DETECTORS.iter().map(|kind| (kind.name, *kind)).collect()
}

/// Whether `kind` reads `key` (a key of `[detector]` or `[[rule]]`).
pub fn uses_key(kind: &DetectorKind, key: &str) -> bool {
    COMMON_KEYS.contains(&key) || kind.keys.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for kind in DETECTORS {
            assert!(std::ptr::eq(by_name(kind.name).unwrap(), *kind));
        }
        assert!(by_name("nope").is_none());
        assert!(std::ptr::eq(DETECTORS[0], &MOVING_AVERAGE));
        assert!(uses_key(&MOVING_AVERAGE, "window_size"));
        assert!(uses_key(&MOVING_AVERAGE, "direction"));
        assert!(!uses_key(&MOVING_AVERAGE, "half_life"));
    }

    #[test]
    fn every_detector_starts_warming_up() {
        let settings = DetectorSettings::default();
        for kind in DETECTORS {
            let model = (kind.new)(&settings);
            assert!(model.is_warming_up(&settings), "{}", kind.name);
            assert!(std::ptr::eq(model.kind(), *kind), "{}", kind.name);
        }
    }
}
