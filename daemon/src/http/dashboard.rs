//! The dashboard page (`GET /`) and its two assets, compiled into the
//! binary: it works with no internet and no files beside the daemon. The
//! page reads `/series`, `/series/{name}` and `/anomalies`, and stays live
//! with `/events`.

use hyper::header::{self, HeaderValue};
use hyper::{Method, Response};

use super::reply::{ResponseBody, method_not_allowed, whole};

/// A file of the dashboard: its body and content type.
pub(super) struct Asset {
    body: &'static str,
    content_type: &'static str,
}

/// The dashboard file served at `path`, if it is one.
pub(super) fn file(path: &str) -> Option<Asset> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (
            include_str!("dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
        "/dashboard.css" => (
            include_str!("dashboard/dashboard.css"),
            "text/css; charset=utf-8",
        ),
        "/dashboard.js" => (
            include_str!("dashboard/dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// `asset` in reply to `method` (GET and HEAD; 405 for others).
pub(super) fn serve(method: &Method, asset: Asset) -> Response<ResponseBody> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return method_not_allowed("GET, HEAD");
    }
    let mut response = Response::new(whole(asset.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // A new daemon version serves new assets: the browser revalidates.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
