//! `POST /detect`: one point, a JSON array or NDJSON, applied to the series
//! table; anomalies are in the log before the reply says `logged: true`.

use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{BodyError, BodyFormat, body_format, read_body};
use super::reply::{ResponseBody, error, json, json_bytes, too_large};
use crate::api::{AnomalyRecord, BatchReply, EpisodeEvent, EpisodeRecord, PointReply, STATUS_OK};
use crate::detect::{Direction, Verdict};
use crate::ingest::{self, DataPoint, PointError, PointErrorKind};
use crate::series::{ClosedEpisodes, Observation};
use crate::state::AppState;

/// `POST /detect`.
pub(super) async fn detect(req: Request<Incoming>, state: &AppState) -> Response<ResponseBody> {
    let config = state.config();
    let max_body = config.server.max_body_bytes;
    let format = match body_format(req.headers()) {
        Ok(format) => format,
        Err(content_type) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type `{content_type}`: send `application/json` (an object or an array of objects) or `application/x-ndjson` (one object per line)"
                ),
            );
        }
    };
    let body = match read_body(req.into_body(), max_body, config.server.idle_timeout).await {
        Ok(body) => body,
        Err(BodyError::TimedOut) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body".into(),
            );
        }
        Err(BodyError::TooLarge) => return too_large(max_body),
        Err(BodyError::Read(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
    };
    let single =
        format == BodyFormat::Json && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if single {
        detect_point(&body, state).await
    } else {
        detect_batch(&body, format, state).await
    }
}

/// The error reply for a body that does not parse.
fn parse_error(e: PointError) -> Response<ResponseBody> {
    let status = match e.kind {
        PointErrorKind::Malformed => StatusCode::BAD_REQUEST,
        PointErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, e.message)
}

/// `POST /detect` with one JSON object: no vectors, one lock.
async fn detect_point(body: &[u8], state: &AppState) -> Response<ResponseBody> {
    let point = match ingest::parse_json_object(body) {
        Ok(point) => point,
        Err(e) => return parse_error(e),
    };
    if let Err(message) = ingest::validate_point(&point) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let mut closed = Vec::new();
    let observation = match state.table.observe_point_into(&point, &mut closed) {
        Ok(observation) => observation,
        Err(e) => return error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    state.metrics.points.fetch_add(1, Ordering::Relaxed);
    if observation.duplicate {
        state.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    let record = observation.record(&point);
    if observation.episode.event.is_some() {
        let opened = observation.opened(&point);
        let closed: Vec<EpisodeRecord> = closed.into_iter().map(|(_, r)| r).collect();
        state.report_episodes(opened.as_slice(), &closed);
    }
    let logged = match record {
        Some(record) => state.record_anomalies(std::slice::from_ref(&record)).await,
        None => true,
    };
    let reply = point_reply(&point, &observation, logged).to_json();
    json_bytes(StatusCode::OK, reply)
}

/// `POST /detect` with a JSON array or NDJSON: applied whole or not at all.
async fn detect_batch(body: &[u8], format: BodyFormat, state: &AppState) -> Response<ResponseBody> {
    let parsed = match format {
        BodyFormat::Json => ingest::parse_json_body(body),
        BodyFormat::Ndjson => ingest::parse_ndjson_body(body),
    };
    let points = match parsed {
        Ok(points) => points,
        Err(e) => return parse_error(e),
    };
    // NDJSON was validated line by line as it was parsed.
    if format == BodyFormat::Json
        && let Err(e) = ingest::validate_all(&points)
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, e.message);
    }
    let mut closed = Vec::new();
    let observations = match state.table.observe_batch_into(&points, &mut closed) {
        Ok(observations) => observations,
        Err(e) => return error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    state
        .metrics
        .points
        .fetch_add(points.len() as u64, Ordering::Relaxed);
    let records = anomaly_records(&points, &observations);
    let (episodes_opened, episodes_closed) = episode_changes(&points, &observations, closed);
    state.report_episodes(&episodes_opened, &episodes_closed);
    let logged = state.record_anomalies(&records).await;
    let duplicates = observations.iter().filter(|o| o.duplicate).count();
    state
        .metrics
        .duplicates
        .fetch_add(duplicates as u64, Ordering::Relaxed);
    json(
        StatusCode::OK,
        &BatchReply {
            status: STATUS_OK.into(),
            received: points.len(),
            duplicates,
            anomalies: records,
            episodes_opened,
            episodes_closed,
            logged,
        },
    )
}

/// The records of the anomalous points of a batch, in batch order.
fn anomaly_records(points: &[DataPoint<'_>], observations: &[Observation]) -> Vec<AnomalyRecord> {
    points
        .iter()
        .zip(observations)
        .filter_map(|(point, obs)| obs.record(point))
        .collect()
}

/// The episodes a batch opened and closed (`closed`, from the table), in
/// batch order.
fn episode_changes(
    points: &[DataPoint<'_>],
    observations: &[Observation],
    mut closed: ClosedEpisodes,
) -> (Vec<EpisodeRecord>, Vec<EpisodeRecord>) {
    let opened = points
        .iter()
        .zip(observations)
        .filter(|(_, obs)| obs.episode.event == Some(EpisodeEvent::Opened))
        .filter_map(|(point, obs)| obs.opened(point))
        .collect();
    closed.sort_by_key(|&(index, _)| index);
    (opened, closed.into_iter().map(|(_, r)| r).collect())
}

/// The reply to a single point.
fn point_reply(point: &DataPoint<'_>, obs: &Observation, logged: bool) -> PointReply {
    let baseline = match obs.verdict {
        Verdict::Normal(b) | Verdict::Anomaly(b, _) if !obs.duplicate => Some(b),
        _ => None,
    };
    let shows_lower = matches!(obs.direction, Direction::Lower | Direction::Both);
    PointReply {
        status: STATUS_OK.into(),
        series: point.series.to_string(),
        duplicate: obs.duplicate,
        warming_up: !obs.duplicate && matches!(obs.verdict, Verdict::WarmingUp { .. }),
        anomaly: !obs.duplicate && matches!(obs.verdict, Verdict::Anomaly(..)),
        mean: baseline.map(|b| b.mean),
        std_dev: baseline.map(|b| b.std_dev),
        threshold: baseline.map(|b| b.threshold),
        lower_threshold: if shows_lower {
            baseline.map(|b| b.lower_threshold)
        } else {
            None
        },
        score: baseline.map(|b| b.score(point.value)),
        episode: obs.episode.episode,
        episode_event: obs.episode.event,
        logged,
    }
}
