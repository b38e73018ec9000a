//! The state every request handler and background task shares: the
//! configuration in force, the series table, the recent anomalies, the
//! anomaly log writer and the metrics. Built once at start-up by
//! [`build_state`]; [`crate::app`] wires it to the server and the tasks.
//!
//! It must not know HTTP or signals: handlers and the service shell call
//! into it, never the other way round.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::access::{RateLimiter, RefusalLog};
use crate::alert::{Notifier, Opening};
use crate::anomalies::tail;
use crate::anomalies::{
    AnomalyEvents, AnomalyLog, AnomalyLogError, AnomalyLogSettings, RecentAnomalies,
};
use crate::api::EpisodeEvent;
use crate::api::{AnomalyRecord, EpisodeRecord};
use crate::clock::unix_now;
use crate::config::Config;
use crate::ingest::DataPoint;
use crate::live::LiveEvents;
use crate::metrics::Format;
use crate::metrics::{Metrics, Snapshot};
use crate::series::{ClosedEpisodes, Duplicates, Observation, SeriesTable, TooManySeries};

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
    /// Rate limiter of the per-episode journal events.
    pub journal: AnomalyEvents,
    /// The dashboard's live event streams.
    pub live: LiveEvents,
    /// The alert sinks.
    pub alerts: Notifier,
    /// Per-client buckets of `[server] rate_limit`.
    pub limiter: RateLimiter,
    /// Requests refused for want of a valid token, logged rate-limited.
    pub refusals: RefusalLog,
    /// The address the main listener is bound to (set once it is).
    pub bound_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// This daemon as a cluster member (set at start with `[cluster]`).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Member>>,
    last_reload_error: Mutex<Option<String>>,
    /// Keys whose new value waits for a restart, as last reported.
    pending_restart: Mutex<String>,
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

    /// Replaces the configuration in force (see [`crate::reload`]).
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

    /// Records the keys that wait for a restart (comma-separated, empty for
    /// none) and returns the previous record.
    pub fn swap_pending_restart(&self, keys: String) -> String {
        std::mem::replace(
            &mut *self
                .pending_restart
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            keys,
        )
    }

    /// Records the result of a reload: `Some(problems)` after a failure.
    pub fn set_last_reload_error(&self, error: Option<String>) {
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Reports the episodes a request opened (with the opening point of
    /// each, `openings[i]` for `opened[i]`) and closed: one journal event
    /// each, within `[log] journal_anomaly_rate`, and a notification to
    /// every alert sink.
    pub fn report_episodes(
        &self,
        opened: &[EpisodeRecord],
        openings: &[Opening],
        closed: &[EpisodeRecord],
    ) {
        if opened.is_empty() && closed.is_empty() {
            return;
        }
        self.journal.emit(opened, closed);
        if self.alerts.has_sinks() {
            let config = self.config();
            let severity = |series: &str| -> Arc<str> {
                let severity = config
                    .rule_for(series)
                    .and_then(|rule| rule.overrides.severity.as_deref())
                    .unwrap_or(&config.detector.severity);
                Arc::from(severity)
            };
            let bound = self.bound_addr.get().copied();
            let external_url = || Arc::from(config.server.effective_external_url(bound));
            self.alerts
                .notify(opened, openings, closed, severity, external_url);
        }
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
        // A cluster member's list follows the cluster's anomalies stream,
        // which carries these too.
        if self.cluster.get().is_none() {
            self.recent.extend(records.iter().cloned());
        }
        let log = self.log.clone();
        tokio::spawn(async move { log.append(lines).await })
            .await
            .unwrap_or(false)
    }

    /// Applies `points` (all or none), counts them as `format`, reports
    /// the episodes they opened and closed, and writes their anomalies to
    /// the log before returning. Fails, applying nothing, when
    /// `max_series` would be exceeded.
    pub async fn apply_points(
        &self,
        points: &[DataPoint<'_>],
        duplicates: Duplicates,
        format: Format,
    ) -> Result<AppliedBatch, TooManySeries> {
        let mut closed = Vec::new();
        let observations = match duplicates {
            Duplicates::BySeq => self.table.observe_batch_into(points, &mut closed),
            Duplicates::ByTimestamp => self.table.observe_samples_into(points, &mut closed),
        }?;
        let records = anomaly_records(points, &observations);
        let (episodes_opened, openings, episodes_closed) =
            episode_changes(points, &observations, closed);
        self.report_episodes(&episodes_opened, &openings, &episodes_closed);
        let logged = self.record_anomalies(&records).await;
        let duplicates = observations.iter().filter(|o| o.duplicate).count();
        self.metrics
            .points(format, points.len() as u64, duplicates as u64);
        Ok(AppliedBatch {
            records,
            episodes_opened,
            episodes_closed,
            duplicates,
            logged,
        })
    }

    /// Values computed at scrape time, for [`Metrics::render`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            table: self.table.stats(),
            episodes: self.table.episode_counts(),
            journal_suppressed: self.journal.suppressed_total(),
            event_streams: self.live.streams(),
            sinks: self.alerts.snapshot(),
            snapshots_enabled: self.cluster.get().is_none()
                && self.config().state.effective_directory().is_some(),
            cluster: self.cluster.get().cloned(),
        }
    }

    /// Why the daemon cannot do its job: the anomaly log cannot be
    /// written. Empty when ready (`GET /ready`).
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        let log = self.log.stats();
        if log.failing.load(Ordering::Relaxed) {
            reasons.push(format!(
                "the anomaly log {} cannot be written; {} anomalies are held in memory (see the daemon's log)",
                self.config().log.anomaly_log_file.display(),
                log.backlog.load(Ordering::Relaxed)
            ));
        }
        if let Some(member) = self.cluster.get() {
            if !member.joined() {
                reasons.push(match member.connect_error() {
                    Some(error) => format!(
                        "not yet a member of the cluster: cannot connect to NATS at {} ({error})",
                        member.config.nats_url
                    ),
                    None => format!(
                        "not yet a member of the cluster: NATS at {} is unreachable or the cluster is being set up (see the daemon's log)",
                        member.config.nats_url
                    ),
                });
            } else if !member.connected() {
                let last = member
                    .connect_error()
                    .map(|error| format!(" (last attempt: {error})"))
                    .unwrap_or_default();
                reasons.push(format!(
                    "disconnected from NATS at {}{last}: posts get 503 until it is back",
                    member.config.nats_url
                ));
            }
        }
        reasons
    }

    /// Everything an operator should look at (`GET /healthz`): the reasons
    /// the daemon is not ready, and a failed last reload, which leaves the
    /// daemon serving on its previous configuration and so ready (a bad
    /// file pushed to every node must not pull them all out of a load
    /// balancer). Empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.not_ready_reasons();
        if let Some(error) = self.last_reload_error() {
            problems.push(format!(
                "the last configuration reload failed; running on the previous configuration: {error}"
            ));
        }
        problems
    }

    /// Updates the points-per-second figure of [`AppState::status_line`]
    /// with the points counted since the last call, `elapsed` ago.
    pub fn update_points_rate(&self, elapsed: Duration, last_points: &mut u64) {
        let points = self.metrics.points_total();
        let rate = points.saturating_sub(*last_points) as f64 / elapsed.as_secs_f64().max(1e-3);
        *last_points = points;
        self.points_rate.store(rate.to_bits(), Ordering::Relaxed);
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

/// What applying a batch did.
pub struct AppliedBatch {
    /// The anomalous points' records, in batch order.
    pub records: Vec<AnomalyRecord>,
    /// Episodes the batch opened, in batch order.
    pub episodes_opened: Vec<EpisodeRecord>,
    /// Episodes the batch closed, in batch order.
    pub episodes_closed: Vec<EpisodeRecord>,
    /// Points recognised as already applied.
    pub duplicates: usize,
    /// Whether the records are in the anomaly log (else in its backlog).
    pub logged: bool,
}

/// The records of the anomalous points of a batch, in batch order.
fn anomaly_records(points: &[DataPoint<'_>], observations: &[Observation]) -> Vec<AnomalyRecord> {
    points
        .iter()
        .zip(observations)
        .filter_map(|(point, obs)| obs.record(point))
        .collect()
}

/// The episodes a batch opened (with their opening points) and closed
/// (`closed`, from the table), in batch order.
fn episode_changes(
    points: &[DataPoint<'_>],
    observations: &[Observation],
    mut closed: ClosedEpisodes,
) -> (Vec<EpisodeRecord>, Vec<Opening>, Vec<EpisodeRecord>) {
    let (opened, openings) = points
        .iter()
        .zip(observations)
        .filter(|(_, obs)| obs.episode.event == Some(EpisodeEvent::Opened))
        .filter_map(|(point, obs)| {
            let record = obs.record(point)?;
            Some((obs.opened(point)?, Opening::from(&record)))
        })
        .unzip();
    closed.sort_by_key(|&(index, _)| index);
    (
        opened,
        openings,
        closed.into_iter().map(|(_, r)| r).collect(),
    )
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The anomaly log writer could not start.
    #[error(transparent)]
    AnomalyLog(#[from] AnomalyLogError),
    /// The state directory is another daemon's.
    #[error(transparent)]
    StateDirectory(#[from] crate::snapshot::SnapshotError),
    /// This member cannot join its cluster.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Builds the shared state: loads recent anomalies from the tail of the log
/// and starts the log writer. `config_path` is where reloads read from.
pub fn build_state(
    config: Arc<Config>,
    config_path: Option<PathBuf>,
) -> Result<Arc<AppState>, AppError> {
    let recent = RecentAnomalies::new(config.log.recent_anomalies);
    let path = &config.log.anomaly_log_file;
    // A cluster member reads the cluster's anomalies from NATS instead.
    let tail = if config.cluster.is_some() {
        Ok(tail::Tail {
            records: Vec::new(),
            scanned: 0,
            unreadable: 0,
        })
    } else {
        tail::read_tail::<AnomalyRecord>(path, recent.capacity())
    };
    match tail {
        Ok(tail) => {
            if !tail.records.is_empty() {
                tracing::info!(count = tail.records.len(), scanned_bytes = tail.scanned, path = %path.display(), "Loaded recent anomalies from the anomaly log.");
            }
            recent.extend(tail.records);
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Cannot read recent anomalies from the anomaly log; starting with an empty list.");
        }
    }
    let log = AnomalyLog::start(AnomalyLogSettings::from_config(&config.log))?;
    let mut metrics = Metrics::new(unix_now());
    metrics.log = log.stats().clone();
    let alerts = Notifier::new();
    alerts.apply(&config.alert);
    Ok(Arc::new(AppState {
        alerts,
        limiter: RateLimiter::default(),
        refusals: RefusalLog::default(),
        bound_addr: std::sync::OnceLock::new(),
        cluster: std::sync::OnceLock::new(),
        journal: AnomalyEvents::new(config.log.journal_anomaly_rate),
        live: LiveEvents::default(),
        config: RwLock::new(config.clone()),
        config_path,
        table: SeriesTable::new(config),
        recent,
        log,
        metrics,
        last_reload_error: Mutex::new(None),
        pending_restart: Mutex::new(String::new()),
        points_rate: AtomicU64::new(0f64.to_bits()),
    }))
}
