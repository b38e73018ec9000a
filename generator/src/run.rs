//! Running the generator: the scheduler that produces points, the sender
//! that delivers them, shutdown, reload and metrics.
//!
//! One scheduler task produces every series' points in virtual-time order
//! (so the output is deterministic): point `i` of a series is at
//! `t = i × data_frequency` (1 ms steps when `data_frequency = 0`). Without
//! `--start-time` the run is live: timestamps start now and each series is
//! paced in real time. With `--start-time T` timestamps start at `T` and
//! points are produced as fast as they can be delivered (a backfill), so
//! the same seed and `T` give the same bytes.
//!
//! Each target URL has its own queue and sender. A sender takes up to
//! `batch_size` points at a time from its queue and posts them, retrying on connection errors, 429 and 5xx with exponential
//! backoff and jitter (the same `seq`s, so anomalyd skips what it already
//! applied), and dropping a batch that gets another 4xx (counted and
//! logged). Failures and recoveries are logged once per episode.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomalyd::api::DataPoint;
use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Client;
use crate::config::{GeneratorConfig, SeriesConfig, Target};
use crate::model::{Label, SeriesModel};
use crate::queue::{Outgoing, Queue};

/// First retry delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Virtual step of a series with `data_frequency = 0`.
const UNPACED_STEP_US: u64 = 1_000;

/// What the command line asks of a run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Points per series, then stop; `None` runs until a signal.
    pub count: Option<u64>,
    /// Write NDJSON to stdout instead of posting.
    pub stdout: bool,
    /// File for the ground truth labels.
    pub labels: Option<PathBuf>,
    /// Virtual start (unix seconds): reproducible timestamps, no pacing.
    pub start_time: Option<f64>,
    /// Seed overriding the configuration's.
    pub seed: Option<u64>,
}

/// Counters of a run, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// Points produced.
    pub generated: AtomicU64,
    /// Points acknowledged by anomalyd (200), or written to stdout.
    pub sent: AtomicU64,
    /// Failed attempts that were retried.
    pub retries: AtomicU64,
    /// Points refused with a 4xx other than 429 (not retried).
    pub rejected: AtomicU64,
    /// Outliers injected.
    pub labels: AtomicU64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Points produced.
    pub generated: u64,
    /// Points delivered.
    pub sent: u64,
    /// Points dropped because the queue was full.
    pub dropped: u64,
    /// Points refused by anomalyd.
    pub rejected: u64,
    /// Points still queued when the run stopped (shutdown grace expired).
    pub unsent: u64,
}

impl Summary {
    /// Whether every point produced was delivered.
    pub fn complete(&self) -> bool {
        self.dropped == 0 && self.rejected == 0 && self.unsent == 0
    }
}

/// A target and the queue of points waiting to be posted there.
struct Delivery {
    target: Target,
    queue: Arc<Queue>,
}

/// Shared state of a running generator.
pub struct Generator {
    /// The configuration in force.
    pub config: watch::Sender<Arc<GeneratorConfig>>,
    /// Counters.
    pub stats: Stats,
    /// One queue and sender per target URL, created on first use.
    deliveries: std::sync::Mutex<Vec<Delivery>>,
    /// The sender tasks.
    senders: TaskTracker,
    /// Cancelled when senders must give up (shutdown grace over).
    hard_stop: CancellationToken,
    options: Options,
    seed: u64,
    /// Unix seconds of the virtual time 0.
    start_unix: f64,
    start: Instant,
    producing: AtomicBool,
}

