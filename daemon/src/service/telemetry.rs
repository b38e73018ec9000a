//! Diagnostics of a daemon itself, through `tracing`; shared by `anomalyd`
//! and `anomaly-generator`, each under its own name.
//!
//! Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`)
//! or with `[log] journal = true`, events go to journald with their fields
//! as journal fields (`SERIES=cpu`, not `F_SERIES=cpu`); otherwise they are
//! human-readable lines on stderr. The level comes from `RUST_LOG` when set,
//! else from `[log] level`, which a reload can change. Journal entries carry
//! the program's name as `SYSLOG_IDENTIFIER`, so `journalctl -t NAME` tells
//! the two daemons apart.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogLevel, LogSettings};

/// Handle to change the level of the installed subscriber; unset when
/// `RUST_LOG` decides the level (or before [`init`]).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Where diagnostics went, as chosen by [`init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// Human-readable lines on stderr.
    Stderr,
    /// The systemd journal, natively.
    Journal,
}

/// Installs the global subscriber for `program` (its journal identifier
/// and the prefix of its own complaints) with the settings `log`. Safe to
/// call more than once: later calls do nothing.
pub fn init(program: &'static str, log: LogSettings) -> Sink {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = if from_env {
        EnvFilter::try_from_default_env().unwrap_or_else(|e| {
            eprintln!("{program}: ignoring RUST_LOG ({e}); using [log] level");
            EnvFilter::new(log.level.as_str())
        })
    } else {
        EnvFilter::new(log.level.as_str())
    };
    let (filter, handle) = reload::Layer::new(filter);
    let mut journal_error = None;
    let journal = if log.journal || connected_to_journal() {
        match tracing_journald::layer() {
            Ok(layer) => Some(
                layer
                    .with_field_prefix(None)
                    .with_syslog_identifier(program.to_owned()),
            ),
            Err(e) => {
                journal_error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let sink = if journal.is_some() {
        Sink::Journal
    } else {
        Sink::Stderr
    };
    let stderr = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(stderr)
        .try_init()
        .is_ok();
    if installed && !from_env {
        let _ = LEVEL.set(handle);
    }
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "Cannot connect to journald; logging to stderr instead.");
    }
    sink
}

/// Applies a reloaded `[log] level`; does nothing when `RUST_LOG` is set.
pub fn set_level(level: LogLevel) {
    if let Some(handle) = LEVEL.get()
        && let Err(e) = handle.reload(EnvFilter::new(level.as_str()))
    {
        tracing::warn!(error = %e, "Cannot change the log level.");
    }
}

/// Whether stderr is the journal stream systemd set up for us: the
/// `JOURNAL_STREAM` variable alone is not enough, since children inherit it
/// with their stderr redirected elsewhere.
fn connected_to_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let stderr = std::io::stderr();
    let Ok(fd) = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
