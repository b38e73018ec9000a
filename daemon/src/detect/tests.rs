//! Tests of the detector and its window against naive references.

use super::*;
use std::collections::VecDeque;

// ---------------------------------------------------------------------
// Reference computations
// ---------------------------------------------------------------------

/// Plain two-pass mean and population std.
fn two_pass(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Allowed error on the mean: `1e-9·|want| + 1e-12·|mean|`, plus, for a
/// window holding both signs only, the rounding floor `n·ε·max|x|` that no
/// algorithm (the reference included) can beat when the mean cancels.
fn mean_tolerance(xs: &[f64], want: f64) -> f64 {
    let mixed = xs.iter().any(|&x| x < 0.0) && xs.iter().any(|&x| x > 0.0);
    let slack = if mixed {
        let max_abs = xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        4.0 * xs.len() as f64 * f64::EPSILON * max_abs
    } else {
        0.0
    };
    1e-9 * want.abs() + 1e-12 * want.abs() + slack
}

/// Allowed error on the std: `1e-9·|want| + 1e-12·|mean|`.
fn std_tolerance(want_std: f64, mean: f64) -> f64 {
    1e-9 * want_std + 1e-12 * mean.abs()
}

/// Assert that the window's statistics match the two-pass reference.
fn assert_exact<R: AsRef<[f64]>>(w: &SlidingWindow<R>, context: &str) {
    let xs: Vec<f64> = w.iter().collect();
    assert_eq!(xs.len(), w.len(), "{context}: iter length");
    let (mean, std) = two_pass(&xs);
    let tol_m = mean_tolerance(&xs, mean);
    assert!(
        (w.mean() - mean).abs() <= tol_m,
        "{context}: mean {} vs two-pass {} (tol {tol_m:e}, n {})",
        w.mean(),
        mean,
        xs.len()
    );
    let tol_s = std_tolerance(std, mean);
    assert!(
        (w.std_dev() - std).abs() <= tol_s,
        "{context}: std {} vs two-pass {} (tol {tol_s:e}, n {}, mean {mean})",
        w.std_dev(),
        std,
        xs.len()
    );
}

/// Deterministic xorshift64* generator, uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn settings(window: usize, min_samples: usize, k: f64, direction: Direction) -> DetectorSettings {
    DetectorSettings {
        window_size: window,
        threshold_multiplier: k,
        direction,
        min_samples,
        ..DetectorSettings::default()
    }
}

fn feed(d: &mut SeriesDetector, s: &DetectorSettings, xs: &[f64]) -> Vec<Verdict> {
    xs.iter().map(|&x| d.observe(x, s)).collect()
}

// ---------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------

#[test]
fn names_and_serde() {
    assert_eq!(Side::Upper.as_str(), "upper");
    assert_eq!(Side::Lower.as_str(), "lower");
    assert_eq!(Direction::Upper.as_str(), "upper");
    assert_eq!(Direction::Lower.as_str(), "lower");
    assert_eq!(Direction::Both.as_str(), "both");
    for side in [Side::Upper, Side::Lower] {
        let json = serde_json::to_string(&side).unwrap();
        assert_eq!(json, format!("\"{}\"", side.as_str()));
        assert_eq!(serde_json::from_str::<Side>(&json).unwrap(), side);
    }
    for dir in [Direction::Upper, Direction::Lower, Direction::Both] {
        let json = serde_json::to_string(&dir).unwrap();
        assert_eq!(json, format!("\"{}\"", dir.as_str()));
        assert_eq!(serde_json::from_str::<Direction>(&json).unwrap(), dir);
    }
}

// ---------------------------------------------------------------------
// Verdicts
// ---------------------------------------------------------------------

