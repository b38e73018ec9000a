//! The monitoring stack with its real programs: a Prometheus that scrapes
//! and remote-writes to anomalyd.

use anomalyd::ingest::remote_write::{Label, STALE_NAN_BITS, Sample, TimeSeries, WriteRequest};
use prost::Message;

use crate::helper::programs::RealProgram;
use crate::helper::{TestDaemon, encode, request, wait_until};

/// One series of a remote-write body: labels, and samples as (value, ms).
type SeriesSamples<'a> = (&'a [(&'a str, &'a str)], &'a [(f64, i64)]);

/// A remote-write body of `series`.
fn remote_write_body(series: &[SeriesSamples<'_>]) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.as_bytes().to_vec().into(),
                        value: value.as_bytes().to_vec().into(),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(value, timestamp)| Sample { value, timestamp })
                    .collect(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

const REMOTE_WRITE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

fn remote_write(daemon: &TestDaemon, body: &[u8]) -> crate::helper::Reply {
    request(
        daemon.addr,
        "POST",
        "/api/v1/write",
        REMOTE_WRITE_HEADERS,
        body,
    )
}

#[test]
fn remote_write_resends_stale_markers_and_bad_requests() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 3\nmin_samples = 3\n");
    let cpu: &[(&str, &str)] = &[("__name__", "cpu"), ("host", "a")];
    let first = remote_write_body(&[(cpu, &[(1.0, 1_000), (1.0, 2_000), (1.0, 3_000)])]);
    let reply = remote_write(&daemon, &first);
    assert_eq!(reply.status, 204, "{}", reply.error());
    // A retry of the same samples plus a new one: acknowledged, the old
    // three counted as duplicates, and only the new one applied (it is
    // the spike, scored against the first three).
    let retry = remote_write_body(&[(
        cpu,
        &[(1.0, 1_000), (1.0, 2_000), (1.0, 3_000), (50.0, 4_000)],
    )]);
    assert_eq!(remote_write(&daemon, &retry).status, 204);
    let m = |sample: &str| daemon.metric(sample);
    assert_eq!(
        m("anomalyd_points_received_total{format=\"remote_write\"}"),
        7.0
    );
    assert_eq!(
        m("anomalyd_points_duplicate_total{format=\"remote_write\"}"),
        3.0
    );
    let anomalies = daemon
        .get("/anomalies?series=cpu%7Bhost%3D%22a%22%7D")
        .json();
    let anomalies = anomalies.as_array().unwrap();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0]["value"], 50.0);
    assert_eq!(anomalies[0]["timestamp"], 4.0);
    assert_eq!(anomalies[0]["mean"], 1.0);
    // A stale marker ends nothing and is no point: skipped and counted.
    let stale = remote_write_body(&[(cpu, &[(f64::from_bits(STALE_NAN_BITS), 5_000)])]);
    assert_eq!(remote_write(&daemon, &stale).status, 204);
    assert_eq!(
        m("anomalyd_samples_skipped_total{format=\"remote_write\",reason=\"stale_marker\"}"),
        1.0
    );
    assert_eq!(
        m("anomalyd_points_received_total{format=\"remote_write\"}"),
        7.0
    );

    // Bad requests: a clear error naming what is wrong, nothing applied.
    let implausible = remote_write_body(&[
        (&[("__name__", "ok")], &[(1.0, 1_000)]),
        (&[("__name__", "ns")], &[(1.0, 1_700_000_000_000_000_000)]),
    ]);
    let reply = remote_write(&daemon, &implausible);
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("timeseries 1 (`ns`), sample 0"),
        "{}",
        reply.error()
    );
    let reply = remote_write(&daemon, b"\x10garbage");
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("snappy"), "{}", reply.error());
    let json = request(
        daemon.addr,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(json.status, 415);
    assert!(
        json.error().contains("application/x-protobuf"),
        "{}",
        json.error()
    );
    let unencoded = request(
        daemon.addr,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/x-protobuf")],
        &first,
    );
    assert_eq!(unencoded.status, 415);
    assert!(
        unencoded.error().contains("snappy"),
        "{}",
        unencoded.error()
    );
    // A small body that would decompress past max_body_bytes: 413.
    let big = "v".repeat(2 << 20);
    let bomb = remote_write_body(&[(&[("__name__", "bomb"), ("pad", &big)], &[(1.0, 1_000)])]);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let reply = remote_write(&daemon, &bomb);
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("decompresses"), "{}", reply.error());
    assert_eq!(
        daemon.get("/series/ok").status,
        404,
        "a refused request applies nothing"
    );
    assert_eq!(
        m("anomalyd_points_received_total{format=\"remote_write\"}"),
        7.0
    );
    let reply = request(daemon.addr, "GET", "/api/v1/write", &[], b"");
    assert_eq!(reply.status, 405);
}

