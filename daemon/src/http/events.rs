//! `GET /events`: the dashboard's live updates as server-sent events, and
//! the publisher of the events every stream shares.
//!
//! Each event is `event: NAME` and one `data:` line of JSON:
//! - `anomalies` `{"anomalies": [records], "skipped": n}`: anomalies new
//!   since the last one, every 250 ms when there are any (the newest 200;
//!   the rest are counted in `skipped`). Shared.
//! - `series` `[summaries]`: the series updated in the last second, as
//!   `GET /series` shows them, once a second (at most 1000). Shared.
//! - `points` `{"series": name, "points": [...]}`: new points of the series
//!   named by `?series=`, as `GET /series/{name}` shows them, every 250 ms
//!   when there are any. Per stream.
//! - `lagged` `{"skipped": n}`: this stream fell behind (the client reads
//!   too slowly) and lost `n` events; re-read the state from the JSON
//!   endpoints. A slow client costs the daemon nothing else.
//!
//! A comment line every 15 s keeps proxies from closing an idle stream, and
//! `retry: 1000` asks the browser to reconnect after a second when the
//! daemon restarts. Streams end at once on shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::query::parse_events_query;
use super::reply::{ResponseBody, StreamedBody, error};
use crate::api::AnomalyRecord;
use crate::live::Subscription;
use crate::series::query::HistoryView;
use crate::state::AppState;

