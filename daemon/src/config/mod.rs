//! The configuration of the `anomalyd` daemon.
//!
//! A main TOML file (by default [`DEFAULT_CONFIG_PATH`]) is read, then every
//! `*.toml` file of the `conf.d/` directory beside it, in byte-wise name
//! order, each merged over the previous ones key by key. Every problem of
//! every file is collected (with file, dotted key, line and column) and
//! returned together as [`ConfigErrors`]. [`Config::to_toml`] prints the
//! effective configuration; [`Config::series_settings`] resolves the
//! `[detector]` settings and `[[rule]]` overrides for one series.
//!
//! Adding a key: add the field (and its default) to the section's config
//! struct, one line to the section's `key_table!` below, and one line to
//! [`Config::to_toml`] (for `[detector]` keys: to the `From<&DetectorConfig>`
//! conversion instead).

pub mod toml_walk;

pub use toml_walk::{ConfigErrors, ConfigProblem};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::detector::{DetectorSettings, Direction};
use toml_walk::{Document, entries, float_literal, format_duration, join_key, quote};

/// Where the daemon looks for its configuration file by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/anomalyd/anomalyd.toml";

/// The accepted range of durations that must be strictly positive.
const POSITIVE: (Bound<Duration>, Bound<Duration>) =
    (Bound::Excluded(Duration::ZERO), Bound::Unbounded);

/// The spellings of [`Direction`] in the file.
const DIRECTIONS: &[(&str, Direction)] = &[
    ("upper", Direction::Upper),
    ("lower", Direction::Lower),
    ("both", Direction::Both),
];

/// The spellings of [`LogLevel`] in the file (the generator's too).
pub const LOG_LEVELS: &[(&str, LogLevel)] = &[
    ("error", LogLevel::Error),
    ("warn", LogLevel::Warn),
    ("info", LogLevel::Info),
    ("debug", LogLevel::Debug),
    ("trace", LogLevel::Trace),
];

/// The spellings of [`FsyncPolicy`] in the file.
const FSYNC_POLICIES: &[(&str, FsyncPolicy)] = &[
    ("never", FsyncPolicy::Never),
    ("interval", FsyncPolicy::Interval),
    ("always", FsyncPolicy::Always),
];

/// The tables allowed at the top level of a file.
const ROOT_KEYS: &[&str] = &["server", "detector", "rule", "log"];

/// The complete, validated configuration of the daemon. `Default` is the
/// built-in defaults (with no file read).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// `[server]`: the HTTP listener and its limits.
    pub server: ServerConfig,
    /// `[detector]`: the default detector settings.
    pub detector: DetectorConfig,
    /// `[[rule]]`: per-series overrides, in precedence order (first match
    /// wins): the last file's rules first, the main file's rules last.
    pub rules: Vec<Rule>,
    /// `[log]`: the anomaly log.
    pub log: LogConfig,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
}

/// `[server]`: the HTTP listener and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest number of simultaneous connections.
    pub max_connections: usize,
    /// Time allowed for a client to send the request headers.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Largest number of series tracked at once.
    pub max_series: usize,
    /// Time in-flight requests get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            max_body_bytes: 1 << 20,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_series: 100_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Detector keys; min_samples None = follow window_size.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Number of most recent points in the sliding window.
    pub window_size: usize,
    /// `k` in `mean ± k·σ`.
    pub threshold_multiplier: f64,
    /// Which side(s) of the mean are flagged.
    pub direction: Direction,
    /// Points needed before a verdict; `None` follows `window_size`.
    pub min_samples: Option<usize>,
    /// Absolute floor for σ.
    pub min_std_dev: f64,
    /// Floor for σ relative to `|mean|`.
    pub min_relative_std_dev: f64,
    /// Keep flagged points out of the window.
    pub exclude_anomalies: bool,
    /// After this many consecutive excluded points, accept the run.
    pub max_excluded_run: usize,
    /// A series that receives no point for this long is forgotten.
    pub series_ttl: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window_size: 30,
            threshold_multiplier: 3.0,
            direction: Direction::Upper,
            min_samples: None,
            min_std_dev: 0.0,
            min_relative_std_dev: 1e-9,
            exclude_anomalies: false,
            max_excluded_run: 10,
            series_ttl: Duration::from_secs(3_600),
        }
    }
}

