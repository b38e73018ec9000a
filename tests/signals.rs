use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::helper::{
    TIMEOUT, TestDaemon, count_unique_records, point, post_spiky_batch, read_lines, read_reply,
    wait_until,
};

/// The anomaly log and every rotated `.N` file beside it.
fn log_files(log: &Path) -> Vec<PathBuf> {
    let mut files = vec![log.to_path_buf()];
    for n in 1.. {
        let rotated = PathBuf::from(format!("{}.{n}", log.display()));
        if !rotated.exists() {
            break;
        }
        files.push(rotated);
    }
    files
}

#[test]
fn a_sighup_storm_under_load_loses_duplicates_and_splits_nothing() {
    let mut daemon = TestDaemon::start(
        "[detector]\nwindow_size = 3\n[log]\nanomaly_log_file = \"anomalies.log\"\nkeep = 1000\nfsync = \"never\"\n",
    );
    let addr = daemon.addr;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(15);
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let mut seq = 0u64;
                // Bounded in count and time.
                for _ in 0..150 {
                    if Instant::now() > deadline {
                        break;
                    }
                    // 1, 1, 1, 100 repeated: every 100 is an anomaly.
                    let found = post_spiky_batch(addr, &format!("t{t}"), &mut seq, 40);
                    acknowledged.fetch_add(found, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let hups = {
        let pid = daemon.child.id() as i32;
        let done = done.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            while sent < 60 && !done.load(Ordering::Relaxed) {
                // SAFETY: kill(2) on our own child's pid.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGHUP)
                };
                sent += 1;
                // Pacing of the storm, not synchronisation.
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        })
    };
    for loader in loaders {
        loader.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let sent = hups.join().unwrap();
    assert!(sent > 0);
    let rotations = daemon.metric("anomalyd_anomaly_log_rotations_total");
    daemon.wait_for_stderr("Anomaly log rotated");
    let log = daemon.dir.path().join("anomalies.log");
    let dir = daemon.stop();
    let _keep = dir;

    let files = log_files(&log);
    assert!(
        rotations >= 2.0 && files.len() >= 3,
        "{rotations} rotations, files {files:?}"
    );
    let contents: Vec<(PathBuf, Vec<String>)> =
        files.iter().map(|f| (f.clone(), read_lines(f))).collect();
    let lines = count_unique_records(&contents);
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    assert!(
        acknowledged > 100,
        "the load found anomalies: {acknowledged}"
    );
    assert_eq!(lines, acknowledged, "lines across {} files", files.len());
}

/// Warms up `series` and sends a spike; returns the reply.
fn spike(daemon: &TestDaemon, series: &str) -> serde_json::Value {
    for (i, v) in [10.0, 12.0, 10.0, 12.0].into_iter().enumerate() {
        daemon.detect(&point(series, v, i as f64));
    }
    daemon.detect(&point(series, 100.0, 4.0)).json()
}

#[test]
fn logrotate_renames_then_sighup_opens_a_fresh_file() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    assert_eq!(spike(&daemon, "a")["logged"], true);
    let log = daemon.log_path();
    let moved = daemon.dir.path().join("anomalies.log-20261125");
    std::fs::rename(&log, &moved).unwrap();
    // Written after the rename, before the signal: lands in the moved file.
    assert_eq!(spike(&daemon, "b")["logged"], true);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| v >= 1.0);
    assert_eq!(spike(&daemon, "c")["logged"], true);
    let old = read_lines(&moved);
    assert_eq!(old.len(), 2, "{old:?}");
    let new = read_lines(&log);
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("\"series\":\"c\""));
    assert!(
        !PathBuf::from(format!("{}.1", log.display())).exists(),
        "a file moved away is not renamed again"
    );
}

/// Opens a `/detect` request and sends all but the last byte of its body.
fn half_sent_request(daemon: &TestDaemon, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() - 1])
        .unwrap();
    // Wait until its handler runs (the scrape itself is the other one), so
    // the signal cannot overtake the accept.
    daemon.wait_for_metric("anomalyd_http_requests_in_flight", |v| v >= 2.0);
    stream
}

