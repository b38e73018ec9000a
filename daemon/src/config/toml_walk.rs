//! A small, generic toolkit for reading spanned TOML configuration files.
//!
//! It knows nothing of any particular daemon's keys: it parses a document,
//! maps byte offsets to line/column, and offers typed getters that record a
//! [`ConfigProblem`] (file, dotted key, line, column, actionable message)
//! instead of failing fast, so that every problem of every file can be
//! reported at once. It also parses and formats human durations such as
//! `"500ms"`, `"30s"` or `"1h30m"`.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The dotted key, e.g. `detector.window_size` or `rule[2].series`
    /// (1-based index), when the problem concerns one key.
    pub key: Option<String>,
    /// 1-based line and column (in characters) of the offending text.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading a configuration, in report order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Every problem on one line, separated by `; `: log lines must not
    /// span lines (line-oriented tools would lose the rest).
    pub fn one_line(&self) -> String {
        self.0
            .iter()
            .map(|problem| problem.to_string().replace(['\r', '\n'], " "))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Prints `PROGRAM: invalid configuration (N problem(s)):` and one
    /// indented line per problem on stderr, as both daemons do at start-up.
    pub fn eprint(&self, program: &str) {
        eprintln!(
            "{program}: invalid configuration ({} problem(s)):",
            self.0.len()
        );
        for problem in &self.0 {
            eprintln!("  {problem}");
        }
    }
}

/// One configuration file being read: its path, its text, a line index and
/// the problems recorded so far.
#[derive(Debug)]
pub struct Document<'t> {
    path: PathBuf,
    text: &'t str,
    line_starts: Vec<usize>,
    problems: Vec<ConfigProblem>,
}

