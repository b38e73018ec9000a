//! anomalyd: anomaly detection over HTTP, as a library the `anomalyd`
//! binary, the `replay` command, the generator and the tests share.
//!
//! # Layout
//!
//! Calls go down this list, never up; `scripts/module-graph` checks that
//! there is no cycle.
//!
//! - [`app`]: wiring of the running daemon, background tasks, shutdown
//!   order, state snapshots taken and restored; [`reload`]: what a reload
//!   changes in the running daemon.
//! - [`http`]: the HTTP edge (server, router, handlers, query, replies).
//! - [`commands`]: offline commands (`replay`).
//! - [`state`]: the state handlers and tasks share ([`state::AppState`]).
//! - [`service`]: the process shell both daemons share (signals, reload
//!   loop, config watcher, sd_notify, status, telemetry, runtime).
//! - [`anomalies`]: where anomalies go: the durable log, the recent list,
//!   journal events.
//! - [`live`]: fan-out of the dashboard's live events (`GET /events`).
//! - [`series`]: the table of live series and their detectors.
//! - [`metrics`]: Prometheus metrics and the text-format writer;
//!   [`process`]: the standard `process_*` metrics from `/proc/self`.
//! - [`alert`]: episode notifications to Alertmanager and webhooks
//!   (bounded queues, retries), never waited for by ingest.
//! - [`access`]: tokens, credentials and per-client rate limits.
//! - [`api`]: wire types of replies and the anomaly record.
//! - [`ingest`]: point formats (JSON, its fast scanner, NDJSON; Prometheus
//!   remote-write; InfluxDB line protocol) and point validation.
//! - [`detect`]: the pure detection logic (window statistics, the
//!   moving-average detector, verdicts).
//! - [`config`]: the TOML configuration, its loading, merge and validation.
//! - [`snapshot`]: the state snapshot file (versioned, checksummed,
//!   written atomically) around the series table's records.
//! - [`tls`]: rustls server and client configurations from PEM files;
//!   [`http_client`]: the kept-alive HTTP(S) client connection the alert
//!   sinks and the generator send with.
//! - [`cli`], [`clock`], [`fnv`], [`percent`], [`throttle`]: the command
//!   line, the wall clock, a hash stable across runs, strict
//!   percent-decoding, rate-limited warnings.
//!
//! # Tasks and channels
//!
//! One accept loop spawns a task per connection (tracked for the shutdown
//! drain). Handlers apply points to the [`series::SeriesTable`] under
//! per-shard locks, then send anomaly lines over a bounded channel to the
//! anomaly log's writer thread and wait for its answer before replying. A
//! housekeeping task ticks the writer once a second (retries, interval
//! fsync) and sweeps idle series; the reload loop runs reloads one at a
//! time; the status task refreshes systemd's `STATUS=`.

pub mod access;
pub mod alert;
pub mod anomalies;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod detect;
pub mod fnv;
pub mod http;
pub mod http_client;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod percent;
pub mod process;
pub mod reload;
pub mod series;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod throttle;
pub mod tls;
