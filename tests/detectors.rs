//! Detectors ([8/11] §3): chosen per rule, each with its own strengths,
//! and switched on reload without touching the other series.

use serde_json::Value;

use crate::helper::*;

/// A point of `series` at `1000 + i`.
fn at(series: &str, value: f64, i: u32) -> String {
    point(series, value, 1000.0 + f64::from(i))
}

#[test]
fn median_mad_flags_a_whole_burst_and_a_reload_switches_only_its_series() {
    let daemon = TestDaemon::start(
        "[detector]\nwindow_size = 15\n\
         [[rule]]\nseries = \"robust.*\"\ndetector = \"median_mad\"\n",
    );
    let flags = |series: &str, values: &[f64], first: u32| -> Vec<bool> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let reply = daemon.detect(&at(series, v, first + i as u32)).json();
                reply["anomaly"].as_bool().unwrap()
            })
            .collect()
    };
    let calm: Vec<f64> = (0..15).map(|i| 10.0 + f64::from(i % 3) * 0.5).collect();
    let burst = [40.0; 6];
    for series in ["robust.cpu", "plain.cpu"] {
        assert_eq!(flags(series, &calm, 0), [false; 15]);
    }
    // The moving average's σ grows with the burst and stops seeing it; the
    // median and MAD do not move.
    let robust = flags("robust.cpu", &burst, 15);
    let plain = flags("plain.cpu", &burst, 15);
    assert_eq!(robust, [true; 6]);
    assert!(
        plain[0] && plain.iter().filter(|&&f| f).count() < 6,
        "{plain:?}"
    );
    let detail = daemon.get("/series/robust.cpu").json();
    assert_eq!(detail["settings"]["detector"], "median_mad");

    // plain.* becomes ewma: that series starts over, robust.cpu keeps its
    // window.
    daemon.add_drop_in(
        "50-ewma.toml",
        "[[rule]]\nseries = \"plain.*\"\ndetector = \"ewma\"\n",
    );
    let plain = daemon.get("/series/plain.cpu").json();
    assert_eq!(
        (&plain["settings"]["detector"], &plain["warming_up"]),
        (&Value::from("ewma"), &Value::from(true))
    );
    assert_eq!(daemon.get("/series/robust.cpu").json()["warming_up"], false);
    let mut daemon = daemon;
    daemon.wait_for_stderr("The detector of 1 series changed");
}
