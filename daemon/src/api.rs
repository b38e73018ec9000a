//! Wire types of the HTTP API: the points posted to `POST /detect`, the
//! replies, and the anomaly record served on `GET /anomalies` and written to
//! the anomaly log.
//!
//! This module only knows JSON. It parses request bodies into [`DataPoint`]s
//! with errors that name the field and position, and it defines the records
//! the rest of the daemon serialises. It has no hyper and no I/O, so the
//! generator and the `replay` command share it with the server.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::detector::Side;

/// Longest accepted series name, in bytes.
pub const MAX_SERIES_NAME_BYTES: usize = 256;
/// Largest accepted `|value|`. Squares of larger values could overflow the
/// window's variance, so they are rejected with 422 instead.
pub const MAX_ABS_VALUE: f64 = 1e150;
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
    fn invalid(message: String) -> Self {
        Self {
            kind: PointErrorKind::Invalid,
            message,
        }
    }
}

/// One anomaly: the record served on `GET /anomalies` and written as one
/// JSON line to the anomaly log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The point's `seq`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
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
        let mut out = Vec::with_capacity(192 + self.series.len());
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
        value(&mut out, b",\"logged\":", &self.logged);
        out.push(b'}');
        out
    }
}

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
    /// False when some anomaly could not yet be written to the log.
    pub logged: bool,
}

/// The `status` text of every successful `/detect` reply.
pub const STATUS_OK: &str = "Data received and processed";

/// Error body of every failed request: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What was wrong, naming the field or position.
    pub error: String,
}

/// Parses a JSON body: one object, or an array of objects (told apart by the
/// first non-space byte).
pub fn parse_json_body(body: &[u8]) -> Result<Vec<DataPoint<'_>>, PointError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'{') => Ok(vec![parse_json_object(body)?]),
        Some(b'[') => from_json(body, BatchSeed),
        Some(_) => Err(PointError {
            kind: PointErrorKind::Malformed,
            message: "malformed JSON: expected an object or an array of objects".into(),
        }),
        None => Err(PointError {
            kind: PointErrorKind::Malformed,
            message: "empty body: expected a JSON object or an array of objects".into(),
        }),
    }
}

/// Parses a body holding one JSON object (a single point).
pub fn parse_json_object(body: &[u8]) -> Result<DataPoint<'_>, PointError> {
    match crate::scan::point(body) {
        Some(point) => Ok(point),
        None => from_json(body, PointSeed { item: None }),
    }
}

/// Parses an NDJSON body: one object per line; blank lines are skipped.
/// Errors name the 1-based line.
pub fn parse_ndjson_body(body: &[u8]) -> Result<Vec<DataPoint<'_>>, PointError> {
    let mut points = Vec::with_capacity(body.len() / 48 + 1);
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let point = parse_ndjson_line(line).map_err(|e| PointError {
            kind: e.kind,
            // Each line is parsed on its own, so serde_json's "line 1" is
            // meaningless: keep only the column.
            message: format!(
                "line {}: {}",
                index + 1,
                e.message.replace(" at line 1 column ", " at column ")
            ),
        })?;
        points.push(point);
    }
    Ok(points)
}

/// Parses one NDJSON line (one JSON object) into a point.
pub fn parse_ndjson_line(line: &[u8]) -> Result<DataPoint<'_>, PointError> {
    match crate::scan::point(line) {
        Some(point) => Ok(point),
        None => from_json(line, PointSeed { item: None }),
    }
}

/// [`parse_ndjson_line`] without the fast path: serde alone (for tests that
/// compare the two).
#[doc(hidden)]
pub fn parse_ndjson_line_with_serde(line: &[u8]) -> Result<DataPoint<'_>, PointError> {
    from_json(line, PointSeed { item: None })
}

