//! The gateway as a hyper service: request id, route, authenticate,
//! authorize, dispatch, and the one place a `Result` becomes a `Response`
//! (with metrics and the access log).

mod abandoned;
mod cached_head;
mod content;
mod content_coding;
mod content_origin;
mod forward;
mod framing;
mod location;
mod origin_headers;
mod overrides;
mod proxy;
mod traced;
mod validators;
mod webhook;
mod webhook_reads;

use crate::auth::authenticator::Authenticator;
use crate::auth::{KeyStore, Principal};
use crate::body::{BoxError, ResponseBody};
use crate::cache::{Applied, CacheSettings, CacheStatus, ContentCache};
use crate::cluster::{ApplyFn, ClusterNode, ClusterStats, FlushFn};
use crate::config::Config;
use crate::error::GatewayError;
use crate::events::dedupe::EventDedupe;
use crate::events::webhook::WebhookVerifier;
use crate::events::{EventType, Invalidation, Source};
use crate::ids::request_id_value;
use crate::metrics::{Metrics, RateResult};
use crate::origin::{OriginClient, Upstream};
use crate::routes::{Route, RouteTable};
use crate::shaping::headers::{insert_endpoint_class, render_daily};
use crate::shaping::policy::{Decisions, RatePolicy, Refusal};
use crate::shaping::{render_headers as render_rate_headers, UnixClock};
use bytes::Bytes;
use cached_head::cached_reply_headers;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// Room for every header a response of the gateway carries, so the map is
/// allocated once at its final size.
pub(crate) const RESPONSE_HEADERS: usize = 16;
pub(crate) static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Everything a request may touch. Shared by every connection through an
/// `Arc`; nothing here is behind a global lock on the hit path.
pub struct State {
    pub config: Config,
    /// Who is calling: the keys file (replaced whole on reload), JWT
    /// issuers and origin introspection. Shared with the keys-file watcher
    /// that `main` starts.
    pub auth: Arc<Authenticator>,
    /// Route scopes and classes; swapped whole by a config reload, read
    /// once per decision.
    pub routes: arc_swap::ArcSwap<RouteTable>,
    pub cache: Arc<ContentCache>,
    pub origin: OriginClient,
    /// Webhook secrets and tolerance; swapped whole by a config reload.
    pub(crate) webhook: arc_swap::ArcSwap<WebhookVerifier>,
    /// Webhook event ids applied and propagated; in a cluster, also every
    /// event the node read from the stream (`ClusterNode::with_delivered`).
    dedupe: Arc<EventDedupe>,
    pub metrics: Arc<Metrics>,
    /// Set once the origin has answered anything; `/readyz` reads it.
    origin_seen: Arc<AtomicBool>,
    /// Partner rate limits; `None` when `shaping.enabled = false`.
    pub limits: Option<RatePolicy>,
    /// Cluster membership (`[cluster]` present): the synced flag cached
    /// routes check, and where accepted invalidations are published.
    /// `None`: a single instance that never touches Redis.
    pub cluster: Option<Arc<ClusterNode>>,
    /// Refusal log lines at a bounded rate (`log.refusals_per_sec`).
    pub refusal_logs: crate::log_limit::RefusalLogs,
    /// Webhook bodies being read (`webhooks.max_concurrent_reads`): they
    /// are buffered before their signature can be checked.
    webhook_reads: webhook_reads::WebhookReads,
    /// `webhooks.allowed_sources`, parsed (checked by `Config::validate`);
    /// `None`: any address. An entry that does not parse matches nothing.
    webhook_sources: Option<Vec<crate::peer::IpNet>>,
    /// One line per partner request, written by its own thread
    /// (`[access_log]`); off when the log filter drops them.
    pub access_log: crate::access_log::AccessLog,
    /// Live config reload (SIGHUP, `POST /admin/reload`): the settings in
    /// force and the outcome of the last reload.
    pub reload: crate::reload::Reloader,
    /// Cache-Control and Vary of the content routes (from `[cache]`).
    content_headers: validators::ContentHeaders,
    /// Traces (`[tracing] enabled`); `None` when off, so the request path
    /// checks one `Option` and does nothing else.
    pub telemetry: Option<crate::telemetry::Telemetry>,
}

