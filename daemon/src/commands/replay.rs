//! `anomalyd replay`: the backtest tool. It runs the server's detector (the
//! same [`SeriesTable`]) over recorded points, in file order, and prints each
//! anomaly record as one NDJSON line; a summary per series goes to stderr.
//!
//! Input is NDJSON (the `/detect` point objects) or CSV with a header naming
//! the columns `timestamp`, `value`, `series` and `seq` (only `value` is
//! required). Series are never forgotten during a replay (`series_ttl` is a
//! wall-clock notion) and `max_series` does not apply.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::InputFormat;
use crate::clock::unix_now;
use crate::config::Config;
use crate::detect::Verdict;
use crate::ingest::{self, DataPoint};
use crate::series::SeriesTable;

/// Files at least this large (in total) get a progress bar on a terminal.
const PROGRESS_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// Errors that stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The input's path (`-` for stdin).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line could not be parsed or is invalid (without `--skip-bad`).
    #[error("{path}:{line}: {message} (use --skip-bad to skip such lines)")]
    BadLine {
        /// The input's path.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
}

/// Per-series counts of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesSummary {
    /// Points applied.
    pub points: u64,
    /// Anomalies flagged.
    pub anomalies: u64,
    /// Points that got no verdict because the window was warming up.
    pub warming_up: u64,
    /// Points skipped as duplicate `seq`.
    pub duplicates: u64,
}

/// The outcome of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Counts per series, by name.
    pub series: BTreeMap<String, SeriesSummary>,
    /// Bad lines skipped with `--skip-bad`.
    pub skipped: u64,
}

impl ReplaySummary {
    /// Writes the human-readable summary table.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "{:<32} {:>12} {:>10} {:>10} {:>10}",
            "series", "points", "anomalies", "warming_up", "duplicates"
        )?;
        let mut total = SeriesSummary::default();
        for (name, s) in &self.series {
            writeln!(
                out,
                "{:<32} {:>12} {:>10} {:>10} {:>10}",
                name, s.points, s.anomalies, s.warming_up, s.duplicates
            )?;
            total.points += s.points;
            total.anomalies += s.anomalies;
            total.warming_up += s.warming_up;
            total.duplicates += s.duplicates;
        }
        writeln!(
            out,
            "{:<32} {:>12} {:>10} {:>10} {:>10}",
            "(total)", total.points, total.anomalies, total.warming_up, total.duplicates
        )?;
        if self.skipped > 0 {
            writeln!(out, "skipped {} bad line(s)", self.skipped)?;
        }
        Ok(())
    }
}

/// Options of a replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Forced input format, else detected per file.
    pub format: Option<InputFormat>,
    /// Skip bad lines instead of stopping.
    pub skip_bad: bool,
    /// Inputs in order; `-` is stdin.
    pub files: Vec<PathBuf>,
}

/// Replays `options.files` through a fresh detector table built from
/// `config`, writing anomaly records to `out` as NDJSON.
pub fn replay(
    config: Arc<Config>,
    options: &ReplayOptions,
    out: &mut impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let table = SeriesTable::new(config);
    table.unlimited();
    let mut summary = ReplaySummary::default();
    let progress = progress_bar(&options.files);
    for path in &options.files {
        let reader: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(path).map_err(|source| ReplayError::Io {
                path: path.clone(),
                source,
            })?)
        };
        let reader = BufReader::with_capacity(256 * 1024, progress.wrap_read(reader));
        replay_one(&table, path, reader, options, out, &mut summary)?;
    }
    progress.finish_and_clear();
    out.flush().map_err(ReplayError::Output)?;
    Ok(summary)
}

fn progress_bar(files: &[PathBuf]) -> indicatif::ProgressBar {
    let total: u64 = files
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if total < PROGRESS_MIN_BYTES || !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn detect_format(path: &Path, first_line: &str) -> InputFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => InputFormat::Csv,
        Some("ndjson" | "jsonl" | "json") => InputFormat::Ndjson,
        _ if first_line.trim_start().starts_with('{') => InputFormat::Ndjson,
        _ => InputFormat::Csv,
    }
}

