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
//! headers in either spelling), `Date` (hyper's is current), what belongs
//! to one caller or one request (`Set-Cookie`: every principal of the
//! organization reads the entry; authentication challenges and info,
//! `Server-Timing`, `traceresponse`, `Clear-Site-Data`), and digests of
//! the origin's bytes (the fence may cut a revoked asset out of them, and
//! an asset's reply or a compressed variant is other bytes). What
//! describes the container's representation itself (`Link`,
//! `Content-Location`, `Content-Disposition`, `Content-Language`) is
//! repeated on its 200 and HEAD, not on an asset's reply (whose own the
//! gateway does not know); of those, a 304 carries `Content-Location`
//! only (RFC 9110 section 15.4.5). A `Location`,
//! `Content-Location` or `Link` target naming the origin's own address is
//! made relative, as a proxied `Location` is (`location.rs`).
//!
//! Bounded: at most `MAX_HEADERS` headers of `MAX_BYTES` in all per entry;
//! past either, the rest are not repeated (and a warning says so).

use super::location::relative_uri;
use super::proxy::HOP_BY_HOP;
use crate::cache::OriginHead;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Most origin headers one entry repeats.
pub(super) const MAX_HEADERS: usize = 32;
/// Most bytes (names and values) of them.
pub(super) const MAX_BYTES: usize = 8 * 1024;

/// What replies from an entry filled from `headers` (the origin's 200)
/// repeat; `origin_url` makes a target naming the origin relative.
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
    let mut head = OriginHead {
        content_type,
        ..OriginHead::default()
    };
    let mut bytes = 0;
    // In the origin's order (a name's values stay in theirs).
    for (name, value) in headers {
        let n = name.as_str();
        if !repeated(name)
            || reflects_one_caller(name, value)
            || HOP_BY_HOP.contains(&n)
            || hop.iter().any(|h| h.eq_ignore_ascii_case(n))
        {
            continue;
        }
        let value = relative_targets(name, value, origin_url);
        bytes += n.len() + value.len();
        if head.others.len() + head.container_only.len() == MAX_HEADERS || bytes > MAX_BYTES {
            tracing::warn!(
                kept = head.others.len() + head.container_only.len(),
                "origin sent more headers than a cached entry repeats; the rest are not repeated"
            );
            break;
        }
        if describes_the_container(name) {
            head.container_only.push((name.clone(), value));
        } else {
            head.others.push((name.clone(), value));
        }
    }
    head
}

/// Makes the `Link` and `Content-Location` targets in `headers` that name
/// the origin's own address relative (a read through to the origin, as the
/// cached replies repeat them; `Location` is `relative_to_gateway`'s).
pub(super) fn relative_link_targets(headers: &mut HeaderMap, origin_url: &str) {
    for name in [header::LINK, header::CONTENT_LOCATION] {
        if let header::Entry::Occupied(mut e) = headers.entry(name.clone()) {
            for v in e.iter_mut() {
                *v = relative_targets(&name, v, origin_url);
            }
        }
    }
}

/// Digests of the origin's bytes: the fence may cut a revoked asset out of
/// them, a fill or query read decodes a coding the origin applied anyway,
/// and an asset's reply or a compressed variant is other bytes.
const DIGESTS: [&str; 4] = ["content-md5", "digest", "content-digest", "repr-digest"];

/// Drops the origin's digests from headers passed on with a body the
/// gateway may have rewritten (attacker review of round 91: a query-string
/// read passed them on with a body the fence had cut).
pub(super) fn strip_digests(headers: &mut http::HeaderMap) {
    for name in DIGESTS {
        headers.remove(name);
    }
}

/// Whether a reply from the cache repeats a header of this name.
fn repeated(name: &HeaderName) -> bool {
    let own = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
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
        header::WWW_AUTHENTICATE,
        header::PROXY_AUTHENTICATE,
    ];
    let per_caller_or_bytes = [
        "x-cache",
        "x-request-id",
        "set-cookie2",
        "surrogate-control",
        "proxy-connection",
        "authentication-info",
        "proxy-authentication-info",
        "server-timing",
        "traceresponse",
        "clear-site-data",
        "want-digest",
        "want-content-digest",
        "want-repr-digest",
        "ratelimit",
        "ratelimit-policy",
        // One request's path through the origin's own proxies and CDNs.
        "via",
        "forwarded",
        "traceparent",
        "tracestate",
        "x-amz-cf-id",
        "x-amz-cf-pop",
        "x-amzn-trace-id",
        "cf-ray",
        "x-served-by",
        "x-timer",
        // The origin's own endpoints, not the gateway's.
        "alt-svc",
        "refresh",
    ];
    let n = name.as_str();
    !(own.contains(name)
        || n.starts_with("x-forwarded-")
        || n.starts_with("x-b3-")
        || n.starts_with("x-envoy-")
        || per_caller_or_bytes.contains(&n)
        || DIGESTS.contains(&n)
        || n.starts_with("x-ratelimit-")
        || n.starts_with("ratelimit-")
        || n.ends_with("-cache-control"))
}

