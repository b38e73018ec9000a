//! The generator as a service, on the shell it shares with `anomalyd`
//! ([`anomalyd::service`]): signals, the reload loop, the status line,
//! the watchdog and the metrics endpoint around one production run.
//!
//! Every task runs under one [`TaskTracker`] and ends when the run does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anomalyd::service::reload::{self as reload_loop, Trigger};
use anomalyd::service::signals::{ShutdownSignals, Signals};
use anomalyd::service::{status, systemd, telemetry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, DEFAULT_CONFIG_PATH, GeneratorConfig};
use crate::run::{Generator, Options, Summary};
use crate::{metrics_http, produce};

/// The name in diagnostics and in the journal (`SYSLOG_IDENTIFIER`).
pub const PROGRAM: &str = "anomaly-generator";

/// Runs the generator until its `--count` is produced and delivered, or
/// until a signal; returns the process's exit status.
pub async fn run(
    config: Arc<GeneratorConfig>,
    config_path: Option<PathBuf>,
    options: Options,
) -> ExitCode {
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        file = %config.file.as_ref().map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string()),
        "Starting anomaly-generator."
    );
    let count_mode = options.count.is_some();
    let generator = Generator::new(config.clone(), options);
    let stop_producing = CancellationToken::new();
    let stop_tasks = CancellationToken::new();
    let tasks = TaskTracker::new();

    if let Some(listen) = config.listen
        && let Err(code) = start_metrics(listen, &generator, &stop_tasks, &tasks).await
    {
        return code;
    }
    tasks.spawn(on_signals(
        signals.shutdown,
        generator.clone(),
        stop_producing.clone(),
        stop_tasks.clone(),
        tasks.clone(),
    ));
    tasks.spawn(reloads(
        generator.clone(),
        config_path,
        signals.hangup,
        stop_tasks.clone(),
    ));
    if let Some(interval) = systemd::watchdog_interval() {
        tasks.spawn(systemd::watchdog(interval, stop_tasks.clone()));
    }
    tasks.spawn(status::run(stop_tasks.clone(), {
        let generator = generator.clone();
        move |_| generator.status_line()
    }));

    systemd::ready(&generator.status_line());
    tracing::info!(
        seed = generator.seed(),
        series = config.series.len(),
        target = %config.target.url,
        "Generating."
    );
    let produced = produce::produce(generator.clone(), stop_producing.clone()).await;
    generator.senders_done().await;
    stop_tasks.cancel();
    tasks.close();
    tasks.wait().await;
    if let Err(e) = produced
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }
    report(
        &generator.summary(),
        count_mode && !stop_producing.is_cancelled(),
    )
}

/// Binds `listen` and serves `GET /metrics` there as a tracked task.
async fn start_metrics(
    listen: std::net::SocketAddr,
    generator: &Arc<Generator>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        eprintln!(
            "{PROGRAM}: cannot listen on {listen}: {e} (is another process using the port? see `listen`)"
        );
        ExitCode::FAILURE
    })?;
    let addr = listener.local_addr().unwrap_or(listen);
    eprintln!("metrics listening on {addr}");
    tasks.spawn(metrics_http::serve(
        listener,
        generator.clone(),
        stop.clone(),
        tasks.clone(),
    ));
    Ok(())
}

/// Logs how the run ended; failure when a `--count` run that was not
/// interrupted left points undelivered.
fn report(summary: &Summary, complete_run: bool) -> ExitCode {
    tracing::info!(
        generated = summary.generated,
        sent = summary.sent,
        dropped = summary.dropped,
        rejected = summary.rejected,
        unsent = summary.unsent,
        "Stopped."
    );
    if complete_run && !summary.complete() {
        eprintln!(
            "{PROGRAM}: {} of {} points not delivered ({} dropped from the full queue, {} refused by anomalyd)",
            summary.generated - summary.sent,
            summary.generated,
            summary.dropped,
            summary.rejected
        );
        return ExitCode::FAILURE;
    }
    if summary.unsent > 0 {
        tracing::warn!(
            unsent = summary.unsent,
            "Points still queued when the shutdown grace ran out were not delivered."
        );
    }
    ExitCode::SUCCESS
}

/// First SIGTERM/SIGINT: stop producing and deliver what is queued within
/// `shutdown_grace`; a second one exits at once with status 1.
async fn on_signals(
    signals: ShutdownSignals,
    generator: Arc<Generator>,
    stop_producing: CancellationToken,
    stop_tasks: CancellationToken,
    tasks: TaskTracker,
) {
    let done = stop_tasks.clone();
    signals
        .graceful_then_exit(done, move |name| {
            let grace = generator.config.borrow().shutdown_grace;
            systemd::stopping("delivering queued points");
            tracing::info!(
                signal = name,
                queued = generator.queued(),
                grace_secs = grace.as_secs_f64(),
                "Shutting down: delivering queued points (send the signal again to exit at once)."
            );
            stop_producing.cancel();
            tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(grace) => generator.give_up(),
                    () = stop_tasks.cancelled() => {}
                }
            });
        })
        .await;
}

/// Reloads on SIGHUP and on changes of the configuration file.
async fn reloads(
    generator: Arc<Generator>,
    path: Option<PathBuf>,
    hangup: tokio::signal::unix::Signal,
    stop: CancellationToken,
) {
    let main = path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    reload_loop::run(
        main,
        |_| false,
        Some(hangup),
        stop,
        |trigger| {
            let generator = generator.clone();
            let path = path.clone();
            async move { reload(&generator, path.as_deref(), trigger) }
        },
    )
    .await;
}

/// Re-reads the configuration and applies it when valid and different.
fn reload(generator: &Generator, path: Option<&std::path::Path>, trigger: Trigger) {
    let signal = trigger == Trigger::Signal;
    if signal {
        systemd::reloading();
    }
    match config::load(path) {
        Ok(new) => {
            let current = generator.config.borrow().clone();
            if new != *current {
                let restart_only = [
                    ("listen", new.listen != current.listen),
                    ("log.journal", new.log.journal != current.log.journal),
                ];
                for (key, _) in restart_only.iter().filter(|(_, changed)| *changed) {
                    tracing::warn!(
                        key,
                        "Configuration key changed but takes effect only after a restart; the rest is applied."
                    );
                }
                if !signal {
                    systemd::reloading();
                }
                telemetry::set_level(new.log.level);
                generator.config.send_replace(Arc::new(new));
                tracing::info!("Configuration reloaded.");
                if !signal {
                    systemd::ready(&generator.status_line());
                }
            }
        }
        Err(errors) => tracing::error!(
            "Configuration reload failed; still running on the previous configuration: {}",
            errors.one_line()
        ),
    }
    if signal {
        systemd::ready(&generator.status_line());
    }
}
