use std::fs;
use std::path::Path;

use crate::helper::{TestDaemon, binary, point, read_lines, wait_until, write_config};

/// The multiplier `k` a reply was judged with: `(threshold - mean) / σ`.
fn multiplier(reply: &serde_json::Value) -> f64 {
    let mean = reply["mean"].as_f64().expect("mean");
    let std_dev = reply["std_dev"].as_f64().expect("std_dev");
    let threshold = reply["threshold"].as_f64().expect("threshold");
    (threshold - mean) / std_dev
}

/// Config text with a fixed listen port and the log in `dir`.
fn config_text(dir: &Path, detector: &str) -> String {
    format!(
        "[detector]\n{detector}\n[log]\nanomaly_log_file = \"{}\"\n",
        dir.join("anomalies.log").display()
    )
}

/// Replaces `path` the way vim and `sed -i` do: write a new file, rename it
/// over the old one.
fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Warms up series `s` with a window of 4: 10, 12, 10, 12.
fn warm_up(daemon: &TestDaemon) {
    for (i, v) in [10.0, 12.0, 10.0, 12.0].into_iter().enumerate() {
        daemon.detect(&point("s", v, i as f64));
    }
}

#[test]
fn a_file_renamed_over_the_config_applies_and_keeps_windows() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\nthreshold_multiplier = 3.0\n");
    warm_up(&daemon);
    let reply = daemon.detect(&point("s", 11.0, 4.0)).json();
    assert!((multiplier(&reply) - 3.0).abs() < 1e-9, "{reply}");

    let before = daemon.reloads_ok();
    let path = daemon.dir.path().join("anomalyd.toml");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("threshold_multiplier = 3.0", "threshold_multiplier = 5.0");
    rename_over(&path, &text);
    daemon.wait_for_reload(before);

    let reply = daemon.detect(&point("s", 11.0, 5.0)).json();
    assert_eq!(reply["warming_up"], false, "the window survived: {reply}");
    // Window 12, 10, 12, 11.
    assert_eq!(reply["mean"], 11.25);
    assert!((multiplier(&reply) - 5.0).abs() < 1e-9, "{reply}");
}

#[test]
fn a_swapped_symlink_is_seen_as_kubernetes_does_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let port = crate::helper::free_port();
    let listen = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n");
    for (version, k) in [("..v1", 3.0), ("..v2", 5.0)] {
        fs::create_dir(root.join(version)).unwrap();
        let text = config_text(
            &root,
            &format!("window_size = 4\nthreshold_multiplier = {k:?}"),
        ) + &listen;
        fs::write(root.join(version).join("anomalyd.toml"), text).unwrap();
    }
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/anomalyd.toml", root.join("anomalyd.toml")).unwrap();
    let config = root.join("anomalyd.toml");
    let daemon = TestDaemon::spawn(dir, &["--config", config.to_str().unwrap()]);
    warm_up(&daemon);
    let reply = daemon.detect(&point("s", 11.0, 4.0)).json();
    assert!((multiplier(&reply) - 3.0).abs() < 1e-9, "{reply}");

    let before = daemon.reloads_ok();
    // The atomic swap: a new symlink renamed over `..data`. The main
    // file's own symlink and mtime do not change.
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    daemon.wait_for_reload(before);

    let reply = daemon.detect(&point("s", 11.0, 5.0)).json();
    assert_eq!(reply["warming_up"], false, "{reply}");
    assert!((multiplier(&reply) - 5.0).abs() < 1e-9, "{reply}");
}

#[test]
fn conf_d_files_added_and_removed_resize_windows_keeping_recent_points() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    warm_up(&daemon);
    daemon.detect(&point("s", 11.0, 4.0)); // window: 12, 10, 12, 11

    // conf.d does not exist at start: its creation must be seen too.
    let conf_d = daemon.dir.path().join("conf.d");
    fs::create_dir(&conf_d).unwrap();
    let before = daemon.reloads_ok();
    fs::write(
        conf_d.join("50-window.toml"),
        "[detector]\nwindow_size = 3\n",
    )
    .unwrap();
    daemon.wait_for_reload(before);
    let reply = daemon.detect(&point("s", 14.0, 5.0)).json();
    // The shrunk window kept the three most recent points: 10, 12, 11.
    assert_eq!(reply["warming_up"], false, "{reply}");
    assert_eq!(reply["mean"], 11.0, "{reply}");

    let before = daemon.reloads_ok();
    fs::remove_file(conf_d.join("50-window.toml")).unwrap();
    daemon.wait_for_reload(before);
    // Back to 4: the window holds 3 points (12, 11, 14), so it warms up.
    let reply = daemon.detect(&point("s", 11.0, 6.0)).json();
    assert_eq!(reply["warming_up"], true, "{reply}");
    let reply = daemon.detect(&point("s", 11.0, 7.0)).json();
    assert_eq!(reply["warming_up"], false, "{reply}");
    assert_eq!(reply["mean"], 12.0, "12, 11, 14, 11: {reply}");
}

