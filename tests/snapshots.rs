use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helper::{TestDaemon, Tmpfs, binary};

/// The `[state]` table of a daemon whose snapshots go to `dir/state`.
fn state_table(dir: &Path, extra: &str) -> String {
    format!(
        "[state]\ndirectory = \"{}\"\n{extra}",
        dir.join("state").display()
    )
}

/// A calm but varied value for the `i`-th point (1-based).
fn calm(i: u64) -> f64 {
    10.0 + (i % 7) as f64 * 0.5
}

/// Posts `series` points `first..=last` (seq and timestamp follow `i`).
fn post_calm(daemon: &TestDaemon, series: &str, first: u64, last: u64) {
    let body: String = (first..=last)
        .map(|i| point_json(series, calm(i), i))
        .collect::<Vec<_>>()
        .join("\n");
    let reply = daemon.detect_ndjson(&body);
    assert_eq!(reply.status, 200, "{}", reply.error());
}

/// One point with `seq` = `i` and a timestamp that follows it.
fn point_json(series: &str, value: f64, i: u64) -> String {
    format!(
        r#"{{"series": "{series}", "value": {value}, "seq": {i}, "timestamp": {}}}"#,
        1_700_000_000 + i
    )
}

/// The mean of the classic window (30 points) that ends with point `last`.
fn window_mean(last: u64) -> f64 {
    (last - 29..=last).map(calm).sum::<f64>() / 30.0
}

/// The reply to one point.
fn post(daemon: &TestDaemon, series: &str, value: f64, i: u64) -> Value {
    let reply = daemon.detect(&point_json(series, value, i));
    assert_eq!(reply.status, 200, "{}", reply.error());
    reply.json()
}

/// Waits, after the last point was acknowledged, for two periodic writes:
/// the second began after that point, so it holds every point.
fn wait_for_a_snapshot_of_every_point(daemon: &TestDaemon) {
    let posted = anomalyd::clock::unix_now();
    let last = "anomalyd_snapshot_last_success_timestamp_seconds";
    let first = daemon.wait_for_metric(last, |t| t > posted);
    daemon.wait_for_metric(last, |t| t > first);
}

/// Asserts that the point after `last` is judged against the window of the
/// points up to `last`: no warm-up, nothing lost.
fn assert_continues(daemon: &TestDaemon, series: &str, last: u64) {
    let resent = post(daemon, series, calm(last), last);
    assert_eq!(resent["duplicate"], true, "{series}: seq {last} resent");
    let next = post(daemon, series, calm(last + 1), last + 1);
    assert_eq!(next["warming_up"], false, "{series}: {next}");
    let mean = next["mean"].as_f64().expect("a mean");
    assert!(
        (mean - window_mean(last)).abs() < 1e-9,
        "{series}: mean {mean}, expected {} (the window up to seq {last})",
        window_mean(last)
    );
}

#[test]
fn a_clean_restart_continues_every_series_with_no_warm_up_and_no_point_lost() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_table(dir.path(), "");
    let daemon = TestDaemon::start_in(dir, 0, &config);
    for series in ["cpu", "mem", "disk"] {
        post_calm(&daemon, series, 1, 40);
    }
    // The last acknowledged point, just before SIGTERM, is in the window.
    assert_eq!(post(&daemon, "cpu", calm(41), 41)["warming_up"], false);
    let dir = daemon.stop();
    assert!(dir.path().join("state/series.snapshot").is_file());

    let mut daemon = TestDaemon::start_in(dir, 0, &config);
    let line = daemon.wait_for_stderr("State snapshot restored");
    assert!(line.contains("restored=3"), "{line}");
    assert_eq!(daemon.metric("anomalyd_snapshot_restored_series"), 3.0);
    assert_continues(&daemon, "cpu", 41);
    assert_continues(&daemon, "mem", 40);
    assert_continues(&daemon, "disk", 40);
    // Series the snapshot did not have warm up as always.
    assert_eq!(post(&daemon, "new", 1.0, 1)["warming_up"], true);
}

#[test]
fn after_kill_9_the_last_periodic_snapshot_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_table(dir.path(), "snapshot_interval = \"1s\"\n");
    let daemon = TestDaemon::start_in(dir, 0, &config);
    post_calm(&daemon, "cpu", 1, 35);
    wait_for_a_snapshot_of_every_point(&daemon);
    assert!(daemon.metric("anomalyd_snapshot_bytes") > 0.0);
    assert_eq!(daemon.metric("anomalyd_snapshot_series"), 1.0);
    let dir = daemon.kill9();

    let daemon = TestDaemon::start_in(dir, 0, &config);
    assert_continues(&daemon, "cpu", 35);
}