/// The gateway service. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Gateway {
    state: Arc<State>,
}

/// What a request turned into, for metrics and the access log.
struct Outcome {
    cache: Option<CacheStatus>,
    principal: Option<Arc<Principal>>,
    /// The rate-limit decisions, for the response headers.
    rate: Decisions,
    /// Set by a reply from the cache: the reply leaves its whole header
    /// block to `respond`.
    cached_reply: Option<CachedReply>,
    /// The route table this request is routed, authorized and classed
    /// by, read once when it arrives: a config reload during the request
    /// does not change its scope or class halfway.
    routes: Arc<RouteTable>,
    /// A content reply's representation: 304, coding, bytes saved.
    served: Option<validators::Served>,
    /// This request's server span; `RequestTrace::OFF` (a `None`) when
    /// tracing is off or the request is not sampled.
    trace: crate::telemetry::RequestTrace,
}

/// Who sent a request, as far as the service needs to know.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    /// The client's address (`None`: a request built in-process). Bounds
    /// the origin introspections and webhook reads it may start.
    peer: Option<IpAddr>,
    /// Told when the request presents valid credentials; `None` off the
    /// wire.
    standing: Option<&'a dyn Standing>,
}

impl Caller<'_> {
    /// This request presented valid credentials.
    fn credentialed(&self) {
        if let Some(s) = self.standing {
            s.credentialed();
        }
    }
}

/// What the server keeps of one request while its response is written:
/// whether it presented valid credentials (a partner's key or token, the
/// origin's webhook signature). At the connection cap, a connection busy
/// only with answers to requests that presented none may be closed for a
/// newcomer (`server::idle_evict`).
pub trait Standing: Send + Sync {
    fn credentialed(&self);
}

/// What a reply from the cache leaves to `respond`.
struct CachedReply {
    /// The `X-Cache` value.
    x_cache: &'static HeaderValue,
    /// What the reply sets itself (validators, policy, coding).
    head: validators::ReplyHead,
}

impl Outcome {
    fn new(routes: Arc<RouteTable>, trace: crate::telemetry::RequestTrace) -> Outcome {
        Outcome {
            trace,
            cache: None,
            principal: None,
            rate: Decisions::default(),
            cached_reply: None,
            routes,
            served: None,
        }
    }
}

impl Gateway {
    pub fn new(config: Config, keys: impl Into<Arc<KeyStore>>, upstream: Arc<dyn Upstream>) -> Gateway {
        Gateway::with_clock(config, keys, upstream, UnixClock::system())
    }

    /// Like `new`, with the access log on and written to `output` whatever
    /// the log filter says (tests capture or stall it; benches time it).
    pub fn with_access_log(
        config: Config,
        keys: impl Into<Arc<KeyStore>>,
        upstream: Arc<dyn Upstream>,
        output: crate::access_log::Output,
    ) -> std::io::Result<Gateway> {
        Gateway::build(config, keys, upstream, UnixClock::system(), Some(output))
    }

    /// Like `new`, with the wall clock the daily write cap uses (tests start
    /// it at a chosen date and move it with tokio's paused clock).
    pub fn with_clock(
        config: Config,
        keys: impl Into<Arc<KeyStore>>,
        upstream: Arc<dyn Upstream>,
        clock: UnixClock,
    ) -> Gateway {
        Gateway::build(config, keys, upstream, clock, None).expect("the config's access log opens")
    }

