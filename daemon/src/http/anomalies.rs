//! `GET /anomalies` and `GET /episodes`: the recent anomalies and
//! episodes, filtered by the query string.

use hyper::{Response, StatusCode};

use super::query::{parse_anomalies_query, parse_episodes_query};
use super::reply::{ResponseBody, error, json};
use crate::state::AppState;

/// `GET /episodes?series=&series_glob=&since=&until=&limit=&open=`: newest
/// first.
pub(super) fn episodes(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    match parse_episodes_query(query.unwrap_or("")) {
        Ok(q) => json(StatusCode::OK, &state.table.episodes(&q)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// `GET /anomalies?limit=&series=&series_glob=&since=&until=&episode=`.
pub(super) fn anomalies(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    match parse_anomalies_query(query.unwrap_or("")) {
        Ok(q) => json(StatusCode::OK, &state.recent.query(&q)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}
