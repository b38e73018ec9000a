//! The sinks' client: one kept-alive connection per sink (plain HTTP or
//! TLS, directly or through `proxy_url`: [`crate::http_client`]), re-made
//! after any failure, one request at a time, every step bounded by the
//! sink's `timeout`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};

use crate::config::HttpUrl;
use crate::http_client::{ClientError, Connection, Endpoint, Proxy};
use crate::tls::ClientTls;

/// The most of a reply body kept (for error messages).
const MAX_REPLY_BYTES: usize = 4096;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection, or it failed during the request.
    #[error(transparent)]
    Connection(#[from] ClientError),
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
    connection: Connection,
}

impl SinkClient {
    /// A client of `url` (trusting `tls`'s CAs for an `https://` one,
    /// through `proxy` when set) sending `headers` (validated by the
    /// configuration; invalid ones are left out) with each request.
    pub fn new(
        url: HttpUrl,
        tls: Option<ClientTls>,
        proxy: Option<Proxy>,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> SinkClient {
        let headers = headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        let endpoint = Endpoint {
            proxy,
            ..url.endpoint()
        };
        let connection = Connection::new(endpoint, tls, timeout, "an alert sink");
        SinkClient {
            url,
            headers,
            timeout,
            connection,
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
            self.connection.close();
        }
        result
    }

    async fn post_inner(&mut self, path: &str, body: Bytes) -> Result<Reply, SendError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.url.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("anomalyd/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .expect("a request from valid parts");
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let response = self.connection.send(request).await?;
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
                    self.connection.close();
                    break;
                }
            }
        }
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&kept).trim().to_owned(),
        })
    }
}
