//! Promise 1 on the paths the first checker never walked (issue 13): each
//! test reproduces one defect found by review, against a scripted origin
//! that answers exactly what the test says (a lagging replica, a body that
//! fails after a 2xx head, a 200 that is not a container), in-process and
//! under tokio's paused clock.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::cache::SyncGate;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::fence_fixtures::*;
use support::scripted::{Answer, Scripted};
use support::*;

fn urls(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

// Defect 2: query strings, aliases and unsynced instances skipped the fence.

#[tokio::test(start_paused = true)]
async fn a_deleted_container_is_404_on_every_spelling_of_its_routes_behind_a_lagging_origin() {
    let origin = Arc::new(Scripted::default());
    // The origin (a lagging replica) keeps answering the deleted container.
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["a1", "a2"], "v1")),
    );
    origin.set(
        Method::GET,
        &asset_path("a1"),
        Answer::Json(
            200,
            json!({"containerId": ID, "assetId": "a1", "kind": "image", "url": "https://cdn.example/a1.png"}),
        ),
    );
    let gw = gateway(&origin, "");
    assert_eq!(get(&gw, &path()).await.status, 200);
    let r = deliver(
        &gw,
        json!({"id": "evt_del1", "type": "content.deleted", "data": {"id": ID, "assets": ["a1", "a2"]}}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let bare = &ID[4..];
    for p in [
        path(),
        format!("{}?x=1", path()),
        format!("{}/", path()),
        format!("/v1/content//{ID}"),
        format!("/v1/Content/{bare}"),
        format!("/v1/content/%63nt_{bare}"),
        asset_path("a1"),
        format!("{}?x=1", asset_path("a1")),
        format!("{}/", asset_path("a1")),
    ] {
        let r = get(&gw, &p).await;
        assert_eq!(r.status, 404, "GET {p}: {}", urls(&r));
        let r = call(
            &gw,
            Method::HEAD,
            &p,
            &[("x-api-key", &admin_key())],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 404, "HEAD {p}");
    }
}

#[tokio::test(start_paused = true)]
async fn revoked_assets_never_resolve_through_a_query_string_or_alias() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["old-1", "old-2"], "v1")),
    );
    origin.set(
        Method::GET,
        &format!("{}/", path()),
        Answer::Json(200, container(&["old-1", "old-2"], "v1")),
    );
    origin.set(
        Method::GET,
        &asset_path("old-1"),
        Answer::Json(
            200,
            json!({"containerId": ID, "assetId": "old-1", "url": "https://cdn.example/old-1.png"}),
        ),
    );
    let gw = gateway(&origin, "");
    // A regenerate the origin's replica has not caught up with.
    let r = deliver(&gw, json!({"id": "evt_regen1", "type": "content.regenerated", "data": {"id": ID, "previousAssetIds": ["old-1"], "assets": [{"assetId": "new-1"}]}}), None).await;
    assert_eq!(r.status, 200);
    for p in [
        format!("{}?v=2", asset_path("old-1")),
        format!("{}/", asset_path("old-1")),
    ] {
        assert_eq!(get(&gw, &p).await.status, 404, "{p}");
    }
    for p in [format!("{}?x=1", path()), format!("{}/", path())] {
        let r = get(&gw, &p).await;
        assert_eq!(r.status, 200, "{p}: {}", urls(&r));
        let body = urls(&r);
        assert!(!body.contains("old-1"), "{p}: a revoked asset listed: {body}");
        assert!(body.contains("old-2"), "{p}: other assets kept: {body}");
    }
    assert!(
        origin.count(Method::GET, &asset_path("old-1")) == 0,
        "a revoked asset is answered without the origin"
    );
}

struct Gate(AtomicBool);

