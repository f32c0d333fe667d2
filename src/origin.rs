//! The origin client: one `Upstream` (pooled hyper client over http or
//! https, or the in-process simulator), wrapped with deadlines, body caps
//! and error classification.

use crate::body::{BodyWatch, BoxError, ClientBody, ClientBodyError, StreamBody};
use crate::config::Config;
use crate::config::OriginConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::shaping::org_breakers::OrgBreakers;
use crate::shaping::origin_guard::{Admission, OriginGuard};
use crate::shaping::retry_budget::{is_retryable, RetryBudget};
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<StreamBody>, UpstreamFailure>> + Send>>;

/// Why an origin exchange failed before a response head arrived.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// Could not connect (refused, DNS, TLS handshake).
    Connect(BoxError),
    /// The connection closed or reset before a response arrived.
    Reset(BoxError),
    /// The request body exceeded the gateway's cap while streaming.
    RequestBodyTooLarge,
    /// Reading the request body from the client failed (malformed, aborted,
    /// too slow): the client's fault, never the origin's.
    ClientBody(ClientBodyError),
    /// Anything else: reset, protocol error.
    Other(BoxError),
    /// No response head within `origin.timeout_ms` (made by the client
    /// wrapper, never by an `Upstream`).
    Timeout,
}

/// Something that answers origin requests. Requests carry an absolute path
/// (`/v1/...`); the upstream adds scheme and authority.
pub trait Upstream: Send + Sync + 'static {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture;
}

/// Whether an origin request may wait in the guard's shared queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Queue {
    Wait,
    Never,
}

/// The real origin over the network, pooled, http and https.
pub struct HttpUpstream {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, StreamBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl HttpUpstream {
    pub fn new(cfg: &OriginConfig) -> Result<HttpUpstream, String> {
        let base: Uri = cfg.url.parse().map_err(|e| format!("origin.url: {e}"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
        http.set_nodelay(true);
        let tls = rustls_config()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .timer(hyper_util::rt::TokioTimer::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        Ok(HttpUpstream {
            client,
            scheme: base.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            authority: base.authority().cloned().ok_or("origin.url: has no host")?,
        })
    }
}

/// The TLS client config for https upstreams (the origin, JWKS URLs):
/// system roots, aws-lc-rs, safe protocol versions.
pub(crate) fn rustls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Missing system roots only matter for https origins; report, don't fail.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

impl Upstream for HttpUpstream {
    fn send(&self, mut req: Request<StreamBody>) -> UpstreamFuture {
        let path = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = path;
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Box::pin(async move { Err(UpstreamFailure::Other(e.into())) }),
        }
        let fut = self.client.request(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp.map(|b| b.map_err(|e| -> BoxError { e.into() }).boxed_unsync())),
                Err(e) if e.is_connect() => Err(UpstreamFailure::Connect(e.into())),
                Err(e) => {
                    if has_source::<http_body_util::LengthLimitError>(&e) {
                        Err(UpstreamFailure::RequestBodyTooLarge)
                    } else if let Some(c) = ClientBodyError::find(&e) {
                        Err(UpstreamFailure::ClientBody(match c {
                            ClientBodyError::TimedOut => ClientBodyError::TimedOut,
                            ClientBodyError::Failed(_) => ClientBodyError::Failed(e.into()),
                        }))
                    } else if is_reset(&e) {
                        Err(UpstreamFailure::Reset(e.into()))
                    } else {
                        Err(UpstreamFailure::Other(e.into()))
                    }
                }
            }
        })
    }
}

/// Whether the connection closed or reset before a response head.
fn is_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

fn has_source<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A whole origin response (status, headers, capped body).
pub struct OriginReply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The upstream plus the gateway's deadlines and caps.
#[derive(Clone)]
pub struct OriginClient {
    upstream: Arc<dyn Upstream>,
    timeout: Duration,
    /// `server.body_read_timeout_ms`: request bodies sent on are read from
    /// the client under it.
    body_read_timeout: Duration,
    max_response_bytes: usize,
    metrics: Arc<Metrics>,
    /// Set on the first answer of any kind; `/readyz` reads it.
    seen: Arc<AtomicBool>,
    /// In-flight caps (global and per org) with a bounded waiting queue.
    guard: OriginGuard,
    breaker: OrgBreakers,
    budget: Arc<RetryBudget>,
}

