//! Delivery: one sender task per target URL takes up to `batch_size`
//! points at a time from its queue and posts them. Connection errors, 401
//! and 403 (a token to fix), 429 and 5xx are retried with exponential
//! backoff and jitter (the same
//! `seq`s, so anomalyd skips what it already applied); a batch refused
//! with another 4xx is dropped, counted and logged. Failures and
//! recoveries are logged once per episode.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anomalyd::ingest::DataPoint;
use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Reply};
use crate::config::{GeneratorConfig, Target};
use crate::queue::{Outgoing, Queue};
use crate::run::Generator;

/// First retry delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What became of one attempt to post a batch.
enum Attempt {
    /// Acknowledged (200) or refused for good (4xx): the batch is done.
    Done,
    /// Worth retrying; the text says why it failed.
    Retry(String),
}

/// One target's sender.
struct Sender {
    generator: Arc<Generator>,
    queue: Arc<Queue>,
    stop: CancellationToken,
    config_rx: watch::Receiver<Arc<GeneratorConfig>>,
    client: Client,
    jitter: Xoshiro256PlusPlus,
    /// Since when deliveries fail, if they do.
    failing_since: Option<Instant>,
    /// Whether the last batch was refused (log the next refusal quietly).
    rejecting: bool,
}

/// Delivers `queue`'s points to `target` until production has ended and
/// the queue is empty, or until `stop` is cancelled (then what is in
/// flight goes back to the queue, unsent).
pub async fn deliver(
    generator: Arc<Generator>,
    target: Target,
    queue: Arc<Queue>,
    stop: CancellationToken,
) {
    let mut config_rx = generator.config.subscribe();
    let (token, tls, nats_access) = {
        let config = config_rx.borrow_and_update();
        (
            config.auth_token.clone(),
            config.tls.clone(),
            config.nats.clone(),
        )
    };
    let mut sender = Sender {
        jitter: Xoshiro256PlusPlus::seed_from_u64(generator.seed() ^ 0x5eed),
        generator,
        queue,
        stop,
        config_rx,
        client: Client::new(target, token.as_ref(), tls),
        failing_since: None,
        rejecting: false,
    };
    sender.client.set_nats_access(nats_access);
    let mut body = Vec::new();
    loop {
        sender.follow_config();
        let batch_size = sender.generator.config.borrow().batch_size;
        let batch = sender.queue.try_take(batch_size);
        if batch.is_empty() {
            if !sender.generator.is_producing() && sender.queue.is_empty() {
                return;
            }
            tokio::select! {
                () = sender.queue.wait_items() => continue,
                () = sender.stop.cancelled() => return,
            }
        }
        let ndjson = batch_size > 1;
        encode(&batch, ndjson, &mut body);
        if !sender
            .post_until_done(Bytes::copy_from_slice(&body), ndjson, &batch)
            .await
        {
            sender.queue.requeue_front(batch);
            return;
        }
    }
}

/// Writes `batch` as `/detect` JSON (one object) or NDJSON into `body`.
fn encode(batch: &[Outgoing], ndjson: bool, body: &mut Vec<u8>) {
    body.clear();
    for point in batch {
        let point = DataPoint {
            value: point.value,
            timestamp: Some(point.timestamp),
            series: Cow::Borrowed(&point.series),
            seq: Some(point.seq),
        };
        point.write_json(body);
        if ndjson {
            body.push(b'\n');
        }
    }
}

impl Sender {
    /// Applies a reloaded `queue_size`.
    fn follow_config(&mut self) {
        if self.config_rx.has_changed().unwrap_or(false) {
            let config = self.config_rx.borrow_and_update().clone();
            self.queue.set_capacity(config.queue_size);
            self.client.set_token(config.auth_token.as_ref());
            self.client.set_tls(config.tls.clone());
            self.client.set_nats_access(config.nats.clone());
        }
    }

    /// Posts `body` until it is acknowledged or refused for good; false
    /// when `stop` cancelled the retries (the batch is unsent).
    async fn post_until_done(&mut self, body: Bytes, ndjson: bool, batch: &[Outgoing]) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            // A reload while retrying may bring the token that fixes it.
            self.follow_config();
            let failure = match self.client.post(body.clone(), ndjson).await {
                Ok(reply) => match self.answered(reply, batch.len()) {
                    Attempt::Done => return true,
                    Attempt::Retry(why) => why,
                },
                Err(e) => e.to_string(),
            };
            self.generator.stats.retries.fetch_add(1, Ordering::Relaxed);
            if self.failing_since.is_none() {
                self.failing_since = Some(Instant::now());
                tracing::warn!(
                    error = %failure,
                    "Cannot deliver points to anomalyd; retrying with backoff and keeping points queued (queue_size)."
                );
            }
            // Full jitter in [backoff/2, backoff].
            let pause = backoff.mul_f64(0.5 + 0.5 * self.jitter.random::<f64>());
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stop.cancelled() => return false,
            }
            self.follow_config();
        }
    }

    /// Accounts for anomalyd's answer to a batch of `points` points.
    fn answered(&mut self, reply: Reply, points: usize) -> Attempt {
        let stats = &self.generator.stats;
        match reply.status {
            // 202: a cluster member took the points (verdicts come later).
            200..=299 => {
                stats.sent.fetch_add(points as u64, Ordering::Relaxed);
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        failed_for_secs = since.elapsed().as_secs(),
                        queued = self.queue.len(),
                        "anomalyd accepts points again; delivering the queue."
                    );
                }
                self.rejecting = false;
                Attempt::Done
            }
            status if status == 429 || status >= 500 => Attempt::Retry(format!(
                "anomalyd answered {status}: {}",
                String::from_utf8_lossy(&reply.body)
            )),
            // A token missing or rotated out: fixable by the operator (and
            // applied on reload), so the points wait in the queue.
            status @ (401 | 403) => Attempt::Retry(format!(
                "anomalyd refused our token ({status}); check auth_token_file against anomalyd's [server] auth_token_file: {}",
                String::from_utf8_lossy(&reply.body)
            )),
            status => {
                stats.rejected.fetch_add(points as u64, Ordering::Relaxed);
                if !self.rejecting {
                    tracing::error!(
                        status,
                        points,
                        reply = %String::from_utf8_lossy(&reply.body),
                        "anomalyd refused points; they are not retried (further refusals are counted in anomaly_generator_points_rejected_total)."
                    );
                    self.rejecting = true;
                }
                Attempt::Done
            }
        }
    }
}
