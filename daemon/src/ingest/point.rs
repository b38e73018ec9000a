//! One metric data point as the daemon receives it, whatever the format it
//! came in, and the checks every point passes before it is applied.
//!
//! The formats (`json`, with its `scan` fast path; later line protocol and
//! remote-write) all produce [`DataPoint`]s and report problems as
//! [`PointError`]s, whose kind decides between HTTP 400 and 422.

use std::borrow::Cow;

use serde::Serialize;

/// Longest accepted series name, in bytes.
pub const MAX_SERIES_NAME_BYTES: usize = 256;
/// Largest accepted `|value|`. Squares of larger values could overflow the
/// window's variance, so they are rejected with 422 instead.
pub const MAX_ABS_VALUE: f64 = 1e150;
/// Largest accepted `seq`: 2^63 - 1. A `seq` near `u64::MAX` would make
/// every later point of its series a duplicate; and 2^63 is where other
/// tools' signed 64-bit integers end.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// The first unix time not accepted as a timestamp: 10000-01-01T00:00:00Z.
/// A later one is a unit mix-up (milliseconds or nanoseconds sent as
/// seconds), not a time, and would overflow the microseconds of an
/// episode id.
pub const MAX_TIMESTAMP: f64 = 253_402_300_800.0;
/// Series name used when a point names none.
pub const DEFAULT_SERIES: &str = "default";

/// One metric data point, as posted to `/detect` or read by `replay`.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPoint<'a> {
    /// The measured value.
    pub value: f64,
    /// Unix seconds; `None` means "now" (the server's clock).
    pub timestamp: Option<f64>,
    /// The series the point belongs to.
    pub series: Cow<'a, str>,
    /// Per-series sequence number; a point whose `seq` is not above the last
    /// applied one of its series is a duplicate and is not applied again.
    pub seq: Option<u64>,
}

impl DataPoint<'_> {
    /// Appends the point as one JSON object (no newline), as `/detect`
    /// accepts it: `{"series":…,"value":…,"timestamp":…,"seq":…}`, leaving
    /// out an absent timestamp or seq.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) {
            out.extend_from_slice(key);
            // Strings, integers and finite floats into a Vec cannot fail.
            serde_json::to_writer(&mut *out, value).expect("point values serialise");
        }
        value(out, b"{\"series\":", self.series.as_ref());
        value(out, b",\"value\":", &self.value);
        if let Some(timestamp) = &self.timestamp {
            value(out, b",\"timestamp\":", timestamp);
        }
        if let Some(seq) = &self.seq {
            value(out, b",\"seq\":", seq);
        }
        out.push(b'}');
    }
}

/// Whether a body was malformed (HTTP 400) or well-formed but invalid (422).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointErrorKind {
    /// Not JSON at all, or truncated.
    Malformed,
    /// JSON, but a field is missing, of the wrong type or out of range.
    Invalid,
}

/// Why a request body could not be turned into data points.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PointError {
    /// Malformed (400) or invalid (422).
    pub kind: PointErrorKind,
    /// Human-readable description naming the field and position.
    pub message: String,
}

impl PointError {
    pub(crate) fn invalid(message: String) -> Self {
        Self {
            kind: PointErrorKind::Invalid,
            message,
        }
    }
}

/// Checks the parts of a point JSON cannot express: value range, finite
/// timestamp, series name length and characters.
pub fn validate_point(point: &DataPoint<'_>) -> Result<(), String> {
    if !point.value.is_finite() || point.value.abs() > MAX_ABS_VALUE {
        return Err(format!(
            "field `value`: {} is out of range (at most ±{MAX_ABS_VALUE:e})",
            short_number(point.value)
        ));
    }
    if let Some(ts) = point.timestamp
        && let Err(message) = check_timestamp(ts)
    {
        return Err(format!("field `timestamp`: {message}"));
    }
    if let Some(seq) = point.seq
        && seq > MAX_SEQ
    {
        return Err(format!(
            "field `seq`: {seq} is too large (at most 2^63 - 1 = {MAX_SEQ})"
        ));
    }
    let series = point.series.as_ref();
    if series.is_empty() {
        return Err("field `series`: must not be empty".into());
    }
    if series.len() > MAX_SERIES_NAME_BYTES {
        return Err(format!(
            "field `series`: is {} bytes long, at most {MAX_SERIES_NAME_BYTES} allowed",
            series.len()
        ));
    }
    let control = if series.is_ascii() {
        series.bytes().any(|b| b.is_ascii_control())
    } else {
        series.chars().any(char::is_control)
    };
    if control {
        return Err("field `series`: must not contain control characters".into());
    }
    Ok(())
}

/// Checks that `ts` is a plausible unix time in seconds: finite, not
/// negative and before the year 10000; the error says which and why.
#[inline]
pub fn check_timestamp(ts: f64) -> Result<(), String> {
    if !ts.is_finite() || ts < 0.0 {
        Err(format!(
            "{} is not a valid unix time (seconds since 1970, >= 0)",
            short_number(ts)
        ))
    } else if ts >= MAX_TIMESTAMP {
        Err(format!(
            "{} is after the year 9999: send unix time in seconds (not milliseconds or nanoseconds)",
            short_number(ts)
        ))
    } else {
        Ok(())
    }
}

/// A number as an error message shows it: short, in scientific notation
/// when large or tiny (`1e308`, not 309 digits).
pub fn short_number(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e16).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// Validates every point of a JSON array; the first bad one fails the
/// whole body, named by its index (NDJSON is validated as it is parsed,
/// with line numbers).
pub fn validate_all(points: &[DataPoint<'_>]) -> Result<(), PointError> {
    for (index, point) in points.iter().enumerate() {
        if let Err(message) = validate_point(point) {
            return Err(PointError::invalid(format!("item {index}: {message}")));
        }
    }
    Ok(())
}