impl SyncGate for Gate {
    fn is_synced(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn an_unsynced_instance_reads_through_the_fence_and_never_from_cache() {
    let origin = Arc::new(Scripted::default());
    origin.set(Method::GET, &path(), Answer::Json(200, container(&["a1"], "v1")));
    let gw = gateway(&origin, "[cache]\nttl_secs = 10\nstale_if_error_secs = 600\n");
    let gate = Arc::new(Gate(AtomicBool::new(true)));
    gw.state().cache.set_sync_gate(gate.clone());
    assert_eq!(get(&gw, &path()).await.status, 200);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    let r = deliver(
        &gw,
        json!({"id": "evt_del2", "type": "content.deleted", "data": {"id": ID, "assets": ["a1"]}}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    gate.0.store(false, Ordering::SeqCst);
    assert_eq!(
        get(&gw, &path()).await.status,
        404,
        "the tombstone holds while unsynced"
    );
}

// Defect 3: write-through lost when the body fails or the caller leaves.

#[tokio::test(start_paused = true)]
async fn a_regenerate_whose_answer_body_fails_still_invalidates() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["old-1"], "v1")),
    );
    let gw = gateway(&origin, "");
    assert_eq!(get(&gw, &path()).await.status, 200);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    let regen = format!("{}/regenerate", path());
    origin.set(Method::POST, &regen, Answer::FailingBody(200));
    let r = call(
        &gw,
        Method::POST,
        &regen,
        &[("x-api-key", &admin_key())],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert!(
        r.status.is_server_error(),
        "the caller hears the failure: {}",
        r.status
    );
    // The origin committed; a lagging replica still answers the old body.
    let r = get(&gw, &path()).await;
    assert_ne!(r.x_cache(), Some("HIT"), "the old entry is gone");
    assert_eq!(
        get(&gw, &asset_path("old-1")).await.status,
        404,
        "its assets are revoked"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_disconnects_after_the_origin_committed_still_invalidates() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["old-1"], "v1")),
    );
    let gw = gateway(&origin, "");
    assert_eq!(get(&gw, &path()).await.status, 200);
    let gate = Arc::new(tokio::sync::Notify::new());
    let del = path();
    origin.set(
        Method::DELETE,
        &del,
        Answer::Held(gate.clone(), Box::new(Answer::Json(204, Value::Null))),
    );
    let caller = {
        let gw = gw.clone();
        tokio::spawn(async move {
            call(
                &gw,
                Method::DELETE,
                &path(),
                &[("x-api-key", &admin_key())],
                Bytes::new(),
            )
            .await
        })
    };
    while origin.count(Method::DELETE, &del) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    caller.abort();
    let _ = caller.await;
    gate.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = origin.count(Method::GET, &path());
    assert_eq!(get(&gw, &path()).await.status, 404, "the delete was applied");
    assert_eq!(
        origin.count(Method::GET, &path()),
        before,
        "tombstoned: no origin call"
    );
}

// Defect 4: a late or replayed regenerate revoked the current assets.

#[tokio::test(start_paused = true)]
async fn a_late_regenerate_event_never_revokes_the_current_assets() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["v2-1"], "v2")),
    );
    let gw = gateway(&origin, "");
    let r = deliver(&gw, json!({"id": "evt_r2", "type": "content.regenerated", "data": {"id": ID, "previousAssetIds": ["v1-1"], "assets": [{"assetId": "v2-1"}]}}), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&gw, &path()).await.status, 200);
    // The older regenerate (v0 -> v1) arrives late.
    let r = deliver(&gw, json!({"id": "evt_r1", "type": "content.regenerated", "data": {"id": ID, "previousAssetIds": ["v0-1"], "assets": [{"assetId": "v1-1"}]}}), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&gw, &asset_path("v2-1")).await.status,
        200,
        "current asset still resolves"
    );
    assert_eq!(get(&gw, &path()).await.status, 200);
    // An undated event holds the container uncached for a while
    // (`cache.undated_hold_ms`); after that it is cached again.
    tokio::time::sleep(layers_gateway::config::DEFAULT_UNDATED_HOLD).await;
    assert_eq!(get(&gw, &path()).await.status, 200);
    assert_eq!(
        get(&gw, &path()).await.x_cache(),
        Some("HIT"),
        "and is cached again"
    );
    assert_eq!(get(&gw, &asset_path("v1-1")).await.status, 404);
}

