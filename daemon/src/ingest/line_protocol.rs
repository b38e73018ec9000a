//! InfluxDB line protocol, as Telegraf's `outputs.influxdb_v2` and
//! `outputs.influxdb` send it, decoded into [`Samples`].
//!
//! A line is `measurement[,tag=value...] field=value[,field=value...]
//! [timestamp]`. Each numeric field is one point of the series
//! `measurement_field{tag="value",...}`: in the measurement, field and tag
//! names every character outside `[a-zA-Z0-9_:]` becomes `_` (as a
//! Prometheus name must be); tag values are kept, escaped in the name as
//! [`super::labels`] escapes label values. Float, integer (`1i`),
//! unsigned (`1u`) and boolean (`t`, `false`, ...: 1 or 0) fields are
//! points; string fields are skipped and counted. Blank lines and `#`
//! comments are ignored.
//!
//! Escapes follow the protocol: `\,` and `\ ` in measurements; `\,`, `\=`
//! and `\ ` in tag keys, tag values and field keys; `\"` and `\\` in
//! string values; `\\` everywhere. A backslash before any other character
//! is a literal backslash.
//!
//! A malformed line fails the whole request, naming the line and what is
//! wrong; so does a timestamp that is not a plausible unix time.

use std::borrow::Cow;

use super::labels::{MAX_LABELLED_NAME_BYTES, push_sanitized, write_series_name};
use super::point::MAX_TIMESTAMP;
use super::samples::{Samples, SkipReason};

/// The unit of line-protocol timestamps: the `precision` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (`ns`, `n`): the default.
    #[default]
    Nanoseconds,
    /// Microseconds (`us`, `u`, `µ`).
    Microseconds,
    /// Milliseconds (`ms`).
    Milliseconds,
    /// Seconds (`s`).
    Seconds,
    /// Minutes (`m`, InfluxDB 1.x only).
    Minutes,
    /// Hours (`h`, InfluxDB 1.x only).
    Hours,
}

impl Precision {
    /// The precision named `name`, as the v2 API (`ns`, `us`, `ms`, `s`)
    /// or the v1 API (`n`, `u`, `ms`, `s`, `m`, `h`) spell it.
    pub fn parse(name: &str) -> Option<Precision> {
        Some(match name {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µ" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// `timestamp` in this unit as unix seconds. Whole seconds and the
    /// fraction are converted apart, so that `1556813561098000000` ns is
    /// the same `f64` as `1556813561.098` s (an `i64` of nanoseconds has
    /// more digits than an `f64` keeps).
    fn seconds(self, timestamp: i64) -> f64 {
        let split = |per_second: i64| {
            let whole = timestamp.div_euclid(per_second) as f64;
            let fraction = timestamp.rem_euclid(per_second) as f64 / per_second as f64;
            whole + fraction
        };
        match self {
            Precision::Nanoseconds => split(1_000_000_000),
            Precision::Microseconds => split(1_000_000),
            Precision::Milliseconds => split(1_000),
            Precision::Seconds => timestamp as f64,
            Precision::Minutes => timestamp as f64 * 60.0,
            Precision::Hours => timestamp as f64 * 3600.0,
        }
    }

    /// The name of the unit, for messages.
    fn unit(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
            Precision::Minutes => "m",
            Precision::Hours => "h",
        }
    }
}

/// A malformed line-protocol body: the line (from 1) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Decodes a line-protocol body whose timestamps are in `precision`.
/// Lines without a timestamp get the server's clock when applied.
pub fn decode_line_protocol(body: &[u8], precision: Precision) -> Result<Samples, LineError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let at = e.valid_up_to();
        LineError {
            line: 1 + body[..at].iter().filter(|&&b| b == b'\n').count(),
            message: format!("not UTF-8 (byte {at} of the body)"),
        }
    })?;
    let mut decoder = Decoder {
        samples: Samples::default(),
        precision,
        tags: Vec::new(),
        label_set: String::new(),
        fields: Vec::new(),
        metric: String::new(),
    };
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line).trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        decoder.line(line).map_err(|message| LineError {
            line: index + 1,
            message,
        })?;
    }
    Ok(decoder.samples)
}

