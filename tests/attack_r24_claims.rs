//! Attacker review, round 24: documented promises (README, docs/limits.md,
//! docs/metrics.md, docs/operations.md, docs/auth.md) checked as a
//! black-box suite would. Each test asserts the documented behaviour and
//! names the line it comes from. In-process tests run under tokio's paused
//! clock; the one wire test uses loopback and bounded reads.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use support::fence_fixtures::{self, container, path};
use support::scripted::{Answer, Scripted};
use support::*;
use tokio::time::Instant;

/// Samples of a text exposition: (name, labels) -> value.
fn samples(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.trim_end_matches('}');
                let mut m = BTreeMap::new();
                for pair in inner.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap();
                    m.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
                (n.to_owned(), m)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().unwrap_or(f64::NAN));
    }
    out
}

fn scrape(gw: &layers_gateway::service::Gateway) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    samples(&String::from_utf8(gw.state().metrics.render()).unwrap())
}

fn series(name: &str, labels: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
    (
        format!("layers_gateway_{name}"),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// docs/metrics.md lines 111-121 ("Series present from the start"): "the
/// gateway creates these at 0 when it starts: ... every `cause` of
/// `cache_evictions_total` and `origin_breaker_trips_total`, every `reason`
/// of `fills_discarded_total`, `webhook_rejections_total`,
/// `connections_cut_total` and the API-key reasons of
/// `auth_failures_total`, every `result` of `origin_admissions_total` and
/// `origin_retries_total`, and `origin_requests_total{route=...,status=error|timeout}`".
/// The reasons are the ones documented: `connections_cut_total` has
/// `response_stalled`, `idle`, `evicted_idle` (metrics.md line 43);
/// `fills_discarded_total` has `generation`, `revoked`, `expired`
/// (metrics.md line 84) and `invalid_body` (README, "Bodies are checked").
#[tokio::test(start_paused = true)]
async fn every_series_documented_as_present_from_the_start_is_there_at_zero() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let got = scrape(&gw);
    let mut want: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for r in [
        "hit",
        "miss",
        "coalesced",
        "bypass",
        "tombstone",
        "revoked",
        "stale",
        "negative",
    ] {
        want.push(series("cache_lookups_total", &[("result", r)]));
    }
    for c in ["read-light", "write-light", "long-running"] {
        for r in ["admitted", "limited", "daily_cap"] {
            want.push(series(
                "rate_limit_decisions_total",
                &[("class", c), ("result", r)],
            ));
        }
    }
    for c in ["expired", "invalidated", "replaced", "size"] {
        want.push(series("cache_evictions_total", &[("cause", c)]));
    }
    for c in ["5xx", "timeout", "connect", "reset", "error"] {
        want.push(series("origin_breaker_trips_total", &[("cause", c)]));
    }
    for r in ["generation", "revoked", "expired", "invalid_body"] {
        want.push(series("fills_discarded_total", &[("reason", r)]));
    }
    for r in [
        "missing_signature",
        "malformed_signature",
        "bad_signature",
        "stale_timestamp",
        "malformed_body",
        "missing_container_id",
        "too_large",
        "body_timeout",
        "body_failed",
        "too_many_reads",
    ] {
        want.push(series("webhook_rejections_total", &[("reason", r)]));
    }
    for r in ["response_stalled", "idle", "evicted_idle"] {
        want.push(series("connections_cut_total", &[("reason", r)]));
    }
    for r in [
        "missing",
        "malformed",
        "unknown_key",
        "wrong_secret",
        "env_mismatch",
    ] {
        want.push(series("auth_failures_total", &[("reason", r)]));
    }
    for r in [
        "immediate",
        "queued",
        "queue_full",
        "deadline",
        "too_many_orgs",
        "no_free_slot",
    ] {
        want.push(series("origin_admissions_total", &[("result", r)]));
    }
    for r in ["sent", "budget_exhausted"] {
        want.push(series("origin_retries_total", &[("result", r)]));
    }
    for s in ["error", "timeout"] {
        want.push(series(
            "origin_requests_total",
            &[("route", "/v1/content/:containerId"), ("status", s)],
        ));
    }
    let missing: Vec<String> = want
        .iter()
        .filter(|k| got.get(*k) != Some(&0.0))
        .map(|(n, l)| format!("{n}{l:?}"))
        .collect();
    assert!(
        missing.is_empty(),
        "documented as created at 0 on start, absent from a fresh scrape: {missing:#?}"
    );
}

/// docs/limits.md line 21: "Waiting on another request's fill |
/// `cache.fill_wait_timeout_ms` | 15 s | 504"; README "Errors":
/// `UPSTREAM_TIMEOUT` 504 "(or a coalesced request waited past
/// `cache.fill_wait_timeout_ms`)". The gateway keeps serving afterwards.
#[tokio::test(start_paused = true)]
async fn a_request_coalesced_on_a_slow_fill_gets_504_after_fill_wait_timeout() {
    let origin = Arc::new(Scripted::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        Method::GET,
        &path(),
        Answer::Held(gate.clone(), Box::new(Answer::Json(200, container(&["a1"], "c")))),
    );
    let gw = fence_fixtures::gateway(&origin, "[cache]\nfill_wait_timeout_ms = 1000\n");
    let g1 = gw.clone();
    let leader = tokio::spawn(async move { fence_fixtures::get(&g1, &path()).await });
    while origin.count(Method::GET, &path()) == 0 {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let g2 = gw.clone();
    let waiter = tokio::spawn(async move { fence_fixtures::get(&g2, &path()).await });
    let r = waiter.await.unwrap();
    let waited = start.elapsed();
    r.assert_error(504, "UPSTREAM_TIMEOUT");
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(5000),
        "gave up after {waited:?}; fill_wait_timeout_ms is 1000, origin.timeout_ms 5000"
    );
    gate.notify_waiters();
    let _ = leader.await.unwrap();
    let again = fence_fixtures::get(&gw, &path()).await;
    assert_eq!(again.status, 200, "{}", String::from_utf8_lossy(&again.body));
}

/// docs/metrics.md line 72: `route` is `not_found` for "any path outside
/// `/v1/`" and `bad_path` for "a path refused with 400 `BAD_REQUEST`
/// before routing because it is not canonical"; `/v1/*` for any other
/// `/v1/` path.
#[tokio::test(start_paused = true)]
async fn refused_and_unknown_paths_get_their_documented_route_labels() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let key = admin_key();
    let (id, _) = first_container(&sim);
    let r = call_get(&gw, &format!("/v1/content/{id};v=1"), &key).await;
    r.assert_error(400, "BAD_REQUEST");
    let r = call_get(&gw, "/nope", &key).await;
    r.assert_error(404, "NOT_FOUND");
    let _ = call_get(&gw, "/v1/unlisted/thing", &key).await;
    let got = scrape(&gw);
    let routes: BTreeSet<String> = got
        .keys()
        .filter(|(n, _)| n == "layers_gateway_requests_total")
        .filter_map(|(_, l)| l.get("route").cloned())
        .collect();
    for want in ["bad_path", "not_found", "/v1/*"] {
        assert!(
            routes.contains(want),
            "no requests_total{{route=\"{want}\"}}: {routes:?}"
        );
    }
    assert_eq!(
        got.get(&series(
            "requests_total",
            &[
                ("route", "bad_path"),
                ("method", "GET"),
                ("status", "400"),
                ("code", "BAD_REQUEST")
            ]
        )),
        Some(&1.0)
    );
}

