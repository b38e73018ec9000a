//! The gate in front of the router: who the client is, whether it may use
//! the route it asks for (`[server] auth_token_file`), and, for the write
//! routes, whether it is within `[server] rate_limit`.
//!
//! With tokens on, every route needs a token except `/healthz`, `/ready`,
//! `/login`, `/logout`, and `/metrics` unless `metrics_require_auth`. The
//! dashboard's session cookie (set by `POST /login`, cleared by `POST
//! /logout`) holds a value derived from the token, not the token, and
//! counts on GET and HEAD only, so a page elsewhere cannot make a browser
//! post points. A browser asking for the page without a token gets the
//! login form.

use std::time::Instant;

use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};

use super::body::read_body;
use super::reply::{ResponseBody, error, whole};
use crate::access::credentials::{self, COOKIE_NAME};
use crate::access::{ClientKey, Limit, Peer, TokenId};
use crate::config::ServerConfig;
use crate::metrics::BadRequest;
use crate::state::AppState;

/// Who sent a request, as the gate found it; handlers read it from the
/// request's extensions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Client {
    /// The other end of the connection.
    pub peer: Peer,
    /// The token it presented, when tokens are on and it presented one.
    pub token: Option<TokenId>,
    /// `[server] rate_limit` and `rate_burst` as the request found them;
    /// `None`: no limit.
    pub limit: Option<Limit>,
}

impl Client {
    /// Whose rate-limit bucket the client draws from: its token's, else
    /// its address's (its user id's on a unix socket).
    pub fn key(&self) -> ClientKey {
        match self.token {
            Some(token) => ClientKey::Token(token),
            None => ClientKey::of_peer(self.peer),
        }
    }
}

/// How long the dashboard's session cookie lasts: a week.
const COOKIE_MAX_AGE_SECS: u64 = 7 * 86_400;

/// Whether `method path` may be used with no token.
fn is_open(method: &Method, path: &str, server: &ServerConfig) -> bool {
    match path {
        "/healthz" | "/ready" | "/login" | "/logout" => true,
        "/metrics" => !server.metrics_require_auth,
        // hyper answers `OPTIONS *` itself; nothing else is open.
        _ => method == Method::OPTIONS && path == "*",
    }
}

/// A request the gate turned away.
pub struct Refused {
    /// The 401 reply.
    pub response: Response<ResponseBody>,
    /// Why, for the daemon's log (the reply's message).
    pub reason: &'static str,
}

/// Checks the request's token: `Ok` with the token's id (`None` when
/// tokens are off or the route is open), or the 401 reply (the login form
/// for the dashboard's page, when `dashboard` says the address serves it).
pub fn authenticate(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    dashboard: bool,
    server: &ServerConfig,
) -> Result<Option<TokenId>, Box<Refused>> {
    let Some(tokens) = &server.auth_tokens else {
        return Ok(None);
    };
    if is_open(method, path, server) {
        return Ok(None);
    }
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let problem = if let Some(value) = headers.get(header::AUTHORIZATION) {
        match credentials::from_authorization(value.as_bytes()) {
            Ok(token) => match tokens.check(&token) {
                Some(id) => return Ok(Some(id)),
                None => {
                    "the token is not valid: it is not in [server] auth_token_file (it may have been rotated out)"
                }
            },
            Err(problem) => problem,
        }
    } else if let Some(session) = reading.then(|| session_cookie(headers)).flatten() {
        match tokens.check_session(&session) {
            Some(id) => return Ok(Some(id)),
            None => "the dashboard session's token is no longer valid; sign in again at /",
        }
    } else {
        "this endpoint needs a token: send `Authorization: Bearer <token>` with a token of [server] auth_token_file"
    };
    let dashboard_page = dashboard && reading && matches!(path, "/" | "/index.html");
    Err(Box::new(Refused {
        response: if dashboard_page {
            login_page(StatusCode::UNAUTHORIZED, "")
        } else {
            unauthorized(problem)
        },
        reason: problem,
    }))
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|value| credentials::from_cookie_header(value.as_bytes()))
}

/// 401 with `WWW-Authenticate: Bearer` and `message`.
fn unauthorized(message: &str) -> Response<ResponseBody> {
    let mut response = error(StatusCode::UNAUTHORIZED, message.to_owned());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"anomalyd\""),
    );
    response
}

