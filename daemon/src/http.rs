//! The HTTP edge: accept loop, connection limits and timeouts, routing, and
//! the handlers of `POST /detect` and `GET /anomalies`.
//!
//! Handlers never return an error to hyper: every failure becomes a JSON
//! `{"error": "..."}` reply with the right status, because an `Err` from the
//! service would end the connection instead of answering. Bodies are read
//! with a hard size cap, and the number of connections is capped by a
//! semaphore permit taken before `accept`.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{
    self, AnomalyRecord, BatchReply, DataPoint, ErrorReply, PointErrorKind, PointReply, STATUS_OK,
};
use crate::app::AppState;
use crate::detector::{Direction, Verdict};
use crate::metrics::Route;
use crate::store::Query;

/// The body type of every response.
pub type ResponseBody = Full<Bytes>;

/// How a `/detect` body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFormat {
    Json,
    Ndjson,
}

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
        // Take the permit before accepting, so excess clients wait in the
        // kernel's backlog instead of holding a socket here.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let server = state.config().server.clone();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .keep_alive(true);
        let activity = Arc::new(Activity::new());
        let service = {
            let state = state.clone();
            let activity = activity.clone();
            service_fn(move |req| {
                let state = state.clone();
                let busy = activity.begin();
                async move {
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
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        // A watchdog task asks the connection to close on shutdown or after
        // `idle_timeout` without a request. It runs apart so that the
        // connection task, woken several times per request, polls one
        // cheap `Notified` instead of a timer and the shutdown token.
        let close = Arc::new(Notify::new());
        let watchdog = {
            let close = close.clone();
            let shutdown = shutdown.clone();
            let idle_timeout = server.idle_timeout;
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = activity.idle_for(idle_timeout) => {}
                }
                close.notify_one();
            })
        };
        connections.spawn(async move {
            let _permit = permit;
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
        });
    }
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

    fn begin(self: &Arc<Self>) -> BusyOwned {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        BusyOwned {
            activity: self.clone(),
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

/// Routes one request. Unknown paths get 404, known paths with the wrong
/// method 405 with an `Allow` header.
pub async fn route(req: Request<Incoming>, state: &AppState) -> Response<ResponseBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/detect") => detect(req, state).await,
        (_, "/detect") => method_not_allowed("POST"),
        (&Method::GET | &Method::HEAD, "/anomalies") => anomalies(req.uri().query(), state),
        (_, "/anomalies") => method_not_allowed("GET, HEAD"),
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(state),
        (&Method::GET | &Method::HEAD, "/healthz") => healthz(state),
        (&Method::GET | &Method::HEAD, "/ready") => ready(state),
        (_, "/metrics" | "/healthz" | "/ready") => method_not_allowed("GET, HEAD"),
        (_, path) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint `{path}`; try POST /detect, GET /anomalies, /metrics, /healthz or /ready"
            ),
        ),
    }
}

/// `POST /detect`.
async fn detect(req: Request<Incoming>, state: &AppState) -> Response<ResponseBody> {
    let config = state.config();
    let max_body = config.server.max_body_bytes;
    let format = match body_format(req.headers()) {
        Ok(format) => format,
        Err(content_type) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type `{content_type}`: send `application/json` (an object or an array of objects) or `application/x-ndjson` (one object per line)"
                ),
            );
        }
    };
    // hyper has parsed Content-Length already: the body's exact size hint.
    if let Some(length) = req.body().size_hint().exact()
        && length > max_body as u64
    {
        return too_large(max_body);
    }
    let body = match read_body(req.into_body(), max_body, config.server.idle_timeout).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body".into(),
            );
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(max_body);
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
        Ok(Ok(body)) => body,
    };
    let single =
        format == BodyFormat::Json && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if single {
        detect_point(&body, state).await
    } else {
        detect_batch(&body, format, state).await
    }
}

/// The error reply for a body that does not parse.
fn parse_error(e: api::PointError) -> Response<ResponseBody> {
    let status = match e.kind {
        PointErrorKind::Malformed => StatusCode::BAD_REQUEST,
        PointErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, e.message)
}

