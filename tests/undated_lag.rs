//! Invalidations that tell the gateway little (no `updatedAt`, no asset
//! ids) behind a lagging origin replica: what a black-box attacker's own
//! origin found after round 31. Promise 1: once an invalidation is
//! applied, the invalidated version is never cached past it, and a change
//! that revoked assets leaves a lagging body's ids out.

mod support;

use bytes::Bytes;
use http::Method;
use std::time::Duration;
use support::*;

/// Delivers a signed webhook to the in-process gateway; asserts it applied.
async fn deliver(gw: &layers_gateway::service::Gateway, n: u32, ty: &str, data: serde_json::Value) {
    let body =
        serde_json::json!({ "id": format!("evt_01UNDATED{n:016}"), "type": ty, "data": data }).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(gw, Method::POST, "/webhooks/layers", &h, Bytes::from(body)).await;
    assert_eq!(r.body.as_ref(), br#"{"status":"applied"}"#);
}

fn asset_ids(r: &Reply) -> Vec<String> {
    r.json()["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["assetId"].as_str().unwrap().to_string())
        .collect()
}

/// DEFECT (black-box round 32, D2): the container was cached; the origin
/// changed its caption and a replica kept the old version for a second; a
/// `content.updated` webhook without `updatedAt` was applied. The first
/// read during the lag got the old version (allowed: the change cannot be
/// dated), but that version was then cached and served as a HIT for the
/// whole TTL after the origin had caught up.
#[tokio::test(start_paused = true)]
async fn an_undated_change_never_lets_a_lagging_replica_s_old_version_be_cached() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    let old = call_get(&gw, &path, &key).await.json()["caption"].clone();
    sim.set_replica_lag(id, Some(Duration::from_millis(1000)));
    assert!(sim.update_caption(id, "the new caption"));
    deliver(
        &gw,
        1,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    // During the lag: the replica's answer, whatever it is.
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["caption"], old, "the replica is still behind");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        let r = call_get(&gw, &path, &key).await;
        assert_eq!(
            r.json()["caption"],
            "the new caption",
            "the origin caught up; the old version was cached past the invalidation ({:?})",
            r.x_cache()
        );
    }
}

/// The same for an undated `content.regenerated` naming no ids: once the
/// replica caught up, the old asset ids are not served from a cached copy.
#[tokio::test(start_paused = true)]
async fn an_undated_regenerate_never_lets_the_old_assets_be_cached() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    call_get(&gw, &path, &key).await;
    sim.set_replica_lag(id, Some(Duration::from_millis(1000)));
    let regen = sim.regenerate(id).unwrap();
    deliver(
        &gw,
        2,
        "content.regenerated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    call_get(&gw, &path, &key).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(asset_ids(&r), regen.new_asset_ids, "{:?}", r.x_cache());
    for old in &regen.previous_asset_ids {
        let r = call_get(&gw, &format!("{path}/assets/{old}"), &key).await;
        assert_eq!(r.status, 404, "old asset {old} after the origin caught up");
    }
}

/// DEFECT (black-box round 32, D1): a dated `content.regenerated` naming
/// no asset ids, for a container this instance never read, while a
/// replica still answers the old version: the gateway saw the body was
/// older than the change (it asked again) but served it with every old
/// asset id, and the canonical asset route served an old descriptor. The
/// change named no id as current, so every id of an older body is old.
#[tokio::test(start_paused = true)]
async fn a_dated_regenerate_naming_no_ids_leaves_every_id_of_an_older_body_out() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    sim.set_replica_lag(id, Some(Duration::from_millis(1500)));
    let regen = sim.regenerate(id).unwrap();
    let updated_at = sim.container(id).unwrap()["updatedAt"].clone();
    let data = serde_json::json!({ "id": id.to_string(), "updatedAt": updated_at });
    deliver(&gw, 3, "content.regenerated", data).await;
    for p in [path.clone(), format!("{path}?fields=all")] {
        let r = call_get(&gw, &p, &key).await;
        assert_eq!(r.status, 200, "{p}");
        let ids = asset_ids(&r);
        for old in &regen.previous_asset_ids {
            assert!(!ids.contains(old), "{p}: old asset {old} served in {ids:?}");
        }
    }
    for old in &regen.previous_asset_ids {
        for p in [format!("{path}/assets/{old}"), format!("{path}/assets/{old}?x=1")] {
            let r = call_get(&gw, &p, &key).await;
            assert_eq!(r.status, 404, "{p} during the lag");
        }
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(asset_ids(&r), regen.new_asset_ids, "after the origin caught up");
}

