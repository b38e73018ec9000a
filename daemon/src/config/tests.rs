//! Tests of the anomalyd configuration.

use super::*;

const FILE: &str = "/etc/anomalyd/anomalyd.toml";

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(text, Path::new(FILE))
}

fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected problems:\n{errors}"),
    }
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match parse(text) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(ConfigErrors(problems)) => problems,
    }
}

/// The only problem of `text`, checked for file, key and position.
fn only_problem(text: &str, key: Option<&str>, position: (usize, usize)) -> String {
    let mut problems = problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problems.remove(0);
    assert_eq!(problem.file, Path::new(FILE));
    assert_eq!(problem.key.as_deref(), key, "{problem}");
    assert_eq!(problem.position, Some(position), "{problem}");
    problem.message
}

const FULL: &str = r#"
[server]
listen = "[::1]:9000"
max_body_bytes = 4096
max_connections = 8
header_read_timeout = "1500ms"
idle_timeout = "2m"
max_series = 50

[detector]
window_size = 60
threshold_multiplier = 2.5
direction = "both"
min_samples = 20
min_std_dev = 0.5
min_relative_std_dev = 0.01
exclude_anomalies = true
max_excluded_run = 0
series_ttl = "1d2h"

[[rule]]
series = "cpu.*"
threshold_multiplier = 4
window_size = 10
min_samples = 5

[[rule]]
series = "disk.{read,write}"
direction = "lower"
series_ttl = "30s"
exclude_anomalies = false

[log]
anomaly_log_file = "/var/log/anomalyd/anomalies.log"
fsync = "always"
backlog = 5
recent_anomalies = 77
"#;

#[test]
fn defaults() {
    let config = Config::default();
    assert_eq!(config.server.listen, "127.0.0.1:8001".parse().unwrap());
    assert_eq!(config.server.socket_mode, 0o660);
    assert_eq!(config.server.max_body_bytes, 1_048_576);
    assert_eq!(config.server.max_connections, 1024);
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_series, 100_000);
    let d = &config.detector;
    // Chosen on the evaluation corpus ([8/11] §4).
    assert_eq!(d.window_size, 120);
    assert_eq!(d.threshold_multiplier, 6.0);
    assert_eq!(d.direction, Direction::Both);
    assert_eq!((d.min_consecutive, d.resolve_after), (1, 5));
    assert_eq!(d.detector.name, "moving_average");
    assert_eq!(d.min_samples, None);
    assert_eq!(d.min_std_dev, 0.0);
    assert_eq!(d.min_relative_std_dev, 1e-14);
    assert!(!d.exclude_anomalies);
    assert_eq!(d.max_excluded_run, 10);
    assert_eq!(d.series_ttl, Duration::from_secs(3600));
    assert!(config.rules.is_empty());
    assert_eq!(config.log.anomaly_log_file, PathBuf::from("anomalies.log"));
    assert_eq!(config.log.fsync, FsyncPolicy::Interval);
    assert_eq!(config.log.backlog, 10_000);
    assert_eq!(config.log.recent_anomalies, 1_000);
    assert!(config.files.is_empty());

    let settings = config.series_settings("anything");
    assert_eq!(settings.detector.window_size, 120);
    assert_eq!(settings.detector.min_samples, 120);
    assert_eq!(settings.detector.threshold_multiplier, 6.0);
    assert_eq!(settings.series_ttl, Duration::from_secs(3600));

    let empty = parse_ok("");
    assert_eq!(empty.files, [PathBuf::from(FILE)]);
    assert_eq!(
        Config {
            files: Vec::new(),
            ..empty
        },
        config
    );
    // Empty tables are fine too.
    let tables = parse_ok("[server]\n[detector]\n[log]\n");
    assert_eq!(
        Config {
            files: Vec::new(),
            ..tables
        },
        config
    );
}

#[test]
fn full_config_is_read() {
    let config = parse_ok(FULL);
    assert_eq!(config.server.listen, "[::1]:9000".parse().unwrap());
    assert_eq!(config.server.max_body_bytes, 4096);
    assert_eq!(config.server.max_connections, 8);
    assert_eq!(
        config.server.header_read_timeout,
        Duration::from_millis(1500)
    );
    assert_eq!(config.server.idle_timeout, Duration::from_secs(120));
    assert_eq!(config.server.max_series, 50);
    let d = &config.detector;
    assert_eq!(d.window_size, 60);
    assert_eq!(d.threshold_multiplier, 2.5);
    assert_eq!(d.direction, Direction::Both);
    assert_eq!(d.min_samples, Some(20));
    assert_eq!(d.min_std_dev, 0.5);
    assert_eq!(d.min_relative_std_dev, 0.01);
    assert!(d.exclude_anomalies);
    assert_eq!(d.max_excluded_run, 0);
    assert_eq!(d.series_ttl, Duration::from_secs(26 * 3600));
    assert_eq!(config.rules.len(), 2);
    assert_eq!(config.rules[0].describe(), "cpu.*");
    assert_eq!(
        config.rules[0].overrides,
        DetectorOverrides {
            threshold_multiplier: Some(4.0),
            window_size: Some(10),
            min_samples: Some(5),
            ..DetectorOverrides::default()
        }
    );
    assert_eq!(config.rules[0].file, Path::new(FILE));
    assert_eq!(config.rules[1].describe(), "disk.{read,write}");
    assert_eq!(
        config.log.anomaly_log_file,
        Path::new("/var/log/anomalyd/anomalies.log")
    );
    assert_eq!(config.log.fsync, FsyncPolicy::Always);
    assert_eq!(config.log.backlog, 5);
    assert_eq!(config.log.recent_anomalies, 77);

    let cpu = config.series_settings("cpu.load/host-1");
    assert_eq!(cpu.detector.threshold_multiplier, 4.0);
    assert_eq!(cpu.detector.window_size, 10);
    assert_eq!(cpu.detector.min_samples, 5);
    assert_eq!(cpu.detector.direction, Direction::Both);
    assert!(cpu.detector.exclude_anomalies);
    assert_eq!(cpu.series_ttl, Duration::from_secs(26 * 3600));

    let disk = config.series_settings("disk.write");
    assert_eq!(disk.detector.direction, Direction::Lower);
    assert!(!disk.detector.exclude_anomalies);
    assert_eq!(disk.detector.window_size, 60);
    assert_eq!(disk.detector.min_samples, 20);
    assert_eq!(disk.series_ttl, Duration::from_secs(30));

    let other = config.series_settings("mem.used");
    assert_eq!(other, config.detector.series_settings());
    assert_eq!(
        other.detector,
        DetectorSettings {
            window_size: 60,
            threshold_multiplier: 2.5,
            direction: Direction::Both,
            min_samples: 20,
            min_std_dev: 0.5,
            min_relative_std_dev: 0.01,
            exclude_anomalies: true,
            max_excluded_run: 0,
            half_life: 30.0,
            ..DetectorSettings::default()
        }
    );
}

