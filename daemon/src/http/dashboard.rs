//! The dashboard page (`GET /`) and its two assets, compiled into the
//! binary: it works with no internet and no files beside the daemon. The
//! page reads `/series`, `/series/{name}` and `/anomalies`, and stays live
//! with `/events`.

use hyper::Response;
use hyper::header::{self, HeaderValue};

use super::reply::{ResponseBody, whole};

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");

/// The asset at `path` (`/`, `/dashboard.css` or `/dashboard.js`), if it
/// is one.
pub(super) fn asset(path: &str) -> Option<Response<ResponseBody>> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        "/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(whole(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A new daemon version serves new assets: the browser revalidates.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

/// Whether `path` is one of the dashboard's assets.
pub(super) fn is_asset(path: &str) -> bool {
    matches!(
        path,
        "/" | "/index.html" | "/dashboard.css" | "/dashboard.js"
    )
}