/// CORS answers made for the first caller's `Origin` (the origin's own
/// `Vary: Origin` is not the cached reply's): only a `*` holds for all.
fn reflects_one_caller(name: &HeaderName, value: &HeaderValue) -> bool {
    let n = name.as_str();
    ((n == "access-control-allow-origin" || n == "timing-allow-origin") && value != "*")
        || n == "access-control-allow-credentials"
}

/// Whether the header describes the container's representation itself.
fn describes_the_container(name: &HeaderName) -> bool {
    [
        header::LINK,
        header::CONTENT_LOCATION,
        header::CONTENT_DISPOSITION,
        header::CONTENT_LANGUAGE,
    ]
    .contains(name)
}

/// `value` with a target naming the origin's own address made relative: a
/// `Location` or `Content-Location` URI, each `<URI>` of a `Link`.
pub(super) fn relative_targets(name: &HeaderName, value: &HeaderValue, origin_url: &str) -> HeaderValue {
    let Ok(text) = value.to_str() else {
        return value.clone();
    };
    let rewritten = if *name == header::LOCATION || *name == header::CONTENT_LOCATION {
        relative_uri(text, origin_url)
    } else if *name == header::LINK && text.contains('<') {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                break;
            };
            let uri = &rest[open + 1..open + close];
            out.push_str(&rest[..=open]);
            match relative_uri(uri, origin_url) {
                Some(r) => {
                    out.push_str(&r);
                    changed = true;
                }
                None => out.push_str(uri),
            }
            rest = &rest[open + close..];
        }
        out.push_str(rest);
        changed.then_some(out)
    } else {
        None
    };
    rewritten
        .and_then(|r| HeaderValue::from_str(&r).ok())
        .unwrap_or_else(|| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn lines(pairs: &[(HeaderName, HeaderValue)]) -> Vec<String> {
        pairs
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
            ("ratelimit", "\"read-light\";r=57;t=3"),
            ("ratelimit-policy", "\"read-light\";q=120;w=60"),
            ("x-cache", "HIT"),
            ("www-authenticate", "Bearer"),
            ("authentication-info", "nextnonce=\"for-one-key\""),
            ("server-timing", "db;dur=53"),
            (
                "traceresponse",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("content-digest", "sha-256=:abc=:"),
            ("repr-digest", "sha-256=:abc=:"),
            ("access-control-allow-origin", "https://caller-one.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-layers-api-version"),
            ("timing-allow-origin", "https://caller-one.example"),
            ("via", "1.1 cdn"),
            ("cf-ray", "8c1f"),
            ("x-forwarded-for", "10.0.0.1"),
            ("alt-svc", "h3=\":8443\""),
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
            lines(&head.others),
            [
                "deprecation: @1767225600",
                "sunset: Wed, 30 Jun 2027 00:00:00 GMT",
                "x-layers-api-version: 1.4",
                "access-control-expose-headers: x-layers-api-version",
            ]
        );
        assert_eq!(
            lines(&head.container_only),
            [
                "link: <https://docs.example/v2>; rel=\"successor-version\"",
                "link: <https://docs.example/deprecation>; rel=\"deprecation\"",
            ]
        );
    }

    #[test]
    fn a_plain_json_answer_repeats_nothing() {
        let h = map(&[("content-type", "application/json"), ("content-length", "10")]);
        assert!(origin_head(&h, "http://o").is_empty());
    }

    #[test]
    fn targets_naming_the_origin_are_made_relative() {
        let h = map(&[
            ("content-location", "http://o:1/v1/content/x"),
            ("location", "http://o:1/v1/x"),
            (
                "link",
                "<http://o:1/v1/content/x>; rel=\"self\", <https://docs.example/d>; rel=\"deprecation\"",
            ),
        ]);
        let head = origin_head(&h, "http://o:1");
        assert_eq!(lines(&head.others), ["location: /v1/x"]);
        assert_eq!(
            lines(&head.container_only),
            [
                "content-location: /v1/content/x",
                "link: </v1/content/x>; rel=\"self\", <https://docs.example/d>; rel=\"deprecation\"",
            ]
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