/// State reused across the lines of one body.
struct Decoder<'a> {
    samples: Samples,
    precision: Precision,
    /// The current line's tags: sanitized key, unescaped value.
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The current line's `{tag="value",...}` (empty without tags).
    label_set: String,
    /// The current line's fields (kept to reuse the allocation).
    fields: Fields<'a>,
    /// The metric name being built (kept to reuse the allocation).
    metric: String,
}

/// Characters a backslash escapes in tag keys, tag values and field keys.
const KEY_ESCAPES: &[u8] = b",= \\";
/// Characters a backslash escapes in measurements.
const MEASUREMENT_ESCAPES: &[u8] = b", \\";

impl<'a> Decoder<'a> {
    fn line(&mut self, line: &'a str) -> Result<(), String> {
        let bytes = line.as_bytes();
        // Measurement and tags: up to the first unescaped space.
        let key_end = find_unescaped(bytes, 0, b" ");
        if key_end == bytes.len() {
            return Err(format!(
                "no field set in `{}` (expected `measurement[,tag=value...] field=value[,...] [timestamp]`)",
                shorten(line)
            ));
        }
        let key = &line[..key_end];
        let measurement_end = find_unescaped(key.as_bytes(), 0, b",");
        let measurement = unescape(&key[..measurement_end], MEASUREMENT_ESCAPES);
        if measurement.is_empty() {
            return Err("the measurement is empty".into());
        }
        self.tags(key, measurement_end)?;
        // Fields, then the optional timestamp.
        let fields_start = skip_spaces(bytes, key_end);
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        let fields_end = self.fields(line, fields_start, &mut fields)?;
        let rest = line[fields_end..].trim();
        let timestamp = if rest.is_empty() {
            None
        } else {
            Some(self.timestamp(rest)?)
        };
        let control = self
            .label_set
            .bytes()
            .any(|b| b.is_ascii_control() && b != b'\n');
        let mut metric = std::mem::take(&mut self.metric);
        metric.clear();
        push_sanitized(&mut metric, &measurement);
        metric.push('_');
        let prefix = metric.len();
        for (field, value) in fields.drain(..) {
            metric.truncate(prefix);
            push_sanitized(&mut metric, &field);
            let start = self.samples.name_buffer().len();
            let name = self.samples.name_buffer();
            name.push_str(&metric);
            name.push_str(&self.label_set);
            let too_long = name.len() - start > MAX_LABELLED_NAME_BYTES;
            let skip = match value {
                FieldValue::String => Some(SkipReason::StringField),
                _ if too_long => Some(SkipReason::NameTooLong),
                _ if control => Some(SkipReason::InvalidName),
                _ => None,
            };
            match (skip, value) {
                (Some(reason), _) => {
                    self.samples.skipped.add(reason);
                    self.samples.discard_name(start);
                }
                (None, FieldValue::Number(value)) => {
                    self.samples.set_series(start);
                    self.samples.push(value, timestamp);
                }
                (None, FieldValue::String) => unreachable!("string fields are skipped"),
            }
        }
        self.fields = fields;
        self.metric = metric;
        Ok(())
    }

    /// Reads the tags of `key` (from `at`, a `,` or the end) into
    /// `self.tags` and `self.label_set`.
    fn tags(&mut self, key: &'a str, mut at: usize) -> Result<(), String> {
        self.tags.clear();
        self.label_set.clear();
        let bytes = key.as_bytes();
        while at < bytes.len() {
            let start = at + 1; // after the ','
            let end = find_unescaped(bytes, start, b",");
            let pair = &key[start..end];
            let eq = find_unescaped(pair.as_bytes(), 0, b"=");
            if eq == pair.len() {
                return Err(format!("tag `{}` has no `=value`", shorten(pair)));
            }
            let (raw_key, raw_value) = (&pair[..eq], &pair[eq + 1..]);
            if raw_key.is_empty() || raw_value.is_empty() {
                return Err(format!("tag `{}`: empty tag key or value", shorten(pair)));
            }
            let name = sanitized(unescape(raw_key, KEY_ESCAPES));
            self.tags.push((name, unescape(raw_value, KEY_ESCAPES)));
            at = end;
        }
        write_series_name(&mut self.label_set, "", &mut self.tags);
        Ok(())
    }

