//! `anomaly-generator`: the companion daemon that synthesizes a metric stream
//! for `anomalyd`. Its implementation arrives with issue [3/5]; the crate
//! exists now so the workspace layout is stable.