/// How often new anomalies and a stream's new points are sent.
const TICK: Duration = Duration::from_millis(250);
/// How often the updated series are sent, in ticks.
const SERIES_EVERY: u64 = 4;
/// Most anomaly records in one event: what the dashboard keeps. At a high
/// anomaly rate the rest are counted, not sent ten times a second to every
/// watcher.
const MAX_ANOMALIES: usize = 200;
/// Most series in one event.
const MAX_SERIES: usize = 1000;
/// Chunks a stream holds for a client that has not read them yet.
const STREAM_BUFFER: usize = 16;
/// Interval of the keep-alive comment.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /events[?series=NAME]`.
pub(super) fn events(query: Option<&str>, state: &Arc<AppState>) -> Response<ResponseBody> {
    let series = match parse_events_query(query.unwrap_or("")) {
        Ok(series) => series,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let max = state.config().server.max_event_streams;
    let Some(subscription) = state.live.subscribe(max) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event streams: {max} are open ([server] max_event_streams), or the daemon is shutting down; retry later"
            ),
        );
    };
    let (sender, chunks) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(stream(state.clone(), subscription, series, sender));
    let mut response = Response::new(ResponseBody::Right(StreamedBody::new(chunks)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// One event in the SSE wire format.
fn sse<T: Serialize + ?Sized>(event: &str, data: &T) -> Bytes {
    let mut out = format!("event: {event}\ndata: ").into_bytes();
    // Records, summaries and history points always serialise.
    serde_json::to_writer(&mut out, data).expect("events serialise");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The chunks of one stream, and what it lost while its client was slow.
struct Outbox {
    sender: mpsc::Sender<Bytes>,
    skipped: u64,
}

impl Outbox {
    /// Queues `chunk`, or counts it as lost when the client is behind.
    fn send(&mut self, chunk: Bytes) {
        self.tell_lag();
        if self.skipped > 0 || self.sender.try_send(chunk).is_err() {
            self.skipped += 1;
        }
    }

    /// Tells a client that lost events, once there is room for it.
    fn tell_lag(&mut self) {
        #[derive(Serialize)]
        struct Lagged {
            skipped: u64,
        }
        if self.skipped > 0 {
            let event = sse(
                "lagged",
                &Lagged {
                    skipped: self.skipped,
                },
            );
            if self.sender.try_send(event).is_ok() {
                self.skipped = 0;
            }
        }
    }
}

/// Runs one stream until the client goes, or the daemon shuts down.
async fn stream(
    state: Arc<AppState>,
    mut subscription: Subscription,
    series: Option<String>,
    sender: mpsc::Sender<Bytes>,
) {
    let mut out = Outbox { sender, skipped: 0 };
    out.send(Bytes::from_static(b"retry: 1000\n\n"));
    // The series shown keeps (or gets) a history while it is watched.
    if let Some(name) = &series {
        state.table.watch(name);
    }
    run_stream(&state, &mut subscription, series.as_deref(), &mut out).await;
    if let Some(name) = &series {
        state.table.unwatch(name);
    }
}

/// The loop of [`stream`].
async fn run_stream(
    state: &AppState,
    subscription: &mut Subscription,
    series: Option<&str>,
    out: &mut Outbox,
) {
    #[derive(Serialize)]
    struct Points<'a> {
        series: &'a str,
        points: Vec<HistoryView>,
    }
    // The page reads the history so far from GET /series/{name}.
    let mut cursor = series
        .and_then(|name| state.table.history_after(name, u64::MAX))
        .map_or(0, |(_, cursor)| cursor);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let closed = subscription.closed.clone();
    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            () = out.sender.closed() => return,
            event = subscription.events.recv() => match event {
                Ok(chunk) => out.send(chunk),
                Err(RecvError::Lagged(lost)) => out.skipped += lost,
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick(), if series.is_some() => {
                let name = series.unwrap_or_default();
                if let Some((points, next)) = state.table.history_after(name, cursor) {
                    cursor = next;
                    if !points.is_empty() {
                        out.send(sse("points", &Points { series: name, points }));
                    }
                }
            }
            _ = keepalive.tick() => out.send(Bytes::from_static(b": keep-alive\n\n")),
        }
        out.tell_lag();
    }
}

/// Publishes the events every stream shares until `stop`: new anomalies
/// every tick, the updated series every second. Does nothing while no
/// stream is open.
pub async fn publish(state: Arc<AppState>, stop: CancellationToken) {
    #[derive(Serialize)]
    struct Anomalies {
        anomalies: Vec<AnomalyRecord>,
        skipped: u64,
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut cursor = state.recent.cursor();
    let mut since = state.table.clock();
    for n in 1u64.. {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if state.live.streams() == 0 {
            cursor = state.recent.cursor();
            since = state.table.clock();
            continue;
        }
        let (anomalies, next, skipped) = state.recent.newer_than(cursor, MAX_ANOMALIES);
        cursor = next;
        if !anomalies.is_empty() || skipped > 0 {
            let event = sse("anomalies", &Anomalies { anomalies, skipped });
            state.live.publish(event);
        }
        if n % SERIES_EVERY == 0 {
            let now = state.table.clock();
            let updated = state.table.updated_since(since, MAX_SERIES);
            since = now;
            if !updated.is_empty() {
                state.live.publish(sse("series", &updated));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_client_loses_chunks_and_is_told_how_many() {
        let (sender, mut chunks) = mpsc::channel(2);
        let mut out = Outbox { sender, skipped: 0 };
        for i in 0..5 {
            out.send(Bytes::from(format!("{i}")));
        }
        assert_eq!(out.skipped, 3);
        assert_eq!(chunks.try_recv().unwrap(), "0");
        // Room for one: the lag report goes first, the next chunk is lost.
        out.send(Bytes::from("5"));
        assert_eq!(chunks.try_recv().unwrap(), "1");
        let lagged = chunks.try_recv().unwrap();
        assert_eq!(lagged, "event: lagged\ndata: {\"skipped\":3}\n\n");
        assert_eq!(out.skipped, 1);
        out.tell_lag();
        assert_eq!(
            chunks.try_recv().unwrap(),
            "event: lagged\ndata: {\"skipped\":1}\n\n"
        );
        out.send(Bytes::from("6"));
        assert_eq!(chunks.try_recv().unwrap(), "6", "caught up");
    }
}
