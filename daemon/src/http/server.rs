//! The accept loop: the connection cap, per-connection timeouts (idle,
//! request headers, blocked replies) kept by a watchdog task per
//! connection, and the drain on shutdown.
//!
//! The number of connections is capped by a semaphore permit taken before
//! `accept`, so excess clients wait in the kernel's backlog instead of
//! holding a socket here.

use crate::access::Peer;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
// tokio's clock (the std clock outside tests), so that the timeouts
// follow a paused test clock.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::gate::{self, Client};
use super::listener::{Listener, Stream, accept_any};
use super::reply::ResponseBody;
use super::router::{route, route_admin};
use crate::metrics::{BadRequest, Route};
use crate::state::AppState;

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every endpoint, within `[server] max_connections`.
    Main,
    /// Only `/healthz`, `/ready` and `/metrics` (`[server] admin_listen`),
    /// within its own [`ADMIN_MAX_CONNECTIONS`], so probes and scrapes are
    /// answered while the main address is saturated.
    Admin,
}

/// Connections the admin address serves at once.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Accepts connections on `listeners` (one or more, sharing one connection
/// cap) and serves them until `shutdown` is
/// cancelled; then stops accepting and returns. In-flight connections are
/// told to finish and are tracked by `connections`, which the caller
/// drains; cancelling `kill` drops those still open (the grace period is
/// over).
pub async fn serve(
    listeners: Vec<Listener>,
    role: Role,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    kill: CancellationToken,
    connections: TaskTracker,
) {
    // max_connections is fixed for the process's life; the timeouts are
    // read per connection, so a reload changes them for new connections.
    let cap = match role {
        Role::Main => state.config().server.max_connections,
        Role::Admin => ADMIN_MAX_CONNECTIONS,
    };
    let permits = Arc::new(Semaphore::new(cap));
    let mut next = 0;
    loop {
        // Take the permit before accepting (see the module documentation).
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = accept_any(&listeners, &mut next) => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = stream;
        connections.spawn(serve_connection(
            stream,
            peer,
            role,
            state.clone(),
            permit,
            shutdown.clone(),
            kill.clone(),
        ));
    }
}

/// Serves one connection until the client closes it, or the watchdog
/// ([`Activity::watch`]) ends it: gracefully when it is idle or on
/// shutdown, at once when a request's headers or a blocked reply overrun
/// their timeouts, or when `kill` is cancelled.
async fn serve_connection(
    stream: Stream,
    peer: Peer,
    role: Role,
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
    kill: CancellationToken,
) {
    let server = state.config().server.clone();
    // TLS on the main address; the handshake is due within
    // header_read_timeout, as a request's headers are.
    let stream = match (&server.tls, role) {
        (Some(tls), Role::Main) => {
            let handshake = stream.accept_tls(tls.config());
            match tokio::time::timeout(server.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake not done within [server] header_read_timeout.");
                    return;
                }
            }
        }
        _ => stream,
    };
    let activity = Arc::new(Activity::new());
    // hyper's own header timeout also runs while a kept-alive connection
    // waits for its next request, which would cut idle connections at
    // header_read_timeout; the watchdog times headers from their first
    // byte instead.
    let conn = http1::Builder::new().keep_alive(true).serve_connection(
        TokioIo::new(Tracked {
            stream,
            activity: activity.clone(),
            replacing: None,
        }),
        service_fn({
            let activity = activity.clone();
            move |req| handle(req, peer, role, state.clone(), activity.clone())
        }),
    );
    // The watchdog runs apart so that the connection task, woken several
    // times per request, polls two cheap `Notified`s instead of timers.
    let ending = Arc::new(Ending::default());
    let watchdog = tokio::spawn({
        let ending = ending.clone();
        let limits = Limits {
            idle: server.idle_timeout,
            header: server.header_read_timeout,
            write: server.write_timeout,
        };
        async move { activity.watch(limits, &shutdown, &ending).await }
    });
    let mut conn = std::pin::pin!(conn);
    let mut graceful = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = ending.graceful.notified(), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            () = ending.cut.notified() => break Ok(()),
            () = kill.cancelled() => break Ok(()),
        }
    };
    watchdog.abort();
    if let Err(e) = result {
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
}