#[test]
fn full_config_round_trips_through_to_toml() {
    let config = parse_ok(FULL);
    let text = config.to_toml();
    let again = parse_ok(&text);
    assert_eq!(again, config, "{text}");
    assert!(text.contains("min_samples = 20\n"), "{text}");
    assert!(text.contains("series_ttl = \"1d2h\"\n"), "{text}");
    assert!(text.contains("threshold_multiplier = 4.0\n"), "{text}");
    assert!(text.contains("listen = \"[::1]:9000\"\n"), "{text}");
}

#[test]
fn defaults_round_trip_through_to_toml() {
    let config = Config::default();
    let text = config.to_toml();
    for line in [
        "[server]",
        "listen = \"127.0.0.1:8001\"",
        "max_body_bytes = 1048576",
        "max_connections = 1024",
        "header_read_timeout = \"10s\"",
        "idle_timeout = \"1m\"",
        "max_series = 100000",
        "[detector]",
        "window_size = 120",
        "threshold_multiplier = 6.0",
        "direction = \"both\"",
        "# min_samples = <window_size>",
        "min_std_dev = 0.0",
        "min_relative_std_dev = 1e-14",
        "exclude_anomalies = false",
        "max_excluded_run = 10",
        "series_ttl = \"1h\"",
        "[log]",
        "anomaly_log_file = \"anomalies.log\"",
        "fsync = \"interval\"",
        "backlog = 10000",
        "recent_anomalies = 1000",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let again = parse_ok(&text);
    assert_eq!(
        Config {
            files: Vec::new(),
            ..again
        },
        config
    );
}

#[test]
fn merged_config_round_trips_through_to_toml() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("anomalyd.toml");
    std::fs::write(&main, "[[rule]]\nseries = \"a*\"\nwindow_size = 5\n").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-x.toml"),
        "[detector]\nmin_samples = 3\n[[rule]]\nseries = \"b \\\"q\\\"\"\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    let text = config.to_toml();
    let again = parse_ok(&text);
    let strip = |config: &Config| Config {
        files: Vec::new(),
        rules: config
            .rules
            .iter()
            .map(|r| Rule::new(&r.describe(), r.overrides.clone(), "").unwrap())
            .collect(),
        ..config.clone()
    };
    assert_eq!(strip(&again), strip(&config), "{text}");
    assert_eq!(again.rules[0].describe(), "b \"q\"");
}

#[test]
fn problem_display_names_file_line_column_key() {
    let problems = problems("# comment\n[detector]\nwindow_size = 0\n");
    assert_eq!(
        problems[0].to_string(),
        "/etc/anomalyd/anomalyd.toml:3:15: detector.window_size: must be between 1 and \
         1000000, got 0"
    );
}

#[test]
fn syntax_error() {
    let message = only_problem("[server]\nlisten = 127.0.0.1:80\n", None, (2, 15));
    assert!(message.starts_with("TOML syntax error: "), "{message}");
    let message = only_problem("[server\n", None, (1, 8));
    assert!(message.starts_with("TOML syntax error: "), "{message}");
    let message = only_problem("[log]\nbacklog = 1\nbacklog = 2\n", None, (3, 1));
    assert!(message.contains("duplicate key"), "{message}");
}

#[test]
fn unknown_top_level_key() {
    let message = only_problem("[servre]\nlisten = \"x\"\n", Some("servre"), (1, 2));
    assert_eq!(
        message,
        "unknown key \"servre\" in the top level; expected one of: server, detector, rule, log, state, alert, cluster"
    );
    only_problem("verbose = true\n", Some("verbose"), (1, 1));
}

#[test]
fn unknown_key_in_server() {
    let message = only_problem("[server]\n  port = 80\n", Some("server.port"), (2, 3));
    assert_eq!(
        message,
        "unknown key \"port\" in [server]; expected one of: listen, socket_mode, admin_listen, max_body_bytes, \
         max_connections, header_read_timeout, idle_timeout, write_timeout, max_series, \
         shutdown_grace, dashboard, history_points, history_series, max_event_streams, \
         external_url, auth_token_file, metrics_require_auth, allow_unauthenticated, \
         rate_limit, rate_burst, tls_cert_file, tls_key_file, tls_client_ca_file"
    );
}

#[test]
fn unknown_key_in_detector() {
    let message = only_problem(
        "[detector]\nwindow_size = 5\nwindow = 5\n",
        Some("detector.window"),
        (3, 1),
    );
    assert_eq!(
        message,
        "unknown key \"window\" in [detector]; expected one of: detector, \
         window_size, threshold_multiplier, direction, min_samples, min_std_dev, \
         min_relative_std_dev, exclude_anomalies, max_excluded_run, min_consecutive, \
         resolve_after, resolve_multiplier, half_life, season, seasons, bucket, series_ttl, \
         severity"
    );
    // A dotted key names its first part.
    only_problem("detector.foo.bar = 1\n", Some("detector.foo"), (1, 10));
}

#[test]
fn unknown_key_in_log() {
    let message = only_problem("[log]\nfile = \"x\"\n", Some("log.file"), (2, 1));
    assert_eq!(
        message,
        "unknown key \"file\" in [log]; expected one of: anomaly_log_file, fsync, rotate, \
         backlog, recent_anomalies, recent_episodes, keep, level, journal, \
         journal_anomaly_rate"
    );
}

#[test]
fn unknown_key_in_rule() {
    let text = "[[rule]]\nseries = \"a\"\n[[rule]]\nseries = \"b\"\nthreshold = 4\n";
    let message = only_problem(text, Some("rule[2].threshold"), (5, 1));
    assert_eq!(
        message,
        "unknown key \"threshold\" in [[rule]]; expected one of: series, metric, labels, detector, \
         window_size, threshold_multiplier, direction, min_samples, min_std_dev, \
         min_relative_std_dev, exclude_anomalies, max_excluded_run, min_consecutive, \
         resolve_after, resolve_multiplier, half_life, season, seasons, bucket, series_ttl, \
         severity"
    );
}

#[test]
fn wrong_types() {
    let message = only_problem(
        "[detector]\nwindow_size = \"30\"\n",
        Some("detector.window_size"),
        (2, 15),
    );
    assert_eq!(message, "expected an integer, found string \"30\"");
    let message = only_problem(
        "[detector]\nexclude_anomalies = 1\n",
        Some("detector.exclude_anomalies"),
        (2, 21),
    );
    assert_eq!(
        message,
        "expected a boolean (true or false), found integer 1"
    );
    let message = only_problem(
        "[detector]\nthreshold_multiplier = \"3\"\n",
        Some("detector.threshold_multiplier"),
        (2, 24),
    );
    assert_eq!(message, "expected a number, found string \"3\"");
    let message = only_problem("[server]\nlisten = 8001\n", Some("server.listen"), (2, 10));
    assert!(message.starts_with("expected a socket address such as \"127.0.0.1:8001\""));
    assert!(message.ends_with(", found integer 8001"), "{message}");
    let message = only_problem(
        "[log]\nanomaly_log_file = []\n",
        Some("log.anomaly_log_file"),
        (2, 20),
    );
    assert_eq!(message, "expected a string, found an array");
    let message = only_problem("server = 1\n", Some("server"), (1, 10));
    assert_eq!(message, "expected a table ([server]), found integer 1");
    let message = only_problem("[rule]\nseries = \"a\"\n", Some("rule"), (1, 1));
    assert_eq!(
        message,
        "expected an array of tables ([[rule]]), found a table"
    );
    let message = only_problem("rule = [1]\n", Some("rule[1]"), (1, 9));
    assert_eq!(message, "expected a table ([[rule]]), found integer 1");
    let message = only_problem("[[rule]]\nseries = 1\n", Some("rule[1].series"), (2, 10));
    assert_eq!(message, "expected a string, found integer 1");
}

