//! Reply helpers: the body type (whole or streamed), JSON bodies, the `{"error": ...}` shape, and the answers
//! several handlers share (405, 413).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::api::ErrorReply;

/// The body type of every response: a whole body, or a stream
/// (`GET /events`).
pub type ResponseBody = Either<Full<Bytes>, StreamedBody>;

/// A body streamed from a channel, one chunk per message; it ends when the
/// sender is dropped.
#[derive(Debug)]
pub struct StreamedBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl StreamedBody {
    /// A body fed by `chunks`.
    pub fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        StreamedBody { chunks }
    }
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A whole body.
pub fn whole(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Left(Full::new(bytes.into()))
}

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
    let mut response = Response::new(whole(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text reply in the Prometheus text format 0.0.4.
pub fn prometheus_text(text: String) -> Response<ResponseBody> {
    let mut response = Response::new(whole(text));
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

/// A reply with no body (204).
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(whole(Bytes::new()));
    *response.status_mut() = status;
    response
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
