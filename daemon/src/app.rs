//! Wiring of the running daemon: the shared state, the background tasks, and
//! the shutdown order.
//!
//! [`run`] takes a bound listener, the configuration and a cancellation token,
//! so tests can start a full server on port 0 and stop it without signals.
//! Shutdown order: stop accepting, let in-flight requests finish (bounded by
//! a grace period), then write out and sync the anomaly log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::anomaly_log::{self, AnomalyLog, AnomalyLogError, AnomalyLogSettings};
use crate::api::AnomalyRecord;
use crate::config::Config;
use crate::http::{self, unix_now};
use crate::metrics::{Metrics, Snapshot};
use crate::reload::{self, Trigger};
use crate::series::SeriesTable;
use crate::store::RecentAnomalies;
use crate::telemetry::AnomalyEvents;
use crate::{systemd, watch};

/// How often the `STATUS=` line sent to systemd is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by every request handler.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    /// The `--config` path, or `None` for the default path (which may not
    /// exist: built-in defaults).
    pub config_path: Option<PathBuf>,
    /// Live series and their detectors.
    pub table: SeriesTable,
    /// Recent anomalies for `GET /anomalies`.
    pub recent: RecentAnomalies,
    /// The anomaly log writer.
    pub log: AnomalyLog,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Metrics,
    /// Rate limiter of the per-anomaly journal events.
    pub journal: AnomalyEvents,
    /// Serialises reloads (SIGHUP and the watcher).
    pub reload_lock: tokio::sync::Mutex<()>,
    last_reload_error: Mutex<Option<String>>,
    /// Points per second over the last status interval, as `f64` bits.
    points_rate: AtomicU64,
}

impl AppState {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration in force (see [`reload`]).
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The problems of the last failed reload, while no reload succeeded
    /// since.
    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the result of a reload: `Some(problems)` after a failure.
    pub fn set_last_reload_error(&self, error: Option<String>) {
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Records anomalies: into the recent list at once, and into the anomaly
    /// log before returning. Returns whether they are in the log file.
    ///
    /// The log append runs in its own task, so that a client hanging up
    /// mid-request cannot cancel the write of anomalies already detected.
    pub async fn record_anomalies(&self, records: &[AnomalyRecord]) -> bool {
        if records.is_empty() {
            return true;
        }
        let mut lines = Vec::with_capacity(records.len() * 160);
        for record in records {
            record.write_line(&mut lines);
            self.metrics.anomaly(record.direction);
        }
        self.recent.extend(records.iter().cloned());
        self.journal.emit(records);
        let log = self.log.clone();
        tokio::spawn(async move { log.append(lines).await })
            .await
            .unwrap_or(false)
    }

    /// Values computed at scrape time, for [`Metrics::render`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            table: self.table.stats(),
            journal_suppressed: self.journal.suppressed_total(),
        }
    }

    /// Reasons the daemon is not fully healthy: the anomaly log cannot be
    /// written, or the last reload failed. Empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let log = self.log.stats();
        if log.failing.load(Ordering::Relaxed) {
            problems.push(format!(
                "the anomaly log {} cannot be written; {} anomalies are held in memory (see the daemon's log)",
                self.config().log.anomaly_log_file.display(),
                log.backlog.load(Ordering::Relaxed)
            ));
        }
        if let Some(error) = self.last_reload_error() {
            problems.push(format!(
                "the last configuration reload failed; running on the previous configuration: {error}"
            ));
        }
        problems
    }

    /// The one-line summary for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        let age = (unix_now() - self.metrics.last_reload_success()).max(0.0);
        let age = crate::config::toml_walk::format_duration(Duration::from_secs(age as u64));
        let reload = if self.last_reload_error().is_some() {
            format!("last reload FAILED (config in force loaded {age} ago)")
        } else {
            format!("config loaded {age} ago")
        };
        let rate = f64::from_bits(self.points_rate.load(Ordering::Relaxed));
        format!(
            "{rate:.0} points/s, {} anomalies, {} series; {reload}",
            self.metrics.anomalies_total(),
            self.table.len(),
        )
    }
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The anomaly log writer could not start.
    #[error(transparent)]
    AnomalyLog(#[from] AnomalyLogError),
}

/// Builds the shared state: loads recent anomalies from the tail of the log
/// and starts the log writer. `config_path` is where reloads read from.
pub fn build_state(
    config: Arc<Config>,
    config_path: Option<PathBuf>,
) -> Result<Arc<AppState>, AppError> {
    let recent = RecentAnomalies::new(config.log.recent_anomalies);
    let path = &config.log.anomaly_log_file;
    match anomaly_log::read_tail::<AnomalyRecord>(path, recent.capacity()) {
        Ok(records) => {
            if !records.is_empty() {
                tracing::info!(count = records.len(), path = %path.display(), "Loaded recent anomalies from the anomaly log.");
            }
            recent.extend(records);
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Cannot read recent anomalies from the anomaly log; starting with an empty list.");
        }
    }
    let log = AnomalyLog::start(AnomalyLogSettings::from_config(&config.log))?;
    let mut metrics = Metrics::new(unix_now());
    metrics.log = log.stats().clone();
    Ok(Arc::new(AppState {
        journal: AnomalyEvents::new(config.log.journal_anomaly_rate),
        config: RwLock::new(config.clone()),
        config_path,
        table: SeriesTable::new(config),
        recent,
        log,
        metrics,
        reload_lock: tokio::sync::Mutex::new(()),
        last_reload_error: Mutex::new(None),
        points_rate: AtomicU64::new(0f64.to_bits()),
    }))
}

