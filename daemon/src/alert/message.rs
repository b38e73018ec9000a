//! What the sinks send, built from an episode notification: pure
//! functions, no I/O.
//!
//! - An Alertmanager alert (API v2): labels `alertname="AnomalyDetected"`,
//!   `series`, the series' own labels (from a `metric{label="value"}`
//!   name), `severity`; annotations with the opening point's value, mean,
//!   σ and threshold, the peak score, a summary and a link to the series
//!   on the dashboard.
//! - A webhook document: the same fields, flat, plus `"event"`.

use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::api::{AnomalyRecord, EpisodeRecord};
use crate::clock::rfc3339_millis;
use crate::detect::episode::EpisodeEvent;
use crate::ingest::labels::parse_series_name;

/// The `alertname` label of every alert.
pub const ALERT_NAME: &str = "AnomalyDetected";

/// Characters a link's `#series=` keeps as they are (RFC 3986 unreserved).
const FRAGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The opening point of an episode: what its alert shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Opening {
    /// The value that opened it.
    pub value: f64,
    /// The window's mean before that point.
    pub mean: f64,
    /// The window's standard deviation before that point.
    pub std_dev: f64,
    /// The threshold it crossed.
    pub threshold: f64,
}

impl From<&AnomalyRecord> for Opening {
    fn from(record: &AnomalyRecord) -> Self {
        Opening {
            value: record.value,
            mean: record.mean,
            std_dev: record.std_dev,
            threshold: record.threshold,
        }
    }
}

/// An episode opening or closing, as every sink receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Opened or closed.
    pub event: EpisodeEvent,
    /// The episode (with `end` once closed).
    pub episode: EpisodeRecord,
    /// Its opening point; `None` when it opened before the sinks knew it
    /// (before a restart or before the sink was configured).
    pub opening: Option<Opening>,
    /// The `severity` of the rule that applies to the series.
    pub severity: Arc<str>,
    /// `[server] external_url`, for the dashboard link.
    pub external_url: Arc<str>,
}

impl Notification {
    /// `(series, episode)`: what identifies the episode.
    pub fn key(&self) -> (String, u64) {
        (self.episode.series.clone(), self.episode.episode)
    }

    /// The dashboard's page of the series.
    pub fn dashboard_url(&self) -> String {
        format!(
            "{}/#series={}",
            self.external_url,
            utf8_percent_encode(&self.episode.series, FRAGMENT)
        )
    }

    /// The alert's labels, sorted by name. The series' own labels come
    /// from its name; one that clashes with `alertname`, `series` or
    /// `severity` is renamed `exported_<name>` (as Prometheus does), and
    /// one whose name Alertmanager would refuse has its other characters
    /// replaced by `_`.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut labels = vec![
            ("alertname".to_owned(), ALERT_NAME.to_owned()),
            ("series".to_owned(), self.episode.series.clone()),
            ("severity".to_owned(), self.severity.to_string()),
        ];
        let own = parse_series_name(&self.episode.series)
            .map(|name| name.labels)
            .unwrap_or_default();
        for (name, value) in own {
            let mut name = valid_label_name(&name);
            while labels.iter().any(|(taken, _)| *taken == name) {
                name = format!("exported_{name}");
            }
            labels.push((name, value));
        }
        labels.sort();
        labels
    }

    /// A one-line description for people.
    pub fn summary(&self) -> String {
        let series = &self.episode.series;
        let direction = self.episode.direction.as_str();
        match (self.event, self.opening) {
            (EpisodeEvent::Opened, Some(o)) => format!(
                "{series} is {} ({direction} threshold {}; mean {}, σ {})",
                number(o.value),
                number(o.threshold),
                number(o.mean),
                number(o.std_dev)
            ),
            (EpisodeEvent::Closed, _) => format!(
                "{series} is back within its band after {} anomalous points (peak {}, score {})",
                self.episode.points,
                number(self.episode.peak_value),
                number(self.episode.peak_score)
            ),
            (EpisodeEvent::Opened, None) => format!("{series} crossed its {direction} threshold"),
        }
    }

    /// The alert's annotations.
    pub fn annotations(&self) -> Vec<(&'static str, String)> {
        let mut annotations = vec![("summary", self.summary())];
        if let Some(o) = self.opening {
            annotations.extend([
                ("value", number(o.value)),
                ("mean", number(o.mean)),
                ("std_dev", number(o.std_dev)),
                ("threshold", number(o.threshold)),
            ]);
        }
        annotations.extend([
            ("peak_score", number(self.episode.peak_score)),
            ("dashboard", self.dashboard_url()),
        ]);
        annotations
    }

    /// The Alertmanager alert (API v2 `postableAlert`). A firing alert
    /// ends at `firing_until` unless re-sent (as Prometheus does, so that
    /// alerts of a stopped anomalyd resolve by themselves); a closed
    /// episode's alert ends at the episode's end.
    pub fn alertmanager_alert(&self, firing_until: f64) -> Value {
        let labels: Map<String, Value> = self
            .labels()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let annotations: Map<String, Value> = self
            .annotations()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        let start = self.episode.start;
        let end = match self.episode.end {
            Some(end) if self.event == EpisodeEvent::Closed => end,
            _ => firing_until,
        };
        // Alertmanager refuses an alert that ends before it starts.
        let end = end.max(start);
        json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339_millis(start),
            "endsAt": rfc3339_millis(end),
            "generatorURL": self.dashboard_url(),
        })
    }

    /// The webhook document: the episode, the opening point, the labels
    /// and links, and `"event"`.
    pub fn webhook_document(&self) -> Value {
        let e = &self.episode;
        let labels: Map<String, Value> = self
            .labels()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let opening = |f: fn(&Opening) -> f64| self.opening.as_ref().map(f);
        json!({
            "event": self.event,
            "series": e.series,
            "episode": e.episode,
            "severity": &*self.severity,
            "start": e.start,
            "end": e.end,
            "points": e.points,
            "peak_score": e.peak_score,
            "peak_value": e.peak_value,
            "direction": e.direction,
            "value": opening(|o| o.value),
            "mean": opening(|o| o.mean),
            "std_dev": opening(|o| o.std_dev),
            "threshold": opening(|o| o.threshold),
            "labels": labels,
            "summary": self.summary(),
            "dashboard": self.dashboard_url(),
        })
    }
}

