//! The `anomalyd` binary: parse the command line, load the configuration,
//! and run the daemon or a subcommand. Exit codes: 0 success, 1 runtime
//! failure (for example the port is in use), 65 bad input data (`replay`),
//! 78 configuration error.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anomalyd::cli::{Cli, Command};
use anomalyd::config::{Config, DEFAULT_CONFIG_PATH};
use anomalyd::replay::{ReplayError, ReplayOptions};
use anomalyd::{app, telemetry};
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// sysexits.h EX_DATAERR: the input data was incorrect.
const EX_DATAERR: u8 = 65;
/// sysexits.h EX_CONFIG: configuration error.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match app::load_config(cli.config.as_deref()) {
        Ok(config) => Arc::new(config),
        Err(errors) => {
            errors.eprint("anomalyd");
            return ExitCode::from(EX_CONFIG);
        }
    };
    telemetry::init(&config.log);
    if cli.check_config {
        print!("{}", config.to_toml());
        eprintln!(
            "anomalyd: configuration is valid ({}).",
            describe_sources(&config)
        );
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Replay(args)) => replay(config, args),
        None => daemon(config, cli.config),
    }
}

fn describe_sources(config: &Config) -> String {
    if config.files.is_empty() {
        format!("{}; no file at {DEFAULT_CONFIG_PATH}", config.sources())
    } else {
        config.sources()
    }
}

fn replay(config: Arc<Config>, args: anomalyd::cli::ReplayArgs) -> ExitCode {
    let options = ReplayOptions {
        format: args.format,
        skip_bad: args.skip_bad,
        files: args.files,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match anomalyd::replay::replay(config, &options, &mut out) {
        Ok(summary) => {
            let _ = summary.print(&mut std::io::stderr().lock());
            ExitCode::SUCCESS
        }
        Err(e @ ReplayError::BadLine { .. }) => {
            let _ = out.flush();
            eprintln!("anomalyd replay: {e}");
            ExitCode::from(EX_DATAERR)
        }
        Err(e) => {
            eprintln!("anomalyd replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn daemon(config: Arc<Config>, config_path: Option<std::path::PathBuf>) -> ExitCode {
    if config.files.is_empty() {
        tracing::info!(
            path = DEFAULT_CONFIG_PATH,
            "No configuration file; running on built-in defaults."
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("anomalyd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("anomalyd: cannot listen on {listen}: {e} (is another process using the port? see [server] listen)");
                return ExitCode::FAILURE;
            }
        };
        // Install every handler before announcing the address: until then a
        // signal would take its default action (SIGHUP kills).
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("anomalyd: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map_or_else(|_| listen.to_string(), |a| a.to_string());
        // The first line on stdout: tests and scripts read the bound address here.
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, "Listening.");
        let shutdown = CancellationToken::new();
        let Signals { term, int, hup } = signals;
        tokio::spawn(wait_for_signal(term, int, shutdown.clone()));
        match app::run(listener, config, config_path, Some(hup), shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("anomalyd: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The signals the daemon handles.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT; a second one during the drain
/// exits at once with status 1.
async fn wait_for_signal(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "Received signal; shutting down (send it again to exit at once)."
    );
    shutdown.cancel();
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::warn!(
        signal = name,
        "Second signal during shutdown; exiting at once with status 1 (anomalies already acknowledged are in the log file)."
    );
    std::process::exit(1);
}