impl DetectorConfig {
    /// These settings with every key named in `overrides` replaced.
    pub fn with_overrides(&self, overrides: &DetectorOverrides) -> DetectorConfig {
        let mut settings = self.clone();
        overrides.apply_to(&mut settings);
        settings
    }

    /// `min_samples`, or `window_size` when it is unset.
    pub fn effective_min_samples(&self) -> usize {
        self.min_samples.unwrap_or(self.window_size)
    }

    /// The resolved settings for a series using exactly these keys.
    pub fn series_settings(&self) -> SeriesSettings {
        SeriesSettings {
            detector: DetectorSettings {
                window_size: self.window_size,
                threshold_multiplier: self.threshold_multiplier,
                direction: self.direction,
                min_samples: self.effective_min_samples(),
                min_std_dev: self.min_std_dev,
                min_relative_std_dev: self.min_relative_std_dev,
                exclude_anomalies: self.exclude_anomalies,
                max_excluded_run: self.max_excluded_run,
            },
            series_ttl: self.series_ttl,
        }
    }
}

/// A section's keys, all optional: the values one file (or one rule) sets.
///
/// Implemented by `key_table!`.
trait KeyTable: Default + Clone {
    /// The resolved section the keys apply to.
    type Target;
    /// The section's key names, in documentation order.
    const KEYS: &'static [&'static str];
    /// Read the key `name` (dotted name `dotted`) if it belongs here:
    /// `None` for an unknown key, else the key's static name and whether its
    /// value was valid (an invalid value is reported to `doc`, not stored).
    fn parse_key(
        &mut self,
        doc: &mut Document<'_>,
        name: &str,
        dotted: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<(&'static str, bool)>;
    /// Every key set in `later` replaces ours.
    fn overlay(&mut self, later: &Self);
    /// Every key set here replaces the one in `target`.
    fn apply_to(&self, target: &mut Self::Target);
    /// Append `key = value` lines for the keys set here, and the line
    /// `unset(key)` (if any) for the others.
    fn write_toml(&self, out: &mut String, unset: fn(&str) -> Option<&'static str>);
}

/// Define a struct of optional keys and its [`KeyTable`] implementation.
/// Each key is `name: Type = parser`, where `parser` turns a TOML value into
/// `Option<Type>` using a [`Document`] getter (which reports problems).
macro_rules! key_table {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident => $target:ty {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty = $parse:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq)]
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: Option<$ty>, )*
        }

        impl KeyTable for $name {
            type Target = $target;
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn parse_key(
                &mut self,
                doc: &mut Document<'_>,
                name: &str,
                dotted: &str,
                value: &Spanned<DeValue<'_>>,
            ) -> Option<(&'static str, bool)> {
                match name {
                    $(
                        stringify!($field) => {
                            let parse: fn(
                                &mut Document<'_>,
                                &str,
                                &Spanned<DeValue<'_>>,
                            ) -> Option<$ty> = $parse;
                            let parsed = parse(doc, dotted, value);
                            let valid = parsed.is_some();
                            if valid {
                                self.$field = parsed;
                            }
                            Some((stringify!($field), valid))
                        }
                    )*
                    _ => None,
                }
            }

            fn overlay(&mut self, later: &Self) {
                $(
                    if later.$field.is_some() {
                        self.$field.clone_from(&later.$field);
                    }
                )*
            }

            fn apply_to(&self, target: &mut $target) {
                $(
                    if let Some(value) = &self.$field {
                        target.$field = value.clone().into();
                    }
                )*
            }

            fn write_toml(&self, out: &mut String, unset: fn(&str) -> Option<&'static str>) {
                $(
                    if let Some(value) = &self.$field {
                        let _ = writeln!(out, "{} = {}", stringify!($field), value.toml());
                    } else if let Some(line) = unset(stringify!($field)) {
                        let _ = writeln!(out, "{line}");
                    }
                )*
            }
        }
    };
}

