//! Invalidation as a partner (and the origin's webhook sender) would notice
//! it: once the gateway has acknowledged a regenerate, delete or purge, no
//! response it starts afterwards carries the old version, however the
//! origin's answers and the events interleave (DESIGN sections 2 and 4).
//!
//! Races are made deterministic with the simulator's hold gate: a read is
//! started, the test waits until the origin has taken its snapshot
//! (`container_gets()` moved), acts, then releases the origin's answer.
//! Time-dependent behaviour (tombstone expiry) runs in-process under
//! tokio's paused clock.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::config::Config;
use layers_gateway::demo::{FailureMode, Gate, WebhookTarget};
use layers_gateway::ids::ContainerId;
use layers_gateway::origin::SimulatorUpstream;
use layers_gateway::service::Gateway;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const WEBHOOK: &str = "/webhooks/layers";
/// org_demo_a's slideshow: four assets (`slide-1` .. `slide-4`).
const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// org_demo_a's video: one asset.
const VIDEO: &str = "cnt_3f6c1a2e-8b4d-4c1f-9a7e-2d5b8c9e0f11";

fn slideshow() -> ContainerId {
    ContainerId::parse(SLIDESHOW).unwrap()
}

fn video() -> ContainerId {
    ContainerId::parse(VIDEO).unwrap()
}

// ---------------------------------------------------------------------------
// Talking to a gateway (over TCP or in-process) and reading its answers.
// ---------------------------------------------------------------------------

impl Gw {
    /// A read with the admin demo key (org_demo_a, every scope).
    async fn get(&self, path: &str) -> Reply {
        let key = admin_key();
        self.send(Method::GET, path, &[("x-api-key", &key)], Bytes::new())
            .await
    }

    async fn container(&self, id: ContainerId) -> Reply {
        self.get(&container_path(id)).await
    }

    async fn asset(&self, id: ContainerId, asset: &str) -> Reply {
        self.get(&asset_path(id, asset)).await
    }

    /// A mutation through the gateway with the admin demo key.
    async fn mutate(&self, method: Method, path: &str, body: &str) -> Reply {
        let key = admin_key();
        let headers = [("x-api-key", key.as_str()), ("content-type", "application/json")];
        self.send(method, path, &headers, Bytes::from(body.to_owned()))
            .await
    }

    async fn post_webhook(&self, body: &str, headers: &[(String, String)]) -> Reply {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.send(Method::POST, WEBHOOK, &h, Bytes::from(body.to_owned()))
            .await
    }

    /// Delivers a correctly signed event of `event_type` and asserts the
    /// gateway applied it. Returns the event id.
    async fn deliver(&self, event_type: &str, data: Value) -> String {
        let id = new_event_id();
        let body = event_body(&id, event_type, data);
        let r = self.post_webhook(&body, &signed(&body, &id)).await;
        assert_applied(&r);
        id
    }

    /// Reads the container until it is cached: a MISS, then a HIT.
    async fn warm(&self, id: ContainerId) -> Value {
        let a = self.container(id).await;
        assert_eq!(a.status, 200, "{}", text(&a));
        let b = self.container(id).await;
        assert_eq!(b.x_cache(), Some("HIT"), "second read is served from cache");
        assert_eq!(a.body, b.body);
        b.json()
    }
}

/// A gateway whose undated webhooks do not hold the container uncached:
/// these tests deliver events for changes the simulator never made (its
/// version does not move), which `cache.undated_hold_ms` would rightly
/// keep out of the cache for a while (tests/undated_lag.rs tests that).
async fn without_undated_hold() -> Harness {
    Harness::with(demo_simulator(), "[cache]\nundated_hold_ms = 0\n").await
}

fn tcp(h: &Harness) -> Gw {
    Gw::Tcp(Box::new(h.client.clone()))
}

fn container_path(id: ContainerId) -> String {
    format!("/v1/content/{id}")
}

fn asset_path(id: ContainerId, asset: &str) -> String {
    format!("/v1/content/{id}/assets/{asset}")
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `evt_` and 26 characters, unique within the test binary.
fn new_event_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("evt_01TEST{:016}", N.fetch_add(1, Ordering::Relaxed))
}

fn event_body(id: &str, event_type: &str, data: Value) -> String {
    json!({ "id": id, "type": event_type, "data": data }).to_string()
}

/// Headers of a correct delivery of `body` as event `id`, signed now.
fn signed(body: &str, id: &str) -> Vec<(String, String)> {
    with_event_id(signed_webhook(body, WEBHOOK_SECRET, unix_now()), id)
}

fn with_event_id(mut headers: Vec<(String, String)>, id: &str) -> Vec<(String, String)> {
    headers.push(("x-layers-event-id".into(), id.into()));
    headers
}

fn assert_applied(r: &Reply) {
    assert_eq!(r.status, 200, "{}", text(r));
    assert_eq!(r.json(), json!({"status": "applied"}));
}

fn assert_duplicate(r: &Reply) {
    assert_eq!(r.status, 200, "{}", text(r));
    assert_eq!(r.json(), json!({"status": "duplicate"}));
}

