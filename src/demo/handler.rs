//! Routing, authentication and response envelopes of the simulator.
//!
//! Order of checks, as the origin does it: count the request, apply any
//! injected failure, authenticate (every route needs a key), check the
//! route's scope, parse ids, then look the resource up in the caller's org.
//! Another org's container is the same 404 as a missing one.

use super::bodies::{create_fields, patch_caption, read_body, regenerate_caption};
use super::controls::{FailureMode, Injection};
use super::idempotency::Idempotent;
use super::webhooks::Event;
use super::Simulator;
use crate::auth::scopes::Scope;
use crate::auth::{presented_credential, Principal};
use crate::error::{ErrorCode, GatewayError};
use crate::ids::{parse_asset_id, request_id_from_header, ContainerId};
use bytes::Bytes;
use http::request::Parts;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the simulator does with a request: answer it, or (only in
/// `serve()`) drop the connection or cut the body.
pub(crate) enum Outcome {
    Response(Response<Full<Bytes>>),
    /// Answer the head, then fail the body half-way (`Injection::FailBody`).
    FailBody(Response<Full<Bytes>>),
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
    /// HEAD is answered as GET (hyper leaves the body out). `lenient`
    /// ignores empty segments (a trailing or doubled slash), as many web
    /// frameworks do.
    fn parse(method: &Method, path: &'a str, lenient: bool) -> Route<'a> {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Route::Unknown;
        };
        let segs: Vec<&str> = rest.split('/').filter(|s| !lenient || !s.is_empty()).collect();
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
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

    /// The origin's rate-limit endpoint class, sent on every response as
    /// `X-RateLimit-Endpoint-Class`. Every GET is read-light; generating
    /// media (regenerate, create) is long-running; other writes are
    /// write-light.
    fn endpoint_class(self, method: &Method) -> &'static str {
        match self {
            Route::Regenerate(_) | Route::Create => "long-running",
            _ if method == Method::GET || method == Method::HEAD => "read-light",
            _ => "write-light",
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
        let injection = self.inner.injections.take(parts.method.as_str(), path);
        let route = Route::parse(&parts.method, path, self.lenient_paths());
        let failure = self.failure_mode();
        // The answer is fixed here, on arrival: a held or delayed request
        // answers with this snapshot whatever happens meanwhile.
        let mut outcome = match failure {
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
        if let Outcome::Response(r) = &mut outcome {
            let class = route.endpoint_class(&parts.method);
            r.headers_mut().insert(
                "x-ratelimit-endpoint-class",
                http::HeaderValue::from_static(class),
            );
        }
        if let Route::Container(_) = route {
            self.inner.counters.container_get_started();
            if let Some(gate) = self.inner.hold.current() {
                gate.wait().await;
            }
        }
        if let Some(FailureMode::Delay(d)) = failure {
            tokio::time::sleep(d).await;
        }
        match (injection, outcome) {
            (Some(Injection::DelayAnswer(d)), outcome) => {
                tokio::time::sleep(d).await;
                outcome
            }
            (Some(Injection::FailBody), Outcome::Response(r)) if r.status().is_success() => {
                Outcome::FailBody(r)
            }
            (_, outcome) => outcome,
        }
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
                // Decoded as the gateway decodes it: one asset, however spelled.
                let asset = parse_asset_id(asset);
                match self
                    .store()
                    .asset_body(id, &p.org, asset.as_deref().unwrap_or(""))
                {
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
                match store.idempotency.check(&p.org, k, &fingerprint) {
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
                store
                    .idempotency
                    .remember(&p.org, k, fingerprint, status.as_u16(), body.clone());
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
        let parse = |m: &Method, p| Route::parse(m, p, false);
        assert_eq!(parse(&get, "/v1/whoami"), Route::Whoami);
        assert_eq!(parse(&get, "/v1/content/x"), Route::Container("x"));
        assert_eq!(parse(&Method::HEAD, "/v1/content/x"), Route::Container("x"));
        assert_eq!(parse(&get, "/v1/content/x/assets/a"), Route::Asset("x", "a"));
        assert_eq!(
            parse(&Method::POST, "/v1/content/x/regenerate"),
            Route::Regenerate("x")
        );
        assert_eq!(parse(&Method::PUT, "/v1/content/x"), Route::Unknown);
        assert_eq!(parse(&get, "/v1/content/x/"), Route::Unknown);
        assert_eq!(parse(&get, "/v2/whoami"), Route::Unknown);
        assert_eq!(parse(&get, "/v1/content"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/v1/content/x/", true), Route::Container("x"));
        assert_eq!(
            Route::parse(&Method::HEAD, "/v1/content//x/assets/a/", true),
            Route::Asset("x", "a")
        );
        assert_eq!(Route::Create.endpoint_class(&Method::POST), "long-running");
        assert_eq!(Route::Unknown.endpoint_class(&get), "read-light");
        assert_eq!(Route::Delete("x").endpoint_class(&Method::DELETE), "write-light");
    }
}
