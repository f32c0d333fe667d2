//! W3C trace context (`traceparent`, `tracestate`) in and out.
//!
//! In: the caller's context is read only when tracing is on, and only
//! when it sent a `traceparent`. Out: an origin request made under a
//! sampled span carries that span's context (`OriginTrace`, carried in the
//! request's extensions to `OriginClient::send`, which starts the origin
//! span and writes the headers). Otherwise (tracing off, or this request
//! not sampled) the gateway takes no part in the trace and forwards the
//! caller's `traceparent`/`tracestate` unchanged, as the W3C recommends
//! for a proxy that does not record (`service/content.rs`, `proxy.rs`).

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};

pub(crate) static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The caller's trace context, if it sent a well-formed one (see
/// `trace_headers.rs`: the SDK alone accepts malformed parents and keeps a
/// `tracestate` of any size).
pub fn extract(headers: &http::HeaderMap) -> Context {
    let Some(parent) = super::trace_headers::traceparent(headers) else {
        return Context::new();
    };
    let mut checked = http::HeaderMap::with_capacity(2);
    let (Ok(parent), Ok(state)) = (
        http::HeaderValue::from_str(parent),
        http::HeaderValue::from_str(&super::trace_headers::tracestate(headers)),
    ) else {
        return Context::new();
    };
    checked.insert(&TRACEPARENT, parent);
    if !state.is_empty() {
        checked.insert(&TRACESTATE, state);
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(&checked))
}

/// Writes the context of `cx`'s span into `headers`, replacing any
/// forwarded from the caller; an empty `tracestate` is left out.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    if headers.get(&TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(&TRACESTATE);
    }
}

/// The parent of the origin span of one origin request, carried in the
/// request's extensions (present only when the request is sampled).
#[derive(Clone)]
pub struct OriginTrace {
    pub(super) tracer: SdkTracer,
    pub(super) parent: Context,
}

impl OriginTrace {
    /// A child of the span this trace continues (work a request started
    /// that outlives its handler: a write-through invalidation).
    pub fn child(&self, name: &'static str) -> super::ChildSpan {
        super::ChildSpan::under(&self.tracer, &self.parent, name)
    }
}

/// The span of one origin exchange, ended when dropped (`OriginHold`
/// keeps it until the response body is done).
pub struct OriginSpan(Span);

impl OriginSpan {
    pub fn status(&mut self, status: http::StatusCode) {
        self.0.set_attribute(KeyValue::new(
            super::attr::HTTP_STATUS,
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            self.0.set_status(Status::error(""));
        }
    }

    /// The exchange failed before a response head (`cause` is the
    /// metrics label: `timeout`, `connect`, ...).
    pub fn failed(&mut self, cause: &'static str) {
        self.0
            .set_attribute(KeyValue::new(super::attr::ERROR_TYPE, cause));
        self.0.set_status(Status::error(cause));
    }

    pub fn set(&mut self, kv: KeyValue) {
        self.0.set_attribute(kv);
    }
}

/// Starts the origin span of `req` if it was made under a sampled span,
/// and writes its context into the request's headers (a retry copies
/// them). `None`, at the cost of one empty-extensions check, otherwise.
pub fn origin_span<B>(req: &mut http::Request<B>, route: &'static str) -> Option<OriginSpan> {
    let t = req.extensions_mut().remove::<OriginTrace>()?;
    let span = t
        .tracer
        .span_builder(super::span::ORIGIN)
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new(super::attr::HTTP_METHOD, super::span::method_label(req.method())),
            KeyValue::new(super::attr::HTTP_ROUTE, route),
        ])
        .start_with_context(&t.tracer, &t.parent);
    let cx = t.parent.with_remote_span_context(span.span_context().clone());
    inject(&cx, req.headers_mut());
    Some(OriginSpan(span))
}

/// Puts `trace` (the parent of the origin span) on an origin request.
pub fn attach<B>(req: &mut http::Request<B>, trace: Option<&OriginTrace>) {
    if let Some(t) = trace {
        req.extensions_mut().insert(t.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_an_empty_tracestate_is_left_out() {
        let mut h = http::HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        let mut out = http::HeaderMap::new();
        out.insert(&TRACESTATE, "stale=1".parse().unwrap());
        inject(&cx, &mut out);
        assert_eq!(out[&TRACEPARENT], h[&TRACEPARENT]);
        assert!(out.get(&TRACESTATE).is_none());
    }

    #[test]
    fn no_traceparent_is_no_context() {
        let cx = extract(&http::HeaderMap::new());
        assert!(!cx.span().span_context().is_valid());
    }
}