/// Attacker review of the rule above: a second dated regenerate naming no
/// ids kept the first one's list as current. The ids the first named (the
/// version the second replaced) passed on a replica still serving it.
#[tokio::test(start_paused = true)]
async fn a_second_dated_regenerate_naming_no_ids_does_not_keep_the_first_ones_list() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    let first = sim.regenerate(id).unwrap();
    let at = sim.container(id).unwrap()["updatedAt"].clone();
    let data = serde_json::json!({ "id": id.to_string(), "updatedAt": at, "assets": first.new_asset_ids });
    deliver(&gw, 5, "content.regenerated", data).await;
    // The second regenerate; a replica keeps serving the first's version.
    sim.set_replica_lag(id, Some(Duration::from_millis(1500)));
    let second = sim.regenerate(id).unwrap();
    let at = sim.container(id).unwrap()["updatedAt"].clone();
    deliver(
        &gw,
        6,
        "content.regenerated",
        serde_json::json!({ "id": id.to_string(), "updatedAt": at }),
    )
    .await;
    for p in [path.clone(), format!("{path}?fields=all")] {
        let r = call_get(&gw, &p, &key).await;
        assert_eq!(r.status, 200, "{p}");
        let ids = asset_ids(&r);
        for old in &first.new_asset_ids {
            assert!(!ids.contains(old), "{p}: replaced asset {old} served in {ids:?}");
        }
    }
    for old in &first.new_asset_ids {
        let r = call_get(&gw, &format!("{path}/assets/{old}"), &key).await;
        assert_eq!(r.status, 404, "replaced asset {old} during the lag");
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(asset_ids(&r), second.new_asset_ids, "after the origin caught up");
}

/// Black-box round 69: two undated changes with no read between them. The
/// hold compared fills with the version this instance had cached (v1), so
/// a replica still serving the first change's version (v2, newer than v1,
/// invalidated by the second change) was cached and served for the TTL.
#[tokio::test(start_paused = true)]
async fn a_version_between_two_undated_changes_is_not_cached() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    call_get(&gw, &path, &key).await;
    assert!(sim.update_caption(id, "v2"));
    deliver(
        &gw,
        7,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    sim.set_replica_lag(id, Some(Duration::from_millis(1500)));
    assert!(sim.update_caption(id, "v3"));
    deliver(
        &gw,
        8,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.json()["caption"], "v2", "the replica is behind");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(
        r.json()["caption"],
        "v3",
        "v2 was cached past the change that replaced it"
    );
}

/// Black-box round 70: the same with the first hold over before the second
/// change (an instance that was not read in between: a cluster peer).
#[tokio::test(start_paused = true)]
async fn a_version_between_two_undated_changes_far_apart_is_not_cached() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    call_get(&gw, &path, &key).await;
    assert!(sim.update_caption(id, "v2"));
    deliver(
        &gw,
        11,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    sim.set_replica_lag(id, Some(Duration::from_millis(1500)));
    assert!(sim.update_caption(id, "v3"));
    deliver(
        &gw,
        12,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.json()["caption"], "v2", "the replica is behind");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(
        r.json()["caption"],
        "v3",
        "v2 was cached past the change that replaced it"
    );
}

/// The same after a dated change: its time is a version this instance knows
/// of, though it never read it.
#[tokio::test(start_paused = true)]
async fn a_version_reported_by_a_dated_change_is_not_cached_after_an_undated_one() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    call_get(&gw, &path, &key).await;
    assert!(sim.update_caption(id, "v2"));
    let at = sim.container(id).unwrap()["updatedAt"].clone();
    deliver(
        &gw,
        9,
        "content.updated",
        serde_json::json!({ "id": id.to_string(), "updatedAt": at }),
    )
    .await;
    sim.set_replica_lag(id, Some(Duration::from_millis(1500)));
    assert!(sim.update_caption(id, "v3"));
    deliver(
        &gw,
        10,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.json()["caption"], "v2", "the replica is behind");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(
        r.json()["caption"],
        "v3",
        "v2 was cached past the change that replaced it"
    );
}

/// Attacker review, round 3: a dated change arriving late, between two
/// undated ones, counted as "newer learned" though it was older than the
/// first undated change's version, and that version (newer than it) was
/// cached past the second change.
#[tokio::test(start_paused = true)]
async fn a_late_dated_change_between_two_undated_ones_does_not_end_the_hold() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    call_get(&gw, &path, &key).await;
    assert!(sim.update_caption(id, "v1"));
    let v1_at = sim.container(id).unwrap()["updatedAt"].clone();
    assert!(sim.update_caption(id, "x1"));
    deliver(
        &gw,
        13,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    let late = serde_json::json!({ "id": id.to_string(), "updatedAt": v1_at });
    deliver(&gw, 14, "content.updated", late).await;
    sim.set_replica_lag(id, Some(Duration::from_millis(1500)));
    assert!(sim.update_caption(id, "v2"));
    deliver(
        &gw,
        15,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.json()["caption"], "x1", "the replica is behind");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(
        r.json()["caption"],
        "v2",
        "x1 was cached past the change that replaced it"
    );
}

/// The cost side of the rule above: an undated event that arrives after
/// this instance already cached the new version (a webhook slower than a
/// partner's read) holds the container uncached only for
/// `cache.undated_hold_ms`; after that it is cached again.
#[tokio::test(start_paused = true)]
async fn a_late_undated_event_holds_the_container_uncached_only_for_the_window() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\nundated_hold_ms = 3000\n");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    assert!(sim.update_caption(id, "already current"));
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.json()["caption"], "already current");
    deliver(
        &gw,
        4,
        "content.updated",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.json()["caption"], "already current");
    assert_ne!(r.x_cache(), Some("HIT"));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let gets = sim.container_gets();
    call_get(&gw, &path, &key).await;
    let r = call_get(&gw, &path, &key).await;
    assert_eq!(r.x_cache(), Some("HIT"), "cached again after the window");
    assert_eq!(sim.container_gets(), gets + 1);
}