/// `POST /detect` with one JSON object: no vectors, one lock.
async fn detect_point(body: &[u8], state: &AppState) -> Response<ResponseBody> {
    let point = match api::parse_json_object(body) {
        Ok(point) => point,
        Err(e) => return parse_error(e),
    };
    if let Err(message) = api::validate_point(&point) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let observation = match state.table.observe_point(&point) {
        Ok(observation) => observation,
        Err(e) => return error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    state.metrics.points.fetch_add(1, Ordering::Relaxed);
    if observation.duplicate {
        state.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    // The clock is read only for an anomaly without a timestamp.
    let record = matches!(observation.verdict, Verdict::Anomaly(..))
        .then(|| observation.record(&point, point.timestamp.unwrap_or_else(unix_now)))
        .flatten();
    let logged = match record {
        Some(record) => state.record_anomalies(std::slice::from_ref(&record)).await,
        None => true,
    };
    let reply = point_reply(&point, &observation, logged).to_json();
    json_bytes(StatusCode::OK, reply)
}

/// `POST /detect` with a JSON array or NDJSON: applied whole or not at all.
async fn detect_batch(body: &[u8], format: BodyFormat, state: &AppState) -> Response<ResponseBody> {
    let parsed = match format {
        BodyFormat::Json => api::parse_json_body(body),
        BodyFormat::Ndjson => api::parse_ndjson_body(body),
    };
    let points = match parsed {
        Ok(points) => points,
        Err(e) => return parse_error(e),
    };
    if let Err(e) = api::validate_all(&points, true, format == BodyFormat::Ndjson) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, e.message);
    }
    let observations = match state.table.observe_batch(&points) {
        Ok(observations) => observations,
        Err(e) => return error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    state
        .metrics
        .points
        .fetch_add(points.len() as u64, Ordering::Relaxed);
    // Read the clock once per request, and only if a record needs it.
    let mut now = None;
    let records: Vec<AnomalyRecord> = points
        .iter()
        .zip(&observations)
        .filter(|(_, obs)| matches!(obs.verdict, Verdict::Anomaly(..)))
        .filter_map(|(point, obs)| {
            let timestamp = point
                .timestamp
                .unwrap_or_else(|| *now.get_or_insert_with(unix_now));
            obs.record(point, timestamp)
        })
        .collect();
    let logged = state.record_anomalies(&records).await;
    let duplicates = observations.iter().filter(|o| o.duplicate).count();
    state
        .metrics
        .duplicates
        .fetch_add(duplicates as u64, Ordering::Relaxed);
    json(
        StatusCode::OK,
        &BatchReply {
            status: STATUS_OK.into(),
            received: points.len(),
            duplicates,
            anomalies: records,
            logged,
        },
    )
}

fn point_reply(
    point: &DataPoint<'_>,
    obs: &crate::series::Observation,
    logged: bool,
) -> PointReply {
    let baseline = match obs.verdict {
        Verdict::Normal(b) | Verdict::Anomaly(b, _) if !obs.duplicate => Some(b),
        _ => None,
    };
    let shows_lower = matches!(obs.direction, Direction::Lower | Direction::Both);
    PointReply {
        status: STATUS_OK.into(),
        series: point.series.to_string(),
        duplicate: obs.duplicate,
        warming_up: !obs.duplicate && matches!(obs.verdict, Verdict::WarmingUp { .. }),
        anomaly: !obs.duplicate && matches!(obs.verdict, Verdict::Anomaly(..)),
        mean: baseline.map(|b| b.mean),
        std_dev: baseline.map(|b| b.std_dev),
        threshold: baseline.map(|b| b.threshold),
        lower_threshold: if shows_lower {
            baseline.map(|b| b.lower_threshold)
        } else {
            None
        },
        logged,
    }
}

/// `GET /metrics`: Prometheus text format 0.0.4.
fn metrics(state: &AppState) -> Response<ResponseBody> {
    let text = state.metrics.render(&state.snapshot());
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Body of `/healthz` and `/ready`.
#[derive(Serialize)]
struct HealthReply {
    status: &'static str,
    /// `/healthz`: what is wrong but does not stop serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
    /// `/ready`: why the daemon is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<String>>,
}

/// `GET /healthz`: liveness. 200 while serving; lists any warnings.
fn healthz(state: &AppState) -> Response<ResponseBody> {
    json(
        StatusCode::OK,
        &HealthReply {
            status: "ok",
            warnings: Some(state.problems()),
            reasons: None,
        },
    )
}

/// `GET /ready`: 503 with the reasons while the anomaly log cannot be
/// written or the last reload failed.
fn ready(state: &AppState) -> Response<ResponseBody> {
    let problems = state.problems();
    if problems.is_empty() {
        json(
            StatusCode::OK,
            &HealthReply {
                status: "ready",
                warnings: None,
                reasons: None,
            },
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &HealthReply {
                status: "not ready",
                warnings: None,
                reasons: Some(problems),
            },
        )
    }
}

/// `GET /anomalies?limit=&series=&since=`.
fn anomalies(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    match parse_anomalies_query(query.unwrap_or("")) {
        Ok(q) => json(StatusCode::OK, &state.recent.query(&q)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// Parses the query string of `GET /anomalies`.
pub fn parse_anomalies_query(raw: &str) -> Result<Query, String> {
    let mut query = Query::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)
            .ok_or_else(|| format!("query parameter `{key}` is not valid percent-encoded UTF-8"))?;
        let value = percent_decode(value).ok_or_else(|| {
            format!("query parameter `{key}`: value is not valid percent-encoded UTF-8")
        })?;
        match key.as_str() {
            "limit" => {
                query.limit = Some(value.parse::<usize>().map_err(|_| {
                    format!(
                        "query parameter `limit`: expected a non-negative integer, got `{value}`"
                    )
                })?);
            }
            "series" => query.series = Some(value),
            "since" => {
                let since = value.parse::<f64>().ok().filter(|t| t.is_finite()).ok_or_else(|| {
                    format!("query parameter `since`: expected unix seconds (a number), got `{value}`")
                })?;
                query.since = Some(since);
            }
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `limit`, `series` or `since`"
                ));
            }
        }
    }
    Ok(query)
}

