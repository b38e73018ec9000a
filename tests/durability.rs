use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::helper::{TestDaemon, Tmpfs, point, read_lines, wait_until};

/// A config where every spike of 1000+ is flagged: spikes never enter the
/// window, so the baseline stays at 10/12.
const SPIKY: &str =
    "[detector]\nwindow_size = 10\nexclude_anomalies = true\nmax_excluded_run = 1000000\n";

fn warm_up(daemon: &TestDaemon, series: &str) {
    for i in 0..10 {
        let reply = daemon.detect(&point(
            series,
            if i % 2 == 0 { 10.0 } else { 12.0 },
            i as f64,
        ));
        assert_eq!(reply.status, 200);
    }
}

#[test]
fn every_acknowledged_anomaly_survives_kill_9() {
    let config =
        format!("{SPIKY}\n[log]\nanomaly_log_file = \"anomalies.log\"\nfsync = \"never\"\n");
    let daemon = TestDaemon::start(&config);
    let acked: Vec<(String, f64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let daemon = &daemon;
                scope.spawn(move || {
                    let series = format!("w{w}");
                    warm_up(daemon, &series);
                    let mut acked = Vec::new();
                    for i in 0..150 {
                        let value = 1000.0 + i as f64;
                        let body = daemon
                            .detect(&point(&series, value, 100.0 + i as f64))
                            .json();
                        assert_eq!(body["anomaly"], true, "{body}");
                        if body["logged"] == true {
                            acked.push((series.clone(), value));
                        }
                    }
                    acked
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(acked.len(), 600, "every anomaly was logged");
    let dir = daemon.kill9();
    let lines = read_lines(&dir.path().join("anomalies.log"));
    let logged: HashSet<(String, u64)> = lines
        .iter()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            (
                v["series"].as_str().unwrap().to_owned(),
                v["value"].as_f64().unwrap().to_bits(),
            )
        })
        .collect();
    assert_eq!(lines.len(), logged.len(), "no duplicate lines");
    for (series, value) in &acked {
        assert!(
            logged.contains(&(series.clone(), value.to_bits())),
            "acknowledged {series}={value} is missing"
        );
    }
}

/// Fills the filesystem holding `path` until writes fail.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![b'x'; 4096];
    while file.write_all(&block).is_ok() {}
    while file.write_all(b"x").is_ok() {}
}

#[test]
fn a_full_disk_backlogs_anomalies_and_writes_them_out_in_order_once_freed() {
    let tmpfs = Tmpfs::mount("256k");
    let log = tmpfs.path().join("logs/anomalies.log");
    let config = format!(
        "{SPIKY}\n[log]\nanomaly_log_file = \"{}\"\nfsync = \"always\"\n",
        log.display()
    );
    let mut daemon = TestDaemon::start(&config);
    warm_up(&daemon, "d");
    let body = daemon.detect(&point("d", 1000.0, 100.0)).json();
    assert_eq!(
        (body["anomaly"].clone(), body["logged"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );

    let filler = tmpfs.path().join("filler");
    fill(&filler);
    // The log's last page still has room, so the first lines may fit; post
    // until one does not (a short write, truncated), then some more.
    let mut expected = vec![1000.0];
    let mut unlogged = 0;
    for i in 1..=200 {
        let value = 1000.0 + i as f64;
        let body = daemon.detect(&point("d", value, 100.0 + i as f64)).json();
        assert_eq!(body["anomaly"], true);
        expected.push(value);
        if body["logged"] == false {
            unlogged += 1;
        } else {
            assert_eq!(
                unlogged, 0,
                "once the log fails, later lines queue behind the backlog: {body}"
            );
        }
        if unlogged == 20 {
            break;
        }
    }
    assert_eq!(unlogged, 20, "the full disk was never noticed");
    // Still served while the disk is full, and not ready, saying why.
    let served = daemon.get("/anomalies?series=d").json();
    assert_eq!(served.as_array().unwrap().len(), expected.len());
    let ready = daemon.get("/ready");
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["reasons"]
            .to_string()
            .contains("cannot be written"),
        "{}",
        ready.json()
    );
    assert_eq!(daemon.get("/healthz").status, 200);
    assert!(daemon.metric("anomalyd_anomaly_log_write_errors_total") >= 1.0);
    assert_eq!(daemon.metric("anomalyd_anomaly_log_backlog_lines"), 20.0);
    // Every line in the file so far is whole.
    for line in read_lines(&log) {
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("split line {line:?}: {e}"));
    }

    std::fs::remove_file(&filler).unwrap();
    wait_until("the backlog to be written out", || {
        (read_lines(&log).len() == expected.len()).then_some(())
    });
    let values: Vec<f64> = read_lines(&log)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("whole line")["value"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(values, expected, "in order, none lost, none duplicated");
    wait_until("/ready to recover", || {
        (daemon.get("/ready").status == 200).then_some(())
    });
    assert_eq!(daemon.metric("anomalyd_anomaly_log_backlog_lines"), 0.0);
    // New anomalies are logged directly again.
    let body = daemon.detect(&point("d", 2000.0, 200.0)).json();
    assert_eq!(body["logged"], true);
    daemon.wait_for_stderr("writable again");
    let errors = daemon
        .stderr()
        .iter()
        .filter(|l| l.contains("Cannot write the anomaly log"))
        .count();
    assert_eq!(errors, 1, "the error is logged once per episode");
}
