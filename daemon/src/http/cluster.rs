//! The cluster member's side of the write endpoints, and `GET /cluster`.
//!
//! On a member, posted points are not applied here: they are published to
//! their partitions ([`crate::cluster::producer`]) and the reply comes
//! once JetStream has them: `202 {"status": "Data accepted", "received":
//! N}` for `/detect` (no verdicts: they are read from `/anomalies`,
//! `/episodes` and the sinks), 204 for the remote-write and line-protocol
//! endpoints (what their senders expect). While NATS is unreachable the
//! reply is 503 and nothing is kept.

use hyper::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::gate::{self, Client};
use super::reply::{ResponseBody, empty, error, json};
use crate::clock::unix_now;
use crate::cluster::Member;
use crate::cluster::gather::{Question, gather};
use crate::cluster::producer::{self, Origin};
use crate::ingest::DataPoint;
use crate::state::AppState;

/// The `status` of a member's `/detect` reply.
pub const STATUS_ACCEPTED: &str = "Data accepted";

/// The reply of a member to `/detect`.
#[derive(Serialize)]
struct Accepted {
    status: &'static str,
    received: usize,
}

/// Publishes `points` posted in `origin`'s format through `member`, after
/// the rate limit; the reply for the client.
pub(super) async fn publish(
    member: &Member,
    points: &[DataPoint<'_>],
    origin: Origin,
    client: Option<Client>,
    state: &AppState,
) -> Response<ResponseBody> {
    if let Err(refused) = gate::admit(state, client.as_ref(), points.len()) {
        return *refused;
    }
    match producer::publish(member, points, origin, unix_now()).await {
        Ok(_) => match origin {
            Origin::Detect => json(
                StatusCode::ACCEPTED,
                &Accepted {
                    status: STATUS_ACCEPTED,
                    received: points.len(),
                },
            ),
            Origin::RemoteWrite | Origin::LineProtocol => empty(StatusCode::NO_CONTENT),
        },
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Asks every member `question` (see [`gather`]); the 503 reply when NATS
/// is unreachable.
pub(super) async fn ask(
    member: &Member,
    question: &Question,
) -> Result<Vec<bytes::Bytes>, Response<ResponseBody>> {
    gather(member, question)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// Asks every member `question` and reads each answer as a list of `T`
/// (an answer that is not one is left out), for the caller to merge.
pub(super) async fn ask_lists<T: DeserializeOwned>(
    member: &Member,
    question: &Question,
) -> Result<Vec<Vec<T>>, Response<ResponseBody>> {
    let answers = ask(member, question).await?;
    Ok(answers
        .iter()
        .filter_map(|answer| serde_json::from_slice(answer).ok())
        .collect())
}

/// One partition in `GET /cluster`.
#[derive(Serialize)]
struct PartitionItem {
    partition: u32,
    owner: Option<String>,
    /// Known for this member's partitions only.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_sequence: Option<u64>,
}

/// One member in `GET /cluster`.
#[derive(Serialize)]
struct MemberItem {
    id: String,
    http: Option<String>,
    partitions: usize,
}

/// The body of `GET /cluster`.
#[derive(Serialize)]
struct ClusterReply {
    instance_id: String,
    joined: bool,
    connected: bool,
    subject_prefix: String,
    partition_count: u32,
    members: Vec<MemberItem>,
    partitions: Vec<PartitionItem>,
}

/// `GET /cluster`: the members, the partitions, their owners and (for
/// this member's) their lags. 404 on a daemon that runs alone.
pub(super) fn cluster(state: &AppState) -> Response<ResponseBody> {
    let Some(member) = state.cluster.get() else {
        return error(
            StatusCode::NOT_FOUND,
            "this daemon runs alone: it has no [cluster] table".to_owned(),
        );
    };
    let owned = member.owned();
    // This member's own partitions as of now; the rest as last seen.
    let owners: Vec<Option<String>> = member
        .owners()
        .into_iter()
        .enumerate()
        .map(|(partition, owner)| {
            if owned.contains_key(&(partition as u32)) {
                Some(member.instance_id.clone())
            } else {
                owner.filter(|owner| *owner != member.instance_id)
            }
        })
        .collect();
    let partitions = owners
        .iter()
        .enumerate()
        .map(|(partition, owner)| {
            let mine = owned.get(&(partition as u32));
            PartitionItem {
                partition: partition as u32,
                owner: owner.clone(),
                lag: mine.map(|s| s.lag),
                applied_sequence: mine.map(|s| s.applied),
                snapshot_sequence: mine.and_then(|s| s.snapshot_seq),
            }
        })
        .collect();
    let members = member
        .members()
        .into_iter()
        .map(|m| MemberItem {
            partitions: owners
                .iter()
                .filter(|o| o.as_deref() == Some(m.id.as_str()))
                .count(),
            id: m.id,
            http: m.http,
        })
        .collect();
    json(
        StatusCode::OK,
        &ClusterReply {
            instance_id: member.instance_id.clone(),
            joined: member.joined(),
            connected: member.connected(),
            subject_prefix: member.config.subject_prefix.clone(),
            partition_count: member.config.partitions,
            members,
            partitions,
        },
    )
}
