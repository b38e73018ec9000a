//! Which configuration a daemon starts on: the file given with `--config`
//! (it must exist), else the default path if a file is there, else the
//! built-in defaults. Shared by `anomalyd` and `anomaly-generator`.

use std::path::Path;

use super::{Config, ConfigErrors, DEFAULT_CONFIG_PATH};

/// Loads with `load` the file `explicit` if given, else `default` if it
/// exists, else returns `T::default()` (the built-in defaults).
pub fn load_or_builtin<T: Default>(
    explicit: Option<&Path>,
    default: &Path,
    load: impl FnOnce(&Path) -> Result<T, ConfigErrors>,
) -> Result<T, ConfigErrors> {
    match explicit {
        Some(path) => load(path),
        None if default.exists() => load(default),
        None => Ok(T::default()),
    }
}

/// The daemon's configuration: `explicit`, else [`DEFAULT_CONFIG_PATH`] if
/// it exists, else the built-in defaults (then `Config::files` is empty).
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_or_builtin(explicit, Path::new(DEFAULT_CONFIG_PATH), Config::load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_default_then_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("default.toml");
        let explicit = dir.path().join("explicit.toml");
        std::fs::write(&explicit, "[detector]\nwindow_size = 7\n").unwrap();
        let builtin = load_or_builtin(None, &default, Config::load).unwrap();
        assert!(
            builtin.files.is_empty(),
            "no default file: built-in defaults"
        );
        std::fs::write(&default, "[detector]\nwindow_size = 9\n").unwrap();
        let from_default = load_or_builtin(None, &default, Config::load).unwrap();
        assert_eq!(from_default.detector.window_size, 9);
        let from_explicit = load_or_builtin(Some(&explicit), &default, Config::load).unwrap();
        assert_eq!(from_explicit.detector.window_size, 7);
        let missing = dir.path().join("missing.toml");
        let error = load_or_builtin(Some(&missing), &default, Config::load).unwrap_err();
        assert!(error.to_string().contains("not found"), "{error}");
    }
}
