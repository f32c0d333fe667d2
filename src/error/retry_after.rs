//! An origin's `Retry-After`, kept as sent when it is one of the forms
//! RFC 9110 section 10.2.3 allows: delta-seconds or an HTTP-date (the
//! IMF-fixdate, or the obsolete RFC 850 and asctime forms a recipient must
//! accept, section 5.6.7). Anything else is dropped, as it always was.

use http::{HeaderMap, HeaderValue};

pub(super) fn as_sent(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(http::header::RETRY_AFTER)?;
    let s = v.to_str().ok()?.trim();
    let delta = !s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit());
    (delta || is_http_date(s)).then(|| v.clone())
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|c| c.is_ascii_digit())
}

fn day(d: &str) -> bool {
    digits(d, 2) && ("01"..="31").contains(&d)
}

fn time(t: &str) -> bool {
    let mut p = t.split(':');
    match (p.next(), p.next(), p.next(), p.next()) {
        (Some(h), Some(m), Some(s), None) => {
            digits(h, 2) && digits(m, 2) && digits(s, 2) && h < "24" && m < "60" && s <= "60"
        }
        _ => false,
    }
}

fn is_http_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split(' ').collect();
    match parts[..] {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        [wd, d, m, y, t, "GMT"] => {
            wd.strip_suffix(',').is_some_and(|wd| DAYS.contains(&wd))
                && day(d)
                && MONTHS.contains(&m)
                && digits(y, 4)
                && time(t)
        }
        // rfc850-date: `Sunday, 06-Nov-94 08:49:37 GMT`
        [wd, dmy, t, "GMT"] => {
            let mut p = dmy.split('-');
            wd.strip_suffix(',').is_some_and(|wd| LONG_DAYS.contains(&wd))
                && match (p.next(), p.next(), p.next(), p.next()) {
                    (Some(d), Some(m), Some(y), None) => day(d) && MONTHS.contains(&m) && digits(y, 2),
                    _ => false,
                }
                && time(t)
        }
        // asctime-date: `Sun Nov  6 08:49:37 1994` (a one-digit day is
        // padded with a space)
        [wd, m, "", d, t, y] | [wd, m, d, t, y] => {
            let d_ok = if parts.len() == 6 {
                digits(d, 1) && d != "0"
            } else {
                day(d)
            };
            DAYS.contains(&wd) && MONTHS.contains(&m) && d_ok && time(t) && digits(y, 4)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_http_date_forms_and_delta_seconds_are_kept() {
        for ok in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Wed, 21 Oct 2037 07:28:00 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 16 08:49:37 1994",
        ] {
            assert!(is_http_date(ok), "{ok}");
        }
        for bad in [
            "",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
        ] {
            assert!(!is_http_date(bad), "{bad}");
        }
        let mut h = HeaderMap::new();
        for (v, kept) in [
            ("120", true),
            ("Sun, 06 Nov 1994 08:49:37 GMT", true),
            ("-1", false),
            ("1.5", false),
        ] {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static(v));
            assert_eq!(as_sent(&h).is_some(), kept, "{v}");
        }
    }
}