impl OriginClient {
    pub fn new(
        upstream: Arc<dyn Upstream>,
        cfg: &Config,
        metrics: Arc<Metrics>,
        seen: Arc<AtomicBool>,
    ) -> Self {
        OriginClient {
            upstream,
            timeout: Duration::from_millis(cfg.origin.timeout_ms),
            body_read_timeout: cfg.server.body_read_timeout(),
            max_response_bytes: cfg.origin.max_response_bytes as usize,
            metrics,
            seen,
            guard: OriginGuard::new(cfg.origin_guard()),
            breaker: OrgBreakers::new(cfg.breaker()),
            budget: Arc::new(RetryBudget::new(cfg.retry_budget())),
        }
    }

    /// Puts a reloaded config's in-flight caps, queue bounds, breaker and
    /// retry-budget settings in force (see `OriginGuard::resize`,
    /// `Breaker::set_settings`, `RetryBudget::set`). Timeouts, body caps
    /// and the connection pool keep their values until a restart.
    pub fn apply_live_settings(&self, cfg: &Config) {
        self.guard.resize(cfg.origin_guard());
        self.breaker.set_settings(cfg.breaker());
        self.budget.set(&cfg.retry_budget());
    }

    pub fn guard(&self) -> &OriginGuard {
        &self.guard
    }

    pub fn breaker(&self) -> &OrgBreakers {
        &self.breaker
    }

    /// Sends one origin request for `org` under the breaker, the in-flight
    /// caps and the deadline; retries a body-less idempotent request once on
    /// a connect error or a reset before any response, if the retry budget
    /// allows. Counts everything. The returned [`OriginHold`] keeps the
    /// origin slot (and `origin_inflight`) until the response body is done.
    ///
    /// Blame goes to the side that failed: a request body the client fails
    /// to deliver (malformed, aborted, or still trickling in when the
    /// deadline passes) answers 400 or 408 and is neither a breaker failure
    /// nor a retry.
    async fn send(
        &self,
        mut req: Request<StreamBody>,
        route: &'static str,
        org: &str,
        queue: Queue,
    ) -> Result<(Response<StreamBody>, OriginHold), GatewayError> {
        // Made under a sampled span: the origin span starts here and its
        // `traceparent` goes out (retries included). Else one check of
        // the (empty) extensions.
        let mut span = crate::telemetry::origin_span(&mut req, route);
        let result = self.send_admitted(req, route, org, queue, &mut span).await;
        match result {
            Ok((resp, mut hold)) => {
                if let Some(s) = &mut span {
                    s.status(resp.status());
                }
                // Ends with the hold: when the response body is done.
                hold._span = span;
                Ok((resp, hold))
            }
            Err(e) => {
                if let Some(s) = &mut span {
                    s.failed(e.code.as_str());
                }
                Err(e)
            }
        }
    }

