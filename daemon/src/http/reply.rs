//! Reply helpers: JSON bodies, the `{"error": ...}` shape, and the answers
//! several handlers share (405, 413).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::api::ErrorReply;

/// The body type of every response.
pub type ResponseBody = Full<Bytes>;

/// A JSON error reply `{"error": message}`.
pub fn error(status: StatusCode, message: String) -> Response<ResponseBody> {
    json(status, &ErrorReply { error: message })
}

/// A JSON reply.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    json_bytes(
        status,
        serde_json::to_vec(value).expect("replies serialise"),
    )
}

/// A reply with a JSON body already written.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text reply in the Prometheus text format 0.0.4.
pub fn prometheus_text(text: String) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// 413: the body exceeds `[server] max_body_bytes`.
pub fn too_large(max: usize) -> Response<ResponseBody> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is larger than {max} bytes ([server] max_body_bytes); split it into smaller batches"
        ),
    )
}

/// 405 with the `Allow` header listing the methods the path takes.
pub fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
