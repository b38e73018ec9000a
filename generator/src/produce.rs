//! The scheduler: one task produces every series' points in virtual-time
//! order (so the output is deterministic), paced in real time when live,
//! and hands them to the target's queue, to stdout, and their ground truth
//! to the labels file.
//!
//! Point `i` of a series is at `t = i × data_frequency` (1 ms steps when
//! `data_frequency = 0`). A reload adds, changes or removes series between
//! two points.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anomalyd::ingest::DataPoint;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{GeneratorConfig, SeriesConfig};
use crate::deliver::deliver;
use crate::model::{Label, SeriesModel};
use crate::queue::{Outgoing, Queue};
use crate::run::Generator;

/// Virtual step of a series with `data_frequency = 0`.
const UNPACED_STEP_US: u64 = 1_000;

/// One series being generated.
struct SeriesState {
    name: Arc<str>,
    config: SeriesConfig,
    /// The queue of the series' target (none with `--stdout`).
    queue: Option<Arc<Queue>>,
    model: SeriesModel,
    /// Points produced so far.
    index: u64,
    /// Whether the series is in the configuration in force.
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

/// The series and the order their next points are due in.
struct Schedule {
    series: Vec<SeriesState>,
    /// `(due µs since the start, index into series)`, earliest first.
    due: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Schedule {
    /// Brings the series in line with `config`: new series start at
    /// `now_us`, changed ones keep their state, removed ones go inactive.
    fn sync(&mut self, generator: &Arc<Generator>, config: &GeneratorConfig, now_us: u64) {
        for state in &mut self.series {
            state.active = false;
        }
        for wanted in &config.series {
            let queue =
                (!generator.options.stdout).then(|| generator.queue_for(&wanted.target, deliver));
            match self
                .series
                .iter_mut()
                .find(|s| s.config.name == wanted.name)
            {
                Some(state) => {
                    state.config = wanted.clone();
                    state.queue = queue;
                    state.active = true;
                }
                None => {
                    let index = self.series.len();
                    self.series.push(SeriesState {
                        name: wanted.name.as_str().into(),
                        config: wanted.clone(),
                        queue,
                        model: SeriesModel::new(
                            wanted.seed.unwrap_or(generator.seed()),
                            &wanted.name,
                        ),
                        index: 0,
                        active: true,
                    });
                    self.due.push(Reverse((now_us, index)));
                }
            }
        }
    }
}

/// What the scheduler does with the next due point.
enum Next {
    /// Produce point of series `index` due at `due_us` now.
    Produce { due_us: u64, index: usize },
    /// The configuration changed while waiting: sync and look again.
    Resync,
    /// Production is over (count reached, no series, or stopped).
    Done,
}

/// The producer's own state.
struct Producer {
    generator: Arc<Generator>,
    stop: CancellationToken,
    config_rx: watch::Receiver<Arc<GeneratorConfig>>,
    schedule: Schedule,
    labels: LabelWriter,
    /// `--stdout`: buffered, and locked only for each write, never across
    /// an await.
    stdout: Option<std::io::BufWriter<std::io::Stdout>>,
    line: Vec<u8>,
}

/// Produces points until every series has `count` points (or forever),
/// or until `stop` is cancelled.
pub async fn produce(generator: Arc<Generator>, stop: CancellationToken) -> std::io::Result<()> {
    let labels = LabelWriter(match &generator.options.labels {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    });
    let stdout = generator
        .options
        .stdout
        .then(|| std::io::BufWriter::new(std::io::stdout()));
    let mut producer = Producer {
        config_rx: generator.config.subscribe(),
        generator,
        stop,
        schedule: Schedule {
            series: Vec::new(),
            due: BinaryHeap::new(),
        },
        labels,
        stdout,
        line: Vec::with_capacity(128),
    };
    let config = producer.config_rx.borrow_and_update().clone();
    producer.schedule.sync(&producer.generator, &config, 0);
    let result = producer.run().await;
    producer.generator.production_ended();
    if let Some(out) = &mut producer.stdout {
        out.flush()?;
    }
    producer.labels.flush()?;
    result
}

impl Producer {
    async fn run(&mut self) -> std::io::Result<()> {
        let mut resync = false;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            if std::mem::take(&mut resync) || self.config_rx.has_changed().unwrap_or(false) {
                let now_us = self.generator.start.elapsed().as_micros() as u64;
                let config = self.config_rx.borrow_and_update().clone();
                self.schedule.sync(&self.generator, &config, now_us);
            }
            match self.next_due().await? {
                Next::Produce { due_us, index } => {
                    if !self.emit(due_us, index).await? {
                        return Ok(());
                    }
                }
                Next::Resync => resync = true,
                Next::Done => return Ok(()),
            }
        }
    }

