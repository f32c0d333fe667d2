//! Rate-limit response headers and the 429 errors.
//!
//! Every response carries `X-RateLimit-Endpoint-Class`; shaped responses
//! also carry
//!
//! ```text
//! X-RateLimit-Limit: 120                    per-minute limit of the class
//! X-RateLimit-Remaining: 119                requests admissible right now
//! X-RateLimit-Reset: 1                      whole seconds until the full burst is back (rounded up)
//! RateLimit-Policy: "read-light";q=120;w=60
//! RateLimit: "read-light";r=119;t=1
//! Retry-After: 1                            refusals only; whole seconds, rounded up
//! ```
//!
//! `RateLimit-Policy` / `RateLimit` follow draft-ietf-httpapi-ratelimit-headers
//! (-10/-11): Structured-Field lists whose items are the quoted policy name
//! with `q` (quota), `w` (window, seconds), `r` (remaining) and `t`
//! (seconds until reset). Rounding `Retry-After` up means a client that
//! sleeps exactly that long is admitted.
//!
//! The allowed path allocates no header value: class names, the policies
//! of the published tiers and integers below 1000 are static values, the
//! rest is cut from the thread's slab (`crate::header_text`).

use super::daily::{DailyDecision, DAY_SECS};
use super::gcra::Decision;
use super::tiers::{EndpointClass, WINDOW_SECS};
use crate::error::{ErrorCode, GatewayError};
use crate::header_text::{self, ValueText};
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::cell::RefCell;
use std::time::Duration;

pub const X_RATELIMIT_ENDPOINT_CLASS: HeaderName = HeaderName::from_static("x-ratelimit-endpoint-class");
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The `class` of the daily-cap error's details.
pub const DAILY_WRITES_CLASS: &str = "daily-writes";
pub const RATE_LIMITED_MESSAGE: &str = "Rate limit exceeded for this endpoint class.";
pub const DAILY_LIMITED_MESSAGE: &str = "Daily write limit exceeded for this organization.";

/// Whole seconds in `d`, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The static `X-RateLimit-Endpoint-Class` value of a class.
pub fn class_value(class: EndpointClass) -> HeaderValue {
    CLASS_VALUES[class.index()].clone()
}

/// Checked once at compile time, not per response.
static CLASS_VALUES: [HeaderValue; 3] = [
    HeaderValue::from_static(EndpointClass::ALL[0].as_str()),
    HeaderValue::from_static(EndpointClass::ALL[1].as_str()),
    HeaderValue::from_static(EndpointClass::ALL[2].as_str()),
];

/// Sets `X-RateLimit-Endpoint-Class` (every response, shaped or not).
pub fn insert_endpoint_class(headers: &mut HeaderMap, class: EndpointClass) {
    headers.insert(X_RATELIMIT_ENDPOINT_CLASS, class_value(class));
}

/// The `RateLimit-Policy` value of a class and per-minute limit; static for
/// the published tiers.
pub fn policy_value(class: EndpointClass, limit: u32) -> HeaderValue {
    use EndpointClass::*;
    let s = match (class, limit) {
        (ReadLight, 120) => "\"read-light\";q=120;w=60",
        (ReadLight, 1_200) => "\"read-light\";q=1200;w=60",
        (ReadLight, 6_000) => "\"read-light\";q=6000;w=60",
        (WriteLight, 60) => "\"write-light\";q=60;w=60",
        (WriteLight, 600) => "\"write-light\";q=600;w=60",
        (WriteLight, 3_000) => "\"write-light\";q=3000;w=60",
        (LongRunning, 20) => "\"long-running\";q=20;w=60",
        (LongRunning, 60) => "\"long-running\";q=60;w=60",
        (LongRunning, 300) => "\"long-running\";q=300;w=60",
        _ => {
            return header_text::render(|t| {
                quoted_class(t, class)
                    .push(b";q=")
                    .push_u64(u64::from(limit))
                    .push(b";w=")
                    .push_u64(WINDOW_SECS);
            });
        }
    };
    HeaderValue::from_static(s)
}

