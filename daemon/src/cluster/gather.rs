//! Questions every member answers for the series it owns, over NATS
//! request/reply: the series list and one series. The asking
//! member publishes the question on `<prefix>.series` with a reply inbox
//! and gathers one answer per live member (or what came within
//! [`GATHER_WAIT`]); the caller merges them.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Member;

/// How long a question waits for the members' answers.
pub const GATHER_WAIT: Duration = Duration::from_secs(2);

/// A question to every member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Question {
    /// `GET /series` with this query string.
    List(String),
    /// `GET /series/{name}`: the member that holds the series answers it,
    /// the others `null`.
    Detail(String),
}

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// NATS is unreachable.
    #[error("the cluster's NATS server is unreachable ({0}); retry later")]
    Unavailable(String),
}

/// Asks every live member `question`; returns their answers (JSON), one
/// per member that answered within [`GATHER_WAIT`].
pub async fn gather(member: &Member, question: &Question) -> Result<Vec<Bytes>, GatherError> {
    let Some(connection) = member.connection().filter(|_| member.connected()) else {
        return Err(GatherError::Unavailable("not connected".into()));
    };
    let client = &connection.client;
    let expected = member.members().len().max(1);
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| GatherError::Unavailable(e.to_string()))?;
    let payload = serde_json::to_vec(question).expect("questions serialise");
    client
        .publish_with_reply(member.names.series_subject(), inbox, payload.into())
        .await
        .map_err(|e| GatherError::Unavailable(e.to_string()))?;
    let mut gathered = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + GATHER_WAIT;
    while gathered.len() < expected {
        match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(answer)) => gathered.push(answer.payload),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = answers.unsubscribe().await;
    Ok(gathered)
}
