//! Reading across the cluster: every member follows the anomalies stream
//! (where each owner publishes the records it logs and the episodes it
//! closes) into its list of recent anomalies and its
//! [`EpisodeView`](crate::cluster::episodes::EpisodeView), so that
//! `GET /anomalies`, `GET /episodes` and the dashboard's live events
//! answer for the whole cluster on any member, without asking the others;
//! and every member answers the questions of [`crate::cluster::gather`]
//! (`GET /series`, `/series/{name}`) for the series it owns.
//!
//! A record produced again by a partition's next owner (after a kill -9,
//! from its last snapshot on) carries the same series and `seq` (or
//! timestamp): the follower drops such repeats among the records it still
//! remembers.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, push};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::{AnomalyRecord, EpisodeRecord};
use crate::cluster::Member;
use crate::cluster::connect::Connection;
use crate::cluster::gather::Question;
use crate::http::query::parse_series_query;
use crate::state::AppState;

/// Answers the other members' questions about the series this member
/// owns, until `stop`.
pub async fn answer_questions(
    state: Arc<AppState>,
    member: Arc<Member>,
    connection: Connection,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let subscribed = connection
            .client
            .subscribe(member.names.series_subject())
            .await;
        match subscribed {
            Ok(mut questions) => loop {
                let question = tokio::select! {
                    () = stop.cancelled() => return,
                    question = questions.next() => question,
                };
                let Some(question) = question else { break };
                let Some(reply) = question.reply else {
                    continue;
                };
                let answer = serde_json::from_slice::<Question>(&question.payload)
                    .map(|q| answer(&state, &q))
                    .unwrap_or_else(|_| b"null".to_vec());
                let _ = connection.client.publish(reply, answer.into()).await;
            },
            Err(e) => tracing::debug!(error = %e, "Cannot subscribe to the cluster's questions."),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// This member's answer to `question`, as JSON (`null` when it has
/// nothing to say, or the question does not parse).
fn answer(state: &AppState, question: &Question) -> Vec<u8> {
    let json = match question {
        Question::List(raw) => parse_series_query(raw)
            .ok()
            .map(|query| serde_json::to_vec(&state.table.list(&query))),
        Question::Detail(name) => Some(serde_json::to_vec(&state.table.detail(name))),
    };
    json.and_then(Result::ok)
        .unwrap_or_else(|| b"null".to_vec())
}

/// Time between two tries after the stream ended or failed.
const RETRY: Duration = Duration::from_millis(500);

/// The identity of an anomaly: its series and its `seq`, else its
/// timestamp in microseconds.
fn identity(record: &AnomalyRecord) -> (String, u64) {
    let id = record
        .seq
        .unwrap_or_else(|| (record.timestamp * 1e6).round() as u64);
    (record.series.clone(), id)
}

/// The identities of the records seen last, at most `capacity`.
struct Seen {
    order: VecDeque<(String, u64)>,
    set: HashSet<(String, u64)>,
}

impl Seen {
    /// Whether `key` is new; remembers it.
    fn insert(&mut self, key: (String, u64), capacity: usize) -> bool {
        if self.set.contains(&key) {
            return false;
        }
        self.order.push_back(key.clone());
        self.set.insert(key);
        while self.order.len() > capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Follows the anomalies stream from its start (what it keeps) into
/// `state.recent` and `member.episodes` until `stop`.
pub async fn follow_anomalies(
    state: Arc<AppState>,
    member: Arc<Member>,
    connection: Connection,
    stop: CancellationToken,
) {
    let mut seen = Seen {
        order: VecDeque::new(),
        set: HashSet::new(),
    };
    let mut next = 1u64;
    while !stop.is_cancelled() {
        let followed = tokio::select! {
            () = stop.cancelled() => return,
            result = follow_from(&state, &member, &connection, &mut seen, &mut next) => result,
        };
        if let Err(e) = followed {
            tracing::debug!(error = %e, "Following the anomalies stream stopped; starting again.");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Follows the stream from sequence `next` (advanced as records come).
async fn follow_from(
    state: &AppState,
    member: &Member,
    connection: &Connection,
    seen: &mut Seen,
    next: &mut u64,
) -> Result<(), String> {
    let stream = connection
        .js
        .get_stream(member.names.anomalies_stream())
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: connection.client.new_inbox(),
            description: Some(format!("anomalyd {}: anomaly reads", member.instance_id)),
            deliver_policy: if *next <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: *next,
                }
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        if let Ok(info) = message.info() {
            *next = info.stream_sequence + 1;
        }
        let config = state.config();
        let mut episodes = member.episodes.lock().unwrap_or_else(|p| p.into_inner());
        episodes.set_capacities(config.log.recent_episodes, config.server.max_series);
        if member.names.is_episodes_subject(&message.subject) {
            for closed in lines::<EpisodeRecord>(&message.payload) {
                episodes.closed(closed);
            }
            continue;
        }
        let capacity = state.recent.capacity();
        let records: Vec<AnomalyRecord> = lines::<AnomalyRecord>(&message.payload)
            .filter(|record| seen.insert(identity(record), capacity))
            .collect();
        for record in &records {
            episodes.anomaly(record);
        }
        drop(episodes);
        state.recent.extend(records);
    }
    Ok(())
}

/// The JSON lines of `payload` that parse as `T` (an owner publishes
/// nothing else; anything else is skipped).
fn lines<T: serde::de::DeserializeOwned>(payload: &[u8]) -> impl Iterator<Item = T> + '_ {
    payload
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<T>(line).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_dropped_while_remembered() {
        let mut seen = Seen {
            order: VecDeque::new(),
            set: HashSet::new(),
        };
        assert!(seen.insert(("a".into(), 1), 2));
        assert!(!seen.insert(("a".into(), 1), 2));
        assert!(seen.insert(("b".into(), 1), 2));
        assert!(seen.insert(("c".into(), 1), 2));
        // "a" was forgotten (capacity 2).
        assert!(seen.insert(("a".into(), 1), 2));
    }
}