impl<'t> Document<'t> {
    /// Prepare `text`, read from `path` (used only in problems).
    pub fn new(path: impl Into<PathBuf>, text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            path: path.into(),
            text,
            line_starts,
            problems: Vec::new(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line and column (counted in characters) of a byte offset.
    /// Offsets past the end map to the end of the text.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    /// Parse the text as a TOML document. A syntax error is recorded as a
    /// problem (with no key) and `None` is returned.
    pub fn parse(&mut self) -> Option<DeTable<'t>> {
        match DeTable::parse(self.text) {
            Ok(table) => Some(table.into_inner()),
            Err(error) => {
                let message = format!("TOML syntax error: {}", error.message().trim_end());
                self.report(None, error.span(), message);
                None
            }
        }
    }

    /// Build a problem for this file without recording it.
    pub fn problem(
        &self,
        key: Option<&str>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigProblem {
        ConfigProblem {
            file: self.path.clone(),
            key: key.map(str::to_owned),
            position: span.map(|span| self.line_col(span.start)),
            message: message.into(),
        }
    }

    /// Record a problem at `span` (if any) concerning `key` (if any).
    pub fn report(
        &mut self,
        key: Option<&str>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let problem = self.problem(key, span, message);
        self.problems.push(problem);
    }

    /// Whether any problem has been recorded.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The recorded problems, sorted by position (those without one first).
    pub fn into_problems(mut self) -> Vec<ConfigProblem> {
        self.problems.sort_by_key(|p| p.position);
        self.problems
    }

    /// Record an unknown key in `table` (e.g. `"[server]"` or
    /// `"the top level"`), listing the `known` keys.
    pub fn unknown_key(
        &mut self,
        key: &Spanned<Cow<'_, str>>,
        dotted: &str,
        table: &str,
        known: &[&str],
    ) {
        let message = format!(
            "unknown key \"{}\" in {table}; expected one of: {}",
            key.get_ref(),
            known.join(", ")
        );
        self.report(Some(dotted), Some(key.span()), message);
    }

    /// Record that `value` is not of the `expected` type (e.g. `"an integer"`).
    pub fn wrong_type(&mut self, key: &str, value: &Spanned<DeValue<'_>>, expected: &str) {
        let message = format!("expected {expected}, found {}", describe(value.get_ref()));
        self.report(Some(key), Some(value.span()), message);
    }

    /// Record that a value is outside `range`.
    fn out_of_range<T: fmt::Display>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        start: Bound<&T>,
        end: Bound<&T>,
        got: impl fmt::Display,
    ) {
        let message = format!("must be {}, got {got}", describe_range(start, end));
        self.report(Some(key), Some(value.span()), message);
    }

    /// The value as a table.
    pub fn table<'v, 'i>(
        &mut self,
        key: &str,
        value: &'v Spanned<DeValue<'i>>,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(key, value, &format!("a table ([{key}])"));
                None
            }
        }
    }

    /// The value as an array of tables (`[[key]]`): each element with its
    /// 1-based index and span. Elements that are not tables are reported.
    pub fn array_of_tables<'v, 'i>(
        &mut self,
        key: &str,
        value: &'v Spanned<DeValue<'i>>,
    ) -> Vec<(usize, Range<usize>, &'v DeTable<'i>)> {
        let DeValue::Array(array) = value.get_ref() else {
            self.wrong_type(key, value, &format!("an array of tables ([[{key}]])"));
            return Vec::new();
        };
        let mut tables = Vec::new();
        for (i, element) in array.iter().enumerate() {
            let index = i + 1;
            match element.get_ref() {
                DeValue::Table(table) => tables.push((index, element.span(), table)),
                _ => self.wrong_type(
                    &format!("{key}[{index}]"),
                    element,
                    &format!("a table ([[{key}]])"),
                ),
            }
        }
        tables
    }

    /// The value as a string.
    pub fn string<'v>(&mut self, key: &str, value: &'v Spanned<DeValue<'_>>) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(text) => Some(text),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    /// The value as a non-empty string, as a path.
    pub fn path_buf(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<PathBuf> {
        let text = self.string(key, value)?;
        if text.is_empty() {
            self.report(
                Some(key),
                Some(value.span()),
                "expected a file path, found an empty string",
            );
            return None;
        }
        Some(PathBuf::from(text))
    }

    /// The value as a boolean.
    pub fn boolean(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, value, "a boolean (true or false)");
                None
            }
        }
    }

    /// The value as an integer within `range`. Floats, strings and values
    /// that do not fit are reported.
    pub fn integer<T>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        range: impl RangeBounds<T>,
    ) -> Option<T>
    where
        T: Copy + fmt::Display + TryFrom<i128>,
        i128: TryFrom<T>,
    {
        let DeValue::Integer(int) = value.get_ref() else {
            self.wrong_type(key, value, "an integer");
            return None;
        };
        let bound = |b: Bound<&T>| match b {
            Bound::Included(v) => i128::try_from(*v).map_or(Bound::Unbounded, Bound::Included),
            Bound::Excluded(v) => i128::try_from(*v).map_or(Bound::Unbounded, Bound::Excluded),
            Bound::Unbounded => Bound::Unbounded,
        };
        let limits = (bound(range.start_bound()), bound(range.end_bound()));
        let parsed = i128::from_str_radix(int.as_str(), int.radix()).ok();
        let in_range = parsed.is_some_and(|n| limits.contains(&n));
        let converted = parsed
            .filter(|_| in_range)
            .and_then(|n| T::try_from(n).ok());
        if converted.is_none() {
            let got = if parsed.is_none() || in_range {
                format!("{int} (too large)")
            } else {
                int.to_string()
            };
            self.out_of_range(key, value, range.start_bound(), range.end_bound(), got);
        }
        converted
    }

    /// The value as a finite float within `range`. TOML integers are
    /// accepted; `nan` and `inf` are reported.
    pub fn float(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        range: impl RangeBounds<f64>,
    ) -> Option<f64> {
        let (number, text) = match value.get_ref() {
            DeValue::Integer(int) => (
                i128::from_str_radix(int.as_str(), int.radix())
                    .ok()
                    .map(|n| n as f64),
                int.to_string(),
            ),
            DeValue::Float(float) => (float.as_str().parse::<f64>().ok(), float.to_string()),
            _ => {
                self.wrong_type(key, value, "a number");
                return None;
            }
        };
        let short = |b: Bound<&f64>| b.map(|x| ShortFloat(*x));
        let (start, end) = (short(range.start_bound()), short(range.end_bound()));
        match number {
            Some(n) if n.is_finite() && range.contains(&n) => Some(n),
            Some(n) if n.is_finite() => {
                self.out_of_range(key, value, start.as_ref(), end.as_ref(), text);
                None
            }
            _ => {
                let message = format!(
                    "must be a finite number {}, got {text}",
                    describe_range(start.as_ref(), end.as_ref())
                );
                self.report(Some(key), Some(value.span()), message);
                None
            }
        }
    }

    /// The value as a duration string (see [`parse_duration`]) within `range`.
    pub fn duration(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        range: impl RangeBounds<Duration>,
    ) -> Option<Duration> {
        let text = match value.get_ref() {
            DeValue::String(text) => text,
            DeValue::Integer(_) | DeValue::Float(_) => {
                let number = describe(value.get_ref());
                let message = format!(
                    "expected a duration string with a unit (ms, s, m, h, d) such as \"30s\" or \
                     \"1h30m\", found {number}; quote it and add a unit"
                );
                self.report(Some(key), Some(value.span()), message);
                return None;
            }
            _ => {
                self.wrong_type(key, value, "a duration string such as \"30s\" or \"1h30m\"");
                return None;
            }
        };
        match parse_duration(text) {
            Ok(duration) if range.contains(&duration) => Some(duration),
            Ok(duration) => {
                let human = |b: Bound<&Duration>| b.map(|d| HumanDuration(*d));
                self.out_of_range(
                    key,
                    value,
                    human(range.start_bound()).as_ref(),
                    human(range.end_bound()).as_ref(),
                    HumanDuration(duration),
                );
                None
            }
            Err(message) => {
                self.report(Some(key), Some(value.span()), message);
                None
            }
        }
    }

    /// The value as one of the named `choices` (a string).
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let names = || {
            choices
                .iter()
                .map(|(name, _)| format!("\"{name}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let DeValue::String(text) = value.get_ref() else {
            self.wrong_type(key, value, &format!("one of {}", names()));
            return None;
        };
        if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == text.as_ref()) {
            return Some(*choice);
        }
        let message = format!("expected one of {}, got {}", names(), quote(text));
        self.report(Some(key), Some(value.span()), message);
        None
    }

    /// The value as a string parsed with [`FromStr`]; `expected` describes
    /// the accepted form, e.g. `"a socket address such as \"127.0.0.1:80\""`.
    pub fn parse_str<T: FromStr>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        expected: &str,
    ) -> Option<T> {
        let DeValue::String(text) = value.get_ref() else {
            self.wrong_type(key, value, expected);
            return None;
        };
        match text.parse() {
            Ok(parsed) => Some(parsed),
            Err(_) => {
                let message = format!("expected {expected}, got {}", quote(text));
                self.report(Some(key), Some(value.span()), message);
                None
            }
        }
    }
}

