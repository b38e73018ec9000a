//! The shipped logrotate file, run by the real `logrotate -f` (with its
//! own state file, paths pointed at a temp dir) against a daemon under
//! load with `[log] rotate = "external"`: no acknowledged anomaly lost,
//! none duplicated, none split, old files compressed one rotation late.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::helper::{TestDaemon, count_unique_records, post_spiky_batch, wait_until};

/// How many times the test rotates while the load runs.
const ROTATIONS: u32 = 4;

/// Whether `logrotate` can run here; panics when the environment requires
/// it (`ANOMALYD_REQUIRE_LOGROTATE`, set by CI) and it cannot.
fn logrotate_available() -> bool {
    match Command::new("logrotate").arg("--version").output() {
        Ok(output) if output.status.success() => true,
        result if std::env::var_os("ANOMALYD_REQUIRE_LOGROTATE").is_some() => {
            panic!("logrotate is required (ANOMALYD_REQUIRE_LOGROTATE is set): {result:?}")
        }
        _ => {
            eprintln!("SKIPPED: cannot run logrotate; install Debian's `logrotate` package");
            false
        }
    }
}

/// The shipped `packaging/logrotate/anomalyd`, rotating `log` and
/// signalling `pid`: the unit name is made one that does not exist, so
/// that `systemctl kill` fails (as where systemd does not run) and the
/// fallback runs, with `pkill` by name narrowed to our daemon's pid.
fn logrotate_config(log: &Path, pid: u32) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/logrotate/anomalyd"),
    )
    .expect("read the shipped logrotate file");
    for expected in [
        "/var/log/anomalyd/anomalies.log {",
        "systemctl kill -s USR1 --kill-whom=main anomalyd.service",
        "pkill -USR1 -x anomalyd",
    ] {
        assert!(
            shipped.contains(expected),
            "shipped file lacks {expected:?}"
        );
    }
    assert!(
        !shipped.lines().any(|line| line.trim() == "copytruncate"),
        "copytruncate loses lines"
    );
    shipped
        .replace(
            "/var/log/anomalyd/anomalies.log",
            &log.display().to_string(),
        )
        .replace("anomalyd.service", "anomalyd-e2e-absent.service")
        .replace("pkill -USR1 -x anomalyd", &format!("kill -USR1 {pid}"))
}

/// Every line of `path`, decompressing `.gz` files with gzip(1).
fn lines_of(path: &Path) -> Vec<String> {
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let output = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
        assert!(output.status.success(), "gzip -dc {}", path.display());
        output.stdout
    } else {
        std::fs::read(path).unwrap()
    };
    let text = String::from_utf8(bytes).expect("UTF-8 log");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a split line",
        path.display()
    );
    text.lines().map(str::to_owned).collect()
}

/// Posts NDJSON batches in which every fourth point is an anomaly until
/// `done` (or a bound in count and time); returns the anomalies
/// acknowledged as logged.
fn load(addr: std::net::SocketAddr, thread: usize, done: Arc<AtomicBool>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acknowledged = 0;
    let mut seq = 0u64;
    for _ in 0..20_000 {
        if done.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        acknowledged += post_spiky_batch(addr, &format!("t{thread}"), &mut seq, 20);
    }
    acknowledged
}

#[test]
fn real_logrotate_under_load_loses_and_splits_nothing() {
    if !logrotate_available() {
        return;
    }
    let daemon = TestDaemon::start(
        "[detector]\nwindow_size = 3\n[log]\nanomaly_log_file = \"anomalies.log\"\nrotate = \"external\"\nfsync = \"never\"\n",
    );
    let log = daemon.log_path();
    let dir = daemon.dir.path().to_path_buf();
    let config = dir.join("logrotate.conf");
    std::fs::write(&config, logrotate_config(&log, daemon.child.id())).unwrap();
    let state = dir.join("logrotate.state");

    let done = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..2)
        .map(|thread| {
            let (addr, done) = (daemon.addr, done.clone());
            std::thread::spawn(move || load(addr, thread, done))
        })
        .collect();
    for round in 1..=ROTATIONS {
        // notifempty: rotate only once the load has written to the file.
        wait_until("the load to write the log", || {
            (std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > 0).then_some(())
        });
        let output = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&config)
            .output()
            .expect("run logrotate");
        assert!(
            output.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        daemon.wait_for_metric("anomalyd_anomaly_log_rotations_total", |v| {
            v >= f64::from(round)
        });
    }
    done.store(true, Ordering::Relaxed);
    let acknowledged: u64 = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    let _dir = daemon.stop();

    // delaycompress: .1 stays plain (the daemon may still have been writing
    // it when it was moved); older ones are compressed.
    let mut files = vec![log.clone(), PathBuf::from(format!("{}.1", log.display()))];
    for n in 2..=ROTATIONS {
        files.push(PathBuf::from(format!("{}.{n}.gz", log.display())));
    }
    for file in &files {
        assert!(
            file.exists(),
            "{} missing after {ROTATIONS} rotations",
            file.display()
        );
    }
    let contents: Vec<(PathBuf, Vec<String>)> =
        files.iter().map(|f| (f.clone(), lines_of(f))).collect();
    let records = count_unique_records(&contents);
    assert!(
        acknowledged > 100,
        "the load found anomalies: {acknowledged}"
    );
    assert_eq!(records, acknowledged, "lines across {files:?}");
}
