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

pub mod alert;
pub mod listen;
mod load;
mod merge;
mod rule;
pub mod toml_walk;

pub use alert::{AlertConfig, AlertmanagerConfig, HttpUrl, WebhookConfig};
pub use listen::ListenAddr;
pub use load::{load, load_or_builtin};
pub use merge::unprotected;
pub use rule::{Rule, RuleMatch, SeriesGlob};

pub use toml_walk::{ConfigErrors, ConfigProblem};

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use crate::access::{Limit, TokenSet};
use crate::detect::episode::EpisodeSettings;
use crate::detect::registry::{self, DetectorKind};
use crate::detect::{DetectorSettings, Direction};
use crate::ingest::MAX_ABS_VALUE;
use crate::tls::ServerTls;
use toml_walk::{Document, float_literal, format_duration, quote};

/// Where the daemon looks for its configuration file by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/anomalyd/anomalyd.toml";

/// One day: the longest connection timeout.
const DAY: Duration = Duration::from_secs(86_400);
/// Connection timeouts: more than zero, at most a day.
const TIMEOUT: (Bound<Duration>, Bound<Duration>) =
    (Bound::Excluded(Duration::ZERO), Bound::Included(DAY));
/// `series_ttl`: more than zero, at most a year.
const TTL: (Bound<Duration>, Bound<Duration>) = (
    Bound::Excluded(Duration::ZERO),
    Bound::Included(Duration::from_secs(365 * 86_400)),
);
/// `season` and `bucket`: more than zero, at most a year.
const SEASON: (Bound<Duration>, Bound<Duration>) = (
    Bound::Excluded(Duration::ZERO),
    Bound::Included(Duration::from_secs(366 * 86_400)),
);
/// `shutdown_grace`: at most an hour (systemd's stop timeout is shorter).
const GRACE: std::ops::RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);
/// Most `[[rule]]` tables (the series table stores a series' rule in 16
/// bits).
pub const MAX_RULES: usize = 10_000;
/// Largest `threshold_multiplier`.
const MAX_MULTIPLIER: f64 = 1000.0;

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

/// The spellings of [`RotateMode`] in the file.
const ROTATE_MODES: &[(&str, RotateMode)] = &[
    ("self", RotateMode::SelfManaged),
    ("external", RotateMode::External),
];

/// The spellings of [`FsyncPolicy`] in the file.
const FSYNC_POLICIES: &[(&str, FsyncPolicy)] = &[
    ("never", FsyncPolicy::Never),
    ("interval", FsyncPolicy::Interval),
    ("always", FsyncPolicy::Always),
];

/// The tables allowed at the top level of a file.
const ROOT_KEYS: &[&str] = &[
    "server", "detector", "rule", "log", "state", "alert", "cluster",
];

/// Every key a configuration file may set, as `section.key`, in
/// documentation order; `rule.series` stands for `[[rule]]`, which may also
/// set every `detector.*` key. The man page `anomalyd.toml(5)` and the
/// shipped `/etc/anomalyd/anomalyd.toml` must document each one (a test
/// checks it).
pub fn known_keys() -> Vec<String> {
    let sections = [
        ("server", ServerKeys::KEYS),
        ("detector", DetectorOverrides::KEYS),
        ("rule", &["series", "metric", "labels"][..]),
        ("log", LogKeys::KEYS),
        ("state", state::StateKeys::KEYS),
        ("alert.alertmanager", alert::ALERTMANAGER_KEYS),
        ("alert.webhook", alert::WEBHOOK_KEYS),
        ("cluster", cluster::ClusterKeys::KEYS),
    ];
    sections
        .iter()
        .flat_map(|(section, keys)| keys.iter().map(move |key| format!("{section}.{key}")))
        .collect()
}

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
    /// `[state]`: detector state kept across restarts.
    pub state: StateConfig,
    /// `[alert]`: where episodes are sent.
    pub alert: AlertConfig,
    /// `[cluster]`: the cluster this daemon is a member of; `None`: it
    /// runs alone.
    pub cluster: Option<ClusterConfig>,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
    /// What in the files is valid but probably not meant (a key the chosen
    /// detector does not use): `--check-config` prints these as warnings,
    /// the daemon logs them.
    pub notes: ConfigNotes,
}

