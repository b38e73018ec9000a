//! The generator's TOML configuration: where to post, how fast, and the
//! signal model of each series.
//!
//! The design's names are top-level keys (`data_frequency`, `value_range`,
//! `anomaly_probability`, `anomaly_detection_url`), next to `seed`, the
//! pattern keys, delivery keys and `[log]`; each `[[series]]` table has a
//! `name` and may override any pattern key. Problems are reported with
//! file, key, line and column, through `anomalyd`'s TOML toolkit.

use std::net::SocketAddr;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anomalyd::config::toml_walk::{Document, entries, join_key};
use anomalyd::config::{ConfigErrors, ConfigProblem, LOG_LEVELS, LogSettings};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where the generator looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/anomalyd/generator.toml";

/// Which way outliers push a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierDirection {
    /// Above the normal value.
    Up,
    /// Below it.
    Down,
    /// Either, at random.
    Both,
}

/// The distribution of a series' noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseDistribution {
    /// Gaussian.
    Normal,
    /// Student-t with ν = 3 degrees of freedom, scaled to the same σ:
    /// heavy tails, as real metrics often have.
    StudentT,
}

const NOISE_DISTRIBUTIONS: &[(&str, NoiseDistribution)] = &[
    ("normal", NoiseDistribution::Normal),
    ("student_t", NoiseDistribution::StudentT),
];

const OUTLIER_DIRECTIONS: &[(&str, OutlierDirection)] = &[
    ("up", OutlierDirection::Up),
    ("down", OutlierDirection::Down),
    ("both", OutlierDirection::Both),
];

/// The signal model and rate of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    /// Seconds between two points; 0 means as fast as delivery allows.
    pub data_frequency: f64,
    /// Range of normal values: the base level is its middle.
    pub value_range: (f64, f64),
    /// Probability that a point is an outlier (a spike, or the start of a
    /// burst).
    pub anomaly_probability: f64,
    /// Standard deviation of the Gaussian noise; `None`: a tenth of the
    /// range.
    pub noise: Option<f64>,
    /// Period of the sinusoidal season.
    pub season_period: Duration,
    /// Amplitude of the season; `None`: a quarter of the range.
    pub season_amplitude: Option<f64>,
    /// Linear trend, in value units per hour.
    pub trend: f64,
    /// Outlier size, drawn uniformly in this range, in units of the noise's
    /// standard deviation.
    pub anomaly_magnitude: (f64, f64),
    /// Which way outliers go.
    pub anomaly_direction: OutlierDirection,
    /// Probability that an outlier starts a burst instead of a lone spike.
    pub burst_probability: f64,
    /// Points in a burst, drawn uniformly in this range.
    pub burst_length: (u32, u32),
    /// Probability per point that the level shifts for good.
    pub level_shift_probability: f64,
    /// Size of a level shift, in units of the noise's standard deviation.
    pub level_shift_magnitude: (f64, f64),
    /// Probability per point that the slope changes for good.
    pub trend_change_probability: f64,
    /// Size of a slope change, in noise σ per hour.
    pub trend_change_magnitude: (f64, f64),
    /// Probability per point that the noise's σ changes for good.
    pub variance_change_probability: f64,
    /// The factor a variance change multiplies (up) or divides (down) the
    /// noise's σ by.
    pub variance_change_factor: (f64, f64),
    /// The distribution of the noise.
    pub noise_distribution: NoiseDistribution,
    /// Send a counter: the running total of the values (each floored at 0).
    pub counter: bool,
    /// With `counter`: probability per point that the total goes back to 0.
    pub counter_reset_probability: f64,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern {
            data_frequency: 1.0,
            value_range: (40.0, 50.0),
            anomaly_probability: 0.005,
            noise: None,
            season_period: Duration::from_secs(3600),
            season_amplitude: None,
            trend: 0.0,
            anomaly_magnitude: (8.0, 12.0),
            anomaly_direction: OutlierDirection::Up,
            burst_probability: 0.0,
            burst_length: (3, 5),
            level_shift_probability: 0.0,
            level_shift_magnitude: (5.0, 10.0),
            trend_change_probability: 0.0,
            trend_change_magnitude: (1.0, 3.0),
            variance_change_probability: 0.0,
            variance_change_factor: (3.0, 5.0),
            noise_distribution: NoiseDistribution::Normal,
            counter: false,
            counter_reset_probability: 0.0,
        }
    }
}

impl Pattern {
    /// The noise's standard deviation.
    pub fn noise_std_dev(&self) -> f64 {
        self.noise
            .unwrap_or((self.value_range.1 - self.value_range.0) / 10.0)
    }