    async fn send_admitted(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
        org: &str,
        queue: Queue,
        span: &mut Option<crate::telemetry::OriginSpan>,
    ) -> Result<(Response<StreamBody>, OriginHold), GatewayError> {
        let m = &self.metrics;
        let ticket = self.breaker.try_acquire(org).map_err(|open| {
            m.breaker_rejections.inc();
            GatewayError::from(open)
        })?;
        let permit = match queue {
            Queue::Wait => self.guard.acquire(org).await,
            Queue::Never => self.guard.try_acquire(org),
        };
        let permit = permit.map_err(|shed| {
            m.origin_admissions.with_label_values(&[shed.as_str()]).inc();
            GatewayError::from(shed)
        })?;
        let admission = match permit.admission() {
            Admission::Immediate => "immediate",
            Admission::Queued => "queued",
        };
        m.origin_admissions.with_label_values(&[admission]).inc();
        if let Some(s) = span {
            s.set(opentelemetry::KeyValue::new(
                crate::telemetry::attr::ORIGIN_ADMISSION,
                admission,
            ));
        }
        let inflight = OwnedInflight::new(&m.origin_inflight);
        let mut spare = retry_copy(&req);
        let (req, watch) = self.watch_client_body(req);
        // Calls on behalf of clients not known yet (introspection) earn no
        // retries: a keyless flood must not raise partners' retry allowance.
        if queue == Queue::Wait {
            self.budget.deposit();
        }
        let started = tokio::time::Instant::now();
        let mut req = req;
        let result = loop {
            match self
                .head_within_deadline(self.upstream.send(req), started, watch.as_deref())
                .await
            {
                Ok(Ok(resp)) => break Ok(resp),
                Ok(Err(f @ (UpstreamFailure::Connect(_) | UpstreamFailure::Reset(_)))) => {
                    match spare.take() {
                        Some(again) if self.budget.try_withdraw() => {
                            m.origin_retries.with_label_values(&["sent"]).inc();
                            tracing::debug!(failure = ?f, "retrying an idempotent origin request");
                            req = again;
                        }
                        Some(_) => {
                            m.origin_retries.with_label_values(&["budget_exhausted"]).inc();
                            break Err(f);
                        }
                        None => break Err(f),
                    }
                }
                Ok(Err(f)) => break Err(f),
                Err(f) => break Err(f),
            }
        };
        let (result, status) = match result {
            Ok(resp) => {
                self.seen.store(true, Ordering::Release);
                if resp.status().is_server_error() {
                    self.failed(ticket, "5xx");
                } else {
                    ticket.success();
                }
                let status = resp.status().as_str().to_owned();
                (Ok(resp), status)
            }
            // The caller's body was too large, malformed or slow: says
            // nothing about the origin (the ticket is dropped unreported).
            Err(UpstreamFailure::RequestBodyTooLarge) => (
                Err(classify(UpstreamFailure::RequestBodyTooLarge)),
                "request_too_large".into(),
            ),
            Err(UpstreamFailure::ClientBody(c)) => {
                let label = match c {
                    ClientBodyError::TimedOut => "client_body_timeout",
                    ClientBodyError::Failed(_) => "client_body_error",
                };
                tracing::debug!(error = %c, "request body failed on the client's side");
                (Err(c.to_gateway_error()), label.into())
            }
            Err(f) => {
                let cause = match &f {
                    UpstreamFailure::Connect(_) => "connect",
                    UpstreamFailure::Reset(_) => "reset",
                    UpstreamFailure::Timeout => "timeout",
                    _ => "error",
                };
                self.failed(ticket, cause);
                let label = if cause == "timeout" { "timeout" } else { "error" };
                (Err(classify(f)), label.into())
            }
        };
        m.origin_requests.with_label_values(&[route, &status]).inc();
        m.origin_duration
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
        result.map(|resp| {
            let hold = OriginHold {
                _permit: permit,
                _inflight: inflight,
                _span: None,
            };
            (resp, hold)
        })
    }

    /// Reports an origin failure to the breaker; when it opens the breaker,
    /// counts the trip under its cause.
    fn failed(&self, ticket: crate::shaping::org_breakers::OrgTicket, cause: &'static str) {
        if ticket.failure() {
            self.metrics.breaker_trips.with_label_values(&[cause]).inc();
        }
    }

    /// Reads a request body with content through [`ClientBody`]: under
    /// `server.body_read_timeout_ms`, its errors marked as the client's.
    fn watch_client_body(&self, req: Request<StreamBody>) -> (Request<StreamBody>, Option<Arc<BodyWatch>>) {
        if http_body::Body::size_hint(req.body()).exact() == Some(0) {
            return (req, None);
        }
        let (parts, body) = req.into_parts();
        let body = ClientBody::new(body, self.body_read_timeout);
        let watch = body.watch();
        (Request::from_parts(parts, body.boxed_unsync()), Some(watch))
    }

