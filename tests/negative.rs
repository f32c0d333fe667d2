//! Origin protection against unknown ids (issue 14, item 6): the origin's
//! 404 for a container is remembered per (organization, container) for
//! `cache.negative_ttl_secs`, coalesced like a fill and dropped by any
//! invalidation of it; and a per-organization miss budget keeps one
//! organization's random-id flood from taking the origin from the others.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::service::Gateway;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::scripted::{Answer, Scripted, ScriptedUpstream};
use support::*;

const ID: &str = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";

fn gateway(origin: &Arc<Scripted>, extra: &str) -> Gateway {
    gateway_with(origin, "", extra)
}

fn gateway_with(origin: &Arc<Scripted>, origin_extra: &str, extra: &str) -> Gateway {
    let cfg = test_config_with("http://127.0.0.1:1", origin_extra, extra);
    Gateway::new(cfg, demo_keys(), Arc::new(ScriptedUpstream(origin.clone())))
}

fn path() -> String {
    format!("/v1/content/{ID}")
}

fn not_found() -> Answer {
    Answer::Json(
        404,
        json!({"error": {"code": "NOT_FOUND", "message": "Container not found.", "requestId": "req_origin"}}),
    )
}

fn found() -> Answer {
    Answer::Json(
        200,
        json!({"id": ID, "caption": "new", "assets": [{"assetId": "a1", "url": "https://cdn.example/a1.png"}]}),
    )
}

#[tokio::test(start_paused = true)]
async fn two_hundred_reads_of_one_unknown_id_make_one_origin_request_per_negative_ttl() {
    let origin = Arc::new(Scripted::default());
    origin.set(Method::GET, &path(), not_found());
    let gw = gateway(&origin, "[cache]\nnegative_ttl_secs = 5\n");
    // Half at once (one flight), half one after another (remembered).
    let reads: Vec<_> = (0..100)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { call_get(&gw, &path(), &admin_key()).await })
        })
        .collect();
    for r in reads {
        let r = r.await.unwrap();
        r.assert_error(404, "NOT_FOUND");
        assert_ne!(
            r.json()["error"]["requestId"],
            "req_origin",
            "our request id, not the origin's"
        );
    }
    for _ in 0..100 {
        call_get(&gw, &path(), &admin_key())
            .await
            .assert_error(404, "NOT_FOUND");
    }
    assert_eq!(origin.count(Method::GET, &path()), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    call_get(&gw, &path(), &admin_key())
        .await
        .assert_error(404, "NOT_FOUND");
    assert_eq!(origin.count(Method::GET, &path()), 2, "asked again after the TTL");
}

#[tokio::test(start_paused = true)]
async fn a_generated_event_makes_a_new_container_visible_at_once() {
    let origin = Arc::new(Scripted::default());
    origin.set(Method::GET, &path(), not_found());
    let gw = gateway(&origin, "[cache]\nnegative_ttl_secs = 60\n");
    call_get(&gw, &path(), &admin_key())
        .await
        .assert_error(404, "NOT_FOUND");
    origin.set(Method::GET, &path(), found());
    call_get(&gw, &path(), &admin_key())
        .await
        .assert_error(404, "NOT_FOUND");
    let body = json!({"id": "evt_gen1", "type": "content.generated", "data": {"id": ID, "assets": ["a1"]}})
        .to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(&gw, Method::POST, "/webhooks/layers", &h, Bytes::from(body)).await;
    assert_eq!(r.status, 200);
    let r = call_get(&gw, &path(), &admin_key()).await;
    assert_eq!(r.status, 200, "the generated container is not hidden");
}

