//! A kept-alive HTTP/1.1 client connection to one server, over TCP or TLS
//! (rustls, trusting a [`ClientTls`]'s CAs), re-made after any failure:
//! what the alert sinks and anomaly-generator send with. One request at a
//! time; connecting is bounded here, each request by its caller (who then
//! calls [`Connection::close`]).

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::tls::ClientTls;

/// Where a [`Connection`] goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to (and the `Host` header).
    pub authority: String,
    /// The host alone, without brackets: the name TLS checks the server's
    /// certificate against.
    pub host: String,
    /// Whether to speak TLS (an `https://` URL).
    pub tls: bool,
}

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (TCP or the TLS handshake).
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The cause.
        source: io::Error,
    },
    /// The connection failed during the request (including a reply that
    /// never came because the server closed the connection).
    #[error("request to {authority} failed: {source}")]
    Http {
        /// `host:port`.
        authority: String,
        /// The cause.
        source: hyper::Error,
    },
}

/// One kept-alive connection to an [`Endpoint`], made on first use.
pub struct Connection {
    endpoint: Endpoint,
    tls: Option<ClientTls>,
    connect_timeout: Duration,
    /// What the debug line says a closed connection was to.
    peer_kind: &'static str,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection to `endpoint`, trusting `tls`'s CAs when it is TLS,
    /// whose connecting and TLS handshake each take at most
    /// `connect_timeout`. `peer_kind` names the server in debug lines
    /// ("an alert sink", "anomalyd").
    pub fn new(
        endpoint: Endpoint,
        tls: Option<ClientTls>,
        connect_timeout: Duration,
        peer_kind: &'static str,
    ) -> Connection {
        Connection {
            endpoint,
            tls,
            connect_timeout,
            peer_kind,
            sender: None,
        }
    }

    /// Where it goes.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Goes to `endpoint` from the next request on (closes the connection
    /// if it changed).
    pub fn set_endpoint(&mut self, endpoint: Endpoint) {
        if endpoint != self.endpoint {
            self.close();
            self.endpoint = endpoint;
        }
    }

    /// Trusts `tls`'s CAs from the next connection on (closes the
    /// connection if they changed).
    pub fn set_tls(&mut self, tls: Option<ClientTls>) {
        if tls != self.tls {
            self.close();
            self.tls = tls;
        }
    }

    /// Drops the connection: the next request connects afresh.
    pub fn close(&mut self) {
        self.sender = None;
    }

    /// Sends `request` on the kept-alive connection, connecting first when
    /// there is none or it is no longer usable. Any failure closes it.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let reusable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.sender = None;
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().expect("connected just above");
        let result = sender
            .send_request(request)
            .await
            .map_err(|source| ClientError::Http {
                authority: self.endpoint.authority.clone(),
                source,
            });
        if result.is_err() {
            self.close();
        }
        result
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let authority = &self.endpoint.authority;
        let connect_error = |source| ClientError::Connect {
            authority: authority.clone(),
            source,
        };
        let stream = self
            .within_connect_timeout("connect", TcpStream::connect(authority.as_str()))
            .await
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        if !self.endpoint.tls {
            return self.handshake(stream).await;
        }
        let Some(tls) = &self.tls else {
            return Err(connect_error(io::Error::other(
                "an https:// URL without TLS settings (ca_file)",
            )));
        };
        let name = rustls_pki_types::ServerName::try_from(self.endpoint.host.clone())
            .map_err(|e| connect_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config());
        let stream = self
            .within_connect_timeout("TLS handshake", connector.connect(name, stream))
            .await
            .map_err(connect_error)?;
        self.handshake(stream).await
    }

    /// `step`'s result, or a `TimedOut` error naming it after the connect
    /// timeout.
    async fn within_connect_timeout<T>(
        &self,
        step: &str,
        future: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        tokio::time::timeout(self.connect_timeout, future)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{step} timed out"),
                ))
            })
    }

    /// An HTTP/1.1 client connection over `stream`, its driver spawned.
    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Http {
                authority: self.endpoint.authority.clone(),
                source,
            })?;
        let peer_kind = self.peer_kind;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Connection to {peer_kind} ended.");
            }
        });
        Ok(sender)
    }
}
