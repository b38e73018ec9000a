//! The lease and presence keys in the KV bucket: claiming, renewing and
//! releasing a partition's lease with compare-and-set, writing this
//! member's presence, and following every key into a [`View`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt;

use super::leases::{LeaseValue, MemberValue, View};
use super::partition::{lease_key, member_key};

/// What happened to a compare-and-set on a lease.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Done; the key's new revision.
    Held(u64),
    /// Another member changed the key first.
    Lost,
    /// NATS did not answer; try again.
    Failed(String),
}

/// Writes the lease of `partition` for `me`, expecting the key at
/// `revision` (0: never written). Used to claim and to renew.
pub async fn write_lease(kv: &kv::Store, partition: u32, me: &str, revision: u64) -> LeaseOutcome {
    let value: Bytes = serde_json::to_vec(&LeaseValue {
        owner: me.to_owned(),
    })
    .expect("lease serialises")
    .into();
    let key = lease_key(partition);
    if revision == 0 {
        return match kv.create(&key, value).await {
            Ok(revision) => LeaseOutcome::Held(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => LeaseOutcome::Lost,
            Err(e) => LeaseOutcome::Failed(e.to_string()),
        };
    }
    match kv.update(&key, value.clone(), revision).await {
        Ok(revision) => LeaseOutcome::Held(revision),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            // Our previous write may have landed with its reply lost (NATS
            // restarting): if the key still names us, it is still ours.
            match kv.entry(&key).await {
                Ok(Some(entry))
                    if entry.operation == kv::Operation::Put
                        && serde_json::from_slice::<LeaseValue>(&entry.value)
                            .is_ok_and(|lease| lease.owner == me) =>
                {
                    match kv.update(&key, value, entry.revision).await {
                        Ok(revision) => LeaseOutcome::Held(revision),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                            LeaseOutcome::Lost
                        }
                        Err(e) => LeaseOutcome::Failed(e.to_string()),
                    }
                }
                Ok(_) => LeaseOutcome::Lost,
                Err(e) => LeaseOutcome::Failed(e.to_string()),
            }
        }
        Err(e) => LeaseOutcome::Failed(e.to_string()),
    }
}

/// Deletes the lease of `partition` if it is still at `revision` (ours).
pub async fn release_lease(kv: &kv::Store, partition: u32, revision: u64) -> Result<(), String> {
    kv.delete_expect_revision(lease_key(partition), Some(revision))
        .await
        .map_err(|e| e.to_string())
}

/// Writes this member's presence; returns its revision.
pub async fn announce(kv: &kv::Store, me: &MemberValue) -> Result<u64, String> {
    let value = serde_json::to_vec(me).expect("member serialises");
    kv.put(member_key(&me.id), value.into())
        .await
        .map_err(|e| e.to_string())
}

/// Deletes this member's presence (it leaves).
pub async fn leave(kv: &kv::Store, id: &str) -> Result<(), String> {
    kv.delete(member_key(id)).await.map_err(|e| e.to_string())
}

/// Follows every key of the bucket into `view` until the watch ends (the
/// connection was lost or the stream deleted); the caller starts it again.
pub async fn follow(kv: &kv::Store, view: &Arc<Mutex<View>>) -> Result<(), String> {
    // The last value of every key first, then every change.
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        let value = match entry.operation {
            Operation::Put => Some(entry.value.to_vec()),
            Operation::Delete | Operation::Purge => None,
        };
        view.lock().unwrap_or_else(|p| p.into_inner()).observe(
            &entry.key,
            value,
            entry.revision,
            Instant::now(),
        );
    }
    Ok(())
}
