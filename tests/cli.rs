use serde_json::Value;

use crate::helper::{MountPoint, TestDaemon, free_port, point, run_anomalyd, write_config};

#[test]
fn check_config_prints_the_effective_config_or_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 0, "[detector]\nwindow_size = 50\n");
    let out = run_anomalyd(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "window_size = 50",
        "threshold_multiplier",
        "max_body_bytes",
        "fsync",
        "recent_anomalies",
        "series_ttl",
    ] {
        assert!(text.contains(key), "effective config lacks {key}:\n{text}");
    }

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[detector]\nwindow_size = 0\ndirection = \"sideways\"\n[server]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = run_anomalyd(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        bad.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(78));
    let errors = String::from_utf8(out.stderr).unwrap();
    let bad_name = bad.display().to_string();
    for needle in [
        format!("{bad_name}:2:15: detector.window_size"),
        format!("{bad_name}:3:13: detector.direction"),
        format!("{bad_name}:5:10: server.listen"),
    ] {
        assert!(errors.contains(&needle), "missing {needle:?} in:\n{errors}");
    }

    let out = run_anomalyd(&["--config".as_ref(), "/nonexistent/anomalyd.toml".as_ref()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/anomalyd.toml"));
}

/// An unknown detector is a configuration error naming the valid ones; a
/// key the chosen detector does not use is a warning, not an error.
#[test]
fn check_config_names_the_detectors_and_warns_of_unused_keys() {
    let dir = tempfile::tempdir().unwrap();
    let check = |config: &str| {
        let path = write_config(dir.path(), 0, config);
        run_anomalyd(&[
            "--check-config".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
        ])
    };
    let out = check("[detector]\ndetector = \"prophet\"\n");
    assert_eq!(out.status.code(), Some(78));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains("detector.detector: expected one of \"moving_average\", \"ewma\"")
            && errors.contains("\"prophet\""),
        "{errors}"
    );

    let out = check("[detector]\ndetector = \"ewma\"\nexclude_anomalies = true\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains(":3:21: detector.exclude_anomalies: not used by detector ewma"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("detector = \"ewma\""));
}

#[test]
fn port_in_use_exits_1() {
    let daemon = TestDaemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), daemon.addr.port(), "");
    let out = run_anomalyd(&["--config".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&daemon.addr.to_string()));
}

