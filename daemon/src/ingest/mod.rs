//! Ingest: the formats points arrive in, turned into [`DataPoint`]s.
//!
//! This folder owns parsing and per-point validation: [`point`] (the point
//! and its checks), [`json`] (one object, an array, NDJSON) and [`scan`]
//! (the fast path for the common object shape, which `json` calls first).
//! Later formats (Influx line protocol, Prometheus remote-write) add a file
//! here each.
//!
//! It must not touch the series table, the anomaly log or HTTP: it takes
//! bytes and gives points or a [`PointError`] naming the field and position.

pub mod json;
pub mod point;
pub mod scan;

pub use json::{parse_json_body, parse_json_object, parse_ndjson_body, parse_ndjson_line};
pub use point::{
    DEFAULT_SERIES, DataPoint, MAX_ABS_VALUE, MAX_SEQ, MAX_SERIES_NAME_BYTES, MAX_TIMESTAMP,
    PointError, PointErrorKind, check_timestamp, short_number, validate_all, validate_point,
};