/// Warnings about a configuration's files. They do not make two
/// configurations different: `==` ignores them, as it ignores where each
/// key was set.
#[derive(Clone, Debug, Default)]
pub struct ConfigNotes(pub Vec<ConfigProblem>);

impl PartialEq for ConfigNotes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `[server]`: the HTTP listener and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Address and port, or unix socket, to listen on.
    pub listen: ListenAddr,
    /// Permission bits of a unix socket `listen` creates.
    pub socket_mode: u32,
    /// A second address serving only `/healthz`, `/ready` and `/metrics`,
    /// outside `max_connections`; unset by default.
    pub admin_listen: Option<SocketAddr>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest number of simultaneous connections.
    pub max_connections: usize,
    /// Time allowed for a client to send the request headers.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Time a reply may stay blocked on a client that does not read.
    pub write_timeout: Duration,
    /// Largest number of series tracked at once.
    pub max_series: usize,
    /// Time in-flight requests get to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// Whether the dashboard's routes (`/series`, `/series/{name}`,
    /// `/events`) are served and histories kept.
    pub dashboard: bool,
    /// Points of history kept per series for the dashboard.
    pub history_points: usize,
    /// Most series that keep a history (the most recently updated ones).
    pub history_series: usize,
    /// Most simultaneous `GET /events` streams.
    pub max_event_streams: usize,
    /// The URL users reach anomalyd at (links in alerts); `None` means
    /// `http://` plus `listen`.
    pub external_url: Option<String>,
    /// The file of bearer tokens; `None`: no authentication.
    pub auth_token_file: Option<PathBuf>,
    /// The tokens read from `auth_token_file` (re-read on each load).
    pub auth_tokens: Option<Arc<TokenSet>>,
    /// Whether `/metrics` needs a token too.
    pub metrics_require_auth: bool,
    /// Whether listening beyond loopback without authentication is
    /// allowed (protected mode off).
    pub allow_unauthenticated: bool,
    /// Points per second a client may send; 0: no limit.
    pub rate_limit: u64,
    /// Points a client may send at once; `None` means `rate_limit`.
    pub rate_burst: Option<u64>,
    /// The PEM certificate chain served over TLS; `None`: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// The PEM CA that signs client certificates (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// The TLS settings read from those files (re-read on each load).
    pub tls: Option<ServerTls>,
}

impl ServerConfig {
    /// `https` under TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The per-client limit of `rate_limit` and `rate_burst`; `None` when
    /// off.
    pub fn client_limit(&self) -> Option<Limit> {
        (self.rate_limit > 0).then(|| Limit {
            rate: self.rate_limit as f64,
            burst: self.rate_burst.unwrap_or(self.rate_limit) as f64,
        })
    }

    /// `external_url`, or `http://` plus the listen address (`bound`,
    /// the address actually bound, when known: `listen` may say port 0),
    /// without a trailing `/`.
    pub fn effective_external_url(&self, bound: Option<SocketAddr>) -> String {
        match &self.external_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => match (bound, &self.listen) {
                (Some(bound), _) => format!("{}://{bound}", self.scheme()),
                (None, ListenAddr::Tcp(addr)) => format!("{}://{addr}", self.scheme()),
                // A unix socket has no URL of its own: set external_url.
                (None, ListenAddr::Unix(_)) => "http://localhost".to_owned(),
            },
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8001))),
            socket_mode: 0o660,
            admin_listen: None,
            max_body_bytes: 1 << 20,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_series: 100_000,
            shutdown_grace: Duration::from_secs(10),
            dashboard: true,
            history_points: 300,
            history_series: 1000,
            max_event_streams: 64,
            external_url: None,
            auth_token_file: None,
            auth_tokens: None,
            metrics_require_auth: false,
            allow_unauthenticated: false,
            rate_limit: 0,
            rate_burst: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls: None,
        }
    }
}

