//! The in-process test layer: a whole `anomalyd` server (state, log
//! writer, reload loop, HTTP) started by calling [`anomalyd::app::run`]
//! inside the test's own runtime, on `127.0.0.1:0` with a temporary
//! directory. Faster than starting the binary, and it runs under
//! `tokio::time::pause()`, so timeouts of minutes are tested without
//! waiting for them: the paused clock jumps to the next timer whenever
//! every task waits.

#![allow(dead_code)] // each test file uses part of the layer

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anomalyd::app::{self, AppError};
use anomalyd::config::Config;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server running in this process.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the admin address listens, when the config sets one (the
    /// test binds it on port 0 whatever the config says).
    pub admin_addr: Option<SocketAddr>,
    /// Its directory: the configuration file and the anomaly log.
    pub dir: TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
}

impl Server {
    /// Starts a server on `config` (TOML, merged over the defaults); the
    /// anomaly log goes to the temporary directory.
    pub async fn start(config: &str) -> Server {
        Self::start_with_log(config, b"").await
    }

    /// Starts a server whose anomaly log already holds `log` (JSON lines),
    /// which it reads back for `GET /anomalies`.
    pub async fn start_with_log(config: &str, log_text: &[u8]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("anomalies.log"), log_text).expect("write the log");
        let path = dir.path().join("anomalyd.toml");
        let log = dir.path().join("anomalies.log");
        let log_key = format!(
            "anomaly_log_file = {:?}\n",
            log.to_str().expect("UTF-8 temp path")
        );
        // The log goes to the temporary directory, in the test's [log]
        // table if it has one.
        let text = if config.contains("[log]\n") {
            config.replacen("[log]\n", &format!("[log]\n{log_key}"), 1)
        } else {
            format!("{config}\n[log]\n{log_key}")
        };
        std::fs::write(&path, &text).expect("write the configuration");
        let config = Config::load(&path).expect("valid test configuration");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let admin = match config.server.admin_listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
            None => None,
        };
        let admin_addr = admin
            .as_ref()
            .map(|a| a.local_addr().expect("admin address"));
        let task = tokio::spawn(app::run(
            vec![listener.into()],
            admin.map(Into::into),
            Arc::new(config),
            Some(path),
            None,
            None,
            shutdown.clone(),
        ));
        Server {
            addr,
            admin_addr,
            dir,
            shutdown,
            task,
        }
    }

    /// The anomaly log's path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("anomalies.log")
    }

    /// Asks for a graceful shutdown, as SIGTERM does, without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down gracefully and returns what `run` returned. The
    /// directory stays until the `Server` is dropped.
    pub async fn stop(&mut self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.finished().await
    }

    /// Waits for `run` to return after [`Server::begin_shutdown`].
    pub async fn finished(&mut self) -> Result<(), AppError> {
        (&mut self.task)
            .await
            .expect("the server task does not panic")
    }

    /// Sends one request with `Connection: close` and returns the status
    /// and body.
    pub async fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        request_at(self.addr, method, path, body).await
    }
}

/// Sends one request to `addr` with `Connection: close` and returns the
/// status and body.
pub async fn request_at(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read reply");
    parse_reply(&reply)
}

/// The status and body of one HTTP/1.1 reply (no chunked encoding: the
/// daemon sends `Content-Length`).
pub fn parse_reply(reply: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(reply);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// Reads from `stream` until the server closes it; returns what came.
pub async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}
