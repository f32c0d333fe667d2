//! Round 26, attacker A: the round-25 change (a connection is evictable at
//! the cap only while busy with answered refusals; a request still in the
//! service keeps its connection). Each test asserts a promise and fails
//! where it is broken. Loopback only, bounded counts, no long sleeps.

mod support;

use http::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::keyless::*;
use support::loopback_app::{connect_from, get_from, start};
use support::scripted::{Answer, Scripted};
use support::*;
use tokio::io::AsyncWriteExt;

/// DEFECT: a keyless request waiting on someone else's whoami call is
/// "in the service", so its connection can never be evicted, and joining a
/// call in flight is free (no per-address budget, no count). One random
/// well-formed key costs the attacker ONE lookup; the same key sent on
/// every other connection joins that lookup. While that one whoami call is
/// slow (an origin under load; up to origin.timeout_ms + 1 s per call, and
/// the attacker may start `lookups_per_peer_per_sec` of them per address),
/// every slot is held by requests that will all be refused 401, and a
/// partner (a keys-file key that needs no origin call) gets the raw 503 at
/// the cap. Round 25 protected exactly this state so that a PARTNER being
/// introspected is not cut; it made no bound on how many KEYLESS requests
/// may sit in it.
#[tokio::test]
async fn keyless_requests_joining_one_slow_whoami_cannot_hold_every_slot() {
    let origin = Arc::new(Scripted::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Held(
            gate.clone(),
            Box::new(Answer::Json(401, json!({"error": {"code": "UNAUTHENTICATED"}}))),
        ),
    );
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Json(200, json!({"id": "p1"})),
    );
    let app = scripted_app(
        origin.clone(),
        "max_connections = 4",
        "",
        "[auth]\nsource = \"both\"\n",
    )
    .await;
    // One random key, no keys file holds it: one whoami call, then three
    // more requests with the same key join it (from two addresses).
    let random = format!("lp_test_ZZRND00000000026_{}", "q".repeat(43));
    let mut attack = Vec::new();
    for i in 0..4 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        let mut s = connect_from(from, app.addr).await;
        let head = format!(
            "GET /v1/projects/p1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {random}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        attack.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let lookups = origin.count(Method::GET, "/v1/whoami");
    // The partner: a valid keys-file key, no origin call needed for it.
    let got = get_from("127.0.0.3", app.addr, "/v1/projects/p1", &admin_key()).await;
    gate.notify_waiters();
    let mut refused = Vec::new();
    for s in attack.iter_mut() {
        refused.push(read_status(s).await);
    }
    app.stop().await;
    // (The readiness probe's keyless whoami may be among them.)
    assert!(
        lookups <= 2,
        "one lookup for all four attacker requests: {lookups}"
    );
    assert_eq!(
        got,
        Some(200),
        "four keyless requests sharing ONE whoami call held every slot; a partner got {got:?} \
         (the attacker's requests were then answered {refused:?})"
    );
}

