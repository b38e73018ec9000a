//! `POST /detect`: one point, a JSON array or NDJSON, applied to the series
//! table; anomalies are in the log before the reply says `logged: true`.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{BodyFormat, body_format, read_request_body};
use super::gate::{self, Client};
use super::reply::{ResponseBody, error, json, json_bytes};
use crate::alert::Opening;
use crate::api::{BatchReply, EpisodeRecord, PointReply, STATUS_OK};
use crate::cluster::producer::Origin;
use crate::detect::{Direction, Verdict};
use crate::ingest::{self, DataPoint, PointError, PointErrorKind};
use crate::metrics::Format;
use crate::series::{Duplicates, Observation};
use crate::state::{AppState, AppliedBatch};

/// `POST /detect`.
pub(super) async fn detect(req: Request<Incoming>, state: &AppState) -> Response<ResponseBody> {
    let config = state.config();
    let client = req.extensions().get::<Client>().copied();
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
    let body = match read_request_body(req.into_body(), &config.server).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let single =
        format == BodyFormat::Json && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if single {
        detect_point(&body, client, state).await
    } else {
        detect_batch(&body, format, client, state).await
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
async fn detect_point(
    body: &[u8],
    client: Option<Client>,
    state: &AppState,
) -> Response<ResponseBody> {
    let point = match ingest::parse_json_object(body) {
        Ok(point) => point,
        Err(e) => return parse_error(e),
    };
    if let Err(message) = ingest::validate_point(&point) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    if let Some(member) = state.cluster.get() {
        let points = std::slice::from_ref(&point);
        return super::cluster::publish(member, points, Origin::Detect, client, state).await;
    }
    if let Err(refused) = gate::admit(state, client.as_ref(), 1) {
        return *refused;
    }
    let mut closed = Vec::new();
    let observation = match state.table.observe_point_into(&point, &mut closed) {
        Ok(observation) => observation,
        Err(e) => return error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    };
    state
        .metrics
        .points(Format::Detect, 1, u64::from(observation.duplicate));
    let record = observation.record(&point);
    if observation.episode.event.is_some() {
        let opened = observation.opened(&point);
        let openings: Vec<Opening> = record.iter().map(Opening::from).collect();
        let closed: Vec<EpisodeRecord> = closed.into_iter().map(|(_, r)| r).collect();
        state.report_episodes(opened.as_slice(), &openings, &closed);
    }
    let logged = match record {
        Some(record) => state.record_anomalies(std::slice::from_ref(&record)).await,
        None => true,
    };
    let reply = point_reply(&point, &observation, logged).to_json();
    json_bytes(StatusCode::OK, reply)
}

/// `POST /detect` with a JSON array or NDJSON: applied whole or not at all.
async fn detect_batch(
    body: &[u8],
    format: BodyFormat,
    client: Option<Client>,
    state: &AppState,
) -> Response<ResponseBody> {
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
    if let Some(member) = state.cluster.get() {
        return super::cluster::publish(member, &points, Origin::Detect, client, state).await;
    }
    let applied =
        match apply_points(&points, Duplicates::BySeq, Format::Detect, client, state).await {
            Ok(applied) => applied,
            Err(response) => return response,
        };
    json(
        StatusCode::OK,
        &BatchReply {
            status: STATUS_OK.into(),
            received: points.len(),
            duplicates: applied.duplicates,
            anomalies: applied.records,
            episodes_opened: applied.episodes_opened,
            episodes_closed: applied.episodes_closed,
            logged: applied.logged,
        },
    )
}

/// Applies `points` (all or none) once `client` is within its rate limit,
/// as [`AppState::apply_points`] does. The error is the 429 reply when
/// `client` is over its rate limit or `max_series` would be exceeded.
pub(super) async fn apply_points(
    points: &[DataPoint<'_>],
    duplicates: Duplicates,
    format: Format,
    client: Option<Client>,
    state: &AppState,
) -> Result<AppliedBatch, Response<ResponseBody>> {
    gate::admit(state, client.as_ref(), points.len()).map_err(|refused| *refused)?;
    state
        .apply_points(points, duplicates, format)
        .await
        .map_err(|e| error(StatusCode::TOO_MANY_REQUESTS, e.to_string()))
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
