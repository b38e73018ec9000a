//! The signals a daemon handles. SIGTERM or SIGINT asks for a graceful
//! shutdown; a second one during the drain exits at once with status 1.
//! SIGHUP asks for a reload (see [`super::reload`]).
//!
//! Install the handlers before announcing readiness or the address: until
//! then a signal takes its default action, and SIGHUP's kills.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The installed handlers.
pub struct Signals {
    /// SIGTERM and SIGINT.
    pub shutdown: ShutdownSignals,
    /// SIGHUP.
    pub hangup: Signal,
}

/// SIGTERM and SIGINT.
pub struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers of SIGTERM, SIGINT and SIGHUP.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            shutdown: ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            },
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

impl ShutdownSignals {
    /// Waits for SIGTERM or SIGINT and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Calls `graceful` with the signal's name on the first SIGTERM or
    /// SIGINT, then exits the process with status 1 on the second. Returns
    /// when `done` is cancelled (the daemon finished by itself). Run it as
    /// its own task.
    pub async fn graceful_then_exit(
        mut self,
        done: CancellationToken,
        graceful: impl FnOnce(&'static str),
    ) {
        let name = tokio::select! {
            name = self.recv() => name,
            () = done.cancelled() => return,
        };
        graceful(name);
        let name = tokio::select! {
            name = self.recv() => name,
            () = done.cancelled() => return,
        };
        tracing::warn!(
            signal = name,
            "Second signal during shutdown; exiting at once with status 1."
        );
        std::process::exit(1);
    }
}
