//! The per-anomaly journal events: each anomaly is also a structured
//! `tracing` event (target [`ANOMALY_TARGET`]), at most
//! `[log] journal_anomaly_rate` per second so that a storm of anomalies
//! cannot flood the journal; what is held back is counted and summarised
//! once per second. The anomaly log, not the journal, is the record.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::api::AnomalyRecord;

/// The target of the per-anomaly events.
pub const ANOMALY_TARGET: &str = "anomalyd::anomaly";

/// Rate limiter of the per-anomaly journal events: at most `rate` per
/// second; the rest are counted and summarised once per second.
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

    /// Anomaly events held back so far.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }

    /// Emits one event per record, within the rate.
    pub fn emit(&self, records: &[AnomalyRecord]) {
        let rate = self.rate.load(Ordering::Relaxed);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut window);
        for record in records {
            if window.sent < rate {
                window.sent += 1;
                tracing::warn!(
                    target: ANOMALY_TARGET,
                    series = %record.series,
                    value = record.value,
                    mean = record.mean,
                    std_dev = record.std_dev,
                    threshold = record.threshold,
                    direction = record.direction.as_str(),
                    "Anomaly in series {}: {} is beyond the {} threshold {}.",
                    record.series,
                    record.value,
                    record.direction.as_str(),
                    record.threshold,
                );
            } else {
                window.suppressed += 1;
                self.suppressed_total.fetch_add(1, Ordering::Relaxed);
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
                "{} more anomalies were not sent to the journal ([log] journal_anomaly_rate); all are in the anomaly log.",
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

    fn record(series: &str, value: f64) -> AnomalyRecord {
        AnomalyRecord {
            series: series.into(),
            value,
            timestamp: 1.0,
            mean: 10.0,
            std_dev: 1.0,
            threshold: 13.0,
            direction: Side::Upper,
            score: Some(4.0),
            seq: None,
        }
    }

    #[test]
    fn anomaly_events_carry_journal_fields_and_are_rate_limited() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(Capture(captured.clone()));
        let events = AnomalyEvents::new(3);
        tracing::subscriber::with_default(subscriber, || {
            let records: Vec<_> = (0..10).map(|i| record("cpu", 20.0 + i as f64)).collect();
            events.emit(&records);
            // The summary comes once the second is over.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while events.started.elapsed().as_secs() == 0 && Instant::now() < deadline {
                std::thread::yield_now();
            }
            events.flush();
        });
        let captured = captured.lock().unwrap();
        let anomalies: Vec<_> = captured
            .iter()
            .filter(|(t, f)| t == ANOMALY_TARGET && f.contains_key("series"))
            .collect();
        assert_eq!(anomalies.len(), 3, "{captured:?}");
        let fields = &anomalies[0].1;
        assert_eq!(fields["series"], "cpu");
        assert_eq!(fields["value"], "20.0");
        assert_eq!(fields["mean"], "10.0");
        assert_eq!(fields["std_dev"], "1.0");
        assert_eq!(fields["threshold"], "13.0");
        assert_eq!(fields["direction"], "upper");
        let summary = captured
            .iter()
            .find(|(_, f)| f.contains_key("suppressed"))
            .expect("a summary of the suppressed events");
        assert_eq!(summary.1["suppressed"], "7");
        assert_eq!(events.suppressed_total(), 7);
    }

    #[test]
    fn rate_zero_sends_no_anomaly_event() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(Capture(captured.clone()));
        let events = AnomalyEvents::new(0);
        tracing::subscriber::with_default(subscriber, || events.emit(&[record("a", 1.0)]));
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
