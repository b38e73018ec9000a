//! The `anomalyd` binary: parse the command line, load the configuration,
//! and run the daemon or a subcommand. Exit codes: 0 success, 1 runtime
//! failure (for example the port is in use), 2 bad usage, 65 bad input data
//! (`replay`, `evaluate`), 78 configuration error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anomalyd::app;
use anomalyd::cli::{Cli, Command, EvaluateArgs, ReplayArgs};
use anomalyd::commands::check;
use anomalyd::commands::evaluate::{self, Candidate};
use anomalyd::commands::replay::{self, ReplayError, ReplayOptions};
use anomalyd::config::{self, Config, DEFAULT_CONFIG_PATH, ListenAddr};
use anomalyd::http::{BoundAddr, Listener};
use anomalyd::service::signals::Signals;
use anomalyd::service::{runtime, telemetry};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The name in diagnostics and in the journal (`SYSLOG_IDENTIFIER`).
const PROGRAM: &str = "anomalyd";
/// sysexits.h EX_DATAERR: the input data was incorrect.
const EX_DATAERR: u8 = 65;
/// sysexits.h EX_CONFIG: configuration error.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Evaluate(args)) = cli.command {
        telemetry::init(PROGRAM, Config::default().log.settings());
        return run_evaluate(&cli.config, args);
    }
    if cli.config.len() > 1 {
        eprintln!(
            "{PROGRAM}: --config may be given once (only `evaluate` takes several, as candidates)"
        );
        return ExitCode::from(2);
    }
    let config_path = cli.config.first().cloned();
    let config = match config::load(config_path.as_deref()) {
        Ok(config) => Arc::new(config),
        Err(errors) => {
            errors.eprint(PROGRAM);
            return ExitCode::from(EX_CONFIG);
        }
    };
    telemetry::init(PROGRAM, config.log.settings());
    if cli.check_config {
        return check_config(&config);
    }
    match cli.command {
        Some(Command::Replay(args)) => run_replay(config, args),
        Some(Command::Evaluate(_)) => unreachable!("handled above"),
        None => daemon(config, config_path),
    }
}