#[test]
fn warm_up_then_verdicts() {
    let s = settings(10, 5, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    for have in 0..5 {
        assert!(d.is_warming_up(&s));
        assert_eq!(
            d.observe(10.0 + have as f64, &s),
            Verdict::WarmingUp { have, need: 5 }
        );
        // Warm-up points enter the window.
        assert_eq!(d.window().len(), have + 1);
    }
    assert!(!d.is_warming_up(&s));
    let v = d.observe(12.0, &s);
    let b = v.baseline().expect("verdict after warm-up");
    assert!(!v.is_anomaly());
    assert_eq!(b.mean, 12.0);
    assert!((b.std_dev - 2f64.sqrt()).abs() < 1e-15);
    assert_eq!(d.window().len(), 6);
}

#[test]
fn empty_window_never_judges() {
    let s = settings(4, 0, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    assert!(d.is_warming_up(&s));
    assert_eq!(d.observe(1.0, &s), Verdict::WarmingUp { have: 0, need: 1 });
    assert!(matches!(d.observe(1.0, &s), Verdict::Normal(_)));
}

#[test]
fn upper_lower_both() {
    // Window alternating 10 and 12: mean 11, σ 1, band 11 ± 3.
    let history: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 0 { 10.0 } else { 12.0 })
        .collect();
    let cases = [
        (Direction::Upper, 20.0, Some(Side::Upper)),
        (Direction::Upper, 2.0, None),
        (Direction::Lower, 20.0, None),
        (Direction::Lower, 2.0, Some(Side::Lower)),
        (Direction::Both, 20.0, Some(Side::Upper)),
        (Direction::Both, 2.0, Some(Side::Lower)),
        (Direction::Both, 13.9, None),
        (Direction::Both, 8.1, None),
    ];
    for (direction, value, want) in cases {
        let s = settings(20, 20, 3.0, direction);
        let mut d = SeriesDetector::new(&s);
        feed(&mut d, &s, &history);
        let v = d.observe(value, &s);
        let b = v.baseline().unwrap();
        assert_eq!(b.mean, 11.0);
        assert_eq!(b.std_dev, 1.0);
        assert_eq!(b.threshold, 14.0);
        assert_eq!(b.lower_threshold, 8.0);
        match want {
            Some(side) => assert_eq!(v, Verdict::Anomaly(b, side), "{direction:?} {value}"),
            None => assert_eq!(v, Verdict::Normal(b), "{direction:?} {value}"),
        }
    }
}

#[test]
fn strict_inequality_at_threshold() {
    let s = settings(4, 4, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[0.0, 2.0, 0.0, 2.0]);
    let expect = Baseline {
        mean: 1.0,
        std_dev: 1.0,
        threshold: 4.0,
        lower_threshold: -2.0,
        sigma: 1.0,
    };
    assert_eq!(expect.score(4.0), 3.0, "at the threshold: score = k");
    assert_eq!(expect.score(-1.0), 2.0);
    assert_eq!(d.clone().observe(4.0, &s), Verdict::Normal(expect));
    assert_eq!(d.clone().observe(-2.0, &s), Verdict::Normal(expect));
    assert_eq!(
        d.clone().observe(4f64.next_up(), &s),
        Verdict::Anomaly(expect, Side::Upper)
    );
    assert_eq!(
        d.clone().observe((-2f64).next_down(), &s),
        Verdict::Anomaly(expect, Side::Lower)
    );
    // Also against whatever baseline an inexact window produces.
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[0.1, 0.7, 0.3, 0.2]);
    let b = d.clone().observe(0.0, &s).baseline().unwrap();
    assert!(!d.clone().observe(b.threshold, &s).is_anomaly());
    assert!(!d.clone().observe(b.lower_threshold, &s).is_anomaly());
    assert!(d.clone().observe(b.threshold.next_up(), &s).is_anomaly());
    assert!(
        d.clone()
            .observe(b.lower_threshold.next_down(), &s)
            .is_anomaly()
    );
}

#[test]
fn flat_series_with_real_jump_is_flagged() {
    let s = settings(30, 30, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[42.0; 30]);
    let normal = d.clone().observe(42.0, &s);
    assert!(matches!(normal, Verdict::Normal(b) if b.std_dev == 0.0 && b.mean == 42.0));
    assert!(matches!(
        d.clone().observe(43.0, &s),
        Verdict::Anomaly(_, Side::Upper)
    ));
    assert!(matches!(
        d.clone().observe(41.0, &s),
        Verdict::Anomaly(_, Side::Lower)
    ));
    // A small but real move (1e-6 relative) is flagged too.
    assert!(d.clone().observe(42.000042, &s).is_anomaly());
}

#[test]
fn flat_series_rounding_noise_is_not_flagged() {
    let s = settings(30, 30, 3.0, Direction::Both);

    // 0.1 + 0.2 vs 0.3.
    let a = 0.1 + 0.2;
    assert_ne!(a, 0.3);
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[0.3; 30]);
    assert!(!d.clone().observe(a, &s).is_anomaly());
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[a; 30]);
    assert!(!d.clone().observe(0.3, &s).is_anomaly());
    let mut d = SeriesDetector::new(&s);
    for i in 0..200 {
        let v = d.observe(if i % 7 == 3 { a } else { 0.3 }, &s);
        assert!(!v.is_anomaly(), "point {i}: {v:?}");
    }

    // 1e9 with last-bit variations.
    let base = 1e9f64;
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[base; 30]);
    for x in [base.next_up(), base.next_down(), base.next_up().next_up()] {
        assert!(!d.clone().observe(x, &s).is_anomaly(), "{x}");
    }
    let mut d = SeriesDetector::new(&s);
    let mut rng = Rng(7);
    for i in 0..500 {
        let x = match rng.next_u64() % 5 {
            0 => base.next_down(),
            1 => base.next_up(),
            2 => base.next_up().next_up(),
            _ => base,
        };
        let v = d.observe(x, &s);
        assert!(!v.is_anomaly(), "point {i}: {v:?}");
    }
    // ... while a real jump at that level still is flagged.
    assert!(d.observe(base + 10.0, &s).is_anomaly());
}

