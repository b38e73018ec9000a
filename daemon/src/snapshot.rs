//! The state snapshot file: the series table's records
//! ([`crate::series::snapshot`]) between a header and a trailer, written
//! so that a crash at any moment leaves the previous snapshot or the new
//! one, never a mix.
//!
//! Layout: the magic `ANOMALYD-SNAP\n\0\0` (16 bytes), the format version
//! (`u32`, little-endian), the records, then a trailer: the number of
//! series (`u64`) and the CRC-32 of everything before it (`u32`). A file
//! with another magic, another version, a wrong checksum or a short
//! trailer is refused whole; the caller logs it and starts empty.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::series::SeriesTable;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 16] = b"ANOMALYD-SNAP\n\0\0";
/// The format written; a file of another version is ignored.
pub const VERSION: u32 = 1;
/// The file's name in the state directory.
pub const FILE_NAME: &str = "series.snapshot";
/// Bytes of the trailer: series count and CRC-32.
const TRAILER: usize = 12;
/// Most bytes handed to the kernel in one write.
const WRITE_PIECE: usize = 128 * 1024;

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Not a snapshot of this program.
    #[error("{} is not an anomalyd snapshot (wrong magic)", path.display())]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// Written by another version of the format.
    #[error("{} is a version {found} snapshot; this anomalyd reads version {VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// Another daemon holds the directory's lock.
    #[error(
        "{} is in use by another anomalyd (its lock file is held); give each daemon its own [state] directory",
        path.display()
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// Truncated or damaged.
    #[error("{} is damaged or truncated (checksum mismatch)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

/// What a write produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Series in the file.
    pub series: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Writes `table` to `dir`/[`FILE_NAME`]: to a temporary file, fsynced,
/// renamed over the old one, and the directory fsynced. Each shard's
/// records are encoded under its lock, then written with no lock held.
/// On failure the temporary file is removed and the old snapshot stays.
pub fn write(table: &SeriesTable, dir: &Path) -> Result<Written, SnapshotError> {
    let temp = dir.join(format!("{FILE_NAME}.tmp"));
    let written = write_via(table, dir, &temp);
    if written.is_err() {
        // A partial file must not hold the space the next try needs.
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// [`write`] through the temporary file `temp`.
fn write_via(table: &SeriesTable, dir: &Path, temp: &Path) -> Result<Written, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let temp = temp.to_owned();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Io { path, source }
    };
    let mut file =
        io::BufWriter::with_capacity(WRITE_PIECE, File::create(&temp).map_err(io(&temp))?);
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    let mut put = |file: &mut io::BufWriter<File>, chunk: &[u8]| -> io::Result<()> {
        crc.update(chunk);
        bytes += chunk.len() as u64;
        file.write_all(chunk)
    };
    let mut series = 0u64;
    let mut buffer = Vec::new();
    let result = (|| -> io::Result<()> {
        put(&mut file, MAGIC)?;
        put(&mut file, &VERSION.to_le_bytes())?;
        for shard in 0..table.shard_count() {
            buffer.clear();
            series += table.export_shard(shard, &mut buffer) as u64;
            // In pieces: the kernel copies one write(2) into the page cache
            // without giving the core away, and a shard's records are
            // megabytes (30 ms per write on a busy core, measured).
            for piece in buffer.chunks(WRITE_PIECE) {
                put(&mut file, piece)?;
                std::thread::yield_now();
            }
        }
        put(&mut file, &series.to_le_bytes())?;
        Ok(())
    })();
    result.map_err(io(&temp))?;
    file.write_all(&crc.finalize().to_le_bytes())
        .map_err(io(&temp))?;
    let file = file.into_inner().map_err(|e| io(&temp)(e.into_error()))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(Written {
        series,
        bytes: bytes + 4,
    })
}

/// Reads `dir`/[`FILE_NAME`] and returns its records (for
/// [`SeriesTable::import`]) and series count; `Ok(None)` when there is no
/// snapshot.
pub fn read(dir: &Path) -> Result<Option<(Vec<u8>, u64)>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let mut bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    parse(&mut bytes, &path).map(Some)
}