/// Checks the parts of a point JSON cannot express: value range, finite
/// timestamp, series name length and characters.
pub fn validate_point(point: &DataPoint<'_>) -> Result<(), String> {
    if !point.value.is_finite() || point.value.abs() > MAX_ABS_VALUE {
        return Err(format!(
            "field `value`: {} is out of range (at most ±{MAX_ABS_VALUE:e})",
            point.value
        ));
    }
    if let Some(ts) = point.timestamp
        && (!ts.is_finite() || ts < 0.0)
    {
        return Err(format!(
            "field `timestamp`: {ts} is not a valid unix time (seconds since 1970, >= 0)"
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
    if series.chars().any(char::is_control) {
        return Err("field `series`: must not contain control characters".into());
    }
    Ok(())
}

/// Parses and validates every point; the first bad one fails the whole body.
pub fn validate_all(points: &[DataPoint<'_>], batch: bool, ndjson: bool) -> Result<(), PointError> {
    for (index, point) in points.iter().enumerate() {
        if let Err(message) = validate_point(point) {
            let message = if ndjson {
                // NDJSON positions are lines; blank lines were skipped, so
                // name the point's ordinal instead of guessing a line.
                format!("point {}: {message}", index + 1)
            } else if batch {
                format!("item {index}: {message}")
            } else {
                message
            };
            return Err(PointError::invalid(message));
        }
    }
    Ok(())
}

fn from_json<'de, S>(body: &'de [u8], seed: S) -> Result<S::Value, PointError>
where
    S: DeserializeSeed<'de>,
{
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = seed.deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(value)
}

fn json_error(e: serde_json::Error) -> PointError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Data => PointErrorKind::Invalid,
        Category::Syntax | Category::Eof | Category::Io => PointErrorKind::Malformed,
    };
    let message = match kind {
        PointErrorKind::Malformed => format!("malformed JSON: {e}"),
        PointErrorKind::Invalid => e.to_string(),
    };
    PointError { kind, message }
}

/// Removes serde_json's " at line L column C" suffix, so that a wrapped error
/// does not carry its position twice.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

struct BatchSeed;

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Vec<DataPoint<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Vec<DataPoint<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of point objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut points = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(65_536));
        while let Some(point) = seq.next_element_seed(PointSeed {
            item: Some(points.len()),
        })? {
            points.push(point);
        }
        Ok(points)
    }
}

/// Deserialises one point object, naming the field (and the batch item) in
/// every error.
struct PointSeed {
    item: Option<usize>,
}

impl PointSeed {
    fn prefix(&self) -> String {
        match self.item {
            Some(i) => format!("item {i}: "),
            None => String::new(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for PointSeed {
    type Value = DataPoint<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let prefix = self.prefix();
        d.deserialize_map(self).map_err(|e| {
            let text = e.to_string();
            // Wrap only errors we did not already prefix ourselves.
            if prefix.is_empty() || text.starts_with(&prefix) {
                e
            } else {
                de::Error::custom(format!("{prefix}{}", strip_position(&text)))
            }
        })
    }
}

impl<'de> Visitor<'de> for PointSeed {
    type Value = DataPoint<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a point object like {"value": 1.5, "series": "cpu"}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let prefix = self.prefix();
        let mut value = None;
        let mut timestamp = None;
        let mut series = None;
        let mut seq = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "value" => {
                    check_repeat(&prefix, "value", value.is_some())?;
                    value = Some(map.next_value_seed(NumberField {
                        prefix: &prefix,
                        field: "value",
                        expected: "a number",
                    })?);
                }
                "timestamp" => {
                    check_repeat(&prefix, "timestamp", timestamp.is_some())?;
                    timestamp = map.next_value_seed(OptionalNumberField(NumberField {
                        prefix: &prefix,
                        field: "timestamp",
                        expected: "a number (unix seconds)",
                    }))?;
                }
                "series" => {
                    check_repeat(&prefix, "series", series.is_some())?;
                    series = Some(map.next_value_seed(StringField {
                        prefix: &prefix,
                        field: "series",
                    })?);
                }
                "seq" => {
                    check_repeat(&prefix, "seq", seq.is_some())?;
                    seq = Some(map.next_value_seed(SeqField { prefix: &prefix })?);
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "{prefix}unknown field `{other}`, expected one of `value`, `timestamp`, `series`, `seq`"
                    )));
                }
            }
        }
        let Some(value) = value else {
            return Err(de::Error::custom(format!(
                "{prefix}missing field `value` (a number)"
            )));
        };
        Ok(DataPoint {
            value,
            timestamp,
            series: series.unwrap_or(Cow::Borrowed(DEFAULT_SERIES)),
            seq,
        })
    }
}

fn check_repeat<E: de::Error>(prefix: &str, field: &str, seen: bool) -> Result<(), E> {
    if seen {
        Err(E::custom(format!("{prefix}duplicate field `{field}`")))
    } else {
        Ok(())
    }
}

/// Describes what a JSON value was, for "expected X, got Y" messages.
struct Unexpected;

impl Unexpected {
    fn of<E: de::Error>(prefix: &str, field: &str, expected: &str, got: de::Unexpected) -> E {
        E::custom(format!(
            "{prefix}field `{field}`: expected {expected}, got {got}"
        ))
    }
}

