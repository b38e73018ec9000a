//! `anomaly-generator`: synthesizes a realistic metric stream (base level,
//! season, trend, noise, injected outliers) and posts it to `anomalyd`, or
//! writes it to stdout, with the ground truth of every injected outlier.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration.
//! - [`model`]: the pure, seeded signal model.
//! - [`queue`]: the bounded queue of points waiting for delivery.
//! - [`client`]: the kept-alive HTTP client posting to `/detect`.
//! - [`run`]: scheduling, delivery with retries, shutdown and reload.
//! - [`cli`]: the command line.

pub mod cli;
pub mod client;
pub mod config;
pub mod model;
pub mod queue;
pub mod run;
