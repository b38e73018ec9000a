//! A running generator's shared state: the configuration in force, the
//! per-target queues and their senders, the counters, the run's summary
//! and its metrics.
//!
//! Without `--start-time` the run is live: timestamps start now and each
//! series is paced in real time ([`crate::produce`]). With
//! `--start-time T` timestamps start at `T` and points are produced as fast
//! as they can be delivered (a backfill), so the same seed and `T` give the
//! same bytes. Each target URL has its own queue and sender
//! ([`crate::deliver`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{GeneratorConfig, Target};
use crate::queue::Queue;

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
    /// What the command line asked.
    pub(crate) options: Options,
    seed: u64,
    /// Unix seconds of the virtual time 0.
    start_unix: f64,
    /// The instant of the virtual time 0.
    pub(crate) start: Instant,
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

    /// The queue for `target`; on first use, `sender` is started on it as
    /// a tracked task (see [`crate::deliver::deliver`]).
    pub(crate) fn queue_for<S, F>(self: &Arc<Self>, target: &Target, sender: S) -> Arc<Queue>
    where
        S: FnOnce(Arc<Generator>, Target, Arc<Queue>, CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(delivery) = deliveries.iter().find(|d| d.target == *target) {
            return delivery.queue.clone();
        }
        let queue = Arc::new(Queue::new(self.config.borrow().queue_size));
        deliveries.push(Delivery {
            target: target.clone(),
            queue: queue.clone(),
        });
        self.senders.spawn(sender(
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

    /// Unix seconds of the virtual time 0.
    pub(crate) fn start_unix(&self) -> f64 {
        self.start_unix
    }

    /// Whether the producer is still running.
    pub(crate) fn is_producing(&self) -> bool {
        self.producing.load(Ordering::Acquire)
    }

    /// Marks production as over and wakes the senders, which then finish
    /// once their queues are empty.
    pub(crate) fn production_ended(&self) {
        self.producing.store(false, Ordering::Release);
        for queue in self.queues() {
            queue.wake_sender();
        }
    }

    /// Whether points are paced in real time.
    pub(crate) fn live(&self) -> bool {
        self.options.start_time.is_none()
    }

    /// First `seq` of every series: the run's start in microseconds, so a
    /// restarted generator never reuses a number.
    pub(crate) fn first_seq(&self) -> u64 {
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
