//! Offline commands of the `anomalyd` binary: [`replay`] (a backtest over
//! files of points); later `evaluate`. They use the same ingest formats,
//! detectors and series table as the server, and never touch its HTTP
//! layer, its anomaly log or the service shell.

pub mod lines;
pub mod replay;