#[test]
fn an_open_episode_stays_open_across_a_restart_and_closes_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[detector]\nresolve_after = 3\n",
        state_table(dir.path(), "")
    );
    let daemon = TestDaemon::start_in(dir, 0, &config);
    post_calm(&daemon, "cpu", 1, 30);
    let spike = post(&daemon, "cpu", 100.0, 31);
    assert_eq!(spike["episode_event"], "opened", "{spike}");
    assert_eq!(spike["episode"], 31);
    let dir = daemon.stop();

    let daemon = TestDaemon::start_in(dir, 0, &config);
    assert_eq!(daemon.metric("anomalyd_episodes_open"), 1.0);
    let open = daemon.get("/episodes?open=true").json();
    let open = open.as_array().expect("a list");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["series"], "cpu");
    assert_eq!(open[0]["episode"], 31);
    assert_eq!(open[0]["end"], Value::Null);
    // The episode goes on: no new one opens, and it closes after three
    // calm points, as it would have without the restart.
    let again = post(&daemon, "cpu", 100.0, 32);
    assert_eq!(again["anomaly"], true, "{again}");
    assert_eq!(again["episode"], 31, "{again}");
    assert_eq!(again["episode_event"], Value::Null, "{again}");
    let events: Vec<Value> = (33..=35)
        .map(|i| post(&daemon, "cpu", calm(i), i)["episode_event"].clone())
        .collect();
    assert_eq!(events, [Value::Null, Value::Null, "closed".into()]);
    let closed = daemon.get("/episodes?series=cpu").json();
    assert_eq!(closed[0]["episode"], 31);
    assert_eq!(closed[0]["points"], 2, "{closed}");
    assert!(closed[0]["end"].is_number(), "{closed}");
}

#[test]
fn damaged_or_foreign_version_snapshots_are_set_aside_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_table(dir.path(), "");
    let daemon = TestDaemon::start_in(dir, 0, &config);
    post_calm(&daemon, "cpu", 1, 35);
    let dir = daemon.stop();
    let snapshot = dir.path().join("state/series.snapshot");
    let aside = dir.path().join("state/series.snapshot.unreadable");
    let good = std::fs::read(&snapshot).unwrap();

    // Version 1 is what this build writes: an older or newer one is
    // refused.
    let mut newer = good.clone();
    newer[16..20].copy_from_slice(&2u32.to_le_bytes());
    let mut older = good.clone();
    older[16..20].copy_from_slice(&0u32.to_le_bytes());
    let mut flipped = good.clone();
    let middle = good.len() / 2;
    flipped[middle] ^= 0x20;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("newer version", newer, "is a version 2 snapshot"),
        ("older version", older, "is a version 0 snapshot"),
        ("flipped bit", flipped, "damaged or truncated"),
        (
            "not a snapshot",
            b"{\"hello\": 1}\n".to_vec(),
            "not an anomalyd snapshot",
        ),
    ];
    let mut dir = dir;
    for (case, bytes, message) in cases {
        std::fs::write(&snapshot, &bytes).unwrap();
        let mut daemon = TestDaemon::start_in(dir, 0, &config);
        let line = daemon.wait_for_stderr("cannot be used");
        assert!(line.contains(message), "{case}: {line}");
        assert_eq!(std::fs::read(&aside).unwrap(), bytes, "{case}: kept aside");
        assert!(!snapshot.exists(), "{case}: not read again");
        let reply = post(&daemon, "cpu", 10.0, 36);
        assert_eq!(reply["warming_up"], true, "{case}: {reply}");
        dir = daemon.kill9();
    }
}

#[test]
fn changed_detector_settings_restart_only_the_series_they_apply_to() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |k: f64| {
        format!(
            "{}\n[[rule]]\nseries = \"mem.*\"\nthreshold_multiplier = {k:?}\n",
            state_table(dir.path(), "")
        )
    };
    let (before, after) = (rule(3.0), rule(4.0));
    let daemon = TestDaemon::start_in(dir, 0, &before);
    post_calm(&daemon, "cpu.a", 1, 35);
    post_calm(&daemon, "mem.a", 1, 35);
    let dir = daemon.stop();

    let mut daemon = TestDaemon::start_in(dir, 0, &after);
    let line = daemon.wait_for_stderr("State snapshot restored");
    assert!(line.contains("restored=1"), "{line}");
    assert!(line.contains("settings_changed=1"), "{line}");
    assert_continues(&daemon, "cpu.a", 35);
    let mem = post(&daemon, "mem.a", calm(36), 36);
    assert_eq!(mem["warming_up"], true, "{mem}");
}

#[test]
fn resent_line_protocol_and_detect_points_are_still_duplicates_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_table(dir.path(), "");
    let daemon = TestDaemon::start_in(dir, 0, &config);
    let batch: String = (1..=35)
        .map(|i| format!("load,host=a v={} {i}\n", calm(i)))
        .collect();
    daemon.write_lines(&batch);
    let dir = daemon.stop();

    let daemon = TestDaemon::start_in(dir, 0, &config);
    // Telegraf resends the batch with one new point: a spike.
    daemon.write_lines(&format!("{batch}load,host=a v=100 36\n"));
    assert_eq!(
        daemon.metric("anomalyd_points_duplicate_total{format=\"influx\"}"),
        35.0
    );
    let anomalies = daemon.get("/anomalies").json();
    let anomalies = anomalies.as_array().unwrap();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0]["value"], 100.0);
    assert_eq!(anomalies[0]["series"], "load_v{host=\"a\"}");
}

