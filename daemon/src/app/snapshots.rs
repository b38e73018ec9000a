//! State snapshots in the running daemon: the restore at start, the write
//! every `[state] snapshot_interval`, and the last write at shutdown, after
//! the in-flight requests finished (so every acknowledged point is in it).
//!
//! Writes run on a blocking thread, one at a time: the periodic task
//! finishes a write before it looks at the stop signal, and the final
//! write comes after that task ended. A snapshot that cannot be used at
//! start never stops the daemon: it is logged, set aside, and the series
//! warm up as they would without one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::snapshot::{self, FILE_NAME, SnapshotError};
use crate::state::AppState;

/// The name a snapshot that could not be read is renamed to.
pub const UNREADABLE_NAME: &str = "series.snapshot.unreadable";
/// The file in the state directory whose lock (flock) says which daemon
/// uses the directory.
pub const LOCK_NAME: &str = "lock";

/// The state directory this daemon uses, locked so that a second daemon
/// pointed at it cannot overwrite its snapshots (the lock goes with the
/// process, even on kill -9).
#[derive(Debug, Default)]
pub struct DirectoryLock(Mutex<Option<(PathBuf, File)>>);

impl DirectoryLock {
    /// Holds `dir` (created when missing), letting go of the directory held
    /// before, if another; fails when another process holds `dir`.
    fn hold(&self, dir: &Path) -> Result<(), SnapshotError> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_ref().is_some_and(|(path, _)| path == dir) {
            return Ok(());
        }
        create_dir(dir)?;
        let path = dir.join(LOCK_NAME);
        let io = |source| SnapshotError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SnapshotError::Locked { path: dir.into() });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        *held = Some((dir.to_owned(), file));
        Ok(())
    }
}

/// How often the periodic task looks at the clock and the configuration.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Locks the state directory and restores the series table from its
/// snapshot, if snapshots are on and there is one. Fails only when another
/// daemon uses the directory (as two daemons cannot share a port).
pub async fn restore(state: &Arc<AppState>, lock: &DirectoryLock) -> Result<(), SnapshotError> {
    let Some(dir) = state.config().state.effective_directory() else {
        tracing::info!(
            "State snapshots are off ([state] directory unset and no $STATE_DIRECTORY): series warm up after a restart."
        );
        return Ok(());
    };
    match lock.hold(&dir) {
        Ok(()) => {}
        Err(locked @ SnapshotError::Locked { .. }) => return Err(locked),
        Err(error) => {
            // Not fatal: the writes retry the directory and report it.
            tracing::error!(error = %error, "Cannot use the state directory: series start empty and warm up.");
            return Ok(());
        }
    }
    let task_state = state.clone();
    let task_dir = dir.clone();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        snapshot::read(&task_dir)
            .map(|read| read.map(|(records, count)| (task_state.table.import(&records), count)))
    })
    .await;
    let path = dir.join(FILE_NAME);
    match outcome {
        Ok(Ok(None)) => tracing::info!(
            path = %path.display(),
            "No state snapshot yet: series warm up."
        ),
        Ok(Ok(Some((report, count)))) => {
            state.metrics.snapshots.restored(report.restored as u64);
            tracing::info!(
                path = %path.display(),
                series = count,
                restored = report.restored,
                settings_changed = report.changed,
                unreadable = report.unreadable,
                skipped = report.skipped,
                seconds = started.elapsed().as_secs_f64(),
                "State snapshot restored: {} of {count} series go on without warm-up.",
                report.restored
            );
            if report.changed > 0 {
                tracing::info!(
                    series = report.changed,
                    "Series whose detector settings changed since the snapshot start fresh."
                );
            }
            if report.unreadable > 0 {
                tracing::warn!(
                    series = report.unreadable,
                    "Snapshot records that did not read back: those series start fresh."
                );
            }
            if report.skipped > 0 {
                tracing::warn!(
                    series = report.skipped,
                    "Snapshot series beyond [server] max_series were not restored."
                );
            }
        }
        Ok(Err(SnapshotError::Io { path, source })) => tracing::error!(
            path = %path.display(),
            error = %source,
            "Cannot read the state snapshot: series start empty and warm up. Check the directory's permissions."
        ),
        Ok(Err(error)) => set_aside(&dir, &error),
        Err(panic) => {
            tracing::error!(error = %panic, "Restoring the state snapshot failed: series start empty.")
        }
    }
    Ok(())
}

/// Logs a snapshot that cannot be used and renames it, so that it is kept
/// for inspection and not read again.
fn set_aside(dir: &Path, error: &SnapshotError) {
    let aside = dir.join(UNREADABLE_NAME);
    let renamed = std::fs::rename(dir.join(FILE_NAME), &aside);
    tracing::error!(
        error = %error,
        kept_as = %aside.display(),
        renamed = renamed.is_ok(),
        "The state snapshot cannot be used: series start empty and warm up. It was renamed and is replaced at the next snapshot."
    );
}

/// Writes a snapshot every `[state] snapshot_interval` until `stop`.
/// A write under way is finished before the task returns.
pub async fn periodic(state: Arc<AppState>, lock: Arc<DirectoryLock>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if last.elapsed() < state.config().state.snapshot_interval {
            continue;
        }
        last = Instant::now();
        write(&state, &lock, false).await;
    }
}

/// Writes the last snapshot, at shutdown.
pub async fn final_write(state: &Arc<AppState>, lock: &DirectoryLock) {
    write(state, lock, true).await;
}

/// Writes one snapshot to the state directory (created when missing), if
/// snapshots are on; logs and counts the outcome.
async fn write(state: &Arc<AppState>, lock: &DirectoryLock, last: bool) {
    let Some(dir) = state.config().state.effective_directory() else {
        return;
    };
    // A directory set by a reload is locked at its first write.
    if let Err(error) = lock.hold(&dir) {
        state.metrics.snapshots.failed();
        tracing::error!(error = %error, "Cannot write the state snapshot; the previous one stays in place.");
        return;
    }
    let task_state = state.clone();
    let task_dir = dir.clone();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        create_dir(&task_dir)?;
        snapshot::write(&task_state.table, &task_dir)
    })
    .await;
    let took = started.elapsed();
    match outcome {
        Ok(Ok(written)) => {
            state
                .metrics
                .snapshots
                .written(unix_now(), took, written.bytes, written.series);
            let path = dir.join(FILE_NAME);
            if last {
                tracing::info!(path = %path.display(), series = written.series, bytes = written.bytes, seconds = took.as_secs_f64(), "State snapshot written for the next start.");
            } else {
                tracing::debug!(path = %path.display(), series = written.series, bytes = written.bytes, seconds = took.as_secs_f64(), "State snapshot written.");
            }
        }
        Ok(Err(error)) => {
            state.metrics.snapshots.failed();
            tracing::error!(
                error = %error,
                "Cannot write the state snapshot; the previous one stays in place. Check [state] directory and free space."
            );
        }
        Err(panic) => {
            state.metrics.snapshots.failed();
            tracing::error!(error = %panic, "Writing the state snapshot failed.");
        }
    }
}

/// Creates the state directory (mode 0750) and its parents when missing.
fn create_dir(dir: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| SnapshotError::Io {
            path: dir.to_owned(),
            source,
        })
}
