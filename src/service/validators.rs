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
use http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{Response, StatusCode};

pub(super) static VARY_ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");
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

    /// A route's `Cache-Control` (none when configured empty).
    fn cache_control(&self, asset: bool) -> Option<&HeaderValue> {
        if asset {
            self.asset_cache_control.as_ref()
        } else {
            self.container_cache_control.as_ref()
        }
    }

    /// Whether a route's replies carry `Vary: Accept-Encoding`.
    fn varies(&self, asset: bool) -> bool {
        self.vary && !asset
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

/// The headers a content reply sets itself, besides the block every
/// cached reply carries (`service/cached_head.rs` writes both from one
/// template; [`ReplyHead::write`] adds them to a map that has the rest).
#[derive(Clone, Debug, Default)]
pub(super) struct ReplyHead {
    /// A 304: no `Content-Type`, no length, no coding.
    pub not_modified: bool,
    /// A HEAD's length, which hyper cannot know (a GET's it writes from
    /// the body).
    pub content_length: Option<HeaderValue>,
    pub content_encoding: Option<&'static HeaderValue>,
    pub etag: Option<HeaderValue>,
    pub cache_control: Option<HeaderValue>,
    /// `Vary: Accept-Encoding`.
    pub vary: bool,
    /// The origin's `Content-Type` where it is not `application/json`
    /// (the header block's own value otherwise; none on a 304).
    pub content_type: Option<HeaderValue>,
    /// The entry's origin headers (`service/origin_headers.rs`): added
    /// after the block, not part of its template.
    pub origin_headers: Option<std::sync::Arc<crate::cache::OriginHead>>,
    /// A reply of the container itself: its `container_only` origin
    /// headers too (on a 304, `Content-Location` alone).
    pub origin_container: bool,
}

impl ReplyHead {
    /// Adds these headers to `h` (a reply whose other headers are built
    /// header by header). What is set here wins over a value in `h`.
    pub(super) fn write(self, h: &mut HeaderMap) {
        if let Some(v) = self.content_type {
            h.insert(CONTENT_TYPE, v);
        }
        if let Some(v) = self.content_length {
            h.insert(CONTENT_LENGTH, v);
        }
        if let Some(v) = self.content_encoding {
            h.insert(CONTENT_ENCODING, v.clone());
        }
        if let Some(v) = self.etag {
            h.insert(ETAG, v);
        }
        if let Some(v) = self.cache_control {
            h.insert(CACHE_CONTROL, v);
        }
        if self.vary {
            h.insert(VARY, VARY_ACCEPT_ENCODING.clone());
        }
        if let Some(o) = &self.origin_headers {
            for (name, value) in o.for_reply(self.origin_container, self.not_modified) {
                h.append(name.clone(), value.clone());
            }
        }
    }

    /// The names present, as bits: the key of a header-block template.
    pub(super) fn shape(&self) -> u8 {
        u8::from(self.not_modified)
            | u8::from(self.content_length.is_some()) << 1
            | u8::from(self.content_encoding.is_some()) << 2
            | u8::from(self.etag.is_some()) << 3
            | u8::from(self.cache_control.is_some()) << 4
            | u8::from(self.vary) << 5
            | u8::from(self.content_type.is_some()) << 6
    }
}

/// The 200 or 304 for a chosen representation, with no headers: what it
/// sets itself is returned beside it. `request` are the request's headers
/// (`If-None-Match`); `head`: no body either way.
pub(super) fn reply(
    chosen: Chosen,
    request: &HeaderMap,
    head: bool,
    asset: bool,
    policy: &ContentHeaders,
    outcome: &mut Outcome,
) -> (Response<ResponseBody>, ReplyHead) {
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
    let described = !not_modified;
    let reply_head = ReplyHead {
        not_modified,
        content_length: (described && head).then(|| crate::header_text::int(len as u64)),
        content_encoding: if described {
            chosen.encoding.content_encoding()
        } else {
            None
        },
        etag: chosen.etag,
        cache_control: policy.cache_control(asset).cloned(),
        vary: policy.varies(asset),
        content_type: None,
        origin_headers: None,
        origin_container: false,
    };
    (resp, reply_head)
}
