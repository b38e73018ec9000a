use crate::helper::{TestDaemon, free_port, point, read_lines, wait_until};
use serde_json::Value;

/// Posts 10 points alternating 10/12 (mean 11, std 1), then a spike.
fn warm_up(daemon: &TestDaemon, series: &str, t0: f64) {
    for i in 0..10 {
        let value = if i % 2 == 0 { 10.0 } else { 12.0 };
        let reply = daemon.detect(&point(series, value, t0 + i as f64));
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        let body = reply.json();
        assert_eq!(body["warming_up"], Value::Bool(true), "point {i}: {body}");
        assert_eq!(body["anomaly"], Value::Bool(false));
        assert_eq!(body["mean"], Value::Null);
        assert_eq!(body["threshold"], Value::Null);
    }
}

#[test]
fn spike_is_flagged_logged_served_and_survives_restart() {
    let port = free_port();
    let config = "[detector]\nwindow_size = 10\nthreshold_multiplier = 3.0\n";
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_in(dir, port, config);
    warm_up(&daemon, "cpu", 1000.0);

    // A normal point: mean 11, std 1, threshold 14.
    let body = daemon.detect(&point("cpu", 13.9, 1010.0)).json();
    assert_eq!(body["status"], "Data received and processed");
    assert_eq!(body["series"], "cpu");
    assert_eq!(body["warming_up"], false);
    assert_eq!(body["anomaly"], false);
    assert_eq!(body["mean"].as_f64().unwrap(), 11.0);
    assert_eq!(body["std_dev"].as_f64().unwrap(), 1.0);
    assert_eq!(body["threshold"].as_f64().unwrap(), 14.0);
    assert!(
        body.get("lower_threshold").is_none(),
        "upper direction shows no lower threshold"
    );
    assert_eq!(body["logged"], true);

    // The spike.
    let body = daemon.detect(&point("cpu", 50.0, 1011.0)).json();
    assert_eq!(body["anomaly"], true, "{body}");
    assert_eq!(body["logged"], true);

    // Another series with its own window.
    warm_up(&daemon, "mem", 2000.0);
    let body = daemon.detect(&point("mem", 99.0, 2010.0)).json();
    assert_eq!(body["anomaly"], true);

    // The log holds both, one JSON line each, in order.
    let lines = read_lines(&daemon.log_path());
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["series"], "cpu");
    assert_eq!(first["value"], 50.0);
    assert_eq!(first["timestamp"], 1011.0);
    assert_eq!(first["direction"], "upper");
    assert!(
        first["mean"].is_number() && first["std_dev"].is_number() && first["threshold"].is_number()
    );

    // GET /anomalies and its parameters.
    let all = daemon.get("/anomalies").json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0], first, "the served record is the logged record");
    let mem = daemon.get("/anomalies?series=mem").json();
    assert_eq!(mem.as_array().unwrap().len(), 1);
    assert_eq!(mem[0]["series"], "mem");
    let since = daemon.get("/anomalies?since=2010").json();
    assert_eq!(since.as_array().unwrap().len(), 1);
    assert_eq!(since[0]["timestamp"], 2010.0);
    let none = daemon.get("/anomalies?since=2010.5").json();
    assert_eq!(none.as_array().unwrap().len(), 0);
    let newest = daemon.get("/anomalies?limit=1").json();
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0]["series"], "mem", "limit keeps the newest");

    // A restart on the same port keeps /anomalies.
    let dir = daemon.stop();
    let daemon = TestDaemon::start_in(dir, port, config);
    assert_eq!(daemon.addr.port(), port);
    let after = daemon.get("/anomalies").json();
    assert_eq!(after, all);
}

#[test]
fn lower_and_both_directions_report_the_lower_threshold() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 10\ndirection = \"both\"\n");
    warm_up(&daemon, "x", 0.0);
    let body = daemon.detect(&point("x", -40.0, 10.0)).json();
    assert_eq!(body["anomaly"], true, "{body}");
    assert_eq!(body["lower_threshold"].as_f64().unwrap(), 8.0);
    let served = daemon.get("/anomalies").json();
    assert_eq!(served[0]["direction"], "lower");
    assert_eq!(
        served[0]["threshold"], 8.0,
        "the record names the threshold crossed"
    );
}