/// The entries of `table` in document order (by the position of their key),
/// whatever the map's own ordering.
pub fn entries<'a, 't>(
    table: &'a DeTable<'t>,
) -> Vec<(&'a Spanned<Cow<'t, str>>, &'a Spanned<DeValue<'t>>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// `prefix.key`, or `key` when `prefix` is empty.
pub fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A short description of a value for messages: `integer 30`,
/// `string "30s"`, `a table`...
pub fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("string {}", quote(s)),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// Describe a range for messages: `between 1 and 10`, `at least 1`,
/// `greater than 0 and less than 1`...
pub fn describe_range<T: fmt::Display>(start: Bound<&T>, end: Bound<&T>) -> String {
    match (start, end) {
        (Bound::Included(a), Bound::Included(b)) => format!("between {a} and {b}"),
        (Bound::Unbounded, Bound::Unbounded) => "any value".to_owned(),
        _ => {
            let lower = match start {
                Bound::Included(a) => Some(format!("at least {a}")),
                Bound::Excluded(a) => Some(format!("greater than {a}")),
                Bound::Unbounded => None,
            };
            let upper = match end {
                Bound::Included(b) => Some(format!("at most {b}")),
                Bound::Excluded(b) => Some(format!("less than {b}")),
                Bound::Unbounded => None,
            };
            lower
                .into_iter()
                .chain(upper)
                .collect::<Vec<_>>()
                .join(" and ")
        }
    }
}

/// `s` as a TOML basic string, quoted and escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a TOML float literal that parses back to the same value
/// (`3.0`, `1e-9`, `inf`, `nan`).
pub fn float_literal(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        // Debug prints the shortest representation that round-trips and
        // always includes a `.` or an exponent.
        format!("{value:?}")
    }
}

/// A bound shown short: `1e150`, not 151 digits.
struct ShortFloat(f64);

impl fmt::Display for ShortFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::ingest::short_number(self.0))
    }
}

/// Duration units, largest first, accepted by [`parse_duration`].
const UNITS: [(&str, Duration); 5] = [
    ("d", Duration::from_secs(86_400)),
    ("h", Duration::from_secs(3_600)),
    ("m", Duration::from_secs(60)),
    ("s", Duration::from_secs(1)),
    ("ms", Duration::from_millis(1)),
];

