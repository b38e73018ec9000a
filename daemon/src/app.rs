//! Wiring of the running daemon: the shared state, the background tasks, and
//! the shutdown order.
//!
//! [`run`] takes a bound listener, the configuration and a cancellation token,
//! so tests can start a full server on port 0 and stop it without signals.
//! Shutdown order: stop accepting, let in-flight requests finish (bounded by
//! a grace period), then write out and sync the anomaly log.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::anomaly_log::{self, AnomalyLog, AnomalyLogError, AnomalyLogSettings};
use crate::api::AnomalyRecord;
use crate::config::Config;
use crate::http;
use crate::series::SeriesTable;
use crate::store::RecentAnomalies;

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// State shared by every request handler.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    /// Live series and their detectors.
    pub table: SeriesTable,
    /// Recent anomalies for `GET /anomalies`.
    pub recent: RecentAnomalies,
    /// The anomaly log writer.
    pub log: AnomalyLog,
}

impl AppState {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        }
        self.recent.extend(records.iter().cloned());
        let log = self.log.clone();
        tokio::spawn(async move { log.append(lines).await })
            .await
            .unwrap_or(false)
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
/// and starts the log writer.
pub fn build_state(config: Arc<Config>) -> Result<Arc<AppState>, AppError> {
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
    Ok(Arc::new(AppState {
        config: RwLock::new(config.clone()),
        table: SeriesTable::new(config),
        recent,
        log,
    }))
}

/// Serves on `listener` until `shutdown` is cancelled, then drains and
/// closes the anomaly log.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let state = build_state(config)?;
    let tasks = TaskTracker::new();
    let stop_tasks = CancellationToken::new();
    tasks.spawn(housekeeping(state.clone(), stop_tasks.clone()));

    let connections = TaskTracker::new();
    http::serve(
        listener,
        state.clone(),
        shutdown.clone(),
        connections.clone(),
    )
    .await;

    tracing::info!("Shutting down: waiting for in-flight requests.");
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "Requests still in flight after the grace period; closing anyway."
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

/// Periodic work: the anomaly log's retry/sync tick and the idle-series sweep.
async fn housekeeping(state: Arc<AppState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(anomaly_log::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        state.log.tick().await;
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