/// `--check-config`: prints the effective configuration, and checks that
/// the anomaly log can be written (creating nothing).
fn check_config(config: &Config) -> ExitCode {
    let log = &config.log.anomaly_log_file;
    match check::anomaly_log_writable(log) {
        Ok(note) => {
            print!("{}", config.to_toml());
            for warning in &config.notes.0 {
                eprintln!("{PROGRAM}: warning: {warning}");
            }
            if let Some(note) = note {
                eprintln!("{PROGRAM}: note: [log] anomaly_log_file: {note}.");
            }
            eprintln!(
                "{PROGRAM}: configuration is valid ({}).",
                describe_sources(config)
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!(
                "{PROGRAM}: [log] anomaly_log_file: {why}; the daemon could not log anomalies (check the path and the user it runs as)."
            );
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn describe_sources(config: &Config) -> String {
    if config.files.is_empty() {
        format!("{}; no file at {DEFAULT_CONFIG_PATH}", config.sources())
    } else {
        config.sources()
    }
}

/// `anomalyd evaluate`: each `--config` is a candidate (none: the built-in
/// defaults).
fn run_evaluate(configs: &[PathBuf], args: EvaluateArgs) -> ExitCode {
    let mut candidates = Vec::new();
    for path in configs {
        match Config::load(path) {
            Ok(config) => candidates.push(Candidate {
                name: path.display().to_string(),
                config: Arc::new(config),
            }),
            Err(errors) => {
                errors.eprint(PROGRAM);
                return ExitCode::from(EX_CONFIG);
            }
        }
    }
    if candidates.is_empty() {
        candidates.push(Candidate {
            name: "built-in defaults".into(),
            config: Arc::new(Config::default()),
        });
    }
    let options = ReplayOptions {
        format: args.format,
        skip_bad: args.skip_bad,
        all_points: false,
        files: args.files,
    };
    let max_line = candidates[0].config.server.max_body_bytes;
    match evaluate::evaluate(&candidates, &args.labels, &options, max_line) {
        Ok((scores, summary)) => {
            let mut out = std::io::stdout().lock();
            let written = if args.json {
                serde_json::to_writer_pretty(&mut out, &scores)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            } else {
                write!(out, "{}", evaluate::table(&scores))
            };
            if summary.skipped > 0 {
                eprintln!(
                    "{PROGRAM} evaluate: skipped {} bad line(s)",
                    summary.skipped
                );
            }
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{PROGRAM} evaluate: cannot write the results: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("{PROGRAM} evaluate: {e}");
            ExitCode::from(EX_DATAERR)
        }
    }
}

fn run_replay(config: Arc<Config>, args: ReplayArgs) -> ExitCode {
    let options = ReplayOptions {
        format: args.format,
        skip_bad: args.skip_bad,
        all_points: args.all_points,
        files: args.files,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match replay::replay(config, &options, &mut out) {
        Ok(summary) => {
            let _ = summary.print(&mut std::io::stderr().lock());
            ExitCode::SUCCESS
        }
        Err(e @ ReplayError::BadLine { .. }) => {
            let _ = out.flush();
            eprintln!("{PROGRAM} replay: {e}");
            ExitCode::from(EX_DATAERR)
        }
        Err(e) => {
            eprintln!("{PROGRAM} replay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The listeners: the sockets systemd passed (socket activation) where it
/// passed them, else `[server] listen` and `[server] admin_listen` bound
/// now. The main ones come first, the admin one (if any) second.
/// Protected mode holds for a passed socket too. The error is the exit
/// code, after the message.
async fn listeners(config: &Config) -> Result<(Vec<Listener>, Option<Listener>), ExitCode> {
    let server = &config.server;
    let inherited = Listener::from_systemd().map_err(|e| {
        eprintln!("{PROGRAM}: cannot use the sockets systemd passed (LISTEN_FDS): {e}");
        ExitCode::FAILURE
    })?;
    for listener in &inherited.main {
        let addr = listener.local_addr();
        if let Ok(BoundAddr::Tcp(addr)) = &addr
            && let Some(why) = config::unprotected(server, *addr)
        {
            eprintln!("{PROGRAM}: the socket systemd passed: {why}");
            return Err(ExitCode::from(EX_CONFIG));
        }
        if let Ok(addr) = &addr {
            tracing::info!(%addr, "Serving on a socket systemd passed (socket activation); [server] listen is not used.");
        }
    }
    if let Some(admin) = &inherited.admin
        && let Ok(addr) = admin.local_addr()
    {
        tracing::info!(%addr, "Serving the admin endpoints on the socket systemd passed as \"admin\"; [server] admin_listen is not used.");
    }
    let main = if inherited.main.is_empty() {
        vec![bind_main(server).await?]
    } else {
        inherited.main
    };
    let admin = match (inherited.admin, server.admin_listen) {
        (Some(admin), _) => Some(admin),
        (None, None) => None,
        (None, Some(admin)) => Some(
            Listener::bind(&admin.into(), server.socket_mode)
                .await
                .map_err(|e| {
                    eprintln!(
                        "{PROGRAM}: cannot listen on {admin}: {e} (is another process using the port? see [server] admin_listen)"
                    );
                    ExitCode::FAILURE
                })?,
        ),
    };
    Ok((main, admin))
}

/// Binds `[server] listen`.
async fn bind_main(server: &config::ServerConfig) -> Result<Listener, ExitCode> {
    Listener::bind(&server.listen, server.socket_mode)
        .await
        .map_err(|e| {
            let hint = match &server.listen {
                ListenAddr::Tcp(_) => "is another process using the port?",
                ListenAddr::Unix(_) => {
                    "does the directory exist, and may this user create files in it?"
                }
            };
            eprintln!(
                "{PROGRAM}: cannot listen on {}: {e} ({hint} see [server] listen)",
                server.listen
            );
            ExitCode::FAILURE
        })
}

fn daemon(config: Arc<Config>, config_path: Option<PathBuf>) -> ExitCode {
    runtime::keep_freed_heap();
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        commit = %env!("ANOMALYD_COMMIT"),
        files = %config.sources(),
        "Starting anomalyd."
    );
    for warning in &config.notes.0 {
        tracing::warn!("Configuration: {warning}");
    }
    if config.files.is_empty() {
        tracing::info!(
            path = DEFAULT_CONFIG_PATH,
            "No configuration file; running on built-in defaults."
        );
    }
    let runtime = match runtime::build(None) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, config_path))
}

async fn serve(config: Arc<Config>, config_path: Option<PathBuf>) -> ExitCode {
    let (listeners, admin) = match listeners(&config).await {
        Ok(listeners) => listeners,
        Err(code) => return code,
    };
    // Install every handler before announcing the address: until then a
    // signal would take its default action (SIGHUP kills).
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGUSR1 reopens the anomaly log (logrotate's postrotate).
    let reopen = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    {
        Ok(reopen) => reopen,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addresses: Vec<String> = listeners
        .iter()
        .map(|listener| match listener.local_addr() {
            Ok(addr) => addr.to_string(),
            Err(_) => config.server.listen.to_string(),
        })
        .collect();
    runtime::announce_listening(&addresses[0]);
    for addr in &addresses {
        tracing::info!(%addr, "Listening.");
    }
    if let Some(admin) = &admin
        && let Ok(admin_addr) = admin.local_addr()
    {
        runtime::announce("admin listening on", &admin_addr);
        tracing::info!(addr = %admin_addr, "Serving /healthz, /ready and /metrics on the admin address.");
    }
    let shutdown = CancellationToken::new();
    let finished = CancellationToken::new();
    let signal_task = tokio::spawn(signals.shutdown.graceful_then_exit(finished.clone(), {
        let shutdown = shutdown.clone();
        move |name| {
            tracing::info!(
                signal = name,
                "Received signal; shutting down (send it again to exit at once; anomalies already acknowledged are in the log file)."
            );
            shutdown.cancel();
        }
    }));
    let result = app::run(
        listeners,
        admin,
        config,
        config_path,
        Some(signals.hangup),
        Some(reopen),
        shutdown,
    )
    .await;
    finished.cancel();
    let _ = signal_task.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(app::AppError::Cluster(e)) if e.is_configuration() => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}
