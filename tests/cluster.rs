//! Cluster members sharing the series through a real `nats-server -js`
//! (Debian's package), started on free loopback ports with a temporary
//! store: balance and single ownership, kill -9 under load against a
//! single-instance run of the same stream, SIGTERM hand-over, a NATS
//! restart, and a member whose layout differs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::helper::nats::Nats;
use crate::helper::{TestDaemon, binary, promtool_check, read_lines, request, wait_until};

/// Partitions in these tests: enough to spread, few enough to read.
const PARTITIONS: u32 = 16;

/// A member's configuration: short leases and snapshots, so that the
/// suite stays fast.
pub(crate) fn member_config(nats: &Nats, id: &str, lease_ttl: &str) -> String {
    format!(
        "[state]\nsnapshot_interval = \"1s\"\n\n[cluster]\nnats_url = \"{}\"\npartitions = {PARTITIONS}\n\
         instance_id = \"{id}\"\nlease_renew = \"200ms\"\nlease_ttl = \"{lease_ttl}\"\n",
        nats.url()
    )
}

/// Starts a member and waits until `/ready` says it joined.
fn member(nats: &Nats, id: &str, lease_ttl: &str) -> TestDaemon {
    join(&member_config(nats, id, lease_ttl))
}

/// Starts a member with `config` and waits until `/ready` says it joined.
pub(crate) fn join(config: &str) -> TestDaemon {
    let daemon = TestDaemon::start(config);
    wait_until("the member to join", || {
        (daemon.get("/ready").status == 200).then_some(())
    });
    daemon
}

/// `a` and `b` as (the owner of `series`, the other one), given the
/// partitions each consumes (`sets`, in that order).
fn owner_first(
    a: TestDaemon,
    b: TestDaemon,
    sets: &[BTreeSet<u32>],
    series: &str,
) -> (TestDaemon, TestDaemon) {
    let partition = anomalyd::cluster::partition::partition_of(series, PARTITIONS);
    if sets[0].contains(&partition) {
        (a, b)
    } else {
        (b, a)
    }
}

/// 40 calm points of `series` (seq 1..=40), then a spike (seq 41), as
/// NDJSON.
fn calm_then_spike(series: &str) -> String {
    let mut body = String::new();
    for k in 0..40 {
        body.push_str(&format!(
            "{{\"series\":\"{series}\",\"value\":{},\"timestamp\":{},\"seq\":{}}}\n",
            50.0 + (k % 3) as f64,
            1_700_000_000 + k,
            k + 1
        ));
    }
    body.push_str(&format!(
        "{{\"series\":\"{series}\",\"value\":500.0,\"timestamp\":1700000040,\"seq\":41}}\n"
    ));
    body
}

/// The partitions `daemon` consumes, from its `GET /cluster`.
pub(crate) fn consumed(daemon: &TestDaemon) -> BTreeSet<u32> {
    let reply = daemon.get("/cluster");
    assert_eq!(reply.status, 200, "{}", reply.error());
    reply.json()["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("applied_sequence").is_some())
        .map(|p| p["partition"].as_u64().unwrap() as u32)
        .collect()
}

/// Checks that no partition is consumed by two members; returns the
/// partitions each consumes.
fn assert_single_owners(members: &[&TestDaemon]) -> Vec<BTreeSet<u32>> {
    let sets: Vec<BTreeSet<u32>> = members.iter().map(|m| consumed(m)).collect();
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            assert!(
                a.is_disjoint(b),
                "a partition is consumed by two members: {sets:?}"
            );
        }
    }
    sets
}

/// Waits until `members` consume every partition between them, each within
/// one partition of the others.
fn wait_balanced(members: &[&TestDaemon]) -> Vec<BTreeSet<u32>> {
    wait_until("the partitions to be balanced", || {
        let sets = assert_single_owners(members);
        let all: usize = sets.iter().map(BTreeSet::len).sum();
        let (min, max) = (
            sets.iter().map(BTreeSet::len).min().unwrap(),
            sets.iter().map(BTreeSet::len).max().unwrap(),
        );
        (all == PARTITIONS as usize && max - min <= 1).then_some(sets)
    })
}

/// A value of series `s` at point `k`: a deterministic wobble around 50,
/// with a spike at every 23rd point (offset per series) after warm-up.
fn value(s: usize, k: usize) -> f64 {
    let wobble = ((s * 7919 + k * 104_729) % 1000) as f64 / 500.0 - 1.0;
    if k > 40 && (k + s).is_multiple_of(23) {
        50.0 + 25.0 + wobble
    } else {
        50.0 + wobble
    }
}

/// Points `from..to` of every one of `series` series, as NDJSON with
/// timestamps and `seq`.
fn rounds(series: usize, from: usize, to: usize) -> String {
    let mut body = String::new();
    for k in from..to {
        for s in 0..series {
            body.push_str(&format!(
                "{{\"series\":\"svc-{s}\",\"value\":{},\"timestamp\":{},\"seq\":{}}}\n",
                value(s, k),
                1_700_000_000 + k,
                k + 1
            ));
        }
    }
    body
}