fn asset_ids(container: &Value) -> Vec<String> {
    container["assets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["assetId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every URL anywhere in a JSON value (`url`, `thumbnailUrl`, ...).
fn urls(v: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with("https://") => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// The URLs of the assets with these ids in `container`.
fn urls_of(container: &Value, ids: &[String]) -> Vec<String> {
    container["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| ids.iter().any(|i| a["assetId"] == i.as_str()))
        .flat_map(urls)
        .collect()
}

/// `data.assets` of an event: `{assetId, url}` of each asset of `container`.
fn asset_refs(container: &Value) -> Value {
    let refs: Vec<Value> = container["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!({ "assetId": a["assetId"], "url": a["url"] }))
        .collect();
    Value::Array(refs)
}

fn regenerated_data(id: ContainerId, previous: &[String], now: &Value) -> Value {
    json!({ "id": id.to_string(), "previousAssetIds": previous, "assets": asset_refs(now) })
}

fn deleted_data(id: ContainerId, had: &Value) -> Value {
    json!({ "id": id.to_string(), "assets": asset_refs(had) })
}

/// `container` with only the assets whose ids are not in `without`.
fn without_assets(container: &Value, without: &[String]) -> Value {
    let mut c = container.clone();
    c["assets"]
        .as_array_mut()
        .unwrap()
        .retain(|a| !without.iter().any(|w| a["assetId"] == w.as_str()));
    c
}

/// Asserts that `r` is a 200 carrying none of `revoked_urls` and none of
/// `revoked_ids` as an asset id.
fn assert_carries_none(r: &Reply, revoked_ids: &[String], revoked_urls: &[String]) {
    assert_eq!(r.status, 200, "{}", text(r));
    let v = r.json();
    let ids = asset_ids(&v);
    for a in revoked_ids {
        assert!(!ids.contains(a), "revoked asset {a} served: {v}");
    }
    let body = text(r);
    for u in revoked_urls {
        assert!(!body.contains(u.as_str()), "revoked URL {u} served: {body}");
    }
}

async fn assert_assets_404(gw: &Gw, id: ContainerId, assets: &[String]) {
    for a in assets {
        gw.asset(id, a).await.assert_error(404, "NOT_FOUND");
    }
}

async fn assert_assets_200(gw: &Gw, id: ContainerId, assets: &[String]) {
    for a in assets {
        let r = gw.asset(id, a).await;
        assert_eq!(r.status, 200, "asset {a}: {}", text(&r));
        assert_eq!(r.json()["assetId"], a.as_str());
    }
}

// ---------------------------------------------------------------------------
// Deterministic races: the origin's answer is held until the test releases it.
// ---------------------------------------------------------------------------

/// Yields until `cond` holds; bounded in iterations and wall time.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    for _ in 0..2_000_000u32 {
        if cond() {
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting for {what}");
}

/// A gateway read whose origin answer is held after the snapshot.
struct HeldRead {
    gate: Gate,
    task: tokio::task::JoinHandle<Reply>,
}

impl HeldRead {
    /// Starts a read of `path` through the gateway and returns once the
    /// origin has fixed its answer (and is holding it).
    async fn start(h: &Harness, path: &str) -> HeldRead {
        let before = h.sim.container_gets();
        let gate = h.sim.hold();
        let client = h.client.clone();
        let key = admin_key();
        let path = path.to_owned();
        let task = tokio::spawn(async move { client.get(&path, &key).await });
        wait_for("the origin to take its snapshot", || {
            h.sim.container_gets() > before
        })
        .await;
        assert!(!task.is_finished(), "the read is held by the origin");
        HeldRead { gate, task }
    }

    /// Lets the origin answer; returns what the held read got.
    async fn release(self) -> Reply {
        self.gate.release();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the held read finishes once released")
            .expect("the read task does not panic")
    }
}

/// After an invalidation that raced a fill: the next read went to the
/// origin (the late fill was not cached) and is the origin's current body;
/// the read after it is a HIT again.
async fn assert_next_read_is_fresh(h: &Harness, id: ContainerId) -> Value {
    let gw = tcp(h);
    let gets = h.sim.container_gets();
    let next = gw.container(id).await;
    assert_eq!(next.status, 200, "{}", text(&next));
    assert_eq!(
        next.x_cache(),
        Some("MISS"),
        "the late fill must not have been cached"
    );
    assert_eq!(h.sim.container_gets(), gets + 1, "the origin was asked again");
    let current = h.sim.container(id).unwrap();
    assert_eq!(next.json(), current);
    let again = gw.container(id).await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.body, next.body);
    current
}

#[tokio::test]
async fn regenerated_webhook_during_an_in_flight_fill_keeps_the_late_fill_out_of_the_cache() {
    let h = without_undated_hold().await;
    let gw = tcp(&h);
    let id = slideshow();
    let held = HeldRead::start(&h, &container_path(id)).await;

    let regen = h.sim.regenerate(id).unwrap(); // no webhook target: the test delivers
    let now = h.sim.container(id).unwrap();
    gw.deliver(
        "content.regenerated",
        regenerated_data(id, &regen.previous_asset_ids, &now),
    )
    .await;

    let late = held.release().await;
    assert_eq!(late.status, 200, "a read that began before the event may finish");

    let fresh = assert_next_read_is_fresh(&h, id).await;
    assert_eq!(asset_ids(&fresh), regen.new_asset_ids);
    let r = gw.container(id).await;
    assert_carries_none(&r, &regen.previous_asset_ids, &regen.previous_urls);
    assert_assets_404(&gw, id, &regen.previous_asset_ids).await;
    assert_assets_200(&gw, id, &regen.new_asset_ids).await;
    h.stop().await;
}

#[tokio::test]
async fn regenerate_through_the_gateway_during_an_in_flight_fill_keeps_the_late_fill_out() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = h.sim.container(id).unwrap();
    let held = HeldRead::start(&h, &container_path(id)).await;

    let r = gw
        .mutate(Method::POST, &format!("/v1/content/{id}/regenerate"), "")
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let now = r.json();
    assert_eq!(now, h.sim.container(id).unwrap());

    assert_eq!(held.release().await.status, 200);
    let fresh = assert_next_read_is_fresh(&h, id).await;
    assert_eq!(fresh, now);
    let old_ids = asset_ids(&old);
    assert_carries_none(&gw.container(id).await, &old_ids, &urls(&old["assets"]));
    assert_assets_404(&gw, id, &old_ids).await;
    assert_assets_200(&gw, id, &asset_ids(&now)).await;
    h.stop().await;
}

#[tokio::test]
async fn delete_during_an_in_flight_fill_answers_404_without_asking_the_origin() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = h.sim.container(id).unwrap();
    let held = HeldRead::start(&h, &container_path(id)).await;

    assert!(h.sim.delete(id));
    gw.deliver("content.deleted", deleted_data(id, &old)).await;
    // The fence decision judges a fill's answer when it is served: the
    // container was deleted before that, so even this read, which began
    // before the delete, answers 404.
    assert_eq!(held.release().await.status, 404);

    let before = h.sim.total_requests();
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_assets_404(&gw, id, &asset_ids(&old)).await;
    assert_eq!(
        h.sim.total_requests(),
        before,
        "a tombstoned container is answered without the origin"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_late_origin_answer_carrying_revoked_ids_leaves_them_out_and_is_not_cached() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = h.sim.container(id).unwrap();
    let all = asset_ids(&old);
    let (revoked, kept) = (all[..2].to_vec(), all[2..].to_vec());
    let revoked_urls = urls_of(&old, &revoked);
    let held = HeldRead::start(&h, &container_path(id)).await;

    // The origin's replica still answers with the old assets: the event
    // revokes ids the origin keeps returning.
    let newer = json!([{ "assetId": "slide-1-0000aaaa", "url": "https://cdn.layers.example/new/slide-1-0000aaaa.jpg" }]);
    gw.deliver(
        "content.regenerated",
        json!({ "id": SLIDESHOW, "previousAssetIds": revoked, "assets": newer }),
    )
    .await;

    let late = held.release().await;
    assert_carries_none(&late, &revoked, &revoked_urls);
    assert_eq!(late.json(), without_assets(&old, &revoked));

    for _ in 0..2 {
        let gets = h.sim.container_gets();
        let r = gw.container(id).await;
        assert_carries_none(&r, &revoked, &revoked_urls);
        assert_eq!(r.json(), without_assets(&old, &revoked));
        assert_eq!(r.x_cache(), Some("MISS"));
        assert_eq!(
            h.sim.container_gets(),
            gets + 1,
            "a fill that carried revoked ids is not cached"
        );
    }
    assert_assets_404(&gw, id, &revoked).await;
    assert_assets_200(&gw, id, &kept).await;
    h.stop().await;
}

#[tokio::test]
async fn admin_purge_during_an_in_flight_fill_keeps_the_late_fill_out() {
    let h = Harness::start().await;
    let admin = h.admin();
    // A container that is not cached yet for each purge, so the read fills.
    for (id, query) in [
        (slideshow(), format!("container={SLIDESHOW}")),
        (video(), "all=true".to_owned()),
    ] {
        let held = HeldRead::start(&h, &container_path(id)).await;
        let r = purge(&admin, &query, Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status, 200, "{query}: {}", text(&r));
        assert_eq!(held.release().await.status, 200);
        assert_next_read_is_fresh(&h, id).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn simulator_webhooks_reach_the_gateway_and_invalidate() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    h.sim.set_webhook_target(Some(WebhookTarget {
        url: format!("http://{}{WEBHOOK}", h.app.addr),
        secrets: vec![WEBHOOK_SECRET.as_bytes().to_vec()],
    }));
    let id = slideshow();
    let old = gw.warm(id).await;
    let regen = h.sim.regenerate_and_notify(id).await.unwrap();
    let r = gw.container(id).await;
    assert_eq!(r.x_cache(), Some("MISS"));
    assert_eq!(r.json(), h.sim.container(id).unwrap());
    assert_carries_none(&r, &asset_ids(&old), &regen.previous_urls);
    assert_assets_404(&gw, id, &regen.previous_asset_ids).await;

    let v = video();
    let had = gw.warm(v).await;
    assert!(h.sim.delete_and_notify(v).await);
    let before = h.sim.total_requests();
    gw.container(v).await.assert_error(404, "NOT_FOUND");
    assert_assets_404(&gw, v, &asset_ids(&had)).await;
    assert_eq!(h.sim.total_requests(), before);
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Duplicates, replays and reordering.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_duplicate_event_id_is_acknowledged_without_invalidating_again() {
    let h = without_undated_hold().await;
    let gw = tcp(&h);
    let id = slideshow();
    gw.warm(id).await;
    let evt = new_event_id();
    let body = event_body(&evt, "content.updated", json!({ "id": SLIDESHOW }));
    assert_applied(&gw.post_webhook(&body, &signed(&body, &evt)).await);
    let r = gw.container(id).await;
    assert_eq!(r.x_cache(), Some("MISS"), "the first delivery invalidates");
    gw.warm(id).await;

    // The origin retries the same event (re-signed, same id).
    let gets = h.sim.container_gets();
    assert_duplicate(&gw.post_webhook(&body, &signed(&body, &evt)).await);
    // Same id in the header, different body: still the same event.
    let other = event_body(&evt, "content.deleted", json!({ "id": SLIDESHOW }));
    assert_duplicate(&gw.post_webhook(&other, &signed(&other, &evt)).await);
    let r = gw.container(id).await;
    assert_eq!(r.x_cache(), Some("HIT"), "a duplicate invalidates nothing");
    assert_eq!(h.sim.container_gets(), gets);
    h.stop().await;
}

#[tokio::test]
async fn a_replayed_event_is_applied_once_whichever_copy_comes_first() {
    let h = without_undated_hold().await;
    let gw = tcp(&h);
    let id = slideshow();

    // Original first, then its replay.
    gw.warm(id).await;
    let original = gw.deliver("content.updated", json!({ "id": SLIDESHOW })).await;
    assert_eq!(gw.container(id).await.x_cache(), Some("MISS"));
    gw.warm(id).await;
    let replay_id = new_event_id();
    let replay = json!({ "id": replay_id, "type": "content.updated", "replayOf": original,
        "data": { "id": SLIDESHOW } })
    .to_string();
    assert_duplicate(&gw.post_webhook(&replay, &signed(&replay, &replay_id)).await);
    assert_eq!(gw.container(id).await.x_cache(), Some("HIT"));

    // Replay first (the original was never delivered), then the original.
    let original = new_event_id();
    let replay_id = new_event_id();
    let replay = json!({ "id": replay_id, "type": "content.updated", "replayOf": original,
        "data": { "id": SLIDESHOW } })
    .to_string();
    assert_applied(&gw.post_webhook(&replay, &signed(&replay, &replay_id)).await);
    assert_eq!(gw.container(id).await.x_cache(), Some("MISS"));
    gw.warm(id).await;
    let body = event_body(&original, "content.updated", json!({ "id": SLIDESHOW }));
    assert_duplicate(&gw.post_webhook(&body, &signed(&body, &original)).await);
    assert_eq!(gw.container(id).await.x_cache(), Some("HIT"));
    h.stop().await;
}

#[tokio::test]
async fn an_updated_event_arriving_after_a_regenerate_does_not_resurrect_revoked_ids() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = gw.warm(id).await;
    let revoked = asset_ids(&old)[..2].to_vec();
    let revoked_urls = urls_of(&old, &revoked);
    // Replica lag: the origin keeps answering with the revoked assets.
    gw.deliver(
        "content.regenerated",
        json!({ "id": SLIDESHOW, "previousAssetIds": revoked, "assets": [] }),
    )
    .await;
    // An older caption change, delivered late.
    gw.deliver("content.updated", json!({ "id": SLIDESHOW })).await;
    gw.deliver("content.approved", json!({ "id": SLIDESHOW })).await;
    for _ in 0..2 {
        assert_carries_none(&gw.container(id).await, &revoked, &revoked_urls);
    }
    assert_assets_404(&gw, id, &revoked).await;
    h.stop().await;
}

#[tokio::test]
async fn a_reordered_older_regenerate_does_not_resurrect_ids_a_newer_one_revoked() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    // Two regenerates at the origin: old -> mid (event A), mid -> new (event B).
    let r1 = h.sim.regenerate(id).unwrap();
    let mid = h.sim.container(id).unwrap();
    let event_a = regenerated_data(id, &r1.previous_asset_ids, &mid);
    let r2 = h.sim.regenerate(id).unwrap();
    let event_b = regenerated_data(id, &r2.previous_asset_ids, &h.sim.container(id).unwrap());
    // B arrives first (A's first delivery failed and is retried later).
    gw.deliver("content.regenerated", event_b).await;
    // A replica of the origin still answers with the mid version.
    h.sim.insert_container("org_demo_a", mid.clone());
    gw.deliver("content.regenerated", event_a).await;

    let revoked_by_b = r2.previous_asset_ids.clone();
    let r = gw.container(id).await;
    assert_carries_none(&r, &revoked_by_b, &r2.previous_urls);
    assert_assets_404(&gw, id, &revoked_by_b).await;
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Signatures: every rejection has its status and changes nothing.
// ---------------------------------------------------------------------------

/// Caches the slideshow and one of its assets, sends an event that would
/// revoke that asset with the headers and body `make` builds from the
/// correctly signed original, and checks the answer and that nothing
/// changed. Then delivers the genuine event with the same id, which must
/// be applied (a rejected delivery is not remembered as seen).
async fn assert_rejected_and_nothing_changes(
    make: impl FnOnce(&str, &str) -> (String, Vec<(String, String)>),
    status: u16,
    code: &str,
) {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let cached = gw.warm(id).await;
    let target = asset_ids(&cached)[0].clone();
    assert_eq!(gw.asset(id, &target).await.x_cache(), Some("HIT"));

    let evt = new_event_id();
    let body = event_body(
        &evt,
        "content.regenerated",
        json!({ "id": SLIDESHOW, "previousAssetIds": [target], "assets": [] }),
    );
    let (sent, headers) = make(&body, &evt);
    let r = gw.post_webhook(&sent, &headers).await;
    r.assert_error(status, code);

    let after = gw.container(id).await;
    assert_eq!(
        after.x_cache(),
        Some("HIT"),
        "a rejected event invalidates nothing"
    );
    assert_eq!(after.json(), cached);
    let a = gw.asset(id, &target).await;
    assert_eq!((a.status.as_u16(), a.x_cache()), (200, Some("HIT")));

    assert_applied(&gw.post_webhook(&body, &signed(&body, &evt)).await);
    assert_assets_404(&gw, id, &[target]).await;
    h.stop().await;
}

/// Replaces the `v1=` part of a header built by `signed_webhook`.
fn signature_only(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == "x-layers-signature")
        .unwrap()
        .1
        .clone()
}

fn replace_signature(headers: Vec<(String, String)>, value: &str) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(k, v)| {
            if k == "x-layers-signature" {
                (k, value.to_owned())
            } else {
                (k, v)
            }
        })
        .collect()
}

#[tokio::test]
async fn a_webhook_signed_with_the_wrong_secret_is_401() {
    assert_rejected_and_nothing_changes(
        |body, evt| {
            let h = signed_webhook(body, "not-the-secret", unix_now());
            (body.to_owned(), with_event_id(h, evt))
        },
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

#[tokio::test]
async fn a_tampered_webhook_body_is_401() {
    assert_rejected_and_nothing_changes(
        |body, evt| {
            let headers = signed(body, evt);
            let tampered = body.replace("\"previousAssetIds\":[\"", "\"previousAssetIds\":[\"x");
            assert_ne!(tampered, body);
            (tampered, headers)
        },
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

#[tokio::test]
async fn a_webhook_timestamp_301_seconds_old_is_401() {
    assert_rejected_and_nothing_changes(
        |body, evt| {
            let h = signed_webhook(body, WEBHOOK_SECRET, unix_now() - 301);
            (body.to_owned(), with_event_id(h, evt))
        },
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

#[tokio::test]
async fn a_webhook_timestamp_301_seconds_ahead_is_401() {
    assert_rejected_and_nothing_changes(
        |body, evt| {
            let h = signed_webhook(body, WEBHOOK_SECRET, unix_now() + 301);
            (body.to_owned(), with_event_id(h, evt))
        },
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

#[tokio::test]
async fn a_webhook_without_a_signature_header_is_401() {
    assert_rejected_and_nothing_changes(
        |body, evt| {
            let h = vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-layers-event-id".to_owned(), evt.to_owned()),
            ];
            (body.to_owned(), h)
        },
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

#[tokio::test]
async fn garbage_signature_headers_are_401() {
    let now = unix_now();
    let hex = "ab".repeat(32);
    for garbage in [
        "garbage".to_owned(),
        String::new(),
        format!("t={now}"),
        format!("v1={hex}"),
        format!("t=soon,v1={hex}"),
        format!("t={now},v1=not-hex"),
        format!("t={now},t={now},v1={hex}"),
        format!("t={now},v1={}", &hex[..62]),
    ] {
        assert_rejected_and_nothing_changes(
            |body, evt| (body.to_owned(), replace_signature(signed(body, evt), &garbage)),
            401,
            "UNAUTHENTICATED",
        )
        .await;
    }
}

#[tokio::test]
async fn a_malformed_but_signed_webhook_is_400() {
    for (bad, code) in [
        ("not json".to_owned(), "BAD_REQUEST"),
        (
            json!({ "id": "evt_x", "type": "content.regenerated" }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "id": "evt_x", "type": "content.deleted", "data": { "id": "not-a-container" } })
                .to_string(),
            "BAD_REQUEST",
        ),
    ] {
        assert_rejected_and_nothing_changes(|_body, evt| (bad.clone(), signed(&bad, evt)), 400, code).await;
    }
}

#[tokio::test]
async fn two_v1_entries_of_which_one_is_right_are_accepted() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let cached = gw.warm(id).await;
    let target = asset_ids(&cached)[0].clone();
    for right_first in [false, true] {
        let evt = new_event_id();
        let body = event_body(
            &evt,
            "content.regenerated",
            json!({ "id": SLIDESHOW, "previousAssetIds": [target], "assets": [] }),
        );
        let now = unix_now();
        let right = signature_only(&signed_webhook(&body, WEBHOOK_SECRET, now));
        let wrong = signature_only(&signed_webhook(&body, "old-secret", now));
        let (right_v1, wrong_v1) = (
            right.split_once(",v1=").unwrap().1,
            wrong.split_once(",v1=").unwrap().1,
        );
        let header = if right_first {
            format!("t={now},v1={right_v1},v1={wrong_v1}")
        } else {
            format!("t={now},v1={wrong_v1},v1={right_v1}")
        };
        let headers = replace_signature(signed(&body, &evt), &header);
        assert_applied(&gw.post_webhook(&body, &headers).await);
    }
    assert_eq!(gw.container(id).await.x_cache(), Some("MISS"));
    assert_assets_404(&gw, id, &[target]).await;
    h.stop().await;
}

#[tokio::test]
async fn timestamps_within_five_minutes_are_accepted() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    for skew in [-299, 299] {
        let evt = new_event_id();
        let body = event_body(&evt, "content.updated", json!({ "id": SLIDESHOW }));
        let headers = with_event_id(signed_webhook(&body, WEBHOOK_SECRET, unix_now() + skew), &evt);
        assert_applied(&gw.post_webhook(&body, &headers).await);
    }
    h.stop().await;
}

#[tokio::test]
async fn during_a_secret_rotation_both_secrets_are_accepted() {
    let sim = demo_simulator();
    let cfg = Config::parse(
        "[origin]\nurl = \"http://127.0.0.1:1\"\n\n[webhooks]\nsecrets = [\"secret-old\", \"secret-new\"]\n",
        PathBuf::new(),
    )
    .unwrap();
    let gw = Gw::Local(Gateway::new(
        cfg,
        demo_keys(),
        Arc::new(SimulatorUpstream(sim.clone())),
    ));
    let id = slideshow();
    for secret in ["secret-old", "secret-new"] {
        gw.warm(id).await;
        // The change the event reports (a newer version: cached at once).
        assert!(sim.update_caption(id, secret));
        let evt = new_event_id();
        let body = event_body(&evt, "content.updated", json!({ "id": SLIDESHOW }));
        let headers = with_event_id(signed_webhook(&body, secret, unix_now()), &evt);
        assert_applied(&gw.post_webhook(&body, &headers).await);
        assert_eq!(gw.container(id).await.x_cache(), Some("MISS"), "{secret}");
    }
    gw.warm(id).await;
    for secret in ["secret-retired", WEBHOOK_SECRET] {
        let evt = new_event_id();
        let body = event_body(&evt, "content.updated", json!({ "id": SLIDESHOW }));
        let headers = with_event_id(signed_webhook(&body, secret, unix_now()), &evt);
        gw.post_webhook(&body, &headers)
            .await
            .assert_error(401, "UNAUTHENTICATED");
        assert_eq!(gw.container(id).await.x_cache(), Some("HIT"), "{secret}");
    }
}

#[tokio::test]
async fn an_unknown_event_type_is_204_and_changes_nothing() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let cached = gw.warm(id).await;
    let target = asset_ids(&cached)[0].clone();
    let evt = new_event_id();
    let body = event_body(
        &evt,
        "content.published",
        json!({ "id": SLIDESHOW, "previousAssetIds": [target], "assets": [] }),
    );
    let r = gw.post_webhook(&body, &signed(&body, &evt)).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert!(r.body.is_empty());
    let after = gw.container(id).await;
    assert_eq!(after.x_cache(), Some("HIT"));
    assert_eq!(after.json(), cached);
    assert_assets_200(&gw, id, &[target]).await;
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Write-through: mutations proxied by the gateway invalidate before answering.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn regenerate_through_the_gateway_serves_only_new_urls_immediately() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = gw.warm(id).await;
    let old_ids = asset_ids(&old);
    assert_assets_200(&gw, id, &old_ids).await;

    let r = gw
        .mutate(
            Method::POST,
            &format!("/v1/content/{id}/regenerate"),
            r#"{"caption":"Regenerated."}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let now = r.json();
    assert_eq!(now["caption"], "Regenerated.");

    let read = gw.container(id).await;
    assert_eq!(read.x_cache(), Some("MISS"));
    assert_eq!(read.json(), now);
    assert_carries_none(&read, &old_ids, &urls(&old["assets"]));
    assert_assets_404(&gw, id, &old_ids).await;
    assert_assets_200(&gw, id, &asset_ids(&now)).await;
    h.stop().await;
}

#[tokio::test]
async fn a_retried_regenerate_does_not_revoke_the_assets_it_created() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    gw.warm(id).await;
    let key = admin_key();
    let headers = [
        ("x-api-key", key.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", "regen-once"),
    ];
    let path = format!("/v1/content/{id}/regenerate");
    let first = gw.send(Method::POST, &path, &headers, Bytes::new()).await;
    assert_eq!(first.status, 200, "{}", text(&first));
    let now = first.json();
    let current = asset_ids(&now);
    // The new version is read (and cached), then the client retries the
    // same request: the origin answers its recorded response, no new media.
    assert_eq!(gw.warm(id).await, now);
    let retry = gw.send(Method::POST, &path, &headers, Bytes::new()).await;
    assert_eq!(retry.status, 200, "{}", text(&retry));
    assert_eq!(retry.body, first.body, "an idempotent replay");
    assert_eq!(
        h.sim.container(id).unwrap(),
        now,
        "the origin did not regenerate again"
    );

    let r = gw.container(id).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        asset_ids(&r.json()),
        current,
        "the current assets are still served"
    );
    assert_eq!(r.json(), now);
    assert_assets_200(&gw, id, &current).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_racing_a_regenerate_through_the_gateway_keeps_the_new_assets() {
    let sim = demo_simulator();
    let gw = Gw::Local(in_process(&sim, ""));
    let id = slideshow();
    let old = sim.container(id).unwrap();
    // The origin regenerates on arrival and answers a second later.
    sim.set_failure(Some(FailureMode::Delay(Duration::from_secs(1))));
    let post = tokio::spawn({
        let gw = gw.clone();
        async move {
            gw.mutate(Method::POST, &format!("/v1/content/{id}/regenerate"), "")
                .await
        }
    });
    wait_for("the origin to regenerate", || sim.container(id).unwrap() != old).await;
    sim.set_failure(None);
    let now = sim.container(id).unwrap();
    // Meanwhile another partner reads the container: the new version.
    let r = gw.container(id).await;
    assert_eq!(r.json(), now);

    let reply = tokio::time::timeout(Duration::from_secs(10), post)
        .await
        .expect("the regenerate finishes")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", text(&reply));
    assert_eq!(reply.json(), now);

    let after = gw.container(id).await;
    assert_eq!(
        asset_ids(&after.json()),
        asset_ids(&now),
        "the assets the regenerate created are served"
    );
    assert_assets_200(&gw, id, &asset_ids(&now)).await;
    assert_assets_404(&gw, id, &asset_ids(&old)).await;
}

#[tokio::test]
async fn a_caption_patched_through_the_gateway_shows_on_the_next_read() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = gw.warm(id).await;
    let r = gw
        .mutate(
            Method::PATCH,
            &container_path(id),
            r#"{"caption":"Summer edit."}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let read = gw.container(id).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["caption"], "Summer edit.");
    assert_eq!(
        asset_ids(&read.json()),
        asset_ids(&old),
        "a caption edit keeps the assets"
    );
    assert_assets_200(&gw, id, &asset_ids(&old)).await;
    h.stop().await;
}

#[tokio::test]
async fn a_delete_through_the_gateway_answers_404_from_then_on() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = gw.warm(id).await;
    let r = gw.mutate(Method::DELETE, &container_path(id), "").await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let before = h.sim.total_requests();
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_assets_404(&gw, id, &asset_ids(&old)).await;
    assert_eq!(h.sim.total_requests(), before, "tombstoned");
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Tombstones, under tokio's paused clock.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_tombstone_answers_404_without_the_origin_until_it_expires() {
    let sim = demo_simulator();
    let gw = Gw::Local(in_process(&sim, "[invalidation]\ntombstone_secs = 60\n"));
    let id = slideshow();
    let old = gw.warm(id).await;
    assert!(sim.delete(id));
    gw.deliver("content.deleted", deleted_data(id, &old)).await;

    let origin_calls = sim.total_requests();
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_assets_404(&gw, id, &asset_ids(&old)).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_eq!(
        sim.total_requests(),
        origin_calls,
        "no origin call while tombstoned"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    let gets = sim.request_count("GET", &container_path(id));
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_eq!(
        sim.request_count("GET", &container_path(id)),
        gets + 1,
        "after expiry the origin is asked again"
    );
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_eq!(
        sim.request_count("GET", &container_path(id)),
        gets + 1,
        "the origin's 404 is remembered for cache.negative_ttl_secs"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    gw.container(id).await.assert_error(404, "NOT_FOUND");
    assert_eq!(
        sim.request_count("GET", &container_path(id)),
        gets + 2,
        "and only that long"
    );
}

#[tokio::test(start_paused = true)]
async fn content_generated_lifts_a_tombstone_early() {
    let sim = demo_simulator();
    let gw = Gw::Local(in_process(&sim, "[invalidation]\ntombstone_secs = 60\n"));
    let id = slideshow();
    let old = gw.warm(id).await;
    assert!(sim.delete(id));
    gw.deliver("content.deleted", deleted_data(id, &old)).await;
    gw.container(id).await.assert_error(404, "NOT_FOUND");

    // New content is generated under the same container id, with new assets.
    let mut reborn = old.clone();
    for a in reborn["assets"].as_array_mut().unwrap() {
        let new_id = format!("{}-reborn", a["assetId"].as_str().unwrap());
        a["url"] = Value::from(format!(
            "https://cdn.layers.example/org_demo_a/reborn/{new_id}.jpg"
        ));
        a["thumbnailUrl"] = Value::Null;
        a["assetId"] = Value::from(new_id);
    }
    // The generated event must show it follows the delete: its change time
    // is later than when the delete was applied.
    let later = layers_gateway::cache::time::format_rfc3339(unix_now() + 5);
    reborn["updatedAt"] = Value::from(later.clone());
    sim.insert_container("org_demo_a", reborn.clone());
    tokio::time::advance(Duration::from_secs(1)).await;
    gw.deliver(
        "content.generated",
        json!({ "id": SLIDESHOW, "previousAssetIds": [], "assets": asset_refs(&reborn), "updatedAt": later }),
    )
    .await;

    let r = gw.container(id).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.x_cache(), Some("MISS"));
    assert_eq!(r.json(), reborn);
    assert_carries_none(&r, &asset_ids(&old), &urls(&old["assets"]));
    assert_assets_404(&gw, id, &asset_ids(&old)).await;
    assert_assets_200(&gw, id, &asset_ids(&reborn)).await;
}

#[tokio::test(start_paused = true)]
async fn a_generated_event_not_shown_to_follow_the_delete_keeps_the_tombstone() {
    let sim = demo_simulator();
    let gw = Gw::Local(in_process(&sim, "[invalidation]\ntombstone_secs = 60\n"));
    let id = slideshow();
    let old = gw.warm(id).await;
    // A lagging replica keeps the container; the delete is applied.
    gw.deliver("content.deleted", deleted_data(id, &old)).await;
    // The origin retries an older `generated` (no change time, or one
    // from before the delete).
    let before = layers_gateway::cache::time::format_rfc3339(unix_now() - 3600);
    for data in [
        json!({ "id": SLIDESHOW, "assets": asset_refs(&old) }),
        json!({ "id": SLIDESHOW, "assets": asset_refs(&old), "updatedAt": before }),
    ] {
        gw.deliver("content.generated", data).await;
        gw.container(id).await.assert_error(404, "NOT_FOUND");
    }
}

// ---------------------------------------------------------------------------
// Stale-if-error never outlives an invalidation.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_invalidated_entry_is_never_served_stale_when_the_origin_fails() {
    let sim = demo_simulator();
    let gateway = in_process(&sim, "[cache]\nttl_secs = 1\nstale_if_error_secs = 600\n");
    let gw = Gw::Local(gateway.clone());
    let updated = slideshow();
    let regenerated = video();
    let purged = ContainerId::parse("cnt_1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5").unwrap();
    let untouched = ContainerId::parse("cnt_2b4d6f80-1a3c-4e5a-9b7d-c0e2f4a6b8d0").unwrap();
    for id in [updated, regenerated, purged, untouched] {
        gw.warm(id).await;
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    sim.set_failure(Some(FailureMode::Status(500)));

    // Past its TTL, an entry nothing invalidated is served stale.
    let r = gw.container(untouched).await;
    assert_eq!(
        (r.status.as_u16(), r.x_cache()),
        (200, Some("STALE")),
        "{}",
        text(&r)
    );

    gw.deliver("content.updated", json!({ "id": updated.to_string() }))
        .await;
    gw.deliver(
        "content.regenerated",
        json!({ "id": regenerated.to_string(), "previousAssetIds": [], "assets": [] }),
    )
    .await;
    purge_in_process(&gateway, &format!("container={purged}")).await;
    // No stale copy may answer: the origin's own 500 envelope does.
    for id in [updated, regenerated, purged] {
        gw.container(id).await.assert_error(500, "INTERNAL");
    }
    purge_in_process(&gateway, "all=true").await;
    gw.container(untouched).await.assert_error(500, "INTERNAL");
}

// ---------------------------------------------------------------------------
// Admin purge.
// ---------------------------------------------------------------------------

async fn purge(admin: &TestClient, query: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    admin
        .send(
            Method::POST,
            &format!("/admin/purge?{query}"),
            &headers,
            Bytes::new(),
        )
        .await
}

#[tokio::test]
async fn purging_one_container_drops_only_that_container() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let (s, v) = (slideshow(), video());
    gw.warm(s).await;
    gw.warm(v).await;
    let r = purge(&h.admin(), &format!("container={s}"), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["status"], "purged");
    assert_eq!(gw.container(s).await.x_cache(), Some("MISS"));
    assert_eq!(gw.container(v).await.x_cache(), Some("HIT"));
    // A purge is no delete: the assets still resolve.
    assert_assets_200(&gw, s, &asset_ids(&h.sim.container(s).unwrap())).await;
    h.stop().await;
}

#[tokio::test]
async fn purging_everything_drops_every_container() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let (s, v) = (slideshow(), video());
    gw.warm(s).await;
    gw.warm(v).await;
    let r = purge(&h.admin(), "all=true", Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["status"], "purged");
    assert_eq!(gw.container(s).await.x_cache(), Some("MISS"));
    assert_eq!(gw.container(v).await.x_cache(), Some("MISS"));
    assert_eq!(gw.container(s).await.x_cache(), Some("HIT"));
    h.stop().await;
}

#[tokio::test]
async fn purge_without_the_admin_token_is_401_and_purges_nothing() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let s = slideshow();
    gw.warm(s).await;
    let admin = h.admin();
    let one = format!("container={s}");
    for (query, token) in [
        ("all=true", None),
        ("all=true", Some("wrong-token")),
        ("all=true", Some("")),
        (one.as_str(), None),
        (one.as_str(), Some("wrong-token")),
    ] {
        purge(&admin, query, token)
            .await
            .assert_error(401, "UNAUTHENTICATED");
    }
    // The token in another header form is not accepted either.
    let r = admin
        .send(
            Method::POST,
            "/admin/purge?all=true",
            &[("authorization", ADMIN_TOKEN)],
            Bytes::new(),
        )
        .await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(gw.container(s).await.x_cache(), Some("HIT"));
    h.stop().await;
}

#[tokio::test]
async fn the_partner_port_does_not_serve_admin_purge() {
    let h = Harness::start().await;
    let gw = tcp(&h);
    let s = slideshow();
    gw.warm(s).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for query in ["all=true".to_owned(), format!("container={s}")] {
        let r = h
            .client
            .send(
                Method::POST,
                &format!("/admin/purge?{query}"),
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
        r.assert_error(404, "NOT_FOUND");
    }
    assert_eq!(gw.container(s).await.x_cache(), Some("HIT"));
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Bounds.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn at_the_revoked_id_cap_the_most_recently_revoked_ids_stay_revoked() {
    let h = Harness::with(
        demo_simulator(),
        "[invalidation]\nmax_revoked_per_container = 2\n",
    )
    .await;
    let gw = tcp(&h);
    let id = slideshow();
    let old = gw.warm(id).await;
    let all = asset_ids(&old);
    // Replica lag: the origin keeps answering with all four assets.
    gw.deliver(
        "content.regenerated",
        json!({ "id": SLIDESHOW, "previousAssetIds": all[..2], "assets": [] }),
    )
    .await;
    gw.deliver(
        "content.regenerated",
        json!({ "id": SLIDESHOW, "previousAssetIds": all[2..], "assets": [] }),
    )
    .await;
    let newest = all[2..].to_vec();
    assert_carries_none(&gw.container(id).await, &newest, &urls_of(&old, &newest));
    assert_assets_404(&gw, id, &newest).await;
    h.stop().await;
}

/// The origin regenerated a container and its webhook has not arrived (or
/// was lost). A read the cache does not serve (a query string) gets the
/// new version from the origin: from then on the cached old version, and
/// its old asset URLs, are no longer served by this instance.
#[tokio::test]
async fn a_variant_read_that_shows_a_newer_version_stops_the_cached_one() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, asset) = first_container(&sim);
    let key = admin_key();
    let path = content_path(&id.to_string());
    assert_eq!(call_get(&gw, &path, &key).await.status, 200);
    assert_eq!(call_get(&gw, &path, &key).await.x_cache(), Some("HIT"));
    // Regenerated at the origin; no webhook target, so no event.
    sim.regenerate(id).expect("the container exists");
    let variant = call_get(&gw, &format!("{path}?fresh=1"), &key).await;
    assert_eq!(variant.status, 200);
    let ids = |r: &Reply| -> Vec<String> {
        r.json()["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["assetId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        !ids(&variant).contains(&asset),
        "the origin shows the new version"
    );
    let after = call_get(&gw, &path, &key).await;
    assert_eq!(after.status, 200);
    assert_ne!(
        after.x_cache(),
        Some("HIT"),
        "the old version is not served from the cache"
    );
    assert_eq!(
        ids(&after),
        ids(&variant),
        "the canonical route shows the new version too"
    );
}

/// `evt_<ULID>` minted `age` ago: the id an origin gave an event then.
fn minted_ago(age: Duration) -> String {
    let at = std::time::SystemTime::now() - age;
    let ms = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    format!("evt_{}", ulid::Ulid::from_parts(ms, 0))
}

/// Noticed after round 73: the origin replays (`replayOf`) a delete it sent
/// two days ago, past its day of retries; the container lives again at the
/// origin. The replay tombstoned it (404 without asking the origin) and
/// revoked the asset ids it named, for the tombstone's TTL. A late or
/// replayed event never revokes what the origin serves now: the cached
/// entry is dropped and the origin is asked again. Where the origin has
/// deleted it, that answer is the 404.
#[tokio::test]
async fn a_delete_replayed_days_later_asks_the_origin_instead_of_tombstoning() {
    let h = without_undated_hold().await;
    let gw = tcp(&h);
    let id = slideshow();
    let before = gw.warm(id).await;
    let asset = before["assets"][0]["assetId"].as_str().unwrap().to_owned();
    let replay = |age: Duration| {
        let replay_id = new_event_id();
        let body = json!({ "id": replay_id, "type": "content.deleted", "replayOf": minted_ago(age),
            "data": { "id": SLIDESHOW, "assets": [asset] } })
        .to_string();
        (body.clone(), signed(&body, &replay_id))
    };

    let (body, headers) = replay(Duration::from_secs(2 * 24 * 3600));
    assert_applied(&gw.post_webhook(&body, &headers).await);
    let r = gw.container(id).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.x_cache(), Some("MISS"));
    assert_eq!(r.json()["assets"], before["assets"]);
    let a = gw.asset(id, &asset).await;
    assert_eq!(a.status, 200, "the replay revoked a current asset: {}", text(&a));

    // Black-box round 82: a replay of a delete minted 31 days or a year ago
    // tombstoned the live container (the month's bound for unmarked ids).
    for days in [31, 365] {
        let (body, headers) = replay(Duration::from_secs(days * 24 * 3600));
        assert_applied(&gw.post_webhook(&body, &headers).await);
        let r = gw.container(id).await;
        assert_eq!(r.status, 200, "a {days}-day-old replay: {}", text(&r));
        assert_eq!(gw.asset(id, &asset).await.status, 200);
    }

    // Deleted at the origin: the replay's drop leads to the origin's 404.
    gw.warm(id).await;
    assert!(h.sim.delete(id));
    let (body, headers) = replay(Duration::from_secs(3 * 24 * 3600));
    assert_applied(&gw.post_webhook(&body, &headers).await);
    assert_eq!(gw.container(id).await.status, 404);

    // A delete within the origin's day of retries still tombstones.
    let v = video();
    gw.warm(v).await;
    let late_id = minted_ago(Duration::from_secs(3600));
    let body = event_body(&late_id, "content.deleted", json!({ "id": VIDEO }));
    assert_applied(&gw.post_webhook(&body, &signed(&body, &late_id)).await);
    let gets = h.sim.container_gets();
    assert_eq!(gw.container(v).await.status, 404);
    assert_eq!(h.sim.container_gets(), gets, "tombstoned: no origin call");
    h.stop().await;
}
