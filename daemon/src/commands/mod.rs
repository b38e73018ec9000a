//! Offline commands of the `anomalyd` binary: [`replay`] (a backtest over
//! files of points), [`evaluate`] (scores of candidate configurations on
//! labelled points), [`check`] (what `--check-config` checks beyond the
//! file). They use the same ingest formats,
//! detectors and series table as the server, and never touch its HTTP
//! layer, its anomaly log or the service shell.

pub mod check;
pub mod evaluate;
pub mod lines;
pub mod replay;
