//! The process shell both daemons share: what makes `anomalyd` and
//! `anomaly-generator` behave alike under systemd and at the terminal.
//!
//! - [`signals`]: SIGTERM/SIGINT (first graceful, second exits 1), SIGHUP.
//! - [`reload`]: one loop that serialises reloads from SIGHUP and from the
//!   configuration [`watch`]er.
//! - [`status`]: the periodic `STATUS=` line; [`systemd`]: sd_notify.
//! - [`telemetry`]: diagnostics to journald or stderr, under the program's
//!   own name.
//! - [`runtime`]: the tokio runtime and the "listening on ADDR" line.
//!
//! Loading the configuration (explicit path, else default path, else
//! built-in defaults) is [`crate::config::load_or_builtin`].
//!
//! This folder knows nothing of either daemon's work: it must not touch
//! the series table, the anomaly log or HTTP routes. Each daemon passes in
//! what to do on a signal, a reload or a status tick.

pub mod reload;
pub mod runtime;
pub mod signals;
pub mod status;
pub mod systemd;
pub mod telemetry;
pub mod watch;
