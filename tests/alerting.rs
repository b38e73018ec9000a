//! Alerting: webhooks against a test receiver (open and close per
//! episode, retry after failure, drops when the queue is full, delivery
//! during shutdown) and the real Alertmanager (firing, then resolved).

use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::helper::programs::RealProgram;
use crate::helper::receiver::Receiver;
use crate::helper::{TestDaemon, request, wait_until};
use crate::tls::{Pki, curl};

/// Window 5, episodes that close after 2 normal points.
const DETECTOR: &str = "[detector]\nwindow_size = 5\nmin_samples = 5\nresolve_after = 2\n";

/// Now, in whole unix seconds.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

/// NDJSON points of `series`: 5 quiet ones, a spike that opens an episode,
/// then `after` quiet ones (2 close it), one second apart from `start`.
pub(crate) fn episode(series: &str, start: f64, after: usize) -> String {
    let values = [10.0, 11.0, 10.0, 11.0, 10.0, 100.0]
        .into_iter()
        .chain([10.5].repeat(after));
    values
        .enumerate()
        .map(|(i, value)| {
            let point = serde_json::json!({"series": series, "value": value, "timestamp": start + i as f64});
            format!("{point}\n")
        })
        .collect()
}

/// Posts NDJSON `body`; expects 200.
pub(crate) fn post(daemon: &TestDaemon, body: &str) {
    let reply = daemon.detect_ndjson(body);
    assert_eq!(reply.status, 200, "{}", reply.error());
}

/// The sample name of `anomalyd_notifications_<name>` for one sink.
pub(crate) fn sink_metric(name: &str, sink: &str, url: &str) -> String {
    format!("anomalyd_notifications_{name}{{sink=\"{sink}\",url=\"{url}\"}}")
}

#[test]
fn webhooks_get_each_opening_and_closing_and_retry_after_a_failure() {
    let receiver = Receiver::start(1);
    let daemon = TestDaemon::start(&format!(
        "{DETECTOR}severity = \"page\"\n[[rule]]\nseries = \"db*\"\nseverity = \"critical\"\n"
    ));
    // The sink comes with a reload: sinks apply without a restart.
    let url = format!("http://{}/hook", receiver.addr);
    daemon.add_drop_in(
        "hook.toml",
        &format!(
            "[[alert.webhook]]\nurl = \"{url}\"\nheaders = {{ Authorization = \"Bearer t0ken\" }}\n"
        ),
    );
    let series = r#"db{host="a"}"#;
    post(&daemon, &episode(series, 1_700_000_000.0, 2));
    let docs = wait_until("both notifications", || {
        let docs = receiver.accepted();
        (docs.len() >= 2).then_some(docs)
    });
    assert_eq!(docs.len(), 2, "{docs:#?}");
    let (opened, closed) = (&docs[0], &docs[1]);
    assert_eq!(opened["event"], "opened");
    assert_eq!(closed["event"], "closed");
    for doc in [opened, closed] {
        assert_eq!(doc["series"], series);
        assert_eq!(doc["episode"], 1_700_000_005_000_000u64);
        assert_eq!(doc["severity"], "critical");
        assert_eq!(doc["labels"]["host"], "a");
        assert_eq!(doc["labels"]["alertname"], "AnomalyDetected");
        assert_eq!(doc["value"], 100.0, "the opening point, also on closing");
        assert_eq!(doc["start"], 1_700_000_005.0);
        assert_eq!(
            doc["dashboard"],
            format!("http://{}/#series=db%7Bhost%3D%22a%22%7D", daemon.addr)
        );
    }
    assert_eq!(opened["end"], Value::Null);
    assert_eq!(closed["end"], 1_700_000_007.0);
    assert_eq!(closed["points"], 1);
    // The first attempt got a 500 and was retried with the same document.
    let all = receiver.received();
    assert_eq!(all[0].status, 500);
    assert_eq!(all[0].body, *opened);
    assert_eq!(all[0].path, "/hook");
    assert_eq!(
        all[0].headers.get("authorization").map(String::as_str),
        Some("Bearer t0ken")
    );
    assert_eq!(
        all[0].headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let m = |name: &str| daemon.metric(&sink_metric(name, "webhook", &url));
    assert_eq!(m("sent_total"), 2.0);
    assert_eq!(m("failed_total"), 1.0);
    assert_eq!(m("dropped_total"), 0.0);
    assert_eq!(m("queued"), 0.0);
}

#[test]
fn a_full_queue_drops_and_counts_and_ingest_goes_on() {
    // Nothing listens there: every send fails, the queue fills.
    let port = crate::helper::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let daemon = TestDaemon::start(&format!(
        "{DETECTOR}[[alert.webhook]]\nurl = \"{url}\"\ntimeout = \"1s\"\nqueue_size = 1\n"
    ));
    let body: String = (0..6)
        .map(|i| episode(&format!("s{i}"), 1_700_000_000.0, 0))
        .collect();
    post(&daemon, &body);
    let dropped = sink_metric("dropped_total", "webhook", &url);
    // Six openings: at most one in the outbox and one in the queue.
    daemon.wait_for_metric(&dropped, |v| v >= 4.0);
    daemon.wait_for_metric(&sink_metric("failed_total", "webhook", &url), |v| v >= 1.0);
    assert_eq!(
        daemon.metric(&sink_metric("sent_total", "webhook", &url)),
        0.0
    );
    // Ingest is not held up by the sink.
    post(&daemon, &episode("later", 1_700_000_100.0, 2));
    assert_eq!(daemon.metric("anomalyd_episodes_opened_total"), 7.0);
}

#[test]
fn pending_notifications_are_delivered_during_the_shutdown_grace() {
    // Two failures: the opening is delivered on the third attempt, about
    // 3 s after the first (backoff 1 s, then 2 s), after SIGTERM.
    let receiver = Receiver::start(2);
    let mut daemon = TestDaemon::start(&format!(
        "{DETECTOR}[[alert.webhook]]\nurl = \"http://{}/\"\n",
        receiver.addr
    ));
    post(&daemon, &episode("cpu", 1_700_000_000.0, 0));
    wait_until("the first attempt", || {
        (!receiver.received().is_empty()).then_some(())
    });
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status:?}");
    let docs = receiver.accepted();
    assert_eq!(docs.len(), 1, "{:#?}", receiver.received());
    assert_eq!(docs[0]["event"], "opened");
    assert_eq!(docs[0]["series"], "cpu");
}