/// README "Traffic shaping": "Every partner response carries
/// `X-RateLimit-Endpoint-Class`" (and DESIGN.md section 1). Refusals made
/// before routing or authentication are partner responses too.
#[tokio::test(start_paused = true)]
async fn refusals_before_authentication_carry_the_endpoint_class() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, _) = first_container(&sim);
    let key = admin_key();
    let many: Vec<(String, String)> = (0..70).map(|i| (format!("x-h{i}"), "v".to_owned())).collect();
    let mut many_refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    many_refs.push(("x-api-key", key.as_str()));
    let cases: Vec<(String, Reply)> = vec![
        (
            "bad path".into(),
            call_get(&gw, &format!("/v1/content/{id}/..%2f"), &key).await,
        ),
        ("outside /v1".into(), call_get(&gw, "/nope", &key).await),
        (
            "no key".into(),
            call(
                &gw,
                Method::GET,
                &content_path(&id.to_string()),
                &[],
                Bytes::new(),
            )
            .await,
        ),
        (
            "too many headers".into(),
            call(
                &gw,
                Method::GET,
                &content_path(&id.to_string()),
                &many_refs,
                Bytes::new(),
            )
            .await,
        ),
    ];
    for (what, r) in &cases {
        assert!(r.status.is_client_error(), "{what}: {}", r.status);
        assert_eq!(
            r.header("x-ratelimit-endpoint-class"),
            Some("read-light"),
            "{what}: {:?}",
            r.headers
        );
    }
}

/// README "Access log": "scope refusals (403, which spend no rate budget)";
/// "A refusal by either limit spends neither budget".
#[tokio::test(start_paused = true)]
async fn scope_refusals_spend_no_read_budget() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, _) = first_container(&sim);
    let key = no_scope_key();
    for _ in 0..5 {
        call_get(&gw, &content_path(&id.to_string()), &key)
            .await
            .assert_error(403, "FORBIDDEN_SCOPE");
    }
    let r = call_get(&gw, "/v1/whoami", &key).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let limit: u64 = r.header("x-ratelimit-limit").unwrap().parse().unwrap();
    let remaining: u64 = r.header("x-ratelimit-remaining").unwrap().parse().unwrap();
    assert_eq!(remaining, limit - 1, "the 403s spent read-light budget");
}

