//! The dashboard in a real headless browser (Debian's chromium, driven
//! through chromium-driver): the page lists a posted series, charts it,
//! marks its spike, lists the anomaly, follows new points live without a
//! reload, and reconnects by itself when the daemon restarts on the same
//! port. A screenshot goes to `target/test-artifacts/dashboard.png`, and
//! the page's load time with 1,000 series is printed.
//!
//! The W3C WebDriver protocol is spoken directly with the tests' own HTTP
//! client: this test needs five of its endpoints, and the Rust WebDriver
//! crates bring about 120 crates (two ICU stacks among them) into a build
//! that CI does from scratch on two cores.
//!
//! Skipped when chromium or chromedriver is missing, unless
//! `ANOMALYD_REQUIRE_BROWSER` is set (CI sets it and installs both).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helper::{TestDaemon, free_port, request, spike_points, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser can run here; panics when CI requires it.
fn browser_available() -> bool {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present && std::env::var_os("ANOMALYD_REQUIRE_BROWSER").is_some() {
        panic!("chromium and chromium-driver are required (ANOMALYD_REQUIRE_BROWSER is set)");
    }
    if !present {
        eprintln!("SKIPPED: install Debian's chromium and chromium-driver to run the browser test");
    }
    present
}

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until("chromedriver to answer", || {
            std::net::TcpStream::connect(addr).ok()?;
            (request(addr, "GET", "/status", &[], b"").json()["value"]["ready"] == true)
                .then_some(())
        });
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let reply = request(
            addr,
            "POST",
            "/session",
            &[("Content-Type", "application/json")],
            capabilities.to_string().as_bytes(),
        );
        let session = reply.json()["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {}", String::from_utf8_lossy(&reply.body)))
            .to_owned();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let reply = if body.is_null() {
            request(self.addr, method, &path, &[], b"")
        } else {
            let headers = [("Content-Type", "application/json")];
            request(
                self.addr,
                method,
                &path,
                &headers,
                body.to_string().as_bytes(),
            )
        };
        let value = reply.json()["value"].clone();
        assert_eq!(reply.status, 200, "{method} {path}: {value}");
        value
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Waits until `script` returns `true`.
    fn wait_for(&self, what: &str, script: &str, args: Value) {
        wait_until(what, || {
            (self.run(script, args.clone()) == true).then_some(())
        });
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.command("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| request(self.addr, "DELETE", &path, &[], b""));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/test-artifacts`, beside the test binary's profile directory.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash>
    exe.ancestors().nth(3).unwrap().join("test-artifacts")
}

/// Four calm points of `series` then `spike`, from `t`, as NDJSON.
fn stream(series: &str, t: f64, spike: f64) -> String {
    spike_points(series, t, spike).join("\n") + "\n"
}

const ROW: &str = "return document.querySelector(`#series-table tr[data-series=\"${CSS.escape(arguments[0])}\"]`) !== null;";
const STATUS: &str = "return document.getElementById('status').textContent;";

#[test]
fn the_dashboard_shows_a_stream_live_and_reconnects_after_a_restart() {
    if !browser_available() {
        return;
    }
    let port = free_port();
    // history_series above the 1,000 load series, so that the series
    // posted next has a history from its first point (with the default cap
    // it would get one at the next idle sweep, or when the page watches it).
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nhistory_series = 2000\n[detector]\nwindow_size = 4\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_in(dir, port, &config);
    // 1,000 series, so that the load time is measured with a full list.
    let mut many = String::new();
    for round in 0..5 {
        for i in 0..1000 {
            many.push_str(&format!(
                r#"{{"series":"load.{i:04}","value":{},"timestamp":{}}}"#,
                1 + (i + round) % 3,
                1_700_000_000 + round
            ));
            many.push('\n');
        }
    }
    assert_eq!(daemon.detect_ndjson(&many).status, 200);

    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{port}/");
    browser.open(&url);
    browser.wait_for(
        "the page to go live",
        &STATUS.replace(";", " === 'live';"),
        json!([]),
    );
    browser.wait_for(
        "the 1,000 series to be listed",
        "return document.querySelectorAll('#series-table tbody tr').length >= 1000;",
        json!([]),
    );
    let timing = browser.run(
        "const n = performance.getEntriesByType('navigation')[0]; return [n.domContentLoadedEventEnd, n.loadEventEnd, window.dashboardReadyAt];",
        json!([]),
    );
    eprintln!(
        "dashboard with 1,000 series: DOMContentLoaded {:.0} ms, load {:.0} ms, list on screen {:.0} ms (Navigation Timing, from navigation start)",
        timing[0].as_f64().unwrap(),
        timing[1].as_f64().unwrap(),
        timing[2].as_f64().unwrap()
    );

    // A stream with a spike appears live, without a reload.
    let name = "web/api latency µs";
    assert_eq!(
        daemon
            .detect_ndjson(&stream(name, 1_700_000_100.0, 100.0))
            .status,
        200
    );
    browser.wait_for("the series to be listed", ROW, json!([name]));
    browser.wait_for(
        "the anomaly to be in the table",
        "return [...document.querySelectorAll('#anomaly-table tbody tr')].some(r => r.dataset.series === arguments[0]);",
        json!([name]),
    );
    browser.run(
        "document.querySelector(`#series-table tr[data-series=\"${CSS.escape(arguments[0])}\"]`).click();",
        json!([name]),
    );
    browser.wait_for(
        "the chart to draw the points and mark the spike",
        "return document.querySelectorAll('#chart circle.point').length === 4 && document.querySelectorAll('#chart polygon.anomaly').length === 1 && document.getElementById('chart-title').textContent === arguments[0];",
        json!([name]),
    );
    // New points of the selected series arrive live: a second, larger spike.
    let more = format!(
        "{{\"series\":{},\"value\":100000,\"timestamp\":1700000105}}\n",
        serde_json::to_string(name).unwrap()
    );
    assert_eq!(daemon.detect_ndjson(&more).status, 200);
    browser.wait_for(
        "the live point to be charted as a second anomaly",
        "return document.querySelectorAll('#chart polygon.anomaly').length === 2;",
        json!([]),
    );
    let band = browser.run(
        "return document.querySelectorAll('#chart polygon.band').length;",
        json!([]),
    );
    assert_eq!(band, 1, "the threshold band is drawn");
    // The two spikes are one episode, still open: one shaded span.
    let spans = browser.run(
        "return [document.querySelectorAll('#chart rect.episode').length, \
         document.getElementById('chart-info').textContent.includes('episode open')];",
        json!([]),
    );
    assert_eq!(spans, json!([1, true]), "one shaded episode span");
    // Hovering the first spike shows its time, value, mean, sigma and
    // threshold.
    let tooltip = browser.run(
        "const svg = document.getElementById('chart'); \
         const spike = document.querySelectorAll('#chart polygon.anomaly')[0].getBoundingClientRect(); \
         svg.dispatchEvent(new MouseEvent('mousemove', {clientX: spike.x + spike.width / 2, clientY: spike.y, bubbles: true})); \
         const tip = document.getElementById('tooltip'); return tip.hidden ? null : tip.textContent;",
        json!([]),
    );
    let tooltip = tooltip.as_str().expect("a tooltip");
    for part in [
        "2023-11-14 22:15:04",
        "value 100",
        "ANOMALY",
        "mean 10.5",
        "σ 0.5",
        "threshold 12",
        "score 179",
        "in an episode",
    ] {
        assert!(
            tooltip.contains(part),
            "{part:?} not in the tooltip {tooltip:?}"
        );
    }
    let shot = browser.screenshot("dashboard.png");
    eprintln!("screenshot: {}", shot.display());

    // Restart on the same port: the page says it is disconnected, then
    // reconnects by itself.
    let dir = daemon.stop();
    browser.wait_for(
        "the page to say it is disconnected",
        &STATUS.replace(";", ".startsWith('disconnected');"),
        json!([]),
    );
    let daemon = TestDaemon::start_in(dir, port, &config);
    browser.wait_for(
        "the page to reconnect",
        &STATUS.replace(";", " === 'live';"),
        json!([]),
    );
    // The anomalies are read again from the restarted daemon's log.
    browser.wait_for(
        "the anomaly table after the restart",
        "return [...document.querySelectorAll('#anomaly-table tbody tr')].some(r => r.dataset.series === arguments[0]);",
        json!([name]),
    );
    drop(daemon);
}

#[test]
fn with_tokens_the_browser_signs_in_and_the_dashboard_goes_live() {
    if !browser_available() {
        return;
    }
    let token = "browser-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{token}\n")).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nauth_token_file = \"{}\"\n",
        tokens.display()
    );
    let daemon = TestDaemon::start_in(dir, 0, &config);
    let bearer = format!("Bearer {token}");
    let posted = request(
        daemon.addr,
        "POST",
        "/detect",
        &[
            ("Content-Type", "application/x-ndjson"),
            ("Authorization", &bearer),
        ],
        stream("signed.in", 1_700_000_000.0, 100.0).as_bytes(),
    );
    assert_eq!(posted.status, 200);

    let browser = Browser::start();
    browser.open(&format!("http://{}/", daemon.addr));
    browser.wait_for(
        "the login form",
        "return document.querySelector('form[action=\"/login\"] input[name=token]') !== null;",
        json!([]),
    );
    // A wrong token: the form again, saying so.
    browser.run(
        "document.getElementById('token').value = 'not-the-token'; document.querySelector('form').submit();",
        json!([]),
    );
    browser.wait_for(
        "the refusal",
        "return document.querySelector('.error') !== null && document.querySelector('.error').textContent.includes('not valid');",
        json!([]),
    );
    browser.run(
        "document.getElementById('token').value = arguments[0]; document.querySelector('form').submit();",
        json!([token]),
    );
    browser.wait_for(
        "the page to go live",
        &STATUS.replace(";", " === 'live';"),
        json!([]),
    );
    browser.wait_for("the series to be listed", ROW, json!(["signed.in"]));
    // The cookie is HttpOnly: the page's scripts cannot read it.
    assert_eq!(browser.run("return document.cookie;", json!([])), "");
    // "Sign out" ends the session: back to the login form, and reloading
    // the page does not sign in again.
    browser.run(
        "document.querySelector('#sign-out button').click();",
        json!([]),
    );
    browser.wait_for(
        "the login form after signing out",
        "return document.querySelector('form[action=\"/login\"] input[name=token]') !== null;",
        json!([]),
    );
    browser.run("location.reload();", json!([]));
    browser.wait_for(
        "the login form after a reload",
        "return document.readyState === 'complete' && document.querySelector('form[action=\"/login\"] input[name=token]') !== null;",
        json!([]),
    );
}
