//! Cluster mode through the real wiring: two gateways (App over TCP, one
//! simulator, one Redis) configured with `[cluster]`.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::ids::ContainerId;
use redis_support::RedisServer;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const WEBHOOK: &str = "/webhooks/layers";

fn asset_ids(v: &Value) -> Vec<String> {
    v["assets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["assetId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn readyz(h: &Harness) -> Value {
    h.admin()
        .send(Method::GET, "/readyz", &[], Bytes::new())
        .await
        .json()
}

async fn metrics(h: &Harness) -> String {
    let r = h.admin().send(Method::GET, "/metrics", &[], Bytes::new()).await;
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wired_gateways_share_invalidations_and_fail_closed_without_redis() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "a")).await;
    let b = Harness::with(sim.clone(), &wired_cluster_config(&redis.url(), "b")).await;
    // A fresh Redis: both wait out the recovery barrier's liveness window
    // once (docs/cluster.md) before they serve content.
    poll_until("A and B synced", Duration::from_secs(10), || async {
        a.gateway().cluster_synced() == Some(true) && b.gateway().cluster_synced() == Some(true)
    })
    .await;
    let (id, _): (ContainerId, String) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let key = admin_key();
    poll_until("ready", Duration::from_secs(5), || async {
        readyz(&b).await["status"] == "ready"
    })
    .await;

    // Regenerate through A: B stops serving the old version.
    b.client.get(&path, &key).await;
    let old = b.client.get(&path, &key).await;
    assert_eq!(old.x_cache(), Some("HIT"));
    let old_ids = asset_ids(&old.json());
    let r = a
        .client
        .send(
            Method::POST,
            &format!("{path}/regenerate"),
            &[("x-api-key", &key), ("content-type", "application/json")],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert!(r.status.is_success());
    poll_until("B drops the container", Duration::from_secs(5), || async {
        let v = b.client.get(&path, &key).await.json();
        asset_ids(&v).iter().all(|i| !old_ids.contains(i))
    })
    .await;

    // A webhook delivered only to B: A drops the container.
    a.client.get(&path, &key).await;
    assert_eq!(a.client.get(&path, &key).await.x_cache(), Some("HIT"));
    let regen = sim.regenerate(id).unwrap();
    let now = sim.container(id).unwrap();
    let body = json!({"id": "evt_01WIREDTEST00000000000001", "type": "content.regenerated", "data": {
        "id": id.to_string(), "previousAssetIds": regen.previous_asset_ids,
        "assets": now["assets"].as_array().unwrap().iter().map(|x| json!({"assetId": x["assetId"], "url": x["url"]})).collect::<Vec<_>>()}})
    .to_string();
    let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    headers.push(("x-layers-event-id".into(), "evt_01WIREDTEST00000000000001".into()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = b.client.send(Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
    assert_eq!(r.status, 200);
    poll_until("A drops the container", Duration::from_secs(5), || async {
        let r = a.client.get(&path, &key).await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        regen.previous_urls.iter().all(|u| !text.contains(u.as_str()))
    })
    .await;

    // Redis dies: B fails closed and says so.
    redis.kill();
    poll_until("B degraded", Duration::from_secs(3), || async {
        readyz(&b).await["status"] == "degraded"
    })
    .await;
    assert_eq!(b.gateway().cluster_synced(), Some(false));
    let before = sim.request_count("GET", &path);
    let r = b.client.get(&path, &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.x_cache(), None, "not from the cache");
    assert_eq!(
        sim.request_count("GET", &path),
        before + 1,
        "served from the origin"
    );
    let m = metrics(&b).await;
    assert!(m.contains("layers_gateway_cluster_synced 0"), "{m}");
    assert!(
        m.contains("layers_gateway_cluster_bypassed_requests_total 1"),
        "{m}"
    );
    assert!(m.contains("layers_gateway_cache_lookups_total{result=\"bypass\"} 1"));
    // Accepting an invalidation now: applied here, 503 so the origin retries.
    let purge = b
        .admin()
        .send(
            Method::POST,
            &format!("/admin/purge?container={id}"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            Bytes::new(),
        )
        .await;
    assert_eq!(purge.status, 503);
    assert_eq!(purge.json()["propagated"], false);
    // Authentication and limits keep working (on the local share).
    assert_eq!(b.client.get("/v1/whoami", &key).await.status, 200);

    // Redis back: B catches up (flushing: the new Redis is empty) and caches again.
    redis.restart();
    poll_until("B ready again", Duration::from_secs(10), || async {
        readyz(&b).await["status"] == "ready"
    })
    .await;
    // The peers' re-published fences (this container's revoked ids) may
    // drop the first fill again: caching resumes within a few reads.
    poll_until("B caches again", Duration::from_secs(5), || async {
        b.client.get(&path, &key).await.x_cache() == Some("HIT")
    })
    .await;
    let m = metrics(&b).await;
    assert!(m.contains("layers_gateway_cluster_stream_gaps_total 1"), "{m}");
    assert!(m.contains("layers_gateway_cluster_synced 1"));
    a.stop().await;
    b.stop().await;
}
