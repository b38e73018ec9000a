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
