//! Metrics of the state snapshots ([`crate::snapshot`]): when the last
//! one was written, how long it took, how large it is, how many writes
//! failed, and how many series the start-up restore brought back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{counter, gauge};

/// Counters of the snapshot writer, updated by the snapshot task.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Unix seconds of the last successful write, as `f64` bits (0: none).
    last_success: AtomicU64,
    /// Seconds the last successful write took, as `f64` bits.
    duration: AtomicU64,
    /// Bytes of the last snapshot written.
    bytes: AtomicU64,
    /// Series in the last snapshot written.
    series: AtomicU64,
    /// Writes that failed.
    failures: AtomicU64,
    /// Series restored from the snapshot at start.
    restored: AtomicU64,
}

impl SnapshotStats {
    /// Records a snapshot of `series` series and `bytes` bytes, finished
    /// at `at` (unix seconds) after `took`.
    pub fn written(&self, at: f64, took: Duration, bytes: u64, series: u64) {
        self.duration
            .store(took.as_secs_f64().to_bits(), Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.series.store(series, Ordering::Relaxed);
        self.last_success.store(at.to_bits(), Ordering::Relaxed);
    }

    /// Counts a failed write.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how many series the start-up restore brought back.
    pub fn restored(&self, series: u64) {
        self.restored.store(series, Ordering::Relaxed);
    }

    /// Unix seconds of the last successful write (0: none yet).
    pub fn last_success(&self) -> f64 {
        f64::from_bits(self.last_success.load(Ordering::Relaxed))
    }

    /// Writes the `anomalyd_snapshot_*` families.
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            out,
            "anomalyd_snapshot_last_success_timestamp_seconds",
            "Unix time of the last state snapshot written ([state] directory); 0 before the first.",
            self.last_success(),
        );
        gauge(
            out,
            "anomalyd_snapshot_duration_seconds",
            "Seconds the last state snapshot took to encode, write, fsync and rename.",
            f64::from_bits(load(&self.duration)),
        );
        gauge(
            out,
            "anomalyd_snapshot_bytes",
            "Size in bytes of the last state snapshot written.",
            load(&self.bytes) as f64,
        );
        gauge(
            out,
            "anomalyd_snapshot_series",
            "Series in the last state snapshot written.",
            load(&self.series) as f64,
        );
        counter(
            out,
            "anomalyd_snapshot_failures_total",
            "State snapshot writes that failed (see the daemon's log); the previous snapshot stays in place.",
            load(&self.failures),
        );
        gauge(
            out,
            "anomalyd_snapshot_restored_series",
            "Series restored from the state snapshot at start, with their windows.",
            load(&self.restored) as f64,
        );
    }
}