    /// Waits for a response head: `origin.timeout_ms` from `started`, or
    /// from the moment the client delivered the last part of its body if
    /// that is later (an origin cannot answer before it has the request, so
    /// a slow upload never counts against it). Past the deadline, blame
    /// goes to the client if the body is still waiting on it, else to the
    /// origin. Bounded: the body itself must arrive within
    /// `server.body_read_timeout_ms`.
    async fn head_within_deadline(
        &self,
        send: UpstreamFuture,
        started: tokio::time::Instant,
        watch: Option<&BodyWatch>,
    ) -> Result<Result<Response<StreamBody>, UpstreamFailure>, UpstreamFailure> {
        tokio::pin!(send);
        let mut deadline = started + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, send.as_mut()).await {
                Ok(r) => return Ok(r),
                // Still waiting for the client's upload: the client is slow,
                // not the origin.
                Err(_) if watch.is_some_and(|w| w.waiting_on_client()) => {
                    return Err(UpstreamFailure::ClientBody(ClientBodyError::TimedOut))
                }
                Err(_) => match watch.and_then(BodyWatch::last_frame_at) {
                    Some(last) if last + self.timeout > deadline => deadline = last + self.timeout,
                    _ => return Err(UpstreamFailure::Timeout),
                },
            }
        }
    }

    /// Sends a request and reads the whole response under the total deadline.
    pub async fn fetch(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
        org: &str,
    ) -> Result<OriginReply, GatewayError> {
        self.fetch_admitted(req, route, org, Queue::Wait).await
    }

    /// [`OriginClient::fetch`] that takes origin slots only if they are free
    /// now and never waits in the shared queue (503 otherwise): for calls on
    /// behalf of clients not known yet (origin introspection).
    pub async fn fetch_unqueued(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
        org: &str,
    ) -> Result<OriginReply, GatewayError> {
        self.fetch_admitted(req, route, org, Queue::Never).await
    }

    async fn fetch_admitted(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
        org: &str,
        queue: Queue,
    ) -> Result<OriginReply, GatewayError> {
        let max = self.max_response_bytes;
        let exchange = async {
            let (resp, _hold) = self.send(req, route, org, queue).await?;
            let (parts, body) = resp.into_parts();
            let body = collect_capped(body, max).await.map_err(|e| {
                tracing::warn!(error = %e, "origin response body failed or exceeded the cap");
                GatewayError::upstream_error()
            })?;
            Ok(OriginReply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::upstream_timeout()),
        }
    }

    /// Reads a streamed origin body whole, under the response cap.
    pub async fn read_capped(&self, body: StreamBody) -> Result<Bytes, GatewayError> {
        let read = collect_capped(body, self.max_response_bytes);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "origin response body failed or exceeded the cap");
                Err(GatewayError::upstream_error())
            }
            Err(_) => Err(GatewayError::upstream_timeout()),
        }
    }

    /// Sends a request; the response head must arrive within the deadline,
    /// the body then streams to the caller under the size cap.
    pub async fn stream(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
        org: &str,
    ) -> Result<Response<StreamBody>, GatewayError> {
        let method = req.method().clone();
        let (mut resp, hold) = self.send(req, route, org, Queue::Wait).await?;
        let max = self.max_response_bytes;
        // A HEAD's answer and a 204 or 304 carry no body: their
        // Content-Length, if any, describes another message.
        let bodyless = method == http::Method::HEAD
            || matches!(
                resp.status(),
                http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
            );
        // The length as the HTTP client framed the body (a list such as
        // `20011, 20011` included), not as the header is spelled.
        if let Some(n) = http_body::Body::size_hint(resp.body())
            .exact()
            .filter(|_| !bodyless)
        {
            if n > max as u64 && method == http::Method::GET {
                // Refused before anything is forwarded: a 502 envelope, not
                // a head followed by a cut body. Only for a read: the 2xx
                // answer of a mutation says it was committed, and the
                // write-through must see it (`proxy.rs`).
                tracing::warn!(
                    route,
                    declared = n,
                    max,
                    "origin response body declared over origin.max_response_bytes"
                );
                return Err(GatewayError::upstream_error());
            }
            // One length, as framed, whatever form the origin sent.
            if resp.headers().contains_key(http::header::CONTENT_LENGTH) {
                resp.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
            }
        }
        // The origin slot stays taken while the body streams: a caller that
        // stops reading holds an origin connection, and the caps and
        // `origin_inflight` must see it (until the response-write timeout
        // cuts it). A body that stops arriving for `origin.timeout_ms` is
        // cut, so a stalled origin cannot hold the slot for ever.
        let idle = self.timeout;
        Ok(resp.map(|b| {
            HeldBody {
                inner: cap_body(b, max),
                idle,
                stalled: Box::pin(tokio::time::sleep(idle)),
                _hold: hold,
            }
            .boxed_unsync()
        }))
    }
}