    /// The season's amplitude.
    pub fn amplitude(&self) -> f64 {
        self.season_amplitude
            .unwrap_or((self.value_range.1 - self.value_range.0) / 4.0)
    }

    /// The unit of outlier and level-shift magnitudes: the noise's standard
    /// deviation, or a tenth of the range for a noiseless series.
    pub fn magnitude_unit(&self) -> f64 {
        let noise = self.noise_std_dev();
        if noise > 0.0 {
            noise
        } else {
            (self.value_range.1 - self.value_range.0) / 10.0
        }
    }
}

impl std::fmt::Display for Pattern {
    /// A one-line summary, as `--check-config` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let every = if self.data_frequency > 0.0 {
            format!("every {}s", self.data_frequency)
        } else {
            "as fast as possible".to_owned()
        };
        let direction = match self.anomaly_direction {
            OutlierDirection::Up => "up",
            OutlierDirection::Down => "down",
            OutlierDirection::Both => "up or down",
        };
        write!(
            f,
            "{every}; values {}..{}, noise σ {}, season {} over {}, trend {}/h; \
             outliers {}% of {}..{}σ {direction}, {}% of them bursts of {}..{}; \
             level shifts {}% per point of {}..{}σ",
            self.value_range.0,
            self.value_range.1,
            self.noise_std_dev(),
            self.amplitude(),
            anomalyd::config::toml_walk::format_duration(self.season_period),
            self.trend,
            self.anomaly_probability * 100.0,
            self.anomaly_magnitude.0,
            self.anomaly_magnitude.1,
            self.burst_probability * 100.0,
            self.burst_length.0,
            self.burst_length.1,
            self.level_shift_probability * 100.0,
            self.level_shift_magnitude.0,
            self.level_shift_magnitude.1,
        )?;
        if self.trend_change_probability > 0.0 {
            write!(
                f,
                "; trend changes {}% per point of {}..{}σ/h",
                self.trend_change_probability * 100.0,
                self.trend_change_magnitude.0,
                self.trend_change_magnitude.1
            )?;
        }
        if self.variance_change_probability > 0.0 {
            write!(
                f,
                "; variance changes {}% per point by {}..{}x",
                self.variance_change_probability * 100.0,
                self.variance_change_factor.0,
                self.variance_change_factor.1
            )?;
        }
        if self.noise_distribution == NoiseDistribution::StudentT {
            write!(f, "; Student-t noise (ν = 3)")?;
        }
        if self.counter {
            write!(
                f,
                "; sent as a counter, reset {}% per point",
                self.counter_reset_probability * 100.0
            )?;
        }
        Ok(())
    }
}

/// One `[[series]]`: a name, its resolved pattern, seed and target.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesConfig {
    /// The series name posted to anomalyd.
    pub name: String,
    /// The pattern: the top-level keys with this table's overrides.
    pub pattern: Pattern,
    /// The seed of this series (`seed` in its table); `None`: the run's
    /// seed (`--seed`, else the top-level `seed`, else from the clock).
    pub seed: Option<u64>,
    /// Where this series is posted.
    pub target: Target,
}

/// Where points are posted: an `http://` or `https://` URL split for the
/// client, or a `nats://host:port[/prefix]` URL: the points are then
/// published straight to an anomalyd cluster's points stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as written.
    pub url: String,
    /// `host:port` to connect to (and the `Host` header).
    pub authority: String,
    /// The host alone, without brackets (the name TLS checks).
    pub host: String,
    /// Whether the URL is `https://`.
    pub tls: bool,
    /// Whether the URL is `nats://`: `path` is then the cluster's
    /// `subject_prefix`.
    pub nats: bool,
    /// Path and query of the request.
    pub path: String,
}

impl Target {
    /// Where an HTTP client connects for this target.
    pub fn endpoint(&self) -> anomalyd::http_client::Endpoint {
        anomalyd::http_client::Endpoint {
            proxy: None,
            authority: self.authority.clone(),
            host: self.host.clone(),
            tls: self.tls,
        }
    }

    /// Parses an `http://host[:port]/path`, `https://...` or
    /// `nats://host[:port][/prefix]` URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("not a valid URL ({e}); expected http://HOST:PORT/detect"))?;
        let (tls, nats, default_port) = match uri.scheme_str() {
            Some("http") => (false, false, 80),
            Some("https") => (true, false, 443),
            Some("nats") => (false, true, 4222),
            _ => {
                return Err(format!(
                    "only http://, https:// and nats:// URLs are supported, got {url:?}"
                ));
            }
        };
        let host = uri.host().ok_or("the URL has no host")?;
        let port = uri.port_u16().unwrap_or(default_port);
        let mut path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        if nats {
            let prefix = path.trim_matches('/');
            path = if prefix.is_empty() {
                "anomalyd".to_owned()
            } else {
                prefix.to_owned()
            };
            let valid = path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(format!(
                    "`{path}` is not a subject prefix: nats://HOST:PORT[/PREFIX] takes the cluster's [cluster] subject_prefix (letters, digits, `_`, `-`)"
                ));
            }
        }
        Ok(Target {
            url: url.to_owned(),
            authority: format!("{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            tls,
            nats,
            path,
        })
    }
}

