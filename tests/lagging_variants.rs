//! Reads of a content route that the cache does not answer (a query
//! string, an alias) behind a lagging origin replica: a container body
//! older than a change the gateway applied is asked for once more after
//! `cache.lag_retry_ms`, as a fill is (promise 1: "not from a proxied
//! variant of a content route").

mod support;

use bytes::Bytes;
use http::Method;
use std::time::Duration;
use support::*;

#[tokio::test(start_paused = true)]
async fn a_variant_read_behind_a_lagging_replica_is_asked_again() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    // The replica is behind for less than the retry delay.
    sim.set_replica_lag(id, Some(Duration::from_millis(40)));
    sim.set_lenient_paths(true);
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    let headers = [("x-api-key", key.as_str()), ("content-type", "application/json")];
    for (n, path) in [format!("/v1/content/{id}?x=1"), format!("/v1/content/{id}/")]
        .iter()
        .enumerate()
    {
        let caption = format!("edited {n}");
        let body = serde_json::json!({ "caption": caption }).to_string();
        let r = call(
            &gw,
            Method::PATCH,
            &format!("/v1/content/{id}"),
            &headers,
            Bytes::from(body),
        )
        .await;
        assert_eq!(r.status, 200);
        // Acknowledged: the replica still answers the previous caption.
        let r = call_get(&gw, path, &key).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["caption"], caption.as_str(), "{path}: asked again");
    }
}

/// Delivers a signed webhook to the in-process gateway; asserts it applied.
async fn deliver(gw: &layers_gateway::service::Gateway, n: u32, ty: &str, data: serde_json::Value) {
    let body =
        serde_json::json!({ "id": format!("evt_01LAGGING{n:016}"), "type": ty, "data": data }).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(gw, Method::POST, "/webhooks/layers", &h, Bytes::from(body)).await;
    assert_eq!(r.body.as_ref(), br#"{"status":"applied"}"#);
}

#[tokio::test(start_paused = true)]
async fn a_fill_behind_a_lagging_replica_is_asked_again_even_if_invalidated_meanwhile() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    sim.set_replica_lag(id, Some(Duration::from_millis(40)));
    let gw = in_process(&sim, "[cache]\nlag_retry_ms = 100\n");
    let key = admin_key();
    assert!(sim.update_caption(id, "edited"));
    let updated_at = sim.container(id).unwrap()["updatedAt"].clone();
    let data = serde_json::json!({ "id": id.to_string(), "updatedAt": updated_at });
    deliver(&gw, 1, "content.updated", data.clone()).await;
    // Acknowledged. A read fills from the replica, which is behind; while
    // its answer is held, another event for the container is applied.
    let gate = sim.hold();
    let gets = sim.container_gets();
    let read = tokio::spawn({
        let (gw, key) = (gw.clone(), key.clone());
        async move { call_get(&gw, &format!("/v1/content/{id}"), &key).await }
    });
    while sim.container_gets() == gets {
        tokio::task::yield_now().await;
    }
    deliver(
        &gw,
        2,
        "content.approved",
        serde_json::json!({ "id": id.to_string() }),
    )
    .await;
    gate.release();
    let r = read.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["caption"],
        "edited",
        "the replica's older caption was served"
    );
}
