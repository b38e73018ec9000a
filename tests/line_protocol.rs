//! InfluxDB line protocol on `POST /api/v2/write` and `POST /write`, with
//! bodies from the InfluxDB and Telegraf documentation: escapes, every
//! field type, gzip, each precision, resends, and bad requests.

use std::io::Write as _;

use crate::helper::{Reply, TestDaemon, encode, request};

/// Telegraf's `outputs.influxdb_v2` headers.
const TELEGRAF_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "text/plain; charset=utf-8"),
    ("User-Agent", "Telegraf/1.30"),
];

fn write(daemon: &TestDaemon, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request(daemon.addr, "POST", path, headers, body)
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// The `/series/{name}` of a series, or `None` when it does not exist.
fn series(daemon: &TestDaemon, name: &str) -> Option<serde_json::Value> {
    let reply = daemon.get(&format!("/series/{}", encode(name)));
    (reply.status == 200).then(|| reply.json())
}

#[test]
fn documented_examples_become_labelled_series() {
    let daemon = TestDaemon::start("");
    // The examples of the InfluxDB line-protocol reference ("Special
    // characters", "Quotes", field types), one per line.
    let body = concat!(
        "# comment lines and blank lines are ignored\n",
        "\n",
        "myMeasurement,tag1=value1,tag2=value2 fieldKey=\"fieldValue\" 1556813561098000000\n",
        "myMeasurement fieldKey=\"This is a string\" 1556813561098000000\n",
        "myMeasurement,tagKey=Special\\,\\ \\=tag\\ value intField=12485903i 1556813561098000000\n",
        "my\\ Measurement,tag\\ Key1=tag\\ Value1 floatField=-1.234456e+78,boolField=true 1556813561098000000\n",
        "cpu,cpu=cpu-total,host=web-1 usage_idle=98.2,usage_user=1.1,uptime=1u 1556813561098000000\n",
    );
    let reply = write(
        &daemon,
        "/api/v2/write?org=o&bucket=telegraf",
        TELEGRAF_HEADERS,
        body.as_bytes(),
    );
    assert_eq!(reply.status, 204, "{}", reply.error());
    let expected = [
        (
            r#"myMeasurement_intField{tagKey="Special, =tag value"}"#,
            12_485_903.0,
        ),
        (
            r#"my_Measurement_floatField{tag_Key1="tag Value1"}"#,
            -1.234456e78,
        ),
        (r#"my_Measurement_boolField{tag_Key1="tag Value1"}"#, 1.0),
        (r#"cpu_usage_idle{cpu="cpu-total",host="web-1"}"#, 98.2),
        (r#"cpu_usage_user{cpu="cpu-total",host="web-1"}"#, 1.1),
        (r#"cpu_uptime{cpu="cpu-total",host="web-1"}"#, 1.0),
    ];
    for (name, value) in expected {
        let detail = series(&daemon, name).unwrap_or_else(|| panic!("no series {name}"));
        assert_eq!(detail["last_value"], value, "{name}");
        assert_eq!(detail["last_seen"], 1_556_813_561.098, "{name}");
    }
    let listed = daemon.get("/series?limit=100").json();
    assert_eq!(listed.as_array().unwrap().len(), expected.len(), "{listed}");
    let m = |sample: &str| daemon.metric(sample);
    assert_eq!(m("anomalyd_points_received_total{format=\"influx\"}"), 6.0);
    assert_eq!(
        m("anomalyd_samples_skipped_total{format=\"influx\",reason=\"string_field\"}"),
        2.0
    );
    assert_eq!(
        m("anomalyd_http_request_duration_seconds_count{route=\"/api/v2/write\"}"),
        1.0
    );
}

#[test]
fn gzip_bodies_every_precision_and_resends() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 3\nmin_samples = 3\n");
    // The same instant, 2023-11-14T22:14:00Z, in each unit either API takes.
    let instant = 1_700_000_040.0;
    let cases = [
        ("/api/v2/write?precision=ns", "1700000040000000000"),
        ("/api/v2/write", "1700000040000000000"),
        ("/api/v2/write?precision=us", "1700000040000000"),
        ("/api/v2/write?precision=ms", "1700000040000"),
        ("/api/v2/write?precision=s", "1700000040"),
        ("/write?db=telegraf&precision=n", "1700000040000000000"),
        ("/write?db=telegraf&precision=u", "1700000040000000"),
        ("/write?db=telegraf&precision=ms", "1700000040000"),
        ("/write?db=telegraf&precision=s", "1700000040"),
        ("/write?db=telegraf&precision=m", "28333334"),
    ];
    let gzipped = &[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")];
    for (i, (path, timestamp)) in cases.iter().enumerate() {
        let body = format!("precision,case={i} v=1 {timestamp}\n");
        let reply = write(&daemon, path, gzipped, &gzip(body.as_bytes()));
        assert_eq!(reply.status, 204, "{path}: {}", reply.error());
        let name = format!("precision_v{{case=\"{i}\"}}");
        let detail = series(&daemon, &name).unwrap_or_else(|| panic!("{path}: no {name}"));
        assert_eq!(detail["last_seen"], instant, "{path}");
    }
    let reply = write(&daemon, "/write?precision=h", &[], b"hourly v=2 472222\n");
    assert_eq!(reply.status, 204, "{}", reply.error());
    let detail = series(&daemon, "hourly_v").unwrap();
    assert_eq!(detail["last_seen"], 1_699_999_200.0);

    // Telegraf resends a batch after a failure: the old lines are
    // acknowledged and counted, not applied again; the new spike is
    // scored against the first three points.
    let headers = gzipped;
    let batch = "load,host=a v=1 1\nload,host=a v=1 2\nload,host=a v=1 3\n";
    let reply = write(
        &daemon,
        "/api/v2/write?precision=s",
        headers,
        &gzip(batch.as_bytes()),
    );
    assert_eq!(reply.status, 204, "{}", reply.error());
    let resend = format!("{batch}load,host=a v=40 4\n");
    let reply = write(
        &daemon,
        "/api/v2/write?precision=s",
        headers,
        &gzip(resend.as_bytes()),
    );
    assert_eq!(reply.status, 204, "{}", reply.error());
    assert_eq!(
        daemon.metric("anomalyd_points_duplicate_total{format=\"influx\"}"),
        3.0
    );
    let detail = series(&daemon, "load_v{host=\"a\"}").unwrap();
    assert_eq!(detail["points"], 4);
    let anomalies = daemon
        .get(&format!(
            "/anomalies?series={}",
            encode("load_v{host=\"a\"}")
        ))
        .json();
    let anomalies = anomalies.as_array().unwrap();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0]["value"], 40.0);
    assert_eq!(anomalies[0]["timestamp"], 4.0);
}

#[test]
fn bad_requests_name_the_line_and_apply_nothing() {
    let daemon = TestDaemon::start("[server]\nmax_body_bytes = 65536\nmax_series = 3\n");
    let v2 = "/api/v2/write?precision=s";
    let body = "ok v=1 10\nok v=2 11\nbroken,tag v=3 12\n";
    let reply = write(&daemon, v2, TELEGRAF_HEADERS, body.as_bytes());
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .error()
            .starts_with("line 3: tag `tag` has no `=value`"),
        "{}",
        reply.error()
    );
    let reply = write(&daemon, v2, &[], b"ok v=1 10\nok v=oops 11\n");
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().starts_with("line 2: field `v`"),
        "{}",
        reply.error()
    );
    // Nanoseconds sent as seconds: a time after the year 9999.
    let reply = write(&daemon, v2, &[], b"ok v=1 1700000000000000000\n");
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("is `precision` right?"),
        "{}",
        reply.error()
    );
    assert!(
        series(&daemon, "ok_v").is_none(),
        "a refused request applies nothing"
    );

    let reply = write(&daemon, "/api/v2/write?precision=h", &[], b"ok v=1 1\n");
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("`precision`"), "{}", reply.error());
    let reply = write(&daemon, v2, &[("Content-Encoding", "br")], b"ok v=1 1\n");
    assert_eq!(reply.status, 415);
    assert!(reply.error().contains("gzip"), "{}", reply.error());
    let reply = write(&daemon, v2, &[("Content-Type", "application/json")], b"{}");
    assert_eq!(reply.status, 415);
    assert!(reply.error().contains("POST /detect"), "{}", reply.error());
    let reply = write(&daemon, v2, &[("Content-Encoding", "gzip")], b"ok v=1 1\n");
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("not valid gzip"),
        "{}",
        reply.error()
    );
    // A small gzip body that would expand past max_body_bytes: 413.
    let bomb = gzip("big v=1\n".repeat(20_000).as_bytes());
    assert!(bomb.len() < 65_536, "{} bytes", bomb.len());
    let reply = write(&daemon, v2, &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(reply.status, 413);
    assert!(
        reply.error().contains("max_body_bytes"),
        "{}",
        reply.error()
    );
    assert!(series(&daemon, "big_v").is_none());
    assert_eq!(
        daemon.metric("anomalyd_points_received_total{format=\"influx\"}"),
        0.0
    );

    let reply = request(daemon.addr, "GET", "/api/v2/write", &[], b"");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = request(daemon.addr, "PUT", "/write", &[], b"");
    assert_eq!(reply.status, 405);
    // More new series than max_series allows: 429, and none is created.
    let reply = write(&daemon, v2, &[], b"a v=1 1\nb v=1 1\nc v=1 1\nd v=1 1\n");
    assert_eq!(reply.status, 429, "{}", reply.error());
    assert!(reply.error().contains("max_series"), "{}", reply.error());
    assert!(series(&daemon, "a_v").is_none());
    // The daemon still serves after all of that.
    let reply = write(&daemon, v2, &[], b"ok v=1 10\n");
    assert_eq!(reply.status, 204, "{}", reply.error());
    assert!(series(&daemon, "ok_v").is_some());
}

