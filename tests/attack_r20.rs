//! Attacker reviews, rounds 20 and 21 (the admin purge, last test): the origin-error, `Location` and
//! foreign-write commits (1625e90, 91e6da0, b3543fd/eecb00f). Each test
//! fails on the code as reviewed because of the defect in its doc comment.
//! HTTP tests run in-process under tokio's paused clock; the cluster test
//! uses a loopback Redis (`RedisServer::start()`).

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use cluster_support::*;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use redis_support::RedisServer;
use std::sync::Arc;
use std::time::Duration;
use support::canned::{canned_gateway, Canned};
use support::*;
use tokio::time::Instant;

const CID: &str = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";

/// 91e6da0 (`src/service/location.rs`, `relative_to_gateway`): a
/// `Location` that starts with `origin.url` is cut down to what follows
/// it. When what follows starts with `//` (or `/\`, which browsers and the
/// WHATWG URL parser read as `//` for http(s)), the result is a
/// *network-path reference*: `http://<origin>//evil.example/p` (a path on
/// the origin, harmless) becomes `//evil.example/p`, which every client
/// resolves to the host `evil.example`. An origin that echoes a request
/// path into a redirect (trailing-slash normalisation, a login `next=`)
/// thereby becomes an open redirect *through the gateway's own host*: the
/// rewrite creates a cross-site redirect the origin never sent.
///
/// Expected: the rewritten `Location` still names a path on the gateway
/// (e.g. `/.//evil.example/p`, or the absolute value left alone), never
/// another authority.
/// Actual: `//evil.example/p` and `/\evil.example/p`.
#[tokio::test(start_paused = true)]
async fn a_rewritten_location_never_names_another_host() {
    let c = Arc::new(Canned::default());
    for (path, location) in [
        ("/v1/projects", "http://127.0.0.1:1//evil.example/p"),
        ("/v1/exports", "http://127.0.0.1:1/\\evil.example/p"),
    ] {
        c.answers.lock().unwrap().insert(
            path.into(),
            (302, vec![("location", location.to_owned())], Bytes::new()),
        );
    }
    let gw = canned_gateway(&c, "");
    let mut bad = Vec::new();
    for path in ["/v1/projects", "/v1/exports"] {
        let r = call_get(&gw, path, &admin_key()).await;
        assert_eq!(r.status.as_u16(), 302, "{path}");
        let loc = r.header("location").unwrap_or("").to_owned();
        // Resolve as a browser would (backslash is a slash for http(s)).
        let norm = loc.replace('\\', "/");
        if norm.starts_with("//") {
            bad.push((path, loc));
        }
    }
    assert!(
        bad.is_empty(),
        "the gateway turned an origin-relative redirect into one to another host: {bad:?}"
    );
}

