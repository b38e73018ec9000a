//! Episodes ([8/11] §1): a burst is one episode in every place that
//! reports it, and a reload changes the episode keys live while each
//! series keeps its state.

use serde_json::Value;

use crate::helper::*;

/// Ten calm points of `series` (10, 11, ...) with `seq` 1..=10 at
/// timestamps 1000.0.., as JSON objects.
fn calm(series: &str) -> Vec<String> {
    (1..=10u32)
        .map(|i| seq_point(series, f64::from(10 + i % 2), i))
        .collect()
}

/// A point with a `seq`, its timestamp `1000 + seq`.
fn seq_point(series: &str, value: f64, seq: u32) -> String {
    format!(
        r#"{{"series":"{series}","value":{value},"timestamp":{},"seq":{seq}}}"#,
        1000 + seq
    )
}

const CONFIG: &str = "[detector]\nwindow_size = 10\nexclude_anomalies = true\n\
                      min_consecutive = 2\nresolve_after = 2\n";

/// One burst, seen the same way by the `/detect` replies, the anomaly log,
/// `/anomalies`, `/episodes`, `/metrics` and `anomalyd replay`.
#[test]
fn a_burst_is_one_episode_everywhere() {
    let daemon = TestDaemon::start(CONFIG);
    let mut points = calm("cpu");
    // 50 is anomalous but alone: outside any episode. 60 completes two in
    // a row and opens episode 12 (its seq); 55 belongs to it; two calm
    // points close it.
    for (value, seq) in [(50.0, 11), (60.0, 12), (55.0, 13), (10.0, 14), (11.0, 15)] {
        points.push(seq_point("cpu", value, seq));
    }
    let replies: Vec<Value> = points
        .iter()
        .map(|p| {
            let reply = daemon.detect(p);
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            reply.json()
        })
        .collect();
    let seen: Vec<(bool, Value, Value)> = replies[10..]
        .iter()
        .map(|r| {
            (
                r["anomaly"].as_bool().unwrap(),
                r["episode"].clone(),
                r["episode_event"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        seen,
        [
            (true, Value::Null, Value::Null),
            (true, json!(12), json!("opened")),
            (true, json!(12), Value::Null),
            (false, json!(12), Value::Null),
            (false, json!(12), json!("closed")),
        ]
    );
    assert!(replies[..10].iter().all(|r| r["episode"].is_null()));

    // The log: every anomalous point, with its episode and score.
    let log: Vec<Value> = read_lines(&daemon.log_path())
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logged: Vec<(f64, Value)> = log
        .iter()
        .map(|r| (r["value"].as_f64().unwrap(), r["episode"].clone()))
        .collect();
    assert_eq!(
        logged,
        [(50.0, Value::Null), (60.0, json!(12)), (55.0, json!(12))]
    );
    assert!(log.iter().all(|r| r["score"].as_f64().unwrap() > 3.0));

    let of_episode = daemon.get("/anomalies?series=cpu&episode=12").json();
    assert_eq!(of_episode.as_array().unwrap().len(), 2, "{of_episode}");
    assert_eq!(of_episode.as_array().unwrap()[..], log[1..]);

    let episodes = daemon.get("/episodes?series=cpu").json();
    let peak = log[1..]
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(
        episodes,
        json!([{
            "series": "cpu", "episode": 12, "start": 1012.0, "end": 1015.0, "points": 2,
            "peak_score": peak["score"], "peak_value": peak["value"], "direction": "upper",
        }])
    );
    assert_eq!(daemon.get("/episodes?open=true").json(), json!([]));

    assert_eq!(daemon.metric("anomalyd_episodes_opened_total"), 1.0);
    assert_eq!(daemon.metric("anomalyd_episodes_closed_total"), 1.0);
    assert_eq!(daemon.metric("anomalyd_episodes_open"), 0.0);

    // A batch: the reply lists what it opened and closed.
    let mut batch = calm("mem");
    for (value, seq) in [
        (70.0, 11),
        (80.0, 12),
        (10.0, 13),
        (11.0, 14),
        (90.0, 15),
        (95.0, 16),
    ] {
        batch.push(seq_point("mem", value, seq));
    }
    let reply = daemon.detect_ndjson(&(batch.join("\n") + "\n")).json();
    let ids = |key: &str| -> Vec<Value> {
        reply[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["episode"], e["end"], e["points"]]))
            .collect()
    };
    assert_eq!(
        ids("episodes_opened"),
        [json!([12, null, 1]), json!([16, null, 1])]
    );
    assert_eq!(ids("episodes_closed"), [json!([12, 1014.0, 1])]);
    assert_eq!(daemon.metric("anomalyd_episodes_open"), 1.0);
    let open = daemon.get("/episodes?open=true").json();
    assert_eq!(open[0]["series"], "mem");
    assert_eq!(open[0]["episode"], 16);

    // replay: one line per episode, the record of the opening point;
    // --all-points: every anomalous point, as the log has them.
    let input = daemon.dir.path().join("cpu.ndjson");
    std::fs::write(&input, points.join("\n") + "\n").unwrap();
    let config = daemon.dir.path().join("anomalyd.toml");
    let replay = |extra: &[&str]| -> Vec<Value> {
        let mut args: Vec<&std::ffi::OsStr> = vec!["replay".as_ref()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        args.extend(["--config".as_ref(), config.as_os_str(), input.as_os_str()]);
        let out = run_anomalyd(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = String::from_utf8_lossy(&out.stderr);
        let row: Vec<&str> = summary
            .lines()
            .find(|l| l.starts_with("cpu "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            row[1..4],
            ["15", "3", "1"],
            "points, anomalies, episodes: {summary}"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(replay(&[]), log[1..2]);
    assert_eq!(replay(&["--all-points"]), log);
}

/// The episode keys apply on reload, and a series keeps its open episode
/// (and its window) through it.
#[test]
fn a_reload_changes_the_episode_keys_live() {
    let daemon = TestDaemon::start("[detector]\nwindow_size = 10\nexclude_anomalies = true\n");
    let event = |value: f64, seq: u32| -> (Value, Value) {
        let reply = daemon.detect(&seq_point("cpu", value, seq)).json();
        (reply["episode"].clone(), reply["episode_event"].clone())
    };
    for p in calm("cpu") {
        assert_eq!(daemon.detect(&p).status, 200);
    }
    use serde_json::json;
    // Defaults: every anomaly opens an episode, one calm point closes it.
    assert_eq!(event(50.0, 11), (json!(11), json!("opened")));
    assert_eq!(event(10.0, 12), (json!(11), json!("closed")));
    assert_eq!(event(60.0, 13), (json!(13), json!("opened")));

    // Now three in a row open one, three calm points close it.
    daemon.add_drop_in(
        "50-episodes.toml",
        "[detector]\nmin_consecutive = 3\nresolve_after = 3\n",
    );
    let settings = daemon.get("/series/cpu").json()["settings"].clone();
    assert_eq!(
        (&settings["min_consecutive"], &settings["resolve_after"]),
        (&json!(3), &json!(3))
    );
    // Episode 13, opened before the reload, stays open until three calm
    // points in a row.
    assert_eq!(event(11.0, 14), (json!(13), Value::Null));
    assert_eq!(event(10.0, 15), (json!(13), Value::Null));
    assert_eq!(event(11.0, 16), (json!(13), json!("closed")));
    // Two anomalies are outside any episode; the third opens one.
    assert_eq!(event(70.0, 17), (Value::Null, Value::Null));
    assert_eq!(event(80.0, 18), (Value::Null, Value::Null));
    assert_eq!(event(90.0, 19), (json!(19), json!("opened")));
    assert_eq!(daemon.metric("anomalyd_episodes_opened_total"), 3.0);
    assert_eq!(daemon.metric("anomalyd_episodes_open"), 1.0);
}