/// `name` as Alertmanager accepts a label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn valid_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    out
}

/// A number for an annotation: at most 6 significant digits, no float
/// noise (`12.3`, not `12.299999999999999`).
fn number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = 6 - 1 - x.abs().log10().floor() as i32;
    if (0..=15).contains(&digits) {
        let text = format!("{x:.*}", digits as usize);
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    } else {
        format!("{x:.5e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Side;

    fn notification(series: &str, event: EpisodeEvent) -> Notification {
        Notification {
            event,
            episode: EpisodeRecord {
                series: series.into(),
                episode: 1_700_000_000_500_000,
                start: 1_700_000_000.5,
                end: (event == EpisodeEvent::Closed).then_some(1_700_000_060.0),
                points: 5,
                peak_score: 12.345678,
                peak_value: 95.0,
                direction: Side::Upper,
            },
            opening: Some(Opening {
                value: 90.0,
                mean: 40.1,
                std_dev: 2.0,
                threshold: 52.1,
            }),
            severity: "critical".into(),
            external_url: "http://127.0.0.1:8001".into(),
        }
    }

    #[test]
    fn labels_carry_the_series_own_labels_and_rename_clashes() {
        let n = notification(
            r#"node_load1{instance="web-1:9100",job="node",severity="low",0bad-name="x"}"#,
            EpisodeEvent::Opened,
        );
        let labels = n.labels();
        let get = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("alertname"), Some(ALERT_NAME));
        assert_eq!(get("series"), Some(n.episode.series.as_str()));
        assert_eq!(get("severity"), Some("critical"));
        assert_eq!(get("exported_severity"), Some("low"));
        assert_eq!(get("instance"), Some("web-1:9100"));
        assert_eq!(get("job"), Some("node"));
        assert_eq!(get("_0bad_name"), Some("x"));
        assert_eq!(labels.len(), 7);
        // A plain name has no labels of its own.
        assert_eq!(
            notification("cpu.total", EpisodeEvent::Opened)
                .labels()
                .len(),
            3
        );
    }

    #[test]
    fn alertmanager_alerts_fire_then_resolve() {
        let opened = notification(r#"up{job="a b"}"#, EpisodeEvent::Opened);
        let alert = opened.alertmanager_alert(1_700_000_300.0);
        assert_eq!(alert["startsAt"], "2023-11-14T22:13:20.500Z");
        assert_eq!(alert["endsAt"], "2023-11-14T22:18:20.000Z");
        assert_eq!(alert["labels"]["job"], "a b");
        assert_eq!(alert["annotations"]["value"], "90");
        assert_eq!(alert["annotations"]["mean"], "40.1");
        assert_eq!(alert["annotations"]["threshold"], "52.1");
        assert_eq!(alert["annotations"]["peak_score"], "12.3457");
        assert_eq!(
            alert["annotations"]["dashboard"],
            "http://127.0.0.1:8001/#series=up%7Bjob%3D%22a%20b%22%7D"
        );
        assert_eq!(alert["generatorURL"], alert["annotations"]["dashboard"]);
        let closed = notification(r#"up{job="a b"}"#, EpisodeEvent::Closed);
        let alert = closed.alertmanager_alert(1_700_000_300.0);
        assert_eq!(alert["endsAt"], "2023-11-14T22:14:20.000Z");
        // Never an end before the start, whatever the clocks say.
        let alert = opened.alertmanager_alert(0.0);
        assert_eq!(alert["endsAt"], alert["startsAt"]);
    }

    #[test]
    fn webhook_documents_are_flat() {
        let doc = notification("cpu", EpisodeEvent::Closed).webhook_document();
        assert_eq!(doc["event"], "closed");
        assert_eq!(doc["series"], "cpu");
        assert_eq!(doc["episode"], 1_700_000_000_500_000u64);
        assert_eq!(doc["end"], 1_700_000_060.0);
        assert_eq!(doc["points"], 5);
        assert_eq!(doc["value"], 90.0);
        assert_eq!(doc["direction"], "upper");
        assert_eq!(doc["severity"], "critical");
        assert_eq!(doc["labels"]["alertname"], ALERT_NAME);
        let mut unknown = notification("cpu", EpisodeEvent::Opened);
        unknown.opening = None;
        let doc = unknown.webhook_document();
        assert_eq!(doc["event"], "opened");
        assert_eq!(doc["value"], Value::Null);
        assert_eq!(doc["end"], Value::Null);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(12.299999999999999), "12.3");
        assert_eq!(number(95.0), "95");
        assert_eq!(number(0.000123456789), "0.000123457");
        assert_eq!(number(-1234567.0), "-1.23457e6");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1e-300), "1.00000e-300");
    }
}
