//! The write endpoints of the monitoring stack: `POST /api/v1/write`
//! (Prometheus remote-write 1.0).
//!
//! Each decodes its format with [`crate::ingest`] and applies the samples
//! through the same path as `POST /detect` ([`super::detect::apply_points`]):
//! the same limits, the same all-or-nothing batches, the same anomaly log
//! before the reply. Samples whose timestamp is not after their series'
//! last one are resends: acknowledged, counted, not applied again.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{content_encoding, media_type, read_request_body};
use super::detect::apply_points;
use super::reply::{ResponseBody, empty, error};
use crate::ingest::{RemoteWriteError, Samples, decode_remote_write};
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
    apply_samples(&samples, Format::RemoteWrite, state).await
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

/// Applies decoded samples, resends recognised by timestamp; 204 when
/// done, whatever was skipped (counted in `/metrics`).
async fn apply_samples(
    samples: &Samples,
    format: Format,
    state: &AppState,
) -> Response<ResponseBody> {
    let points = samples.points();
    if let Err(response) = apply_points(&points, Duplicates::ByTimestamp, format, state).await {
        return response;
    }
    state.metrics.skipped(format, &samples.skipped);
    empty(StatusCode::NO_CONTENT)
}
