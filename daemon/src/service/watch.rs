//! Watches configuration files and tells the reload loop when they may have changed;
//! used by `anomalyd` and `anomaly-generator` alike.
//!
//! It watches directories, never the files themselves: the main file's
//! directory, its `conf.d/`, and the directory a symlinked main file points
//! into. Editors that write a new file and rename it over the old one,
//! Kubernetes' swap of a `..data` symlink, and files added to or removed
//! from `conf.d/` all show up as events there. A directory that does not
//! exist yet is replaced by its nearest existing ancestor, so a daemon
//! started on built-in defaults sees `/etc/anomalyd/anomalyd.toml` appear.
//!
//! Events are coalesced (a quiet period of [`DEBOUNCE`]) into one message
//! on a channel to the reload loop ([`super::reload`]), which is expected
//! to apply nothing unless the settings changed.
//! Without inotify (watch limit reached, unsupported file system) it falls
//! back to polling every [`POLL_INTERVAL`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Quiet time after the last event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a burst of events may delay the reload.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Polling interval of the fallback watcher.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The directories to watch for the main configuration file `main`.
pub fn watched_dirs(main: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let dir = main.parent().unwrap_or(Path::new(".")).to_path_buf();
    dirs.insert(dir.join("conf.d"));
    if let Ok(target) = std::fs::canonicalize(main)
        && let Some(parent) = target.parent()
    {
        dirs.insert(parent.to_path_buf());
    }
    dirs.insert(dir);
    dirs.into_iter().map(|d| nearest_existing(&d)).collect()
}

/// `dir` itself if it exists, else its nearest existing ancestor.
fn nearest_existing(dir: &Path) -> PathBuf {
    let mut dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    loop {
        if dir.is_dir() {
            return dir.to_path_buf();
        }
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// Whether an event may concern the configuration: reads and opens do not
/// (the reload itself reads the files), nor do events on paths only that
/// `ignored` rejects (a daemon's own output files).
fn is_relevant(event: &Event, ignored: &(impl Fn(&Path) -> bool + ?Sized)) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    !event.paths.iter().all(|p| ignored(p))
}

/// Whether `path` is the file `file` or one of its rotated siblings
/// (`file.1`, ...); `file` may be relative to the working directory.
pub fn is_file_or_rotation(path: &Path, file: &Path) -> bool {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    path.as_os_str()
        .as_encoded_bytes()
        .starts_with(file.as_os_str().as_encoded_bytes())
}

/// The paths whose events do not concern the configuration.
type Ignored = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// A watcher: inotify when possible, else polling.
struct DirWatcher {
    watcher: Box<dyn Watcher + Send>,
    watched: BTreeSet<PathBuf>,
}

impl DirWatcher {
    /// A watcher sending the events that `is_relevant` keeps to `tx`.
    /// They are filtered here, before the bounded channel: otherwise a
    /// burst of irrelevant events (the anomaly log's writes, when it lives
    /// beside the configuration) could fill it while the receiving task
    /// is slow, and push out the one event that matters.
    fn new(tx: mpsc::Sender<Event>, ignored: Ignored) -> notify::Result<Self> {
        let handler = move |result: notify::Result<Event>| match result {
            Ok(event) => {
                // A full channel already holds a relevant event, which
                // leads to a reload that reads every file afresh.
                if is_relevant(&event, &*ignored) {
                    let _ = tx.try_send(event);
                }
            }
            Err(e) => tracing::debug!(error = %e, "Configuration watcher error."),
        };
        let watcher: Box<dyn Watcher + Send> = match notify::recommended_watcher(handler.clone()) {
            Ok(watcher) => Box::new(watcher),
            Err(e) => {
                tracing::warn!(error = %e, poll_secs = POLL_INTERVAL.as_secs(), "Cannot use inotify for the configuration; polling instead.");
                let config = notify::Config::default()
                    .with_poll_interval(POLL_INTERVAL)
                    .with_compare_contents(true);
                Box::new(notify::PollWatcher::new(handler, config)?)
            }
        };
        Ok(DirWatcher {
            watcher,
            watched: BTreeSet::new(),
        })
    }

    /// Watches exactly `dirs` (non-recursively); returns whether a
    /// directory was added.
    fn set(&mut self, dirs: BTreeSet<PathBuf>) -> bool {
        for old in self.watched.difference(&dirs) {
            let _ = self.watcher.unwatch(old);
        }
        for new in dirs.difference(&self.watched) {
            if let Err(e) = self.watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %new.display(), error = %e, "Cannot watch a configuration directory; use SIGHUP (systemctl reload) to apply changes there.");
            }
        }
        let added = dirs.difference(&self.watched).next().is_some();
        self.watched = dirs;
        added
    }
}