#[test]
fn the_default_floor_does_not_hide_small_real_changes_on_large_values() {
    // Near 1e9 with a real σ of 0.03, a jump of 0.5 (about 17σ) is flagged;
    // the old default floor (1e-9 × 1e9 = 1.0) hid it.
    let s = DetectorSettings::default();
    let mut rng = Rng(11);
    let mut d = SeriesDetector::new(&s);
    for _ in 0..30 {
        let noise = (rng.next_u64() % 1000) as f64 / 1000.0 - 0.5;
        d.observe(1e9 + 0.06 * noise * 1.7, &s);
    }
    let baseline = d.clone().observe(1e9, &s).baseline().unwrap();
    assert!(
        baseline.std_dev > 0.01 && baseline.std_dev < 0.05,
        "{baseline:?}"
    );
    assert!(d.clone().observe(1e9 + 0.5, &s).is_anomaly());
    let old = DetectorSettings {
        min_relative_std_dev: 1e-9,
        ..s.clone()
    };
    assert!(
        !d.clone().observe(1e9 + 0.5, &old).is_anomaly(),
        "what the old floor did"
    );

    // Near 0 (1e-10): last-bit noise is not flagged, a real jump is.
    let base = 1e-10f64;
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[base; 30]);
    for x in [base.next_up(), base.next_down(), base.next_up().next_up()] {
        assert!(!d.clone().observe(x, &s).is_anomaly(), "{x:e}");
    }
    let mut rng = Rng(5);
    for i in 0..500 {
        let x = match rng.next_u64() % 4 {
            0 => base.next_down(),
            1 => base.next_up(),
            2 => base.next_up().next_up(),
            _ => base,
        };
        assert!(!d.observe(x, &s).is_anomaly(), "point {i}");
    }
    assert!(d.observe(base * 1.001, &s).is_anomaly());
}

#[test]
fn scores_are_finite_and_capped() {
    let flat = Baseline {
        mean: 5.0,
        std_dev: 0.0,
        threshold: 5.0,
        lower_threshold: 5.0,
        sigma: 0.0,
    };
    assert_eq!(flat.score(5.0), 0.0);
    assert_eq!(flat.score(5.0f64.next_up()), MAX_SCORE);
    let tiny = Baseline {
        sigma: 1e-300,
        ..flat
    };
    assert_eq!(tiny.score(1e150), MAX_SCORE);
    let normal = Baseline { sigma: 2.0, ..flat };
    assert_eq!(normal.score(1.0), 2.0);
    // Every verdict's score is finite, whatever the input.
    let s = settings(4, 4, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    for x in [0.0, 1e150, -1e150, 1e-300, 0.0, 1e150, 7.0] {
        if let Some(b) = d.observe(x, &s).baseline() {
            assert!(b.score(x).is_finite() && b.score(x) >= 0.0);
        }
    }
}

#[test]
fn flat_zero_series_then_one_is_flagged() {
    let s = settings(30, 30, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &[0.0; 30]);
    assert!(matches!(d.clone().observe(0.0, &s), Verdict::Normal(_)));
    assert!(matches!(
        d.clone().observe(1.0, &s),
        Verdict::Anomaly(_, Side::Upper)
    ));
    assert!(matches!(
        d.clone().observe(-1.0, &s),
        Verdict::Anomaly(_, Side::Lower)
    ));
    // An absolute floor lifts small moves off zero.
    let floored = DetectorSettings {
        min_std_dev: 0.5,
        ..s.clone()
    };
    assert!(!d.clone().observe(1.0, &floored).is_anomaly());
    assert!(d.clone().observe(1.6, &floored).is_anomaly());
}

fn noisy_level(level: f64, n: usize, rng: &mut Rng) -> Vec<f64> {
    (0..n).map(|_| level + (rng.uniform() - 0.5)).collect()
}

#[test]
fn exclude_anomalies_keeps_a_burst_from_inflating_std() {
    let mut rng = Rng(11);
    let history = noisy_level(100.0, 10, &mut rng);
    let base = DetectorSettings {
        window_size: 10,
        min_samples: 10,
        threshold_multiplier: 3.5,
        direction: Direction::Upper,
        max_excluded_run: 5,
        ..DetectorSettings::default()
    };
    let burst = [1000.0, 1000.0, 1000.0];

    // Without exclusion, the first spike inflates σ and masks the second.
    let s = DetectorSettings {
        exclude_anomalies: false,
        ..base.clone()
    };
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &history);
    let v = feed(&mut d, &s, &burst);
    assert!(v[0].is_anomaly());
    assert!(!v[1].is_anomaly(), "{:?}", v[1]);

    // With exclusion, the whole burst is flagged and the window is clean.
    let s = DetectorSettings {
        exclude_anomalies: true,
        ..base.clone()
    };
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &history);
    let v = feed(&mut d, &s, &burst);
    assert!(v.iter().all(Verdict::is_anomaly), "{v:?}");
    assert_eq!(d.excluded_run(), &burst);
    assert_eq!(d.window().iter().collect::<Vec<_>>(), history);
    // A normal point ends the run; the spikes never enter.
    assert!(!d.observe(100.0, &s).is_anomaly());
    assert!(d.excluded_run().is_empty());
    assert!(d.state.pending.is_none(), "run freed");
    assert!(d.window().iter().all(|x| x < 200.0));
    assert_exact(&d.window(), "after burst");

    // max_excluded_run = 0: flagged points always enter.
    let s = DetectorSettings {
        exclude_anomalies: true,
        max_excluded_run: 0,
        ..base.clone()
    };
    let mut d = SeriesDetector::new(&s);
    feed(&mut d, &s, &history);
    let v = feed(&mut d, &s, &burst);
    assert!(v[0].is_anomaly());
    assert!(!v[1].is_anomaly());
    assert!(d.excluded_run().is_empty());
}

