//! Which of the origin's headers a reply from the cache repeats.
//!
//! Promise 4: a partner sees the origin's headers. A read the cache does
//! not answer (a query string, an alias) passes the origin's on, less the
//! hop-by-hop ones and the validators and freshness the gateway sets
//! itself (`content_origin.rs`); a reply from the cache repeats the same
//! set from the fill that made the entry: `Content-Type` with its
//! parameters, and the origin's own (`Deprecation`, `Sunset`, `Link`, an
//! `X-` header of its API).
//!
//! Never repeated: what the cached reply sets itself (length, coding,
//! `ETag`, `Cache-Control`, `Vary`, `X-Cache`, `X-Request-Id`, the rate-limit
//! headers), `Date` (hyper's is current), and `Set-Cookie`: a cookie the
//! origin gave one caller is not another caller's, and every principal of
//! the organization reads the entry.
//!
//! Bounded: at most `MAX_HEADERS` headers of `MAX_BYTES` in all per entry;
//! past either, the rest are not repeated (and a warning says so).

use super::location::relative_to_gateway;
use super::proxy::HOP_BY_HOP;
use crate::cache::OriginHead;
use http::header::{self, HeaderMap, HeaderName};

/// Most origin headers one entry repeats.
pub(super) const MAX_HEADERS: usize = 32;
/// Most bytes (names and values) of them.
pub(super) const MAX_BYTES: usize = 8 * 1024;

/// What replies from an entry filled from `headers` (the origin's 200)
/// repeat; `origin_url` makes a `Location` naming the origin relative, as
/// on every proxied reply.
pub(super) fn origin_head(headers: &HeaderMap, origin_url: &str) -> OriginHead {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .filter(|v| *v != "application/json")
        .cloned();
    // Hop-by-hop: the fixed ones and any `Connection` names.
    let hop: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut others = Vec::new();
    let mut bytes = 0;
    // In the origin's order (a name's values stay in theirs).
    for (name, value) in headers {
        let n = name.as_str();
        if !repeated(name) || HOP_BY_HOP.contains(&n) || hop.iter().any(|h| h.eq_ignore_ascii_case(n)) {
            continue;
        }
        let value = if *name == header::LOCATION {
            let mut one = HeaderMap::new();
            one.insert(header::LOCATION, value.clone());
            relative_to_gateway(&mut one, origin_url);
            one.remove(header::LOCATION).unwrap_or_else(|| value.clone())
        } else {
            value.clone()
        };
        bytes += n.len() + value.len();
        if others.len() == MAX_HEADERS || bytes > MAX_BYTES {
            tracing::warn!(
                kept = others.len(),
                "origin sent more headers than a cached entry repeats; the rest are not repeated"
            );
            break;
        }
        others.push((name.clone(), value));
    }
    OriginHead { content_type, others }
}

/// Whether a reply from the cache repeats a header of this name.
fn repeated(name: &HeaderName) -> bool {
    let own = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::ETAG,
        header::LAST_MODIFIED,
        header::CACHE_CONTROL,
        header::EXPIRES,
        header::PRAGMA,
        header::AGE,
        header::VARY,
        header::DATE,
        header::SET_COOKIE,
        header::RETRY_AFTER,
    ];
    let n = name.as_str();
    !(own.contains(name)
        || n == "x-cache"
        || n == "x-request-id"
        || n == "set-cookie2"
        || n == "surrogate-control"
        || n == "proxy-connection"
        || n.starts_with("x-ratelimit-")
        || n.ends_with("-cache-control"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(head: &OriginHead) -> Vec<String> {
        head.others
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn the_origin_s_own_headers_are_repeated_and_the_gateway_s_are_not() {
        let h = map(&[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "120"),
            ("deprecation", "@1767225600"),
            ("sunset", "Wed, 30 Jun 2027 00:00:00 GMT"),
            ("link", "<https://docs.example/v2>; rel=\"successor-version\""),
            ("link", "<https://docs.example/deprecation>; rel=\"deprecation\""),
            ("x-layers-api-version", "1.4"),
            ("etag", "\"origin-tag\""),
            ("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "max-age=600"),
            ("expires", "Tue, 01 Dec 2026 00:01:00 GMT"),
            ("age", "3"),
            ("vary", "Origin"),
            ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("set-cookie", "session=abc; HttpOnly"),
            ("x-request-id", "req_origin"),
            ("x-ratelimit-limit", "120"),
            ("x-cache", "HIT"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
        ]);
        let head = origin_head(&h, "http://origin.internal:8080");
        assert_eq!(
            head.content_type.as_ref().map(|v| v.to_str().unwrap()),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            names(&head),
            [
                "deprecation: @1767225600",
                "sunset: Wed, 30 Jun 2027 00:00:00 GMT",
                "link: <https://docs.example/v2>; rel=\"successor-version\"",
                "link: <https://docs.example/deprecation>; rel=\"deprecation\"",
                "x-layers-api-version: 1.4",
            ]
        );
    }

    #[test]
    fn a_plain_json_answer_repeats_nothing() {
        let h = map(&[("content-type", "application/json"), ("content-length", "10")]);
        assert!(origin_head(&h, "http://o").is_empty());
    }

    #[test]
    fn a_location_naming_the_origin_is_made_relative() {
        let h = map(&[
            ("content-location", "/v1/content/x"),
            ("location", "http://o:1/v1/x"),
        ]);
        let head = origin_head(&h, "http://o:1");
        assert_eq!(
            names(&head),
            ["content-location: /v1/content/x", "location: /v1/x"]
        );
    }

    #[test]
    fn an_origin_flooding_headers_has_a_bounded_number_repeated() {
        let pairs: Vec<(String, String)> = (0..100)
            .map(|i| (format!("x-extra-{i}"), "v".repeat(200)))
            .collect();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let head = origin_head(&map(&refs), "http://o");
        assert!(!head.others.is_empty() && head.others.len() <= MAX_HEADERS);
        let bytes: usize = head.others.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
    }
}