/// Watches the configuration whose main file is `main` until `stop` is
/// cancelled, sending on `changed` once at start (to catch a change made
/// between the start-up load and the watch) and after each burst of
/// relevant events. A full channel already holds a pending reload, which
/// will read the files afresh. Events on paths that `ignored` accepts are
/// skipped.
pub async fn run(
    main: PathBuf,
    ignored: impl Fn(&Path) -> bool + Send + Sync + 'static,
    stop: CancellationToken,
    changed: mpsc::Sender<()>,
) {
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut watcher = match DirWatcher::new(tx, Arc::new(ignored)) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch the configuration; changes apply on SIGHUP only.");
            return;
        }
    };
    let _ = watcher.set(watched_dirs(&main));
    tracing::debug!(dirs = ?watcher.watched, "Watching the configuration.");
    let _ = changed.try_send(());
    loop {
        // Only relevant events reach the channel (see DirWatcher::new).
        tokio::select! {
            event = rx.recv() => if event.is_none() { return },
            () = stop.cancelled() => return,
        }
        // Coalesce the burst: wait until events stop for DEBOUNCE.
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            tokio::select! {
                more = rx.recv() => if more.is_none() { return },
                () = tokio::time::sleep(DEBOUNCE) => break,
                () = tokio::time::sleep_until(deadline) => break,
                () = stop.cancelled() => return,
            }
        }
        let _ = changed.try_send(());
        // A directory may have appeared (or a symlink moved): re-resolve,
        // and read again if a new directory is watched, since files may
        // have landed in it before its watch was in place.
        if watcher.set(watched_dirs(&main)) {
            let _ = changed.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_fall_back_to_an_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("etc/anomalyd/anomalyd.toml");
        let dirs = watched_dirs(&main);
        assert_eq!(dirs, BTreeSet::from([dir.path().to_path_buf()]));
        std::fs::create_dir_all(dir.path().join("etc/anomalyd/conf.d")).unwrap();
        let dirs = watched_dirs(&main);
        assert_eq!(
            dirs,
            BTreeSet::from([
                dir.path().join("etc/anomalyd"),
                dir.path().join("etc/anomalyd/conf.d"),
            ])
        );
    }

    #[test]
    fn a_symlinked_file_adds_its_target_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("a.toml"), "").unwrap();
        let main = dir.path().join("a.toml");
        std::os::unix::fs::symlink(data.join("a.toml"), &main).unwrap();
        let dirs = watched_dirs(&main);
        let canonical = std::fs::canonicalize(&data).unwrap();
        assert!(dirs.contains(&canonical), "{dirs:?}");
        assert!(dirs.contains(dir.path()));
    }

    #[test]
    fn reads_and_anomaly_log_writes_are_not_relevant() {
        let ignored =
            |p: &Path| is_file_or_rotation(p, Path::new("/var/log/anomalyd/anomalies.log"));
        let log = &ignored;
        let event = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let modify = EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(!is_relevant(&event(open, "/etc/a.toml"), log));
        assert!(is_relevant(&event(close_write, "/etc/a.toml"), log));
        assert!(is_relevant(&event(modify, "/etc/a.toml"), log));
        assert!(!is_relevant(
            &event(modify, "/var/log/anomalyd/anomalies.log"),
            log
        ));
        assert!(!is_relevant(
            &event(modify, "/var/log/anomalyd/anomalies.log.1"),
            log
        ));
    }
}
