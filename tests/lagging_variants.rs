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
