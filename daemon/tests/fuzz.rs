//! Fuzzing of every parser, on stable Rust: proptest generates the
//! inputs, a time budget rather than a case count ends each target.
//!
//! One `#[test]` per target (`fuzz_<target>`); each runs for
//! `FUZZ_SECONDS` (default 3, so that CI stays brief) and prints how many
//! inputs it tried. `scripts/fuzz [SECONDS] [TARGET...]` runs them for
//! longer (10 minutes each by default). `FUZZ_SEED` fixes the random seed
//! (each run prints the one it used).
//!
//! Inputs are raw bytes, dictionary tokens strung together, valid seeds of
//! the target's format (built by strategies that know its structure) and,
//! most often, such seeds mutated: bytes inserted, deleted, replaced,
//! flipped or duplicated, tokens of the format inserted, another seed
//! spliced in. Random bytes alone almost never get past a parser's first
//! check; mutated seeds reach its depths. Proptest shrinks a failing input
//! (fewer mutations, smaller seeds) before the target reports it.
//!
//! Every target asserts that nothing panics, and more where the code gives
//! something to compare: the JSON scanner against the serde path (and both
//! against serde_json's own `Value`), NDJSON bodies against their lines
//! read one by one, CSV lines against a plain split, configurations and
//! points against what they print, and the invariants each decoder
//! promises (bounds, counts, names).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomalyd::cli::InputFormat;
use anomalyd::clock::{parse_rfc3339, rfc3339_millis};
use anomalyd::commands::lines::CsvSplitter;
use anomalyd::commands::replay::{ReplayError, ReplayOptions, ReplaySummary, for_each_point};
use anomalyd::config::{Config, known_keys};
use anomalyd::http::query::{
    decode_component, parse_anomalies_query, parse_episodes_query, parse_events_query,
    parse_influx_query, parse_series_query, parse_time,
};
use anomalyd::ingest::json::parse_ndjson_line_with_serde;
use anomalyd::ingest::labels::parse_series_name;
use anomalyd::ingest::remote_write::{
    Label, RemoteWriteError, STALE_NAN_BITS, Sample, TimeSeries, WriteRequest,
};
use anomalyd::ingest::{
    DataPoint, MAX_ABS_VALUE, MAX_LABELLED_NAME_BYTES, MAX_TIMESTAMP, PointError, PointErrorKind,
    Precision, Samples, decode_line_protocol, decode_remote_write, parse_json_body,
    parse_json_object, parse_ndjson_body, parse_ndjson_line, scan, validate_all, validate_point,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{
    Config as RunnerConfig, RngSeed, TestCaseError, TestError, TestRunner,
};
use prost::Message;

// ---------------------------------------------------------------------
// The harness: a time budget, counts, shrinking, quiet panics.
// ---------------------------------------------------------------------

/// Seconds per target when `FUZZ_SECONDS` is not set.
const DEFAULT_SECONDS: f64 = 3.0;

/// The time budget of one target: `FUZZ_SECONDS`, else the default.
fn budget() -> Duration {
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(DEFAULT_SECONDS);
    Duration::from_secs_f64(seconds)
}

/// The random seed: `FUZZ_SEED`, else one from the clock.
fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

thread_local! {
    /// Whether panics on this thread are expected (caught by proptest while
    /// it runs and shrinks inputs) and so not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Inputs of the current target that its parser accepted whole.
    static ACCEPTED: Cell<u64> = const { Cell::new(0) };
}

/// Counts an input the parser accepted: the share of such inputs shows
/// whether the seeds reach past the first checks.
fn accepted() {
    ACCEPTED.set(ACCEPTED.get() + 1);
}

/// Installs, once, a panic hook that stays silent on threads that are
/// running fuzz inputs; other panics print as usual.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// Runs `test` on inputs of `strategy` until the time budget is spent,
/// then prints how many it tried. A failure (a panic or a failed
/// `prop_assert`) is shrunk to a minimal input, which is printed, run once
/// more outside proptest (so that a panic shows its location) and fails
/// the test.
fn fuzz<S>(name: &str, strategy: S, test: impl Fn(&S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: fmt::Debug,
{
    quiet_panics();
    let seed = seed();
    let budget = budget();
    let mut runner = TestRunner::new(RunnerConfig {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 100_000,
        max_shrink_time: 120_000,
        ..RunnerConfig::default()
    });
    let check = |value: S::Value| test(&value);
    let start = Instant::now();
    let mut tried: u64 = 0;
    QUIET.set(true);
    ACCEPTED.set(0);
    let failure = loop {
        if start.elapsed() >= budget {
            break None;
        }
        let tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            Err(reason) => {
                QUIET.set(false);
                panic!("{name}: cannot generate an input: {reason}");
            }
        };
        tried += 1;
        match runner.run_one(tree, check) {
            Ok(_) => {}
            Err(TestError::Fail(reason, minimal)) => break Some((reason, minimal)),
            Err(TestError::Abort(reason)) => {
                QUIET.set(false);
                panic!("{name}: aborted: {reason}");
            }
        }
    };
    QUIET.set(false);
    let seconds = start.elapsed().as_secs_f64();
    let accepted = ACCEPTED.get();
    eprintln!(
        "{name}: {tried} inputs in {seconds:.1} s ({:.0}/s), {accepted} accepted ({:.0}%), \
         seed {seed}, {}",
        tried as f64 / seconds.max(1e-9),
        100.0 * accepted as f64 / tried.max(1) as f64,
        if failure.is_some() {
            "1 finding"
        } else {
            "0 findings"
        }
    );
    if let Some((reason, minimal)) = failure {
        eprintln!("{name}: input {tried} failed (rerun with FUZZ_SEED={seed}), shrunk to:");
        eprintln!("{name}: minimal input: {minimal:?}");
        // Once more, outside proptest: a panic now shows where it is.
        match test(&minimal) {
            Err(e) => panic!("{name}: {e}"),
            Ok(()) => panic!("{name}: {reason}"),
        }
    }
}

/// Bytes, shown as an escaped byte string (`b"{\"value\":1}"`).
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// One change to a seed.
#[derive(Clone, Debug)]
enum Mutation {
    /// Insert these bytes.
    Insert(Index, Vec<u8>),
    /// Insert a token of the target's dictionary.
    Token(Index, Index),
    /// Delete up to this many bytes.
    Delete(Index, usize),
    /// Replace one byte.
    Replace(Index, u8),
    /// Flip one bit.
    Flip(Index, u8),
    /// Repeat up to this many bytes in place.
    Duplicate(Index, usize),
    /// Cut here and append another seed from some point on.
    Splice(Index, Index),
    /// Cut here.
    Truncate(Index),
}

/// One mutation, the cheap ones (insertions, tokens) most often.
fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), vec(any::<u8>(), 1..4)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(at, t)| Mutation::Token(at, t)),
        2 => (any::<Index>(), 1usize..16).prop_map(|(at, n)| Mutation::Delete(at, n)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        1 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        1 => (any::<Index>(), 1usize..32).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, from)| Mutation::Splice(at, from)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// `data` with `mutations` applied in order; `other` is the seed spliced
/// in, `dict` the target's tokens.
fn apply(mut data: Vec<u8>, other: &[u8], mutations: &[Mutation], dict: &[&[u8]]) -> Vec<u8> {
    for mutation in mutations {
        let len = data.len();
        match mutation {
            Mutation::Insert(at, bytes) => {
                let at = at.index(len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Token(at, token) => {
                let at = at.index(len + 1);
                let token = dict[token.index(dict.len())];
                data.splice(at..at, token.iter().copied());
            }
            Mutation::Delete(at, n) if len > 0 => {
                let at = at.index(len);
                data.drain(at..(at + n).min(len));
            }
            Mutation::Replace(at, byte) if len > 0 => data[at.index(len)] = *byte,
            Mutation::Flip(at, bit) if len > 0 => data[at.index(len)] ^= 1 << bit,
            Mutation::Duplicate(at, n) if len > 0 => {
                let at = at.index(len);
                let end = (at + n).min(len);
                let copy = data[at..end].to_vec();
                data.splice(end..end, copy);
            }
            Mutation::Splice(at, from) => {
                data.truncate(at.index(len + 1));
                data.extend_from_slice(&other[from.index(other.len() + 1)..]);
            }
            Mutation::Truncate(at) => data.truncate(at.index(len + 1)),
            Mutation::Delete(..)
            | Mutation::Replace(..)
            | Mutation::Flip(..)
            | Mutation::Duplicate(..) => {}
        }
    }
    data
}

/// Seeds mutated 1 to 4 times (another seed to splice in at hand).
fn mutated(seed: BoxedStrategy<Vec<u8>>, dict: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    (seed.clone(), seed, vec(mutation(), 1..5))
        .prop_map(move |(base, other, mutations)| apply(base, &other, &mutations, dict))
        .boxed()
}

/// The inputs of a target: raw bytes, tokens strung together, valid seeds
/// and (most often) mutated seeds.
fn inputs(seed: BoxedStrategy<Vec<u8>>, dict: &'static [&'static [u8]]) -> BoxedStrategy<Bytes> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..200),
        1 => vec(select(dict), 0..24).prop_map(|tokens| tokens.concat()),
        3 => seed.clone(),
        5 => mutated(seed, dict),
    ]
    .prop_map(Bytes)
    .boxed()
}