key_table! {
    /// Same keys, all optional (a rule's overrides).
    pub struct DetectorOverrides => DetectorConfig {
        /// See [`DetectorConfig::window_size`].
        window_size: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        /// See [`DetectorConfig::threshold_multiplier`].
        threshold_multiplier: f64 =
            |d, k, v| d.float(k, v, (Bound::Excluded(0.0), Bound::Unbounded)),
        /// See [`DetectorConfig::direction`].
        direction: Direction = |d, k, v| d.choice(k, v, DIRECTIONS),
        /// See [`DetectorConfig::min_samples`] (here `None` means "not
        /// overridden").
        min_samples: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        /// See [`DetectorConfig::min_std_dev`].
        min_std_dev: f64 = |d, k, v| d.float(k, v, 0.0..),
        /// See [`DetectorConfig::min_relative_std_dev`].
        min_relative_std_dev: f64 = |d, k, v| d.float(k, v, 0.0..1.0),
        /// See [`DetectorConfig::exclude_anomalies`].
        exclude_anomalies: bool = |d, k, v| d.boolean(k, v),
        /// See [`DetectorConfig::max_excluded_run`].
        max_excluded_run: usize = |d, k, v| d.integer(k, v, 0..=1_000_000),
        /// See [`DetectorConfig::series_ttl`].
        series_ttl: Duration = |d, k, v| d.duration(k, v, POSITIVE),
    }
}

impl From<&DetectorConfig> for DetectorOverrides {
    /// Every key set, to the value in `config` (`min_samples` stays unset
    /// when it follows `window_size`).
    fn from(config: &DetectorConfig) -> Self {
        Self {
            window_size: Some(config.window_size),
            threshold_multiplier: Some(config.threshold_multiplier),
            direction: Some(config.direction),
            min_samples: config.min_samples,
            min_std_dev: Some(config.min_std_dev),
            min_relative_std_dev: Some(config.min_relative_std_dev),
            exclude_anomalies: Some(config.exclude_anomalies),
            max_excluded_run: Some(config.max_excluded_run),
            series_ttl: Some(config.series_ttl),
        }
    }
}

key_table! {
    /// The `[server]` keys one file sets.
    struct ServerKeys => ServerConfig {
        listen: SocketAddr = |d, k, v| d.parse_str(
            k,
            v,
            "a socket address such as \"127.0.0.1:8001\" or \"[::1]:8001\"",
        ),
        max_body_bytes: usize = |d, k, v| d.integer(k, v, 1..=1 << 30),
        max_connections: usize = |d, k, v| d.integer(k, v, 1..),
        header_read_timeout: Duration = |d, k, v| d.duration(k, v, POSITIVE),
        idle_timeout: Duration = |d, k, v| d.duration(k, v, POSITIVE),
        max_series: usize = |d, k, v| d.integer(k, v, 1..),
        shutdown_grace: Duration = |d, k, v| d.duration(k, v, ..),
    }
}

key_table! {
    /// The `[log]` keys one file sets.
    struct LogKeys => LogConfig {
        anomaly_log_file: PathBuf = |d, k, v| d.path_buf(k, v),
        fsync: FsyncPolicy = |d, k, v| d.choice(k, v, FSYNC_POLICIES),
        backlog: usize = |d, k, v| d.integer(k, v, 1..),
        recent_anomalies: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        keep: usize = |d, k, v| d.integer(k, v, 1..=1000),
        level: LogLevel = |d, k, v| d.choice(k, v, LOG_LEVELS),
        journal: bool = |d, k, v| d.boolean(k, v),
        journal_anomaly_rate: u32 = |d, k, v| d.integer(k, v, 0..=1_000_000),
    }
}

