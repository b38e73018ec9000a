use crate::helper::{TestDaemon, point, request};

/// (content type, body, expected status, text the error must contain)
const CASES: &[(&str, &str, u16, &str)] = &[
    ("application/json", r#"{"value": 1"#, 400, "malformed JSON"),
    ("application/json", "not json", 400, "malformed JSON"),
    ("application/json", "", 400, "empty body"),
    ("application/json", r#"{"value": 1e400}"#, 422, "`value`"),
    (
        "application/json",
        r#"{"timestamp": 5}"#,
        422,
        "missing field `value`",
    ),
    (
        "application/json",
        r#"{"value": "12"}"#,
        422,
        "field `value`: expected a number",
    ),
    (
        "application/json",
        r#"{"value": 1, "series": 7}"#,
        422,
        "field `series`: expected a string",
    ),
    (
        "application/json",
        r#"{"value": 1, "series": ""}"#,
        422,
        "field `series`: must not be empty",
    ),
    (
        "application/json",
        r#"{"value": 1, "timestamp": "yesterday"}"#,
        422,
        "field `timestamp`",
    ),
    (
        "application/json",
        r#"{"value": 1, "timestamp": 1e300}"#,
        422,
        "field `timestamp`: 1e300 is after the year 9999",
    ),
    (
        "application/x-ndjson",
        "{\"value\": 1, \"timestamp\": 1700000000}\n{\"value\": 1, \"timestamp\": 1700000000000}\n",
        422,
        "line 2: field `timestamp`: 1700000000000 is after the year 9999",
    ),
    (
        "application/json",
        r#"[{"value": 1, "timestamp": -0.5}]"#,
        422,
        "item 0: field `timestamp`: -0.5 is not a valid unix time",
    ),
    (
        "application/json",
        r#"{"value": 1, "seq": -3}"#,
        422,
        "field `seq`",
    ),
    (
        "application/json",
        r#"{"value": 1, "colour": "red"}"#,
        422,
        "unknown field `colour`",
    ),
    (
        "application/json",
        r#"[{"value": 1}, {"value": null}]"#,
        422,
        "item 1: field `value`",
    ),
    (
        "application/x-ndjson",
        "{\"value\": 1}\n{\"value\": 2}\n{\"value\": x}\n",
        400,
        "line 3",
    ),
    ("text/plain", r#"{"value": 1}"#, 415, "Content-Type"),
];

#[test]
fn every_bad_input_gets_a_clear_error_and_the_daemon_keeps_serving() {
    let mut daemon = TestDaemon::start("");
    for (content_type, body, status, needle) in CASES {
        let reply = request(
            daemon.addr,
            "POST",
            "/detect",
            &[("Content-Type", content_type)],
            body.as_bytes(),
        );
        assert_eq!(
            reply.status,
            *status,
            "{body:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let message = reply.error();
        assert!(
            message.contains(needle),
            "{body:?}: {message:?} lacks {needle:?}"
        );
    }
    let long = "s".repeat(300);
    let reply = daemon.detect(&point(&long, 1.0, 1.0));
    assert_eq!(reply.status, 422);
    assert!(reply.error().contains("`series`"));
    // Still serving, and nothing was applied: "default" has no points yet.
    let reply = daemon.detect(r#"{"value": 1}"#);
    assert_eq!(reply.status, 200);
    assert!(daemon.stderr().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn a_batch_with_one_bad_point_is_rejected_whole() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 2\n");
    let reply = daemon.detect(
        r#"[{"series": "a", "value": 1}, {"series": "a", "value": 5}, {"series": "", "value": 2}]"#,
    );
    assert_eq!(reply.status, 422);
    assert!(reply.error().contains("item 2"), "{}", reply.error());
    // Had the first two been applied, this point would get a verdict.
    let body = daemon.detect(r#"{"series": "a", "value": 1}"#).json();
    assert_eq!(body["warming_up"], true, "{body}");
}

#[test]
fn oversized_bodies_unknown_paths_and_wrong_methods() {
    let daemon = TestDaemon::start("[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 100\n");
    // Content-Length alone decides; the body is never sent.
    let reply = request(
        daemon.addr,
        "POST",
        "/detect",
        &[("Content-Length", "1000000")],
        b"",
    );
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("100 bytes"));
    let big = format!("[{}]", vec![point("a", 1.0, 1.0); 10].join(","));
    let reply = daemon.detect(&big);
    assert_eq!(reply.status, 413);

    let reply = daemon.get("/nope");
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("/nope"));
    let reply = daemon.get("/detect");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = request(daemon.addr, "DELETE", "/anomalies", &[], b"");
    assert_eq!(reply.status, 405);
    assert!(reply.header("allow").unwrap().contains("GET"));
    let reply = daemon.get("/anomalies?limit=many");
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("`limit`"));
}

#[test]
fn max_series_refuses_new_series_only() {
    let daemon = TestDaemon::start("[server]\nlisten = \"127.0.0.1:0\"\nmax_series = 2\n");
    assert_eq!(daemon.detect(&point("a", 1.0, 1.0)).status, 200);
    assert_eq!(daemon.detect(&point("b", 1.0, 1.0)).status, 200);
    let reply = daemon.detect(&point("c", 1.0, 1.0));
    assert_eq!(reply.status, 429);
    assert!(reply.error().contains("max_series"), "{}", reply.error());
    assert!(reply.error().contains('2'));
    assert_eq!(
        daemon.detect(&point("a", 2.0, 2.0)).status,
        200,
        "existing series keep working"
    );
}

/// Sends raw bytes on a fresh connection and reads until the server
/// closes it.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// Attacks that held up when the daemon was attacked, kept as regression
/// tests: request smuggling, deep nesting, hostile strings, `seq` edges.
#[test]
fn smuggling_nesting_hostile_strings_and_seq_edges_are_refused_cleanly() {
    let daemon = TestDaemon::start("");
    let addr = daemon.addr;
    // Content-Length and Transfer-Encoding together: the chunked body wins,
    // the connection is closed after the reply, and the request hidden
    // behind the empty chunked body is never answered.
    let replies = raw(
        addr,
        b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(replies.matches("HTTP/1.1 ").count(), 1, "{replies}");
    assert!(replies.starts_with("HTTP/1.1 400"), "{replies}");
    assert!(!replies.contains("no such endpoint"), "{replies}");
    // Two different Content-Lengths: refused.
    let replies = raw(
        addr,
        b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Length: 12\r\n\r\n{\"value\":1} ",
    );
    assert!(replies.starts_with("HTTP/1.1 400"), "{replies}");

    // 100,000-deep nesting, as the body and inside a field.
    let deep = "[".repeat(100_000);
    let reply = daemon.detect(&deep);
    assert_eq!(reply.status, 422, "{}", reply.error());
    let reply = daemon.detect(&format!("{{\"value\": {deep}"));
    assert!(matches!(reply.status, 400 | 422), "{}", reply.error());
    assert!(reply.error().contains("value") || reply.error().contains("recursion"));

    // Hostile series names: a lone surrogate, control characters escaped
    // and raw.
    let reply = daemon.detect(r#"{"value": 1, "series": "a\ud800b"}"#);
    assert!(matches!(reply.status, 400 | 422), "{}", reply.error());
    assert!(reply.error().contains("hex escape"), "{}", reply.error());
    let reply = daemon.detect(r#"{"value": 1, "series": "a\u0001b"}"#);
    assert_eq!(reply.status, 422);
    assert!(
        reply.error().contains("control characters"),
        "{}",
        reply.error()
    );
    let reply = daemon.detect("{\"value\": 1, \"series\": \"a\u{1}b\"}");
    assert_eq!(reply.status, 400, "{}", reply.error());

    // seq at its edges.
    for (seq, status) in [
        ("0", 200),
        ("9223372036854775807", 200),
        ("9223372036854775808", 422),
        ("18446744073709551615", 422),
        ("18446744073709551616", 422),
        ("-1", 422),
        ("1.5", 422),
    ] {
        let reply = daemon.detect(&format!(
            r#"{{"value": 1, "series": "q{seq}", "seq": {seq}}}"#
        ));
        assert_eq!(
            reply.status,
            status,
            "seq {seq}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        if status == 422 {
            assert!(
                reply.error().contains("`seq`"),
                "seq {seq}: {}",
                reply.error()
            );
        }
    }
    // Still serving.
    assert_eq!(daemon.detect(r#"{"value": 1}"#).status, 200);
}
