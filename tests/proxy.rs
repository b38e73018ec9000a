//! Alert sinks through Debian's tinyproxy: an `https://` Alertmanager
//! through a `CONNECT` tunnel, a plain one by absolute URL, both with the
//! proxy's Basic credentials; wrong credentials fail and say why.

use crate::alerting::{alertmanager, episode, now, post, sink_metric};
use crate::helper::programs::RealProgram;
use crate::helper::{TestDaemon, request, wait_until};
use crate::tls::{Pki, curl, tools_present};

/// tinyproxy on a free port, requiring `alice`/`s3cret`; `None` when it is
/// not installed.
fn tinyproxy() -> Option<RealProgram> {
    let config = "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\n\
                  MaxClients 20\nAllow 127.0.0.1\nBasicAuth alice s3cret\n\
                  User nobody\nGroup nogroup\n";
    let ready = |addr| std::net::TcpStream::connect(addr).is_ok();
    RealProgram::start_until(
        "tinyproxy",
        "tinyproxy",
        &["-d", "-c", "{dir}/tinyproxy.conf"],
        &[("tinyproxy.conf", config)],
        &ready,
        "ANOMALYD_REQUIRE_TINYPROXY",
    )
}

#[test]
fn alerts_go_through_an_http_proxy_with_its_credentials() {
    if !tools_present() {
        return;
    }
    let Some(proxy) = tinyproxy() else {
        return;
    };
    let pki = Pki::new();
    let (Some(secure), Some(plain)) = (alertmanager(Some(&pki)), alertmanager(None)) else {
        return;
    };
    let through = format!("http://alice:s3cret@{}", proxy.addr);
    let wrong = format!("http://alice:guess@{}", proxy.addr);
    let secure_url = format!("https://{}", secure.addr);
    let plain_url = format!("http://{}", plain.addr);
    // The same https Alertmanager a second time (by another name, for
    // metrics of its own), through the proxy with a wrong password: its
    // failure shows that the sinks do go through the proxy.
    let refused_url = format!("https://localhost:{}", secure.addr.port());
    let mut daemon = TestDaemon::start(&format!(
        "[detector]\nwindow_size = 5\nmin_samples = 5\n\
         [[alert.alertmanager]]\nurl = \"{secure_url}\"\nca_file = \"{ca}\"\nproxy_url = \"{through}\"\n\
         [[alert.alertmanager]]\nurl = \"{plain_url}\"\nproxy_url = \"{through}\"\n\
         [[alert.alertmanager]]\nurl = \"{refused_url}\"\nca_file = \"{ca}\"\nproxy_url = \"{wrong}\"\n",
        ca = pki.path("ca.pem").display(),
    ));
    // Recent timestamps: Alertmanager treats an alert from long ago as over.
    post(&daemon, &episode("proxied.cpu", now() - 60.0, 0));
    wait_until("the alert in the https Alertmanager", || {
        let (status, body) = curl(&pki, &format!("https://{}/api/v2/alerts", secure.addr), &[]);
        (status == 200 && body.contains("proxied.cpu")).then_some(())
    });
    wait_until("the alert in the plain Alertmanager", || {
        let reply = request(plain.addr, "GET", "/api/v2/alerts", &[], b"");
        (reply.status == 200 && String::from_utf8_lossy(&reply.body).contains("proxied.cpu"))
            .then_some(())
    });
    let sent = |url: &str| sink_metric("sent_total", "alertmanager", url);
    daemon.wait_for_metric(&sent(&secure_url), |v| v >= 1.0);
    daemon.wait_for_metric(&sent(&plain_url), |v| v >= 1.0);
    // The proxy carried both: a tunnel to the https one, the plain one's
    // request by its absolute URL.
    let log = wait_until("tinyproxy to log both", || {
        let log = proxy.output();
        (log.contains(&format!("CONNECT {}", secure.addr))
            && log.contains(&format!("POST {plain_url}/api/v2/alerts")))
        .then_some(log)
    });
    assert!(!log.contains("s3cret"), "{log}");
    // Wrong credentials: the proxy's refusal (tinyproxy answers 401, not
    // 407), in anomalyd's warning.
    let failed = sink_metric("failed_total", "alertmanager", &refused_url);
    daemon.wait_for_metric(&failed, |v| v >= 1.0);
    let line = daemon.wait_for_stderr("the proxy refused the tunnel");
    assert!(line.contains("401 Unauthorized"), "{line}");
    assert!(
        line.contains(&format!("through proxy {}", proxy.addr)),
        "{line}"
    );
    assert_eq!(daemon.metric(&sent(&refused_url)), 0.0);
}
