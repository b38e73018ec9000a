//! Prometheus remote-write 1.0: a snappy-compressed protobuf
//! `WriteRequest`, decoded into [`Samples`].
//!
//! The four messages of the protocol that matter here are declared with
//! `prost` derives below (field numbers from Prometheus'
//! `prompb/remote.proto` and `prompb/types.proto`), so the build needs no
//! `protoc`. Metadata, exemplars and native histograms are other fields
//! and are skipped by the decoder. Label names and values are decoded as
//! byte slices of the decompressed body (no allocation per label) and
//! checked for UTF-8 here.
//!
//! Each series becomes the canonical name of [`super::labels`]. Stale
//! markers, NaN and ±Inf values, and names that are too long or not text
//! are skipped and counted; a body that is not snappy or not protobuf, or
//! a timestamp that is not a plausible unix time, fails the request.

use bytes::Bytes;
use prost::Message;

use super::labels::{MAX_LABELLED_NAME_BYTES, write_series_name};
use super::point::{MAX_TIMESTAMP, PointError, PointErrorKind};
use super::samples::{Samples, SkipReason};

/// The bit pattern of a Prometheus stale marker: a NaN that means "this
/// series ended", not a measurement.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// `prometheus.WriteRequest`: the body of a remote-write request.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: one series' labels and samples.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, `__name__` (the metric name) among them; sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`: a name and a value (UTF-8, checked on use).
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Label name.
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    /// Label value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `prometheus.Sample`: a value at a time.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value; [`STALE_NAN_BITS`] marks a stale series.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix time in milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a remote-write body could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteWriteError {
    /// The snappy data says it decompresses to more than the limit.
    #[error(
        "the body decompresses to {size} bytes, more than max_body_bytes ({max}); lower the sender's max_samples_per_send or raise [server] max_body_bytes"
    )]
    TooLarge {
        /// Decompressed size the snappy header announces.
        size: usize,
        /// `max_body_bytes`.
        max: usize,
    },
    /// Not snappy, not protobuf, or an implausible timestamp.
    #[error("{0}")]
    Malformed(String),
}

impl From<RemoteWriteError> for PointError {
    fn from(e: RemoteWriteError) -> Self {
        PointError {
            kind: PointErrorKind::Malformed,
            message: e.to_string(),
        }
    }
}