/// The (series, seq) of every anomaly in the logs, and how many lines
/// there were (repeats included).
fn anomalies_in(logs: &[std::path::PathBuf]) -> (BTreeSet<(String, u64)>, usize) {
    let mut set = BTreeSet::new();
    let mut lines = 0;
    for log in logs {
        for line in read_lines(log) {
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            set.insert((
                record["series"].as_str().unwrap().to_owned(),
                record["seq"].as_u64().unwrap(),
            ));
            lines += 1;
        }
    }
    (set, lines)
}

/// The `points` count of series `name`, asked of the first of `members`
/// (which asks the member holding it).
fn points_of(members: &[&TestDaemon], name: &str) -> Option<u64> {
    let reply = members[0].get(&format!("/series/{name}"));
    (reply.status == 200).then(|| reply.json()["points"].as_u64().unwrap())
}

#[test]
fn three_members_share_the_series_each_owned_once() {
    let Some(nats) = Nats::start() else { return };
    let a = member(&nats, "member-a", "2s");
    let b = member(&nats, "member-b", "2s");
    let c = member(&nats, "member-c", "2s");
    let members = [&a, &b, &c];
    let sets = wait_balanced(&members);
    let mut counts: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
    counts.sort_unstable();
    assert_eq!(counts, [5, 5, 6], "16 partitions over 3 members");

    // The real generator posts 100 series through member a.
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "anomaly_detection_url = \"http://{}/detect\"\ndata_frequency = 0.0\nbatch_size = 500\n",
        a.addr
    );
    for s in 0..100 {
        config.push_str(&format!("\n[[series]]\nname = \"gen-{s}\"\n"));
    }
    let config_path = dir.path().join("generator.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut generator = std::process::Command::new(binary("anomaly-generator"))
        .args(["--config", config_path.to_str().unwrap()])
        .args(["--count", "60", "--seed", "7", "--start-time", "1700000000"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While it posts, every poll finds each partition with one consumer.
    let mut polls = 0;
    let status = loop {
        assert_single_owners(&members);
        polls += 1;
        if let Some(status) = generator.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the generator got every point accepted");
    assert!(polls > 1);
    // Every point applied once: 6,000 received over the members, none a
    // duplicate, and each series at 60 points on its owner.
    let received = |m: &TestDaemon| m.metric("anomalyd_points_received_total{format=\"detect\"}");
    wait_until("every point to be consumed", || {
        let total: f64 = members.iter().map(|m| received(m)).sum();
        (total >= 6000.0).then_some(())
    });
    for s in 0..100 {
        assert_eq!(
            points_of(&members, &format!("gen-{s}")),
            Some(60),
            "gen-{s}"
        );
    }
    let total: f64 = members.iter().map(|m| received(m)).sum();
    assert_eq!(total, 6000.0, "no point applied twice");
    for m in members {
        assert_eq!(
            m.metric("anomalyd_points_duplicate_total{format=\"detect\"}"),
            0.0
        );
    }
    // /metrics: the owned partitions add up, and the text is valid.
    let owned: f64 = members
        .iter()
        .map(|m| m.metric("anomalyd_cluster_partitions_owned"))
        .sum();
    assert_eq!(owned, f64::from(PARTITIONS));
    assert!(a.metric("anomalyd_cluster_published_messages_total") > 0.0);
    assert_eq!(a.metric("anomalyd_cluster_joined"), 1.0);
    let consumed: f64 = members
        .iter()
        .map(|m| m.metric("anomalyd_cluster_consumed_messages_total"))
        .sum();
    assert!(consumed >= a.metric("anomalyd_cluster_published_messages_total"));
    let text = a.get("/metrics").body;
    if let Some(output) = promtool_check(&text) {
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool check metrics: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Points went to their partition's owner: a series lives on one member.
    let held: f64 = members
        .iter()
        .map(|m| m.metric("anomalyd_series_active"))
        .sum();
    assert_eq!(held, 100.0);
    // Reads answer for the whole cluster on any member.
    for m in members {
        let list = m.get("/series?limit=1000&sort=name").json();
        assert_eq!(list.as_array().unwrap().len(), 100);
        assert_eq!(list[0]["series"], "gen-0");
        assert_eq!(list[0]["points"], 60);
        let detail = m.get("/series/gen-42");
        assert_eq!(detail.status, 200, "{}", detail.error());
        assert_eq!(detail.json()["points"], 60);
    }
    let missing = c.get("/series/nope");
    assert_eq!(missing.status, 404);
    let (logged, _) = anomalies_in(&[a.log_path(), b.log_path(), c.log_path()]);
    assert!(!logged.is_empty(), "the generator's outliers were found");
    for m in members {
        wait_until("every anomaly to be listed on every member", || {
            let listed = m.get("/anomalies?limit=10000").json();
            let listed: BTreeSet<(String, u64)> = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["series"].as_str().unwrap().to_owned(),
                        r["seq"].as_u64().unwrap(),
                    )
                })
                .collect();
            (listed == logged).then_some(())
        });
        let episodes = m.get("/episodes?limit=10000").json();
        assert_eq!(
            episodes.as_array().unwrap().len(),
            a.get("/episodes?limit=10000")
                .json()
                .as_array()
                .unwrap()
                .len()
        );
    }
}

#[test]
fn kill_9_under_load_loses_no_point_and_moves_without_warm_up() {
    let Some(nats) = Nats::start() else { return };
    const SERIES: usize = 100;
    const POINTS: usize = 150;
    let a = member(&nats, "member-a", "2s");
    let b = member(&nats, "member-b", "2s");
    let c = member(&nats, "member-c", "2s");
    let sets = wait_balanced(&[&a, &b, &c]);
    let moved = sets[2].clone();
    let post = |from: usize, to: usize| {
        let reply = a.detect_ndjson(&rounds(SERIES, from, to));
        assert_eq!(reply.status, 202, "{}", reply.error());
        assert_eq!(reply.json()["received"], (SERIES * (to - from)) as u64);
    };
    for round in 0..7 {
        post(round * 10, round * 10 + 10);
    }
    // c has consumed and snapshotted some of it; then it dies mid-stream.
    wait_until("member-c to store a snapshot", || {
        let reply = c.get("/cluster");
        reply.json()["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["snapshot_sequence"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    });
    // More points, and c dies while they come in: what it applied after
    // its last snapshot is applied again by the next owner.
    post(70, 80);
    post(80, 90);
    let killed_at = Instant::now();
    let c_dir = c.kill9();
    for round in 9..(POINTS / 10) {
        post(round * 10, round * 10 + 10);
    }
    wait_until("the survivors to own every partition", || {
        let sets = assert_single_owners(&[&a, &b]);
        (sets.iter().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize).then_some(())
    });
    let moved_after = killed_at.elapsed();
    eprintln!("c's partitions moved {moved_after:?} after kill -9");
    assert!(
        moved_after < Duration::from_secs(2 + 5),
        "taken over {moved_after:?} after the kill (lease_ttl 2s)"
    );
    // Exactly-once detector state: every series at all its points.
    wait_until("every point to be applied", || {
        (0..SERIES)
            .all(|s| points_of(&[&a, &b], &format!("svc-{s}")) == Some(POINTS as u64))
            .then_some(())
    });
    eprintln!("all points applied {:?} after kill -9", killed_at.elapsed());
    // The moved partitions came from c's snapshots, not from a warm-up.
    let mut a = a;
    let mut b = b;
    let restored: usize = [&mut a, &mut b]
        .into_iter()
        .flat_map(|m| m.stderr().to_vec())
        .filter(|line| line.contains("Took over partition"))
        .filter_map(|line| {
            let partition: u32 = line
                .split("partition=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            let series: usize = line
                .split("restored_series=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            moved.contains(&partition).then_some(series)
        })
        .sum();
    assert!(
        restored > 0,
        "the survivors restored c's series from its snapshots"
    );

    // The same stream into a single daemon.
    let single = TestDaemon::start("");
    for round in 0..(POINTS / 10) {
        let reply = single.detect_ndjson(&rounds(SERIES, round * 10, round * 10 + 10));
        assert_eq!(reply.status, 200);
    }
    let (expected, _) = anomalies_in(&[single.log_path()]);
    assert!(expected.len() > 300, "{} anomalies", expected.len());
    let logs = [
        a.log_path(),
        b.log_path(),
        c_dir.path().join("anomalies.log"),
    ];
    // Acknowledged anomalies are in the logs once consumed; repeats (after
    // c's last snapshot) have the same ids.
    let (found, lines) = wait_until("the cluster's anomalies to match", || {
        let (found, lines) = anomalies_in(&logs);
        (found == expected).then_some((found, lines))
    });
    assert!(lines >= found.len());
    eprintln!(
        "anomalies: {} distinct, {} lines ({} repeated after the kill)",
        found.len(),
        lines,
        lines - found.len()
    );
}

#[test]
fn sigterm_hands_the_partitions_over_at_once() {
    let Some(nats) = Nats::start() else { return };
    // Leases that would take 30 s to expire: a move within a few seconds
    // is a release, not an expiry.
    let a = member(&nats, "member-a", "30s");
    let mut b = member(&nats, "member-b", "30s");
    let c = member(&nats, "member-c", "30s");
    wait_balanced(&[&a, &b, &c]);
    let reply = a.detect_ndjson(&rounds(50, 0, 60));
    assert_eq!(reply.status, 202);
    wait_until("the points to be applied", || {
        (0..50)
            .all(|s| points_of(&[&a, &b, &c], &format!("svc-{s}")) == Some(60))
            .then_some(())
    });
    let stopped_at = Instant::now();
    b.signal(libc::SIGTERM);
    let status = b.wait_exit();
    assert!(status.success(), "{status}");
    let exited_after = stopped_at.elapsed();
    assert!(
        exited_after < Duration::from_secs(10),
        "exited after {exited_after:?}"
    );
    let sets = wait_balanced(&[&a, &c]);
    assert_eq!(sets.iter().map(BTreeSet::len).sum::<usize>(), 16);
    let moved_after = stopped_at.elapsed();
    assert!(
        moved_after < Duration::from_secs(10),
        "moved after {moved_after:?}, lease_ttl 30s"
    );
    // Nothing to replay and nothing to warm: the moved series go on.
    for s in 0..50 {
        assert_eq!(
            points_of(&[&a, &c], &format!("svc-{s}")),
            Some(60),
            "svc-{s}"
        );
    }
}

#[test]
fn a_nats_restart_gets_503s_then_the_members_resume() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = member(&nats, "member-a", "10s");
    let b = member(&nats, "member-b", "10s");
    wait_balanced(&[&a, &b]);
    let reply = a.detect_ndjson(&rounds(20, 0, 50));
    assert_eq!(reply.status, 202, "{}", reply.error());
    nats.kill();
    let refused = wait_until("a post to be refused", || {
        let reply = a.detect_ndjson(&rounds(20, 50, 51));
        (reply.status != 202).then_some(reply)
    });
    assert_eq!(refused.status, 503);
    assert!(refused.error().contains("NATS"), "{}", refused.error());
    wait_until("/ready to say why", || {
        let reply = b.get("/ready");
        (reply.status == 503 && String::from_utf8_lossy(&reply.body).contains("NATS")).then_some(())
    });
    nats.resume();
    wait_until("posts to be accepted again", || {
        (a.detect_ndjson(&rounds(20, 50, 60)).status == 202).then_some(())
    });
    // A spike after the restart is found: consumption resumed.
    let spike = "{\"series\":\"svc-3\",\"value\":500.0,\"timestamp\":1700000100,\"seq\":1000}\n";
    assert_eq!(b.detect_ndjson(spike).status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut a, mut b) = (a, b);
    loop {
        let (found, _) = anomalies_in(&[a.log_path(), b.log_path()]);
        if found.contains(&("svc-3".to_owned(), 1000)) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "A:\n{}\nB:\n{}",
                a.stderr().join("\n"),
                b.stderr().join("\n")
            );
            eprintln!("{}", String::from_utf8_lossy(&a.get("/cluster").body));
            eprintln!("{}", String::from_utf8_lossy(&b.get("/series/svc-3").body));
            eprintln!("{}", String::from_utf8_lossy(&a.get("/series/svc-3").body));
            panic!("spike not found");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // No acknowledged point was lost through the restart: each series
    // has its 60 seqs once (posts retried after a 503 are duplicates),
    // svc-3 also the spike.
    wait_until("every accepted point to be applied once", || {
        (0..20)
            .all(|s| {
                let expected = if s == 3 { 61 } else { 60 };
                points_of(&[&a], &format!("svc-{s}")) == Some(expected)
            })
            .then_some(())
    });
    for m in [&a, &b] {
        wait_until("/ready", || (m.get("/ready").status == 200).then_some(()));
    }
}

#[test]
fn a_member_with_another_layout_exits_78_and_one_without_nats_is_not_ready() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let a = member(&nats, "member-a", "2s");
    let other = member_config(&nats, "member-x", "2s")
        .replace(&format!("partitions = {PARTITIONS}"), "partitions = 8");
    let mut x = TestDaemon::start(&other);
    let status = x.wait_exit();
    assert_eq!(status.code(), Some(78));
    let line = x.wait_for_stderr("layout");
    assert!(
        line.contains("partitions = 16") && line.contains("partitions = 8"),
        "{line}"
    );
    drop(a);
    // With NATS down, a new member serves but is not ready, then joins.
    nats.kill();
    let late = TestDaemon::start(&member_config(&nats, "member-late", "2s"));
    let reply = late.get("/ready");
    assert_eq!(reply.status, 503);
    assert!(String::from_utf8_lossy(&reply.body).contains("cluster"));
    // Once the first try failed, /ready says how.
    wait_until("/ready to name the connection error", || {
        let reply = late.get("/ready");
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        (reply.status == 503 && body.contains("cannot connect to NATS at")).then_some(())
    });
    let refused = late.detect("{\"series\":\"x\",\"value\":1.0}");
    assert_eq!(refused.status, 503, "{}", refused.error());
    nats.resume();
    wait_until("the late member to join", || {
        (late.get("/ready").status == 200).then_some(())
    });
    let accepted = late.detect("{\"series\":\"x\",\"value\":1.0}");
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.json()["status"], "Data accepted");
    // It holds every partition now that it is alone (a's leases expired).
    wait_until("the late member to own every partition", || {
        (consumed(&late).len() == PARTITIONS as usize).then_some(())
    });
    let status = request(late.addr, "GET", "/cluster", &[], b"").json();
    let owners: BTreeMap<String, usize> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["partitions"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(owners.get("member-late"), Some(&16), "{owners:?}");
}

#[test]
fn the_generator_publishes_straight_to_nats() {
    let Some(nats) = Nats::start() else { return };
    let a = member(&nats, "member-a", "2s");
    let b = member(&nats, "member-b", "2s");
    wait_balanced(&[&a, &b]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "anomaly_detection_url = \"nats://{}\"\ndata_frequency = 0.0\nbatch_size = 100\n",
        nats.addr
    );
    for s in 0..20 {
        config.push_str(&format!("\n[[series]]\nname = \"direct-{s}\"\n"));
    }
    let config_path = dir.path().join("generator.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = std::process::Command::new(binary("anomaly-generator"))
        .args(["--config", config_path.to_str().unwrap()])
        .args(["--count", "50", "--seed", "3", "--start-time", "1700000000"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Nothing went through the members' HTTP side, yet every point landed.
    assert_eq!(a.metric("anomalyd_cluster_published_messages_total"), 0.0);
    wait_until("every published point to be applied", || {
        (0..20)
            .all(|s| points_of(&[&a, &b], &format!("direct-{s}")) == Some(50))
            .then_some(())
    });
}

#[test]
fn the_owner_alerts_and_an_open_episode_closes_at_the_next_owner() {
    let Some(nats) = Nats::start() else { return };
    let receiver = crate::helper::receiver::Receiver::start(0);
    let hook = format!(
        "\n[[alert.webhook]]\nurl = \"http://{}/hook\"\n",
        receiver.addr
    );
    let a = join(&(member_config(&nats, "member-a", "30s") + &hook));
    let b = join(&(member_config(&nats, "member-b", "30s") + &hook));
    let sets = wait_balanced(&[&a, &b]);
    let (owner, other) = owner_first(a, b, &sets, "db");
    // 40 calm points, then a spike: an episode opens at the owner.
    // Posted to the member that does not own it: it only publishes.
    assert_eq!(other.detect_ndjson(&calm_then_spike("db")).status, 202);
    let opened = wait_until("the opening to be sent", || {
        receiver
            .accepted()
            .into_iter()
            .find(|d| d["event"] == "opened")
    });
    assert_eq!(opened["episode"], 41);
    // The owner leaves; the episode is handed over open, with the series.
    let mut owner = owner;
    owner.signal(libc::SIGTERM);
    assert!(owner.wait_exit().success());
    wait_until("the survivor to own every partition", || {
        (consumed(&other).len() == PARTITIONS as usize).then_some(())
    });
    let open = other.get("/episodes?open=true").json();
    assert_eq!(open[0]["episode"], 41, "{open}");
    let calm = "{\"series\":\"db\",\"value\":51.0,\"timestamp\":1700000041,\"seq\":42}\n";
    assert_eq!(other.detect_ndjson(calm).status, 202);
    let closed = wait_until("the closing to be sent", || {
        receiver
            .accepted()
            .into_iter()
            .find(|d| d["event"] == "closed")
    });
    assert_eq!(
        closed["episode"], 41,
        "the same episode, closed by the next owner"
    );
    assert_eq!(closed["end"], 1_700_000_041.0);
    // One opening and one closing: no member alerted for a series it does
    // not own.
    let docs = receiver.accepted();
    assert_eq!(docs.len(), 2, "{docs:#?}");
}

#[test]
fn anomalies_repeated_after_kill_9_keep_their_ids_and_are_listed_once() {
    let Some(nats) = Nats::start() else { return };
    let receiver = crate::helper::receiver::Receiver::start(0);
    // No periodic snapshot during the test: whatever the owner did after
    // its partition was claimed is done again by the next owner.
    let config = member_config(&nats, "{id}", "2s")
        .replace("snapshot_interval = \"1s\"", "snapshot_interval = \"1h\"")
        + &format!(
            "\n[[alert.webhook]]\nurl = \"http://{}/hook\"\n",
            receiver.addr
        );
    let a = join(&config.replace("{id}", "member-a"));
    let b = join(&config.replace("{id}", "member-b"));
    let sets = wait_balanced(&[&a, &b]);
    let (owner, other) = owner_first(a, b, &sets, "db");
    assert_eq!(other.detect_ndjson(&calm_then_spike("db")).status, 202);
    let owner_log = owner.log_path();
    wait_until("the owner to log the spike", || {
        let (found, _) = anomalies_in(std::slice::from_ref(&owner_log));
        found.contains(&("db".to_owned(), 41)).then_some(())
    });
    let owner_dir = owner.kill9();
    wait_until("the survivor to own every partition", || {
        (consumed(&other).len() == PARTITIONS as usize).then_some(())
    });
    // The survivor replays the partition and finds the spike again.
    wait_until("the survivor to log the spike again", || {
        let (found, _) = anomalies_in(&[other.log_path()]);
        found.contains(&("db".to_owned(), 41)).then_some(())
    });
    let (found, lines) = anomalies_in(&[owner_dir.path().join("anomalies.log"), other.log_path()]);
    assert_eq!(found.len(), 1);
    assert_eq!(lines, 2, "produced twice: at-least-once");
    assert_eq!(
        points_of(&[&other], "db"),
        Some(41),
        "the state, exactly once"
    );
    // Listed once, and both openings carry the same id.
    let listed = other.get("/anomalies?series=db").json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let openings = wait_until("both openings", || {
        let docs: Vec<_> = receiver
            .accepted()
            .into_iter()
            .filter(|d| d["event"] == "opened")
            .collect();
        (docs.len() == 2).then_some(docs)
    });
    assert_eq!(openings[0]["episode"], openings[1]["episode"]);
    assert_eq!(openings[0]["series"], openings[1]["series"]);
}

#[test]
fn members_reach_nats_over_tls_and_a_missing_creds_file_exits_78() {
    if !crate::tls::tools_present() {
        return;
    }
    let pki = crate::tls::Pki::new();
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let Some(nats) = Nats::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]) else {
        return;
    };
    let tls_url = format!("tls://{}", nats.addr);
    let config = member_config(&nats, "member-tls", "2s").replace(&nats.url(), &tls_url)
        + &format!("nats_ca_file = \"{}\"\n", pki.path("ca.pem").display());
    let member = TestDaemon::start(&config);
    wait_until("the member to join over TLS", || {
        (member.get("/ready").status == 200).then_some(())
    });
    let reply = member.detect("{\"series\":\"tls\",\"value\":1.0,\"seq\":1}");
    assert_eq!(reply.status, 202, "{}", reply.error());
    wait_until("the point to be applied", || {
        (points_of(&[&member], "tls") == Some(1)).then_some(())
    });

    let missing = member_config(&nats, "member-creds", "2s")
        + "nats_creds_file = \"/nonexistent/anomalyd.creds\"\n";
    let mut refused = TestDaemon::start(&missing);
    assert_eq!(refused.wait_exit().code(), Some(78));
    refused.wait_for_stderr("/nonexistent/anomalyd.creds");
}

/// `series`' points `seq` 42 onwards at the given values, one second
/// apart after the spike of [`calm_then_spike`], as NDJSON.
fn after_the_spike(series: &str, values: &[f64]) -> String {
    values
        .iter()
        .zip(42u64..)
        .map(|(value, seq)| {
            format!(
                "{{\"series\":\"{series}\",\"value\":{value:.1},\"timestamp\":{},\"seq\":{seq}}}\n",
                1_699_999_999 + seq
            )
        })
        .collect()
}

#[test]
fn every_member_lists_the_clusters_episodes_even_after_their_owner_died() {
    let Some(nats) = Nats::start() else { return };
    let a = member(&nats, "member-a", "2s");
    let b = member(&nats, "member-b", "2s");
    let sets = wait_balanced(&[&a, &b]);
    let (owner, other) = owner_first(a, b, &sets, "db");
    // "db": three anomalous points (41..=43), then a calm one that closes
    // the episode; "web": two anomalous points, its episode stays open.
    let db = calm_then_spike("db") + &after_the_spike("db", &[600.0, 800.0, 51.0]);
    let web = calm_then_spike("web") + &after_the_spike("web", &[600.0]);
    assert_eq!(other.detect_ndjson(&db).status, 202);
    assert_eq!(other.detect_ndjson(&web).status, 202);

    let expected_db = |m: &TestDaemon| {
        // The peak is the anomaly with the highest score.
        let anomalies = m.get("/anomalies?series=db").json();
        let peak = anomalies
            .as_array()
            .unwrap()
            .iter()
            .max_by(|x, y| {
                x["score"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&y["score"].as_f64().unwrap())
            })
            .cloned()
            .unwrap();
        serde_json::json!({
            "series": "db", "episode": 41, "start": 1_700_000_040.0, "end": 1_700_000_043.0,
            "points": 3, "peak_score": peak["score"], "peak_value": peak["value"], "direction": "upper",
        })
    };
    let listed = |m: &TestDaemon| -> Vec<serde_json::Value> {
        let reply = m.get("/episodes");
        assert_eq!(reply.status, 200, "{}", reply.error());
        reply.json().as_array().unwrap().clone()
    };
    for m in [&owner, &other] {
        let episodes = wait_until("both episodes to be listed", || {
            let episodes = listed(m);
            (episodes.len() == 2 && episodes.iter().any(|e| e["end"].is_number()))
                .then_some(episodes)
        });
        // Both started at the same time, with the same id: by name.
        let (db_listed, web_listed) = (&episodes[0], &episodes[1]);
        assert_eq!(db_listed, &expected_db(m), "{episodes:#?}");
        assert_eq!(web_listed["series"], "web", "{episodes:#?}");
        assert_eq!(web_listed["episode"], 41);
        assert_eq!(web_listed["end"], serde_json::Value::Null);
        assert_eq!(web_listed["points"], 2);
        let open = m.get("/episodes?open=true").json();
        assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
        assert_eq!(open[0]["series"], "web");
    }

    // The owner of "db" dies: the survivor, which never owned it, still
    // lists its closed episode at once, and after taking over every
    // partition (replaying from the last snapshot) each episode once.
    let expected = expected_db(&other);
    let _dir = owner.kill9();
    let db_listed = other.get("/episodes?series=db").json();
    assert_eq!(db_listed, serde_json::json!([expected]));
    wait_until("the survivor to own every partition", || {
        (consumed(&other).len() == PARTITIONS as usize).then_some(())
    });
    let episodes = listed(&other);
    assert_eq!(episodes.len(), 2, "{episodes:#?}");
    assert_eq!(episodes[0], expected);
    assert_eq!(episodes[1]["points"], 2, "web, not counted twice");
}

#[test]
fn members_authenticate_with_a_creds_file() {
    let auth_dir = tempfile::tempdir().unwrap();
    let auth = crate::helper::nats_auth::OperatorMode::new(auth_dir.path());
    let Some(nats) = Nats::start_with(&["-c", auth.server_config.to_str().unwrap()]) else {
        return;
    };
    let creds = |path: &std::path::Path| format!("nats_creds_file = \"{}\"\n", path.display());
    let config = member_config(&nats, "member-creds", "2s") + &creds(&auth.creds);
    let member = TestDaemon::start(&config);
    wait_until("the member to join with its credentials", || {
        (member.get("/ready").status == 200).then_some(())
    });
    let reply = member.detect("{\"series\":\"creds\",\"value\":1.0,\"seq\":1}");
    assert_eq!(reply.status, 202, "{}", reply.error());
    wait_until("the point to be applied", || {
        (points_of(&[&member], "creds") == Some(1)).then_some(())
    });

    // Without credentials, or with a user of an account the server does
    // not trust, the server refuses the member: it exits 78 (a
    // configuration error systemd does not restart) and says what to fix.
    for (id, extra, advice) in [
        (
            "member-anonymous",
            String::new(),
            "set [cluster] nats_creds_file".to_owned(),
        ),
        (
            "member-stranger",
            creds(&auth.stranger_creds),
            format!("nats_creds_file ({})", auth.stranger_creds.display()),
        ),
    ] {
        let mut refused = TestDaemon::start(&(member_config(&nats, id, "2s") + &extra));
        assert_eq!(refused.wait_exit().code(), Some(78), "{id}");
        let line = refused.wait_for_stderr("refused this member");
        assert!(line.contains("authorization violation"), "{line}");
        assert!(line.contains(&advice), "{line}");
    }
}

#[test]
fn streams_an_older_member_made_are_brought_up_to_date() {
    let Some(nats) = Nats::start() else { return };
    // As a build before episodes had their subject made them, with a
    // retention shorter than this member's snapshots need.
    for (name, subject) in [
        ("anomalyd_points", "anomalyd.points.*"),
        ("anomalyd_anomalies", "anomalyd.anomalies.*"),
    ] {
        nats.create_stream(&serde_json::json!({
            "name": name, "subjects": [subject], "retention": "limits",
            "storage": "file", "max_age": 60_000_000_000u64,
        }));
    }
    let _member = member(&nats, "member-a", "2s");
    let configs = nats.stream_configs();
    let config = |name: &str| {
        configs
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no stream {name}: {configs:#?}"))
    };
    let fifteen_minutes = 15 * 60 * 1_000_000_000u64;
    let points = config("anomalyd_points");
    assert_eq!(points["max_age"], fifteen_minutes, "{points}");
    assert_eq!(points["subjects"], serde_json::json!(["anomalyd.points.*"]));
    let anomalies = config("anomalyd_anomalies");
    assert_eq!(anomalies["max_age"], fifteen_minutes, "{anomalies}");
    assert_eq!(
        anomalies["subjects"],
        serde_json::json!(["anomalyd.anomalies.*", "anomalyd.episodes.*"])
    );
}

#[test]
fn the_generator_publishes_with_credentials_over_tls() {
    if !crate::tls::tools_present() {
        return;
    }
    let pki = crate::tls::Pki::new();
    let auth_dir = tempfile::tempdir().unwrap();
    let auth = crate::helper::nats_auth::OperatorMode::new(auth_dir.path());
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let Some(nats) = Nats::start_with(&[
        "-c",
        auth.server_config.to_str().unwrap(),
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]) else {
        return;
    };
    let ca = pki.path("ca.pem");
    let secured = format!(
        "nats_creds_file = \"{}\"\nnats_ca_file = \"{}\"\n",
        auth.creds.display(),
        ca.display()
    );
    let member_config = member_config(&nats, "member-secured", "2s")
        .replace(&nats.url(), &format!("tls://{}", nats.addr))
        + &secured;
    let member = join(&member_config);

    let dir = tempfile::tempdir().unwrap();
    let generator = |access: &str| {
        let mut config = format!(
            "anomaly_detection_url = \"nats://{}\"\ndata_frequency = 0.0\nbatch_size = 10\n{access}",
            nats.addr
        );
        for s in 0..5 {
            config.push_str(&format!("\n[[series]]\nname = \"secured-{s}\"\n"));
        }
        let path = dir.path().join("generator.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = std::process::Command::new(binary("anomaly-generator"));
        command
            .args(["--config", path.to_str().unwrap()])
            .args(["--count", "30", "--seed", "5", "--start-time", "1700000000"])
            .env("RUST_LOG", "warn");
        command
    };
    // With the user's credentials and the CA, every point lands.
    let output = generator(&secured).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_until("every published point to be applied", || {
        (0..5)
            .all(|s| points_of(&[&member], &format!("secured-{s}")) == Some(30))
            .then_some(())
    });

    // A creds file that is not one is a configuration error (exit 78).
    let bogus = dir.path().join("bogus.creds");
    std::fs::write(&bogus, "not credentials\n").unwrap();
    let output = generator(&format!(
        "nats_creds_file = \"{}\"\nnats_ca_file = \"{}\"\n",
        bogus.display(),
        ca.display()
    ))
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nats_creds_file") && stderr.contains("not a NATS .creds file"),
        "{stderr}"
    );

    // Without credentials the server refuses the generator: it keeps
    // retrying (the points wait in its queue) and says what to set.
    let mut anonymous = generator(&format!("nats_ca_file = \"{}\"\n", ca.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::mpsc::channel();
    let stderr = anonymous.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.0.send(line).is_err() {
                break;
            }
        }
    });
    let advice = wait_until("the generator to say what to set", || {
        lines
            .1
            .try_iter()
            .find(|l| l.contains("set nats_creds_file"))
    });
    assert!(advice.contains("authorization violation"), "{advice}");
    assert_eq!(anonymous.try_wait().unwrap(), None, "it keeps retrying");
    anonymous.kill().unwrap();
    anonymous.wait().unwrap();
}

#[test]
fn a_member_whose_user_is_revoked_says_why_and_resumes_with_rotated_credentials() {
    let auth_dir = tempfile::tempdir().unwrap();
    let auth = crate::helper::nats_auth::OperatorMode::new(auth_dir.path());
    let Some(mut nats) = Nats::start_with(&["-c", auth.server_config.to_str().unwrap()]) else {
        return;
    };
    let config = member_config(&nats, "member-rotating", "2s")
        + &format!("nats_creds_file = \"{}\"\n", auth.creds.display());
    let mut member = join(&config);
    let post = |member: &TestDaemon, seq: u64| {
        member.detect(&format!(
            "{{\"series\":\"rotating\",\"value\":1.0,\"seq\":{seq}}}"
        ))
    };
    assert_eq!(post(&member, 1).status, 202);
    wait_until("the first point to be applied", || {
        (points_of(&[&member], "rotating") == Some(1)).then_some(())
    });

    // The server comes back with the member's user revoked: the member
    // stays up, retries, and says in /ready and its log why NATS refuses
    // it and what to check.
    nats.kill();
    auth.write_server_config(&[&auth.user]);
    nats.resume();
    let reasons = wait_until("/ready to name the refusal", || {
        let ready = member.get("/ready");
        let body = String::from_utf8_lossy(&ready.body).into_owned();
        (ready.status == 503 && body.contains("authorization violation")).then_some(body)
    });
    assert!(
        reasons.contains("revoked") && reasons.contains(&auth.creds.display().to_string()),
        "{reasons}"
    );
    member.wait_for_stderr("NATS refuses this member on reconnecting");
    assert_eq!(post(&member, 2).status, 503);

    // A new user's credentials written over the file are read at the next
    // attempt: the member resumes without a restart.
    let (rotated, _) = auth.new_user("member-rotated");
    std::fs::write(&auth.creds, rotated).unwrap();
    wait_until(
        "the member to reconnect with the rotated credentials",
        || (member.get("/ready").status == 200).then_some(()),
    );
    assert_eq!(post(&member, 2).status, 202);
    wait_until("the point posted after the rotation to be applied", || {
        (points_of(&[&member], "rotating") == Some(2)).then_some(())
    });
    assert_eq!(
        member.child.try_wait().unwrap(),
        None,
        "the member never exited"
    );
}