// Defect 7: expiresAt honoured to the second, not the instant.

#[tokio::test(start_paused = true)]
async fn an_entry_is_never_served_past_its_expires_at_millisecond() {
    let origin = Arc::new(Scripted::default());
    let mut body = container(&["a1"], "v1");
    body["assets"][0]["expiresAt"] = json!(rfc3339_ms(T0_MS + 1_500));
    origin.set(Method::GET, &path(), Answer::Json(200, body));
    let gw = gateway(&origin, "[cache]\nclock_skew_ms = 0\n");
    assert_eq!(get(&gw, &path()).await.status, 200);
    tokio::time::advance(Duration::from_millis(1_400)).await;
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    tokio::time::advance(Duration::from_millis(150)).await;
    let r = get(&gw, &path()).await;
    assert_ne!(r.x_cache(), Some("HIT"), "50 ms past expiresAt");
}

#[tokio::test(start_paused = true)]
async fn the_clock_skew_margin_stops_serving_early() {
    let origin = Arc::new(Scripted::default());
    let mut body = container(&["a1"], "v1");
    body["assets"][0]["expiresAt"] = json!(rfc3339_ms(T0_MS + 10_000));
    origin.set(Method::GET, &path(), Answer::Json(200, body));
    let gw = gateway(&origin, "[cache]\nclock_skew_ms = 2000\n");
    assert_eq!(get(&gw, &path()).await.status, 200);
    tokio::time::advance(Duration::from_millis(7_900)).await;
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_ne!(get(&gw, &path()).await.x_cache(), Some("HIT"));
}

// Defect 8: a 200 that is not the container was cached.

#[tokio::test(start_paused = true)]
async fn a_200_that_is_not_the_container_is_502_and_never_cached() {
    for wrong in [
        json!({"hello": "world"}),
        json!({"id": OTHER_ID, "assets": []}),
        json!({"id": ID}),
        json!({"id": ID, "assets": [{"url": "https://cdn.example/x.png"}]}),
        json!([1, 2]),
    ] {
        let origin = Arc::new(Scripted::default());
        origin.set(Method::GET, &path(), Answer::Json(200, wrong.clone()));
        let gw = gateway(&origin, "");
        get(&gw, &path()).await.assert_error(502, "UPSTREAM_ERROR");
        get(&gw, &path()).await.assert_error(502, "UPSTREAM_ERROR");
        assert_eq!(origin.count(Method::GET, &path()), 2, "not cached: {wrong}");
        assert!(gw.state().cache.counters.invalid_bodies.load(Ordering::Relaxed) >= 2);
    }
}

// Defect 9: dedupe trusted the unsigned X-Layers-Event-Id header.