/// A strategy of strings as a strategy of their bytes.
fn bytes_of(strategy: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Vec<u8>> {
    strategy.prop_map(String::into_bytes).boxed()
}

/// One of `items`, as an owned string.
fn one_of(items: &'static [&'static str]) -> BoxedStrategy<String> {
    select(items).prop_map(str::to_owned).boxed()
}

// ---------------------------------------------------------------------
// JSON points: the scanner, the serde path, serde_json's `Value`.
// ---------------------------------------------------------------------

/// A point compared exactly: floats by their bits (so `-0.0` is not `0.0`).
#[derive(Clone, Debug)]
struct Point {
    value: f64,
    timestamp: Option<f64>,
    series: String,
    seq: Option<u64>,
}

impl PartialEq for Point {
    fn eq(&self, other: &Self) -> bool {
        self.value.to_bits() == other.value.to_bits()
            && self.timestamp.map(f64::to_bits) == other.timestamp.map(f64::to_bits)
            && self.series == other.series
            && self.seq == other.seq
    }
}

impl From<&DataPoint<'_>> for Point {
    fn from(p: &DataPoint<'_>) -> Self {
        Point {
            value: p.value,
            timestamp: p.timestamp,
            series: p.series.to_string(),
            seq: p.seq,
        }
    }
}

/// A parse result with its point compared exactly.
fn exact(result: Result<DataPoint<'_>, PointError>) -> Result<Point, PointError> {
    result.map(|p| Point::from(&p))
}

/// A parse result with its points compared exactly.
fn exact_all(result: Result<Vec<DataPoint<'_>>, PointError>) -> Result<Vec<Point>, PointError> {
    result.map(|points| points.iter().map(Point::from).collect())
}

/// Whitespace between JSON tokens, valid or not (form feed is not JSON
/// whitespace; a line feed ends an NDJSON line).
const JSON_WS: &[&str] = &[
    "", "", "", "", "", "", " ", " ", "  ", "\t", "\r", "\n", " \r\n ", "\x0c",
];

/// Number spellings worth trying whatever the generator draws.
const JSON_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0e0",
    "1e400",
    "-1e400",
    "1e-400",
    "01",
    "-01",
    "1.",
    ".5",
    "+1",
    "NaN",
    "Infinity",
    "1E+2",
    "1e+",
    "1e",
    "-",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "1e150",
    "1.0000000000000001e150",
    "4.9e-324",
    "2.4e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "1700000000.25",
    "253402300799.999",
    "253402300800",
    "9007199254740993",
    "0.1000000000000000055511151231257827",
    "123456789012345678901234567890",
];

/// A JSON number text, in every spelling (and some that are none).
fn json_number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<f64>().prop_map(|v| format!("{v:?}")),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        (-1e6..1e6f64).prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        (0u64..2_000_000_000, 0u32..1000).prop_map(|(s, ms)| format!("{s}.{ms:03}")),
        "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?",
        one_of(JSON_NUMBERS),
    ]
    .boxed()
}

/// Pieces of JSON string contents: escapes valid and not, raw control and
/// non-ASCII characters.
const JSON_STRING_PIECES: &[&str] = &[
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\n",
    "\\r",
    "\\t",
    "\\u00e9",
    "\\u0000",
    "\\u001f",
    "\\u007f",
    "\\ud83d\\ude00",
    "\\ud800",
    "\\udc00x",
    "\\uD83D\\uDE00",
    "\\x",
    "\\",
    "é",
    "😀",
    "\x7f",
    "\x01",
    "\t",
    " ",
    "\u{85}",
    "\u{2028}",
    "{",
    "}",
    ",",
    ":",
];

/// A JSON string literal, quotes included.
fn json_string() -> BoxedStrategy<String> {
    vec(
        prop_oneof![
            12 => "[a-zA-Z0-9._/:-]{1,6}",
            1 => one_of(JSON_STRING_PIECES),
        ],
        0..6,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()))
    .boxed()
}

/// Key spellings other than the four plain ones.
const ODD_KEYS: &[&str] = &[
    "labels",
    "extra",
    "Value",
    "valu",
    "v\\u0061lue",
    "se\\u0071",
    "",
    "value ",
    "timestamp\\u0000",
    "series\\\"",
];

/// JSON values of the wrong kind for a point field.
const ODD_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "[]",
    "[1]",
    "{}",
    "{\"job\":\"x\"}",
    "\"1\"",
    "[1,",
    "{\"value\":1}",
];

/// One `"key": value` member, any key, any value.
fn json_member() -> BoxedStrategy<String> {
    let key = prop_oneof![
        6 => one_of(&["value", "timestamp", "series", "seq"]),
        1 => one_of(ODD_KEYS),
    ];
    let value = prop_oneof![
        5 => json_number(),
        3 => json_string(),
        1 => one_of(ODD_VALUES),
    ];
    (key, value, select(JSON_WS), select(JSON_WS))
        .prop_map(|(key, value, a, b)| format!("{a}\"{key}\"{b}:{a}{value}{b}"))
        .boxed()
}

/// A point object: mostly the shape the API takes (`value`, and maybe
/// `timestamp`, `series`, `seq`, an extra member, in any order), else any
/// members.
fn json_object() -> BoxedStrategy<String> {
    let plausible = |low: f64, high: f64| {
        prop_oneof![
            2 => (low..high).prop_map(|v| v.to_string()),
            1 => json_number(),
        ]
    };
    let typical = (
        plausible(-1e6, 1e6),
        option::of(plausible(0.0, 2e9)),
        option::of(json_string()),
        option::of(prop_oneof![
            3 => any::<u64>().prop_map(|v| v.to_string()),
            1 => json_number(),
        ]),
        option::weighted(0.1, json_member()),
        any::<usize>(),
        select(JSON_WS),
        select(JSON_WS),
    )
        .prop_map(|(value, timestamp, series, seq, extra, order, a, b)| {
            let mut members = vec![format!("\"value\"{a}:{b}{value}")];
            if let Some(t) = timestamp {
                members.push(format!("\"timestamp\":{b}{t}"));
            }
            if let Some(s) = series {
                members.push(format!("{a}\"series\"{b}:{s}"));
            }
            if let Some(q) = seq {
                members.push(format!("\"seq\":{q}{a}"));
            }
            members.extend(extra);
            let n = members.len();
            members.rotate_left(order % n);
            format!("{a}{{{b}{}{a}}}{b}", members.join(&format!("{b},{a}")))
        });
    let any_members =
        vec(json_member(), 0..5).prop_map(|members| format!("{{{}}}", members.join(",")));
    prop_oneof![5 => typical, 1 => any_members].boxed()
}

/// A JSON array of point objects, sometimes with a stray comma or value.
fn json_array() -> BoxedStrategy<String> {
    (
        vec(
            prop_oneof![8 => json_object(), 1 => one_of(ODD_VALUES), 1 => json_number()],
            0..6,
        ),
        select(JSON_WS),
        select(&["", "", "", ",", "]", "x"][..]),
    )
        .prop_map(|(items, ws, tail)| format!("{ws}[{ws}{}{tail}]{ws}", items.join(",")))
        .boxed()
}

/// JSON tokens for mutations.
const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\"value\"",
    b"\"timestamp\"",
    b"\"series\"",
    b"\"seq\"",
    b"\"labels\":{}",
    b"null",
    b"true",
    b"-",
    b".",
    b"e",
    b"E+",
    b"e-",
    b"0",
    b"1",
    b"9",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"\x0c",
    b"1e400",
    b"18446744073709551616",
    b"9223372036854775808",
    b"\xff",
    b"\xc3\xa9",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
];

