//! `GET /series`, `GET /series/{name}` and the `/anomalies` filters a person
//! uses (`series_glob`, `until`, RFC 3339 times), and the `time` field of
//! the anomaly log, against the real daemon.

use crate::helper::{TestDaemon, read_lines, spike_points};

/// Four calm points then a spike of 100 at `spike_at`, as one JSON array.
fn stream(series: &str, spike_at: f64) -> String {
    format!(
        "[{}]",
        spike_points(series, spike_at - 4.0, 100.0).join(",")
    )
}

#[test]
fn series_list_and_detail_show_the_stream_and_its_history() {
    let daemon = TestDaemon::start(
        "[detector]\nwindow_size = 4\n[[rule]]\nseries = \"lat*\"\ndirection = \"both\"\n",
    );
    let odd = "lat/api v2 é";
    assert_eq!(daemon.detect(&stream(odd, 1_700_000_004.0)).status, 200);
    assert_eq!(daemon.detect(&stream("cpu", 1_700_000_104.0)).status, 200);
    assert_eq!(
        daemon
            .detect(&crate::helper::point("quiet", 1.0, 1_700_000_200.0))
            .status,
        200
    );

    let list = daemon.get("/series?sort=points&limit=2");
    assert_eq!(list.status, 200);
    let list = list.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["series"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["cpu", odd],
        "most points first, ties by name, limit 2"
    );
    let cpu = &list[0];
    assert_eq!(cpu["points"], 5);
    assert_eq!(cpu["anomalies"], 1);
    assert_eq!(cpu["last_value"], 100.0);
    assert_eq!(cpu["last_seen"], 1_700_000_104.0);
    assert_eq!(cpu["warming_up"], false);
    let glob = daemon.get("/series?series_glob=q*").json();
    assert_eq!(glob.as_array().unwrap().len(), 1);
    assert_eq!(glob[0]["warming_up"], true);

    // The name percent-encoded, `/` as %2F or as is.
    for path in [
        "/series/lat%2Fapi%20v2%20%C3%A9",
        "/series/lat/api%20v2%20%C3%A9",
    ] {
        let reply = daemon.get(path);
        assert_eq!(reply.status, 200, "{path}");
        let detail = reply.json();
        assert_eq!(detail["series"], odd);
        assert_eq!(detail["rule"], "lat*");
        assert_eq!(detail["settings"]["direction"], "both");
        assert_eq!(detail["settings"]["window_size"], 4);
        let points = detail["history"].as_array().unwrap();
        assert_eq!(points.len(), 5);
        assert_eq!(points[0]["mean"], serde_json::Value::Null, "warming up");
        assert_eq!(points[4]["anomaly"], true);
        assert_eq!(points[4]["value"], 100.0);
        assert_eq!(points[4]["mean"], 10.5);
        assert!(points[4]["threshold"].as_f64().unwrap() < 100.0);
        assert!(detail["mean"].as_f64().is_some(), "the current window");
    }
    assert_eq!(
        daemon.get("/series/cpu").json()["rule"],
        serde_json::Value::Null
    );

    let unknown = daemon.get("/series/nope");
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("`nope`"), "{}", unknown.error());
    assert_eq!(daemon.get("/series/%zz").status, 400);
    let bad = daemon.get("/series?sort=size");
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("`sort`"), "{}", bad.error());
    assert_eq!(daemon.get("/series?limit=10001").status, 400);
    let post = crate::helper::request(daemon.addr, "POST", "/series", &[], b"");
    assert_eq!(post.status, 405);
}

#[test]
fn with_the_dashboard_off_its_routes_are_404() {
    let daemon = TestDaemon::start("[server]\ndashboard = false\n[detector]\nwindow_size = 4\n");
    assert_eq!(daemon.detect(&stream("cpu", 1_700_000_004.0)).status, 200);
    for path in ["/series", "/series/cpu", "/", "/dashboard.js", "/events"] {
        let reply = daemon.get(path);
        assert_eq!(reply.status, 404, "{path}");
        assert!(
            reply.error().contains("dashboard = false"),
            "{}",
            reply.error()
        );
    }
    // Detection is unaffected.
    assert_eq!(daemon.get("/anomalies").json().as_array().unwrap().len(), 1);
}

#[test]
fn anomalies_filter_by_glob_and_time_window_and_log_their_time() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    // Spikes at 2023-11-14T22:13:20Z, +100 s and +200 s.
    for (series, at) in [
        ("cpu.a", 1_700_000_000.0),
        ("cpu.b", 1_700_000_100.0),
        ("mem", 1_700_000_200.0),
    ] {
        assert_eq!(
            daemon.detect(&stream(series, at)).json()["anomalies"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    let series_of = |path: &str| -> Vec<String> {
        let reply = daemon.get(path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.error());
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["series"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        series_of("/anomalies?series_glob=cpu.*"),
        ["cpu.a", "cpu.b"]
    );
    assert_eq!(
        series_of("/anomalies?since=2023-11-14T22:13:20Z&until=1700000200"),
        ["cpu.a", "cpu.b"],
        "since inclusive, until exclusive"
    );
    assert_eq!(
        series_of("/anomalies?since=2023-11-14T23:15:00%2B01:00"),
        ["cpu.b", "mem"],
        "an offset"
    );
    let bad = daemon.get("/anomalies?until=yesterday");
    assert_eq!(bad.status, 400);
    assert!(
        bad.error().contains("`until`") && bad.error().contains("RFC 3339"),
        "{}",
        bad.error()
    );
    let record = &daemon.get("/anomalies?series=cpu.a").json()[0];
    assert_eq!(record["time"], "2023-11-14T22:13:20.000Z");
    let lines = read_lines(&daemon.log_path());
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].contains(r#""timestamp":1700000000.0,"time":"2023-11-14T22:13:20.000Z""#),
        "{}",
        lines[0]
    );
}

#[test]
fn old_log_lines_without_time_reload_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"series":"old","value":99.0,"timestamp":1600000000.5,"mean":1.0,"std_dev":1.0,"threshold":4.0,"direction":"upper"}"#;
    std::fs::write(dir.path().join("anomalies.log"), format!("{old}\n")).unwrap();
    let port = crate::helper::free_port();
    let daemon = TestDaemon::start_in(dir, port, "[log]\nanomaly_log_file = \"anomalies.log\"\n");
    let records = daemon.get("/anomalies").json();
    assert_eq!(records[0]["series"], "old");
    assert_eq!(records[0]["time"], "2020-09-13T12:26:40.500Z");
}

#[test]
fn the_page_and_its_assets_are_served_from_the_binary_with_no_outside_links() {
    let daemon = TestDaemon::start("");
    for (path, content_type) in [
        ("/", "text/html"),
        ("/dashboard.css", "text/css"),
        ("/dashboard.js", "text/javascript"),
    ] {
        let reply = daemon.get(path);
        assert_eq!(reply.status, 200, "{path}");
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        let text = String::from_utf8(reply.body).unwrap();
        // No CDN, no font or script from elsewhere: only the SVG namespace
        // looks like an address.
        let outside = text
            .match_indices("http")
            .filter(|(at, _)| !text[*at..].starts_with("http://www.w3.org/2000/svg"))
            .count();
        assert_eq!(outside, 0, "{path} refers to another host");
    }
    let page = String::from_utf8(daemon.get("/").body).unwrap();
    assert!(page.contains("/dashboard.js") && page.contains("/dashboard.css"));
    assert_eq!(
        crate::helper::request(daemon.addr, "POST", "/", &[], b"").status,
        405
    );
}
