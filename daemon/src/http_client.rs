//! A kept-alive HTTP/1.1 client connection to one server, over TCP or TLS
//! (rustls, trusting a [`ClientTls`]'s CAs), directly or through an HTTP
//! [`Proxy`], re-made after any failure: what the alert sinks and
//! anomaly-generator send with. One request at a time; connecting is
//! bounded here, each request by its caller (who then calls
//! [`Connection::close`]).
//!
//! Through a proxy, an `https://` server is reached through a `CONNECT`
//! tunnel (TLS end to end: the proxy sees only the host and port) and an
//! `http://` one by sending the proxy each request with its absolute URL,
//! as proxies expect for plain HTTP.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, PROXY_AUTHORIZATION};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::percent;
use crate::tls::ClientTls;

/// The longest reply to `CONNECT` read from a proxy.
const MAX_PROXY_REPLY: usize = 16 * 1024;

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
    /// The HTTP proxy to go through, if any.
    pub proxy: Option<Proxy>,
}

impl Endpoint {
    /// `host:port`, and the proxy when there is one, for messages.
    fn described(&self) -> String {
        match &self.proxy {
            Some(proxy) => format!("{} through proxy {}", self.authority, proxy.authority),
            None => self.authority.clone(),
        }
    }
}

/// An HTTP proxy (`proxy_url = "http://[user:password@]host[:port]"`).
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The URL as written, its password replaced by `<hidden>`.
    pub shown: String,
    /// `host:port` of the proxy (port 80 when the URL has none).
    pub authority: String,
    /// The `Proxy-Authorization` value (Basic) from the URL's user info.
    authorization: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("shown", &self.shown)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Parses `http://[user:password@]host[:port][/]`; the error says what
    /// is wrong and what to write. User and password may be
    /// percent-encoded (`%40` for `@`).
    pub fn parse(text: &str) -> Result<Proxy, String> {
        let example = "e.g. \"http://proxy.example:3128\"";
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(format!(
                    "a proxy is reached over plain http:// (an https:// receiver is still encrypted end to end through it); {example}"
                ));
            }
            _ => return Err(format!("expected an http:// proxy URL, {example}")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, rest),
        };
        if host_port.is_empty() || host_port.contains(['/', '?', '#']) {
            return Err(format!(
                "a proxy URL is a scheme, a host and a port, with no path; {example}"
            ));
        }
        let parsed: hyper::http::uri::Authority = host_port
            .parse()
            .map_err(|e| format!("not a host and port ({e}); {example}"))?;
        let authority = match host_port.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => match port.parse::<u16>() {
                Ok(1..) => host_port.to_owned(),
                _ => return Err(format!("the port {port:?} is not 1 to 65535; {example}")),
            },
            _ => format!("{}:80", parsed.as_str()),
        };
        let (authorization, shown) = match userinfo {
            None => (None, format!("http://{host_port}")),
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |part| {
                    percent::decode(part).ok_or(
                        "the proxy's user or password has a % not followed by two hex digits, or is not UTF-8; write % as %25",
                    )
                };
                let credentials = format!("{}:{}", decode(user)?, decode(password)?);
                let encoded =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials);
                (
                    Some(format!("Basic {encoded}")),
                    format!("http://{user}:<hidden>@{host_port}"),
                )
            }
        };
        Ok(Proxy {
            shown,
            authority,
            authorization,
        })
    }
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
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        if let (Some(proxy), false) = (&self.endpoint.proxy, self.endpoint.tls) {
            self.to_proxy(&mut request, proxy);
        }
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
                authority: self.endpoint.described(),
                source,
            });
        if result.is_err() {
            self.close();
        }
        result
    }

    /// Rewrites `request` for a proxy of plain HTTP: its absolute URL,
    /// and the proxy's credentials.
    fn to_proxy(&self, request: &mut Request<Full<Bytes>>, proxy: &Proxy) {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = format!("http://{}{path}", self.endpoint.authority).parse::<Uri>() {
            *request.uri_mut() = uri;
        }
        if let Some(value) = proxy
            .authorization
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            request.headers_mut().insert(PROXY_AUTHORIZATION, value);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let authority = &self.endpoint.authority;
        let connect_error = |source| ClientError::Connect {
            authority: self.endpoint.described(),
            source,
        };
        let dial = match &self.endpoint.proxy {
            Some(proxy) => proxy.authority.as_str(),
            None => authority.as_str(),
        };
        let mut stream = self
            .within_connect_timeout("connect", TcpStream::connect(dial))
            .await
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        if !self.endpoint.tls {
            return self.handshake(stream).await;
        }
        if let Some(proxy) = &self.endpoint.proxy {
            self.within_connect_timeout("CONNECT", open_tunnel(&mut stream, authority, proxy))
                .await
                .map_err(connect_error)?;
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
                authority: self.endpoint.described(),
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

/// Asks the proxy at the other end of `stream` for a tunnel to `target`
/// (`host:port`): `CONNECT`, then its reply's head, which must be 2xx.
async fn open_tunnel(stream: &mut TcpStream, target: &str, proxy: &Proxy) -> io::Result<()> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Byte by byte: nothing past the head may be taken from the tunnel.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the proxy's reply to CONNECT is too long",
            ));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection instead of answering CONNECT",
            ));
        }
        head.push(byte[0]);
    }
    tunnel_status(&head)
}

