//! Round 28, attacker A: the round-27 change (a credentialed request stays
//! counted until the flush that puts its response on the wire,
//! `ConnState::flushed` from `DeadlineIo::poll_flush`; unchecked
//! connections counted over the whole table; a 10 ms backoff after a
//! fruitless full search). Each test asserts a promise and fails where it
//! is broken. Loopback only, bounded counts, no long sleeps.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::origin::Upstream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::keyless::{cut, h2_from, send_get_slow_reader};
use support::loopback_app::connect_from;
use support::scripted::{Answer, Scripted, ScriptedUpstream};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `method path` (with `headers`) on `send`; the response head (body
/// unread), or `None`.
async fn h2_send(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<http::Response<hyper::body::Incoming>> {
    send.ready().await.ok()?;
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://gateway.test{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .ok()?
        .ok()
}

/// A gateway on loopback whose origin is `origin` (scripted, in-process):
/// `server` lines in `[server]`, `admin` lines in `[admin]` (with the test
/// admin token), `extra` appended.
async fn scripted_app(origin: Arc<Scripted>, server: &str, admin: &str, extra: &str) -> App {
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{token_hash}\"\n{admin}\n\n[origin]\nurl = \"http://127.0.0.1:1\"\ntimeout_ms = 5000\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    );
    let cfg = Config::parse(&text, PathBuf::new()).expect("valid config");
    let upstream: Arc<dyn Upstream> = Arc::new(ScriptedUpstream(origin));
    App::start(cfg, demo_keys(), upstream).await.unwrap()
}

fn big_origin(len: usize) -> Arc<Scripted> {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Raw(200, "application/octet-stream", Bytes::from(vec![b'x'; len])),
    );
    origin
}

/// DEFECT: on h2, `ConnState::flushed` runs when the h2 codec has written
/// its FRAME buffer and flushed the socket, not when the streams' send
/// queues are empty. hyper polls a response body as soon as the stream has
/// any window (it reserves 1 byte), and hands the whole chunk to h2, which
/// buffers what the client's flow-control window does not yet allow; the
/// body ends, its `ActiveGuard` (credentialed) is dropped, and the next
/// socket flush (the first window's worth of DATA) takes the request out
/// of `credentialed` and `unflushed`. The partner's connection then looks
/// IDLE (the first choice at the cap) while almost all of its 200 is still
/// in h2's send buffer, waiting for the partner's WINDOW_UPDATEs. A keyless
/// client holding one unread 401 and connecting once more at the cap gets
/// the partner's connection closed (`evicted_idle`); its own refusal stays.
#[tokio::test]
async fn an_h2_partners_response_waiting_on_flow_control_is_not_evicted_as_idle() {
    // The partner: an ordinary h2 client on a slow link (a 16 KiB stream
    // window, its reader busy for a moment).
    partner_h2_response_survives_a_newcomer_at_the_cap(1024 * 1024, 16 * 1024).await;
}

/// KNOWN GAP (round 31): the same with the last piece of a body. hyper
/// hands a piece to h2 once the stream has one byte of capacity, and the
/// body then ends: a 4,000-byte answer to a partner whose window had room
/// for 1,000 bytes is counted written (idle) with 3,000 bytes still
/// waiting on the partner's window, and goes first at the cap. Sending the
/// body's last byte alone fixes it (this test passed) but cost 12 to 20 %
/// of h2 hit throughput (BENCHMARKS.md, run 5); see `H2_PIECE`.
#[tokio::test]
#[ignore = "known gap: the last h2 piece of an answer may wait on the window after it counts as written (H2_PIECE)"]
async fn the_tail_of_an_h2_partners_response_waiting_on_flow_control_is_not_evicted_as_idle() {
    partner_h2_response_survives_a_newcomer_at_the_cap(4000, 1000).await;
    // A body of several pieces: the window takes the first two and 100
    // bytes of the last.
    partner_h2_response_survives_a_newcomer_at_the_cap(2 * 16 * 1024 + 3000, 2 * 16 * 1024 + 100).await;
}

/// A partner reads `len` bytes of a 200 over h2 with a stream window of
/// `window` and pauses; a keyless client holding an unread 401 connects
/// once more at a cap of 2; the partner then reads its whole answer.
async fn partner_h2_response_survives_a_newcomer_at_the_cap(len: usize, window: u32) {
    let app = scripted_app(
        big_origin(len),
        "max_connections = 2\nresponse_write_timeout_ms = 30000\nheader_read_timeout_ms = 30000",
        "",
        "",
    )
    .await;
    let (mut psend, pdriver) = h2_from("127.0.0.3", app.addr, window).await;
    let key = admin_key();
    let resp = h2_send(&mut psend, Method::GET, "/v1/projects/p1", &[("x-api-key", &key)])
        .await
        .expect("partner's response head");
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The keyless client: an unread 401 (zero window) in the other slot...
    let (mut ksend, kdriver) = h2_from("127.0.0.1", app.addr, 0).await;
    let refused = h2_send(&mut ksend, Method::GET, "/v1/projects/p1", &[]).await;
    assert_eq!(refused.as_ref().map(|r| r.status().as_u16()), Some(401));
    // ...and one more connection at the cap.
    let before = (cut(&app, "evicted_idle"), cut(&app, "evicted_keyless"));
    let newcomer = connect_from("127.0.0.1", app.addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = (cut(&app, "evicted_idle"), cut(&app, "evicted_keyless"));
    // The partner reads its response now.
    let mut body = resp.into_body();
    let mut got = 0usize;
    let mut err = None;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => got += f.data_ref().map_or(0, |d| d.len()),
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
        }
    })
    .await;
    drop((newcomer, refused));
    pdriver.abort();
    kdriver.abort();
    app.stop().await;
    assert_eq!(
        got, len,
        "a partner's h2 200 (valid key, window {window}) was cut: {got} of {len} body bytes \
         ({err:?}); evicted (idle, keyless) went from {before:?} to {after:?} while the keyless \
         client's unread 401 stayed open"
    );
}

