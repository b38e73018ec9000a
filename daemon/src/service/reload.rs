//! The reload loop: SIGHUP and the configuration watcher both end up here,
//! and one task runs their reloads one after the other, so two reloads
//! never interleave.

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::watch;

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP (`systemctl reload`, logrotate): the operator asked; report
    /// the outcome even when nothing changed. `anomalyd` also rotates its
    /// anomaly log.
    Signal,
    /// A change seen by the file watcher (and once at start, to catch a
    /// change made between loading and watching): apply nothing unless
    /// the settings changed.
    Watch,
}

/// Runs `reload` on each SIGHUP (`hangup`) and after each burst of changes
/// of the configuration whose main file is `main`, one at a time, until
/// `stop` is cancelled. Watcher events on paths `ignored` accepts (a
/// daemon's own output files) are skipped.
pub async fn run<R, F>(
    main: PathBuf,
    ignored: impl Fn(&Path) -> bool + Send + Sync + 'static,
    mut hangup: Option<Signal>,
    stop: CancellationToken,
    mut reload: R,
) where
    R: FnMut(Trigger) -> F,
    F: Future<Output = ()>,
{
    // One pending change is enough: the reload reads the files afresh.
    let (changes, mut changed) = mpsc::channel(1);
    let watcher = tokio::spawn(watch::run(main, ignored, stop.clone(), changes));
    let mut watching = true;
    loop {
        let event = tokio::select! {
            received = recv_hangup(&mut hangup) => Event::Hangup(received),
            change = changed.recv(), if watching => Event::Change(change),
            () = stop.cancelled() => Event::Stop,
        };
        let trigger = match event {
            Event::Hangup(Some(())) => Trigger::Signal,
            Event::Hangup(None) => {
                hangup = None;
                continue;
            }
            Event::Change(Some(())) => Trigger::Watch,
            Event::Change(None) => {
                // The watcher gave up (it said why): SIGHUP still works.
                watching = false;
                continue;
            }
            Event::Stop => break,
        };
        if trigger == Trigger::Signal {
            tracing::info!(signal = "SIGHUP", "Reloading the configuration.");
        }
        reload(trigger).await;
    }
    let _ = watcher.await;
}

/// What woke the reload loop.
enum Event {
    Hangup(Option<()>),
    Change(Option<()>),
    Stop,
}

/// The next SIGHUP; pending forever without a handler.
async fn recv_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