    /// Reads the field set from `at` into `fields` (unescaped key and
    /// value); returns where the field set ends.
    fn fields(
        &self,
        line: &'a str,
        mut at: usize,
        fields: &mut Fields<'a>,
    ) -> Result<usize, String> {
        let bytes = line.as_bytes();
        loop {
            let key_end = find_unescaped(bytes, at, b"= ,");
            let raw_key = &line[at..key_end];
            if bytes.get(key_end) != Some(&b'=') {
                return Err(if raw_key.is_empty() {
                    "no field set (expected `field=value` after the measurement and tags)".into()
                } else {
                    format!("field `{}` has no `=value`", shorten(raw_key))
                });
            }
            if raw_key.is_empty() {
                return Err("a field has an empty name".into());
            }
            let key = unescape(raw_key, KEY_ESCAPES);
            let value_start = key_end + 1;
            let (value, value_end) = if bytes.get(value_start) == Some(&b'"') {
                let end = string_end(bytes, value_start + 1).ok_or_else(|| {
                    format!("field `{key}`: the string value has no closing `\"`")
                })?;
                (FieldValue::String, end + 1)
            } else {
                let end = bytes[value_start..]
                    .iter()
                    .position(|&b| b == b',' || b == b' ')
                    .map_or(bytes.len(), |p| value_start + p);
                let raw = &line[value_start..end];
                let value = parse_number(raw)
                    .ok_or_else(|| format!("field `{key}`: `{}` is not a valid field value (a float, an integer like `1i` or `1u`, a boolean, or a \"string\")", shorten(raw)))?;
                (FieldValue::Number(value), end)
            };
            fields.push((key, value));
            match bytes.get(value_end) {
                Some(b',') => at = value_end + 1,
                _ => return Ok(value_end),
            }
        }
    }

    /// A timestamp in the request's precision, as unix seconds.
    fn timestamp(&self, text: &str) -> Result<f64, String> {
        let unit = self.precision.unit();
        let raw: i64 = text.parse().map_err(|_| {
            format!(
                "`{}` is not a timestamp (an integer, in {unit} as the `precision` parameter says)",
                shorten(text)
            )
        })?;
        let seconds = self.precision.seconds(raw);
        if raw < 0 || seconds >= MAX_TIMESTAMP {
            return Err(format!(
                "timestamp {raw} ({unit}) is not a plausible unix time (0 to the year 9999); is `precision` right?"
            ));
        }
        Ok(seconds)
    }
}

/// The fields of a line: unescaped key and value.
type Fields<'a> = Vec<(Cow<'a, str>, FieldValue)>;

/// A field's value: a number (booleans as 1 or 0) or a string.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FieldValue {
    Number(f64),
    String,
}

/// Parses a non-string field value: `1.5`, `-3e2`, `7i`, `7u`, `t`,
/// `false`, ...
fn parse_number(raw: &str) -> Option<f64> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(0.0),
        _ => {}
    }
    if let Some(int) = raw.strip_suffix('i') {
        return int.parse::<i64>().ok().map(|v| v as f64);
    }
    if let Some(uint) = raw.strip_suffix('u') {
        return uint.parse::<u64>().ok().map(|v| v as f64);
    }
    // Rust also reads `inf`, `NaN` and `infinity`; the protocol does not.
    let first = *raw.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    let last = *raw.as_bytes().last()?;
    if !(last.is_ascii_digit() || last == b'.') {
        return None;
    }
    raw.parse::<f64>().ok()
}

/// The position of the first byte of `stops` at or after `from` that no
/// backslash escapes, or the end.
fn find_unescaped(bytes: &[u8], from: usize, stops: &[u8]) -> usize {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if stops.contains(&b) => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The position of the `"` closing a string value that starts at `from`.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The position after the spaces at `from`.
fn skip_spaces(bytes: &[u8], mut from: usize) -> usize {
    while bytes.get(from) == Some(&b' ') {
        from += 1;
    }
    from
}

/// `name` with every character outside `[a-zA-Z0-9_:]` replaced by `_`,
/// borrowed when it has none.
fn sanitized(name: Cow<'_, str>) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return name;
    }
    let mut out = String::with_capacity(name.len());
    push_sanitized(&mut out, &name);
    Cow::Owned(out)
}

