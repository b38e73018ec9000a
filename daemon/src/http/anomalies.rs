//! `GET /anomalies`: the recent anomalies, filtered by the query string.

use hyper::{Response, StatusCode};

use super::query::parse_anomalies_query;
use super::reply::{ResponseBody, error, json};
use crate::state::AppState;

/// `GET /anomalies?limit=&series=&since=`.
pub(super) fn anomalies(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    match parse_anomalies_query(query.unwrap_or("")) {
        Ok(q) => json(StatusCode::OK, &state.recent.query(&q)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}
