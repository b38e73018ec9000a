use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::helper::{TestDaemon, binary, free_port, promtool_check, read_lines, wait_until};

/// Runs the generator to completion in `dir` with `args`.
fn run_generator(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("anomaly-generator"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .output()
        .expect("run anomaly-generator")
}

/// A generator running in the background, its stderr collected.
struct Generator {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Generator {
    fn spawn(dir: &Path, args: &[&str]) -> Generator {
        Self::spawn_with_env(dir, args, &[])
    }

    fn spawn_with_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Generator {
        let mut command = Command::new(binary("anomaly-generator"));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start anomaly-generator");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Generator { child, stderr }
    }

    fn wait_for_stderr(&self, needle: &str) -> String {
        wait_until(&format!("generator stderr with {needle:?}"), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0);
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        wait_until("the generator to exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the generator on `config` (TOML) for `count` points per series,
/// from a fixed start time so nothing waits for the clock.
fn backfill(config: &str, count: u64) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.toml");
    std::fs::write(&path, config).unwrap();
    let count = count.to_string();
    run_generator(
        dir.path(),
        &[
            "--config",
            path.to_str().unwrap(),
            "--count",
            &count,
            "--start-time",
            "1700000000",
        ],
    )
}

fn url(addr: SocketAddr) -> String {
    format!("anomaly_detection_url = \"http://{addr}/detect\"\n")
}

#[test]
fn a_seeded_run_is_reproducible_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gen.toml");
    std::fs::write(
        &config,
        "anomaly_probability = 0.1\nanomaly_direction = \"both\"\nburst_probability = 0.2\n\
         level_shift_probability = 0.005\n\
         [[series]]\nname = \"cpu\"\n[[series]]\nname = \"latency\"\ndata_frequency = 0.5\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let run = |seed: &str, labels: &str| {
        let out = run_generator(
            dir.path(),
            &[
                "--config",
                config,
                "--stdout",
                "--count",
                "500",
                "--start-time",
                "1700000000",
                "--seed",
                seed,
                "--labels",
                labels,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let labels = std::fs::read(dir.path().join(labels)).unwrap();
        (out.stdout, labels)
    };
    let (first, first_labels) = run("3", "a.json");
    let (second, second_labels) = run("3", "b.json");
    assert_eq!(first, second, "same seed and start time, same bytes");
    assert_eq!(first_labels, second_labels);
    let (other, _) = run("4", "c.json");
    assert_ne!(first, other);

    let text = String::from_utf8(first).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000);
    // Timestamps in order, series interleaved by time; seq per series from
    // the start time in microseconds.
    assert_eq!(lines[0]["timestamp"], 1_700_000_000.0);
    let cpu: Vec<&Value> = lines.iter().filter(|l| l["series"] == "cpu").collect();
    assert_eq!(cpu[0]["seq"], 1_700_000_000_000_000u64);
    assert_eq!(cpu[499]["seq"], 1_700_000_000_000_499u64);
    assert_eq!(cpu[499]["timestamp"], 1_700_000_499.0);
    let labels = String::from_utf8(first_labels).unwrap();
    let kinds: HashSet<String> = labels
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        kinds.contains("spike") && kinds.contains("burst"),
        "{kinds:?}"
    );

    // The stream is valid input for `anomalyd replay`.
    let stream = dir.path().join("stream.ndjson");
    std::fs::write(&stream, &text).unwrap();
    let replay = crate::helper::run_anomalyd(&["replay".as_ref(), stream.as_os_str()]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
}

/// Precision and recall of `flagged` against `labelled` (sets of seq).
fn score(labelled: &HashSet<u64>, flagged: &HashSet<u64>) -> (f64, f64) {
    let hits = labelled.intersection(flagged).count() as f64;
    let precision = if flagged.is_empty() {
        1.0
    } else {
        hits / flagged.len() as f64
    };
    let recall = if labelled.is_empty() {
        1.0
    } else {
        hits / labelled.len() as f64
    };
    (precision, recall)
}

#[test]
fn anomalyd_finds_the_injected_outliers() {
    // Window 60, k = 3, both sides, flagged points kept out of the window
    // (so earlier outliers do not inflate σ). Noise σ = 1; the season (2.0
    // over an hour) moves the mean by < 0.3 within a window.
    let window = 60;
    let daemon = TestDaemon::start(&format!(
        "[detector]\nwindow_size = {window}\ndirection = \"both\"\nexclude_anomalies = true\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gen.toml");
    std::fs::write(
        &config,
        format!(
            "{}batch_size = 100\nnoise = 1.0\nseason_amplitude = 2.0\nanomaly_direction = \"both\"\n\
             anomaly_magnitude = [6.0, 10.0]\n\
             [[series]]\nname = \"spikes\"\nanomaly_probability = 0.02\n\
             [[series]]\nname = \"bursts\"\nanomaly_probability = 0.01\nburst_probability = 1.0\nburst_length = [3, 5]\n\
             [[series]]\nname = \"shifts\"\nanomaly_probability = 0.0\nlevel_shift_probability = 0.004\nlevel_shift_magnitude = [8.0, 12.0]\n",
            url(daemon.addr)
        ),
    )
    .unwrap();
    let labels_path = dir.path().join("labels.ndjson");
    let start = 1_700_000_000u64;
    let out = run_generator(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--count",
            "6000",
            "--seed",
            "11",
            "--start-time",
            &start.to_string(),
            "--labels",
            labels_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Points before 2 windows are excluded: the first window gives no
    // verdict, and outliers seen while warming up stay in the window for
    // one more. So are events within 2 windows after a level shift: a
    // shift is accepted into the window (after max_excluded_run points) and
    // inflates σ until it has left it, while spikes and bursts are kept out.
    let first_seq = start * 1_000_000;
    let mut labels: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for line in read_lines(&labels_path) {
        let label: Value = serde_json::from_str(&line).unwrap();
        labels
            .entry(label["series"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                label["seq"].as_u64().unwrap(),
                label["kind"].as_str().unwrap().to_owned(),
            ));
    }
    let mut flagged: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    for line in read_lines(&daemon.log_path()) {
        let record: Value = serde_json::from_str(&line).unwrap();
        flagged
            .entry(record["series"].as_str().unwrap().to_owned())
            .or_default()
            .insert(record["seq"].as_u64().unwrap());
    }
    let settled = |seq: u64| seq >= first_seq + 2 * window;
    let empty = HashSet::new();
    let mut scores = BTreeMap::new();
    for series in ["spikes", "bursts", "shifts"] {
        let all = labels.get(series).cloned().unwrap_or_default();
        let mut judged = HashSet::new();
        let mut last_shift: Option<u64> = None;
        for (seq, kind) in &all {
            let clean = last_shift.is_none_or(|shift| seq - shift >= 2 * window);
            if settled(*seq) && clean {
                judged.insert(*seq);
            }
            if kind == "level_shift" {
                last_shift = Some(*seq);
            }
        }
        let f: HashSet<u64> = flagged
            .get(series)
            .unwrap_or(&empty)
            .iter()
            .copied()
            .filter(|&seq| settled(seq))
            .collect();
        let all_settled: HashSet<u64> = all
            .iter()
            .map(|(s, _)| *s)
            .filter(|&s| settled(s))
            .collect();
        let (precision, _) = score(&all_settled, &f);
        let (_, recall) = score(&judged, &f);
        println!(
            "{series:>7}: {} labelled ({} judged for recall), {} flagged: precision {precision:.3}, recall {recall:.3}",
            all_settled.len(),
            judged.len(),
            f.len()
        );
        assert!(
            judged.len() >= 10,
            "too few {series} to judge: {}",
            judged.len()
        );
        scores.insert(series, (precision, recall));
    }
    // Outliers of at least 6σ (shifts: 8σ) against a clean window and a 3σ
    // threshold: a miss needs the noise to cancel 3σ of it, which a normal
    // variate does 0.13 % of the time. Recall 0.9 leaves room for the
    // estimated σ and sampling.
    for (series, (_, recall)) in &scores {
        assert!(*recall >= 0.9, "{series}: {scores:?}");
    }
    // False positives: a normal point lies beyond 3 σ estimated over 60
    // points (a t distribution with 59 degrees of freedom, and σ computed
    // over n) about 0.45 % of the time: ~26 of ~5,700 (at most ~42 at 3
    // Poisson σ), against ~115 spikes (2 %, at least ~85 at 3σ) and ~230
    // burst points: precision at least 85 / (85 + 42) ≈ 0.67 for spikes.
    // After a level shift the next points are flagged until the run is
    // accepted, by design, so shifts get no precision floor.
    assert!(scores["spikes"].0 >= 0.6, "{scores:?}");
    assert!(scores["bursts"].0 >= 0.6, "{scores:?}");
}

#[test]
fn a_restarted_anomalyd_loses_nothing() {
    let port = free_port();
    let daemon = TestDaemon::start_in(tempfile::tempdir().unwrap(), port, "");
    let addr = daemon.addr;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gen.toml");
    // 500 points/s for 4 s.
    std::fs::write(&config, format!("{}data_frequency = 0.002\n", url(addr))).unwrap();
    let mut generator = Generator::spawn(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--count", "2000"],
    );
    daemon.wait_for_metric("anomalyd_points_received_total{format=\"detect\"}", |v| {
        v >= 300.0
    });
    let daemon_dir = daemon.kill9();
    generator.wait_for_stderr("Cannot deliver points to anomalyd");
    let daemon = TestDaemon::start_in(daemon_dir, port, "");
    let status = generator.wait();
    assert_eq!(status.code(), Some(0), "{:?}", generator.stderr());
    let stopped = generator.wait_for_stderr("Stopped.");
    assert!(
        stopped.contains("generated=2000 sent=2000 dropped=0"),
        "{stopped}"
    );
    generator.wait_for_stderr("anomalyd accepts points again");
    assert!(daemon.metric("anomalyd_points_received_total{format=\"detect\"}") > 0.0);
}

/// A proxy that forwards HTTP/1.1 requests to `upstream` and, for request
/// number `drop_at` (1-based), closes the client's connection instead of
/// passing the reply on.
fn reply_dropping_proxy(upstream: SocketAddr, drop_at: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = proxy_connection(client, upstream, &seen, drop_at);
            });
        }
    });
    addr
}

/// Reads one HTTP message (headers and a Content-Length body).
fn read_message(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        message.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    message.extend_from_slice(&body);
    Ok(Some(message))
}

fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    seen: &AtomicUsize,
    drop_at: usize,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let mut client_reader = BufReader::new(client.try_clone()?);
    let mut server_reader = BufReader::new(server.try_clone()?);
    let (mut client, mut server) = (client, server);
    while let Some(request) = read_message(&mut client_reader)? {
        server.write_all(&request)?;
        let Some(reply) = read_message(&mut server_reader)? else {
            return Ok(());
        };
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == drop_at {
            // The point was applied; its reply is lost.
            client.shutdown(std::net::Shutdown::Both)?;
            return Ok(());
        }
        client.write_all(&reply)?;
    }
    Ok(())
}

