//! The per-episode journal events: the opening and the closing of each
//! episode are structured `tracing` events (target [`ANOMALY_TARGET`]), at
//! most `[log] journal_anomaly_rate` per second so that a storm cannot
//! flood the journal; what is held back is counted and summarised once per
//! second. The anomaly log, not the journal, is the record of every
//! anomalous point.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::api::EpisodeRecord;

/// The target of the episode events.
pub const ANOMALY_TARGET: &str = "anomalyd::anomaly";

/// Rate limiter of the episode journal events: at most `rate` per second;
/// the rest are counted and summarised once per second.
#[derive(Debug)]
pub struct AnomalyEvents {
    rate: AtomicU32,
    window: Mutex<Window>,
    suppressed_total: AtomicU64,
    started: Instant,
}

#[derive(Debug, Default)]
struct Window {
    second: u64,
    sent: u32,
    suppressed: u64,
}

impl AnomalyEvents {
    /// A limiter sending at most `rate` events per second (0: none).
    pub fn new(rate: u32) -> Self {
        AnomalyEvents {
            rate: AtomicU32::new(rate),
            window: Mutex::new(Window::default()),
            suppressed_total: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Applies a reloaded `[log] journal_anomaly_rate`.
    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Episode events held back so far.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }

    /// Emits one event per episode opened and one per episode closed,
    /// within the rate.
    pub fn emit(&self, opened: &[EpisodeRecord], closed: &[EpisodeRecord]) {
        let rate = self.rate.load(Ordering::Relaxed);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut window);
        let events = opened
            .iter()
            .map(|e| (e, "opened"))
            .chain(closed.iter().map(|e| (e, "closed")));
        for (episode, event) in events {
            if window.sent >= rate {
                window.suppressed += 1;
                self.suppressed_total.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            window.sent += 1;
            let side = episode.direction.as_str();
            match episode.end {
                None => tracing::warn!(
                    target: ANOMALY_TARGET,
                    series = %episode.series,
                    episode = episode.episode,
                    episode_event = event,
                    start = episode.start,
                    value = episode.peak_value,
                    score = episode.peak_score,
                    direction = side,
                    "Anomaly episode {} opened in series {}: {} is {:.1} standard deviations beyond the {side} band.",
                    episode.episode,
                    episode.series,
                    episode.peak_value,
                    episode.peak_score,
                ),
                Some(end) => tracing::info!(
                    target: ANOMALY_TARGET,
                    series = %episode.series,
                    episode = episode.episode,
                    episode_event = event,
                    start = episode.start,
                    end,
                    points = episode.points,
                    peak_value = episode.peak_value,
                    peak_score = episode.peak_score,
                    direction = side,
                    "Anomaly episode {} of series {} closed after {} anomalous point(s) over {:.3} s; peak {} ({:.1} standard deviations).",
                    episode.episode,
                    episode.series,
                    episode.points,
                    (end - episode.start).max(0.0),
                    episode.peak_value,
                    episode.peak_score,
                ),
            }
        }
    }

    /// Summarises the previous second's suppressed events, if any; called
    /// once per second so a summary does not wait for the next anomaly.
    pub fn flush(&self) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut window);
    }

    fn roll(&self, window: &mut Window) {
        let second = self.started.elapsed().as_secs();
        if second == window.second {
            return;
        }
        if window.suppressed > 0 {
            tracing::warn!(
                target: ANOMALY_TARGET,
                suppressed = window.suppressed,
                rate = self.rate.load(Ordering::Relaxed),
                "{} more episode events were not sent to the journal ([log] journal_anomaly_rate); every anomalous point is in the anomaly log.",
                window.suppressed,
            );
        }
        *window = Window {
            second,
            ..Window::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Side;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// Events captured as (target, fields as text).
    type Captured = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

    /// A layer recording every event's fields, standing in for journald
    /// (which sends each field as an upper-cased journal field).
    struct Capture(Captured);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            let target = event.metadata().target().to_owned();
            self.0.lock().unwrap().push((target, fields));
        }
    }

    fn episode(series: &str, id: u64, end: Option<f64>) -> EpisodeRecord {
        EpisodeRecord {
            series: series.into(),
            episode: id,
            start: 1.0,
            end,
            points: 4,
            peak_score: 9.5,
            peak_value: 20.0,
            direction: Side::Upper,
        }
    }

    #[test]
    fn episode_events_carry_journal_fields_and_are_rate_limited() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(Capture(captured.clone()));
        let events = AnomalyEvents::new(3);
        tracing::subscriber::with_default(subscriber, || {
            let opened: Vec<_> = (0..6).map(|i| episode("cpu", i, None)).collect();
            let closed: Vec<_> = (0..4).map(|i| episode("cpu", i, Some(3.0))).collect();
            events.emit(&opened[..1], &closed[..1]);
            events.emit(&opened[1..], &closed[1..]);
            // The summary comes once the second is over.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while events.started.elapsed().as_secs() == 0 && Instant::now() < deadline {
                std::thread::yield_now();
            }
            events.flush();
        });
        let captured = captured.lock().unwrap();
        let sent: Vec<_> = captured
            .iter()
            .filter(|(t, f)| t == ANOMALY_TARGET && f.contains_key("series"))
            .map(|(_, f)| f)
            .collect();
        assert_eq!(sent.len(), 3, "{captured:?}");
        let opened = sent[0];
        assert_eq!(opened["series"], "cpu");
        assert_eq!(opened["episode"], "0");
        assert_eq!(opened["episode_event"], "opened");
        assert_eq!(opened["value"], "20.0");
        assert_eq!(opened["score"], "9.5");
        assert_eq!(opened["direction"], "upper");
        let closed = sent[1];
        assert_eq!(closed["episode_event"], "closed");
        assert_eq!(closed["points"], "4");
        assert_eq!(closed["end"], "3.0");
        assert_eq!(closed["peak_score"], "9.5");
        assert_eq!(sent[2]["episode"], "1", "the second call's first opening");
        let summary = captured
            .iter()
            .find(|(_, f)| f.contains_key("suppressed"))
            .expect("a summary of the suppressed events");
        assert_eq!(summary.1["suppressed"], "7");
        assert_eq!(events.suppressed_total(), 7);
    }

    #[test]
    fn rate_zero_sends_no_episode_event() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(Capture(captured.clone()));
        let events = AnomalyEvents::new(0);
        tracing::subscriber::with_default(subscriber, || {
            events.emit(&[episode("a", 1, None)], &[])
        });
        assert!(
            captured
                .lock()
                .unwrap()
                .iter()
                .all(|(_, f)| !f.contains_key("series"))
        );
        assert_eq!(events.suppressed_total(), 1);
    }
}
