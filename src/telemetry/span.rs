//! The spans of one request, as the request path sees them: a handle that
//! is one `None` when tracing is off or the request is not sampled, so
//! every hook is a branch on it and nothing else (no allocation, no clock
//! read).

use super::propagation::OriginTrace;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

/// Span names (the server span is named `METHOD route`).
pub const AUTHENTICATE: &str = "authenticate";
pub const RATE_LIMIT: &str = "rate_limit";
pub const ORIGIN: &str = "origin";
pub const INVALIDATION: &str = "invalidation";

/// The server span of one request and what its children need.
pub struct RequestTrace(Option<Box<Recording>>);

struct Recording {
    tracer: SdkTracer,
    /// The context holding the server span: children start under it.
    cx: Context,
}

impl RequestTrace {
    /// Not traced.
    pub const OFF: RequestTrace = RequestTrace(None);

    /// Starts the server span under `parent` (the caller's context or
    /// none); `OFF` unless it is sampled. The name is set only once the
    /// span is known to be recorded (it is the only allocation).
    pub(super) fn start(
        tracer: &SdkTracer,
        parent: &Context,
        method: &http::Method,
        route: &'static str,
    ) -> RequestTrace {
        let mut span = tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, parent);
        if !span.is_recording() {
            return RequestTrace::OFF;
        }
        let label = method_label(method);
        span.update_name(format!("{label} {route}"));
        span.set_attribute(KeyValue::new(super::attr::HTTP_METHOD, label));
        if label == OTHER_METHOD {
            let token = method.as_str();
            // Tokens are ASCII (hyper checks them): any byte is a boundary.
            let kept = &token[..token.len().min(MAX_METHOD_ORIGINAL)];
            span.set_attribute(KeyValue::new(super::attr::HTTP_METHOD_ORIGINAL, kept.to_owned()));
        }
        span.set_attribute(KeyValue::new(super::attr::HTTP_ROUTE, route));
        RequestTrace(Some(Box::new(Recording {
            tracer: tracer.clone(),
            cx: parent.with_span(span),
        })))
    }

    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Sets an attribute of the server span; `kv` runs only when it is
    /// recorded (so its value costs nothing otherwise).
    pub fn set(&self, kv: impl FnOnce() -> KeyValue) {
        if let Some(r) = &self.0 {
            r.cx.span().set_attribute(kv());
        }
    }

    /// A child of the server span (nothing when not recorded).
    pub fn child(&self, name: &'static str) -> ChildSpan {
        match &self.0 {
            Some(r) => ChildSpan::under(&r.tracer, &r.cx, name),
            None => ChildSpan::OFF,
        }
    }

    /// The parent of this request's origin spans, for
    /// `propagation::attach`.
    pub fn origin(&self) -> Option<OriginTrace> {
        self.0.as_ref().map(|r| OriginTrace {
            tracer: r.tracer.clone(),
            parent: r.cx.clone(),
        })
    }

    /// Ends the server span with the response's status and error code
    /// (5xx marks it an error, as the HTTP conventions say for servers).
    pub fn end(&self, status: http::StatusCode, code: Option<&'static str>) {
        let Some(r) = &self.0 else { return };
        let span = r.cx.span();
        span.set_attribute(KeyValue::new(
            super::attr::HTTP_STATUS,
            i64::from(status.as_u16()),
        ));
        if let Some(code) = code {
            span.set_attribute(KeyValue::new(super::attr::ERROR_TYPE, code));
        }
        if status.is_server_error() {
            span.set_status(Status::error(code.unwrap_or("")));
        }
        span.end();
    }
}

/// A child span, ended when dropped (or by `end`).
pub struct ChildSpan(Option<Span>);

impl ChildSpan {
    /// Starts a span with no parent (work no request started: a cluster
    /// stream entry, an admin purge), sampled by the ratio.
    pub(super) fn root(tracer: &SdkTracer, name: &'static str) -> ChildSpan {
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .start_with_context(tracer, &Context::new());
        ChildSpan(span.is_recording().then_some(span))
    }

    /// A child of the span in `parent` (a recorded one).
    pub(super) fn under(tracer: &SdkTracer, parent: &Context, name: &'static str) -> ChildSpan {
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .start_with_context(tracer, parent);
        ChildSpan(Some(span))
    }

    pub const OFF: ChildSpan = ChildSpan(None);

    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Sets an attribute; `kv` runs only when the span is recorded.
    pub fn set(&mut self, kv: impl FnOnce() -> KeyValue) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(kv());
        }
    }

    /// Marks the span failed with a short, fixed reason.
    pub fn fail(&mut self, reason: &'static str) {
        if let Some(s) = &mut self.0 {
            s.set_attribute(KeyValue::new(super::attr::ERROR_TYPE, reason));
            s.set_status(Status::error(reason));
        }
    }
}

/// What spans call a method outside the HTTP standard set (OpenTelemetry's
/// HTTP conventions): span names and `http.request.method` stay a bounded
/// set whatever token a client sends.
pub const OTHER_METHOD: &str = "_OTHER";
/// Bytes of an unknown method token kept in `http.request.method_original`.
const MAX_METHOD_ORIGINAL: usize = 32;

/// The method as spans name it: one of the standard methods, else `_OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    use http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER_METHOD,
    }
}