#[test]
fn exclude_anomalies_accepts_a_level_shift() {
    let mut rng = Rng(5);
    let s = DetectorSettings {
        window_size: 10,
        min_samples: 10,
        threshold_multiplier: 3.0,
        direction: Direction::Both,
        exclude_anomalies: true,
        max_excluded_run: 5,
        ..DetectorSettings::default()
    };
    let mut d = SeriesDetector::new(&s);
    let history = noisy_level(100.0, 10, &mut rng);
    feed(&mut d, &s, &history);
    let shifted = noisy_level(200.0, 20, &mut rng);
    for (i, &x) in shifted.iter().enumerate() {
        let v = d.observe(x, &s);
        if i < 5 {
            assert!(
                matches!(v, Verdict::Anomaly(_, Side::Upper)),
                "point {i}: {v:?}"
            );
            if i < 4 {
                assert_eq!(d.excluded_run(), &shifted[..=i]);
                assert_eq!(d.window().iter().collect::<Vec<_>>(), history);
            } else {
                // The run reached max_excluded_run: accepted, in order.
                assert!(d.excluded_run().is_empty());
                let w: Vec<f64> = d.window().iter().collect();
                assert_eq!(&w[5..], &shifted[..5]);
                assert_eq!(&w[..5], &history[5..]);
            }
        } else {
            assert!(!v.is_anomaly(), "point {i} at the new level: {v:?}");
        }
    }
    assert_exact(&d.window(), "after level shift");
}

#[test]
fn resize_keeps_most_recent_points() {
    let mut w = SlidingWindow::new(8);
    assert!(w.is_empty());
    assert_eq!(w.capacity(), 8);
    for i in 1..=20 {
        w.push(i as f64);
    }
    assert_eq!(
        w.iter().collect::<Vec<_>>(),
        (13..=20).map(f64::from).collect::<Vec<_>>()
    );
    w.resize(5);
    assert_eq!(w.capacity(), 5);
    assert_eq!(
        w.iter().collect::<Vec<_>>(),
        vec![16.0, 17.0, 18.0, 19.0, 20.0]
    );
    assert_eq!(w.mean(), 18.0);
    assert_eq!(w.std_dev(), 2f64.sqrt());
    w.resize(12);
    assert_eq!(w.capacity(), 12);
    assert_eq!(w.len(), 5);
    assert_eq!(
        w.iter().collect::<Vec<_>>(),
        vec![16.0, 17.0, 18.0, 19.0, 20.0]
    );
    assert_exact(&w, "grown");
    for i in 21..=40 {
        w.push(i as f64);
        assert_exact(&w, "after growing");
    }
    assert_eq!(w.len(), 12);
    assert_eq!(
        w.iter().collect::<Vec<_>>(),
        (29..=40).map(f64::from).collect::<Vec<_>>()
    );
    // Capacity 0 is clamped to 1.
    w.resize(0);
    assert_eq!(w.capacity(), 1);
    assert_eq!(w.iter().collect::<Vec<_>>(), vec![40.0]);
    assert_eq!(SlidingWindow::new(0).capacity(), 1);
}