pub use anomalyd::tls::ClientTls;

/// A token sent to anomalyd as `Authorization: Bearer`; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(pub String);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

/// The credentials of `nats_creds_file` (a `.creds` file's text); `Debug`
/// hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsCredentials(pub String);

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsCredentials(..)")
    }
}

/// How a `nats://` target is reached: the settings of anomalyd's
/// `[cluster] nats_creds_file` and `nats_ca_file`, read with the
/// configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NatsAccess {
    /// The user's credentials, if the server needs them.
    pub credentials: Option<NatsCredentials>,
    /// The CAs trusted for the server's certificate; TLS is then required.
    pub tls: Option<ClientTls>,
}

/// The generator's whole configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// `anomaly_detection_url`.
    pub target: Target,
    /// `auth_token_file`: where the token sent to anomalyd is read from.
    pub auth_token_file: Option<PathBuf>,
    /// The first token of `auth_token_file`, read with the configuration.
    pub auth_token: Option<AuthToken>,
    /// `ca_file`: the CAs trusted for `https://` targets (unset: the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// The TLS client settings, read when a target is `https://`.
    pub tls: Option<ClientTls>,
    /// `nats_creds_file`: a NATS user's credentials, for `nats://` targets.
    pub nats_creds_file: Option<PathBuf>,
    /// `nats_ca_file`: the CAs trusted for a `nats://` target's server
    /// (TLS is then required).
    pub nats_ca_file: Option<PathBuf>,
    /// What the two keys above hold, read when a target is `nats://`.
    pub nats: NatsAccess,
    /// Seed of every series' random numbers; `None`: chosen at start.
    pub seed: Option<u64>,
    /// Points per request: 1 posts JSON objects, more posts NDJSON.
    pub batch_size: usize,
    /// Points kept while the detector cannot take them; the oldest are
    /// dropped beyond this.
    pub queue_size: usize,
    /// Address of the `GET /metrics` endpoint, if any.
    pub listen: Option<SocketAddr>,
    /// Time SIGTERM gives queued points to be delivered.
    pub shutdown_grace: Duration,
    /// `[log]`: the level of its diagnostics and whether they go to journald.
    pub log: LogSettings,
    /// The series, in file order.
    pub series: Vec<SeriesConfig>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            target: Target::parse("http://127.0.0.1:8001/detect").expect("default URL"),
            auth_token_file: None,
            auth_token: None,
            ca_file: None,
            tls: None,
            nats_creds_file: None,
            nats_ca_file: None,
            nats: NatsAccess::default(),
            seed: None,
            batch_size: 1,
            queue_size: 100_000,
            listen: None,
            shutdown_grace: Duration::from_secs(10),
            log: LogSettings::default(),
            series: vec![SeriesConfig {
                name: "default".into(),
                pattern: Pattern::default(),
                seed: None,
                target: Target::parse("http://127.0.0.1:8001/detect").expect("default URL"),
            }],
            file: None,
        }
    }
}

/// Pattern keys one table sets.
#[derive(Clone, Debug, Default)]
struct PatternKeys {
    data_frequency: Option<f64>,
    value_range: Option<(f64, f64)>,
    anomaly_probability: Option<f64>,
    noise: Option<f64>,
    season_period: Option<Duration>,
    season_amplitude: Option<f64>,
    trend: Option<f64>,
    anomaly_magnitude: Option<(f64, f64)>,
    anomaly_direction: Option<OutlierDirection>,
    burst_probability: Option<f64>,
    burst_length: Option<(u32, u32)>,
    level_shift_probability: Option<f64>,
    level_shift_magnitude: Option<(f64, f64)>,
    trend_change_probability: Option<f64>,
    trend_change_magnitude: Option<(f64, f64)>,
    variance_change_probability: Option<f64>,
    variance_change_factor: Option<(f64, f64)>,
    noise_distribution: Option<NoiseDistribution>,
    counter: Option<bool>,
    counter_reset_probability: Option<f64>,
}

