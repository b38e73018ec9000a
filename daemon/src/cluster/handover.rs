//! Partition snapshots in the JetStream object store: the detector state of
//! one partition's series, in the [`crate::snapshot`] format, stored as
//! object `partition-<N>` with the stream sequence it covers in the
//! object's metadata (`seq`). A new owner loads it and consumes from the
//! next sequence.

use std::path::Path;

use async_nats::jetstream::object_store::ObjectMetadata;
use tokio::io::AsyncReadExt;

use super::connect::Connection;
use super::partition::snapshot_object;
use crate::snapshot;

/// The metadata key of the covered stream sequence.
const SEQ_KEY: &str = "seq";

/// A partition snapshot as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The last stream sequence applied to the state in it.
    pub seq: u64,
    /// Its records, for [`crate::series::SeriesTable::import`].
    pub records: Vec<u8>,
    /// How many series it holds.
    pub series: u64,
}

/// Why a snapshot could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// NATS failed.
    #[error("partition {partition} snapshot: {reason}")]
    Nats {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
    /// The object is not a usable snapshot.
    #[error("partition {partition} snapshot: {source}")]
    Unusable {
        /// The partition.
        partition: u32,
        /// Why.
        source: snapshot::SnapshotError,
    },
}

/// Stores the snapshot of `partition`: `records` of `series` series,
/// covering the stream up to `seq`. Returns the stored size in bytes.
pub async fn save(
    connection: &Connection,
    partition: u32,
    seq: u64,
    records: &[u8],
    series: u64,
) -> Result<u64, HandoverError> {
    let bytes = snapshot::encode(records, series);
    let mut meta = ObjectMetadata::from(snapshot_object(partition).as_str());
    meta.description = Some(format!(
        "anomalyd partition {partition} state, {series} series"
    ));
    meta.metadata.insert(SEQ_KEY.into(), seq.to_string());
    let info = connection
        .snapshots
        .put(meta, &mut bytes.as_slice())
        .await
        .map_err(|e| HandoverError::Nats {
            partition,
            reason: e.to_string(),
        })?;
    Ok(info.size as u64)
}

/// Loads the snapshot of `partition`; `Ok(None)` when there is none.
pub async fn load(
    connection: &Connection,
    partition: u32,
) -> Result<Option<Stored>, HandoverError> {
    let name = snapshot_object(partition);
    let nats = |reason: String| HandoverError::Nats { partition, reason };
    let mut object = match connection.snapshots.get(&name).await {
        Ok(object) => object,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(nats(e.to_string())),
    };
    let seq = object
        .info()
        .metadata
        .get(SEQ_KEY)
        .and_then(|seq| seq.parse::<u64>().ok())
        .ok_or_else(|| nats(format!("object {name} has no `{SEQ_KEY}` metadata")))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| nats(e.to_string()))?;
    let (records, series) = snapshot::decode(bytes, Path::new(&name))
        .map_err(|source| HandoverError::Unusable { partition, source })?;
    Ok(Some(Stored {
        seq,
        records,
        series,
    }))
}