/// Detector keys; min_samples None = follow window_size.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// The detector (`moving_average` unless set).
    pub detector: &'static DetectorKind,
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
    /// Anomalous points in a row that open an episode (Prometheus' `for:`).
    pub min_consecutive: u16,
    /// Points in a row back inside the resolve band that close an episode.
    pub resolve_after: u16,
    /// `k` of the resolve band; `None` follows `threshold_multiplier`.
    pub resolve_multiplier: Option<f64>,
    /// `ewma`: points after which a point's weight has halved; `None`
    /// follows `window_size / 2`.
    pub half_life: Option<f64>,
    /// `seasonal`: the period compared.
    pub season: Duration,
    /// `seasonal`: past periods compared.
    pub seasons: usize,
    /// `seasonal`: the width of a bucket within the period.
    pub bucket: Duration,
    /// A series that receives no point for this long is forgotten.
    pub series_ttl: Duration,
    /// The `severity` label of its alerts.
    pub severity: String,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            // Chosen with `anomalyd evaluate` on tests/data/corpus.toml (best
            // F1 of 384 moving_average settings on the tuning seeds; see
            // "Choosing the defaults" in the README).
            detector: &registry::MOVING_AVERAGE,
            window_size: 120,
            threshold_multiplier: 6.0,
            direction: Direction::Both,
            min_samples: None,
            min_std_dev: 0.0,
            min_relative_std_dev: crate::detect::DEFAULT_MIN_RELATIVE_STD_DEV,
            exclude_anomalies: false,
            max_excluded_run: 10,
            min_consecutive: 1,
            resolve_after: 5,
            resolve_multiplier: None,
            half_life: None,
            season: Duration::from_secs(86_400),
            seasons: 3,
            bucket: Duration::from_secs(300),
            series_ttl: Duration::from_secs(3_600),
            severity: "warning".into(),
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

    /// `resolve_multiplier`, or `threshold_multiplier` when it is unset.
    pub fn effective_resolve_multiplier(&self) -> f64 {
        self.resolve_multiplier.unwrap_or(self.threshold_multiplier)
    }

    /// `half_life`, or `window_size / 2` when it is unset.
    pub fn effective_half_life(&self) -> f64 {
        self.half_life.unwrap_or(self.window_size as f64 / 2.0)
    }

    /// The resolved settings for a series using exactly these keys.
    pub fn series_settings(&self) -> SeriesSettings {
        SeriesSettings {
            detector: DetectorSettings {
                kind: self.detector,
                window_size: self.window_size,
                threshold_multiplier: self.threshold_multiplier,
                direction: self.direction,
                min_samples: self.effective_min_samples(),
                min_std_dev: self.min_std_dev,
                min_relative_std_dev: self.min_relative_std_dev,
                exclude_anomalies: self.exclude_anomalies,
                max_excluded_run: self.max_excluded_run,
                half_life: self.effective_half_life(),
                season: self.season.as_secs_f64(),
                seasons: self.seasons,
                bucket: self.bucket.as_secs_f64(),
            },
            episodes: EpisodeSettings {
                min_consecutive: self.min_consecutive,
                resolve_after: self.resolve_after,
                resolve_multiplier: self.effective_resolve_multiplier(),
                direction: self.direction,
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

mod cluster;
mod state;
pub use cluster::{ClusterConfig, MAX_INSTANCE_ID_BYTES, MAX_PARTITIONS, check_instance_id};
pub use state::{STATE_DIRECTORY_ENV, StateConfig, StateDirectory};

key_table! {
    /// Same keys, all optional (a rule's overrides).
    pub struct DetectorOverrides => DetectorConfig {
        /// See [`DetectorConfig::detector`].
        detector: &'static DetectorKind = |d, k, v| d.choice(k, v, &registry::choices()),
        /// See [`DetectorConfig::window_size`].
        window_size: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        /// See [`DetectorConfig::threshold_multiplier`].
        threshold_multiplier: f64 =
            |d, k, v| d.float(k, v, (Bound::Excluded(0.0), Bound::Included(MAX_MULTIPLIER))),
        /// See [`DetectorConfig::direction`].
        direction: Direction = |d, k, v| d.choice(k, v, DIRECTIONS),
        /// See [`DetectorConfig::min_samples`] (here `None` means "not
        /// overridden").
        min_samples: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        /// See [`DetectorConfig::min_std_dev`].
        min_std_dev: f64 = |d, k, v| d.float(k, v, 0.0..=MAX_ABS_VALUE),
        /// See [`DetectorConfig::min_relative_std_dev`].
        min_relative_std_dev: f64 = |d, k, v| d.float(k, v, 0.0..1.0),
        /// See [`DetectorConfig::exclude_anomalies`].
        exclude_anomalies: bool = |d, k, v| d.boolean(k, v),
        /// See [`DetectorConfig::max_excluded_run`].
        max_excluded_run: usize = |d, k, v| d.integer(k, v, 0..=1_000_000),
        /// See [`DetectorConfig::min_consecutive`].
        min_consecutive: u16 = |d, k, v| d.integer(k, v, 1..=10_000),
        /// See [`DetectorConfig::resolve_after`].
        resolve_after: u16 = |d, k, v| d.integer(k, v, 1..=10_000),
        /// See [`DetectorConfig::resolve_multiplier`] (here `None` means
        /// "not overridden").
        resolve_multiplier: f64 =
            |d, k, v| d.float(k, v, (Bound::Excluded(0.0), Bound::Included(MAX_MULTIPLIER))),
        /// See [`DetectorConfig::half_life`] (here `None` means "not
        /// overridden").
        half_life: f64 = |d, k, v| d.float(k, v, (Bound::Excluded(0.0), Bound::Included(1e6))),
        /// See [`DetectorConfig::season`].
        season: Duration = |d, k, v| d.duration(k, v, SEASON),
        /// See [`DetectorConfig::seasons`].
        seasons: usize = |d, k, v| d.integer(k, v, 1..=100),
        /// See [`DetectorConfig::bucket`].
        bucket: Duration = |d, k, v| d.duration(k, v, SEASON),
        /// See [`DetectorConfig::series_ttl`].
        series_ttl: Duration = |d, k, v| d.duration(k, v, TTL),
        /// See [`DetectorConfig::severity`].
        severity: String = |d, k, v| d.string(k, v).and_then(|text| {
            if text.is_empty() || text.chars().any(char::is_control) {
                d.report(Some(k), Some(v.span()), "must be a non-empty label value without control characters, e.g. \"warning\" or \"critical\"");
                None
            } else {
                Some(text.to_owned())
            }
        }),
    }
}

impl From<&DetectorConfig> for DetectorOverrides {
    /// Every key set, to the value in `config` (`min_samples` stays unset
    /// when it follows `window_size`).
    fn from(config: &DetectorConfig) -> Self {
        Self {
            detector: Some(config.detector),
            window_size: Some(config.window_size),
            threshold_multiplier: Some(config.threshold_multiplier),
            direction: Some(config.direction),
            min_samples: config.min_samples,
            min_std_dev: Some(config.min_std_dev),
            min_relative_std_dev: Some(config.min_relative_std_dev),
            exclude_anomalies: Some(config.exclude_anomalies),
            max_excluded_run: Some(config.max_excluded_run),
            min_consecutive: Some(config.min_consecutive),
            resolve_after: Some(config.resolve_after),
            resolve_multiplier: config.resolve_multiplier,
            half_life: config.half_life,
            season: Some(config.season),
            seasons: Some(config.seasons),
            bucket: Some(config.bucket),
            series_ttl: Some(config.series_ttl),
            severity: Some(config.severity.clone()),
        }
    }
}

key_table! {
    /// The `[server]` keys one file sets.
    struct ServerKeys => ServerConfig {
        listen: ListenAddr = |d, k, v| {
            const EXPECTED: &str = "a socket address such as \"127.0.0.1:8001\" or \"[::1]:8001\", or a unix socket as \"unix:/run/anomalyd/anomalyd.sock\"";
            let DeValue::String(text) = v.get_ref() else {
                d.wrong_type(k, v, EXPECTED);
                return None;
            };
            match text.parse::<ListenAddr>() {
                Ok(addr) => Some(addr),
                Err(listen::ListenAddrError::Invalid) => {
                    d.report(Some(k), Some(v.span()), format!("expected {EXPECTED}, got {}", quote(text)));
                    None
                }
                Err(e) => {
                    d.report(Some(k), Some(v.span()), e.to_string());
                    None
                }
            }
        },
        socket_mode: u32 = |d, k, v| d.string(k, v).and_then(|text| {
            match listen::parse_socket_mode(text) {
                Ok(mode) => Some(mode),
                Err(message) => {
                    d.report(Some(k), Some(v.span()), message);
                    None
                }
            }
        }),
        admin_listen: SocketAddr = |d, k, v| d.parse_str(
            k,
            v,
            "a socket address such as \"127.0.0.1:8002\" or \"[::1]:8001\"",
        ),
        max_body_bytes: usize = |d, k, v| d.integer(k, v, 1..=1 << 30),
        max_connections: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        header_read_timeout: Duration = |d, k, v| d.duration(k, v, TIMEOUT),
        idle_timeout: Duration = |d, k, v| d.duration(k, v, TIMEOUT),
        write_timeout: Duration = |d, k, v| d.duration(k, v, TIMEOUT),
        max_series: usize = |d, k, v| d.integer(k, v, 1..=100_000_000),
        shutdown_grace: Duration = |d, k, v| d.duration(k, v, GRACE),
        dashboard: bool = |d, k, v| d.boolean(k, v),
        history_points: usize = |d, k, v| d.integer(k, v, 1..=100_000),
        history_series: usize = |d, k, v| d.integer(k, v, 0..=1_000_000),
        max_event_streams: usize = |d, k, v| d.integer(k, v, 1..=10_000),
        external_url: String = |d, k, v| d.string(k, v).and_then(|text| {
            match HttpUrl::parse(text.replacen("https://", "http://", 1).as_str()) {
                Ok(_) => Some(text.to_owned()),
                Err(message) => {
                    d.report(Some(k), Some(v.span()), format!("{message} (an http:// or https:// URL, e.g. \"http://anomalyd.example:8001\")"));
                    None
                }
            }
        }),
        auth_token_file: PathBuf = |d, k, v| d.path_buf(k, v),
        metrics_require_auth: bool = |d, k, v| d.boolean(k, v),
        allow_unauthenticated: bool = |d, k, v| d.boolean(k, v),
        rate_limit: u64 = |d, k, v| d.integer(k, v, 0..=1_000_000_000),
        rate_burst: u64 = |d, k, v| d.integer(k, v, 1..=1_000_000_000),
        tls_cert_file: PathBuf = |d, k, v| d.path_buf(k, v),
        tls_key_file: PathBuf = |d, k, v| d.path_buf(k, v),
        tls_client_ca_file: PathBuf = |d, k, v| d.path_buf(k, v),
    }
}

key_table! {
    /// The `[log]` keys one file sets.
    struct LogKeys => LogConfig {
        anomaly_log_file: PathBuf = |d, k, v| d.path_buf(k, v),
        fsync: FsyncPolicy = |d, k, v| d.choice(k, v, FSYNC_POLICIES),
        rotate: RotateMode = |d, k, v| d.choice(k, v, ROTATE_MODES),
        backlog: usize = |d, k, v| d.integer(k, v, 1..=10_000_000),
        recent_anomalies: usize = |d, k, v| d.integer(k, v, 1..=1_000_000),
        recent_episodes: usize = |d, k, v| d.integer(k, v, 0..=1_000_000),
        keep: usize = |d, k, v| d.integer(k, v, 1..=1000),
        level: LogLevel = |d, k, v| d.choice(k, v, LOG_LEVELS),
        journal: bool = |d, k, v| d.boolean(k, v),
        journal_anomaly_rate: u32 = |d, k, v| d.integer(k, v, 0..=1_000_000),
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

/// Who rotates the anomaly log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateMode {
    /// anomalyd: SIGHUP renames the file to `.1` (shifting older ones,
    /// deleting beyond `keep`) and starts a fresh one.
    SelfManaged,
    /// An outside tool (logrotate): SIGHUP and SIGUSR1 only reopen the
    /// file at its path; anomalyd never renames or deletes a file.
    External,
}

impl RotateMode {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        name_of(ROTATE_MODES, self)
    }
}

impl TomlValue for RotateMode {
    fn toml(&self) -> String {
        quote(self.as_str())
    }
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

/// The `[log]` keys every daemon has: the level of its diagnostics and
/// whether they go to journald even when not started by systemd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Level of the diagnostics (unless `RUST_LOG` is set).
    pub level: LogLevel,
    /// Send diagnostics to journald even when not started by systemd.
    pub journal: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: LogLevel::Info,
            journal: false,
        }
    }
}

/// `[log]`: the anomaly log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// File the anomalies are appended to.
    pub anomaly_log_file: PathBuf,
    /// When the log is flushed to disk.
    pub fsync: FsyncPolicy,
    /// Who rotates the log: anomalyd on SIGHUP, or an outside tool.
    pub rotate: RotateMode,
    /// Lines kept in memory while the log cannot be written.
    pub backlog: usize,
    /// Anomalies kept in memory for `GET /anomalies`.
    pub recent_anomalies: usize,
    /// Closed episodes kept in memory for `GET /episodes` (open ones are
    /// always kept).
    pub recent_episodes: usize,
    /// Rotated files kept by SIGHUP rotation (`<file>.1` … `<file>.<keep>`).
    pub keep: usize,
    /// Level of the daemon's own diagnostics (unless `RUST_LOG` is set).
    pub level: LogLevel,
    /// Send diagnostics to journald even when not started by systemd.
    pub journal: bool,
    /// Episode events (an opening or a closing) per second also sent to
    /// the journal; the rest are counted and summarised. 0 sends none.
    pub journal_anomaly_rate: u32,
}