/// Re-labels an error raised while reading a field's value (for example a
/// number too large for a float) so that it names the field.
fn name_field<E: de::Error>(prefix: &str, field: &str, e: E) -> E {
    let text = e.to_string();
    // Only a number JSON cannot hold as a float is re-labelled: other errors
    // either name the field already or are syntax errors, which must stay
    // syntax errors (400, not 422).
    if text.starts_with("number out of range") {
        E::custom(format!(
            "{prefix}field `{field}`: {}",
            strip_position(&text)
        ))
    } else {
        e
    }
}

struct NumberField<'p> {
    prefix: &'p str,
    field: &'static str,
    /// What the field should hold, for "expected X, got Y".
    expected: &'static str,
}

impl<'de> DeserializeSeed<'de> for NumberField<'_> {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        let (prefix, field) = (self.prefix, self.field);
        d.deserialize_any(self)
            .map_err(|e| name_field(prefix, field, e))
    }
}

impl<'de> Visitor<'de> for NumberField<'_> {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expected)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            self.expected,
            de::Unexpected::Str(v),
        ))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f64, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            self.expected,
            de::Unexpected::Bool(v),
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            self.expected,
            de::Unexpected::Other("null"),
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            self.expected,
            de::Unexpected::Seq,
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            self.expected,
            de::Unexpected::Map,
        ))
    }
}

/// A number that may also be `null` (treated as absent).
struct OptionalNumberField<'p>(NumberField<'p>);

impl<'de> DeserializeSeed<'de> for OptionalNumberField<'_> {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalNumberField<'_> {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} or null", self.0.expected)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

struct StringField<'p> {
    prefix: &'p str,
    field: &'static str,
}

impl<'de> DeserializeSeed<'de> for StringField<'_> {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        let (prefix, field) = (self.prefix, self.field);
        d.deserialize_any(self)
            .map_err(|e| name_field(prefix, field, e))
    }
}

impl<'de> Visitor<'de> for StringField<'_> {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cow<'de, str>, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Float(v),
        ))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cow<'de, str>, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Signed(v),
        ))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cow<'de, str>, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Unsigned(v),
        ))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cow<'de, str>, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Bool(v),
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Cow<'de, str>, E> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Other("null"),
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Cow<'de, str>, A::Error> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Seq,
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Cow<'de, str>, A::Error> {
        Err(Unexpected::of(
            self.prefix,
            self.field,
            "a string",
            de::Unexpected::Map,
        ))
    }
}

struct SeqField<'p> {
    prefix: &'p str,
}

impl<'de> DeserializeSeed<'de> for SeqField<'_> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        let prefix = self.prefix;
        d.deserialize_any(self)
            .map_err(|e| name_field(prefix, "seq", e))
    }
}