#[test]
fn snapshots_are_off_by_default_and_follow_state_directory_under_systemd() {
    let daemon = TestDaemon::start("");
    post_calm(&daemon, "cpu", 1, 35);
    let text = String::from_utf8(daemon.get("/metrics").body).unwrap();
    assert!(!text.contains("anomalyd_snapshot_"), "{text}");
    let dir = daemon.stop();
    let mut found = Vec::new();
    find_named(dir.path(), "series.snapshot", &mut found);
    assert!(found.is_empty(), "{found:?}");

    // systemd's StateDirectory= sets $STATE_DIRECTORY (several paths are
    // separated by colons; the first is used).
    let state_dir = dir.path().join("from-systemd");
    let listed = format!("{}:{}", state_dir.display(), dir.path().display());
    let start = |dir: tempfile::TempDir| {
        let mut command = Command::new(binary("anomalyd"));
        command
            .args([
                "--config",
                dir.path().join("anomalyd.toml").to_str().unwrap(),
            ])
            .env("STATE_DIRECTORY", &listed);
        TestDaemon::spawn_command(dir, command)
    };
    let daemon = start(dir);
    post_calm(&daemon, "cpu", 1, 35);
    let dir = daemon.stop();
    let snapshot = state_dir.join("series.snapshot");
    assert!(snapshot.is_file(), "no {}", snapshot.display());
    let daemon = start(dir);
    assert_continues(&daemon, "cpu", 35);
}

/// Every path under `dir` whose file name is `name`.
fn find_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            find_named(&path, name, found);
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
}

#[test]
fn a_failed_write_keeps_the_previous_snapshot_and_the_daemon_serving() {
    let tmpfs = Tmpfs::mount("64k");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[state]\ndirectory = \"{}\"\nsnapshot_interval = \"1s\"\n",
        tmpfs.path().display()
    );
    let mut daemon = TestDaemon::start_in(dir, 0, &config);
    post_calm(&daemon, "cpu", 1, 35);
    wait_for_a_snapshot_of_every_point(&daemon);

    // Thousands of series make a snapshot larger than the filesystem.
    for chunk in 0..5 {
        let body: String = (0..1000)
            .map(|i| point_json(&format!("big.{chunk}.{i:04}.padding-padding"), 1.0, 1))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(daemon.detect_ndjson(&body).status, 200);
    }
    daemon.wait_for_metric("anomalyd_snapshot_failures_total", |n| n >= 1.0);
    daemon.wait_for_stderr("Cannot write the state snapshot");
    assert!(
        !tmpfs.path().join("series.snapshot.tmp").exists(),
        "the partial file is removed"
    );
    assert_eq!(post(&daemon, "cpu", calm(36), 36)["warming_up"], false);
    let dir = daemon.kill9();

    // The last good snapshot (one series, 35 points) is what comes back.
    let daemon = TestDaemon::start_in(dir, 0, &config);
    assert_eq!(daemon.metric("anomalyd_snapshot_restored_series"), 1.0);
    assert_continues(&daemon, "cpu", 35);
}

#[test]
fn state_keys_apply_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_table(dir.path(), "snapshot_interval = \"1d\"\n");
    let daemon = TestDaemon::start_in(dir, 0, &config);
    post_calm(&daemon, "cpu", 1, 35);
    let last = "anomalyd_snapshot_last_success_timestamp_seconds";
    assert_eq!(daemon.metric(last), 0.0, "no write before a day");
    // A drop-in moves the snapshots elsewhere and makes them frequent.
    let moved = daemon.dir.path().join("moved");
    daemon.add_drop_in(
        "state.toml",
        &format!(
            "[state]\ndirectory = \"{}\"\nsnapshot_interval = \"1s\"\n",
            moved.display()
        ),
    );
    daemon.wait_for_metric(last, |t| t > 0.0);
    assert!(moved.join("series.snapshot").is_file());
    assert!(!daemon.dir.path().join("state/series.snapshot").exists());
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let shared = tempfile::tempdir().unwrap();
    let config = state_table(shared.path(), "");
    let first = TestDaemon::start_in(tempfile::tempdir().unwrap(), 0, &config);
    post_calm(&first, "cpu", 1, 35);
    let mut second = TestDaemon::start_in(tempfile::tempdir().unwrap(), 0, &config);
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{status}");
    let line = second.wait_for_stderr("in use by another anomalyd");
    assert!(line.contains("own [state] directory"), "{line}");
    // The first one is unaffected, and a kill -9 releases the directory.
    assert_eq!(post(&first, "cpu", calm(36), 36)["warming_up"], false);
    let _ = first.kill9();
    let third = TestDaemon::start_in(tempfile::tempdir().unwrap(), 0, &config);
    assert_eq!(
        post(&third, "cpu", 1.0, 1)["warming_up"],
        true,
        "never snapshotted"
    );
    let _ = third.stop();
    assert!(shared.path().join("state/series.snapshot").is_file());
}
