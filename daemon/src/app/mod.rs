//! Wiring of the running daemon: the background tasks and the shutdown
//! order. The shared state lives in [`crate::state`], the process shell
//! (signals, reload loop, status, sd_notify) in [`crate::service`].
//!
//! [`run`] takes a bound listener, the configuration and a cancellation token,
//! so tests can start a full server on port 0 and stop it without signals.
//! Start order: restore the state snapshot ([`snapshots`]), then announce
//! readiness and serve. Shutdown order: stop accepting, let in-flight
//! requests finish (bounded by a grace period), write the last state
//! snapshot, then write out and sync the anomaly log.

pub mod cluster;
pub mod snapshots;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::anomalies::log::{self, AnomalyLogSettings, Rotation};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::http::{self, BoundAddr, Listener, Role};
use crate::service::{reload as reload_loop, status, systemd, watch};
use crate::state::{AppState, build_state};

pub use crate::state::AppError;

/// Serves on `listeners` (at least one; the first is the address the
/// daemon announces) and the probes and metrics on `admin`, when given, until `shutdown` is cancelled, then drains and closes the
/// anomaly log. Reloads on each `hangup` signal (SIGHUP,
/// installed by the caller before it announces the address, so an early
/// SIGHUP cannot kill the process) and on changes of the files under
/// `config_path` (or the default path when `None`).
pub async fn run(
    listeners: Vec<Listener>,
    admin: Option<Listener>,
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    hangup: Option<Signal>,
    reopen: Option<Signal>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let state = build_state(config, config_path)?;
    let bound = listeners
        .first()
        .and_then(|listener| listener.local_addr().ok());
    if let Some(BoundAddr::Tcp(addr)) = &bound {
        let _ = state.bound_addr.set(*addr);
    }
    let member = state.config().cluster.clone().map(|config| {
        let id = config.instance_id.clone().unwrap_or_else(|| {
            let port = match &bound {
                Some(BoundAddr::Tcp(addr)) => addr.port().to_string(),
                _ => "unix".to_owned(),
            };
            format!("{}:{port}", crate::cluster::hostname())
        });
        Arc::new(crate::cluster::Member::new(config, id))
    });
    let state_lock = Arc::new(snapshots::DirectoryLock::default());
    let tasks = TaskTracker::new();
    let stop_tasks = CancellationToken::new();
    let cluster_failure = Arc::new(std::sync::OnceLock::new());
    // The member leaves before the alert sinks shut down: the batches its
    // consumers finish on the way out may open and close episodes.
    let leave = CancellationToken::new();
    let mut member_task = None;
    if let Some(member) = member {
        let _ = state.cluster.set(member.clone());
        tracing::info!(
            instance_id = %member.instance_id,
            url = %member.config.nats_url,
            partitions = member.config.partitions,
            "Cluster member: points go through NATS JetStream; state snapshots go to its object store, not to [state] directory."
        );
        let (task_state, stop, failure, shutdown) = (
            state.clone(),
            leave.clone(),
            cluster_failure.clone(),
            shutdown.clone(),
        );
        member_task = Some(tokio::spawn(async move {
            if let Err(e) = cluster::run(task_state, member, stop).await {
                tracing::error!(error = %e, "Cannot join the cluster; shutting down.");
                let _ = failure.set(e);
                shutdown.cancel();
            }
        }));
    } else {
        // Before the first request is read: points then meet restored windows.
        snapshots::restore(&state, &state_lock).await?;
        tasks.spawn(snapshots::periodic(
            state.clone(),
            state_lock.clone(),
            stop_tasks.clone(),
        ));
    }
    tasks.spawn(housekeeping(state.clone(), stop_tasks.clone()));
    tasks.spawn(reloads(state.clone(), hangup, stop_tasks.clone()));
    tasks.spawn(status_updates(state.clone(), stop_tasks.clone()));
    tasks.spawn(http::publish_events(state.clone(), stop_tasks.clone()));
    if let Some(reopen) = reopen {
        tasks.spawn(reopen_on_sigusr1(state.clone(), reopen, stop_tasks.clone()));
    }
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(systemd::watchdog(interval, stop_tasks.clone()));
    }
    systemd::ready(&state.status_line());

    let connections = TaskTracker::new();
    let kill = CancellationToken::new();
    if let Some(admin) = admin {
        connections.spawn(http::serve(
            vec![admin],
            Role::Admin,
            state.clone(),
            shutdown.clone(),
            kill.clone(),
            connections.clone(),
        ));
    }
    http::serve(
        listeners,
        Role::Main,
        state.clone(),
        shutdown.clone(),
        kill.clone(),
        connections.clone(),
    )
    .await;

    systemd::stopping("shutting down: finishing in-flight requests");
    // Event streams never finish by themselves: end them now.
    state.live.close();
    drain(&state, connections, kill).await;
    if let Some(member_task) = member_task {
        leave.cancel();
        let _ = member_task.await;
    }
    // Requests are done: no new episode can start. Pending alerts get the
    // grace period too.
    state
        .alerts
        .shutdown(state.config().server.shutdown_grace)
        .await;
    stop_tasks.cancel();
    tasks.close();
    tasks.wait().await;
    // Every acknowledged point is applied now: the snapshot holds them all.
    if state.cluster.get().is_none() {
        snapshots::final_write(&state, &state_lock).await;
    }
    let report = state.log.close().await;
    tracing::info!(
        unwritten = report.unwritten,
        "Anomaly log closed; shutdown complete."
    );
    match Arc::try_unwrap(cluster_failure)
        .ok()
        .and_then(|f| f.into_inner())
    {
        Some(failure) => Err(AppError::Cluster(failure)),
        None => Ok(()),
    }
}

