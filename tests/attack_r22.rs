//! Attacker reviews, rounds 22 and 23 (the last three tests): the fence's floor and revoked-id set under
//! sequences of changes (regenerate then caption edit, a DELETE answered
//! with a body, a container larger than a change's current-id bound, an
//! event revoking more ids than the per-container cap). Each test fails on
//! the code as reviewed because of the defect in its doc comment. All run
//! in-process under tokio's paused clock against a scripted origin.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::fence_fixtures::*;
use support::scripted::{Answer, Scripted};
use support::*;

/// Container `ID` with these asset ids, dated `updated_ms`.
fn dated(ids: &[&str], caption: &str, updated_ms: i64) -> Value {
    let mut v = container(ids, caption);
    v["updatedAt"] = Value::from(rfc3339_ms(updated_ms));
    v
}

fn descriptor(a: &str) -> Value {
    json!({"containerId": ID, "assetId": a, "kind": "image", "url": format!("https://cdn.example/{a}.png"), "thumbnailUrl": null})
}

async fn send(gw: &layers_gateway::service::Gateway, m: Method, p: &str, body: &str) -> Reply {
    let key = admin_key();
    call(
        gw,
        m,
        p,
        &[("x-api-key", key.as_str()), ("content-type", "application/json")],
        Bytes::from(body.to_owned()),
    )
    .await
}

fn lists(r: &Reply, a: &str) -> bool {
    r.status == 200
        && r.json()["assets"]
            .as_array()
            .is_some_and(|xs| xs.iter().any(|x| x["assetId"] == a))
}

/// What partners get for the regenerate's old asset `o1` from a lagging
/// replica, after a regenerate through the gateway and (with `edit`) a
/// caption PATCH through the gateway after it: (variant asset read
/// status, container body lists `o1`, canonical asset read status).
async fn old_asset_after_regenerate(edit: bool) -> (u16, bool, u16) {
    let t0 = T0_MS - 60_000; // the version before the regenerate
    let t1 = T0_MS - 2_000; // the regenerate
    let t2 = T0_MS - 1_000; // the caption edit
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "[cache]\nlag_retry_ms = 100\n");
    origin.set(
        Method::POST,
        &format!("{}/regenerate", path()),
        Answer::Json(200, dated(&["n1"], "regenerated", t1)),
    );
    let r = send(&gw, Method::POST, &format!("{}/regenerate", path()), "{}").await;
    assert_eq!(r.status, 200);
    if edit {
        origin.set(
            Method::PATCH,
            &path(),
            Answer::Json(200, dated(&["n1"], "edited", t2)),
        );
        let r = send(&gw, Method::PATCH, &path(), r#"{"caption":"edited"}"#).await;
        assert_eq!(r.status, 200);
    }
    // A replica still behind both changes: the container before the
    // regenerate, and its old asset.
    origin.set(Method::GET, &path(), Answer::Json(200, dated(&["o1"], "old", t0)));
    origin.set(
        Method::GET,
        &asset_path("o1"),
        Answer::Json(200, descriptor("o1")),
    );
    let variant = get(&gw, &format!("{}?v=1", asset_path("o1"))).await;
    let body = get(&gw, &path()).await;
    let canonical = get(&gw, &asset_path("o1")).await;
    (
        variant.status.as_u16(),
        lists(&body, "o1"),
        canonical.status.as_u16(),
    )
}