#[tokio::test(start_paused = true)]
async fn negative_entries_are_per_organization() {
    let origin = Arc::new(Scripted::default());
    origin.set(Method::GET, &path(), not_found());
    let gw = gateway(&origin, "[cache]\nnegative_ttl_secs = 60\n");
    call_get(&gw, &path(), &admin_key())
        .await
        .assert_error(404, "NOT_FOUND");
    origin.set(Method::GET, &path(), found());
    // Another organization's 404 says nothing about what this one may see.
    let r = call_get(&gw, &path(), &org_b_key()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(start_paused = true)]
async fn past_its_miss_budget_an_organization_gets_429_and_its_hits_and_other_orgs_do_not() {
    let origin = Arc::new(Scripted::default());
    origin.set(Method::GET, &path(), found());
    let gw = gateway_with(&origin, "miss_budget_per_org_per_sec = 5", "");
    // Warm one hit for org A first.
    assert_eq!(call_get(&gw, &path(), &admin_key()).await.status, 200);
    let mut limited = 0;
    for i in 0..40u32 {
        let p = format!("/v1/content/cnt_00000000-0000-4000-8000-{i:012}");
        let r = call_get(&gw, &p, &admin_key()).await;
        if r.status == 429 {
            r.assert_error(429, "RATE_LIMITED");
            assert!(r.header("retry-after").is_some());
            limited += 1;
        }
    }
    assert!(
        limited >= 25,
        "the budget (10 at once) was enforced: {limited} limited"
    );
    let hit = call_get(&gw, &path(), &admin_key()).await;
    assert_eq!(hit.x_cache(), Some("HIT"), "hits are unaffected");
    let other = "/v1/content/cnt_00000000-0000-4000-8000-999999999999";
    assert_ne!(
        call_get(&gw, other, &org_b_key()).await.status,
        429,
        "another organization has its own budget"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let p = "/v1/content/cnt_00000000-0000-4000-8000-000000000001";
    assert_ne!(call_get(&gw, p, &admin_key()).await.status, 429, "refilled");
}

/// The origin's 404 envelope as it sent it (members the gateway does not
/// know included), with only `requestId` replaced: on the fill that
/// remembers it and on each later read it answers, every time with that
/// read's own id (promise 4).
#[tokio::test(start_paused = true)]
async fn a_remembered_origin_404_is_the_origins_envelope_with_each_reads_request_id() {
    const ENVELOPE: &str = r#"{"error":{"code":"NOT_FOUND", "message":"Container not found.","requestId":"req_origin","docUrl":"https://docs.example/e#404","details":{"requestId":"req_inner","n":1.10}}}"#;
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Raw(404, "application/json", Bytes::from_static(ENVELOPE.as_bytes())),
    );
    let gw = gateway(&origin, "[cache]\nnegative_ttl_secs = 5\n");
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = call_get(&gw, &path(), &admin_key()).await;
        r.assert_error(404, "NOT_FOUND");
        let rid = r.header("x-request-id").expect("x-request-id").to_owned();
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            ENVELOPE.replace(
                "\"requestId\":\"req_origin\"",
                &format!("\"requestId\":\"{rid}\"")
            ),
            "read {n}: the origin's bytes, this read's id"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.header("x-ratelimit-endpoint-class").is_some());
        ids.push(rid);
    }
    assert_eq!(origin.count(Method::GET, &path()), 1, "remembered");
    ids.dedup();
    assert_eq!(ids.len(), 3, "each read has its own id");
}

/// Coalesced waiters of one fill the origin answers with its 5xx envelope
/// each get that envelope with their own request id; nothing is kept.
#[tokio::test(start_paused = true)]
async fn coalesced_waiters_of_a_failing_fill_each_get_their_own_request_id() {
    let origin = Arc::new(Scripted::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    let envelope = Bytes::from_static(
        br#"{"error":{"code":"KILL_SWITCH","message":"Paused.","requestId":"req_origin"}}"#,
    );
    origin.set(
        Method::GET,
        &path(),
        Answer::Held(
            gate.clone(),
            Box::new(Answer::Raw(503, "application/json", envelope.clone())),
        ),
    );
    let gw = gateway(&origin, "[cache]\nnegative_ttl_secs = 5\n");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { call_get(&gw, &path(), &admin_key()).await })
        })
        .collect();
    let mut spins = 0;
    while origin.count(Method::GET, &path()) == 0 {
        tokio::task::yield_now().await;
        spins += 1;
        assert!(spins < 100_000, "no fill reached the origin");
    }
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let mut ids = Vec::new();
    for r in readers {
        let r = r.await.unwrap();
        r.assert_error(503, "KILL_SWITCH");
        let rid = r.header("x-request-id").unwrap().to_owned();
        assert_eq!(r.json()["error"]["requestId"], rid.as_str());
        ids.push(rid);
    }
    assert_eq!(origin.count(Method::GET, &path()), 1, "one fill");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    // A 5xx is not remembered: the next read asks the origin again.
    origin.set(
        Method::GET,
        &path(),
        Answer::Raw(503, "application/json", envelope),
    );
    call_get(&gw, &path(), &admin_key())
        .await
        .assert_error(503, "KILL_SWITCH");
    assert_eq!(origin.count(Method::GET, &path()), 2);
}
