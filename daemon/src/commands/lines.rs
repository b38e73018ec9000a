//! Reading replay inputs line by line, with a bound on the line length
//! (a line without end, such as `/dev/zero`, must not grow memory without
//! limit), and splitting CSV lines into fields with `csv-core` (the `csv`
//! crate's parser; quoting and `""` escapes, no allocation per line).
//!
//! Records are single lines: a quoted field cannot span lines, which no
//! valid point needs (series names may not hold control characters).

use std::io::{self, BufRead};

/// The UTF-8 byte order mark some tools put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes, without the line end (`\n` or `\r\n`).
    Text(&'a [u8]),
    /// The line was longer than the bound; its bytes were skipped.
    TooLong {
        /// The line's length in bytes (the bytes read of it, when it was
        /// not read to its end).
        len: u64,
    },
}

/// The lines of a reader, each at most `max` bytes kept in memory.
pub struct BoundedLines<R> {
    reader: R,
    buf: Vec<u8>,
    max: usize,
    number: u64,
    /// Read an over-long line to its end (to go on after it) rather than
    /// stop at the bound (the caller will stop anyway).
    finish_long_lines: bool,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `reader`, at most `max` bytes each. An over-long line is
    /// read to its end when `finish_long_lines` (memory stays bounded; a
    /// line without end, such as `/dev/zero`, is read for ever), else
    /// reported as soon as it passes the bound.
    pub fn new(reader: R, max: usize, finish_long_lines: bool) -> Self {
        BoundedLines {
            reader,
            buf: Vec::new(),
            max,
            number: 0,
            finish_long_lines,
        }
    }

    /// The longest line kept, in bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The next line and its 1-based number; `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len: u64 = 0;
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            any = true;
            let (piece, consumed, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], at + 1, true),
                None => (available, available.len(), false),
            };
            len += piece.len() as u64;
            if !too_long {
                if self.buf.len() + piece.len() > self.max {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(piece);
                }
            }
            self.reader.consume(consumed);
            if done || (too_long && !self.finish_long_lines) {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        if too_long {
            return Ok(Some((self.number, Line::TooLong { len })));
        }
        let mut text = self.buf.as_slice();
        if let Some(stripped) = text.strip_suffix(b"\r") {
            text = stripped;
        }
        if self.number == 1
            && let Some(stripped) = text.strip_prefix(BOM)
        {
            text = stripped;
        }
        Ok(Some((self.number, Line::Text(text))))
    }
}

/// Splits CSV lines into fields, reusing its buffers.
pub struct CsvSplitter {
    reader: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for CsvSplitter {
    fn default() -> Self {
        CsvSplitter {
            // `new`, not `Default`: csv-core's derived default state is
            // not a working parser.
            reader: csv_core::Reader::new(),
            out: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl CsvSplitter {
    /// The fields of `line`, or why they cannot be read.
    pub fn split(&mut self, line: &[u8]) -> Result<Vec<&str>, String> {
        self.reader.reset();
        self.out.clear();
        self.out.resize(line.len() + 1, 0);
        self.ends.clear();
        self.ends.resize(line.len() + 2, 0);
        let (mut input, mut out_at, mut ends_at) = (line, 0, 0);
        loop {
            let (result, read, written, ended) =
                self.reader
                    .read_record(input, &mut self.out[out_at..], &mut self.ends[ends_at..]);
            input = &input[read..];
            out_at += written;
            ends_at += ended;
            match result {
                // All of the line was given: an empty input ends it.
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
                csv_core::ReadRecordResult::OutputFull => {
                    let len = self.out.len();
                    self.out.resize(len * 2, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
            }
        }
        // csv-core ends a record at a carriage return: what follows one
        // inside the line would be lost without a word.
        if input.iter().any(|&b| b != b'\r') {
            return Err(
                "a carriage return (\\r) inside the line; lines end with \\n or \\r\\n".into(),
            );
        }
        let not_utf8 = || "the line is not valid UTF-8".to_owned();
        let text = std::str::from_utf8(&self.out[..out_at]).map_err(|_| not_utf8())?;
        let mut fields = Vec::with_capacity(ends_at);
        let mut start = 0;
        for &end in &self.ends[..ends_at] {
            // The fields together may be UTF-8 while one on its own is
            // not: `\xc3,\xa9` is `é` cut by a comma.
            fields.push(text.get(start..end).ok_or_else(not_utf8)?);
            start = end;
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(u64, Line<'static>)> {
        let mut reader = BoundedLines::new(io::BufReader::with_capacity(4, input), max, true);
        let mut all = Vec::new();
        while let Some((n, line)) = reader.next_line().unwrap() {
            let owned = match line {
                Line::Text(t) => Line::Text(Vec::leak(t.to_vec())),
                Line::TooLong { len } => Line::TooLong { len },
            };
            all.push((n, owned));
        }
        all
    }

    #[test]
    fn lines_are_bounded_numbered_and_stripped() {
        // The bound counts the raw line: BOM and \r included.
        let got = lines(b"\xEF\xBB\xBFab\r\n0123456789\nxy", 6);
        assert_eq!(
            got,
            [
                (1, Line::Text(b"ab")),
                (2, Line::TooLong { len: 10 }),
                (3, Line::Text(b"xy")),
            ]
        );
        assert!(lines(b"", 6).is_empty());
        assert_eq!(lines(b"\n", 6), [(1, Line::Text(b""))]);
    }

    #[test]
    fn csv_fields_are_unquoted() {
        let mut splitter = CsvSplitter::default();
        assert_eq!(splitter.split(b"1,\"a,b\",x").unwrap(), ["1", "a,b", "x"]);
        assert_eq!(
            splitter.split(br#""say ""hi""",2"#).unwrap(),
            [r#"say "hi""#, "2"]
        );
        assert!(splitter.split(b"1,\xff").is_err());
        // Found by `tests/fuzz.rs`: a character cut by a comma (this
        // panicked).
        assert!(splitter.split(b"\xc3,\xa9").is_err());
        assert!(splitter.split(b"\xef,\xbb\xbf,").is_err());
        // Found by `tests/fuzz.rs`: a bare CR ended the record and the
        // rest of the line was dropped (old Mac line ends: no point).
        assert!(splitter.split(b"a,b\rc,d").is_err());
        assert!(splitter.split(b"value\r1\r2").is_err());
        assert_eq!(splitter.split(b"\"a\rb\",c").unwrap(), ["a\rb", "c"]);
        let wide = vec![b'x'; 10_000];
        assert_eq!(splitter.split(&wide).unwrap()[0].len(), 10_000);
    }
}
