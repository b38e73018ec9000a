//! The HTTP edge: the accept loop with its limits and timeouts, routing,
//! and one handler file per group of endpoints.
//!
//! - [`server`]: accept loop, connection cap, idle watchdog.
//! - [`listener`]: TCP, unix and systemd-passed sockets.
//! - [`gate`]: tokens, the login form and rate limits, before routing.
//! - [`router`]: path and method to handler.
//! - `detect`, `anomalies`, `series`, `events`, `health`: the handlers of
//!   `POST /detect`, `GET /anomalies`, `GET /series[/{name}]`,
//!   `GET /events` (with the publisher of its shared events), and
//!   `/healthz`, `/ready`, `/metrics`.
//! - `write`: the monitoring stack's write endpoints (Prometheus
//!   remote-write), which share `detect`'s path to the series table.
//! - `cluster`: a cluster member's publishing of posted points, and
//!   `GET /cluster`.
//! - `dashboard`: the page at `/` and its assets (in `dashboard/`,
//!   compiled in).
//! - [`query`]: query-string parsing; [`body`]: reading request bodies;
//!   [`reply`]: JSON replies and the shared error answers.
//!
//! This folder owns the wire: it turns requests into calls on
//! [`crate::state::AppState`] and the results into replies. It must not
//! hold detection logic, parse point formats itself (that is
//! [`crate::ingest`]) or touch files.
//!
//! Handlers never return an error to hyper: every failure becomes a JSON
//! `{"error": "..."}` reply with the right status, because an `Err` from the
//! service would end the connection instead of answering.

mod anomalies;
pub mod body;
mod cluster;
mod dashboard;
mod detect;
mod events;
pub mod gate;
mod health;
pub mod listener;
pub mod query;
pub mod reply;
pub mod router;
mod series;
pub mod server;
mod write;

pub use events::publish as publish_events;
pub use listener::{BoundAddr, Listener};
pub use reply::{ResponseBody, error, json};
pub use router::{route, route_admin};
pub use server::{Role, serve};
