//! The anomaly log: one JSON line per anomaly, appended durably.
//!
//! One writer thread owns the file. Request handlers send it complete lines
//! and wait for its answer before they reply, so an acknowledged anomaly is
//! in the file (in the kernel's page cache, which survives a killed process)
//! before the client hears of it. Everything that reaches the writer while it
//! is busy is written with one `write` and, with `fsync = "always"`, made
//! durable with one shared `fdatasync` (group commit).
//!
//! When the file cannot be written (disk full, file or folder removed and not
//! re-creatable), lines go to a bounded in-memory backlog, the writer answers
//! "not logged", and it retries once a second; the backlog is written out in
//! order as soon as the file takes writes again. A short write is truncated
//! back to the last complete line, so a line is never split. Errors are logged
//! once per episode, and so is the recovery.
//!
//! The writer runs on its own OS thread because `write` and `fdatasync` block;
//! running them on the async runtime would stall unrelated requests.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::{FsyncPolicy, RotateMode};
use crate::metrics::LogStats;

/// Largest number of queued messages the writer folds into one write.
const MAX_GROUP: usize = 4096;
/// How often the writer retries a failing file and, with
/// `fsync = "interval"`, syncs.
pub const TICK: Duration = Duration::from_secs(1);

/// Settings of the anomaly log writer.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyLogSettings {
    /// Path of the log file; its directory is created when missing.
    pub path: PathBuf,
    /// When to call `fdatasync`.
    pub fsync: FsyncPolicy,
    /// Lines kept in memory while the file cannot be written.
    pub backlog: usize,
    /// Rotated files kept when anomalyd rotates.
    pub keep: usize,
    /// Who rotates: anomalyd (rename and shift) or an outside tool (only
    /// reopen).
    pub rotate: RotateMode,
}

/// What a reconfiguration does to the file besides applying settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RotateAction {
    /// Nothing.
    None,
    /// Rotate as `rotate` says: rename and shift, or reopen.
    AsConfigured,
    /// Reopen the file at its path (SIGUSR1), whatever `rotate` says.
    Reopen,
}

impl AnomalyLogSettings {
    /// The writer settings of a `[log]` section.
    pub fn from_config(log: &crate::config::LogConfig) -> Self {
        AnomalyLogSettings {
            path: log.anomaly_log_file.clone(),
            fsync: log.fsync,
            backlog: log.backlog,
            keep: log.keep,
            rotate: log.rotate,
        }
    }
}

/// Errors the anomaly log reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum AnomalyLogError {
    /// The writer thread could not be started.
    #[error("cannot start the anomaly log writer thread: {0}")]
    Spawn(#[source] io::Error),
}

enum Message {
    /// Complete JSON lines (each ending in `\n`) and where to answer.
    Append {
        lines: Vec<u8>,
        done: oneshot::Sender<bool>,
    },
    /// Periodic tick: retry the backlog, and sync with `fsync = "interval"`.
    Tick,
    /// Switch to new settings (possibly a new path), and rotate if asked.
    Reconfigure {
        settings: AnomalyLogSettings,
        rotate: RotateAction,
        done: oneshot::Sender<Rotation>,
    },
    /// Write out what can be written, sync, and stop.
    Close { done: oneshot::Sender<CloseReport> },
}

/// What was left when the log closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Lines that could not be written before the writer stopped.
    pub unwritten: usize,
    /// Lines dropped over the writer's lifetime because the backlog was full.
    pub dropped: u64,
    /// `fdatasync` calls made over the writer's lifetime.
    pub syncs: u64,
}

/// What a rotation request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// No rotation was asked for; settings were applied.
    NotAsked,
    /// The file was renamed to `<path>.1` (older ones shifted) and a fresh
    /// file opened at the path.
    Rotated,
    /// The file at the path was no longer ours (moved away, for example by
    /// logrotate) or missing: a fresh file was opened at the path.
    Reopened,
    /// The file was empty; it was left as it is.
    Empty,
    /// Rotation failed; writing goes on to the same file.
    Failed(String),
}

