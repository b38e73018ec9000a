//! The daemon's Prometheus metrics: counters, gauges and histograms updated
//! lock-free on the request path, rendered on `GET /metrics` in the text
//! exposition format 0.0.4 (the one `promtool check metrics` accepts).
//!
//! Labels are bounded by construction: routes, statuses, reasons and
//! directions are enums here, never series names.
//!
//! Why a writer of our own: a format rule. `prometheus-client` writes
//! OpenMetrics, which Debian 12's `promtool check metrics` rejects; the
//! 0.0.4 text format is a few lines per family, written here.

mod cluster;
mod snapshots;

pub use snapshots::SnapshotStats;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::detect::Side;
use crate::ingest::{SkipReason, Skipped};
use crate::series::{EpisodeCounts, TableStats};

/// Upper bounds (seconds) of the request duration buckets.
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Upper bounds (seconds) of the fsync duration buckets.
const FSYNC_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A cumulative histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (non-cumulative) counts; the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let index = self.bounds.partition_point(|&bound| bound < secs);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples; `labels` is
    /// either empty or `key="value",` pairs each ending with a comma.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The route of a request, as the `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/detect`.
    Detect,
    /// `/anomalies`.
    Anomalies,
    /// `/episodes`.
    Episodes,
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Healthz,
    /// `/ready`.
    Ready,
    /// `/series` and `/series/{name}`.
    Series,
    /// `/events` (the time to open the stream).
    Events,
    /// `/`, the dashboard page.
    Dashboard,
    /// `/api/v1/write` (Prometheus remote-write).
    RemoteWrite,
    /// `/api/v2/write` (Influx line protocol, v2 API).
    InfluxV2,
    /// `/write` (Influx line protocol, v1 API).
    InfluxV1,
    /// `/login` (the dashboard's token form).
    Login,
    /// `/logout` (the dashboard's Sign out).
    Logout,
    /// `/cluster` (the cluster's members and partitions).
    Cluster,
    /// Any other path (answered 404).
    Other,
}

impl Route {
    const ALL: [Route; 16] = [
        Route::Detect,
        Route::Anomalies,
        Route::Episodes,
        Route::Metrics,
        Route::Healthz,
        Route::Ready,
        Route::Series,
        Route::Events,
        Route::Dashboard,
        Route::RemoteWrite,
        Route::InfluxV2,
        Route::InfluxV1,
        Route::Login,
        Route::Logout,
        Route::Cluster,
        Route::Other,
    ];

    /// The route serving `path`.
    pub fn of(path: &str) -> Route {
        match path {
            "/detect" => Route::Detect,
            "/anomalies" => Route::Anomalies,
            "/episodes" => Route::Episodes,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/ready" => Route::Ready,
            "/series" => Route::Series,
            "/events" => Route::Events,
            "/" | "/index.html" | "/dashboard.css" | "/dashboard.js" => Route::Dashboard,
            "/api/v1/write" => Route::RemoteWrite,
            "/api/v2/write" => Route::InfluxV2,
            "/write" => Route::InfluxV1,
            "/login" => Route::Login,
            "/logout" => Route::Logout,
            "/cluster" => Route::Cluster,
            _ if path.starts_with("/series/") => Route::Series,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Detect => "/detect",
            Route::Anomalies => "/anomalies",
            Route::Episodes => "/episodes",
            Route::Metrics => "/metrics",
            Route::Healthz => "/healthz",
            Route::Ready => "/ready",
            Route::Series => "/series",
            Route::Events => "/events",
            Route::Dashboard => "/",
            Route::RemoteWrite => "/api/v1/write",
            Route::InfluxV2 => "/api/v2/write",
            Route::InfluxV1 => "/write",
            Route::Login => "/login",
            Route::Logout => "/logout",
            Route::Cluster => "/cluster",
            Route::Other => "other",
        }
    }
}

/// The format points arrived in, as the `format` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON or NDJSON on `POST /detect`.
    Detect,
    /// Prometheus remote-write on `POST /api/v1/write`.
    RemoteWrite,
    /// Influx line protocol on `POST /api/v2/write` and `POST /write`.
    Influx,
}

impl Format {
    const ALL: [Format; 3] = [Format::Detect, Format::RemoteWrite, Format::Influx];

