//! Wire types the daemon writes: the replies of `POST /detect`, the error
//! body of every failed request, and the anomaly record served on
//! `GET /anomalies` and written as one line to the anomaly log.
//!
//! Plain data with serde derives and one hand-written serializer for the
//! single-point hot path; no hyper and no I/O, so the generator, `replay` and
//! the tests share it. The points clients send are in [`crate::ingest`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::detect::Side;
pub use crate::detect::episode::EpisodeEvent;

/// One anomaly: the record served on `GET /anomalies` and written as one
/// JSON line to the anomaly log.
///
/// Serialised with `time` (the timestamp in RFC 3339, UTC, milliseconds;
/// `null` outside years 1970..9999) after `timestamp`, so that `tail -f`
/// of the log reads without a converter; `time` is derived, so reading a
/// record ignores it (old lines have none).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AnomalyRecord {
    /// Series the point belongs to.
    pub series: String,
    /// The anomalous value.
    pub value: f64,
    /// The point's timestamp (unix seconds).
    pub timestamp: f64,
    /// Moving average of the window before the point.
    pub mean: f64,
    /// Population standard deviation of the window before the point.
    pub std_dev: f64,
    /// The threshold that was crossed (`mean + k·σ` or `mean − k·σ`).
    pub threshold: f64,
    /// The side that was crossed.
    pub direction: Side,
    /// How far outside the baseline the point lies, in effective standard
    /// deviations (`|value − mean| / σ_eff`, at most 1e6); `None` only for
    /// records read from a log written before scores existed.
    #[serde(default)]
    pub score: Option<f64>,
    /// The id of the episode the point is part of, `None` outside any
    /// episode (and in records written before episodes existed).
    #[serde(default)]
    pub episode: Option<u64>,
    /// The point's `seq`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl Serialize for AnomalyRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut record = serializer.serialize_struct("AnomalyRecord", 11)?;
        record.serialize_field("series", &self.series)?;
        record.serialize_field("value", &self.value)?;
        record.serialize_field("timestamp", &self.timestamp)?;
        record.serialize_field("time", &crate::clock::rfc3339_millis(self.timestamp))?;
        record.serialize_field("mean", &self.mean)?;
        record.serialize_field("std_dev", &self.std_dev)?;
        record.serialize_field("threshold", &self.threshold)?;
        record.serialize_field("direction", &self.direction)?;
        record.serialize_field("score", &self.score)?;
        record.serialize_field("episode", &self.episode)?;
        if let Some(seq) = self.seq {
            record.serialize_field("seq", &seq)?;
        } else {
            record.skip_field("seq")?;
        }
        record.end()
    }
}

impl AnomalyRecord {
    /// Appends this record as one JSON line (with the trailing `\n`) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Serialising plain numbers and strings into a Vec cannot fail.
        serde_json::to_writer(&mut *out, self).expect("anomaly record serialises");
        out.push(b'\n');
    }
}

/// Reply to a single point on `POST /detect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointReply {
    /// Always "Data received and processed".
    pub status: Cow<'static, str>,
    /// Series the point was applied to.
    pub series: String,
    /// True when the point's `seq` was already applied; nothing else happened.
    pub duplicate: bool,
    /// True while the window holds fewer than `min_samples` points.
    pub warming_up: bool,
    /// True when the point crossed a threshold.
    pub anomaly: bool,
    /// Moving average before the point (null while warming up).
    pub mean: Option<f64>,
    /// Standard deviation before the point (null while warming up).
    pub std_dev: Option<f64>,
    /// Upper threshold `mean + k·σ` (null while warming up).
    pub threshold: Option<f64>,
    /// Lower threshold `mean − k·σ`; present when the direction is `lower`
    /// or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_threshold: Option<f64>,
    /// How far outside the baseline the point lies, in effective standard
    /// deviations (null while warming up).
    pub score: Option<f64>,
    /// The id of the episode the point is part of (null outside any).
    pub episode: Option<u64>,
    /// Whether this point opened or closed that episode (null if neither).
    pub episode_event: Option<EpisodeEvent>,
    /// False only when the anomaly could not yet be written to the log.
    pub logged: bool,
}

impl PointReply {
    /// The reply as JSON, byte for byte what `serde_json::to_vec` writes,
    /// with the keys written as constants instead of escaped one by one:
    /// this is the single-point hot path.
    pub fn to_json(&self) -> Vec<u8> {
        fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) {
            out.extend_from_slice(key);
            // Strings, booleans and finite floats into a Vec cannot fail.
            serde_json::to_writer(&mut *out, value).expect("reply values serialise");
        }
        // Room for the longest reply (five floats of 17 digits with
        // lower_threshold, a 20-digit episode and its event), so the buffer
        // never grows: a regrowth (realloc and copy) cost 400 instructions
        // per request when the score made replies longer than the 192
        // bytes reserved before.
        let mut out = Vec::with_capacity(REPLY_ROOM + self.series.len());
        if self.status == STATUS_OK {
            // The constant needs no escaping.
            out.extend_from_slice(b"{\"status\":\"");
            out.extend_from_slice(STATUS_OK.as_bytes());
            out.push(b'"');
        } else {
            value(&mut out, b"{\"status\":", &*self.status);
        }
        value(&mut out, b",\"series\":", &self.series);
        value(&mut out, b",\"duplicate\":", &self.duplicate);
        value(&mut out, b",\"warming_up\":", &self.warming_up);
        value(&mut out, b",\"anomaly\":", &self.anomaly);
        value(&mut out, b",\"mean\":", &self.mean);
        value(&mut out, b",\"std_dev\":", &self.std_dev);
        value(&mut out, b",\"threshold\":", &self.threshold);
        if let Some(lower) = &self.lower_threshold {
            value(&mut out, b",\"lower_threshold\":", lower);
        }
        value(&mut out, b",\"score\":", &self.score);
        value(&mut out, b",\"episode\":", &self.episode);
        value(&mut out, b",\"episode_event\":", &self.episode_event);
        value(&mut out, b",\"logged\":", &self.logged);
        out.push(b'}');
        out
    }
}

