//! OpenTelemetry traces (`[tracing]`, off by default; docs/operations.md,
//! "Traces").
//!
//! - [`span`]: the request's span handle the request path holds (`OFF`
//!   when tracing is off or the request is not sampled) and its children
//!   (authentication, rate limit, invalidation).
//! - [`propagation`]: W3C `traceparent`/`tracestate` from the caller and
//!   to the origin (the origin span is started in `OriginClient::send`).
//! - [`sampler`]: parent-based sampling with a ratio a reload changes.
//! - [`export`]: the bounded queue and the exporter thread (drops counted).
//! - [`client`]: the hyper-util client the OTLP/HTTP exporter posts with.
//!
//! The opentelemetry API is used directly, not through `tracing` spans: the
//! log subscriber would make every span live (and costly) at `info`.
//!
//! Attributes never hold a credential: no header value is copied into a
//! span, only route templates, codes, counts and the principal's
//! organization and key id (the public part of a key).

pub mod client;
pub mod export;
pub mod propagation;
pub mod sampler;
pub mod span;
mod trace_headers;

use crate::config::traces::TracingConfig;
use crate::metrics::Metrics;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;
pub use propagation::{attach, origin_span, OriginSpan, OriginTrace};
pub use span::{ChildSpan, RequestTrace};
use std::time::Duration;

/// Attribute names: the OpenTelemetry HTTP conventions where one exists,
/// `layers.*` for the gateway's own.
pub mod attr {
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const HTTP_METHOD_ORIGINAL: &str = "http.request.method_original";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const ERROR_TYPE: &str = "error.type";
    pub const REQUEST_ID: &str = "layers.request_id";
    pub const ORG: &str = "layers.org_id";
    pub const KEY_ID: &str = "layers.key_id";
    pub const CACHE: &str = "layers.cache.result";
    pub const COALESCED: &str = "layers.cache.coalesced";
    pub const GENERATION: &str = "layers.fence.generation";
    pub const RATE_CLASS: &str = "layers.rate_limit.class";
    pub const RATE_DECISION: &str = "layers.rate_limit.decision";
    pub const AUTH_RESULT: &str = "layers.auth.result";
    pub const ORIGIN_ADMISSION: &str = "layers.origin.admission";
    pub const INV_SOURCE: &str = "layers.invalidation.source";
    pub const INV_TYPE: &str = "layers.invalidation.type";
    pub const CONTAINER: &str = "layers.container_id";
    pub const ENTRIES_REMOVED: &str = "layers.invalidation.entries_removed";
    pub const REVOKED: &str = "layers.invalidation.revoked_assets";
}

/// Tracing while `[tracing] enabled = true`: the provider (its processor
/// feeds the exporter thread), the tracer, the live sampling ratio.
pub struct Telemetry {
    /// Kept so the provider lives as long as the gateway; dropping the
    /// last clone closes the queue and ends the exporter thread.
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
    ratio: sampler::LiveRatio,
    flusher: export::Flusher,
}

impl Telemetry {
    /// Builds the exporter and starts its thread. Needs no runtime of the
    /// caller's (the exporter has its own).
    pub fn start(cfg: &TracingConfig, metrics: &Metrics) -> Result<Telemetry, String> {
        let endpoint = cfg.endpoint_uri()?;
        let timeout = Duration::from_millis(cfg.export_timeout_ms);
        let client = client::OtlpHttpClient::new(timeout)?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.to_string())
            .with_timeout(timeout)
            // One attempt: a retry would hold the queue behind a collector
            // that is down; the batch is dropped and counted instead.
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| format!("tracing: {e}"))?;
        let resource = Resource::builder_empty()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        exporter.set_resource(&resource);
        let counters = export::Counters {
            exported: metrics.trace_spans_exported.clone(),
            queue_full: metrics.trace_spans_dropped.with_label_values(&["queue_full"]),
            export_failed: metrics.trace_spans_dropped.with_label_values(&["export_failed"]),
        };
        let batching = export::Batching {
            queue_size: cfg.queue_size,
            max_batch: cfg.max_export_batch,
            interval: Duration::from_millis(cfg.export_interval_ms),
            timeout,
        };
        let (processor, flusher) = export::start(exporter, batching, counters)?;
        let ratio = sampler::LiveRatio::new(cfg.sample_ratio);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler::GatewaySampler::new(
                ratio.clone(),
                cfg.parent_sampled_per_sec,
                Some(metrics.trace_spans_dropped.with_label_values(&["parent_rate"])),
            ))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("layers-gateway");
        Ok(Telemetry {
            _provider: provider,
            tracer,
            ratio,
            flusher,
        })
    }

    /// The server span of a request: continues the caller's trace when it
    /// sent a `traceparent`, else starts one (sampled by the ratio).
    pub fn start_request(
        &self,
        headers: &http::HeaderMap,
        method: &http::Method,
        route: &'static str,
    ) -> RequestTrace {
        // A caller that presents no credential at all is not a partner:
        // its `traceparent` may not choose to be recorded (the ratio does,
        // as for a trace that starts here). Callers with one are bounded
        // by `parent_sampled_per_sec` in the sampler.
        let parent = if presents_credential(headers) {
            propagation::extract(headers)
        } else {
            opentelemetry::Context::new()
        };
        RequestTrace::start(&self.tracer, &parent, method, route)
    }

    /// A span for work no request started (sampled by the ratio).
    pub fn root(&self, name: &'static str) -> ChildSpan {
        ChildSpan::root(&self.tracer, name)
    }

    pub fn sample_ratio(&self) -> f64 {
        self.ratio.get()
    }

    /// Puts a reloaded `tracing.sample_ratio` in force for traces that
    /// start from now on.
    pub fn set_sample_ratio(&self, ratio: f64) {
        self.ratio.set(ratio);
    }

    /// Sends every span ended so far (or drops and counts it if the
    /// collector fails). For tests and shutdown.
    pub async fn flush(&self) {
        self.flusher.flush().await;
    }
}

/// Whether the request carries an API key or a bearer token (checked or
/// not: this only decides whether its trace context is listened to).
fn presents_credential(headers: &http::HeaderMap) -> bool {
    headers.contains_key("x-api-key") || headers.contains_key(http::header::AUTHORIZATION)
}