/// A `[[rule]]`: detector overrides for the series matching a glob.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The glob text, e.g. `cpu.*` (`*` also matches `/` and `.`).
    pub series: String,
    matcher: GlobMatcher,
    /// The `[detector]` keys this rule overrides.
    pub overrides: DetectorOverrides,
    /// The file the rule comes from.
    pub file: PathBuf,
}

impl Rule {
    /// A rule for the series matching the glob `series`.
    pub fn new(
        series: &str,
        overrides: DetectorOverrides,
        file: impl Into<PathBuf>,
    ) -> Result<Rule, globset::Error> {
        let glob = GlobBuilder::new(series).literal_separator(false).build()?;
        Ok(Rule {
            series: series.to_owned(),
            matcher: glob.compile_matcher(),
            overrides,
            file: file.into(),
        })
    }

    /// Whether this rule applies to the series `series`.
    pub fn matches(&self, series: &str) -> bool {
        self.matcher.is_match(series)
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.series == other.series && self.overrides == other.overrides && self.file == other.file
    }
}

/// When the anomaly log is flushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never call fsync; leave it to the kernel.
    Never,
    /// fsync periodically.
    Interval,
    /// fsync after every write.
    Always,
}

impl FsyncPolicy {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        name_of(FSYNC_POLICIES, self)
    }
}

/// The level of the daemon's own diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, reloads, shutdown and problems (the default).
    Info,
    /// Also routine events such as idle-series sweeps.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The spelling used in the configuration file (and by `RUST_LOG`).
    pub fn as_str(self) -> &'static str {
        name_of(LOG_LEVELS, self)
    }
}

impl TomlValue for LogLevel {
    fn toml(&self) -> String {
        quote(self.as_str())
    }
}

impl TomlValue for u32 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

/// `[log]`: the anomaly log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// File the anomalies are appended to.
    pub anomaly_log_file: PathBuf,
    /// When the log is flushed to disk.
    pub fsync: FsyncPolicy,
    /// Lines kept in memory while the log cannot be written.
    pub backlog: usize,
    /// Anomalies kept in memory for `GET /anomalies`.
    pub recent_anomalies: usize,
    /// Rotated files kept by SIGHUP rotation (`<file>.1` … `<file>.<keep>`).
    pub keep: usize,
    /// Level of the daemon's own diagnostics (unless `RUST_LOG` is set).
    pub level: LogLevel,
    /// Send diagnostics to journald even when not started by systemd.
    pub journal: bool,
    /// Anomalies per second also sent to the journal as events; the rest
    /// are counted and summarised. 0 sends none.
    pub journal_anomaly_rate: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            anomaly_log_file: PathBuf::from("anomalies.log"),
            fsync: FsyncPolicy::Interval,
            backlog: 10_000,
            recent_anomalies: 1_000,
            keep: 7,
            level: LogLevel::Info,
            journal: false,
            journal_anomaly_rate: 10,
        }
    }
}

/// Settings resolved for one series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSettings {
    /// The detector settings.
    pub detector: DetectorSettings,
    /// A series that receives no point for this long is forgotten.
    pub series_ttl: Duration,
}