    fn build(
        config: Config,
        keys: impl Into<Arc<KeyStore>>,
        upstream: Arc<dyn Upstream>,
        clock: UnixClock,
        access_output: Option<crate::access_log::Output>,
    ) -> std::io::Result<Gateway> {
        let metrics = Arc::new(Metrics::new(
            config.metrics.per_org_label,
            config.metrics.max_org_labels,
        ));
        let origin_seen = Arc::new(AtomicBool::new(false));
        let origin = OriginClient::new(upstream, &config, metrics.clone(), origin_seen.clone());
        let auth = Arc::new(
            Authenticator::with_clock(&config, keys.into(), Some(origin.clone()), clock)
                .expect("auth config checked by Authenticator::check before start"),
        );
        metrics.register_origin_gauges(origin.guard().clone(), origin.breaker().clone());
        let cache = ContentCache::with_clock(
            CacheSettings::from_config(&config),
            Some(metrics.cache_evictions.clone()),
            Some(metrics.fills_discarded.clone()),
            clock,
        );
        let webhook = WebhookVerifier::new(
            config.webhooks.all_secrets(),
            Duration::from_secs(config.webhooks.tolerance_secs),
        );
        let dedupe = Arc::new(EventDedupe::new(
            config.webhooks.dedupe_max_entries,
            Duration::from_secs(config.webhooks.dedupe_ttl_secs),
        ));
        let routes = arc_swap::ArcSwap::from_pointee(RouteTable::from_config(&config));
        let cluster = config.cluster.as_ref().map(|c| {
            let stats = Arc::new(ClusterStats::new());
            metrics.register_cluster(&stats);
            let node = ClusterNode::with_delivered(c, stats, dedupe.clone()).expect("validated config");
            // Fail closed: cached data is served only while synced.
            cache.set_sync_gate(node.clone());
            node
        });
        let limits = config.shaping.enabled.then(|| {
            let policy = RatePolicy::new(&config.shaping, clock).expect("validated config");
            match &cluster {
                Some(node) => policy.with_cluster(
                    Arc::new(node.limiter(config.shaping.max_keys)),
                    Arc::new(node.daily_cap(config.shaping.max_keys)),
                ),
                None => policy,
            }
        });
        let refusal_logs = crate::log_limit::RefusalLogs::new(config.log.refusals_per_sec);
        let webhook_reads = webhook_reads::WebhookReads::new(config.webhooks.max_concurrent_reads);
        let sources = &config.webhooks.allowed_sources;
        let webhook_sources = (!sources.is_empty()).then(|| {
            sources
                .iter()
                .filter_map(|s| crate::peer::IpNet::parse(s).ok())
                .collect()
        });
        let content_headers = validators::ContentHeaders::from_config(&config.cache);
        let dropped = metrics.access_log_dropped.clone();
        let access_log = match access_output {
            Some(out) => crate::access_log::AccessLog::start(
                out,
                crate::access_log::Settings::from_config(&config),
                dropped,
            )?,
            None => crate::access_log::AccessLog::from_config(&config, dropped),
        };
        let telemetry = if config.tracing.enabled {
            Some(
                crate::telemetry::Telemetry::start(&config.tracing, &metrics)
                    .map_err(std::io::Error::other)?,
            )
        } else {
            None
        };
        Ok(Gateway {
            state: Arc::new(State {
                telemetry,
                reload: crate::reload::Reloader::new(&config, &metrics),
                config,
                auth,
                routes,
                cache,
                origin,
                webhook: arc_swap::ArcSwap::from_pointee(webhook),
                dedupe,
                metrics,
                origin_seen,
                limits,
                cluster,
                refusal_logs,
                webhook_reads,
                webhook_sources,
                access_log,
                content_headers,
            }),
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state.origin_seen.load(Ordering::Acquire)
    }

    /// Replaces the keys; requests already authenticated keep their principal.
    pub fn replace_keys(&self, keys: KeyStore) {
        self.state.auth.replace_keys(keys);
    }

    /// The authenticator (for the keys-file watcher and JWKS refreshers).
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.state.auth
    }

    /// `None` without `[cluster]`; else whether this instance is caught up
    /// with the invalidation stream (it serves cached routes from cache).
    pub fn cluster_synced(&self) -> Option<bool> {
        self.state.cluster.as_ref().map(|c| c.is_synced())
    }

    /// Applies an invalidation this instance accepted (webhook,
    /// write-through, admin purge) and, in a cluster, publishes it to the
    /// other instances. The second value is `Err` only when publishing
    /// failed: it was applied here and is queued for re-publishing.
    pub async fn accept_invalidation(&self, inv: &Invalidation) -> (Applied, Result<(), String>) {
        self.accept_invalidation_in(inv, self.root_span()).await
    }

    /// [`Gateway::accept_invalidation`] under `span` (a webhook request's
    /// child, or a root span).
    async fn accept_invalidation_in(
        &self,
        inv: &Invalidation,
        mut span: crate::telemetry::ChildSpan,
    ) -> (Applied, Result<(), String>) {
        let inv = &self.state.cache.stamp_accepted(inv);
        let applied = self.apply_invalidation_in(inv, &mut span).await;
        let published = self.publish(inv, &applied).await;
        if published.is_err() {
            span.fail("publish_failed");
        }
        (applied, published)
    }

    /// The span of an invalidation no request started (a cluster stream
    /// entry, an admin purge): a root, sampled by the ratio.
    fn root_span(&self) -> crate::telemetry::ChildSpan {
        match &self.state.telemetry {
            Some(t) => t.root(crate::telemetry::span::INVALIDATION),
            None => crate::telemetry::ChildSpan::OFF,
        }
    }

    /// As `accept_invalidation`, for a mutation this gateway proxied;
    /// `mark` is `ContentCache::mark_mutation`'s from before it was sent.
    pub async fn accept_mutation(
        &self,
        inv: &Invalidation,
        mark: &crate::cache::fence::MutationMark,
        mut span: crate::telemetry::ChildSpan,
    ) -> (Applied, Result<(), String>) {
        let inv = &self.state.cache.stamp_accepted(inv);
        let applied = self.state.cache.invalidate_after_mutation(inv, mark).await;
        self.count_invalidation(inv, &applied);
        let published = self.publish(inv, &applied).await;
        if span.is_recording() {
            traced::invalidation(&mut span, inv, &applied);
        }
        (applied, published)
    }

    /// Publishes an applied invalidation to the cluster, naming exactly the
    /// ids it revoked here (peers cannot reproduce this instance's proof
    /// that they are old).
    async fn publish(&self, inv: &Invalidation, applied: &Applied) -> Result<(), String> {
        let Some(c) = &self.state.cluster else {
            return Ok(());
        };
        let mut shared = inv.clone();
        for a in &applied.revoked {
            if !shared.revoked_asset_ids.contains(a) {
                shared.revoked_asset_ids.push(a.clone());
            }
        }
        c.publish(&shared).await
    }

    /// The cluster node's callbacks: stream entries and gap flushes are
    /// applied to this gateway's cache.
    pub fn cluster_callbacks(&self) -> (ApplyFn, FlushFn) {
        let gw = self.clone();
        let apply: ApplyFn = Arc::new(move |inv: Invalidation| {
            let gw = gw.clone();
            Box::pin(async move {
                gw.apply_invalidation(&inv).await;
            })
        });
        let gw = self.clone();
        let flush: FlushFn = Arc::new(move || {
            let gw = gw.clone();
            Box::pin(async move {
                let all = Invalidation {
                    event_id: None,
                    source: Source::Cluster,
                    event_type: EventType::PurgeAll,
                    container: None,
                    revoked_asset_ids: Vec::new(),
                    current_asset_ids: Vec::new(),
                    changed_at: None,
                    created_at: None,
                    replay: false,
                    accepted_at: None,
                };
                gw.apply_invalidation(&all).await;
            })
        });
        (apply, flush)
    }

    /// Wires the cluster node's fence records to this gateway's cache: their
    /// lifetime, and the export of live fences for re-publishing. Call
    /// before `ClusterNode::start`; nothing without `[cluster]`.
    pub fn wire_cluster_fences(&self) {
        let Some(node) = &self.state.cluster else {
            return;
        };
        let cache = self.state.cache.clone();
        let export: crate::cluster::ExportFn = Arc::new(move || cache.export_fences());
        node.set_fence_source(self.state.cache.fence_retention(), export);
    }

    /// Applies an invalidation from any source and counts it.
    pub async fn apply_invalidation(&self, inv: &Invalidation) -> Applied {
        self.apply_invalidation_in(inv, &mut self.root_span()).await
    }

    /// [`Gateway::apply_invalidation`], described on `span`.
    async fn apply_invalidation_in(
        &self,
        inv: &Invalidation,
        span: &mut crate::telemetry::ChildSpan,
    ) -> Applied {
        let applied = self.state.cache.invalidate(inv).await;
        self.count_invalidation(inv, &applied);
        if span.is_recording() {
            traced::invalidation(span, inv, &applied);
        }
        applied
    }

    fn count_invalidation(&self, inv: &Invalidation, applied: &Applied) {
        self.state
            .metrics
            .invalidations
            .with_label_values(&[inv.source.as_str(), inv.event_type.as_str()])
            .inc();
        tracing::info!(
            source = inv.source.as_str(),
            r#type = inv.event_type.as_str(),
            container = ?inv.container,
            entries_removed = applied.entries_removed,
            revoked = applied.revoked_asset_ids(),
            "invalidation applied"
        );
    }

    /// Answers one partner request with no known client address (tests,
    /// benchmarks, embedding). See [`Gateway::handle_from`].
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.handle_from(req, None).await
    }