/// What serde_json's generic reader makes of `value`: the object
/// re-serialised and read back as a point. A third reading of the input,
/// to set against the scanner and our serde visitors.
fn via_value(value: &serde_json::Value) -> Option<Point> {
    let text = serde_json::to_vec(value).ok()?;
    exact(parse_json_object(&text)).ok()
}

/// What `write_json` prints of `point` must read back as the same point.
fn check_written(point: &DataPoint<'_>) -> Result<(), TestCaseError> {
    let mut out = Vec::new();
    point.write_json(&mut out);
    let again = exact(parse_json_object(&out));
    prop_assert_eq!(
        again,
        Ok(Point::from(point)),
        "written as {:?}",
        String::from_utf8_lossy(&out)
    );
    Ok(())
}

/// One object: the scanner (whole input and NDJSON line by line) against
/// the serde path, both against serde_json's `Value`, and what
/// `write_json` prints read back.
#[test]
fn fuzz_json_object() {
    let seeds = prop_oneof![
        8 => bytes_of(json_object()),
        1 => bytes_of((json_object(), select(&["\n", "\r\n", "\n\n"][..]), json_object())
            .prop_map(|(a, nl, b)| format!("{a}{nl}{b}"))),
    ]
    .boxed();
    fuzz("fuzz_json_object", inputs(seeds, JSON_DICT), |input| {
        let bytes = input.0.as_slice();
        let serde = exact(parse_ndjson_line_with_serde(bytes));
        // What the scanner reads, serde reads the same.
        if let Some(fast) = scan::point(bytes) {
            prop_assert_eq!(Ok(Point::from(&fast)), serde.clone(), "scanner vs serde");
        }
        // So the public entries (scanner first, serde on `None`) give
        // exactly serde's result, error messages included.
        prop_assert_eq!(exact(parse_ndjson_line(bytes)), serde.clone());
        prop_assert_eq!(exact(parse_json_object(bytes)), serde.clone());
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let body = exact_all(parse_json_body(bytes));
            prop_assert_eq!(body, serde.clone().map(|p| vec![p]));
        } else {
            let _ = parse_json_body(bytes);
        }
        if let Ok(point) = parse_ndjson_line(bytes) {
            accepted();
            let value = serde_json::from_slice::<serde_json::Value>(bytes);
            prop_assert!(value.is_ok(), "serde_json rejects what we accept");
            let value = value.unwrap();
            prop_assert_eq!(via_value(&value), Some(Point::from(&point)), "via Value");
            check_written(&point)?;
            let _ = validate_point(&point);
        }
        // The NDJSON scanner at every line start: it reads the line as
        // serde reads it, and says where the next line starts.
        let mut start = 0;
        loop {
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| start + i);
            if let Some((fast, next)) = scan::ndjson_point(bytes, start) {
                prop_assert_eq!(next, (end + 1).min(bytes.len()), "next line of {}", start);
                let line = exact(parse_ndjson_line_with_serde(&bytes[start..end]));
                prop_assert_eq!(Ok(Point::from(&fast)), line, "line at {}", start);
            }
            if end == bytes.len() {
                break;
            }
            start = end + 1;
        }
        prop_assert!(scan::ndjson_point(bytes, bytes.len() + 1).is_none());
        Ok(())
    });
}

/// Arrays of points (`parse_json_body`): against serde_json's `Value`,
/// and every accepted point written and read back.
#[test]
fn fuzz_json_batch() {
    let seeds = prop_oneof![4 => bytes_of(json_array()), 1 => bytes_of(json_object())].boxed();
    fuzz("fuzz_json_batch", inputs(seeds, JSON_DICT), |input| {
        let bytes = input.0.as_slice();
        let parsed = parse_json_body(bytes);
        if let Ok(points) = &parsed {
            accepted();
            let _ = validate_all(points);
            let value = serde_json::from_slice::<serde_json::Value>(bytes);
            prop_assert!(value.is_ok(), "serde_json rejects what we accept");
            let items = match value.unwrap() {
                serde_json::Value::Array(items) => items,
                object => vec![object],
            };
            let via: Vec<Option<Point>> = items.iter().map(via_value).collect();
            let ours: Vec<Option<Point>> = points.iter().map(|p| Some(Point::from(p))).collect();
            prop_assert_eq!(via, ours, "via Value");
            for point in points {
                check_written(point)?;
            }
        }
        Ok(())
    });
}

/// NDJSON read the simple way: each line on its own, through serde only
/// (what `parse_ndjson_body` did before it read the body in one pass).
fn ndjson_line_by_line(body: &[u8]) -> Result<Vec<Point>, PointError> {
    let mut points = Vec::new();
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let point = parse_ndjson_line_with_serde(line).map_err(|e| PointError {
            kind: e.kind,
            message: format!(
                "line {}: {}",
                index + 1,
                e.message.replace(" at line 1 column ", " at column ")
            ),
        })?;
        validate_point(&point).map_err(|message| PointError {
            kind: PointErrorKind::Invalid,
            message: format!("line {}: {message}", index + 1),
        })?;
        points.push(Point::from(&point));
    }
    Ok(points)
}

/// NDJSON bodies: the one-pass reader (scanner, then serde per line)
/// against the bodies read line by line with serde alone.
#[test]
fn fuzz_ndjson() {
    let line = prop_oneof![
        8 => json_object(),
        1 => one_of(&["", " ", "\t", "\r", " \r", "\x0c", "{", "}", "1", "[]", "# x"]),
    ];
    let body = (
        vec((line, select(&["\n", "\n", "\r\n"][..])), 0..8),
        any::<bool>(),
    )
        .prop_map(|(lines, trailing)| {
            let mut body = String::new();
            for (i, (line, end)) in lines.iter().enumerate() {
                if i > 0 {
                    body.push_str(end);
                }
                body.push_str(line);
            }
            if trailing {
                body.push('\n');
            }
            body
        });
    fuzz("fuzz_ndjson", inputs(bytes_of(body), JSON_DICT), |input| {
        let bytes = input.0.as_slice();
        let body = exact_all(parse_ndjson_body(bytes));
        if body.is_ok() {
            accepted();
        }
        prop_assert_eq!(body, ndjson_line_by_line(bytes));
        Ok(())
    });
}

// ---------------------------------------------------------------------
// InfluxDB line protocol.
// ---------------------------------------------------------------------

/// Pieces of measurements, tag keys and values, field keys: escapes of
/// every kind, characters that need sanitizing.
const LP_NAME_PIECES: &[&str] = &[
    "cpu",
    "mem",
    "usage_idle",
    "host",
    "region",
    "us-west",
    "a",
    "_",
    "é",
    "😀",
    "\\ ",
    "\\,",
    "\\=",
    "\\\\",
    "\\",
    "\\\"",
    "\"",
    "=",
    "-",
    ".",
    ":",
    "\t",
    "#",
    "\x01",
    "\x7f",
];

/// A measurement, tag key or value, or field key.
fn lp_name() -> BoxedStrategy<String> {
    vec(one_of(LP_NAME_PIECES), 1..4)
        .prop_map(|parts| parts.concat())
        .boxed()
}

/// Field values of every type and some that are no value.
const LP_ODD_VALUES: &[&str] = &[
    "t",
    "T",
    "true",
    "True",
    "TRUE",
    "f",
    "F",
    "false",
    "False",
    "FALSE",
    "NaN",
    "nan",
    "inf",
    "-Inf",
    "+Inf",
    "1e400",
    "-1e400",
    "1e150",
    "1e151",
    "+1",
    "1i",
    "-1u",
    "1.5i",
    "1iu",
    "i",
    "u",
    "18446744073709551615u",
    "18446744073709551616u",
    "9223372036854775807i",
    "9223372036854775808i",
    "-9223372036854775808i",
    "0x10",
    "",
    "\"\"",
    "\"",
    "\"a\\\"b\"",
    "\"a\\\\\"",
    "\"a\\\\\\\"",
    "\"un closed",
    "\"x\"y",
    "1,",
    "1 1",
];

/// A field value: float, integer, unsigned, boolean, string, or none.
fn lp_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<f64>().prop_map(|v| format!("{v:?}")),
        2 => (-1e6..1e6f64).prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:e}")),
        2 => any::<i64>().prop_map(|v| format!("{v}i")),
        2 => any::<u64>().prop_map(|v| format!("{v}u")),
        1 => "\"([a-z ,=]|\\\\\"|\\\\\\\\|\\\\)*\"",
        2 => one_of(LP_ODD_VALUES),
    ]
    .boxed()
}

