//! Tests of the whole server run in-process (see `support`): the request
//! path end to end, and the timeouts at their real, minutes-long values
//! under a paused clock.

mod support;

use std::time::Duration;

use anomalyd::api::AnomalyRecord;
use anomalyd::detect::Side;
use serde_json::Value;
use support::{Server, parse_reply, read_until_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[tokio::test]
async fn an_anomaly_is_replied_logged_and_listed() {
    let mut server = Server::start("[detector]\nwindow_size = 10\n").await;
    for i in 0..10 {
        let value = if i % 2 == 0 { 10.0 } else { 11.0 };
        let (status, body) = server
            .request(
                "POST",
                "/detect",
                &format!(r#"{{"series":"cpu","value":{value}}}"#),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server
        .request(
            "POST",
            "/detect",
            r#"{"series":"cpu","value":90,"timestamp":1700000000}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["anomaly"], true, "{body}");
    assert_eq!(reply["logged"], true, "{body}");

    let (status, body) = server.request("GET", "/anomalies?series=cpu", "").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["value"], 90.0);

    let log = server.log_path();
    server.stop().await.expect("clean shutdown");
    let lines: Vec<Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["timestamp"], 1_700_000_000.0);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named() {
    let mut server = Server::start("").await;
    let (status, body) = server
        .request("POST", "/detect", r#"{"series":"cpu","value":"high"}"#)
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.contains("value"), "{body}");
    let (status, body) = server.request("GET", "/anomalies?series=%zz", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("series"), "{body}");
    server.stop().await.unwrap();
}

/// With the main address saturated (`max_connections` held by silent
/// clients), probes and scrapes are still answered on `admin_listen`,
/// which serves nothing else.
#[tokio::test(start_paused = true)]
async fn the_admin_address_answers_probes_while_the_main_one_is_saturated() {
    let mut server = Server::start(
        "[server]\nmax_connections = 2\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout = \"1h\"\n",
    )
    .await;
    let admin = server.admin_addr.expect("admin address bound");
    let _held: Vec<TcpStream> = vec![
        TcpStream::connect(server.addr).await.unwrap(),
        TcpStream::connect(server.addr).await.unwrap(),
    ];
    // A third client on the main address waits in the kernel's backlog.
    let waiting = tokio::time::timeout(
        Duration::from_secs(30),
        server.request("GET", "/healthz", ""),
    )
    .await;
    assert!(waiting.is_err(), "the main address should be saturated");
    for path in ["/healthz", "/ready", "/metrics"] {
        let (status, body) = support::request_at(admin, "GET", path, "").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = support::request_at(admin, "POST", "/detect", r#"{"value":1}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("admin address"), "{body}");
    drop(_held);
    server.stop().await.unwrap();
}

/// The errors hyper answers itself (a URI or headers too large, a request
/// that is not HTTP) carry the same JSON error body as every other status.
#[tokio::test]
async fn errors_hyper_answers_itself_carry_a_json_error() {
    let mut server = Server::start("").await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(600_000)
    );
    let cases = [
        (long_uri, 414, "URI"),
        (many_headers, 431, "headers"),
        (huge_header, 431, "headers"),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), 400, "HTTP"),
    ];
    for (request, status, needle) in cases {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let _ = stream.write_all(request.as_bytes()).await;
        let reply = read_until_closed(&mut stream).await;
        let (got, body) = parse_reply(&reply);
        assert_eq!(got, status, "{body}");
        let error: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body:?}"));
        let message = error["error"].as_str().expect("an error message");
        assert!(message.contains(needle), "{status}: {message}");
    }
    let (status, _) = server.request("GET", "/healthz", "").await;
    assert_eq!(status, 200);
    server.stop().await.unwrap();
}

/// Every numeric key at its upper bound: what `--check-config` accepts,
/// the server starts with and serves (a huge `max_connections` used to pass
/// the check and then panic at start).
#[tokio::test]
async fn the_server_starts_with_every_key_at_its_upper_bound() {
    let mut server = Server::start(
        "[server]\nmax_body_bytes = 1073741824\nmax_connections = 1000000\n\
         header_read_timeout = \"1d\"\nidle_timeout = \"1d\"\nwrite_timeout = \"1d\"\n\
         max_series = 100000000\nshutdown_grace = \"1h\"\n\
         [detector]\nwindow_size = 1000000\nthreshold_multiplier = 1000.0\n\
         min_std_dev = 1e150\nmin_relative_std_dev = 0.999\nmax_excluded_run = 1000000\n\
         min_consecutive = 10000\nresolve_after = 10000\nresolve_multiplier = 1000.0\n\
         half_life = 1000000.0\nseasons = 100\nseason = \"366d\"\nbucket = \"1d\"\n\
         series_ttl = \"365d\"\n\
         [log]\nbacklog = 10000000\nrecent_anomalies = 1000000\nkeep = 1000\n\
         journal_anomaly_rate = 1000000\nrecent_episodes = 1000000\n",
    )
    .await;
    for value in [1.0, 2.0, 3.0] {
        let (status, body) = server
            .request(
                "POST",
                "/detect",
                &format!(r#"{{"series":"cpu","value":{value}}}"#),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server.request("GET", "/anomalies?limit=10000", "").await;
    assert_eq!(status, 200);
    let (status, body) = server.request("GET", "/anomalies?limit=10001", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 10000"), "{body}");
    server.stop().await.unwrap();
}

/// `idle_timeout` (5 minutes here): a kept-alive connection with no
/// request is closed then, not before.
#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_at_idle_timeout() {
    let mut server =
        Server::start("[server]\nidle_timeout = \"5m\"\nheader_read_timeout = \"10m\"\n").await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let replies = read_until_closed(&mut stream).await;
    let idle = answered.elapsed();
    assert_eq!(parse_reply(&replies).0, 200);
    assert!(
        idle >= Duration::from_secs(300) && idle < Duration::from_secs(302),
        "closed after {idle:?} idle, expected 5m"
    );
    server.stop().await.unwrap();
}

/// With the defaults' shape (`header_read_timeout` shorter than
/// `idle_timeout`), a kept-alive connection waiting for its next request
/// is closed at `idle_timeout`: the header timeout only runs once a
/// request has begun.
#[tokio::test(start_paused = true)]
async fn the_header_timeout_does_not_cut_an_idle_keep_alive_connection() {
    let mut server =
        Server::start("[server]\nheader_read_timeout = \"10s\"\nidle_timeout = \"60s\"\n").await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut first = [0u8; 512];
    let n = tokio::io::AsyncReadExt::read(&mut stream, &mut first)
        .await
        .unwrap();
    assert_eq!(parse_reply(&first[..n]).0, 200);
    // Three header timeouts later, well within idle_timeout, the same
    // connection still takes a request.
    tokio::time::sleep(Duration::from_secs(30)).await;
    stream.write_all(request).await.unwrap();
    let replies = read_until_closed(&mut stream).await;
    assert_eq!(
        parse_reply(&replies).0,
        200,
        "the kept-alive connection was cut before idle_timeout"
    );
    server.stop().await.unwrap();
}

/// `header_read_timeout`: a client that never finishes its headers is
/// disconnected then.
#[tokio::test(start_paused = true)]
async fn unfinished_headers_are_cut_off_at_header_read_timeout() {
    let mut server =
        Server::start("[server]\nheader_read_timeout = \"45s\"\nidle_timeout = \"10m\"\n").await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /detect HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    read_until_closed(&mut stream).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(45) && waited < Duration::from_secs(47),
        "cut off after {waited:?}, expected 45s"
    );
    server.stop().await.unwrap();
}

/// A body that stops arriving gets 408 once `idle_timeout` passes.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_gets_408_at_idle_timeout() {
    let mut server = Server::start("[server]\nidle_timeout = \"2m\"\n").await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /detect HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n{\"value\":")
        .await
        .unwrap();
    let reply = read_until_closed(&mut stream).await;
    let waited = started.elapsed();
    let (status, body) = parse_reply(&reply);
    assert_eq!(status, 408, "{body}");
    assert!(
        body.contains("timed out reading the request body"),
        "{body}"
    );
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(122),
        "answered after {waited:?}, expected 2m"
    );
    server.stop().await.unwrap();
}

/// A request in flight at shutdown is still answered, with the
/// connection closed after it; the server then stops by itself.
#[tokio::test(start_paused = true)]
async fn a_request_in_flight_at_shutdown_is_answered() {
    let mut server =
        Server::start("[server]\nshutdown_grace = \"90s\"\nidle_timeout = \"10m\"\n").await;
    let body = br#"{"series":"cpu","value":1}"#;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..5]).await.unwrap();
    // A /healthz round trip on another connection: the accept loop has
    // taken the first one, whose request now waits for its body.
    let (status, _) = server.request("GET", "/healthz", "").await;
    assert_eq!(status, 200);
    server.begin_shutdown();
    // Well within the grace period, the rest of the body arrives.
    tokio::time::sleep(Duration::from_secs(60)).await;
    stream.write_all(&body[5..]).await.unwrap();
    let reply = read_until_closed(&mut stream).await;
    let (status, text) = parse_reply(&reply);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""series":"cpu""#), "{text}");
    server.finished().await.expect("clean shutdown");
    // New connections are refused once the listener is gone.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

/// A client that pipelines `request` on a connection with a small receive
/// buffer, and never reads.
/// It keeps writing (at most a million requests) until the server drops
/// the connection, which the returned receiver reports.
async fn client_that_never_reads(
    server: &Server,
    request: &'static [u8],
) -> tokio::sync::oneshot::Receiver<()> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (dropped, dropped_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (_reader, mut writer) = stream.into_split();
        for _ in 0..1_000_000 {
            if writer.write_all(request).await.is_err() {
                let _ = dropped.send(());
                return;
            }
        }
    });
    dropped_rx
}

/// A client that pipelines requests and never reads its replies blocks the
/// server's writes; at `write_timeout` its connection is dropped (its
/// further writes fail), and the server serves others meanwhile.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_dropped_at_write_timeout() {
    let mut server = Server::start(
        "[server]\nwrite_timeout = \"30s\"\nidle_timeout = \"1h\"\nheader_read_timeout = \"1h\"\n",
    )
    .await;
    let dropped = client_that_never_reads(&server, METRICS).await;
    let (status, _) = server.request("GET", "/healthz", "").await;
    assert_eq!(status, 200, "others are served while one client is stuck");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(600), dropped)
        .await
        .expect("the stuck connection was never dropped")
        .unwrap();
    assert!(
        started.elapsed() <= Duration::from_secs(31),
        "{:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

/// On shutdown, a connection blocked in the middle of writing a large reply
/// to a client that does not read is dropped at the end of the grace
/// period (a graceful close would wait for the reply to finish).
#[tokio::test(start_paused = true)]
async fn shutdown_drops_a_connection_blocked_in_a_write_after_the_grace() {
    // 1,000 recent anomalies with long names: each reply is about 400 KB.
    let mut log = Vec::new();
    for i in 0..1000 {
        let record = AnomalyRecord {
            series: format!("{i:04}{}", "s".repeat(250)),
            value: 100.0,
            timestamp: 1_700_000_000.0 + f64::from(i),
            mean: 1.0,
            std_dev: 1.0,
            threshold: 4.0,
            direction: Side::Upper,
            score: Some(99.0),
            episode: None,
            seq: None,
        };
        record.write_line(&mut log);
    }
    let mut server = Server::start_with_log(
        "[server]\nshutdown_grace = \"5s\"\nwrite_timeout = \"1h\"\nidle_timeout = \"1h\"\nheader_read_timeout = \"1h\"\n",
        &log,
    )
    .await;
    let dropped = client_that_never_reads(&server, ANOMALIES).await;
    let (status, _) = server.request("GET", "/healthz", "").await;
    assert_eq!(status, 200);
    server.begin_shutdown();
    server.finished().await.expect("clean shutdown");
    tokio::time::timeout(Duration::from_secs(600), dropped)
        .await
        .expect("the stuck connection outlived the grace period")
        .unwrap();
}

const METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
const ANOMALIES: &[u8] = b"GET /anomalies?limit=1000 HTTP/1.1\r\nHost: test\r\n\r\n";
