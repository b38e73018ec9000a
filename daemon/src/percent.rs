//! Strict percent-decoding, for URL path components, query components and
//! the user info of a proxy URL: `%XX` is a byte, the bytes must be UTF-8,
//! and a `%` not followed by two hex digits is an error rather than text
//! (`percent-encoding` alone would pass it through: a typo deserves an
//! error, not a silent near-miss).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Decodes `raw` (`+` stays a `+`); `None` for a malformed escape or bytes
/// that are not UTF-8.
pub fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return None;
    }
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_plus_signs_stay_and_malformed_ones_fail() {
        assert_eq!(decode("a+b%2Fc").as_deref(), Some("a+b/c"));
        assert_eq!(decode("p%40ss").as_deref(), Some("p@ss"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("50%"), None);
        assert_eq!(decode("%ff"), None, "not UTF-8");
    }
}
