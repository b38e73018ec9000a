//! A fast scanner for the common shape of a point object, such as
//! `{"value": 53.25, "series": "s17", "seq": 9}`.
//!
//! It accepts only what it can read without doubt: the four known keys at
//! most once each, plain numbers, and series names without escapes. For
//! anything else (escapes, `null`, unknown or repeated keys, any syntax or
//! type error) it gives up and the caller parses with serde, which gives
//! the exact error message. So it changes speed, never results: a proptest
//! checks that whatever it accepts, serde reads the same way.
//!
//! Why hand-written: measured, not assumed. NDJSON through serde alone
//! took 2.4 million points/s on one core; with this scanner in front,
//! 4–5 million (`daemon/benches/load.sh`, see the changelog). No crate
//! reads this one fixed shape without building a generic value first.

use std::borrow::Cow;

use super::point::{DEFAULT_SERIES, DataPoint};

/// Reads `bytes` (one JSON object, with optional surrounding whitespace) as
/// a point, or `None` when serde must decide.
pub fn point(bytes: &[u8]) -> Option<DataPoint<'_>> {
    let mut s = Scanner {
        bytes,
        at: 0,
        in_line: false,
    };
    let point = s.object()?;
    s.skip_ws();
    (s.at == bytes.len()).then_some(point)
}

/// Reads the NDJSON line of `body` that starts at `start` (one object, with
/// optional spaces, tabs and carriage returns around it) as a point; returns
/// it and where the next line starts (after the `\n`, or the body's end).
/// `None` when serde must decide; the caller then finds the line's end.
/// Reading the body in one pass, rather than splitting it into lines
/// first, saves a pass over every byte.
pub fn ndjson_point(body: &[u8], start: usize) -> Option<(DataPoint<'_>, usize)> {
    let mut s = Scanner {
        bytes: body,
        at: start,
        in_line: true,
    };
    let point = s.object()?;
    s.skip_ws();
    match s.peek() {
        None => Some((point, s.at)),
        Some(b'\n') => Some((point, s.at + 1)),
        Some(_) => None,
    }
}

impl<'a> Scanner<'a> {
    /// One object at `at` (after optional whitespace), up to its `}`.
    fn object(&mut self) -> Option<DataPoint<'a>> {
        let s = self;
        s.skip_ws();
        s.eat(b'{')?;
        let mut value = None;
        let mut timestamp = None;
        let mut series = None;
        let mut seq = None;
        s.skip_ws();
        if s.peek()? == b'}' {
            return None; // missing `value`: serde's message
        }
        loop {
            s.skip_ws();
            let key = s.key()?;
            s.skip_ws();
            s.eat(b':')?;
            s.skip_ws();
            match key {
                Key::Value if value.is_none() => value = Some(s.float()?),
                Key::Timestamp if timestamp.is_none() => timestamp = Some(s.float()?),
                Key::Series if series.is_none() => {
                    series = Some(std::str::from_utf8(s.plain_string()?).ok()?)
                }
                Key::Seq if seq.is_none() => seq = Some(s.unsigned()?),
                _ => return None,
            }
            s.skip_ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        Some(DataPoint {
            value: value?,
            timestamp,
            series: Cow::Borrowed(series.unwrap_or(DEFAULT_SERIES)),
            seq,
        })
    }
}

/// The keys a point object may have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Value,
    Timestamp,
    Series,
    Seq,
}