    fn label(self) -> &'static str {
        match self {
            Format::Detect => "detect",
            Format::RemoteWrite => "remote_write",
            Format::Influx => "influx",
        }
    }
}

/// Why a request was refused, as the `reason` label; derived from the
/// status code of the error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// 400: malformed JSON or an unreadable body or query.
    Malformed,
    /// 408: the body did not arrive in time.
    Timeout,
    /// 404: no such endpoint.
    NotFound,
    /// 405: wrong method.
    MethodNotAllowed,
    /// 413: body over `max_body_bytes`.
    TooLarge,
    /// 415: unsupported `Content-Type`.
    UnsupportedMediaType,
    /// 422: a field is missing, of the wrong type or out of range.
    Invalid,
    /// 429: `max_series` reached.
    TooManySeries,
    /// 401: no token, or a wrong one.
    Unauthorized,
    /// 429: the client is over `[server] rate_limit` (marked on the
    /// reply, since 429 alone is `TooManySeries`).
    RateLimited,
}

impl BadRequest {
    const ALL: [BadRequest; 10] = [
        BadRequest::Malformed,
        BadRequest::Timeout,
        BadRequest::NotFound,
        BadRequest::MethodNotAllowed,
        BadRequest::TooLarge,
        BadRequest::UnsupportedMediaType,
        BadRequest::Invalid,
        BadRequest::TooManySeries,
        BadRequest::Unauthorized,
        BadRequest::RateLimited,
    ];

    /// The reason of an error reply with status `status`, if it is one.
    pub fn from_status(status: u16) -> Option<BadRequest> {
        Some(match status {
            400 => BadRequest::Malformed,
            401 => BadRequest::Unauthorized,
            404 => BadRequest::NotFound,
            405 => BadRequest::MethodNotAllowed,
            408 => BadRequest::Timeout,
            413 => BadRequest::TooLarge,
            415 => BadRequest::UnsupportedMediaType,
            422 => BadRequest::Invalid,
            429 => BadRequest::TooManySeries,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            BadRequest::Malformed => "malformed",
            BadRequest::Timeout => "timeout",
            BadRequest::NotFound => "not_found",
            BadRequest::MethodNotAllowed => "method_not_allowed",
            BadRequest::TooLarge => "too_large",
            BadRequest::UnsupportedMediaType => "unsupported_media_type",
            BadRequest::Invalid => "invalid",
            BadRequest::TooManySeries => "too_many_series",
            BadRequest::Unauthorized => "unauthorized",
            BadRequest::RateLimited => "rate_limited",
        }
    }
}

/// Counters of the anomaly log writer, shared with its thread.
#[derive(Debug)]
pub struct LogStats {
    /// Failed writes (each failure, not each episode).
    pub write_errors: AtomicU64,
    /// Lines waiting in the in-memory backlog.
    pub backlog: AtomicU64,
    /// Lines dropped because the backlog was full.
    pub dropped: AtomicU64,
    /// Lines written to the file.
    pub lines_written: AtomicU64,
    /// Rotations done (SIGHUP).
    pub rotations: AtomicU64,
    /// Whether the log currently cannot be written.
    pub failing: AtomicBool,
    /// Duration of each `fdatasync`.
    pub fsync_seconds: Histogram,
}

impl Default for LogStats {
    fn default() -> Self {
        LogStats {
            write_errors: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lines_written: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            fsync_seconds: Histogram::new(FSYNC_BUCKETS),
        }
    }
}

/// Every metric of the daemon except the ones computed at scrape time.
#[derive(Debug)]
pub struct Metrics {
    /// Points accepted (duplicates included), by format.
    points: [AtomicU64; Format::ALL.len()],
    /// Points skipped as duplicates, by format.
    duplicates: [AtomicU64; Format::ALL.len()],
    /// Samples skipped (not points), by format and reason.
    skipped: [[AtomicU64; SkipReason::ALL.len()]; Format::ALL.len()],
    /// Points of requests refused by `[server] rate_limit`.
    rate_limited_points: AtomicU64,
    /// Requests being handled right now.
    pub in_flight: AtomicU64,
    anomalies: [AtomicU64; 2],
    bad_requests: [AtomicU64; BadRequest::ALL.len()],
    request_seconds: [Histogram; Route::ALL.len()],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_ok: AtomicBool,
    /// Unix seconds of the last successful (re)load, as `f64` bits.
    last_reload_success: AtomicU64,
    /// The anomaly log writer's counters.
    pub log: std::sync::Arc<LogStats>,
    /// The state snapshot writer's counters.
    pub snapshots: SnapshotStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            points: Default::default(),
            duplicates: Default::default(),
            skipped: Default::default(),
            rate_limited_points: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            anomalies: Default::default(),
            bad_requests: Default::default(),
            request_seconds: Route::ALL.map(|_| Histogram::new(REQUEST_BUCKETS)),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_ok: AtomicBool::new(true),
            last_reload_success: AtomicU64::new(0f64.to_bits()),
            log: Default::default(),
            snapshots: SnapshotStats::default(),
        }
    }
}

