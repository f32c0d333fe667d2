//! Black-box round 87: revoked URLs reached partners on two paths the
//! fence did not judge (promise 1, no revoked URL on any path).
//!
//! - An asset whose id no webhook can revoke (over 128 bytes, or with a
//!   control character) was served; a regenerate naming it answered
//!   `applied` and revoked nothing, so a lagging replica's body kept it,
//!   cached and then stale-if-error.
//! - A query-string read whose answer has another shape (no top-level
//!   `assets`, or assets without an `assetId`) was passed on with revoked
//!   URLs in it, where a fill refuses such a body.

mod support;

use http::Method;
use serde_json::json;
use std::sync::Arc;
use support::fence_fixtures::*;
use support::scripted::{Answer, Scripted};
use support::*;

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(start_paused = true)]
async fn an_asset_no_webhook_can_revoke_is_never_served() {
    let long = format!("clip-{}", "x".repeat(141));
    let control = "ctl\u{1}x";
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["slide-1", &long, control], "v1")),
    );
    let gw = gateway(&origin, "");
    let long_url = format!("https://cdn.example/{long}.png");
    let control_url = "cdn.example/ctl";

    // The query read first: before any fill, this container has no fence.
    for p in [format!("{}?x=1", path()), path()] {
        let r = get(&gw, &p).await;
        assert_eq!(r.status, 200, "{p}: {}", text(&r));
        let body = text(&r);
        assert!(body.contains("slide-1"), "{p}: {body}");
        assert!(
            !body.contains(&long_url),
            "{p}: an unrevocable id was served: {body}"
        );
        assert!(!body.contains(control_url), "{p}: {body}");
    }

    // The origin regenerates: the webhook names the ids as revoked, and a
    // lagging replica still lists them. Nothing of theirs is served.
    let r = deliver(
        &gw,
        json!({"id": unique_event_id(), "type": "content.regenerated", "data": {"id": ID,
            "previousAssetIds": [long, control], "assets": [{"assetId": "slide-1"}]}}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    for _ in 0..3 {
        for p in [path(), format!("{}?x=1", path())] {
            let r = get(&gw, &p).await;
            assert_eq!(r.status, 200, "{p}: {}", text(&r));
            assert!(!text(&r).contains(&long_url), "{p}: {}", text(&r));
            assert!(!text(&r).contains(control_url), "{p}: {}", text(&r));
        }
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
    }
}

/// Round 90: before any fill (no fence), a query read passed an asset
/// whose `assetId` is not a string.
#[tokio::test(start_paused = true)]
async fn an_asset_whose_id_is_not_a_string_is_never_served() {
    let origin = Arc::new(Scripted::default());
    let mut body = container(&["slide-1"], "v1");
    body["assets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"assetId": 12345, "kind": "image", "url": "https://cdn.example/numeric.png"}));
    origin.set(Method::GET, &path(), Answer::Json(200, body));
    let gw = gateway(&origin, "");
    let r = get(&gw, &format!("{}?q=1", path())).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(text(&r).contains("slide-1"));
    assert!(!text(&r).contains("numeric.png"), "{}", text(&r));
}

#[tokio::test(start_paused = true)]
async fn a_query_read_whose_answer_the_fence_cannot_judge_is_not_passed_on() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, container(&["slide-1", "slide-2"], "v1")),
    );
    let gw = gateway(&origin, "");
    assert_eq!(get(&gw, &path()).await.status, 200);
    let r = deliver(
        &gw,
        json!({"id": unique_event_id(), "type": "content.regenerated", "data": {"id": ID,
            "updatedAt": rfc3339_ms(T0_MS + 1_000),
            "previousAssetIds": ["slide-1", "slide-2"], "assets": [{"assetId": "slide-3"}]}}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));

    // A lagging replica answers the old version in shapes a query
    // parameter might select: assets without their ids, or the container
    // inside an envelope.
    let old = container(&["slide-1", "slide-2"], "v1");
    let no_ids = json!({"id": ID, "assets": [{"url": "https://cdn.example/slide-1.png"}]});
    let envelope = json!({"data": old});
    for (query, answer) in [("fields=url", no_ids), ("envelope=1", envelope)] {
        origin.set(Method::GET, &path(), Answer::Json(200, answer));
        let r = get(&gw, &format!("{}?{query}", path())).await;
        assert!(
            !text(&r).contains("cdn.example/slide-1"),
            "?{query}: a revoked URL was passed on: {} {}",
            r.status,
            text(&r)
        );
        assert_eq!(r.status, 502, "?{query}: {}", text(&r));
    }
}