impl Config {
    /// Parse one document (no conf.d). `file` is used in problems.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        let mut loader = Loader::default();
        loader.add(file, text);
        loader.finish()
    }

    /// Load `path`, then every `*.toml` in `conf.d/` beside it
    /// (`path.parent()/conf.d`), in byte-wise name order, merged over it key
    /// by key. A missing `path` is an error; a missing `conf.d` is fine;
    /// hidden files (starting with `.`) and other names are ignored.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let mut loader = Loader::default();
        match std::fs::read_to_string(path) {
            Ok(text) => loader.add(path, &text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                loader.problems.push(file_problem(
                    path,
                    "configuration file not found; create it or pass another file with --config",
                ))
            }
            Err(error) => loader.problems.push(unreadable(path, &error)),
        }
        let dir = path.parent().unwrap_or(Path::new("")).join("conf.d");
        for file in conf_d_files(&dir, &mut loader.problems) {
            match std::fs::read_to_string(&file) {
                Ok(text) => loader.add(&file, &text),
                Err(error) => loader.problems.push(unreadable(&file, &error)),
            }
        }
        loader.finish()
    }

    /// The rule that applies to `series`: the first matching one.
    pub fn rule_for(&self, series: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.matches(series))
    }

    /// Settings for one series: the first matching rule (rules are stored in
    /// precedence order) overrides any `[detector]` key it names;
    /// `min_samples` unset resolves to the resolved `window_size`.
    pub fn series_settings(&self, series: &str) -> SeriesSettings {
        self.profile_settings(self.matching_rule(series))
    }

    /// Index in [`Config::rules`] of the first rule matching `series`.
    pub fn matching_rule(&self, series: &str) -> Option<usize> {
        self.rules.iter().position(|rule| rule.matches(series))
    }

    /// Settings of the series matched by rule `rule` (an index into
    /// [`Config::rules`]), or of series no rule matches (`None`). Series
    /// sharing a rule share these settings, so the series table resolves
    /// them once per rule instead of once per series.
    pub fn profile_settings(&self, rule: Option<usize>) -> SeriesSettings {
        match rule.and_then(|i| self.rules.get(i)) {
            Some(rule) => self
                .detector
                .with_overrides(&rule.overrides)
                .series_settings(),
            None => self.detector.series_settings(),
        }
    }

    /// The files read, comma-separated, or "built-in defaults" when none
    /// was.
    pub fn sources(&self) -> String {
        if self.files.is_empty() {
            "built-in defaults".into()
        } else {
            self.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The effective merged configuration as TOML, every key present,
    /// defaults included, rules as `[[rule]]` in precedence order. It parses
    /// back with [`Config::from_toml_str`] to an equal configuration (apart
    /// from `files` and the rules' `file`).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# Effective anomalyd configuration.\n");
        if self.files.is_empty() {
            out.push_str("# No file read: built-in defaults.\n");
        } else {
            out.push_str("# Files read, in merge order:\n");
            for file in &self.files {
                let _ = writeln!(out, "#   {}", file.display());
            }
        }

        fn key(out: &mut String, name: &str, value: &dyn TomlValue) {
            let _ = writeln!(out, "{name} = {}", value.toml());
        }
        let server = &self.server;
        out.push_str("\n[server]\n");
        key(&mut out, "listen", &server.listen);
        key(&mut out, "max_body_bytes", &server.max_body_bytes);
        key(&mut out, "max_connections", &server.max_connections);
        key(&mut out, "header_read_timeout", &server.header_read_timeout);
        key(&mut out, "idle_timeout", &server.idle_timeout);
        key(&mut out, "max_series", &server.max_series);
        key(&mut out, "shutdown_grace", &server.shutdown_grace);

        out.push_str("\n[detector]\n");
        DetectorOverrides::from(&self.detector).write_toml(&mut out, |key| {
            (key == "min_samples").then_some("# min_samples = <window_size>")
        });

        if !self.rules.is_empty() {
            out.push_str("\n# Rules in precedence order: the first matching rule applies.\n");
        }
        for rule in &self.rules {
            let _ = writeln!(out, "\n[[rule]]\n# from {}", rule.file.display());
            let _ = writeln!(out, "series = {}", quote(&rule.series));
            rule.overrides.write_toml(&mut out, |_| None);
        }

        let log = &self.log;
        out.push_str("\n[log]\n");
        key(&mut out, "anomaly_log_file", &log.anomaly_log_file);
        key(&mut out, "fsync", &log.fsync);
        key(&mut out, "backlog", &log.backlog);
        key(&mut out, "recent_anomalies", &log.recent_anomalies);
        key(&mut out, "keep", &log.keep);
        key(&mut out, "level", &log.level);
        key(&mut out, "journal", &log.journal);
        key(&mut out, "journal_anomaly_rate", &log.journal_anomaly_rate);
        out
    }
}

/// A value written by [`Config::to_toml`].
trait TomlValue {
    /// The value as a TOML literal.
    fn toml(&self) -> String;
}

