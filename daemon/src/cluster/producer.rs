//! Publishing posted points to the points stream: each point goes to the
//! subject of its partition, as NDJSON in the `/detect` format, a missing
//! timestamp filled in from this member's clock. The post is answered once
//! JetStream has acknowledged every message; while NATS is unreachable
//! nothing is published and nothing is buffered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::Member;
use super::connect::MAX_MESSAGE_BYTES;
use super::partition::Names;
use crate::ingest::DataPoint;

/// The header naming the format the points were posted in.
pub const ORIGIN_HEADER: &str = "Anomalyd-Origin";

/// How long a post waits for JetStream's acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Room left in a message for the headers and NATS' framing.
const MESSAGE_ROOM: usize = 4096;

/// The format points were posted in: it picks the duplicate rule (`seq`
/// for `/detect`, the timestamp for the other two) and the format counted
/// in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `POST /detect` (and anything else that publishes the NDJSON format).
    Detect,
    /// `POST /api/v1/write`.
    RemoteWrite,
    /// `POST /api/v2/write` and `POST /write`.
    LineProtocol,
}

impl Origin {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Detect => "detect",
            Origin::RemoteWrite => "remote_write",
            Origin::LineProtocol => "line_protocol",
        }
    }

    /// The origin a message's header names; `Detect` without one.
    pub fn from_header(value: Option<&str>) -> Option<Origin> {
        match value {
            None | Some("detect") => Some(Origin::Detect),
            Some("remote_write") => Some(Origin::RemoteWrite),
            Some("line_protocol") => Some(Origin::LineProtocol),
            Some(_) => None,
        }
    }
}

/// Why a post was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// NATS is unreachable, or did not acknowledge in time.
    #[error("the cluster's NATS server is unreachable ({0}); nothing was accepted, retry later")]
    Unavailable(String),
}