const PATTERN_KEYS: &[&str] = &[
    "data_frequency",
    "value_range",
    "anomaly_probability",
    "noise",
    "season_period",
    "season_amplitude",
    "trend",
    "anomaly_magnitude",
    "anomaly_direction",
    "burst_probability",
    "burst_length",
    "level_shift_probability",
    "level_shift_magnitude",
    "trend_change_probability",
    "trend_change_magnitude",
    "variance_change_probability",
    "variance_change_factor",
    "noise_distribution",
    "counter",
    "counter_reset_probability",
];

const TOP_KEYS: &[&str] = &[
    "anomaly_detection_url",
    "auth_token_file",
    "ca_file",
    "nats_creds_file",
    "nats_ca_file",
    "seed",
    "batch_size",
    "queue_size",
    "listen",
    "shutdown_grace",
    "log",
    "series",
];

const PROBABILITY: std::ops::RangeInclusive<f64> = 0.0..=1.0;
/// Sizes (noise, amplitudes, magnitudes): non-negative, and small enough
/// that generated values stay within what anomalyd accepts (±1e150).
const NON_NEGATIVE: std::ops::RangeInclusive<f64> = 0.0..=1e100;
/// Levels and trends: within ±1e100, for the same reason.
const LEVEL: std::ops::RangeInclusive<f64> = -1e100..=1e100;
/// `data_frequency`: at most one point a day (0: as fast as possible).
const FREQUENCY: std::ops::RangeInclusive<f64> = 0.0..=86_400.0;
/// `season_period`: more than zero, at most a year.
const PERIOD: (Bound<Duration>, Bound<Duration>) = (
    Bound::Excluded(Duration::ZERO),
    Bound::Included(Duration::from_secs(365 * 86_400)),
);

impl PatternKeys {
    /// Reads `name` if it is a pattern key; `false` when it is not one.
    fn read(
        &mut self,
        doc: &mut Document<'_>,
        name: &str,
        dotted: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> bool {
        match name {
            "data_frequency" => self.data_frequency = doc.float(dotted, value, FREQUENCY),
            "value_range" => {
                self.value_range = pair(doc, dotted, value, |doc, key, v| doc.float(key, v, LEVEL))
                    .and_then(|(lo, hi)| ordered(doc, dotted, value, lo, hi, true))
            }
            "anomaly_probability" => {
                self.anomaly_probability = doc.float(dotted, value, PROBABILITY)
            }
            "noise" => self.noise = doc.float(dotted, value, NON_NEGATIVE),
            "season_period" => self.season_period = doc.duration(dotted, value, PERIOD),
            "season_amplitude" => self.season_amplitude = doc.float(dotted, value, NON_NEGATIVE),
            "trend" => self.trend = doc.float(dotted, value, LEVEL),
            "anomaly_magnitude" => {
                self.anomaly_magnitude = pair(doc, dotted, value, |doc, key, v| {
                    doc.float(key, v, NON_NEGATIVE)
                })
                .and_then(|(lo, hi)| ordered(doc, dotted, value, lo, hi, false))
            }
            "anomaly_direction" => {
                self.anomaly_direction = doc.choice(dotted, value, OUTLIER_DIRECTIONS)
            }
            "burst_probability" => self.burst_probability = doc.float(dotted, value, PROBABILITY),
            "burst_length" => {
                self.burst_length = pair(doc, dotted, value, |doc, key, v| {
                    doc.integer(key, v, 1..=10_000u32)
                })
                .and_then(|(lo, hi)| {
                    ordered(doc, dotted, value, f64::from(lo), f64::from(hi), false)
                        .map(|_| (lo, hi))
                })
            }
            "level_shift_probability" => {
                self.level_shift_probability = doc.float(dotted, value, PROBABILITY)
            }
            "level_shift_magnitude" => {
                self.level_shift_magnitude = pair(doc, dotted, value, |doc, key, v| {
                    doc.float(key, v, NON_NEGATIVE)
                })
                .and_then(|(lo, hi)| ordered(doc, dotted, value, lo, hi, false))
            }
            "trend_change_probability" => {
                self.trend_change_probability = doc.float(dotted, value, PROBABILITY)
            }
            "trend_change_magnitude" => {
                self.trend_change_magnitude = pair(doc, dotted, value, |doc, key, v| {
                    doc.float(key, v, NON_NEGATIVE)
                })
                .and_then(|(lo, hi)| ordered(doc, dotted, value, lo, hi, false))
            }
            "variance_change_probability" => {
                self.variance_change_probability = doc.float(dotted, value, PROBABILITY)
            }
            "variance_change_factor" => {
                self.variance_change_factor = pair(doc, dotted, value, |doc, key, v| {
                    doc.float(key, v, 1.0..=1e6)
                })
                .and_then(|(lo, hi)| ordered(doc, dotted, value, lo, hi, false))
            }
            "noise_distribution" => {
                self.noise_distribution = doc.choice(dotted, value, NOISE_DISTRIBUTIONS)
            }
            "counter" => self.counter = doc.boolean(dotted, value),
            "counter_reset_probability" => {
                self.counter_reset_probability = doc.float(dotted, value, PROBABILITY)
            }
            _ => return false,
        }
        true
    }

    /// Every key set here replaces the one in `pattern`.
    fn apply_to(&self, pattern: &mut Pattern) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { pattern.$field = v; } )* };
        }
        set!(
            data_frequency,
            value_range,
            anomaly_probability,
            season_period,
            trend,
            anomaly_magnitude,
            anomaly_direction,
            burst_probability,
            burst_length,
            level_shift_probability,
            level_shift_magnitude,
            trend_change_probability,
            trend_change_magnitude,
            variance_change_probability,
            variance_change_factor,
            noise_distribution,
            counter,
            counter_reset_probability
        );
        if self.noise.is_some() {
            pattern.noise = self.noise;
        }
        if self.season_amplitude.is_some() {
            pattern.season_amplitude = self.season_amplitude;
        }
    }
}

