//! Attacker review, round 23: the fence after the round-22 changes (a
//! caption edit inheriting a regenerate's floor, one event's revocations
//! all kept in a cluster fence record). Each test fails on the code as
//! reviewed because of the defect in its doc comment. All run in-process
//! under tokio's paused clock against a scripted origin.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use serde_json::{json, Value};
use std::sync::Arc;
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
