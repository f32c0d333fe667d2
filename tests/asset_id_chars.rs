//! Asset ids with every character a URL path segment allows (`photo@2x`,
//! `img~1`, `clip+v2`), percent-encoded or not: one canonical id (the
//! decoded one) for the cache, the fence and the origin, so two spellings
//! of one asset share its cache entry and its revocation (DESIGN 1, asset
//! ids are opaque; promise 1, no revoked URL on any path).

mod support;

use http::Method;
use layers_gateway::cache::SyncGate;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::fence_fixtures::*;
use support::scripted::{Answer, Scripted};
use support::*;

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn descriptor(a: &str) -> serde_json::Value {
    json!({"containerId": ID, "assetId": a, "kind": "image", "url": format!("https://cdn.example/{a}.png"), "thumbnailUrl": null})
}

#[tokio::test(start_paused = true)]
async fn two_spellings_of_one_asset_share_its_cache_entry_and_its_revocation() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["photo@2x", "img~1", "slide-1"], "v1")),
    );
    // Were the origin's asset route asked (it must not be, on a fill), it
    // would answer every spelling.
    for seg in ["photo@2x", "photo%402x"] {
        origin.set(
            Method::GET,
            &asset_path(seg),
            Answer::Json(200, descriptor("photo@2x")),
        );
    }
    let gw = gateway(&origin, "");

    let first = get(&gw, &asset_path("photo%402x")).await;
    assert_eq!(first.status, 200, "{}", text(&first));
    assert_eq!(first.json()["assetId"], "photo@2x");
    assert_eq!(first.x_cache(), Some("MISS"));
    for seg in ["photo@2x", "photo%402x", "%70hoto%402x", "photo%402%78"] {
        let r = get(&gw, &asset_path(seg)).await;
        assert_eq!(r.status, 200, "{seg}: {}", text(&r));
        assert_eq!(
            r.x_cache(),
            Some("HIT"),
            "{seg}: one cache entry for every spelling"
        );
        assert_eq!(r.body, first.body, "{seg}");
    }
    let r = get(&gw, &asset_path("img%7E1")).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.x_cache(), Some("HIT"));
    assert_eq!(r.json()["assetId"], "img~1");
    assert_eq!(origin.count(Method::GET, &path()), 1, "one origin request");
    assert_eq!(origin.seen().len(), 1, "only the container: {:?}", origin.seen());

    // The origin regenerates; its replica still lags and lists the old id.
    let r = deliver(
        &gw,
        json!({"id": unique_event_id(), "type": "content.regenerated", "data": {"id": ID, "previousAssetIds": ["photo@2x"], "assets": [{"assetId": "photo@3x"}]}}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    for p in [
        asset_path("photo@2x"),
        asset_path("photo%402x"),
        asset_path("photo%40%32x"),
        asset_path("%70hoto%402x"),
        format!("{}/", asset_path("photo%402x")),
        format!("{}?v=2", asset_path("photo%402x")),
        format!("/v1/content/{ID}//assets/photo%402x"),
    ] {
        let r = get(&gw, &p).await;
        assert_eq!(r.status, 404, "{p}: a revoked asset served: {}", text(&r));
        assert_eq!(r.json()["error"]["code"], "NOT_FOUND", "{p}");
    }
    let r = get(&gw, &path()).await;
    assert_eq!(r.status, 200);
    assert!(
        !text(&r).contains("photo@2x"),
        "a revoked asset listed: {}",
        text(&r)
    );
    let r = get(&gw, &asset_path("img~1")).await;
    assert_eq!(r.status, 200, "other assets stay: {}", text(&r));
}

struct Unsynced(AtomicBool);

impl SyncGate for Unsynced {
    fn is_synced(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Read through to the origin (an instance not caught up with the event
/// stream): the origin is asked for one spelling of the canonical id,
/// whichever one the partner sent.
#[tokio::test(start_paused = true)]
async fn the_origin_is_asked_with_one_canonical_spelling() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["photo@2x", "café"], "v1")),
    );
    origin.set(
        Method::GET,
        &asset_path("photo@2x"),
        Answer::Json(200, descriptor("photo@2x")),
    );
    origin.set(
        Method::GET,
        &asset_path("caf%C3%A9"),
        Answer::Json(200, descriptor("café")),
    );
    let gw = gateway(&origin, "");
    gw.state()
        .cache
        .set_sync_gate(Arc::new(Unsynced(AtomicBool::new(false))));
    for (seg, id) in [
        ("photo@2x", "photo@2x"),
        ("photo%402x", "photo@2x"),
        ("%70hoto%402x", "photo@2x"),
        ("caf%C3%A9", "café"),
        ("caf%c3%a9", "café"),
        ("%63af%c3%A9", "café"),
    ] {
        let r = get(&gw, &asset_path(seg)).await;
        assert_eq!(r.status, 200, "{seg}: {}", text(&r));
        assert_eq!(r.json()["assetId"], id, "{seg}");
    }
    let asked: Vec<String> = origin.seen();
    assert!(
        asked
            .iter()
            .all(|p| [path(), asset_path("photo@2x"), asset_path("caf%C3%A9")].contains(p)),
        "{asked:?}"
    );
    assert_eq!(origin.count(Method::GET, &asset_path("photo@2x")), 3);
    assert_eq!(origin.count(Method::GET, &asset_path("caf%C3%A9")), 3);
}

/// Ids no asset can have keep today's answers, and never reach the origin:
/// separators, path parameters and dot-segments (encoded or not) are 400
/// `BAD_REQUEST` like every non-canonical path; a control character, a
/// space or other ASCII that is no path character, a double encoding, a
/// malformed encoding or invalid UTF-8 is 404.
#[tokio::test(start_paused = true)]
async fn refused_asset_ids_never_reach_the_origin() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["a", "a@b"], "v1")),
    );
    let gw = gateway(&origin, "");
    for (seg, status, code) in [
        ("a%2Fb", 400, "BAD_REQUEST"),
        ("a%2fb", 400, "BAD_REQUEST"),
        ("a%5Cb", 400, "BAD_REQUEST"),
        ("a;b", 400, "BAD_REQUEST"),
        ("a%3Bb", 400, "BAD_REQUEST"),
        ("%2e%2e", 400, "BAD_REQUEST"),
        ("a%00", 404, "NOT_FOUND"),
        ("a%0A", 404, "NOT_FOUND"),
        ("a%7f", 404, "NOT_FOUND"),
        ("a%20b", 404, "NOT_FOUND"),
        ("a%3Fb", 404, "NOT_FOUND"),
        ("a%2540b", 404, "NOT_FOUND"),
        ("a%zz", 404, "NOT_FOUND"),
        ("a%4", 404, "NOT_FOUND"),
        ("a%FF", 404, "NOT_FOUND"),
        ("a%C2%85", 404, "NOT_FOUND"),
    ] {
        let r = get(&gw, &asset_path(seg)).await;
        assert_eq!(r.status, status, "{seg}: {}", text(&r));
        assert_eq!(r.json()["error"]["code"], code, "{seg}");
        assert!(r.json()["error"]["requestId"].is_string(), "{seg}");
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}
