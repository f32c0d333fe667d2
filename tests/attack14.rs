//! Attacks on the issue-14 hardening from its second attacker review. Each
//! test broke the code it names and must hold now: keyless floods against a
//! partner's cached key, a slow upload blamed on the origin, silent sockets
//! from several addresses at the connection cap.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use layers_gateway::origin::Upstream;
use layers_gateway::service::Gateway;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use support::loopback_app::{connect_from, get_from, start};
use support::*;

/// A random-looking, well-formed test key no keys file and no origin holds.
fn random_key(i: usize) -> String {
    format!("lp_test_ZZRND{i:011}_{}", "q".repeat(43))
}

/// One in-process request from client address `peer`: the status.
async fn get_as(gw: &Gateway, peer: &str, path: &str, key: &str) -> u16 {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let ip: IpAddr = peer.parse().unwrap();
    let resp = gw.handle_from(req, Some(ip)).await;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

const ORIGIN_AUTH: &str = "[auth]\nsource = \"origin\"\n";

/// SHOWS: a client WITHOUT a key, spread over a few addresses (10 IPv4
/// addresses, or 10 /64s of one ordinary IPv6 /56), drains the global
/// `lookups_per_sec` budget with random `lp_` keys; a partner whose key was
/// introspected before and is past `positive_ttl` (but well inside
/// `grace_secs`, with a perfectly healthy origin) is then answered 503,
/// because the refresh of a known key needs a fresh admission and a refused
/// admission is returned as is instead of falling back to the cached
/// principal. Sustained at 200 random keys/s (40 addresses at 5/s), every
/// partner is locked out at its next TTL expiry. config/gateway.toml says "A
/// key answered from the cache ... is never refused by them".
/// Defect: src/auth/introspect.rs:175 (`admit(peer).map_err(refused)?`).
#[tokio::test(start_paused = true)]
async fn keyless_flood_on_the_global_lookup_budget_locks_out_a_known_partner_key() {
    let sim = demo_simulator();
    let gw = in_process(&sim, ORIGIN_AUTH);
    let partner = "198.51.100.7";
    assert_eq!(get_as(&gw, partner, "/v1/whoami", &reader_key()).await, 200);
    // Past positive_ttl (60 s), far inside grace (300 s): the global bucket
    // is full again.
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut refused = 0;
    for p in 0..10 {
        let attacker = format!("203.0.113.{p}");
        for i in 0..20 {
            match get_as(&gw, &attacker, "/v1/whoami", &random_key(p * 100 + i)).await {
                401 => {}
                _ => refused += 1,
            }
        }
    }
    assert_eq!(
        refused, 0,
        "the attack itself stays within every per-address budget"
    );
    let after = get_as(&gw, partner, "/v1/whoami", &reader_key()).await;
    assert_eq!(
        after, 200,
        "a partner key cached 61 s ago (grace 300 s, origin healthy) was refused with {after} \
         because keyless clients spent the global introspection budget"
    );
}

/// SHOWS: the same lock-out through `max_inflight` (no rate needed): while
/// keyless random keys hold the 32 whoami calls in flight (the origin is
/// merely slow to answer whoami), a partner key past its TTL gets 503 at
/// once instead of its cached principal. Same defect, src/auth/introspect.rs:175
/// (`LookupRefusal::Busy`).
#[tokio::test(start_paused = true)]
async fn keyless_whoami_calls_in_flight_lock_out_a_known_partner_key() {
    use support::scripted::{Answer, Scripted, ScriptedUpstream};
    let origin = Arc::new(Scripted::default());
    let whoami = serde_json::json!({"organizationId": "org_a", "scopes": ["*"], "apiKeyId": "x"});
    origin.set(Method::GET, "/v1/whoami", Answer::Json(200, whoami.clone()));
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Json(200, serde_json::json!({"id": "p1"})),
    );
    let cfg = test_config(
        "http://127.0.0.1:1",
        "[auth]\nsource = \"origin\"\n\n[auth.introspection]\nmax_inflight = 4\n",
    );
    let gw = Gateway::new(cfg, demo_keys(), Arc::new(ScriptedUpstream(origin.clone())));
    let partner = "198.51.100.7";
    let key = random_key(999_999);
    assert_eq!(get_as(&gw, partner, "/v1/projects/p1", &key).await, 200);
    tokio::time::advance(Duration::from_secs(61)).await;
    // From now on whoami is slow (held); four keyless keys hold every slot.
    let gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Held(gate.clone(), Box::new(Answer::Json(401, serde_json::json!({})))),
    );
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..4 {
        let gw = gw.clone();
        flood.spawn(async move {
            get_as(&gw, &format!("203.0.113.{i}"), "/v1/projects/p1", &random_key(i)).await
        });
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let after = get_as(&gw, partner, "/v1/projects/p1", &key).await;
    gate.notify_waiters();
    while flood.join_next().await.is_some() {}
    assert_eq!(
        after, 200,
        "a partner key cached 61 s ago was refused with {after} while 4 keyless whoami calls were in flight"
    );
}

