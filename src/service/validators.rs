//! What a reply of the content routes carries besides its bytes: the strong
//! `ETag` of the exact representation, `Cache-Control` (per route, from
//! config), `Vary: Accept-Encoding` on the container route while
//! compression is on, `Content-Encoding` for a compressed variant; and the
//! one place that turns a matching `If-None-Match` into a 304.
//!
//! Callers hand over only a representation the fence decision has allowed
//! serving as a 200 right now, so a 304 confirms exactly the bytes a 200
//! would carry, never a revoked version's.

use super::Outcome;
use crate::accept_encoding::Encoding;
use crate::body::ResponseBody;
use crate::config::CacheConfig;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, VARY};
use http::{Response, StatusCode};

static VARY_ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");
pub(crate) static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// The content routes' reply policy, from config (built once).
pub(crate) struct ContentHeaders {
    container_cache_control: Option<HeaderValue>,
    asset_cache_control: Option<HeaderValue>,
    /// Whether container replies vary by `Accept-Encoding`.
    vary: bool,
}

impl ContentHeaders {
    pub(crate) fn from_config(c: &CacheConfig) -> ContentHeaders {
        let value = |s: &str| (!s.is_empty()).then(|| HeaderValue::from_str(s).ok()).flatten();
        ContentHeaders {
            container_cache_control: value(&c.container_cache_control),
            asset_cache_control: value(&c.asset_cache_control),
            vary: !c.compress_encodings.is_empty(),
        }
    }

    /// Adds `Cache-Control` and `Vary` of a route's 200 or 304.
    pub(crate) fn add_policy(&self, h: &mut HeaderMap, asset: bool) {
        let cc = if asset {
            &self.asset_cache_control
        } else {
            &self.container_cache_control
        };
        if let Some(cc) = cc {
            h.insert(CACHE_CONTROL, cc.clone());
        }
        if self.vary && !asset {
            h.insert(VARY, VARY_ACCEPT_ENCODING.clone());
        }
    }
}

/// A representation chosen for a reply.
pub(super) struct Chosen {
    /// Sent before `body` (an asset descriptor's shared prefix).
    pub prefix: Option<Bytes>,
    pub body: Bytes,
    pub etag: Option<HeaderValue>,
    pub encoding: Encoding,
    /// Length of the identity representation (compression's saving).
    pub identity_len: usize,
}

impl Chosen {
    fn len(&self) -> usize {
        self.prefix.as_ref().map_or(0, Bytes::len) + self.body.len()
    }
}

/// What a content reply saved, for metrics.
#[derive(Clone, Copy, Debug)]
pub(super) struct Served {
    pub not_modified: bool,
    /// Bytes of the representation (not sent when `not_modified`).
    pub len: u64,
    pub encoding: Encoding,
    /// Identity length less the representation's length.
    pub saved_by_compression: u64,
}

/// The 200 or 304 for a chosen representation. `request` are the
/// request's headers (`If-None-Match`); `head`: no body either way.
pub(super) fn reply(
    chosen: Chosen,
    request: &HeaderMap,
    head: bool,
    asset: bool,
    policy: &ContentHeaders,
    outcome: &mut Outcome,
) -> Response<ResponseBody> {
    let len = chosen.len();
    let not_modified = chosen
        .etag
        .as_ref()
        .is_some_and(|t| crate::conditional::none_match_fails(request, t.as_bytes()));
    outcome.served = Some(Served {
        not_modified,
        len: len as u64,
        encoding: chosen.encoding,
        saved_by_compression: chosen.identity_len.saturating_sub(len) as u64,
    });
    let mut resp = if not_modified || head {
        Response::new(ResponseBody::empty())
    } else {
        // hyper writes Content-Length from the body's exact size.
        Response::new(ResponseBody::Parts(chosen.prefix, Some(chosen.body)))
    };
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = resp.headers_mut();
    if !not_modified {
        if head {
            // A HEAD reply's length is the GET body's, which hyper cannot know.
            h.insert(CONTENT_LENGTH, crate::header_text::int(len as u64));
        }
        if let Some(ce) = chosen.encoding.content_encoding() {
            h.insert(CONTENT_ENCODING, ce.clone());
        }
    }
    if let Some(tag) = chosen.etag {
        h.insert(ETAG, tag);
    }
    policy.add_policy(h, asset);
    resp
}
