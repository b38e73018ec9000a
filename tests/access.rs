use base64::Engine as _;

use crate::helper::{TestDaemon, point, request, run_anomalyd, wait_until};

const TOKEN: &str = "s3cret-token-0123456789";
const OTHER: &str = "another-token-9876543210";

/// A daemon with `TOKEN` in its token file, plus `extra` `[server]` keys.
fn daemon_with_tokens(extra: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# who may post\n{TOKEN}\n")).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nauth_token_file = \"{}\"\n{extra}",
        tokens.display()
    );
    TestDaemon::start_in(dir, 0, &config)
}

fn post(daemon: &TestDaemon, headers: &[(&str, &str)]) -> crate::helper::Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(
        daemon.addr,
        "POST",
        "/detect",
        &all,
        point("cpu", 1.0, 1.0).as_bytes(),
    )
}

#[test]
fn with_tokens_every_route_but_the_probes_needs_one() {
    let daemon = daemon_with_tokens("");
    let bearer = format!("Bearer {TOKEN}");
    // No token, a wrong one, a malformed header: 401 with a JSON error
    // and WWW-Authenticate, and nothing applied.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789")],
        vec![("Authorization", "Basic !!!")],
    ] {
        let reply = post(&daemon, &headers);
        assert_eq!(reply.status, 401, "{headers:?}");
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(!reply.error().contains(TOKEN), "{}", reply.error());
    }
    for path in [
        "/anomalies",
        "/episodes",
        "/series",
        "/series/cpu",
        "/events",
    ] {
        assert_eq!(daemon.get(path).status, 401, "{path}");
    }
    // The probes and /metrics stay open.
    for path in ["/healthz", "/ready", "/metrics"] {
        assert_eq!(daemon.get(path).status, 200, "{path}");
    }
    // Every way collectors send a token works.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{TOKEN}"))
    );
    let token = format!("Token {TOKEN}");
    for header in [&bearer, &token, &basic] {
        assert_eq!(
            post(&daemon, &[("Authorization", header)]).status,
            200,
            "{header}"
        );
    }
    let reply = request(
        daemon.addr,
        "GET",
        "/series",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()[0]["series"], "cpu");
    assert_eq!(
        daemon.metric("anomalyd_bad_requests_total{reason=\"unauthorized\"}"),
        8.0
    );
    // The token never reaches the daemon's own log.
    let mut daemon = daemon;
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
    assert!(!daemon.stderr().iter().any(|line| line.contains(TOKEN)));
}

#[test]
fn metrics_can_require_a_token_on_both_addresses() {
    let admin = crate::helper::free_port();
    let daemon = daemon_with_tokens(&format!(
        "metrics_require_auth = true\nadmin_listen = \"127.0.0.1:{admin}\"\n"
    ));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let bearer = format!("Bearer {TOKEN}");
    for addr in [daemon.addr, admin] {
        assert_eq!(request(addr, "GET", "/metrics", &[], b"").status, 401);
        assert_eq!(request(addr, "GET", "/healthz", &[], b"").status, 200);
        let reply = request(addr, "GET", "/metrics", &[("Authorization", &bearer)], b"");
        assert_eq!(reply.status, 200);
        assert!(String::from_utf8_lossy(&reply.body).contains("anomalyd_points_received_total"));
    }
}