/// Answers one request, with its metrics and the connection's activity:
/// the gate first, then the router.
async fn handle(
    mut req: Request<Incoming>,
    peer: Peer,
    role: Role,
    state: Arc<AppState>,
    activity: Arc<Activity>,
) -> Result<Response<ResponseBody>, Infallible> {
    let busy = activity.begin();
    let started = Instant::now();
    let route_label = Route::of(req.uri().path());
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let server = &state.config().server;
    let authenticated = gate::authenticate(
        req.method(),
        req.uri().path(),
        req.headers(),
        role == Role::Main,
        server,
    );
    let response = match authenticated {
        Ok(token) => {
            req.extensions_mut().insert(Client {
                peer,
                token,
                limit: server.client_limit(),
            });
            match role {
                Role::Main => route(req, &state).await,
                Role::Admin => route_admin(req, &state),
            }
        }
        Err(refused) => {
            state.refusals.record(
                peer,
                req.method().as_str(),
                req.uri().path(),
                refused.reason,
            );
            refused.response
        }
    };
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let finished = Instant::now();
    state.metrics.request(
        route_label,
        response.status().as_u16(),
        response.extensions().get::<BadRequest>().copied(),
        finished.saturating_duration_since(started),
    );
    busy.finish(finished);
    Ok(response)
}

/// Classifies an `accept` error: a client that gave up is routine, running
/// out of file descriptors or memory is worth a pause.
async fn accept_error(e: io::Error) {
    match e.raw_os_error() {
        Some(libc::ECONNABORTED) | Some(libc::EINTR) => {}
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM) | Some(libc::ENOBUFS) => {
            tracing::warn!(error = %e, "Cannot accept connections (resource limit); pausing 100ms.");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _ => tracing::warn!(error = %e, "Failed to accept a connection."),
    }
}

/// How the watchdog asks the connection task to end.
#[derive(Default)]
struct Ending {
    /// Finish the request in progress, then close (idle, shutdown).
    graceful: Notify,
    /// Drop the connection now (a timeout overrun).
    cut: Notify,
}

/// The timeouts a connection is held to.
#[derive(Clone, Copy, Debug)]
struct Limits {
    idle: Duration,
    header: Duration,
    write: Duration,
}

impl Limits {
    /// How often the watchdog looks while nothing is due: a quarter of the
    /// shortest timeout, so that a head or a blocked write that starts
    /// meanwhile is seen well before its deadline.
    fn check_every(&self) -> Duration {
        (self.idle.min(self.header).min(self.write) / 4).max(Duration::from_millis(10))
    }
}

/// "Not set" for the millisecond fields of [`Activity`].
const UNSET: u64 = u64::MAX;

/// What a connection is doing, kept with atomics by the request path and
/// the socket wrapper and read by the watchdog. Times are milliseconds
/// since `epoch`.
struct Activity {
    in_flight: AtomicUsize,
    /// When the connection last became idle (no request in flight).
    idle_since_ms: AtomicU64,
    /// When the first byte of a request not yet handed to the service
    /// arrived; the connection's start for its first request.
    head_since_ms: AtomicU64,
    /// Since when a write has been refused (the client does not read).
    write_blocked_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            // The first request's headers are due from the connection's
            // start, as before its first byte the client owes us one.
            head_since_ms: AtomicU64::new(0),
            write_blocked_ms: AtomicU64::new(UNSET),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks a request in flight until the returned guard is dropped.
    fn begin(self: Arc<Self>) -> BusyOwned {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(UNSET, Ordering::Release);
        BusyOwned {
            activity: self,
            finished: None,
        }
    }

    /// Bytes arrived: if no request is in flight, they begin the next
    /// request's head, whose timeout starts now.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since_ms.load(Ordering::Acquire) == UNSET
        {
            self.head_since_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// A write was refused (`blocked`) or made progress.
    fn write_blocked(&self, blocked: bool) {
        let current = self.write_blocked_ms.load(Ordering::Acquire);
        if blocked && current == UNSET {
            self.write_blocked_ms
                .store(self.now_ms(), Ordering::Release);
        } else if !blocked && current != UNSET {
            self.write_blocked_ms.store(UNSET, Ordering::Release);
        }
    }

    /// Watches the connection until it must end: asks for a graceful close
    /// when it is idle for `idle` or on `shutdown` (and keeps watching
    /// writes), and cuts it when a request's head takes longer than
    /// `header` or a write stays blocked for `write`.
    async fn watch(&self, limits: Limits, shutdown: &CancellationToken, ending: &Ending) {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut graceful = false;
        loop {
            let now = self.now_ms();
            let mut next = now + ms(limits.check_every());
            let blocked = self.write_blocked_ms.load(Ordering::Acquire);
            if blocked != UNSET {
                let due = blocked.saturating_add(ms(limits.write));
                if now >= due {
                    tracing::debug!(
                        "A reply stayed unread for [server] write_timeout; closing the connection."
                    );
                    ending.cut.notify_one();
                    return;
                }
                next = next.min(due);
            }
            if !graceful && self.in_flight.load(Ordering::Acquire) == 0 {
                let head = self.head_since_ms.load(Ordering::Acquire);
                if head != UNSET {
                    let due = head.saturating_add(ms(limits.header));
                    if now >= due {
                        tracing::debug!(
                            "Request headers did not arrive within [server] header_read_timeout; closing the connection."
                        );
                        ending.cut.notify_one();
                        return;
                    }
                    next = next.min(due);
                } else {
                    let due = self
                        .idle_since_ms
                        .load(Ordering::Acquire)
                        .saturating_add(ms(limits.idle));
                    if now >= due {
                        graceful = true;
                        ending.graceful.notify_one();
                        continue;
                    }
                    next = next.min(due);
                }
            }
            let deadline = self.epoch + Duration::from_millis(next);
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shutdown.cancelled(), if !graceful => {
                    graceful = true;
                    ending.graceful.notify_one();
                }
            }
        }
    }
}

