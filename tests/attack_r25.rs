//! Round 25, attacker A: the round-24 changes (a busy connection without
//! credentials is closed at the cap; webhook reads shared per client).
//! Each test asserts a promise and fails where it is broken. Loopback
//! only, bounded counts, no long sleeps.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use layers_gateway::auth::KeyStore;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::keyless::*;
use support::loopback_app::{connect_from, get_from, start};
use support::*;
use tokio::io::AsyncWriteExt;

/// DEFECT: the connection's "credentialed" flag is set only once
/// authentication has FINISHED. A partner whose key the gateway checks
/// with the origin (`auth.source = "origin"`: a whoami call, here slow)
/// has a request in flight on a connection that counts as "busy, never
/// presented valid credentials". A keyless client at the cap (a few
/// zero-window h2 connections, then one more) gets that connection closed:
/// the keyless newcomer's slot is the partner's, and the partner's request
/// dies unanswered. Same for a JWT whose kid is new (JWKS fetch in flight).
#[tokio::test]
async fn a_partners_request_waiting_on_key_introspection_is_not_closed_for_a_keyless_newcomer() {
    let (origin, gate) = held_whoami();
    let app = scripted_app(
        origin.clone(),
        "max_connections = 4",
        "",
        "[auth]\nsource = \"origin\"\n",
    )
    .await;
    // The partner: a valid key the origin vouches for (slowly).
    let key = format!("lp_test_PARTNERKEY000001_{}", "q".repeat(43));
    let mut partner = connect_from("127.0.0.3", app.addr).await;
    let head =
        format!("GET /v1/projects/p1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n");
    partner.write_all(head.as_bytes()).await.unwrap();
    let asked = tokio::time::timeout(Duration::from_secs(5), async {
        while origin.count(Method::GET, "/v1/whoami") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(asked.is_ok(), "the partner's key went to the origin");
    // The keyless client: three connections fill the cap, then one more.
    let mut held = Vec::new();
    for i in 0..4 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        held.push(zero_window_get(from, app.addr, "/v1/projects/p1", None).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The origin answers whoami: the partner's key is valid.
    gate.notify_waiters();
    let got = read_status(&mut partner).await;
    let cut = app
        .gateway
        .state()
        .metrics
        .connections_cut
        .with_label_values(&["evicted_keyless"])
        .get();
    for (_, driver, _) in held {
        driver.abort();
    }
    app.stop().await;
    assert_eq!(
        got,
        Some(200),
        "a partner's request (valid key, being introspected) was closed for a keyless newcomer \
         (evicted_keyless = {cut})"
    );
}

/// DEFECT: the same early-flag gap on the webhook path. The flag is set
/// only after the body is read and its signature verified, so the origin's
/// own signed event, whose body is still arriving, rides a connection that
/// counts as "busy, never presented credentials". A keyless client at the
/// cap gets it closed; the invalidation is lost (the origin retries, and the
/// keyless client does it again), so revoked content keeps being served.
#[tokio::test]
async fn the_origins_webhook_being_read_is_not_closed_for_a_keyless_newcomer() {
    let (app, stop, sim) = start("max_connections = 4\nbody_read_timeout_ms = 30000", "").await;
    let path = partner_path(&sim);
    let body = json!({"id": unique_event_id(), "type": "ping.r25", "data": {}}).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let mut head = format!(
        "POST /webhooks/layers HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let (first, rest) = body.split_at(body.len() / 2);
    // The origin: its head and half of its body; the rest is on its way.
    let mut origin = connect_from("127.0.0.3", app.addr).await;
    origin.write_all(head.as_bytes()).await.unwrap();
    origin.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut held = Vec::new();
    for i in 0..4 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        held.push(zero_window_get(from, app.addr, &path, None).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = origin.write_all(rest.as_bytes()).await;
    let got = read_status(&mut origin).await;
    for (_, driver, _) in held {
        driver.abort();
    }
    let _ = stop.send(true);
    app.stop().await;
    assert!(
        got.is_some_and(|s| (200..300).contains(&s)),
        "the origin's signed webhook, mid-body, was closed for a keyless newcomer: {got:?}"
    );
}

/// The demo keys without `key_id`'s entry.
fn keys_without(key_id: &str) -> KeyStore {
    let text = layers_gateway::demo::DEMO_KEYS_FILE;
    let kept: Vec<&str> = text
        .split("[[keys]]")
        .enumerate()
        .filter(|(i, block)| *i == 0 || !block.contains(key_id))
        .map(|(_, b)| b)
        .collect();
    let new = kept.join("[[keys]]");
    assert_ne!(new.len(), text.len(), "{key_id} was in the file");
    KeyStore::parse(&new).unwrap()
}

/// DEFECT: the "credentialed" flag is never cleared. A client whose key is
/// revoked (or that ever held any valid key, once) keeps its connections
/// marked as a partner's forever: on each it sends one request while the
/// key is valid, and from then on only keyless requests whose 401 it never
/// reads (zero h2 window), renewed before response_write_timeout_ms. Those
/// connections are "busy with credentials", never evicted, and a real
/// partner gets the raw 503 at the cap: a client WITHOUT a valid key
/// exhausts the gateway.
#[tokio::test]
async fn a_revoked_key_does_not_keep_its_connections_unevictable() {
    let (app, stop, sim) = start("max_connections = 4", "").await;
    let path = partner_path(&sim);
    let revoked = reader_key();
    let mut conns = Vec::new();
    for i in 0..4 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        let (mut send, driver) = h2_from::<Full<Bytes>>(from, app.addr, 0).await;
        send.ready().await.unwrap();
        // One request with the (still valid) key; HEAD: nothing to read.
        let req = Request::head(format!("http://gateway.test{path}"))
            .header("x-api-key", revoked.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("HEAD answered")
            .unwrap();
        assert_eq!(resp.status(), 200);
        conns.push((send, driver));
    }
    // The key is revoked.
    app.gateway.replace_keys(keys_without("DEM0READ000000A2"));
    // From now on: only keyless requests, each 401 left unread.
    let mut unread = Vec::new();
    for (send, _) in conns.iter_mut() {
        send.ready().await.unwrap();
        let req = Request::get(format!("http://gateway.test{path}"))
            .header("x-api-key", revoked.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("head answered")
            .unwrap();
        assert_eq!(resp.status(), 401, "the revoked key is refused");
        unread.push(resp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = get_from("127.0.0.3", app.addr, &path, &admin_key()).await;
    for (_, driver) in conns {
        driver.abort();
    }
    drop(unread);
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(
        got,
        Some(200),
        "connections of a revoked key, holding only unread 401s, kept every slot: a partner got {got:?}"
    );
}

/// Opens `n` forged, stalled webhook reads from `from`; the connection
/// driver and the pending requests.
async fn stall_webhooks(
    from: &str,
    addr: SocketAddr,
    n: usize,
) -> (tokio::task::JoinHandle<()>, Vec<tokio::task::JoinHandle<()>>) {
    let (mut send, driver) = h2_from::<StalledBody>(from, addr, 65_535).await;
    let forged = format!("t={},v1={}", unix_now(), "0".repeat(64));
    let mut pending = Vec::new();
    for _ in 0..n {
        send.ready().await.unwrap();
        let req = Request::post("http://gateway.test/webhooks/layers")
            .header("x-layers-signature", forged.as_str())
            .header("content-type", "application/json")
            .body(StalledBody(false))
            .unwrap();
        let f = send.send_request(req);
        pending.push(tokio::spawn(async move {
            let _ = f.await;
        }));
    }
    (driver, pending)
}

/// The origin's correctly signed event, from 127.0.0.1: its status.
async fn origin_event(addr: SocketAddr) -> http::StatusCode {
    // An event that applies (a type the gateway ignores is not deduplicated,
    // so it does not make its sender known: `webhook_reads.rs`).
    let body = json!({
        "id": unique_event_id(),
        "type": "content.updated",
        "data": {"id": "cnt_00000000-0000-4000-8000-0000000000aa"}
    })
    .to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestClient::new(addr)
        .send(Method::POST, "/webhooks/layers", &h, Bytes::from(body))
        .await
        .status
}

/// The per-client share is a quarter of `max_concurrent_reads`, at least
/// one read: with 1, 2 or 3 reads one client would hold all, a half or a
/// third of them (with 1, a single stalled forged body kept the origin
/// out). The config check refuses fewer than 4.
#[test]
fn fewer_than_four_webhook_reads_is_refused_by_the_config_check() {
    for n in 0..4 {
        let text = format!("[webhooks]\nmax_concurrent_reads = {n}\n");
        let err =
            layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()).expect_err("refused");
        assert!(err.contains("webhooks.max_concurrent_reads"), "{n}: {err}");
    }
}

/// The share is per address, the pool is not: with the default
/// `max_concurrent_reads` (32, 8 per client) and no `allowed_sources` (the
/// default), a sender without the secret that has four addresses (four
/// IPv4 addresses, or four /64s of the /56 any home IPv6 line gets) held
/// all 32 reads with stalled forged bodies, and the origin's signed events
/// were refused 503. A quarter is now kept for addresses that delivered a
/// verified webhook (the origin, once it has delivered one).
#[tokio::test]
async fn four_keyless_addresses_cannot_keep_the_origins_signed_events_out() {
    let (app, stop, _sim) = start("body_read_timeout_ms = 30000", "").await;
    assert!(
        origin_event(app.addr).await.is_success(),
        "the origin's first event"
    );
    let mut attack = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        attack.push(stall_webhooks(from, app.addr, 8).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = origin_event(app.addr).await;
    for (driver, pending) in attack {
        for p in pending {
            p.abort();
        }
        driver.abort();
    }
    let _ = stop.send(true);
    app.stop().await;
    assert!(
        status.is_success(),
        "four keyless addresses (8 stalled forged bodies each) kept the origin's signed event out: {status}"
    );
}
