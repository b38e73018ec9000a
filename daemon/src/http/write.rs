//! The write endpoints of the monitoring stack: `POST /api/v1/write`
//! (Prometheus remote-write 1.0), and `POST /api/v2/write` and `POST
//! /write` (InfluxDB line protocol, as Telegraf's `outputs.influxdb_v2` and
//! `outputs.influxdb` send it).
//!
//! Each decodes its format with [`crate::ingest`] and applies the samples
//! through the same path as `POST /detect` ([`super::detect::apply_points`]):
//! the same limits, the same all-or-nothing batches, the same anomaly log
//! before the reply. Samples whose timestamp is not after their series'
//! last one are resends: acknowledged, counted, not applied again.

use std::io::Read as _;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{content_encoding, media_type, read_request_body};
use super::detect::apply_points;
use super::gate::Client;
use super::query::parse_influx_query;
use super::reply::{ResponseBody, empty, error, too_large};
use crate::cluster::producer::Origin;
use crate::ingest::{RemoteWriteError, Samples, decode_line_protocol, decode_remote_write};
use crate::metrics::Format;
use crate::series::Duplicates;
use crate::state::AppState;

/// `POST /api/v1/write`: a snappy-compressed protobuf `WriteRequest`,
/// answered 204.
pub(super) async fn remote_write(
    req: Request<Incoming>,
    state: &AppState,
) -> Response<ResponseBody> {
    if let Some(refused) = remote_write_headers(&req) {
        return refused;
    }
    let client = req.extensions().get::<Client>().copied();
    let config = state.config();
    let body = match read_request_body(req.into_body(), &config.server).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let max = config.server.max_body_bytes;
    let samples = match decode_remote_write(&body, max) {
        Ok(samples) => samples,
        Err(e @ RemoteWriteError::TooLarge { .. }) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e @ RemoteWriteError::Malformed(_)) => {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    apply_samples(&samples, Format::RemoteWrite, client, state).await
}

/// 415 unless the headers say remote-write 1.0: `Content-Type:
/// application/x-protobuf` (without a `proto=` other than
/// `prometheus.WriteRequest`) and `Content-Encoding: snappy`.
fn remote_write_headers(req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    let refuse = |message: String| Some(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
    match media_type(req.headers()) {
        Some((mime, params)) if mime == "application/x-protobuf" => {
            let proto = params
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("proto="))
                .next();
            if let Some(proto) = proto
                && proto != "prometheus.WriteRequest"
            {
                return refuse(format!(
                    "`proto={proto}` is not supported: anomalyd takes remote-write 1.0 (prometheus.WriteRequest); set the sender's protobuf_message to prometheus.WriteRequest"
                ));
            }
        }
        other => {
            let sent = other.map_or_else(|| "none".to_owned(), |(mime, _)| format!("`{mime}`"));
            return refuse(format!(
                "unsupported Content-Type {sent}: remote-write sends `application/x-protobuf`"
            ));
        }
    }
    match content_encoding(req.headers()) {
        Some(encoding) if encoding == "snappy" => None,
        other => refuse(format!(
            "unsupported Content-Encoding {}: remote-write bodies are snappy-compressed (`Content-Encoding: snappy`)",
            other.map_or_else(|| "none".to_owned(), |e| format!("`{e}`"))
        )),
    }
}

/// Which write API of InfluxDB a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum InfluxApi {
    /// `POST /write` (InfluxDB 1.x): precision `n`, `u`, `ms`, `s`, `m`, `h`.
    V1,
    /// `POST /api/v2/write` (InfluxDB 2.x): precision `ns`, `us`, `ms`, `s`.
    V2,
}

/// `POST /api/v2/write` and `POST /write`: line protocol, plain or
/// gzip-compressed, answered 204. `precision` sets the timestamps' unit
/// (default nanoseconds); `db`, `rp`, `bucket` and `org` are accepted and
/// ignored: every line goes to the one series table.
pub(super) async fn line_protocol(
    req: Request<Incoming>,
    api: InfluxApi,
    state: &AppState,
) -> Response<ResponseBody> {
    let query = req.uri().query().unwrap_or("");
    let precision = match parse_influx_query(query, api == InfluxApi::V1) {
        Ok(precision) => precision,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Some((mime, _)) = media_type(req.headers())
        && matches!(
            mime.as_str(),
            "application/json" | "application/x-ndjson" | "application/x-protobuf"
        )
    {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type `{mime}`: this endpoint takes InfluxDB line protocol (`text/plain`); JSON goes to POST /detect, remote-write to POST /api/v1/write"
            ),
        );
    }
    let gzip = match content_encoding(req.headers()) {
        None => false,
        Some(encoding) if encoding == "gzip" => true,
        Some(other) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Encoding `{other}`: send the body plain or gzip-compressed (`Content-Encoding: gzip`)"
                ),
            );
        }
    };
    let client = req.extensions().get::<Client>().copied();
    let config = state.config();
    let body = match read_request_body(req.into_body(), &config.server).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let max = config.server.max_body_bytes;
    let body = if gzip {
        match gunzip(&body, max) {
            Ok(body) => bytes::Bytes::from(body),
            Err(GunzipError::TooLarge) => return too_large(max),
            Err(GunzipError::Corrupt(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not valid gzip (Content-Encoding: gzip): {e}"),
                );
            }
        }
    } else {
        body
    };
    match decode_line_protocol(&body, precision) {
        Ok(samples) => apply_samples(&samples, Format::Influx, client, state).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Decompresses a gzip body of at most `max` bytes once decompressed.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(max));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(GunzipError::Corrupt)?;
    if out.len() > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(out)
}

/// Why a gzip body could not be decompressed.
#[derive(Debug)]
enum GunzipError {
    /// Not valid gzip (400).
    Corrupt(std::io::Error),
    /// Larger than `max_body_bytes` once decompressed (413).
    TooLarge,
}

/// Applies decoded samples, resends recognised by timestamp; 204 when
/// done, whatever was skipped (counted in `/metrics`).
async fn apply_samples(
    samples: &Samples,
    format: Format,
    client: Option<Client>,
    state: &AppState,
) -> Response<ResponseBody> {
    let points = samples.points();
    if let Some(member) = state.cluster.get() {
        let origin = match format {
            Format::RemoteWrite => Origin::RemoteWrite,
            _ => Origin::LineProtocol,
        };
        let reply = super::cluster::publish(member, &points, origin, client, state).await;
        if reply.status().is_success() {
            state.metrics.skipped(format, &samples.skipped);
        }
        return reply;
    }
    if let Err(response) =
        apply_points(&points, Duplicates::ByTimestamp, format, client, state).await
    {
        return response;
    }
    state.metrics.skipped(format, &samples.skipped);
    empty(StatusCode::NO_CONTENT)
}
