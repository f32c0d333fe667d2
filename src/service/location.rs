//! An origin's `Location` that names the origin itself.
//!
//! The gateway sends the origin its own authority as `Host`, so an origin
//! that builds absolute redirects from `Host` answers with its internal
//! address: passed on, it would send a partner around the gateway (no
//! authentication, limits or fences of its own, and an address meant to
//! stay private). Such a `Location` is passed on relative, the same path
//! on whatever authority the partner called (RFC 9110 section 10.2.2 allows
//! a relative reference), as nginx's `proxy_redirect default` does. Any
//! other `Location` (a CDN URL, another site) is the origin's to give.

use http::header::{HeaderValue, LOCATION};
use http::HeaderMap;

/// Rewrites `headers`' `Location` to a relative reference when it starts
/// with `origin_url` (its scheme and authority compared without case, and
/// its path, if any) at a path boundary.
pub(crate) fn relative_to_gateway(headers: &mut HeaderMap, origin_url: &str) {
    let Some(value) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if let Some(v) = relative_uri(value, origin_url).and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(LOCATION, v);
    }
}

/// `uri` as a relative reference when it starts with `origin_url` (as
/// `relative_to_gateway` compares them); `None` when it names elsewhere.
pub(crate) fn relative_uri(uri: &str, origin_url: &str) -> Option<String> {
    let base = origin_url.trim_end_matches('/');
    let head = uri.get(..base.len())?;
    if !head.eq_ignore_ascii_case(base) {
        return None;
    }
    let rest = &uri[base.len()..];
    Some(match rest.as_bytes() {
        [] => "/".to_owned(),
        // `//host/p` (or `/\host/p`, which browsers read the same) would
        // name another host: `/.` keeps it a path on this one, the same
        // path once dot segments are removed (RFC 3986 section 5.2.4).
        [b'/', b'/' | b'\\', ..] => format!("/.{rest}"),
        [b'/', ..] => rest.to_owned(),
        [b'?' | b'#', ..] => format!("/{rest}"),
        // `http://origin:8080` is not a prefix of `http://origin:80801/`.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(location: &str, origin: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, HeaderValue::from_str(location).unwrap());
        relative_to_gateway(&mut h, origin);
        h[LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn only_the_origins_own_address_is_made_relative() {
        let origin = "http://10.0.0.7:8080";
        assert_eq!(
            rewritten("http://10.0.0.7:8080/v1/jobs/j1", origin),
            "/v1/jobs/j1"
        );
        assert_eq!(
            rewritten("HTTP://10.0.0.7:8080/v1/x?a=1", "http://10.0.0.7:8080/"),
            "/v1/x?a=1"
        );
        assert_eq!(rewritten("http://10.0.0.7:8080", origin), "/");
        assert_eq!(rewritten("http://10.0.0.7:8080?next=1", origin), "/?next=1");
        assert_eq!(
            rewritten("https://api.example/base/v1/x", "https://api.example/base"),
            "/v1/x"
        );
        // Never another host.
        assert_eq!(
            rewritten("http://10.0.0.7:8080//evil.example/p", origin),
            "/.//evil.example/p"
        );
        assert_eq!(
            rewritten("http://10.0.0.7:8080/\\evil.example/p", origin),
            "/./\\evil.example/p"
        );
        for kept in [
            "http://10.0.0.7:80801/v1/x",
            "https://cdn.layers.example/a.mp4",
            "/v1/jobs/j1",
            "http://10.0.0.7:8080.evil.example/",
        ] {
            assert_eq!(rewritten(kept, origin), kept);
        }
    }
}
