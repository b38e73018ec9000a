//! Command-line interface of `anomalyd` (clap derive). No logic lives here:
//! `main.rs` acts on what this parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// anomalyd: detects anomalies in metric streams (moving average with
/// deviation thresholding) and logs them durably.
#[derive(Debug, Parser)]
#[command(name = "anomalyd", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file; `conf.d/*.toml` beside it is merged over it.
    /// [default: /etc/anomalyd/anomalyd.toml, or built-in defaults when that
    /// file does not exist]. With `evaluate`, each one given is a candidate.
    #[arg(short = 'c', long, value_name = "PATH", global = true, action = clap::ArgAction::Append)]
    pub config: Vec<PathBuf>,

    /// Validate the configuration, print the effective merged configuration
    /// and exit (0 when valid, 78 when not).
    #[arg(long)]
    pub check_config: bool,

    /// What to run instead of the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the detector over recorded points (NDJSON or CSV) without a server
    /// and print one NDJSON line per anomaly episode (the record of the point
    /// that opened it): a backtest for new settings.
    Replay(ReplayArgs),
    /// Score candidate configurations (each --config; none: the built-in
    /// defaults) on labelled points: precision, recall and F1 over
    /// episodes, detection delay, false episodes per 10,000 points.
    Evaluate(EvaluateArgs),
}

/// Arguments of `anomalyd evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The labelled incidents: anomaly-generator's --labels NDJSON, or CSV
    /// lines `series,start,end` (unix seconds, inclusive).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,

    /// Print the results as JSON (with figures per series).
    #[arg(long)]
    pub json: bool,

    /// Input format, as for replay.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,

    /// Skip (and count) points that cannot be parsed instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,

    /// Recorded points (NDJSON or CSV, with timestamps), read in order.
    #[arg(required = true, value_name = "POINTS")]
    pub files: Vec<PathBuf>,
}

/// Arguments of `anomalyd replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Input format; by default taken from the file extension (.csv,
    /// .ndjson/.jsonl/.json), else from the first line.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,

    /// Skip (and count) lines that cannot be parsed instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,

    /// Print the record of every anomalous point, not one line per
    /// episode.
    #[arg(long)]
    pub all_points: bool,

    /// Input files, read in order; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Formats `replay` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// `timestamp,value[,series]` with a header line.
    Csv,
    /// One JSON point object per line, as `POST /detect` takes.
    Ndjson,
}
