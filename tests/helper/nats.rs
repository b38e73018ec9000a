//! A real `nats-server -js` (Debian's package) on free loopback ports with
//! its store in a temporary directory; killed when dropped. It can be
//! stopped and started again on the same port and store.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{free_port, request, wait_until};

/// A running (or stopped) NATS server with JetStream.
pub struct Nats {
    /// The client port's address.
    pub addr: SocketAddr,
    monitor: SocketAddr,
    /// Store and `output.log`.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra command-line arguments (TLS).
    args: Vec<String>,
}

impl Nats {
    /// Starts a server; `None` (test skipped) when `nats-server` is not
    /// installed and `ANOMALYD_REQUIRE_NATS` is not set.
    pub fn start() -> Option<Nats> {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments (for example
    /// `--tls --tlscert F --tlskey K`).
    pub fn start_with(args: &[&str]) -> Option<Nats> {
        let installed = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            assert!(
                std::env::var_os("ANOMALYD_REQUIRE_NATS").is_none(),
                "nats-server is required (ANOMALYD_REQUIRE_NATS is set) but cannot be run"
            );
            eprintln!("SKIPPED: nats-server is not installed (Debian package: nats-server)");
            return None;
        }
        let mut nats = Nats {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            monitor: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        nats.resume();
        Some(nats)
    }

    /// The URL members connect to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Kills the server (its store stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and store, and waits
    /// until JetStream is up.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("output.log"))
            .unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &self.addr.port().to_string()])
            .args(["-m", &self.monitor.port().to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        wait_until("nats-server with JetStream to get ready", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited ({status}):\n{}", self.output());
            }
            let ready = std::net::TcpStream::connect(self.monitor).is_ok()
                && request(
                    self.monitor,
                    "GET",
                    "/healthz?js-enabled-only=true",
                    &[],
                    b"",
                )
                .status
                    == 200;
            ready.then_some(())
        });
    }

    /// The configuration of every stream, as the monitoring port's
    /// `/jsz` shows it (`max_age` in nanoseconds).
    pub fn stream_configs(&self) -> Vec<serde_json::Value> {
        use std::io::{Read, Write};
        // HTTP/1.0, so that the reply is not chunked (the shared reader
        // needs a Content-Length, which Go leaves out of long replies).
        let mut conn = std::net::TcpStream::connect(self.monitor).unwrap();
        conn.write_all(b"GET /jsz?streams=true&config=true HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8(reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        let jsz: serde_json::Value = serde_json::from_str(body).unwrap();
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| {
                account["stream_detail"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|stream| stream["config"].clone())
            .collect()
    }

    /// Creates a stream through the JetStream API with the plain NATS
    /// protocol (as another client, or an older anomalyd, would have),
    /// and waits for the server's answer.
    pub fn create_stream(&self, config: &serde_json::Value) {
        use std::io::{Read, Write};
        let name = config["name"].as_str().unwrap();
        let body = config.to_string();
        let mut conn = std::net::TcpStream::connect(self.addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            conn,
            "CONNECT {{\"verbose\":false}}\r\nSUB _reply 1\r\nPUB $JS.API.STREAM.CREATE.{name} _reply {}\r\n{body}\r\n",
            body.len()
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("stream_create_response") {
            let n = conn.read(&mut chunk).expect("the JetStream API answers");
            assert!(n > 0, "nats-server closed the connection");
            seen.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(!text.contains("\"error\""), "{text}");
    }

    /// Everything the server printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