/// Defect: a later caption (or approval) change forgets the regenerate it
/// follows. `apply_to_fence` (src/cache/invalidate.rs, the `if let
/// Some(at) = inv.changed_at` block at the end) keeps one floor, the newest
/// change; a PATCH dated after the regenerate replaces the regenerate's
/// floor (`revokes_assets: true`, current ids `[n1]`) with one that revokes
/// nothing and names no current ids. From then on a replica still behind
/// the regenerate is treated as "older than a caption change only"
/// (`complete_fill`: `Lagging`, not `LaggingAssets`; `judge_origin`'s
/// `not_current` sees no revoking floor), so the regenerate's old asset id
/// `o1` is served again: in the container body, on the canonical asset
/// route and on a query-string asset read. Without the PATCH the same reads
/// all refuse `o1` (checked first, as the control).
///
/// Expected (README "What the gateway cannot know": a body "still older
/// than a change that revoked assets ... the ids it lists that the change
/// did not name as current are provably old: they are revoked"; promise 1
/// from the moment the regenerate's 2xx was returned): `o1` is 404 and
/// absent from the body whether or not a caption edit came after.
/// Actual: after the PATCH, `o1` is 200 on both asset reads and listed in
/// the container body.
/// Fix: keep the newest change that revoked assets (its date and current
/// ids) next to the newest change of any kind, e.g. a second floor, or let
/// a non-revoking floor inherit `revokes_assets`/`current` from a standing
/// revoking one; `judge_origin`, `judge_asset_by_container`,
/// `complete_fill` and `revoke_behind_floor` judge assets by that one.
#[tokio::test(start_paused = true)]
async fn a_caption_edit_after_a_regenerate_does_not_reopen_the_regenerates_old_asset() {
    let control = old_asset_after_regenerate(false).await;
    assert_eq!(
        control,
        (404, false, 404),
        "control: right after the regenerate the old asset is refused"
    );
    let edited = old_asset_after_regenerate(true).await;
    assert_eq!(
        edited,
        (404, false, 404),
        "after regenerate + caption PATCH, a lagging replica's pre-regenerate asset o1 is served \
         again: (variant asset status, container body lists o1, canonical asset status)"
    );
}

/// What a lagging replica's copy of a deleted container gives partners
/// once the tombstone has expired, after a DELETE through the gateway that
/// the origin answered with `delete_answer`: statuses of the asset `a1` and
/// whether the container body lists it.
async fn deleted_asset_after_tombstone(delete_answer: Answer) -> (u16, bool) {
    let t0 = T0_MS - 60_000;
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "[invalidation]\ntombstone_secs = 60\n");
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a1", "a2"], "c", t0)),
    );
    origin.set(
        Method::GET,
        &asset_path("a1"),
        Answer::Json(200, descriptor("a1")),
    );
    // Cached before the delete: its ids are what the delete revokes.
    let r = get(&gw, &path()).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    origin.set(Method::DELETE, &path(), delete_answer);
    let r = send(&gw, Method::DELETE, &path(), "").await;
    assert!(r.status.is_success(), "{:?}", r.status);
    assert_eq!(get(&gw, &asset_path("a1")).await.status, 404, "tombstoned");
    // The tombstone expires (revocations are kept for a day); a replica
    // still serves the container as it was before the delete.
    tokio::time::advance(Duration::from_secs(61)).await;
    let asset = get(&gw, &asset_path("a1")).await;
    let body = get(&gw, &path()).await;
    (asset.status.as_u16(), lists(&body, "a1"))
}

/// Defect: a DELETE proxied through the gateway whose 2xx answer carries a
/// body (the deleted container, as many APIs return it) un-revokes every
/// asset it deleted. `proxy.rs` reads `answer_facts` of any write-through
/// answer into `current_asset_ids`, also for `EventType::Deleted`;
/// `apply_to_fence` (src/cache/invalidate.rs) then removes those ids from
/// what the delete revokes (`revoked.retain(|a| !current.contains(a))`) and
/// even records them as the floor's *current* ids. The webhook parser knows
/// a delete names no current ids (`asset_ids`: a delete's `assets` are
/// revoked); the write-through does not. Once the tombstone expires the
/// deleted container's asset URLs resolve again (and the body is served)
/// from a replica that still has them; with a 204 answer they stay revoked
/// for `revoked_ttl_secs` (checked first, as the control).
///
/// Expected: after `DELETE` answered 2xx, `a1` never resolves again while
/// its revocation stands, whatever body the 2xx carried.
/// Actual: with a 200 + body answer, `a1` is 200 after the tombstone
/// expires and the container body lists it.
/// Fix: in `proxy.rs`, pass no current ids for a `Deleted` write-through
/// (or in `apply_to_fence`, ignore `current_asset_ids` for deletes), and
/// never set a floor's `current` from a delete.
#[tokio::test(start_paused = true)]
async fn a_delete_answered_with_a_body_still_revokes_the_deleted_assets() {
    let control = deleted_asset_after_tombstone(Answer::Raw(204, "application/json", Bytes::new())).await;
    assert_eq!(control, (404, false), "control: a 204 delete keeps a1 revoked");
    let mut deleted = dated(&["a1", "a2"], "c", T0_MS - 100);
    deleted["status"] = Value::from("deleted");
    let with_body = deleted_asset_after_tombstone(Answer::Json(200, deleted)).await;
    assert_eq!(
        with_body,
        (404, false),
        "a DELETE answered 200 with the deleted container un-revoked its assets: \
         (asset a1 status, container body lists a1)"
    );
}

