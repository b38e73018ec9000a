//! End-to-end tests: each starts the real `anomalyd` binary on 127.0.0.1 and
//! checks what a user would observe.

/// Fixtures: the daemon under test, an HTTP client, polling.
mod helper;

/// A stream with a known spike: replies, `GET /anomalies`, the log, restart.
mod detect_flow;

/// Every kind of bad input gets the right status and a message naming the
/// field, and changes nothing.
mod bad_input;

/// Durability: kill -9 after acknowledged anomalies, a full disk.
mod durability;

/// Slow and idle clients, connection and series limits.
mod limits;

/// `anomalyd replay` agrees with the server; CLI exit codes.
mod cli;

/// Configuration reload: rename-over, symlink swap, conf.d, invalid files.
mod reload;

/// SIGHUP rotation (storm under load, logrotate's way) and shutdown.
mod signals;

/// sd_notify messages on a notify socket, watchdog pings.
mod systemd;

/// `/metrics` moving with traffic and reloads, promtool, health endpoints.
mod metrics;

/// anomaly-generator: reproducibility, detection quality against labels,
/// delivery through restarts and lost replies, refusals, reload.
mod generator;

/// Man pages and shipped configs document every flag and key, with the
/// built-in defaults.
mod docs;

/// The shipped logrotate file run by the real logrotate against a loaded
/// daemon.
mod logrotate;

/// `GET /series`, `GET /series/{name}`, `/anomalies` filters and `time`.
mod series;

/// Episodes: one burst, one episode in replies, log, `/anomalies`,
/// `/episodes`, metrics and replay; the keys on reload.
mod episodes;

/// Detectors per rule (median_mad against a burst), switched on reload.
mod detectors;

/// `GET /events`: live anomalies, series and points; the cap; shutdown.
mod events;

/// The dashboard in headless chromium: live list, chart, anomalies,
/// reconnection after a restart.
mod browser;

/// The monitoring stack with the real programs: Prometheus remote-write.
mod stack;

/// InfluxDB line protocol: Telegraf's documented bodies, gzip, precision.
mod line_protocol;

/// Alert sinks: webhooks against a test receiver, the real Alertmanager.
mod alerting;

/// Tokens (Bearer, Token, Basic, the dashboard's cookie), protected mode,
/// rate limits.
mod access;

/// `listen = "unix:..."` with `socket_mode`, and systemd socket activation
/// through `systemd-socket-activate`.
mod sockets;

/// Alert sinks through a real HTTP proxy (tinyproxy), with credentials.
mod proxy;

/// TLS with certificates made by openssl and checked with curl: renewal on
/// reload, client certificates, the Secure cookie, the generator over
/// https.
mod tls;

/// State snapshots: restart with no warm-up (SIGTERM and kill -9), open
/// episodes, duplicates, changed settings, damaged files, a full disk.
mod snapshots;

/// Cluster members sharing the series through a real NATS JetStream.
mod cluster;
