//! The dashboard page (`GET /`) and its two assets, compiled into the
//! binary: it works with no internet and no files beside the daemon. The
//! page reads `/series`, `/series/{name}` and `/anomalies`, and stays live
//! with `/events`. With tokens on, the page shows a "Sign out" button.

use std::sync::LazyLock;

use hyper::header::{self, HeaderValue};
use hyper::{Method, Response};

use super::reply::{ResponseBody, method_not_allowed, whole};

/// A file of the dashboard: its body and content type.
pub(super) struct Asset {
    body: &'static str,
    content_type: &'static str,
}

/// The page as written: its sign-out form is hidden.
const INDEX: &str = include_str!("dashboard/index.html");

/// The hidden sign-out form in [`INDEX`].
const HIDDEN_SIGN_OUT: &str = r#"<form id="sign-out" method="post" action="/logout" hidden>"#;

/// The page with its sign-out form shown, for when tokens are on.
static INDEX_WITH_SIGN_OUT: LazyLock<String> = LazyLock::new(|| {
    INDEX.replacen(
        HIDDEN_SIGN_OUT,
        r#"<form id="sign-out" method="post" action="/logout">"#,
        1,
    )
});

/// The dashboard file served at `path`, if it is one; `sign_out` shows
/// the page's "Sign out" button (tokens are on: the browser holds a
/// session cookie).
pub(super) fn file(path: &str, sign_out: bool) -> Option<Asset> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (
            if sign_out {
                INDEX_WITH_SIGN_OUT.as_str()
            } else {
                INDEX
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_out_button_shows_only_when_asked() {
        assert!(
            INDEX.contains(HIDDEN_SIGN_OUT),
            "the page lost its sign-out form"
        );
        let plain = file("/", false).unwrap().body;
        let signed_in = file("/", true).unwrap().body;
        assert!(plain.contains(HIDDEN_SIGN_OUT));
        assert!(!signed_in.contains(HIDDEN_SIGN_OUT));
        assert!(signed_in.contains(r#"action="/logout">"#));
    }
}