/// Defect: a container with more assets than a change may name as current
/// (10,000, `MAX_EVENT_ASSET_IDS` / `MAX_FLOOR_CURRENT_IDS`) loses its
/// assets past the bound for a day after a regenerate, although the origin
/// serves exactly the version the regenerate answered. The regenerate's
/// answer (updatedAt T1, 10,001 assets) becomes a floor at T1 whose current
/// ids are the first 10,000. A fill answered with that same version (T1) is
/// not "newer" (`complete_fill`: `at > floor.at`, strict), so the 10,001st
/// id counts as `other_ids`: the fill is `LaggingAssets`, asked again, then
/// `revoke_behind_floor` (src/cache.rs) revokes that *current* id for
/// `revoked_ttl_secs` (its doc says "when the body is dated older than that
/// change", but it never checks the date), and the container is never
/// cached while the floor stands. README: "a container with more assets
/// than that has its oldest judged by the container read as well" — the
/// container read of the very same version refuses it too
/// (`judge_asset_by_container` also wants `at > floor.at`).
///
/// Expected: the container as the origin serves it (10,001 assets, the
/// version the regenerate answered) is served whole and cached, and its
/// last asset resolves.
/// Actual: the body lacks the last asset, the asset route answers 404, the
/// second read is another MISS.
/// Fix: treat a body dated at the floor's change (`>=`) as not behind it,
/// and only revoke in `revoke_behind_floor` ids of a body dated strictly
/// older than the change.
#[tokio::test(start_paused = true)]
async fn a_container_past_the_current_id_bound_is_served_whole_after_its_regenerate() {
    let t1 = T0_MS - 1_000;
    let ids: Vec<String> = (0..10_001).map(|i| format!("s{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let last = ids.last().unwrap().clone();
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "[cache]\ncompress_encodings = []\n");
    let now = dated(&refs, "big", t1);
    origin.set(
        Method::POST,
        &format!("{}/regenerate", path()),
        Answer::Json(200, now.clone()),
    );
    origin.set(Method::GET, &path(), Answer::Json(200, now));
    let r = send(&gw, Method::POST, &format!("{}/regenerate", path()), "{}").await;
    assert_eq!(r.status, 200);
    let first = get(&gw, &path()).await;
    let second = get(&gw, &path()).await;
    let asset = get(&gw, &asset_path(&last)).await;
    let n = |r: &Reply| r.json()["assets"].as_array().map_or(0, Vec::len);
    assert_eq!(
        (
            n(&first),
            lists(&first, &last),
            asset.status.as_u16(),
            second.x_cache()
        ),
        (10_001, true, 200, Some("HIT")),
        "the current version the regenerate answered is refused its asset past the bound \
         (assets served, last listed, last asset status, second read)"
    );
}

/// Defect: one event that revokes more ids than
/// `invalidation.max_revoked_per_container` (default 4,096; an event may
/// name 10,000) keeps only that many: in `apply_to_fence`'s revoke loop,
/// once the set is full each further id evicts "the one that would expire
/// first", and the ids this same event just inserted all share one expiry,
/// so they evict each other. The event is answered 2xx, yet some of the ids
/// it names as revoked still resolve: an undated `content.regenerated` (the
/// form the origin simulator sends) sets no floor, so the revoked set is
/// the only guard against a replica still serving the old container. No
/// document states this loss (docs/limits.md does not list the cap).
///
/// Expected ("Which ids are revoked. Exactly those the event names"): none
/// of the 4,100 previous ids is listed in the container body the gateway
/// serves, nor resolves on the asset route; or, past the cap, the fence
/// fails closed (e.g. judges every asset of the container like an unproven
/// one) rather than forgetting revocations.
/// Actual: 4 of the event's previous ids are served from the lagging
/// replica's body and their asset route answers 200.
#[tokio::test(start_paused = true)]
async fn an_event_revoking_more_ids_than_the_cap_leaves_none_of_them_served() {
    let old: Vec<String> = (0..4_100).map(|i| format!("p{i:05}")).collect();
    let refs: Vec<&str> = old.iter().map(String::as_str).collect();
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "[cache]\ncompress_encodings = []\n");
    let r = deliver(
        &gw,
        json!({
            "id": unique_event_id(),
            "type": "content.regenerated",
            "data": {"id": ID, "previousAssetIds": old, "assets": [{"assetId": "n1"}]},
        }),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A replica still behind the regenerate.
    origin.set(Method::GET, &path(), Answer::Json(200, container(&refs, "old")));
    let body = get(&gw, &path()).await;
    assert_eq!(body.status, 200);
    let served: Vec<String> = body.json()["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["assetId"].as_str().map(str::to_owned))
        .collect();
    let mut resolving = Vec::new();
    for a in &served {
        origin.set(Method::GET, &asset_path(a), Answer::Json(200, descriptor(a)));
        if get(&gw, &asset_path(a)).await.status == 200 {
            resolving.push(a.clone());
        }
    }
    assert!(
        served.is_empty() && resolving.is_empty(),
        "ids the accepted event revoked are still served: in the body {served:?}, resolving {resolving:?}"
    );
}

// Round 23: the review of round 22's fixes.

async fn webhook(gw: &layers_gateway::service::Gateway, ty: &str, data: Value) {
    let r = deliver(
        gw,
        json!({"id": unique_event_id(), "type": ty, "data": data}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

const T1: i64 = T0_MS - 3_000; // regenerate 1: a0 -> a1
const T2: i64 = T0_MS - 2_000; // regenerate 2: a1 -> a2
const T3: i64 = T0_MS - 1_000; // caption edit (after regenerate 2)

/// After the events (regenerate 1, then — with `caption` — the caption
/// edit, then regenerate 2's webhook, delivered late) and one read answered
/// by a replica at regenerate 2's version (behind the caption edit), the
/// origin serves its current version (the caption edit: `a2`). Returns
/// (container body lists `a2`, status of asset `a2`).
async fn current_asset_after_late_regenerate(caption: bool) -> (bool, u16) {
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "");
    webhook(
        &gw,
        "content.regenerated",
        json!({"id": ID, "updatedAt": rfc3339_ms(T1), "previousAssetIds": ["a0"], "assets": [{"assetId": "a1"}]}),
    )
    .await;
    if caption {
        webhook(
            &gw,
            "content.updated",
            json!({"id": ID, "updatedAt": rfc3339_ms(T3)}),
        )
        .await;
    }
    // Regenerate 2 happened before the caption edit; its webhook is late.
    webhook(
        &gw,
        "content.regenerated",
        json!({"id": ID, "updatedAt": rfc3339_ms(T2), "previousAssetIds": ["a1"], "assets": [{"assetId": "a2"}]}),
    )
    .await;
    origin.set(
        Method::GET,
        &asset_path("a2"),
        Answer::Json(200, descriptor("a2")),
    );
    // A replica at regenerate 2's version (behind the caption edit only).
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a2"], "before edit", T2)),
    );
    let _ = get(&gw, &path()).await;
    // The replica catches up: the current version.
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a2"], "edited", T3)),
    );
    // Not a moment's refusal: ten minutes on, still the current version.
    tokio::time::advance(std::time::Duration::from_secs(600)).await;
    let body = get(&gw, &path()).await;
    let asset = get(&gw, &asset_path("a2")).await;
    (lists(&body, "a2"), asset.status.as_u16())
}

/// Defect: a caption edit's floor inherits the standing regenerate's
/// current ids and re-dates them to the caption's time, as if they were
/// still the current ids at that time. A regenerate between the two whose
/// webhook arrives after the caption edit (events may arrive out of order)
/// cannot correct it: its date is older than the (inherited) floor, so the
/// floor keeps `at = T3, current = [a1]` although at T3 the current asset
/// is `a2`. A replica at regenerate 2's version (dated T2 < T3, listing
/// `a2`) is then "behind a revoking change with other ids":
/// `complete_fill` answers `LaggingAssets` and `revoke_behind_floor`
/// (src/cache.rs) revokes the *current* asset `a2` for `revoked_ttl` (a
/// day). The origin's current answer (dated T3, listing `a2`) is then
/// served without `a2` and the asset URL answers 404 for a day. Without
/// the caption edit (the control) the same sequence serves `a2`; before
/// round 22's change the caption's floor revoked nothing and `a2` was kept.
///
/// Expected: `a2` (current since T2, never revoked by any event) is listed
/// and resolves once the origin serves the current version.
/// Actual: `a2` is missing from the body and its asset route is 404.
/// At fault: src/cache/invalidate.rs `apply_to_fence`, the
/// `(false, Some(current)) => (true, current)` arm (moves the revoking
/// floor's `at` forward to the caption's date).
/// Fix: keep the revoking change's own date next to the newest change's
/// date (e.g. `Floor { at, revoking_at, current }`): judge ids only against
/// `revoking_at`, and let a late revoking change dated after `revoking_at`
/// (even if before `at`) replace `current` and `revoking_at`.
#[tokio::test(start_paused = true)]
async fn a_late_regenerate_before_a_caption_edit_does_not_revoke_its_current_asset() {
    let control = current_asset_after_late_regenerate(false).await;
    assert_eq!(
        control,
        (true, 200),
        "control: without the caption edit a2 is served"
    );
    let edited = current_asset_after_late_regenerate(true).await;
    assert_eq!(
        edited,
        (true, 200),
        "after regenerate 1, a caption edit, and regenerate 2's late webhook, the current asset a2 \
         was revoked: (body lists a2, asset a2 status)"
    );
}

/// After regenerate 1 (webhook) and — with `patch` — a caption PATCH
/// through the gateway that the origin answers with its current version
/// (listing `a2`: regenerate 2 happened at the origin meanwhile, its
/// webhook not yet here), one read from a replica at regenerate 2's
/// version, regenerate 2's webhook, then the origin's current version.
async fn current_asset_after_patch(patch: bool) -> (bool, u16) {
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "");
    webhook(
        &gw,
        "content.regenerated",
        json!({"id": ID, "updatedAt": rfc3339_ms(T1), "previousAssetIds": ["a0"], "assets": [{"assetId": "a1"}]}),
    )
    .await;
    if patch {
        origin.set(
            Method::PATCH,
            &path(),
            Answer::Json(200, dated(&["a2"], "edited", T3)),
        );
        let r = send(&gw, Method::PATCH, &path(), r#"{"caption":"edited"}"#).await;
        assert_eq!(r.status, 200);
    }
    origin.set(
        Method::GET,
        &asset_path("a2"),
        Answer::Json(200, descriptor("a2")),
    );
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a2"], "before edit", T2)),
    );
    let _ = get(&gw, &path()).await;
    webhook(
        &gw,
        "content.regenerated",
        json!({"id": ID, "updatedAt": rfc3339_ms(T2), "previousAssetIds": ["a1"], "assets": [{"assetId": "a2"}]}),
    )
    .await;
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a2"], "edited", T3)),
    );
    // Not a moment's refusal: ten minutes on, still the current version.
    tokio::time::advance(std::time::Duration::from_secs(600)).await;
    let body = get(&gw, &path()).await;
    let asset = get(&gw, &asset_path("a2")).await;
    (lists(&body, "a2"), asset.status.as_u16())
}

