use std::path::{Path, PathBuf};
use std::process::Command;

use crate::alerting::{alertmanager, episode, now, post, sink_metric};
use crate::helper::{TestDaemon, point, run_anomalyd, wait_until};

/// A test PKI made with the openssl command: a CA, a server certificate
/// for 127.0.0.1, a client certificate.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `openssl req` with a new P-256 key, unencrypted, written to `key`,
/// and `more` arguments (`-x509` for a self-signed certificate, else a
/// request).
fn new_key_request(dir: &Path, key: &str, more: &[&str]) {
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
    ];
    args.extend_from_slice(more);
    openssl(dir, &args);
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        new_key_request(
            dir.path(),
            "ca.key",
            &[
                "-x509",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=anomalyd test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let pki = Pki { dir };
        pki.issue("server", "serverAuth", 1);
        pki.issue("client", "clientAuth", 2);
        pki
    }

    /// Issues `name.pem`/`name.key` for 127.0.0.1 with serial `serial`.
    fn issue(&self, name: &str, usage: &str, serial: u32) {
        let dir = self.dir.path();
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        new_key_request(dir, &key, &["-out", &csr, "-subj", &format!("/CN={name}")]);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ],
        );
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn server_config(&self, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{extra}",
            self.path("server.pem").display(),
            self.path("server.key").display()
        )
    }

    /// A daemon serving TLS with `extra` server keys, and /metrics in plain
    /// HTTP on an admin address for the helpers.
    fn daemon(&self, extra: &str) -> TestDaemon {
        let admin = crate::helper::free_port();
        let mut daemon = TestDaemon::start(
            &self.server_config(&format!("admin_listen = \"127.0.0.1:{admin}\"\n{extra}")),
        );
        daemon.admin = Some(([127, 0, 0, 1], admin).into());
        daemon
    }
}

/// curl against `url` trusting the test CA, with `args`; (HTTP status or
/// 0 when the connection failed, output).
pub(crate) fn curl(pki: &Pki, url: &str, args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(pki.path("ca.pem"))
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        status.trim().parse().unwrap_or(0),
        format!("{body}{stderr}"),
    )
}

/// The serial number of the certificate served at `addr`.
fn served_serial(addr: std::net::SocketAddr) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub(crate) fn tools_present() -> bool {
    let present = ["openssl", "curl"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    if !present && std::env::var_os("ANOMALYD_REQUIRE_TLS_TOOLS").is_some() {
        panic!("openssl and curl are required (ANOMALYD_REQUIRE_TLS_TOOLS is set)");
    }
    if !present {
        eprintln!("SKIPPED: the TLS tests need Debian's openssl and curl");
    }
    present
}

#[test]
fn https_serves_and_a_renewed_certificate_applies_on_reload() {
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    let daemon = pki.daemon("");
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", daemon.addr.port());
    let (status, body) = curl(&pki, &url("/healthz"), &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(
        &pki,
        &url("/detect"),
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            &point("cpu", 1.0, 1.0),
        ],
    );
    assert_eq!(status, 200, "{body}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let (status, _) = curl(
        &pki,
        &format!("http://127.0.0.1:{}/healthz", daemon.addr.port()),
        &[],
    );
    assert_eq!(status, 0);
    assert_eq!(served_serial(daemon.addr), "serial=01");

    // certbot-style renewal: new files, then a reload.
    pki.issue("server", "serverAuth", 3);
    let before = daemon.reloads_ok();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_reload(before);
    wait_until("the renewed certificate to be served", || {
        (served_serial(daemon.addr) == "serial=03").then_some(())
    });

    // A broken new certificate is refused; the one in force stays.
    std::fs::write(
        pki.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the failed reload to show", || {
        (daemon.metric("anomalyd_config_last_reload_successful") == 0.0).then_some(())
    });
    assert_eq!(served_serial(daemon.addr), "serial=03");
    let (status, _) = curl(&pki, &url("/healthz"), &[]);
    assert_eq!(status, 200);
}

