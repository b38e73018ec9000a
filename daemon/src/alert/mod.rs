//! Alerting: every episode opening and closing goes to the configured
//! sinks, `[[alert.alertmanager]]` (API v2, one alert per episode, re-sent
//! while open, resolved with `endsAt`) and `[[alert.webhook]]` (one JSON
//! document per opening and closing).
//!
//! [`message`] builds what is sent, [`outbox`] holds what waits, [`worker`]
//! sends it with retries, [`client`] speaks HTTP. This module routes the
//! notifications: [`Notifier::notify`] is called from the request path and
//! never waits (each sink has a bounded queue; a full one drops and
//! counts); [`Notifier::apply`] starts and stops sinks on reload;
//! [`Notifier::shutdown`] gives pending notifications the grace period.

pub mod client;
pub mod message;
pub mod outbox;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::EpisodeRecord;
use crate::config::{AlertConfig, AlertmanagerConfig, HttpUrl, WebhookConfig};
use crate::detect::episode::EpisodeEvent;
pub use message::{Notification, Opening};
pub use worker::{SinkSnapshot, SinkStats};

/// One configured sink.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkSpec {
    /// `[[alert.alertmanager]]`.
    Alertmanager(AlertmanagerConfig),
    /// `[[alert.webhook]]`.
    Webhook(WebhookConfig),
}

impl SinkSpec {
    /// `"alertmanager"` or `"webhook"`: the `sink` label of the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::Alertmanager(_) => "alertmanager",
            SinkSpec::Webhook(_) => "webhook",
        }
    }

    /// Where it sends.
    pub fn url(&self) -> &HttpUrl {
        match self {
            SinkSpec::Alertmanager(c) => &c.url,
            SinkSpec::Webhook(c) => &c.url,
        }
    }

    /// Its `queue_size`.
    pub fn queue_size(&self) -> usize {
        match self {
            SinkSpec::Alertmanager(c) => c.queue_size,
            SinkSpec::Webhook(c) => c.queue_size,
        }
    }
}

/// Every sink of `config`, Alertmanagers first.
fn specs(config: &AlertConfig) -> Vec<SinkSpec> {
    config
        .alertmanagers
        .iter()
        .cloned()
        .map(SinkSpec::Alertmanager)
        .chain(config.webhooks.iter().cloned().map(SinkSpec::Webhook))
        .collect()
}

/// A running sink.
struct Sink {
    spec: SinkSpec,
    queue: mpsc::Sender<Arc<Notification>>,
    stats: Arc<SinkStats>,
    stop: CancellationToken,
    deadline: worker::Deadline,
    task: JoinHandle<()>,
}

impl Sink {
    fn start(spec: SinkSpec) -> Sink {
        let (queue, receiver) = mpsc::channel(spec.queue_size());
        let stats = Arc::new(SinkStats::default());
        let stop = CancellationToken::new();
        let deadline = worker::Deadline::default();
        let task = tokio::spawn(worker::run(
            spec.clone(),
            receiver,
            stats.clone(),
            stop.clone(),
            deadline.clone(),
        ));
        Sink {
            spec,
            queue,
            stats,
            stop,
            deadline,
            task,
        }
    }

    /// Asks the worker to finish within `grace`; returns its task.
    fn stop(self, grace: Duration) -> JoinHandle<()> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now() + grace);
        self.stop.cancel();
        self.task
    }
}

/// Routes episode notifications to the sinks.
#[derive(Default)]
pub struct Notifier {
    sinks: Mutex<Vec<Sink>>,
    /// The opening point of each open episode, for its closing
    /// notification (kept only while there are sinks).
    openings: Mutex<HashMap<(String, u64), Opening>>,
}

/// The time a sink removed by a reload gets to send what it holds.
const REMOVED_SINK_GRACE: Duration = Duration::from_secs(5);

impl Notifier {
    /// A notifier without sinks.
    pub fn new() -> Notifier {
        Notifier::default()
    }