/// `raw` with `\c` replaced by `c` for each `c` in `escapes`; other
/// backslashes are literal.
fn unescape<'a>(raw: &'a str, escapes: &[u8]) -> Cow<'a, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && next.is_ascii()
            && escapes.contains(&(next as u8))
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// At most the first 100 bytes of `text`, for an error message.
fn shorten(text: &str) -> &str {
    let mut end = text.len().min(100);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str, precision: Precision) -> Vec<(String, f64, Option<f64>)> {
        let samples = decode_line_protocol(body.as_bytes(), precision).unwrap();
        samples
            .points()
            .iter()
            .map(|p| (p.series.to_string(), p.value, p.timestamp))
            .collect()
    }

    fn point(name: &str, value: f64, timestamp: Option<f64>) -> (String, f64, Option<f64>) {
        (name.to_owned(), value, timestamp)
    }

    /// The examples of InfluxDB's line protocol reference and Telegraf's
    /// documentation.
    #[test]
    fn documented_examples() {
        assert_eq!(
            decode(
                "myMeasurement,tag1=value1,tag2=value2 fieldKey=\"fieldValue\" 1556813561098000000",
                Precision::Nanoseconds
            ),
            []
        );
        assert_eq!(
            decode(
                "weather,location=us-midwest temperature=82 1465839830100400200",
                Precision::Nanoseconds
            ),
            [point(
                r#"weather_temperature{location="us-midwest"}"#,
                82.0,
                Some(1_465_839_830.100_400_2)
            )]
        );
        assert_eq!(
            decode(
                "cpu,cpu=cpu0,host=server01 usage_idle=98.5,usage_user=1i,ok=true,down=F",
                Precision::Nanoseconds
            ),
            [
                point(r#"cpu_usage_idle{cpu="cpu0",host="server01"}"#, 98.5, None),
                point(r#"cpu_usage_user{cpu="cpu0",host="server01"}"#, 1.0, None),
                point(r#"cpu_ok{cpu="cpu0",host="server01"}"#, 1.0, None),
                point(r#"cpu_down{cpu="cpu0",host="server01"}"#, 0.0, None),
            ]
        );
    }

    #[test]
    fn escapes_in_every_position() {
        // From the line protocol reference's "special characters" section.
        let body = concat!(
            "my\\ Measurement fieldKey=\"string value\"\n",
            "myMeasurement fieldKey=\"\\\"string\\\" within a string\"\n",
            "myMeasurement,tag\\ Key1=tag\\ Value1,tag\\ Key2=tag\\ Value2 fieldKey=100\n",
            "myMeasurement,tagKey=\\\"quoted\\\" field\\ Key\\,2\\=x=1i\n",
            "disk,path=C:\\\\Windows\\\\,mount=a\\=b used_bytes=5u 17\n",
            "my\\,meas\\ ure cost=-1.5e3\n",
        );
        assert_eq!(
            decode(body, Precision::Seconds),
            [
                point(
                    r#"myMeasurement_fieldKey{tag_Key1="tag Value1",tag_Key2="tag Value2"}"#,
                    100.0,
                    None
                ),
                point(
                    r#"myMeasurement_field_Key_2_x{tagKey="\\\"quoted\\\""}"#,
                    1.0,
                    None
                ),
                point(
                    r#"disk_used_bytes{mount="a=b",path="C:\\Windows\\"}"#,
                    5.0,
                    Some(17.0)
                ),
                point("my_meas_ure_cost", -1500.0, None),
            ]
        );
        let samples = decode_line_protocol(body.as_bytes(), Precision::Seconds).unwrap();
        assert_eq!(samples.skipped.get(SkipReason::StringField), 2);
    }

    #[test]
    fn every_precision_gives_the_same_time() {
        for (precision, timestamp) in [
            ("ns", "1700000040000000000"),
            ("n", "1700000040000000000"),
            ("us", "1700000040000000"),
            ("u", "1700000040000000"),
            ("ms", "1700000040000"),
            ("s", "1700000040"),
            ("m", "28333334"),
        ] {
            let precision = Precision::parse(precision).unwrap();
            let got = decode(&format!("m v=1 {timestamp}"), precision);
            assert_eq!(
                got,
                [point("m_v", 1.0, Some(1_700_000_040.0))],
                "{precision:?}"
            );
        }
        // Sub-second times are the f64 a client writing seconds would get.
        for (precision, timestamp) in [
            ("ns", "1556813561098000000"),
            ("us", "1556813561098000"),
            ("ms", "1556813561098"),
        ] {
            let got = decode(
                &format!("m v=1 {timestamp}"),
                Precision::parse(precision).unwrap(),
            );
            assert_eq!(got[0].2, Some(1_556_813_561.098), "{precision}");
        }
        let got = decode("m v=1 472222", Precision::parse("h").unwrap());
        assert_eq!(got[0].2, Some(1_699_999_200.0));
        assert_eq!(Precision::parse("seconds"), None);
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_fine() {
        let body = "# a comment\n\n  \r\nm,t=a v=1 1\r\n   m,t=b v=2 2\n";
        assert_eq!(
            decode(body, Precision::Seconds),
            [
                point(r#"m_v{t="a"}"#, 1.0, Some(1.0)),
                point(r#"m_v{t="b"}"#, 2.0, Some(2.0))
            ]
        );
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases: &[(&str, &str)] = &[
            ("m v=1\nonlymeasurement\n", "line 2: no field set"),
            ("m v=1\nm,t v=1\n", "line 2: tag `t` has no `=value`"),
            ("m,t= v=1", "line 1: tag `t=`: empty tag key or value"),
            (
                "m v=abc",
                "line 1: field `v`: `abc` is not a valid field value",
            ),
            (
                "m v=NaN",
                "line 1: field `v`: `NaN` is not a valid field value",
            ),
            (
                "m v=1.5i",
                "line 1: field `v`: `1.5i` is not a valid field value",
            ),
            (
                "m v=\"open",
                "line 1: field `v`: the string value has no closing",
            ),
            ("m v=1 12x", "line 1: `12x` is not a timestamp"),
            (
                "m v=1 -5",
                "line 1: timestamp -5 (ns) is not a plausible unix time",
            ),
            ("m v", "line 1: field `v` has no `=value`"),
            ("m =1", "line 1: a field has an empty name"),
            (",t=a v=1", "line 1: the measurement is empty"),
        ];
        for (body, expected) in cases {
            let e = decode_line_protocol(body.as_bytes(), Precision::Nanoseconds).unwrap_err();
            assert!(e.to_string().starts_with(expected), "{body:?}: {e}");
        }
        // Seconds sent where nanoseconds are expected are fine (an early
        // time); nanoseconds sent as seconds are not.
        let e = decode_line_protocol(b"m v=1 1700000000000000000", Precision::Seconds).unwrap_err();
        assert!(e.message.contains("is `precision` right?"), "{e}");
        let e = decode_line_protocol(b"m v=1\n\xff", Precision::Seconds).unwrap_err();
        assert_eq!(e.to_string(), "line 2: not UTF-8 (byte 6 of the body)");
    }

    #[test]
    fn long_names_and_out_of_range_values_are_skipped_and_counted() {
        let long = "x".repeat(MAX_LABELLED_NAME_BYTES);
        let body = format!("m,t={long} v=1\nm v=1e400,w=2\nm,t=a\tb v=3\n");
        let samples = decode_line_protocol(body.as_bytes(), Precision::Seconds).unwrap();
        let names: Vec<String> = samples
            .points()
            .iter()
            .map(|p| p.series.to_string())
            .collect();
        assert_eq!(names, ["m_w"]);
        assert_eq!(samples.skipped.get(SkipReason::NameTooLong), 1);
        assert_eq!(samples.skipped.get(SkipReason::InvalidValue), 1);
        assert_eq!(samples.skipped.get(SkipReason::InvalidName), 1);
    }
}
