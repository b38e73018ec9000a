//! Anomalies once detected: the durable JSON-lines log ([`log`], one writer
//! thread, and [`tail`], reading it back at start-up), the recent anomalies served on `GET /anomalies` ([`recent`]) and
//! the rate-limited journal events ([`journal`]). The alert sinks of
//! [9/11] join them here.
//!
//! This folder owns where anomalies go, not how they are found: it must not
//! touch the series table or the detectors, and knows nothing of HTTP.

pub mod journal;
pub mod log;
pub mod recent;
pub mod tail;

pub use journal::{ANOMALY_TARGET, AnomalyEvents};
pub use log::{AnomalyLog, AnomalyLogError, AnomalyLogSettings};
pub use recent::{Query, RecentAnomalies};
