//! Every other `/v1` route: forwarded to the origin with its body streamed
//! under the size cap; a 2xx mutation of a container invalidates it before
//! the caller hears back (write-through).
//!
//! Write-through cannot be lost: once the origin has answered a mutation
//! with 2xx, the invalidation (and its publication to the cluster) runs in
//! a task of its own, whatever then happens to the response body or the
//! caller (a disconnect, an h2 reset). A body that fails after the 2xx
//! still invalidates, without the current ids it would have named.

use super::{content_coding, Gateway, X_REQUEST_ID};
use crate::body::{BoxError, ResponseBody};
use crate::error::{ErrorCode, GatewayError};
use crate::events::{EventType, Invalidation, Source};
use crate::ids::ContainerId;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Limited};

/// Hop-by-hop headers (RFC 9110 section 7.6.1): never forwarded.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    // Not standard, and named for removal by RFC 9110 section 7.6.1 (black-box
    // round 92: it reached HTTP/1.1 clients; hyper drops it on h2).
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // A message framed by Transfer-Encoding: its Content-Length (if any)
    // does not describe the body as decoded, and forwarding it would frame
    // the next hop's message by a stale length (RFC 9112 section 6.3: an
    // intermediary removes it).
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        h.remove(http::header::CONTENT_LENGTH);
    }
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// What a mutation's answer says: the asset ids of the container it
/// returned (`assets[].assetId`) and its `updatedAt` (unix ms); nothing
/// when it is not a container. Read as a fill reads a container
/// (`cache::entry::json`): an answer holding other legal JSON (`1e400`, a
/// caption with a lone escaped surrogate) still names its current ids.
/// Black-box round 74: parsed into a `serde_json::Value`, such an answer
/// named none, and every id cached before the regenerate was revoked for a
/// day though the origin still served it.
fn answer_facts(body: &[u8]) -> (Vec<String>, Option<i64>) {
    use crate::cache::entry::json;
    let Ok(text) = std::str::from_utf8(body) else {
        return (Vec::new(), None);
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some([assets, updated_at]) = json::members(text, ["assets", "updatedAt"])
        .ok()
        .flatten()
        .map(|m| m.values)
    else {
        return (Vec::new(), None);
    };
    // As a webhook's are: valid ids, a bounded number of them (they become
    // a floor's current ids and, in a cluster, a stream entry and a fence
    // record of bounded size).
    let ids: Vec<_> = assets
        .and_then(json::elements)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| json::object_members(a, ["assetId"])?.values[0].and_then(json::string))
        .collect();
    let ids = crate::events::webhook::bounded_asset_ids(ids.iter().map(|a| a.as_ref()));
    let changed_at = updated_at
        .and_then(json::string)
        .and_then(|t| crate::cache::time::parse_rfc3339_millis(&t));
    (ids, changed_at)
}

/// The write-through invalidation's span: a child of the request's.
fn invalidation_span(trace: &Option<crate::telemetry::OriginTrace>) -> crate::telemetry::ChildSpan {
    match trace {
        Some(t) => t.child(crate::telemetry::span::INVALIDATION),
        None => crate::telemetry::ChildSpan::OFF,
    }
}

fn too_large() -> GatewayError {
    GatewayError::new(
        ErrorCode::PayloadTooLarge,
        "Request body exceeds the gateway's limit.",
    )
}

impl Gateway {
    /// A mutation was sent and its outcome is unknown (no answer, or a
    /// 5xx): the origin may have committed it. Drops what is cached (a
    /// generation bump); revokes and tombstones nothing on a guess.
    async fn purge_after_unknown_outcome(
        &self,
        id: ContainerId,
        trace: &Option<crate::telemetry::OriginTrace>,
    ) {
        let purge = Invalidation {
            event_id: None,
            source: Source::WriteThrough,
            event_type: EventType::Purge,
            container: Some(id),
            revoked_asset_ids: Vec::new(),
            current_asset_ids: Vec::new(),
            changed_at: None,
            created_at: None,
            replay: false,
            accepted_at: None,
        };
        let _ = self
            .accept_invalidation_in(&purge, invalidation_span(trace))
            .await;
    }

