//! anomalyd: anomaly detection over HTTP (library crate).

pub mod detector;