#[test]
fn settings_reload_resizes_window_and_keeps_state() {
    let mut s = settings(10, 3, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    let xs: Vec<f64> = (0..10).map(|i| 100.0 + (i % 3) as f64).collect();
    feed(&mut d, &s, &xs);
    s.window_size = 4;
    let v = d.observe(101.0, &s);
    let b = v.baseline().unwrap();
    let (mean, std) = two_pass(&xs[6..]);
    assert!((b.mean - mean).abs() < 1e-12 && (b.std_dev - std).abs() < 1e-12);
    assert_eq!(d.window().capacity(), 4);
    let mut want = xs[7..].to_vec();
    want.push(101.0);
    assert_eq!(d.window().iter().collect::<Vec<_>>(), want);
    s.window_size = 50;
    d.observe(102.0, &s);
    assert_eq!(d.window().capacity(), 50);
    assert_eq!(d.window().len(), 5);
    // window_size 0 behaves as 1 and does not resize on every point.
    s.window_size = 0;
    d.observe(5.0, &s);
    assert_eq!(d.window().capacity(), 1);
    assert_eq!(d.window().iter().collect::<Vec<_>>(), vec![5.0]);
}

#[test]
fn min_samples_change_mid_stream() {
    let mut s = settings(20, 5, 3.0, Direction::Both);
    let mut d = SeriesDetector::new(&s);
    let vs = feed(&mut d, &s, &[1.0, 2.0, 3.0, 4.0, 5.0, 3.0]);
    assert!(matches!(vs[4], Verdict::WarmingUp { have: 4, need: 5 }));
    assert!(matches!(vs[5], Verdict::Normal(_)));
    s.min_samples = 8;
    assert!(d.is_warming_up(&s));
    assert_eq!(d.observe(3.0, &s), Verdict::WarmingUp { have: 6, need: 8 });
    assert_eq!(d.observe(3.0, &s), Verdict::WarmingUp { have: 7, need: 8 });
    assert!(matches!(d.observe(3.0, &s), Verdict::Normal(_)));
    assert_eq!(d.window().len(), 9);
    s.min_samples = 2;
    assert!(matches!(d.observe(3.0, &s), Verdict::Normal(_)));
    // Shrinking the window below min_samples: warm-up against the new
    // (resized) window.
    s.window_size = 4;
    s.min_samples = 6;
    assert!(d.is_warming_up(&s));
    assert_eq!(d.observe(3.0, &s), Verdict::WarmingUp { have: 4, need: 6 });
}

#[test]
fn extreme_finite_inputs_do_not_panic() {
    let values = [
        1e150, -1e150, 0.0, 1e-300, -1e-300, 5e-324, 1e150, 1e150, -1e150, 1.0, 1e12, -0.0,
    ];
    for window in [1, 2, 3, 7, 64] {
        for direction in [Direction::Upper, Direction::Lower, Direction::Both] {
            for exclude in [false, true] {
                let s = DetectorSettings {
                    window_size: window,
                    min_samples: 1,
                    direction,
                    exclude_anomalies: exclude,
                    max_excluded_run: 2,
                    ..DetectorSettings::default()
                };
                let mut d = SeriesDetector::new(&s);
                for _ in 0..20 {
                    for &x in &values {
                        let v = d.observe(x, &s);
                        if let Some(b) = v.baseline() {
                            assert!(b.mean.is_finite() && b.std_dev.is_finite());
                        }
                    }
                }
                assert!(d.window().std_dev().is_finite());
            }
        }
    }
    let mut w = SlidingWindow::new(1_000);
    for i in 0..5_000 {
        w.push(if i % 2 == 0 { 1e150 } else { -1e150 });
    }
    assert!(w.std_dev().is_finite());
    assert_exact(&w, "±1e150");
}

#[test]
fn per_series_memory_is_small() {
    // The series table keeps a DetectorState per series and the rings
    // in shared blocks: 1M series at window 30 need 1M × (48 B + 240 B)
    // ≈ 275 MiB for the detectors.
    assert_eq!(std::mem::size_of::<WindowStats>(), 40);
    assert_eq!(std::mem::size_of::<DetectorState>(), 48);
    assert_eq!(std::mem::size_of::<SlidingWindow>(), 56);
    assert_eq!(std::mem::size_of::<SeriesDetector>(), 64);
    let s = DetectorSettings::default();
    let d = SeriesDetector::new(&s);
    assert!(d.state.pending.is_none());
    assert_eq!(d.window().capacity(), 30);
}

// ---------------------------------------------------------------------
// Accuracy
// ---------------------------------------------------------------------

/// Values near 1e9 with variance 1e-3 (uniform noise of width √0.012).
fn near_1e9(rng: &mut Rng) -> f64 {
    1e9 + (rng.uniform() - 0.5) * 0.012f64.sqrt()
}

#[test]
fn accurate_near_1e9_with_small_variance() {
    for cap in [1, 2, 3, 30, 100] {
        let mut rng = Rng(3);
        let mut w = SlidingWindow::new(cap);
        for i in 0..5_000 {
            w.push(near_1e9(&mut rng));
            assert_exact(&w, &format!("cap {cap} push {i}"));
        }
    }
}

#[test]
fn accurate_after_spike_enters_and_leaves() {
    for cap in [1, 2, 5, 30, 257] {
        let mut rng = Rng(9);
        let mut w = SlidingWindow::new(cap);
        for i in 0..3 * cap + 50 {
            let x = if i == cap + 7 {
                1e12
            } else {
                near_1e9(&mut rng)
            };
            w.push(x);
            assert_exact(&w, &format!("cap {cap} push {i}"));
        }
        // Small values after a spike.
        let mut w = SlidingWindow::new(cap);
        for i in 0..3 * cap + 50 {
            let x = if i == cap {
                1e12
            } else {
                1.0 + 1e-3 * rng.uniform()
            };
            w.push(x);
            assert_exact(&w, &format!("small, cap {cap} push {i}"));
        }
    }
}

/// 10 million updates near 1e9 (variance 1e-3) with one 1e12 spike,
/// checked against two-pass at many checkpoints. Built with opt-level 3.
#[test]
fn ten_million_updates_stay_exact() {
    const N: usize = 10_000_000;
    const SPIKE: usize = 6_543_210;
    for cap in [30usize, 1_000] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut w = SlidingWindow::new(cap);
        let mut worst_std_rel = 0.0f64;
        for i in 0..N {
            let x = if i == SPIKE { 1e12 } else { near_1e9(&mut rng) };
            w.push(x);
            let checkpoint = i % 100_000 == 99_999
                || (SPIKE..SPIKE + 3).contains(&i)
                || (SPIKE + cap - 2..SPIKE + cap + 3).contains(&i)
                || i < 2 * cap;
            if checkpoint {
                assert_exact(&w, &format!("cap {cap} update {i}"));
                if i >= cap && !(SPIKE..SPIKE + cap).contains(&i) {
                    let (_, std) = two_pass(&w.iter().collect::<Vec<_>>());
                    worst_std_rel = worst_std_rel.max((w.std_dev() - std).abs() / std);
                }
            }
        }
        // The incremental update rounds at the scale of |mean| (ulp(1e9) is
        // 1.2e-7 for σ ≈ 0.03): a few 1e-6 relative on σ, far inside the
        // 1e-12·|mean| allowance (1e-3 absolute, about 3% of σ).
        eprintln!("cap {cap}: worst relative std error {worst_std_rel:e}");
        assert!(
            worst_std_rel < 1e-4,
            "cap {cap}: worst relative std error {worst_std_rel:e}"
        );
    }
}