/// A two-element array `[a, b]`, each element read by `element`.
fn pair<T>(
    doc: &mut Document<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    element: impl Fn(&mut Document<'_>, &str, &Spanned<DeValue<'_>>) -> Option<T>,
) -> Option<(T, T)> {
    match value.get_ref() {
        DeValue::Array(items) if items.len() == 2 => {
            let a = element(doc, &format!("{key}[0]"), &items[0]);
            let b = element(doc, &format!("{key}[1]"), &items[1]);
            Some((a?, b?))
        }
        _ => {
            doc.wrong_type(key, value, "a two-element array such as [40.0, 50.0]");
            None
        }
    }
}

/// Checks `lo < hi` (or `lo <= hi` unless `strict`).
fn ordered(
    doc: &mut Document<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    lo: f64,
    hi: f64,
    strict: bool,
) -> Option<(f64, f64)> {
    if lo < hi || (!strict && lo == hi) {
        Some((lo, hi))
    } else {
        let relation = if strict { "below" } else { "at most" };
        doc.report(
            Some(key),
            Some(value.span()),
            format!("the first value must be {relation} the second, got [{lo}, {hi}]"),
        );
        None
    }
}

impl GeneratorConfig {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<GeneratorConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                "configuration file not found; create it or pass another file with --config"
                    .to_owned()
            } else {
                format!("cannot read the configuration file: {e}")
            };
            ConfigErrors(vec![ConfigProblem {
                file: path.to_owned(),
                key: None,
                position: None,
                message,
            }])
        })?;
        let mut config = Self::from_toml_str(&text, path)?;
        config.file = Some(path.to_owned());
        Ok(config)
    }

    /// Parses a configuration text read from `path` (used in problems).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<GeneratorConfig, ConfigErrors> {
        let mut doc = Document::new(path, text);
        let Some(root) = doc.parse() else {
            return Err(ConfigErrors(doc.into_problems()));
        };
        let mut config = read_root(&mut doc, &root);
        read_tls(&mut doc, &mut config);
        read_nats_access(&mut doc, &mut config);
        if doc.has_problems() {
            Err(ConfigErrors(doc.into_problems()))
        } else {
            Ok(config)
        }
    }
}

/// Reads the trusted CAs when a target is `https://`.
fn read_tls(doc: &mut Document<'_>, config: &mut GeneratorConfig) {
    let https = config.target.tls || config.series.iter().any(|s| s.target.tls);
    if !https {
        return;
    }
    match ClientTls::from_ca_file(config.ca_file.as_deref()) {
        Ok(tls) => config.tls = Some(tls),
        Err(e) => doc.report(
            Some("ca_file"),
            None,
            format!("{e} (an https:// anomaly_detection_url needs the CA that signed anomalyd's certificate: set ca_file, or install ca-certificates)"),
        ),
    }
}

/// Reads `nats_creds_file` and `nats_ca_file` when a target is `nats://`
/// (an unreadable or malformed file is a configuration error, found now
/// rather than at the first publish).
fn read_nats_access(doc: &mut Document<'_>, config: &mut GeneratorConfig) {
    let nats = config.target.nats || config.series.iter().any(|s| s.target.nats);
    if !nats {
        return;
    }
    if let Some(path) = &config.nats_creds_file {
        let read = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| {
                async_nats::ConnectOptions::with_credentials(&text)
                    .map(|_| text)
                    .map_err(|e| format!("{} is not a NATS .creds file: {e}", path.display()))
            });
        match read {
            Ok(text) => config.nats.credentials = Some(NatsCredentials(text)),
            Err(problem) => doc.report(Some("nats_creds_file"), None, problem),
        }
    }
    if let Some(path) = &config.nats_ca_file {
        match ClientTls::from_ca_file(Some(path)) {
            Ok(tls) => config.nats.tls = Some(tls),
            Err(e) => doc.report(Some("nats_ca_file"), None, e.to_string()),
        }
    }
}

