//! Offline commands of the `anomalyd` binary: [`replay`] (a backtest over
//! files of points), [`check`] (what `--check-config` checks beyond the file); later `evaluate`. They use the same ingest formats,
//! detectors and series table as the server, and never touch its HTTP
//! layer, its anomaly log or the service shell.

pub mod check;
pub mod lines;
pub mod replay;
