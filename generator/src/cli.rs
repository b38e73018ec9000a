//! The command line of `anomaly-generator`.

use std::path::PathBuf;

use clap::Parser;

/// Synthesizes a realistic metric stream and posts it to anomalyd.
#[derive(Debug, Parser)]
#[command(name = "anomaly-generator", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: /etc/anomalyd/generator.toml, or
    /// built-in defaults when it does not exist].
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print a summary, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Send N points per series, then exit once all are acknowledged
    /// (status 1 if any was dropped or refused).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Write the points as NDJSON to stdout instead of posting them.
    #[arg(long)]
    pub stdout: bool,

    /// Write the ground truth to FILE: one NDJSON line per injected outlier.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,

    /// Start the virtual clock at T (unix seconds): timestamps are
    /// reproducible and points are produced as fast as they are delivered.
    #[arg(long, value_name = "T")]
    pub start_time: Option<f64>,

    /// Seed of the random numbers (overrides the configuration's `seed`).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}
