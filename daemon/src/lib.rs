//! anomalyd: anomaly detection over HTTP, as a library the `anomalyd`
//! binary, the `replay` command, the generator and the tests share.
//!
//! # Layout
//!
//! - [`detector`]: the pure detection logic (sliding window, verdicts).
//! - [`config`]: the TOML configuration, its merge and validation.
//! - [`api`]: wire types of the HTTP API and the anomaly record; [`scan`]:
//!   its fast path for the common point shape.
//! - [`series`]: the table of live series and their detectors.
//! - [`store`]: recent anomalies served by `GET /anomalies`.
//! - [`anomaly_log`]: the durable JSON-lines anomaly log (writer thread).
//! - [`http`]: accept loop, limits, routing and handlers.
//! - [`app`]: wiring, background tasks and shutdown order.
//! - [`reload`], [`watch`]: configuration reload (SIGHUP, file watcher).
//! - [`metrics`]: Prometheus metrics; [`systemd`]: sd_notify.
//! - [`replay`]: the backtest command.
//! - [`cli`], [`telemetry`]: command line and diagnostics.
//!
//! # Tasks and channels
//!
//! One accept loop spawns a task per connection (tracked for the shutdown
//! drain). Handlers apply points to the [`series::SeriesTable`] under
//! per-shard locks, then send anomaly lines over a bounded channel to the
//! anomaly log's writer thread and wait for its answer before replying. A
//! housekeeping task ticks the writer once a second (retries, interval
//! fsync) and sweeps idle series.

pub mod anomaly_log;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod detector;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod replay;
pub mod scan;
pub mod series;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod watch;
