//! Reading the last anomalies back from the log at start-up, for
//! `GET /anomalies`.
//!
//! The file is read backwards in chunks, each byte once, and the read stops
//! as soon as the wanted number of whole lines is in hand, or after
//! [`scan_limit`] bytes, whatever the file holds (a huge log, or a tail with
//! no newline at all). Start-up time is thus bounded by the wanted count,
//! never by the size of the log.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read per step backwards.
const CHUNK: usize = 64 * 1024;
/// The scan limit when few records are wanted.
const MIN_SCAN: u64 = 64 * 1024 * 1024;
/// Bytes allowed per wanted record beyond [`MIN_SCAN`].
const SCAN_PER_RECORD: u64 = 4 * 1024;

/// At most this many bytes are read from the end of the log to find `max`
/// records: `max(64 MiB, max × 4 KiB)`.
pub fn scan_limit(max: usize) -> u64 {
    MIN_SCAN.max((max as u64).saturating_mul(SCAN_PER_RECORD))
}

/// What [`read_tail`] found.
#[derive(Debug)]
pub struct Tail<T> {
    /// Up to `max` parseable records, oldest first.
    pub records: Vec<T>,
    /// Bytes read from the file.
    pub scanned: u64,
    /// Lines in the scanned part that did not parse.
    pub unreadable: usize,
}

/// Reads up to `max` complete, parseable records from the end of the log
/// at `path`, oldest first (see the module documentation). A missing file
/// yields none.
pub fn read_tail<T: serde::de::DeserializeOwned>(path: &Path, max: usize) -> io::Result<Tail<T>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Tail {
                records: Vec::new(),
                scanned: 0,
                unreadable: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let (bytes, whole) = read_backwards(&mut file, len, max, scan_limit(max))?;
    let scanned = bytes.len() as u64;
    // Unless the scan reached the start of the file, the first piece is
    // the end of a line that began before it.
    let mut lines = bytes.split(|&b| b == b'\n');
    if !whole {
        lines.next();
    }
    let mut records = Vec::new();
    let mut unreadable = 0;
    for line in lines.rev() {
        if records.len() >= max {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(_) => unreadable += 1,
        }
    }
    records.reverse();
    if unreadable > 0 {
        tracing::warn!(path = %path.display(), skipped = unreadable, "Skipped unreadable lines in the anomaly log tail.");
    }
    Ok(Tail {
        records,
        scanned,
        unreadable,
    })
}

/// Reads backwards from `len` until the bytes read hold `max` whole lines
/// (`max + 1` newlines, or the start of the file) or `limit` bytes were
/// read. Returns the bytes in file order and whether they start at the
/// beginning of the file.
fn read_backwards(
    file: &mut File,
    len: u64,
    max: usize,
    limit: u64,
) -> io::Result<(Vec<u8>, bool)> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    let mut end = len;
    let floor = len.saturating_sub(limit);
    while end > floor && newlines <= max {
        let start = end.saturating_sub(CHUNK as u64).max(floor);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
        end = start;
    }
    let mut bytes = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for chunk in chunks.iter().rev() {
        bytes.extend_from_slice(chunk);
    }
    Ok((bytes, end == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct N {
        n: u32,
    }

    #[test]
    fn returns_the_last_records_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut text = String::new();
        for i in 0..20_000u32 {
            text.push_str(&format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(20)));
        }
        text.push_str("garbage\n");
        std::fs::write(&path, &text).unwrap();
        let got: Tail<N> = read_tail(&path, 5).unwrap();
        let ns: Vec<u32> = got.records.iter().map(|r| r.n).collect();
        assert_eq!(ns, vec![19_995, 19_996, 19_997, 19_998, 19_999]);
        assert_eq!(got.unreadable, 1);
        assert_eq!(
            got.scanned, CHUNK as u64,
            "one chunk holds the last 6 lines"
        );
        let all: Tail<N> = read_tail(&path, 100_000).unwrap();
        assert_eq!(all.records.len(), 20_000);
        assert_eq!(all.records[0].n, 0);
        assert_eq!(all.scanned, text.len() as u64);
        let none: Tail<N> = read_tail(&dir.path().join("missing"), 5).unwrap();
        assert!(none.records.is_empty());
    }

    /// A tail without newlines, larger than the limit, is scanned up to
    /// the limit and no further (each byte once).
    #[test]
    fn scanning_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let file = File::create(&path).unwrap();
        // Sparse: 80 MiB of NUL bytes with one record at the start.
        std::io::Write::write_all(&mut &file, b"{\"n\":1}\n").unwrap();
        file.set_len(80 * 1024 * 1024).unwrap();
        let tail: Tail<N> = read_tail(&path, 10).unwrap();
        assert_eq!(tail.scanned, scan_limit(10));
        assert_eq!(tail.scanned, 64 * 1024 * 1024);
        assert!(tail.records.is_empty());
        assert_eq!(scan_limit(1_000_000), 1_000_000 * 4096);
    }

    /// Reading stops once enough whole lines are found: the bytes read are
    /// proportional to what is wanted, not to the file.
    #[test]
    fn reads_only_as_much_as_the_wanted_lines_need() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let line = format!("{{\"n\":7,\"pad\":\"{}\"}}\n", "x".repeat(1000));
        let text = line.repeat(10_000); // about 10 MB
        std::fs::write(&path, &text).unwrap();
        let tail: Tail<N> = read_tail(&path, 100).unwrap();
        assert_eq!(tail.records.len(), 100);
        assert!(tail.scanned <= 2 * CHUNK as u64, "{}", tail.scanned);
        let tail: Tail<N> = read_tail(&path, 1_000).unwrap();
        assert_eq!(tail.records.len(), 1_000);
        let needed = 1_001 * line.len() as u64;
        assert!(
            tail.scanned >= needed && tail.scanned < needed + CHUNK as u64,
            "{}",
            tail.scanned
        );
    }
}