impl Generator {
    /// A generator for `config` and `options`; the seed is the option's,
    /// else the configuration's, else one from the clock (logged so the run
    /// can be repeated).
    pub fn new(config: Arc<GeneratorConfig>, options: Options) -> Arc<Generator> {
        let seed = options.seed.or(config.seed).unwrap_or_else(|| {
            let seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id());
            tracing::info!(
                seed,
                "No seed configured; using this one (set `seed` to repeat the run)."
            );
            seed
        });
        let start_unix = options.start_time.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        });
        let (config, _) = watch::channel(config);
        Arc::new(Generator {
            config,
            stats: Stats::default(),
            deliveries: std::sync::Mutex::new(Vec::new()),
            senders: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
            options,
            seed,
            start_unix,
            start: Instant::now(),
            producing: AtomicBool::new(true),
        })
    }

    /// The run's seed (a series may have its own).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The queue for `target`, with its sender started on first use.
    fn queue_for(self: &Arc<Self>, target: &Target) -> Arc<Queue> {
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(delivery) = deliveries.iter().find(|d| d.target == *target) {
            return delivery.queue.clone();
        }
        let queue = Arc::new(Queue::new(self.config.borrow().queue_size));
        deliveries.push(Delivery {
            target: target.clone(),
            queue: queue.clone(),
        });
        self.senders.spawn(deliver(
            self.clone(),
            target.clone(),
            queue.clone(),
            self.hard_stop.clone(),
        ));
        queue
    }

    fn queues(&self) -> Vec<Arc<Queue>> {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|d| d.queue.clone())
            .collect()
    }

    /// Points waiting in every queue.
    pub fn queued(&self) -> u64 {
        self.queues().iter().map(|q| q.len() as u64).sum()
    }

    fn dropped(&self) -> u64 {
        self.queues().iter().map(|q| q.dropped()).sum()
    }

    /// Makes the senders give up what they still hold (shutdown grace
    /// over); it then counts as unsent.
    pub fn give_up(&self) {
        self.hard_stop.cancel();
    }

    /// Waits until every sender has finished: after production ended,
    /// once its queue is empty, or after [`Generator::give_up`].
    pub async fn senders_done(&self) {
        self.senders.close();
        self.senders.wait().await;
    }

    /// Whether points are paced in real time.
    fn live(&self) -> bool {
        self.options.start_time.is_none()
    }

    /// First `seq` of every series: the run's start in microseconds, so a
    /// restarted generator never reuses a number.
    fn first_seq(&self) -> u64 {
        (self.start_unix * 1e6) as u64
    }

    /// A summary of the run so far.
    pub fn summary(&self) -> Summary {
        Summary {
            generated: self.stats.generated.load(Ordering::Relaxed),
            sent: self.stats.sent.load(Ordering::Relaxed),
            dropped: self.dropped(),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            unsent: self.queued(),
        }
    }

    /// A one-line status for systemd.
    pub fn status_line(&self) -> String {
        let s = self.summary();
        format!(
            "{} generated, {} sent, {} queued, {} dropped, {} rejected",
            s.generated, s.sent, s.unsent, s.dropped, s.rejected
        )
    }

    /// The metrics text (Prometheus 0.0.4).
    pub fn render_metrics(&self) -> String {
        use anomalyd::metrics::{counter, gauge};
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        counter(
            &mut out,
            "anomaly_generator_points_generated_total",
            "Points produced.",
            load(&self.stats.generated),
        );
        counter(
            &mut out,
            "anomaly_generator_points_sent_total",
            "Points acknowledged by anomalyd (or written to stdout).",
            load(&self.stats.sent),
        );
        counter(
            &mut out,
            "anomaly_generator_retries_total",
            "Failed delivery attempts that were retried.",
            load(&self.stats.retries),
        );
        counter(
            &mut out,
            "anomaly_generator_points_dropped_total",
            "Points dropped because the queue was full.",
            self.dropped(),
        );
        counter(
            &mut out,
            "anomaly_generator_points_rejected_total",
            "Points refused by anomalyd with a 4xx other than 429 (not retried).",
            load(&self.stats.rejected),
        );
        counter(
            &mut out,
            "anomaly_generator_outliers_injected_total",
            "Outliers, burst points and level shifts injected.",
            load(&self.stats.labels),
        );
        gauge(
            &mut out,
            "anomaly_generator_queue_points",
            "Points waiting for delivery.",
            self.queued() as f64,
        );
        gauge(
            &mut out,
            "anomaly_generator_series",
            "Series being generated.",
            self.config.borrow().series.len() as f64,
        );
        out
    }
}

/// One series being generated.
struct SeriesState {
    name: Arc<str>,
    config: SeriesConfig,
    /// The queue of the series' target (none with `--stdout`).
    queue: Option<Arc<Queue>>,
    model: SeriesModel,
    /// Points produced so far.
    index: u64,
    /// Virtual time of the next point, µs since the start.
    next_us: u64,
    /// The generation of the series set this entry belongs to.
    active: bool,
}

