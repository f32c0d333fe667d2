//! A webhook retried or replayed on another instance of a cluster: the
//! origin retries through its load balancer, so the retry of an event one
//! instance applied and published lands anywhere. Two wired gateways, one
//! Redis (a real `redis-server` this test starts).
//!
//! Black-box round 67 found the instances kept two dedupe stores: the
//! webhook handler's (filled only by webhooks it took itself) and the
//! cluster node's (filled by the stream). A retry on the instance that
//! learned the event from the stream was applied again ("applied"): every
//! cached container of the event dropped, its fence bumped, and a dated
//! delete re-applied, on every retry of the origin's day-long schedule.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use http::Method;
use redis_support::RedisServer;
use serde_json::json;
use std::time::Duration;
use support::*;

const WEBHOOK: &str = "/webhooks/layers";

async fn metric(h: &Harness, name: &str) -> u64 {
    let r = h.admin().send(Method::GET, "/metrics", &[], Bytes::new()).await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0) as u64
}

/// Delivers `body` signed, as the origin does, and returns the answer's
/// status and `status` field.
async fn deliver(h: &Harness, body: &str, event_id: &str) -> (u16, String) {
    let r = deliver_webhook(h, body, event_id).await;
    let status = r.json()["status"].as_str().unwrap_or_default().to_owned();
    (r.status.as_u16(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_or_replay_on_the_instance_that_learned_the_event_from_the_stream_is_a_duplicate() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "a")).await;
    let b = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "b")).await;
    poll_until("A and B synced", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true) && b.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _) = first_container(&sim);
    let event_id = unique_event_id();
    let body = json!({"id": event_id, "type": "content.updated", "data": {"id": id.to_string()}}).to_string();

    let applied_before = metric(&a, "layers_gateway_cluster_stream_applied_total").await;
    assert_eq!(deliver(&b, &body, &event_id).await, (200, "applied".into()));
    poll_until("A applied B's entry", Duration::from_secs(5), || async {
        metric(&a, "layers_gateway_cluster_stream_applied_total").await > applied_before
    })
    .await;

    // The origin's retry lands on A.
    let dup_before = metric(&a, "layers_gateway_webhooks_duplicate_total").await;
    assert_eq!(
        deliver(&a, &body, &event_id).await,
        (200, "duplicate".into()),
        "a retry on the instance that learned the event from the stream"
    );
    // A replay (new id, `replayOf` the original) lands on A as well.
    let replay_id = unique_event_id();
    let replay = json!({"id": replay_id, "replayOf": event_id, "type": "content.updated", "data": {"id": id.to_string()}})
        .to_string();
    assert_eq!(deliver(&a, &replay, &replay_id).await, (200, "duplicate".into()));
    assert_eq!(
        metric(&a, "layers_gateway_webhooks_duplicate_total").await,
        dup_before + 2
    );
    // And B, which took the original, still knows it.
    assert_eq!(deliver(&b, &body, &event_id).await, (200, "duplicate".into()));

    // A new event is still applied wherever it lands.
    let fresh_id = unique_event_id();
    let fresh =
        json!({"id": fresh_id, "type": "content.updated", "data": {"id": id.to_string()}}).to_string();
    assert_eq!(deliver(&a, &fresh, &fresh_id).await, (200, "applied".into()));
    a.stop().await;
    b.stop().await;
}

