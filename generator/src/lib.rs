//! `anomaly-generator`: synthesizes a realistic metric stream (base level,
//! season, trend, noise, injected outliers) and posts it to `anomalyd`, or
//! writes it to stdout, with the ground truth of every injected outlier.
//!
//! # Layout
//!
//! - [`service`]: the generator as a service, on the shell shared with
//!   `anomalyd` (signals, reload loop, status, watchdog).
//! - [`produce`]: the scheduler producing points in virtual-time order.
//! - [`deliver`]: the per-target senders with retries and backoff.
//! - [`run`]: the shared state of a run (queues, counters, metrics).
//! - [`metrics_http`]: the `GET /metrics` endpoint.
//! - [`client`]: the kept-alive HTTP client posting to `/detect`.
//! - [`queue`]: the bounded queue of points waiting for delivery.
//! - [`model`]: the pure, seeded signal model.
//! - [`config`]: the TOML configuration; [`cli`]: the command line.

pub mod cli;
pub mod client;
pub mod config;
pub mod deliver;
pub mod metrics_http;
pub mod model;
pub mod produce;
pub mod queue;
pub mod run;
pub mod service;