/// Handle to the anomaly log writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AnomalyLog {
    tx: mpsc::Sender<Message>,
    stats: Arc<LogStats>,
}

impl AnomalyLog {
    /// Opens (or creates) the log file and starts the writer thread. A file
    /// that cannot be opened yet is not fatal: anomalies are backlogged and the
    /// writer keeps retrying, as it does when the disk fills up later.
    pub fn start(settings: AnomalyLogSettings) -> Result<AnomalyLog, AnomalyLogError> {
        let (tx, rx) = mpsc::channel(1024);
        let stats = Arc::new(LogStats::default());
        let writer = Writer::new(settings, stats.clone());
        thread::Builder::new()
            .name("anomaly-log".into())
            .spawn(move || writer.run(rx))
            .map_err(AnomalyLogError::Spawn)?;
        Ok(AnomalyLog { tx, stats })
    }

    /// The writer's counters (for metrics and health).
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// Applies new settings. Lines appended before this call go to the old
    /// file, lines appended after it to the new one; with `rotate`, the file
    /// is then rotated (see [`Rotation`]). Returns once done.
    pub async fn reconfigure(&self, settings: AnomalyLogSettings, rotate: bool) -> Rotation {
        let action = if rotate {
            RotateAction::AsConfigured
        } else {
            RotateAction::None
        };
        self.send_reconfigure(settings, action).await
    }

    /// Applies `settings` and reopens the file at its path, never renaming
    /// or deleting (SIGUSR1: an outside tool has moved the file).
    pub async fn reopen(&self, settings: AnomalyLogSettings) -> Rotation {
        self.send_reconfigure(settings, RotateAction::Reopen).await
    }