/// DEFECT: the idle timeout reads `ConnState::idle_deadline`, which looks
/// at `active` only: the round-27 fix (a response still being written is
/// not idle) reached `holds()` but not the idle timer. A partner that
/// downloads a large answer steadily but slowly (its socket never blocks
/// for `response_write_timeout_ms`) has its request's guard dropped as soon
/// as hyper has taken the body, the connection counts as idle from then
/// on, and `idle_timeout_ms` later it is shut down, then dropped
/// `header_read_timeout_ms` after that: the partner's 200 is truncated
/// although bytes kept flowing the whole time. (Here 300 ms + 300 ms
/// against a download of a second or two; with the defaults, 60 s + 10 s against any
/// download slower than about 60 KB/s for 4 MB.)
#[tokio::test]
async fn a_response_still_being_written_steadily_is_not_cut_by_the_idle_timeout() {
    const LEN: usize = 4 * 1024 * 1024;
    let app = scripted_app(
        big_origin(LEN),
        "idle_timeout_ms = 300\nheader_read_timeout_ms = 300\nresponse_write_timeout_ms = 5000",
        "",
        "",
    )
    .await;
    let mut partner = send_get_slow_reader("127.0.0.3", app.addr, "/v1/projects/p1", &admin_key()).await;
    // Read steadily, a little every millisecond, never stalling.
    let mut got = Vec::with_capacity(LEN + 1024);
    let mut buf = vec![0u8; 32 * 1024];
    let started = std::time::Instant::now();
    let mut ended_by = "eof";
    loop {
        match tokio::time::timeout(Duration::from_secs(5), partner.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => {
                ended_by = "error";
                break;
            }
            Err(_) => {
                ended_by = "timeout";
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(8) {
            ended_by = "bound";
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let idle_cuts = cut(&app, "idle");
    app.stop().await;
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let body = split.map_or(0, |p| got.len() - p);
    assert_eq!(
        body, LEN,
        "a partner's 200 being read steadily was cut after {elapsed:?} ({ended_by}): {body} of \
         {LEN} body bytes; connections cut as idle: {idle_cuts}"
    );
}

/// DEFECT: on the admin listener no request is ever marked credentialed,
/// not even one that presented the admin token. An operator's purge (valid
/// bearer token) whose answer is not yet read is "only refusals" to the
/// eviction, as is a keyless client's unread answer; between the two the
/// one whose last request began or ended LONGEST AGO goes. A keyless client
/// that keeps its own held connection fresh (a new /healthz request on it)
/// and then connects once more at the cap gets the OPERATOR's connection
/// closed, and keeps its own. The same holds a Prometheus scrape whose
/// answer is still being written.
#[tokio::test]
async fn an_operators_authorized_purge_is_not_cut_for_a_keyless_newcomer_on_the_admin_listener() {
    let app = scripted_app(
        big_origin(16),
        "response_write_timeout_ms = 30000",
        "max_connections = 2",
        "",
    )
    .await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    // The operator: an h2 client slow to read (zero window for now).
    let (mut osend, odriver) = h2_from("127.0.0.3", app.admin_addr, 0).await;
    let purge = h2_send(
        &mut osend,
        Method::POST,
        "/admin/purge?all=true",
        &[("authorization", &bearer)],
    )
    .await;
    let purge_status = purge.as_ref().map(|r| r.status().as_u16());
    assert_eq!(purge_status, Some(200), "the operator's purge is answered");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The keyless client: one held answer, kept fresh.
    let (mut ksend, kdriver) = h2_from("127.0.0.1", app.admin_addr, 0).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(h2_send(&mut ksend, Method::GET, "/healthz", &[]).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newcomer = connect_from("127.0.0.1", app.admin_addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keyless = cut(&app, "evicted_keyless") + cut(&app, "evicted_idle");
    let operator_closed = osend.is_closed() || odriver.is_finished();
    let attacker_closed = ksend.is_closed() || kdriver.is_finished();
    drop((newcomer, held, purge));
    odriver.abort();
    kdriver.abort();
    app.stop().await;
    assert!(
        !operator_closed,
        "the operator's connection, holding the answer to a purge with a valid admin token, was \
         closed for a keyless newcomer ({keyless} evictions); the keyless client's own held \
         connection closed: {attacker_closed}"
    );
}

/// GAP (design): `credentialed()` is called right after authentication,
/// before the scope check and the rate limit, so a 403 FORBIDDEN_SCOPE (or
/// a 429) is protected like a partner's 200. A key with no scope at all
/// (or a low tier past its per-minute quota, whose 429s cost it nothing)
/// holds every slot with answers it never reads (zero window), each until
/// `response_write_timeout_ms`, and a partner with a working key is refused
/// at the cap: nothing may go. A refusal of the key's request is what a
/// keyless client's 401 is, and could rank with it.
#[tokio::test]
async fn a_key_refused_for_its_scope_cannot_hold_slots_with_unread_403s() {
    let app = scripted_app(
        big_origin(16),
        "max_connections = 3\nresponse_write_timeout_ms = 30000\nheader_read_timeout_ms = 30000",
        "",
        "",
    )
    .await;
    let nokey = no_scope_key();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut send, driver) = h2_from("127.0.0.1", app.addr, 0).await;
        let r = h2_send(
            &mut send,
            Method::GET,
            "/v1/projects/p1",
            &[("x-api-key", &nokey)],
        )
        .await;
        assert_eq!(r.as_ref().map(|r| r.status().as_u16()), Some(403));
        held.push((send, driver, r));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A partner with a working key, on a fresh connection.
    let mut s = connect_from("127.0.0.3", app.addr).await;
    let head = format!(
        "GET /v1/projects/p1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
        admin_key()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let status: Option<u16> = String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok());
    for (_, d, _) in &held {
        d.abort();
    }
    app.stop().await;
    assert_eq!(
        status,
        Some(200),
        "a partner was refused at the cap while every slot held only unread 403s of a key with no scope"
    );
}