/// SHOWS (partner against partner): two partners that reach the gateway
/// from one address (a shared egress NAT, or any L4 load balancer in front
/// of the gateway: the gateway only sees the TCP peer, it has no trusted
/// proxy / PROXY-protocol setting) share one introspection budget. One of
/// them starting 20 new keys (a key rotation, or a bug) makes the other's
/// known, cached key answer 429 at its next TTL expiry.
/// Defect: src/auth/introspect.rs:175 (refresh of a known key charged to
/// the per-peer bucket), src/auth/lookup_limit.rs:104-121.
#[tokio::test(start_paused = true)]
async fn new_keys_of_one_partner_throttle_another_partners_known_key_behind_one_address() {
    let sim = demo_simulator();
    let gw = in_process(&sim, ORIGIN_AUTH);
    let shared = "192.0.2.10";
    assert_eq!(get_as(&gw, shared, "/v1/whoami", &reader_key()).await, 200);
    tokio::time::advance(Duration::from_secs(61)).await;
    for i in 0..20 {
        assert_eq!(get_as(&gw, shared, "/v1/whoami", &random_key(i)).await, 401);
    }
    let after = get_as(&gw, shared, "/v1/whoami", &reader_key()).await;
    assert_eq!(
        after, 200,
        "a cached partner key was refused with {after} because another client behind the same address started 20 new keys"
    );
}

/// SHOWS: the per-address connection cap defaults to 7/8 of
/// `max_connections`, so a keyless client with just TWO addresses (two
/// IPv4s, or two /64s of its own IPv6 /56) holds every partner connection
/// slot with silent sockets, and re-opens them as `header_read_timeout`
/// cuts them: a keyed partner from a third address gets 503/closed.
/// Defect: src/config.rs:186-190 (default share), src/server.rs:179-184.
#[tokio::test]
async fn two_addresses_hold_every_connection_slot() {
    let (app, stop, sim) = start("max_connections = 16\nheader_read_timeout_ms = 60000", "").await;
    let path = format!(
        "/v1/content/{}",
        sim.container_ids()
            .into_iter()
            .find(|(o, _)| o == "org_demo_a")
            .unwrap()
            .1
    );
    assert_eq!(
        get_from("127.0.0.3", app.addr, &path, &admin_key()).await,
        Some(200)
    );
    let mut silent = Vec::new();
    for from in ["127.0.0.1", "127.0.0.2"] {
        for _ in 0..14 {
            silent.push(connect_from(from, app.addr).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = get_from("127.0.0.3", app.addr, &path, &admin_key()).await;
    drop(silent);
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(
        got,
        Some(200),
        "silent keyless sockets from two addresses took every slot: a partner got {got:?}"
    );
}

/// A request body fed by the test, chunk by chunk.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A healthy origin: reads the whole request body, then takes 50 ms to
/// answer (any real processing time), and counts requests.
struct ReadsThenAnswers(Arc<std::sync::atomic::AtomicUsize>);

impl Upstream for ReadsThenAnswers {
    fn send(&self, req: Request<layers_gateway::body::StreamBody>) -> layers_gateway::origin::UpstreamFuture {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let _ = req.into_body().collect().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let body = Full::new(Bytes::from_static(b"{\"id\":\"x\"}"))
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut r = http::Response::new(body);
            *r.status_mut() = http::StatusCode::CREATED;
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok(r)
        })
    }
}

/// SHOWS (item 3, residual): the origin deadline (`origin.timeout_ms`) is
/// counted from the start of the exchange, INCLUDING the time the client
/// takes to upload its body, while `body_read_timeout_ms` (30 s default) is
/// longer than `timeout_ms` (10 s default). A partner that uploads its body
/// slowly, finishing just before the origin deadline, leaves a healthy
/// origin (50 ms of processing after the last byte) no time: the gateway
/// calls it an origin timeout (504), a breaker failure. `breaker_failures`
/// such uploads open the breaker, and every organization gets 503.
/// Defect: src/origin.rs:274-296 (deadline = started + timeout, and only a
/// deadline hit *while* the body is pending is blamed on the client).
#[tokio::test(start_paused = true)]
async fn a_slow_upload_finishing_just_in_time_opens_the_breaker_for_everyone() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cfg = test_config_with("http://127.0.0.1:1", "breaker_failures = 3", "");
    let gw = Gateway::new(cfg, demo_keys(), Arc::new(ReadsThenAnswers(calls.clone())));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/content")
            .header("x-api-key", admin_key())
            .header("content-type", "application/json")
            .body(ChanBody(rx))
            .unwrap();
        let feeder = tokio::spawn(async move {
            tx.send(Bytes::from_static(b"{\"caption\":")).await.unwrap();
            // test config: origin timeout_ms = 5000; well inside body_read_timeout.
            tokio::time::sleep(Duration::from_millis(4990)).await;
            tx.send(Bytes::from_static(b"\"x\"}")).await.unwrap();
        });
        let resp = gw.handle(req).await;
        statuses.push(resp.status().as_u16());
        let _ = resp.into_body().collect().await;
        let _ = feeder.await;
    }
    // Another organization, a plain read: should reach the origin.
    let sim = demo_simulator();
    let id = sim
        .container_ids()
        .into_iter()
        .find(|(o, _)| o == "org_demo_b")
        .unwrap()
        .1;
    let other = call_get(&gw, &format!("/v1/content/{id}"), &org_b_key()).await;
    assert_eq!(
        (statuses.clone(), other.status == 503),
        (vec![201, 201, 201], false),
        "slow-but-complete uploads answered {statuses:?} and left org B with {} ({})",
        other.status,
        String::from_utf8_lossy(&other.body)
    );
}
