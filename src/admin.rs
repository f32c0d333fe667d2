//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the purge
//! endpoint and the inspect endpoints (`inspect.rs`). It never serves
//! partner traffic, and the partner port never serves these paths.

mod inspect;

use crate::body::{BoxError, ResponseBody};
use crate::error::{ErrorCode, GatewayError};
use crate::events::{EventType, Invalidation, Source};
use crate::ids::{request_id_from_header, ContainerId};
use crate::service::{json_response, Gateway};
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub async fn handle<B>(gw: &Gateway, req: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    answer(gw, req, None).await
}

/// As [`handle`], for a request off the admin listener: `standing` is told
/// when the request carries the admin token (an operator's purge or
/// reload then keeps its connection at the cap: `server::idle_evict`), and
/// handed back with the response.
pub async fn handle_wire<B, S: crate::service::Standing>(
    gw: &Gateway,
    req: Request<B>,
    standing: S,
) -> (Response<ResponseBody>, S)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let resp = answer(gw, req, Some(&standing)).await;
    (resp, standing)
}

async fn answer<B>(
    gw: &Gateway,
    req: Request<B>,
    standing: Option<&dyn crate::service::Standing>,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let rid = request_id_from_header(req.headers().get("x-request-id").map(|v| v.as_bytes()));
    let result = route(gw, &req, standing).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let mut r = json_response(e.status, e.envelope(&rid));
            r.headers_mut()
                .insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(s) = e.retry_after_secs {
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn route<B>(
    gw: &Gateway,
    req: &Request<B>,
    standing: Option<&dyn crate::service::Standing>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let st = gw.state();
    // Probes (load balancers, uptime checks) often ask with HEAD: the
    // read-only endpoints answer it as GET (hyper sends no body).
    let method = match (req.method(), req.uri().path()) {
        (&Method::HEAD, "/healthz" | "/readyz" | "/metrics") => &Method::GET,
        (m, _) => m,
    };
    match (method, req.uri().path()) {
        (&Method::GET, "/healthz") => Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(br#"{"status":"ok"}"#),
        )),
        (&Method::GET, "/readyz") => Ok(match (gw.is_ready(), gw.cluster_synced()) {
            (false, _) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(br#"{"status":"starting","reason":"origin has not answered yet"}"#),
            ),
            // Still correct (cached routes come from the origin), so still
            // in rotation: taking every instance out when Redis fails would
            // turn a cache outage into a full outage.
            // Black-box round 88: while the fences are rebuilt (a join, or
            // Redis lost data) content routes answer 503, which the reason
            // below did not say.
            (true, Some(false)) if !st.cache.fences_known() => json_response(
                StatusCode::OK,
                Bytes::from_static(
                    br#"{"status":"degraded","reason":"rebuilding fences from the cluster (joining, or Redis lost data); content routes answer 503 until every live peer has re-published its own"}"#,
                ),
            ),
            (true, Some(false)) => json_response(
                StatusCode::OK,
                Bytes::from_static(
                    br#"{"status":"degraded","reason":"not caught up with the cluster invalidation stream; cached routes are served from the origin"}"#,
                ),
            ),
            (true, _) => json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#)),
        }),
        (&Method::GET, "/metrics") => {
            // moka applies inserts and evictions lazily; settle them so the
            // gauges are exact.
            st.cache.run_pending_tasks().await;
            st.metrics.cache_entries.set(st.cache.entry_count() as i64);
            st.metrics
                .cache_weighted_bytes
                .set(st.cache.weighted_size() as i64);
            let v = st.cache.variant_counts();
            st.metrics.representation.set_variants(
                v.gzip.load(std::sync::atomic::Ordering::Relaxed),
                v.br.load(std::sync::atomic::Ordering::Relaxed),
            );
            let mut r = Response::new(ResponseBody::full(Bytes::from(st.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        (&Method::POST, "/admin/purge") => {
            authorize(gw, req, standing)?;
            purge(gw, req.uri().query().unwrap_or("")).await
        }
        (&Method::GET, path) if path.starts_with(CONTAINERS) => {
            authorize(gw, req, standing)?;
            inspect::container(gw, &path[CONTAINERS.len()..])
        }
        (&Method::GET, path) if path.starts_with(KEYS) => {
            authorize(gw, req, standing)?;
            inspect::key(gw, &path[KEYS.len()..])
        }
        (&Method::POST, "/admin/reload") => {
            authorize(gw, req, standing)?;
            // It reads files (and the TLS roots): off the async workers.
            let g = gw.clone();
            let outcome = tokio::task::spawn_blocking(move || g.reload_config_and_keys())
                .await
                .map_err(|_| GatewayError::new(ErrorCode::Internal, "The reload did not finish."))?;
            let status = if outcome.status == "applied" {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let body = serde_json::to_vec(&outcome).unwrap_or_default();
            Ok(json_response(status, Bytes::from(body)))
        }
        (&Method::GET, "/admin/reload") => {
            authorize(gw, req, standing)?;
            let last = gw.state().reload.last();
            let body = serde_json::json!({ "lastReload": last });
            Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
        }
        (&Method::GET, "/admin/cluster") => {
            authorize(gw, req, standing)?;
            inspect::cluster(gw)
        }
        (_, path) if path.starts_with(CONTAINERS) || path.starts_with(KEYS) => Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            "Method not allowed on this path.",
        )),
        (_, "/healthz" | "/readyz" | "/metrics" | "/admin/purge" | "/admin/cluster" | "/admin/reload") => Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            "Method not allowed on this path.",
        )),
        _ => Err(GatewayError::not_found()),
    }
}

const CONTAINERS: &str = "/admin/containers/";
const KEYS: &str = "/admin/keys/";

/// `Authorization: Bearer <admin token>`, compared by SHA-256 in constant time.
fn authorize<B>(
    gw: &Gateway,
    req: &Request<B>,
    standing: Option<&dyn crate::service::Standing>,
) -> Result<(), GatewayError> {
    let denied = || GatewayError::new(ErrorCode::Unauthenticated, "Missing or invalid admin token.");
    let Some(expected) = gw.state().config.admin.token_sha256.as_deref() else {
        return Err(denied());
    };
    let mut want = [0u8; 32];
    hex::decode_to_slice(expected, &mut want).map_err(|_| denied())?;
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110 section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or_else(denied)?;
    let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    if bool::from(got.ct_eq(&want)) {
        if let Some(s) = standing {
            s.credentialed();
        }
        Ok(())
    } else {
        Err(denied())
    }
}

/// `?container=<id>` purges one container (all orgs), `?all=true` everything.
async fn purge(gw: &Gateway, query: &str) -> Result<Response<ResponseBody>, GatewayError> {
    let mut container = None;
    let mut all = false;
    let one_target = || GatewayError::new(ErrorCode::Validation, "Use one ?container=<id> or ?all=true.");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            // Named twice, the request is ambiguous: purging either one
            // would tell the operator the other is gone too.
            Some(("container", _)) if container.is_some() => return Err(one_target()),
            Some(("all", _)) if all => return Err(one_target()),
            Some(("container", v)) => {
                container = Some(ContainerId::parse(v).ok_or_else(|| {
                    GatewayError::new(ErrorCode::Validation, "container must be cnt_<uuid> or a UUID.")
                })?)
            }
            Some(("all", "true")) => all = true,
            _ => {
                return Err(GatewayError::new(
                    ErrorCode::Validation,
                    "Use ?container=<id> or ?all=true.",
                ))
            }
        }
    }
    let (container, event_type) = match (container, all) {
        (Some(c), false) => (Some(c), EventType::Purge),
        (None, true) => (None, EventType::PurgeAll),
        _ => {
            return Err(GatewayError::new(
                ErrorCode::Validation,
                "Use ?container=<id> or ?all=true.",
            ))
        }
    };
    let inv = Invalidation {
        event_id: None,
        source: Source::Admin,
        event_type,
        container,
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    };
    let (applied, published) = gw.accept_invalidation(&inv).await;
    if let Err(e) = published {
        tracing::warn!(error = %e, "admin purge applied here but not propagated to the cluster");
        let body = serde_json::json!({
            "status": "purged_locally",
            "entriesRemoved": applied.entries_removed,
            "propagated": false,
            "reason": "the cluster stream is unavailable; the purge is queued and re-sent",
        });
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(body.to_string()),
        ));
    }
    let body = serde_json::json!({ "status": "purged", "entriesRemoved": applied.entries_removed });
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}
