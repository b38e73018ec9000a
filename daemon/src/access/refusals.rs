//! Requests refused for want of a valid token, in the daemon's own log:
//! who was refused, for what, and why, so that an operator sees a client
//! with a stale token or someone guessing tokens (and fail2ban can act on
//! the client's address in the message). At most one line a second, its
//! `held_back` field counting the refusals not logged since the previous
//! one; the token is never logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::peer::Peer;
use crate::throttle::Throttle;

/// Most refusal lines per period.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Most bytes of a refused request's path put in the log.
const MAX_PATH_SHOWN: usize = 100;

/// Logs refused requests, rate-limited.
#[derive(Debug)]
pub struct RefusalLog {
    throttle: Mutex<Throttle>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            throttle: Mutex::new(Throttle::new(LOG_EVERY)),
        }
    }
}

impl RefusalLog {
    /// Records that a request `method path` from `peer` was refused for
    /// `reason`: a warning, unless one was logged less than a second ago
    /// (then it is counted in the next one).
    pub fn record(&self, peer: Peer, method: &str, path: &str, reason: &str) {
        let allowed = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(Instant::now());
        let Some(held_back) = allowed else {
            return;
        };
        let client = peer.to_string();
        tracing::warn!(
            client = %client,
            method,
            path = %shown_path(path),
            reason,
            held_back,
            "Refused a request from {client} without a valid token."
        );
    }
}

/// `path` as logged: at most [`MAX_PATH_SHOWN`] bytes, control and
/// non-ASCII bytes escaped, so a client cannot forge or flood log lines.
fn shown_path(path: &str) -> String {
    let mut shown: String = path
        .bytes()
        .take(MAX_PATH_SHOWN)
        .flat_map(std::ascii::escape_default)
        .map(char::from)
        .collect();
    if path.len() > MAX_PATH_SHOWN {
        shown.push_str("...");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped_and_cut() {
        assert_eq!(shown_path("/detect"), "/detect");
        assert_eq!(shown_path("/a\nb\u{e9}"), "/a\\nb\\xc3\\xa9");
        let long = "/".repeat(150);
        assert_eq!(shown_path(&long), format!("{}...", "/".repeat(100)));
    }
}
