//! Routing, authentication and response envelopes of the simulator.
//!
//! Order of checks, as the origin does it: count the request, apply any
//! injected failure, authenticate (every route needs a key), check the
//! route's scope, parse ids, then look the resource up in the caller's org.
//! Another org's container is the same 404 as a missing one.

use super::controls::FailureMode;
use super::store::Idempotent;
use super::webhooks::Event;
use super::Simulator;
use crate::auth::scopes::Scope;
use crate::auth::{presented_credential, Principal};
use crate::error::{ErrorCode, GatewayError};
use crate::ids::{request_id_from_header, valid_asset_id, ContainerId};
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Largest request body accepted; larger answers 413 `PAYLOAD_TOO_LARGE`.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the simulator does with a request: answer it, or (only in
/// `serve()`) drop the connection.
pub(crate) enum Outcome {
    Response(Response<Full<Bytes>>),
    /// Carries the request id for `handle()`'s stand-in 502.
    Reset(String),
}

/// Method + path, with the raw id segments (parsed later, after auth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Whoami,
    Container(&'a str),
    Asset(&'a str, &'a str),
    Regenerate(&'a str),
    UpdateCaption(&'a str),
    Delete(&'a str),
    Create,
    Projects,
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(method: &Method, path: &'a str) -> Route<'a> {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Route::Unknown;
        };
        let segs: Vec<&str> = rest.split('/').collect();
        match (method, segs.as_slice()) {
            (&Method::GET, ["whoami"]) => Route::Whoami,
            (&Method::GET, ["projects"]) => Route::Projects,
            (&Method::POST, ["content"]) => Route::Create,
            (&Method::GET, ["content", id]) => Route::Container(id),
            (&Method::PATCH, ["content", id]) => Route::UpdateCaption(id),
            (&Method::DELETE, ["content", id]) => Route::Delete(id),
            (&Method::GET, ["content", id, "assets", asset]) => Route::Asset(id, asset),
            (&Method::POST, ["content", id, "regenerate"]) => Route::Regenerate(id),
            _ => Route::Unknown,
        }
    }
}

impl Simulator {
    /// Answers one request; see the module docs for the order of checks.
    pub(crate) async fn respond<B>(&self, req: Request<B>) -> Outcome
    where
        B: Body<Data = Bytes> + Send,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = req.into_parts();
        let rid = request_id_from_header(parts.headers.get("x-request-id").map(|v| v.as_bytes()));
        let path = parts.uri.path();
        self.inner.counters.record(parts.method.as_str(), path);
        let route = Route::parse(&parts.method, path);
        let failure = self.failure_mode();
        // The answer is fixed here, on arrival: a held or delayed request
        // answers with this snapshot whatever happens meanwhile.
        let outcome = match failure {
            Some(FailureMode::Status(s)) => {
                let mut e = GatewayError::new(ErrorCode::Internal, "Internal error.");
                e.status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Outcome::Response(error_response(&e, &rid))
            }
            Some(FailureMode::ResetConnection) => Outcome::Reset(rid.clone()),
            _ => Outcome::Response(match self.dispatch(route, &parts, body, &rid).await {
                Ok(resp) => resp,
                Err(e) => error_response(&e, &rid),
            }),
        };
        if let Route::Container(_) = route {
            self.inner.counters.container_get_started();
            if let Some(gate) = self.inner.hold.current() {
                gate.wait().await;
            }
        }
        if let Some(FailureMode::Delay(d)) = failure {
            tokio::time::sleep(d).await;
        }
        outcome
    }

    async fn dispatch<B>(
        &self,
        route: Route<'_>,
        parts: &Parts,
        body: B,
        rid: &str,
    ) -> Result<Response<Full<Bytes>>, GatewayError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: std::fmt::Display,
    {
        let p = self.authenticate(&parts.headers)?;
        match route {
            Route::Whoami => Ok(json_response(StatusCode::OK, rid, self.whoami(&p))),
            Route::Projects => {
                require(&p, Scope::parse("projects:read").expect("known scope"))?;
                let v = self.store().projects(&p.org);
                Ok(json_response(StatusCode::OK, rid, to_bytes(&v)))
            }
            Route::Container(id) => {
                require(&p, Scope::CONTENT_READ)?;
                let body = self.store().container_body(container_id(id)?, Some(&*p.org));
                Ok(json_response(
                    StatusCode::OK,
                    rid,
                    body.ok_or_else(GatewayError::not_found)?,
                ))
            }
            Route::Asset(id, asset) => {
                require(&p, Scope::CONTENT_READ)?;
                let id = container_id(id)?;
                let asset = if valid_asset_id(asset) { asset } else { "" };
                match self.store().asset_body(id, &p.org, asset) {
                    None => Err(GatewayError::not_found()),
                    Some(None) => Err(GatewayError::asset_not_found()),
                    Some(Some(b)) => Ok(json_response(StatusCode::OK, rid, b)),
                }
            }
            Route::Regenerate(id) => {
                require(&p, Scope::CONTENT_WRITE)?;
                let id = container_id(id)?;
                let raw = read_body(&parts.headers, body).await?;
                let caption = regenerate_caption(&raw)?;
                let fp = fingerprint(&["regenerate", &id.to_string()], &raw);
                self.idempotent(&p, parts, fp, rid, StatusCode::OK, |store| {
                    let (r, body, assets) = store.regenerate(id, Some(&*p.org), caption)?;
                    let event = Event::Regenerated {
                        container: id,
                        previous_asset_ids: r.previous_asset_ids,
                        assets,
                    };
                    Some((body, Some(event)))
                })
            }
            Route::Create => {
                require(&p, Scope::CONTENT_WRITE)?;
                let raw = read_body(&parts.headers, body).await?;
                let (project, format, caption) = create_fields(&raw)?;
                let fp = fingerprint(&["create"], &raw);
                self.idempotent(&p, parts, fp, rid, StatusCode::CREATED, |store| {
                    Some((store.create(&p.org, &project, &format, &caption), None))
                })
            }
            Route::UpdateCaption(id) => {
                require(&p, Scope::CONTENT_WRITE)?;
                let id = container_id(id)?;
                let raw = read_body(&parts.headers, body).await?;
                let caption = patch_caption(&raw)?;
                let body = self.store_mut().update_caption(id, Some(&*p.org), &caption);
                let body = body.ok_or_else(GatewayError::not_found)?;
                self.inner
                    .outbox
                    .send_in_background(&Event::Updated { container: id });
                Ok(json_response(StatusCode::OK, rid, body))
            }
            Route::Delete(id) => {
                require(&p, Scope::CONTENT_WRITE)?;
                let id = container_id(id)?;
                let assets = self.store_mut().delete(id, Some(&*p.org));
                let assets = assets.ok_or_else(GatewayError::not_found)?;
                self.inner.outbox.send_in_background(&Event::Deleted {
                    container: id,
                    assets,
                });
                Ok(
                    with_request_id(Response::builder().status(StatusCode::NO_CONTENT), rid)
                        .body(Full::new(Bytes::new()))
                        .expect("static response parts"),
                )
            }
            Route::Unknown => Err(GatewayError::not_found()),
        }
    }

    fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Principal>, GatewayError> {
        let key = presented_credential(headers).map_err(|_| GatewayError::unauthenticated())?;
        self.inner
            .keys
            .authenticate(key, None)
            .map_err(|_| GatewayError::unauthenticated())
    }

    fn whoami(&self, p: &Principal) -> Bytes {
        let org = self.store().org_info(&p.org);
        to_bytes(&json!({
            "organizationId": &*p.org,
            "workspaceId": org.workspace_id,
            "organizationName": org.name,
            "parentOrganizationId": org.parent,
            "scopes": p.scopes.names(),
            "rateLimitTier": &*p.tier,
            "apiKeyId": &*p.key_id,
            "creditBalance": org.credit_balance,
        }))
    }

    /// Runs a `POST` mutation under its `Idempotency-Key`, if any: the
    /// lookup, the mutation and the record are one critical section, so two
    /// concurrent requests with one key cannot both mutate. Only successes
    /// are recorded; a replay sends no webhook.
    fn idempotent(
        &self,
        p: &Principal,
        parts: &Parts,
        fingerprint: [u8; 32],
        rid: &str,
        status: StatusCode,
        mutate: impl FnOnce(&mut super::store::Store) -> Option<(Bytes, Option<Event>)>,
    ) -> Result<Response<Full<Bytes>>, GatewayError> {
        let key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(v) => match v.to_str() {
                Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k),
                _ => {
                    return Err(GatewayError::new(
                        ErrorCode::Validation,
                        "Idempotency-Key must be 1-255 visible ASCII characters.",
                    ))
                }
            },
        };
        let (body, event) = {
            let mut store = self.store_mut();
            if let Some(k) = key {
                match store.idempotency_check(&p.org, k, &fingerprint) {
                    Idempotent::Fresh => {}
                    Idempotent::Replay(s, body) => {
                        let s = StatusCode::from_u16(s).unwrap_or(status);
                        return Ok(json_response(s, rid, body));
                    }
                    Idempotent::Conflict => {
                        return Err(GatewayError::new(
                            ErrorCode::IdempotencyConflict,
                            "Idempotency-Key was already used with a different request.",
                        ))
                    }
                }
            }
            let (body, event) = mutate(&mut store).ok_or_else(GatewayError::not_found)?;
            if let Some(k) = key {
                store.idempotency_remember(&p.org, k, fingerprint, status.as_u16(), body.clone());
            }
            (body, event)
        };
        if let Some(e) = event {
            self.inner.outbox.send_in_background(&e);
        }
        Ok(json_response(status, rid, body))
    }
}

fn require(p: &Principal, scope: Scope) -> Result<(), GatewayError> {
    if p.scopes.contains(scope) {
        Ok(())
    } else {
        Err(GatewayError::forbidden_scope(scope.as_str()))
    }
}

/// A bad id names nothing: 404, like an unknown one.
fn container_id(s: &str) -> Result<ContainerId, GatewayError> {
    ContainerId::parse(s).ok_or_else(GatewayError::not_found)
}

/// Identifies "the same request" for idempotency: route, canonical ids and
/// the raw body.
fn fingerprint(parts: &[&str], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.update(body);
    h.finalize().into()
}

fn validation(message: &'static str, field: &str) -> GatewayError {
    GatewayError::new(ErrorCode::Validation, message).with_details(json!({ "field": field }))
}

/// Regenerate takes no body or a JSON object with an optional `caption`.
fn regenerate_caption(raw: &[u8]) -> Result<Option<String>, GatewayError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| validation("Body must be a JSON object.", "body"))?;
    match v.get("caption") {
        None => Ok(None),
        Some(Value::String(c)) => Ok(Some(c.clone())),
        Some(_) => Err(validation("caption must be a string.", "caption")),
    }
}