/// DEFECT: a webhook with a forged (well-formed) signature whose body
/// stalls is "in the service" for `body_read_timeout_ms` (30 s by default),
/// so its connection can never be evicted. One address may hold a quarter
/// of `max_concurrent_reads` (8 of the default 32), three addresses 24,
/// renewed every 30 s, and nothing ties that to `max_connections`: with a
/// cap of 8, one keyless address holds every slot and a partner gets the
/// raw 503 for as long as it keeps going. (The round-25 protection of the
/// ORIGIN's webhook mid-body also protects every stranger's.)
#[tokio::test]
async fn stalled_forged_webhooks_cannot_hold_every_slot() {
    let (app, stop, sim) = start("max_connections = 8", "").await;
    let path = partner_path(&sim);
    let forged = format!("t={},v1={}", unix_now(), "0".repeat(64));
    let mut attack = Vec::new();
    for _ in 0..8 {
        let mut s = connect_from("127.0.0.1", app.addr).await;
        let head = format!(
            "POST /webhooks/layers HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nx-layers-signature: {forged}\r\ncontent-length: 200\r\n\r\n{{\"id\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        attack.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = get_from("127.0.0.3", app.addr, &path, &admin_key()).await;
    drop(attack);
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(
        got,
        Some(200),
        "eight stalled forged webhook bodies from ONE keyless address held every slot \
         (max_connections = 8, default max_concurrent_reads): a partner got {got:?}"
    );
}

/// DEFECT: the victim is looked for among `SAMPLE` (32) connections from a
/// random place, and when the sample holds none that may go, the newcomer
/// is refused, even though a connection busy with nothing but a keyless
/// client's unread 401 is open elsewhere in the table. Here partners'
/// connections (39, each with a valid key's response in flight) were
/// accepted first, the keyless one last; a partner's new connection is
/// refused 503 whenever the sample misses the keyless one (about half the
/// time at this size; with a cap of 4096 and the attacker holding 2% of the
/// slots, about half of all partner newcomers). The keyless client holds a
/// slot partners need.
#[tokio::test]
async fn a_keyless_connection_outside_the_sample_still_makes_room() {
    let (app, stop, sim) = start("max_connections = 40\nresponse_write_timeout_ms = 30000", "").await;
    let path = partner_path(&sim);
    let key = admin_key();
    let mut partners = Vec::new();
    for i in 0..39 {
        let from = format!("127.0.0.{}", 10 + i % 4);
        let (send, driver, status) = zero_window_get(&from, app.addr, &path, Some(&key)).await;
        assert_eq!(status, Some(200), "partner connection {i}");
        partners.push((send, driver));
    }
    let mut results = Vec::new();
    let mut keyless = Vec::new();
    for _ in 0..12 {
        // The keyless client takes the last slot (the free one), a 401
        // left unread on it.
        let mut held = None;
        for _ in 0..5 {
            let (send, driver, status) = zero_window_get("127.0.0.1", app.addr, &path, None).await;
            if status == Some(401) {
                held = Some((send, driver));
                break;
            }
            driver.abort();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(h) = held else { break };
        keyless.push(h);
        let before = cut(&app, "evicted_keyless");
        let got = get_from("127.0.0.5", app.addr, &path, &key).await;
        results.push((got, cut(&app, "evicted_keyless") - before));
        if got != Some(200) {
            break;
        }
        // The partner's newcomer closed (connection: close): its slot frees.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, d) in partners {
        d.abort();
    }
    for (_, d) in keyless {
        d.abort();
    }
    let _ = stop.send(true);
    app.stop().await;
    assert!(!results.is_empty(), "the keyless client never got its slot");
    assert!(
        results.iter().all(|(s, _)| *s == Some(200)),
        "a partner's newcomer was refused while a keyless connection holding only a 401 was open \
         (status, evicted_keyless) per attempt: {results:?}"
    );
}

/// The source of the whoami attack above: joining a call in flight was
/// free. One client now has at most 16 requests waiting on whoami calls;
/// past that its requests are refused (429) at once, answered refusals
/// that hold no slot.
#[tokio::test]
async fn one_client_waits_on_whoami_with_at_most_sixteen_requests() {
    let origin = Arc::new(Scripted::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Held(
            gate.clone(),
            Box::new(Answer::Json(401, json!({"error": {"code": "UNAUTHENTICATED"}}))),
        ),
    );
    let app = scripted_app(origin.clone(), "", "", "[auth]\nsource = \"both\"\n").await;
    let random = format!("lp_test_ZZRND00000000029_{}", "q".repeat(43));
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.1", app.addr).await;
        let head = format!(
            "GET /v1/projects/p1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {random}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.notify_waiters();
    let mut statuses = Vec::new();
    for s in conns.iter_mut() {
        statuses.push(read_status(s).await);
    }
    app.stop().await;
    statuses.sort();
    let throttled = statuses.iter().filter(|s| **s == Some(429)).count();
    let refused = statuses.iter().filter(|s| **s == Some(401)).count();
    assert_eq!((throttled, refused), (4, 16), "{statuses:?}");
}