/// Parse a duration such as `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"` or a
/// combination with units in decreasing order such as `"1h30m"` or
/// `"1m30s500ms"`. The error is a message saying the expected form.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!(
            "invalid duration {}: {why}; expected whole numbers each followed by a unit \
             (ms, s, m, h, d), largest first, e.g. \"500ms\", \"30s\" or \"1h30m\"",
            quote(text)
        )
    };
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut previous_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid("a number is missing"));
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(invalid(&format!("\"{number}\" has no unit")));
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(invalid(&format!("unknown unit \"{unit}\"")));
        };
        if previous_unit.is_some_and(|previous| previous >= index) {
            return Err(invalid(&format!(
                "unit \"{unit}\" is repeated or out of order"
            )));
        }
        previous_unit = Some(index);
        let too_large = || invalid("it is too large");
        let count: u32 = number.parse().map_err(|_| too_large())?;
        let part = UNITS[index].1.checked_mul(count).ok_or_else(too_large)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = after;
    }
    Ok(total)
}

/// Format a duration in the form [`parse_duration`] reads, largest units
/// first (`"1h30m"`, `"500ms"`, `"0s"`). Sub-millisecond parts are dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, unit) in UNITS {
        let unit = unit.as_millis();
        if millis >= unit {
            out.push_str(&format!("{}{name}", millis / unit));
            millis %= unit;
        }
    }
    out
}