thread_local! {
    /// The last limit seen per class with its two rendered values. While
    /// one tier's traffic dominates a worker they are rendered once; callers
    /// of tiers with different limits take turns re-rendering (from the
    /// slab, still without an allocation).
    static LIMIT_VALUES: RefCell<[Option<(u32, HeaderValue, HeaderValue)>; 3]> =
        const { RefCell::new([None, None, None]) };
}

/// `X-RateLimit-Limit` and `RateLimit-Policy` of a class and limit.
pub(crate) fn limit_values(class: EndpointClass, limit: u32) -> (HeaderValue, HeaderValue) {
    LIMIT_VALUES.with(|memo| {
        let mut memo = memo.borrow_mut();
        match &memo[class.index()] {
            Some((l, lv, pv)) if *l == limit => (lv.clone(), pv.clone()),
            _ => {
                let values = (int_value(u64::from(limit)), policy_value(class, limit));
                memo[class.index()] = Some((limit, values.0.clone(), values.1.clone()));
                values
            }
        }
    })
}

/// Renders the headers of a per-minute decision (see the module docs),
/// replacing any of the same names (an origin's own, on proxied replies).
pub fn render(headers: &mut HeaderMap, class: EndpointClass, d: &Decision) {
    let reset = ceil_secs(d.reset_after);
    headers.insert(X_RATELIMIT_ENDPOINT_CLASS, class_value(class));
    let (limit, policy) = limit_values(class, d.limit);
    headers.insert(X_RATELIMIT_LIMIT, limit);
    headers.insert(X_RATELIMIT_REMAINING, int_value(u64::from(d.remaining)));
    headers.insert(X_RATELIMIT_RESET, int_value(reset));
    headers.insert(RATELIMIT_POLICY, policy);
    headers.insert(RATELIMIT, current_value(class, d.remaining, reset));
    if !d.allowed {
        headers.insert(RETRY_AFTER, int_value(ceil_secs(d.retry_after)));
    }
}

/// The `RateLimit` value: `"<class>";r=<remaining>;t=<reset seconds>`.
pub(crate) fn current_value(class: EndpointClass, remaining: u32, reset: u64) -> HeaderValue {
    header_text::render(|t| {
        quoted_class(t, class)
            .push(b";r=")
            .push_u64(u64::from(remaining))
            .push(b";t=")
            .push_u64(reset);
    })
}

/// The 429 for a refused per-minute decision: `RATE_LIMITED` with details
/// `{class, limit, windowSeconds: 60, retryAfterSeconds}` and `Retry-After`.
pub fn rate_limited_error(decision: &Decision, class: EndpointClass) -> GatewayError {
    let retry = ceil_secs(decision.retry_after).max(1);
    GatewayError::new(ErrorCode::RateLimited, RATE_LIMITED_MESSAGE)
        .with_details(serde_json::json!({
            "class": class.as_str(),
            "limit": decision.limit,
            "windowSeconds": WINDOW_SECS,
            "retryAfterSeconds": retry,
        }))
        .with_retry_after(retry)
}

/// The 429 for a refused daily write: `RATE_LIMITED` with details
/// `{class: "daily-writes", limit, windowSeconds: 86400, retryAfterSeconds}`.
pub fn daily_limited_error(decision: &DailyDecision) -> GatewayError {
    let retry = decision.retry_after_secs.max(1);
    GatewayError::new(ErrorCode::RateLimited, DAILY_LIMITED_MESSAGE)
        .with_details(serde_json::json!({
            "class": DAILY_WRITES_CLASS,
            "limit": decision.limit,
            "windowSeconds": DAY_SECS,
            "retryAfterSeconds": retry,
        }))
        .with_retry_after(retry)
}

