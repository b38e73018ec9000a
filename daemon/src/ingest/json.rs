//! The JSON point formats: one object, an array of objects, and NDJSON (one
//! object per line), parsed with hand-written serde visitors so that every
//! error names the field and its position (`item N`, `line N`).
//!
//! The common shape goes through [`super::scan`] first; anything it does not
//! read without doubt comes here. This module calls the scanner, never the
//! other way round.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::point::{DEFAULT_SERIES, DataPoint, PointError, PointErrorKind, validate_point};
use super::scan;

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
    match scan::point(body) {
        Some(point) => Ok(point),
        None => from_json(body, PointSeed { item: None }),
    }
}

/// Parses and validates an NDJSON body: one object per line; blank lines
/// are skipped. Errors name the 1-based line.
pub fn parse_ndjson_body(body: &[u8]) -> Result<Vec<DataPoint<'_>>, PointError> {
    let mut points = Vec::with_capacity(body.len() / 48 + 1);
    let mut start = 0;
    let mut line_number = 0;
    while start < body.len() {
        line_number += 1;
        // The common line, read in one pass by the scanner.
        if let Some((point, next)) = scan::ndjson_point(body, start) {
            check_line(&point, line_number)?;
            points.push(point);
            start = next;
            continue;
        }
        // Anything else: the line on its own, blank or through serde.
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| start + i);
        let line = &body[start..end];
        start = end + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let point = parse_ndjson_line(line).map_err(|e| PointError {
            kind: e.kind,
            // Each line is parsed on its own, so serde_json's "line 1" is
            // meaningless: keep only the column.
            message: format!(
                "line {line_number}: {}",
                e.message.replace(" at line 1 column ", " at column ")
            ),
        })?;
        check_line(&point, line_number)?;
        points.push(point);
    }
    Ok(points)
}

/// Validates the point of NDJSON line `line_number`.
fn check_line(point: &DataPoint<'_>, line_number: usize) -> Result<(), PointError> {
    validate_point(point)
        .map_err(|message| PointError::invalid(format!("line {line_number}: {message}")))
}

