//! Reads of the cached routes that the cache does not answer: a query
//! string, an alias (`routes/alias.rs`), or any cached route while a
//! cluster instance is not synced. They go to the origin, and the fence
//! decides on them twice: before the call (a tombstoned container or a
//! revoked asset answers 404 without one) and on the answer (a tombstone
//! set meanwhile, a revoked asset named by the body, revoked assets left
//! out of a container body). A container body older than a change an
//! invalidation reported (a lagging replica) is asked for once more after
//! `cache.lag_retry_ms`, as a fill is. Nothing is cached.
//!
//! Validators: the origin's own `ETag` and `Last-Modified` are dropped (the
//! fence may have rewritten the body they describe). A 2xx GET gets the
//! strong tag of the bytes it carries, after the fence decision, and a
//! matching `If-None-Match` gets a 304: it confirms exactly what this reply
//! would carry as a 200. A HEAD is asked of the origin as a GET, so the
//! same decision, length and tag apply to it. Identity only: nothing is
//! compressed here.

use super::content::read_headers;
use super::proxy::strip_hop_by_hop;
use super::validators::{self, Chosen, NO_STORE};
use super::{Gateway, Outcome};
use crate::accept_encoding::Encoding;
use crate::auth::Principal;
use crate::body::ResponseBody;
use crate::cache::representation::{strong_tag, tag_value};
use crate::cache::OriginVerdict;
use crate::error::GatewayError;
use crate::ids::ContainerId;
use crate::origin::empty_body;
use crate::routes::{ASSET_TEMPLATE, CONTAINER_TEMPLATE};
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, ETAG, EXPIRES, LAST_MODIFIED};
use http::{Method, Request, Response, StatusCode};