/// Bytes [`PointReply::to_json`] reserves beside the series name.
const REPLY_ROOM: usize = 384;

/// Reply to a batch (JSON array or NDJSON) on `POST /detect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchReply {
    /// Always "Data received and processed".
    pub status: Cow<'static, str>,
    /// Number of points in the batch.
    pub received: usize,
    /// Points skipped because their `seq` was already applied.
    pub duplicates: usize,
    /// The anomalies the batch produced, in batch order.
    pub anomalies: Vec<AnomalyRecord>,
    /// The episodes the batch opened, as they were when opened, in batch
    /// order.
    #[serde(default)]
    pub episodes_opened: Vec<EpisodeRecord>,
    /// The episodes the batch closed, complete, in batch order.
    #[serde(default)]
    pub episodes_closed: Vec<EpisodeRecord>,
    /// False when some anomaly could not yet be written to the log.
    pub logged: bool,
}

/// One episode: consecutive trouble in a series, reported as one incident
/// (an item of `GET /episodes`, and of the batch reply's lists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// The series.
    pub series: String,
    /// The episode's id: the `seq` of the point that opened it, else that
    /// point's timestamp in microseconds. `(series, episode)` identifies it.
    pub episode: u64,
    /// Timestamp of the point that opened it (unix seconds).
    pub start: f64,
    /// Timestamp of the point that closed it; `None` while open.
    pub end: Option<f64>,
    /// Anomalous points in it, the opening one included.
    pub points: u64,
    /// The highest score of its points.
    pub peak_score: f64,
    /// The value of the point with that score.
    pub peak_value: f64,
    /// The side the opening point crossed.
    pub direction: Side,
}

/// The `status` text of every successful `/detect` reply.
pub const STATUS_OK: &str = "Data received and processed";

/// Error body of every failed request: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What was wrong, naming the field or position.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_point_reply_matches_serde() {
        let replies = [
            PointReply {
                status: STATUS_OK.into(),
                series: "cpu \"quoted\" \u{e9}\\".into(),
                duplicate: false,
                warming_up: false,
                anomaly: true,
                mean: Some(10.25),
                std_dev: Some(1e-300),
                threshold: Some(-1.5e150),
                lower_threshold: Some(0.1 + 0.2),
                score: Some(1e6),
                episode: Some(u64::MAX),
                episode_event: Some(EpisodeEvent::Opened),
                logged: false,
            },
            PointReply {
                status: STATUS_OK.into(),
                series: "default".into(),
                duplicate: true,
                warming_up: true,
                anomaly: false,
                mean: None,
                std_dev: None,
                threshold: None,
                lower_threshold: None,
                score: None,
                episode: None,
                episode_event: None,
                logged: true,
            },
            PointReply {
                status: "not \"the\" usual".into(),
                series: "x".into(),
                duplicate: false,
                warming_up: true,
                anomaly: false,
                mean: None,
                std_dev: None,
                threshold: None,
                lower_threshold: None,
                score: None,
                episode: None,
                episode_event: None,
                logged: true,
            },
        ];
        for reply in replies {
            let json = reply.to_json();
            assert_eq!(
                String::from_utf8(json.clone()).unwrap(),
                serde_json::to_string(&reply).unwrap()
            );
            assert!(
                json.len() <= json.capacity() && json.capacity() == REPLY_ROOM + reply.series.len(),
                "never regrown"
            );
        }
    }

    #[test]
    fn records_round_trip_as_one_line() {
        let rec = AnomalyRecord {
            series: "cpu".into(),
            value: 99.5,
            timestamp: 1_700_000_000.25,
            mean: 45.0,
            std_dev: 2.5,
            threshold: 52.5,
            direction: Side::Upper,
            score: Some(18.0),
            episode: Some(1_700_000_000_250_000),
            seq: None,
        };
        let mut line = Vec::new();
        rec.write_line(&mut line);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!String::from_utf8_lossy(&line).contains("seq"));
        let back: AnomalyRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, rec);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"series\":\"cpu\",\"value\":99.5,\"timestamp\":1700000000.25,\
             \"time\":\"2023-11-14T22:13:20.250Z\",\"mean\":45.0,\"std_dev\":2.5,\
             \"threshold\":52.5,\"direction\":\"upper\",\"score\":18.0,\
             \"episode\":1700000000250000}\n"
        );
    }

    #[test]
    fn old_records_without_time_still_read() {
        let old = r#"{"series":"a","value":5.0,"timestamp":3.0,"mean":1.0,"std_dev":1.0,"threshold":4.0,"direction":"upper","seq":7}"#;
        let record: AnomalyRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.seq, Some(7));
        assert_eq!(record.score, None, "written before scores existed");
        assert_eq!(record.episode, None, "written before episodes existed");
        let mut line = Vec::new();
        record.write_line(&mut line);
        assert!(
            String::from_utf8(line)
                .unwrap()
                .contains(r#""time":"1970-01-01T00:00:03.000Z""#)
        );
    }
}