/// Values read at scrape time from other parts of the daemon.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Series held and warming up.
    pub table: TableStats,
    /// Episodes opened, closed and open.
    pub episodes: EpisodeCounts,
    /// Anomalies suppressed from the journal by the rate limit.
    pub journal_suppressed: u64,
    /// Open `GET /events` streams.
    pub event_streams: usize,
    /// The alert sinks' counters.
    pub sinks: Vec<crate::alert::worker::SinkSnapshot>,
    /// Whether state snapshots are on (`[state] directory`): their
    /// families are shown only then.
    pub snapshots_enabled: bool,
    /// This daemon as a cluster member, if it is one.
    pub cluster: Option<std::sync::Arc<crate::cluster::Member>>,
}

impl Metrics {
    /// Metrics of a daemon whose configuration was loaded at `loaded_at`
    /// (unix seconds).
    pub fn new(loaded_at: f64) -> Self {
        let metrics = Metrics::default();
        metrics
            .last_reload_success
            .store(loaded_at.to_bits(), Ordering::Relaxed);
        metrics
    }

    /// Counts `points` points accepted in `format`, `duplicates` of them
    /// not applied again.
    pub fn points(&self, format: Format, points: u64, duplicates: u64) {
        self.points[format as usize].fetch_add(points, Ordering::Relaxed);
        if duplicates > 0 {
            self.duplicates[format as usize].fetch_add(duplicates, Ordering::Relaxed);
        }
    }

    /// Counts the points of a request refused by `[server] rate_limit`.
    pub fn rate_limited(&self, points: u64) {
        self.rate_limited_points
            .fetch_add(points, Ordering::Relaxed);
    }