#[test]
fn a_lost_reply_is_resent_and_applied_once() {
    let daemon = TestDaemon::start("");
    let proxy = reply_dropping_proxy(daemon.addr, 10);
    let out = backfill(&format!("{}data_frequency = 0\n", url(proxy)), 50);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 50 points, one of them posted twice: the repeat was skipped.
    assert_eq!(
        daemon.metric("anomalyd_points_received_total{format=\"detect\"}"),
        51.0
    );
    assert_eq!(
        daemon.metric("anomalyd_points_duplicate_total{format=\"detect\"}"),
        1.0
    );
}

#[test]
fn refused_points_are_counted_not_retried_and_fail_a_count_run() {
    // Smaller than one point: every request is refused, whatever its size.
    let daemon = TestDaemon::start("[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 50\n");
    let out = backfill(
        &format!("{}data_frequency = 0\nbatch_size = 10\n", url(daemon.addr)),
        20,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("20 of 20 points not delivered"), "{stderr}");
    assert_eq!(
        stderr.matches("anomalyd refused points").count(),
        1,
        "logged once: {stderr}"
    );
    assert!(stderr.contains("20 refused by anomalyd"), "{stderr}");
    assert!(
        !stderr.contains("Cannot deliver points"),
        "a refusal is not a delivery failure to retry: {stderr}"
    );
    // Batches hold up to 10 points (fewer when the queue has fewer): at
    // least 2 requests, and no more than one per point, since none is sent
    // twice.
    let refused = daemon.metric("anomalyd_bad_requests_total{reason=\"too_large\"}");
    assert!((2.0..=20.0).contains(&refused), "{refused}");
}

