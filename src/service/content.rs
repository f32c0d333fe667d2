//! The cached routes: `GET|HEAD /v1/content/:containerId` and
//! `/v1/content/:containerId/assets/:assetId`.

use super::validators::{reply, Chosen};
use super::{content_coding, CachedReply, Gateway, Outcome, X_REQUEST_ID};
use crate::accept_encoding::{Accepted, Encoding};
use crate::auth::Principal;
use crate::body::ResponseBody;
use crate::cache::entry::CachedContainer;
use crate::cache::representation::{strong_tag, tag_value};
use crate::cache::{CacheStatus, Source, Verdict};
use crate::error::{ErrorCode, GatewayError};
use crate::ids::ContainerId;
use crate::origin::empty_body;
use crate::routes::CONTAINER_TEMPLATE;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use std::sync::Arc;

// `X-Cache` values, checked once at compile time rather than per response.
static HIT: HeaderValue = HeaderValue::from_static("HIT");
static MISS: HeaderValue = HeaderValue::from_static("MISS");
static STALE: HeaderValue = HeaderValue::from_static("STALE");

/// Headers forwarded to the origin on a read besides the checked
/// credential: trace context.
const FORWARDED: [&str; 2] = ["traceparent", "tracestate"];

/// The headers of an origin read made for this request: the credential
/// that was checked, trace context, the request id, and
/// `Accept-Encoding: identity`.
pub(super) fn read_headers(parts: &http::request::Parts, rid: &str) -> http::HeaderMap {
    let mut fwd = http::HeaderMap::with_capacity(FORWARDED.len() + 2);
    // Every line: W3C makes several `tracestate` lines one list, and a
    // proxy that does not record passes them on unchanged.
    for name in FORWARDED {
        for v in parts.headers.get_all(name) {
            fwd.append(name, v.clone());
        }
    }
    super::forward::checked_credential_only(&mut fwd, &parts.headers);
    // The cache keeps (and compresses) identity bytes.
    fwd.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Ok(v) = HeaderValue::from_str(rid) {
        fwd.insert(X_REQUEST_ID, v);
    }
    fwd
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn content(
        &self,
        parts: &http::request::Parts,
        principal: &Principal,
        id: ContainerId,
        asset: Option<&str>,
        head: bool,
        rid: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        if let Some(entry) = self.state.cache.lookup(&principal.org, id).await {
            outcome.cache = Some(CacheStatus::Hit);
            return self.serve(&entry, None, parts, asset, head, &HIT, outcome);
        }
        // Boxed: the fill's future is large, and every request, hits
        // included, would otherwise carry (and move) its space.
        Box::pin(self.content_miss(parts, principal, id, asset, head, rid, outcome)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn content_miss(
        &self,
        parts: &http::request::Parts,
        principal: &Principal,
        id: ContainerId,
        asset: Option<&str>,
        head: bool,
        rid: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let cache = &self.state.cache;
        if !cache.may_serve_cached() {
            // Fail closed: not caught up with the invalidation stream, so
            // the cache may hold revoked data. Read from the origin, through
            // the fence, and keep nothing.
            if let Some(c) = &self.state.cluster {
                c.note_bypass();
            }
            outcome.cache = Some(CacheStatus::Bypass);
            let path = match asset {
                None => format!("/v1/content/{id}"),
                // The canonical id, spelled for a path (`ids::encode_asset_id`).
                Some(a) => format!("/v1/content/{id}/assets/{}", crate::ids::encode_asset_id(a)),
            };
            return self
                .content_via_origin(parts, principal, id, asset, &path, rid, outcome)
                .await;
        }
        if let Some(e) = cache.lookup_negative(&principal.org, id) {
            outcome.cache = Some(CacheStatus::Negative);
            return Err(e);
        }
        cache.admit_miss(&principal.org)?;
        if asset.is_some() {
            // A revoked asset is 404 without asking the origin, whatever
            // state the container's fill would be in. Revocations are per
            // container, not per organization, and nothing has shown yet
            // that this caller may see the container: the answer is the
            // one for an unknown resource, so another organization learns
            // nothing of the container or its revoked ids. The miss budget
            // is charged first for the same reason: past it, a revoked id
            // and an id that never existed are both 429.
            match cache.judge_origin(id, asset, None) {
                crate::cache::OriginVerdict::AssetRevoked => {
                    outcome.cache = Some(CacheStatus::Revoked);
                    return Err(GatewayError::not_found());
                }
                crate::cache::OriginVerdict::Gone => {
                    outcome.cache = Some(CacheStatus::Tombstone);
                    return Err(GatewayError::not_found());
                }
                _ => {}
            }
        }
        let fwd = read_headers(parts, rid);
        let cap = self.state.config.origin.max_response_bytes as usize;
        let origin = self.state.origin.clone();
        let org = principal.org.clone();
        // Only the leader's fetch runs: its span is the origin span.
        let trace = outcome.trace.origin();
        let state = self.state.clone();
        let fetch = move || {
            let (origin, org, fwd, trace) = (origin.clone(), org.clone(), fwd.clone(), trace.clone());
            let state = state.clone();
            async move {
                let mut req = Request::get(format!("/v1/content/{id}"))
                    .body(empty_body())
                    .map_err(|e| GatewayError::internal(&e))?;
                *req.headers_mut() = fwd;
                crate::telemetry::attach(&mut req, trace.as_ref());
                let mut reply = origin.fetch(req, CONTAINER_TEMPLATE, &org).await?;
                // Asked for identity, an origin (or a CDN before it) may
                // still code its answer; a coding it cannot read leaves an
                // empty body, which no check below accepts.
                if let Some(plain) = content_coding::decoded(&reply.headers, &reply.body, cap) {
                    reply.body = plain.into();
                }
                if reply.status == StatusCode::OK {
                    let head = super::origin_headers::origin_head(&reply.headers, &state.config.origin.url);
                    return Ok(crate::cache::Fetched {
                        body: reply.body,
                        head,
                    });
                }
                if !reply.status.is_client_error() {
                    tracing::warn!(status = reply.status.as_u16(), container = %id, "origin failed a container fetch");
                }
                if reply.status.is_client_error() || reply.status.is_server_error() {
                    // The origin's own envelope, 4xx or 5xx, is answered as
                    // it sent it (status, every member, Retry-After), with
                    // each caller's request id; a 5xx one still lets a
                    // stale copy answer (`origin_failed`).
                    if let Some(e) = GatewayError::origin_answer(reply.status, &reply.headers, &reply.body) {
                        let head =
                            super::origin_headers::origin_head(&reply.headers, &state.config.origin.url);
                        return Err(e.with_origin_head(head));
                    }
                }
                if reply.status.is_client_error() {
                    // The gateway's envelope by the rule every route
                    // follows (a plain 404 page is a 404, never a 502 that
                    // stale-if-error would answer from cache).
                    return Err(GatewayError::plain_origin_error(reply.status, &reply.headers));
                }
                // Not the origin's envelope: UPSTREAM_ERROR (a stale copy
                // may answer), with a 503's Retry-After for when none does.
                let mut e = GatewayError::upstream_error();
                if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                    e.retry_after_secs = crate::error::origin_retry_after(&reply.headers);
                }
                Err(e)
            }
        };
        let (result, status) = cache.fill(&principal.org, id, fetch).await;
        outcome.cache = Some(status);
        match result {
            Ok(entry) => match cache.judge(&entry, Source::Fill, asset) {
                Verdict::Serve => self.serve(&entry, None, parts, asset, head, &MISS, outcome),
                Verdict::ServeBody(b) => self.serve(&entry, Some(b), parts, asset, head, &MISS, outcome),
                Verdict::Gone => {
                    outcome.cache = Some(CacheStatus::Tombstone);
                    Err(GatewayError::not_found())
                }
                Verdict::AssetRevoked => {
                    outcome.cache = Some(CacheStatus::Revoked);
                    Err(GatewayError::asset_not_found())
                }
                Verdict::NotCurrent => Err(GatewayError::upstream_error()),
            },
            // The origin failed (its own 5xx envelope included), or is shed
            // (breaker open, queue full): a stale copy is better than an
            // error and costs the origin nothing.
            Err(e)
                if e.origin_failed()
                    || matches!(
                        e.code,
                        ErrorCode::UpstreamError | ErrorCode::UpstreamTimeout | ErrorCode::Overloaded
                    ) =>
            {
                match cache.lookup_stale(&principal.org, id).await {
                    Some(entry) => {
                        outcome.cache = Some(CacheStatus::Stale);
                        tracing::info!(container = %id, "origin failed; serving stale entry");
                        self.serve(&entry, None, parts, asset, head, &STALE, outcome)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl Gateway {
    /// The response for a container or one of its assets, from rendered
    /// bytes the fence decision allowed: the representation the request's
    /// `Accept-Encoding` asks for, or a 304 when its `If-None-Match` names
    /// that representation's tag. `body` replaces the entry's container
    /// body when the decision re-rendered it (served as identity, with a
    /// tag computed here: a rare path, never a hit).
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        entry: &Arc<CachedContainer>,
        body: Option<Bytes>,
        parts: &http::request::Parts,
        asset: Option<&str>,
        head: bool,
        x_cache: &'static HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let chosen = match (asset, body) {
            (None, Some(b)) => {
                let tag = strong_tag(&[&b]);
                Chosen {
                    prefix: None,
                    identity_len: b.len(),
                    body: b,
                    etag: tag_value(Bytes::copy_from_slice(&tag)),
                    encoding: Encoding::Identity,
                }
            }
            (None, None) => choose_container(entry, &parts.headers),
            (Some(a), _) => match entry.asset(a) {
                Some(d) => Chosen {
                    identity_len: d.len(),
                    prefix: d.prefix,
                    body: d.rest,
                    etag: d.etag,
                    encoding: Encoding::Identity,
                },
                None => {
                    if entry.fence.lock().is_revoked(a, tokio::time::Instant::now()) {
                        outcome.cache = Some(CacheStatus::Revoked);
                    }
                    return Err(GatewayError::asset_not_found());
                }
            },
        };
        outcome.trace.set(|| {
            opentelemetry::KeyValue::new(crate::telemetry::attr::GENERATION, entry.generation as i64)
        });
        let (resp, mut reply_head) = reply(
            chosen,
            &parts.headers,
            head,
            asset.is_some(),
            &self.state.content_headers,
            outcome,
        );
        if !reply_head.not_modified {
            reply_head.content_type = entry.content_type().cloned();
        }
        // The origin's own headers, on a 304 as on a 200 (as a read through
        // to the origin carries them, `content_origin.rs`).
        reply_head.origin_headers = entry.head.clone();
        reply_head.origin_container = asset.is_none();
        // `Gateway::respond` writes the whole header block, content type,
        // `X-Cache` and the reply's own headers included, in one go (see
        // `cached_head`).
        outcome.cached_reply = Some(CachedReply {
            x_cache,
            head: reply_head,
        });
        Ok(resp)
    }
}

/// The container body in the coding the request's `Accept-Encoding`
/// prefers among those the entry holds.
fn choose_container(entry: &CachedContainer, request: &http::HeaderMap) -> Chosen {
    let identity = || Chosen {
        prefix: None,
        body: entry.body.clone(),
        etag: entry.etag.clone(),
        encoding: Encoding::Identity,
        identity_len: entry.body.len(),
    };
    let variants = entry.variants();
    if variants.is_empty() || !request.contains_key(http::header::ACCEPT_ENCODING) {
        return identity();
    }
    // At most two variants: the codings are gathered on the stack.
    let mut available = [Encoding::Identity; 2];
    let n = variants.len().min(available.len());
    for (slot, v) in available.iter_mut().zip(variants) {
        *slot = v.encoding;
    }
    let want = Accepted::from_headers(request).choose(&available[..n]);
    match variants.iter().find(|v| v.encoding == want) {
        Some(v) => Chosen {
            prefix: None,
            body: v.body.clone(),
            etag: Some(v.etag.clone()),
            encoding: v.encoding,
            identity_len: entry.body.len(),
        },
        None => identity(),
    }
}
