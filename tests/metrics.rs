use crate::helper::{TestDaemon, point, promtool_check, request};

#[test]
fn metrics_move_with_points_anomalies_bad_requests_and_reloads() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\ndirection = \"both\"\n");
    let m = |sample: &str| daemon.metric(sample);
    assert_eq!(m("anomalyd_points_received_total"), 0.0);
    assert_eq!(m("anomalyd_config_last_reload_successful"), 1.0);
    assert!(m("anomalyd_config_last_reload_success_timestamp_seconds") > 1.7e9);
    assert_eq!(m("anomalyd_build_info{version=\"0.1.0\"}"), 1.0);

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
    assert_eq!(m("anomalyd_points_received_total"), 8.0);
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
        m("anomalyd_points_received_total"),
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
