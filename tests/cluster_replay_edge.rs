//! Cluster mode at the edge of the origin's retries: a replayed delete
//! (`replayOf`) is history when it was minted before the origin's day of
//! retries (`cache::fence::is_past_replay`), and that is judged once, by
//! the instance that accepted it, at the time it accepted it. Every peer,
//! the fence record and every later joiner take the same verdict, however
//! late they read the entry.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use http::Method;
use redis_support::{Partition, RedisServer};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

const WEBHOOK: &str = "/webhooks/layers";
/// The origin's day of retries plus an hour (`fence::MINTED_WINDOW_MS`).
const RETRIES: Duration = Duration::from_secs(25 * 3600);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Review 85, B: A accepts a replayed delete minted just inside the
/// retries (a tombstone) while it cannot reach Redis; its entry waits in
/// the outbox until the delete's date has crossed the edge. Each party
/// used to judge the entry at its own reading time: the fence record
/// merged at the drain, and B read the entry, after the edge, took it for
/// history, dropped no tombstone and refilled the container from a
/// (lagging) origin that still serves it, while A refused it. The verdict
/// is A's, taken when it accepted the delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delete_read_after_the_retry_edge_keeps_the_acceptor_s_verdict() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let link = Partition::to(redis.addr()).await;
    let a = Harness::with(sim.clone(), &wired_cluster_config(&link.url(), "a")).await;
    let b = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "b")).await;
    poll_until("A and B synced", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true) && b.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let key = admin_key();
    poll_until("B serves from its cache", Duration::from_secs(5), || async {
        b.client.get(&path, &key).await.x_cache() == Some("HIT")
    })
    .await;

    // A loses Redis; the origin replays a delete minted 25 hours less a
    // few seconds ago. A is the first to hear of it: within the retries,
    // so a tombstone, and the publication waits in A's outbox.
    link.cut();
    poll_until("A unsynced", Duration::from_secs(5), || async {
        a.gateway().cluster_synced() == Some(false)
    })
    .await;
    let minted = unix_ms() - RETRIES.as_millis() as u64 + 2_500;
    let original = format!("evt_{}", ulid::Ulid::from_parts(minted, 0));
    let replay_id = format!("evt_{}", ulid::Ulid::new());
    let body = json!({"id": replay_id, "replayOf": original, "type": "content.deleted",
        "data": {"id": id.to_string()}})
    .to_string();
    let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    headers.push(("x-layers-event-id".into(), replay_id.clone()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = a.client.send(Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
    assert!(
        unix_ms() < minted + RETRIES.as_millis() as u64,
        "the machine stalled past the edge before A judged the delete; the test proves nothing"
    );
    assert!(r.status == 200 || r.status == 503, "{}", r.status);

    // The delete's date crosses the edge; then A reaches Redis again.
    let past_edge = minted + RETRIES.as_millis() as u64 + 300;
    while unix_ms() < past_edge {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link.heal();
    poll_until("A synced again", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true)
    })
    .await;

    // The origin still serves the container (a lagging replica would):
    // the tombstone is the only thing between a partner and it.
    poll_until("B takes A's tombstone", Duration::from_secs(10), || async {
        b.client.get(&path, &key).await.status == 404
    })
    .await;
    assert_eq!(a.client.get(&path, &key).await.status, 404, "A's own verdict");

    // A joiner rebuilds from the fence record, merged at the drain.
    let c = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "c")).await;
    poll_until("C synced", Duration::from_secs(10), || async {
        c.gateway().cluster_synced() == Some(true)
    })
    .await;
    let gets = sim.request_count("GET", &path);
    let r = c.client.get(&path, &key).await;
    assert_eq!(r.status, 404, "the joiner's verdict");
    assert_eq!(
        sim.request_count("GET", &path),
        gets,
        "tombstoned: no origin call"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// Attacker review 89: an instance re-publishes the fences it holds after
/// Redis lost data. A tombstone of a delete the origin dated by its event
/// id went out dated so, with no acceptance time: re-published after the
/// delete's date crossed the retry edge, the fence record took it for a
/// replay past the retries, and a joiner served the deleted container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_re_published_after_the_retry_edge_still_tombstones() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "a")).await;
    poll_until("A synced", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let key = admin_key();

    // The origin's last retry of a delete minted 25 hours less a few
    // seconds ago: within the retries, so a tombstone.
    let minted = unix_ms() - RETRIES.as_millis() as u64 + 2_500;
    let event_id = format!("evt_{}", ulid::Ulid::from_parts(minted, 0));
    let body = json!({"id": event_id, "type": "content.deleted", "data": {"id": id.to_string()}}).to_string();
    let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    headers.push(("x-layers-event-id".into(), event_id.clone()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = a.client.send(Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
    assert_eq!(r.status, 200);
    assert!(
        unix_ms() < minted + RETRIES.as_millis() as u64,
        "the machine stalled past the edge before A judged the delete; the test proves nothing"
    );
    assert_eq!(a.client.get(&path, &key).await.status, 404);

    // Past the edge, Redis loses everything: A re-publishes its fences.
    let past_edge = minted + RETRIES.as_millis() as u64 + 300;
    while unix_ms() < past_edge {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _: () = redis.cmd(&["FLUSHALL"]);
    poll_until("A re-published and synced", Duration::from_secs(15), || async {
        a.gateway().cluster_synced() == Some(true) && a.client.get(&path, &key).await.status == 404
    })
    .await;

    // A joiner rebuilds from the re-published record.
    let c = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "c")).await;
    poll_until("C synced", Duration::from_secs(15), || async {
        c.gateway().cluster_synced() == Some(true)
    })
    .await;
    let gets = sim.request_count("GET", &path);
    assert_eq!(
        c.client.get(&path, &key).await.status,
        404,
        "the joiner's verdict"
    );
    assert_eq!(
        sim.request_count("GET", &path),
        gets,
        "tombstoned: no origin call"
    );
    a.stop().await;
    c.stop().await;
}

/// Attacker review 89, #4: the origin retries a delivery A accepted (and
/// queued, cut off from Redis) through B, after the delete's date crossed
/// the retry edge. B judges its copy history and publishes it under the
/// same event id. A's tombstoning entry, drained later, was then skipped
/// by every peer as a duplicate of B's, and B served the deleted container
/// from a lagging origin. A history verdict is not remembered as applied:
/// the tombstoning entry is applied whichever arrives first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_judged_history_elsewhere_does_not_hide_the_acceptor_s_tombstone() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let link = Partition::to(redis.addr()).await;
    let a = Harness::with(sim.clone(), &wired_cluster_config(&link.url(), "a")).await;
    let b = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "b")).await;
    poll_until("A and B synced", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true) && b.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let key = admin_key();
    poll_until("B serves from its cache", Duration::from_secs(5), || async {
        b.client.get(&path, &key).await.x_cache() == Some("HIT")
    })
    .await;

    link.cut();
    poll_until("A unsynced", Duration::from_secs(5), || async {
        a.gateway().cluster_synced() == Some(false)
    })
    .await;
    let minted = unix_ms() - RETRIES.as_millis() as u64 + 2_500;
    let original = format!("evt_{}", ulid::Ulid::from_parts(minted, 0));
    let replay_id = format!("evt_{}", ulid::Ulid::new());
    let body = json!({"id": replay_id, "replayOf": original, "type": "content.deleted",
        "data": {"id": id.to_string()}})
    .to_string();
    let r = deliver_webhook(&a, &body, &replay_id).await.status;
    assert!(
        unix_ms() < minted + RETRIES.as_millis() as u64,
        "the machine stalled past the edge before A judged the delete; the test proves nothing"
    );
    assert_eq!(r, 503, "A could not publish: the origin retries");
    assert_eq!(a.client.get(&path, &key).await.status, 404, "A's own verdict");

    // Past the edge, the origin's retry reaches B: history there.
    let past_edge = minted + RETRIES.as_millis() as u64 + 300;
    while unix_ms() < past_edge {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deliver_webhook(&b, &body, &replay_id).await.status, 200);
    assert_eq!(b.client.get(&path, &key).await.status, 200, "history on B");

    // A reaches Redis again and drains its tombstoning entry.
    link.heal();
    poll_until("A synced again", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true)
    })
    .await;
    poll_until("B takes A's tombstone", Duration::from_secs(10), || async {
        b.client.get(&path, &key).await.status == 404
    })
    .await;
    assert_eq!(a.client.get(&path, &key).await.status, 404, "A keeps its verdict");

    let c = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "c")).await;
    poll_until("C synced", Duration::from_secs(10), || async {
        c.gateway().cluster_synced() == Some(true)
    })
    .await;
    assert_eq!(
        c.client.get(&path, &key).await.status,
        404,
        "the joiner's verdict"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}
