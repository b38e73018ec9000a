//! `[state]`: where the detector state of every series is kept across
//! restarts, and how often it is written.
//!
//! The directory defaults to the first path of `$STATE_DIRECTORY` (what
//! systemd sets for the unit's `StateDirectory=`) and, without it, to no
//! snapshots at all, so that a daemon started by hand or by a test writes
//! nothing it was not asked to. `directory = ""` turns snapshots off even
//! under systemd.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use super::toml_walk::quote;
use super::{Document, KeyTable, Spanned, TomlValue};
use toml::de::DeValue;

/// The environment variable systemd sets to the unit's state directories
/// (colon-separated).
pub const STATE_DIRECTORY_ENV: &str = "STATE_DIRECTORY";

/// `snapshot_interval`: at least a second, at most a day.
const INTERVAL: (Bound<Duration>, Bound<Duration>) = (
    Bound::Included(Duration::from_secs(1)),
    Bound::Included(Duration::from_secs(86_400)),
);

/// `directory` as a file sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateDirectory {
    /// `directory = ""`: no snapshots, even under systemd.
    Off,
    /// Snapshots go to this directory (created when missing).
    Path(PathBuf),
}

impl TomlValue for StateDirectory {
    fn toml(&self) -> String {
        match self {
            StateDirectory::Off => quote(""),
            StateDirectory::Path(path) => quote(&path.to_string_lossy()),
        }
    }
}

/// `[state]`: detector state kept across restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct StateConfig {
    /// Where snapshots go; `None`: `$STATE_DIRECTORY`, else off.
    pub directory: Option<StateDirectory>,
    /// Time between two snapshots (one is also written at shutdown).
    pub snapshot_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            directory: None,
            snapshot_interval: Duration::from_secs(300),
        }
    }
}

impl StateConfig {
    /// The directory snapshots are read from and written to, given the
    /// value of `$STATE_DIRECTORY` (`env`); `None`: snapshots are off.
    pub fn directory_with(&self, env: Option<&OsStr>) -> Option<PathBuf> {
        match &self.directory {
            Some(StateDirectory::Off) => None,
            Some(StateDirectory::Path(path)) => Some(path.clone()),
            None => {
                let first = env?.as_bytes().split(|&b| b == b':').next()?;
                (!first.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(first)))
            }
        }
    }

    /// The directory snapshots are read from and written to, after
    /// `$STATE_DIRECTORY`; `None`: snapshots are off.
    pub fn effective_directory(&self) -> Option<PathBuf> {
        self.directory_with(std::env::var_os(STATE_DIRECTORY_ENV).as_deref())
    }

    /// Appends the `[state]` table of [`super::Config::to_toml`].
    pub(super) fn write_toml(&self, out: &mut String) {
        out.push_str("\n[state]\n");
        match &self.directory {
            Some(directory) => {
                let _ = writeln!(out, "directory = {}", directory.toml());
            }
            None => out.push_str(
                "# directory = (unset: $STATE_DIRECTORY under systemd, else no snapshots)\n",
            ),
        }
        let _ = writeln!(out, "snapshot_interval = {}", self.snapshot_interval.toml());
    }
}

key_table! {
    /// The `[state]` keys one file sets.
    pub(super) struct StateKeys => StateConfig {
        directory: StateDirectory = |d, k, v| d.string(k, v).map(|text| {
            if text.is_empty() {
                StateDirectory::Off
            } else {
                StateDirectory::Path(PathBuf::from(text))
            }
        }),
        snapshot_interval: Duration = |d, k, v| d.duration(k, v, INTERVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn state(text: &str) -> StateConfig {
        Config::from_toml_str(text, Path::new("t.toml"))
            .unwrap()
            .state
    }

    #[test]
    fn the_directory_follows_state_directory_unless_set() {
        let env = Some(OsStr::new("/var/lib/anomalyd:/var/lib/other"));
        let unset = state("");
        assert_eq!(unset.snapshot_interval, Duration::from_secs(300));
        assert_eq!(unset.directory_with(None), None, "off without systemd");
        assert_eq!(
            unset.directory_with(env),
            Some(PathBuf::from("/var/lib/anomalyd"))
        );
        assert_eq!(unset.directory_with(Some(OsStr::new(""))), None);
        let set = state("[state]\ndirectory = \"/srv/state\"\nsnapshot_interval = \"30s\"\n");
        assert_eq!(set.directory_with(env), Some(PathBuf::from("/srv/state")));
        assert_eq!(set.snapshot_interval, Duration::from_secs(30));
        let off = state("[state]\ndirectory = \"\"\n");
        assert_eq!(off.directory_with(env), None, "\"\" turns snapshots off");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, expected) in [
            (
                "[state]\nsnapshot_interval = \"0s\"\n",
                "state.snapshot_interval",
            ),
            (
                "[state]\nsnapshot_interval = 300\n",
                "state.snapshot_interval",
            ),
            ("[state]\ndirectory = 1\n", "state.directory"),
            ("[state]\nsnapshots = true\n", "state.snapshots"),
        ] {
            let err = Config::from_toml_str(text, Path::new("t.toml")).unwrap_err();
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn to_toml_round_trips_every_form() {
        for text in [
            "",
            "[state]\ndirectory = \"\"\n",
            "[state]\ndirectory = \"/srv/s\"\nsnapshot_interval = \"1h\"\n",
        ] {
            let config = Config::from_toml_str(text, Path::new("t.toml")).unwrap();
            let printed = config.to_toml();
            let again = Config::from_toml_str(&printed, Path::new("t.toml")).unwrap();
            assert_eq!(again.state, config.state, "{printed}");
        }
    }
}
