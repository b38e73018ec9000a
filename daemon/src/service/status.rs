//! The status line systemd shows in `systemctl status`, refreshed every
//! [`STATUS_INTERVAL`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::systemd;

/// How often the `STATUS=` line sent to systemd is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Sends `line()` as `STATUS=` every [`STATUS_INTERVAL`] (the first one
/// interval from now) until `stop` is cancelled. `line` is told the time
/// since its previous call, for rates.
pub async fn run(stop: CancellationToken, mut line: impl FnMut(Duration) -> String) {
    let start = tokio::time::Instant::now() + STATUS_INTERVAL;
    let mut tick = tokio::time::interval_at(start, STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            now = tick.tick() => {
                let elapsed = now.saturating_duration_since(last);
                last = now;
                systemd::status(&line(elapsed));
            }
            () = stop.cancelled() => return,
        }
    }
}
