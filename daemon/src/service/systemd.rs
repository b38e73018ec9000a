//! systemd's notification protocol (sd_notify(3)) for `Type=notify`:
//! readiness, reloads, stopping, watchdog pings and a status line.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is unset, so the same
//! binary runs outside systemd. A failure to notify is not fatal (systemd
//! itself says to ignore it) and is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

static WARNED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %e, "Cannot notify systemd (NOTIFY_SOCKET); carrying on without it.");
    }
}

/// `READY=1` with a status line: the listener is bound and state loaded.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC`, in one datagram, as systemd ≥ 253
/// requires; follow it with [`ready`] when the reload is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `STATUS=...`: the one-line summary `systemctl status` shows.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Half of the watchdog interval systemd asked for (`WATCHDOG_USEC`, for
/// this process), or `None` when the watchdog is off.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|interval| interval / 2)
}

/// Sends `WATCHDOG=1` every `interval` until `stop` is cancelled. It runs on
/// the serving runtime, so a stuck runtime stops the pings and systemd
/// restarts the service.
pub async fn watchdog(interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
            () = stop.cancelled() => return,
        }
    }
}
