//! Round 24, attacker B: can a client WITHOUT a valid key exhaust the
//! gateway so that paying partners (or the origin's own invalidations) are
//! shed? Each test asserts the promise and fails where it is broken.
//! Loopback only, bounded counts, no long sleeps.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use std::time::Duration;
use support::keyless::*;
use support::loopback_app::{get_from, start};
use support::*;

/// DEFECT: a keyless client fills `server.max_connections` with h2
/// connections that each carry ONE request without any credential and
/// advertise a zero stream window. The gateway answers 401, but the 401's
/// body can never be sent, so the stream counts as "a request in flight"
/// until `response_write_timeout_ms` (30 s by default), and the client
/// opens a new one before that. Every connection looks busy, nothing is
/// evictable, and a paying partner's new connection is answered a raw
/// 503 OVERLOADED: the keyless client has exhausted the gateway for the
/// price of one HEADERS frame per connection per 30 s.
#[tokio::test]
async fn keyless_zero_window_h2_streams_cannot_hold_every_connection_slot() {
    let (app, stop, sim) = start("max_connections = 8", "").await;
    let path = partner_path(&sim);
    assert_eq!(
        get_from("127.0.0.3", app.addr, &path, &admin_key()).await,
        Some(200),
        "a partner is served before the attack"
    );
    let mut held = Vec::new();
    for i in 0..8 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        let (mut send, driver) = h2_from::<Full<Bytes>>(from, app.addr, 0).await;
        send.ready().await.unwrap();
        // No credential at all.
        let req = Request::get(format!("http://gateway.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("head answered")
            .unwrap();
        assert_eq!(resp.status(), 401, "keyless request refused");
        held.push((send, driver, resp));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = get_from("127.0.0.3", app.addr, &path, &admin_key()).await;
    drop(held);
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(
        got,
        Some(200),
        "keyless zero-window h2 connections (one unanswerable 401 each) held every slot: a partner got {got:?}"
    );
}

/// DEFECT: the webhook read slots (`webhooks.max_concurrent_reads`) are one
/// pool shared by everybody. A keyless client (it does not know the
/// webhook secret: its `v1=` is garbage) holds every slot with bodies it
/// never finishes, re-opening them as `body_read_timeout_ms` cuts them. The
/// origin's genuine, correctly signed invalidation is then refused 503
/// before its body is read: invalidations (regenerate, delete) are delayed
/// for as long as the keyless client likes, so revoked URLs keep being
/// served from cache.
#[tokio::test]
async fn keyless_stalled_webhook_bodies_cannot_refuse_the_origins_signed_events() {
    let (app, stop, _sim) = start("body_read_timeout_ms = 30000", "max_concurrent_reads = 4\n").await;
    // The attacker: another address, a well-formed but forged signature.
    let (mut send, _driver) = h2_from::<StalledBody>("127.0.0.2", app.addr, 65_535).await;
    let forged = format!("t={},v1={}", unix_now(), "0".repeat(64));
    let mut pending = Vec::new();
    for _ in 0..4 {
        send.ready().await.unwrap();
        let req = Request::post("http://gateway.test/webhooks/layers")
            .header("x-layers-signature", forged.as_str())
            .header("content-type", "application/json")
            .body(StalledBody(false))
            .unwrap();
        pending.push(tokio::spawn(send.send_request(req)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The origin's real event, correctly signed, from the origin's address.
    let body = json!({"id": unique_event_id(), "type": "ping.r24", "data": {}}).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = TestClient::new(app.addr)
        .send(http::Method::POST, "/webhooks/layers", &h, Bytes::from(body))
        .await;
    for p in pending {
        p.abort();
    }
    let _ = stop.send(true);
    app.stop().await;
    assert!(
        r.status.is_success(),
        "a correctly signed origin webhook was refused {} while a keyless client stalled forged bodies: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
}

/// DEFECT (same root cause as the partner port, on the admin listener):
/// `admin.max_connections` (16) exists "so a partner flood never starves
/// /healthz", and idle admin connections are evicted at the cap. But an
/// unauthenticated client that opens 16 h2 connections to the admin port,
/// each with one `GET /healthz` (no token needed) and a zero stream window,
/// makes every admin connection look busy for `response_write_timeout_ms`:
/// the load balancer's own health probe is refused, the instance is taken
/// out of rotation, and the Prometheus scrape fails.
#[tokio::test]
async fn zero_window_h2_probes_cannot_starve_healthz_on_the_admin_port() {
    let (app, stop, _sim) = start("", "").await;
    let admin = app.admin_addr;
    assert_eq!(raw_status(admin, "/healthz").await, Some(200));
    let mut held = Vec::new();
    for _ in 0..16 {
        let (mut send, driver) = h2_from::<Full<Bytes>>("127.0.0.1", admin, 0).await;
        send.ready().await.unwrap();
        let req = Request::get("http://gateway.test/healthz")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("head answered")
            .unwrap();
        held.push((send, driver, resp));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = raw_status(admin, "/healthz").await;
    drop(held);
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(
        got,
        Some(200),
        "16 zero-window h2 /healthz streams held every admin slot: the health probe got {got:?}"
    );
}

/// The other side of the eviction rule above: a partner's connection
/// (its key verified) that holds a response the partner has not read yet
/// is busy with credentials, and keyless newcomers at the cap close one
/// of their own kind, never it. The partner's connection keeps serving.
#[tokio::test]
async fn a_partners_busy_connection_is_never_closed_for_keyless_newcomers() {
    let (app, stop, sim) = start("max_connections = 4", "").await;
    let path = partner_path(&sim);
    let key = admin_key();
    let get = |auth: bool| {
        let mut b = Request::get(format!("http://gateway.test{path}"));
        if auth {
            b = b.header("x-api-key", key.as_str());
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    // The partner: zero window, so its first response stays in flight.
    let (mut partner, partner_driver) = h2_from::<Full<Bytes>>("127.0.0.3", app.addr, 0).await;
    partner.ready().await.unwrap();
    let first = partner.send_request(get(true)).await.unwrap();
    assert_eq!(first.status(), 200);
    let mut held = Vec::new();
    // Three keyless connections fill the cap; then six more arrive.
    for i in 0..9 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        let (mut send, driver) = h2_from::<Full<Bytes>>(from, app.addr, 0).await;
        if send.ready().await.is_ok() {
            let r = tokio::time::timeout(Duration::from_secs(5), send.send_request(get(false))).await;
            if let Ok(Ok(resp)) = r {
                assert_eq!(resp.status(), 401);
            }
        }
        held.push((send, driver));
    }
    let again = tokio::time::timeout(Duration::from_secs(5), async {
        partner.ready().await.ok()?;
        partner.send_request(get(true)).await.ok()
    })
    .await
    .ok()
    .flatten();
    let cut = app
        .gateway
        .state()
        .metrics
        .connections_cut
        .with_label_values(&["evicted_keyless"])
        .get();
    let again = again.map(|r| r.status().as_u16());
    for (_, driver) in held {
        driver.abort();
    }
    partner_driver.abort();
    drop(first);
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(
        again,
        Some(200),
        "the partner's busy connection was closed for a keyless newcomer"
    );
    assert!(cut >= 6, "keyless connections closed to make room: {cut}");
}

/// `webhooks.allowed_sources`: a sender outside the origin's networks is
/// refused (401, `source_not_allowed`) before its body is read, from as
/// many addresses as it likes; the origin's signed events are applied.
#[tokio::test]
async fn webhooks_from_outside_the_allowed_sources_are_refused_before_their_body_is_read() {
    let (app, stop, _sim) = start(
        "body_read_timeout_ms = 30000",
        "max_concurrent_reads = 4\nallowed_sources = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let forged = format!("t={},v1={}", unix_now(), "0".repeat(64));
    let mut refused = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        let (mut send, _driver) = h2_from::<StalledBody>(from, app.addr, 65_535).await;
        send.ready().await.unwrap();
        let req = Request::post("http://gateway.test/webhooks/layers")
            .header("x-layers-signature", forged.as_str())
            .body(StalledBody(false))
            .unwrap();
        // Answered at once, although the body never ends.
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("refused without reading the body")
            .unwrap();
        refused.push(resp.status().as_u16());
    }
    let body = json!({"id": unique_event_id(), "type": "ping.r24", "data": {}}).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = TestClient::new(app.addr)
        .send(http::Method::POST, "/webhooks/layers", &h, Bytes::from(body))
        .await;
    let counted = app
        .gateway
        .state()
        .metrics
        .webhook_rejections
        .with_label_values(&["source_not_allowed"])
        .get();
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(refused, vec![401; 5]);
    assert_eq!(counted, 5);
    assert!(r.status.is_success(), "the origin's event: {}", r.status);
}

/// A webhook without a well-formed signature header is refused before a
/// read is given to it: a sender that cannot even forge the header's shape
/// holds no read, however many it opens from one address.
#[tokio::test]
async fn a_webhook_without_a_signature_header_holds_no_read() {
    let (app, stop, _sim) = start("body_read_timeout_ms = 30000", "max_concurrent_reads = 4\n").await;
    let (mut send, _driver) = h2_from::<StalledBody>("127.0.0.1", app.addr, 65_535).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        send.ready().await.unwrap();
        let req = Request::post("http://gateway.test/webhooks/layers")
            .body(StalledBody(false))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("refused without reading the body")
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    let _ = stop.send(true);
    app.stop().await;
    assert_eq!(statuses, vec![401; 8]);
}

#[test]
fn an_allowed_source_that_is_not_a_network_is_refused_by_the_config_check() {
    for bad in ["10.0.0.0/33", "origin.example", "10.0.0/8"] {
        let text = format!("[webhooks]\nallowed_sources = [\"{bad}\"]\n");
        let err = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()).expect_err(bad);
        assert!(
            err.to_string().contains("webhooks.allowed_sources"),
            "{bad}: {err}"
        );
    }
}
