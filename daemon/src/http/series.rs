//! `GET /series` and `GET /series/{name}`: the series list and one series
//! with its recent history, for the dashboard and for scripts. Both answer
//! 404 when `[server] dashboard = false`.

use super::query::{decode_path_component, parse_series_query};
use super::reply::{ResponseBody, error, json};
use crate::state::AppState;
use hyper::{Response, StatusCode};

/// `GET /series?limit=&sort=&series_glob=`.
pub(super) fn list(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    match parse_series_query(query.unwrap_or("")) {
        Ok(q) => json(StatusCode::OK, &state.table.list(&q)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// `GET /series/{name}`, with `name` percent-encoded as in the path (a `/`
/// in a name may be sent as `%2F` or as is).
pub(super) fn detail(encoded_name: &str, state: &AppState) -> Response<ResponseBody> {
    let name = match decode_path_component(encoded_name) {
        Some(name) if !name.is_empty() => name,
        Some(_) => {
            return error(
                StatusCode::NOT_FOUND,
                "no series name after /series/; GET /series lists them".into(),
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("series name `{encoded_name}` is not valid percent-encoded UTF-8"),
            );
        }
    };
    match state.table.detail(&name) {
        Some(detail) => json(StatusCode::OK, &detail),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no series `{name}`: it has received no point, or was forgotten after its series_ttl; GET /series lists them"
            ),
        ),
    }
}