/// Renders the headers of a daily-cap refusal: the daily window stands in
/// for the per-minute one (limit = the cap, remaining 0, reset at 00:00 UTC),
/// so every 429 carries the same set of headers.
pub fn render_daily(headers: &mut HeaderMap, class: EndpointClass, d: &DailyDecision) {
    headers.insert(X_RATELIMIT_ENDPOINT_CLASS, class_value(class));
    headers.insert(X_RATELIMIT_LIMIT, int_value(d.limit));
    headers.insert(X_RATELIMIT_REMAINING, int_value(d.remaining));
    headers.insert(X_RATELIMIT_RESET, int_value(d.reset_after_secs));
    let policy = format!("\"{DAILY_WRITES_CLASS}\";q={};w={DAY_SECS}", d.limit);
    let current = format!(
        "\"{DAILY_WRITES_CLASS}\";r={};t={}",
        d.remaining, d.reset_after_secs
    );
    if let (Ok(p), Ok(c)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&current)) {
        headers.insert(RATELIMIT_POLICY, p);
        headers.insert(RATELIMIT, c);
    }
}

/// Decimal text of 0..=999, left-aligned, for allocation-free values.
static SMALL: [[u8; 3]; 1000] = small_table();

const fn small_table() -> [[u8; 3]; 1000] {
    let mut t = [[0u8; 3]; 1000];
    let mut n = 0;
    while n < 1000 {
        let (h, te, o) = ((n / 100) as u8, ((n / 10) % 10) as u8, (n % 10) as u8);
        t[n] = if n >= 100 {
            [b'0' + h, b'0' + te, b'0' + o]
        } else if n >= 10 {
            [b'0' + te, b'0' + o, 0]
        } else {
            [b'0' + o, 0, 0]
        };
        n += 1;
    }
    t
}

/// An integer header value: static below 1000, else cut from the thread's
/// header-text slab (no allocation of its own either way).
pub fn int_value(n: u64) -> HeaderValue {
    if n < 1000 {
        let len = if n >= 100 {
            3
        } else if n >= 10 {
            2
        } else {
            1
        };
        let digits: &'static [u8] = &SMALL[n as usize][..len];
        HeaderValue::from_static(std::str::from_utf8(digits).expect("ascii digits"))
    } else {
        header_text::int(n)
    }
}

