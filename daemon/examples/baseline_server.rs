//! Baseline for the load benchmark (`daemon/benches/load.sh`): the smallest
//! hyper 1.x HTTP/1 server that does what `anomalyd` must do at the least for
//! `POST /detect`: read the body and parse it with the same parser
//! ([`anomalyd::ingest::parse_json_body`], or
//! [`anomalyd::ingest::parse_ndjson_body`] for `application/x-ndjson`). It then
//! replies 200 with a small fixed JSON body. Likewise `POST /api/v1/write`
//! (decompress and decode remote-write, [`anomalyd::ingest::decode_remote_write`])
//! and `POST /api/v2/write` (decode line protocol in nanoseconds,
//! [`anomalyd::ingest::decode_line_protocol`]), answered 204. No detection, no validation, no
//! logging, no limits: the gap between this server and `anomalyd` is the
//! cost of everything `anomalyd` does beyond HTTP and JSON.
//!
//! It uses the same runtime as `anomalyd` (tokio multi-thread, default
//! worker count, which follows the CPU affinity set by `taskset`).
//!
//! ```sh
//! cargo run --release -p anomalyd --example baseline_server -- [--listen 127.0.0.1:0]
//! ```
//!
//! The first line on stdout is `listening on ADDR`.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const OK_BODY: &[u8] = br#"{"status": "Data received and processed"}"#;

fn reply(status: StatusCode, body: &'static [u8]) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The labelled formats: decode, count, 204.
fn decode_labelled(path: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let decoded = match path {
        "/api/v1/write" => {
            anomalyd::ingest::decode_remote_write(body, 64 << 20).map_err(|e| e.to_string())
        }
        _ => anomalyd::ingest::decode_line_protocol(body, anomalyd::ingest::Precision::Nanoseconds)
            .map_err(|e| e.to_string()),
    };
    match decoded {
        // Keep the result alive until here so it cannot be optimised out.
        Ok(samples) if !samples.points().is_empty() => reply(StatusCode::NO_CONTENT, b""),
        Ok(_) => reply(StatusCode::BAD_REQUEST, br#"{"error": "empty"}"#),
        Err(_) => reply(StatusCode::BAD_REQUEST, br#"{"error": "malformed"}"#),
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::POST && matches!(path.as_str(), "/api/v1/write" | "/api/v2/write") {
        return Ok(match req.into_body().collect().await {
            Ok(collected) => decode_labelled(&path, &collected.to_bytes()),
            Err(_) => reply(StatusCode::BAD_REQUEST, br#"{"error": "body"}"#),
        });
    }
    if req.method() != Method::POST || path != "/detect" {
        return Ok(reply(StatusCode::NOT_FOUND, br#"{"error": "not found"}"#));
    }
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, br#"{"error": "body"}"#)),
    };
    let parsed = if ndjson {
        anomalyd::ingest::parse_ndjson_body(&body)
    } else {
        anomalyd::ingest::parse_json_body(&body)
    };
    Ok(match parsed {
        // Keep the parse result alive until here so it cannot be optimised out.
        Ok(points) if !points.is_empty() => reply(StatusCode::OK, OK_BODY),
        Ok(_) => reply(StatusCode::BAD_REQUEST, br#"{"error": "empty"}"#),
        Err(_) => reply(StatusCode::BAD_REQUEST, br#"{"error": "malformed"}"#),
    })
}

fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                addr = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}`; usage: baseline_server [--listen ADDR]"
                ));
            }
        }
    }
    Ok(addr)
}

fn main() -> std::process::ExitCode {
    let addr = match listen_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("baseline_server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("baseline_server: cannot listen on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let bound = listener.local_addr().expect("bound address");
        println!("listening on {bound}");
        let _ = std::io::stdout().flush();
        let mut builder = http1::Builder::new();
        builder.keep_alive(true);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service_fn(handle));
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
