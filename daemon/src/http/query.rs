//! Query-string parsing: `key=value` pairs, percent-decoded as HTML forms
//! encode them (`+` is a space), with a clear error for a malformed escape
//! or an unknown key.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::anomalies::Query;
use crate::anomalies::recent::MAX_LIMIT;

/// Parses the query string of `GET /anomalies`.
pub fn parse_anomalies_query(raw: &str) -> Result<Query, String> {
    let mut query = Query::default();
    for (key, value) in pairs(raw) {
        let (key, value) = (key?, value?);
        match key.as_str() {
            "limit" => {
                let limit = value.parse::<usize>().map_err(|_| {
                    format!(
                        "query parameter `limit`: expected a non-negative integer, got `{value}`"
                    )
                })?;
                if limit > MAX_LIMIT {
                    return Err(format!(
                        "query parameter `limit`: at most {MAX_LIMIT}, got {limit}; page with `since`"
                    ));
                }
                query.limit = Some(limit);
            }
            "series" => query.series = Some(value),
            "since" => {
                let since = value.parse::<f64>().ok().filter(|t| t.is_finite()).ok_or_else(|| {
                    format!("query parameter `since`: expected unix seconds (a number), got `{value}`")
                })?;
                query.since = Some(since);
            }
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `limit`, `series` or `since`"
                ));
            }
        }
    }
    Ok(query)
}

/// The decoded `(key, value)` pairs of a query string, each with the error
/// to report when it is not valid percent-encoded UTF-8.
type Pair = (Result<String, String>, Result<String, String>);

fn pairs(raw: &str) -> impl Iterator<Item = Pair> + '_ {
    raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded_key = decode_component(key)
            .ok_or_else(|| format!("query parameter `{key}` is not valid percent-encoded UTF-8"));
        let shown = decoded_key.as_deref().unwrap_or(key).to_owned();
        let decoded_value = decode_component(value).ok_or_else(|| {
            format!("query parameter `{shown}`: value is not valid percent-encoded UTF-8")
        });
        (decoded_key, decoded_value)
    })
}

/// Decodes one query component: `+` is a space and `%XX` a byte; the
/// bytes must be UTF-8. `None` for a `%` not followed by two hex digits,
/// which `percent-encoding` would pass through as text: a typo in a
/// query deserves an error, not a silent near-miss.
pub fn decode_component(raw: &str) -> Option<String> {
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
    let spaced = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_anomaly_queries() {
        let q = parse_anomalies_query("limit=5&series=cpu%2Ehost+1&since=10.5").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.series.as_deref(), Some("cpu.host 1"));
        assert_eq!(q.since, Some(10.5));
        assert!(parse_anomalies_query("").unwrap() == Query::default());
        assert!(
            parse_anomalies_query("limit=-1")
                .unwrap_err()
                .contains("`limit`")
        );
        assert!(
            parse_anomalies_query("since=x")
                .unwrap_err()
                .contains("`since`")
        );
        assert!(
            parse_anomalies_query("foo=1")
                .unwrap_err()
                .contains("`foo`")
        );
        assert!(parse_anomalies_query("series=%zz").is_err());
        assert_eq!(
            parse_anomalies_query("limit=10000").unwrap().limit,
            Some(10_000)
        );
        let e = parse_anomalies_query("limit=10001").unwrap_err();
        assert!(e.contains("at most 10000"), "{e}");
    }

    #[test]
    fn components_decode_as_forms_encode_them() {
        assert_eq!(decode_component("a+b").as_deref(), Some("a b"));
        assert_eq!(decode_component("a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(decode_component("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(decode_component("caf%c3%a9").as_deref(), Some("café"));
        assert_eq!(decode_component(""), Some(String::new()));
        for bad in ["%zz", "%", "%4", "a%g1", "%ff"] {
            assert_eq!(decode_component(bad), None, "{bad}");
        }
    }
}