    /// Counts the samples of a `format` request that were skipped.
    pub fn skipped(&self, format: Format, skipped: &Skipped) {
        for (count, &n) in self.skipped[format as usize].iter().zip(&skipped.counts) {
            if n > 0 {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Points accepted in every format.
    pub fn points_total(&self) -> u64 {
        self.points.iter().map(|p| p.load(Ordering::Relaxed)).sum()
    }

    /// Counts one anomaly that crossed `side`.
    pub fn anomaly(&self, side: Side) {
        let index = match side {
            Side::Upper => 0,
            Side::Lower => 1,
        };
        self.anomalies[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Total anomalies found.
    pub fn anomalies_total(&self) -> u64 {
        self.anomalies
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Records a finished request; `reason` overrides the reason its
    /// `status` implies.
    pub fn request(
        &self,
        route: Route,
        status: u16,
        reason: Option<BadRequest>,
        elapsed: Duration,
    ) {
        // `ALL` lists each enum in declaration order (tested), so the
        // discriminant is the index.
        self.request_seconds[route as usize].observe(elapsed);
        if let Some(reason) = reason.or_else(|| BadRequest::from_status(status)) {
            self.bad_requests[reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the outcome of a reload attempt at `now` (unix seconds).
    pub fn reload(&self, ok: bool, now: f64) {
        self.last_reload_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            self.last_reload_success
                .store(now.to_bits(), Ordering::Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the last reload attempt succeeded (true before any).
    pub fn last_reload_ok(&self) -> bool {
        self.last_reload_ok.load(Ordering::Relaxed)
    }

    /// Unix seconds of the last successful configuration load.
    pub fn last_reload_success(&self) -> f64 {
        f64::from_bits(self.last_reload_success.load(Ordering::Relaxed))
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(8192);
        render_build_info(&mut out);
        crate::process::ProcessStats::read().render(&mut out);
        self.render_points(&mut out, snapshot);
        self.render_anomaly_log(&mut out, snapshot);
        self.render_reloads(&mut out);
        self.render_http(&mut out, snapshot);
        render_sinks(&mut out, &snapshot.sinks);
        if snapshot.snapshots_enabled {
            self.snapshots.render(&mut out);
        }
        if let Some(member) = &snapshot.cluster {
            cluster::render(&mut out, member, crate::clock::unix_now());
        }
        out
    }

    /// Points, anomalies, refused requests and series.
    fn render_points(&self, out: &mut String, snapshot: &Snapshot) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "anomalyd_points_received_total",
            "counter",
            "Data points accepted, duplicates included, by the format they came in.",
        );
        for (format, count) in Format::ALL.iter().zip(&self.points) {
            let _ = writeln!(
                out,
                "anomalyd_points_received_total{{format=\"{}\"}} {}",
                format.label(),
                load(count)
            );
        }
        header(
            out,
            "anomalyd_points_duplicate_total",
            "counter",
            "Points not applied again: a seq already applied (detect), or a timestamp not after the series' last one (remote_write, influx).",
        );
        for (format, count) in Format::ALL.iter().zip(&self.duplicates) {
            let _ = writeln!(
                out,
                "anomalyd_points_duplicate_total{{format=\"{}\"}} {}",
                format.label(),
                load(count)
            );
        }
        header(
            out,
            "anomalyd_samples_skipped_total",
            "counter",
            "Samples of remote-write and line protocol that were not points, by format and reason.",
        );
        for format in [Format::RemoteWrite, Format::Influx] {
            for (reason, count) in SkipReason::ALL.iter().zip(&self.skipped[format as usize]) {
                let _ = writeln!(
                    out,
                    "anomalyd_samples_skipped_total{{format=\"{}\",reason=\"{}\"}} {}",
                    format.label(),
                    reason.label(),
                    load(count)
                );
            }
        }

        header(
            out,
            "anomalyd_anomalies_total",
            "counter",
            "Anomalies found, by the side of the band that was crossed.",
        );
        for (side, count) in ["upper", "lower"].iter().zip(&self.anomalies) {
            let _ = writeln!(
                out,
                "anomalyd_anomalies_total{{direction=\"{side}\"}} {}",
                load(count)
            );
        }

        header(
            out,
            "anomalyd_bad_requests_total",
            "counter",
            "Requests refused with an error reply, by reason.",
        );
        for (reason, count) in BadRequest::ALL.iter().zip(&self.bad_requests) {
            let _ = writeln!(
                out,
                "anomalyd_bad_requests_total{{reason=\"{}\"}} {}",
                reason.label(),
                load(count)
            );
        }

        counter(
            out,
            "anomalyd_points_rate_limited_total",
            "Points in requests refused (429) because their client was over [server] rate_limit; nothing of such a request is applied.",
            load(&self.rate_limited_points),
        );

        gauge(
            out,
            "anomalyd_series_active",
            "Series currently held in memory.",
            snapshot.table.series as f64,
        );
        gauge(
            out,
            "anomalyd_series_warming_up",
            "Series whose window does not yet hold min_samples points.",
            snapshot.table.warming_up as f64,
        );
        gauge(
            out,
            "anomalyd_episodes_open",
            "Anomaly episodes open now (at most one per series).",
            snapshot.episodes.open as f64,
        );
        counter(
            out,
            "anomalyd_episodes_opened_total",
            "Anomaly episodes opened.",
            snapshot.episodes.opened,
        );
        counter(
            out,
            "anomalyd_episodes_closed_total",
            "Anomaly episodes closed: resolved, or ended when their series was forgotten.",
            snapshot.episodes.closed,
        );
    }

    /// The anomaly log writer and the journal events.
    fn render_anomaly_log(&self, out: &mut String, snapshot: &Snapshot) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let log = &self.log;
        counter(
            out,
            "anomalyd_anomaly_log_lines_written_total",
            "Anomaly lines written to the anomaly log file.",
            load(&log.lines_written),
        );
        counter(
            out,
            "anomalyd_anomaly_log_write_errors_total",
            "Failed writes to the anomaly log.",
            load(&log.write_errors),
        );
        gauge(
            out,
            "anomalyd_anomaly_log_backlog_lines",
            "Anomaly lines held in memory while the log cannot be written.",
            load(&log.backlog) as f64,
        );
        counter(
            out,
            "anomalyd_anomaly_log_dropped_lines_total",
            "Anomaly lines dropped because the backlog was full.",
            load(&log.dropped),
        );
        counter(
            out,
            "anomalyd_anomaly_log_rotations_total",
            "Rotations of the anomaly log (SIGHUP).",
            load(&log.rotations),
        );
        header(
            out,
            "anomalyd_anomaly_log_fsync_duration_seconds",
            "histogram",
            "Duration of fdatasync calls on the anomaly log.",
        );
        log.fsync_seconds
            .render(out, "anomalyd_anomaly_log_fsync_duration_seconds", "");
        counter(
            out,
            "anomalyd_journal_anomalies_suppressed_total",
            "Episode events (openings and closings) not sent to the journal because of [log] journal_anomaly_rate.",
            snapshot.journal_suppressed,
        );
    }

    /// Configuration reloads.
    fn render_reloads(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "anomalyd_config_reloads_total",
            "counter",
            "Configuration reload attempts, by result.",
        );
        let _ = writeln!(
            out,
            "anomalyd_config_reloads_total{{result=\"success\"}} {}",
            load(&self.reloads_ok)
        );
        let _ = writeln!(
            out,
            "anomalyd_config_reloads_total{{result=\"failure\"}} {}",
            load(&self.reloads_failed)
        );
        gauge(
            out,
            "anomalyd_config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried), else 0.",
            if self.last_reload_ok() { 1.0 } else { 0.0 },
        );
        gauge(
            out,
            "anomalyd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            self.last_reload_success(),
        );
    }

    /// Requests in flight and request durations.
    fn render_http(&self, out: &mut String, snapshot: &Snapshot) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            out,
            "anomalyd_http_requests_in_flight",
            "Requests being handled (this scrape included).",
            load(&self.in_flight) as f64,
        );
        gauge(
            out,
            "anomalyd_event_streams",
            "Open GET /events streams (dashboards watching).",
            snapshot.event_streams as f64,
        );
        header(
            out,
            "anomalyd_http_request_duration_seconds",
            "histogram",
            "Time from routing a request to its reply, by route.",
        );
        for (route, histogram) in Route::ALL.iter().zip(&self.request_seconds) {
            histogram.render(
                out,
                "anomalyd_http_request_duration_seconds",
                &format!("route=\"{}\",", route.label()),
            );
        }
    }
}

/// `anomalyd_build_info`: which version runs.
fn render_build_info(out: &mut String) {
    header(
        out,
        "anomalyd_build_info",
        "gauge",
        "Always 1; the labels say which anomalyd runs: version, git commit, compiler.",
    );
    let _ = writeln!(
        out,
        "anomalyd_build_info{{version=\"{}\",commit=\"{}\",rustc=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        escape_label(env!("ANOMALYD_COMMIT")),
        escape_label(env!("ANOMALYD_RUSTC")),
    );
}

/// A label value escaped as the text format wants (`\\`, `\"`, `\n`).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The alert sinks: one sample per sink in each family (no family when
/// no sink is configured).
fn render_sinks(out: &mut String, sinks: &[crate::alert::worker::SinkSnapshot]) {
    if sinks.is_empty() {
        return;
    }
    type Field = fn(&crate::alert::worker::SinkSnapshot) -> u64;
    let families: [(&str, &str, &str, Field); 4] = [
        (
            "anomalyd_notifications_sent_total",
            "counter",
            "Episode notifications delivered to an alert sink (Alertmanager alerts, re-sends included; webhook documents).",
            |s| s.sent,
        ),
        (
            "anomalyd_notifications_failed_total",
            "counter",
            "Requests to an alert sink that failed (unreachable, timeout, error status); each retry counts.",
            |s| s.failed,
        ),
        (
            "anomalyd_notifications_dropped_total",
            "counter",
            "Episode notifications given up: the sink's queue was full, the sink refused them (4xx), or shutdown came first.",
            |s| s.dropped,
        ),
        (
            "anomalyd_notifications_queued",
            "gauge",
            "Episode notifications waiting to be sent to an alert sink.",
            |s| s.queued,
        ),
    ];
    for (name, kind, help, field) in families {
        header(out, name, kind, help);
        for sink in sinks {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\",url=\"{}\"}} {}",
                sink.kind,
                escape_label(&sink.url),
                field(sink)
            );
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a whole counter family with one unlabelled sample.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a whole gauge family with one unlabelled sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `prefix` (name and labels).
    fn sample(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_served_path_has_its_own_route_label() {
        let metrics = Metrics::new(0.0);
        let paths = [
            "/detect",
            "/anomalies",
            "/episodes",
            "/metrics",
            "/healthz",
            "/ready",
            "/series",
            "/series/cpu",
            "/events",
            "/",
            "/dashboard.js",
            "/api/v1/write",
            "/api/v2/write",
            "/write",
            "/login",
            "/logout",
            "/cluster",
            "/nowhere",
        ];
        for path in paths {
            metrics.request(Route::of(path), 200, None, Duration::from_micros(10));
        }
        let text = metrics.render(&Snapshot::default());
        let count = |label: &str| {
            sample(
                &text,
                &format!("anomalyd_http_request_duration_seconds_count{{route=\"{label}\"}}"),
            )
        };
        for label in ["/logout", "/cluster", "/login", "/write", "other"] {
            assert_eq!(count(label), 1.0, "{label}");
        }
        assert_eq!(count("/series"), 2.0);
        assert_eq!(count("/"), 2.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::new(0.0);
        for micros in [50, 300, 300, 2_000_000, 9_000_000] {
            metrics.request(Route::Detect, 200, None, Duration::from_micros(micros));
        }
        let text = metrics.render(&Snapshot::default());
        let name = "anomalyd_http_request_duration_seconds";
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{route=\"/detect\",le=\"0.0001\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{route=\"/detect\",le=\"0.0005\"}}")
            ),
            3.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{route=\"/detect\",le=\"2.5\"}}")
            ),
            4.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{route=\"/detect\",le=\"+Inf\"}}")
            ),
            5.0
        );
        assert_eq!(
            sample(&text, &format!("{name}_count{{route=\"/detect\"}}")),
            5.0
        );
        let sum = sample(&text, &format!("{name}_sum{{route=\"/detect\"}}"));
        assert!((sum - 11.00065).abs() < 1e-9, "{sum}");
        assert_eq!(
            sample(&text, &format!("{name}_count{{route=\"other\"}}")),
            0.0
        );
    }

    #[test]
    fn error_statuses_count_as_bad_requests_by_reason() {
        let metrics = Metrics::new(0.0);
        metrics.request(Route::Detect, 422, None, Duration::ZERO);
        metrics.request(Route::Detect, 422, None, Duration::ZERO);
        metrics.request(Route::Other, 404, None, Duration::ZERO);
        metrics.request(Route::Detect, 200, None, Duration::ZERO);
        let text = metrics.render(&Snapshot::default());
        assert_eq!(
            sample(&text, "anomalyd_bad_requests_total{reason=\"invalid\"}"),
            2.0
        );
        assert_eq!(
            sample(&text, "anomalyd_bad_requests_total{reason=\"not_found\"}"),
            1.0
        );
        assert_eq!(
            sample(&text, "anomalyd_bad_requests_total{reason=\"malformed\"}"),
            0.0
        );
    }

    #[test]
    fn reloads_track_the_last_result() {
        let metrics = Metrics::new(100.0);
        metrics.reload(false, 200.0);
        let text = metrics.render(&Snapshot::default());
        assert_eq!(sample(&text, "anomalyd_config_last_reload_successful"), 0.0);
        assert_eq!(
            sample(
                &text,
                "anomalyd_config_last_reload_success_timestamp_seconds"
            ),
            100.0
        );
        metrics.reload(true, 300.0);
        let text = metrics.render(&Snapshot::default());
        assert_eq!(sample(&text, "anomalyd_config_last_reload_successful"), 1.0);
        assert_eq!(
            sample(&text, "anomalyd_config_reloads_total{result=\"failure\"}"),
            1.0
        );
        assert_eq!(
            sample(&text, "anomalyd_config_reloads_total{result=\"success\"}"),
            1.0
        );
    }

    #[test]
    fn label_lists_are_in_declaration_order() {
        for (i, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, i);
        }
        for (i, reason) in BadRequest::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = Metrics::new(0.0).render(&Snapshot::default());
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(seen.insert(name.to_owned()), "TYPE twice for {name}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert!(
                name.starts_with("anomalyd_") || name.starts_with("process_"),
                "{name}"
            );
        }
    }
}