/// Debian's Alertmanager on a free port, routing everything to a receiver
/// that does nothing, over TLS with `tls`'s server certificate when given;
/// `None` when it is not installed.
pub(crate) fn alertmanager(tls: Option<&Pki>) -> Option<RealProgram> {
    let config =
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n";
    let web = match tls {
        Some(pki) => format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display()
        ),
        None => String::new(),
    };
    let ready = |addr: SocketAddr| match tls {
        Some(pki) => curl(pki, &format!("https://{addr}/-/ready"), &[]).0 == 200,
        None => {
            TcpStream::connect(addr).is_ok()
                && request(addr, "GET", "/-/ready", &[], b"").status == 200
        }
    };
    RealProgram::start_until(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
        &[
            "--config.file={dir}/alertmanager.yml",
            "--web.config.file={dir}/web.yml",
            "--storage.path={dir}/data",
            "--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        &[("alertmanager.yml", config), ("web.yml", &web)],
        &ready,
        "ANOMALYD_REQUIRE_ALERTMANAGER",
    )
}

/// Alertmanager's alerts named `AnomalyDetected`.
fn anomaly_alerts(alertmanager: &RealProgram) -> Vec<Value> {
    let reply = request(alertmanager.addr, "GET", "/api/v2/alerts", &[], b"");
    assert_eq!(reply.status, 200, "{}", alertmanager.output());
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "AnomalyDetected")
        .cloned()
        .collect()
}

#[test]
fn alertmanager_shows_an_episode_firing_then_resolved() {
    let Some(alertmanager) = alertmanager(None) else {
        return;
    };
    let daemon = TestDaemon::start(&format!(
        "{DETECTOR}[[alert.alertmanager]]\nurl = \"http://{}\"\nresend_interval = \"1s\"\n",
        alertmanager.addr
    ));
    // A labelled series from line protocol, whose own `severity` label
    // clashes with the alert's.
    let start = now() - 60.0;
    let lines: String = [10.0, 11.0, 10.0, 11.0, 10.0, 100.0]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "cpu,host=db-1,severity=low usage={v} {}\n",
                start + i as f64
            )
        })
        .collect();
    daemon.write_lines(&lines);
    let series = r#"cpu_usage{host="db-1",severity="low"}"#;
    let alert = wait_until("the alert in Alertmanager", || {
        anomaly_alerts(&alertmanager).into_iter().next()
    });
    let labels = &alert["labels"];
    assert_eq!(labels["series"], series, "{alert:#}");
    assert_eq!(labels["host"], "db-1");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["exported_severity"], "low");
    assert_eq!(labels.as_object().unwrap().len(), 5, "{labels:#}");
    let annotations = &alert["annotations"];
    assert_eq!(annotations["value"], "100");
    assert_eq!(annotations["mean"], "10.4");
    assert!(annotations["threshold"].is_string(), "{annotations:#}");
    assert!(annotations["peak_score"].is_string(), "{annotations:#}");
    assert_eq!(
        annotations["dashboard"],
        format!(
            "http://{}/#series=cpu_usage%7Bhost%3D%22db-1%22%2Cseverity%3D%22low%22%7D",
            daemon.addr
        )
    );
    assert_ne!(alert["status"]["state"], "resolved", "{alert:#}");
    let starts_at = alert["startsAt"].as_str().unwrap().to_owned();
    // Re-sent while open: Alertmanager keeps one alert, same start.
    daemon.wait_for_metric(
        &format!(
            "anomalyd_notifications_sent_total{{sink=\"alertmanager\",url=\"http://{}\"}}",
            alertmanager.addr
        ),
        |v| v >= 2.0,
    );
    let alerts = anomaly_alerts(&alertmanager);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["startsAt"], starts_at.as_str());

    // Two quiet points close the episode: the alert resolves.
    daemon.write_lines(&format!(
        "cpu,host=db-1,severity=low usage=10.5 {}\ncpu,host=db-1,severity=low usage=10.5 {}\n",
        start + 6.0,
        start + 7.0
    ));
    wait_until("the alert to resolve", || {
        anomaly_alerts(&alertmanager).is_empty().then_some(())
    });
}