    /// Answers one partner request from `peer` (the client's address, which
    /// bounds the origin introspections it may start). Never fails: every
    /// error becomes an envelope response here.
    pub async fn handle_from<B>(&self, req: Request<B>, peer: Option<IpAddr>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.answer(req, Caller { peer, standing: None }, None).await
    }

    /// Answers one request read off the partner listener: as
    /// [`Gateway::handle_from`], after the checks of its HTTP/1 framing
    /// ([`framing::refusal`]) that requests built in-process do not need.
    /// `standing` is told if the request presents valid credentials, and
    /// handed back with the response (see `server::idle_evict`).
    pub async fn handle_wire<B, S: Standing>(
        &self,
        req: Request<B>,
        peer: IpAddr,
        standing: S,
    ) -> (Response<ResponseBody>, S)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let refused = framing::refusal(&req);
        let caller = Caller {
            peer: Some(peer),
            standing: Some(&standing),
        };
        let resp = self.answer(req, caller, refused).await;
        (resp, standing)
    }

    /// Answers one request; `refused` (a framing refusal) is answered
    /// instead of dispatching, with the same request id, headers, metrics
    /// and access-log line as any other error.
    async fn answer<B>(
        &self,
        req: Request<B>,
        caller: Caller<'_>,
        refused: Option<GatewayError>,
    ) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let rid_value = request_id_value(parts.headers.get(&X_REQUEST_ID));
        // Kept ids are checked well-formed ASCII and fresh ones are ASCII.
        let rid = rid_value.to_str().unwrap_or("req_invalid");
        let st = &*self.state;
        // One route table for the whole of this request (see `Outcome`).
        let routes = st.routes.load_full();
        let route = routes.route(&parts.method, parts.uri.path(), parts.uri.query().is_some());
        let template = routes.template(&route);
        let trace = match &st.telemetry {
            Some(t) => t.start_request(&parts.headers, &parts.method, template),
            None => crate::telemetry::RequestTrace::OFF,
        };
        let mut pending = abandoned::Abandoned {
            gw: self,
            method: &parts.method,
            template,
            started,
            rid,
            outcome: Some(Outcome::new(routes, trace)),
        };
        let result = match refused {
            Some(e) => Err(e),
            None => {
                self.dispatch(&parts, body, &route, rid, caller, pending.outcome())
                    .await
            }
        };
        let mut outcome = pending.answered();
        let (resp, code) = self.respond(result, &parts.method, &route, &mut outcome, &rid_value, rid);
        self.record(
            &parts.method,
            template,
            resp.status(),
            code,
            &outcome,
            started,
            rid,
        );
        resp
    }

    /// The response of a result, with the request id and the rate-limit
    /// headers; the error code for metrics when it is an error.
    fn respond(
        &self,
        result: Result<Response<ResponseBody>, GatewayError>,
        method: &http::Method,
        route: &Route<'_>,
        outcome: &mut Outcome,
        rid_value: &HeaderValue,
        rid: &str,
    ) -> (Response<ResponseBody>, Option<&'static str>) {
        let result = match (result, outcome.cached_reply.take()) {
            (Ok(mut resp), Some(cached)) => {
                let class = outcome.routes.class(method, route);
                *resp.headers_mut() = cached_reply_headers(
                    class,
                    outcome.rate.per_minute.as_ref(),
                    cached.x_cache,
                    rid_value,
                    cached.head,
                );
                return (resp, None);
            }
            (result, _) => result,
        };
        let retry_after = result.as_ref().err().and_then(|e| e.retry_after_value());
        let (mut resp, code) = finish(result, rid_value, rid);
        if *route != Route::Webhook {
            let class = outcome.routes.class(method, route);
            match &outcome.rate {
                Decisions {
                    daily_refusal: Some(d),
                    ..
                } => render_daily(resp.headers_mut(), class, d),
                Decisions {
                    per_minute: Some(d), ..
                } => render_rate_headers(resp.headers_mut(), class, d),
                _ => insert_endpoint_class(resp.headers_mut(), class),
            }
            if let Some(v) = retry_after {
                // The error's own Retry-After (whole seconds, at least 1,
                // or the origin's as it sent it) wins.
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        (resp, code)
    }

    async fn dispatch<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        route: &Route<'_>,
        rid: &str,
        caller: Caller<'_>,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let limits = &self.state.config.server;
        // The request head is its target and its headers (black-box round
        // 86: a 32,000-byte query string passed a 16 KiB limit to the
        // origin, as the target was not counted).
        let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if parts.headers.len() > limits.max_headers
            || target
                + parts
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len() + 4)
                    .sum::<usize>()
                > limits.max_header_bytes
        {
            return Err(GatewayError::new(
                crate::error::ErrorCode::HeadersTooLarge,
                "Request line and headers exceed the gateway's limits.",
            ));
        }
        match route {
            Route::NotFound => return Err(GatewayError::not_found()),
            Route::BadPath => return Err(crate::routes::bad_path()),
            // The cold routes' futures are boxed (here and below) so that
            // a hit's future stays small: hyper moves it on every request.
            Route::Webhook => return Box::pin(self.webhook(parts, body, caller, &outcome.trace)).await,
            _ => {}
        }
        let principal = self
            .authenticate(&parts.headers, caller.peer, &outcome.trace)
            .await?;
        // Read after authenticating, which may have waited on JWKS or the
        // origin: limits are judged at this instant. Freshness is judged
        // later, by the fence decision, at a clock read of its own taken
        // after the admission (which may await a Redis lease).
        let now = Instant::now();
        outcome.principal = Some(principal.clone());
        if let Some(scope) = outcome.routes.required_scope(route) {
            if !principal.scopes.contains(scope) {
                return Err(GatewayError::forbidden_scope(scope.as_str()));
            }
        }
        if let Some(limits) = &self.state.limits {
            let class = outcome.routes.class(&parts.method, route);
            let span = outcome.trace.child(crate::telemetry::span::RATE_LIMIT);
            let (decision, admitted) = limits.admit(&principal, class, now).await;
            outcome.rate = decision;
            let m = &self.state.metrics;
            let result = match &admitted {
                Ok(()) => RateResult::Admitted,
                Err((_, Refusal::PerMinute)) => RateResult::Limited,
                Err((_, Refusal::DailyCap)) => RateResult::DailyCap,
            };
            m.rate_decision(class, result);
            traced::rate_decision(&outcome.trace, span, class, result);
            if let Err((e, _)) = admitted {
                return Err(e);
            }
        }
        // Admitted: from here the request is a partner's work. A key
        // refused for its scope or its limits gets refusals, which hold
        // no slot at the connection cap (`server::idle_evict`).
        caller.credentialed();
        let head = parts.method == http::Method::HEAD;
        match route {
            Route::Container(id) => {
                self.content(parts, &principal, *id, None, head, rid, outcome)
                    .await
            }
            Route::Asset(id, asset) => {
                self.content(parts, &principal, *id, Some(asset.as_ref()), head, rid, outcome)
                    .await
            }
            Route::ContentVariant { id, asset } => {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                outcome.cache = Some(CacheStatus::Bypass);
                Box::pin(self.content_via_origin(
                    parts,
                    &principal,
                    *id,
                    asset.as_deref(),
                    path,
                    rid,
                    outcome,
                ))
                .await
            }
            Route::BadContentId { .. } => Err(GatewayError::not_found()),
            Route::Proxy { write_through, .. } => {
                let template = outcome.routes.template(route);
                let trace = outcome.trace.origin();
                Box::pin(self.proxy(parts, body, template, *write_through, rid, &principal.org, trace)).await
            }
            Route::Webhook | Route::NotFound | Route::BadPath => Err(GatewayError::not_found()),
        }
    }

    /// Every refusal is the same 401; an outage of a credential source
    /// (JWKS, origin introspection) is a 503 with `Retry-After`. The reason
    /// only goes to the log and `auth_failures_total{reason}`.
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
        trace: &crate::telemetry::RequestTrace,
    ) -> Result<Arc<Principal>, GatewayError> {
        let st = &*self.state;
        let mut span = trace.child(crate::telemetry::span::AUTHENTICATE);
        let result = st.auth.authenticate_from(headers, peer).await;
        traced::authenticated(trace, &mut span, &result);
        result.map_err(|e| {
            let reason = e.reason();
            st.metrics.auth_failures.with_label_values(&[reason]).inc();
            if st.refusal_logs.auth.allow() {
                tracing::info!(reason, "authentication failed");
            }
            GatewayError::from(e)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        method: &http::Method,
        template: &'static str,
        status: http::StatusCode,
        code: Option<&'static str>,
        outcome: &Outcome,
        started: Instant,
        rid: &str,
    ) {
        let m = &self.state.metrics;
        let cache = outcome.cache.map_or("none", CacheStatus::as_str);
        let hot_asset = match template {
            crate::routes::CONTAINER_TEMPLATE => Some(false),
            crate::routes::ASSET_TEMPLATE => Some(true),
            _ => None,
        };
        if let Some(asset_route) = hot_asset.filter(|_| {
            outcome.cache == Some(CacheStatus::Hit)
                && status == http::StatusCode::OK
                && method == http::Method::GET
        }) {
            m.record_get_hit(asset_route, started.elapsed().as_secs_f64());
        } else {
            self.record_series(m, method, template, status, code, outcome, started, cache);
        }
        if let (Some(served), Some(asset_route)) = (outcome.served, hot_asset) {
            let get = method == http::Method::GET;
            if served.not_modified {
                m.representation
                    .not_modified(asset_route, if get { served.len } else { 0 });
            } else if get && status == http::StatusCode::OK {
                m.representation
                    .compressed(served.encoding, served.saved_by_compression);
            }
        }
        if let (Some(org_requests), Some(p)) = (&m.org_requests, &outcome.principal) {
            let class = match status.as_u16() / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                _ => "5xx",
            };
            org_requests
                .with_label_values(&[m.org_label(&p.org), class])
                .inc();
        }
        self.access_log(method, template, status, code, outcome, started, rid, cache);
        if outcome.trace.is_recording() {
            traced::end_request(outcome, status, code, rid);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_series(
        &self,
        m: &Metrics,
        method: &http::Method,
        template: &'static str,
        status: http::StatusCode,
        code: Option<&'static str>,
        outcome: &Outcome,
        started: Instant,
        cache: &'static str,
    ) {
        m.requests
            .with_label_values(&[
                template,
                method_label(method),
                status.as_str(),
                code.unwrap_or(""),
            ])
            .inc();
        m.request_duration
            .with_label_values(&[template, cache])
            .observe(started.elapsed().as_secs_f64());
        if let Some(c) = outcome.cache {
            m.cache_lookups.with_label_values(&[c.as_str()]).inc();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn access_log(
        &self,
        method: &http::Method,
        template: &'static str,
        status: http::StatusCode,
        code: Option<&'static str>,
        outcome: &Outcome,
        started: Instant,
        rid: &str,
        cache: &'static str,
    ) {
        let log = &self.state.access_log;
        if !log.is_on() {
            return;
        }
        let principal = outcome.principal.as_deref();
        // A refusal without a principal (no key, a wrong one, a refused
        // webhook), and a scope refusal (which spends no rate budget, so
        // nothing else bounds it), are logged at `log.refusals_per_sec` at
        // most, with a "suppressed" count; metrics count every one.
        if (principal.is_none() || code == Some("FORBIDDEN_SCOPE"))
            && (status.is_client_error() || status.is_server_error())
            && !self.state.refusal_logs.access.allow()
        {
            return;
        }
        let line = crate::access_log::Line {
            request_id: rid,
            route: template,
            method: method.as_str(),
            status: status.as_u16(),
            code: code.unwrap_or(""),
            duration_us: started.elapsed().as_micros() as u64,
            cache,
            org: principal.map_or("", |p| &*p.org),
            key_id: principal.map_or("", |p| &*p.key_id),
        };
        let hit_2xx = outcome.cache == Some(CacheStatus::Hit) && status.is_success();
        log.record(&line, hit_2xx);
    }
}

/// Bounded method label: the standard methods, else `OTHER`.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The one place a result becomes a response: every response gets the
/// request id, every error the envelope with that same id.
fn finish(
    result: Result<Response<ResponseBody>, GatewayError>,
    rid_value: &HeaderValue,
    rid: &str,
) -> (Response<ResponseBody>, Option<&'static str>) {
    match result {
        Ok(mut resp) => {
            resp.headers_mut().insert(X_REQUEST_ID, rid_value.clone());
            (resp, None)
        }
        Err(e) => {
            let body = e.envelope(rid);
            let mut resp = Response::new(ResponseBody::full(body.clone()));
            *resp.status_mut() = e.status;
            *resp.headers_mut() = HeaderMap::with_capacity(RESPONSE_HEADERS);
            let h = resp.headers_mut();
            // The origin's own, first: the gateway's below win a name.
            if let Some(head) = e.origin_head() {
                for (n, v) in &head.others {
                    h.append(n.clone(), v.clone());
                }
            }
            let content_type = e.origin_head().and_then(|o| o.content_type.clone());
            h.insert(CONTENT_TYPE, content_type.unwrap_or_else(|| JSON.clone()));
            h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            h.insert(X_REQUEST_ID, rid_value.clone());
            // An error is about this request only: no cache keeps it.
            h.insert(http::header::CACHE_CONTROL, validators::NO_STORE.clone());
            if let Some(v) = e.retry_after_value() {
                h.insert(RETRY_AFTER, v);
            }
            (resp, Some(e.code.as_str()))
        }
    }
}

/// A JSON response with a fixed body.
pub(crate) fn json_response(status: http::StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::Full(Some(body.clone())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

impl Gateway {
    /// Asks the origin for anything (`GET /v1/whoami` without a key): any
    /// answer, a 401 included, shows it is reachable.
    pub async fn probe_origin(&self) {
        let Ok(req) = Request::get("/v1/whoami").body(crate::origin::empty_body()) else {
            return;
        };
        let _ = self.state.origin.fetch(req, "/v1/whoami", "-probe").await;
    }
}
