//! Where a client's token is in a request: the `Authorization` header
//! (`Bearer`, `Token` as Telegraf's InfluxDB v2 output sends it, or the
//! password of `Basic` as its InfluxDB v1 output sends it), or the
//! dashboard's session cookie.

use std::borrow::Cow;

use base64::Engine as _;

/// The name of the dashboard's session cookie (set by `POST /login`; it
/// holds the token's session value, see [`super::tokens`]).
pub const COOKIE_NAME: &str = "anomalyd_session";

/// The token an `Authorization` header value carries, or why it carries
/// none (a message for the 401 reply; it never repeats the value).
pub fn from_authorization(value: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], value[space + 1..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") || scheme.eq_ignore_ascii_case(b"token") {
        if rest.is_empty() {
            return Err("the Authorization header has no token after its scheme");
        }
        return Ok(Cow::Borrowed(rest));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "the Authorization: Basic credentials are not valid base64")?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or("the Authorization: Basic credentials have no `:` between user and password")?;
        return Ok(Cow::Owned(decoded[colon + 1..].to_vec()));
    }
    Err(
        "unsupported Authorization scheme; send `Authorization: Bearer <token>` (or `Token <token>`, or the token as the Basic password)",
    )
}

/// The session cookie's value in a `Cookie` header value, decoded.
pub fn from_cookie_header(value: &[u8]) -> Option<Vec<u8>> {
    value.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let value = pair
            .strip_prefix(COOKIE_NAME.as_bytes())?
            .strip_prefix(b"=")?;
        Some(percent_encoding::percent_decode(value).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> Result<Vec<u8>, &'static str> {
        from_authorization(header.as_bytes()).map(|t| t.into_owned())
    }

    #[test]
    fn every_scheme_telegraf_and_curl_send() {
        assert_eq!(token("Bearer abc").unwrap(), b"abc");
        assert_eq!(token("bearer   abc ").unwrap(), b"abc");
        assert_eq!(token("Token abc").unwrap(), b"abc");
        // curl -u telegraf:abc
        assert_eq!(token("Basic dGVsZWdyYWY6YWJj").unwrap(), b"abc");
        // A password with a colon keeps it.
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:a:b");
        assert_eq!(token(&format!("Basic {encoded}")).unwrap(), b"a:b");
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        assert!(token("Bearer").unwrap_err().contains("no token"));
        assert!(token("Basic !!!").unwrap_err().contains("base64"));
        assert!(token("Basic dXNlcg==").unwrap_err().contains("`:`"));
        assert!(token("Digest x").unwrap_err().contains("unsupported"));
    }

    #[test]
    fn cookie_round_trip_with_awkward_characters() {
        let header = format!("theme=dark; {COOKIE_NAME}=a%3Bb%2Cc; other=1");
        assert_eq!(from_cookie_header(header.as_bytes()).unwrap(), b"a;b,c");
        assert_eq!(from_cookie_header(b"theme=dark"), None);
        assert_eq!(
            from_cookie_header(format!("{COOKIE_NAME}x=1").as_bytes()),
            None
        );
    }
}