#[test]
fn rules_pick_labelled_series_by_metric_and_labels() {
    let daemon = TestDaemon::start(concat!(
        "[detector]\nwindow_size = 10\nmin_samples = 10\n",
        "[[rule]]\nmetric = \"disk_*\"\nlabels = { host = \"db-1\" }\nwindow_size = 3\nmin_samples = 3\n",
        "[[rule]]\nseries = 'mem_used\\{host=\"db-1\"\\}'\nwindow_size = 4\nmin_samples = 4\n",
    ));
    let body = "disk,host=db-1 used=1 1\ndisk,host=web-1 used=1 1\nmem,host=db-1 used=1 1\n";
    let reply = write(&daemon, "/api/v2/write?precision=s", &[], body.as_bytes());
    assert_eq!(reply.status, 204, "{}", reply.error());
    let settings = |name: &str| {
        let detail = series(&daemon, name).unwrap_or_else(|| panic!("no {name}"));
        (
            detail["rule"].clone(),
            detail["settings"]["window_size"].clone(),
        )
    };
    assert_eq!(
        settings(r#"disk_used{host="db-1"}"#),
        (
            serde_json::json!(r#"metric = "disk_*", labels = { host = "db-1" }"#),
            serde_json::json!(3)
        )
    );
    assert_eq!(
        settings(r#"disk_used{host="web-1"}"#),
        (serde_json::Value::Null, serde_json::json!(10))
    );
    assert_eq!(
        settings(r#"mem_used{host="db-1"}"#),
        (
            serde_json::json!(r#"mem_used\{host="db-1"\}"#),
            serde_json::json!(4)
        )
    );
}
