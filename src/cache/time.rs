//! RFC 3339 timestamps (`expiresAt`) to tokio instants, without a date
//! crate: the origin writes `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Unix seconds of an RFC 3339 timestamp, or `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    parse_rfc3339_millis(s).map(|ms| ms.div_euclid(1000))
}

/// Unix milliseconds of an RFC 3339 timestamp, or `None` if it is not one.
/// Digits past the millisecond are dropped, which rounds toward earlier:
/// an `expiresAt` is never taken to be later than the origin wrote it.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = h * 3600 + m * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` of unix seconds (the inverse of `parse_rfc3339`).
pub fn format_rfc3339(secs: i64) -> String {
    let (date, rem) = civil(secs);
    format!("{date}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of unix seconds and milliseconds.
pub fn format_rfc3339_millis(secs: i64, millis: u32) -> String {
    let (date, rem) = civil(secs);
    format!(
        "{date}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The `YYYY-MM-DD` of unix seconds and the seconds into that day
/// (H. Hinnant's civil_from_days).
fn civil(secs: i64) -> (String, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), rem)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The tokio instant at which a wall-clock time (unix milliseconds) arrives
/// on this host, `skew_ms` early to allow for the origin's clock running
/// behind ours; `now` if that is already past. Never later than `at`.
pub fn instant_before_unix_millis(at_ms: i64, now: Instant, now_ms: i64, skew_ms: u64) -> Instant {
    let left = at_ms
        .saturating_sub(now_ms)
        .saturating_sub(i64::try_from(skew_ms).unwrap_or(i64::MAX));
    if left <= 0 {
        now
    } else {
        now + Duration::from_millis(left as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2030-01-01T00:00:00Z"), Some(1_893_456_000));
        assert_eq!(parse_rfc3339("2030-01-01T00:00:00.123Z"), Some(1_893_456_000));
        assert_eq!(parse_rfc3339("2030-01-01T01:00:00+01:00"), Some(1_893_456_000));
        assert_eq!(parse_rfc3339("2029-12-31T23:00:00-01:00"), Some(1_893_456_000));
    }

    #[test]
    fn milliseconds_are_kept_and_finer_digits_round_toward_earlier() {
        assert_eq!(
            parse_rfc3339_millis("2030-01-01T00:00:00.5Z"),
            Some(1_893_456_000_500)
        );
        assert_eq!(
            parse_rfc3339_millis("2030-01-01T00:00:00.123Z"),
            Some(1_893_456_000_123)
        );
        assert_eq!(
            parse_rfc3339_millis("2030-01-01T00:00:00.1239999Z"),
            Some(1_893_456_000_123)
        );
        assert_eq!(
            parse_rfc3339_millis("2030-01-01T00:00:00Z"),
            Some(1_893_456_000_000)
        );
        // Before 1970 the seconds round down too.
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Some(-1));
    }

    #[test]
    fn an_instant_for_a_wall_clock_time_is_never_late() {
        let now = Instant::now();
        let at = instant_before_unix_millis(10_250, now, 10_000, 0);
        assert_eq!(at - now, Duration::from_millis(250));
        let early = instant_before_unix_millis(10_250, now, 10_000, 100);
        assert_eq!(early - now, Duration::from_millis(150));
        assert_eq!(instant_before_unix_millis(9_999, now, 10_000, 0), now);
        assert_eq!(instant_before_unix_millis(10_050, now, 10_000, 100), now);
    }

    #[test]
    fn formatting_round_trips() {
        for t in [0, 951_782_400, 1_893_456_000, 1_798_847_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(
            format_rfc3339_millis(1_893_456_000, 7),
            "2030-01-01T00:00:00.007Z"
        );
        assert_eq!(
            format_rfc3339_millis(951_782_400 + 3661, 999),
            "2000-02-29T01:01:01.999Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_non_timestamps() {
        for bad in [
            "",
            "2030-01-01",
            "2030-13-01T00:00:00Z",
            "2030-01-01T00:00:00",
            "2030-01-01T00:00:00Zjunk",
            "2030-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
