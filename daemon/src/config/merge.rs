//! Reading configuration files and merging them: each file is parsed into
//! the keys it sets (with where each was set), the layers are merged in
//! order, and cross-key checks run on the result with the positions of
//! the keys involved.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::cluster::ClusterKeys;
use super::state::StateKeys;
use super::toml_walk::{Document, entries, join_key, quote};
use super::{
    AlertConfig, ClusterConfig, Config, ConfigErrors, ConfigProblem, DetectorConfig,
    DetectorOverrides, KeyTable, LogConfig, LogKeys, ROOT_KEYS, Rule, RuleMatch, SeriesGlob,
    ServerConfig, ServerKeys, StateConfig, StateDirectory,
};
use crate::access::TokenSet;
use crate::detect::registry::{self, DetectorKind};
use crate::detect::seasonal::MAX_BUCKETS;
use crate::tls::{ServerTls, TlsError};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// Parses one document (no conf.d). `file` is used in problems.
pub(super) fn from_str(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut loader = Loader::default();
    loader.add(file, text);
    loader.finish()
}

/// Loads `path`, then every `*.toml` in `conf.d/` beside it, merged over it
/// key by key (see [`Config::load`]).
pub(super) fn load_files(path: &Path) -> Result<Config, ConfigErrors> {
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

    /// A problem about `key` of `[table]`: where it was set, or as the
    /// built-in default when no file set it; `None` when the value given
    /// was invalid (that is already reported).
    fn problem_at(&self, key: &str, table: &str, message: String) -> Option<ConfigProblem> {
        match self.origin(key) {
            Ok(Some(origin)) => Some(origin.problem(message)),
            Ok(None) => Some(ConfigProblem {
                file: PathBuf::from("(built-in default)"),
                key: Some(format!("{table}.{key}")),
                position: None,
                message,
            }),
            Err(()) => None,
        }
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
    alert: AlertConfig,
    server: Section<ServerKeys>,
    detector: Section<DetectorOverrides>,
    log: Section<LogKeys>,
    state: Section<StateKeys>,
    /// `Some` when the file has a `[cluster]` table.
    cluster: Option<Section<ClusterKeys>>,
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
            "state" => {
                if let Some(table) = doc.table(name_str, value) {
                    keys.state.read(doc, name_str, table);
                }
            }
            "alert" => {
                if let Some(table) = doc.table(name_str, value) {
                    super::alert::read_alert(doc, table, &mut keys.alert);
                }
            }
            "cluster" => {
                if let Some(table) = doc.table(name_str, value) {
                    keys.cluster
                        .get_or_insert_default()
                        .read(doc, name_str, table);
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

/// The keys of `[[rule]]` that say which series it applies to.
const MATCHER_KEYS: [&str; 3] = ["series", "metric", "labels"];

/// Read the `index`-th (1-based) `[[rule]]` of a file, at `span`.
fn read_rule(
    doc: &mut Document<'_>,
    index: usize,
    span: Range<usize>,
    table: &DeTable<'_>,
) -> Option<ParsedRule> {
    let prefix = format!("rule[{index}]");
    let mut section = Section::<DetectorOverrides>::default();
    let mut matcher = RuleMatch::default();
    let mut valid = true;
    for (name, value) in entries(table) {
        let dotted = join_key(&prefix, name.get_ref());
        match name.get_ref().as_ref() {
            key @ ("series" | "metric") => {
                let Some(text) = doc.string(&dotted, value) else {
                    valid = false;
                    continue;
                };
                match SeriesGlob::new(text) {
                    Ok(glob) if key == "series" => matcher.series = Some(glob),
                    Ok(glob) => matcher.metric = Some(glob),
                    Err(error) => {
                        let message = format!(
                            "invalid glob {}: {}; use * ? [abc] {{a,b}} patterns, e.g. \"cpu.*\", \
                             and \\{{ \\[ for a literal {{ or [",
                            quote(text),
                            error.kind()
                        );
                        doc.report(Some(&dotted), Some(value.span()), message);
                        valid = false;
                    }
                }
            }
            "labels" => match read_labels(doc, &dotted, value) {
                Some(labels) => matcher.labels = labels,
                None => valid = false,
            },
            _ => {
                if !section.read_entry(doc, name.get_ref(), &dotted, value) {
                    let known: Vec<&str> = MATCHER_KEYS
                        .iter()
                        .chain(DetectorOverrides::KEYS)
                        .copied()
                        .collect();
                    doc.unknown_key(name, &dotted, "[[rule]]", &known);
                }
            }
        }
    }
    if !valid {
        return None;
    }
    if matcher.is_empty() {
        doc.report(
            Some(&prefix),
            Some(span),
            "a [[rule]] needs at least one of \"series\" (a glob over the series name, e.g. \
             series = \"cpu.*\"), \"metric\" (a glob over the metric name, e.g. metric = \
             \"node_cpu_*\") or \"labels\" (e.g. labels = { job = \"node\" }); for every \
             series, set the keys in [detector]",
        );
        return None;
    }
    let rule = Rule::with_matcher(matcher, section.keys.clone(), doc.path());
    Some(ParsedRule { rule, section })
}

/// `labels = { name = "value", ... }`: a table of strings.
fn read_labels(
    doc: &mut Document<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<BTreeMap<String, String>> {
    let DeValue::Table(table) = value.get_ref() else {
        doc.wrong_type(
            key,
            value,
            "a table of label values, e.g. { job = \"node\" }",
        );
        return None;
    };
    let mut labels = BTreeMap::new();
    let mut valid = true;
    for (name, label_value) in entries(table) {
        let dotted = join_key(key, name.get_ref());
        match doc.string(&dotted, label_value) {
            Some(text) => {
                labels.insert(name.get_ref().to_string(), text.to_owned());
            }
            None => valid = false,
        }
    }
    if labels.is_empty() && valid {
        doc.report(
            Some(key),
            Some(value.span()),
            "an empty table matches nothing; name at least one label, e.g. { job = \"node\" }",
        );
        return None;
    }
    valid.then_some(labels)
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
        let mut state = Section::<StateKeys>::default();
        let mut cluster: Option<Section<ClusterKeys>> = None;
        let mut alert = AlertConfig::default();
        for layer in &mut self.layers {
            alert.alertmanagers.append(&mut layer.alert.alertmanagers);
            alert.webhooks.append(&mut layer.alert.webhooks);
        }
        for layer in &self.layers {
            server.overlay(&layer.server);
            detector.overlay(&layer.detector);
            log.overlay(&layer.log);
            state.overlay(&layer.state);
            if let Some(layer) = &layer.cluster {
                cluster.get_or_insert_default().overlay(layer);
            }
        }
        let rules: Vec<ParsedRule> = self
            .layers
            .into_iter()
            .rev()
            .flat_map(|layer| layer.rules)
            .collect();

        let mut config = Config {
            files: self.files,
            alert,
            ..Config::default()
        };
        server.keys.apply_to(&mut config.server);
        detector.keys.apply_to(&mut config.detector);
        log.keys.apply_to(&mut config.log);
        state.keys.apply_to(&mut config.state);
        if let Some(section) = &cluster {
            let mut settings = ClusterConfig::default();
            section.keys.apply_to(&mut settings);
            for (key, message) in settings.problems() {
                self.problems
                    .extend(section.problem_at(key, "cluster", message));
            }
            config.cluster = Some(settings);
        }

        check_detector(&config.detector, &detector, &mut self.problems);
        check_buckets(&config.detector, &[&detector], &mut self.problems);
        check_log(&config.log, &log, &mut self.problems);
        check_state(&config.state, &state, &mut self.problems);
        let mut notes = Vec::new();
        read_tokens(&mut config.server, &server, &mut self.problems, &mut notes);
        read_tls(&mut config.server, &server, &mut self.problems);
        check_protected_mode(&config.server, &server, &mut self.problems);
        for rule in &rules {
            check_rule(&config.detector, &detector, rule, &mut self.problems);
            if ["season", "bucket"]
                .iter()
                .any(|key| rule.section.origins.contains_key(key))
            {
                let effective = config.detector.with_overrides(&rule.rule.overrides);
                check_buckets(&effective, &[&rule.section, &detector], &mut self.problems);
            }
        }
        if let Some(extra) = rules.get(super::MAX_RULES) {
            self.problems.push(ConfigProblem {
                file: extra.rule.file.clone(),
                key: Some(format!("rule[{}]", super::MAX_RULES + 1)),
                position: None,
                message: format!(
                    "at most {} [[rule]] tables, got {}; match several series with one glob \
                     (`*`, `?`, `[abc]`, `{{a,b}}`)",
                    super::MAX_RULES,
                    rules.len()
                ),
            });
        }
        notes.extend(unused_keys(&config.detector, &detector, &rules));
        config.notes.0 = notes;
        config.rules = rules.into_iter().map(|parsed| parsed.rule).collect();

        if self.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(self.problems))
        }
    }
}

/// Keys set for a detector that does not read them: in a `[[rule]]`, for
/// the rule's detector; in `[detector]`, for every detector that inherits
/// the key (the default one and that of each rule not setting it).
fn unused_keys(
    detector: &DetectorConfig,
    section: &Section<DetectorOverrides>,
    rules: &[ParsedRule],
) -> Vec<ConfigProblem> {
    let note = |origin: &Origin, key: &str, kinds: &[&DetectorKind]| {
        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        let users: Vec<&str> = registry::DETECTORS
            .iter()
            .filter(|k| registry::uses_key(k, key))
            .map(|k| k.name)
            .collect();
        origin.problem(format!(
            "not used by detector {} (only by {}); remove it, or set detector",
            names.join(", "),
            users.join(", ")
        ))
    };
    let mut notes = Vec::new();
    let rule_kind = |rule: &ParsedRule| rule.rule.overrides.detector.unwrap_or(detector.detector);
    for (&key, origin) in &section.origins {
        let Some(origin) = origin else { continue };
        let mut inheritors = vec![detector.detector];
        inheritors.extend(
            rules
                .iter()
                .filter(|rule| !rule.section.origins.contains_key(key))
                .map(rule_kind),
        );
        if !inheritors.iter().any(|kind| registry::uses_key(kind, key)) {
            inheritors.dedup_by(|a, b| std::ptr::eq(*a, *b));
            notes.push(note(origin, key, &inheritors));
        }
    }
    for rule in rules {
        let kind = rule_kind(rule);
        for (&key, origin) in &rule.section.origins {
            if let Some(origin) = origin
                && !registry::uses_key(kind, key)
            {
                notes.push(note(origin, key, &[kind]));
            }
        }
    }
    notes
}

/// `[log]`: `anomaly_log_file` must not name a directory (the check that
/// start-up would otherwise fail later, or `--check-config` miss).
fn check_log(log: &LogConfig, section: &Section<LogKeys>, problems: &mut Vec<ConfigProblem>) {
    if !log.anomaly_log_file.is_dir() {
        return;
    }
    let message = format!(
        "{} is a directory; name a file in it, e.g. \"{}\"",
        log.anomaly_log_file.display(),
        log.anomaly_log_file.join("anomalies.log").display()
    );
    problems.extend(section.problem_at("anomaly_log_file", "log", message));
}

/// `[state] directory`: must not name something other than a directory
/// (a missing one is created at the first snapshot).
fn check_state(
    state: &StateConfig,
    section: &Section<StateKeys>,
    problems: &mut Vec<ConfigProblem>,
) {
    let Some(StateDirectory::Path(path)) = &state.directory else {
        return;
    };
    if path.exists() && !path.is_dir() {
        let message = format!(
            "{} exists and is not a directory; name a directory, e.g. \"/var/lib/anomalyd\"",
            path.display()
        );
        problems.extend(section.problem_at("directory", "state", message));
    }
}

/// `[server] auth_token_file`: reads the tokens into `server.auth_tokens`,
/// and notes a file other users may read.
fn read_tokens(
    server: &mut ServerConfig,
    section: &Section<ServerKeys>,
    problems: &mut Vec<ConfigProblem>,
    notes: &mut Vec<ConfigProblem>,
) {
    let (Some(path), Ok(Some(origin))) =
        (&server.auth_token_file, section.origin("auth_token_file"))
    else {
        return;
    };
    match TokenSet::read(path) {
        Ok(tokens) => server.auth_tokens = Some(Arc::new(tokens)),
        Err(e) => problems.push(origin.problem(e.to_string())),
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        notes.push(origin.problem(format!(
            "{} is readable by every user of this machine; restrict it, e.g. `chmod 0640` and `chown root:anomalyd`",
            path.display()
        )));
    }
}

/// `[server] tls_*`: certificate and key go together, client
/// certificates need TLS; reads them into `server.tls`.
fn read_tls(
    server: &mut ServerConfig,
    section: &Section<ServerKeys>,
    problems: &mut Vec<ConfigProblem>,
) {
    let origin = |key: &str| section.origin(key).ok().flatten();
    let (Some(cert), Some(key)) = (&server.tls_cert_file, &server.tls_key_file) else {
        let has_cert = server.tls_cert_file.is_some();
        let has_key = server.tls_key_file.is_some();
        // (key set, key it needs, whether that one is missing)
        let needs = [
            ("tls_cert_file", "tls_key_file", has_cert && !has_key),
            ("tls_key_file", "tls_cert_file", has_key && !has_cert),
            (
                "tls_client_ca_file",
                "tls_cert_file",
                server.tls_client_ca_file.is_some() && !has_cert,
            ),
        ];
        for (set, missing, _) in needs.iter().filter(|need| need.2) {
            if let Some(origin) = origin(set) {
                problems.push(origin.problem(format!(
                    "needs {missing} too: TLS takes a certificate (tls_cert_file) and its key (tls_key_file)"
                )));
            }
        }
        return;
    };
    match ServerTls::from_files(cert, key, server.tls_client_ca_file.as_deref()) {
        Ok(tls) => server.tls = Some(tls),
        Err(e) => {
            let key = match &e {
                TlsError::Unreadable { path, .. }
                | TlsError::NoCertificate { path }
                | TlsError::NoKey { path }
                    if Some(path) == server.tls_client_ca_file.as_ref() =>
                {
                    "tls_client_ca_file"
                }
                TlsError::NoKey { .. } => "tls_key_file",
                TlsError::Unreadable { path, .. } if path == key => "tls_key_file",
                _ => "tls_cert_file",
            };
            if let Some(origin) = origin(key) {
                problems.push(origin.problem(e.to_string()));
            }
        }
    }
}

/// Protected mode: listening beyond loopback needs a token file (or TLS
/// client certificates), unless `allow_unauthenticated = true`.
fn check_protected_mode(
    server: &ServerConfig,
    section: &Section<ServerKeys>,
    problems: &mut Vec<ConfigProblem>,
) {
    let Some(message) = server
        .listen
        .tcp()
        .and_then(|addr| unprotected(server, addr))
    else {
        return;
    };
    problems.extend(section.problem_at("listen", "server", message));
}

/// Why serving on `addr` under `server` is refused by protected mode, or
/// `None` when it is allowed: `addr` is a loopback address, or clients
/// must authenticate, or `allow_unauthenticated` is set.
pub fn unprotected(server: &ServerConfig, addr: std::net::SocketAddr) -> Option<String> {
    let client_certificates = server.tls_cert_file.is_some() && server.tls_client_ca_file.is_some();
    if addr.ip().is_loopback()
        || server.auth_token_file.is_some()
        || client_certificates
        || server.allow_unauthenticated
    {
        return None;
    }
    Some(format!(
        "protected mode: {addr} is reachable from other machines, and with no authentication \
         anyone who can reach it could post points and read every anomaly; set \
         [server] auth_token_file or TLS client certificates (tls_client_ca_file; see the \
         README's Security section), listen on 127.0.0.1, \
         or set allow_unauthenticated = true if a firewall or an authenticating proxy guards \
         the port"
    ))
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

/// `bucket` must divide `season` into 1 to [`MAX_BUCKETS`] buckets;
/// reported where the first of `sections` (the table, then `[detector]`)
/// sets `bucket` or `season`.
fn check_buckets(
    detector: &DetectorConfig,
    sections: &[&Section<DetectorOverrides>],
    problems: &mut Vec<ConfigProblem>,
) {
    let (season, bucket) = (detector.season.as_secs_f64(), detector.bucket.as_secs_f64());
    let buckets = season / bucket;
    if (1.0..=MAX_BUCKETS as f64).contains(&buckets.ceil()) && bucket <= season {
        return;
    }
    let message = format!(
        "bucket ({}) must be at most season ({}) and divide it into at most {MAX_BUCKETS} \
         buckets, got {:.0}; widen bucket or shorten season",
        super::toml_walk::format_duration(detector.bucket),
        super::toml_walk::format_duration(detector.season),
        buckets.ceil()
    );
    let origin = sections.iter().find_map(|section| {
        ["bucket", "season"]
            .iter()
            .find_map(|key| section.origin(key).ok().flatten())
    });
    if let Some(origin) = origin {
        problems.push(origin.problem(message));
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
