//! What the request path writes into its spans, kept here so the hooks in
//! `service.rs` stay one line each. Every function is reached only when a
//! span is recorded, or does nothing when it is not (`ChildSpan::set` and
//! `RequestTrace::set` take closures that run only then).
//!
//! Only fixed labels, ids and counts are written: never a header value,
//! a credential, a token or a webhook secret.

use super::Outcome;
use crate::auth::authenticator::AuthError;
use crate::auth::Principal;
use crate::cache::{Applied, CacheStatus};
use crate::events::Invalidation;
use crate::metrics::RateResult;
use crate::shaping::EndpointClass;
use crate::telemetry::attr;
use crate::telemetry::{ChildSpan, RequestTrace};
use opentelemetry::KeyValue;
use std::sync::Arc;

/// The authentication span's result; on success the principal's
/// organization and key id go on the server span (the key id is the
/// public part of an API key, a JWT's subject otherwise).
pub(super) fn authenticated(
    trace: &RequestTrace,
    span: &mut ChildSpan,
    result: &Result<Arc<Principal>, AuthError>,
) {
    if !span.is_recording() {
        return;
    }
    match result {
        Ok(p) => {
            span.set(|| KeyValue::new(attr::AUTH_RESULT, "ok"));
            trace.set(|| KeyValue::new(attr::ORG, p.org.to_string()));
            trace.set(|| KeyValue::new(attr::KEY_ID, p.key_id.to_string()));
        }
        Err(e) => {
            span.set(|| KeyValue::new(attr::AUTH_RESULT, e.reason()));
            span.fail(e.reason());
        }
    }
}

fn rate_label(r: RateResult) -> &'static str {
    match r {
        RateResult::Admitted => "admitted",
        RateResult::Limited => "limited",
        RateResult::DailyCap => "daily_cap",
    }
}

/// The limiter's decision, on its span and on the server span.
pub(super) fn rate_decision(trace: &RequestTrace, mut span: ChildSpan, class: EndpointClass, r: RateResult) {
    if !span.is_recording() {
        return;
    }
    span.set(|| KeyValue::new(attr::RATE_CLASS, class.as_str()));
    span.set(|| KeyValue::new(attr::RATE_DECISION, rate_label(r)));
    if r != RateResult::Admitted {
        span.fail(rate_label(r));
    }
    trace.set(|| KeyValue::new(attr::RATE_DECISION, rate_label(r)));
}

/// Ends the server span with what the request turned into.
pub(super) fn end_request(
    outcome: &Outcome,
    status: http::StatusCode,
    code: Option<&'static str>,
    rid: &str,
) {
    let t = &outcome.trace;
    t.set(|| KeyValue::new(attr::REQUEST_ID, rid.to_owned()));
    if let Some(c) = outcome.cache {
        t.set(|| KeyValue::new(attr::CACHE, c.as_str()));
        // A miss led the fill; a coalesced request waited on another's.
        if matches!(c, CacheStatus::Miss | CacheStatus::Coalesced) {
            t.set(|| KeyValue::new(attr::COALESCED, c == CacheStatus::Coalesced));
        }
    }
    t.end(status, code);
}

/// The span of applying one invalidation, attributes set after it ran.
pub(super) fn invalidation(span: &mut ChildSpan, inv: &Invalidation, applied: &Applied) {
    span.set(|| KeyValue::new(attr::INV_SOURCE, inv.source.as_str()));
    span.set(|| KeyValue::new(attr::INV_TYPE, inv.event_type.as_str()));
    if let Some(c) = inv.container {
        span.set(|| KeyValue::new(attr::CONTAINER, c.to_string()));
    }
    span.set(|| KeyValue::new(attr::ENTRIES_REMOVED, applied.entries_removed as i64));
    span.set(|| KeyValue::new(attr::REVOKED, applied.revoked_asset_ids() as i64));
}
