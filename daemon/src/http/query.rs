//! Query-string parsing: `key=value` pairs, percent-decoded as HTML forms
//! encode them (`+` is a space), with a clear error for a malformed escape
//! or an unknown key.

use crate::anomalies::Query;
use crate::anomalies::recent::MAX_LIMIT;
use crate::clock::parse_rfc3339;
use crate::config::SeriesGlob;
use crate::ingest::Precision;
use crate::percent;
use crate::series::episodes::MAX_LIMIT as EPISODES_MAX_LIMIT;
use crate::series::query::MAX_LIMIT as SERIES_MAX_LIMIT;
use crate::series::{EpisodeQuery, SeriesQuery, SeriesSort};

/// Parses the query string of `GET /anomalies`.
pub fn parse_anomalies_query(raw: &str) -> Result<Query, String> {
    let mut query = Query::default();
    for (key, value) in pairs(raw) {
        let (key, value) = (key?, value?);
        match key.as_str() {
            "limit" => query.limit = Some(parse_limit(&value, MAX_LIMIT, "page with `since`")?),
            "series" => query.series = Some(value),
            "series_glob" => query.series_glob = Some(parse_glob(&value)?),
            "since" => query.since = Some(parse_time("since", &value)?),
            "until" => query.until = Some(parse_time("until", &value)?),
            "episode" => query.episode = Some(parse_episode(&value)?),
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `limit`, `series`, `series_glob`, `since`, `until` or `episode`"
                ));
            }
        }
    }
    Ok(query)
}

/// Parses the query string of `GET /episodes`.
pub fn parse_episodes_query(raw: &str) -> Result<EpisodeQuery, String> {
    let mut query = EpisodeQuery::default();
    for (key, value) in pairs(raw) {
        let (key, value) = (key?, value?);
        match key.as_str() {
            "limit" => {
                query.limit = Some(parse_limit(
                    &value,
                    EPISODES_MAX_LIMIT,
                    "narrow with `series`, `since` or `until`",
                )?);
            }
            "series" => query.series = Some(value),
            "series_glob" => query.series_glob = Some(parse_glob(&value)?),
            "since" => query.since = Some(parse_time("since", &value)?),
            "until" => query.until = Some(parse_time("until", &value)?),
            "open" => {
                query.open = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(format!(
                            "query parameter `open`: expected `true` or `false`, got `{value}`"
                        ));
                    }
                };
            }
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `limit`, `series`, `series_glob`, `since`, `until` or `open`"
                ));
            }
        }
    }
    Ok(query)
}

/// The `episode` query parameter: an episode id.
fn parse_episode(value: &str) -> Result<u64, String> {
    value.parse::<u64>().map_err(|_| {
        format!("query parameter `episode`: expected an episode id (a non-negative integer), got `{value}`")
    })
}

/// Parses the query string of `GET /series`.
pub fn parse_series_query(raw: &str) -> Result<SeriesQuery, String> {
    let mut query = SeriesQuery::default();
    for (key, value) in pairs(raw) {
        let (key, value) = (key?, value?);
        match key.as_str() {
            "limit" => {
                query.limit = parse_limit(&value, SERIES_MAX_LIMIT, "narrow with `series_glob`")?;
            }
            "sort" => {
                query.sort = SeriesSort::NAMES
                    .iter()
                    .find(|(name, _)| *name == value)
                    .map(|&(_, sort)| sort)
                    .ok_or_else(|| {
                        let names: Vec<&str> = SeriesSort::NAMES.iter().map(|n| n.0).collect();
                        format!(
                            "query parameter `sort`: expected one of {}, got `{value}`",
                            names.join(", ")
                        )
                    })?;
            }
            "series_glob" => query.series_glob = Some(parse_glob(&value)?),
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `limit`, `sort` or `series_glob`"
                ));
            }
        }
    }
    Ok(query)
}

/// Parses the query string of `GET /events`: the series whose points to
/// stream, if any.
pub fn parse_events_query(raw: &str) -> Result<Option<String>, String> {
    let mut series = None;
    for (key, value) in pairs(raw) {
        let (key, value) = (key?, value?);
        match key.as_str() {
            "series" => series = Some(value),
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; expected `series`"
                ));
            }
        }
    }
    Ok(series)
}

/// The `limit` query parameter: a non-negative integer up to `max`;
/// `hint` says what to do instead of asking for more.
fn parse_limit(value: &str, max: usize, hint: &str) -> Result<usize, String> {
    let limit = value.parse::<usize>().map_err(|_| {
        format!("query parameter `limit`: expected a non-negative integer, got `{value}`")
    })?;
    if limit > max {
        return Err(format!(
            "query parameter `limit`: at most {max}, got {limit}; {hint}"
        ));
    }
    Ok(limit)
}

/// A time given as unix seconds (a number) or RFC 3339, for the query
/// parameter `key`.
pub fn parse_time(key: &str, value: &str) -> Result<f64, String> {
    if let Ok(unix) = value.parse::<f64>() {
        return if unix.is_finite() {
            Ok(unix)
        } else {
            Err(format!(
                "query parameter `{key}`: `{value}` is not a finite number"
            ))
        };
    }
    parse_rfc3339(value).map_err(|e| {
        format!(
            "query parameter `{key}`: expected unix seconds or RFC 3339 time, got `{value}` ({e})"
        )
    })
}