#[test]
fn client_certificates_are_required_with_a_client_ca_and_satisfy_protected_mode() {
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    // 0.0.0.0 without tokens: allowed, since clients must show a
    // certificate.
    let config = pki
        .server_config(&format!(
            "tls_client_ca_file = \"{}\"\n",
            pki.path("ca.pem").display()
        ))
        .replace("127.0.0.1:0", "0.0.0.0:0");
    let daemon = TestDaemon::start(&config);
    let url = format!("https://127.0.0.1:{}/anomalies", daemon.addr.port());
    let (status, _) = curl(&pki, &url, &[]);
    assert_eq!(status, 0, "no client certificate: no connection");
    let cert = pki.path("client.pem");
    let key = pki.path("client.key");
    let (status, body) = curl(
        &pki,
        &url,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tls_mistakes_are_configuration_errors() {
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let path = dir.path().join("anomalyd.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |path: &Path| {
        let output = run_anomalyd(&[
            "--check-config".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
        ]);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // A certificate without its key.
    let path = write(&format!(
        "[server]\ntls_cert_file = \"{}\"\n",
        pki.path("server.pem").display()
    ));
    let (code, stderr) = check(&path);
    assert_eq!(code, Some(78));
    assert!(stderr.contains("needs tls_key_file too"), "{stderr}");
    // A key that belongs to another certificate.
    let path = write(&format!(
        "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        pki.path("server.pem").display(),
        pki.path("client.key").display()
    ));
    let (code, stderr) = check(&path);
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("does the key belong to the certificate?"),
        "{stderr}"
    );
}

#[test]
fn the_login_cookie_is_secure_under_tls_and_the_generator_posts_over_https() {
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    let token = "tls-token-0123456789abcdef";
    let tokens = pki.path("tokens");
    std::fs::write(&tokens, format!("{token}\n")).unwrap();
    let daemon = pki.daemon(&format!("auth_token_file = \"{}\"\n", tokens.display()));
    let base = format!("https://127.0.0.1:{}", daemon.addr.port());
    let (status, headers) = curl(
        &pki,
        &format!("{base}/login"),
        &["-D", "/dev/stderr", "--data", &format!("token={token}")],
    );
    assert_eq!(status, 303, "{headers}");
    let cookie = headers
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {headers}"));
    assert!(cookie.contains("; Secure"), "{cookie}");

    // The generator trusts the test CA through ca_file and sends the token.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("gen.toml");
    std::fs::write(
        &config,
        format!(
            "anomaly_detection_url = \"https://localhost:{}/detect\"\nca_file = \"{}\"\nauth_token_file = \"{}\"\ndata_frequency = 0\nbatch_size = 10\n",
            daemon.addr.port(),
            pki.path("ca.pem").display(),
            tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new(crate::helper::binary("anomaly-generator"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--count",
            "30",
            "--start-time",
            "1700000000",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    daemon.wait_for_metric("anomalyd_points_received_total{format=\"detect\"}", |n| {
        n == 30.0
    });
}

#[test]
fn alerts_reach_alertmanager_over_https_trusting_only_the_given_ca() {
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    let Some(alertmanager) = alertmanager(Some(&pki)) else {
        return;
    };
    // Two sinks to the same Alertmanager: one trusts the test CA, the
    // other the system's CAs, which never signed the test certificate.
    let trusted = format!("https://{}", alertmanager.addr);
    let untrusted = format!("https://localhost:{}", alertmanager.addr.port());
    let daemon = TestDaemon::start(&format!(
        "[detector]\nwindow_size = 5\nmin_samples = 5\n\
         [[alert.alertmanager]]\nurl = \"{trusted}\"\nca_file = \"{}\"\n\
         [[alert.alertmanager]]\nurl = \"{untrusted}\"\n",
        pki.path("ca.pem").display()
    ));
    // Recent timestamps: Alertmanager treats an alert from long ago as over.
    post(&daemon, &episode("tls.cpu", now() - 60.0, 0));
    let alerts = wait_until("the alert in Alertmanager, over HTTPS", || {
        let (status, body) = curl(
            &pki,
            &format!("https://{}/api/v2/alerts", alertmanager.addr),
            &[],
        );
        (status == 200 && body.contains("tls.cpu")).then_some(body)
    });
    assert!(alerts.contains("AnomalyDetected"), "{alerts}");
    let sent = sink_metric("sent_total", "alertmanager", &trusted);
    daemon.wait_for_metric(&sent, |v| v >= 1.0);
    // The sink without the CA refuses the certificate and says why.
    let failed = sink_metric("failed_total", "alertmanager", &untrusted);
    daemon.wait_for_metric(&failed, |v| v >= 1.0);
    let mut daemon = daemon;
    let line = daemon.wait_for_stderr("Cannot deliver to an alert sink");
    assert!(line.contains(&untrusted), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert_eq!(
        daemon.metric(&sink_metric("sent_total", "alertmanager", &untrusted)),
        0.0
    );
}
