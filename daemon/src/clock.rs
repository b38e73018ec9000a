//! The wall clock, as unix seconds: the timestamp of a point that carries
//! none, and the times the metrics report; and its text form, RFC 3339, in
//! which anomaly records show their time and queries may give one.

use std::time::{SystemTime, UNIX_EPOCH};

/// The server's clock as unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds from 1970-01-01 to 10000-01-01: RFC 3339 has four-digit years.
const YEAR_10000: f64 = 253_402_300_800.0;

/// `unix` seconds as RFC 3339 in UTC with millisecond precision, e.g.
/// `2023-11-14T22:13:20.500Z` (rounded to the nearest millisecond). `None`
/// outside 1970..10000, which four-digit years cannot show.
pub fn rfc3339_millis(unix: f64) -> Option<String> {
    if !(0.0..YEAR_10000).contains(&unix) {
        return None;
    }
    // Whole milliseconds; below 2^53, so exact in f64 and i64.
    let millis = (unix * 1000.0).round() as i64;
    let (secs, milli) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, secs_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
    ))
}

/// Parses an RFC 3339 date-time (`2023-11-14T22:13:20Z`, with optional
/// fractional seconds, `Z` or a `±HH:MM` offset; `t`, `z` and a space for
/// `T` accepted) into unix seconds. The error says what was expected.
pub fn parse_rfc3339(text: &str) -> Result<f64, String> {
    const EXPECTED: &str = "expected RFC 3339 such as 2023-11-14T22:13:20Z or \
                            2023-11-14T23:13:20.5+01:00";
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    let shape_ok = b.len() >= 20
        && separators.iter().all(|&(i, c)| b[i] == c)
        && matches!(b[10], b'T' | b't' | b' ');
    let fields = shape_ok.then(|| {
        Some((
            digits(0..4)?,
            digits(5..7)?,
            digits(8..10)?,
            digits(11..13)?,
            digits(14..16)?,
            digits(17..19)?,
        ))
    });
    let Some(Some((year, month, day, hour, minute, second))) = fields else {
        return Err(EXPECTED.to_owned());
    };
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Err(EXPECTED.to_owned());
        }
        fraction = format!("0.{}", &after_dot[..len])
            .parse::<f64>()
            .map_err(|_| EXPECTED.to_owned())?;
        rest = &after_dot[len..];
    }
    let offset_secs = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) =>
        {
            let (h, m) = (
                i64::from((h1 - b'0') * 10 + (h2 - b'0')),
                i64::from((m1 - b'0') * 10 + (m2 - b'0')),
            );
            if h > 23 || m > 59 {
                return Err(format!("offset `{rest}` out of range; {EXPECTED}"));
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return Err(format!("missing or bad time zone `{rest}`; {EXPECTED}")),
    };
    let days_in_month = days_in_month(year, month);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("`{text}` is not a valid date and time"));
    }
    // A leap second (:60) counts as the next second, as unix time does.
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    Ok(secs as f64 + fraction)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of `days` since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(
            rfc3339_millis(1_700_000_000.5).as_deref(),
            Some("2023-11-14T22:13:20.500Z")
        );
        assert_eq!(
            rfc3339_millis(0.0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_millis(951_782_400.0).as_deref(),
            Some("2000-02-29T00:00:00.000Z"),
            "a leap day"
        );
        assert_eq!(
            rfc3339_millis(1_700_000_000.999_6).as_deref(),
            Some("2023-11-14T22:13:21.000Z"),
            "rounds to the nearest millisecond"
        );
        assert_eq!(
            rfc3339_millis(YEAR_10000 - 0.001).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        for outside in [-1.0, YEAR_10000, 1e300, f64::NAN, f64::INFINITY] {
            assert_eq!(rfc3339_millis(outside), None, "{outside}");
        }
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Ok(1_700_000_000.0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000.5));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Ok(1_700_000_000.0)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14t21:13:20-01:00"),
            Ok(1_700_000_000.0)
        );
        assert_eq!(parse_rfc3339("2023-11-14 22:13:20z"), Ok(1_700_000_000.0));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1.0));
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20+1:00",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14X22:13:20Z",
            "２０２３-11-14T22:13:20Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
        let message = parse_rfc3339("yesterday").unwrap_err();
        assert!(message.contains("2023-11-14T22:13:20Z"), "{message}");
    }

    proptest! {
        #[test]
        fn format_and_parse_round_trip(millis in 0i64..253_402_300_800_000) {
            let unix = millis as f64 / 1000.0;
            let text = rfc3339_millis(unix).unwrap();
            let back = parse_rfc3339(&text).unwrap();
            prop_assert!((back - unix).abs() < 1e-6, "{text}: {back} != {unix}");
        }
    }
}