#[test]
fn integers_out_of_range() {
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "[detector]\nwindow_size = 0\n",
            "detector.window_size",
            (2, 15),
            "must be between 1 and 1000000, got 0",
        ),
        (
            "[detector]\nwindow_size = 1_000_001\n",
            "detector.window_size",
            (2, 15),
            "must be between 1 and 1000000, got 1000001",
        ),
        (
            "[detector]\nmax_excluded_run = -1\n",
            "detector.max_excluded_run",
            (2, 20),
            "must be between 0 and 1000000, got -1",
        ),
        (
            "[detector]\nmin_samples = 0\n",
            "detector.min_samples",
            (2, 15),
            "must be between 1 and 1000000, got 0",
        ),
        (
            "[server]\nmax_body_bytes = 1073741825\n",
            "server.max_body_bytes",
            (2, 18),
            "must be between 1 and 1073741824, got 1073741825",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "server.max_connections",
            (2, 19),
            "must be between 1 and 1000000, got 0",
        ),
        (
            "[server]\nmax_series = -5\n",
            "server.max_series",
            (2, 14),
            "must be between 1 and 100000000, got -5",
        ),
        (
            "[log]\nbacklog = 0\n",
            "log.backlog",
            (2, 11),
            "must be between 1 and 10000000, got 0",
        ),
        (
            "[log]\nrecent_anomalies = 0x0\n",
            "log.recent_anomalies",
            (2, 20),
            "must be between 1 and 1000000, got 0x0",
        ),
        (
            "[detector]\nwindow_size = 3.0\n",
            "detector.window_size",
            (2, 15),
            "expected an integer, found float 3.0",
        ),
    ];
    for (text, key, position, expected) in cases {
        assert_eq!(
            only_problem(text, Some(key), *position),
            *expected,
            "{text}"
        );
    }
}

#[test]
fn floats_checked() {
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "[detector]\nthreshold_multiplier = 0\n",
            "detector.threshold_multiplier",
            (2, 24),
            "must be greater than 0 and at most 1000, got 0",
        ),
        (
            "[detector]\nthreshold_multiplier = -1.5\n",
            "detector.threshold_multiplier",
            (2, 24),
            "must be greater than 0 and at most 1000, got -1.5",
        ),
        (
            "[detector]\nthreshold_multiplier = inf\n",
            "detector.threshold_multiplier",
            (2, 24),
            "must be a finite number greater than 0 and at most 1000, got inf",
        ),
        (
            "[detector]\nmin_std_dev = nan\n",
            "detector.min_std_dev",
            (2, 15),
            "must be a finite number between 0 and 1e150, got nan",
        ),
        (
            "[detector]\nmin_std_dev = -0.1\n",
            "detector.min_std_dev",
            (2, 15),
            "must be between 0 and 1e150, got -0.1",
        ),
        (
            "[detector]\nmin_relative_std_dev = 1\n",
            "detector.min_relative_std_dev",
            (2, 24),
            "must be at least 0 and less than 1, got 1",
        ),
        (
            "[detector]\nmin_relative_std_dev = -1e-9\n",
            "detector.min_relative_std_dev",
            (2, 24),
            "must be at least 0 and less than 1, got -1e-9",
        ),
    ];
    for (text, key, position, expected) in cases {
        assert_eq!(
            only_problem(text, Some(key), *position),
            *expected,
            "{text}"
        );
    }
    // Integers are accepted for float keys.
    let config = parse_ok("[detector]\nthreshold_multiplier = 4\nmin_std_dev = 0\n");
    assert_eq!(config.detector.threshold_multiplier, 4.0);
    assert_eq!(config.detector.min_std_dev, 0.0);
}

#[test]
fn bad_enum_strings() {
    let message = only_problem(
        "[detector]\ndirection = \"up\"\n",
        Some("detector.direction"),
        (2, 13),
    );
    assert_eq!(
        message,
        "expected one of \"upper\", \"lower\", \"both\", got \"up\""
    );
    let message = only_problem("[log]\nfsync = \"sometimes\"\n", Some("log.fsync"), (2, 9));
    assert_eq!(
        message,
        "expected one of \"never\", \"interval\", \"always\", got \"sometimes\""
    );
    let message = only_problem("[log]\nfsync = true\n", Some("log.fsync"), (2, 9));
    assert_eq!(
        message,
        "expected one of \"never\", \"interval\", \"always\", found boolean true"
    );
}

#[test]
fn bad_durations() {
    let message = only_problem(
        "[server]\nidle_timeout = 30\n",
        Some("server.idle_timeout"),
        (2, 16),
    );
    assert_eq!(
        message,
        "expected a duration string with a unit (ms, s, m, h, d) such as \"30s\" or \"1h30m\", \
         found integer 30; quote it and add a unit"
    );
    let message = only_problem(
        "[server]\nheader_read_timeout = \"10 seconds\"\n",
        Some("server.header_read_timeout"),
        (2, 23),
    );
    assert!(
        message.starts_with("invalid duration \"10 seconds\": "),
        "{message}"
    );
    let message = only_problem(
        "[detector]\nseries_ttl = \"0s\"\n",
        Some("detector.series_ttl"),
        (2, 14),
    );
    assert_eq!(message, "must be greater than 0s and at most 365d, got 0s");
    let message = only_problem(
        "[[rule]]\nseries = \"x\"\nseries_ttl = 1.5\n",
        Some("rule[1].series_ttl"),
        (3, 14),
    );
    assert!(message.contains("found float 1.5"), "{message}");
}

#[test]
fn bad_socket_address() {
    let message = only_problem(
        "[server]\nlisten = \"localhost:8001\"\n",
        Some("server.listen"),
        (2, 10),
    );
    assert_eq!(
        message,
        "expected a socket address such as \"127.0.0.1:8001\" or \"[::1]:8001\", or a unix \
         socket as \"unix:/run/anomalyd/anomalyd.sock\", got \"localhost:8001\""
    );
}

#[test]
fn bad_log_path() {
    let message = only_problem(
        "[log]\nanomaly_log_file = \"\"\n",
        Some("log.anomaly_log_file"),
        (2, 20),
    );
    assert_eq!(message, "expected a file path, found an empty string");
}