/// Decompresses and decodes a remote-write body. `max_decoded` bounds the
/// decompressed size (`max_body_bytes`), so a small body cannot expand
/// without bound.
pub fn decode_remote_write(body: &[u8], max_decoded: usize) -> Result<Samples, RemoteWriteError> {
    let size = snap::raw::decompress_len(body).map_err(|e| {
        RemoteWriteError::Malformed(format!(
            "the body is not snappy-compressed (block format, as remote-write sends it): {e}"
        ))
    })?;
    if size > max_decoded {
        return Err(RemoteWriteError::TooLarge {
            size,
            max: max_decoded,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| RemoteWriteError::Malformed(format!("corrupt snappy data: {e}")))?;
    let request = WriteRequest::decode(Bytes::from(raw)).map_err(|e| {
        RemoteWriteError::Malformed(format!(
            "the body is not a remote-write 1.0 WriteRequest (protobuf): {e}"
        ))
    })?;
    samples_of(&request)
}

/// The samples of a decoded request.
pub fn samples_of(request: &WriteRequest) -> Result<Samples, RemoteWriteError> {
    let mut samples = Samples::default();
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for (index, series) in request.timeseries.iter().enumerate() {
        let start = samples.name_buffer().len();
        let named = series_name(series, &mut labels, samples.name_buffer());
        let name_len = samples.name_buffer().len() - start;
        let skip = match named {
            Err(reason) => Some(reason),
            Ok(()) if name_len > MAX_LABELLED_NAME_BYTES => Some(SkipReason::NameTooLong),
            Ok(()) if name_len == 0 => Some(SkipReason::InvalidName),
            Ok(()) => None,
        };
        samples.set_series(start);
        for (position, sample) in series.samples.iter().enumerate() {
            let timestamp = timestamp_seconds(sample.timestamp).ok_or_else(|| {
                let name = &samples.name_buffer()[start..];
                RemoteWriteError::Malformed(format!(
                    "timeseries {index} (`{}`), sample {position}: timestamp {} ms is not a plausible unix time (0 to the year 9999, in milliseconds)",
                    truncated(name),
                    sample.timestamp
                ))
            })?;
            if sample.value.to_bits() == STALE_NAN_BITS {
                samples.skipped.add(SkipReason::Stale);
            } else if let Some(reason) = skip {
                samples.skipped.add(reason);
            } else {
                samples.push(sample.value, Some(timestamp));
            }
        }
        if skip.is_some() || series.samples.is_empty() {
            samples.discard_name(start);
        }
    }
    Ok(samples)
}

/// Appends the canonical name of `series` to `out`; an error when a label
/// is not UTF-8 or the name would hold a control character.
fn series_name<'a>(
    series: &'a TimeSeries,
    labels: &mut Vec<(&'a str, &'a str)>,
    out: &mut String,
) -> Result<(), SkipReason> {
    labels.clear();
    let mut metric = "";
    for label in &series.labels {
        let name = std::str::from_utf8(&label.name).map_err(|_| SkipReason::InvalidName)?;
        let value = std::str::from_utf8(&label.value).map_err(|_| SkipReason::InvalidName)?;
        if name == "__name__" {
            metric = value;
        } else {
            labels.push((name, value));
        }
    }
    // Label values may hold newlines: the name escapes them as `\n`. The
    // metric and label names are written as they are, so they may not.
    let control = |s: &str| s.bytes().any(|b| b.is_ascii_control());
    let control_value = |s: &str| s.bytes().any(|b| b.is_ascii_control() && b != b'\n');
    if control(metric) || labels.iter().any(|(n, v)| control(n) || control_value(v)) {
        return Err(SkipReason::InvalidName);
    }
    write_series_name(out, metric, labels);
    Ok(())
}

/// Milliseconds as unix seconds, if plausible (0 to the year 9999).
fn timestamp_seconds(millis: i64) -> Option<f64> {
    let seconds = millis as f64 / 1000.0;
    (millis >= 0 && seconds < MAX_TIMESTAMP).then_some(seconds)
}

/// At most the first 200 bytes of `name`, for an error message.
fn truncated(name: &str) -> &str {
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    fn encode(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    fn decoded(samples: &Samples) -> Vec<(String, f64, Option<f64>)> {
        samples
            .points()
            .iter()
            .map(|p| (p.series.to_string(), p.value, p.timestamp))
            .collect()
    }

    #[test]
    fn series_get_canonical_names_and_second_timestamps() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[
                        ("__name__", "node_load1"),
                        ("job", "node"),
                        ("instance", "web-1:9100"),
                    ],
                    &[(0.5, 1_700_000_000_000), (0.75, 1_700_000_015_500)],
                ),
                series(&[("__name__", "up")], &[(1.0, 1_700_000_000_000)]),
            ],
        };
        let samples = decode_remote_write(&encode(&request), 1 << 20).unwrap();
        assert_eq!(
            decoded(&samples),
            [
                (
                    r#"node_load1{instance="web-1:9100",job="node"}"#.to_owned(),
                    0.5,
                    Some(1_700_000_000.0)
                ),
                (
                    r#"node_load1{instance="web-1:9100",job="node"}"#.to_owned(),
                    0.75,
                    Some(1_700_000_015.5)
                ),
                ("up".to_owned(), 1.0, Some(1_700_000_000.0)),
            ]
        );
        assert_eq!(samples.skipped.total(), 0);
    }

    #[test]
    fn stale_markers_bad_values_and_bad_names_are_skipped_and_counted() {
        let long = "x".repeat(MAX_LABELLED_NAME_BYTES);
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "a")],
                    &[
                        (f64::from_bits(STALE_NAN_BITS), 1_000),
                        (f64::NAN, 2_000),
                        (f64::INFINITY, 3_000),
                        (7.0, 4_000),
                    ],
                ),
                series(&[("__name__", "b"), ("path", &long)], &[(1.0, 1_000)]),
                series(&[("__name__", "c"), ("tab", "a\tb")], &[(1.0, 1_000)]),
                series(&[], &[(1.0, 1_000)]),
                series(&[("__name__", "d"), ("nl", "a\nb")], &[(2.0, 1_000)]),
                TimeSeries {
                    // A label value that is not UTF-8.
                    labels: vec![Label {
                        name: Bytes::from_static(b"__name__"),
                        value: Bytes::from_static(b"\xff"),
                    }],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 1_000,
                    }],
                },
            ],
        };
        let samples = samples_of(&request).unwrap();
        assert_eq!(
            decoded(&samples),
            [
                ("a".to_owned(), 7.0, Some(4.0)),
                (r#"d{nl="a\nb"}"#.to_owned(), 2.0, Some(1.0))
            ]
        );
        assert_eq!(samples.skipped.get(SkipReason::Stale), 1);
        assert_eq!(samples.skipped.get(SkipReason::InvalidValue), 2);
        assert_eq!(samples.skipped.get(SkipReason::NameTooLong), 1);
        assert_eq!(samples.skipped.get(SkipReason::InvalidName), 3);
    }

    /// Found by `tests/fuzz.rs`: a newline in a metric or label name
    /// made a series name with a raw newline.
    #[test]
    fn a_newline_in_a_name_is_an_invalid_name() {
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "a\nb")], &[(1.0, 1_000)]),
                series(&[("__name__", "c"), ("x\ny", "v")], &[(1.0, 1_000)]),
            ],
        };
        let samples = samples_of(&request).unwrap();
        assert!(samples.is_empty());
        assert_eq!(samples.skipped.get(SkipReason::InvalidName), 2);
    }

    #[test]
    fn bad_bodies_and_timestamps_fail_the_request_naming_the_position() {
        let err = decode_remote_write(b"\x05not snappy", 1 << 20).unwrap_err();
        assert!(
            matches!(err, RemoteWriteError::Malformed(ref m) if m.contains("snappy")),
            "{err}"
        );
        let not_protobuf = snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap();
        let err = decode_remote_write(&not_protobuf, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("WriteRequest"), "{err}");
        for millis in [-1, 253_402_300_800_000] {
            let request = WriteRequest {
                timeseries: vec![
                    series(&[("__name__", "ok")], &[(1.0, 1_000)]),
                    series(&[("__name__", "late")], &[(1.0, 2_000), (1.0, millis)]),
                ],
            };
            let err = decode_remote_write(&encode(&request), 1 << 20).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "timeseries 1 (`late`), sample 1: timestamp {millis} ms is not a plausible unix time (0 to the year 9999, in milliseconds)"
                )
            );
        }
    }

    /// A body a real Prometheus (Debian's 2.42) sent: its own metrics,
    /// scraped with a target label holding `"` and `\`.
    #[test]
    fn a_body_captured_from_prometheus_decodes() {
        let body = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/remote-write-prometheus-2.42.bin"
        ));
        let samples = decode_remote_write(body, 1 << 20).unwrap();
        // 50 samples; Prometheus' own summaries have NaN quantiles before
        // their first observation, which are no points.
        assert_eq!(samples.len(), 47);
        assert_eq!(
            samples.skipped.get(SkipReason::InvalidValue),
            3,
            "{:?}",
            samples.skipped
        );
        let points = samples.points();
        let up = points
            .iter()
            .find(|p| p.series.starts_with("up{"))
            .expect("the scrape's `up` sample");
        assert_eq!(
            up.series,
            r#"up{env="quote\"back\\slash",instance="127.0.0.1:19290",job="self"}"#
        );
        assert_eq!(up.value, 1.0);
        for point in &points {
            let name = super::super::labels::parse_series_name(&point.series).unwrap();
            assert_eq!(name.label("job"), Some("self"), "{}", point.series);
            assert_eq!(name.label("env"), Some("quote\"back\\slash"));
            let timestamp = point.timestamp.unwrap();
            assert!((1.7e9..2.1e9).contains(&timestamp), "{timestamp}");
        }
    }

    #[test]
    fn the_decompressed_size_is_bounded() {
        // 1 MiB of zeros compresses to a few kilobytes.
        let bomb = snap::raw::Encoder::new()
            .compress_vec(&vec![0; 1 << 20])
            .unwrap();
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            decode_remote_write(&bomb, 1000).unwrap_err(),
            RemoteWriteError::TooLarge {
                size: 1 << 20,
                max: 1000
            }
        );
    }
}