#[tokio::test(start_paused = true)]
async fn a_forged_event_id_header_cannot_suppress_a_later_event() {
    let origin = Arc::new(Scripted::default());
    origin.set(Method::GET, &path(), Answer::Json(200, container(&["a1"], "v1")));
    let gw = gateway(&origin, "");
    // A captured, correctly signed update, replayed with the header of the
    // delete the attacker expects next.
    let r = deliver(
        &gw,
        json!({"id": "evt_update1", "type": "content.updated", "data": {"id": ID}}),
        Some("evt_delete1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&gw, &path()).await.status, 200);
    let r = deliver(
        &gw,
        json!({"id": "evt_delete1", "type": "content.deleted", "data": {"id": ID, "assets": ["a1"]}}),
        Some("evt_delete1"),
    )
    .await;
    assert_eq!(r.json()["status"], "applied", "{}", urls(&r));
    assert_eq!(get(&gw, &path()).await.status, 404);
}

// Lagging replica after content.updated: served, not cached, asked again.

#[tokio::test(start_paused = true)]
async fn a_fill_older_than_a_reported_change_is_not_cached() {
    let origin = Arc::new(Scripted::default());
    let mut old = container(&["a1"], "old caption");
    old["updatedAt"] = json!(rfc3339_ms(T0_MS - 60_000));
    origin.set(Method::GET, &path(), Answer::Json(200, old.clone()));
    let gw = gateway(&origin, "");
    let r = deliver(&gw, json!({"id": "evt_upd", "type": "content.updated", "data": {"id": ID, "updatedAt": rfc3339_ms(T0_MS - 1_000)}}), None).await;
    assert_eq!(r.status, 200);
    let before = origin.count(Method::GET, &path());
    assert_eq!(get(&gw, &path()).await.status, 200);
    assert_eq!(
        origin.count(Method::GET, &path()) - before,
        2,
        "asked once more after the lag delay"
    );
    assert_ne!(
        get(&gw, &path()).await.x_cache(),
        Some("HIT"),
        "an old body is not cached"
    );
    let mut fresh = old;
    fresh["caption"] = json!("new caption");
    fresh["updatedAt"] = json!(rfc3339_ms(T0_MS - 1_000));
    origin.set(Method::GET, &path(), Answer::Json(200, fresh));
    assert_eq!(get(&gw, &path()).await.status, 200);
    let r = get(&gw, &path()).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    assert!(urls(&r).contains("new caption"));
}

// An aliased mutation is still a write-through.

#[tokio::test(start_paused = true)]
async fn a_regenerate_through_an_alias_invalidates_like_the_canonical_route() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["old-1"], "v1")),
    );
    let gw = gateway(&origin, "");
    assert_eq!(get(&gw, &path()).await.status, 200);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    let alias = format!("/v1/Content/{ID}/regenerate/");
    origin.set(
        Method::POST,
        &alias,
        Answer::Json(200, container(&["new-1"], "v2")),
    );
    let r = call(
        &gw,
        Method::POST,
        &alias,
        &[("x-api-key", &admin_key())],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", urls(&r));
    // The replica still lags: the old asset must not come back.
    assert_eq!(get(&gw, &asset_path("old-1")).await.status, 404);
    let r = get(&gw, &path()).await;
    assert!(!urls(&r).contains("old-1"), "{}", urls(&r));
}

#[tokio::test(start_paused = true)]
async fn after_a_regenerate_through_the_gateway_the_new_container_is_cached() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, _) = first_container(&sim);
    let p = format!("/v1/content/{id}");
    assert_eq!(get(&gw, &p).await.status, 200);
    let regen = format!("{p}/regenerate");
    let r = call(
        &gw,
        Method::POST,
        &regen,
        &[("x-api-key", &admin_key())],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", urls(&r));
    let a = get(&gw, &p).await;
    assert_eq!(a.status, 200);
    let b = get(&gw, &p).await;
    let c = &gw.state().cache.counters;
    assert_eq!(
        b.x_cache(),
        Some("HIT"),
        "lagging {} generation {} revoked {} answer {} read {}",
        c.discarded_lagging.load(Ordering::Relaxed),
        c.discarded_generation.load(Ordering::Relaxed),
        c.discarded_revoked.load(Ordering::Relaxed),
        urls(&r),
        urls(&a)
    );
}

#[tokio::test(start_paused = true)]
async fn behind_a_replica_that_lags_less_than_the_retry_delay_reads_after_a_regenerate_succeed() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let (id, _) = first_container(&sim);
    sim.set_replica_lag(id, Some(Duration::from_millis(40)));
    let p = format!("/v1/content/{id}");
    assert_eq!(get(&gw, &p).await.status, 200);
    for (method, suffix) in [(Method::POST, "/regenerate"), (Method::PATCH, "")] {
        let r = call(
            &gw,
            method,
            &format!("{p}{suffix}"),
            &[("x-api-key", &admin_key()), ("content-type", "application/json")],
            Bytes::from_static(br#"{"caption":"x"}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", urls(&r));
        for q in ["", "?x=1"] {
            let r = get(&gw, &format!("{p}{q}")).await;
            assert_eq!(r.status, 200, "{suffix} then GET {q}: {}", urls(&r));
        }
    }
}