#[test]
fn rule_needs_a_matcher() {
    let text = "[[rule]]\nseries = \"a\"\n\n  [[rule]]\nwindow_size = 5\n";
    let message = only_problem(text, Some("rule[2]"), (4, 3));
    assert!(
        message.starts_with("a [[rule]] needs at least one of \"series\""),
        "{message}"
    );
}

#[test]
fn rules_match_by_metric_and_labels() {
    let config = parse_ok(concat!(
        "[[rule]]\nmetric = \"node_cpu_*\"\nlabels = { job = \"node\", mode = \"idle\" }\nwindow_size = 7\n",
        "[[rule]]\nlabels = { job = \"node\" }\nwindow_size = 8\n",
        "[[rule]]\nseries = 'up\\{*'\nwindow_size = 9\n",
    ));
    let window = |s: &str| config.series_settings(s).detector.window_size;
    assert_eq!(
        window(r#"node_cpu_seconds_total{cpu="0",job="node",mode="idle"}"#),
        7
    );
    assert_eq!(
        window(r#"node_cpu_seconds_total{cpu="0",job="node",mode="user"}"#),
        8
    );
    assert_eq!(window(r#"node_load1{job="node"}"#), 8);
    assert_eq!(window(r#"up{job="api"}"#), 9);
    assert_eq!(window("node_cpu_total"), 120, "no labels: only [detector]");
    assert_eq!(
        config.rules[0].describe(),
        r#"metric = "node_cpu_*", labels = { job = "node", mode = "idle" }"#
    );
    // --check-config prints the matchers, and reads back the same.
    let again = parse_ok(&config.to_toml());
    assert_eq!(
        again.rules,
        config
            .rules
            .iter()
            .map(|r| crate::config::Rule {
                file: again.rules[0].file.clone(),
                ..r.clone()
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn rule_matcher_errors() {
    let message = only_problem(
        "[[rule]]\nlabels = \"job=node\"\n",
        Some("rule[1].labels"),
        (2, 10),
    );
    assert!(message.contains("a table of label values"), "{message}");
    let message = only_problem(
        "[[rule]]\nlabels = { job = 1 }\n",
        Some("rule[1].labels.job"),
        (2, 18),
    );
    assert!(message.contains("a string"), "{message}");
    let message = only_problem("[[rule]]\nlabels = {}\n", Some("rule[1].labels"), (2, 10));
    assert!(
        message.starts_with("an empty table matches nothing"),
        "{message}"
    );
    let message = only_problem(
        "[[rule]]\nmetric = \"[x\"\n",
        Some("rule[1].metric"),
        (2, 10),
    );
    assert!(message.starts_with("invalid glob \"[x\""), "{message}");
}

#[test]
fn rule_bad_glob() {
    let message = only_problem(
        "[[rule]]\nseries = \"cpu.[a\"\n",
        Some("rule[1].series"),
        (2, 10),
    );
    assert!(
        message.starts_with("invalid glob \"cpu.[a\": "),
        "{message}"
    );
}

#[test]
fn min_samples_above_window_size() {
    let message = only_problem(
        "[detector]\nmin_samples = 140\n",
        Some("detector.min_samples"),
        (2, 15),
    );
    assert_eq!(
        message,
        "must not exceed window_size (120 by default), got 140; lower min_samples, raise \
         window_size, or remove min_samples to follow window_size"
    );
    let message = only_problem(
        "[detector]\nwindow_size = 10\nmin_samples = 11\n",
        Some("detector.min_samples"),
        (3, 15),
    );
    assert!(
        message.contains("(10 from /etc/anomalyd/anomalyd.toml:2:15)"),
        "{message}"
    );
    // Equal is fine; unset follows window_size.
    parse_ok("[detector]\nwindow_size = 10\nmin_samples = 10\n");
    parse_ok("[detector]\nwindow_size = 5\n");
    // When window_size itself is invalid, only that is reported.
    only_problem(
        "[detector]\nwindow_size = 0\nmin_samples = 40\n",
        Some("detector.window_size"),
        (2, 15),
    );
}

#[test]
fn rule_min_samples_checked_against_effective_window_size() {
    // The rule's own min_samples against the inherited window_size.
    let message = only_problem(
        "[detector]\nwindow_size = 10\n[[rule]]\nseries = \"a\"\nmin_samples = 11\n",
        Some("rule[1].min_samples"),
        (5, 15),
    );
    assert!(
        message.starts_with("must not exceed this rule's window_size (10 from"),
        "{message}"
    );
    // The rule's own min_samples against its own window_size.
    let message = only_problem(
        "[[rule]]\nseries = \"a\"\nwindow_size = 100\n[[rule]]\nseries = \"b\"\nwindow_size = 5\nmin_samples = 6\n",
        Some("rule[2].min_samples"),
        (7, 15),
    );
    assert!(
        message.contains("(5 from /etc/anomalyd/anomalyd.toml:6:15)"),
        "{message}"
    );
    // [detector] min_samples inherited by a rule with a smaller window_size.
    let message = only_problem(
        "[detector]\nmin_samples = 20\n[[rule]]\nseries = \"a\"\nwindow_size = 10\n",
        Some("rule[1].window_size"),
        (5, 15),
    );
    assert!(
        message.starts_with(
            "must be at least min_samples (20 from /etc/anomalyd/anomalyd.toml:2:15), got 10"
        ),
        "{message}"
    );
    // A rule's min_samples may exceed [detector]'s window_size when the rule
    // raises window_size.
    let config = parse_ok(
        "[detector]\nwindow_size = 10\n[[rule]]\nseries = \"a\"\nwindow_size = 100\nmin_samples = 50\n",
    );
    assert_eq!(config.series_settings("a").detector.min_samples, 50);
}

#[test]
fn min_samples_follows_rule_window_size() {
    let config =
        parse_ok("[detector]\nwindow_size = 20\n[[rule]]\nseries = \"big.*\"\nwindow_size = 200\n");
    let big = config.series_settings("big.one").detector;
    assert_eq!((big.window_size, big.min_samples), (200, 200));
    let small = config.series_settings("small").detector;
    assert_eq!((small.window_size, small.min_samples), (20, 20));

    // An explicit [detector] min_samples is inherited as is.
    let config = parse_ok(
        "[detector]\nwindow_size = 20\nmin_samples = 5\n[[rule]]\nseries = \"big.*\"\nwindow_size = 200\n",
    );
    let big = config.series_settings("big.one").detector;
    assert_eq!((big.window_size, big.min_samples), (200, 5));
}

#[test]
fn episode_keys_resolve_per_rule() {
    let config = parse_ok(
        "[detector]\nthreshold_multiplier = 4.0\nmin_consecutive = 3\n\
         [[rule]]\nseries = \"fast.*\"\nthreshold_multiplier = 6.0\nresolve_after = 5\n\
         [[rule]]\nseries = \"calm.*\"\nresolve_multiplier = 1.5\ndirection = \"both\"\n",
    );
    let e = |name: &str| config.series_settings(name).episodes;
    // resolve_multiplier follows the rule's own threshold_multiplier.
    let fast = e("fast.x");
    assert_eq!(
        (
            fast.min_consecutive,
            fast.resolve_after,
            fast.resolve_multiplier
        ),
        (3, 5, 6.0)
    );
    let calm = e("calm.x");
    assert_eq!(
        (calm.resolve_after, calm.resolve_multiplier, calm.direction),
        (5, 1.5, Direction::Both)
    );
    assert_eq!(e("other").resolve_multiplier, 4.0);
    // The effective configuration shows the derived key as a comment and
    // reads back the same.
    let text = config.to_toml();
    assert!(
        text.contains("# resolve_multiplier = <threshold_multiplier>"),
        "{text}"
    );
    let again = parse_ok(&text);
    assert_eq!(
        again.series_settings("fast.x"),
        config.series_settings("fast.x")
    );
}

#[test]
fn the_detector_is_chosen_by_name() {
    let config = parse_ok(
        "[detector]\nwindow_size = 40\n[[rule]]\nseries = \"e.*\"\ndetector = \"ewma\"\n\
         [[rule]]\nseries = \"h.*\"\ndetector = \"ewma\"\nhalf_life = 5\n",
    );
    let d = |name: &str| config.series_settings(name).detector;
    assert_eq!(d("x").kind.name, "moving_average");
    assert_eq!((d("e.1").kind.name, d("e.1").half_life), ("ewma", 20.0));
    assert_eq!(d("h.1").half_life, 5.0);
    let again = parse_ok(&config.to_toml());
    assert_eq!(again.series_settings("h.1"), config.series_settings("h.1"));
    let message = only_problem(
        "[detector]\ndetector = \"median\"\n",
        Some("detector.detector"),
        (2, 12),
    );
    assert_eq!(
        message,
        "expected one of \"moving_average\", \"ewma\", \"median_mad\", \"seasonal\", \
         got \"median\""
    );
}

#[test]
fn keys_the_detector_does_not_use_are_noted_not_refused() {
    let config = parse_ok(
        "[detector]\nexclude_anomalies = true\nhalf_life = 4\n\
         [[rule]]\nseries = \"e.*\"\ndetector = \"ewma\"\nmax_excluded_run = 3\nwindow_size = 8\n\
         [[rule]]\nseries = \"f.*\"\ndetector = \"ewma\"\n",
    );
    let notes: Vec<String> = config.notes.0.iter().map(|n| n.to_string()).collect();
    // exclude_anomalies is used by the default detector; half_life by the
    // ewma rules that inherit it; max_excluded_run in an ewma rule is not.
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(
        notes[0],
        "/etc/anomalyd/anomalyd.toml:7:20: rule[1].max_excluded_run: not used by detector \
         ewma (only by \
         moving_average); remove it, or set detector"
    );
    let config = parse_ok("[detector]\ndetector = \"ewma\"\nexclude_anomalies = true\n");
    assert_eq!(config.notes.0.len(), 1);
    assert_eq!(
        config.notes.0[0].key.as_deref(),
        Some("detector.exclude_anomalies")
    );
    assert!(parse_ok(FULL).notes.0.is_empty());
}

#[test]
fn buckets_must_fit_in_the_season() {
    let config = parse_ok(
        "[[rule]]\nseries = \"w.*\"\ndetector = \"seasonal\"\nseason = \"7d\"\nbucket = \"1h\"\nseasons = 4\n",
    );
    let w = config.series_settings("w.1").detector;
    assert_eq!(
        (w.kind.name, w.season, w.bucket, w.seasons),
        ("seasonal", 604_800.0, 3600.0, 4)
    );
    let message = only_problem(
        "[detector]\nseason = \"1h\"\nbucket = \"2h\"\n",
        Some("detector.bucket"),
        (3, 10),
    );
    assert!(
        message.starts_with("bucket (2h) must be at most season (1h)"),
        "{message}"
    );
    let message = only_problem(
        "[[rule]]\nseries = \"a\"\nseason = \"366d\"\nbucket = \"1m\"\n",
        Some("rule[1].bucket"),
        (4, 10),
    );
    assert!(
        message.contains("at most 131072 buckets, got 527040"),
        "{message}"
    );
}

#[test]
fn rules_are_bounded() {
    let rule = "[[rule]]\nseries = \"a\"\n";
    parse_ok(&rule.repeat(MAX_RULES));
    let problems = problems(&rule.repeat(MAX_RULES + 1));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key.as_deref(), Some("rule[10001]"));
    assert!(
        problems[0]
            .message
            .starts_with("at most 10000 [[rule]] tables, got 10001"),
        "{}",
        problems[0]
    );
}

#[test]
fn multiple_problems_are_all_reported() {
    let text = "\
[server]
listen = \"nowhere\"
max_connections = 0
[detector]
window_size = 0
direction = \"sideways\"
bogus = 1
[[rule]]
threshold_multiplier = 2
[[rule]]
series = \"x\"
series_ttl = \"forever\"
[log]
fsync = \"often\"
";
    let problems = problems(text);
    let got: Vec<_> = problems
        .iter()
        .map(|p| (p.key.as_deref().unwrap(), p.position.unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("server.listen", (2, 10)),
            ("server.max_connections", (3, 19)),
            ("detector.window_size", (5, 15)),
            ("detector.direction", (6, 13)),
            ("detector.bogus", (7, 1)),
            ("rule[1]", (8, 1)),
            ("rule[2].series_ttl", (12, 14)),
            ("log.fsync", (14, 9)),
        ]
    );
    let errors = ConfigErrors(problems).to_string();
    assert_eq!(errors.lines().count(), 8);
    assert!(errors.lines().all(|l| l.starts_with(FILE)), "{errors}");
}

#[test]
fn rule_precedence_within_a_file() {
    let config = parse_ok(
        "[[rule]]\nseries = \"cpu.user\"\nwindow_size = 1\n[[rule]]\nseries = \"cpu.*\"\nwindow_size = 2\n[[rule]]\nseries = \"*\"\nwindow_size = 3\n",
    );
    let series: Vec<_> = config.rules.iter().map(|r| r.describe()).collect();
    assert_eq!(series, ["cpu.user", "cpu.*", "*"]);
    assert_eq!(config.series_settings("cpu.user").detector.window_size, 1);
    assert_eq!(config.series_settings("cpu.system").detector.window_size, 2);
    assert_eq!(config.series_settings("mem").detector.window_size, 3);
    // Only the first matching rule applies: keys it does not name come from
    // [detector], not from later rules.
    let config = parse_ok(
        "[[rule]]\nseries = \"a\"\nwindow_size = 7\n[[rule]]\nseries = \"*\"\nthreshold_multiplier = 9\n",
    );
    let a = config.series_settings("a").detector;
    assert_eq!((a.window_size, a.threshold_multiplier), (7, 6.0));
    assert_eq!(config.rule_for("b").unwrap().describe(), "*");
}

/// A tempdir holding `anomalyd.toml` and `conf.d/` with `files`.
fn config_dir(main: &str, files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, main).unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    for (name, text) in files {
        std::fs::write(conf_d.join(name), text).unwrap();
    }
    (dir, path)
}

#[test]
fn conf_d_merges_in_name_order() {
    let (dir, path) = config_dir(
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_series = 5\n[detector]\nwindow_size = 50\ndirection = \"both\"\n",
        &[
            (
                "20-b.toml",
                b"[server]\nmax_series = 7\n[detector]\nwindow_size = 70\n",
            ),
            (
                "10-a.toml",
                b"[server]\nlisten = \"127.0.0.1:2\"\nmax_series = 6\n[log]\nbacklog = 3\n",
            ),
            ("30-c.toml.disabled", b"this is not toml ["),
            ("README", b"not toml either ["),
            (".hidden.toml", b"broken ["),
        ],
    );
    std::fs::create_dir(dir.path().join("conf.d/40-dir.toml")).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:2".parse().unwrap());
    assert_eq!(config.server.max_series, 7);
    assert_eq!(config.detector.window_size, 70);
    assert_eq!(config.detector.direction, Direction::Both);
    assert_eq!(config.log.backlog, 3);
    assert_eq!(config.log.fsync, FsyncPolicy::Interval);
    let conf_d = dir.path().join("conf.d");
    assert_eq!(
        config.files,
        [
            path.clone(),
            conf_d.join("10-a.toml"),
            conf_d.join("20-b.toml")
        ]
    );
}

#[test]
fn rule_precedence_across_files() {
    let (_dir, path) = config_dir(
        "[[rule]]\nseries = \"cpu.*\"\nwindow_size = 1\n[[rule]]\nseries = \"*\"\nwindow_size = 2\n",
        &[
            ("10-a.toml", b"[[rule]]\nseries = \"cpu.user\"\nwindow_size = 3\n[[rule]]\nseries = \"mem.*\"\nwindow_size = 4\n"),
            ("20-b.toml", b"[[rule]]\nseries = \"mem.free\"\nwindow_size = 5\n"),
        ],
    );
    let config = Config::load(&path).unwrap();
    let order: Vec<_> = config
        .rules
        .iter()
        .map(|r| {
            let file = r.file.file_name().unwrap().to_str().unwrap();
            (r.describe().leak() as &str, file)
        })
        .collect();
    assert_eq!(
        order,
        [
            ("mem.free", "20-b.toml"),
            ("cpu.user", "10-a.toml"),
            ("mem.*", "10-a.toml"),
            ("cpu.*", "anomalyd.toml"),
            ("*", "anomalyd.toml"),
        ]
    );
    let window = |s: &str| config.series_settings(s).detector.window_size;
    assert_eq!(window("mem.free"), 5);
    assert_eq!(window("mem.used"), 4);
    assert_eq!(window("cpu.user"), 3);
    assert_eq!(window("cpu.system"), 1);
    assert_eq!(window("disk"), 2);
}

#[test]
fn cross_file_min_samples_names_the_offending_file() {
    let (dir, path) = config_dir(
        "[detector]\nmin_samples = 25\n",
        &[("10-a.toml", b"[detector]\nwindow_size = 20\n")],
    );
    let ConfigErrors(problems) = Config::load(&path).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, path);
    assert_eq!(problems[0].key.as_deref(), Some("detector.min_samples"));
    assert_eq!(problems[0].position, Some((2, 15)));
    let from = format!(
        "(20 from {}:2:15)",
        dir.path().join("conf.d/10-a.toml").display()
    );
    assert!(
        problems[0].message.contains(&from),
        "{}",
        problems[0].message
    );
}

#[test]
fn problems_of_all_files_are_reported() {
    let (dir, path) = config_dir(
        "[detector]\nwindow_size = 0\n",
        &[
            ("10-a.toml", b"[log]\nbacklog = -1\n"),
            ("20-b.toml", b"[server\n"),
            ("30-c.toml", b"x = \"\xff\"\n"),
        ],
    );
    let ConfigErrors(problems) = Config::load(&path).unwrap_err();
    let conf_d = dir.path().join("conf.d");
    let got: Vec<_> = problems
        .iter()
        .map(|p| (p.file.clone(), p.key.clone(), p.position))
        .collect();
    assert_eq!(
        got,
        [
            (
                path.clone(),
                Some("detector.window_size".into()),
                Some((2, 15))
            ),
            (
                conf_d.join("10-a.toml"),
                Some("log.backlog".into()),
                Some((2, 11))
            ),
            (conf_d.join("20-b.toml"), None, Some((1, 8))),
            (conf_d.join("30-c.toml"), None, None),
        ]
    );
    assert_eq!(
        problems[3].message,
        "cannot read configuration file: it is not valid UTF-8"
    );
}

#[test]
fn missing_main_file_is_an_error_missing_conf_d_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anomalyd.toml");
    let ConfigErrors(problems) = Config::load(&path).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].file, path);
    assert_eq!(problems[0].key, None);
    assert_eq!(problems[0].position, None);
    assert!(problems[0].message.contains("not found"));
    assert!(problems[0].message.contains("--config"));

    std::fs::write(&path, "[detector]\nwindow_size = 12\n").unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.detector.window_size, 12);
    assert_eq!(config.files, [path]);
}

#[test]
fn a_directory_as_the_anomaly_log_is_an_error_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[log]\nanomaly_log_file = {:?}\n",
        dir.path().to_str().unwrap()
    );
    let errors = Config::from_toml_str(&text, Path::new("a.toml")).unwrap_err();
    let problem = &errors.0[0];
    assert_eq!(problem.key.as_deref(), Some("log.anomaly_log_file"));
    assert_eq!(problem.position, Some((2, 20)));
    assert!(
        problem.message.contains("is a directory"),
        "{}",
        problem.message
    );
    let file = dir.path().join("anomalies.log");
    let text = format!("[log]\nanomaly_log_file = {:?}\n", file.to_str().unwrap());
    assert!(Config::from_toml_str(&text, Path::new("a.toml")).is_ok());
}

/// Every numeric key at its documented bounds: the bound itself is
/// accepted, one step beyond is refused with the range named. Every key
/// of every section is either here or known not to be numeric, so a new
/// key cannot go without a bound.
#[test]
fn every_numeric_key_has_a_bound_that_check_config_enforces() {
    // (section, key, lowest, below it, highest, above it)
    let bounds: &[(&str, &str, &str, &str, &str, &str)] = &[
        (
            "server",
            "max_body_bytes",
            "1",
            "0",
            "1073741824",
            "1073741825",
        ),
        ("server", "max_connections", "1", "0", "1000000", "1000001"),
        (
            "server",
            "header_read_timeout",
            "\"1ms\"",
            "\"0s\"",
            "\"1d\"",
            "\"86401s\"",
        ),
        (
            "server",
            "idle_timeout",
            "\"1ms\"",
            "\"0s\"",
            "\"1d\"",
            "\"86401s\"",
        ),
        (
            "server",
            "write_timeout",
            "\"1ms\"",
            "\"0s\"",
            "\"1d\"",
            "\"86401s\"",
        ),
        ("server", "max_series", "1", "0", "100000000", "100000001"),
        ("server", "history_points", "1", "0", "100000", "100001"),
        ("server", "history_series", "0", "-1", "1000000", "1000001"),
        ("server", "max_event_streams", "1", "0", "10000", "10001"),
        (
            "server",
            "rate_limit",
            "0",
            "-1",
            "1000000000",
            "1000000001",
        ),
        ("server", "rate_burst", "1", "0", "1000000000", "1000000001"),
        (
            "server",
            "shutdown_grace",
            "\"0s\"",
            "-",
            "\"1h\"",
            "\"3601s\"",
        ),
        ("detector", "window_size", "1", "0", "1000000", "1000001"),
        (
            "detector",
            "threshold_multiplier",
            "0.001",
            "0.0",
            "1000.0",
            "1000.5",
        ),
        ("detector", "min_samples", "1", "0", "1", "-"),
        ("detector", "min_std_dev", "0.0", "-0.5", "1e150", "1e151"),
        (
            "detector",
            "min_relative_std_dev",
            "0.0",
            "-0.5",
            "0.999",
            "1.0",
        ),
        (
            "detector",
            "max_excluded_run",
            "0",
            "-1",
            "1000000",
            "1000001",
        ),
        (
            "detector",
            "series_ttl",
            "\"1ms\"",
            "\"0s\"",
            "\"365d\"",
            "\"366d\"",
        ),
        ("log", "backlog", "1", "0", "10000000", "10000001"),
        ("log", "recent_anomalies", "1", "0", "1000000", "1000001"),
        ("log", "recent_episodes", "0", "-1", "1000000", "1000001"),
        ("detector", "min_consecutive", "1", "0", "10000", "10001"),
        ("detector", "seasons", "1", "0", "100", "101"),
        (
            "detector", "season", "\"5m\"", "\"0s\"", "\"366d\"", "\"367d\"",
        ),
        (
            "detector", "bucket", "\"1s\"", "\"0s\"", "\"1d\"", "\"366d\"",
        ),
        (
            "detector",
            "half_life",
            "0.001",
            "0.0",
            "1000000.0",
            "1000000.5",
        ),
        ("detector", "resolve_after", "1", "0", "10000", "10001"),
        (
            "detector",
            "resolve_multiplier",
            "0.001",
            "0.0",
            "1000.0",
            "1000.5",
        ),
        ("log", "keep", "1", "0", "1000", "1001"),
        (
            "state",
            "snapshot_interval",
            "\"1s\"",
            "\"999ms\"",
            "\"1d\"",
            "\"86401s\"",
        ),
        (
            "log",
            "journal_anomaly_rate",
            "0",
            "-1",
            "1000000",
            "1000001",
        ),
    ];
    let not_numeric = [
        "server.listen",
        "server.socket_mode",
        "server.admin_listen",
        "server.dashboard",
        "server.external_url",
        "server.auth_token_file",
        "server.metrics_require_auth",
        "server.allow_unauthenticated",
        "server.tls_cert_file",
        "server.tls_key_file",
        "server.tls_client_ca_file",
        "detector.direction",
        "detector.severity",
        "detector.detector",
        "detector.exclude_anomalies",
        "log.anomaly_log_file",
        "log.fsync",
        "log.rotate",
        "log.level",
        "log.journal",
        "state.directory",
    ];
    let sections = [
        ("server", ServerKeys::KEYS),
        ("detector", DetectorOverrides::KEYS),
        ("log", LogKeys::KEYS),
        ("state", super::state::StateKeys::KEYS),
    ];
    for (section, keys) in sections {
        for key in keys {
            let dotted = format!("{section}.{key}");
            let bounded = bounds.iter().any(|b| b.0 == section && b.1 == *key);
            assert!(
                bounded || not_numeric.contains(&dotted.as_str()),
                "{dotted} has no bound in this test"
            );
        }
    }
    let parse = |section: &str, key: &str, value: &str| {
        // min_samples must not exceed window_size: test it at window 1.
        let extra = if key == "min_samples" {
            "window_size = 1\n"
        } else {
            ""
        };
        let text = format!("[{section}]\n{extra}{key} = {value}\n");
        Config::from_toml_str(&text, Path::new("bounds.toml"))
    };
    for &(section, key, low, below, high, above) in bounds {
        for ok in [low, high] {
            assert!(
                parse(section, key, ok).is_ok(),
                "{section}.{key} = {ok} is refused"
            );
        }
        for bad in [below, above] {
            if bad == "-" {
                continue;
            }
            let errors = parse(section, key, bad).expect_err(&format!("{section}.{key} = {bad}"));
            let problem = &errors.0[0];
            assert_eq!(
                problem.key.as_deref(),
                Some(format!("{section}.{key}").as_str())
            );
            assert!(
                problem.message.contains("must be") || problem.message.contains("must not"),
                "{section}.{key} = {bad}: {}",
                problem.message
            );
        }
    }
}

#[test]
fn alert_sinks_are_read_and_checked() {
    let config = parse_ok(concat!(
        "[server]\nexternal_url = \"https://anomalyd.example/\"\n",
        "[detector]\nseverity = \"page\"\n",
        "[[alert.alertmanager]]\nurl = \"http://127.0.0.1:9093\"\n",
        "[[alert.alertmanager]]\nurl = \"http://am2:9093/am/\"\nresend_interval = \"30s\"\ntimeout = \"2s\"\nqueue_size = 5\n",
        "[[alert.webhook]]\nurl = \"http://127.0.0.1:8080/hook\"\nheaders = { Authorization = \"Bearer s3cret\" }\n",
        "[[rule]]\nseries = \"db.*\"\nseverity = \"critical\"\n",
    ));
    assert_eq!(
        config.server.effective_external_url(None),
        "https://anomalyd.example"
    );
    assert_eq!(config.detector.severity, "page");
    assert_eq!(
        config.rules[0].overrides.severity.as_deref(),
        Some("critical")
    );
    let [first, second] = &config.alert.alertmanagers[..] else {
        panic!("{:?}", config.alert)
    };
    assert_eq!(first.resend_interval, Duration::from_secs(60));
    assert_eq!(first.timeout, Duration::from_secs(10));
    assert_eq!(first.queue_size, 10_000);
    assert_eq!(second.url.authority, "am2:9093");
    assert_eq!(second.url.join("/api/v2/alerts"), "/am/api/v2/alerts");
    assert_eq!(second.resend_interval, Duration::from_secs(30));
    assert_eq!(second.queue_size, 5);
    let hook = &config.alert.webhooks[0];
    assert_eq!(
        hook.headers,
        [("Authorization".to_owned(), "Bearer s3cret".to_owned())]
    );
    // --check-config shows the sinks but not the header values.
    let shown = config.to_toml();
    assert!(shown.contains("[[alert.webhook]]\nurl = \"http://127.0.0.1:8080/hook\"\n# headers = { \"Authorization\" = \"<hidden>\" }"), "{shown}");
    assert!(!shown.contains("s3cret"));
    assert!(shown.contains("resend_interval = \"30s\""), "{shown}");
    // The default external URL follows listen.
    assert_eq!(
        Config::default().server.effective_external_url(None),
        "http://127.0.0.1:8001"
    );
    assert_eq!(
        Config::default()
            .server
            .effective_external_url(Some("127.0.0.1:4242".parse().unwrap())),
        "http://127.0.0.1:4242"
    );

    let message = only_problem(
        "[[alert.alertmanager]]\ntimeout = \"1s\"\n",
        Some("alert.alertmanager[1]"),
        (1, 1),
    );
    assert!(
        message.starts_with("missing required key \"url\""),
        "{message}"
    );
    // https:// trusts ca_file's CAs; a file that is not there is named.
    let message = only_problem(
        "[[alert.webhook]]\nurl = \"https://x/hook\"\nca_file = \"/nonexistent/ca.pem\"\n",
        Some("alert.webhook[1].ca_file"),
        (3, 11),
    );
    assert!(
        message.contains("cannot read /nonexistent/ca.pem"),
        "{message}"
    );
    assert!(message.contains("set ca_file"), "{message}");
    let message = only_problem(
        "[[alert.webhook]]\nurl = \"http://x/hook\"\nca_file = \"/etc/ca.pem\"\n",
        Some("alert.webhook[1].ca_file"),
        (3, 11),
    );
    assert!(
        message.contains("ca_file is for an https:// url"),
        "{message}"
    );
    let message = only_problem(
        "[[alert.webhook]]\nurl = \"http://x\"\nretries = 3\n",
        Some("alert.webhook[1].retries"),
        (3, 1),
    );
    assert!(
        message.contains("expected one of: url, ca_file, proxy_url, headers, timeout, queue_size"),
        "{message}"
    );
    // proxy_url: an http:// proxy; its password is not shown.
    let message = only_problem(
        "[[alert.webhook]]\nurl = \"https://x/hook\"\nproxy_url = \"https://proxy:3128\"\n",
        Some("alert.webhook[1].proxy_url"),
        (3, 13),
    );
    assert!(message.contains("plain http://"), "{message}");
    let proxied = parse_ok(concat!(
        "[[alert.alertmanager]]\nurl = \"http://am:9093\"\nproxy_url = \"http://proxy:3128\"\n",
        "[[alert.webhook]]\nurl = \"https://x/hook\"\nproxy_url = \"http://bob:pa55@proxy:3128\"\n",
    ));
    let proxy = proxied.alert.alertmanagers[0].proxy.as_ref().unwrap();
    assert_eq!(proxy.authority, "proxy:3128");
    let shown = proxied.to_toml();
    assert!(
        shown.contains("\nproxy_url = \"http://proxy:3128\"\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\n# proxy_url = \"http://bob:<hidden>@proxy:3128\"\n"),
        "{shown}"
    );
    assert!(!shown.contains("pa55"), "{shown}");
    let message = only_problem(
        "[[alert.webhook]]\nurl = \"http://x\"\nheaders = { Host = \"y\" }\n",
        Some("alert.webhook[1].headers.Host"),
        (3, 13),
    );
    assert!(message.contains("set by anomalyd"), "{message}");
    let message = only_problem("[alert]\nslack = 1\n", Some("alert.slack"), (2, 1));
    assert!(
        message.contains("expected one of: alertmanager, webhook"),
        "{message}"
    );
    let message = only_problem(
        "[detector]\nseverity = \"\"\n",
        Some("detector.severity"),
        (2, 12),
    );
    assert!(message.contains("non-empty"), "{message}");
}

#[test]
fn protected_mode_refuses_an_open_address_without_authentication() {
    let message = only_problem(
        "[server]\nlisten = \"0.0.0.0:8001\"\n",
        Some("server.listen"),
        (2, 10),
    );
    assert!(
        message.starts_with("protected mode: 0.0.0.0:8001"),
        "{message}"
    );
    assert!(message.contains("auth_token_file"), "{message}");
    assert!(
        message.contains("allow_unauthenticated = true"),
        "{message}"
    );
    // Loopback, IPv6 loopback and an explicit opt-out are fine.
    parse_ok("[server]\nlisten = \"127.0.0.2:8001\"\n");
    parse_ok("[server]\nlisten = \"[::1]:8001\"\n");
    let allowed = parse_ok("[server]\nlisten = \"[::]:8001\"\nallow_unauthenticated = true\n");
    assert!(allowed.server.allow_unauthenticated);
}

#[test]
fn the_token_file_is_read_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# collectors\n0123456789abcdef0123\n").unwrap();
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:8001\"\nauth_token_file = \"{}\"\n",
        tokens.display()
    );
    let config = parse_ok(&text);
    let set = config.server.auth_tokens.as_ref().expect("tokens read");
    assert!(set.check(b"0123456789abcdef0123").is_some());
    // The effective configuration names the file, never a token.
    let printed = config.to_toml();
    assert!(printed.contains("auth_token_file = "), "{printed}");
    assert!(!printed.contains("0123456789abcdef0123"), "{printed}");

    // A token rotated in the file makes a different configuration (so a
    // reload applies it).
    std::fs::write(&tokens, "fedcba9876543210fedc\n").unwrap();
    assert_ne!(parse_ok(&text), config);

    std::fs::write(&tokens, "short\n").unwrap();
    let problem = &problems(&text)[0];
    assert_eq!(problem.key.as_deref(), Some("server.auth_token_file"));
    assert!(problem.message.contains("line 1"), "{problem}");
    std::fs::remove_file(&tokens).unwrap();
    let problem = &problems(&text)[0];
    assert!(problem.message.contains("cannot read"), "{problem}");
}

#[test]
fn a_token_file_every_user_can_read_is_noted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "0123456789abcdef0123\n").unwrap();
    let text = format!("[server]\nauth_token_file = \"{}\"\n", tokens.display());
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(parse_ok(&text).notes.0.is_empty());
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let notes = parse_ok(&text).notes.0;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].message.contains("chmod 0640"), "{}", notes[0]);
}

#[test]
fn rate_burst_follows_rate_limit() {
    assert_eq!(Config::default().server.client_limit(), None);
    let config = parse_ok("[server]\nrate_limit = 500\n");
    let limit = config.server.client_limit().unwrap();
    assert_eq!((limit.rate, limit.burst), (500.0, 500.0));
    let config = parse_ok("[server]\nrate_limit = 500\nrate_burst = 2000\n");
    assert_eq!(config.server.client_limit().unwrap().burst, 2000.0);
}
