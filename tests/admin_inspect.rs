//! The inspect endpoints of the admin listener: what the cache holds for a
//! container (`/admin/containers/:id`), what a key may still do
//! (`/admin/keys/:keyId`) and the cluster state (`/admin/cluster`). All
//! need the admin token; none shows a key, its digest or a secret.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use support::*;

async fn admin_get(h: &Harness, path: &str) -> Reply {
    h.admin()
        .send(
            Method::GET,
            path,
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            Bytes::new(),
        )
        .await
}

async fn inspect(h: &Harness, path: &str) -> Value {
    let r = admin_get(h, path).await;
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test]
async fn every_inspect_endpoint_refuses_a_missing_or_wrong_token_with_the_error_envelope() {
    let h = Harness::start().await;
    let (id, _) = first_container(&h.sim);
    for path in [
        format!("/admin/containers/{id}"),
        "/admin/keys/DEM0ADM1N0000A01".to_owned(),
        "/admin/cluster".to_owned(),
    ] {
        let r = h.admin().send(Method::GET, &path, &[], Bytes::new()).await;
        r.assert_error(401, "UNAUTHENTICATED");
        let r = h
            .admin()
            .send(
                Method::GET,
                &path,
                &[("authorization", "Bearer wrong")],
                Bytes::new(),
            )
            .await;
        r.assert_error(401, "UNAUTHENTICATED");
        assert!(!String::from_utf8_lossy(&r.body).contains("org_demo_a"), "{path}");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_container_shows_its_entry_then_its_revocations_then_its_tombstone() {
    let h = Harness::start().await;
    let (id, asset) = first_container(&h.sim);
    let path = format!("/admin/containers/{id}");

    let empty = inspect(&h, &path).await;
    assert_eq!(empty["entries"], serde_json::json!([]), "{empty}");

    let r = h.client.get(&format!("/v1/content/{id}"), &admin_key()).await;
    assert_eq!(r.status, 200);
    let v = inspect(&h, &path).await;
    assert_eq!(v["containerId"], id.to_string());
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{v}");
    let e = &entries[0];
    assert_eq!(e["organizationId"], "org_demo_a");
    assert!(e["ttlLeftMs"].as_u64().unwrap() > 0, "{e}");
    assert!(e["sizeBytes"].as_u64().unwrap() as usize >= r.body.len(), "{e}");
    assert_eq!(e["servable"], true);
    assert_eq!(e["variants"], serde_json::json!(["identity"]));
    let generation = v["fence"]["generation"].as_u64().unwrap();
    assert_eq!(v["fence"]["tombstone"], Value::Null);

    // Regenerate through the gateway: the old asset id is revoked, the
    // entry is gone, the generation moved on.
    let r = h
        .client
        .send(
            Method::POST,
            &format!("/v1/content/{id}/regenerate"),
            &[("x-api-key", &admin_key())],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = inspect(&h, &path).await;
    assert_eq!(v["entries"], serde_json::json!([]), "{v}");
    assert!(v["fence"]["generation"].as_u64().unwrap() > generation, "{v}");
    let revoked = v["fence"]["revokedAssets"].as_array().unwrap();
    let old = revoked
        .iter()
        .find(|r| r["assetId"] == asset.as_str())
        .unwrap_or_else(|| panic!("{asset} not listed as revoked: {v}"));
    assert!(old["expiresInMs"].as_u64().unwrap() > 0);

    // Delete through the gateway: a tombstone with its expiry.
    let r = h
        .client
        .send(
            Method::DELETE,
            &format!("/v1/content/{id}"),
            &[("x-api-key", &admin_key())],
            Bytes::new(),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    let v = inspect(&h, &path).await;
    assert!(
        v["fence"]["tombstone"]["expiresInMs"].as_u64().unwrap() > 0,
        "{v}"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_origin_404_shows_in_the_negative_cache_of_that_organization() {
    let h = Harness::start().await;
    let unknown = "cnt_00000000-0000-4000-8000-000000000404";
    let r = h
        .client
        .get(&format!("/v1/content/{unknown}"), &admin_key())
        .await;
    assert_eq!(r.status, 404);
    let v = inspect(&h, &format!("/admin/containers/{unknown}")).await;
    let negatives = v["negativeCache"]["entries"].as_array().unwrap();
    assert_eq!(negatives.len(), 1, "{v}");
    assert_eq!(negatives[0]["organizationId"], "org_demo_a");
    assert_eq!(negatives[0]["status"], 404);
    assert_eq!(negatives[0]["current"], true);
    h.stop().await;
}

#[tokio::test]
async fn a_bad_container_id_is_a_validation_error() {
    let h = Harness::start().await;
    admin_get(&h, "/admin/containers/not-an-id")
        .await
        .assert_error(422, "VALIDATION");
    h.stop().await;
}

#[tokio::test]
async fn a_key_shows_its_principal_and_budgets_but_never_its_digest_or_secret() {
    let h = Harness::start().await;
    let key = admin_key();
    let key_id = "DEM0ADM1N0000A01";
    let before = inspect(&h, &format!("/admin/keys/{key_id}")).await;
    assert_eq!(before["keyId"], key_id);
    assert_eq!(before["organizationId"], "org_demo_a");
    assert_eq!(before["tier"], "pilot");
    assert!(before["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "content:read"));
    let read = |v: &Value| -> u64 {
        v["rateLimits"]["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == "read-light")
            .unwrap()["budget"]["remaining"]
            .as_u64()
            .unwrap()
    };
    let writes_used = |v: &Value| v["rateLimits"]["dailyWrites"]["used"].as_u64().unwrap();
    assert_eq!(read(&before), 1200, "{before}");
    assert_eq!(writes_used(&before), 0);

    for _ in 0..3 {
        assert_eq!(h.client.get("/v1/whoami", &key).await.status, 200);
    }
    let (id, _) = first_container(&h.sim);
    let r = h
        .client
        .send(
            Method::PATCH,
            &format!("/v1/content/{id}"),
            &[("x-api-key", &key), ("content-type", "application/json")],
            Bytes::from_static(br#"{"caption":"inspected"}"#),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    let after = inspect(&h, &format!("/admin/keys/{key_id}")).await;
    // Three requests spent; the budget refills at 20 a second meanwhile.
    assert!((1197..1200).contains(&read(&after)), "{after}");
    assert_eq!(writes_used(&after), 1, "{after}");

    let text = after.to_string();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    assert!(
        !text.to_lowercase().contains(&digest),
        "the key's digest leaked: {text}"
    );
    let secret = key.splitn(4, '_').nth(3).unwrap();
    assert!(!text.contains(secret), "the secret leaked: {text}");
    assert!(!text.contains("sha256"), "{text}");

    admin_get(&h, "/admin/keys/ZZZZZZZZZZZZZZZZ")
        .await
        .assert_error(404, "NOT_FOUND");
    admin_get(&h, "/admin/keys/short")
        .await
        .assert_error(422, "VALIDATION");
    h.stop().await;
}

#[tokio::test]
async fn a_single_instance_says_it_has_no_cluster() {
    let h = Harness::start().await;
    let v = inspect(&h, "/admin/cluster").await;
    assert_eq!(v, serde_json::json!({ "enabled": false }));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_instance_shows_its_sync_state_and_why_it_lost_it() {
    let Some(mut redis) = redis_support::RedisServer::start() else {
        return;
    };
    let cluster = format!(
        "[cluster]\nredis_url = \"{}\"\nsecret = \"layers-test-only-cluster-secret\"\ninstance_id = \"inspect-a\"\nmax_unsynced_ms = 1000\nblock_ms = 100\n\
         connect_timeout_ms = 300\ncommand_timeout_ms = 300\nlease_retry_ms = 300\n",
        redis.url()
    );
    let h = Harness::with(demo_simulator(), &cluster).await;
    // A fresh Redis: the recovery barrier holds one liveness window (2 s
    // here) before the instance counts as synced, and says so.
    let first = inspect(&h, "/admin/cluster").await;
    if first["synced"] != true {
        assert_eq!(first["awaitingPeers"], true, "{first}");
    }
    let mut v = first;
    let started = std::time::Instant::now();
    while v["synced"] != true && started.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        v = inspect(&h, "/admin/cluster").await;
    }
    assert_eq!(v["awaitingPeers"], false, "{v}");
    assert_eq!(v["enabled"], true, "{v}");
    assert_eq!(v["instanceId"], "inspect-a");
    assert_eq!(v["synced"], true, "{v}");
    assert_eq!(v["outbox"]["depth"], 0);
    assert!(
        v["lastProofAgoMs"].as_u64().unwrap() < 5_000,
        "a recent read to the stream's end: {v}"
    );
    assert!(
        !v.to_string().contains(&redis.url()),
        "the Redis URL is never shown: {v}"
    );

    redis.kill();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let v = inspect(&h, "/admin/cluster").await;
        if v["synced"] == false {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never unsynced: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        v["reason"].as_str().unwrap().contains("served from the origin"),
        "{v}"
    );
    h.stop().await;
}