/// Parses one NDJSON line (one JSON object) into a point.
pub fn parse_ndjson_line(line: &[u8]) -> Result<DataPoint<'_>, PointError> {
    match scan::point(line) {
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
    use super::super::point::{MAX_SEQ, MAX_SERIES_NAME_BYTES, MAX_TIMESTAMP};
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
        // Plausible unix seconds only: up to the last second of 9999.
        p.timestamp = Some(MAX_TIMESTAMP - 1.0);
        assert_eq!(validate_point(&p), Ok(()));
        for implausible in [MAX_TIMESTAMP, 1e300, 1.7e12, f64::INFINITY, f64::NAN] {
            p.timestamp = Some(implausible);
            let message = validate_point(&p).unwrap_err();
            assert!(message.starts_with("field `timestamp`"), "{message}");
        }
    }

    #[test]
    fn ndjson_validation_errors_name_the_line() {
        let body = b"{\"value\":1}\n\n  \n{\"value\":1e300}\n";
        let e = parse_ndjson_body(body).unwrap_err();
        assert_eq!(e.kind, PointErrorKind::Invalid);
        assert!(
            e.message.starts_with("line 4: field `value`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn huge_numbers_are_shown_short() {
        let e = parse_ndjson_body(b"{\"value\":1e308}").unwrap_err();
        assert!(e.message.contains("1e308"), "{}", e.message);
        assert!(e.message.len() < 120, "{}", e.message);
        let points = parse_json_body(b"[{\"value\":1,\"timestamp\":-1e200}]").unwrap();
        let e = super::super::validate_all(&points).unwrap_err();
        assert!(e.message.starts_with("item 0:"), "{}", e.message);
        assert!(e.message.contains("-1e200"), "{}", e.message);
        assert_eq!(super::super::short_number(1.5), "1.5");
        assert_eq!(super::super::short_number(1700000000.25), "1700000000.25");
    }

    #[test]
    fn seq_at_or_above_2_pow_63_is_invalid() {
        let ok = format!("{{\"value\":1,\"seq\":{MAX_SEQ}}}");
        assert_eq!(
            parse_ndjson_body(ok.as_bytes()).unwrap()[0].seq,
            Some(MAX_SEQ)
        );
        for seq in [MAX_SEQ + 1, u64::MAX] {
            let body = format!("{{\"value\":1,\"seq\":{seq}}}");
            let e = parse_ndjson_body(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, PointErrorKind::Invalid);
            assert!(e.message.contains("`seq`"), "{}", e.message);
            let point = parse_json_object(body.as_bytes()).unwrap();
            assert!(validate_point(&point).unwrap_err().contains("2^63"));
        }
    }
}

/// The scanner against the serde path: whatever the scanner reads, serde
/// reads the same; on anything else the scanner abstains. (Here, not in
/// `scan`, so that only this module calls the other.)
#[cfg(test)]
mod scanner_agreement {
    use super::parse_ndjson_line_with_serde as parse_ndjson_line;
    use super::scan::point;
    use proptest::prelude::*;

    /// NDJSON read the simple way, each line on its own (what
    /// `parse_ndjson_body` did before it read the body in one pass).
    fn line_by_line(body: &[u8]) -> Result<Vec<super::DataPoint<'_>>, super::PointError> {
        let mut points = Vec::new();
        for (index, line) in body.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let point = super::parse_ndjson_line(line).map_err(|e| super::PointError {
                kind: e.kind,
                message: format!(
                    "line {}: {}",
                    index + 1,
                    e.message.replace(" at line 1 column ", " at column ")
                ),
            })?;
            super::check_line(&point, index + 1)?;
            points.push(point);
        }
        Ok(points)
    }

    /// A JSON number text for `v`, in one of several spellings.
    fn spell(v: f64, style: u8) -> String {
        match style % 4 {
            0 => format!("{v:?}"),
            1 => format!("{v:e}"),
            2 => format!("{v:E}"),
            _ if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
            _ => format!("{v}"),
        }
    }

    proptest! {
        #[test]
        fn whatever_it_reads_serde_reads_the_same(
            value in prop_oneof![any::<f64>(), -1e6..1e6f64],
            style in any::<u8>(),
            timestamp in proptest::option::of(0.0..2e9f64),
            series in proptest::option::of("[a-zA-Z0-9._ é/-]{1,20}"),
            seq in proptest::option::of(any::<u64>()),
            order in any::<u64>(),
            ws in proptest::sample::select(vec!["", " ", "\t", " \r\n "]),
        ) {
            prop_assume!(value.is_finite());
            let mut fields = vec![format!("\"value\"{ws}:{ws}{}", spell(value, style))];
            if let Some(t) = timestamp {
                fields.push(format!("\"timestamp\":{ws}{}", spell(t, style / 4)));
            }
            if let Some(s) = &series {
                fields.push(format!("\"series\"{ws}:\"{s}\""));
            }
            if let Some(q) = seq {
                fields.push(format!("{ws}\"seq\":{q}{ws}"));
            }
            let n = fields.len();
            fields.rotate_left((order % n as u64) as usize);
            let text = format!("{ws}{{{}}}{ws}", fields.join(","));
            let fast = point(text.as_bytes());
            let slow = parse_ndjson_line(text.as_bytes());
            prop_assert!(fast.is_some(), "{text}");
            prop_assert_eq!(fast, slow.ok(), "{}", text);
        }

        #[test]
        fn ndjson_bodies_read_as_line_by_line(
            lines in proptest::collection::vec(proptest::sample::select(vec![
                r#"{"value": 1.5, "series": "a", "seq": 3}"#,
                r#"{"value":2,"timestamp":1700000000.25,"series":"b","seq":4}"#,
                "  {\"value\": -0.5}\r",
                "\t",
                "",
                " \r",
                r#"{"value": 1} x"#,
                r#"{"value": 1e400}"#,
                r#"{"value": 1, "series": "a\"b"}"#,
                r#"{"value":"#,
                "1}",
                r#"{"value": 1, "timestamp": -1}"#,
                r#"{"value": 1,"series":""}"#,
                "\x0c",
                "\x0c{\"value\": 1}",
            ]), 0..8),
            trailing_newline in any::<bool>(),
        ) {
            let mut body = lines.join("\n");
            if trailing_newline {
                body.push('\n');
            }
            prop_assert_eq!(
                super::parse_ndjson_body(body.as_bytes()),
                line_by_line(body.as_bytes()),
                "{:?}", body
            );
        }

        #[test]
        fn short_decimals_round_as_from_str_rounds_them(
            digits in 1u64..1_000_000_000_000_000,
            fraction in 0usize..=15,
            negative in any::<bool>(),
        ) {
            // At most 15 (the fast path) or 16+ digits (the slow one).
            let text = digits.to_string();
            let fraction = fraction.min(text.len() - 1);
            let (int, frac) = text.split_at(text.len() - fraction);
            let sign = if negative { "-" } else { "" };
            let number = if frac.is_empty() {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac}")
            };
            let json = format!("{{\"value\":{number}}}");
            let fast = point(json.as_bytes()).expect("a plain number");
            let expected: f64 = number.parse().unwrap();
            prop_assert_eq!(fast.value.to_bits(), expected.to_bits(), "{}", number);
        }

        #[test]
        fn on_any_input_it_agrees_with_serde_or_abstains(bytes in proptest::collection::vec(
            proptest::sample::select(b"{}\":,-+.eE0123456789 valuesrqtimp\\nul".to_vec()), 0..40)
        ) {
            if let Some(fast) = point(&bytes) {
                let slow = parse_ndjson_line(&bytes);
                prop_assert_eq!(Some(fast), slow.ok());
            }
        }
    }
}
