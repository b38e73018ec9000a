//! The wall clock, as unix seconds: the timestamp of a point that carries
//! none, and the times the metrics report.

use std::time::{SystemTime, UNIX_EPOCH};

/// The server's clock as unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
