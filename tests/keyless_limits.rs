//! What a client without a valid key can make the gateway do (issue 14,
//! second review): random well-formed keys must not spend the origin
//! capacity partners need, the answer to a key must not tell whether its id
//! exists, and one address must not hold every connection slot.

mod support;

use bytes::Bytes;
use http::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::loopback_app::{get_from, start};
use support::scripted::{Answer, Scripted, ScriptedUpstream};
use support::*;
use tokio::net::TcpStream;

/// A random-looking, well-formed test key no keys file holds.
fn random_key(i: usize) -> String {
    format!("lp_test_ZZRND{i:011}_{}", "q".repeat(43))
}

fn scripted_gateway(
    origin: &Arc<Scripted>,
    origin_extra: &str,
    extra: &str,
) -> layers_gateway::service::Gateway {
    let cfg = test_config_with("http://127.0.0.1:1", origin_extra, extra);
    layers_gateway::service::Gateway::new(cfg, demo_keys(), Arc::new(ScriptedUpstream(origin.clone())))
}

/// Random keys flood the introspection path while the origin's whoami is
/// slow. Partners' own origin requests (here proxied reads that need the
/// guard's queue: more of them than their per-org cap) must all be served:
/// whoami calls are capped in flight and never wait in the shared queue.
#[tokio::test(start_paused = true)]
async fn random_keys_cannot_take_the_origin_queue_partners_wait_in() {
    let origin = Arc::new(Scripted::default());
    let whoami_gate = Arc::new(tokio::sync::Notify::new());
    let refused = Answer::Json(
        401,
        json!({"error": {"code": "UNAUTHENTICATED", "message": "no", "requestId": "r"}}),
    );
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Held(whoami_gate.clone(), Box::new(refused)),
    );
    let partner_gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Held(
            partner_gate.clone(),
            Box::new(Answer::Json(200, json!({"id": "p1"}))),
        ),
    );
    let gw = scripted_gateway(
        &origin,
        "max_inflight = 8\nmax_inflight_per_org = 4\nqueue_max = 16\nqueue_deadline_ms = 60000",
        "[auth]\nsource = \"both\"\n\n[auth.introspection]\nmax_inflight = 4\nlookups_per_sec = 1000\n",
    );
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..100 {
        let gw = gw.clone();
        flood.spawn(async move {
            let key = random_key(i);
            call(
                &gw,
                Method::GET,
                "/v1/projects/p1",
                &[("x-api-key", &key)],
                Bytes::new(),
            )
            .await
            .status
            .as_u16()
        });
    }
    // Let every flood request reach its wait.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut partners = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let gw = gw.clone();
        partners.spawn(async move {
            call(
                &gw,
                Method::GET,
                "/v1/projects/p1",
                &[("x-api-key", &admin_key())],
                Bytes::new(),
            )
            .await
            .status
        });
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        origin.count(Method::GET, "/v1/whoami") <= 4,
        "whoami calls in flight are capped: {}",
        origin.count(Method::GET, "/v1/whoami")
    );
    partner_gate.notify_waiters();
    // Two of the six waited in the queue for a partner slot; release them too.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        partner_gate.notify_waiters();
    }
    while let Some(status) = partners.join_next().await {
        assert_eq!(
            status.unwrap(),
            200,
            "a partner's origin request was shed by the flood"
        );
    }
    whoami_gate.notify_waiters();
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = flood.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&401), Some(&4), "{statuses:?}");
    assert_eq!(
        statuses.get(&503),
        Some(&96),
        "the rest are refused at once: {statuses:?}"
    );
}

