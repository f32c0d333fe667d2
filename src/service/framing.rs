//! Checks of a request's HTTP/1 framing that hyper leaves to the server.

use crate::error::{ErrorCode, GatewayError};
use http::header::HOST;
use http::{Request, Version};

/// RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one `Host`,
/// and no HTTP/1 request carries two. The gateway itself never routes by
/// `Host` (it strips it before the origin), but a front proxy or CDN may
/// key on the one the gateway did not look at: an ambiguous request is
/// refused, not served. h2 and h3 requests name their target in
/// `:authority`; a `Host` beside it must name the same (RFC 9113 section
/// 8.3.1), and two are as ambiguous as over HTTP/1.
pub fn refusal<B>(req: &Request<B>) -> Option<GatewayError> {
    let version = req.version();
    let mut hosts = req.headers().get_all(HOST).iter();
    let first = hosts.next();
    let ambiguous = hosts.next().is_some()
        || if version > Version::HTTP_11 {
            let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
            matches!((first, authority), (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a))
        } else {
            first.is_none() && version == Version::HTTP_11
        };
    ambiguous.then(|| {
        GatewayError::new(
            ErrorCode::BadRequest,
            "The request needs exactly one Host header, naming its target.",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri("/v1/whoami").version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_host_passes_none_or_two_are_refused_on_http1_only() {
        assert!(refusal(&req(Version::HTTP_11, &["a.example"])).is_none());
        assert!(refusal(&req(Version::HTTP_11, &[])).is_some());
        assert!(refusal(&req(Version::HTTP_11, &["a.example", "b.example"])).is_some());
        assert!(
            refusal(&req(Version::HTTP_10, &[])).is_none(),
            "HTTP/1.0 may omit Host"
        );
        assert!(refusal(&req(Version::HTTP_10, &["a", "b"])).is_some());
        assert!(refusal(&req(Version::HTTP_2, &[])).is_none(), "h2 has :authority");
        assert!(refusal(&req(Version::HTTP_2, &["a", "b"])).is_some());
        let h2 = |authority: &str, host: &str| {
            Request::builder()
                .uri(format!("https://{authority}/v1/whoami"))
                .version(Version::HTTP_2)
                .header(HOST, host)
                .body(())
                .unwrap()
        };
        assert!(refusal(&h2("gw.example", "GW.example")).is_none());
        assert!(refusal(&h2("gw.example", "internal.example")).is_some());
    }
}
