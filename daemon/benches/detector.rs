//! Benchmarks of `SeriesDetector::observe` (window update + verdict, no series
//! lookup) at window 30 and window 10,000, and of every detector of the
//! registry through its `SeriesModel` (group `model`, window 30 and 1,000).
//!
//! Run with `cargo bench -p anomalyd --bench detector`. Each iteration feeds
//! `POINTS` precomputed values, so time per point = reported time / `POINTS`
//! (criterion also reports the throughput in points per second).

use std::hint::black_box;

use anomalyd::detect::registry::DETECTORS;
use anomalyd::detect::{DetectorSettings, Direction, SeriesDetector};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};

/// Points fed per benchmark iteration.
const POINTS: usize = 4096;

/// Deterministic xorshift64* values: roughly normal noise around 100 (sum of
/// four uniforms) with a spike every 500 points or so.
fn values(n: usize) -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    (0..n)
        .map(|_| {
            let noise = uniform() + uniform() + uniform() + uniform() - 2.0;
            if uniform() < 0.002 {
                1_000.0 + noise
            } else {
                100.0 + noise
            }
        })
        .collect()
}

fn bench_observe(c: &mut Criterion) {
    let data = values(POINTS);
    let mut group = c.benchmark_group("observe");
    group.throughput(Throughput::Elements(POINTS as u64));
    for exclude in [false, true] {
        for window in [30usize, 10_000] {
            let settings = DetectorSettings {
                window_size: window,
                min_samples: window.min(30),
                direction: Direction::Both,
                exclude_anomalies: exclude,
                max_excluded_run: 10,
                ..DetectorSettings::default()
            };
            let mut detector = SeriesDetector::new(&settings);
            // Fill the window so that the steady state is measured.
            for &x in values(window + POINTS).iter() {
                detector.observe(x, &settings);
            }
            let name = if exclude { "exclude_anomalies" } else { "both" };
            group.bench_with_input(BenchmarkId::new(name, window), &data, |b, data| {
                b.iter(|| {
                    let mut anomalies = 0u32;
                    for &x in data {
                        let verdict = detector.observe(black_box(x), &settings);
                        // By reference: the verdict is materialised as a
                        // caller would, without timing a by-value copy of it.
                        anomalies += u32::from(black_box(&verdict).is_anomaly());
                    }
                    anomalies
                })
            });
        }
    }
    group.finish();
}

/// Every detector behind the trait, with timestamps a minute apart (the
/// seasonal detector reads them).
fn bench_models(c: &mut Criterion) {
    let data = values(POINTS);
    let mut group = c.benchmark_group("model");
    group.throughput(Throughput::Elements(POINTS as u64));
    for &kind in DETECTORS {
        for window in [30usize, 1_000] {
            let settings = DetectorSettings {
                kind,
                window_size: window,
                min_samples: window.min(30),
                half_life: window as f64 / 2.0,
                direction: Direction::Both,
                ..DetectorSettings::default()
            };
            let mut model = (kind.new)(&settings);
            let mut t = 1_700_000_000.0;
            for &x in values(window + POINTS).iter() {
                model.observe(x, t, &settings);
                t += 60.0;
            }
            group.bench_with_input(BenchmarkId::new(kind.name, window), &data, |b, data| {
                b.iter(|| {
                    let mut anomalies = 0u32;
                    for &x in data {
                        t += 60.0;
                        let verdict = model.observe(black_box(x), t, &settings);
                        anomalies += u32::from(black_box(&verdict).is_anomaly());
                    }
                    anomalies
                })
            });
        }
    }
    group.finish();
}

/// The generated `benches` function lives in a private module so that it
/// needs no documentation of its own.
mod group {
    criterion::criterion_group!(benches, super::bench_observe, super::bench_models);
}

criterion_main!(group::benches);