/// Groups `points` by partition into NDJSON messages of at most
/// [`MAX_MESSAGE_BYTES`], filling a missing timestamp with `now`. Returns
/// (partition, body) pairs, by partition, in point order within each.
pub fn messages(partitions: u32, points: &[DataPoint<'_>], now: f64) -> Vec<(u32, Vec<u8>)> {
    let mut groups: Vec<Vec<Vec<u8>>> = vec![Vec::new(); partitions.max(1) as usize];
    let limit = MAX_MESSAGE_BYTES - MESSAGE_ROOM;
    for point in points {
        let partition = super::partition::partition_of(&point.series, partitions) as usize;
        let bodies = &mut groups[partition];
        if bodies
            .last()
            .is_none_or(|body| body.len() > limit - 512 - point.series.len())
        {
            bodies.push(Vec::with_capacity(4096));
        }
        let body = bodies.last_mut().expect("just pushed");
        let filled = DataPoint {
            timestamp: Some(point.timestamp.unwrap_or(now)),
            ..point.clone()
        };
        filled.write_json(body);
        body.push(b'\n');
    }
    groups
        .into_iter()
        .enumerate()
        .flat_map(|(partition, bodies)| bodies.into_iter().map(move |b| (partition as u32, b)))
        .collect()
}

/// Publishes `points` through `member` and waits for JetStream's
/// acknowledgements (at most [`ACK_TIMEOUT`]); returns how many messages
/// were published.
pub async fn publish(
    member: &Member,
    points: &[DataPoint<'_>],
    origin: Origin,
    now: f64,
) -> Result<usize, PublishError> {
    let Some(connection) = member.connection().filter(|_| member.connected()) else {
        member
            .stats
            .publish_failures
            .fetch_add(1, Ordering::Relaxed);
        return Err(PublishError::Unavailable("not connected".into()));
    };
    let sent = publish_points(
        &connection.js,
        &member.names,
        member.config.partitions,
        points,
        origin,
        now,
        || {
            member
                .stats
                .published_messages
                .fetch_add(1, Ordering::Relaxed);
        },
    );
    let result = match tokio::time::timeout(ACK_TIMEOUT, sent).await {
        Ok(result) => result.map_err(PublishError::Unavailable),
        Err(_) => Err(PublishError::Unavailable(format!(
            "no acknowledgement within {} s",
            ACK_TIMEOUT.as_secs()
        ))),
    };
    if result.is_err() {
        member
            .stats
            .publish_failures
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Publishes `points`, posted in `origin`'s format, to their partitions
/// of the cluster under `names` with `partitions` partitions (see
/// [`messages`]), then waits for JetStream's acknowledgement of each,
/// calling `acknowledged` for each one; returns how many messages were
/// published. Shared by members and by anomaly-generator's `nats://`
/// target.
pub async fn publish_points(
    js: &async_nats::jetstream::Context,
    names: &Names,
    partitions: u32,
    points: &[DataPoint<'_>],
    origin: Origin,
    now: f64,
    mut acknowledged: impl FnMut(),
) -> Result<usize, String> {
    let bodies = messages(partitions, points, now);
    let count = bodies.len();
    let mut acks = Vec::with_capacity(count);
    for (partition, body) in bodies {
        let mut headers = HeaderMap::new();
        if origin != Origin::Detect {
            headers.insert(ORIGIN_HEADER, origin.as_str());
        }
        let ack = js
            .publish_with_headers(names.points_subject(partition), headers, Bytes::from(body))
            .await
            .map_err(|e| e.to_string())?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| e.to_string())?;
        acknowledged();
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::config::ClusterConfig;
    use crate::ingest::parse_ndjson_body;

    #[test]
    fn points_go_to_their_partition_with_a_timestamp() {
        let member = Member::new(
            ClusterConfig {
                nats_url: "nats://127.0.0.1:4222".into(),
                partitions: 8,
                ..ClusterConfig::default()
            },
            "m".into(),
        );
        let points: Vec<DataPoint<'_>> = (0..100)
            .map(|i| DataPoint {
                value: f64::from(i),
                timestamp: (i % 2 == 0).then_some(1_700_000_000.0 + f64::from(i)),
                series: Cow::Owned(format!("s{}", i % 10)),
                seq: Some(i as u64),
            })
            .collect();
        let bodies = messages(member.config.partitions, &points, 42.5);
        let mut seen = 0;
        for (partition, body) in &bodies {
            for point in parse_ndjson_body(body).unwrap() {
                assert_eq!(member.partition_of(&point.series), *partition);
                let original = &points[point.seq.unwrap() as usize];
                assert_eq!(point.value, original.value);
                assert_eq!(point.timestamp, Some(original.timestamp.unwrap_or(42.5)));
                seen += 1;
            }
        }
        assert_eq!(seen, 100);
        // Within one series, the order is kept.
        for (_, body) in &bodies {
            let seqs: Vec<u64> = parse_ndjson_body(body)
                .unwrap()
                .iter()
                .filter(|p| p.series == "s3")
                .map(|p| p.seq.unwrap())
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        }
    }

    #[test]
    fn big_batches_are_split_below_the_message_limit() {
        let member = Member::new(
            ClusterConfig {
                partitions: 1,
                ..ClusterConfig::default()
            },
            "m".into(),
        );
        let name = "x".repeat(200);
        let points: Vec<DataPoint<'_>> = (0..20_000)
            .map(|i| DataPoint {
                value: f64::from(i) * 1.000_000_1,
                timestamp: Some(1_700_000_000.123_456),
                series: Cow::Borrowed(name.as_str()),
                seq: Some(i as u64 + 1),
            })
            .collect();
        let bodies = messages(member.config.partitions, &points, 0.0);
        assert!(bodies.len() > 3, "{} messages", bodies.len());
        assert!(
            bodies
                .iter()
                .all(|(_, b)| b.len() <= MAX_MESSAGE_BYTES - MESSAGE_ROOM)
        );
        let total: usize = bodies
            .iter()
            .map(|(_, b)| parse_ndjson_body(b).unwrap().len())
            .sum();
        assert_eq!(total, 20_000);
    }
}