/// Debian's Prometheus, scraping `target` every 100 ms with a target
/// label holding a space and a quote, and remote-writing to `write_to`.
fn prometheus(target: std::net::SocketAddr, write_to: std::net::SocketAddr) -> Option<RealProgram> {
    let config = format!(
        r#"global:
  scrape_interval: 100ms
  scrape_timeout: 100ms
scrape_configs:
  - job_name: anomalyd
    static_configs:
      - targets: ["{target}"]
        labels:
          team: 'core "db" team'
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{{port}}"]
remote_write:
  - url: http://{write_to}/api/v1/write
    queue_config:
      batch_send_deadline: 100ms
      min_backoff: 50ms
      max_backoff: 200ms
"#
    );
    RealProgram::start(
        "prometheus",
        "prometheus",
        &[
            "--config.file={dir}/prometheus.yml",
            "--storage.tsdb.path={dir}/data",
            "--web.listen-address=127.0.0.1:{port}",
        ],
        &[("prometheus.yml", &config)],
        "/-/ready",
        "ANOMALYD_REQUIRE_PROMETHEUS",
    )
}

#[test]
fn prometheus_remote_writes_scraped_series_with_their_labels() {
    let daemon =
        TestDaemon::start("[detector]\nwindow_size = 3\nmin_samples = 3\nmin_consecutive = 1\n");
    let Some(prometheus) = prometheus(daemon.addr, daemon.addr) else {
        return;
    };
    // A scraped counter of anomalyd's, under its canonical name: labels
    // sorted, the quote escaped.
    let name = format!(
        r#"anomalyd_points_received_total{{format="detect",instance="{}",job="anomalyd",team="core \"db\" team"}}"#,
        daemon.addr
    );
    let listed = wait_until("the scraped series in GET /series", || {
        let series = daemon.get("/series?limit=1000").json();
        let items = series.as_array().unwrap().clone();
        items.into_iter().find(|s| s["series"] == name.as_str())
    });
    assert!(listed["points"].as_u64().unwrap() >= 1, "{listed}");
    // Detection runs on it: once warm, the flat zero has a baseline.
    let path = format!("/series/{}", encode(&name));
    wait_until("a baseline for the scraped series", || {
        let detail = daemon.get(&path).json();
        (detail["mean"] == 0.0).then_some(())
    });
    // A jump of the scraped counter (1,000 points posted to /detect) is
    // an anomaly of that series, named with its labels.
    let batch: String = (0..1000)
        .map(|i| format!("{{\"series\":\"x\",\"value\":{i}}}\n"))
        .collect();
    let reply = daemon.detect_ndjson(&batch);
    assert_eq!(reply.status, 200, "{}", reply.error());
    let query = format!("/anomalies?series={}", encode(&name));
    let anomaly = wait_until("an anomaly of the scraped counter", || {
        let reply = daemon.get(&query).json();
        reply.as_array().unwrap().first().cloned()
    });
    assert_eq!(anomaly["series"], name.as_str(), "{anomaly}");
    assert_eq!(anomaly["value"], 1000.0, "{anomaly}");
    assert!(daemon.metric("anomalyd_points_received_total{format=\"remote_write\"}") > 0.0);
    // Prometheus saw every write accepted (it scrapes itself).
    let query = "/api/v1/query?query=sum(prometheus_remote_storage_samples_failed_total)";
    let failed = wait_until("Prometheus' own remote-write metrics", || {
        let reply = request(prometheus.addr, "GET", query, &[], b"").json();
        let value = &reply["data"]["result"][0]["value"][1];
        value.as_str().map(str::to_owned)
    });
    assert_eq!(failed, "0", "{}", prometheus.output());
}
