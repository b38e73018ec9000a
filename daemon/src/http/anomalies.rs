//! `GET /anomalies` and `GET /episodes`: the recent anomalies and
//! episodes, filtered by the query string.

use hyper::{Response, StatusCode};

use super::query::{parse_anomalies_query, parse_episodes_query};
use super::reply::{ResponseBody, error, json};
use crate::state::AppState;

/// `GET /episodes?series=&series_glob=&since=&until=&limit=&open=`: newest
/// first; on a cluster member, the whole cluster's, as followed from the
/// anomalies stream.
pub(super) fn episodes(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    let q = match parse_episodes_query(query.unwrap_or("")) {
        Ok(q) => q,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let episodes = match state.cluster.get() {
        Some(member) => member
            .episodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .query(&q),
        None => state.table.episodes(&q),
    };
    json(StatusCode::OK, &episodes)
}

/// `GET /anomalies?limit=&series=&series_glob=&since=&until=&episode=`.
pub(super) fn anomalies(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    match parse_anomalies_query(query.unwrap_or("")) {
        Ok(q) => json(StatusCode::OK, &state.recent.query(&q)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}