#[test]
fn runs_on_built_in_defaults_and_picks_up_a_config_file_that_appears_later() {
    // In a private mount namespace an empty temporary directory stands at
    // /etc/anomalyd: the test neither depends on nor touches the machine's
    // configuration. Only the mount point itself must exist.
    let _mount_point = MountPoint::create("/etc/anomalyd");
    let etc = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command.arg(r#"mount --bind "$1" /etc/anomalyd && exec "$2""#);
    command
        .arg("sh")
        .arg(etc.path())
        .arg(crate::helper::binary("anomalyd"));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TestDaemon::spawn_command(dir, command);
    assert_eq!(daemon.addr.to_string(), "127.0.0.1:8001");
    // The first diagnostic says what starts, and on which configuration.
    let line = daemon.wait_for_stderr("Starting anomalyd.");
    assert!(
        line.contains("version=0.1.0") && line.contains("commit="),
        "{line}"
    );
    assert!(line.contains("built-in defaults"), "{line}");
    // The built-in defaults: a window of 120 points, k = 6.
    for i in 0..120 {
        daemon.detect(&point("d", if i % 2 == 0 { 1.0 } else { 2.0 }, i as f64));
    }
    let reply = daemon.detect(&point("d", 99.0, 120.0)).json();
    assert_eq!(reply["anomaly"], true);
    let k = |r: &Value| {
        (r["threshold"].as_f64().unwrap() - r["mean"].as_f64().unwrap())
            / r["std_dev"].as_f64().unwrap()
    };
    assert!((k(&reply) - 6.0).abs() < 1e-9, "{reply}");
    let log = daemon.dir.path().join("anomalies.log");
    assert_eq!(
        crate::helper::read_lines(&log).len(),
        1,
        "the log lands in the working directory"
    );

    // The operator creates the file at the default path: it is applied
    // without a restart, windows kept.
    let before = daemon.reloads_ok();
    std::fs::write(
        etc.path().join("anomalyd.toml"),
        "[detector]\nthreshold_multiplier = 5.0\n",
    )
    .unwrap();
    daemon.wait_for_reload(before);
    daemon.wait_for_stderr("/etc/anomalyd/anomalyd.toml");
    let reply = daemon.detect(&point("d", 1.5, 121.0)).json();
    assert_eq!(reply["warming_up"], false, "{reply}");
    assert!((k(&reply) - 5.0).abs() < 1e-9, "{reply}");
}

#[test]
fn replay_finds_the_same_anomalies_as_the_server() {
    let config = "[detector]\nwindow_size = 20\ndirection = \"both\"\n[[rule]]\nseries = \"b*\"\nthreshold_multiplier = 2.0\n";
    let daemon = TestDaemon::start(config);
    // A deterministic stream with spikes in two series.
    let mut ndjson = String::new();
    let mut x: u64 = 12345;
    for i in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let noise = (x % 1000) as f64 / 1000.0;
        let series = if i % 2 == 0 { "alpha" } else { "beta" };
        // Bursts at 300..304: two spikes in a row in each series, one
        // episode each.
        let spike = if i % 97 == 0 || (300..304).contains(&i) {
            40.0
        } else if i % 89 == 0 {
            -25.0
        } else {
            0.0
        };
        ndjson.push_str(&point(series, 50.0 + noise + spike, 1000.0 + i as f64));
        ndjson.push('\n');
    }
    let reply = daemon.detect_ndjson(&ndjson);
    assert_eq!(reply.status, 200);
    let server: Vec<Value> = reply.json()["anomalies"].as_array().unwrap().clone();
    assert!(server.len() >= 8, "the stream has spikes: {}", server.len());
    let opened: Vec<(Value, Value)> = reply.json()["episodes_opened"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["series"].clone(), e["episode"].clone()))
        .collect();
    assert!(
        !opened.is_empty() && opened.len() < server.len(),
        "bursts are one episode each: {} episodes, {} anomalies",
        opened.len(),
        server.len()
    );

    let config = daemon.dir.path().join("anomalyd.toml");
    let input = daemon.dir.path().join("points.ndjson");
    std::fs::write(&input, &ndjson).unwrap();
    let out = run_anomalyd(&[
        "replay".as_ref(),
        "--all-points".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        input.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed, server);
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(
        summary.contains("alpha") && summary.contains("beta"),
        "{summary}"
    );

    // CSV of the same stream, and a bad line.
    let csv_path = daemon.dir.path().join("points.csv");
    let mut csv = String::from("timestamp,value,series\n");
    for line in ndjson.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        csv.push_str(&format!(
            "{},{},{}\n",
            v["timestamp"],
            v["value"],
            v["series"].as_str().unwrap()
        ));
    }
    std::fs::write(&csv_path, &csv).unwrap();
    let out = run_anomalyd(&[
        "replay".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        csv_path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let from_csv: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Without --all-points: one line per episode, the record of the point
    // that opened it, as the server saw it.
    let episodes: Vec<(Value, Value)> = from_csv
        .iter()
        .map(|r| (r["series"].clone(), r["episode"].clone()))
        .collect();
    assert_eq!(episodes, opened);
    let opening_records: Vec<&Value> = server
        .iter()
        .filter(|r| opened.contains(&(r["series"].clone(), r["episode"].clone())))
        .filter(|r| {
            // The opening point's id is its timestamp in microseconds.
            r["episode"].as_u64() == Some((r["timestamp"].as_f64().unwrap() * 1e6).round() as u64)
        })
        .collect();
    assert_eq!(from_csv.iter().collect::<Vec<_>>(), opening_records);

    csv.push_str("1700,abc,alpha\n");
    std::fs::write(&csv_path, &csv).unwrap();
    let out = run_anomalyd(&["replay".as_ref(), csv_path.as_os_str()]);
    assert_eq!(out.status.code(), Some(65));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains(&format!("{}:602", csv_path.display())),
        "{message}"
    );
    let out = run_anomalyd(&[
        "replay".as_ref(),
        "--skip-bad".as_ref(),
        csv_path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 1 bad line"));
}

#[test]
fn restart_on_same_port_after_kill_keeps_serving() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_in(dir, port, "");
    let dir = daemon.kill9();
    let daemon = TestDaemon::start_in(dir, port, "");
    assert_eq!(daemon.detect(r#"{"value": 1}"#).status, 200);
}

/// `replay` on hostile input: every problem is a bad line with its number,
/// memory stays bounded, and `--skip-bad` says what it skipped.
#[test]
fn replay_names_every_bad_line_and_bounds_memory() {
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // A line without end: stops at the bound (1 MiB by default), exit 65.
    let out = run_anomalyd(&["replay".as_ref(), "/dev/zero".as_ref()]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/dev/zero:1: the line is longer than 1048576 bytes"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let ndjson = dir.path().join("points.ndjson");
    let mut text = b"{\"value\":1}\n{\"value\":2}\n".to_vec();
    text.extend_from_slice(b"{\"series\":\"\xff\",\"value\":3}\n");
    text.extend_from_slice(&vec![b' '; 2 << 20]);
    text.extend_from_slice(b"\n{\"value\":4}\n");
    std::fs::write(&ndjson, &text).unwrap();
    let out = run_anomalyd(&["replay".as_ref(), ndjson.as_os_str()]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "non-UTF-8 is a bad line: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("points.ndjson:3:"),
        "{}",
        stderr(&out)
    );
    let out = run_anomalyd(&["replay".as_ref(), "--skip-bad".as_ref(), ndjson.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("skipped 2 bad line(s)"), "{err}");
    assert!(
        err.contains("points.ndjson:3:") && err.contains("points.ndjson:4:"),
        "{err}"
    );
    assert!(
        err.contains("(total)                                     3"),
        "{err}"
    );

    // A CSV header with a byte order mark is read; a repeated column is not.
    let csv = dir.path().join("points.csv");
    std::fs::write(&csv, b"\xEF\xBB\xBFtimestamp,value\n1,10\n2,11\n").unwrap();
    let out = run_anomalyd(&["replay".as_ref(), csv.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&csv, "value,value\n1,2\n").unwrap();
    let out = run_anomalyd(&["replay".as_ref(), csv.as_os_str()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("`value` appears twice"),
        "{}",
        stderr(&out)
    );

    // An empty input is no error, but says so.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let out = run_anomalyd(&["replay".as_ref(), empty.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no points read"), "{}", stderr(&out));
}

/// `--check-config` also checks that the anomaly log can be written, as
/// the user running it, and creates nothing.
#[test]
fn check_config_checks_that_the_anomaly_log_can_be_written() {
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("logs/anomalyd/anomalies.log");
    let config = write_config(
        dir.path(),
        0,
        &format!(
            "[log]\nanomaly_log_file = {:?}\n",
            missing.to_str().unwrap()
        ),
    );
    let out = run_anomalyd(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("will create it"), "{}", stderr(&out));
    assert!(!dir.path().join("logs").exists(), "nothing created");

    // A read-only file system (root ignores permissions, not this).
    let ro = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
        .arg(ro.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    let blocked = ro.path().join("anomalies.log");
    let config = write_config(
        dir.path(),
        0,
        &format!(
            "[log]\nanomaly_log_file = {:?}\n",
            blocked.to_str().unwrap()
        ),
    );
    let out = run_anomalyd(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(ro.path())
        .status();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("anomaly_log_file") && stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
}

/// `anomalyd evaluate` scores candidates on the generator's labelled
/// points; bad labels are exit 65, a bad candidate 78.
#[test]
fn evaluate_scores_candidates_on_labelled_points() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(
        path("gen.toml"),
        "seed = 5\ndata_frequency = 60.0\nnoise = 1.0\nseason_amplitude = 0.0\n\
         anomaly_probability = 0.005\nanomaly_magnitude = [8.0, 12.0]\n\
         [[series]]\nname = \"a\"\n[[series]]\nname = \"b\"\nburst_probability = 1.0\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::helper::binary("anomaly-generator"))
        .args(["--config", path("gen.toml").to_str().unwrap()])
        .args(["--count", "3000", "--stdout", "--start-time", "1700000000"])
        .args(["--labels", path("labels.ndjson").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(path("points.ndjson"), &out.stdout).unwrap();
    std::fs::write(
        path("good.toml"),
        "[detector]\nwindow_size = 60\nthreshold_multiplier = 5.0\n",
    )
    .unwrap();
    std::fs::write(
        path("blind.toml"),
        "[detector]\nthreshold_multiplier = 1000.0\n",
    )
    .unwrap();
    let evaluate = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["evaluate".as_ref(), "--labels".as_ref()];
        let labels = path("labels.ndjson");
        let points = path("points.ndjson");
        let owned: Vec<std::path::PathBuf> = extra.iter().map(|e| path(e)).collect();
        args.push(labels.as_os_str());
        for (flag, file) in extra.iter().zip(&owned) {
            if flag.ends_with(".toml") {
                args.push("--config".as_ref());
                args.push(file.as_os_str());
            } else {
                args.push(std::ffi::OsStr::new(flag));
            }
        }
        args.push(points.as_os_str());
        run_anomalyd(&args)
    };
    let out = evaluate(&["good.toml", "blind.toml", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scores: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let (good, blind) = (&scores[0], &scores[1]);
    assert!(good["candidate"].as_str().unwrap().ends_with("good.toml"));
    assert!(good["windows"].as_u64().unwrap() >= 10, "{good}");
    assert!(good["recall"].as_f64().unwrap() >= 0.8, "{good}");
    assert!(good["precision"].as_f64().unwrap() >= 0.5, "{good}");
    assert_eq!(good["points"], 6000);
    assert_eq!(good["series"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&blind["episodes"], &blind["recall"]),
        (&Value::from(0), &Value::from(0.0))
    );
    // The table: a header and one row per candidate; the built-in
    // defaults when no candidate is named.
    let out = evaluate(&[]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("candidate ") && table.contains("\nbuilt-in defaults "),
        "{table}"
    );
    assert_eq!(table.lines().count(), 2);

    std::fs::write(path("labels.ndjson"), "{\"series\": \"a\"}\n").unwrap();
    let out = evaluate(&[]);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("labels.ndjson:1: no `timestamp` number")
    );
    std::fs::write(path("bad.toml"), "[detector]\ndetector = \"nope\"\n").unwrap();
    assert_eq!(evaluate(&["bad.toml"]).status.code(), Some(78));
    // Outside evaluate, one --config only.
    let a = path("good.toml");
    let out = run_anomalyd(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        a.as_os_str(),
        "--config".as_ref(),
        a.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
