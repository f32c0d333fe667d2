//! Label sets created at zero when the registry is built. A Prometheus
//! counter series that was never incremented does not exist, so
//! `rate(...)` over it is "no data", not 0: the dashboard's panels and the
//! alert rules (config/grafana-dashboard.json, config/alerts.yml) would
//! show holes on a healthy instance, and an error ratio would be undefined
//! instead of 0. Only fixed, documented label values appear here, so this
//! adds a known, small number of series (see docs/metrics.md).

use super::Metrics;

/// `cache_lookups_total{result}`: every cache result.
const CACHE_RESULTS: &[&str] = &[
    "hit",
    "miss",
    "coalesced",
    "bypass",
    "tombstone",
    "revoked",
    "stale",
    "negative",
];
/// `cache_evictions_total{cause}`.
const EVICTION_CAUSES: &[&str] = &["expired", "invalidated", "replaced", "size"];
/// `fills_discarded_total{reason}`.
const DISCARD_REASONS: &[&str] = &[
    "generation",
    "revoked",
    "expired",
    "lagging",
    "unsynced",
    "invalid_body",
];
/// `origin_requests_total{status}` of a cache fill that got no answer: the
/// "Origin errors" panel reads 0 until the origin fails.
const FILL_FAILURES: &[&str] = &["error", "timeout"];
/// `webhook_rejections_total{reason}`.
const WEBHOOK_REJECTIONS: &[&str] = &[
    "missing_signature",
    "malformed_signature",
    "bad_signature",
    "stale_timestamp",
    "malformed_body",
    "missing_container_id",
    "source_not_allowed",
    "too_large",
    "body_timeout",
    "body_failed",
    "too_many_reads",
];
/// `auth_failures_total{reason}`: the API-key reasons (JWT reasons appear
/// only where JWTs are configured).
const AUTH_FAILURES: &[&str] = &[
    "missing",
    "malformed",
    "unknown_key",
    "wrong_secret",
    "env_mismatch",
];
/// `origin_admissions_total{result}`.
const ADMISSIONS: &[&str] = &[
    "immediate",
    "queued",
    "queue_full",
    "deadline",
    "too_many_orgs",
    "no_free_slot",
];
/// `origin_retries_total{result}`.
const RETRIES: &[&str] = &["sent", "budget_exhausted"];
/// `origin_breaker_trips_total{cause}`.
const TRIP_CAUSES: &[&str] = &["5xx", "timeout", "connect", "reset", "error"];
/// `trace_spans_dropped_total{reason}`.
const TRACE_DROPS: &[&str] = &["queue_full", "export_failed", "parent_rate"];
/// `connections_cut_total{reason}`.
const CUT_REASONS: &[&str] = &[
    "response_stalled",
    "idle",
    "evicted_idle",
    "evicted_keyless",
    "evicted_unchecked",
];

impl Metrics {
    /// Creates every series above at 0 (`rate_limit_decisions_total` and
    /// the hit path's series are created by `Metrics::new` already).
    pub(super) fn create_initial_series(&self) {
        let init = |vec: &prometheus::IntCounterVec, values: &[&str]| {
            for v in values {
                vec.with_label_values(&[*v]);
            }
        };
        init(&self.cache_lookups, CACHE_RESULTS);
        init(&self.cache_evictions, EVICTION_CAUSES);
        init(&self.fills_discarded, DISCARD_REASONS);
        init(&self.webhook_rejections, WEBHOOK_REJECTIONS);
        init(&self.auth_failures, AUTH_FAILURES);
        init(&self.origin_admissions, ADMISSIONS);
        init(&self.origin_retries, RETRIES);
        init(&self.breaker_trips, TRIP_CAUSES);
        init(&self.connections_cut, CUT_REASONS);
        init(&self.trace_spans_dropped, TRACE_DROPS);
        for status in FILL_FAILURES {
            self.origin_requests
                .with_label_values(&[crate::routes::CONTAINER_TEMPLATE, *status]);
        }
    }
}