#[test]
fn sigterm_answers_requests_in_flight_then_exits_0() {
    let mut daemon = TestDaemon::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"30s\"\n[detector]\nwindow_size = 4\n",
    );
    for (i, v) in [10.0, 12.0, 10.0, 12.0].into_iter().enumerate() {
        daemon.detect(&point("s", v, i as f64));
    }
    let body = point("s", 100.0, 4.0);
    let mut in_flight = half_sent_request(&daemon, &body);
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_stderr("Shutting down");
    // No new connections once shutdown began.
    wait_until("the listener to close", || {
        TcpStream::connect(daemon.addr).is_err().then_some(())
    });
    in_flight
        .write_all(&body.as_bytes()[body.len() - 1..])
        .unwrap();
    let reply = read_reply(&mut in_flight);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["anomaly"], true);
    assert_eq!(reply.json()["logged"], true);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0));
    let lines = read_lines(&daemon.log_path());
    assert_eq!(lines.len(), 1, "the in-flight anomaly is in the log");
}

#[test]
fn a_second_signal_during_the_drain_exits_1_at_once() {
    let mut daemon =
        TestDaemon::start("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"60s\"\n");
    let _in_flight = half_sent_request(&daemon, &point("s", 1.0, 1.0));
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_stderr("Shutting down");
    daemon.signal(libc::SIGINT);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn the_grace_period_bounds_the_drain() {
    let mut daemon =
        TestDaemon::start("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"500ms\"\n");
    let _in_flight = half_sent_request(&daemon, &point("s", 1.0, 1.0));
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_stderr("after [server] shutdown_grace");
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn sighup_rotates_even_while_the_config_is_invalid() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    assert_eq!(spike(&daemon, "a")["logged"], true);
    let path = daemon.dir.path().join("anomalyd.toml");
    std::fs::write(&path, "[detector\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| v >= 1.0);
    assert_eq!(daemon.metric("anomalyd_config_last_reload_successful"), 0.0);
    assert_eq!(spike(&daemon, "b")["logged"], true);
    let log = daemon.log_path();
    assert_eq!(
        read_lines(&PathBuf::from(format!("{}.1", log.display()))).len(),
        1
    );
    let lines = read_lines(&log);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("\"series\":\"b\""), "{lines:?}");
}

/// With `[log] rotate = "external"` (the package's setting, beside its
/// logrotate file), SIGHUP reloads and reopens but never renames or
/// deletes; SIGUSR1 only reopens (logrotate's postrotate).
#[test]
fn with_external_rotation_signals_only_reopen() {
    let daemon = TestDaemon::start(
        "[detector]\nwindow_size = 4\n[log]\nrotate = \"external\"\nkeep = 1\nanomaly_log_file = \"anomalies.log\"\n",
    );
    let log = daemon.log_path();
    assert_eq!(spike(&daemon, "a")["logged"], true);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| v >= 1.0);
    assert_eq!(spike(&daemon, "b")["logged"], true);
    assert_eq!(read_lines(&log).len(), 2, "SIGHUP renamed nothing");
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    assert!(!rotated(1).exists());

    // logrotate: rename, then SIGUSR1.
    let moved = daemon.dir.path().join("anomalies.log.1");
    std::fs::rename(&log, &moved).unwrap();
    daemon.signal(libc::SIGUSR1);
    daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| v >= 2.0);
    assert_eq!(spike(&daemon, "c")["logged"], true);
    assert_eq!(read_lines(&moved).len(), 2);
    assert_eq!(read_lines(&log).len(), 1, "a fresh file at the path");
    // A second SIGHUP still leaves logrotate's file alone (keep = 1 would
    // have deleted it).
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| v >= 3.0);
    assert_eq!(read_lines(&moved).len(), 2);
    assert!(!rotated(2).exists());
}

/// With anomalyd rotating (the default), the file beyond `keep` is deleted
/// with a log line, not replaced silently by a rename.
#[test]
fn self_rotation_says_which_old_file_it_deletes() {
    let mut daemon = TestDaemon::start(
        "[detector]\nwindow_size = 4\n[log]\nkeep = 1\nanomaly_log_file = \"anomalies.log\"\n",
    );
    for (round, series) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(spike(&daemon, series)["logged"], true);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| {
            v >= (round + 1) as f64
        });
    }
    let line = daemon.wait_for_stderr("Deleted the oldest rotated anomaly log");
    assert!(line.contains("anomalies.log.1"), "{line}");
    let kept = read_lines(&PathBuf::from(format!("{}.1", daemon.log_path().display())));
    assert_eq!(kept.len(), 1);
    assert!(kept[0].contains("\"series\":\"c\""), "{kept:?}");
}
