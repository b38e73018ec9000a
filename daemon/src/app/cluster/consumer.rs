//! Consuming one owned partition: a pull consumer on the partition's
//! subject from a given stream sequence, each message applied to the
//! series table as a `/detect` batch, the anomalies written to the log
//! (and published for the other members, with the episodes they closed),
//! and only then the messages acknowledged.
//!
//! The consumer is ephemeral: it lives while this member holds the lease.
//! After an error (NATS restarted, the consumer vanished) a new one is
//! created from the sequence after the last one applied; a message seen
//! again is skipped, so each is applied once.
//!
//! A consumer belongs to the connection it was created on. Messages the
//! server sent while the connection was lost never arrive, and with
//! `AckPolicy::All` acknowledging a later one would acknowledge them too:
//! so a batch fetched after a reconnect is dropped unapplied and the
//! consumer is created again from the next unapplied sequence.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{Message, consumer};
use futures_util::StreamExt;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{AnomalyRecord, EpisodeRecord};
use crate::cluster::Member;
use crate::cluster::connect::Connection;
use crate::cluster::producer::{ORIGIN_HEADER, Origin};
use crate::ingest::{DataPoint, parse_ndjson_body};
use crate::metrics::Format;
use crate::series::Duplicates;
use crate::state::{AppState, AppliedBatch};

/// Messages fetched at once.
const BATCH: usize = 256;
/// How long a fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Time between two tries after an error.
const RETRY: Duration = Duration::from_millis(500);
/// How long the server waits for an acknowledgement before it delivers a
/// message again.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// A running consumer of one partition.
#[derive(Debug)]
pub struct Handle {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Handle {
    /// Stops consuming once the batch being applied is done (its anomalies
    /// logged and its messages acknowledged), and waits for that.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What a consumer needs.
#[derive(Clone)]
pub struct Context {
    /// The daemon's state.
    pub state: Arc<AppState>,
    /// This member.
    pub member: Arc<Member>,
    /// Its NATS handles.
    pub connection: Connection,
    /// Held (shared) while a batch is applied; a snapshot holds it
    /// exclusively, so that it sees whole batches only.
    pub apply_lock: Arc<RwLock<()>>,
}

/// Starts consuming `partition` from stream sequence `start` (1: from the
/// oldest message kept).
pub fn start(context: Context, partition: u32, start: u64) -> Handle {
    let stop = CancellationToken::new();
    let task = tokio::spawn(consume(context, partition, start.max(1), stop.clone()));
    Handle { stop, task }
}

async fn consume(context: Context, partition: u32, mut next: u64, stop: CancellationToken) {
    let Context {
        state,
        member,
        connection,
        apply_lock,
    } = &context;
    // The consumer, and the connection count when it was created.
    let mut consumer: Option<(consumer::PullConsumer, u64)> = None;
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let (current, created_on) = match &consumer {
            Some((current, created_on)) => (current, *created_on),
            None => match create(connection, member, partition, next).await {
                Ok(created) => {
                    let (current, created_on) = consumer.insert(created);
                    (&*current, *created_on)
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(60) {
                        tracing::warn!(partition, error = %e, "Cannot create the partition's consumer; retrying.");
                    }
                    pause(&stop).await;
                    continue;
                }
            },
        };
        let fetched = tokio::select! {
            () = stop.cancelled() => break,
            fetched = fetch(current) => fetched,
        };
        let (messages, error) = fetched;
        if connects(connection) != created_on {
            // Reconnected since the consumer was made: what it delivered
            // meanwhile may have a gap.
            tracing::debug!(
                partition,
                "Reconnected to NATS; the partition's consumer is created again."
            );
            if let Some((stale, _)) = consumer.take() {
                let name = stale.cached_info().name.clone();
                let _ = connection.points.delete_consumer(&name).await;
            }
            continue;
        }
        if let Some(e) = error {
            failures += 1;
            if failures == 1 || failures.is_multiple_of(60) {
                tracing::warn!(partition, error = %e, "Fetching from the partition failed; its consumer is created again.");
            }
            consumer = None;
        } else {
            failures = 0;
        }
        let fresh: Vec<Message> = messages
            .into_iter()
            .filter(|m| m.info().is_ok_and(|info| info.stream_sequence >= next))
            .collect();
        let Some(last) = fresh.last() else {
            if consumer.is_none() {
                pause(&stop).await;
            }
            continue;
        };
        let (last_seq, pending) = last
            .info()
            .map(|info| (info.stream_sequence, info.pending))
            .unwrap_or((next, 0));
        {
            let _applying = apply_lock.read().await;
            let produced = apply(state, member, &fresh).await;
            publish_produced(connection, member, partition, &produced).await;
            next = last_seq + 1;
            member.update_owned(partition, |status| {
                status.applied = last_seq;
                status.lag = pending;
            });
        }
        // With `AckPolicy::All` the last one acknowledges the batch.
        if let Err(e) = last.ack().await {
            tracing::debug!(partition, error = %e, "Acknowledging failed; the messages come again and are skipped.");
        }
    }
    if let Some((consumer, _)) = consumer {
        let name = consumer.cached_info().name.clone();
        let _ = connection.points.delete_consumer(&name).await;
    }
}

/// Waits [`RETRY`], or less if stopped.
async fn pause(stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(RETRY) => {}
    }
}

