//! Prometheus metrics: one registry, typed handles, `/metrics` rendering.
//!
//! Label values come only from fixed sets (route templates, status codes,
//! error codes, reasons) so no request can create a series. The opt-in
//! per-org series are capped: past `max_org_labels` distinct orgs, new ones
//! fold into `other`.

mod initial_series;
mod representation;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
pub use representation::RepresentationMetrics;
use std::collections::HashSet;
use std::sync::Mutex;

/// Buckets from 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub cache_lookups: IntCounterVec,
    pub cache_entries: IntGauge,
    pub cache_weighted_bytes: IntGauge,
    pub cache_evictions: IntCounterVec,
    pub origin_requests: IntCounterVec,
    pub origin_duration: HistogramVec,
    pub origin_inflight: IntGauge,
    pub invalidations: IntCounterVec,
    pub webhook_rejections: IntCounterVec,
    pub webhooks_ignored: IntCounter,
    pub webhooks_duplicate: IntCounter,
    /// Access lines dropped because the writer fell behind (never waited for).
    pub access_log_dropped: IntCounter,
    /// Log lines (not access lines) dropped because stdout did not keep
    /// up: synced from `log_output::dropped` at each scrape.
    log_lines_dropped: IntCounter,
    /// Ended, sampled spans sent to the trace collector (`[tracing]`).
    pub trace_spans_exported: IntCounter,
    /// Spans dropped, by `reason`: `queue_full` (the export queue was
    /// full) or `export_failed` (the collector failed or missed the
    /// export deadline). Requests never wait for the exporter.
    pub trace_spans_dropped: IntCounterVec,
    pub fills_discarded: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_rejected: IntCounter,
    pub build_info: IntGaugeVec,
    pub org_requests: Option<IntCounterVec>,
    pub rate_limit_decisions: IntCounterVec,
    pub origin_admissions: IntCounterVec,
    pub origin_queued: IntGauge,
    pub breaker_state: IntGauge,
    /// Circuits open now: the shared one and each organization's
    /// (`shaping::org_breakers`).
    pub breakers_open: IntGauge,
    pub breaker_rejections: IntCounter,
    /// Times the breaker opened, by the cause of the failure that opened it
    /// (`5xx`, `timeout`, `connect`, `reset`, `error`).
    pub breaker_trips: IntCounterVec,
    /// Responses cut because they made no write progress for
    /// `server.response_write_timeout_ms`, and connections closed by a
    /// deadline, by `reason` (`response_stalled`, `idle`).
    pub connections_cut: IntCounterVec,
    pub origin_retries: IntCounterVec,
    /// 304s, compressed replies, and the variants cached entries hold.
    pub representation: RepresentationMetrics,
    /// Pre-resolved series of the cache-hit path (container, asset), so a
    /// hit does not hash label values on every request.
    hot: [HotSeries; 2],
    /// `rate_limit_decisions_total` by [class index][admitted, limited, daily_cap].
    rate_decisions: [[IntCounter; 3]; 3],
    /// Orgs that have their own `org` label value; guarded by a mutex
    /// because it is touched only when per-org labels are enabled.
    org_labels: Mutex<HashSet<String>>,
    max_org_labels: usize,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(format!("layers_gateway_{name}"), help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(format!("layers_gateway_{name}"), help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(format!("layers_gateway_{name}"), help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// The `result` of a rate-limit decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateResult {
    Admitted = 0,
    Limited = 1,
    DailyCap = 2,
}

/// The series one successful GET cache hit of a route touches.
struct HotSeries {
    requests: IntCounter,
    duration: Histogram,
    lookup_hit: IntCounter,
}

impl HotSeries {
    fn new(requests: &IntCounterVec, duration: &HistogramVec, lookups: &IntCounterVec, route: &str) -> Self {
        HotSeries {
            requests: requests.with_label_values(&[route, "GET", "200", ""]),
            duration: duration.with_label_values(&[route, "hit"]),
            lookup_hit: lookups.with_label_values(&["hit"]),
        }
    }
}

impl Metrics {
    /// Counts one rate-limit decision through pre-resolved series.
    pub fn rate_decision(&self, class: crate::shaping::EndpointClass, result: RateResult) {
        self.rate_decisions[class.index()][result as usize].inc();
    }

    /// Counts a `GET` answered 200 from the cache: the same series
    /// `requests_total`, `request_duration_seconds` and
    /// `cache_lookups_total{result="hit"}` as the general path, pre-resolved.
    pub fn record_get_hit(&self, asset_route: bool, seconds: f64) {
        let h = &self.hot[asset_route as usize];
        h.requests.inc();
        h.duration.observe(seconds);
        h.lookup_hit.inc();
    }

    pub fn new(per_org_label: bool, max_org_labels: usize) -> Metrics {
        let r = Registry::new();
        let single = |name: &str, help: &str| -> IntCounter {
            let c = IntCounter::new(format!("layers_gateway_{name}"), help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let webhooks_ignored = single(
            "webhooks_ignored_total",
            "Signed webhooks of event types the gateway ignores.",
        );
        let webhooks_duplicate = single(
            "webhooks_duplicate_total",
            "Signed webhooks already applied (same event id).",
        );
        let access_log_dropped = single(
            "access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        );
        let log_lines_dropped = single(
            "log_lines_dropped_total",
            "Log lines (not access lines) dropped because stdout did not keep up.",
        );
        let trace_spans_exported = single("trace_spans_exported_total", "Spans sent to the OTLP collector.");
        let trace_spans_dropped = counter(
            &r,
            "trace_spans_dropped_total",
            "Spans dropped because the export queue was full or the export failed, by reason.",
            &["reason"],
        );
        let connections_rejected = single(
            "connections_rejected_total",
            "Connections shed because the connection cap was reached.",
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "layers_gateway_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone())).expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let org_requests = per_org_label.then(|| {
            counter(
                &r,
                "org_requests_total",
                "Partner requests by organization (opt-in, capped).",
                &["org", "class"],
            )
        });
        let requests = counter(
            &r,
            "requests_total",
            "Requests answered on the partner port.",
            &["route", "method", "status", "code"],
        );
        let request_duration = histogram(
            &r,
            "request_duration_seconds",
            "Time to answer a request, by route and cache result.",
            &["route", "cache"],
        );
        let cache_lookups = counter(&r, "cache_lookups_total", "Cache lookups by result.", &["result"]);
        let hot = [
            HotSeries::new(
                &requests,
                &request_duration,
                &cache_lookups,
                crate::routes::CONTAINER_TEMPLATE,
            ),
            HotSeries::new(
                &requests,
                &request_duration,
                &cache_lookups,
                crate::routes::ASSET_TEMPLATE,
            ),
        ];
        let rate_limit_decisions = counter(
            &r,
            "rate_limit_decisions_total",
            "Rate-limit decisions by endpoint class and result (admitted, limited, daily_cap).",
            &["class", "result"],
        );
        let rate_decisions = crate::shaping::EndpointClass::ALL.map(|c| {
            ["admitted", "limited", "daily_cap"]
                .map(|r| rate_limit_decisions.with_label_values(&[c.as_str(), r]))
        });
        let m = Metrics {
            requests,
            rate_decisions,
            request_duration,
            cache_lookups,
            hot,
            cache_entries: gauge(&r, "cache_entries", "Containers in the cache."),
            cache_weighted_bytes: gauge(&r, "cache_weighted_bytes", "Weighted size of the cache in bytes."),
            cache_evictions: counter(
                &r,
                "cache_evictions_total",
                "Entries that left the cache, by cause.",
                &["cause"],
            ),
            origin_requests: counter(
                &r,
                "origin_requests_total",
                "Requests sent to the origin, by route and status (or error).",
                &["route", "status"],
            ),
            origin_duration: histogram(
                &r,
                "origin_request_duration_seconds",
                "Origin response time, by route.",
                &["route"],
            ),
            origin_inflight: gauge(&r, "origin_inflight", "Origin requests in flight."),
            invalidations: counter(
                &r,
                "invalidations_total",
                "Invalidations applied, by source and type.",
                &["source", "type"],
            ),
            webhook_rejections: counter(
                &r,
                "webhook_rejections_total",
                "Webhooks refused, by reason.",
                &["reason"],
            ),
            webhooks_ignored,
            webhooks_duplicate,
            access_log_dropped,
            log_lines_dropped,
            trace_spans_exported,
            trace_spans_dropped,
            fills_discarded: counter(
                &r,
                "fills_discarded_total",
                "Origin fills served but not cached, by reason.",
                &["reason"],
            ),
            auth_failures: counter(
                &r,
                "auth_failures_total",
                "Authentication failures, by reason.",
                &["reason"],
            ),
            connections_open: gauge(&r, "connections_open", "Open partner connections."),
            connections_rejected,
            build_info,
            org_requests,
            rate_limit_decisions,
            origin_admissions: counter(
                &r,
                "origin_admissions_total",
                "Origin slot decisions: immediate, queued, or shed (queue_full, deadline, too_many_orgs).",
                &["result"],
            ),
            // Registered with their live sources by `register_origin_gauges`.
            origin_queued: IntGauge::new(
                "layers_gateway_origin_queued",
                "Requests waiting for an origin slot.",
            )
            .expect("valid metric"),
            breaker_state: IntGauge::new(
                "layers_gateway_origin_breaker_state",
                "The origin's circuit breaker (shared by every organization): 0 closed, 1 open, 2 half-open.",
            )
            .expect("valid metric"),
            breakers_open: IntGauge::new(
                "layers_gateway_origin_breakers_open",
                "Origin circuits open now: the shared one and each organization's.",
            )
            .expect("valid metric"),
            breaker_rejections: single(
                "origin_breaker_rejections_total",
                "Origin requests refused fast because the breaker was open.",
            ),
            breaker_trips: counter(
                &r,
                "origin_breaker_trips_total",
                "Times the origin breaker opened, by the cause of the failure that opened it.",
                &["cause"],
            ),
            connections_cut: counter(
                &r,
                "connections_cut_total",
                "Responses and connections cut by a gateway deadline or the connection cap: response_stalled, idle, evicted_idle.",
                &["reason"],
            ),
            origin_retries: counter(
                &r,
                "origin_retries_total",
                "Retries of idempotent origin requests: sent, or refused by the retry budget.",
                &["result"],
            ),
            representation: RepresentationMetrics::new(&r),
            org_labels: Mutex::new(HashSet::new()),
            max_org_labels,
            registry: r,
        };
        m.create_initial_series();
        m
    }

    /// The `org` label value for an org: itself while under the cap.
    pub fn org_label<'a>(&self, org: &'a str) -> &'a str {
        let mut set = self.org_labels.lock().unwrap_or_else(|p| p.into_inner());
        if set.contains(org) {
            return org;
        }
        if set.len() < self.max_org_labels {
            set.insert(org.to_owned());
            return org;
        }
        "other"
    }

    /// Registers the cluster metrics (`layers_gateway_cluster_*`, see
    /// docs/cluster.md); once, in cluster mode only.
    pub fn register_cluster(&self, stats: &crate::cluster::ClusterStats) {
        stats
            .register(&self.registry)
            .expect("cluster metrics are registered once");
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let behind = crate::log_output::dropped().saturating_sub(self.log_lines_dropped.get());
        self.log_lines_dropped.inc_by(behind);
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Metrics {
    /// Registers the origin queue and breaker gauges so that every scrape
    /// reads their live values (a breaker turns half-open with no traffic).
    pub fn register_origin_gauges(
        &self,
        guard: crate::shaping::origin_guard::OriginGuard,
        breaker: crate::shaping::org_breakers::OrgBreakers,
    ) {
        let live = LiveOriginGauges {
            queued: self.origin_queued.clone(),
            breaker_state: self.breaker_state.clone(),
            breakers_open: self.breakers_open.clone(),
            guard,
            breaker,
        };
        if let Err(e) = self.registry.register(Box::new(live)) {
            tracing::error!(error = %e, "origin gauges not registered");
        }
    }
}

/// Reads the origin guard's queue length and the breaker's state at scrape time.
struct LiveOriginGauges {
    queued: IntGauge,
    breaker_state: IntGauge,
    breakers_open: IntGauge,
    guard: crate::shaping::origin_guard::OriginGuard,
    breaker: crate::shaping::org_breakers::OrgBreakers,
}

impl prometheus::core::Collector for LiveOriginGauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.queued.desc();
        d.extend(self.breaker_state.desc());
        d.extend(self.breakers_open.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.queued.set(self.guard.queued() as i64);
        self.breaker_state.set(self.breaker.state_code());
        self.breakers_open.set(self.breaker.open_count() as i64);
        let mut families = self.queued.collect();
        families.extend(self.breaker_state.collect());
        families.extend(self.breakers_open.collect());
        families
    }
}

/// Counts one origin request while it is in flight.
pub struct InflightGuard<'a>(&'a IntGauge);

impl<'a> InflightGuard<'a> {
    pub fn new(g: &'a IntGauge) -> Self {
        g.inc();
        InflightGuard(g)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Observes a duration into a histogram.
pub fn observe(h: &Histogram, started: tokio::time::Instant) {
    h.observe(started.elapsed().as_secs_f64());
}