/// A [`Duration`] displayed with [`format_duration`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_valid_forms() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3_600)),
            ("1d", Duration::from_secs(86_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1d2h3m4s5ms", Duration::from_millis(93_784_005)),
            ("1m30s500ms", Duration::from_millis(90_500)),
            ("90s", Duration::from_secs(90)),
            ("007s", Duration::from_secs(7)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn parse_duration_rejects_invalid_forms() {
        let cases = [
            ("", "it is empty"),
            ("30", "\"30\" has no unit"),
            ("s", "a number is missing"),
            ("1.5s", "has no unit"),
            ("-1s", "a number is missing"),
            ("10x", "unknown unit \"x\""),
            ("10 s", "has no unit"),
            (" 10s", "a number is missing"),
            ("30m1h", "out of order"),
            ("1s1s", "repeated or out of order"),
            ("1msx", "unknown unit \"msx\""),
            ("99999999999d", "too large"),
        ];
        for (text, fragment) in cases {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(fragment), "{text}: {error}");
            assert!(
                error.contains("e.g. \"500ms\", \"30s\" or \"1h30m\""),
                "{error}"
            );
        }
    }

    #[test]
    fn format_duration_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(5_400), "1h30m"),
            (Duration::from_secs(86_400 * 3), "3d"),
            (Duration::from_millis(93_784_005), "1d2h3m4s5ms"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }

    #[test]
    fn line_col_counts_characters() {
        let doc = Document::new("x.toml", "ab\né = 1\n\nz");
        assert_eq!(doc.line_col(0), (1, 1));
        assert_eq!(doc.line_col(2), (1, 3));
        assert_eq!(doc.line_col(3), (2, 1));
        // "é" is two bytes: the "=" after "é " is the third character.
        assert_eq!(doc.line_col(6), (2, 3));
        assert_eq!(doc.line_col(10), (3, 1));
        assert_eq!(doc.line_col(11), (4, 1));
        assert_eq!(doc.line_col(12), (4, 2));
        assert_eq!(doc.line_col(100), (4, 2));
        // Inside a multi-byte character: rounds down to its start.
        assert_eq!(doc.line_col(4), (2, 1));
    }

    #[test]
    fn problem_display_omits_missing_parts() {
        let mut problem = ConfigProblem {
            file: PathBuf::from("/etc/anomalyd/anomalyd.toml"),
            key: Some("detector.window_size".into()),
            position: Some((3, 15)),
            message: "must be between 1 and 1000000, got 0".into(),
        };
        assert_eq!(
            problem.to_string(),
            "/etc/anomalyd/anomalyd.toml:3:15: detector.window_size: must be between 1 and \
             1000000, got 0"
        );
        problem.position = None;
        assert_eq!(
            problem.to_string(),
            "/etc/anomalyd/anomalyd.toml: detector.window_size: must be between 1 and 1000000, \
             got 0"
        );
        problem.key = None;
        problem.position = Some((1, 2));
        assert_eq!(
            problem.to_string(),
            "/etc/anomalyd/anomalyd.toml:1:2: must be between 1 and 1000000, got 0"
        );
        let errors = ConfigErrors(vec![problem.clone(), problem]);
        assert_eq!(errors.to_string().lines().count(), 2);
    }

    #[test]
    fn syntax_error_has_position_and_no_key() {
        let mut doc = Document::new("s.toml", "a = 1\nb = \n");
        assert!(doc.parse().is_none());
        let problems = doc.into_problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, None);
        assert_eq!(problems[0].position, Some((2, 5)));
        assert!(problems[0].message.starts_with("TOML syntax error: "));
    }

    #[test]
    fn getters_record_problems() {
        let text = "i = -3\nf = nan\ns = 3\nd = 30\nc = \"up\"\nb = \"yes\"\nbig = 99999999999999999999\nx = 2.5\nok = 7\n";
        let mut doc = Document::new("g.toml", text);
        let table = doc.parse().expect("valid TOML");
        let get = |k: &str| table.get(k).expect(k);
        assert_eq!(doc.integer::<usize>("i", get("i"), 1..=10), None);
        assert_eq!(doc.float("f", get("f"), 0.0..), None);
        assert_eq!(doc.string("s", get("s")), None);
        assert_eq!(doc.duration("d", get("d"), Duration::ZERO..), None);
        assert_eq!(
            doc.choice("c", get("c"), &[("upper", 1), ("lower", 2)]),
            None
        );
        assert_eq!(doc.boolean("b", get("b")), None);
        assert_eq!(doc.integer::<usize>("big", get("big"), 1..), None);
        assert_eq!(doc.integer::<usize>("x", get("x"), 1..), None);
        assert_eq!(doc.integer::<usize>("ok", get("ok"), 1..=10), Some(7));
        assert_eq!(doc.float("ok", get("ok"), 0.0..), Some(7.0));
        let messages: Vec<_> = doc
            .into_problems()
            .into_iter()
            .map(|p| (p.position.unwrap().0, p.message))
            .collect();
        let expected = [
            (1, "must be between 1 and 10, got -3"),
            (2, "must be a finite number at least 0, got nan"),
            (3, "expected a string, found integer 3"),
            (
                4,
                "expected a duration string with a unit (ms, s, m, h, d) such as \"30s\" or \
                 \"1h30m\", found integer 30; quote it and add a unit",
            ),
            (5, "expected one of \"upper\", \"lower\", got \"up\""),
            (
                6,
                "expected a boolean (true or false), found string \"yes\"",
            ),
            (
                7,
                "must be at least 1, got 99999999999999999999 (too large)",
            ),
            (8, "expected an integer, found float 2.5"),
        ];
        let expected: Vec<_> = expected.iter().map(|(l, m)| (*l, m.to_string())).collect();
        assert_eq!(messages, expected);
    }

    #[test]
    fn describe_range_forms() {
        use Bound::*;
        assert_eq!(
            describe_range(Included(&1), Included(&5)),
            "between 1 and 5"
        );
        assert_eq!(describe_range(Included(&1), Unbounded), "at least 1");
        assert_eq!(describe_range(Excluded(&0), Unbounded), "greater than 0");
        assert_eq!(
            describe_range(Included(&0), Excluded(&1)),
            "at least 0 and less than 1"
        );
        assert_eq!(describe_range::<i32>(Unbounded, Included(&9)), "at most 9");
    }

    #[test]
    fn quote_and_float_literal_parse_back() {
        let s = "a \"b\" \\ c\td\u{1}é";
        let text = format!(
            "k = {}\nf = {}\ng = {}\n",
            quote(s),
            float_literal(1e-9),
            float_literal(3.0)
        );
        let table = DeTable::parse(&text).unwrap().into_inner();
        assert_eq!(table.get("k").unwrap().get_ref().as_str(), Some(s));
        assert_eq!(
            table
                .get("f")
                .unwrap()
                .get_ref()
                .as_float()
                .unwrap()
                .as_str(),
            "1e-9"
        );
        assert_eq!(float_literal(3.0), "3.0");
    }

    #[test]
    fn entries_are_in_document_order() {
        let table = DeTable::parse("z = 1\na = 2\nm = 3\n")
            .unwrap()
            .into_inner();
        let keys: Vec<_> = entries(&table)
            .iter()
            .map(|(k, _)| k.get_ref().to_string())
            .collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }
}
