//! Reading request bodies: the format named by `Content-Type`, and the
//! whole body under a size cap and a time limit.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};

use super::reply::{ResponseBody, error, too_large};
use crate::config::ServerConfig;

/// How a `/detect` body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one object or an array of objects.
    Json,
    /// `application/x-ndjson`: one object per line.
    Ndjson,
}

/// The error type of a size-limited body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body format named by the `Content-Type` header, or the unsupported
/// header text.
pub fn body_format(headers: &HeaderMap) -> Result<BodyFormat, String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        // curl -d without -H still deserves an answer; JSON is the default.
        return Ok(BodyFormat::Json);
    };
    // The usual header, exactly: no splitting or trimming.
    match value.as_bytes() {
        b"application/json" => return Ok(BodyFormat::Json),
        b"application/x-ndjson" => return Ok(BodyFormat::Ndjson),
        _ => {}
    }
    let text = value.to_str().unwrap_or("");
    let mime = text.split(';').next().unwrap_or("").trim();
    let is = |name: &str| mime.eq_ignore_ascii_case(name);
    if is("application/json") {
        Ok(BodyFormat::Json)
    } else if is("application/x-ndjson") || is("application/ndjson") {
        Ok(BodyFormat::Ndjson)
    } else {
        Err(text.to_owned())
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body did not arrive within the time limit.
    TimedOut,
    /// The body is larger than the cap.
    TooLarge,
    /// The connection failed mid-body.
    Read(BoxError),
}

/// Reads a whole body of at most `max` bytes, within `timeout`. A body
/// that has already arrived (the usual small request) is taken without
/// arming a timer.
pub async fn read_body(body: Incoming, max: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    // hyper has parsed Content-Length already: the body's exact size hint.
    if body.size_hint().exact().is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Limited::new(body, max);
    let mut first: Option<Bytes> = None;
    let outcome = loop {
        // Poll once without waiting: Ready(frame) or Pending.
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut body).poll_frame(cx))
        })
        .await;
        match polled {
            std::task::Poll::Ready(None) => return Ok(first.unwrap_or_default()),
            std::task::Poll::Ready(Some(Err(e))) => break Err(e),
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers: nothing to keep
                };
                if first.is_none() {
                    first = Some(data);
                    continue;
                }
                // More than one frame: gather the rest the ordinary way.
                let mut buf = first.take().map(Vec::from).unwrap_or_default();
                buf.extend_from_slice(&data);
                break rest_of_body(body, buf, timeout).await;
            }
            std::task::Poll::Pending => {
                let buf = first.take().map(Vec::from).unwrap_or_default();
                break rest_of_body(body, buf, timeout).await;
            }
        }
    };
    outcome.map_err(|e| {
        if e.is::<tokio::time::error::Elapsed>() {
            BodyError::TimedOut
        } else if e.is::<http_body_util::LengthLimitError>() {
            BodyError::TooLarge
        } else {
            BodyError::Read(e)
        }
    })
}

/// The rest of a body after `buf`, within `timeout`.
async fn rest_of_body(
    body: Limited<Incoming>,
    mut buf: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, BoxError> {
    tokio::time::timeout(timeout, async move {
        let rest = body.collect().await?.to_bytes();
        buf.extend_from_slice(&rest);
        Ok(Bytes::from(buf))
    })
    .await?
}

/// Reads the whole body under `[server] max_body_bytes` and
/// `idle_timeout`; the error is the reply to send (413, 408 or 400).
pub async fn read_request_body(
    body: Incoming,
    server: &ServerConfig,
) -> Result<Bytes, Response<ResponseBody>> {
    let max = server.max_body_bytes;
    read_body(body, max, server.idle_timeout)
        .await
        .map_err(|e| match e {
            BodyError::TimedOut => error(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body".into(),
            ),
            BodyError::TooLarge => too_large(max),
            BodyError::Read(e) => error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ),
        })
}

/// The `Content-Encoding` of a request, lower-cased; `None` when absent
/// or `identity`.
pub fn content_encoding(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_ENCODING)?;
    let text = String::from_utf8_lossy(value.as_bytes())
        .trim()
        .to_ascii_lowercase();
    (text != "identity" && !text.is_empty()).then_some(text)
}

/// The media type of `Content-Type` (before any `;`), lower-cased, and
/// its parameters as they were sent; `None` when absent.
pub fn media_type(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    let (mime, params) = text.split_once(';').unwrap_or((&text, ""));
    Some((mime.trim().to_ascii_lowercase(), params.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert_eq!(body_format(&headers).unwrap(), BodyFormat::Json);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(body_format(&headers).unwrap(), BodyFormat::Json);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        assert_eq!(body_format(&headers).unwrap(), BodyFormat::Ndjson);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(body_format(&headers).unwrap_err(), "text/plain");
    }
}