/// Parses the query string of the InfluxDB write endpoints: the
/// `precision` of the timestamps (nanoseconds when absent), spelled as
/// InfluxDB 1.x (`v1`: `n`, `u`, `ms`, `s`, `m`, `h`) or 2.x (`ns`, `us`,
/// `ms`, `s`) takes it. Other keys (`db`, `rp`, `bucket`, `org`, ...) are
/// accepted and ignored, as every line goes to the one series table.
pub fn parse_influx_query(raw: &str, v1: bool) -> Result<Precision, String> {
    let mut precision = Precision::default();
    for (key, value) in pairs(raw) {
        if key? != "precision" {
            continue;
        }
        let value = value?;
        let (spellings, allowed): (&[&str], _) = if v1 {
            (
                &["n", "u", "ms", "s", "m", "h"],
                "`n`, `u`, `ms`, `s`, `m` or `h`",
            )
        } else {
            (&["ns", "us", "ms", "s"], "`ns`, `us`, `ms` or `s`")
        };
        precision = spellings
            .contains(&value.as_str())
            .then(|| Precision::parse(&value))
            .flatten()
            .ok_or_else(|| {
                format!("query parameter `precision`: `{value}` is not a precision; use {allowed}")
            })?;
    }
    Ok(precision)
}

/// The glob of a `series_glob` query parameter.
pub fn parse_glob(value: &str) -> Result<SeriesGlob, String> {
    SeriesGlob::new(value).map_err(|e| format!("query parameter `series_glob`: {e}"))
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

/// Decodes one query component: `+` is a space and `%XX` a byte, strictly
/// ([`percent::decode`]).
pub fn decode_component(raw: &str) -> Option<String> {
    if raw.contains('+') {
        percent::decode(&raw.replace('+', " "))
    } else {
        percent::decode(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_influx_queries() {
        assert_eq!(parse_influx_query("", false), Ok(Precision::Nanoseconds));
        assert_eq!(
            parse_influx_query("org=o&bucket=b&precision=s", false),
            Ok(Precision::Seconds)
        );
        assert_eq!(
            parse_influx_query("db=x&precision=u", true),
            Ok(Precision::Microseconds)
        );
        assert_eq!(
            parse_influx_query("precision=h", true),
            Ok(Precision::Hours)
        );
        let e = parse_influx_query("precision=h", false).unwrap_err();
        assert!(e.contains("`h` is not a precision; use `ns`"), "{e}");
        let e = parse_influx_query("precision=ns", true).unwrap_err();
        assert!(e.contains("use `n`, `u`"), "{e}");
    }

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
        let q = parse_anomalies_query("since=2023-11-14T22:13:20Z&until=1700000001.5").unwrap();
        assert_eq!(
            (q.since, q.until),
            (Some(1_700_000_000.0), Some(1_700_000_001.5))
        );
        let q = parse_anomalies_query("until=2023-11-14T23:13:20%2B01:00").unwrap();
        assert_eq!(q.until, Some(1_700_000_000.0));
        let e = parse_anomalies_query("until=2023-11-14").unwrap_err();
        assert!(e.contains("`until`") && e.contains("RFC 3339"), "{e}");
        assert!(
            parse_anomalies_query("since=inf")
                .unwrap_err()
                .contains("finite")
        );
        let q = parse_anomalies_query("series_glob=cpu.*").unwrap();
        assert!(q.series_glob.unwrap().matches("cpu.host1"));
        let e = parse_anomalies_query("series_glob=%5Bcpu").unwrap_err();
        assert!(e.contains("`series_glob`"), "{e}");
        assert_eq!(
            parse_anomalies_query("limit=10000").unwrap().limit,
            Some(10_000)
        );
        let e = parse_anomalies_query("limit=10001").unwrap_err();
        assert!(e.contains("at most 10000"), "{e}");
    }

    #[test]
    fn parses_series_queries() {
        let q = parse_series_query("limit=5&sort=name&series_glob=cpu.*").unwrap();
        assert_eq!((q.limit, q.sort), (5, SeriesSort::Name));
        assert!(q.series_glob.unwrap().matches("cpu.a"));
        let q = parse_series_query("").unwrap();
        assert_eq!((q.limit, q.sort), (100, SeriesSort::Anomalies));
        for sort in ["points", "anomalies", "name", "last_seen"] {
            assert!(
                parse_series_query(&format!("sort={sort}")).is_ok(),
                "{sort}"
            );
        }
        let e = parse_series_query("sort=size").unwrap_err();
        assert!(e.contains("`sort`") && e.contains("last_seen"), "{e}");
        let e = parse_series_query("limit=10001").unwrap_err();
        assert!(e.contains("at most 10000"), "{e}");
        assert!(
            parse_series_query("series=cpu")
                .unwrap_err()
                .contains("`series`")
        );
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
