//! Rate-limited warnings: a repeated problem (an unreachable alert sink, a
//! client sending bad tokens) is logged at most once per period, and the
//! next line says how many occurrences went unlogged in between, so the
//! journal stays readable and nothing goes uncounted.

use std::time::{Duration, Instant};

/// Allows one warning per `every`; counts the ones it holds back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle allowing one warning per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to warn at `now`: `Some(n)` with the number of warnings
    /// held back since the last one allowed, or `None` (this one is held
    /// back and counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period_and_the_next_counts_the_held_back_ones() {
        let mut throttle = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(throttle.allow(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), Some(3));
        assert_eq!(
            throttle.allow(start + Duration::from_millis(1500)),
            None,
            "the period restarts at the last warning allowed"
        );
        assert_eq!(throttle.allow(start + Duration::from_secs(5)), Some(1));
    }
}