fn replay_one(
    table: &SeriesTable,
    path: &Path,
    mut reader: impl BufRead,
    options: &ReplayOptions,
    out: &mut impl Write,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let io_err = |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = String::new();
    let mut line_no: u64 = 0;
    let mut format = options.format;
    let mut csv: Option<CsvColumns> = None;
    let mut record_buf = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io_err)? == 0 {
            break;
        }
        line_no += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let format = *format.get_or_insert_with(|| detect_format(path, text));
        let parsed: Result<Option<DataPoint<'_>>, String> = match format {
            InputFormat::Ndjson => ingest::parse_ndjson_line(text.as_bytes())
                .map(Some)
                .map_err(|e| e.message),
            InputFormat::Csv => match &csv {
                None => match CsvColumns::from_header(text) {
                    Ok(columns) => {
                        csv = Some(columns);
                        Ok(None)
                    }
                    Err(message) => {
                        // A bad header makes every later line meaningless.
                        return Err(ReplayError::BadLine {
                            path: path.to_path_buf(),
                            line: line_no,
                            message,
                        });
                    }
                },
                Some(columns) => columns.parse_row(text).map(Some),
            },
        };
        let point = match parsed.and_then(|p| match p {
            Some(point) => ingest::validate_point(&point).map(|()| Some(point)),
            None => Ok(None),
        }) {
            Ok(Some(point)) => point,
            Ok(None) => continue,
            Err(message) if options.skip_bad => {
                summary.skipped += 1;
                tracing::debug!(path = %path.display(), line = line_no, %message, "Skipped a bad line.");
                continue;
            }
            Err(message) => {
                return Err(ReplayError::BadLine {
                    path: path.to_path_buf(),
                    line: line_no,
                    message,
                });
            }
        };
        let observation = table
            .observe_batch(std::slice::from_ref(&point))
            .expect("replay has no series limit")[0];
        let entry = summary.series.entry(point.series.to_string()).or_default();
        if observation.duplicate {
            entry.duplicates += 1;
            continue;
        }
        entry.points += 1;
        match observation.verdict {
            Verdict::WarmingUp { .. } => entry.warming_up += 1,
            Verdict::Normal(_) => {}
            Verdict::Anomaly(..) => {
                entry.anomalies += 1;
                let timestamp = point.timestamp.unwrap_or_else(unix_now);
                if let Some(record) = observation.record(&point, timestamp) {
                    record_buf.clear();
                    record.write_line(&mut record_buf);
                    out.write_all(&record_buf).map_err(ReplayError::Output)?;
                }
            }
        }
    }
    Ok(())
}

/// Column positions of a CSV input, from its header.
#[derive(Debug)]
struct CsvColumns {
    count: usize,
    value: usize,
    timestamp: Option<usize>,
    series: Option<usize>,
    seq: Option<usize>,
}

impl CsvColumns {
    fn from_header(header: &str) -> Result<Self, String> {
        let names = split_csv(header)?;
        let mut columns = CsvColumns {
            count: names.len(),
            value: usize::MAX,
            timestamp: None,
            series: None,
            seq: None,
        };
        for (i, name) in names.iter().enumerate() {
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "value" => {
                    columns.value = i;
                    continue;
                }
                "timestamp" => &mut columns.timestamp,
                "series" => &mut columns.series,
                "seq" => &mut columns.seq,
                other => {
                    return Err(format!(
                        "CSV header: unknown column `{other}`; expected `timestamp,value[,series]` (columns: timestamp, value, series, seq)"
                    ));
                }
            };
            *slot = Some(i);
        }
        if columns.value == usize::MAX {
            return Err(format!(
                "CSV header `{header}` has no `value` column; expected `timestamp,value[,series]`"
            ));
        }
        Ok(columns)
    }

    fn parse_row<'a>(&self, row: &'a str) -> Result<DataPoint<'a>, String> {
        let fields = split_csv(row)?;
        if fields.len() != self.count {
            return Err(format!(
                "expected {} columns as in the header, found {}",
                self.count,
                fields.len()
            ));
        }
        let value = fields[self.value]
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("column `value`: `{}` is not a number", fields[self.value]))?;
        let timestamp = match self.timestamp.map(|i| fields[i].trim()) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<f64>().map_err(|_| {
                format!("column `timestamp`: `{text}` is not a number (unix seconds)")
            })?),
        };
        let seq = match self.seq.map(|i| fields[i].trim()) {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| format!("column `seq`: `{text}` is not a non-negative integer"))?,
            ),
        };
        let series = match self.series {
            Some(i) => fields[i].clone(),
            None => Cow::Borrowed(ingest::DEFAULT_SERIES),
        };
        Ok(DataPoint {
            value,
            timestamp,
            series,
            seq,
        })
    }
}