impl Gateway {
    /// `path` is what the origin is asked for (the caller's path and query
    /// for a variant, the canonical path when unsynced).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn content_via_origin(
        &self,
        parts: &http::request::Parts,
        principal: &Principal,
        id: ContainerId,
        asset: Option<&str>,
        path: &str,
        rid: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let cache = &self.state.cache;
        if !cache.fences_known() {
            // Fail closed: without the cluster's tombstones and revocations
            // the fence below would pass a deleted container.
            return Err(GatewayError::cluster_catching_up());
        }
        let refuse = |v: OriginVerdict| match v {
            OriginVerdict::Pass => None,
            OriginVerdict::Gone => Some(Err(GatewayError::not_found())),
            OriginVerdict::AssetRevoked | OriginVerdict::AssetUnproven => {
                Some(Err(GatewayError::asset_not_found()))
            }
            OriginVerdict::Unreadable => Some(Err(GatewayError::upstream_error())),
        };
        // Before the origin has shown that this caller may see the
        // container, a revoked asset is answered as an unknown resource
        // (revocations are per container, not per organization), and only
        // after the miss budget is charged, as it is for an unknown one.
        cache.admit_miss(&principal.org)?;
        match cache.judge_origin(id, asset, None) {
            OriginVerdict::AssetRevoked => return Err(GatewayError::not_found()),
            v => {
                if let Some(r) = refuse(v) {
                    return r;
                }
            }
        }
        let template = if asset.is_some() {
            ASSET_TEMPLATE
        } else {
            CONTAINER_TEMPLATE
        };
        // A HEAD is asked as a GET: the fence judges the body a HEAD
        // describes (a revoked asset it names, revoked assets left out of
        // it), and the HEAD's length and tag are those of the GET's bytes.
        let head = parts.method == Method::HEAD;
        let mut retried = false;
        let reply = loop {
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .body(empty_body())
                .map_err(|e| GatewayError::internal(&e))?;
            *req.headers_mut() = read_headers(parts, rid);
            crate::telemetry::attach(&mut req, outcome.trace.origin().as_ref());
            let mut reply = self.state.origin.fetch(req, template, &principal.org).await?;
            self.plain(&mut reply);
            let behind =
                reply.status == StatusCode::OK && asset.is_none() && cache.origin_is_behind(id, &reply.body);
            if behind && !retried && !cache.lag_retry().is_zero() {
                retried = true;
                tokio::time::sleep(cache.lag_retry()).await;
                continue;
            }
            break reply;
        };
        let mut body = reply.body;
        let mut verdict = if reply.status.is_success() {
            cache.judge_origin(id, asset, Some(&mut body))
        } else {
            cache.judge_origin(id, asset, None)
        };
        if let (OriginVerdict::AssetUnproven, Some(a)) = (&verdict, asset) {
            verdict = self.asset_by_container(parts, principal, id, a, rid).await?;
        }
        if let Some(r) = refuse(verdict) {
            return r;
        }
        if reply.status == StatusCode::OK && asset.is_none() {
            cache.note_origin_version(id, &body);
        }
        let mut headers = reply.headers;
        strip_hop_by_hop(&mut headers);
        super::location::relative_to_gateway(&mut headers, &self.state.config.origin.url);
        super::origin_headers::relative_link_targets(&mut headers, &self.state.config.origin.url);
        headers.remove(ETAG);
        headers.remove(LAST_MODIFIED);
        super::origin_headers::strip_digests(&mut headers);
        // The origin's freshness is not the gateway's: the route's policy
        // (or none, when it is empty) is what a cache downstream may use,
        // on this path as on a cached read.
        strip_freshness(&mut headers);
        let ok = reply.status == StatusCode::OK;
        if ok {
            let tag = strong_tag(&[&body]);
            let chosen = Chosen {
                prefix: None,
                identity_len: body.len(),
                body,
                etag: tag_value(Bytes::copy_from_slice(&tag)),
                encoding: Encoding::Identity,
            };
            let (resp, reply_head) = validators::reply(
                chosen,
                &parts.headers,
                head,
                asset.is_some(),
                &self.state.content_headers,
                outcome,
            );
            // The origin's length is of its body, which the fence may have
            // rewritten: hyper writes the length of the body sent, a HEAD's
            // comes with the reply's own headers, and a 304 has none.
            headers.remove(CONTENT_LENGTH);
            if resp.status() == StatusCode::NOT_MODIFIED {
                // What a cached 304 carries of the origin's representation
                // metadata: `Content-Location` only (`OriginHead::for_reply`;
                // black-box round 92: this path kept the others).
                for name in [
                    http::header::CONTENT_TYPE,
                    http::header::LINK,
                    http::header::CONTENT_DISPOSITION,
                    http::header::CONTENT_LANGUAGE,
                ] {
                    headers.remove(name);
                }
            }
            // The origin's other headers (content type, its own extras),
            // then the reply's validators and policy over them.
            reply_head.write(&mut headers);
            let mut resp = resp;
            *resp.headers_mut() = headers;
            return Ok(resp);
        }
        if !reply.status.is_success() {
            GatewayError::check_origin_error(reply.status, &headers, &body)?;
        }
        // Anything but a 200 has no validator and no policy of the route's:
        // not to be stored.
        headers.insert(CACHE_CONTROL, NO_STORE.clone());
        // The length of the GET's body, for a HEAD too.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut resp = Response::new(if head {
            ResponseBody::empty()
        } else {
            ResponseBody::full(body)
        });
        *resp.status_mut() = reply.status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// The origin's answer in identity bytes. Asked for identity, an origin
    /// (or a CDN before it) may still code its answer; the fence judges,
    /// tags and answers decoded bytes, so the coding header goes too. A
    /// coding this cannot read leaves an empty body, which no check passes.
    fn plain(&self, reply: &mut crate::origin::OriginReply) {
        let cap = self.state.config.origin.max_response_bytes as usize;
        if let Some(plain) = super::content_coding::decoded(&reply.headers, &reply.body, cap) {
            reply.body = plain.into();
            reply.headers.remove(http::header::CONTENT_ENCODING);
        }
    }

    /// An asset the floor does not name as current, decided by the
    /// origin's container (see `ContentCache::judge_asset_by_container`):
    /// one more origin read, only for such an asset. A container the origin
    /// does not answer with a 2xx cannot show the asset is newer: 404.
    async fn asset_by_container(
        &self,
        parts: &http::request::Parts,
        principal: &Principal,
        id: ContainerId,
        asset: &str,
        rid: &str,
    ) -> Result<OriginVerdict, GatewayError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/content/{id}"))
            .body(empty_body())
            .map_err(|e| GatewayError::internal(&e))?;
        *req.headers_mut() = read_headers(parts, rid);
        let mut reply = self
            .state
            .origin
            .fetch(req, CONTAINER_TEMPLATE, &principal.org)
            .await?;
        self.plain(&mut reply);
        if !reply.status.is_success() {
            return Ok(OriginVerdict::AssetRevoked);
        }
        Ok(self.state.cache.judge_asset_by_container(id, asset, &reply.body))
    }
}

/// Removes every header by which the origin tells a cache downstream how
/// long it may keep the answer: `Cache-Control`, `Expires`, `Pragma`,
/// `Age`, `Surrogate-Control`, and the targeted `*-Cache-Control` fields of
/// RFC 9213 (`CDN-Cache-Control`, ...) that a CDN obeys over
/// `Cache-Control`. An origin's `public, max-age` would let a shared cache
/// keep a URL past its revocation.
fn strip_freshness(headers: &mut http::HeaderMap) {
    let targeted: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().ends_with("-cache-control"))
        .cloned()
        .collect();
    for n in targeted {
        headers.remove(n);
    }
    for n in [CACHE_CONTROL, EXPIRES, http::header::PRAGMA, http::header::AGE] {
        headers.remove(n);
    }
    headers.remove("surrogate-control");
}