fn step_us(config: &SeriesConfig) -> u64 {
    let frequency = config.pattern.data_frequency;
    if frequency > 0.0 {
        ((frequency * 1e6).round() as u64).max(1)
    } else {
        UNPACED_STEP_US
    }
}

/// Writes labels as NDJSON.
struct LabelWriter(Option<std::io::BufWriter<std::fs::File>>);

impl LabelWriter {
    fn write(&mut self, point: &DataPoint<'_>, label: &Label) -> std::io::Result<()> {
        let Some(out) = &mut self.0 else {
            return Ok(());
        };
        let line = serde_json::json!({
            "series": point.series,
            "seq": point.seq,
            "timestamp": point.timestamp,
            "value": point.value,
            "kind": label.kind.as_str(),
            "direction": if label.up { "upper" } else { "lower" },
            "magnitude": label.magnitude,
        });
        writeln!(out, "{line}")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// Produces points until every series has `count` points (or forever),
/// or until `stop` is cancelled.
pub async fn produce(generator: Arc<Generator>, stop: CancellationToken) -> std::io::Result<()> {
    let mut labels = LabelWriter(match &generator.options.labels {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    });
    let mut stdout = generator
        .options
        .stdout
        .then(|| std::io::BufWriter::new(std::io::stdout().lock()));
    let mut config_rx = generator.config.subscribe();
    let mut series: Vec<SeriesState> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let first_seq = generator.first_seq();
    let count = generator.options.count;
    let mut line = Vec::with_capacity(128);

    let sync = |series: &mut Vec<SeriesState>,
                heap: &mut BinaryHeap<Reverse<(u64, usize)>>,
                config: &GeneratorConfig,
                now_us: u64| {
        for state in series.iter_mut() {
            state.active = false;
        }
        for wanted in &config.series {
            let queue = (!generator.options.stdout).then(|| generator.queue_for(&wanted.target));
            match series.iter_mut().find(|s| s.config.name == wanted.name) {
                Some(state) => {
                    state.config = wanted.clone();
                    state.queue = queue;
                    state.active = true;
                }
                None => {
                    let index = series.len();
                    series.push(SeriesState {
                        name: wanted.name.as_str().into(),
                        config: wanted.clone(),
                        queue,
                        model: SeriesModel::new(
                            wanted.seed.unwrap_or(generator.seed),
                            &wanted.name,
                        ),
                        index: 0,
                        next_us: now_us,
                        active: true,
                    });
                    heap.push(Reverse((now_us, index)));
                }
            }
        }
    };
    sync(&mut series, &mut heap, &config_rx.borrow_and_update(), 0);

    let mut resync = false;
    let result = loop {
        if stop.is_cancelled() {
            break Ok(());
        }
        if std::mem::take(&mut resync) || config_rx.has_changed().unwrap_or(false) {
            let now_us = generator.start.elapsed().as_micros() as u64;
            let config = config_rx.borrow_and_update().clone();
            sync(&mut series, &mut heap, &config, now_us);
        }
        let Some(Reverse((due_us, index))) = heap.pop() else {
            break Ok(());
        };
        let state = &mut series[index];
        if !state.active {
            continue; // removed by a reload
        }
        if count.is_some_and(|n| state.index >= n) {
            continue;
        }
        let paced = generator.live() && state.config.pattern.data_frequency > 0.0;
        if paced {
            let due = generator.start + Duration::from_micros(due_us);
            if due > Instant::now() {
                if let Some(out) = &mut stdout {
                    out.flush()?;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = stop.cancelled() => break Ok(()),
                    _ = config_rx.changed() => {
                        // Re-examine with the new configuration.
                        heap.push(Reverse((due_us, index)));
                        resync = true;
                        continue;
                    }
                }
            }
        }
        let t = due_us as f64 / 1e6;
        let sample = state.model.sample(&state.config.pattern, t);
        let point = DataPoint {
            value: sample.value,
            timestamp: Some(generator.start_unix + t),
            series: std::borrow::Cow::Borrowed(&state.name),
            seq: Some(first_seq + state.index),
        };
        state.index += 1;
        state.next_us = due_us + step_us(&state.config);
        heap.push(Reverse((state.next_us, index)));
        generator.stats.generated.fetch_add(1, Ordering::Relaxed);
        if let Some(label) = &sample.label {
            generator.stats.labels.fetch_add(1, Ordering::Relaxed);
            labels.write(&point, label)?;
        }
        if let Some(out) = &mut stdout {
            line.clear();
            point.write_json(&mut line);
            line.push(b'\n');
            out.write_all(&line)?;
            generator.stats.sent.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let outgoing = Outgoing {
            series: state.name.clone(),
            value: point.value,
            timestamp: point.timestamp.unwrap_or_default(),
            seq: point.seq.unwrap_or_default(),
        };
        let Some(queue) = &state.queue else {
            continue;
        };
        if paced {
            queue.push(outgoing);
        } else {
            tokio::select! {
                () = queue.push_when_room(outgoing) => {}
                () = stop.cancelled() => break Ok(()),
            }
            // Let the sender and signals run between points.
            tokio::task::yield_now().await;
        }
    };
    generator.producing.store(false, Ordering::Release);
    for queue in generator.queues() {
        queue.wake_sender();
    }
    if let Some(out) = &mut stdout {
        out.flush()?;
    }
    labels.flush()?;
    result
}

/// Delivers `queue`'s points to `target` until production has ended and
/// the queue is empty, or until `stop` is cancelled (then what is in
/// flight goes back to the queue, unsent).
async fn deliver(
    generator: Arc<Generator>,
    target: Target,
    queue: Arc<Queue>,
    stop: CancellationToken,
) {
    let mut config_rx = generator.config.subscribe();
    config_rx.borrow_and_update();
    let mut client = Client::new(target);
    let mut jitter = Xoshiro256PlusPlus::seed_from_u64(generator.seed ^ 0x5eed);
    let mut failing_since: Option<Instant> = None;
    let mut rejecting = false;
    let mut body = Vec::new();
    loop {
        if config_rx.has_changed().unwrap_or(false) {
            let config = config_rx.borrow_and_update().clone();
            queue.set_capacity(config.queue_size);
        }
        let batch_size = generator.config.borrow().batch_size;
        let batch = queue.try_take(batch_size);
        if batch.is_empty() {
            if !generator.producing.load(Ordering::Acquire) && queue.is_empty() {
                return;
            }
            tokio::select! {
                () = queue.wait_items() => continue,
                () = stop.cancelled() => return,
            }
        }
        body.clear();
        let ndjson = batch_size > 1;
        for point in &batch {
            let point = DataPoint {
                value: point.value,
                timestamp: Some(point.timestamp),
                series: std::borrow::Cow::Borrowed(&point.series),
                seq: Some(point.seq),
            };
            point.write_json(&mut body);
            if ndjson {
                body.push(b'\n');
            }
        }
        let body = Bytes::copy_from_slice(&body);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let outcome = client.post(body.clone(), ndjson).await;
            let failure = match outcome {
                Ok(reply) if reply.status == 200 => {
                    generator
                        .stats
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            failed_for_secs = since.elapsed().as_secs(),
                            queued = queue.len(),
                            "anomalyd accepts points again; delivering the queue."
                        );
                    }
                    rejecting = false;
                    break;
                }
                Ok(reply) if reply.status == 429 || reply.status >= 500 => format!(
                    "anomalyd answered {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ),
                Ok(reply) => {
                    generator
                        .stats
                        .rejected
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if !rejecting {
                        tracing::error!(
                            status = reply.status,
                            points = batch.len(),
                            reply = %String::from_utf8_lossy(&reply.body),
                            "anomalyd refused points; they are not retried (further refusals are counted in anomaly_generator_points_rejected_total)."
                        );
                        rejecting = true;
                    }
                    break;
                }
                Err(e) => e.to_string(),
            };
            generator.stats.retries.fetch_add(1, Ordering::Relaxed);
            if failing_since.is_none() {
                failing_since = Some(Instant::now());
                tracing::warn!(
                    error = %failure,
                    "Cannot deliver points to anomalyd; retrying with backoff and keeping points queued (queue_size)."
                );
            }
            // Full jitter in [backoff/2, backoff].
            let pause = backoff.mul_f64(0.5 + 0.5 * jitter.random::<f64>());
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => {
                    // Given up: these points count as unsent.
                    queue.requeue_front(batch);
                    return;
                }
            }
            if config_rx.has_changed().unwrap_or(false) {
                let config = config_rx.borrow_and_update().clone();
                queue.set_capacity(config.queue_size);
            }
        }
    }
}