// ---------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    const OFFSETS: [f64; 7] = [0.0, 1.0, 1e3, 1e6, 1e9, -1e9, 1e12];
    const SCALES: [f64; 7] = [0.0, 1e-9, 1e-3, 0.03, 1.0, 1e3, 1e6];

    /// Segments of `offset + scale·noise`, with occasional spikes up to 1e12.
    fn series() -> impl Strategy<Value = Vec<f64>> {
        let point = (-1.0f64..1.0, 0u32..100, 0.0f64..=1.0);
        let segment = (
            0..OFFSETS.len(),
            0..SCALES.len(),
            prop::collection::vec(point, 1..150),
        );
        prop::collection::vec(segment, 1..5).prop_map(|segments| {
            let mut out = Vec::new();
            for (o, s, points) in segments {
                for (noise, roll, magnitude) in points {
                    out.push(match roll {
                        0 => 1e12,
                        1..=3 => 10f64.powf(12.0 * magnitude),
                        _ => OFFSETS[o] + SCALES[s] * noise,
                    });
                }
            }
            out
        })
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// The naive reference detector: two-pass statistics over a VecDeque.
    struct Naive {
        window: VecDeque<f64>,
        pending: Vec<f64>,
    }

    impl Naive {
        fn push(&mut self, x: f64, cap: usize) {
            self.window.push_back(x);
            while self.window.len() > cap {
                self.window.pop_front();
            }
        }

        /// Returns the reference verdict and the ambiguity margin around
        /// the thresholds; `decided` overrides the flag inside the margin.
        fn observe(
            &mut self,
            value: f64,
            s: &DetectorSettings,
            got: &Verdict,
        ) -> Result<(), TestCaseError> {
            let cap = s.window_size.max(1);
            while self.window.len() > cap {
                self.window.pop_front();
            }
            let have = self.window.len();
            if have < s.min_samples || have == 0 {
                prop_assert_eq!(
                    *got,
                    Verdict::WarmingUp {
                        have,
                        need: s.min_samples.max(1)
                    }
                );
                self.pending.clear();
                self.push(value, cap);
                return Ok(());
            }
            let xs: Vec<f64> = self.window.iter().copied().collect();
            let (mean, std) = two_pass(&xs);
            let sigma = std
                .max(s.min_std_dev)
                .max(s.min_relative_std_dev * mean.abs());
            let k = s.threshold_multiplier;
            let (upper, lower) = (mean + k * sigma, mean - k * sigma);
            let Some(b) = got.baseline() else {
                return Err(TestCaseError::fail(format!("warming up: {got:?}")));
            };
            let tol_m = mean_tolerance(&xs, mean);
            let tol_s = std_tolerance(std, mean);
            prop_assert!(
                (b.mean - mean).abs() <= tol_m,
                "mean {} vs {}",
                b.mean,
                mean
            );
            prop_assert!(
                (b.std_dev - std).abs() <= tol_s,
                "std {} vs {}",
                b.std_dev,
                std
            );
            let margin = 2.0 * (tol_m + k * (tol_s + s.min_relative_std_dev * tol_m))
                + 4.0 * f64::EPSILON * (mean.abs() + k * sigma);
            let up = s.direction != Direction::Lower;
            let down = s.direction != Direction::Upper;
            let want = if up && value > upper {
                Some(Side::Upper)
            } else if down && value < lower {
                Some(Side::Lower)
            } else {
                None
            };
            let got_side = match *got {
                Verdict::Anomaly(_, side) => Some(side),
                _ => None,
            };
            let ambiguous = (up && (value - upper).abs() <= margin)
                || (down && (value - lower).abs() <= margin);
            if !ambiguous {
                prop_assert_eq!(
                    got_side,
                    want,
                    "value {} band [{}, {}]",
                    value,
                    lower,
                    upper
                );
            }
            // Follow the detector's decision (identical unless ambiguous).
            if got_side.is_some() && s.exclude_anomalies && s.max_excluded_run > 0 {
                self.pending.push(value);
                if self.pending.len() >= s.max_excluded_run {
                    for x in std::mem::take(&mut self.pending) {
                        self.push(x, cap);
                    }
                }
            } else {
                self.pending.clear();
                self.push(value, cap);
            }
            Ok(())
        }
    }

    fn settings_strategy() -> impl Strategy<Value = DetectorSettings> {
        (
            1usize..=64,
            0usize..=70,
            prop::sample::select(vec![0.0, 0.5, 1.0, 2.0, 3.0, 5.0]),
            prop::sample::select(vec![Direction::Upper, Direction::Lower, Direction::Both]),
            prop::sample::select(vec![0.0, 1e-3]),
            prop::sample::select(vec![0.0, 1e-9, 1e-6]),
            any::<bool>(),
            0usize..6,
        )
            .prop_map(|(w, m, k, direction, min_std, min_rel, exclude, run)| {
                DetectorSettings {
                    window_size: w,
                    threshold_multiplier: k,
                    direction,
                    min_samples: m.min(w + 2),
                    min_std_dev: min_std,
                    min_relative_std_dev: min_rel,
                    exclude_anomalies: exclude,
                    max_excluded_run: run,
                    ..DetectorSettings::default()
                }
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn window_matches_two_pass(values in series(), cap in 1usize..=64) {
            let mut w = SlidingWindow::new(cap);
            let mut reference = VecDeque::new();
            for (i, &x) in values.iter().enumerate() {
                w.push(x);
                reference.push_back(x);
                if reference.len() > cap {
                    reference.pop_front();
                }
                prop_assert!(w.iter().eq(reference.iter().copied()), "push {}", i);
                assert_exact(&w, &format!("push {i}"));
            }
        }

        #[test]
        fn resize_keeps_last_points(
            values in series(),
            cap in 1usize..=64,
            new_cap in 1usize..=64,
            after in series(),
        ) {
            let mut w = SlidingWindow::new(cap);
            for &x in &values {
                w.push(x);
            }
            let before: Vec<f64> = w.iter().collect();
            w.resize(new_cap);
            let keep = before.len().min(new_cap);
            let now: Vec<f64> = w.iter().collect();
            prop_assert_eq!(&now[..], &before[before.len() - keep..]);
            prop_assert_eq!(w.capacity(), new_cap);
            assert_exact(&w, "after resize");
            for &x in after.iter().take(200) {
                w.push(x);
                assert_exact(&w, "after resize and push");
            }
        }

        #[test]
        fn detector_matches_naive_reference(
            values in series(),
            first in settings_strategy(),
            second in settings_strategy(),
            switch_at in 0usize..600,
        ) {
            let mut d = SeriesDetector::new(&first);
            let mut naive = Naive { window: VecDeque::new(), pending: Vec::new() };
            for (i, &x) in values.iter().enumerate() {
                let s = if i < switch_at { &first } else { &second };
                let got = d.observe(x, s);
                naive.observe(x, s, &got)?;
                prop_assert!(d.window().iter().eq(naive.window.iter().copied()), "window at {}", i);
                prop_assert_eq!(d.excluded_run(), &naive.pending[..]);
                prop_assert_eq!(d.state.pending.is_none(), naive.pending.is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------------
// Snapshots: save and restore
// ---------------------------------------------------------------------

/// Every detector's state, saved and restored under the same settings,
/// goes on giving the verdicts and baselines the original gives.
#[test]
fn every_detector_continues_after_save_and_restore() {
    let settings = |kind: &'static DetectorKind| DetectorSettings {
        kind,
        window_size: 20,
        min_samples: 10,
        exclude_anomalies: true,
        max_excluded_run: 3,
        season: 100.0,
        seasons: 2,
        bucket: 10.0,
        ..DetectorSettings::default()
    };
    // A seasonal pattern with noise and a few spikes, one point a second.
    let value = |i: u32| {
        let noise = f64::from((i * 7919) % 13) / 13.0;
        let spike = if i % 97 == 50 { 40.0 } else { 0.0 };
        10.0 + 5.0 * (f64::from(i % 100) / 100.0 * std::f64::consts::TAU).sin() + noise + spike
    };
    for kind in registry::DETECTORS {
        let settings = settings(kind);
        let mut original = (kind.new)(&settings);
        for i in 0..450 {
            original.observe(value(i), f64::from(i), &settings);
        }
        let mut bytes = Vec::new();
        original.save(&mut persist::Encoder::new(&mut bytes));
        let mut decoder = persist::Decoder::new(&bytes);
        let mut restored = (kind.restore)(&mut decoder, &settings)
            .unwrap_or_else(|| panic!("{} did not restore", kind.name));
        assert!(decoder.is_done(), "{}: bytes left over", kind.name);
        assert!(!restored.is_warming_up(&settings), "{}", kind.name);
        for i in 450..650 {
            let (t, x) = (f64::from(i), value(i));
            let (a, b) = (
                original.current_baseline(t, &settings),
                restored.current_baseline(t, &settings),
            );
            match (a, b) {
                (Some(a), Some(b)) => {
                    assert!(
                        (a.mean - b.mean).abs() <= 1e-9 * a.mean.abs().max(1.0),
                        "{} at {i}",
                        kind.name
                    );
                    assert!(
                        (a.std_dev - b.std_dev).abs() <= 1e-9 * a.std_dev.max(1.0),
                        "{} at {i}",
                        kind.name
                    );
                }
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{} at {i}", kind.name),
            }
            let (va, vb) = (
                original.observe(x, t, &settings),
                restored.observe(x, t, &settings),
            );
            assert_eq!(va.is_anomaly(), vb.is_anomaly(), "{} at {i}", kind.name);
        }
    }
}

/// Truncated or garbled bytes restore nothing, and never panic.
#[test]
fn broken_saved_states_are_refused() {
    let settings = DetectorSettings {
        season: 100.0,
        seasons: 2,
        bucket: 10.0,
        ..DetectorSettings::default()
    };
    for kind in registry::DETECTORS {
        let settings = DetectorSettings {
            kind,
            ..settings.clone()
        };
        let mut state = (kind.new)(&settings);
        for i in 0..50 {
            state.observe(f64::from(i % 5), f64::from(i), &settings);
        }
        let mut bytes = Vec::new();
        state.save(&mut persist::Encoder::new(&mut bytes));
        for cut in 0..bytes.len() {
            let mut decoder = persist::Decoder::new(&bytes[..cut]);
            let restored = (kind.restore)(&mut decoder, &settings);
            assert!(restored.is_none(), "{} cut at {cut}", kind.name);
        }
    }
    // A seasonal state under another layout is not taken.
    let seasonal = DetectorSettings {
        kind: &crate::detect::seasonal::SEASONAL,
        ..settings.clone()
    };
    let mut bytes = Vec::new();
    (seasonal.kind.new)(&seasonal).save(&mut persist::Encoder::new(&mut bytes));
    let other = DetectorSettings {
        bucket: 20.0,
        ..seasonal.clone()
    };
    assert!((seasonal.kind.restore)(&mut persist::Decoder::new(&bytes), &other).is_none());
}

#[test]
fn each_detector_has_its_own_settings_fingerprint() {
    use super::persist::settings_fingerprint;
    let prints: Vec<u64> = registry::DETECTORS
        .iter()
        .map(|&kind| {
            settings_fingerprint(&DetectorSettings {
                kind,
                ..DetectorSettings::default()
            })
        })
        .collect();
    let mut unique = prints.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), prints.len(), "{prints:?}");
}