    async fn send_reconfigure(
        &self,
        settings: AnomalyLogSettings,
        rotate: RotateAction,
    ) -> Rotation {
        let (done, answer) = oneshot::channel();
        let message = Message::Reconfigure {
            settings,
            rotate,
            done,
        };
        if self.tx.send(message).await.is_err() {
            return Rotation::Failed("the anomaly log writer has stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Rotation::Failed("the anomaly log writer has stopped".into()))
    }

    /// Appends complete lines and waits until they are written. Returns
    /// `true` when they are in the file (and synced, with
    /// `fsync = "always"`), `false` when they were kept in the backlog.
    pub async fn append(&self, lines: Vec<u8>) -> bool {
        debug_assert!(lines.ends_with(b"\n"));
        let (done, answer) = oneshot::channel();
        if self.tx.send(Message::Append { lines, done }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Asks the writer to retry and sync now; used by a ticking task.
    pub async fn tick(&self) {
        let _ = self.tx.send(Message::Tick).await;
    }

    /// Writes out whatever can be written, syncs, and stops the writer.
    pub async fn close(&self) -> CloseReport {
        let (done, answer) = oneshot::channel();
        if self.tx.send(Message::Close { done }).await.is_err() {
            return CloseReport::default();
        }
        answer.await.unwrap_or_default()
    }
}

/// An open log file and the length of its last complete line.
struct OpenFile {
    file: File,
    /// Offset just past the last complete line we know of: a failed write is
    /// truncated back to here.
    complete_len: u64,
}

struct Writer {
    settings: AnomalyLogSettings,
    file: Option<OpenFile>,
    /// Lines waiting for the file to take writes again, oldest first.
    backlog: VecDeque<Vec<u8>>,
    /// Total lines dropped because the backlog was full.
    dropped: u64,
    /// Dropped lines in the current failure episode.
    dropped_in_episode: u64,
    /// Error of the current failure episode, if one is under way.
    failing_since: Option<Instant>,
    /// Whether data was written since the last sync.
    dirty: bool,
    /// `fdatasync` calls made so far.
    syncs: u64,
    stats: Arc<LogStats>,
}

/// A control message, handled after the lines queued before it are written.
enum Control {
    Reconfigure {
        settings: AnomalyLogSettings,
        rotate: RotateAction,
        done: oneshot::Sender<Rotation>,
    },
    Close(oneshot::Sender<CloseReport>),
}

/// A write that did not complete.
struct WriteFailure {
    error: io::Error,
    /// Bytes of whole lines that stayed in the file (see
    /// [`Writer::write_checked`]).
    kept: usize,
}

/// Writes as much of `buf` as the file takes; returns how many bytes were
/// written and the error that stopped it, if any (a full disk takes part of
/// a write before it refuses the rest).
fn write_counted(file: &mut File, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match file.write(&buf[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// The lines of one group commit and the appenders waiting for them.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    waiting: Vec<oneshot::Sender<bool>>,
}

impl Group {
    /// Folds `first` and everything already queued (up to [`MAX_GROUP`]
    /// appends) into this group. Stops at a control message, which is
    /// handled after the group is written. Returns whether a tick came.
    fn gather(
        &mut self,
        first: Message,
        rx: &mut mpsc::Receiver<Message>,
    ) -> (bool, Option<Control>) {
        let mut tick = false;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Append { lines, done } => {
                    if self.buf.is_empty() {
                        self.buf = lines;
                    } else {
                        self.buf.extend_from_slice(&lines);
                    }
                    self.waiting.push(done);
                }
                Message::Tick => tick = true,
                Message::Reconfigure {
                    settings,
                    rotate,
                    done,
                } => {
                    let control = Control::Reconfigure {
                        settings,
                        rotate,
                        done,
                    };
                    return (tick, Some(control));
                }
                Message::Close { done } => return (tick, Some(Control::Close(done))),
            }
            if self.waiting.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        (tick, None)
    }
}

impl Writer {
    fn new(settings: AnomalyLogSettings, stats: Arc<LogStats>) -> Self {
        let mut writer = Writer {
            settings,
            file: None,
            backlog: VecDeque::new(),
            dropped: 0,
            dropped_in_episode: 0,
            failing_since: None,
            dirty: false,
            syncs: 0,
            stats,
        };
        if let Err(e) = writer.reopen() {
            writer.enter_failure(&e);
        }
        writer
    }

    /// The writer thread's loop: one group commit per wake-up, until
    /// [`Message::Close`] or until every sender is gone.
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut group = Group::default();
        while let Some(first) = rx.blocking_recv() {
            let (tick, control) = group.gather(first, &mut rx);
            let close = matches!(control, Some(Control::Close(_)));
            if tick || close {
                self.retry_backlog();
            }
            if !group.buf.is_empty() {
                let logged = self.write_group(&group.buf);
                for done in group.waiting.drain(..) {
                    let _ = done.send(logged);
                }
                group.buf.clear();
            }
            if (tick && self.settings.fsync == FsyncPolicy::Interval) || close {
                self.sync();
            }
            match control {
                None => {}
                Some(Control::Reconfigure {
                    settings,
                    rotate,
                    done,
                }) => {
                    let _ = done.send(self.reconfigure(settings, rotate));
                }
                Some(Control::Close(done)) => {
                    let _ = done.send(self.close_report());
                    return;
                }
            }
        }
        // Every sender is gone: write what we can and stop.
        self.retry_backlog();
        self.sync();
    }

    /// What closing leaves behind; logs lines left unwritten.
    fn close_report(&self) -> CloseReport {
        let report = CloseReport {
            unwritten: self.backlog.len(),
            dropped: self.dropped,
            syncs: self.syncs,
        };
        if report.unwritten > 0 {
            tracing::error!(
                unwritten = report.unwritten,
                path = %self.settings.path.display(),
                "Anomaly log closed with lines still unwritten."
            );
        }
        report
    }

    /// Writes one group of lines; returns whether they reached the file.
    fn write_group(&mut self, buf: &[u8]) -> bool {
        if !self.backlog.is_empty() {
            // Keep order: new lines queue up behind the backlog, which is
            // retried on the next tick.
            self.push_backlog(buf);
            return false;
        }
        match self.write_checked(buf, false) {
            Ok(()) => {
                self.count_written(buf);
                if self.settings.fsync == FsyncPolicy::Always {
                    self.sync();
                }
                true
            }
            Err(failure) => {
                self.enter_failure(&failure.error);
                self.push_backlog(buf);
                false
            }
        }
    }

    /// Writes `buf` (complete lines) at the end of the file. If the file
    /// turns out to have been deleted, it is re-created and the lines
    /// written again, so that they are not lost in an unlinked inode.
    ///
    /// A write that fails part-way is cut back so that the file stays
    /// line-aligned: to where it began, or with `keep_whole_lines` (the
    /// backlog: write what fits) to the last whole line written, whose
    /// length is returned with the error.
    fn write_checked(&mut self, buf: &[u8], keep_whole_lines: bool) -> Result<(), WriteFailure> {
        for _ in 0..2 {
            if self.file.is_none() {
                self.reopen()
                    .map_err(|error| WriteFailure { error, kept: 0 })?;
            }
            let open = self.file.as_mut().expect("file was just opened");
            let (written, result) = write_counted(&mut open.file, buf);
            if let Err(error) = result {
                let kept = if keep_whole_lines {
                    buf[..written]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |at| at + 1)
                } else {
                    0
                };
                self.cut_back(written - kept);
                if kept > 0 {
                    self.dirty = true;
                }
                return Err(WriteFailure { error, kept });
            }
            open.complete_len += buf.len() as u64;
            self.dirty = true;
            match open.file.metadata() {
                Ok(meta) if meta.nlink() == 0 => {
                    tracing::warn!(
                        path = %self.settings.path.display(),
                        "Anomaly log was deleted; re-creating it."
                    );
                    self.file = None;
                    continue;
                }
                _ => return Ok(()),
            }
        }
        Err(WriteFailure {
            error: io::Error::other("the anomaly log keeps being deleted"),
            kept: 0,
        })
    }

    /// Removes the last `excess` bytes (a partial write) from the file.
    /// The cut is made from the file's real end, never from a remembered
    /// length: someone may have truncated the file meanwhile (`: >
    /// anomalies.log`), and `set_len` to a stale, larger length would fill
    /// it with NUL bytes.
    fn cut_back(&mut self, excess: usize) {
        let Some(open) = self.file.as_mut() else {
            return;
        };
        let cut = open.file.metadata().and_then(|meta| {
            let target = meta.len().saturating_sub(excess as u64);
            open.file.set_len(target).map(|()| target)
        });
        match cut {
            Ok(target) => open.complete_len = target,
            Err(e) => {
                tracing::error!(error = %e, "Cannot truncate the anomaly log after a failed write.");
                // The file is now in an unknown state: drop the handle so
                // the next attempt reopens and re-checks the tail.
                self.file = None;
            }
        }
    }

    /// Opens the log at its path, creating the directory and the file, and
    /// makes sure the file ends at a line boundary.
    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let path = &self.settings.path;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .read(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                // A previous writer (or hand edit) left an unterminated line;
                // terminate it rather than glue our first record onto it.
                tracing::warn!(path = %path.display(), "Anomaly log ended mid-line; terminating that line.");
                file.write_all(b"\n")?;
            }
        }
        let complete_len = file.metadata()?.len();
        self.file = Some(OpenFile { file, complete_len });
        Ok(())
    }

    /// Applies new settings, switching files when the path changed, then
    /// rotates if asked.
    fn reconfigure(&mut self, settings: AnomalyLogSettings, rotate: RotateAction) -> Rotation {
        let path_changed = settings.path != self.settings.path;
        if path_changed {
            self.sync();
            tracing::info!(
                from = %self.settings.path.display(),
                to = %settings.path.display(),
                "Anomaly log switches to a new file."
            );
        }
        self.settings = settings;
        if path_changed {
            self.file = None;
            if let Err(e) = self.reopen() {
                self.enter_failure(&e);
            }
        }
        let outcome = match (rotate, self.settings.rotate) {
            (RotateAction::None, _) => return Rotation::NotAsked,
            (RotateAction::AsConfigured, RotateMode::SelfManaged) => self.rotate(),
            (RotateAction::AsConfigured, RotateMode::External) | (RotateAction::Reopen, _) => {
                self.reopen_in_place()
            }
        };
        match &outcome {
            Rotation::Rotated | Rotation::Reopened => {
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.settings.path.display(), outcome = ?outcome, "Anomaly log rotated.");
            }
            Rotation::Failed(e) => {
                tracing::error!(path = %self.settings.path.display(), error = %e, "Cannot rotate the anomaly log; still writing to the same file.");
            }
            Rotation::Empty | Rotation::NotAsked => {}
        }
        // Lines held back while the old file failed go to the fresh one.
        self.retry_backlog();
        outcome
    }