/// README ("Errors"): "A 429's or a 503's `Retry-After` is kept", and
/// the rule holds "on every route". A query-string read of a container
/// (`content_via_origin`, `check_origin_error`) does keep it: a plain
/// `503` with `Retry-After: 30` from the origin's front becomes 502
/// `UPSTREAM_ERROR` with `Retry-After: 30`. The canonical, cached read of
/// the same container (`src/service/content.rs`, the fill closure) only
/// routes *4xx* through `plain_origin_error`; any 5xx goes to the bare
/// `GatewayError::upstream_error()`, and the front's `Retry-After` is
/// dropped (as is an origin-envelope 503's, e.g. `KILL_SWITCH`).
///
/// Expected: `GET /v1/content/:id` (no stale entry) answers 502 with
/// `Retry-After: 30`, as `GET /v1/content/:id?x=1` does.
/// Actual: 502 without `Retry-After`, so partners retry at once into a
/// maintenance window.
#[tokio::test(start_paused = true)]
async fn a_plain_503s_retry_after_is_kept_on_the_cached_container_read() {
    let c = Arc::new(Canned::default());
    let answer = (
        503,
        vec![
            ("content-type", "text/html".to_owned()),
            ("retry-after", "30".to_owned()),
        ],
        Bytes::from_static(b"<html>maintenance</html>"),
    );
    let canonical = format!("/v1/content/{CID}");
    let variant = format!("/v1/content/{CID}?x=1");
    c.answers
        .lock()
        .unwrap()
        .insert(canonical.clone(), answer.clone());
    c.answers.lock().unwrap().insert(variant.clone(), answer);
    let gw = canned_gateway(&c, "");
    let v = call_get(&gw, &variant, &admin_key()).await;
    assert_eq!(
        (v.status.as_u16(), v.header("retry-after")),
        (502, Some("30")),
        "the variant read (the documented rule): {}",
        String::from_utf8_lossy(&v.body)
    );
    let r = call_get(&gw, &canonical, &admin_key()).await;
    assert_eq!(
        (r.status.as_u16(), r.header("retry-after")),
        (502, Some("30")),
        "the cached route dropped the origin front's Retry-After: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// 91e6da0's own rationale ("an origin that builds absolute redirects
/// from `Host` ... sent partners to its internal address, around the
/// gateway") applies to every route that passes an origin 3xx on, but the
/// rewrite sits only in `proxy.rs`. A query-string (or alias, or
/// unsynced) read of a container or asset goes through
/// `content_via_origin` (`src/service/content_origin.rs`), which passes a
/// non-error answer's headers on after `strip_hop_by_hop` /
/// `strip_freshness` only.
///
/// Expected: `Location: /v1/content/<id>` (relative, on the gateway).
/// Actual: `Location: http://127.0.0.1:1/v1/content/<id>`, the origin's
/// internal address.
#[tokio::test(start_paused = true)]
async fn a_redirect_on_a_content_variant_read_stays_on_the_gateway() {
    let c = Arc::new(Canned::default());
    let variant = format!("/v1/content/{CID}?x=1");
    c.answers.lock().unwrap().insert(
        variant.clone(),
        (
            301,
            vec![("location", format!("http://127.0.0.1:1/v1/content/{CID}"))],
            Bytes::new(),
        ),
    );
    let gw = canned_gateway(&c, "");
    let r = call_get(&gw, &variant, &admin_key()).await;
    assert_eq!(r.status.as_u16(), 301, "{}", String::from_utf8_lossy(&r.body));
    let expected = format!("/v1/content/{CID}");
    assert_eq!(
        r.header("location"),
        Some(expected.as_str()),
        "the origin's internal address reached the partner"
    );
}

/// docs/cluster.md / the b3543fd-eecb00f promise: "one write to Redis by
/// someone without the cluster secret cannot keep instances unsynced for
/// good". eecb00f repairs an *invalidation* stream whose last id is the
/// largest there is (`stream_info` deletes it), but the proof of being
/// synced rests on the **heartbeat** stream's `XADD ... MAXLEN 16 *`
/// (`SYNC_SCRIPT`, `src/cluster/scripts.rs`), and nothing repairs that
/// one: `wrong_type` resets only a key of another type. One
/// `XADD <stream>:heartbeat 18446744073709551615-18446744073709551615 x y`
/// makes every heartbeat fail ("The stream has exhausted the last possible
/// ID"), every round reports `Err`, `proven` is never called, and every
/// instance of the cluster stays unsynced (content routes bypass the cache
/// or answer 503) until an operator finds and deletes the key by hand.
///
/// Expected: the instance is synced again within a few rounds (the
/// heartbeat stream deleted where the script meets it at the largest id,
/// as the invalidation stream is).
/// Actual: unsynced for as long as the key stays (checked for 6 s, six
/// times `max_unsynced_ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_stream_at_the_largest_id_does_not_keep_the_cluster_unsynced() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let k = keys(&a);
    eventually("A synced", Duration::from_secs(8), || async {
        a.node.is_synced()
    })
    .await;
    let _: String = redis.cmd(&[
        "XADD",
        &k.heartbeat,
        "18446744073709551615-18446744073709551615",
        "instance",
        "attacker",
    ]);
    let attacked = Instant::now();
    // The proof expires within max_unsynced; give the repair room after.
    tokio::time::sleep(MAX_UNSYNCED + MARGIN).await;
    let bound = attacked + Duration::from_secs(6);
    let mut recovered = false;
    while Instant::now() < bound {
        if a.node.is_synced()
            && a.node
                .last_proof_age()
                .is_some_and(|age| age < attacked.elapsed())
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hb_errors = a.stat(|s| s.heartbeat_errors.get());
    a.node.stop();
    assert!(
        recovered,
        "one foreign XADD to the heartbeat stream kept A unsynced for {:?} \
         ({hb_errors} heartbeat errors); nothing repairs the key",
        attacked.elapsed()
    );
}

// Round 21: authentication, webhooks and the admin listener.

/// `POST /admin/purge?<query>` through the in-process admin handler, with
/// the admin token: (status, body).
async fn admin_purge(gw: &layers_gateway::service::Gateway, query: &str) -> (u16, String) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/admin/purge?{query}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = layers_gateway::admin::handle(gw, req).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Defect: `POST /admin/purge?container=A&container=B` is ambiguous input
/// (the endpoint purges one container), yet it is not refused: the parser
/// keeps only the last `container` value, purges B, leaves A cached and
/// answers 200 `{"status":"purged"}`. An operator who asked for A (or for
/// both) is told it worked while A is still served from the cache.
///
/// Expected (README / docs/operations.md: bad input gets a clear error and
/// changes nothing): 422 `VALIDATION`, and neither container purged.
/// Actual: 200, B purged, A still a cache HIT.
#[tokio::test]
async fn a_purge_naming_two_containers_is_refused_and_purges_nothing() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let ids: Vec<_> = sim
        .container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, id)| id.to_string())
        .take(2)
        .collect();
    assert_eq!(ids.len(), 2, "the demo has two containers of org_demo_a");
    let key = admin_key();
    for id in &ids {
        let r = call_get(&gw, &content_path(id), &key).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let r = call_get(&gw, &content_path(id), &key).await;
        assert_eq!(r.x_cache(), Some("HIT"), "warmed");
    }

    let (status, body) = admin_purge(&gw, &format!("container={}&container={}", ids[0], ids[1])).await;

    let a = call_get(&gw, &content_path(&ids[0]), &key).await;
    let b = call_get(&gw, &content_path(&ids[1]), &key).await;
    assert_eq!(
        status,
        422,
        "two container values must be refused as VALIDATION; got {status} {body} \
         (first container x-cache={:?}, second x-cache={:?})",
        a.x_cache(),
        b.x_cache()
    );
    assert_eq!(
        (a.x_cache(), b.x_cache()),
        (Some("HIT"), Some("HIT")),
        "a refused purge changes nothing"
    );
}
