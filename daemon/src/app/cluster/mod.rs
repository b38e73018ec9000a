//! The cluster member at work: joining (streams, buckets, layout), the
//! lease loop that claims, renews and hands over partitions, the
//! partition snapshots, and leaving at shutdown.
//!
//! One task runs the loop, so that claims, releases and snapshots never
//! overlap: every `lease_renew` it writes this member's presence, renews
//! its leases, and follows [`leases::plan`]. A partition is claimed by
//! compare-and-set, its snapshot loaded, and a consumer started from the
//! sequence after the snapshot's. A partition handed over is stopped,
//! snapshotted, forgotten, and only then released. A lease that could not
//! be renewed for `lease_ttl − lease_renew` is dropped without a
//! snapshot: another member may already hold it.

pub mod consumer;
pub mod reads;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::cluster::connect::{self, Connection};
use crate::cluster::handover::{self, HandoverError};
use crate::cluster::leases::{self, Holder, KeyState, LeaseValue, MemberValue, View};
use crate::cluster::ownership::{self, LeaseOutcome};
use crate::cluster::partition::{lease_key, partition_of};
use crate::cluster::{ClusterError, Member};
use crate::state::AppState;

/// Joins the cluster and runs the member until `stop`, then leaves:
/// consumers stopped, every partition snapshotted and released. Fails only
/// when the configuration must change (exit 78); NATS being unreachable is
/// waited out.
pub async fn run(
    state: Arc<AppState>,
    member: Arc<Member>,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    let Some(client) = connect::open(&member, &stop).await? else {
        return Ok(());
    };
    let max_age = retention(state.config().state.snapshot_interval);
    let mut attempts = 0u32;
    let connection = loop {
        match connect::set_up(client.clone(), &member.config, &member.names, max_age).await {
            Ok(connection) => break connection,
            Err(e) if e.is_configuration() => return Err(e),
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(30) {
                    tracing::warn!(error = %e, url = %member.config.nats_url, "Cannot join the cluster yet; retrying. /ready is 503 meanwhile.");
                }
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    member.set_connection(connection.clone());
    let view = Arc::new(Mutex::new(View::default()));
    let follower = tokio::spawn(follow(connection.clone(), view.clone(), stop.clone()));
    let reader = tokio::spawn(reads::follow_anomalies(
        state.clone(),
        member.clone(),
        connection.clone(),
        stop.clone(),
    ));
    let answerer = tokio::spawn(reads::answer_questions(
        state.clone(),
        member.clone(),
        connection.clone(),
        stop.clone(),
    ));
    let mut loop_state = Ownership {
        context: consumer::Context {
            state: state.clone(),
            member: member.clone(),
            connection,
            apply_lock: Arc::new(RwLock::new(())),
        },
        view,
        leases: BTreeMap::new(),
        last_snapshot: Instant::now(),
    };
    loop_state.run(&stop).await;
    follower.abort();
    reader.abort();
    answerer.abort();
    Ok(())
}

/// The shortest retention of the points stream, whatever the snapshot
/// interval: a quarter of an hour.
pub const MIN_RETENTION: Duration = Duration::from_secs(15 * 60);

/// The points stream's `max_age`: three snapshot intervals, so that every
/// message after the oldest snapshot still exists, and at least
/// [`MIN_RETENTION`], so that a consumer held up for a while (NATS
/// restarting, a member catching up) finds its messages.
pub fn retention(snapshot_interval: Duration) -> Duration {
    (snapshot_interval * 3).max(MIN_RETENTION)
}

/// Keeps `view` up to date with the KV bucket, starting the watch again
/// whenever it ends.
async fn follow(connection: Connection, view: Arc<Mutex<View>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(e) = ownership::follow(&connection.kv, &view).await {
            tracing::debug!(error = %e, "The watch of the cluster's keys ended; starting it again.");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// A partition this member holds.
#[derive(Debug)]
struct Lease {
    /// The lease key's revision after our last write.
    revision: u64,
    /// When we last renewed it.
    renewed: Instant,
    /// Its consumer.
    consumer: consumer::Handle,
}

/// The loop's state.
struct Ownership {
    context: consumer::Context,
    view: Arc<Mutex<View>>,
    leases: BTreeMap<u32, Lease>,
    last_snapshot: Instant,
}

impl Ownership {
    fn member(&self) -> &Member {
        &self.context.member
    }

    fn kv(&self) -> &async_nats::jetstream::kv::Store {
        &self.context.connection.kv
    }

    async fn run(&mut self, stop: &CancellationToken) {
        let mut tick = tokio::time::interval(self.member().config.lease_renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.step().await;
            let interval = self.context.state.config().state.snapshot_interval;
            if self.last_snapshot.elapsed() >= interval {
                self.last_snapshot = Instant::now();
                self.snapshot().await;
            }
        }
        self.leave().await;
    }

    /// One round: presence, renewals, then the plan.
    async fn step(&mut self) {
        let me = MemberValue {
            id: self.member().instance_id.clone(),
            http: self.context.state.bound_addr.get().map(|a| a.to_string()),
        };
        match ownership::announce(self.kv(), &me).await {
            Ok(_) => {
                if !self.member().joined() {
                    self.member().set_joined(true);
                    tracing::info!(instance_id = %me.id, "Joined the cluster.");
                }
            }
            Err(e) => tracing::debug!(error = %e, "Cannot write this member's presence."),
        }
        self.renew().await;
        let now = Instant::now();
        let ttl = self.member().config.lease_ttl;
        let (holders, revisions, members) = {
            let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            self.read_view(&view, ttl, now)
        };
        let owners = holders
            .iter()
            .map(|holder| match holder {
                Holder::Free => None,
                Holder::Me => Some(self.member().instance_id.clone()),
                Holder::Other(id) => Some(id.clone()),
            })
            .collect();
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        self.member().set_view(owners, members);
        if !self.member().joined() {
            return;
        }
        let plan = leases::plan(&self.member().instance_id, &ids, &holders);
        for partition in plan.release {
            self.release(partition).await;
        }
        for partition in plan.claim {
            let revision = revisions.get(&partition).copied().unwrap_or(0);
            self.claim(partition, revision).await;
        }
    }

    /// The holder of each partition, the revision a claim of each free one
    /// must expect, and the live members.
    fn read_view(
        &self,
        view: &View,
        ttl: Duration,
        now: Instant,
    ) -> (Vec<Holder>, HashMap<u32, u64>, Vec<MemberValue>) {
        let me = &self.member().instance_id;
        let mut revisions = HashMap::new();
        let holders = (0..self.member().config.partitions)
            .map(|partition| {
                if self.leases.contains_key(&partition) {
                    return Holder::Me;
                }
                match view.get(&lease_key(partition), ttl, now) {
                    KeyState::Free { revision } => {
                        revisions.insert(partition, revision);
                        Holder::Free
                    }
                    KeyState::Held { value, revision } => {
                        match serde_json::from_slice::<LeaseValue>(value) {
                            // Ours from before a restart: take it back.
                            Ok(lease) if lease.owner == *me => {
                                revisions.insert(partition, revision);
                                Holder::Free
                            }
                            Ok(lease) => Holder::Other(lease.owner),
                            Err(_) => Holder::Other(String::from("?")),
                        }
                    }
                }
            })
            .collect();
        let mut members: Vec<MemberValue> = view
            .alive("member.", ttl, now)
            .filter_map(|(_, value)| serde_json::from_slice(value).ok())
            .collect();
        if !members.iter().any(|m| m.id == *me) {
            members.push(MemberValue {
                id: me.clone(),
                http: self.context.state.bound_addr.get().map(|a| a.to_string()),
            });
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        (holders, revisions, members)
    }

    /// Renews every lease; drops those another member took, and those not
    /// renewed for `lease_ttl − lease_renew`.
    async fn renew(&mut self) {
        let me = self.member().instance_id.clone();
        let config = &self.member().config;
        let deadline = config.lease_ttl.saturating_sub(config.lease_renew);
        let writes = self.leases.iter().map(|(&partition, lease)| {
            let kv = self.kv().clone();
            let me = me.clone();
            let revision = lease.revision;
            async move {
                (
                    partition,
                    ownership::write_lease(&kv, partition, &me, revision).await,
                )
            }
        });
        let outcomes = futures_util::future::join_all(writes).await;
        let now = Instant::now();
        for (partition, outcome) in outcomes {
            match outcome {
                LeaseOutcome::Held(revision) => {
                    if let Some(lease) = self.leases.get_mut(&partition) {
                        lease.revision = revision;
                        lease.renewed = now;
                    }
                    self.member()
                        .stats
                        .lease_renewals
                        .fetch_add(1, Ordering::Relaxed);
                }
                LeaseOutcome::Lost => {
                    tracing::warn!(
                        partition,
                        "Another member took this partition's lease; stopped consuming it."
                    );
                    self.lose(partition).await;
                }
                LeaseOutcome::Failed(e) => {
                    let late = self
                        .leases
                        .get(&partition)
                        .is_some_and(|lease| now.duration_since(lease.renewed) >= deadline);
                    if late {
                        tracing::warn!(partition, error = %e, "Could not renew this partition's lease in time; stopped consuming it.");
                        self.lose(partition).await;
                    }
                }
            }
        }
    }

    /// Drops a partition whose lease is no longer ours: no snapshot, no
    /// release (another member may hold it already).
    async fn lose(&mut self, partition: u32) {
        if let Some(lease) = self.leases.remove(&partition) {
            lease.consumer.stop().await;
        }
        self.forget(partition).await;
        self.member()
            .stats
            .lease_losses
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the series of `partition` from the table.
    async fn forget(&self, partition: u32) {
        self.member().remove_owned(partition);
        let state = self.context.state.clone();
        let partitions = self.member().config.partitions;
        let _ = tokio::task::spawn_blocking(move || {
            state
                .table
                .forget_unless(|name| partition_of(name, partitions) != partition)
        })
        .await;
    }

    /// Claims `partition` (free, its key at `revision`): loads its snapshot
    /// and starts consuming after it.
    async fn claim(&mut self, partition: u32, revision: u64) {
        let me = self.member().instance_id.clone();
        let revision = match ownership::write_lease(self.kv(), partition, &me, revision).await {
            LeaseOutcome::Held(revision) => revision,
            LeaseOutcome::Lost => return,
            LeaseOutcome::Failed(e) => {
                tracing::debug!(partition, error = %e, "Cannot claim the partition now.");
                return;
            }
        };
        let started = Instant::now();
        let (start, restored) = match handover::load(&self.context.connection, partition).await {
            Ok(Some(stored)) => {
                let state = self.context.state.clone();
                let records = stored.records;
                let report = tokio::task::spawn_blocking(move || state.table.import(&records))
                    .await
                    .unwrap_or_default();
                self.member().update_owned(partition, |status| {
                    status.snapshot_seq = Some(stored.seq);
                });
                (stored.seq + 1, report.restored)
            }
            Ok(None) => (1, 0),
            Err(e @ HandoverError::Unusable { .. }) => {
                tracing::error!(partition, error = %e, "The partition's snapshot cannot be used: its series are rebuilt from the stream.");
                (1, 0)
            }
            Err(e @ HandoverError::Nats { .. }) => {
                tracing::warn!(partition, error = %e, "Cannot load the partition's snapshot; giving the partition back for now.");
                let _ = ownership::release_lease(self.kv(), partition, revision).await;
                return;
            }
        };
        self.member().update_owned(partition, |status| {
            status.applied = start - 1;
        });
        let consumer = consumer::start(self.context.clone(), partition, start);
        self.leases.insert(
            partition,
            Lease {
                revision,
                renewed: Instant::now(),
                consumer,
            },
        );
        self.member().stats.claims.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            partition,
            restored_series = restored,
            from_sequence = start,
            seconds = started.elapsed().as_secs_f64(),
            "Took over partition {partition}."
        );
    }

    /// Hands `partition` over: stops its consumer, stores its snapshot,
    /// forgets its series, then releases the lease.
    async fn release(&mut self, partition: u32) {
        let Some(lease) = self.leases.remove(&partition) else {
            return;
        };
        lease.consumer.stop().await;
        self.store_snapshots(&[partition]).await;
        self.forget(partition).await;
        if let Err(e) = ownership::release_lease(self.kv(), partition, lease.revision).await {
            tracing::warn!(partition, error = %e, "Cannot release the partition's lease; it expires after lease_ttl.");
        }
        self.member().stats.releases.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partition, "Handed over partition {partition}.");
    }

    /// Stores the snapshot of every owned partition that applied something
    /// since its last one, each with the last sequence applied to it.
    async fn snapshot(&mut self) {
        // A partition with nothing new keeps its stored snapshot, which is
        // still current.
        let owned = self.member().owned();
        let now = unix_now();
        let partitions: Vec<u32> = self
            .leases
            .keys()
            .copied()
            .filter(|p| match owned.get(p) {
                Some(status) if status.snapshot_seq == Some(status.applied) => {
                    self.member()
                        .update_owned(*p, |status| status.snapshot_time = Some(now));
                    false
                }
                _ => true,
            })
            .collect();
        if !partitions.is_empty() {
            self.store_snapshots(&partitions).await;
        }
    }

    /// Exports `partitions` in one pass over the table, while no batch is
    /// being applied, then stores them one by one, renewing the leases
    /// between two when due.
    async fn store_snapshots(&mut self, partitions: &[u32]) {
        let exported = {
            let _paused = self.context.apply_lock.write().await;
            let owned = self.member().owned();
            let seqs: Vec<u64> = partitions
                .iter()
                .map(|p| owned.get(p).map_or(0, |status| status.applied))
                .collect();
            let state = self.context.state.clone();
            let count = self.member().config.partitions;
            let index: HashMap<u32, usize> = partitions
                .iter()
                .enumerate()
                .map(|(i, &p)| (p, i))
                .collect();
            let wanted = partitions.len();
            let records = tokio::task::spawn_blocking(move || {
                let mut outs = vec![Vec::new(); wanted];
                let mut counts = vec![0usize; wanted];
                for shard in 0..state.table.shard_count() {
                    state.table.export_shard_by(
                        shard,
                        |name| index.get(&partition_of(name, count)).copied(),
                        &mut outs,
                        &mut counts,
                    );
                }
                (outs, counts)
            })
            .await;
            match records {
                Ok((outs, counts)) => (outs, counts, seqs),
                Err(e) => {
                    tracing::error!(error = %e, "Exporting the partitions' state failed.");
                    return;
                }
            }
        };
        let (outs, counts, seqs) = exported;
        let renew_every = self.member().config.lease_renew;
        let mut last_renewal = Instant::now();
        for (i, &partition) in partitions.iter().enumerate() {
            let started = Instant::now();
            match handover::save(
                &self.context.connection,
                partition,
                seqs[i],
                &outs[i],
                counts[i] as u64,
            )
            .await
            {
                Ok(bytes) => {
                    self.member().update_owned(partition, |status| {
                        status.snapshot_seq = Some(seqs[i]);
                        status.snapshot_time = Some(unix_now());
                    });
                    self.member()
                        .stats
                        .snapshots_stored
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        partition,
                        series = counts[i],
                        bytes,
                        sequence = seqs[i],
                        seconds = started.elapsed().as_secs_f64(),
                        "Stored the partition's snapshot."
                    );
                }
                Err(e) => {
                    self.member()
                        .stats
                        .snapshot_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(partition, error = %e, "Cannot store the partition's snapshot; a new owner would replay more of the stream.");
                }
            }
            if last_renewal.elapsed() >= renew_every {
                self.renew().await;
                last_renewal = Instant::now();
            }
        }
    }

    /// Leaves: stops every consumer, stores every snapshot, releases every
    /// lease and the presence key.
    async fn leave(&mut self) {
        let leases = std::mem::take(&mut self.leases);
        let partitions: Vec<u32> = leases.keys().copied().collect();
        let revisions: Vec<(u32, u64)> = leases.iter().map(|(&p, l)| (p, l.revision)).collect();
        futures_util::future::join_all(leases.into_values().map(|l| l.consumer.stop())).await;
        if !partitions.is_empty() {
            self.store_snapshots(&partitions).await;
        }
        let releases = revisions
            .iter()
            .map(|&(partition, revision)| ownership::release_lease(self.kv(), partition, revision));
        futures_util::future::join_all(releases).await;
        let _ = ownership::leave(self.kv(), &self.member().instance_id).await;
        self.member().set_joined(false);
        tracing::info!(
            partitions = partitions.len(),
            "Left the cluster: partitions snapshotted and released."
        );
    }
}