/// `"<class>"`, the item of the Structured-Field lists.
fn quoted_class<'t, 'a>(t: &'t mut ValueText<'a>, class: EndpointClass) -> &'t mut ValueText<'a> {
    t.push(b"\"").push(class.as_str().as_bytes()).push(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::gcra::GcraLimiter;
    use crate::shaping::tiers::{default_tiers, Limit};
    use serde_json::Value;
    use tokio::time::Instant;

    fn get<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }

    #[test]
    fn allowed_decision_headers() {
        let d = Decision {
            allowed: true,
            limit: 120,
            remaining: 119,
            reset_after: Duration::from_millis(500),
            retry_after: Duration::ZERO,
        };
        let mut h = HeaderMap::new();
        h.insert(X_RATELIMIT_LIMIT, HeaderValue::from_static("origin's"));
        render(&mut h, EndpointClass::ReadLight, &d);
        assert_eq!(get(&h, "x-ratelimit-endpoint-class"), "read-light");
        assert_eq!(get(&h, "x-ratelimit-limit"), "120");
        assert_eq!(get(&h, "x-ratelimit-remaining"), "119");
        assert_eq!(get(&h, "x-ratelimit-reset"), "1");
        assert_eq!(get(&h, "ratelimit-policy"), "\"read-light\";q=120;w=60");
        assert_eq!(get(&h, "ratelimit"), "\"read-light\";r=119;t=1");
        assert!(h.get("retry-after").is_none());
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn refused_decision_headers_round_retry_after_up() {
        let d = Decision {
            allowed: false,
            limit: 6_000,
            remaining: 0,
            reset_after: Duration::from_millis(60_000),
            retry_after: Duration::from_nanos(2_000_000_001),
        };
        let mut h = HeaderMap::new();
        render(&mut h, EndpointClass::LongRunning, &d);
        assert_eq!(get(&h, "x-ratelimit-limit"), "6000");
        assert_eq!(get(&h, "x-ratelimit-remaining"), "0");
        assert_eq!(get(&h, "x-ratelimit-reset"), "60");
        assert_eq!(get(&h, "ratelimit"), "\"long-running\";r=0;t=60");
        assert_eq!(get(&h, "retry-after"), "3");
    }

    #[test]
    fn policies_of_every_tier_and_custom_limits() {
        for (_, tier) in default_tiers() {
            for class in EndpointClass::ALL {
                let l = tier.limit(class).per_minute;
                let expected = format!("\"{}\";q={l};w=60", class.as_str());
                assert_eq!(policy_value(class, l).to_str().unwrap(), expected);
            }
        }
        let v = policy_value(EndpointClass::WriteLight, 4_294_967_295);
        assert_eq!(v.to_str().unwrap(), "\"write-light\";q=4294967295;w=60");
    }

    #[test]
    fn a_changed_limit_is_rendered_anew_not_served_from_the_memo() {
        for limit in [120, 5_000_000, 120, 7] {
            let d = Decision {
                allowed: true,
                limit,
                remaining: limit - 1,
                reset_after: Duration::from_secs(1),
                retry_after: Duration::ZERO,
            };
            let mut h = HeaderMap::new();
            render(&mut h, EndpointClass::ReadLight, &d);
            assert_eq!(get(&h, "x-ratelimit-limit"), limit.to_string());
            assert_eq!(
                get(&h, "ratelimit-policy"),
                format!("\"read-light\";q={limit};w=60")
            );
            // Another class's memo does not leak into this one.
            render(&mut h, EndpointClass::WriteLight, &d);
            assert_eq!(
                get(&h, "ratelimit-policy"),
                format!("\"write-light\";q={limit};w=60")
            );
        }
    }

    #[test]
    fn integers_render_exactly() {
        for n in (0..2_000).chain([9_999, 10_000, u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(int_value(n).to_str().unwrap(), n.to_string());
        }
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_nanos(3_000_000_001)), 4);
    }

    #[test]
    fn rate_limited_error_has_the_envelope_details() {
        let d = Decision {
            allowed: false,
            limit: 60,
            remaining: 0,
            reset_after: Duration::from_secs(60),
            retry_after: Duration::from_millis(1_500),
        };
        let e = rate_limited_error(&d, EndpointClass::WriteLight);
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after_secs, Some(2));
        let v: Value = serde_json::from_slice(&e.envelope("req_1")).unwrap();
        assert_eq!(v["error"]["code"], "RATE_LIMITED");
        assert_eq!(
            v["error"]["message"],
            "Rate limit exceeded for this endpoint class."
        );
        assert_eq!(
            v["error"]["details"],
            serde_json::json!({"class": "write-light", "limit": 60, "windowSeconds": 60, "retryAfterSeconds": 2})
        );
    }

    #[test]
    fn daily_error_has_the_envelope_details() {
        let cap = crate::shaping::daily::DailyCap::new(8);
        let now = 1_795_824_000 - 10;
        cap.check("org", 1, now);
        let d = cap.check("org", 1, now);
        let e = daily_limited_error(&d);
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after_secs, Some(10));
        let v: Value = serde_json::from_slice(&e.envelope("req_1")).unwrap();
        assert_eq!(
            v["error"]["details"],
            serde_json::json!({"class": "daily-writes", "limit": 1, "windowSeconds": 86400, "retryAfterSeconds": 10})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn headers_of_a_live_limiter_let_a_client_pace_itself() {
        let l = GcraLimiter::new(8);
        let limit = Limit::per_minute(20); // T = 3 s
        let t0 = Instant::now();
        for _ in 0..20 {
            l.check("k", EndpointClass::LongRunning, limit, t0);
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        let d = l.check("k", EndpointClass::LongRunning, limit, Instant::now());
        let mut h = HeaderMap::new();
        render(&mut h, EndpointClass::LongRunning, &d);
        assert_eq!(get(&h, "retry-after"), "3"); // 2.9 s, rounded up
        assert_eq!(get(&h, "x-ratelimit-reset"), "60"); // 59.9 s
        assert_eq!(get(&h, "ratelimit"), "\"long-running\";r=0;t=60");
        tokio::time::advance(Duration::from_secs(3)).await;
        let d = l.check("k", EndpointClass::LongRunning, limit, Instant::now());
        assert!(d.allowed);
    }
}