/// The login form, with `message` above it.
fn login_page(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let page = include_str!("dashboard/login.html").replace("<!--MESSAGE-->", message);
    let mut response = Response::new(whole(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"anomalyd\""),
        );
    }
    response
}

/// Largest login form accepted.
const MAX_LOGIN_BODY: usize = 4096;

/// `GET /login` (the form) and `POST /login` (the form's target): a valid
/// token sets the session cookie and goes to the dashboard.
pub async fn login(
    req: hyper::Request<hyper::body::Incoming>,
    state: &AppState,
) -> Response<ResponseBody> {
    let config = state.config();
    let server = &config.server;
    match *req.method() {
        Method::GET | Method::HEAD => return login_page(StatusCode::OK, ""),
        Method::POST => {}
        _ => return super::reply::method_not_allowed("GET, HEAD, POST"),
    }
    let Some(tokens) = server.auth_tokens.clone() else {
        return see_other("/", None);
    };
    let peer = req
        .extensions()
        .get::<Client>()
        .map_or(Peer::Local { uid: None }, |client| client.peer);
    let body = match read_body(req.into_body(), MAX_LOGIN_BODY, server.header_read_timeout).await {
        Ok(body) => body,
        Err(_) => {
            return login_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read; try again.",
            );
        }
    };
    let token = form_field(&body, b"token").unwrap_or_default();
    let Some(session) = tokens.session_for(&token) else {
        state.refusals.record(
            peer,
            "POST",
            "/login",
            "the dashboard's sign-in form was sent a token that is not in [server] auth_token_file",
        );
        return login_page(StatusCode::UNAUTHORIZED, "That token is not valid.");
    };
    see_other(
        "/",
        Some(session_cookie_header(server, &session, COOKIE_MAX_AGE_SECS)),
    )
}

/// `POST /logout`: clears the session cookie and goes back to the page
/// (which shows the login form).
pub fn logout(method: &Method, server: &ServerConfig) -> Response<ResponseBody> {
    if *method != Method::POST {
        return super::reply::method_not_allowed("POST");
    }
    see_other("/", Some(session_cookie_header(server, "", 0)))
}

/// A `Set-Cookie` value for the session cookie holding `value` for
/// `max_age` seconds (0: delete it).
fn session_cookie_header(server: &ServerConfig, value: &str, max_age: u64) -> String {
    // Under TLS the browser must never send the cookie over plain HTTP.
    let secure = if server.tls.is_some() { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
        let spaced: Vec<u8> = value
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        Some(percent_encoding::percent_decode(&spaced).collect())
    })
}

/// 303 to `location`, setting `cookie` when given.
fn see_other(location: &'static str, cookie: Option<String>) -> Response<ResponseBody> {
    let mut response = Response::new(whole(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static(location));
    if let Some(cookie) = cookie
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

/// Takes `points` from the bucket of `client` under the limit the gate
/// recorded for it (none: admitted), or answers 429 with
/// `Retry-After` (nothing of the request is applied).
pub fn admit(
    state: &AppState,
    client: Option<&Client>,
    points: usize,
) -> Result<(), Box<Response<ResponseBody>>> {
    let (Some(client), true) = (client, points > 0) else {
        return Ok(());
    };
    let Some(limit) = client.limit else {
        return Ok(());
    };
    let Err(wait) = state
        .limiter
        .admit(client.key(), points, limit, Instant::now())
    else {
        return Ok(());
    };
    state.metrics.rate_limited(points as u64);
    let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
    let who = match (client.token, client.peer) {
        (Some(_), _) => "this token".to_owned(),
        (None, Peer::Ip(addr)) => format!("client {addr}"),
        (None, Peer::Local { uid: Some(uid) }) => format!("uid {uid} on the unix socket"),
        (None, Peer::Local { uid: None }) => "the unix socket's clients".to_owned(),
    };
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{who} is over [server] rate_limit ({} points/s, bursts of {}); nothing of these {points} points was applied; retry in {retry_after} s, send less, or raise the limit",
            limit.rate, limit.burst
        ),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after.to_string()).expect("digits are a valid header"),
    );
    response.extensions_mut().insert(BadRequest::RateLimited);
    Err(Box::new(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=ab%3Bc+d", b"token").unwrap(),
            b"ab;c d"
        );
        assert_eq!(form_field(b"tokens=1", b"token"), None);
    }
}
