use crate::helper::{TestDaemon, point, promtool_check, request};

#[test]
fn metrics_move_with_points_anomalies_bad_requests_and_reloads() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\ndirection = \"both\"\n");
    let m = |sample: &str| daemon.metric(sample);
    assert_eq!(m("anomalyd_points_received_total{format=\"detect\"}"), 0.0);
    assert_eq!(m("anomalyd_config_last_reload_successful"), 1.0);
    assert!(m("anomalyd_config_last_reload_success_timestamp_seconds") > 1.7e9);
    // The build: version, the commit built from, and the compiler.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |out| String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        );
    let text = String::from_utf8(daemon.get("/metrics").body).unwrap();
    let build = text
        .lines()
        .find(|line| line.starts_with("anomalyd_build_info{"))
        .expect("anomalyd_build_info");
    assert!(
        build.starts_with(&format!(
            "anomalyd_build_info{{version=\"0.1.0\",commit=\"{commit}\",rustc=\"rustc 1."
        )) && build.ends_with("\"} 1"),
        "{build}"
    );
    // The standard process metrics, about this very daemon.
    let fds = m("process_open_fds");
    assert!(fds >= 4.0 && fds <= m("process_max_fds"), "{fds}");
    assert!(m("process_resident_memory_bytes") > 1e6);
    assert!(m("process_cpu_seconds_total") >= 0.0);
    let started = m("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started > now - 600.0 && started <= now + 1.0,
        "{started} vs {now}"
    );
    // /healthz and /ready are told apart.
    daemon.get("/healthz");
    daemon.get("/ready");
    daemon.get("/ready");
    assert_eq!(
        m("anomalyd_http_request_duration_seconds_count{route=\"/healthz\"}"),
        1.0
    );
    assert_eq!(
        m("anomalyd_http_request_duration_seconds_count{route=\"/ready\"}"),
        2.0
    );

    for (i, v) in [10.0, 12.0, 10.0, 12.0].into_iter().enumerate() {
        daemon.detect(&point("a", v, i as f64));
    }
    daemon.detect(&point("b", 1.0, 0.0));
    assert_eq!(m("anomalyd_series_active"), 2.0);
    assert_eq!(m("anomalyd_series_warming_up"), 1.0);
    assert_eq!(
        daemon.detect(&point("a", 100.0, 5.0)).json()["anomaly"],
        true
    );
    daemon.detect(&point("a", 11.0, 6.0));
    assert_eq!(
        daemon.detect(&point("a", -100.0, 7.0)).json()["anomaly"],
        true
    );
    assert_eq!(m("anomalyd_points_received_total{format=\"detect\"}"), 8.0);
    assert_eq!(m("anomalyd_anomalies_total{direction=\"upper\"}"), 1.0);
    assert_eq!(m("anomalyd_anomalies_total{direction=\"lower\"}"), 1.0);
    assert_eq!(m("anomalyd_anomaly_log_lines_written_total"), 2.0);
    assert_eq!(
        m("anomalyd_http_request_duration_seconds_count{route=\"/detect\"}"),
        8.0
    );

    assert_eq!(daemon.detect("{\"value\": ").status, 400);
    assert_eq!(daemon.detect("{\"value\": \"x\"}").status, 422);
    assert_eq!(daemon.detect("{\"value\": \"x\"}").status, 422);
    assert_eq!(daemon.get("/nope").status, 404);
    let reply = request(daemon.addr, "DELETE", "/metrics", &[], b"");
    assert_eq!(reply.status, 405);
    assert_eq!(m("anomalyd_bad_requests_total{reason=\"malformed\"}"), 1.0);
    assert_eq!(m("anomalyd_bad_requests_total{reason=\"invalid\"}"), 2.0);
    assert_eq!(m("anomalyd_bad_requests_total{reason=\"not_found\"}"), 1.0);
    assert_eq!(
        m("anomalyd_bad_requests_total{reason=\"method_not_allowed\"}"),
        1.0
    );
    assert_eq!(
        m("anomalyd_points_received_total{format=\"detect\"}"),
        8.0,
        "refused points are not counted"
    );

    // A SIGHUP reload counts as a success; a broken file as a failure.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_metric("anomalyd_config_reloads_total{result=\"success\"}", |v| {
        v == 1.0
    });
    let path = daemon.dir.path().join("anomalyd.toml");
    std::fs::write(&path, "[detector]\nwindow_size = 0\n").unwrap();
    daemon.wait_for_metric("anomalyd_config_reloads_total{result=\"failure\"}", |v| {
        v >= 1.0
    });
    assert_eq!(m("anomalyd_config_last_reload_successful"), 0.0);

    let reply = daemon.get("/metrics");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    if let Some(output) = promtool_check(&reply.body) {
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool check metrics: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn health_endpoints_answer_and_report_problems() {
    let daemon = TestDaemon::start("");
    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["warnings"], serde_json::json!([]));
    let ready = daemon.get("/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
}
