//! `GET /healthz`, `GET /ready` and `GET /metrics`: what probes and
//! Prometheus read.

use hyper::{Response, StatusCode};
use serde::Serialize;

use super::reply::{ResponseBody, json, prometheus_text};
use crate::state::AppState;

/// `GET /metrics`: Prometheus text format 0.0.4.
pub(super) fn metrics(state: &AppState) -> Response<ResponseBody> {
    prometheus_text(state.metrics.render(&state.snapshot()))
}

/// Body of `/healthz` and `/ready`.
#[derive(Serialize)]
struct HealthReply {
    status: &'static str,
    /// `/healthz`: what is wrong but does not stop serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
    /// `/ready`: why the daemon is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<String>>,
}

/// `GET /healthz`: liveness. 200 while serving; lists any warnings.
pub(super) fn healthz(state: &AppState) -> Response<ResponseBody> {
    json(
        StatusCode::OK,
        &HealthReply {
            status: "ok",
            warnings: Some(state.problems()),
            reasons: None,
        },
    )
}

/// `GET /ready`: 503 with the reasons while the anomaly log cannot be
/// written. A failed reload does not count: the daemon keeps serving on
/// its previous configuration, and `/healthz` reports it.
pub(super) fn ready(state: &AppState) -> Response<ResponseBody> {
    let problems = state.not_ready_reasons();
    let (status, reply) = if problems.is_empty() {
        (
            StatusCode::OK,
            HealthReply {
                status: "ready",
                warnings: None,
                reasons: None,
            },
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            HealthReply {
                status: "not ready",
                warnings: None,
                reasons: Some(problems),
            },
        )
    };
    json(status, &reply)
}
