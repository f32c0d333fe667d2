//! OpenTelemetry traces (issue 19, item 1): what reaches a collector.
//!
//! Each test starts an OTLP/HTTP receiver on a free loopback port (a hyper
//! server taking `POST /v1/traces`), decodes the protobuf with
//! `opentelemetry-proto`, and reads the spans a gateway in front of the
//! in-process simulator sent it. The simulator is wrapped to record the
//! trace headers each origin request carried. That harness is in
//! tests/support/otlp.rs, shared with tests/attack19.rs. Nothing waits on
//! a clock: spans are sent with an explicit flush, and the dead/stalled
//! collector tests assert counts, never durations.

#[path = "support/otlp.rs"]
mod otlp_support;
mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::origin::SimulatorUpstream;
use layers_gateway::service::Gateway;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp_support::*;
use std::sync::{Arc, Mutex};
use support::*;

// ------------------------------------------------------------------ helpers

/// A loopback port nothing listens on (bound, then closed).
async fn dead_endpoint() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1/traces")
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

const CONTAINER_SPAN: &str = "GET /v1/content/:containerId";

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn a_miss_and_a_hit_are_server_spans_with_auth_limiter_and_origin_children() {
    let c = Collector::start(Mode::Ok).await;
    let t = traced(&c.endpoint(), 1.0, "", "");
    let path = container_path(&t.sim);
    let miss = call_get(&t.gw, &path, &reader_key()).await;
    assert_eq!(miss.x_cache(), Some("MISS"));
    let hit = call_get(&t.gw, &path, &reader_key()).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    t.flush().await;
    let spans = c.spans();
    let servers = named(&spans, CONTAINER_SPAN);
    assert_eq!(servers.len(), 2, "{spans:#?}");
    let by_cache = |r: &str| {
        *servers
            .iter()
            .find(|s| attr(s, "layers.cache.result").as_deref() == Some(r))
            .unwrap_or_else(|| panic!("a {r} span: {servers:#?}"))
    };
    let (m, h) = (by_cache("miss"), by_cache("hit"));
    for (s, rid) in [(m, miss.header("x-request-id")), (h, hit.header("x-request-id"))] {
        assert_eq!(s.kind, SpanKind::Server as i32);
        assert!(s.parent_span_id.is_empty(), "a root: no caller's context");
        assert_eq!(attr(s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attr(s, "http.route").as_deref(), Some("/v1/content/:containerId"));
        assert_eq!(attr(s, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attr(s, "layers.org_id").as_deref(), Some("org_demo_a"));
        let key_id = reader_key().split('_').nth(2).unwrap().to_owned();
        assert_eq!(attr(s, "layers.key_id"), Some(key_id));
        assert_eq!(attr(s, "layers.rate_limit.decision").as_deref(), Some("admitted"));
        assert_eq!(attr(s, "layers.request_id").as_deref(), rid);
        assert!(attr(s, "layers.fence.generation").is_some(), "{s:#?}");
        assert_eq!(attr(s, "error.type"), None);
        let auth = child(&spans, s, "authenticate");
        assert_eq!(attr(auth, "layers.auth.result").as_deref(), Some("ok"));
        let rl = child(&spans, s, "rate_limit");
        assert_eq!(attr(rl, "layers.rate_limit.class").as_deref(), Some("read-light"));
        assert_eq!(
            attr(rl, "layers.rate_limit.decision").as_deref(),
            Some("admitted")
        );
    }
    // The miss led its fill: one origin span, a client span under it.
    assert_eq!(attr(m, "layers.cache.coalesced").as_deref(), Some("false"));
    let o = child(&spans, m, "origin");
    assert_eq!(o.kind, SpanKind::Client as i32);
    assert_eq!(attr(o, "http.route").as_deref(), Some("/v1/content/:containerId"));
    assert_eq!(attr(o, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(o, "layers.origin.admission").as_deref(), Some("immediate"));
    // The hit asked nobody.
    assert!(children(&spans, h).iter().all(|s| s.name != "origin"));
    assert_eq!(t.origin_requests().len(), 1);
    // The resource names the service.
    let res = c.resources.lock().unwrap().clone();
    assert!(res
        .iter()
        .flatten()
        .any(|kv| kv.key == "service.name" && value(kv) == "layers-gateway"));
    assert_eq!(t.exported(), spans.len() as u64);
    assert_eq!(t.dropped("queue_full") + t.dropped("export_failed"), 0);
}

#[tokio::test]
async fn refused_requests_carry_their_status_and_error_code() {
    let c = Collector::start(Mode::Ok).await;
    let tier = "[shaping.tiers.standard]\nread_light_per_min = 1\nwrite_light_per_min = 60\nlong_running_per_min = 20\ndaily_writes = 10000\n";
    let t = traced(&c.endpoint(), 1.0, "", tier);
    let path = container_path(&t.sim);
    // 401: an unknown key.
    let bad_key = format!("{}x", &reader_key()[..reader_key().len() - 1]);
    call_get(&t.gw, &path, &bad_key)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // 429: the second read of a one-a-minute tier.
    assert_eq!(call_get(&t.gw, &path, &reader_key()).await.status, 200);
    call_get(&t.gw, &path, &reader_key())
        .await
        .assert_error(429, "RATE_LIMITED");
    t.flush().await;
    let spans = c.spans();
    let servers = named(&spans, CONTAINER_SPAN);
    let by_status = |code: &str| {
        *servers
            .iter()
            .find(|s| attr(s, "http.response.status_code").as_deref() == Some(code))
            .unwrap_or_else(|| panic!("a {code} span: {servers:#?}"))
    };
    let refused = by_status("401");
    assert_eq!(attr(refused, "error.type").as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(attr(refused, "layers.org_id"), None, "no principal");
    let auth = child(&spans, refused, "authenticate");
    assert_eq!(attr(auth, "layers.auth.result").as_deref(), Some("wrong_secret"));
    assert!(children(&spans, refused).iter().all(|s| s.name != "rate_limit"));

    let limited = by_status("429");
    assert_eq!(attr(limited, "error.type").as_deref(), Some("RATE_LIMITED"));
    assert_eq!(
        attr(limited, "layers.rate_limit.decision").as_deref(),
        Some("limited")
    );
    assert_eq!(attr(limited, "layers.org_id").as_deref(), Some("org_demo_a"));
    let rl = child(&spans, limited, "rate_limit");
    assert_eq!(attr(rl, "layers.rate_limit.decision").as_deref(), Some("limited"));
    assert_eq!(attr(rl, "error.type").as_deref(), Some("limited"));
    assert!(children(&spans, limited).iter().all(|s| s.name != "origin"));
}

#[tokio::test]
async fn a_webhook_invalidation_is_a_child_of_the_webhook_request() {
    let c = Collector::start(Mode::Ok).await;
    let t = traced(&c.endpoint(), 1.0, "", "");
    let (id, _) = first_container(&t.sim);
    let path = container_path(&t.sim);
    assert_eq!(call_get(&t.gw, &path, &reader_key()).await.status, 200);
    let body = serde_json::json!({
        "id": "evt_01TRACES00000000000000001",
        "type": "content.deleted",
        "data": { "id": id.to_string() },
    })
    .to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(
        &t.gw,
        Method::POST,
        "/webhooks/layers",
        &headers,
        Bytes::from(body),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    t.flush().await;
    let spans = c.spans();
    // Named by its route label, as in `requests_total{route="webhook"}`.
    let hook = named(&spans, "POST webhook");
    assert_eq!(hook.len(), 1, "{spans:#?}");
    let hook = hook[0];
    assert_eq!(attr(hook, "http.response.status_code").as_deref(), Some("200"));
    let inv = child(&spans, hook, "invalidation");
    assert_eq!(
        attr(inv, "layers.invalidation.source").as_deref(),
        Some("webhook")
    );
    assert_eq!(attr(inv, "layers.invalidation.type").as_deref(), Some("deleted"));
    assert_eq!(attr(inv, "layers.container_id"), Some(id.to_string()));
    assert_eq!(
        attr(inv, "layers.invalidation.entries_removed").as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn the_partners_trace_continues_through_the_gateway_to_the_origin() {
    let c = Collector::start(Mode::Ok).await;
    // Ratio 0: only the partner's sampled flag can make this trace recorded.
    let t = traced(&c.endpoint(), 0.0, "", "");
    let path = container_path(&t.sim);
    let traceparent = format!("00-{PARTNER_TRACE}-{PARTNER_SPAN}-01");
    let key = reader_key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("traceparent", traceparent.as_str()),
        ("tracestate", "partner=7"),
    ];
    assert_eq!(
        call(&t.gw, Method::GET, &path, &headers, Bytes::new())
            .await
            .status,
        200
    );
    // A proxied route (whoami) too.
    assert_eq!(
        call(&t.gw, Method::GET, "/v1/whoami", &headers, Bytes::new())
            .await
            .status,
        200
    );
    t.flush().await;
    let spans = c.spans();
    let origin_seen = t.origin_requests();
    assert_eq!(origin_seen.len(), 2, "{origin_seen:?}");
    for (route, seen) in [
        (CONTAINER_SPAN, &origin_seen[0]),
        ("GET /v1/whoami", &origin_seen[1]),
    ] {
        let server = named(&spans, route);
        assert_eq!(server.len(), 1, "{route}: {spans:#?}");
        let server = server[0];
        assert_eq!(hex(&server.trace_id), PARTNER_TRACE);
        assert_eq!(hex(&server.parent_span_id), PARTNER_SPAN);
        assert_eq!(server.trace_state, "partner=7");
        let fetch = child(&spans, server, "origin");
        // The origin was told: same trace, the gateway's origin span as parent.
        let want = format!("00-{PARTNER_TRACE}-{}-01", hex(&fetch.span_id));
        assert_eq!(seen.traceparent.as_deref(), Some(want.as_str()), "{}", seen.path);
        assert_eq!(seen.tracestate.as_deref(), Some("partner=7"));
    }
}

#[tokio::test]
async fn ratio_zero_without_a_parent_exports_nothing_and_forwards_the_callers_context_unchanged() {
    let c = Collector::start(Mode::Ok).await;
    let t = traced(&c.endpoint(), 0.0, "", "");
    let path = container_path(&t.sim);
    assert_eq!(call_get(&t.gw, &path, &reader_key()).await.status, 200);
    // The caller's trace is not sampled: the gateway does not record it,
    // and passes its context on as it came (W3C, a non-recording proxy).
    let unsampled = format!("00-{PARTNER_TRACE}-{PARTNER_SPAN}-00");
    let key = reader_key();
    let headers = [("x-api-key", key.as_str()), ("traceparent", unsampled.as_str())];
    let other = t
        .sim
        .container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .nth(1)
        .map(|(_, id)| format!("/v1/content/{id}"))
        .unwrap();
    assert_eq!(
        call(&t.gw, Method::GET, &other, &headers, Bytes::new())
            .await
            .status,
        200
    );
    t.flush().await;
    assert!(c.spans().is_empty(), "{:#?}", c.spans());
    assert_eq!(t.exported(), 0);
    let seen = t.origin_requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].traceparent, None,
        "no context made up for an unsampled request"
    );
    assert_eq!(seen[1].traceparent.as_deref(), Some(unsampled.as_str()));
}

#[tokio::test]
async fn with_tracing_off_the_callers_context_is_forwarded_unchanged() {
    let sim = demo_simulator();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = Recorder {
        sim: SimulatorUpstream(sim.clone()),
        seen: seen.clone(),
    };
    let gw = Gateway::new(
        test_config("http://127.0.0.1:1", ""),
        demo_keys(),
        Arc::new(upstream),
    );
    assert!(gw.state().telemetry.is_none(), "off by default");
    let tp = format!("00-{PARTNER_TRACE}-{PARTNER_SPAN}-01");
    let key = reader_key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("traceparent", tp.as_str()),
        ("tracestate", "partner=7"),
    ];
    let path = container_path(&sim);
    assert_eq!(
        call(&gw, Method::GET, &path, &headers, Bytes::new()).await.status,
        200
    );
    assert_eq!(
        call(&gw, Method::GET, "/v1/whoami", &headers, Bytes::new())
            .await
            .status,
        200
    );
    for s in seen.lock().unwrap().iter() {
        assert_eq!(s.traceparent.as_deref(), Some(tp.as_str()), "{}", s.path);
        assert_eq!(s.tracestate.as_deref(), Some("partner=7"), "{}", s.path);
    }
}

#[tokio::test]
async fn a_sampled_parent_is_honoured_and_an_unsampled_one_is_not_recorded_at_ratio_one() {
    let c = Collector::start(Mode::Ok).await;
    let t = traced(&c.endpoint(), 1.0, "", "");
    let key = reader_key();
    let unsampled = format!("00-{PARTNER_TRACE}-{PARTNER_SPAN}-00");
    let h = [("x-api-key", key.as_str()), ("traceparent", unsampled.as_str())];
    assert_eq!(
        call(&t.gw, Method::GET, "/v1/whoami", &h, Bytes::new())
            .await
            .status,
        200
    );
    t.flush().await;
    assert!(c.spans().is_empty(), "parent-based: the caller said not sampled");
    let sampled = format!("00-{PARTNER_TRACE}-{PARTNER_SPAN}-01");
    let h = [("x-api-key", key.as_str()), ("traceparent", sampled.as_str())];
    assert_eq!(
        call(&t.gw, Method::GET, "/v1/whoami", &h, Bytes::new())
            .await
            .status,
        200
    );
    t.flush().await;
    assert_eq!(named(&c.spans(), "GET /v1/whoami").len(), 1);
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_its_drops_are_counted() {
    let endpoint = dead_endpoint().await;
    let t = traced(&endpoint, 1.0, "", "");
    let path = container_path(&t.sim);
    for _ in 0..10 {
        assert_eq!(call_get(&t.gw, &path, &reader_key()).await.status, 200);
    }
    t.flush().await;
    // Each request made at least a server, auth and rate-limit span.
    assert!(t.dropped("export_failed") >= 30, "{}", t.dropped("export_failed"));
    assert_eq!(t.exported(), 0);
    // The metric is on /metrics.
    let text = String::from_utf8(t.gw.state().metrics.render()).unwrap();
    assert!(
        text.lines().any(|l| l
            .starts_with("layers_gateway_trace_spans_dropped_total{reason=\"export_failed\"}")
            && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test]
async fn a_stalled_collector_fills_the_bounded_queue_and_the_overflow_is_counted() {
    let c = Collector::start(Mode::Stalled).await;
    // A queue of 4 and batches of 2; the first export never returns (its
    // deadline is a minute away), so at most 6 spans are ever held.
    let t = traced(
        &c.endpoint(),
        1.0,
        "queue_size = 4\nmax_export_batch = 2\nexport_timeout_ms = 60000",
        "",
    );
    let path = container_path(&t.sim);
    let n = 30;
    for _ in 0..n {
        // Every request answers: none waits for the exporter.
        assert_eq!(call_get(&t.gw, &path, &reader_key()).await.status, 200);
    }
    let made = 3 * n; // at least: server, auth, rate_limit
    let dropped = t.dropped("queue_full");
    assert!(dropped >= made - 6, "dropped {dropped} of at least {made}");
    assert_eq!(t.exported(), 0);
    assert_eq!(
        t.dropped("export_failed"),
        0,
        "the stalled export has not timed out"
    );
}

#[tokio::test]
async fn a_reload_changes_the_sample_ratio() {
    let c = Collector::start(Mode::Ok).await;
    let dir = std::env::temp_dir().join(format!(
        "layers-traces-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.toml"), layers_gateway::demo::DEMO_KEYS_FILE).unwrap();
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    let text = |ratio: f64| {
        format!(
            "[admin]\ntoken_sha256 = \"{token_hash}\"\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n{}",
            tracing_section(&c.endpoint(), ratio, "")
        )
    };
    let file = dir.join("gateway.toml");
    std::fs::write(&file, text(0.0)).unwrap();
    let cfg = layers_gateway::config::Config::load(&file).unwrap();
    let sim = demo_simulator();
    let gw = Gateway::new(cfg, demo_keys(), Arc::new(SimulatorUpstream(sim.clone())));
    gw.state().reload.set_source(file.clone(), true);
    let tel = gw.state().telemetry.as_ref().unwrap();

    assert_eq!(call_get(&gw, "/v1/whoami", &reader_key()).await.status, 200);
    tel.flush().await;
    assert!(c.spans().is_empty());

    std::fs::write(&file, text(1.0)).unwrap();
    let outcome = gw.reload_config();
    assert_eq!(outcome.status, "applied", "{outcome:?}");
    assert_eq!(outcome.applied, ["tracing.sample_ratio"]);
    assert!(outcome.restart_required.is_empty(), "{outcome:?}");
    assert_eq!(tel.sample_ratio(), 1.0);
    assert_eq!(call_get(&gw, "/v1/whoami", &reader_key()).await.status, 200);
    tel.flush().await;
    assert_eq!(named(&c.spans(), "GET /v1/whoami").len(), 1);

    // A ratio outside [0, 1] is refused and changes nothing.
    std::fs::write(&file, text(2.0)).unwrap();
    let outcome = gw.reload_config();
    assert_eq!(outcome.status, "refused");
    assert!(outcome.error.unwrap().contains("tracing.sample_ratio"));
    assert_eq!(tel.sample_ratio(), 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_credential_or_secret_reaches_the_collector() {
    let c = Collector::start(Mode::Ok).await;
    let t = traced(&c.endpoint(), 1.0, "", "");
    let path = container_path(&t.sim);
    let (id, _) = first_container(&t.sim);
    let key = reader_key();
    let wrong = format!("{}x", &key[..key.len() - 1]);
    // API key in both headers, a wrong secret, a bearer token.
    assert_eq!(call_get(&t.gw, &path, &key).await.status, 200);
    let bearer = format!("Bearer {key}");
    let r = call(
        &t.gw,
        Method::GET,
        &path,
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(call_get(&t.gw, &path, &wrong).await.status, 401);
    let jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtc3ViIn0.c2lnbmF0dXJlLXNlY3JldA";
    let r = call(
        &t.gw,
        Method::GET,
        &path,
        &[("authorization", &format!("Bearer {jwt_like}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    // A signed webhook (the secret signs it) and an admin purge (token).
    let body = serde_json::json!({
        "id": "evt_01TRACES00000000000000002",
        "type": "content.updated",
        "data": { "id": id.to_string() },
    })
    .to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        call(
            &t.gw,
            Method::POST,
            "/webhooks/layers",
            &headers,
            Bytes::from(body)
        )
        .await
        .status,
        200
    );
    purge_in_process(&t.gw, &format!("container={id}")).await;
    t.flush().await;
    assert!(c.spans().len() >= 12, "{:#?}", c.spans());
    let raw = c.raw.lock().unwrap().clone();
    let secret = key.splitn(4, '_').nth(3).unwrap().to_owned();
    for needle in [
        key.as_str(),
        secret.as_str(),
        wrong.as_str(),
        jwt_like,
        WEBHOOK_SECRET,
        ADMIN_TOKEN,
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} was sent to the collector"
        );
    }
    // Nor any header: no attribute holds a credential header's name.
    for s in c.spans() {
        for kv in &s.attributes {
            assert!(
                !kv.key.contains("authorization")
                    && !kv.key.contains("api_key")
                    && !kv.key.contains("signature")
            );
        }
    }
}

#[tokio::test]
async fn stopping_the_app_sends_the_spans_still_queued() {
    let c = Collector::start(Mode::Ok).await;
    // A minute between exports: only the stop can send this span.
    let h = Harness::with(
        demo_simulator(),
        &tracing_section(&c.endpoint(), 1.0, "export_interval_ms = 60000"),
    )
    .await;
    assert_eq!(h.client.get("/v1/whoami", &reader_key()).await.status, 200);
    assert!(c.spans().is_empty());
    h.stop().await;
    assert_eq!(named(&c.spans(), "GET /v1/whoami").len(), 1, "{:#?}", c.spans());
}