/// Waits for in-flight requests, at most `[server] shutdown_grace`; then
/// drops the connections still open (for example one blocked writing to a
/// client that does not read).
async fn drain(state: &AppState, connections: TaskTracker, kill: CancellationToken) {
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
        kill.cancel();
        connections.wait().await;
    }
}

/// Reloads on SIGHUP and on changes of the configuration files, one at a
/// time.
async fn reloads(state: Arc<AppState>, hangup: Option<Signal>, stop: CancellationToken) {
    let main = state
        .config_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let ignored = {
        let state = state.clone();
        // Our own writes to the anomaly log are not configuration changes.
        move |path: &std::path::Path| {
            watch::is_file_or_rotation(path, &state.config().log.anomaly_log_file)
        }
    };
    reload_loop::run(main, ignored, hangup, stop, |trigger| {
        let state = state.clone();
        async move {
            crate::reload::reload(&state, trigger).await;
        }
    })
    .await;
}

/// Reopens the anomaly log at its path on each SIGUSR1 (logrotate's
/// `postrotate`), renaming and deleting nothing, and reloading nothing.
async fn reopen_on_sigusr1(state: Arc<AppState>, mut usr1: Signal, stop: CancellationToken) {
    loop {
        tokio::select! {
            received = usr1.recv() => if received.is_none() { return },
            () = stop.cancelled() => return,
        }
        let settings = AnomalyLogSettings::from_config(&state.config().log);
        match state.log.reopen(settings).await {
            Rotation::Failed(e) => {
                tracing::error!(signal = "SIGUSR1", error = %e, "Cannot reopen the anomaly log.");
            }
            _ => {
                tracing::info!(signal = "SIGUSR1", path = %state.config().log.anomaly_log_file.display(), "Anomaly log reopened.")
            }
        }
    }
}

/// Refreshes systemd's `STATUS=` line with the points rate.
async fn status_updates(state: Arc<AppState>, stop: CancellationToken) {
    let mut last_points = 0;
    status::run(stop, |elapsed| {
        state.update_points_rate(elapsed, &mut last_points);
        state.status_line()
    })
    .await;
}

/// Periodic work: the anomaly log's retry/sync tick, the journal summary,
/// and the idle-series sweep.
async fn housekeeping(state: Arc<AppState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(log::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_trim = (tokio::time::Instant::now(), state.table.len());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        state.log.tick().await;
        state.journal.flush();
        sweep_rate_limits(&state);
        if last_sweep.elapsed() >= sweep_interval(&state.config()) {
            last_sweep = tokio::time::Instant::now();
            let (removed, closed) = state.table.sweep_idle();
            state.report_episodes(&[], &[], &closed);
            if removed > 0 {
                tracing::debug!(removed, "Forgot idle series.");
            }
        }
        // After the table grew or shrank, and at most every 10 s: what
        // its vectors left behind goes back to the kernel.
        if last_trim.0.elapsed() >= TRIM_EVERY && state.table.len() != last_trim.1 {
            crate::service::runtime::release_freed_heap();
            last_trim = (tokio::time::Instant::now(), state.table.len());
        }
    }
}

/// Forgets the rate-limit buckets that are full again.
fn sweep_rate_limits(state: &AppState) {
    if let Some(limit) = state.config().server.client_limit() {
        state.limiter.sweep(limit, std::time::Instant::now());
    }
}

/// Least time between two returns of freed heap to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

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
