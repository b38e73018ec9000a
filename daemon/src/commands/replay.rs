//! `anomalyd replay`: the backtest tool. It runs the server's detector (the
//! same [`SeriesTable`]) over recorded points, in file order, and prints
//! one NDJSON line per episode: the anomaly record of the point that opened
//! it (with `--all-points`, the record of every anomalous point). A summary
//! per series goes to stderr.
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
use crate::config::Config;
use crate::detect::Verdict;
use crate::detect::episode::EpisodeEvent;
use crate::ingest::{self, DataPoint};
use crate::series::SeriesTable;

use super::lines::{BoundedLines, CsvSplitter, Line};

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
    /// Episodes opened.
    pub episodes: u64,
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
    /// The first few of them, as `path:line: message`.
    pub first_skipped: Vec<String>,
}

/// How many skipped lines the summary names.
const FIRST_SKIPPED_SHOWN: usize = 5;

impl ReplaySummary {
    /// Writes the human-readable summary table.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let row = |out: &mut dyn Write, name: &str, s: &SeriesSummary| {
            writeln!(
                out,
                "{:<32} {:>12} {:>10} {:>9} {:>10} {:>10}",
                name, s.points, s.anomalies, s.episodes, s.warming_up, s.duplicates
            )
        };
        writeln!(
            out,
            "{:<32} {:>12} {:>10} {:>9} {:>10} {:>10}",
            "series", "points", "anomalies", "episodes", "warming_up", "duplicates"
        )?;
        let mut total = SeriesSummary::default();
        for (name, s) in &self.series {
            row(out, name, s)?;
            total.points += s.points;
            total.anomalies += s.anomalies;
            total.episodes += s.episodes;
            total.warming_up += s.warming_up;
            total.duplicates += s.duplicates;
        }
        row(out, "(total)", &total)?;
        if self.series.is_empty() {
            writeln!(out, "no points read")?;
        }
        if self.skipped > 0 {
            writeln!(
                out,
                "skipped {} bad line(s){}:",
                self.skipped,
                if self.skipped > self.first_skipped.len() as u64 {
                    format!("; the first {}", self.first_skipped.len())
                } else {
                    String::new()
                }
            )?;
            for line in &self.first_skipped {
                writeln!(out, "  {line}")?;
            }
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
    /// Print every anomalous point, not one line per episode.
    pub all_points: bool,
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
    // A line longer than the largest body /detect takes is a bad line.
    let max_line = config.server.max_body_bytes;
    let table = SeriesTable::new(config);
    table.unlimited();
    let mut summary = ReplaySummary::default();
    let mut series = BTreeMap::new();
    let mut record_buf = Vec::with_capacity(256);
    for_each_point(options, max_line, &mut summary, &mut |point| {
        apply(&table, point, &mut series, options.all_points, |record| {
            record_buf.clear();
            record.write_line(&mut record_buf);
            out.write_all(&record_buf).map_err(ReplayError::Output)
        })
    })?;
    summary.series = series;
    out.flush().map_err(ReplayError::Output)?;
    Ok(summary)
}

/// Applies one point to `table`, counts it in `series`, and hands
/// `write` the record of a point that opened an episode (of every
/// anomalous point with `all_points`).
fn apply(
    table: &SeriesTable,
    point: &DataPoint<'_>,
    series: &mut BTreeMap<String, SeriesSummary>,
    all_points: bool,
    mut write: impl FnMut(&crate::api::AnomalyRecord) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let observation = table
        .observe_point(point)
        .expect("replay has no series limit");
    let entry = series.entry(point.series.to_string()).or_default();
    if observation.duplicate {
        entry.duplicates += 1;
        return Ok(());
    }
    entry.points += 1;
    match observation.verdict {
        Verdict::WarmingUp { .. } => entry.warming_up += 1,
        Verdict::Normal(_) => {}
        Verdict::Anomaly(..) => {
            entry.anomalies += 1;
            let opened = observation.episode.event == Some(EpisodeEvent::Opened);
            entry.episodes += u64::from(opened);
            if (opened || all_points)
                && let Some(record) = observation.record(point)
            {
                write(&record)?;
            }
        }
    }
    Ok(())
}

/// Reads every point of `options.files`, in order, and hands each valid
/// one to `sink`. A bad line stops the reading with its error, or with
/// `skip_bad` is counted in `summary` (the first few named).
pub fn for_each_point(
    options: &ReplayOptions,
    max_line: usize,
    summary: &mut ReplaySummary,
    sink: &mut dyn FnMut(&DataPoint<'_>) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
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
        let lines = BoundedLines::new(reader, max_line, options.skip_bad);
        let mut reader = PointReader {
            path,
            skip_bad: options.skip_bad,
            summary,
            sink,
        };
        reader.run(lines, options.format, max_line)?;
    }
    progress.finish_and_clear();
    Ok(())
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

/// The format of an input whose first non-blank line is `first`: by its
/// extension, else NDJSON when the line starts with `{`.
fn detect_format(path: &Path, first: &[u8]) -> InputFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => InputFormat::Csv,
        Some("ndjson" | "jsonl" | "json") => InputFormat::Ndjson,
        _ if first.trim_ascii_start().starts_with(b"{") => InputFormat::Ndjson,
        _ => InputFormat::Csv,
    }
}