#[test]
fn reloads_change_the_series_and_sigterm_exits_0() {
    let daemon = TestDaemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gen.toml");
    let text = |series: &[&str]| {
        let mut text = format!(
            "{}listen = \"127.0.0.1:0\"\ndata_frequency = 0.01\nseed = 1\n",
            url(daemon.addr)
        );
        for name in series {
            text.push_str(&format!("[[series]]\nname = \"{name}\"\n"));
        }
        text
    };
    std::fs::write(&config, text(&["a"])).unwrap();
    let mut generator = Generator::spawn(dir.path(), &["--config", config.to_str().unwrap()]);
    let line = generator.wait_for_stderr("metrics listening on ");
    let metrics_addr: SocketAddr = line
        .rsplit("metrics listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.wait_for_metric("anomalyd_series_active", |v| v == 1.0);

    // Saved with a second series: the watcher applies it.
    let tmp = dir.path().join("gen.toml.tmp");
    std::fs::write(&tmp, text(&["a", "b"])).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    daemon.wait_for_metric("anomalyd_series_active", |v| v == 2.0);

    let scrape = || {
        let reply = crate::helper::request(metrics_addr, "GET", "/metrics", &[], b"");
        assert_eq!(reply.status, 200);
        String::from_utf8(reply.body).unwrap()
    };
    let text = scrape();
    assert!(text.contains("anomaly_generator_series 2\n"), "{text}");
    if let Some(output) = promtool_check(text.as_bytes()) {
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let sent = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("anomaly_generator_points_sent_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = sent(&scrape());
    wait_until("more points sent", || {
        (sent(&scrape()) > before).then_some(())
    });

    // SIGHUP with a broken file keeps the old configuration.
    std::fs::write(&config, "data_frequency = -1\n").unwrap();
    generator.signal(libc::SIGHUP);
    generator.wait_for_stderr("Configuration reload failed");
    assert!(scrape().contains("anomaly_generator_series 2\n"));

    generator.signal(libc::SIGTERM);
    let status = generator.wait();
    assert_eq!(status.code(), Some(0), "{:?}", generator.stderr());
}

#[test]
fn sigterm_delivers_the_queue_within_the_grace_and_notifies_systemd() {
    // Nothing listens yet: points pile up in the queue.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let socket = crate::systemd::NotifySocket::bind(dir.path());
    let config = dir.path().join("gen.toml");
    std::fs::write(
        &config,
        format!(
            "anomaly_detection_url = \"http://127.0.0.1:{port}/detect\"\ndata_frequency = 0.01\nshutdown_grace = \"60s\"\n"
        ),
    )
    .unwrap();
    let mut generator = Generator::spawn_with_env(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("NOTIFY_SOCKET", &socket.path)],
    );
    let ready = socket.wait_for("READY=1", 0);
    generator.wait_for_stderr("Cannot deliver points to anomalyd");
    generator.signal(libc::SIGTERM);
    socket.wait_for("STOPPING=1", ready + 1);
    generator.wait_for_stderr("Shutting down: delivering queued points");
    // anomalyd comes up during the grace period: the queue goes out.
    let daemon = TestDaemon::start_in(tempfile::tempdir().unwrap(), port, "");
    let status = generator.wait();
    assert_eq!(status.code(), Some(0), "{:?}", generator.stderr());
    let stopped = generator.wait_for_stderr("Stopped.");
    let generated: f64 = stopped
        .split("generated=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(generated > 0.0);
    assert!(stopped.contains("unsent=0"), "{stopped}");
    assert_eq!(
        daemon.metric("anomalyd_points_received_total{format=\"detect\"}"),
        generated
    );
}

#[test]
fn each_series_may_post_to_its_own_detector() {
    let first = TestDaemon::start("");
    let second = TestDaemon::start("");
    let out = backfill(
        &format!(
            "{}data_frequency = 0\n[[series]]\nname = \"a\"\n[[series]]\nname = \"b\"\nanomaly_detection_url = \"http://{}/detect\"\n",
            url(first.addr),
            second.addr
        ),
        30,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for daemon in [&first, &second] {
        assert_eq!(
            daemon.metric("anomalyd_points_received_total{format=\"detect\"}"),
            30.0
        );
        assert_eq!(daemon.metric("anomalyd_series_active"), 1.0);
    }
}

#[test]
fn the_generator_sends_its_token_and_keeps_points_while_it_is_refused() {
    let token = "generator-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let daemon_tokens = dir.path().join("tokens");
    std::fs::write(&daemon_tokens, format!("{token}\n")).unwrap();
    let daemon = TestDaemon::start_in(
        dir,
        0,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nauth_token_file = \"{}\"\n",
            daemon_tokens.display()
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("token");
    let config = work.path().join("gen.toml");
    let write_config = |token_file: &Path| {
        std::fs::write(
            &config,
            format!(
                "{}data_frequency = 0.05\nauth_token_file = \"{}\"\n",
                url(daemon.addr),
                token_file.display()
            ),
        )
        .unwrap();
    };
    // A wrong token first: refused, retried, queued, not dropped.
    std::fs::write(&ours, "wrong-token-0123456789\n").unwrap();
    write_config(&ours);
    let generator = Generator::spawn(work.path(), &["--config", config.to_str().unwrap()]);
    let warning = generator.wait_for_stderr("refused our token");
    assert!(!warning.contains(token), "{warning}");
    assert_eq!(
        daemon.metric("anomalyd_points_received_total{format=\"detect\"}"),
        0.0
    );
    // The right token, applied by a reload: the queued points arrive.
    std::fs::write(&ours, format!("# anomalyd's token\n{token}\n")).unwrap();
    generator.signal(libc::SIGHUP);
    daemon.wait_for_metric("anomalyd_points_received_total{format=\"detect\"}", |n| {
        n >= 20.0
    });
    assert!(!generator.stderr().iter().any(|line| line.contains(token)));
}
