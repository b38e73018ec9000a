//! The task of one sink: takes notifications from its queue into its
//! outbox, sends them, and retries with backoff. It never blocks ingest:
//! the request path only `try_send`s into the queue.
//!
//! On stop it keeps sending until the grace deadline, then counts what is
//! left as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SinkSpec;
use super::client::{Reply, SinkClient};
use super::message::Notification;
use super::outbox::{AlertmanagerOutbox, Batch, WebhookOutbox};
use crate::clock::unix_now;
use crate::throttle::Throttle;

/// Most alerts in one request to Alertmanager.
const MAX_ALERTS_PER_REQUEST: usize = 500;
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most one warning per sink this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Counters of one sink, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Notifications delivered (alerts, documents).
    pub sent: AtomicU64,
    /// Requests that failed (each retry counts).
    pub failed: AtomicU64,
    /// Notifications given up: the queue was full, the receiver refused
    /// them, or shutdown came first.
    pub dropped: AtomicU64,
    /// Notifications in the outbox.
    pub queued: AtomicU64,
}

/// What `/metrics` shows of one sink.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkSnapshot {
    /// `"alertmanager"` or `"webhook"`.
    pub kind: &'static str,
    /// The URL as configured.
    pub url: String,
    /// Notifications delivered.
    pub sent: u64,
    /// Failed requests.
    pub failed: u64,
    /// Notifications given up.
    pub dropped: u64,
    /// Notifications waiting (outbox and queue).
    pub queued: u64,
}

/// When a stopped worker must give up (set before the stop is signalled).
pub type Deadline = Arc<Mutex<Option<Instant>>>;

/// What a sink holds, by kind.
enum Outbox {
    Alertmanager(AlertmanagerOutbox),
    Webhook(WebhookOutbox),
}

impl Outbox {
    fn add(&mut self, n: Arc<Notification>) -> bool {
        match self {
            Outbox::Alertmanager(o) => o.add(n),
            Outbox::Webhook(o) => o.add(n),
        }
    }

    fn batch(&self) -> Batch {
        match self {
            Outbox::Alertmanager(o) => o.batch(MAX_ALERTS_PER_REQUEST),
            Outbox::Webhook(o) => o.batch(),
        }
    }

    fn sent(&mut self, batch: &Batch) {
        match self {
            Outbox::Alertmanager(o) => o.sent(batch),
            Outbox::Webhook(o) => o.sent(batch),
        }
    }

    fn len(&self) -> usize {
        match self {
            Outbox::Alertmanager(o) => o.len(),
            Outbox::Webhook(o) => o.len(),
        }
    }

    /// Whether no new notification fits.
    fn is_full(&self) -> bool {
        match self {
            Outbox::Alertmanager(o) => o.is_full(),
            Outbox::Webhook(o) => o.is_full(),
        }
    }
}

/// One sink's task state.
struct Worker {
    spec: SinkSpec,
    client: SinkClient,
    outbox: Outbox,
    stats: Arc<SinkStats>,
    backoff: Duration,
    retry_at: Instant,
    failing: bool,
    warnings: Throttle,
    dropped_reported: u64,
}

/// Runs the sink until `stop`, then flushes until the deadline.
pub async fn run(
    spec: SinkSpec,
    mut queue: mpsc::Receiver<Arc<Notification>>,
    stats: Arc<SinkStats>,
    stop: CancellationToken,
    deadline: Deadline,
) {
    let (client, outbox, resend) = match &spec {
        SinkSpec::Alertmanager(c) => (
            SinkClient::new(
                c.url.clone(),
                c.tls.clone(),
                c.proxy.clone(),
                &[],
                c.timeout,
            ),
            Outbox::Alertmanager(AlertmanagerOutbox::new(c.queue_size)),
            Some(c.resend_interval),
        ),
        SinkSpec::Webhook(c) => (
            SinkClient::new(
                c.url.clone(),
                c.tls.clone(),
                c.proxy.clone(),
                &c.headers,
                c.timeout,
            ),
            Outbox::Webhook(WebhookOutbox::new(c.queue_size)),
            None,
        ),
    };
    let mut worker = Worker {
        spec,
        client,
        outbox,
        stats,
        backoff: FIRST_BACKOFF,
        retry_at: Instant::now(),
        failing: false,
        warnings: Throttle::new(WARN_EVERY),
        dropped_reported: 0,
    };
    let period = resend.unwrap_or(Duration::from_secs(3600));
    let mut resend_tick = tokio::time::interval_at(Instant::now() + period, period);
    resend_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // While the outbox is full the queue is left alone: it fills, and
        // ingest's try_send then fails at once, which costs it less than
        // waking this task to drop each notification.
        while !worker.outbox.is_full() {
            match queue.try_recv() {
                Ok(n) => worker.add(n),
                Err(_) => break,
            }
        }
        worker.report_drops();
        if worker.outbox.len() > 0 && Instant::now() >= worker.retry_at {
            tokio::select! {
                () = worker.send_one() => continue,
                () = stop.cancelled() => break,
            }
        }
        let waiting = worker.outbox.len() > 0;
        let room = !worker.outbox.is_full();
        tokio::select! {
            n = queue.recv(), if room => match n {
                Some(n) => worker.add(n),
                None => break,
            },
            _ = resend_tick.tick(), if resend.is_some() => worker.resend(),
            () = tokio::time::sleep_until(worker.retry_at), if waiting => {}
            () = stop.cancelled() => break,
        }
    }
    // Stopping: what is queued, then send until the deadline.
    queue.close();
    while let Ok(n) = queue.try_recv() {
        worker.add(n);
    }
    let deadline = deadline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(Instant::now);
    while worker.outbox.len() > 0 && Instant::now() < deadline {
        if Instant::now() < worker.retry_at {
            tokio::time::sleep_until(worker.retry_at.min(deadline)).await;
            continue;
        }
        if tokio::time::timeout_at(deadline, worker.send_one())
            .await
            .is_err()
        {
            break;
        }
    }
    let left = worker.outbox.len() as u64;
    if left > 0 {
        worker.stats.dropped.fetch_add(left, Ordering::Relaxed);
        tracing::warn!(
            sink = worker.spec.kind(),
            url = %worker.spec.url().text,
            unsent = left,
            "Stopping with notifications unsent: the receiver did not take them within the grace period."
        );
    }
    worker.stats.queued.store(0, Ordering::Relaxed);
}