/// A timestamp: plausible in some precision, any integer, or none.
fn lp_timestamp() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0i64..2_000_000_000_000_000_000).prop_map(|t| t.to_string()),
        2 => (0i64..4_000_000_000).prop_map(|t| t.to_string()),
        1 => any::<i64>().prop_map(|t| t.to_string()),
        1 => one_of(&[
            "-1", "0", "1.5", "abc", "1e9", "9223372036854775807", "9223372036854775808",
            "-9223372036854775808", "253402300800", "253402300799", "+5", "1 2",
        ]),
    ]
    .boxed()
}

/// One line as the InfluxDB docs write them: measurement, tags, fields of
/// every type, an optional timestamp; or a comment or blank line.
fn lp_line() -> BoxedStrategy<String> {
    let line = (
        lp_name(),
        vec((lp_name(), lp_name()), 0..4),
        vec((lp_name(), lp_value()), 1..4),
        option::of(lp_timestamp()),
        select(&[" ", " ", " ", "  ", "\t", " \t"][..]),
    )
        .prop_map(|(measurement, tags, fields, timestamp, space)| {
            let mut line = measurement;
            for (k, v) in tags {
                line.push_str(&format!(",{k}={v}"));
            }
            line.push_str(space);
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&fields.join(","));
            if let Some(t) = timestamp {
                line.push_str(space);
                line.push_str(&t);
            }
            line
        });
    let documented = one_of(&[
        "myMeasurement,tag1=value1,tag2=value2 fieldKey=\"fieldValue\" 1556813561098000000",
        "weather,location=us-midwest temperature=82 1465839830100400200",
        "home,room=Living\\ Room temp=21.1,hum=35.9,co=0i 1641024000",
        "home,room=Kitchen temp=22.7,hum=36.1,co=22i 1641067200",
        "cpu,host=server\\ 01,region=us-west usage_idle=99.5,usage_user=3u,up=t,ok=FALSE",
        "my\\,measurement,tag\\=key=val\\,ue field\\ key=\"quote \\\" and \\\\ backslash\"",
        "\"measurement with quotes\" field=1",
        "# a comment",
        "",
        "   ",
    ]);
    prop_oneof![6 => line, 2 => documented].boxed()
}

/// A body of lines, with LF or CRLF line ends.
fn lp_body() -> BoxedStrategy<String> {
    vec((lp_line(), select(&["\n", "\n", "\r\n"][..])), 0..5)
        .prop_map(|lines| {
            lines
                .iter()
                .map(|(line, end)| format!("{line}{end}"))
                .collect()
        })
        .boxed()
}

/// Line-protocol tokens for mutations.
const LP_DICT: &[&[u8]] = &[
    b" ",
    b",",
    b"=",
    b"\\",
    b"\\ ",
    b"\\,",
    b"\\=",
    b"\"",
    b"\\\"",
    b"\n",
    b"\r\n",
    b"#",
    b"i",
    b"u",
    b"t",
    b"false",
    b"1",
    b"-",
    b".",
    b"e",
    b"9223372036854775807",
    b"18446744073709551615",
    b"1556813561098000000",
    b",tag=v",
    b" f=1",
    b"\xff",
    b"\xc3\xa9",
    b"\x00",
    b"\t",
];

/// Every precision, as the `precision` parameter names them.
const PRECISIONS: &[Precision] = &[
    Precision::Nanoseconds,
    Precision::Microseconds,
    Precision::Milliseconds,
    Precision::Seconds,
    Precision::Minutes,
    Precision::Hours,
];

/// Checks what a labelled format decoded: every point a plausible one
/// (finite bounded value, plausible time, a non-empty name without raw
/// control characters, within the length bound).
fn check_samples(samples: &Samples) -> Result<(), TestCaseError> {
    for point in samples.points() {
        prop_assert!(
            point.value.is_finite() && point.value.abs() <= MAX_ABS_VALUE,
            "value {}",
            point.value
        );
        if let Some(t) = point.timestamp {
            prop_assert!((0.0..MAX_TIMESTAMP).contains(&t), "timestamp {}", t);
        }
        let name = point.series.as_ref();
        prop_assert!(!name.is_empty(), "empty series name");
        prop_assert!(
            name.len() <= MAX_LABELLED_NAME_BYTES,
            "{} bytes",
            name.len()
        );
        prop_assert!(
            !name.bytes().any(|b| b.is_ascii_control()),
            "control character in {:?}",
            name
        );
    }
    Ok(())
}