/// How many times the client has connected to NATS (the first time
/// included).
fn connects(connection: &Connection) -> u64 {
    connection
        .client
        .statistics()
        .connects
        .load(Ordering::Relaxed)
}

/// An ephemeral pull consumer of `partition` from sequence `start`, with
/// the connection count read before it was created.
async fn create(
    connection: &Connection,
    member: &Member,
    partition: u32,
    start: u64,
) -> Result<(consumer::PullConsumer, u64), String> {
    let inactive = (member.config.lease_ttl * 3).max(Duration::from_secs(60));
    let created_on = connects(connection);
    connection
        .points
        .create_consumer(consumer::pull::Config {
            description: Some(format!(
                "anomalyd {}: partition {partition}",
                member.instance_id
            )),
            filter_subject: member.names.points_subject(partition),
            deliver_policy: if start <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                }
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: (BATCH * 4) as i64,
            inactive_threshold: inactive,
            ..Default::default()
        })
        .await
        .map(|consumer| (consumer, created_on))
        .map_err(|e| e.to_string())
}

/// One batch: the messages, and the error that ended it early, if any.
async fn fetch(consumer: &consumer::PullConsumer) -> (Vec<Message>, Option<String>) {
    let mut batch = match consumer
        .batch()
        .max_messages(BATCH)
        .expires(FETCH_WAIT)
        .messages()
        .await
    {
        Ok(batch) => batch,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => messages.push(message),
            Err(e) => return (messages, Some(e.to_string())),
        }
    }
    (messages, None)
}

/// What applying a batch of messages produced, in order.
#[derive(Debug, Default)]
struct Produced {
    /// The anomalies' records.
    records: Vec<AnomalyRecord>,
    /// The episodes closed.
    closed: Vec<EpisodeRecord>,
}

impl Produced {
    fn extend(&mut self, applied: AppliedBatch) {
        self.records.extend(applied.records);
        self.closed.extend(applied.episodes_closed);
    }
}

/// Applies the messages in order, consecutive messages of one origin as
/// one batch; returns what they produced.
async fn apply(state: &AppState, member: &Member, messages: &[Message]) -> Produced {
    let mut produced = Produced::default();
    let mut run: Vec<DataPoint<'_>> = Vec::new();
    // Where each message's points start in `run`.
    let mut starts: Vec<usize> = Vec::new();
    let mut run_origin = Origin::Detect;
    for message in messages {
        member
            .stats
            .consumed_messages
            .fetch_add(1, Ordering::Relaxed);
        let origin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ORIGIN_HEADER))
            .map(|value| value.as_str());
        let Some(origin) = Origin::from_header(origin) else {
            member.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject = %message.subject, "Skipped a message with an unknown {ORIGIN_HEADER} header.");
            continue;
        };
        let points = match parse_ndjson_body(&message.payload) {
            Ok(points) => points,
            Err(e) => {
                member.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %message.subject, error = %e.message, "Skipped a message that is not NDJSON points.");
                continue;
            }
        };
        if origin != run_origin && !run.is_empty() {
            apply_run(state, member, &run, &starts, run_origin, &mut produced).await;
            run.clear();
            starts.clear();
        }
        run_origin = origin;
        starts.push(run.len());
        run.extend(points);
    }
    if !run.is_empty() {
        apply_run(state, member, &run, &starts, run_origin, &mut produced).await;
    }
    produced
}

