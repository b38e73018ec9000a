//! The accept loop: the connection cap, per-connection timeouts, the idle
//! watchdog, and the drain on shutdown.
//!
//! The number of connections is capped by a semaphore permit taken before
//! `accept`, so excess clients wait in the kernel's backlog instead of
//! holding a socket here.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reply::ResponseBody;
use super::router::route;
use crate::metrics::Route;
use crate::state::AppState;

/// Accepts connections on `listener` and serves them until `shutdown` is
/// cancelled; then stops accepting and returns. In-flight connections are
/// told to finish and are tracked by `connections`, which the caller drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    // max_connections is fixed for the process's life; the timeouts are
    // read per connection, so a reload changes them for new connections.
    let permits = Arc::new(Semaphore::new(state.config().server.max_connections));
    loop {
        // Take the permit before accepting (see the module documentation).
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        connections.spawn(serve_connection(
            stream,
            state.clone(),
            permit,
            shutdown.clone(),
        ));
    }
}

/// Serves one connection until the client closes it, it is idle for
/// `idle_timeout`, or `shutdown` asks it to finish its request and close.
async fn serve_connection(
    stream: TcpStream,
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let server = state.config().server.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true);
    let activity = Arc::new(Activity::new());
    let conn = builder.serve_connection(
        TokioIo::new(stream),
        service_fn({
            let activity = activity.clone();
            move |req| handle(req, state.clone(), activity.clone())
        }),
    );
    // A watchdog task asks the connection to close on shutdown or after
    // `idle_timeout` without a request. It runs apart so that the
    // connection task, woken several times per request, polls one cheap
    // `Notified` instead of a timer and the shutdown token.
    let close = Arc::new(Notify::new());
    let watchdog = {
        let close = close.clone();
        let idle_timeout = server.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = activity.idle_for(idle_timeout) => {}
            }
            close.notify_one();
        })
    };
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = close.notified() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    watchdog.abort();
    if let Err(e) = result {
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
}

/// Answers one request, with its metrics and the connection's activity.
async fn handle(
    req: Request<Incoming>,
    state: Arc<AppState>,
    activity: Arc<Activity>,
) -> Result<Response<ResponseBody>, Infallible> {
    let busy = activity.begin();
    let started = Instant::now();
    let route_label = Route::of(req.uri().path());
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = route(req, &state).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let finished = Instant::now();
    state.metrics.request(
        route_label,
        response.status().as_u16(),
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

/// Tracks whether a connection has a request in flight and when it last
/// finished one, for the keep-alive idle timeout.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    fn begin(self: Arc<Self>) -> BusyOwned {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        BusyOwned {
            activity: self,
            finished: None,
        }
    }

    /// Resolves once the connection has been idle for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            let deadline = self.epoch + idle_since + timeout;
            tokio::time::sleep_until(deadline.into()).await;
            let still_idle_since =
                Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            if self.in_flight.load(Ordering::Acquire) == 0 && still_idle_since == idle_since {
                return;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Check again one timeout after the request started; the
                // request itself is bounded by the body read timeout.
                tokio::time::sleep(timeout).await;
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