/// `PATCH` takes exactly `{"caption": "<string>"}`.
fn patch_caption(raw: &[u8]) -> Result<String, GatewayError> {
    let v: Value =
        serde_json::from_slice(raw).map_err(|_| validation("Body must be a JSON object.", "body"))?;
    match v.as_object() {
        Some(o) if o.len() == 1 => match o.get("caption") {
            Some(Value::String(c)) => Ok(c.clone()),
            _ => Err(validation("Only caption (a string) can be updated.", "caption")),
        },
        _ => Err(validation("Only caption (a string) can be updated.", "caption")),
    }
}

/// `POST /v1/content`: `projectId` and `format` required, `caption` optional.
fn create_fields(raw: &[u8]) -> Result<(String, String, String), GatewayError> {
    let v: Value = serde_json::from_slice(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| validation("Body must be a JSON object.", "body"))?;
    let string = |k: &str, required: bool| match v.get(k) {
        Some(Value::String(s)) if !(required && s.is_empty()) => Ok(s.clone()),
        None if !required => Ok(String::new()),
        _ => Err(validation("Field missing or not a (non-empty) string.", k)),
    };
    Ok((
        string("projectId", true)?,
        string("format", true)?,
        string("caption", false)?,
    ))
}

/// Reads the whole body, refusing more than `MAX_BODY_BYTES` (by
/// `Content-Length` up front, and while reading for chunked bodies).
async fn read_body<B>(headers: &http::HeaderMap, body: B) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    let too_large = || GatewayError::new(ErrorCode::PayloadTooLarge, "Request body exceeds 1 MiB.");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "simulator: request body unreadable");
            GatewayError::new(ErrorCode::BadRequest, "The request body could not be read.")
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn with_request_id(b: http::response::Builder, rid: &str) -> http::response::Builder {
    b.header("x-request-id", rid)
}