/// In `both` mode a key id the keys file holds, presented with a wrong
/// secret, takes the same path as an unknown id (one whoami call, same 401),
/// so neither the answer nor its timing tells which ids exist; and whatever
/// the origin says, the keys file has the last word.
#[tokio::test(start_paused = true)]
async fn a_known_key_id_with_a_wrong_secret_looks_like_an_unknown_id() {
    let origin = Arc::new(Scripted::default());
    // An origin that would accept anything: the keys file must still refuse
    // a wrong secret for an id it holds.
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Json(
            200,
            json!({"organizationId": "org_evil", "scopes": ["*"], "apiKeyId": "x"}),
        ),
    );
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Json(200, json!({"id": "p1"})),
    );
    let gw = scripted_gateway(&origin, "", "[auth]\nsource = \"both\"\n");
    let known = admin_key();
    let (prefix, secret) = known.rsplit_once('_').unwrap();
    let wrong_secret = format!("{prefix}_{}", "x".repeat(secret.len()));
    let r = call(
        &gw,
        Method::GET,
        "/v1/projects/p1",
        &[("x-api-key", &wrong_secret)],
        Bytes::new(),
    )
    .await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(
        origin.count(Method::GET, "/v1/whoami"),
        1,
        "a wrong secret for a known id costs the same origin call as an unknown id"
    );
    let unknown = call(
        &gw,
        Method::GET,
        "/v1/projects/p1",
        &[("x-api-key", &random_key(1))],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        unknown.status, 200,
        "the origin vouches for an id the file does not hold"
    );
    assert_eq!(origin.count(Method::GET, "/v1/whoami"), 2);
    // The right secret is still checked locally, no origin call.
    let ok = call(
        &gw,
        Method::GET,
        "/v1/projects/p1",
        &[("x-api-key", &known)],
        Bytes::new(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(origin.count(Method::GET, "/v1/whoami"), 2);
}

/// Over real sockets: one address starting many unknown keys gets 429 past
/// its burst, and the origin sees no more whoami calls than the burst (plus
/// what the rate refilled), while a partner whose key is cached is served.
#[tokio::test]
async fn one_address_is_throttled_on_new_keys_and_partners_are_not() {
    let (app, stop, sim) = start(
        "",
        "[auth]\nsource = \"origin\"\n\n[auth.introspection]\nlookups_per_peer_per_sec = 1\npeer_burst = 10\n",
    )
    .await;
    let started = std::time::Instant::now();
    let reader = reader_key();
    assert_eq!(
        get_from("127.0.0.2", app.addr, "/v1/whoami", &reader).await,
        Some(200)
    );
    // Introspected once, then proxied: the origin counts both.
    let before = sim.request_count("GET", "/v1/whoami");
    let mut throttled = 0;
    for i in 0..40 {
        match get_from("127.0.0.1", app.addr, "/v1/whoami", &random_key(i)).await {
            Some(401) => {}
            Some(429) => throttled += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let refill = started.elapsed().as_secs() + 1;
    let calls = sim.request_count("GET", "/v1/whoami") - before;
    assert!(
        calls <= 10 + refill,
        "{calls} whoami calls for 40 unknown keys from one address"
    );
    assert!(throttled >= 40 - 10 - refill as usize, "{throttled} throttled");
    // The partner's key is cached: never refused by the lookup limits.
    assert_eq!(
        get_from("127.0.0.2", app.addr, "/v1/whoami", &reader).await,
        Some(200)
    );
    assert_eq!(
        get_from("127.0.0.1", app.addr, "/v1/whoami", &reader).await,
        Some(200)
    );
    let _ = stop.send(true);
    app.stop().await;
}

/// Silent sockets cannot keep anyone out: at the cap a new connection
/// takes the slot of one that never sent a request, whatever its address.
#[tokio::test]
async fn silent_sockets_at_the_cap_make_room_for_clients_that_send_requests() {
    let (app, stop, sim) = start("max_connections = 16\nheader_read_timeout_ms = 60000", "").await;
    let path = format!(
        "/v1/content/{}",
        sim.container_ids()
            .into_iter()
            .find(|(o, _)| o == "org_demo_a")
            .unwrap()
            .1
    );
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    assert_eq!(
        get_from("127.0.0.1", app.addr, &path, &admin_key()).await,
        Some(200),
        "the same address gets a slot"
    );
    assert_eq!(
        get_from("127.0.0.3", app.addr, &path, &admin_key()).await,
        Some(200),
        "another address gets a slot"
    );
    let m = &app.gateway.state().metrics;
    let evicted = m.connections_cut.with_label_values(&["evicted_idle"]).get();
    assert!(
        evicted >= 1,
        "{evicted} evicted; rejected {}",
        m.connections_rejected.get()
    );
    drop(silent);
    let _ = stop.send(true);
    app.stop().await;
}

/// With `max_connections_per_peer`, one address holds at most that many
/// connections, and another address is not affected.
#[tokio::test]
async fn a_per_address_cap_refuses_that_address_only() {
    let (app, stop, sim) = start(
        "max_connections = 16\nmax_connections_per_peer = 4\nheader_read_timeout_ms = 60000",
        "",
    )
    .await;
    let path = format!(
        "/v1/content/{}",
        sim.container_ids()
            .into_iter()
            .find(|(o, _)| o == "org_demo_a")
            .unwrap()
            .1
    );
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    assert_eq!(
        get_from("127.0.0.1", app.addr, &path, &admin_key())
            .await
            .unwrap_or(503),
        503,
        "the address's share is used up"
    );
    assert_eq!(
        get_from("127.0.0.3", app.addr, &path, &admin_key()).await,
        Some(200),
        "another address is served"
    );
    drop(silent);
    let _ = stop.send(true);
    app.stop().await;
}

/// A cached key past its TTL is served while its refresh runs; the refresh's
/// refusal (the key was revoked at the origin) applies to the next request.
#[tokio::test(start_paused = true)]
async fn a_refresh_that_finds_the_key_revoked_refuses_it_from_the_next_request_on() {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Json(
            200,
            json!({"organizationId": "org_a", "scopes": ["*"], "apiKeyId": "k"}),
        ),
    );
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Json(200, json!({"id": "p1"})),
    );
    let gw = scripted_gateway(&origin, "", "[auth]\nsource = \"origin\"\n");
    let key = random_key(7);
    let get = |gw: layers_gateway::service::Gateway, key: String| async move {
        call(
            &gw,
            Method::GET,
            "/v1/projects/p1",
            &[("x-api-key", &key)],
            Bytes::new(),
        )
        .await
        .status
        .as_u16()
    };
    assert_eq!(get(gw.clone(), key.clone()).await, 200);
    tokio::time::advance(Duration::from_secs(61)).await;
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Json(
            401,
            json!({"error": {"code": "UNAUTHENTICATED", "message": "revoked", "requestId": "r"}}),
        ),
    );
    assert_eq!(
        get(gw.clone(), key.clone()).await,
        200,
        "served while the refresh runs"
    );
    gw.state().auth.introspector().unwrap().settle().await;
    assert_eq!(origin.count(Method::GET, "/v1/whoami"), 2);
    assert_eq!(
        get(gw.clone(), key.clone()).await,
        401,
        "refused once the origin said so"
    );
}