/// DESIGN.md section 1 and docs/metrics.md "Correlation": a well-formed
/// incoming id (`req_` + 1-96 of `[A-Za-z0-9_-]`, or a UUID) is kept,
/// anything else replaced by `req_<ULID>`; the envelope carries the same id.
#[tokio::test(start_paused = true)]
async fn request_ids_are_kept_up_to_96_characters_and_replaced_past_them() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let key = admin_key();
    let ok96 = format!("req_{}", "a_-Z9".repeat(20).chars().take(96).collect::<String>());
    let bad97 = format!("req_{}", "a".repeat(97));
    let uuid = "0B8F5A3E-6A63-4C5E-9D36-1F2A3B4C5D6E";
    for (sent, kept) in [
        (ok96.as_str(), true),
        (bad97.as_str(), false),
        (uuid, true),
        ("req_", false),
        ("req_a.b", false),
    ] {
        for k in [key.as_str(), "lp_test_nope"] {
            let r = call(
                &gw,
                Method::GET,
                "/v1/whoami",
                &[("x-api-key", k), ("x-request-id", sent)],
                Bytes::new(),
            )
            .await;
            let got = r.header("x-request-id").unwrap_or("").to_owned();
            if kept {
                assert_eq!(got, sent, "well-formed id {sent:?} replaced");
            } else {
                assert!(
                    got != sent && got.starts_with("req_") && got.len() == 30,
                    "{sent:?} -> {got:?}"
                );
            }
            if r.status == 401 {
                assert_eq!(r.json()["error"]["requestId"], got.as_str());
            }
        }
    }
}

/// README "Errors": `METHOD_NOT_ALLOWED` 405 for "a wrong method on the
/// webhook or admin paths", in the envelope, `no-store`, with a request id.
#[tokio::test(start_paused = true)]
async fn a_wrong_method_on_the_webhook_or_admin_paths_is_a_405_envelope() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let r = call(&gw, Method::GET, "/webhooks/layers", &[], Bytes::new()).await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for (m, p) in [
        (Method::GET, "/admin/purge"),
        (Method::DELETE, "/admin/reload"),
        (Method::POST, "/admin/cluster"),
        (
            Method::PUT,
            "/admin/containers/cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e",
        ),
    ] {
        let req = Request::builder()
            .method(m.clone())
            .uri(p)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = layers_gateway::admin::handle(&gw, req).await;
        let (parts, body) = resp.into_parts();
        let r = Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        };
        r.assert_error(405, "METHOD_NOT_ALLOWED");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{m} {p}");
    }
}

/// docs/limits.md line 37 and README "Errors": more than
/// `server.max_headers` (64) headers, or more than `server.max_header_bytes`
/// (16 KiB) of them, is 431 `HEADERS_TOO_LARGE` in the envelope; at the
/// limit a request is served.
#[tokio::test(start_paused = true)]
async fn header_count_and_size_limits_answer_431_in_the_envelope() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let key = admin_key();
    let extra =
        |n: usize| -> Vec<(String, String)> { (0..n).map(|i| (format!("x-h{i}"), "v".into())).collect() };
    let send = |hs: Vec<(String, String)>| {
        let gw = gw.clone();
        let key = key.clone();
        async move {
            let mut refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            refs.push(("x-api-key", key.as_str()));
            call(&gw, Method::GET, "/v1/whoami", &refs, Bytes::new()).await
        }
    };
    assert_eq!(
        send(extra(63)).await.status,
        200,
        "64 headers are within the limit"
    );
    send(extra(64)).await.assert_error(431, "HEADERS_TOO_LARGE");
    let big = vec![
        ("x-big-1".to_owned(), "a".repeat(9000)),
        ("x-big-2".to_owned(), "b".repeat(9000)),
    ];
    send(big).await.assert_error(431, "HEADERS_TOO_LARGE");
    assert_eq!(send(extra(1)).await.status, 200, "the gateway keeps serving");
}

/// README "Validators": "`If-Modified-Since` is ignored: the origin gives
/// no `Last-Modified`."
#[tokio::test(start_paused = true)]
async fn if_modified_since_never_turns_a_content_read_into_a_304() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, asset) = first_container(&sim);
    let key = admin_key();
    let p = content_path(&id.to_string());
    let a = content_asset_path(&id.to_string(), &asset);
    let _ = call_get(&gw, &p, &key).await;
    for path in [&p, &a] {
        let r = call(
            &gw,
            Method::GET,
            path,
            &[
                ("x-api-key", key.as_str()),
                ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
            ],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(!r.body.is_empty());
    }
}

/// README "Webhooks": "anything else | 204, ignored (counted), so the
/// origin does not retry" -- whatever its `data` holds.
#[tokio::test(start_paused = true)]
async fn a_signed_webhook_of_an_unknown_type_without_data_is_204() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let body = json!({"id": unique_event_id(), "type": "project.archived"}).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(&gw, Method::POST, "/webhooks/layers", &h, Bytes::from(body)).await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        scrape(&gw).get(&series("webhooks_ignored_total", &[])),
        Some(&1.0)
    );
}