/// Line protocol in every precision: plausible points, names that read
/// back as labelled names, error lines within the body, and CRLF line
/// ends read as LF.
#[test]
fn fuzz_line_protocol() {
    let strategy = (inputs(bytes_of(lp_body()), LP_DICT), select(PRECISIONS));
    fuzz("fuzz_line_protocol", strategy, |(input, precision)| {
        let body = input.0.as_slice();
        let decoded = decode_line_protocol(body, *precision);
        match &decoded {
            Ok(samples) => {
                accepted();
                check_samples(samples)?;
                for point in samples.points() {
                    let name = parse_series_name(&point.series);
                    prop_assert!(name.is_some(), "unreadable name {:?}", point.series);
                    let metric = name.unwrap().metric;
                    prop_assert!(
                        metric
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
                        "metric {:?}",
                        metric
                    );
                }
            }
            Err(e) => {
                let lines = 1 + body.iter().filter(|&&b| b == b'\n').count();
                prop_assert!(
                    (1..=lines).contains(&e.line),
                    "line {} of {}",
                    e.line,
                    lines
                );
            }
        }
        // (Not UTF-8: the error names a byte offset, which the `\r`s move.)
        if !body.contains(&b'\r') && std::str::from_utf8(body).is_ok() {
            let mut crlf = Vec::with_capacity(body.len() * 2);
            for &b in body {
                if b == b'\n' {
                    crlf.push(b'\r');
                }
                crlf.push(b);
            }
            prop_assert_eq!(
                decode_line_protocol(&crlf, *precision),
                decoded,
                "with CRLF"
            );
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------
// Prometheus remote-write.
// ---------------------------------------------------------------------

/// A label name or value: usual ones, escapes, bytes that are not
/// UTF-8, names too long.
fn rw_label_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => one_of(&[
            "__name__", "job", "instance", "le", "quantile", "", "node_load1", "up",
            "web-1:9100", "a\nb", "quote\"back\\slash", "tab\there", "é", "\u{7f}",
        ])
        .prop_map(String::into_bytes),
        3 => "[a-zA-Z_:0-9\"\\\\\n\té -]{0,12}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..8),
        1 => (4000usize..4200).prop_map(|n| vec![b'x'; n]),
    ]
    .boxed()
}

/// Sample values at the edges: the stale marker, other NaNs, infinities,
/// the bound on values.
const RW_VALUES: &[f64] = &[
    f64::from_bits(STALE_NAN_BITS),
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e150,
    1.0000000000000002e150,
    -0.0,
    0.5,
];

/// Millisecond timestamps at the edges of the plausible range.
const RW_TIMESTAMPS: &[i64] = &[
    -1,
    0,
    253_402_300_799_999,
    253_402_300_800_000,
    i64::MAX,
    i64::MIN,
];

/// A sample: any value, mostly plausible millisecond timestamps.
fn rw_sample() -> BoxedStrategy<Sample> {
    let value = prop_oneof![
        4 => any::<f64>(),
        2 => -1e6..1e6f64,
        2 => select(RW_VALUES),
    ];
    let timestamp = prop_oneof![
        8 => 0i64..2_000_000_000_000,
        1 => any::<i64>(),
        1 => select(RW_TIMESTAMPS),
    ];
    (value, timestamp)
        .prop_map(|(value, timestamp)| Sample { value, timestamp })
        .boxed()
}

/// A `WriteRequest` as prost encodes it (not compressed).
fn rw_request() -> BoxedStrategy<Vec<u8>> {
    let series = (
        vec((rw_label_bytes(), rw_label_bytes()), 0..5),
        vec(rw_sample(), 0..5),
    )
        .prop_map(|(labels, samples)| TimeSeries {
            labels: labels
                .into_iter()
                .map(|(name, value)| Label {
                    name: name.into(),
                    value: value.into(),
                })
                .collect(),
            samples,
        });
    vec(series, 0..5)
        .prop_map(|timeseries| WriteRequest { timeseries }.encode_to_vec())
        .boxed()
}

/// `raw` compressed as remote-write sends it (snappy block format).
fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("small inputs compress")
}

/// Protobuf tokens: field keys of the four messages, varints, the stale
/// marker's bits.
const PROTO_DICT: &[&[u8]] = &[
    b"\x0a",
    b"\x12",
    b"\x09",
    b"\x10",
    b"\x0a\x00",
    b"\x12\x00",
    b"\x0a\x08__name__",
    b"\x09\x02\x00\x00\x00\x00\x00\xf0\x7f",
    b"\x09\x00\x00\x00\x00\x00\x00\xf8\x7f",
    b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\xff\xff\xff\xff\x0f",
    b"\x80",
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\x1a\x00",
    b"\x0b",
    b"\x0c",
];

/// Snappy tokens: length varints, literal and copy tags.
const SNAPPY_DICT: &[&[u8]] = &[
    b"\x00",
    b"\x01",
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x80\x80\x80\x10",
    b"\x80\x80\x04",
    b"\xfc\xff\xff\xff\xff",
    b"\xf0\x00",
    b"\x01\x00",
    b"\x02\x00\x00",
    b"\x03\x00\x00\x00\x00",
    b"\x05\x01",
    b"\xfe\xff\xff",
];

/// Limits on the decompressed size: mostly the default `max_body_bytes`.
const MAX_DECODED: &[usize] = &[0, 16, 100, 1000, 1 << 20, 1 << 20, 1 << 20, 1 << 20];

/// Remote-write bodies: no panic; a body announcing more than
/// `max_decoded` is refused as too large (and only then); a decoded body
/// gives plausible points, every sample of the request either a point or
/// counted as skipped.
#[test]
fn fuzz_remote_write() {
    let seeds = prop_oneof![
        4 => rw_request().prop_map(|raw| snappy(&raw)),
        3 => mutated(rw_request(), PROTO_DICT).prop_map(|raw| snappy(&raw)),
        1 => rw_request(),
    ]
    .boxed();
    let max_decoded = select(MAX_DECODED);
    let strategy = (inputs(seeds, SNAPPY_DICT), max_decoded);
    fuzz("fuzz_remote_write", strategy, |(input, max)| {
        let body = input.0.as_slice();
        let announced = snap::raw::decompress_len(body).ok();
        match decode_remote_write(body, *max) {
            Err(RemoteWriteError::TooLarge { size, max: said }) => {
                prop_assert_eq!(said, *max);
                prop_assert!(size > *max);
                prop_assert_eq!(announced, Some(size));
            }
            Err(RemoteWriteError::Malformed(message)) => {
                prop_assert!(!message.is_empty());
                prop_assert!(announced.is_none_or(|size| size <= *max));
            }
            Ok(samples) => {
                accepted();
                prop_assert!(announced.is_some_and(|size| size <= *max));
                check_samples(&samples)?;
                let raw = snap::raw::Decoder::new().decompress_vec(body);
                prop_assert!(raw.is_ok(), "decoded, yet not snappy");
                let request = WriteRequest::decode(raw.unwrap().as_slice());
                prop_assert!(request.is_ok(), "decoded, yet not a WriteRequest");
                let total: usize = request
                    .unwrap()
                    .timeseries
                    .iter()
                    .map(|s| s.samples.len())
                    .sum();
                prop_assert_eq!(
                    samples.len() as u64 + samples.skipped.total(),
                    total as u64,
                    "every sample applied or counted"
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------
// Replay's CSV.
// ---------------------------------------------------------------------

/// Header columns: the four known (in any case, with spaces, quoted)
/// and others.
const CSV_COLUMNS: &[&str] = &[
    "timestamp",
    "value",
    "series",
    "seq",
    "Value",
    " value ",
    "SERIES",
    "time",
    "",
    "\"value\"",
    "\"se\"\"ries\"",
    "extra",
];

/// Row fields at the edges: numbers JSON would refuse, quoting,
/// control and non-ASCII characters.
const CSV_FIELDS: &[&str] = &[
    "",
    " ",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "1e151",
    "-1",
    "18446744073709551616",
    "9223372036854775808",
    "253402300800",
    "1700000000.5",
    "0x10",
    "\"a,b\"",
    "\"say \"\"hi\"\"\"",
    "\"unclosed",
    "a\"b",
    "\"\"",
    "cpu",
    "é",
    "a\tb",
    "\x01",
    "\u{85}",
];

/// A row field.
fn csv_field() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (-1e6..1e6f64).prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:?}")),
        2 => (0u64..2_000_000_000).prop_map(|v| v.to_string()),
        2 => "[a-z0-9._ -]{1,8}",
        3 => one_of(CSV_FIELDS),
    ]
    .boxed()
}

/// A CSV input for replay: an optional BOM, a header (mostly a valid one),
/// rows (mostly of the header's width), blank lines, any line ends.
fn csv_body() -> BoxedStrategy<String> {
    let valid_header = (
        Just(vec!["value"]),
        proptest::sample::subsequence(vec!["timestamp", "series", "seq"], 0..=3),
        any::<usize>(),
    )
        .prop_map(|(mut columns, others, at)| {
            for (i, column) in others.into_iter().enumerate() {
                columns.insert(at.wrapping_add(i) % (columns.len() + 1), column);
            }
            columns.join(",")
        });
    let any_header = vec(one_of(CSV_COLUMNS), 1..5).prop_map(|c| c.join(","));
    let header = prop_oneof![5 => valid_header, 1 => any_header];
    let row = prop_oneof![
        6 => vec(csv_field(), 1..5).prop_map(|f| f.join(",")),
        1 => one_of(&["", " ", "\t", "\r", ",", ",,", "\"", "a\rb"]),
    ];
    (
        any::<bool>(),
        header,
        vec((row, select(&["\n", "\n", "\r\n", "\r"][..])), 0..8),
        any::<bool>(),
    )
        .prop_map(|(bom, header, rows, trailing)| {
            let mut body = if bom {
                "\u{feff}".to_owned()
            } else {
                String::new()
            };
            body.push_str(&header);
            for (row, end) in rows {
                body.push_str(end);
                body.push_str(&row);
            }
            if trailing {
                body.push('\n');
            }
            body
        })
        .boxed()
}

/// CSV tokens for mutations.
const CSV_DICT: &[&[u8]] = &[
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"value",
    b"timestamp",
    b"series",
    b"seq",
    b"\xef\xbb\xbf",
    b"1",
    b"-",
    b".",
    b"e",
    b"NaN",
    b"\xff",
    b"\xc3\xa9",
    b"\x00",
];

/// What replay should make of a CSV input, from its lines alone: the
/// lines longer than `max_line`, the non-blank others, and the line
/// number of the header (the first of those).
#[derive(Debug, Default)]
struct CsvLines {
    too_long: u64,
    non_blank: u64,
    header: Option<u64>,
}

/// Reads `content` into lines as `BoundedLines` does (a line end is
/// `\n`, a `\r` before it and a BOM on line 1 are dropped).
fn csv_lines(content: &[u8], max_line: usize) -> CsvLines {
    let mut lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
    if content.is_empty() || content.ends_with(b"\n") {
        lines.pop();
    }
    let mut out = CsvLines::default();
    for (index, line) in lines.iter().enumerate() {
        if line.len() > max_line {
            out.too_long += 1;
            continue;
        }
        let mut text = line.strip_suffix(b"\r").unwrap_or(line);
        if index == 0 {
            text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        }
        if !text.iter().all(u8::is_ascii_whitespace) {
            out.non_blank += 1;
            out.header.get_or_insert(index as u64 + 1);
        }
    }
    out
}

/// `fields` written back as CSV, each quoted.
fn quoted(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Line bounds (`max_body_bytes`) to replay with: tiny ones make long
/// lines, the default lets every line through.
const MAX_LINES: &[usize] = &[12, 40, 1 << 20, 1 << 20];

/// Replay's CSV reading (lines, header, rows, validation) through
/// `for_each_point` on a file: only valid points reach the sink, every
/// line is a point, blank, the header or counted as bad (with
/// `--skip-bad`), and only a bad header stops a `--skip-bad` replay. And
/// each line through the CSV splitter: a line without quotes splits as
/// `str::split(',')` does, and fields written back quoted split the same.
#[test]
fn fuzz_replay_csv() {
    // In memory where there is a tmpfs: a file is written per input.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let path = dir.path().join("points.csv");
    let strategy = (
        inputs(bytes_of(csv_body()), CSV_DICT),
        select(MAX_LINES),
        any::<bool>(),
    );
    fuzz(
        "fuzz_replay_csv",
        strategy,
        |(input, max_line, skip_bad)| {
            let content = input.0.as_slice();
            replay_csv(&path, content, *max_line, *skip_bad)?;
            check_splitter(content)
        },
    );
}

/// Replays `content` from the file `path` with `for_each_point` and
/// checks the outcome against [`csv_lines`].
fn replay_csv(
    path: &Path,
    content: &[u8],
    max_line: usize,
    skip_bad: bool,
) -> Result<(), TestCaseError> {
    std::fs::write(path, content).expect("the input file is written");
    let options = ReplayOptions {
        format: if content.len().is_multiple_of(2) {
            None
        } else {
            Some(InputFormat::Csv)
        },
        skip_bad,
        all_points: false,
        files: vec![PathBuf::from(path)],
    };
    let mut summary = ReplaySummary::default();
    let mut points = 0u64;
    let mut invalid = None;
    let result = for_each_point(
        &options,
        max_line,
        &mut summary,
        &mut |point: &DataPoint<'_>| {
            points += 1;
            if let Err(message) = validate_point(point) {
                invalid.get_or_insert(message);
            }
            Ok(())
        },
    );
    prop_assert_eq!(invalid, None, "an invalid point reached the sink");
    let expected = csv_lines(content, max_line);
    let rows = expected.non_blank.saturating_sub(1);
    if result.is_ok() {
        accepted();
    }
    match result {
        Ok(()) if skip_bad => {
            prop_assert_eq!(
                points + summary.skipped,
                expected.too_long + rows,
                "points + skipped; {:?}",
                expected
            );
        }
        Ok(()) => {
            prop_assert_eq!(summary.skipped, 0);
            prop_assert_eq!(expected.too_long, 0, "a long line passed");
            prop_assert_eq!(points, rows, "{:?}", expected);
        }
        Err(ReplayError::BadLine { line, .. }) => {
            if skip_bad {
                prop_assert_eq!(Some(line), expected.header, "only the header stops");
            }
        }
        Err(other) => prop_assert!(false, "unexpected error: {}", other),
    }
    Ok(())
}

/// Splits each line of `content` with `CsvSplitter` and checks the fields.
fn check_splitter(content: &[u8]) -> Result<(), TestCaseError> {
    let mut splitter = CsvSplitter::default();
    let mut again = CsvSplitter::default();
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(fields) = splitter.split(line) else {
            continue;
        };
        let fields: Vec<String> = fields.into_iter().map(str::to_owned).collect();
        // csv-core drops a BOM at the start of its input (of every line,
        // as the splitter resets it for each), and carriage returns
        // around the record (they end it; empty records, to csv-core).
        let text = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        let start = text.iter().take_while(|&&b| b == b'\r').count();
        let cr_after = text[start..].iter().rev().take_while(|&&b| b == b'\r');
        let plain = &text[start..text.len() - cr_after.count()];
        if !plain.is_empty()
            && !plain.contains(&b'"')
            && let Ok(text) = std::str::from_utf8(plain)
        {
            let plain: Vec<&str> = text.split(',').collect();
            prop_assert_eq!(&fields, &plain, "plain split");
        }
        let written = quoted(&fields);
        let read = again.split(written.as_bytes());
        prop_assert!(read.is_ok(), "written back: {:?}", written);
        prop_assert_eq!(read.unwrap(), fields.clone(), "written back: {:?}", written);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The TOML configuration.
// ---------------------------------------------------------------------

/// Integers, in range for some keys and not for others, in TOML's
/// spellings.
const TOML_INTEGERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "7",
    "120",
    "10000",
    "10001",
    "65535",
    "65536",
    "1000000",
    "1000001",
    "1073741824",
    "1073741825",
    "100000000",
    "4294967296",
    "9223372036854775807",
    "99999999999999999999",
    "0x10",
    "0o7",
    "1_000",
    "+5",
];
/// Floats, in range for some keys, and infinities and NaN.
const TOML_FLOATS: &[&str] = &[
    "0.5", "1e-14", "6.0", "0.0", "-0.0", "inf", "-inf", "nan", "1e309", "4", "1000.0", "1000.5",
    "0.999999", "1.0", "1e6", "1e150", "1e151", "5e-324", "3",
];
/// Durations, valid and not.
const TOML_DURATIONS: &[&str] = &[
    "\"10s\"",
    "\"1h30m\"",
    "\"0s\"",
    "\"1d2h\"",
    "\"500ms\"",
    "\"1.5s\"",
    "\"\"",
    "\"abc\"",
    "\"366d\"",
    "\"367d\"",
    "\"365d\"",
    "\"1d1ms\"",
    "\"18446744073709551615s\"",
    "\"99999999999999999999d\"",
    "\"1s1s\"",
    "\"-1s\"",
    "\"1 s\"",
    "\"1h 30m\"",
    "\"24h\"",
    "\"86401s\"",
    "\"3600s\"",
    "\"1ns\"",
    "\"1us\"",
    "10",
];
/// Socket addresses, valid and not.
const TOML_ADDRESSES: &[&str] = &[
    "\"127.0.0.1:8001\"",
    "\"[::1]:9000\"",
    "\"localhost:80\"",
    "\"0.0.0.0:0\"",
    "\"[fe80::1%eth0]:1\"",
    "\"1.2.3.4\"",
    "\"127.0.0.1:65536\"",
];
/// The spellings of every choice key, and near misses.
const TOML_CHOICES: &[&str] = &[
    "\"upper\"",
    "\"lower\"",
    "\"both\"",
    "\"never\"",
    "\"interval\"",
    "\"always\"",
    "\"self\"",
    "\"external\"",
    "\"error\"",
    "\"warn\"",
    "\"info\"",
    "\"debug\"",
    "\"trace\"",
    "\"moving_average\"",
    "\"ewma\"",
    "\"median_mad\"",
    "\"seasonal\"",
    "\"Both\"",
    "\"\"",
];
/// URLs, valid and not.
const TOML_URLS: &[&str] = &[
    "\"http://127.0.0.1:9093\"",
    "\"http://127.0.0.1:9093/\"",
    "\"http://am.example/prefix?x=1\"",
    "\"http://[::1]:9093/am\"",
    "\"https://x\"",
    "\"http://u:p@x/\"",
    "\"localhost:9093\"",
    "\"not a url\"",
    "\"http://\"",
    "\"http://x:99999\"",
    "\"http://é.example\"",
];
/// Strings in every TOML form.
const TOML_STRINGS: &[&str] = &[
    "\"warning\"",
    "\"critical\"",
    "\"\"",
    "\"a\\tb\"",
    "\"a\\u0000\"",
    "\"\\u00e9\"",
    "\"/var/log/anomalyd/anomalies.log\"",
    "\"anomalies.log\"",
    "'literal \\ string'",
    "\"\"\"multi\nline\"\"\"",
    "'''raw\nlines'''",
    "\"\\\"q\\\"\"",
];
/// Series globs, valid and not.
const TOML_GLOBS: &[&str] = &[
    "\"cpu.*\"",
    "\"disk.{read,write}\"",
    "\"[\"",
    "\"**\"",
    "\"a\\\\b\"",
    "\"node_*\"",
    "\"*\"",
    "\"\"",
    "\"{a,{b,c}}\"",
    "\"[!a-z]\"",
    "\"b \\\"q\\\"\"",
];
/// Inline tables (for `labels` and `headers`).
const TOML_TABLES: &[&str] = &[
    "{ Authorization = \"Bearer x\" }",
    "{ job = \"node\", mode = \"idle\" }",
    "{ job = \"node*\" }",
    "{}",
    "{ \"X-Token\" = \"a\\nb\" }",
    "{ \"bad header\" = \"x\" }",
    "{ job = 1 }",
    "{ a = { b = \"c\" } }",
    "{ \"é\" = \"é\" }",
];
/// Values of the kinds no key takes.
const TOML_OTHER: &[&str] = &[
    "true",
    "false",
    "[1, 2]",
    "[]",
    "[\"a\"]",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "1979-05-27",
];

/// Values every key of their kind takes (whatever its range), per kind;
/// `toml_values` has those of the choice, table and bool keys.
const TOML_GOOD_INTEGERS: &[&str] = &["1", "2", "7", "10", "100"];
const TOML_GOOD_FLOATS: &[&str] = &["0.5", "0.25", "0.01", "0.999"];
const TOML_GOOD_DURATIONS: &[&str] = &["\"10s\"", "\"1m\"", "\"2s\""];
const TOML_GOOD_ADDRESSES: &[&str] = &["\"127.0.0.1:8001\"", "\"[::1]:9000\"", "\"0.0.0.0:0\""];
const TOML_GOOD_URLS: &[&str] = &[
    "\"http://127.0.0.1:9093\"",
    "\"http://127.0.0.1:9093/\"",
    "\"http://am.example/prefix?x=1\"",
    "\"http://[::1]:9093/am\"",
];
const TOML_GOOD_GLOBS: &[&str] = &[
    "\"cpu.*\"",
    "\"disk.{read,write}\"",
    "\"node_*\"",
    "\"*\"",
    "\"b \\\"q\\\"\"",
];
const TOML_GOOD_STRINGS: &[&str] = &[
    "\"warning\"",
    "\"critical\"",
    "\"anomalies.log\"",
    "\"\\u00e9\"",
];
const TOML_BOOLS: &[&str] = &["true", "false"];

/// The values worth trying for the key `key`, by what its name says:
/// values of its kind that are valid, and others.
fn toml_values(key: &str) -> (&'static [&'static str], &'static [&'static str]) {
    let has = |words: &[&str]| words.iter().any(|w| key.contains(w));
    if has(&["listen"]) {
        (TOML_GOOD_ADDRESSES, TOML_ADDRESSES)
    } else if key == "season" {
        (&["\"1d\"", "\"1h\"", "\"7d\""], TOML_DURATIONS)
    } else if key == "bucket" {
        (&["\"5m\"", "\"1m\"", "\"1h\""], TOML_DURATIONS)
    } else if has(&["url"]) {
        (TOML_GOOD_URLS, TOML_URLS)
    } else if has(&["timeout", "ttl", "grace", "season", "bucket", "interval"]) && key != "seasons"
    {
        (TOML_GOOD_DURATIONS, TOML_DURATIONS)
    } else if has(&["multiplier", "std_dev", "half_life"]) {
        (TOML_GOOD_FLOATS, TOML_FLOATS)
    } else if key == "detector" {
        (
            &[
                "\"moving_average\"",
                "\"ewma\"",
                "\"median_mad\"",
                "\"seasonal\"",
            ],
            TOML_CHOICES,
        )
    } else if key == "direction" {
        (&["\"upper\"", "\"lower\"", "\"both\""], TOML_CHOICES)
    } else if key == "fsync" {
        (&["\"never\"", "\"interval\"", "\"always\""], TOML_CHOICES)
    } else if key == "rotate" {
        (&["\"self\"", "\"external\""], TOML_CHOICES)
    } else if key == "level" {
        (&["\"error\"", "\"info\"", "\"trace\""], TOML_CHOICES)
    } else if key == "series" || key == "metric" {
        (TOML_GOOD_GLOBS, TOML_GLOBS)
    } else if key == "labels" {
        (
            &["{ job = \"node\", mode = \"idle\" }", "{ job = \"node*\" }"],
            TOML_TABLES,
        )
    } else if key == "headers" {
        (
            &[
                "{ Authorization = \"Bearer x\" }",
                "{ \"X-Token\" = \"t\" }",
            ],
            TOML_TABLES,
        )
    } else if matches!(key, "dashboard" | "journal" | "exclude_anomalies")
        || key.starts_with("allow_")
        || key.ends_with("_auth")
    {
        (TOML_BOOLS, &["1", "\"true\"", "yes"])
    } else if has(&["severity", "file", "path", "directory"]) {
        (TOML_GOOD_STRINGS, TOML_STRINGS)
    } else {
        (TOML_GOOD_INTEGERS, TOML_INTEGERS)
    }
}

/// Every pool of values.
const TOML_ALL: &[&[&str]] = &[
    TOML_INTEGERS,
    TOML_FLOATS,
    TOML_DURATIONS,
    TOML_ADDRESSES,
    TOML_CHOICES,
    TOML_URLS,
    TOML_STRINGS,
    TOML_GLOBS,
    TOML_TABLES,
    TOML_OTHER,
];

/// The sections of the configuration and their keys, from
/// `known_keys()`; `[[rule]]` takes every `[detector]` key too.
fn config_sections() -> Arc<BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dotted in known_keys() {
        if let Some((section, key)) = dotted.rsplit_once('.') {
            sections
                .entry(section.to_owned())
                .or_default()
                .push(key.to_owned());
        }
    }
    if let Some(detector) = sections.get("detector").cloned() {
        sections.entry("rule".into()).or_default().extend(detector);
    }
    Arc::new(sections)
}

/// A configuration document with the real sections and keys, values
/// mostly of the kind each key takes.
fn toml_document() -> BoxedStrategy<String> {
    let sections = config_sections();
    let names: Vec<String> = sections.keys().cloned().collect();
    // One key: which key, and a value: mostly a valid one for the key,
    // sometimes another of its kind, or of any kind.
    let key = (any::<Index>(), any::<Index>(), any::<Index>(), 0u8..40);
    // A table: its section, keys, and a style (mostly right: `[[...]]` for
    // arrays of tables, `[...]` else; the keys a table needs first; each
    // key once).
    let table = (select(names), vec(key, 0..7), 0u8..20).prop_map(move |(name, keys, style)| {
        let array = name == "rule" || name.starts_with("alert.");
        let mut text = match (array, style) {
            (_, 0) => format!("[[{name}]]\n"),
            (_, 1) => format!("[{name}]\n"),
            (true, _) => format!("[[{name}]]\n"),
            (false, _) => format!("[{name}]\n"),
        };
        let known = &sections[&name];
        let mut seen = Vec::new();
        if style != 3 {
            let first = match name.as_str() {
                "rule" => Some("series"),
                n if n.starts_with("alert.") => Some("url"),
                _ => None,
            };
            if let Some(first) = first {
                let (good, _) = toml_values(first);
                text.push_str(&format!("{first} = {}\n", good[keys.len() % good.len()]));
                seen.push(first);
            }
        }
        for (which, pool, value, kind) in keys {
            let key = known[which.index(known.len())].as_str();
            if seen.contains(&key) && style != 4 {
                continue;
            }
            seen.push(key);
            let (good, other) = toml_values(key);
            let pool = match kind {
                0 => TOML_ALL[pool.index(TOML_ALL.len())],
                1 | 2 => other,
                _ => good,
            };
            let key = if kind == 1 && style == 2 {
                format!("{key}x")
            } else {
                key.to_owned()
            };
            text.push_str(&format!("{key} = {}\n", pool[value.index(pool.len())]));
        }
        (name, array, text)
    });
    let top = prop_oneof![
        8 => Just(""),
        1 => select(&[
            "# comment\n",
            "unknown = 1\n",
            "server.listen = \"127.0.0.1:1\"\n",
            "detector = 5\n",
            "[server]\n[server]\n",
            "rule = []\n",
            "[alert]\nwebhook = 1\n",
        ][..]),
    ];
    (top, vec(table, 0..6), proptest::bool::weighted(0.1))
        .prop_map(|(top, tables, repeat)| {
            // A section that is not an array of tables appears once
            // (unless `repeat`: a duplicate table is an error to try too).
            let mut seen = Vec::new();
            let mut text = top.to_owned();
            for (name, array, table) in tables {
                if !array && !repeat && seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                text.push_str(&table);
                text.push('\n');
            }
            text
        })
        .boxed()
}

/// TOML tokens for mutations.
const TOML_DICT: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"=",
    b" = ",
    b"\"",
    b"'",
    b"'''",
    b"\"\"\"",
    b"\n",
    b"\r\n",
    b"#",
    b".",
    b"{",
    b"}",
    b",",
    b"\\",
    b"\\u00e9",
    b"\\U0010FFFF",
    b"inf",
    b"nan",
    b"1979-05-27T07:32:00Z",
    b"0x",
    b"_",
    b"true",
    b"-",
    b"+",
    b"[server]",
    b"[detector]",
    b"[[rule]]",
    b"[log]",
    b"[[alert.webhook]]",
    b"[[alert.alertmanager]]",
    b"series = \"*\"",
    b"\xff",
    b"\xc3\xa9",
    b"\x00",
    b"\t",
];