/// Defect: a caption PATCH whose own 2xx answer lists the container's
/// current assets (`a2`) is turned into a floor naming the *standing*
/// regenerate's ids (`a1`) as current at the PATCH's date: the answer's
/// ids are read (`answer_facts`) and then ignored because `Updated` does
/// not revoke, while the inherited list is re-dated to T3. A replica one
/// step behind the PATCH (dated T2, listing `a2`) then gets `a2` revoked
/// for a day by `revoke_behind_floor`, and regenerate 2's webhook, when it
/// arrives, cannot lift it ("current ids never lift an earlier
/// revocation"). The gateway thus contradicts the origin answer it
/// proxied a moment earlier. Control: without the PATCH `a2` is served.
///
/// Expected: `a2`, which the PATCH's answer itself names, is served and
/// resolves.
/// Actual: absent from the body, 404 on the asset route (for
/// `revoked_ttl`).
/// At fault: src/cache/invalidate.rs `apply_to_fence` (inherit arm), with
/// src/service/proxy.rs passing the answer's ids as `current_asset_ids`
/// that a non-revoking change never uses.
/// Fix: a dated non-revoking change that names current ids (a write-through
/// answer) must not inherit a list that contradicts them: use its own ids
/// as `current` (they are the container's full list at `at`), or do not
/// move a revoking floor's date forward at all (see the previous test).
#[tokio::test(start_paused = true)]
async fn a_caption_patch_answer_listing_new_assets_does_not_get_them_revoked() {
    let control = current_asset_after_patch(false).await;
    assert_eq!(control, (true, 200), "control: without the PATCH a2 is served");
    let patched = current_asset_after_patch(true).await;
    assert_eq!(
        patched,
        (true, 200),
        "after a caption PATCH answered with a2 current, a replica one step behind made the \
         gateway revoke a2: (body lists a2, asset a2 status)"
    );
}