#[test]
fn an_invalid_file_keeps_the_old_config_until_it_is_fixed() {
    let mut daemon = TestDaemon::start("[detector]\nwindow_size = 4\nthreshold_multiplier = 3.0\n");
    warm_up(&daemon);
    assert_eq!(daemon.get("/ready").status, 200);
    let path = daemon.dir.path().join("anomalyd.toml");
    let good = fs::read_to_string(&path).unwrap();

    rename_over(
        &path,
        &good.replace(
            "threshold_multiplier = 3.0",
            "threshold_multiplier = \"high\"",
        ),
    );
    let reply = wait_until("/healthz to report the failed reload", || {
        let reply = daemon.get("/healthz");
        (reply.json()["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty()))
        .then_some(reply)
    });
    assert_eq!(reply.status, 200, "still live");
    let warnings = reply.json()["warnings"].to_string();
    assert!(
        warnings.contains("anomalyd.toml:3:") && warnings.contains("detector.threshold_multiplier"),
        "{warnings}"
    );
    assert_eq!(daemon.metric("anomalyd_config_last_reload_successful"), 0.0);
    // Still ready: it serves on the previous configuration, and a bad file
    // pushed to every node must not take them all out of a load balancer.
    let ready = daemon.get("/ready");
    assert_eq!(ready.status, 200, "{}", ready.json());
    // One line, with its level, and the problem on it.
    let line = daemon.wait_for_stderr("Configuration reload failed");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("anomalyd.toml:3:24: detector.threshold_multiplier"),
        "{line}"
    );
    // Still serving, on the old settings.
    let reply = daemon.detect(&point("s", 11.0, 4.0)).json();
    assert!((multiplier(&reply) - 3.0).abs() < 1e-9, "{reply}");
    assert_eq!(daemon.get("/healthz").status, 200);

    rename_over(
        &path,
        &good.replace("threshold_multiplier = 3.0", "threshold_multiplier = 4.0"),
    );
    wait_until("/healthz to clear the warning", || {
        (daemon.get("/healthz").json()["warnings"] == serde_json::json!([])).then_some(())
    });
    assert_eq!(daemon.metric("anomalyd_config_last_reload_successful"), 1.0);
    let reply = daemon.detect(&point("s", 11.0, 5.0)).json();
    assert!((multiplier(&reply) - 4.0).abs() < 1e-9, "{reply}");
}

#[test]
fn a_new_listen_address_waits_for_a_restart_and_the_rest_applies() {
    let mut daemon = TestDaemon::start("");
    let path = daemon.dir.path().join("anomalyd.toml");
    let port = crate::helper::free_port();
    let text = fs::read_to_string(&path).unwrap().replace(
        &format!("listen = \"127.0.0.1:{}\"", 0),
        &format!("listen = \"127.0.0.1:{port}\"\nmax_body_bytes = 100"),
    );
    assert!(text.contains("max_body_bytes"), "{text}");
    let before = daemon.reloads_ok();
    rename_over(&path, &text);
    daemon.wait_for_reload(before);
    let line = daemon.wait_for_stderr("only a restart applies it");
    assert!(line.contains("server.listen"), "{line}");
    // Same address, new body limit.
    let big = format!("[{}]", vec![point("x", 1.0, 1.0); 5].join(","));
    assert_eq!(daemon.detect(&big).status, 413);
}

#[test]
fn a_new_anomaly_log_path_takes_later_anomalies() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    warm_up(&daemon);
    assert_eq!(
        daemon.detect(&point("s", 100.0, 4.0)).json()["logged"],
        true
    );
    let old = daemon.log_path();
    let new = daemon.dir.path().join("new/anomalies.log");
    let path = daemon.dir.path().join("anomalyd.toml");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace(old.to_str().unwrap(), new.to_str().unwrap());
    let before = daemon.reloads_ok();
    rename_over(&path, &text);
    daemon.wait_for_reload(before);
    for (i, v) in [10.0, 12.0, 10.0, 12.0].into_iter().enumerate() {
        daemon.detect(&point("t", v, i as f64));
    }
    assert_eq!(
        daemon.detect(&point("t", 100.0, 4.0)).json()["logged"],
        true
    );
    assert_eq!(read_lines(&old).len(), 1);
    let lines = read_lines(&new);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("\"series\":\"t\""), "{lines:?}");
}