/// Splits one CSV line; fields may be double-quoted with `""` as an escaped
/// quote.
fn split_csv(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        value.push('"');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or("unterminated quoted field")?;
            fields.push(Cow::Owned(value));
            rest = &quoted[end..];
            match rest.strip_prefix(',') {
                Some(next) => rest = next,
                None if rest.trim().is_empty() => return Ok(fields),
                None => return Err("unexpected text after a quoted field".into()),
            }
        } else {
            match rest.split_once(',') {
                Some((field, next)) => {
                    fields.push(Cow::Borrowed(field));
                    rest = next;
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(fields);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_splitting_handles_quotes() {
        let f = split_csv(r#"1,"a,b",x"#).unwrap();
        assert_eq!(f, vec!["1", "a,b", "x"]);
        let f = split_csv(r#""say ""hi""",2"#).unwrap();
        assert_eq!(f, vec![r#"say "hi""#, "2"]);
        assert!(split_csv(r#""open"#).is_err());
    }

    #[test]
    fn csv_header_and_rows() {
        let cols = CsvColumns::from_header("timestamp,value,series").unwrap();
        let p = cols.parse_row("10,1.5,cpu").unwrap();
        assert_eq!(
            (p.timestamp, p.value, p.series.as_ref()),
            (Some(10.0), 1.5, "cpu")
        );
        assert!(cols.parse_row("10,x,cpu").unwrap_err().contains("`value`"));
        assert!(cols.parse_row("10,1").unwrap_err().contains("columns"));
        assert!(
            CsvColumns::from_header("time,value")
                .unwrap_err()
                .contains("`time`")
        );
        assert!(
            CsvColumns::from_header("timestamp,series")
                .unwrap_err()
                .contains("no `value`")
        );
    }

    #[test]
    fn replays_a_spike_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.csv");
        let mut text = String::from("timestamp,value\n");
        for i in 0..40 {
            text.push_str(&format!("{i},{}\n", if i % 2 == 0 { 10.0 } else { 11.0 }));
        }
        text.push_str("40,100\n");
        std::fs::write(&path, &text).unwrap();
        let config = Arc::new(Config::default());
        let options = ReplayOptions {
            format: None,
            skip_bad: false,
            files: vec![path.clone()],
        };
        let mut out = Vec::new();
        let summary = replay(config.clone(), &options, &mut out).unwrap();
        let s = &summary.series["default"];
        assert_eq!((s.points, s.anomalies, s.warming_up), (41, 1, 30));
        let record: crate::api::AnomalyRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!((record.value, record.timestamp), (100.0, 40.0));

        text.push_str("41,oops\n");
        std::fs::write(&path, &text).unwrap();
        let err = replay(config.clone(), &options, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, ReplayError::BadLine { line: 43, .. }),
            "{err}"
        );
        let skipping = ReplayOptions {
            skip_bad: true,
            ..options
        };
        let summary = replay(config, &skipping, &mut Vec::new()).unwrap();
        assert_eq!(summary.skipped, 1);
    }
}