/// Black-box round 70: only `evt_` ids were deduplicated. An origin whose
/// ids have another form (`del-7`) had every retry applied again, and a
/// retried delete, after the container was re-created, tombstoned it.
#[tokio::test]
async fn a_retry_of_an_event_whose_id_is_not_the_origins_form_is_a_duplicate() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let gw = in_process(&sim, "");
    let key = admin_key();
    let path = format!("/v1/content/{id}");
    let delete =
        json!({"id": "del-7", "type": "content.deleted", "data": {"id": id.to_string()}}).to_string();
    let send = |body: String| {
        let gw = &gw;
        async move {
            let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let r = call(gw, Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
            r.json()["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert_eq!(send(delete.clone()).await, "applied");
    assert_eq!(call_get(&gw, &path, &key).await.status, 404);
    // Re-created, dated after the delete (an undated one cannot lift it).
    let at = support::fence_fixtures::rfc3339_ms(unix_now() * 1000 + 60_000);
    let regenerated =
        json!({"id": "gen-8", "type": "content.generated", "data": {"id": id.to_string(), "updatedAt": at}})
            .to_string();
    assert_eq!(send(regenerated).await, "applied");
    assert_eq!(call_get(&gw, &path, &key).await.status, 200, "re-created");
    assert_eq!(
        send(delete).await,
        "duplicate",
        "the origin's retry of the delete"
    );
    assert_eq!(call_get(&gw, &path, &key).await.status, 200, "still live");
}

/// Attacker review, round 3: with ids of another form deduplicated, an
/// origin reusing a short id for another event (per container, or after a
/// restart) would have that event skipped. Such an id is remembered with
/// the event's type and container.
#[tokio::test]
async fn a_short_id_reused_for_another_container_s_delete_is_applied() {
    let sim = demo_simulator();
    let ids: Vec<_> = sim
        .container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, c)| c)
        .collect();
    let gw = in_process(&sim, "");
    let key = admin_key();
    for id in [ids[0], ids[1]] {
        let body = json!({"id": "7", "type": "content.deleted", "data": {"id": id.to_string()}}).to_string();
        let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = call(&gw, Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
        assert_eq!(r.json()["status"], "applied", "{id}");
        assert_eq!(
            call_get(&gw, &format!("/v1/content/{id}"), &key).await.status,
            404,
            "{id} deleted"
        );
    }
}

/// Attacker review 91: once the stream stopped remembering a history
/// verdict as applied (a tombstoning entry of the same event may follow),
/// a peer that read B's history entry took a captured copy of the same
/// signed delivery as new: applied it, published it again and took its
/// sender for the origin. It is a duplicate there, as any event read from
/// the stream is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_delivery_resent_to_a_peer_is_a_duplicate() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let b = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "b")).await;
    let c = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "c")).await;
    poll_until("B and C synced", Duration::from_secs(10), || async {
        b.gateway().cluster_synced() == Some(true) && c.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _) = first_container(&sim);
    // A replay of a delete minted 26 hours ago: history.
    let minted = unix_now() as u64 * 1000 - 26 * 3_600_000;
    let original = format!("evt_{}", ulid::Ulid::from_parts(minted, 0));
    let replay_id = format!("evt_{}", ulid::Ulid::new());
    let body = json!({"id": replay_id, "replayOf": original, "type": "content.deleted",
        "data": {"id": id.to_string()}})
    .to_string();
    const APPLIED: &str = "layers_gateway_cluster_stream_applied_total";
    let applied = metric(&c, APPLIED).await;
    assert_eq!(deliver(&b, &body, &replay_id).await, (200, "applied".into()));
    poll_until("C read B's entry", Duration::from_secs(5), || async {
        metric(&c, APPLIED).await > applied
    })
    .await;
    assert_eq!(
        deliver(&c, &body, &replay_id).await,
        (200, "duplicate".into()),
        "a captured history delivery is taken again by a peer"
    );
    b.stop().await;
    c.stop().await;
}

/// Attacker review of the above: a peer that read an event only as
/// history answered `duplicate` to a delivery of the same event that would
/// tombstone. Here the origin's copies are dated by `updatedAt` (ids not of
/// its `evt_<ULID>` form): a replay (`replayOf`) 26 hours old is history,
/// the unmarked original is a delete. A copy judged history again is still
/// a duplicate (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_settles_is_applied_where_the_event_was_only_history() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let b = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "b")).await;
    let c = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "c")).await;
    poll_until("B and C synced", Duration::from_secs(10), || async {
        b.gateway().cluster_synced() == Some(true) && c.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let key = admin_key();
    let changed = support::fence_fixtures::rfc3339_ms(unix_now() * 1000 - 26 * 3_600_000);
    let replay = json!({"id": "del-9-replay", "replayOf": "del-9", "type": "content.deleted",
        "data": {"id": id.to_string(), "updatedAt": changed}})
    .to_string();
    const APPLIED: &str = "layers_gateway_cluster_stream_applied_total";
    let applied = metric(&c, APPLIED).await;
    assert_eq!(
        deliver(&b, &replay, "del-9-replay").await,
        (200, "applied".into())
    );
    assert_eq!(b.client.get(&path, &key).await.status, 200, "history on B");
    poll_until("C read B's entry", Duration::from_secs(5), || async {
        metric(&c, APPLIED).await > applied
    })
    .await;
    let original = json!({"id": "del-9", "type": "content.deleted",
        "data": {"id": id.to_string(), "updatedAt": changed}})
    .to_string();
    assert_eq!(
        deliver(&c, &original, "del-9").await,
        (200, "applied".into()),
        "the delete itself, not a replay"
    );
    assert_eq!(c.client.get(&path, &key).await.status, 404);
    poll_until("B takes C's tombstone", Duration::from_secs(5), || async {
        b.client.get(&path, &key).await.status == 404
    })
    .await;
    b.stop().await;
    c.stop().await;
}