    /// Makes the running sinks those of `config`: unchanged ones keep
    /// running (with their queues and counters), removed ones get a few
    /// seconds to send what they hold, new ones start. Must run inside
    /// the tokio runtime when `config` has sinks.
    pub fn apply(&self, config: &AlertConfig) {
        let wanted = specs(config);
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let mut old: Vec<Option<Sink>> = sinks.drain(..).map(Some).collect();
        for spec in wanted {
            let kept = old
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|s| s.spec == spec))
                .and_then(Option::take);
            sinks.push(kept.unwrap_or_else(|| {
                tracing::info!(sink = spec.kind(), url = %spec.url().text, "Alert sink started.");
                Sink::start(spec)
            }));
        }
        for sink in old.into_iter().flatten() {
            tracing::info!(sink = sink.spec.kind(), url = %sink.spec.url().text, "Alert sink removed.");
            drop(sink.stop(REMOVED_SINK_GRACE));
        }
        if sinks.is_empty() {
            self.openings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    /// Whether any sink is configured.
    pub fn has_sinks(&self) -> bool {
        !self
            .sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Queues a notification per opened (with its opening point,
    /// `openings[i]` for `opened[i]`) and closed episode on every sink,
    /// without waiting: a full queue drops (and counts) it. `severity`
    /// gives the severity of a series; `external_url` is the dashboard's
    /// base.
    pub fn notify(
        &self,
        opened: &[EpisodeRecord],
        openings: &[Opening],
        closed: &[EpisodeRecord],
        severity: impl Fn(&str) -> Arc<str>,
        external_url: impl FnOnce() -> Arc<str>,
    ) {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if sinks.is_empty() {
            return;
        }
        // A sink whose queue is full drops these without anything built
        // for it; when every queue is full (receivers down), nothing is
        // built at all, so that a dead receiver costs ingest little.
        let events = (opened.len() + closed.len()) as u64;
        let mut with_room = Vec::with_capacity(sinks.len());
        for sink in sinks.iter() {
            if sink.queue.capacity() > 0 {
                with_room.push(sink);
            } else {
                sink.stats.dropped.fetch_add(events, Ordering::Relaxed);
            }
        }
        if with_room.is_empty() {
            // Forget the openings of the episodes that closed.
            let mut known = self.openings.lock().unwrap_or_else(|p| p.into_inner());
            if !known.is_empty() {
                for episode in closed {
                    known.remove(&(episode.series.clone(), episode.episode));
                }
            }
            return;
        }
        let external_url = external_url();
        let mut notifications = Vec::with_capacity(opened.len() + closed.len());
        {
            let mut known = self.openings.lock().unwrap_or_else(|p| p.into_inner());
            for (episode, opening) in opened.iter().zip(openings) {
                known.insert((episode.series.clone(), episode.episode), *opening);
                notifications.push(Notification {
                    event: EpisodeEvent::Opened,
                    episode: episode.clone(),
                    opening: Some(*opening),
                    severity: severity(&episode.series),
                    external_url: external_url.clone(),
                });
            }
            for episode in closed {
                let opening = known.remove(&(episode.series.clone(), episode.episode));
                notifications.push(Notification {
                    event: EpisodeEvent::Closed,
                    episode: episode.clone(),
                    opening,
                    severity: severity(&episode.series),
                    external_url: external_url.clone(),
                });
            }
        }
        for notification in notifications {
            let notification = Arc::new(notification);
            for sink in &with_room {
                if sink.queue.try_send(notification.clone()).is_err() {
                    sink.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Stops every sink, giving them `grace` to deliver what they hold.
    pub async fn shutdown(&self, grace: Duration) {
        let sinks: Vec<Sink> = self
            .sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        if sinks.is_empty() {
            return;
        }
        let pending: u64 = sinks
            .iter()
            .map(|s| s.stats.queued.load(Ordering::Relaxed) + queued_in_channel(s))
            .sum();
        tracing::info!(
            pending,
            grace_secs = grace.as_secs_f64(),
            "Delivering pending alert notifications."
        );
        let tasks: Vec<JoinHandle<()>> = sinks.into_iter().map(|s| s.stop(grace)).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The counters of every sink.
    pub fn snapshot(&self) -> Vec<SinkSnapshot> {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks
            .iter()
            .map(|s| SinkSnapshot {
                kind: s.spec.kind(),
                url: s.spec.url().text.clone(),
                sent: s.stats.sent.load(Ordering::Relaxed),
                failed: s.stats.failed.load(Ordering::Relaxed),
                dropped: s.stats.dropped.load(Ordering::Relaxed),
                queued: s.stats.queued.load(Ordering::Relaxed) + queued_in_channel(s),
            })
            .collect()
    }
}

/// Notifications in a sink's queue, not yet in its outbox.
fn queued_in_channel(sink: &Sink) -> u64 {
    (sink.queue.max_capacity() - sink.queue.capacity()) as u64
}