/// Serves on `listener` until `shutdown` is cancelled, then drains and
/// closes the anomaly log. Reloads on each `hangup` signal (SIGHUP,
/// installed by the caller before it announces the address, so an early
/// SIGHUP cannot kill the process) and on changes of the files under
/// `config_path` (or the default path when `None`).
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    hangup: Option<Signal>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let state = build_state(config, config_path)?;
    let tasks = TaskTracker::new();
    let stop_tasks = CancellationToken::new();
    tasks.spawn(housekeeping(state.clone(), stop_tasks.clone()));
    tasks.spawn(watch_config(state.clone(), stop_tasks.clone()));
    if let Some(hangup) = hangup {
        tasks.spawn(reload_on_sighup(state.clone(), hangup, stop_tasks.clone()));
    }
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(systemd::watchdog(interval, stop_tasks.clone()));
    }
    systemd::ready(&state.status_line());

    let connections = TaskTracker::new();
    http::serve(
        listener,
        state.clone(),
        shutdown.clone(),
        connections.clone(),
    )
    .await;

    systemd::stopping("shutting down: finishing in-flight requests");
    let grace = state.config().server.shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "Shutting down: waiting for in-flight requests."
    );
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "Requests still in flight after [server] shutdown_grace; closing anyway."
        );
    }
    stop_tasks.cancel();
    tasks.close();
    tasks.wait().await;
    let report = state.log.close().await;
    tracing::info!(
        unwritten = report.unwritten,
        "Anomaly log closed; shutdown complete."
    );
    Ok(())
}

/// Reloads the configuration when its files change.
async fn watch_config(state: Arc<AppState>, stop: CancellationToken) {
    let main = state
        .config_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    let ignored = {
        let state = state.clone();
        // Our own writes to the anomaly log are not configuration changes.
        move |path: &std::path::Path| {
            watch::is_file_or_rotation(path, &state.config().log.anomaly_log_file)
        }
    };
    watch::run(main, ignored, stop, move || {
        let state = state.clone();
        async move {
            reload::reload(&state, Trigger::Watch).await;
        }
    })
    .await;
}

/// Reloads the configuration and rotates the anomaly log on each SIGHUP.
async fn reload_on_sighup(state: Arc<AppState>, mut hup: Signal, stop: CancellationToken) {
    loop {
        tokio::select! {
            received = hup.recv() => if received.is_none() { return },
            () = stop.cancelled() => return,
        }
        tracing::info!(
            signal = "SIGHUP",
            "Reloading the configuration and rotating the anomaly log."
        );
        reload::reload(&state, Trigger::Signal).await;
    }
}

/// Periodic work: the anomaly log's retry/sync tick and the idle-series sweep.
async fn housekeeping(state: Arc<AppState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(anomaly_log::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_status = tokio::time::Instant::now();
    let mut last_points = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        state.log.tick().await;
        state.journal.flush();
        let since_status = last_status.elapsed();
        if since_status >= STATUS_INTERVAL {
            last_status = tokio::time::Instant::now();
            let points = state.metrics.points.load(Ordering::Relaxed);
            let rate = (points - last_points) as f64 / since_status.as_secs_f64();
            last_points = points;
            state.points_rate.store(rate.to_bits(), Ordering::Relaxed);
            systemd::status(&state.status_line());
        }
        if last_sweep.elapsed() >= sweep_interval(&state.config()) {
            last_sweep = tokio::time::Instant::now();
            let removed = state.table.sweep_idle();
            if removed > 0 {
                tracing::debug!(removed, "Forgot idle series.");
            }
        }
    }
}

/// How often to look for idle series: half the shortest `series_ttl`, so a
/// series is forgotten at most 1.5 TTLs after its last point, but between
/// 1 s and 30 s, since a sweep scans every series.
pub fn sweep_interval(config: &Config) -> Duration {
    let shortest = config
        .rules
        .iter()
        .filter_map(|rule| rule.overrides.series_ttl)
        .chain([config.detector.series_ttl])
        .min()
        .unwrap_or(config.detector.series_ttl);
    (shortest / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Loads the configuration: `explicit` if given (it must exist), else the
/// default path if it exists, else the built-in defaults (then
/// `Config::files` is empty).
pub fn load_config(
    explicit: Option<&std::path::Path>,
) -> Result<Config, crate::config::ConfigErrors> {
    use crate::config::DEFAULT_CONFIG_PATH;
    let default = std::path::Path::new(DEFAULT_CONFIG_PATH);
    match explicit {
        Some(path) => Config::load(path),
        None if default.exists() => Config::load(default),
        None => Ok(Config::default()),
    }
}
