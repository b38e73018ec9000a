//! Metrics of a cluster member ([`crate::cluster`]): whether it has
//! joined and reaches NATS, the partitions it owns with their consumer
//! lag, its lease renewals and losses, its published and consumed
//! messages, and the age of its partition snapshots. Shown only on a
//! member.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{counter, gauge, header};
use crate::cluster::Member;

/// Writes the `anomalyd_cluster_*` families of `member` at `now` (unix
/// seconds).
pub fn render(out: &mut String, member: &Member, now: f64) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let stats = &member.stats;
    let owned = member.owned();
    gauge(
        out,
        "anomalyd_cluster_joined",
        "1 once this member has joined its cluster (layout checked, presence written).",
        f64::from(u8::from(member.joined())),
    );
    gauge(
        out,
        "anomalyd_cluster_nats_connected",
        "1 while the connection to NATS is up; posts get 503 otherwise.",
        f64::from(u8::from(member.connected())),
    );
    gauge(
        out,
        "anomalyd_cluster_partitions_owned",
        "Partitions whose lease this member holds and which it consumes.",
        owned.len() as f64,
    );
    header(
        out,
        "anomalyd_cluster_consumer_lag_messages",
        "gauge",
        "Messages of an owned partition not yet delivered to this member, as of its last fetch.",
    );
    for (partition, status) in &owned {
        let _ = writeln!(
            out,
            "anomalyd_cluster_consumer_lag_messages{{partition=\"{partition}\"}} {}",
            status.lag
        );
    }
    let oldest = owned
        .values()
        .map(|status| status.snapshot_time.map_or(f64::INFINITY, |t| now - t))
        .fold(0.0, f64::max);
    header(
        out,
        "anomalyd_cluster_snapshot_age_seconds",
        "gauge",
        "Seconds since the oldest of the owned partitions' snapshots was last stored or found current (+Inf while one has none yet); a new owner replays the stream after it.",
    );
    if oldest.is_finite() {
        let _ = writeln!(out, "anomalyd_cluster_snapshot_age_seconds {oldest}");
    } else {
        out.push_str("anomalyd_cluster_snapshot_age_seconds +Inf\n");
    }
    counter(
        out,
        "anomalyd_cluster_lease_renewals_total",
        "Partition leases renewed.",
        load(&stats.lease_renewals),
    );
    counter(
        out,
        "anomalyd_cluster_lease_losses_total",
        "Partition leases lost: taken by another member, or not renewed within lease_ttl.",
        load(&stats.lease_losses),
    );
    counter(
        out,
        "anomalyd_cluster_partitions_claimed_total",
        "Partitions this member took over.",
        load(&stats.claims),
    );
    counter(
        out,
        "anomalyd_cluster_partitions_released_total",
        "Partitions this member handed over (balance, shutdown).",
        load(&stats.releases),
    );
    counter(
        out,
        "anomalyd_cluster_published_messages_total",
        "Messages of posted points published to the points stream and acknowledged by JetStream.",
        load(&stats.published_messages),
    );
    counter(
        out,
        "anomalyd_cluster_publish_failures_total",
        "Posts answered 503 because NATS was unreachable or did not acknowledge.",
        load(&stats.publish_failures),
    );
    counter(
        out,
        "anomalyd_cluster_consumed_messages_total",
        "Messages consumed from the owned partitions.",
        load(&stats.consumed_messages),
    );
    counter(
        out,
        "anomalyd_cluster_bad_messages_total",
        "Consumed messages skipped because they are not NDJSON points.",
        load(&stats.bad_messages),
    );
    counter(
        out,
        "anomalyd_cluster_dropped_points_total",
        "Consumed points dropped because [server] max_series was reached.",
        load(&stats.dropped_points),
    );
    header(
        out,
        "anomalyd_cluster_snapshots_total",
        "counter",
        "Partition snapshots stored to the object store, by result.",
    );
    let _ = writeln!(
        out,
        "anomalyd_cluster_snapshots_total{{result=\"success\"}} {}\nanomalyd_cluster_snapshots_total{{result=\"failure\"}} {}",
        load(&stats.snapshots_stored),
        load(&stats.snapshot_failures)
    );
}