    /// An origin error answer, read whole (under the response cap) so that
    /// one that is not the Layers envelope is answered with the gateway's
    /// (`GatewayError::check_origin_error`).
    async fn origin_error(
        &self,
        parts: http::response::Parts,
        body: crate::body::StreamBody,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let bytes = self.state.origin.read_capped(body).await?;
        let cap = self.state.config.origin.max_response_bytes as usize;
        match content_coding::decoded(&parts.headers, &bytes, cap) {
            Some(plain) => GatewayError::check_origin_error(parts.status, &parts.headers, &plain)?,
            None => GatewayError::check_origin_error(parts.status, &parts.headers, &bytes)?,
        }
        // The origin's own envelope, as it came (still in its coding).
        Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn proxy<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        template: &'static str,
        write_through: Option<(ContainerId, EventType)>,
        rid: &str,
        org: &str,
        trace: Option<crate::telemetry::OriginTrace>,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let max = self.state.config.server.max_body_bytes;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mutation = !matches!(parts.method, http::Method::GET | http::Method::HEAD);
        if mutation
            && parts
                .uri
                .query()
                .is_some_and(super::overrides::query_overrides_method)
        {
            return Err(GatewayError::new(
                ErrorCode::BadRequest,
                "A method override (`_method`) in the query is not accepted; send the method itself.",
            ));
        }
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        // Scope and write-through were decided by this route and method.
        super::overrides::strip_override_headers(&mut headers);
        super::forward::checked_credential_only(&mut headers, &parts.headers);
        headers.remove(HOST);
        if let Ok(v) = HeaderValue::from_str(rid) {
            headers.insert(X_REQUEST_ID, v);
        }
        let body = Limited::new(body.map_err(Into::into), max as usize).boxed_unsync();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(path)
            .body(body)
            .map_err(|e| GatewayError::internal(&e))?;
        *req.headers_mut() = headers;
        // Sampled: the origin span replaces the caller's trace context.
        crate::telemetry::attach(&mut req, trace.as_ref());
        let head = parts.method == http::Method::HEAD;
        let Some((id, event_type)) = write_through else {
            let resp = self.state.origin.stream(req, template, org).await?;
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            super::location::relative_to_gateway(&mut parts.headers, &self.state.config.origin.url);
            if parts.status.as_u16() >= 400 && !head {
                return self.origin_error(parts, body).await;
            }
            return Ok(Response::from_parts(parts, ResponseBody::Stream(body)));
        };
        // Fills cached before this point hold data the mutation replaces
        // (before the first attempt, for a retry with the same key).
        let org: std::sync::Arc<str> = std::sync::Arc::from(org);
        let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        let mark = self.state.cache.mark_mutation(id, key.map(|k| (&org, k)));
        let gw = self.clone();
        // The whole exchange runs in its own task: the caller going away
        // (a disconnect, an h2 reset) drops only its wait for the result.
        let exchange = tokio::spawn(async move {
            let resp = match gw.state.origin.stream(req, template, &org).await {
                Ok(resp) => resp,
                Err(e) => {
                    if matches!(e.code, ErrorCode::UpstreamError | ErrorCode::UpstreamTimeout) {
                        gw.purge_after_unknown_outcome(id, &trace).await;
                    }
                    return Err(e);
                }
            };
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            super::location::relative_to_gateway(&mut parts.headers, &gw.state.config.origin.url);
            if parts.status.is_server_error() {
                // A 5xx (the origin's, or a load balancer's page in front
                // of it) does not say the mutation was not committed:
                // dropped like an answer that never came.
                gw.purge_after_unknown_outcome(id, &trace).await;
            }
            if parts.status.as_u16() >= 400 {
                return gw.origin_error(parts, body).await;
            }
            if !parts.status.is_success() {
                return Ok(Response::from_parts(parts, ResponseBody::Stream(body)));
            }
            // The origin has committed the mutation. Its answer (a
            // regenerate's new container, a PATCH's edited one) names the
            // current asset ids and when the change was made.
            let read = gw.state.origin.read_capped(body).await;
            // Read in the coding the origin chose (the partner's
            // `Accept-Encoding` is forwarded): a gzipped answer still dates
            // the change and names its current ids.
            let cap = gw.state.config.origin.max_response_bytes as usize;
            let (current_asset_ids, changed_at) = match &read {
                Ok(bytes) => match content_coding::decoded(&parts.headers, bytes, cap) {
                    Some(plain) => answer_facts(&plain),
                    None => answer_facts(bytes),
                },
                Err(_) => (Vec::new(), None),
            };
            // A delete's answer (the container it deleted) names what is
            // gone, as a delete webhook's assets do: revoked, never current.
            // Its `updatedAt` is the container's last change, not the
            // delete's: the delete is dated when it is applied (attacker
            // review: dated by it, a late `content.generated` of that last
            // change lifted the tombstone, and the delete could pass for
            // history, which a write-through delete never is).
            let (revoked_asset_ids, current_asset_ids, changed_at) = match event_type {
                EventType::Deleted => (current_asset_ids, Vec::new(), None),
                _ => (Vec::new(), current_asset_ids, changed_at),
            };
            let inv = Invalidation {
                event_id: None,
                source: Source::WriteThrough,
                event_type,
                container: Some(id),
                revoked_asset_ids,
                current_asset_ids,
                changed_at,
                created_at: None,
                replay: false,
                accepted_at: None,
            };
            // A failed publish is re-sent from the outbox, and the origin's
            // own webhook is a second path to every instance.
            let _ = gw.accept_mutation(&inv, &mark, invalidation_span(&trace)).await;
            read.map(|bytes| Response::from_parts(parts, ResponseBody::full(bytes)))
        });
        match exchange.await {
            Ok(result) => result,
            Err(e) => Err(GatewayError::internal(&e)),
        }
    }
}