impl LogConfig {
    /// The keys that shape the daemon's own diagnostics.
    pub fn settings(&self) -> LogSettings {
        LogSettings {
            level: self.level,
            journal: self.journal,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            anomaly_log_file: PathBuf::from("anomalies.log"),
            fsync: FsyncPolicy::Interval,
            rotate: RotateMode::SelfManaged,
            backlog: 10_000,
            recent_anomalies: 1_000,
            recent_episodes: 1_000,
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
    /// When anomalies open and close an episode.
    pub episodes: EpisodeSettings,
    /// A series that receives no point for this long is forgotten.
    pub series_ttl: Duration,
}

impl Config {
    /// Parse one document (no conf.d). `file` is used in problems.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        merge::from_str(text, file)
    }

    /// Load `path`, then every `*.toml` in `conf.d/` beside it
    /// (`path.parent()/conf.d`), in byte-wise name order, merged over it key
    /// by key. A missing `path` is an error; a missing `conf.d` is fine;
    /// hidden files (starting with `.`) and other names are ignored.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        merge::load_files(path)
    }

    /// The rule that applies to `series`: the first matching one.
    pub fn rule_for(&self, series: &str) -> Option<&Rule> {
        self.matching_rule(series).map(|i| &self.rules[i])
    }

    /// Settings for one series: the first matching rule (rules are stored in
    /// precedence order) overrides any `[detector]` key it names;
    /// `min_samples` unset resolves to the resolved `window_size`.
    pub fn series_settings(&self, series: &str) -> SeriesSettings {
        self.profile_settings(self.matching_rule(series))
    }