impl Worker {
    fn add(&mut self, n: Arc<Notification>) {
        if !self.outbox.add(n) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.update_queued();
    }

    fn resend(&mut self) {
        if let Outbox::Alertmanager(o) = &mut self.outbox {
            let refused = o.resend();
            self.stats.dropped.fetch_add(refused, Ordering::Relaxed);
        }
        self.update_queued();
    }

    fn update_queued(&self) {
        self.stats
            .queued
            .store(self.outbox.len() as u64, Ordering::Relaxed);
    }

    /// Warns (rate-limited) about notifications dropped since last time.
    fn report_drops(&mut self) {
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_reported
            && self.warnings.allow(Instant::now().into_std()).is_some()
        {
            tracing::warn!(
                sink = self.spec.kind(),
                url = %self.spec.url().text,
                dropped = dropped - self.dropped_reported,
                queue_size = self.spec.queue_size(),
                "Dropped notifications: the sink's queue is full (it cannot keep up or is unreachable); raise queue_size or fix the receiver."
            );
            self.dropped_reported = dropped;
        }
    }

    /// Sends one batch and records the outcome.
    async fn send_one(&mut self) {
        let batch = self.outbox.batch();
        if batch.items.is_empty() {
            return;
        }
        let (path, body) = self.request(&batch);
        let outcome = self.client.post_json(&path, body).await;
        let count = batch.items.len() as u64;
        match outcome {
            Ok(Reply { status, .. }) if (200..300).contains(&status) => {
                self.outbox.sent(&batch);
                self.stats.sent.fetch_add(count, Ordering::Relaxed);
                self.backoff = FIRST_BACKOFF;
                if self.failing {
                    self.failing = false;
                    tracing::info!(
                        sink = self.spec.kind(),
                        url = %self.spec.url().text,
                        "Alert sink reachable again; delivering."
                    );
                }
            }
            Ok(Reply { status, body })
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                // The receiver refuses these for good: retrying cannot help.
                self.outbox.sent(&batch);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::error!(
                    sink = self.spec.kind(),
                    url = %self.spec.url().text,
                    status,
                    reply = %body,
                    dropped = count,
                    "Alert sink refused notifications; they are dropped."
                );
            }
            failure => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let reason = match failure {
                    Ok(Reply { status, body }) => format!("HTTP {status}: {body}"),
                    Err(e) => e.to_string(),
                };
                self.failing = true;
                if let Some(suppressed) = self.warnings.allow(Instant::now().into_std()) {
                    tracing::warn!(
                        sink = self.spec.kind(),
                        url = %self.spec.url().text,
                        error = %reason,
                        retry_in_secs = self.backoff.as_secs_f64(),
                        pending = self.outbox.len(),
                        suppressed,
                        "Cannot deliver to an alert sink; retrying with backoff."
                    );
                }
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.update_queued();
    }

    /// The path and body of a request carrying `batch`.
    fn request(&self, batch: &Batch) -> (String, Bytes) {
        match &self.spec {
            SinkSpec::Alertmanager(c) => {
                // A firing alert ends by itself unless re-sent in time.
                let firing_until = unix_now() + 4.0 * c.resend_interval.as_secs_f64();
                let alerts: Vec<serde_json::Value> = batch
                    .items
                    .iter()
                    .map(|n| n.alertmanager_alert(firing_until))
                    .collect();
                let body = serde_json::to_vec(&alerts).expect("JSON values serialize");
                (c.url.join("/api/v2/alerts"), Bytes::from(body))
            }
            SinkSpec::Webhook(c) => {
                let document = batch.items[0].webhook_document();
                let body = serde_json::to_vec(&document).expect("JSON values serialize");
                (c.url.path.clone(), Bytes::from(body))
            }
        }
    }
}