impl<'de> Visitor<'de> for SeqField<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Signed(v),
        ))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Float(v),
        ))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Str(v),
        ))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<u64, E> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Bool(v),
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Other("null"),
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Seq,
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(Unexpected::of(
            self.prefix,
            "seq",
            "a non-negative integer",
            de::Unexpected::Map,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_point_parses_back() {
        let point = DataPoint {
            value: -0.1,
            timestamp: Some(1.7e9),
            series: Cow::Borrowed("a \"b\""),
            seq: Some(u64::MAX),
        };
        let mut out = Vec::new();
        point.write_json(&mut out);
        assert_eq!(parse_json_body(&out).unwrap(), vec![point]);
        let bare = DataPoint {
            value: 1.0,
            timestamp: None,
            series: Cow::Borrowed("x"),
            seq: None,
        };
        let mut out = Vec::new();
        bare.write_json(&mut out);
        assert_eq!(out, br#"{"series":"x","value":1.0}"#);
    }

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
                logged: true,
            },
        ];
        for reply in replies {
            assert_eq!(
                String::from_utf8(reply.to_json()).unwrap(),
                serde_json::to_string(&reply).unwrap()
            );
        }
    }

    fn one(body: &str) -> Result<DataPoint<'_>, PointError> {
        let mut points = parse_json_body(body.as_bytes())?;
        assert_eq!(points.len(), 1);
        Ok(points.remove(0))
    }

    #[test]
    fn parses_a_full_point() {
        let p = one(r#"{"value": 1.5, "timestamp": 10, "series": "cpu", "seq": 7}"#).unwrap();
        assert_eq!(
            p,
            DataPoint {
                value: 1.5,
                timestamp: Some(10.0),
                series: Cow::Borrowed("cpu"),
                seq: Some(7)
            }
        );
    }

    #[test]
    fn defaults_series_and_timestamp() {
        let p = one(r#" {"value": -3}"#).unwrap();
        assert_eq!(p.series, DEFAULT_SERIES);
        assert_eq!(p.timestamp, None);
        assert_eq!(p.seq, None);
        assert_eq!(p.value, -3.0);
        let p = one(r#"{"value": 1, "timestamp": null}"#).unwrap();
        assert_eq!(p.timestamp, None);
        let e = one(r#"{"value": 1, "timestamp": 1e400}"#).unwrap_err();
        assert!(
            e.message.contains("field `timestamp`: number out of range"),
            "{e}"
        );
        let e = one(r#"{"value": 1, "timestamp": [1]}"#).unwrap_err();
        assert!(
            e.message
                .contains("field `timestamp`: expected a number (unix seconds), got sequence"),
            "{e}"
        );
    }

    #[test]
    fn escaped_series_names_are_decoded() {
        let p = one(r#"{"value": 1, "series": "a\"b"}"#).unwrap();
        assert_eq!(p.series, "a\"b");
    }

    #[test]
    fn malformed_json_is_400_class() {
        for body in [r#"{"value": 1"#, "{value: 1}", "nope", "", "  "] {
            let e = parse_json_body(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, PointErrorKind::Malformed, "{body}: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"value": "x"}"#,
                "field `value`: expected a number, got string \"x\"",
            ),
            (r#"{"timestamp": 1}"#, "missing field `value`"),
            (
                r#"{"value": 1, "series": 5}"#,
                "field `series`: expected a string",
            ),
            (
                r#"{"value": 1, "seq": -1}"#,
                "field `seq`: expected a non-negative integer",
            ),
            (
                r#"{"value": 1, "seq": 1.5}"#,
                "field `seq`: expected a non-negative integer",
            ),
            (
                r#"{"value": 1, "timestamp": "now"}"#,
                "field `timestamp`: expected a number",
            ),
            (r#"{"value": 1, "vlaue": 2}"#, "unknown field `vlaue`"),
            (r#"{"value": 1, "value": 2}"#, "duplicate field `value`"),
        ];
        for (body, want) in cases {
            let e = one(body).unwrap_err();
            assert_eq!(e.kind, PointErrorKind::Invalid, "{body}: {e}");
            assert!(e.message.contains(want), "{body}: {e}");
            assert_eq!(e.message.matches(" at line ").count(), 1, "{body}: {e}");
        }
    }

    #[test]
    fn a_number_too_large_for_a_float_names_the_field() {
        let e = one(r#"{"value": 1e400}"#).unwrap_err();
        assert!(e.message.contains("`value`"), "{e}");
        assert!(e.message.contains("out of range"), "{e}");
    }

    #[test]
    fn batch_errors_name_the_item() {
        let e = parse_json_body(br#"[{"value": 1}, {"value": true}]"#).unwrap_err();
        assert_eq!(e.kind, PointErrorKind::Invalid);
        assert!(e.message.starts_with("item 1: field `value`"), "{e}");
        let e = parse_json_body(br#"[{"value": 1}, 3]"#).unwrap_err();
        assert!(e.message.starts_with("item 1: "), "{e}");
    }

    #[test]
    fn ndjson_errors_name_the_line() {
        let body = b"{\"value\": 1}\n\n{\"value\": 2}\n{\"value\": \"x\"}\n";
        let e = parse_ndjson_body(body).unwrap_err();
        assert!(e.message.starts_with("line 4: field `value`"), "{e}");
        assert!(e.message.ends_with("at column 13"), "{e}");
        let e = parse_ndjson_body(b"{\"value\": 1}\n{\"value\": x}\n").unwrap_err();
        assert_eq!(e.kind, PointErrorKind::Malformed, "{e}");
        assert!(e.message.starts_with("line 2: malformed JSON"), "{e}");
        let ok = parse_ndjson_body(b"{\"value\": 1}\r\n{\"value\": 2}").unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn validation_catches_what_json_cannot() {
        let mut p = one(r#"{"value": 1e200}"#).unwrap();
        assert!(validate_point(&p).unwrap_err().contains("`value`"));
        p.value = 1.0;
        p.series = Cow::Borrowed("");
        assert!(validate_point(&p).unwrap_err().contains("`series`"));
        let long = "x".repeat(MAX_SERIES_NAME_BYTES + 1);
        p.series = Cow::Owned(long);
        assert!(validate_point(&p).unwrap_err().contains("at most"));
        p.series = Cow::Borrowed("ok");
        p.timestamp = Some(-1.0);
        assert!(validate_point(&p).unwrap_err().contains("`timestamp`"));
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
            seq: None,
        };
        let mut line = Vec::new();
        rec.write_line(&mut line);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!String::from_utf8_lossy(&line).contains("seq"));
        let back: AnomalyRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, rec);
    }
}