fn read_root(doc: &mut Document<'_>, root: &DeTable<'_>) -> GeneratorConfig {
    let mut config = GeneratorConfig::default();
    let mut top = PatternKeys::default();
    let mut series_tables = Vec::new();
    for (key, value) in entries(root) {
        let name = key.get_ref().as_ref();
        if top.read(doc, name, name, value) {
            continue;
        }
        match name {
            "anomaly_detection_url" => {
                if let Some(target) = read_target(doc, name, value) {
                    config.target = target;
                }
            }
            "auth_token_file" => {
                if let Some(path) = doc.path_buf(name, value) {
                    match anomalyd::access::TokenSet::read(&path) {
                        Ok(tokens) => {
                            config.auth_token = Some(AuthToken(
                                String::from_utf8_lossy(tokens.first()).into_owned(),
                            ));
                        }
                        Err(e) => doc.report(Some(name), Some(value.span()), e.to_string()),
                    }
                    config.auth_token_file = Some(path);
                }
            }
            "ca_file" => config.ca_file = doc.path_buf(name, value),
            "nats_creds_file" => config.nats_creds_file = doc.path_buf(name, value),
            "nats_ca_file" => config.nats_ca_file = doc.path_buf(name, value),
            "seed" => config.seed = doc.integer(name, value, 0..=u64::MAX).or(config.seed),
            "batch_size" => {
                if let Some(n) = doc.integer(name, value, 1..=100_000usize) {
                    config.batch_size = n;
                }
            }
            "queue_size" => {
                if let Some(n) = doc.integer(name, value, 1..=100_000_000usize) {
                    config.queue_size = n;
                }
            }
            "listen" => {
                config.listen =
                    doc.parse_str(name, value, "a socket address such as \"127.0.0.1:8002\"")
            }
            "shutdown_grace" => {
                let an_hour = Duration::from_secs(3600);
                if let Some(d) = doc.duration(name, value, Duration::ZERO..=an_hour) {
                    config.shutdown_grace = d;
                }
            }
            "log" => {
                if let Some(table) = doc.table(name, value) {
                    read_log(doc, table, &mut config.log);
                }
            }
            "series" => series_tables = doc.array_of_tables(name, value),
            _ => {
                let known: Vec<&str> = PATTERN_KEYS.iter().chain(TOP_KEYS).copied().collect();
                doc.unknown_key(key, name, "the top level", &known);
            }
        }
    }
    let mut defaults = Pattern::default();
    top.apply_to(&mut defaults);
    if series_tables.is_empty() {
        config.series[0].pattern = defaults;
        config.series[0].target = config.target.clone();
        return config;
    }
    config.series.clear();
    for (index, span, table) in series_tables {
        let Some(series) = read_series(doc, index, span.clone(), table, &defaults, &config.target)
        else {
            continue;
        };
        if config.series.iter().any(|s| s.name == series.name) {
            doc.report(
                Some(&format!("series[{index}].name")),
                Some(span),
                format!(
                    "series {:?} is defined twice; names must be unique",
                    series.name
                ),
            );
            continue;
        }
        config.series.push(series);
    }
    config
}

/// Reads the `index`-th (1-based) `[[series]]` table, at `span`: the
/// top-level pattern `defaults` with the table's overrides, posting to
/// `target` unless it names its own.
fn read_series(
    doc: &mut Document<'_>,
    index: usize,
    span: Range<usize>,
    table: &DeTable<'_>,
    defaults: &Pattern,
    target: &Target,
) -> Option<SeriesConfig> {
    let prefix = format!("series[{index}]");
    let mut keys = PatternKeys::default();
    let mut name = None;
    let mut seed = None;
    let mut target = target.clone();
    for (key, value) in entries(table) {
        let key_name = key.get_ref().as_ref();
        let dotted = join_key(&prefix, key_name);
        if keys.read(doc, key_name, &dotted, value) {
            continue;
        }
        match key_name {
            "name" => {
                name = doc
                    .string(&dotted, value)
                    .and_then(|n| valid_series_name(doc, &dotted, value, n));
            }
            "seed" => seed = doc.integer(&dotted, value, 0..=u64::MAX).or(seed),
            "anomaly_detection_url" => {
                if let Some(parsed) = read_target(doc, &dotted, value) {
                    target = parsed;
                }
            }
            _ => {
                let mut known = vec!["name", "seed", "anomaly_detection_url"];
                known.extend(PATTERN_KEYS);
                doc.unknown_key(key, &dotted, &format!("[[series]] {index}"), &known);
            }
        }
    }
    let Some(name) = name else {
        if !doc.has_problems() {
            doc.report(Some(&prefix), Some(span), "every [[series]] needs a `name`");
        }
        return None;
    };
    let mut pattern = defaults.clone();
    keys.apply_to(&mut pattern);
    Some(SeriesConfig {
        name,
        pattern,
        seed,
        target,
    })
}