    /// Waits until the earliest series is due (when paced).
    async fn next_due(&mut self) -> std::io::Result<Next> {
        loop {
            let Some(Reverse((due_us, index))) = self.schedule.due.pop() else {
                return Ok(Next::Done);
            };
            let state = &self.schedule.series[index];
            if !state.active {
                continue; // removed by a reload
            }
            if self
                .generator
                .options
                .count
                .is_some_and(|n| state.index >= n)
            {
                continue;
            }
            if !self.paced(index) {
                return Ok(Next::Produce { due_us, index });
            }
            let due = self.generator.start + Duration::from_micros(due_us);
            if due <= Instant::now() {
                return Ok(Next::Produce { due_us, index });
            }
            if let Some(out) = &mut self.stdout {
                out.flush()?;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => return Ok(Next::Produce { due_us, index }),
                () = self.stop.cancelled() => return Ok(Next::Done),
                _ = self.config_rx.changed() => {
                    // Re-examine with the new configuration.
                    self.schedule.due.push(Reverse((due_us, index)));
                    return Ok(Next::Resync);
                }
            }
        }
    }

    /// Whether series `index` is paced in real time.
    fn paced(&self, index: usize) -> bool {
        self.generator.live() && self.schedule.series[index].config.pattern.data_frequency > 0.0
    }

    /// Produces the point of series `index` due at `due_us` and hands it
    /// on; false when stopped while waiting for room in the queue.
    async fn emit(&mut self, due_us: u64, index: usize) -> std::io::Result<bool> {
        let paced = self.paced(index);
        let generator = &self.generator;
        let state = &mut self.schedule.series[index];
        let t = due_us as f64 / 1e6;
        let sample = state.model.sample(&state.config.pattern, t);
        let point = DataPoint {
            value: sample.value,
            timestamp: Some(generator.start_unix() + t),
            series: Cow::Borrowed(&state.name),
            seq: Some(generator.first_seq() + state.index),
        };
        state.index += 1;
        self.schedule
            .due
            .push(Reverse((due_us + step_us(&state.config), index)));
        generator.stats.generated.fetch_add(1, Ordering::Relaxed);
        if let Some(label) = &sample.label {
            generator.stats.labels.fetch_add(1, Ordering::Relaxed);
            self.labels.write(&point, label)?;
        }
        if let Some(out) = &mut self.stdout {
            self.line.clear();
            point.write_json(&mut self.line);
            self.line.push(b'\n');
            out.write_all(&self.line)?;
            generator.stats.sent.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let Some(queue) = &state.queue else {
            return Ok(true);
        };
        let outgoing = Outgoing {
            series: state.name.clone(),
            value: point.value,
            timestamp: point.timestamp.unwrap_or_default(),
            seq: point.seq.unwrap_or_default(),
        };
        if paced {
            queue.push(outgoing);
            return Ok(true);
        }
        tokio::select! {
            () = queue.push_when_room(outgoing) => {}
            () = self.stop.cancelled() => return Ok(false),
        }
        // Let the sender and signals run between points.
        tokio::task::yield_now().await;
        Ok(true)
    }
}