/// Applies one run of points posted in `origin`'s format, the messages
/// starting at `starts`. When `max_series` refuses the run (which then
/// applied nothing), each message is applied on its own, so that only
/// those that do not fit are dropped.
async fn apply_run(
    state: &AppState,
    member: &Member,
    points: &[DataPoint<'_>],
    starts: &[usize],
    origin: Origin,
    produced: &mut Produced,
) {
    let (duplicates, format) = match origin {
        Origin::Detect => (Duplicates::BySeq, Format::Detect),
        Origin::RemoteWrite => (Duplicates::ByTimestamp, Format::RemoteWrite),
        Origin::LineProtocol => (Duplicates::ByTimestamp, Format::Influx),
    };
    if let Ok(applied) = state.apply_points(points, duplicates, format).await {
        if !applied.logged {
            wait_for_the_log(state).await;
        }
        produced.extend(applied);
        return;
    }
    let ends = starts.iter().skip(1).copied().chain([points.len()]);
    for (start, end) in starts.iter().copied().zip(ends) {
        let message = &points[start..end];
        match state.apply_points(message, duplicates, format).await {
            Ok(applied) => {
                if !applied.logged {
                    wait_for_the_log(state).await;
                }
                produced.extend(applied);
            }
            Err(e) => {
                member
                    .stats
                    .dropped_points
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
                tracing::warn!(points = message.len(), error = %e, "Dropped a consumed message's points.");
            }
        }
    }
}

/// Waits until the anomaly log has written its backlog: a message is
/// acknowledged only once its anomalies are in the file.
async fn wait_for_the_log(state: &AppState) {
    let mut waited = 0u32;
    while state.log.stats().backlog.load(Ordering::Relaxed) > 0 {
        if waited.is_multiple_of(60) {
            tracing::warn!("The anomaly log cannot be written: consuming waits until it can.");
        }
        waited += 1;
        tokio::time::sleep(RETRY).await;
    }
}

/// Publishes the anomaly records on the partition's anomalies subject,
/// then the closed episodes on its episodes subject (after the anomalies
/// that belong to them), for the other members' `GET /anomalies` and
/// `GET /episodes`.
async fn publish_produced(
    connection: &Connection,
    member: &Member,
    partition: u32,
    produced: &Produced,
) {
    if !produced.records.is_empty() {
        let mut body = Vec::with_capacity(produced.records.len() * 200);
        for record in &produced.records {
            record.write_line(&mut body);
        }
        let subject = member.names.anomalies_subject(partition);
        if let Err(e) = publish(connection, subject, body).await {
            tracing::warn!(partition, error = %e, "Cannot publish anomalies for the other members; they are in this member's log.");
        }
    }
    if !produced.closed.is_empty() {
        let mut body = Vec::with_capacity(produced.closed.len() * 200);
        for episode in &produced.closed {
            // Plain numbers and strings into a Vec cannot fail.
            serde_json::to_writer(&mut body, episode).expect("episode records serialise");
            body.push(b'\n');
        }
        let subject = member.names.episodes_subject(partition);
        if let Err(e) = publish(connection, subject, body).await {
            tracing::warn!(partition, error = %e, "Cannot publish closed episodes for the other members; they are in this member's alerts and journal.");
        }
    }
}

/// Publishes `body` on `subject` and waits for JetStream's acknowledgement.
async fn publish(connection: &Connection, subject: String, body: Vec<u8>) -> Result<(), String> {
    match connection.js.publish(subject, body.into()).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