pub(crate) fn json_response(status: StatusCode, rid: &str, body: Bytes) -> Response<Full<Bytes>> {
    with_request_id(Response::builder().status(status), rid)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("request ids are header-safe")
}

pub(crate) fn error_response(e: &GatewayError, rid: &str) -> Response<Full<Bytes>> {
    let mut resp = json_response(e.status, rid, e.envelope(rid));
    if let Some(secs) = e.retry_after_secs {
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_shape() {
        let get = Method::GET;
        assert_eq!(Route::parse(&get, "/v1/whoami"), Route::Whoami);
        assert_eq!(Route::parse(&get, "/v1/content/x"), Route::Container("x"));
        assert_eq!(
            Route::parse(&get, "/v1/content/x/assets/a"),
            Route::Asset("x", "a")
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v1/content/x/regenerate"),
            Route::Regenerate("x")
        );
        assert_eq!(Route::parse(&Method::PUT, "/v1/content/x"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/v1/content/x/"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/v2/whoami"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/v1/content"), Route::Unknown);
    }

    #[test]
    fn patch_accepts_only_a_caption() {
        assert_eq!(patch_caption(br#"{"caption":"hi"}"#).unwrap(), "hi");
        for bad in [
            &b"{}"[..],
            b"x",
            br#"{"caption":1}"#,
            br#"{"caption":"a","status":"x"}"#,
        ] {
            assert_eq!(patch_caption(bad).unwrap_err().code, ErrorCode::Validation);
        }
    }

    #[test]
    fn regenerate_body_is_optional() {
        assert_eq!(regenerate_caption(b"").unwrap(), None);
        assert_eq!(
            regenerate_caption(br#"{"caption":"n"}"#).unwrap().as_deref(),
            Some("n")
        );
        assert!(regenerate_caption(b"[1]").is_err());
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused() {
        let big = Full::new(Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]));
        let e = read_body(&http::HeaderMap::new(), big).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        let ok = Full::new(Bytes::from_static(b"{}"));
        assert_eq!(read_body(&http::HeaderMap::new(), ok).await.unwrap(), "{}");
    }
}
