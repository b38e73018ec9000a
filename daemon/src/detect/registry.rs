//! The detectors a configuration may name (`detector = "NAME"`), with the
//! keys each one uses. Adding a detector: a module implementing
//! [`SeriesModel`](super::SeriesModel), one `DetectorKind` constant in it,
//! and one line in [`DETECTORS`].

pub use super::DetectorKind;
pub use super::moving_average::MOVING_AVERAGE;

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
    "severity",
];

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
    use crate::detect::DetectorSettings;

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