impl TomlValue for usize {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for f64 {
    fn toml(&self) -> String {
        float_literal(*self)
    }
}

impl TomlValue for bool {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for Duration {
    fn toml(&self) -> String {
        quote(&format_duration(*self))
    }
}

impl TomlValue for SocketAddr {
    fn toml(&self) -> String {
        quote(&self.to_string())
    }
}

impl TomlValue for PathBuf {
    fn toml(&self) -> String {
        quote(&self.to_string_lossy())
    }
}

impl TomlValue for Direction {
    fn toml(&self) -> String {
        quote(name_of(DIRECTIONS, *self))
    }
}

impl TomlValue for FsyncPolicy {
    fn toml(&self) -> String {
        quote(self.as_str())
    }
}

/// The spelling of `value` in `names`.
fn name_of<T: PartialEq>(names: &[(&'static str, T)], value: T) -> &'static str {
    names
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(name, _)| name)
}

/// Where a key's value was set.
#[derive(Clone, Debug)]
struct Origin {
    file: PathBuf,
    key: String,
    position: (usize, usize),
}

impl Origin {
    /// A problem about the value set here.
    fn problem(&self, message: String) -> ConfigProblem {
        ConfigProblem {
            file: self.file.clone(),
            key: Some(self.key.clone()),
            position: Some(self.position),
            message,
        }
    }
}

/// The keys of one section set so far, with where each was set (`None`
/// when the latest value given was invalid, so that cross-field checks
/// involving it are skipped).
#[derive(Clone, Debug, Default)]
struct Section<K> {
    keys: K,
    origins: BTreeMap<&'static str, Option<Origin>>,
}

impl<K: KeyTable> Section<K> {
    /// Read every entry of `table` (named `[prefix]`), reporting unknown keys.
    fn read(&mut self, doc: &mut Document<'_>, prefix: &str, table: &DeTable<'_>) {
        for (name, value) in entries(table) {
            let dotted = join_key(prefix, name.get_ref());
            if !self.read_entry(doc, name.get_ref(), &dotted, value) {
                doc.unknown_key(name, &dotted, &format!("[{prefix}]"), K::KEYS);
            }
        }
    }

    /// Read one entry; false if the key is unknown.
    fn read_entry(
        &mut self,
        doc: &mut Document<'_>,
        name: &str,
        dotted: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> bool {
        let Some((name, valid)) = self.keys.parse_key(doc, name, dotted, value) else {
            return false;
        };
        let origin = valid.then(|| Origin {
            file: doc.path().to_owned(),
            key: dotted.to_owned(),
            position: doc.line_col(value.span().start),
        });
        self.origins.insert(name, origin);
        true
    }

    /// Merge a later file's section over this one.
    fn overlay(&mut self, later: &Self) {
        self.keys.overlay(&later.keys);
        self.origins
            .extend(later.origins.iter().map(|(k, v)| (*k, v.clone())));
    }

    /// Where `key` was set: `Ok(None)` if not set, `Err(())` if invalid.
    fn origin(&self, key: &str) -> Result<Option<&Origin>, ()> {
        match self.origins.get(key) {
            None => Ok(None),
            Some(Some(origin)) => Ok(Some(origin)),
            Some(None) => Err(()),
        }
    }
}

/// A valid `[[rule]]` of one file, with where its keys were set.
#[derive(Debug)]
struct ParsedRule {
    rule: Rule,
    section: Section<DetectorOverrides>,
}

/// What one file sets.
#[derive(Debug, Default)]
struct FileKeys {
    server: Section<ServerKeys>,
    detector: Section<DetectorOverrides>,
    log: Section<LogKeys>,
    rules: Vec<ParsedRule>,
}

/// Read the top level of one document.
fn read_document(doc: &mut Document<'_>, root: &DeTable<'_>) -> FileKeys {
    let mut keys = FileKeys::default();
    for (name, value) in entries(root) {
        let name_str: &str = name.get_ref();
        match name_str {
            "server" => {
                if let Some(table) = doc.table(name_str, value) {
                    keys.server.read(doc, name_str, table);
                }
            }
            "detector" => {
                if let Some(table) = doc.table(name_str, value) {
                    keys.detector.read(doc, name_str, table);
                }
            }
            "log" => {
                if let Some(table) = doc.table(name_str, value) {
                    keys.log.read(doc, name_str, table);
                }
            }
            "rule" => {
                for (index, span, table) in doc.array_of_tables(name_str, value) {
                    if let Some(rule) = read_rule(doc, index, span, table) {
                        keys.rules.push(rule);
                    }
                }
            }
            _ => doc.unknown_key(name, name_str, "the top level", ROOT_KEYS),
        }
    }
    keys
}

/// Read the `index`-th (1-based) `[[rule]]` of a file, at `span`.
fn read_rule(
    doc: &mut Document<'_>,
    index: usize,
    span: Range<usize>,
    table: &DeTable<'_>,
) -> Option<ParsedRule> {
    let prefix = format!("rule[{index}]");
    let mut section = Section::<DetectorOverrides>::default();
    let mut series = None;
    for (name, value) in entries(table) {
        let dotted = join_key(&prefix, name.get_ref());
        if name.get_ref() == "series" {
            series = doc
                .string(&dotted, value)
                .map(|glob| (glob.to_owned(), value.span()));
        } else if !section.read_entry(doc, name.get_ref(), &dotted, value) {
            let known: Vec<&str> = std::iter::once("series")
                .chain(DetectorOverrides::KEYS.iter().copied())
                .collect();
            doc.unknown_key(name, &dotted, "[[rule]]", &known);
        }
    }
    let series_key = format!("{prefix}.series");
    let Some((glob, glob_span)) = series else {
        if !table.contains_key("series") {
            doc.report(
                Some(&series_key),
                Some(span),
                "missing required key \"series\": the glob of the series this rule applies \
                 to, e.g. series = \"cpu.*\"",
            );
        }
        return None;
    };
    match Rule::new(&glob, section.keys.clone(), doc.path()) {
        Ok(rule) => Some(ParsedRule { rule, section }),
        Err(error) => {
            let message = format!(
                "invalid glob {}: {}; use * ? [abc] {{a,b}} patterns, e.g. \"cpu.*\"",
                quote(&glob),
                error.kind()
            );
            doc.report(Some(&series_key), Some(glob_span), message);
            None
        }
    }
}

/// Accumulates files, then merges and validates them.
#[derive(Default)]
struct Loader {
    files: Vec<PathBuf>,
    layers: Vec<FileKeys>,
    problems: Vec<ConfigProblem>,
}

impl Loader {
    /// Parse one file's text and keep what it sets.
    fn add(&mut self, path: &Path, text: &str) {
        let mut doc = Document::new(path, text);
        if let Some(root) = doc.parse() {
            let keys = read_document(&mut doc, &root);
            self.layers.push(keys);
        }
        self.files.push(path.to_owned());
        self.problems.extend(doc.into_problems());
    }

    /// Merge the files in order, validate across keys, build the config.
    fn finish(mut self) -> Result<Config, ConfigErrors> {
        let mut server = Section::<ServerKeys>::default();
        let mut detector = Section::<DetectorOverrides>::default();
        let mut log = Section::<LogKeys>::default();
        for layer in &self.layers {
            server.overlay(&layer.server);
            detector.overlay(&layer.detector);
            log.overlay(&layer.log);
        }
        let rules: Vec<ParsedRule> = self
            .layers
            .into_iter()
            .rev()
            .flat_map(|layer| layer.rules)
            .collect();

        let mut config = Config {
            files: self.files,
            ..Config::default()
        };
        server.keys.apply_to(&mut config.server);
        detector.keys.apply_to(&mut config.detector);
        log.keys.apply_to(&mut config.log);

        check_detector(&config.detector, &detector, &mut self.problems);
        for rule in &rules {
            check_rule(&config.detector, &detector, rule, &mut self.problems);
        }
        config.rules = rules.into_iter().map(|parsed| parsed.rule).collect();

        if self.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(self.problems))
        }
    }
}

/// `[detector]`: `min_samples` must not exceed `window_size`.
fn check_detector(
    detector: &DetectorConfig,
    section: &Section<DetectorOverrides>,
    problems: &mut Vec<ConfigProblem>,
) {
    let (Ok(Some(origin)), Ok(window_origin)) =
        (section.origin("min_samples"), section.origin("window_size"))
    else {
        return;
    };
    let min_samples = detector.effective_min_samples();
    if min_samples > detector.window_size {
        problems.push(origin.problem(format!(
            "must not exceed window_size ({}{}), got {min_samples}; lower min_samples, raise \
             window_size, or remove min_samples to follow window_size",
            detector.window_size,
            where_set(window_origin)
        )));
    }
}

/// A rule's `min_samples` (its own or inherited) must not exceed its
/// effective `window_size`.
fn check_rule(
    detector: &DetectorConfig,
    detector_section: &Section<DetectorOverrides>,
    parsed: &ParsedRule,
    problems: &mut Vec<ConfigProblem>,
) {
    let effective = detector.with_overrides(&parsed.rule.overrides);
    let min_samples = effective.effective_min_samples();
    if min_samples <= effective.window_size {
        return;
    }
    let section = &parsed.section;
    let (Ok(own_min), Ok(own_window)) =
        (section.origin("min_samples"), section.origin("window_size"))
    else {
        return;
    };
    if let Some(origin) = own_min {
        let window_origin = match own_window {
            Some(origin) => Some(origin),
            None => match detector_section.origin("window_size") {
                Ok(origin) => origin,
                Err(()) => return,
            },
        };
        problems.push(origin.problem(format!(
            "must not exceed this rule's window_size ({}{}), got {min_samples}; lower \
             min_samples or raise window_size",
            effective.window_size,
            where_set(window_origin)
        )));
    } else if let (Some(origin), Ok(Some(min_origin))) =
        (own_window, detector_section.origin("min_samples"))
    {
        problems.push(origin.problem(format!(
            "must be at least min_samples ({min_samples}{}), got {}; raise window_size or set \
             min_samples in this rule",
            where_set(Some(min_origin)),
            effective.window_size
        )));
    }
}

/// ` from FILE:LINE:COL` for a key set in a file, ` by default` otherwise.
fn where_set(origin: Option<&Origin>) -> String {
    match origin {
        Some(origin) => format!(
            " from {}:{}:{}",
            origin.file.display(),
            origin.position.0,
            origin.position.1
        ),
        None => " by default".to_owned(),
    }
}

/// A problem about a whole file.
fn file_problem(path: &Path, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        file: path.to_owned(),
        key: None,
        position: None,
        message: message.into(),
    }
}

/// A problem for a file that exists but cannot be read.
fn unreadable(path: &Path, error: &io::Error) -> ConfigProblem {
    let why = if error.kind() == io::ErrorKind::InvalidData {
        "it is not valid UTF-8".to_owned()
    } else {
        error.to_string()
    };
    file_problem(path, format!("cannot read configuration file: {why}"))
}

/// The `*.toml` files of `dir` (not hidden), in byte-wise name order. A
/// missing directory yields none; other failures are reported.
fn conf_d_files(dir: &Path, problems: &mut Vec<ConfigProblem>) -> Vec<PathBuf> {
    let read_dir = match std::fs::read_dir(dir) {
        Ok(read_dir) => read_dir,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            problems.push(file_problem(
                dir,
                format!("cannot read configuration directory: {error}"),
            ));
            return Vec::new();
        }
    };
    let mut names = Vec::new();
    for entry in read_dir {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                problems.push(file_problem(
                    dir,
                    format!("cannot read configuration directory: {error}"),
                ));
                continue;
            }
        };
        let name = entry.file_name();
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(b".toml") {
            continue;
        }
        // Follows symbolic links; directories named *.toml are skipped.
        if entry.path().is_dir() {
            continue;
        }
        names.push(name);
    }
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    names.into_iter().map(|name| dir.join(name)).collect()
}

#[cfg(test)]
mod tests;