fn read_target(doc: &mut Document<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Target> {
    let url = doc.string(key, value)?;
    match Target::parse(url) {
        Ok(target) => Some(target),
        Err(message) => {
            doc.report(Some(key), Some(value.span()), message);
            None
        }
    }
}

fn valid_series_name(
    doc: &mut Document<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    name: &str,
) -> Option<String> {
    let point = anomalyd::ingest::DataPoint {
        value: 0.0,
        timestamp: None,
        series: std::borrow::Cow::Borrowed(name),
        seq: None,
    };
    match anomalyd::ingest::validate_point(&point) {
        Ok(()) => Some(name.to_owned()),
        Err(message) => {
            let message = message.replace("field `series`: ", "not a valid series name: ");
            doc.report(Some(key), Some(value.span()), message);
            None
        }
    }
}

fn read_log(doc: &mut Document<'_>, table: &DeTable<'_>, log: &mut LogSettings) {
    for (key, value) in entries(table) {
        let name = key.get_ref().as_ref();
        let dotted = join_key("log", name);
        match name {
            "level" => {
                if let Some(level) = doc.choice(&dotted, value, LOG_LEVELS) {
                    log.level = level;
                }
            }
            "journal" => {
                if let Some(journal) = doc.boolean(&dotted, value) {
                    log.journal = journal;
                }
            }
            _ => doc.unknown_key(key, &dotted, "[log]", &["level", "journal"]),
        }
    }
}

/// Every key a generator configuration file may set, as `key` at the top
/// level, `log.key`, or `series.key` for what only a `[[series]]` has (a
/// series may also set `seed`, `anomaly_detection_url` and every signal
/// key). The man page `anomaly-generator.toml(5)` and the shipped
/// `/etc/anomalyd/generator.toml` must document each one (a test checks it).
pub fn known_keys() -> Vec<String> {
    let top = TOP_KEYS
        .iter()
        .filter(|key| !matches!(**key, "log" | "series"));
    let mut keys: Vec<String> = top.chain(PATTERN_KEYS).map(|key| key.to_string()).collect();
    keys.extend(["log.level", "log.journal", "series.name"].map(String::from));
    keys
}

/// The configuration to start on: `explicit` if given (it must exist),
/// else [`DEFAULT_CONFIG_PATH`] if it exists, else the built-in defaults.
pub fn load(explicit: Option<&Path>) -> Result<GeneratorConfig, ConfigErrors> {
    anomalyd::config::load_or_builtin(
        explicit,
        Path::new(DEFAULT_CONFIG_PATH),
        GeneratorConfig::load,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GeneratorConfig, ConfigErrors> {
        GeneratorConfig::from_toml_str(text, Path::new("gen.toml"))
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, GeneratorConfig::default());
        let pattern = &config.series[0].pattern;
        assert_eq!(config.series[0].name, "default");
        assert_eq!(pattern.data_frequency, 1.0);
        assert_eq!(pattern.value_range, (40.0, 50.0));
        assert_eq!(pattern.anomaly_probability, 0.005);
        assert_eq!(pattern.anomaly_magnitude, (8.0, 12.0));
        assert_eq!(config.target.authority, "127.0.0.1:8001");
        assert_eq!(config.target.path, "/detect");
        assert_eq!(pattern.noise_std_dev(), 1.0);
        assert_eq!(pattern.amplitude(), 2.5);
    }

    #[test]
    fn series_override_the_top_level_keys() {
        let config = parse(
            "data_frequency = 0.5\nnoise = 2.0\nseed = 7\n\
             [[series]]\nname = \"cpu\"\n\
             [[series]]\nname = \"mem\"\nnoise = 0.0\nanomaly_direction = \"both\"\n",
        )
        .unwrap();
        assert_eq!(config.seed, Some(7));
        let [cpu, mem] = &config.series[..] else {
            panic!("{config:?}")
        };
        assert_eq!((cpu.name.as_str(), mem.name.as_str()), ("cpu", "mem"));
        assert_eq!(cpu.pattern.data_frequency, 0.5);
        assert_eq!(cpu.pattern.noise_std_dev(), 2.0);
        assert_eq!(mem.pattern.noise_std_dev(), 0.0);
        assert_eq!(mem.pattern.magnitude_unit(), 1.0);
        assert_eq!(mem.pattern.anomaly_direction, OutlierDirection::Both);
        assert_eq!(mem.pattern.data_frequency, 0.5);
        assert_eq!((cpu.seed, mem.seed), (None, None), "the run's seed applies");
    }

    #[test]
    fn a_series_may_have_its_own_seed_and_detector() {
        let config = parse(
            "[[series]]\nname = \"a\"\n\
             [[series]]\nname = \"b\"\nseed = 9\nanomaly_detection_url = \"http://10.0.0.1:9000/detect\"\n",
        )
        .unwrap();
        let [a, b] = &config.series[..] else {
            panic!("{config:?}")
        };
        assert_eq!(a.seed, None);
        assert_eq!(a.target.authority, "127.0.0.1:8001");
        assert_eq!(b.seed, Some(9));
        assert_eq!(b.target.authority, "10.0.0.1:9000");
    }

    #[test]
    fn problems_name_file_key_line_and_column() {
        assert_eq!(
            problems("value_range = [50, 40]\n"),
            ["gen.toml:1:15: value_range: the first value must be below the second, got [50, 40]"]
        );
        assert_eq!(
            problems("anomaly_probability = 1.5\n"),
            ["gen.toml:1:23: anomaly_probability: must be between 0 and 1, got 1.5"]
        );
        let unknown = problems("[[series]]\nname = \"a\"\nnoize = 1\n");
        assert!(
            unknown[0].starts_with("gen.toml:3:1: series[1].noize: unknown key \"noize\""),
            "{unknown:?}"
        );
        assert_eq!(
            problems("anomaly_detection_url = \"ftp://x/detect\"\n"),
            [
                "gen.toml:1:25: anomaly_detection_url: only http://, https:// and nats:// URLs are supported, got \"ftp://x/detect\""
            ]
        );
        let missing_ca = problems(
            "anomaly_detection_url = \"https://x/detect\"\nca_file = \"/nonexistent/ca.pem\"\n",
        );
        assert!(
            missing_ca[0].contains("ca_file: cannot read /nonexistent/ca.pem"),
            "{missing_ca:?}"
        );
        // An https:// target trusts the system's CAs without a ca_file.
        let system = parse("anomaly_detection_url = \"https://x/detect\"\n");
        if Path::new(anomalyd::tls::SYSTEM_CA_BUNDLE).exists() {
            let system = system.unwrap();
            assert!(system.tls.is_some() && system.target.tls);
        } else {
            let problems = system.unwrap_err().to_string();
            assert!(problems.contains("install ca-certificates"), "{problems}");
        }
        let twice = problems("[[series]]\nname = \"a\"\n[[series]]\nname = \"a\"\n");
        assert!(twice[0].contains("defined twice"), "{twice:?}");
        let unnamed = problems("[[series]]\nnoise = 1\n");
        assert!(unnamed[0].contains("needs a `name`"), "{unnamed:?}");
        assert!(problems("data_frequency = -1\n")[0].contains("data_frequency"));
    }

    /// Every numeric key at its bounds: the bound is accepted, beyond it
    /// is refused naming the key.
    #[test]
    fn numeric_keys_are_bounded() {
        let cases: &[(&str, &str, &str)] = &[
            ("batch_size", "100000", "100001"),
            ("queue_size", "100000000", "100000001"),
            ("shutdown_grace", "\"1h\"", "\"3601s\""),
            ("data_frequency", "86400.0", "86401.0"),
            ("value_range", "[-1e100, 1e100]", "[0.0, 1e101]"),
            ("noise", "1e100", "1e101"),
            ("season_period", "\"365d\"", "\"366d\""),
            ("season_amplitude", "1e100", "1e101"),
            ("trend", "-1e100", "-1e101"),
            ("anomaly_magnitude", "[1.0, 1e100]", "[1.0, 1e101]"),
            ("level_shift_magnitude", "[1.0, 1e100]", "[1.0, 1e101]"),
            ("burst_length", "[1, 10000]", "[1, 10001]"),
        ];
        for (key, ok, bad) in cases {
            assert!(parse(&format!("{key} = {ok}\n")).is_ok(), "{key} = {ok}");
            let problems = problems(&format!("{key} = {bad}\n"));
            assert!(problems[0].contains(key), "{key} = {bad}: {problems:?}");
        }
    }
}