#[test]
fn batches_and_ndjson_report_anomalies_in_order() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 10\n");
    let mut items: Vec<String> = (0..10)
        .map(|i| point("b", if i % 2 == 0 { 10.0 } else { 12.0 }, i as f64))
        .collect();
    items.push(point("b", 30.0, 10.0));
    items.push(point("b", 11.0, 11.0));
    items.push(point("b", 40.0, 12.0));
    let reply = daemon.detect(&format!("[{}]", items.join(",")));
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["received"], 13);
    let anomalies = body["anomalies"].as_array().unwrap();
    assert_eq!(anomalies.len(), 2, "{body}");
    assert_eq!(anomalies[0]["value"], 30.0);
    assert_eq!(anomalies[1]["value"], 40.0);

    let ndjson: String = (0..10)
        .map(|i| point("n", if i % 2 == 0 { 10.0 } else { 12.0 }, i as f64) + "\n")
        .collect::<String>()
        + &point("n", 25.0, 10.0)
        + "\n";
    let reply = daemon.detect_ndjson(&ndjson);
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["received"], 11);
    assert_eq!(body["anomalies"][0]["value"], 25.0);
    wait_until("3 lines in the log", || {
        (read_lines(&daemon.log_path()).len() == 3).then_some(())
    });
}

#[test]
fn duplicate_seq_is_acknowledged_but_not_applied() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 3\n");
    let send = |seq: u64, value: f64| {
        daemon
            .detect(&format!(
                r#"{{"series": "s", "value": {value}, "seq": {seq}}}"#
            ))
            .json()
    };
    assert_eq!(send(1, 1.0)["duplicate"], false);
    assert_eq!(send(2, 2.0)["duplicate"], false);
    let dup = send(2, 1000.0);
    assert_eq!(dup["duplicate"], true, "{dup}");
    assert_eq!(dup["anomaly"], false);
    assert_eq!(send(1, 1000.0)["duplicate"], true);
    assert_eq!(
        send(3, 3.0)["warming_up"],
        true,
        "only two points were applied before"
    );
    // Window [1,2,3]: mean 2; the resent 1000s never entered it.
    let next = send(4, 2.0);
    assert_eq!(next["mean"].as_f64().unwrap(), 2.0, "{next}");
}

#[test]
fn every_verdict_carries_a_score_in_sigmas() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    let score = |reply: &Value| reply["score"].clone();
    let warming = daemon.detect(&point("s", 10.0, 1.0)).json();
    assert_eq!(score(&warming), Value::Null, "no verdict, no score");
    for (i, v) in [12.0, 10.0, 12.0].into_iter().enumerate() {
        daemon.detect(&point("s", v, 2.0 + i as f64));
    }
    // Window 10, 12, 10, 12: mean 11, σ 1.
    let normal = daemon.detect(&point("s", 12.5, 5.0)).json();
    assert_eq!(normal["anomaly"], false);
    assert_eq!(score(&normal), 1.5);
    let spike = daemon.detect(&point("s", 20.0, 6.0)).json();
    assert_eq!(spike["anomaly"], true);
    let spike_score = spike["score"].as_f64().unwrap();
    assert!(spike_score > 3.0, "beyond k: {spike}");
    // The same score in the log, /anomalies and the series' history.
    let line: Value = serde_json::from_str(&read_lines(&daemon.log_path())[0]).unwrap();
    assert_eq!(line["score"], spike_score);
    assert_eq!(daemon.get("/anomalies").json()[0]["score"], spike_score);
    let history = daemon.get("/series/s").json();
    let points = history["history"].as_array().unwrap();
    assert_eq!(points[0]["score"], Value::Null);
    assert_eq!(points.last().unwrap()["score"], spike_score);
    // A flat series: a point off it gets the cap, finite.
    for i in 0..4 {
        daemon.detect(&point("flat", 0.0, f64::from(i)));
    }
    let off = daemon.detect(&point("flat", 1.0, 4.0)).json();
    assert_eq!(off["score"], 1e6);
}
