//! The `anomaly-generator` binary. Exit codes: 0 success (and after
//! SIGTERM/SIGINT), 1 points dropped or refused in a `--count` run, or a
//! runtime failure, 78 configuration error.

use std::process::ExitCode;
use std::sync::Arc;

use anomaly_generator::cli::Cli;
use anomaly_generator::config::{self, GeneratorConfig};
use anomaly_generator::run::Options;
use anomaly_generator::service::{self, PROGRAM};
use anomalyd::service::{runtime, telemetry};
use clap::Parser;

/// sysexits.h EX_CONFIG.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            errors.eprint(PROGRAM);
            return ExitCode::from(EX_CONFIG);
        }
    };
    telemetry::init(PROGRAM, config.log);
    if cli.check_config {
        print_check(&config);
        return ExitCode::SUCCESS;
    }
    let options = Options {
        count: cli.count,
        stdout: cli.stdout,
        labels: cli.labels,
        start_time: cli.start_time,
        seed: cli.seed,
    };
    let runtime = match runtime::build(Some(2)) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(service::run(Arc::new(config), cli.config, options))
}

/// `--check-config`: what the configuration makes the generator do.
fn print_check(config: &GeneratorConfig) {
    let source = config.file.as_ref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    println!("posting to {}", config.target.url);
    for series in &config.series {
        println!("series {:?}: {}", series.name, series.pattern);
    }
    eprintln!("{PROGRAM}: configuration is valid ({source}).");
}
