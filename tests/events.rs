//! `GET /events`: the dashboard's live stream, read as a browser reads it
//! (server-sent events over a plain connection), against the real daemon.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::helper::{TIMEOUT, TestDaemon, point, wait_until};

/// An open event stream.
struct EventStream {
    reader: BufReader<TcpStream>,
}

impl EventStream {
    /// Opens `GET path`; panics unless the reply is 200 text/event-stream.
    fn open(addr: SocketAddr, path: &str) -> EventStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let deadline = Instant::now() + TIMEOUT;
        while !head.ends_with("\r\n\r\n") {
            assert!(Instant::now() < deadline, "no reply head: {head:?}");
            let _ = reader.read_line(&mut head);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        EventStream { reader }
    }

    /// The next event (name and JSON data) that `wanted` accepts, skipping
    /// others, within the test timeout.
    fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + TIMEOUT;
        let (mut name, mut line) = (String::new(), String::new());
        loop {
            assert!(Instant::now() < deadline, "no {what} event in time");
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("the stream ended while waiting for {what}"),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("reading the stream: {e}"),
            }
            // Chunked transfer: size lines and blank lines carry no field.
            if let Some(event) = line.trim_end().strip_prefix("event: ") {
                name = event.to_owned();
            } else if let Some(data) = line.trim_end().strip_prefix("data: ") {
                let data: serde_json::Value = serde_json::from_str(data).unwrap();
                if wanted(&name, &data) {
                    return data;
                }
            }
        }
    }

    /// Whether the server ends the stream within the test timeout.
    fn ends(&mut self) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn spike(daemon: &TestDaemon, series: &str) {
    for (i, v) in [10.0, 11.0, 10.0, 11.0, 100.0].into_iter().enumerate() {
        assert_eq!(
            daemon
                .detect(&point(series, v, 1_700_000_000.0 + i as f64))
                .status,
            200
        );
    }
}

#[test]
fn a_stream_carries_new_anomalies_series_and_the_selected_series_points() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 4\n");
    let mut all = EventStream::open(daemon.addr, "/events");
    let mut cpu = EventStream::open(daemon.addr, "/events?series=cpu%2F1");
    wait_until("both streams to be counted", || {
        (daemon.metric("anomalyd_event_streams") == 2.0).then_some(())
    });
    spike(&daemon, "cpu/1");
    let anomalies = all.wait_for("anomalies", |name, _| name == "anomalies");
    assert_eq!(anomalies["anomalies"][0]["series"], "cpu/1");
    assert_eq!(anomalies["anomalies"][0]["value"], 100.0);
    assert_eq!(anomalies["skipped"], 0);
    let series = all.wait_for("series", |name, data| {
        name == "series" && data.as_array().unwrap().iter().any(|s| s["points"] == 5)
    });
    assert_eq!(series[0]["series"], "cpu/1");
    assert_eq!(series[0]["anomalies"], 1);
    // The selected series' points, up to the spike.
    let last = cpu.wait_for("the spike's point", |name, data| {
        name == "points"
            && data["points"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["anomaly"] == true)
    });
    assert_eq!(last["series"], "cpu/1");
    let spike_point = last["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(spike_point["value"], 100.0);
    assert_eq!(spike_point["mean"], 10.5);
}

#[test]
fn streams_beyond_the_cap_get_503_and_a_closed_one_frees_its_place() {
    let daemon = TestDaemon::start("[server]\nmax_event_streams = 1\n");
    let first = EventStream::open(daemon.addr, "/events");
    let refused = daemon.get("/events");
    assert_eq!(refused.status, 503);
    assert!(
        refused.error().contains("max_event_streams"),
        "{}",
        refused.error()
    );
    drop(first);
    wait_until("the closed stream to free its place", || {
        (daemon.metric("anomalyd_event_streams") == 0.0).then_some(())
    });
    EventStream::open(daemon.addr, "/events");
    assert_eq!(daemon.get("/events?foo=1").status, 400);
}

#[test]
fn shutdown_ends_open_streams_at_once() {
    let mut daemon = TestDaemon::start("[server]\nshutdown_grace = \"60s\"\n");
    let mut stream = EventStream::open(daemon.addr, "/events");
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    assert!(stream.ends(), "the stream was not ended");
    assert_eq!(daemon.wait_exit().code(), Some(0));
    // Far below the 60 s grace a request in flight would get.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_cluster_members_stream_carries_the_anomalies_of_every_member() {
    use crate::cluster::{consumed, join, member_config};
    let Some(nats) = crate::helper::nats::Nats::start() else {
        return;
    };
    let a = join(&member_config(&nats, "member-a", "2s"));
    let b = join(&member_config(&nats, "member-b", "2s"));
    let partition = anomalyd::cluster::partition::partition_of("cpu/1", 16);
    wait_until("the partitions to be shared", || {
        let (x, y) = (consumed(&a), consumed(&b));
        (x.len() + y.len() == 16 && x.is_disjoint(&y) && !x.is_empty() && !y.is_empty())
            .then_some(())
    });
    // Watch on the member that does not own the series.
    let watcher = if consumed(&a).contains(&partition) {
        &b
    } else {
        &a
    };
    let mut all = EventStream::open(watcher.addr, "/events");
    for (i, v) in [10.0, 11.0, 10.0, 11.0]
        .into_iter()
        .cycle()
        .take(32)
        .chain([100.0])
        .enumerate()
    {
        let reply = watcher.detect(&point("cpu/1", v, 1_700_000_000.0 + i as f64));
        assert_eq!(reply.status, 202, "{}", reply.error());
    }
    let anomalies = all.wait_for("the owner's anomaly", |name, data| {
        name == "anomalies" && data["anomalies"][0]["series"] == "cpu/1"
    });
    assert_eq!(anomalies["anomalies"][0]["value"], 100.0);
}
