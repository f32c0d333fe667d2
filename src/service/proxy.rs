//! Every other `/v1` route: forwarded to the origin with its body streamed
//! under the size cap; a 2xx mutation of a container invalidates it before
//! the caller hears back (write-through).

use super::{Gateway, X_REQUEST_ID};
use crate::body::{BoxError, ResponseBody};
use crate::error::{ErrorCode, GatewayError};
use crate::events::{EventType, Invalidation, Source};
use crate::ids::ContainerId;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Limited};

/// Hop-by-hop headers (RFC 9110 section 7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
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

/// Asset ids of a container body (`assets[].assetId`); empty if it is not one.
fn current_asset_ids(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    v["assets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["assetId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn too_large() -> GatewayError {
    GatewayError::new(
        ErrorCode::PayloadTooLarge,
        "Request body exceeds the gateway's limit.",
    )
}

impl Gateway {
    pub(super) async fn proxy<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        template: &'static str,
        write_through: Option<(ContainerId, EventType)>,
        rid: &str,
        org: &str,
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
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
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
        let resp = self.state.origin.stream(req, template, org).await?;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let Some((id, event_type)) = write_through.filter(|_| parts.status.is_success()) else {
            return Ok(Response::from_parts(parts, ResponseBody::Stream(body)));
        };
        // A regenerate answers with the new container: read it (it is
        // capped like every origin body) so its asset ids are known to be
        // current and are never revoked by this invalidation, even when a
        // read already cached the new version.
        let (body, current_asset_ids) = if event_type == EventType::Regenerated {
            let bytes = self.state.origin.read_capped(body).await?;
            let ids = current_asset_ids(&bytes);
            (ResponseBody::full(bytes), ids)
        } else {
            (ResponseBody::Stream(body), Vec::new())
        };
        let inv = Invalidation {
            event_id: None,
            source: Source::WriteThrough,
            event_type,
            container: Some(id),
            revoked_asset_ids: Vec::new(),
            current_asset_ids,
        };
        // The origin has committed the mutation: answer it whatever happens
        // to the publish (a failed one is re-sent from the outbox, and the
        // origin's own webhook is a second path to every instance).
        let _ = self.accept_invalidation(&inv).await;
        Ok(Response::from_parts(parts, body))
    }
}
