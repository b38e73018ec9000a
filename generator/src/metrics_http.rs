//! The generator's `GET /metrics` endpoint (`listen`): a plain hyper
//! server with no limits beyond the kernel's, since it answers one small
//! page.

use std::convert::Infallible;
use std::sync::Arc;

use anomalyd::http::reply::{error, prometheus_text};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::run::Generator;

/// Serves `GET /metrics` until `stop` is cancelled; connections are tracked
/// by `tasks` and dropped at `stop`.
pub async fn serve(
    listener: TcpListener,
    generator: Arc<Generator>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "Failed to accept a metrics connection.");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let generator = generator.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let response = if req.uri().path() == "/metrics" {
                prometheus_text(generator.render_metrics())
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no such endpoint `{}`; try GET /metrics", req.uri().path()),
                )
            };
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let stop = stop.clone();
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}