/// 10^0 to 10^15, all exact in `f64`.
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Within one NDJSON line: a line feed ends it, it is not whitespace.
    in_line: bool,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// JSON whitespace: space, tab, line feed (but within a line),
    /// carriage return.
    #[inline(always)]
    fn skip_ws(&mut self) {
        // Compact JSON has none: one comparison (every whitespace byte is
        // at most a space).
        if self.peek().is_some_and(|b| b > b' ') {
            return;
        }
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'\n' if !self.in_line => {}
                _ => return,
            }
            self.at += 1;
        }
    }

    /// One of the four keys with its closing quote, picked by its first
    /// letter and compared whole rather than scanned byte by byte; any
    /// other key (or one spelled with escapes) is `None`.
    fn key(&mut self) -> Option<Key> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        let (length, key) = match rest.first()? {
            b'v' if rest.starts_with(b"value\"") => (6, Key::Value),
            b't' if rest.starts_with(b"timestamp\"") => (10, Key::Timestamp),
            b's' if rest.starts_with(b"series\"") => (7, Key::Series),
            b's' if rest.starts_with(b"seq\"") => (4, Key::Seq),
            _ => return None,
        };
        self.at += length;
        Some(key)
    }

    /// A string without escapes or control characters; its raw bytes.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.next()? {
                b'"' => return Some(&self.bytes[start..self.at - 1]),
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// A JSON number (the exact grammar), as a finite `f64`.
    fn float(&mut self) -> Option<f64> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        // The digits are accumulated as they are scanned; past 19 of them
        // the sum may wrap, but then the fast path below is not taken.
        let mut mantissa = 0u64;
        let digits = match self.next()? {
            b'0' => 1,
            b @ b'1'..=b'9' => {
                mantissa = u64::from(b - b'0');
                1 + self.accumulate(&mut mantissa)
            }
            _ => return None,
        };
        let mut fraction = 0usize;
        if self.peek() == Some(b'.') {
            self.at += 1;
            fraction = self.accumulate(&mut mantissa);
            if fraction == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.at_least_one_digit()?;
        } else if digits + fraction <= 15 {
            // Clinger's fast path: with at most 15 digits the digits are
            // an integer below 2^53 and 10^(fraction digits) a power of
            // ten below 2^53, both exact in f64; one IEEE division of two
            // exact values is correctly rounded, as `from_str` is. Most
            // values and unix timestamps (`1700000000.25`) take it.
            // Below 2^53, so also below 2^63: the signed conversion (one
            // instruction) is exact too.
            let value = mantissa as i64 as f64 / POWERS_OF_TEN[fraction];
            return Some(if negative { -value } else { value });
        }
        // The grammar above is a subset of what `f64::from_str` accepts,
        // and both round correctly.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    /// A non-negative JSON integer that fits in `u64`.
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.at;
        let mut n = 0u64;
        let digits = match self.peek()? {
            b'0' => {
                self.at += 1;
                1
            }
            b'1'..=b'9' => self.accumulate(&mut n),
            _ => return None,
        };
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        if digits <= 19 {
            // Below 10^19 < 2^64: nothing wrapped.
            return Some(n);
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        text.parse().ok()
    }

    /// Scans digits, adding each to `mantissa` (wrapping past 19 digits);
    /// returns how many. Eight at a time while there are eight (a unix
    /// timestamp has ten), then one by one.
    fn accumulate(&mut self, mantissa: &mut u64) -> usize {
        let start = self.at;
        while let Some(eight) = eight_digits(self.bytes, self.at) {
            // Modulo 2^64 this is the same as eight single steps.
            *mantissa = mantissa.wrapping_mul(100_000_000).wrapping_add(eight);
            self.at += 8;
        }
        while let Some(b @ b'0'..=b'9') = self.peek() {
            *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            self.at += 1;
        }
        self.at - start
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// The value of the eight bytes of `bytes` at `at` read as decimal
/// digits, when there are eight and all are digits (SWAR, as simdjson
/// does it: the bytes as one little-endian word).
#[inline(always)]
fn eight_digits(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    let word = u64::from_le_bytes(chunk);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 keeps
    // it 3 (0x39 + 6 = 0x3f; 0x3a + 6 = 0x40).
    let high = word & 0xF0F0_F0F0_F0F0_F0F0;
    let carried = word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0;
    if high | (carried >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    // Digits 0..=9 per byte (first digit lowest), then pairs, fours,
    // eight: each step multiplies the higher half by 10, 100, 10^4.
    let digits = word - 0x3030_3030_3030_3030;
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    Some(
        ((pairs & MASK)
            .wrapping_mul(MUL1)
            .wrapping_add(((pairs >> 16) & MASK).wrapping_mul(MUL2)))
            >> 32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_digits_reads_only_eight_digits() {
        assert_eq!(eight_digits(b"12345678", 0), Some(12_345_678));
        assert_eq!(eight_digits(b"x00000009y", 1), Some(9));
        assert_eq!(eight_digits(b"99999999", 0), Some(99_999_999));
        assert_eq!(eight_digits(b"1234567", 0), None, "seven");
        for bad in [b'/', b':', b'.', b' ', b'e', 0x80, 0xb0, 0x3a + 0x80] {
            for at in 0..8 {
                let mut chunk = *b"12345678";
                chunk[at] = bad;
                assert_eq!(eight_digits(&chunk, 0), None, "{bad:#x} at {at}");
            }
        }
        for n in [0u64, 1, 10_000_000, 31_415_926, 98_765_432] {
            let text = format!("{n:08}");
            assert_eq!(eight_digits(text.as_bytes(), 0), Some(n));
        }
    }

    #[test]
    fn reads_the_common_shapes() {
        let p = point(br#"{"value": 53.25, "series": "s17"}"#).unwrap();
        assert_eq!((p.value, p.series.as_ref(), p.seq), (53.25, "s17", None));
        let p = point(b" {\"seq\":9,\"value\":-1e3,\"timestamp\":1.7e9} ").unwrap();
        assert_eq!(
            (p.value, p.timestamp, p.series.as_ref(), p.seq),
            (-1000.0, Some(1.7e9), "default", Some(9))
        );
    }

    #[test]
    fn numbers_read_as_from_str_reads_them() {
        for text in [
            "0",
            "-0",
            "1",
            "53.25",
            "1700000000.25",
            "0.1",
            "0.3",
            "123456789012345",
            "1234567890.12345",
            "0.000000000000001",
            "9007199254740993",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "12345678901234567890",
            "-99.99",
            "1e2",
            "0.10000000000000001",
        ] {
            let json = format!("{{\"value\": {text}, \"seq\": 7}}");
            let p = point(json.as_bytes()).unwrap();
            let expected: f64 = text.parse().unwrap();
            assert_eq!(p.value.to_bits(), expected.to_bits(), "{text}");
        }
        let p = point(br#"{"value": 1, "seq": 9999999999999999999}"#).unwrap();
        assert_eq!(p.seq, Some(9_999_999_999_999_999_999));
        let p = point(br#"{"value": 1, "seq": 18446744073709551615}"#).unwrap();
        assert_eq!(p.seq, Some(u64::MAX));
    }

    #[test]
    fn leaves_the_rest_to_serde() {
        for text in [
            r#"{"value": 1, "value": 2}"#,
            r#"{"value": 1, "series": "a\"b"}"#,
            r#"{"value": 1, "timestamp": null}"#,
            r#"{"value": 1, "extra": 2}"#,
            r#"{"series": "a"}"#,
            r#"{"value": 01}"#,
            r#"{"value": 1.}"#,
            r#"{"value": 1e400}"#,
            r#"{"value": 1, "seq": -1}"#,
            r#"{"value": 1, "seq": 1.0}"#,
            r#"{"value": 1, "seq": 18446744073709551616}"#,
            r#"{"value": 1,}"#,
            r#"{"value": 1} x"#,
            r#"{"value": "1"}"#,
            "{}",
            "",
        ] {
            assert!(point(text.as_bytes()).is_none(), "{text}");
        }
    }
}