#[test]
fn the_dashboard_logs_in_with_a_cookie_that_only_reads() {
    let daemon = daemon_with_tokens("");
    // The page without a token is the login form.
    let page = daemon.get("/");
    assert_eq!(page.status, 401);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("action=\"/login\""), "{html}");
    // A wrong token: the form again, with a message, and no cookie.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let wrong = request(daemon.addr, "POST", "/login", &form, b"token=nope");
    assert_eq!(wrong.status, 401);
    assert!(String::from_utf8_lossy(&wrong.body).contains("not valid"));
    assert_eq!(wrong.header("set-cookie"), None);
    // The right one (form-encoded as a browser does) sets the cookie.
    let body = format!("token={}", TOKEN.replace('-', "%2D"));
    let login = request(daemon.addr, "POST", "/login", &form, body.as_bytes());
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), Some("/"));
    let set_cookie = login.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = [("Cookie", cookie.as_str())];
    // The cookie reads: the page, the API, the event stream's opening.
    let page = request(daemon.addr, "GET", "/", &with_cookie, b"");
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("dashboard.js"));
    assert_eq!(
        request(daemon.addr, "GET", "/anomalies", &with_cookie, b"").status,
        200
    );
    // ... but never writes.
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(&with_cookie);
    let write = request(
        daemon.addr,
        "POST",
        "/detect",
        &headers,
        point("cpu", 1.0, 1.0).as_bytes(),
    );
    assert_eq!(write.status, 401);
    // The cookie holds a value derived from the token, not the token: it
    // is no use as a bearer token, for writes or anything else.
    let session = cookie.split_once('=').unwrap().1;
    assert!(!session.contains(TOKEN), "{cookie}");
    let bearer = format!("Bearer {session}");
    let as_bearer = request(
        daemon.addr,
        "GET",
        "/anomalies",
        &[("Authorization", bearer.as_str())],
        b"",
    );
    assert_eq!(as_bearer.status, 401);
    // A signed-in page offers "Sign out", which clears the cookie.
    assert!(
        String::from_utf8_lossy(&page.body)
            .contains(r#"<form id="sign-out" method="post" action="/logout">"#)
    );
    assert_eq!(
        request(daemon.addr, "GET", "/logout", &with_cookie, b"").status,
        405
    );
    let logout = request(daemon.addr, "POST", "/logout", &with_cookie, b"");
    assert_eq!(logout.status, 303);
    assert_eq!(logout.header("location"), Some("/"));
    let cleared = logout.header("set-cookie").unwrap();
    assert!(cleared.starts_with("anomalyd_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[test]
fn a_dashboard_without_tokens_offers_no_sign_out() {
    let daemon = TestDaemon::start("");
    let page = daemon.get("/");
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains(r#"action="/logout" hidden>"#), "{html}");
}

#[test]
fn refused_requests_are_logged_with_the_client_and_reason_at_most_once_a_second() {
    let mut daemon = daemon_with_tokens("");
    let wrong = "Bearer wrong-token-0123456789";
    assert_eq!(post(&daemon, &[("Authorization", wrong)]).status, 401);
    let line = daemon.wait_for_stderr("Refused a request from 127.0.0.1");
    assert!(line.contains("not in [server] auth_token_file"), "{line}");
    assert!(line.contains("/detect"), "{line}");
    assert!(
        !line.contains("wrong-token"),
        "the token is never logged: {line}"
    );
    // A wrong sign-in is logged as well.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let refusal_lines = |daemon: &mut TestDaemon| {
        daemon
            .stderr()
            .iter()
            .filter(|l| l.contains("Refused a request from"))
            .cloned()
            .collect::<Vec<_>>()
    };
    // A client hammering with bad tokens: refusals keep coming, the log
    // gets about one line a second, and a later line counts the refusals
    // it held back.
    let mut sent = 1;
    let held_back = wait_until("a refusal line counting held-back refusals", || {
        for _ in 0..20 {
            assert_eq!(post(&daemon, &[("Authorization", wrong)]).status, 401);
            sent += 1;
        }
        refusal_lines(&mut daemon)
            .iter()
            .find(|l| !l.contains("held_back=0"))
            .cloned()
    });
    let lines = refusal_lines(&mut daemon);
    assert!(
        lines.len() < sent / 2,
        "{} lines for {sent} refusals: {lines:?}",
        lines.len()
    );
    let count: u64 = held_back
        .split("held_back=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no held_back count in {held_back}"));
    assert!(count >= 1 && count < sent as u64, "{held_back}");
    let before = lines.len();
    wait_until("a refused sign-in to be logged", || {
        let wrong = request(daemon.addr, "POST", "/login", &form, b"token=nope");
        assert_eq!(wrong.status, 401);
        refusal_lines(&mut daemon)[before..]
            .iter()
            .find(|l| l.contains("sign-in form"))
            .cloned()
    });
}

#[test]
fn tokens_rotate_on_reload() {
    let daemon = daemon_with_tokens("");
    let tokens = daemon.dir.path().join("tokens");
    assert_eq!(
        post(&daemon, &[("Authorization", &format!("Bearer {TOKEN}"))]).status,
        200
    );
    let before = daemon.reloads_ok();
    std::fs::write(&tokens, format!("{OTHER}\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_reload(before);
    wait_until("the old token to be refused", || {
        (post(&daemon, &[("Authorization", &format!("Bearer {TOKEN}"))]).status == 401)
            .then_some(())
    });
    assert_eq!(
        post(&daemon, &[("Authorization", &format!("Bearer {OTHER}"))]).status,
        200
    );
    // A broken token file is refused as a reload; the tokens in force stay.
    std::fs::write(&tokens, "short\n").unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the failed reload to show", || {
        (daemon.metric("anomalyd_config_last_reload_successful") == 0.0).then_some(())
    });
    assert_eq!(
        post(&daemon, &[("Authorization", &format!("Bearer {OTHER}"))]).status,
        200
    );
}

#[test]
fn protected_mode_refuses_to_listen_openly_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("anomalyd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"0.0.0.0:0\"\n[log]\nanomaly_log_file = \"{}\"\n",
            dir.path().join("a.log").display()
        ),
    )
    .unwrap();
    for check in [true, false] {
        let mut args = vec!["--config".as_ref(), config.as_os_str()];
        if check {
            args.push("--check-config".as_ref());
        }
        let output = run_anomalyd(&args);
        assert_eq!(output.status.code(), Some(78), "check: {check}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("protected mode"), "{stderr}");
        assert!(stderr.contains("auth_token_file"), "{stderr}");
    }
    // With the explicit opt-out it starts.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"0.0.0.0:0\"\nallow_unauthenticated = true\n[log]\nanomaly_log_file = \"{}\"\n",
            dir.path().join("a.log").display()
        ),
    )
    .unwrap();
    let daemon = TestDaemon::spawn(dir, &["--config", config.to_str().unwrap()]);
    assert!(daemon.addr.ip().is_unspecified());
}