/// Reads the points of one input.
struct PointReader<'r> {
    path: &'r Path,
    skip_bad: bool,
    summary: &'r mut ReplaySummary,
    sink: &'r mut dyn FnMut(&DataPoint<'_>) -> Result<(), ReplayError>,
}

impl PointReader<'_> {
    /// Reads every line: NDJSON (one point object per line) or CSV (a
    /// header naming the columns, then one point per line); blank lines
    /// are skipped. The format is `forced`, else detected from the first
    /// non-blank line.
    fn run(
        &mut self,
        mut lines: BoundedLines<impl BufRead>,
        forced: Option<InputFormat>,
        max_line: usize,
    ) -> Result<(), ReplayError> {
        let mut format = forced;
        let mut columns: Option<CsvColumns> = None;
        let mut splitter = CsvSplitter::default();
        loop {
            let next = lines.next_line().map_err(|source| ReplayError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
            let Some((number, line)) = next else {
                return Ok(());
            };
            let text = match line {
                Line::Text(text) => text,
                Line::TooLong { len } => {
                    self.bad(
                        number,
                        format!(
                            "the line is longer than {max_line} bytes ([server] max_body_bytes; {len} bytes read)"
                        ),
                    )?;
                    continue;
                }
            };
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match *format.get_or_insert_with(|| detect_format(self.path, text)) {
                InputFormat::Ndjson => match ingest::parse_ndjson_line(text) {
                    Ok(point) => self.apply(&point, number)?,
                    Err(e) => self.bad(number, e.message)?,
                },
                InputFormat::Csv => {
                    let fields = match splitter.split(text) {
                        Ok(fields) => fields,
                        Err(message) if columns.is_none() => {
                            return Err(self.bad_header(number, message));
                        }
                        Err(message) => {
                            self.bad(number, message)?;
                            continue;
                        }
                    };
                    let Some(columns) = &columns else {
                        // A bad header makes every later line meaningless.
                        columns = Some(
                            CsvColumns::from_header(&fields)
                                .map_err(|message| self.bad_header(number, message))?,
                        );
                        continue;
                    };
                    match columns.parse_row(&fields) {
                        Ok(point) => self.apply(&point, number)?,
                        Err(message) => self.bad(number, message)?,
                    }
                }
            }
        }
    }

    /// The error for a bad CSV header (never skipped).
    fn bad_header(&self, line: u64, message: String) -> ReplayError {
        ReplayError::BadLine {
            path: self.path.to_path_buf(),
            line,
            message,
        }
    }

    /// A bad line: skipped and counted with `--skip-bad`, else the error.
    fn bad(&mut self, line: u64, message: String) -> Result<(), ReplayError> {
        if !self.skip_bad {
            return Err(ReplayError::BadLine {
                path: self.path.to_path_buf(),
                line,
                message,
            });
        }
        self.summary.skipped += 1;
        if self.summary.first_skipped.len() < FIRST_SKIPPED_SHOWN {
            self.summary
                .first_skipped
                .push(format!("{}:{line}: {message}", self.path.display()));
        }
        tracing::debug!(path = %self.path.display(), line, %message, "Skipped a bad line.");
        Ok(())
    }

    /// Validates one point and hands it to the sink.
    fn apply(&mut self, point: &DataPoint<'_>, line: u64) -> Result<(), ReplayError> {
        if let Err(message) = ingest::validate_point(point) {
            return self.bad(line, message);
        }
        (self.sink)(point)
    }
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
    fn from_header(header: &[&str]) -> Result<Self, String> {
        let mut columns = CsvColumns {
            count: header.len(),
            value: usize::MAX,
            timestamp: None,
            series: None,
            seq: None,
        };
        for (i, name) in header.iter().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            let slot = match name.as_str() {
                "value" if columns.value != usize::MAX => {
                    return Err("CSV header: column `value` appears twice".into());
                }
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
            if slot.is_some() {
                return Err(format!("CSV header: column `{name}` appears twice"));
            }
            *slot = Some(i);
        }
        if columns.value == usize::MAX {
            let header: Vec<&str> = header.iter().map(|name| name.trim()).collect();
            return Err(format!(
                "CSV header `{}` has no `value` column; expected `timestamp,value[,series]`",
                header.join(",")
            ));
        }
        Ok(columns)
    }

    fn parse_row<'a>(&self, fields: &[&'a str]) -> Result<DataPoint<'a>, String> {
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
            Some(i) => Cow::Borrowed(fields[i]),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &str) -> Vec<&str> {
        // Plain test lines: no quotes to undo.
        line.split(',').collect()
    }

    #[test]
    fn csv_headers_are_checked() {
        let e = CsvColumns::from_header(&record("value,series,value")).unwrap_err();
        assert!(e.contains("`value` appears twice"), "{e}");
        let e = CsvColumns::from_header(&record("value,Series,series")).unwrap_err();
        assert!(e.contains("`series` appears twice"), "{e}");
    }

    #[test]
    fn csv_header_and_rows() {
        let cols = CsvColumns::from_header(&record("timestamp,value,series")).unwrap();
        let row = record("10,1.5,cpu");
        let p = cols.parse_row(&row).unwrap();
        assert_eq!(
            (p.timestamp, p.value, p.series.as_ref()),
            (Some(10.0), 1.5, "cpu")
        );
        assert!(
            cols.parse_row(&record("10,x,cpu"))
                .unwrap_err()
                .contains("`value`")
        );
        assert!(
            cols.parse_row(&record("10,1"))
                .unwrap_err()
                .contains("columns")
        );
        assert!(
            CsvColumns::from_header(&record("time,value"))
                .unwrap_err()
                .contains("`time`")
        );
        assert!(
            CsvColumns::from_header(&record("timestamp,series"))
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
        let config = Arc::new(
            Config::from_toml_str(
                "[detector]\nwindow_size = 30\nthreshold_multiplier = 3.0\n",
                Path::new("t.toml"),
            )
            .unwrap(),
        );
        let options = ReplayOptions {
            format: None,
            skip_bad: false,
            all_points: false,
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

    #[test]
    fn one_line_per_episode_unless_all_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.ndjson");
        // Warm-up at 10/11, a burst of three spikes, calm again, one more
        // spike: two episodes of four anomalous points.
        let mut text = String::new();
        let mut push = |i: u64, value: f64| {
            text.push_str(&format!(
                "{{\"series\":\"cpu\",\"value\":{value},\"timestamp\":{i},\"seq\":{i}}}\n"
            ));
        };
        for i in 0..30 {
            push(i, if i % 2 == 0 { 10.0 } else { 11.0 });
        }
        for (i, v) in [
            (30, 100.0),
            (31, 120.0),
            (32, 110.0),
            (33, 10.0),
            (34, 500.0),
        ] {
            push(i, v);
        }
        std::fs::write(&path, &text).unwrap();
        let config = Arc::new(
            Config::from_toml_str(
                "[detector]\nwindow_size = 30\nthreshold_multiplier = 3.0\nresolve_after = 1\n\
                 exclude_anomalies = true\n",
                Path::new("t.toml"),
            )
            .unwrap(),
        );
        let mut options = ReplayOptions {
            format: None,
            skip_bad: false,
            all_points: false,
            files: vec![path],
        };
        let records = |out: Vec<u8>| -> Vec<crate::api::AnomalyRecord> {
            out.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect()
        };
        let mut out = Vec::new();
        let summary = replay(config.clone(), &options, &mut out).unwrap();
        let s = &summary.series["cpu"];
        assert_eq!((s.points, s.anomalies, s.episodes), (35, 4, 2));
        let episodes = records(out);
        let firsts: Vec<(f64, Option<u64>)> =
            episodes.iter().map(|r| (r.value, r.episode)).collect();
        assert_eq!(firsts, [(100.0, Some(30)), (500.0, Some(34))]);
        options.all_points = true;
        let mut out = Vec::new();
        replay(config, &options, &mut out).unwrap();
        let all: Vec<Option<u64>> = records(out).iter().map(|r| r.episode).collect();
        assert_eq!(all, [Some(30), Some(30), Some(30), Some(34)]);
        let mut table = Vec::new();
        summary.print(&mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.lines().next().unwrap().contains("episodes"),
            "{table}"
        );
    }

    #[test]
    fn crlf_csv_keeps_line_numbers_and_bad_bytes_are_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.csv");
        let mut text = b"value,series\r\n1,\"quoted, with comma\"\r\n\r\n".to_vec();
        text.extend_from_slice(b"2,\xff\n3,plain\n");
        std::fs::write(&path, &text).unwrap();
        let options = ReplayOptions {
            format: None,
            skip_bad: false,
            all_points: false,
            files: vec![path],
        };
        let config = Arc::new(Config::default());
        let err = replay(config.clone(), &options, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, ReplayError::BadLine { line: 4, message, .. } if message.contains("UTF-8")),
            "{err}"
        );
        let skipping = ReplayOptions {
            skip_bad: true,
            ..options
        };
        let summary = replay(config, &skipping, &mut Vec::new()).unwrap();
        assert_eq!(summary.skipped, 1);
        assert_eq!(summary.series["quoted, with comma"].points, 1);
        assert_eq!(summary.series["plain"].points, 1);
    }
}