    /// Reopens the file at its path (creating it if an outside tool moved
    /// it away), renaming and deleting nothing.
    fn reopen_in_place(&mut self) -> Rotation {
        self.sync();
        match self.reopen() {
            Ok(()) => Rotation::Reopened,
            Err(e) => {
                self.enter_failure(&e);
                Rotation::Failed(e.to_string())
            }
        }
    }

    /// Rotates the file: renames `path` to `path.1` after shifting
    /// `path.N` to `path.N+1` (dropping the one beyond `keep`), or, when the
    /// file at `path` is not the one we write (an outside tool moved it),
    /// just opens a fresh file there.
    fn rotate(&mut self) -> Rotation {
        self.sync();
        let path = self.settings.path.clone();
        let ours = self
            .file
            .as_ref()
            .and_then(|open| open.file.metadata().ok())
            .map(|meta| (meta.dev(), meta.ino()));
        let at_path = fs::metadata(&path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if ours.is_none() || ours != at_path {
            return match self.reopen() {
                Ok(()) => Rotation::Reopened,
                Err(e) => {
                    self.enter_failure(&e);
                    Rotation::Failed(e.to_string())
                }
            };
        }
        if self
            .file
            .as_ref()
            .is_some_and(|open| open.complete_len == 0)
        {
            return Rotation::Empty;
        }
        let numbered = |n: usize| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let keep = self.settings.keep.max(1);
        // The oldest file kept goes: say so, rather than let a rename
        // replace it silently.
        let oldest = numbered(keep);
        match fs::remove_file(&oldest) {
            Ok(()) => tracing::info!(
                path = %oldest.display(),
                keep,
                "Deleted the oldest rotated anomaly log ([log] keep)."
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Rotation::Failed(format!("deleting {}: {e}", oldest.display()));
            }
        }
        for n in (1..keep).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Rotation::Failed(format!("renaming {}: {e}", numbered(n).display()));
                }
            }
        }
        if let Err(e) = fs::rename(&path, numbered(1)) {
            return Rotation::Failed(format!("renaming to {}: {e}", numbered(1).display()));
        }
        match self.reopen() {
            Ok(()) => Rotation::Rotated,
            Err(e) => {
                self.enter_failure(&e);
                Rotation::Failed(e.to_string())
            }
        }
    }

    fn retry_backlog(&mut self) {
        if self.backlog.is_empty() && self.failing_since.is_none() {
            return;
        }
        if self.file.is_none()
            && let Err(e) = self.reopen()
        {
            self.enter_failure(&e);
            return;
        }
        let count = self.backlog.len();
        let mut buf = Vec::with_capacity(self.backlog.iter().map(Vec::len).sum());
        for line in &self.backlog {
            buf.extend_from_slice(line);
        }
        match self.write_checked(&buf, true) {
            Ok(()) => {
                self.count_written(&buf);
                self.backlog.clear();
                self.stats.backlog.store(0, Ordering::Relaxed);
                self.stats.failing.store(false, Ordering::Relaxed);
                if self.settings.fsync == FsyncPolicy::Always {
                    self.sync();
                }
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        path = %self.settings.path.display(),
                        written = count,
                        dropped = self.dropped_in_episode,
                        failed_for_secs = since.elapsed().as_secs(),
                        "Anomaly log is writable again; backlog written out."
                    );
                }
                self.dropped_in_episode = 0;
            }
            Err(failure) => {
                // What fitted is in the file, whole lines in order: take
                // it off the front of the backlog and keep the rest.
                self.count_written(&buf[..failure.kept]);
                let mut kept = failure.kept;
                while let Some(line) = self.backlog.front()
                    && line.len() <= kept
                {
                    kept -= line.len();
                    self.backlog.pop_front();
                }
                self.stats
                    .backlog
                    .store(self.backlog.len() as u64, Ordering::Relaxed);
                if failure.kept > 0 && self.settings.fsync == FsyncPolicy::Always {
                    self.sync();
                }
                self.enter_failure(&failure.error);
            }
        }
    }

    fn count_written(&self, buf: &[u8]) {
        let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
        self.stats.lines_written.fetch_add(lines, Ordering::Relaxed);
    }

    fn enter_failure(&mut self, e: &io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        self.stats.failing.store(true, Ordering::Relaxed);
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            tracing::error!(
                path = %self.settings.path.display(),
                error = %e,
                backlog_capacity = self.settings.backlog,
                "Cannot write the anomaly log; keeping anomalies in memory and retrying every second."
            );
        }
    }

    /// Splits `buf` into lines and appends them to the backlog, dropping the
    /// oldest lines when it is full.
    fn push_backlog(&mut self, buf: &[u8]) {
        let capacity = self.settings.backlog.max(1);
        for line in buf.split_inclusive(|&b| b == b'\n') {
            if self.backlog.len() >= capacity {
                self.backlog.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped += 1;
                self.dropped_in_episode += 1;
                if self.dropped_in_episode == 1 || self.dropped_in_episode.is_power_of_two() {
                    tracing::error!(
                        dropped = self.dropped_in_episode,
                        backlog_capacity = capacity,
                        "Anomaly log backlog is full; dropping the oldest anomalies."
                    );
                }
            }
            self.backlog.push_back(line.to_vec());
        }
        self.stats
            .backlog
            .store(self.backlog.len() as u64, Ordering::Relaxed);
    }

    fn sync(&mut self) {
        if !self.dirty {
            return;
        }
        if let Some(open) = &self.file {
            self.syncs += 1;
            let started = Instant::now();
            let result = open.file.sync_data();
            self.stats.fsync_seconds.observe(started.elapsed());
            match result {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!(error = %e, "Cannot fsync the anomaly log."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(path: PathBuf, fsync: FsyncPolicy) -> AnomalyLogSettings {
        AnomalyLogSettings {
            path,
            fsync,
            backlog: 4,
            keep: 3,
            rotate: RotateMode::SelfManaged,
        }
    }

    #[tokio::test]
    async fn appends_lines_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/anomalies.log");
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Always)).unwrap();
        assert!(log.append(b"{\"a\":1}\n".to_vec()).await);
        assert!(log.append(b"{\"a\":2}\n{\"a\":3}\n".to_vec()).await);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        let report = log.close().await;
        assert_eq!((report.unwritten, report.dropped, report.syncs), (0, 0, 2));
    }

    #[test]
    fn concurrent_appends_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (tx, rx) = mpsc::channel(1024);
        let mut answers = Vec::new();
        // Queue 100 appends before the writer runs, as concurrent requests
        // would while it is busy with an earlier group.
        for i in 0..100 {
            let (done, answer) = oneshot::channel();
            tx.try_send(Message::Append {
                lines: format!("{i}\n").into_bytes(),
                done,
            })
            .unwrap();
            answers.push(answer);
        }
        let (done, closed) = oneshot::channel();
        tx.try_send(Message::Close { done }).unwrap();
        let writer = Writer::new(settings(path.clone(), FsyncPolicy::Always), Arc::default());
        std::thread::spawn(move || writer.run(rx)).join().unwrap();
        for answer in answers {
            assert_eq!(answer.blocking_recv(), Ok(true));
        }
        assert_eq!(
            closed.blocking_recv().unwrap().syncs,
            1,
            "one fdatasync for the whole group"
        );
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 100);
    }

    #[tokio::test]
    async fn terminates_a_partial_last_line_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "{\"a\":1}\n{\"a\":").unwrap();
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Never)).unwrap();
        assert!(log.append(b"{\"b\":2}\n".to_vec()).await);
        log.close().await;
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":\n{\"b\":2}\n"
        );
    }

    #[tokio::test]
    async fn a_deleted_file_is_recreated_without_losing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Never)).unwrap();
        assert!(log.append(b"1\n".to_vec()).await);
        fs::remove_file(&path).unwrap();
        assert!(log.append(b"2\n".to_vec()).await);
        log.close().await;
        assert_eq!(fs::read_to_string(&path).unwrap(), "2\n");
    }

    fn numbered(path: &Path, n: usize) -> PathBuf {
        PathBuf::from(format!("{}.{n}", path.display()))
    }

    #[tokio::test]
    async fn rotation_shifts_numbered_files_and_keeps_at_most_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Never)).unwrap();
        for i in 1..=5 {
            assert!(log.append(format!("{i}\n").into_bytes()).await);
            let outcome = log
                .reconfigure(settings(path.clone(), FsyncPolicy::Never), true)
                .await;
            assert_eq!(outcome, Rotation::Rotated);
        }
        // Nothing written since the last rotation: the empty file stays.
        let outcome = log
            .reconfigure(settings(path.clone(), FsyncPolicy::Never), true)
            .await;
        assert_eq!(outcome, Rotation::Empty);
        assert!(log.append(b"6\n".to_vec()).await);
        log.close().await;
        assert_eq!(fs::read_to_string(&path).unwrap(), "6\n");
        // keep = 3: the newest three rotated files, newest first.
        for (n, content) in [(1, "5\n"), (2, "4\n"), (3, "3\n")] {
            assert_eq!(fs::read_to_string(numbered(&path, n)).unwrap(), content);
        }
        assert!(!numbered(&path, 4).exists());
        assert_eq!(log.stats().rotations.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_file_moved_away_is_reopened_not_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Never)).unwrap();
        assert!(log.append(b"1\n".to_vec()).await);
        // logrotate's way: rename, then signal.
        let moved = dir.path().join("a.log-20261125");
        fs::rename(&path, &moved).unwrap();
        // Lines written before the signal still go to the moved file.
        assert!(log.append(b"2\n".to_vec()).await);
        let outcome = log
            .reconfigure(settings(path.clone(), FsyncPolicy::Never), true)
            .await;
        assert_eq!(outcome, Rotation::Reopened);
        assert!(log.append(b"3\n".to_vec()).await);
        log.close().await;
        assert_eq!(fs::read_to_string(&moved).unwrap(), "1\n2\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "3\n");
        assert!(!numbered(&path, 1).exists());
    }

    #[tokio::test]
    async fn a_new_path_takes_the_lines_after_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.log");
        let new = dir.path().join("new/new.log");
        let log = AnomalyLog::start(settings(old.clone(), FsyncPolicy::Always)).unwrap();
        assert!(log.append(b"1\n".to_vec()).await);
        let outcome = log
            .reconfigure(settings(new.clone(), FsyncPolicy::Always), false)
            .await;
        assert_eq!(outcome, Rotation::NotAsked);
        assert!(log.append(b"2\n".to_vec()).await);
        log.close().await;
        assert_eq!(fs::read_to_string(&old).unwrap(), "1\n");
        assert_eq!(fs::read_to_string(&new).unwrap(), "2\n");
        assert_eq!(log.stats().lines_written.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn backlog_keeps_order_and_drops_oldest_when_full() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: opening fails until removed.
        let path = dir.path().join("a.log");
        fs::create_dir(&path).unwrap();
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Never)).unwrap();
        for i in 0..6 {
            assert!(!log.append(format!("{i}\n").into_bytes()).await);
        }
        fs::remove_dir(&path).unwrap();
        log.tick().await;
        assert!(log.append(b"6\n".to_vec()).await);
        let report = log.close().await;
        assert_eq!(report.dropped, 2);
        assert_eq!(fs::read_to_string(&path).unwrap(), "2\n3\n4\n5\n6\n");
    }

    /// A small tmpfs, unmounted on drop: a real full disk (tests run as
    /// root; permissions would not stop root).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .expect("run mount");
            assert!(status.success(), "mounting a tmpfs needs root");
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    /// Fills the file system of `path` with one file until writes fail.
    fn fill(path: &Path) -> File {
        let mut file = File::create(path).unwrap();
        let block = vec![b'x'; 4096];
        while file.write_all(&block).is_ok() {}
        while file.write_all(b"x").is_ok() {}
        file
    }

    /// Polls `check` every 10 ms for up to 10 s.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if check() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn line(i: usize) -> Vec<u8> {
        format!("{{\"n\":{i:05},\"pad\":\"{}\"}}\n", "p".repeat(80)).into_bytes()
    }

    /// After a full disk, the backlog goes out as far as the space allows,
    /// whole lines in order, and the rest waits for more space.
    #[tokio::test]
    async fn a_backlog_is_written_as_far_as_it_fits() {
        let fs_ = Tmpfs::mount("256k");
        let path = fs_.0.path().join("anomalies.log");
        let mut settings = settings(path.clone(), FsyncPolicy::Never);
        settings.backlog = 10_000;
        let log = AnomalyLog::start(settings).unwrap();
        let filler_path = fs_.0.path().join("filler");
        let filler = fill(&filler_path);
        let mut written = 0;
        for i in 0..400 {
            if log.append(line(i)).await {
                written += 1;
            }
        }
        let backlog = log.stats().backlog.load(Ordering::Relaxed);
        assert_eq!(backlog as usize, 400 - written, "the rest is held");
        assert!(backlog > 300, "the disk is full: {backlog}");
        // Room for about a third of the ~40 KB backlog.
        filler
            .set_len(filler.metadata().unwrap().len() - 12 * 1024)
            .unwrap();
        log.tick().await;
        eventually("part of the backlog is written", || {
            log.stats().backlog.load(Ordering::Relaxed) < backlog
        })
        .await;
        let left = log.stats().backlog.load(Ordering::Relaxed);
        assert!(left > 0, "not everything fits");
        let text = fs::read(&path).unwrap();
        assert!(text.ends_with(b"\n"), "whole lines only");
        let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len() as u64, 400 - left, "each line once");
        for (i, got) in lines.iter().enumerate() {
            assert_eq!(*got, line(i).as_slice(), "in order");
        }
        // With room for all of it, the rest follows.
        drop(filler);
        fs::remove_file(&filler_path).unwrap();
        log.tick().await;
        eventually("the backlog is written", || {
            log.stats().backlog.load(Ordering::Relaxed) == 0
        })
        .await;
        let text = fs::read(&path).unwrap();
        let expected: Vec<u8> = (0..400).flat_map(line).collect();
        assert_eq!(text, expected);
        log.close().await;
    }

    /// `: > anomalies.log` while the daemon writes, then a full disk: the
    /// failed write is cut back from the file's real end, so no NUL bytes
    /// appear where the truncated content was.
    #[tokio::test]
    async fn a_log_truncated_by_hand_then_a_full_disk_gets_no_nul_bytes() {
        let fs_ = Tmpfs::mount("256k");
        let path = fs_.0.path().join("anomalies.log");
        let log = AnomalyLog::start(settings(path.clone(), FsyncPolicy::Never)).unwrap();
        for i in 0..100 {
            assert!(log.append(line(i)).await);
        }
        File::create(&path).unwrap(); // truncates, as `: >` does
        let _filler = fill(&fs_.0.path().join("filler"));
        let big: Vec<u8> = (100..200).flat_map(line).collect();
        assert!(!log.append(big).await, "the disk is full");
        let text = fs::read(&path).unwrap();
        assert!(
            !text.contains(&0),
            "{} NUL bytes",
            text.iter().filter(|&&b| b == 0).count()
        );
        assert!(text.is_empty() || text.ends_with(b"\n"));
        log.close().await;
    }
}