    /// Index in [`Config::rules`] of the first rule matching `series`.
    pub fn matching_rule(&self, series: &str) -> Option<usize> {
        // The name is split into metric and labels once, for all rules.
        let mut parsed = None;
        self.rules
            .iter()
            .position(|rule| rule.matcher.matches(series, &mut parsed))
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
        key(
            &mut out,
            "socket_mode",
            &format!("{:04o}", server.socket_mode),
        );
        match &server.admin_listen {
            Some(addr) => key(&mut out, "admin_listen", addr),
            None => out.push_str("# admin_listen = (unset)\n"),
        }
        key(&mut out, "max_body_bytes", &server.max_body_bytes);
        key(&mut out, "max_connections", &server.max_connections);
        key(&mut out, "header_read_timeout", &server.header_read_timeout);
        key(&mut out, "idle_timeout", &server.idle_timeout);
        key(&mut out, "write_timeout", &server.write_timeout);
        key(&mut out, "max_series", &server.max_series);
        key(&mut out, "shutdown_grace", &server.shutdown_grace);
        key(&mut out, "dashboard", &server.dashboard);
        key(&mut out, "history_points", &server.history_points);
        key(&mut out, "history_series", &server.history_series);
        key(&mut out, "max_event_streams", &server.max_event_streams);
        match &server.external_url {
            Some(url) => key(&mut out, "external_url", url),
            None => out.push_str("# external_url = \"http://<listen>\"\n"),
        }
        match &server.auth_token_file {
            Some(path) => key(&mut out, "auth_token_file", path),
            None => out.push_str("# auth_token_file = (unset: no authentication)\n"),
        }
        key(
            &mut out,
            "metrics_require_auth",
            &server.metrics_require_auth,
        );
        key(
            &mut out,
            "allow_unauthenticated",
            &server.allow_unauthenticated,
        );
        key(&mut out, "rate_limit", &server.rate_limit);
        match &server.rate_burst {
            Some(burst) => key(&mut out, "rate_burst", burst),
            None => out.push_str("# rate_burst = <rate_limit>\n"),
        }
        for (name, path) in [
            ("tls_cert_file", &server.tls_cert_file),
            ("tls_key_file", &server.tls_key_file),
            ("tls_client_ca_file", &server.tls_client_ca_file),
        ] {
            match path {
                Some(path) => key(&mut out, name, path),
                None => {
                    let _ = writeln!(out, "# {name} = (unset)");
                }
            }
        }

        out.push_str("\n[detector]\n");
        DetectorOverrides::from(&self.detector).write_toml(&mut out, |key| match key {
            "min_samples" => Some("# min_samples = <window_size>"),
            "resolve_multiplier" => Some("# resolve_multiplier = <threshold_multiplier>"),
            "half_life" => Some("# half_life = <window_size / 2>"),
            _ => None,
        });

        if !self.rules.is_empty() {
            out.push_str("\n# Rules in precedence order: the first matching rule applies.\n");
        }
        for rule in &self.rules {
            let _ = writeln!(out, "\n[[rule]]\n# from {}", rule.file.display());
            rule.matcher.write_toml(&mut out);
            rule.overrides.write_toml(&mut out, |_| None);
        }

        let log = &self.log;
        out.push_str("\n[log]\n");
        key(&mut out, "anomaly_log_file", &log.anomaly_log_file);
        key(&mut out, "fsync", &log.fsync);
        key(&mut out, "rotate", &log.rotate);
        key(&mut out, "backlog", &log.backlog);
        key(&mut out, "recent_anomalies", &log.recent_anomalies);
        key(&mut out, "recent_episodes", &log.recent_episodes);
        key(&mut out, "keep", &log.keep);
        key(&mut out, "level", &log.level);
        key(&mut out, "journal", &log.journal);
        key(&mut out, "journal_anomaly_rate", &log.journal_anomaly_rate);
        self.state.write_toml(&mut out);
        self.alert.write_toml(&mut out);
        if let Some(cluster) = &self.cluster {
            cluster.write_toml(&mut out);
        }
        out
    }
}

/// A value written by [`Config::to_toml`].
trait TomlValue {
    /// The value as a TOML literal.
    fn toml(&self) -> String;
}

impl TomlValue for &'static DetectorKind {
    fn toml(&self) -> String {
        quote(self.name)
    }
}

impl TomlValue for String {
    fn toml(&self) -> String {
        quote(self)
    }
}

impl TomlValue for u16 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for u64 {
    fn toml(&self) -> String {
        self.to_string()
    }
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

impl TomlValue for ListenAddr {
    fn toml(&self) -> String {
        quote(&self.to_string())
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

#[cfg(test)]
mod tests;