#[test]
fn a_client_over_its_rate_limit_gets_429_and_nothing_is_applied() {
    let daemon =
        TestDaemon::start("[server]\nlisten = \"127.0.0.1:0\"\nrate_limit = 1\nrate_burst = 5\n");
    let batch: String = (0..5)
        .map(|i| point("cpu", 1.0, f64::from(i) + 1.0) + "\n")
        .collect();
    let ndjson = |body: &str| daemon.detect_ndjson(body);
    assert_eq!(ndjson(&batch).status, 200);
    // The bucket is empty: the next point waits about a second.
    let refused = daemon.detect(&point("cpu", 1.0, 10.0));
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(
        refused.error().contains("rate_limit"),
        "{}",
        refused.error()
    );
    assert_eq!(
        daemon.metric("anomalyd_bad_requests_total{reason=\"rate_limited\"}"),
        1.0
    );
    assert_eq!(daemon.metric("anomalyd_points_rate_limited_total"), 1.0);
    assert_eq!(
        daemon.metric("anomalyd_bad_requests_total{reason=\"too_many_series\"}"),
        0.0
    );
    // Nothing of the refused request was applied.
    let series = daemon.get("/series/cpu").json();
    assert_eq!(series["points"], 5, "{series}");
    // After the refill it is admitted.
    wait_until("the bucket to refill", || {
        (daemon.detect(&point("cpu", 1.0, 11.0)).status == 200).then_some(())
    });
}