fn classify(f: UpstreamFailure) -> GatewayError {
    match f {
        UpstreamFailure::Timeout => GatewayError::upstream_timeout(),
        UpstreamFailure::ClientBody(c) => c.to_gateway_error(),
        UpstreamFailure::Connect(e) => {
            tracing::warn!(error = %e, "origin connect failed");
            GatewayError::upstream_error()
        }
        UpstreamFailure::RequestBodyTooLarge => GatewayError::new(
            crate::error::ErrorCode::PayloadTooLarge,
            "Request body exceeds the gateway's limit.",
        ),
        UpstreamFailure::Reset(e) | UpstreamFailure::Other(e) => {
            tracing::warn!(error = %e, "origin exchange failed");
            GatewayError::upstream_error()
        }
    }
}

/// What an origin request holds until its response body is done: its
/// origin slot and its count in `origin_inflight`.
pub struct OriginHold {
    _permit: crate::shaping::origin_guard::OriginPermit,
    _inflight: OwnedInflight,
    /// The origin span (sampled requests only), ended with the body.
    _span: Option<crate::telemetry::OriginSpan>,
}

/// `origin_inflight`, counted up while this lives.
struct OwnedInflight(prometheus::IntGauge);

impl OwnedInflight {
    fn new(g: &prometheus::IntGauge) -> Self {
        g.inc();
        OwnedInflight(g.clone())
    }
}

impl Drop for OwnedInflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An origin response body that releases its [`OriginHold`] when it ends
/// or is dropped, and fails when no frame comes for `idle`.
struct HeldBody {
    inner: StreamBody,
    idle: Duration,
    stalled: Pin<Box<tokio::time::Sleep>>,
    _hold: OriginHold,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            std::task::Poll::Pending => {
                if this.stalled.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(Some(Err(
                        "origin response body stalled past origin.timeout_ms".into(),
                    )));
                }
                std::task::Poll::Pending
            }
            ready => {
                let at = tokio::time::Instant::now() + this.idle;
                this.stalled.as_mut().reset(at);
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body-less request body for GETs to the origin.
pub fn empty_body() -> StreamBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A copy of a request for one retry: only for idempotent methods (or an
/// `Idempotency-Key`) and only when the request has no body to replay.
fn retry_copy(req: &Request<StreamBody>) -> Option<Request<StreamBody>> {
    let idempotent = is_retryable(req.method(), req.headers().contains_key("idempotency-key"));
    let bodyless = http_body::Body::size_hint(req.body()).exact() == Some(0);
    if !(idempotent && bodyless) {
        return None;
    }
    let mut copy = Request::new(empty_body());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Caps a streamed body: past `max` bytes the stream ends with an error.
fn cap_body(b: StreamBody, max: usize) -> StreamBody {
    Limited::new(b, max).boxed_unsync()
}

/// Reads a whole body, refusing more than `max` bytes.
async fn collect_capped(mut body: StreamBody, max: usize) -> Result<Bytes, BoxError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > max {
                return Err("origin response body exceeds the cap".into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
/// The simulator answering in-process: tests and benches without a socket.
pub struct SimulatorUpstream(pub crate::demo::Simulator);

impl Upstream for SimulatorUpstream {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture {
        let sim = self.0.clone();
        Box::pin(async move {
            let resp = sim.handle(req).await;
            Ok(resp.map(|b| b.map_err(|never| match never {}).boxed_unsync()))
        })
    }
}
