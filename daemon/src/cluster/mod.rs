//! Cluster membership through NATS JetStream: several daemons share the
//! series, each series owned by one member at a time.
//!
//! Points posted to any member are published to the points stream, on the
//! subject of their partition ([`partition`]); the member holding a
//! partition's lease ([`leases`], [`ownership`]) consumes it, detects, and
//! writes the anomalies to its log before it acknowledges the messages.
//! Every `snapshot_interval` the owner stores the partition's detector
//! state in the object store with the stream sequence it covers
//! ([`handover`]); a new owner loads it and consumes from the next
//! sequence, so the series go on without warm-up.
//!
//! This module talks to NATS only; the loops that apply points to the
//! series table live in [`crate::app::cluster`].

pub mod connect;
pub mod credentials;
pub mod episodes;
pub mod gather;
pub mod handover;
pub mod leases;
pub mod ownership;
pub mod partition;
pub mod producer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use connect::{Connection, Layout};
use partition::Names;

use crate::config::ClusterConfig;

/// Why a member cannot join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A credentials or CA file cannot be read.
    #[error("[cluster] {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The NATS server refused this member's credentials.
    #[error(
        "NATS at {url} refused this member ({reason}): {}",
        connect::refusal_advice(creds.as_deref())
    )]
    Refused {
        /// `nats_url`.
        url: String,
        /// What the server said.
        reason: String,
        /// `nats_creds_file`, if set.
        creds: Option<PathBuf>,
    },
    /// A stream, bucket or key could not be created or read.
    #[error("cannot set up {what} in NATS JetStream: {reason}")]
    Setup {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// The cluster was created with another layout.
    #[error(
        "the cluster's layout (partitions = {}, subject_prefix = \"{}\") differs from this member's [cluster] (partitions = {}, subject_prefix = \"{}\"); the partition count is fixed for the life of the stream: use the cluster's value, or another subject_prefix for a new cluster",
        stored.partitions, stored.subject_prefix, ours.partitions, ours.subject_prefix
    )]
    LayoutMismatch {
        /// What the KV key `layout` holds.
        stored: Layout,
        /// What this member's configuration says.
        ours: Layout,
    },
}

impl ClusterError {
    /// Whether the configuration must change before the member can join
    /// (exit 78), as opposed to NATS being unreachable (retried).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            ClusterError::Credentials { .. }
                | ClusterError::Refused { .. }
                | ClusterError::LayoutMismatch { .. }
        )
    }
}

/// What `GET /cluster` and `/metrics` show of one owned partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionStatus {
    /// The last stream sequence applied.
    pub applied: u64,
    /// Messages in the stream not yet delivered to this member.
    pub lag: u64,
    /// The stream sequence the last stored snapshot covers, if any.
    pub snapshot_seq: Option<u64>,
    /// When that snapshot was stored (unix seconds).
    pub snapshot_time: Option<f64>,
}

/// Counters of a member, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Lease renewals that succeeded.
    pub lease_renewals: AtomicU64,
    /// Leases lost (taken by another member, or not renewed in time).
    pub lease_losses: AtomicU64,
    /// Partitions claimed.
    pub claims: AtomicU64,
    /// Partitions released for balance or at shutdown.
    pub releases: AtomicU64,
    /// Messages published to the points stream.
    pub published_messages: AtomicU64,
    /// Posts refused because NATS did not acknowledge them.
    pub publish_failures: AtomicU64,
    /// Messages consumed from owned partitions.
    pub consumed_messages: AtomicU64,
    /// Messages that did not parse (published by something else).
    pub bad_messages: AtomicU64,
    /// Points dropped by an owner (over `max_series`).
    pub dropped_points: AtomicU64,
    /// Snapshots stored.
    pub snapshots_stored: AtomicU64,
    /// Snapshots that could not be stored.
    pub snapshot_failures: AtomicU64,
}

/// This daemon as a cluster member: its settings, its connection once
/// made, and what it owns.
#[derive(Debug)]
pub struct Member {
    /// `[cluster]` as read at start.
    pub config: ClusterConfig,
    /// This member's id (`instance_id`, or hostname and port).
    pub instance_id: String,
    /// The NATS names under the prefix.
    pub names: Names,
    connection: OnceLock<Connection>,
    joined: AtomicBool,
    /// Counters for `/metrics`.
    pub stats: ClusterStats,
    owned: Mutex<BTreeMap<u32, PartitionStatus>>,
    /// Owner of each partition as last seen (`None`: free).
    owners: Mutex<Vec<Option<String>>>,
    /// Live members as last seen: id and HTTP address.
    members: Mutex<Vec<leases::MemberValue>>,
    /// The whole cluster's episodes, followed from the anomalies stream.
    pub episodes: Mutex<episodes::EpisodeView>,
    /// Why the connection to NATS failed last, while it does (the first
    /// connection, or a reconnection).
    connect_error: Arc<Mutex<Option<String>>>,
}

impl Member {
    /// A member with `config`, named `instance_id`, not yet connected.
    pub fn new(config: ClusterConfig, instance_id: String) -> Self {
        Member {
            names: Names::new(&config.subject_prefix),
            owners: Mutex::new(vec![None; config.partitions as usize]),
            config,
            instance_id,
            connection: OnceLock::new(),
            joined: AtomicBool::new(false),
            stats: ClusterStats::default(),
            owned: Mutex::default(),
            members: Mutex::default(),
            episodes: Mutex::default(),
            connect_error: Arc::default(),
        }
    }

    /// The connection, once the streams and buckets are set up.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.get()
    }

    /// Keeps the connection (once).
    pub fn set_connection(&self, connection: Connection) {
        let _ = self.connection.set(connection);
    }

    /// Whether NATS is reachable now.
    pub fn connected(&self) -> bool {
        self.connection().is_some_and(|c| {
            c.client.connection_state() == async_nats::connection::State::Connected
        })
    }

    /// Why the connection to NATS failed last (`None` once connected).
    pub fn connect_error(&self) -> Option<String> {
        self.connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records why the first connection failed, or that it succeeded.
    pub fn set_connect_error(&self, error: Option<String>) {
        *self.connect_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Where the client's event callback records reconnection failures.
    pub fn connect_error_slot(&self) -> Arc<Mutex<Option<String>>> {
        self.connect_error.clone()
    }

    /// Whether this member has joined (layout checked, presence written).
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Marks the member joined, or not.
    pub fn set_joined(&self, joined: bool) {
        self.joined.store(joined, Ordering::Release);
    }

    /// The partitions this member owns, with their status.
    pub fn owned(&self) -> BTreeMap<u32, PartitionStatus> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the status of owned partition `partition` (adding it).
    pub fn update_owned(&self, partition: u32, update: impl FnOnce(&mut PartitionStatus)) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        update(owned.entry(partition).or_default());
    }

    /// Forgets owned partition `partition`.
    pub fn remove_owned(&self, partition: u32) {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }

    /// Records the owners and members seen in the KV bucket.
    pub fn set_view(&self, owners: Vec<Option<String>>, members: Vec<leases::MemberValue>) {
        *self.owners.lock().unwrap_or_else(|p| p.into_inner()) = owners;
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
    }

    /// The owner of each partition as last seen.
    pub fn owners(&self) -> Vec<Option<String>> {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The live members as last seen.
    pub fn members(&self) -> Vec<leases::MemberValue> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The partition of series `name`.
    pub fn partition_of(&self, name: &str) -> u32 {
        partition::partition_of(name, self.config.partitions)
    }
}

/// This host's name, for the default instance id.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