/// Defect: a cluster fence record is no longer bounded. `FenceRecord::merge`
/// (src/cluster/fence_record.rs) now keeps every revoked id of the event
/// being merged (`keep = MAX_RECORD_REVOKED.max(named.len())`), assuming
/// an event names at most 10,000 ids. But what a gateway publishes is the
/// event's ids *plus every id it revoked from its cached fills*
/// (`Gateway::publish`, src/service.rs: `applied.revoked`), which is not
/// bounded by 10,000: here a dated `content.deleted` of a cached container
/// with 35,000 assets (128-byte ids, a 5.6 MB body under the 8 MiB
/// `origin.max_response_bytes`; 16 cached versions of smaller containers
/// do the same) revokes 35,000 ids. The merged, sealed record is then
/// larger than `MAX_VALUE_BYTES` (4 MiB), the size past which a joiner's
/// rebuild skips a record like a forged one — tombstone and all: a joiner
/// after a gap serves the deleted container. Before round 22 the record
/// kept the newest 4,096 ids and always fit.
///
/// Expected: the record of an accepted delete fits what a reader takes
/// (its tombstone survives a rebuild).
/// Actual: the sealed record is 4,585,222 bytes > 4,194,304 (4 MiB).
/// Fix: bound what is kept regardless of the event (e.g. keep at most
/// `MAX_EVENT_ASSET_IDS` of one event, and bound `Applied.revoked`/the
/// published list the same way), or fail closed for a container whose
/// revocations overflow (a record flag that makes a rebuild judge every
/// asset of it unproven) rather than let the record outgrow the reader.
#[tokio::test(start_paused = true)]
async fn a_delete_of_a_large_cached_container_keeps_its_fence_record_readable() {
    let ids: Vec<String> = (0..35_000).map(|i| format!("x{i:0>127}")).collect();
    let origin = Arc::new(Scripted::default());
    let gw = gateway(&origin, "[cache]\ncompress_encodings = []\n");
    let body = json!({
        "id": ID, "projectId": "prj_1", "status": "completed", "caption": "big",
        "updatedAt": rfc3339_ms(T0_MS - 60_000),
        "assets": ids.iter().map(|a| json!({"assetId": a, "url": "u"})).collect::<Vec<_>>(),
    });
    origin.set(Method::GET, &path(), Answer::Json(200, body));
    let r = get(&gw, &path()).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"), "cached");
    let id = ContainerId::parse(ID).unwrap();
    let inv = Invalidation {
        event_id: Some("evt_delete_big".into()),
        source: Source::Webhook,
        event_type: EventType::Deleted,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: Some(T0_MS - 1_000),
        created_at: None,
        replay: false,
        accepted_at: None,
    };
    let applied = gw.state().cache.invalidate(&inv).await;
    assert_eq!(
        applied.revoked.len(),
        ids.len(),
        "the cached fill's ids are revoked"
    );
    // What `Gateway::publish` sends: the event plus the ids revoked here.
    let mut shared = inv.clone();
    for a in &applied.revoked {
        shared.revoked_asset_ids.push(a.clone());
    }
    let mut record = layers_gateway::cluster::fence_record::FenceRecord::new(id);
    record.merge(&shared, "evt_delete_big");
    assert!(record.tombstone.is_some());
    let sealed =
        layers_gateway::cluster::entry_mac::EntryKey::new(b"secret", "stream").seal_record(&record.encode());
    assert!(
        sealed.len() <= layers_gateway::cluster::scripts::MAX_VALUE_BYTES,
        "the delete's fence record ({} bytes, {} revoked ids) is larger than a reader takes ({} bytes): \
         a joiner's rebuild skips it and loses the tombstone",
        sealed.len(),
        record.revoked.len(),
        layers_gateway::cluster::scripts::MAX_VALUE_BYTES
    );
}