/// Marks a request in flight until dropped.
struct BusyOwned {
    activity: Arc<Activity>,
    /// When the request finished, if the caller already read the clock.
    finished: Option<Instant>,
}

impl BusyOwned {
    /// Ends the request at `at` (saves a clock read).
    fn finish(mut self, at: Instant) {
        self.finished = Some(at);
    }
}

impl Drop for BusyOwned {
    fn drop(&mut self) {
        let activity = &self.activity;
        let at = self.finished.unwrap_or_else(Instant::now);
        let idle_since = at.saturating_duration_since(activity.epoch).as_millis() as u64;
        activity.idle_since_ms.store(idle_since, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's socket, telling [`Activity`] when a request's first bytes
/// arrive and when writes block, and giving hyper's own error replies a
/// JSON body (see [`json_error_for`]).
struct Tracked {
    stream: Stream,
    activity: Arc<Activity>,
    /// A replacement reply being written, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl Tracked {
    /// Writes `buf`, or the JSON reply that replaces it when it is one of
    /// hyper's empty error replies; hyper is told its bytes were written.
    fn write_or_replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none()
            && let Some(reply) = json_error_for(buf)
        {
            self.replacing = Some((reply, 0));
        }
        let Some((reply, written)) = self.replacing.as_mut() else {
            return Pin::new(&mut self.stream).poll_write(cx, buf);
        };
        while *written < reply.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &reply[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.replacing = None;
        Poll::Ready(Ok(buf.len()))
    }
}

/// hyper answers some malformed requests itself (a URI or headers too
/// large, a request that is not HTTP) with an empty body and closes the
/// connection. Every other error reply has a JSON body naming the
/// problem, so those get one too: `head` is recognised as such a reply by
/// its 4xx/5xx status with `content-length: 0`, which no handler sends.
fn json_error_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if !head.ends_with(b"\r\n\r\n")
        || !head
            .windows(18)
            .any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r"))
    {
        return None;
    }
    let status = std::str::from_utf8(rest.get(..3)?).ok()?;
    let (reason, message) = match status {
        "400" => (
            "Bad Request",
            "malformed HTTP request: the request line or headers could not be parsed",
        ),
        "414" => (
            "URI Too Long",
            "the request URI is too long; shorten it or send the data in the body",
        ),
        "431" => (
            "Request Header Fields Too Large",
            "the request headers are too large or too many (at most 100 headers and about 400 KB)",
        ),
        "505" => (
            "HTTP Version Not Supported",
            "HTTP version not supported; use HTTP/1.1",
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&crate::api::ErrorReply {
        error: message.to_owned(),
    })
    .ok()?;
    let mut reply = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    Some(reply)
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.write_or_replace(cx, buf);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's error replies are a head alone, in one slice; look at
        // the slices without allocating (this is every reply's path).
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let only = match (nonempty.next(), nonempty.next()) {
            (Some(only), None)
                if self.replacing.is_some()
                    || only.starts_with(b"HTTP/1.1 4")
                    || only.starts_with(b"HTTP/1.1 5") =>
            {
                Some(&**only)
            }
            _ => None,
        };
        let polled = match only {
            Some(only) => self.write_or_replace(cx, only),
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
        };
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_replies_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 14:11:54 GMT\r\n\r\n";
        let reply = String::from_utf8(json_error_for(hyper_431).unwrap()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
        assert!(reply.ends_with("\"}"), "{reply}");
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(json_error_for(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(json_error_for(ok), None);
        assert_eq!(json_error_for(b"{\"value\":1}"), None);
    }
}
