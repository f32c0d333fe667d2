//! The origin client: one `Upstream` (pooled hyper client over http or
//! https, or the in-process simulator), wrapped with deadlines, body caps
//! and error classification.

use crate::body::{BoxError, StreamBody};
use crate::config::OriginConfig;
use crate::error::GatewayError;
use crate::metrics::{InflightGuard, Metrics};
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
    /// The request body exceeded the gateway's cap while streaming.
    RequestBodyTooLarge,
    /// Anything else: reset, protocol error.
    Other(BoxError),
}

/// Something that answers origin requests. Requests carry an absolute path
/// (`/v1/...`); the upstream adds scheme and authority.
pub trait Upstream: Send + Sync + 'static {
    fn send(&self, req: Request<StreamBody>) -> UpstreamFuture;
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

fn rustls_config() -> Result<rustls::ClientConfig, String> {
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
                    } else {
                        Err(UpstreamFailure::Other(e.into()))
                    }
                }
            }
        })
    }
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
    max_response_bytes: usize,
    metrics: Arc<Metrics>,
    /// Set on the first answer of any kind; `/readyz` reads it.
    seen: Arc<AtomicBool>,
}

impl OriginClient {
    pub fn new(
        upstream: Arc<dyn Upstream>,
        cfg: &OriginConfig,
        metrics: Arc<Metrics>,
        seen: Arc<AtomicBool>,
    ) -> Self {
        OriginClient {
            upstream,
            timeout: Duration::from_millis(cfg.timeout_ms),
            max_response_bytes: cfg.max_response_bytes as usize,
            metrics,
            seen,
        }
    }

    /// Sends with the deadline on the response head, counting the request.
    async fn send(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
    ) -> Result<Response<StreamBody>, GatewayError> {
        let m = &self.metrics;
        let _inflight = InflightGuard::new(&m.origin_inflight);
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.upstream.send(req)).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(GatewayError::upstream_timeout()),
        };
        let status = match &result {
            Ok(resp) => {
                self.seen.store(true, Ordering::Release);
                resp.status().as_str().to_owned()
            }
            Err(e) if e.code == crate::error::ErrorCode::UpstreamTimeout => "timeout".into(),
            Err(e) if e.code == crate::error::ErrorCode::PayloadTooLarge => "request_too_large".into(),
            Err(_) => "error".into(),
        };
        m.origin_requests.with_label_values(&[route, &status]).inc();
        m.origin_duration
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Sends a request and reads the whole response under the total deadline.
    pub async fn fetch(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
    ) -> Result<OriginReply, GatewayError> {
        let max = self.max_response_bytes;
        let exchange = async {
            let resp = self.send(req, route).await?;
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

    /// Sends a request; the response head must arrive within the deadline,
    /// the body then streams to the caller under the size cap.
    pub async fn stream(
        &self,
        req: Request<StreamBody>,
        route: &'static str,
    ) -> Result<Response<StreamBody>, GatewayError> {
        let resp = self.send(req, route).await?;
        let max = self.max_response_bytes;
        Ok(resp.map(|b| cap_body(b, max)))
    }
}

fn classify(f: UpstreamFailure) -> GatewayError {
    match f {
        UpstreamFailure::Connect(e) => {
            tracing::warn!(error = %e, "origin connect failed");
            GatewayError::upstream_error()
        }
        UpstreamFailure::RequestBodyTooLarge => GatewayError::new(
            crate::error::ErrorCode::PayloadTooLarge,
            "Request body exceeds the gateway's limit.",
        ),
        UpstreamFailure::Other(e) => {
            tracing::warn!(error = %e, "origin exchange failed");
            GatewayError::upstream_error()
        }
    }
}

/// A body-less request body for GETs to the origin.
pub fn empty_body() -> StreamBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
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
