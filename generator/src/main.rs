//! The `anomaly-generator` binary. Exit codes: 0 success (and after
//! SIGTERM/SIGINT), 1 points dropped or refused in a `--count` run, or a
//! runtime failure, 78 configuration error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anomaly_generator::cli::Cli;
use anomaly_generator::config::{DEFAULT_CONFIG_PATH, GeneratorConfig};
use anomaly_generator::run::{self, Generator, Options};
use anomalyd::config::ConfigErrors;
use anomalyd::{systemd, telemetry, watch};
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// sysexits.h EX_CONFIG.
const EX_CONFIG: u8 = 78;

fn load(explicit: Option<&Path>) -> Result<GeneratorConfig, ConfigErrors> {
    let default = Path::new(DEFAULT_CONFIG_PATH);
    match explicit {
        Some(path) => GeneratorConfig::load(path),
        None if default.exists() => GeneratorConfig::load(default),
        None => Ok(GeneratorConfig::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            errors.eprint("anomaly-generator");
            return ExitCode::from(EX_CONFIG);
        }
    };
    telemetry::init(&config.log);
    if cli.check_config {
        let source = config.file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        println!("posting to {}", config.target.url);
        for series in &config.series {
            println!("series {:?}: {}", series.name, series.pattern);
        }
        eprintln!("anomaly-generator: configuration is valid ({source}).");
        return ExitCode::SUCCESS;
    }
    let options = Options {
        count: cli.count,
        stdout: cli.stdout,
        labels: cli.labels,
        start_time: cli.start_time,
        seed: cli.seed,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("anomaly-generator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(daemon(Arc::new(config), cli.config, options))
}

async fn daemon(
    config: Arc<GeneratorConfig>,
    config_path: Option<PathBuf>,
    options: Options,
) -> ExitCode {
    let signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
        _ => {
            eprintln!("anomaly-generator: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let count_mode = options.count.is_some();
    let generator = Generator::new(config.clone(), options);
    let stop_producing = CancellationToken::new();
    let stop_tasks = CancellationToken::new();

    if let Some(listen) = config.listen {
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => {
                let addr = listener.local_addr().map_or(listen, |a| a);
                println_stderr(&format!("metrics listening on {addr}"));
                tokio::spawn(serve_metrics(
                    listener,
                    generator.clone(),
                    stop_tasks.clone(),
                ));
            }
            Err(e) => {
                eprintln!(
                    "anomaly-generator: cannot listen on {listen}: {e} (is another process using the port? see `listen`)"
                );
                return ExitCode::FAILURE;
            }
        }
    }

    let (term, int, hup) = signals;
    tokio::spawn(on_signals(
        term,
        int,
        generator.clone(),
        stop_producing.clone(),
    ));
    tokio::spawn(reload_on_sighup(
        hup,
        generator.clone(),
        config_path.clone(),
        stop_tasks.clone(),
    ));
    {
        let main = config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let generator = generator.clone();
        let path = config_path.clone();
        let stop = stop_tasks.clone();
        tokio::spawn(async move {
            watch::run(
                main,
                |_| false,
                stop,
                move || {
                    let generator = generator.clone();
                    let path = path.clone();
                    async move { reload(&generator, path.as_deref(), false).await }
                },
            )
            .await;
        });
    }
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(systemd::watchdog(interval, stop_tasks.clone()));
    }
    {
        let generator = generator.clone();
        let stop = stop_tasks.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => systemd::status(&generator.status_line()),
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    systemd::ready(&generator.status_line());
    tracing::info!(
        seed = generator.seed(),
        series = config.series.len(),
        target = %config.target.url,
        "Generating."
    );
    let produced = run::produce(generator.clone(), stop_producing.clone()).await;
    generator.senders_done().await;
    stop_tasks.cancel();
    let summary = generator.summary();
    match produced {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("anomaly-generator: {e}");
            return ExitCode::FAILURE;
        }
        Ok(()) => {}
    }
    tracing::info!(
        generated = summary.generated,
        sent = summary.sent,
        dropped = summary.dropped,
        rejected = summary.rejected,
        unsent = summary.unsent,
        "Stopped."
    );
    if count_mode && !stop_producing.is_cancelled() && !summary.complete() {
        eprintln!(
            "anomaly-generator: {} of {} points not delivered ({} dropped from the full queue, {} refused by anomalyd)",
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

fn println_stderr(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// First SIGTERM/SIGINT: stop producing and deliver what is queued within
/// `shutdown_grace`; a second one exits at once with status 1.
async fn on_signals(
    mut term: Signal,
    mut int: Signal,
    generator: Arc<Generator>,
    stop_producing: CancellationToken,
) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let grace = generator.config.borrow().shutdown_grace;
    systemd::stopping("delivering queued points");
    tracing::info!(
        queued = generator.queued(),
        grace_secs = grace.as_secs_f64(),
        "Shutting down: delivering queued points (send the signal again to exit at once)."
    );
    stop_producing.cancel();
    let giving_up = generator.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        giving_up.give_up();
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("Second signal; exiting at once with status 1.");
    std::process::exit(1);
}

async fn reload_on_sighup(
    mut hup: Signal,
    generator: Arc<Generator>,
    path: Option<PathBuf>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            received = hup.recv() => if received.is_none() { return },
            () = stop.cancelled() => return,
        }
        tracing::info!(signal = "SIGHUP", "Reloading the configuration.");
        reload(&generator, path.as_deref(), true).await;
    }
}

/// Re-reads the configuration and applies it when valid and different.
async fn reload(generator: &Generator, path: Option<&Path>, signal: bool) {
    if signal {
        systemd::reloading();
    }
    match load(path) {
        Ok(new) => {
            let current = generator.config.borrow().clone();
            if new != *current {
                if new.listen != current.listen {
                    tracing::warn!(
                        key = "listen",
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
            "Configuration reload failed; still running on the previous configuration:\n{errors}"
        ),
    }
    if signal {
        systemd::ready(&generator.status_line());
    }
}

/// Serves `GET /metrics` until `stop` is cancelled.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    generator: Arc<Generator>,
    stop: CancellationToken,
) {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let generator = generator.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let generator = generator.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        let mut response =
                            Response::new(Full::new(Bytes::from(generator.render_metrics())));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        response
                    } else {
                        anomalyd::http::error(
                            StatusCode::NOT_FOUND,
                            format!("no such endpoint `{}`; try GET /metrics", req.uri().path()),
                        )
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
