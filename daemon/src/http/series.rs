//! `GET /series` and `GET /series/{name}`: the series list and one series
//! with its recent history, for the dashboard and for scripts. Both answer
//! 404 when `[server] dashboard = false`.

use super::cluster::{ask, ask_lists};
use super::query::parse_series_query;
use super::reply::{ResponseBody, error, json, json_bytes};
use crate::cluster::gather::Question;
use crate::percent;
use crate::series::{SeriesSummary, SeriesTable};
use crate::state::AppState;
use hyper::{Response, StatusCode};

/// `GET /series?limit=&sort=&series_glob=`; on a cluster member, gathered
/// from every member.
pub(super) async fn list(query: Option<&str>, state: &AppState) -> Response<ResponseBody> {
    let raw = query.unwrap_or("");
    let q = match parse_series_query(raw) {
        Ok(q) => q,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(member) = state.cluster.get() else {
        return json(StatusCode::OK, &state.table.list(&q));
    };
    match ask_lists::<SeriesSummary>(member, &Question::List(raw.to_owned())).await {
        Ok(lists) => json(StatusCode::OK, &SeriesTable::merge_lists(&q, lists)),
        Err(unavailable) => unavailable,
    }
}

/// `GET /series/{name}`, with `name` percent-encoded as in the path (a `/`
/// in a name may be sent as `%2F` or as is); on a cluster member, asked of
/// the member that holds it.
pub(super) async fn detail(encoded_name: &str, state: &AppState) -> Response<ResponseBody> {
    let name = match percent::decode(encoded_name) {
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
    if let Some(member) = state.cluster.get() {
        let answers = match ask(member, &Question::Detail(name.clone())).await {
            Ok(answers) => answers,
            Err(unavailable) => return unavailable,
        };
        if let Some(found) = answers.into_iter().find(|a| a.as_ref() != b"null") {
            return json_bytes(StatusCode::OK, found.to_vec());
        }
        return no_such_series(&name);
    }
    match state.table.detail(&name) {
        Some(detail) => json(StatusCode::OK, &detail),
        None => no_such_series(&name),
    }
}

/// 404 for an unknown series.
fn no_such_series(name: &str) -> Response<ResponseBody> {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no series `{name}`: it has received no point, or was forgotten after its series_ttl; GET /series lists them"
        ),
    )
}