#[test]
fn the_log_level_follows_the_config_when_rust_log_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        0,
        "[log]\nlevel = \"warn\"\nanomaly_log_file = \"a.log\"\n",
    );
    let mut command = std::process::Command::new(binary("anomalyd"));
    command.args(["--config", path.to_str().unwrap()]);
    command.env_remove("RUST_LOG");
    let mut daemon = TestDaemon::spawn_command(dir, command);
    let before = daemon.reloads_ok();
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"warn\"", "\"info\"");
    rename_over(&path, &text);
    daemon.wait_for_reload(before);
    let line = daemon.wait_for_stderr("Configuration reloaded.");
    assert!(line.contains("log.level: \"warn\" -> \"info\""), "{line}");
    assert!(
        !daemon.stderr().iter().any(|l| l.contains("Listening.")),
        "info lines were hidden at level warn: {:?}",
        daemon.stderr()
    );
}

#[test]
fn an_unchanged_save_reloads_nothing() {
    let mut daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    let path = daemon.dir.path().join("anomalyd.toml");
    let text = fs::read_to_string(&path).unwrap();
    let before = daemon.reloads_ok();
    // Saved unchanged, then rewritten with only a comment: nothing to apply.
    rename_over(&path, &text);
    rename_over(&path, &format!("# edited\n{text}"));
    // A real change afterwards is the only reload.
    rename_over(&path, &text.replace("window_size = 4", "window_size = 5"));
    daemon.wait_for_reload(before);
    daemon.wait_for_stderr("Configuration reloaded.");
    let reloads = daemon
        .stderr()
        .iter()
        .filter(|l| l.contains("Configuration reloaded."))
        .count();
    assert_eq!(reloads, 1, "{:?}", daemon.stderr());
    assert_eq!(daemon.reloads_ok(), before + 1.0);
}

/// A change of a key that needs a restart is reported once. Its reload
/// applies nothing, so it logs nothing more; with the daemon's stderr
/// written into the configuration directory, a reload that logged would
/// trigger the next one (14 reloads in 3 s, idle, before the fix).
#[test]
fn a_restart_only_change_is_reported_once_and_does_not_feed_itself() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helper::free_port();
    let detector = "window_size = 4\nthreshold_multiplier = 3.0\n";
    let config = write_config(dir.path(), port, &config_text(dir.path(), detector));
    let stderr_log = dir.path().join("stderr.log");
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec "$0" --config "$1" 2>>"$2""#)
        .arg(binary("anomalyd"))
        .arg(&config)
        .arg(&stderr_log);
    let daemon = TestDaemon::spawn_command(dir, command);
    let warnings = || {
        fs::read_to_string(&stderr_log)
            .unwrap_or_default()
            .matches("only a restart applies it")
            .count()
    };
    let before = daemon.reloads_ok();
    let text = fs::read_to_string(&config).unwrap();
    let other_port = crate::helper::free_port();
    let moved = text.replace(&format!(":{port}\""), &format!(":{other_port}\""));
    assert_ne!(moved, text);
    rename_over(&config, &moved);
    wait_until("the restart-only warning", || {
        (warnings() == 1).then_some(())
    });

    // A change that applies now: exactly one more reload, and still one
    // warning, whatever the reloads wrote into the directory meanwhile.
    rename_over(
        &config,
        &moved.replace("threshold_multiplier = 3.0", "threshold_multiplier = 4.0"),
    );
    daemon.wait_for_reload(before);
    warm_up(&daemon);
    let reply = daemon.detect(&point("s", 11.0, 9.0)).json();
    assert!((multiplier(&reply) - 4.0).abs() < 1e-9, "{reply}");
    assert_eq!(daemon.reloads_ok(), before + 1.0);
    assert_eq!(warnings(), 1);
    assert_eq!(daemon.addr.port(), port, "still on the port it started on");
}
