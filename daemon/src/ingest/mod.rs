//! Ingest: the formats points arrive in, turned into [`DataPoint`]s.
//!
//! This folder owns parsing and per-point validation: [`point`] (the point
//! and its checks), [`json`] (one object, an array, NDJSON) and [`scan`]
//! (the fast path for the common object shape, which `json` calls first),
//! and the labelled formats: [`remote_write`] (Prometheus remote-write
//! 1.0) and [`line_protocol`] (InfluxDB line protocol), which decode to
//! [`samples::Samples`] named by [`labels`].
//!
//! It must not touch the series table, the anomaly log or HTTP: it takes
//! bytes and gives points or a [`PointError`] naming the field and position.

pub mod json;
pub mod labels;
pub mod line_protocol;
pub mod point;
pub mod remote_write;
pub mod samples;
pub mod scan;

pub use json::{parse_json_body, parse_json_object, parse_ndjson_body, parse_ndjson_line};
pub use labels::MAX_LABELLED_NAME_BYTES;
pub use line_protocol::{LineError, Precision, decode_line_protocol};
pub use point::{
    DEFAULT_SERIES, DataPoint, MAX_ABS_VALUE, MAX_SEQ, MAX_SERIES_NAME_BYTES, MAX_TIMESTAMP,
    PointError, PointErrorKind, check_timestamp, short_number, validate_all, validate_point,
};
pub use remote_write::{RemoteWriteError, decode_remote_write};
pub use samples::{Samples, SkipReason, Skipped};