/// Decodes `%XX` escapes and `+` (as space) in a query component.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The body format named by the `Content-Type` header, or the unsupported
/// header text.
fn body_format(headers: &HeaderMap) -> Result<BodyFormat, String> {
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

/// Reads a whole body of at most `max` bytes, within `timeout`. A body
/// that has already arrived (the usual small request) is taken without
/// arming a timer.
async fn read_body(
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Result<Bytes, BoxError>, tokio::time::error::Elapsed> {
    let mut body = Limited::new(body, max);
    let mut first: Option<Bytes> = None;
    loop {
        // Poll once without waiting: Ready(frame) or Pending.
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut body).poll_frame(cx))
        })
        .await;
        match polled {
            std::task::Poll::Ready(None) => return Ok(Ok(first.unwrap_or_default())),
            std::task::Poll::Ready(Some(Err(e))) => return Ok(Err(e)),
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
                return rest_of_body(body, buf, timeout).await;
            }
            std::task::Poll::Pending => {
                let buf = first.take().map(Vec::from).unwrap_or_default();
                return rest_of_body(body, buf, timeout).await;
            }
        }
    }
}

/// The rest of a body after `buf`, within `timeout`.
async fn rest_of_body(
    body: Limited<Incoming>,
    mut buf: Vec<u8>,
    timeout: Duration,
) -> Result<Result<Bytes, BoxError>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, async move {
        let rest = body.collect().await?.to_bytes();
        buf.extend_from_slice(&rest);
        Ok(Bytes::from(buf))
    })
    .await
}

/// The error type of a size-limited body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn too_large(max: usize) -> Response<ResponseBody> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is larger than {max} bytes ([server] max_body_bytes); split it into smaller batches"
        ),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
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
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The server's clock as unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_anomaly_queries() {
        let q = parse_anomalies_query("limit=5&series=cpu%2Ehost+1&since=10.5").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.series.as_deref(), Some("cpu.host 1"));
        assert_eq!(q.since, Some(10.5));
        assert!(parse_anomalies_query("").unwrap() == Query::default());
        assert!(
            parse_anomalies_query("limit=-1")
                .unwrap_err()
                .contains("`limit`")
        );
        assert!(
            parse_anomalies_query("since=x")
                .unwrap_err()
                .contains("`since`")
        );
        assert!(
            parse_anomalies_query("foo=1")
                .unwrap_err()
                .contains("`foo`")
        );
        assert!(parse_anomalies_query("series=%zz").is_err());
    }

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
