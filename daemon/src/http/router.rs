//! Routing: path and method to handler. Unknown paths get 404, known paths
//! with the wrong method 405 with an `Allow` header.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::reply::{ResponseBody, error, method_not_allowed};
use super::{anomalies, cluster, dashboard, detect, events, gate, health, series, write};
use crate::state::AppState;

/// Routes one request to its handler.
pub async fn route(req: Request<Incoming>, state: &Arc<AppState>) -> Response<ResponseBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/detect") => detect::detect(req, state).await,
        (_, "/detect") => method_not_allowed("POST"),
        (&Method::POST, "/api/v1/write") => write::remote_write(req, state).await,
        (_, "/api/v1/write") => method_not_allowed("POST"),
        (&Method::POST, "/api/v2/write") => {
            write::line_protocol(req, write::InfluxApi::V2, state).await
        }
        (&Method::POST, "/write") => write::line_protocol(req, write::InfluxApi::V1, state).await,
        (_, "/api/v2/write" | "/write") => method_not_allowed("POST"),
        (&Method::GET | &Method::HEAD, "/anomalies") => {
            anomalies::anomalies(req.uri().query(), state)
        }
        (_, "/anomalies") => method_not_allowed("GET, HEAD"),
        (&Method::GET | &Method::HEAD, "/episodes") => {
            anomalies::episodes(req.uri().query(), state)
        }
        (_, "/episodes") => method_not_allowed("GET, HEAD"),
        (&Method::GET | &Method::HEAD, "/cluster") => cluster::cluster(state),
        (_, "/cluster") => method_not_allowed("GET, HEAD"),
        (_, "/login") => gate::login(req, state).await,
        (method, "/logout") => gate::logout(method, &state.config().server),
        (_, path) if is_dashboard_path(path) && !state.config().server.dashboard => {
            dashboard_off(path)
        }
        (method, path)
            if let Some(asset) =
                dashboard::file(path, state.config().server.auth_tokens.is_some()) =>
        {
            dashboard::serve(method, asset)
        }
        (&Method::GET, "/events") => events::events(req.uri().query(), state),
        (_, "/events") => method_not_allowed("GET"),
        (&Method::GET | &Method::HEAD, "/series") => series::list(req.uri().query(), state).await,
        (_, "/series") => method_not_allowed("GET, HEAD"),
        (&Method::GET | &Method::HEAD, path) if path.starts_with("/series/") => {
            series::detail(&path["/series/".len()..], state).await
        }
        (_, path) if path.starts_with("/series/") => method_not_allowed("GET, HEAD"),
        (_, path) => health_routes(&req, state).unwrap_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint `{path}`; try POST /detect, POST /api/v1/write, POST /api/v2/write, GET /anomalies, /episodes, /series, /metrics, /healthz or /ready"
                ),
            )
        }),
    }
}

/// Whether `path` belongs to the dashboard: its page and assets,
/// `/series`, `/series/{name}` and `/events`.
fn is_dashboard_path(path: &str) -> bool {
    matches!(path, "/series" | "/events")
        || path.starts_with("/series/")
        || dashboard::file(path, false).is_some()
}

/// 404 for the dashboard's routes while `[server] dashboard = false`.
fn dashboard_off(path: &str) -> Response<ResponseBody> {
    error(
        StatusCode::NOT_FOUND,
        format!("`{path}` is part of the dashboard, which is off ([server] dashboard = false)"),
    )
}

/// Routes a request on the admin address (`[server] admin_listen`), which
/// serves only probes and metrics.
pub fn route_admin(req: Request<Incoming>, state: &AppState) -> Response<ResponseBody> {
    health_routes(&req, state).unwrap_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint `{}` on the admin address; it serves GET /healthz, /ready and /metrics (the rest is on [server] listen)",
                req.uri().path()
            ),
        )
    })
}

/// The probes and metrics both addresses serve; `None` for other paths.
fn health_routes(req: &Request<Incoming>, state: &AppState) -> Option<Response<ResponseBody>> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => health::metrics(state),
        (&Method::GET | &Method::HEAD, "/healthz") => health::healthz(state),
        (&Method::GET | &Method::HEAD, "/ready") => health::ready(state),
        (_, "/metrics" | "/healthz" | "/ready") => method_not_allowed("GET, HEAD"),
        _ => return None,
    };
    Some(response)
}