/// `config` as `to_toml` prints it: webhook headers (their values are
/// often tokens) and proxies with a password are shown as a comment only,
/// by design.
fn printable(config: &Config) -> Config {
    let hidden = |proxy: &Option<anomalyd::http_client::Proxy>| {
        proxy.as_ref().is_some_and(|p| p.shown.contains("<hidden>"))
    };
    let mut config = config.clone();
    for webhook in &mut config.alert.webhooks {
        webhook.headers.clear();
        if hidden(&webhook.proxy) {
            webhook.proxy = None;
        }
    }
    for alertmanager in &mut config.alert.alertmanagers {
        if hidden(&alertmanager.proxy) {
            alertmanager.proxy = None;
        }
    }
    config
}

/// The configuration parser: no panic; a problem's position lies in the
/// document; an accepted configuration prints (`to_toml`) as a document
/// that parses back to the same configuration and prints the same again.
#[test]
fn fuzz_config() {
    let file = Path::new("/etc/anomalyd/anomalyd.toml");
    let strategy = inputs(bytes_of(toml_document()), TOML_DICT);
    fuzz("fuzz_config", strategy, |input| {
        let text = String::from_utf8_lossy(&input.0);
        match Config::from_toml_str(&text, file) {
            Ok(config) => {
                accepted();
                let printed = config.to_toml();
                match Config::from_toml_str(&printed, file) {
                    Ok(again) => {
                        prop_assert_eq!(printable(&again), printable(&config), "{}", printed);
                        prop_assert_eq!(again.to_toml(), printable(&config).to_toml());
                    }
                    Err(errors) => {
                        prop_assert!(false, "printed:\n{}\ndoes not parse: {}", printed, errors)
                    }
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty(), "an error without problems");
                let lines = 1 + text.matches('\n').count();
                for problem in &errors.0 {
                    if let Some((line, column)) = problem.position {
                        prop_assert!(
                            (1..=lines).contains(&line) && column >= 1,
                            "{}:{} of {} lines: {}",
                            line,
                            column,
                            lines,
                            problem
                        );
                    }
                }
                let _ = errors.to_string();
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------
// Query strings.
// ---------------------------------------------------------------------

/// Query keys: those of the endpoints, others, percent-encoded ones.
const QUERY_KEYS: &[&str] = &[
    "series",
    "series_glob",
    "since",
    "until",
    "limit",
    "episode",
    "open",
    "sort",
    "precision",
    "db",
    "bucket",
    "org",
    "rp",
    "",
    "x",
    "se%72ies",
    "since+",
    "%",
    "%zz",
    "%FF",
    "series%00",
];

/// Query values: numbers, times, booleans, sorts, precisions, globs,
/// percent escapes valid and not.
const QUERY_VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "10000",
    "10001",
    "18446744073709551615",
    "18446744073709551616",
    "1700000000",
    "1700000000.5",
    "1e400",
    "NaN",
    "inf",
    "-inf",
    "1e308",
    "2023-11-14T22:13:20Z",
    "2023-11-14T22:13:20.5%2B01:00",
    "2023-11-14T23:13:20.5+01:00",
    "2023-11-14 22:13:20z",
    "2023-02-29T00:00:00Z",
    "2024-02-29T00:00:00Z",
    "2023-12-31T23:59:60Z",
    "9999-12-31T23:59:59.999999999Z",
    "0000-01-01T00:00:00Z",
    "2023-11-14T22:13:20.Z",
    "2023-11-14T22:13:20+24:00",
    "2023-11-14T22:13:20-00:60",
    "2023-11-14T22:13:2",
    "2023-1é-14T22:13:20Z",
    "true",
    "false",
    "yes",
    "name",
    "anomalies",
    "points",
    "last_seen",
    "ns",
    "n",
    "us",
    "u",
    "µ",
    "%C2%B5",
    "ms",
    "s",
    "m",
    "h",
    "cpu.*",
    "disk.{read,write}",
    "[",
    "**",
    "%",
    "%2",
    "%zz",
    "%C3%A9",
    "%FF",
    "%ff%fe",
    "%00",
    "+",
    "a+b",
    "%2B",
    "node_load1%7Bjob%3D%22node%22%7D",
];

/// A time as RFC 3339, valid or nearly.
fn rfc3339() -> BoxedStrategy<String> {
    (
        0u32..10000,
        0u32..14,
        0u32..33,
        0u32..25,
        0u32..61,
        0u32..62,
        option::of("[0-9]{0,12}"),
        select(
            &[
                "Z", "z", "+01:00", "-23:59", "+24:00", "", "+1:00", "%2B05:30",
            ][..],
        ),
        select(&["T", "t", " ", "+", "_"][..]),
    )
        .prop_map(|(y, mo, d, h, mi, s, fraction, zone, t)| {
            let fraction = fraction.map_or(String::new(), |f| format!(".{f}"));
            format!("{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{fraction}{zone}")
        })
        .boxed()
}

/// A query string of pairs, mostly of known keys.
fn query_string() -> BoxedStrategy<String> {
    let value = prop_oneof![
        4 => one_of(QUERY_VALUES),
        2 => rfc3339(),
        1 => any::<f64>().prop_map(|v| v.to_string()),
        1 => any::<u64>().prop_map(|v| v.to_string()),
        1 => "[a-zA-Z0-9%+=&._*{},é-]{0,10}",
    ];
    let key = prop_oneof![
        4 => one_of(&["series", "series_glob", "since", "until", "limit", "episode", "open"]),
        1 => one_of(QUERY_KEYS),
    ];
    let pair = (key, option::weighted(0.9, value)).prop_map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k,
    });
    (vec(pair, 0..5), select(&["&", "&", "&", "&&", ";"][..]))
        .prop_map(|(pairs, sep)| pairs.join(sep))
        .boxed()
}

/// Query-string tokens for mutations.
const QUERY_DICT: &[&[u8]] = &[
    b"&",
    b"=",
    b"%",
    b"%2",
    b"%25",
    b"%C3",
    b"%A9",
    b"%FF",
    b"+",
    b"series=",
    b"since=",
    b"until=",
    b"limit=",
    b"episode=",
    b"open=",
    b"series_glob=",
    b"precision=",
    b"sort=",
    b"T",
    b"Z",
    b":",
    b"-",
    b".",
    b"0",
    b"9",
    b"\xc3\xa9",
    b"\xff",
];

/// The query-string parsers of every endpoint, `parse_time` and
/// `parse_rfc3339`: no panic; a parsed time is finite; a component
/// percent-encoded decodes back; a time written as RFC 3339 reads back.
#[test]
fn fuzz_query() {
    let strategy = (
        inputs(bytes_of(query_string()), QUERY_DICT),
        0.0..MAX_TIMESTAMP,
    );
    fuzz("fuzz_query", strategy, |(input, time)| {
        let raw = String::from_utf8_lossy(&input.0);
        let raw = raw.as_ref();
        let finite = |t: Option<f64>| t.is_none_or(f64::is_finite);
        if let Ok(query) = parse_anomalies_query(raw) {
            accepted();
            prop_assert!(finite(query.since) && finite(query.until));
        }
        if let Ok(query) = parse_episodes_query(raw) {
            prop_assert!(finite(query.since) && finite(query.until));
        }
        let _ = parse_series_query(raw);
        let _ = parse_events_query(raw);
        let _ = parse_influx_query(raw, true);
        let _ = parse_influx_query(raw, false);
        for part in raw.split(['&', '=']) {
            if let Ok(t) = parse_time("since", part) {
                prop_assert!(t.is_finite(), "{}", t);
            }
            if let Ok(t) = parse_rfc3339(part) {
                prop_assert!(t.is_finite(), "{}", t);
            }
            let _ = anomalyd::percent::decode(part);
            if let Some(decoded) = decode_component(part) {
                let encoded = percent_encoding::utf8_percent_encode(
                    &decoded,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                prop_assert_eq!(decode_component(&encoded), Some(decoded));
            }
        }
        if let Some(text) = rfc3339_millis(*time) {
            let read = parse_rfc3339(&text);
            prop_assert!(read.is_ok(), "{} does not read back", text);
            let read = read.unwrap();
            // Rounded to the millisecond, give or take the f64 steps of
            // times near the year 9999 (3e-5 s).
            prop_assert!((read - time).abs() <= 0.0006, "{} read as {}", text, read);
        }
        Ok(())
    });
}