/// The bytes of a snapshot file holding `records` (of `series` series),
/// for a snapshot kept elsewhere than in a file (a cluster member's
/// per-partition snapshot in the NATS object store).
pub fn encode(records: &[u8], series: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + records.len() + TRAILER);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(records);
    bytes.extend_from_slice(&series.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks the bytes of a snapshot (as [`encode`] or [`write`] made them)
/// and returns its records and series count; `name` says where the bytes
/// came from, in errors.
pub fn decode(mut bytes: Vec<u8>, name: &Path) -> Result<(Vec<u8>, u64), SnapshotError> {
    parse(&mut bytes, name)
}

/// Checks a whole file's bytes; leaves the records in `bytes`.
fn parse(bytes: &mut Vec<u8>, path: &Path) -> Result<(Vec<u8>, u64), SnapshotError> {
    let header = MAGIC.len() + 4;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot { path: path.into() });
    }
    if bytes.len() < header + TRAILER {
        return Err(SnapshotError::Corrupt { path: path.into() });
    }
    let version = u32::from_le_bytes(bytes[MAGIC.len()..header].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(SnapshotError::Version {
            path: path.into(),
            found: version,
        });
    }
    let crc_at = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err(SnapshotError::Corrupt { path: path.into() });
    }
    let count_at = crc_at - 8;
    let series = u64::from_le_bytes(bytes[count_at..crc_at].try_into().expect("8 bytes"));
    bytes.truncate(count_at);
    bytes.drain(..header);
    Ok((std::mem::take(bytes), series))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::ingest::DataPoint;

    fn table() -> SeriesTable {
        let config = Config::from_toml_str("[detector]\nwindow_size = 4\n", Path::new("t.toml"));
        SeriesTable::new(Arc::new(config.unwrap()))
    }

    fn fill(table: &SeriesTable, series: usize) {
        for i in 0..series {
            for seq in 1..=5u64 {
                let point = DataPoint {
                    value: seq as f64,
                    timestamp: Some(seq as f64),
                    series: Cow::Owned(format!("s{i}")),
                    seq: Some(seq),
                };
                table.observe_point(&point).unwrap();
            }
        }
    }

    #[test]
    fn a_written_snapshot_reads_back_into_a_new_table() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none(), "no snapshot yet");
        let before = table();
        fill(&before, 300);
        let written = write(&before, dir.path()).unwrap();
        assert_eq!(written.series, 300);
        let size = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert_eq!(written.bytes, size);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
        let (records, series) = read(dir.path()).unwrap().unwrap();
        assert_eq!(series, 300);
        let after = table();
        assert_eq!(after.import(&records).restored, 300);
        assert_eq!(after.len(), 300);
    }

    #[test]
    fn encoded_bytes_are_a_file_and_decode_back() {
        let dir = tempfile::tempdir().unwrap();
        let before = table();
        fill(&before, 40);
        write(&before, dir.path()).unwrap();
        let file = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let (records, series) = decode(file.clone(), Path::new("x")).unwrap();
        assert_eq!(series, 40);
        assert_eq!(encode(&records, series), file, "the same bytes as the file");
        let mut flipped = file;
        flipped[30] ^= 1;
        assert!(matches!(
            decode(flipped, Path::new("x")),
            Err(SnapshotError::Corrupt { .. })
        ));
    }

    #[test]
    fn damaged_truncated_foreign_and_old_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let before = table();
        fill(&before, 20);
        write(&before, dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read(dir.path()).unwrap_err()
        };
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        assert!(matches!(check(&flipped), SnapshotError::Corrupt { .. }));
        assert!(matches!(
            check(&good[..good.len() - 1]),
            SnapshotError::Corrupt { .. }
        ));
        assert!(matches!(check(&good[..20]), SnapshotError::Corrupt { .. }));
        assert!(matches!(
            check(b"{\"json\": true}\n"),
            SnapshotError::NotASnapshot { .. }
        ));
        let mut old = good.clone();
        old[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&0u32.to_le_bytes());
        let err = check(&old);
        assert!(
            matches!(err, SnapshotError::Version { found: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("reads version 1"), "{err}");
    }
}
