//! Which partition a series belongs to, and the NATS names derived from the
//! prefix: pure functions, documented so that any producer can compute
//! them.
//!
//! A series belongs to partition `fnv1a64(name) mod partitions`, where
//! `fnv1a64` is the 64-bit FNV-1a hash of the name's UTF-8 bytes (offset
//! basis `0xcbf29ce484222325`, prime `0x100000001b3`).

use crate::fnv::fnv1a;

/// The partition of the series `name` among `partitions`.
pub fn partition_of(name: &str, partitions: u32) -> u32 {
    (fnv1a(name.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// The names of everything a cluster keeps in NATS, from its
/// `subject_prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// The names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// The stream of points: `<PREFIX>_points` (subjects
    /// `<prefix>.points.*`).
    pub fn points_stream(&self) -> String {
        format!("{}_points", self.prefix)
    }

    /// The subjects of the points stream.
    pub fn points_subjects(&self) -> String {
        format!("{}.points.*", self.prefix)
    }

    /// The subject a point of `partition` is published on.
    pub fn points_subject(&self, partition: u32) -> String {
        format!("{}.points.{partition}", self.prefix)
    }

    /// The stream of anomaly records: `<prefix>_anomalies`.
    pub fn anomalies_stream(&self) -> String {
        format!("{}_anomalies", self.prefix)
    }

    /// The subjects of the anomalies stream: the anomaly records and the
    /// closed episodes of every partition.
    pub fn anomalies_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.anomalies.*", self.prefix),
            format!("{}.episodes.*", self.prefix),
        ]
    }

    /// The subject the anomalies of `partition` are published on.
    pub fn anomalies_subject(&self, partition: u32) -> String {
        format!("{}.anomalies.{partition}", self.prefix)
    }

    /// The subject the closed episodes of `partition` are published on
    /// (in the anomalies stream).
    pub fn episodes_subject(&self, partition: u32) -> String {
        format!("{}.episodes.{partition}", self.prefix)
    }

    /// Whether `subject` is one of [`Names::episodes_subject`].
    pub fn is_episodes_subject(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(".episodes."))
    }

    /// The key-value bucket of the layout, the members and the leases.
    pub fn kv_bucket(&self) -> String {
        format!("{}_cluster", self.prefix)
    }

    /// The object store of the partition snapshots.
    pub fn snapshot_bucket(&self) -> String {
        format!("{}_snapshots", self.prefix)
    }

    /// The subject members answer `GET /series` requests on.
    pub fn series_subject(&self) -> String {
        format!("{}.series", self.prefix)
    }
}

/// The KV key of the layout.
pub const LAYOUT_KEY: &str = "layout";

/// The KV key of the lease of `partition`.
pub fn lease_key(partition: u32) -> String {
    format!("lease.{partition}")
}

/// The partition of a lease key, `None` for other keys.
pub fn partition_of_lease_key(key: &str) -> Option<u32> {
    key.strip_prefix("lease.")?.parse().ok()
}

/// The KV key of a member's presence: `member.` and the hex FNV-1a of its
/// id (ids may hold characters keys may not).
pub fn member_key(instance_id: &str) -> String {
    format!("member.{:016x}", fnv1a(instance_id.as_bytes()))
}

/// The object name of the snapshot of `partition`.
pub fn snapshot_object(partition: u32) -> String {
    format!("partition-{partition}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_documented_hash() {
        // fnv1a64("foobar") = 0x85944171f73967e8 (published test vector).
        assert_eq!(
            partition_of("foobar", 64),
            (0x8594_4171_f739_67e8u64 % 64) as u32
        );
        assert_eq!(partition_of("foobar", 1), 0);
        let counts = (0..6400).fold([0u32; 64], |mut counts, i| {
            counts[partition_of(&format!("series-{i}"), 64) as usize] += 1;
            counts
        });
        assert!(
            counts.iter().all(|&c| (50..=150).contains(&c)),
            "spread over every partition: {counts:?}"
        );
    }

    #[test]
    fn keys_round_trip_and_stay_valid() {
        assert_eq!(partition_of_lease_key(&lease_key(17)), Some(17));
        assert_eq!(partition_of_lease_key("member.00"), None);
        assert_eq!(partition_of_lease_key("lease.x"), None);
        let key = member_key("web-1.example.com:8080");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        assert_ne!(key, member_key("web-2.example.com:8080"));
        let names = Names::new("ad");
        assert_eq!(names.points_subject(3), "ad.points.3");
        assert_eq!(names.points_stream(), "ad_points");
    }
}