/// Whether a proxy's reply head to `CONNECT` opens the tunnel; the error
/// quotes its status line.
fn tunnel_status(head: &[u8]) -> io::Result<()> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(()),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("the proxy refused the tunnel: {}", line.trim()),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the proxy's reply to CONNECT is not HTTP: {:?}",
                line.trim()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_a_default_port_and_hidden_credentials() {
        let proxy = Proxy::parse("http://proxy.example:3128/").unwrap();
        assert_eq!(proxy.authority, "proxy.example:3128");
        assert_eq!(proxy.shown, "http://proxy.example:3128");
        assert_eq!(proxy.authorization, None);
        assert_eq!(
            Proxy::parse("http://10.0.0.1").unwrap().authority,
            "10.0.0.1:80"
        );
        assert_eq!(
            Proxy::parse("HTTP://[::1]:8080").unwrap().authority,
            "[::1]:8080"
        );
        let with_user = Proxy::parse("http://alice:p%40ss@proxy:3128").unwrap();
        assert_eq!(with_user.shown, "http://alice:<hidden>@proxy:3128");
        // base64("alice:p@ss")
        assert_eq!(
            with_user.authorization.as_deref(),
            Some("Basic YWxpY2U6cEBzcw==")
        );
        assert!(
            !format!("{with_user:?}").contains("YWxp"),
            "Debug hides the credentials"
        );
    }

    #[test]
    fn bad_proxy_urls_say_what_to_write() {
        let error = |text| Proxy::parse(text).unwrap_err();
        assert!(error("https://proxy:3128").contains("plain http://"));
        assert!(error("proxy:3128").contains("http://"));
        assert!(error("socks5://proxy:1080").contains("http://"));
        assert!(error("http://proxy:3128/path").contains("no path"));
        assert!(error("http://").contains("no path"));
        assert!(error("http://proxy:99999").contains("not 1 to 65535"));
        assert!(error("http://proxy:0").contains("not 1 to 65535"));
        assert!(error("http://pro xy:3128").contains("host and port"));
        assert!(error("http://a:%zz@proxy").contains("%25"));
    }

    #[test]
    fn a_tunnel_opens_on_2xx_only() {
        assert!(tunnel_status(b"HTTP/1.1 200 Connection established\r\n\r\n").is_ok());
        assert!(tunnel_status(b"HTTP/1.0 200 OK\r\n\r\n").is_ok());
        let refused = tunnel_status(b"HTTP/1.1 403 Forbidden\r\nX: y\r\n\r\n").unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("refused the tunnel: HTTP/1.1 403 Forbidden")
        );
        let garbage = tunnel_status(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert!(garbage.to_string().contains("not HTTP"));
    }
}
