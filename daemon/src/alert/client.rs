//! A small HTTP/1.1 client for the sinks: one kept-alive connection per
//! sink, re-made after any failure, one request at a time, every step
//! bounded by the sink's `timeout`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HttpUrl;

/// The most of a reply body kept (for error messages).
const MAX_REPLY_BYTES: usize = 4096;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection failed during the request.
    #[error("request to {authority} failed: {source}")]
    Http {
        /// `host:port`.
        authority: String,
        /// The cause.
        source: hyper::Error,
    },
    /// No reply within the timeout.
    #[error("no reply from {authority} within {timeout:?}")]
    Timeout {
        /// `host:port`.
        authority: String,
        /// The sink's `timeout`.
        timeout: Duration,
    },
}

/// A reply: status and the start of the body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// At most the first 4 KiB of the body, as text.
    pub body: String,
}

/// A client for one sink.
pub struct SinkClient {
    url: HttpUrl,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl SinkClient {
    /// A client of `url` sending `headers` (validated by the
    /// configuration; invalid ones are left out) with each request.
    pub fn new(url: HttpUrl, headers: &[(String, String)], timeout: Duration) -> SinkClient {
        let headers = headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        SinkClient {
            url,
            headers,
            timeout,
            connection: None,
        }
    }

    /// POSTs the JSON `body` to `path`; any failure drops the connection.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Result<Reply, SendError> {
        let result = tokio::time::timeout(self.timeout, self.post_inner(path, body)).await;
        let result = result.unwrap_or_else(|_| {
            Err(SendError::Timeout {
                authority: self.url.authority.clone(),
                timeout: self.timeout,
            })
        });
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn post_inner(&mut self, path: &str, body: Bytes) -> Result<Reply, SendError> {
        let authority = self.url.authority.clone();
        let http = |source| SendError::Http {
            authority: authority.clone(),
            source,
        };
        let reusable = match &mut self.connection {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.connection = Some(self.connect().await?);
        }
        let sender = self.connection.as_mut().expect("connected just above");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("anomalyd/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .expect("a request from valid parts");
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        // Read the reply (to keep the connection usable), keeping the start.
        let mut body = Limited::new(response.into_body(), 1 << 20);
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MAX_REPLY_BYTES.saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Err(_) => {
                    // An over-long or broken reply body: the status stands,
                    // the connection does not.
                    self.connection = None;
                    break;
                }
            }
        }
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&kept).trim().to_owned(),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let authority = &self.url.authority;
        let connect_error = |source| SendError::Connect {
            authority: authority.clone(),
            source,
        };
        let stream = TcpStream::connect(authority.as_str())
            .await
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| SendError::Http {
                authority: authority.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Connection to an alert sink ended.");
            }
        });
        Ok(sender)
    }
}
