//! Review round 12, the wire: hostile HTTP/1 and h2 clients against the
//! partner port, and the bytes the gateway itself puts on the wire. Every
//! test runs over loopback with bounded counts and bounded waits.

mod support;

use bytes::Bytes;
use layers_gateway::app::App;
use layers_gateway::origin::{HttpUpstream, Upstream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::raw_http::{raw_origin, RawReply};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ------------------------------------------------------------ helpers

/// Reads one HTTP/1.1 response off `s` (head, then `content-length`
/// bytes), then whatever else arrives within `linger`: (head, body, extra).
async fn read_one(s: &mut TcpStream, linger: Duration) -> (String, Vec<u8>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                let mut extra = buf[end + 4 + len..].to_vec();
                let _ = tokio::time::timeout(linger, async {
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => extra.extend_from_slice(&chunk[..n]),
                        }
                    }
                })
                .await;
                return (head, body, extra);
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => panic!("no whole response; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// Splits a byte stream holding several HTTP/1.1 responses (each framed by
/// `content-length`) into (head, body) pairs.
fn split_responses(b: &[u8]) -> Vec<(String, String)> {
    raw_http::split_responses(b)
        .into_iter()
        .map(|(head, body)| (head, String::from_utf8_lossy(&body).into_owned()))
        .collect()
}

/// What is wrong with (head, body) as a `status` refusal in the Layers
/// envelope whose `requestId` is the response's `X-Request-Id`.
fn envelope_problem(head: &str, body: &str, status: u16) -> Option<String> {
    let first = head.lines().next().unwrap_or("");
    let rid = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id:").map(|v| v.trim().to_owned()));
    let env: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let env_rid = env
        .as_ref()
        .and_then(|v| v["error"]["requestId"].as_str())
        .map(str::to_ascii_lowercase);
    let has_code = env.as_ref().is_some_and(|v| v["error"]["code"].is_string());
    if first.starts_with(&format!("HTTP/1.1 {status}")) && rid.is_some() && rid == env_rid && has_code {
        None
    } else {
        Some(format!("head {head:?}, body {body:?}"))
    }
}

async fn still_serving(h: &Harness) {
    let (cid, _) = first_container(&h.sim);
    let r = h.client.get(&content_path(&cid.to_string()), &admin_key()).await;
    assert_eq!(r.status, 200, "the gateway keeps serving a valid key");
}

// ------------------------------------------------------------ HTTP/1: the bytes the gateway writes

/// Attacks `server/hyper_refusal.rs`: the rewrite of hyper's own bare
/// error replies recognises "a write that is exactly an HTTP/1 4xx/5xx head
/// without `x-request-id`", without knowing whether a response body is
/// being written. A proxied body that arrives as its own write and happens
/// to be such bytes (here a `text/plain` body `HTTP/1.1 400 Bad
/// Request\r\n\r\n`, sent by the origin after its head) is replaced by an
/// envelope reply: the client gets `content-length` bytes of the
/// replacement instead of the origin's body, and the rest of it is left on
/// the connection as a second, unsolicited response (a response-splitting
/// desync on a keep-alive connection).
#[tokio::test]
async fn a_proxied_body_that_looks_like_a_refusal_head_reaches_the_client_unchanged() {
    let body = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (origin, _) = raw_origin(RawReply::new(head, body.clone()).after(Duration::from_millis(300))).await;
    let app = raw_http::app_in_front_of(origin, "").await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /v1/projects/prj_1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\n\r\n",
        admin_key()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (h, got, extra) = read_one(&mut s, Duration::from_millis(500)).await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&body),
        "the origin's body, byte for byte"
    );
    assert!(
        extra.is_empty(),
        "nothing after the response on the keep-alive connection, got {:?}",
        String::from_utf8_lossy(&extra)
    );
    app.stop().await;
}

/// Guard: the same rewrite with pipelining: a good request and a request
/// hyper refuses itself (a control byte in a header value), sent in one
/// segment. hyper may write its bare 400 in the same write as the 200 it
/// answered first, which the rewrite leaves alone ("a head split over
/// writes is left alone"), so the refusal goes out without the envelope
/// and `X-Request-Id`.
#[tokio::test]
async fn held_a_pipelined_refusal_after_a_served_request_still_gets_the_envelope() {
    let h = Harness::start().await;
    let (cid, _) = first_container(&h.sim);
    let path = content_path(&cid.to_string());
    // Warm the cache so the first answer is immediate.
    still_serving(&h).await;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\n\r\n",
        admin_key()
    )
    .into_bytes();
    req.extend_from_slice(b"GET /v1/whoami HTTP/1.1\r\nhost: gw\r\nx-bad: a\x01b\r\n\r\n");
    let out = raw_exchange(h.app.addr, &req).await;
    let replies = split_responses(out.as_bytes());
    assert!(replies.len() >= 2, "two answers, got {out:?}");
    assert!(replies[0].0.starts_with("HTTP/1.1 200"), "{:?}", replies[0]);
    if let Some(p) = envelope_problem(&replies[1].0, &replies[1].1, 400) {
        panic!("the pipelined refusal: {p}");
    }
    still_serving(&h).await;
    h.stop().await;
}

/// Attacks promise 3 on the proxied path (`service/proxy.rs`): an origin
/// (or the load balancer in front of it) that answers a proxied read with a
/// bare 502 HTML page. Every 4xx/5xx a partner sees must be the Layers
/// envelope with the response's request id; the gateway streams the page
/// through as it came.
#[tokio::test]
async fn a_non_envelope_origin_5xx_on_a_proxied_route_reaches_the_partner_as_an_envelope() {
    let page = b"<html><body>502 Bad Gateway (lb-7)</body></html>".to_vec();
    let head = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n",
        page.len()
    );
    let (origin, _) = raw_origin(RawReply::new(head, page)).await;
    let app = raw_http::app_in_front_of(origin, "").await;
    let c = TestClient::new(app.addr);
    let r = c.get("/v1/projects/prj_1", &admin_key()).await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let head = format!(
        "HTTP/1.1 {}\r\nx-request-id: {}",
        r.status.as_u16(),
        r.header("x-request-id").unwrap_or("")
    );
    if let Some(p) = envelope_problem(&head, &body, r.status.as_u16()) {
        panic!("a proxied 5xx: {p}");
    }
    app.stop().await;
}

/// The same on a content variant (`service/content_origin.rs`: a query
/// string makes a content read go to the origin; a non-2xx answer's body is
/// passed through as it came).
#[tokio::test]
async fn a_non_envelope_origin_5xx_on_a_content_variant_reaches_the_partner_as_an_envelope() {
    let page = b"<html><body>503 Service Unavailable</body></html>".to_vec();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n",
        page.len()
    );
    let (origin, _) = raw_origin(RawReply::new(head, page)).await;
    let app = raw_http::app_in_front_of(origin, "").await;
    let c = TestClient::new(app.addr);
    let r = c
        .get(
            "/v1/content/cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e?fields=caption",
            &admin_key(),
        )
        .await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let head = format!(
        "HTTP/1.1 {}\r\nx-request-id: {}",
        r.status.as_u16(),
        r.header("x-request-id").unwrap_or("")
    );
    if let Some(p) = envelope_problem(&head, &body, r.status.as_u16()) {
        panic!("a content variant's 5xx: {p}");
    }
    app.stop().await;
}

// ------------------------------------------------------------ HTTP/1: smuggling and odd targets

/// Guard (CL.TE smuggling): `Content-Length` and `Transfer-Encoding:
/// chunked` together. hyper frames by the chunked coding and drops the
/// length; the request the origin gets must carry no stale
/// `content-length: 4` next to a 5-byte body, and the bytes after the
/// first 4 must not become a second request at the origin.
#[tokio::test]
async fn held_cl_te_together_never_reach_the_origin_with_the_stale_length() {
    let ok = br#"{"ok":true}"#.to_vec();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        ok.len()
    );
    let (origin, seen) = raw_origin(RawReply::new(head, ok)).await;
    let app = raw_http::app_in_front_of(origin, "").await;
    let req = format!(
        "POST /v1/projects HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        admin_key()
    );
    let out = raw_exchange(app.addr, req.as_bytes()).await;
    let seen = seen.lock().unwrap().clone();
    for r in &seen {
        let text = String::from_utf8_lossy(r).to_ascii_lowercase();
        assert!(
            !text.contains("content-length: 4\r\n"),
            "stale length forwarded: {text:?}"
        );
        assert!(
            !text.starts_with("o\r\n") && !text.starts_with("llo"),
            "smuggled: {text:?}"
        );
    }
    assert!(
        seen.len() <= 1,
        "one request at most reached the origin: {seen:?}"
    );
    assert!(out.starts_with("HTTP/1.1 "), "{out:?}");
    app.stop().await;
}

/// Guard: framing hyper refuses itself (`Transfer-Encoding: chunked,
/// identity`, two different `Content-Length`s, an obs-folded header line)
/// gets a 400 in the envelope with a request id and never reaches the origin.
#[tokio::test]
async fn held_refused_framing_gets_a_400_envelope_and_never_reaches_the_origin() {
    let (origin, seen) = raw_origin(RawReply::new(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
        *b"{}",
    ))
    .await;
    let app = raw_http::app_in_front_of(origin, "").await;
    let key = admin_key();
    for (what, extra, body) in [
        (
            "te chunked, identity",
            "transfer-encoding: chunked, identity\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        ("te identity", "transfer-encoding: identity\r\n", "hello"),
        (
            "two lengths",
            "content-length: 5\r\ncontent-length: 6\r\n",
            "hello!",
        ),
        (
            "obs-fold",
            "x-note: a\r\n  folded\r\ncontent-length: 5\r\n",
            "hello",
        ),
        (
            "te in http/1.0",
            "transfer-encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let version = if what.contains("1.0") {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let req = format!("POST /v1/projects {version}\r\nhost: gw\r\nx-api-key: {key}\r\n{extra}\r\n{body}");
        let out = raw_exchange(app.addr, req.as_bytes()).await;
        let replies = split_responses(out.as_bytes());
        let Some((h, b)) = replies.first() else {
            panic!("{what}: nothing answered");
        };
        // hyper keeps the request's version in its status line.
        let h = h.replacen("HTTP/1.0", "HTTP/1.1", 1);
        if let Some(p) = envelope_problem(&h, b, 400) {
            panic!("{what}: {p}");
        }
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the origin");
    app.stop().await;
}

/// Guard: request targets in absolute form are routed by their path (the
/// authority is not a second routing key), and asterisk and authority form
/// (`OPTIONS *`, `CONNECT host:port`) get a 404 envelope, never a tunnel.
#[tokio::test]
async fn held_absolute_asterisk_and_authority_form_targets() {
    let h = Harness::start().await;
    let (cid, _) = first_container(&h.sim);
    let key = admin_key();
    let out = raw_exchange(
        h.app.addr,
        format!(
            "GET http://evil.example{} HTTP/1.1\r\nhost: other.example\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n",
            content_path(&cid.to_string())
        )
        .as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    for target in [
        "OPTIONS * HTTP/1.1",
        "CONNECT 127.0.0.1:22 HTTP/1.1",
        "CONNECT evil.example:443 HTTP/1.1",
    ] {
        let out = raw_exchange(
            h.app.addr,
            format!("{target}\r\nhost: gw\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let replies = split_responses(out.as_bytes());
        let (hd, b) = replies
            .first()
            .unwrap_or_else(|| panic!("{target}: nothing: {out:?}"));
        if let Some(p) = envelope_problem(hd, b, 404) {
            panic!("{target}: {p}");
        }
        // Nothing after the refusal: no tunnel was opened.
        assert_eq!(replies.len(), 1, "{target}: {out:?}");
    }
    still_serving(&h).await;
    h.stop().await;
}

// ------------------------------------------------------------ h2, frame by frame

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with a 7-bit prefix (the H bit clear).
fn hpack_len(out: &mut Vec<u8>, n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    let mut n = n - 127;
    while n >= 128 {
        out.push((n % 128 + 128) as u8);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in headers {
        out.push(0);
        hpack_len(&mut out, k.len());
        out.extend_from_slice(k.as_bytes());
        hpack_len(&mut out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn get_block(path: &str, key: &str) -> Vec<u8> {
    hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "gw"),
        (":path", path),
        ("x-api-key", key),
    ])
}

/// A raw h2 connection: the preface and an empty SETTINGS are sent.
async fn h2_raw(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// Frames read until the server closes, `GOAWAY` arrives, or `wait` passes
/// with nothing new: (type, flags, stream, payload) each, and whether the
/// connection was closed or sent a GOAWAY.
async fn h2_frames(s: &mut TcpStream, wait: Duration) -> (Vec<(u8, u8, u32, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while buf.len() >= 9 {
            let n = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + n {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let f = (buf[3], buf[4], stream, buf[9..9 + n].to_vec());
            buf.drain(..9 + n);
            if f.0 == SETTINGS && f.1 & 1 == 0 {
                let _ = s.write_all(&frame(SETTINGS, 1, 0, &[])).await;
            }
            let goaway = f.0 == GOAWAY;
            out.push(f);
            if goaway {
                return (out, true);
            }
        }
        match tokio::time::timeout(wait, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// Guard (CVE-2024-27316 style): a HEADERS frame without END_HEADERS
/// followed by an endless run of empty CONTINUATION frames (which add
/// nothing to the header list size, so the list cap alone never fires). The
/// connection must be closed well before the run ends, and other clients
/// keep being served.
#[tokio::test]
async fn held_an_h2_continuation_flood_is_cut_and_others_are_served() {
    let h = Harness::start().await;
    let mut s = h2_raw(h.app.addr).await;
    let mut flood = frame(HEADERS, 0, 1, &get_block("/v1/whoami", &admin_key()));
    let empty = frame(CONTINUATION, 0, 1, &[]);
    for _ in 0..20_000 {
        flood.extend_from_slice(&empty);
    }
    // The server may stop reading (and close) part-way: a failed write is fine.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&flood)).await;
    let (frames, closed) = h2_frames(&mut s, Duration::from_secs(3)).await;
    assert!(
        closed,
        "the connection is cut; frames: {:?}",
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    assert!(
        !frames.iter().any(|f| f.0 == HEADERS),
        "the flooded header block was never answered as a request"
    );
    still_serving(&h).await;
    h.stop().await;
}

/// Guard (CVE-2023-44487, rapid reset): 400 streams each opened and reset
/// at once, all reads of a content variant whose origin answer never comes
/// (the work a reset must cancel). Afterwards the gateway holds no more
/// origin requests than one connection's stream cap, and keeps serving.
#[tokio::test]
async fn held_h2_rapid_reset_leaves_no_origin_work_behind() {
    use support::scripted::{Answer, Scripted, ScriptedUpstream};
    let origin = Arc::new(Scripted::default());
    let cid = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
    let gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        http::Method::GET,
        &format!("/v1/content/{cid}"),
        Answer::Held(
            gate.clone(),
            Box::new(Answer::Json(
                404,
                serde_json::json!({"error": {"code": "NOT_FOUND", "message": "no", "requestId": "req_x"}}),
            )),
        ),
    );
    let cfg = test_config("http://127.0.0.1:1", "[shaping]\nenabled = false\n");
    let app = App::start(cfg, demo_keys(), Arc::new(ScriptedUpstream(origin.clone())))
        .await
        .unwrap();
    let mut s = h2_raw(app.addr).await;
    let key = admin_key();
    let mut burst = Vec::new();
    for i in 0..400u32 {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &get_block(&format!("/v1/content/{cid}?n={i}"), &key),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&burst)).await;
    let _ = h2_frames(&mut s, Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let inflight = app.gateway.state().metrics.origin_inflight.get();
    assert!(
        inflight <= 64,
        "{inflight} origin requests still in flight for reset streams"
    );
    let c = TestClient::new(app.addr);
    let r = tokio::time::timeout(Duration::from_secs(5), c.get("/v1/whoami", &key))
        .await
        .expect("the gateway still answers");
    assert!(r.header("x-request-id").is_some());
    gate.notify_waiters();
    app.stop().await;
}

/// A gateway in front of `origin` with `server` lines in `[server]`.
async fn app_with_server(origin: SocketAddr, server: &str, extra: &str) -> App {
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{token_hash}\"\n\n[origin]\nurl = \"http://{origin}\"\ntimeout_ms = 5000\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    );
    let cfg = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()).expect("valid config");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    App::start(cfg, demo_keys(), upstream).await.unwrap()
}

/// Guard (PING and SETTINGS floods, CVE-2019-9512/9515): a client that
/// floods frames that each need an answer and never reads them. Once the
/// socket stops taking the answers the write-stall deadline
/// (`response_write_timeout_ms`, 1 s here) must close the connection,
/// rather than the answers piling up or the connection living on.
#[tokio::test]
async fn held_an_h2_ping_or_settings_flood_that_never_reads_is_closed() {
    let (origin, _) = raw_origin(RawReply::new(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n",
        *b"{}",
    ))
    .await;
    let app = app_with_server(
        origin,
        "response_write_timeout_ms = 1000\nidle_timeout_ms = 60000",
        "",
    )
    .await;
    for (what, f) in [
        ("ping", frame(PING, 0, 0, &[7; 8])),
        ("settings", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
    ] {
        let mut s = h2_raw(app.addr).await;
        // A request first: the first-request deadline no longer applies.
        s.write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &get_block("/v1/whoami", &admin_key()),
        ))
        .await
        .unwrap();
        let mut flood = Vec::with_capacity(f.len() * 4096);
        for _ in 0..4096 {
            flood.extend_from_slice(&f);
        }
        let started = tokio::time::Instant::now();
        let mut blocked = false;
        while started.elapsed() < Duration::from_secs(10) {
            match tokio::time::timeout(Duration::from_millis(500), s.write_all(&flood)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    blocked = true;
                    break;
                }
            }
        }
        eprintln!("{what}: writes blocked: {blocked}");
        // Past the write-stall deadline, then see whether it was closed.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (_, closed) = h2_frames(&mut s, Duration::from_secs(3)).await;
        assert!(
            closed,
            "{what} flood (writes blocked: {blocked}): the connection was still open"
        );
    }
    let c = TestClient::new(app.addr);
    let r = c.get("/v1/projects/prj_1", &admin_key()).await;
    assert_eq!(r.status, 200);
    app.stop().await;
}

// ------------------------------------------------------------ the fence, from the wire

/// Attacks write-through (`routes.rs`, `service/proxy.rs`): DESIGN names
/// an approval change as an invalidation (promise 1) and the gateway has
/// `EventType::Approved` / `Rejected`, but a proxied `POST
/// /v1/content/:id/approve` (or `/reject`) is routed as a plain proxy with
/// no write-through, unlike `PATCH`. After the origin answered the approve
/// with 2xx, the same partner keeps getting the cached pre-approval
/// container (`approvalStatus: pending`) as a HIT until a webhook arrives.
#[tokio::test(start_paused = true)]
async fn an_approve_proxied_through_the_gateway_invalidates_the_cached_container() {
    use support::fence_fixtures::*;
    use support::scripted::{Answer, Scripted};
    for action in ["approve", "reject"] {
        let origin = Arc::new(Scripted::default());
        let mut before = container(&["a-1"], "v1");
        before["approvalStatus"] = serde_json::json!("pending");
        before["updatedAt"] = serde_json::json!(rfc3339_ms(T0_MS - 60_000));
        origin.set(http::Method::GET, &path(), Answer::Json(200, before));
        let gw = gateway(&origin, "");
        let r = get(&gw, &path()).await;
        assert_eq!(r.status, 200);
        assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));

        let status = if action == "approve" {
            "approved"
        } else {
            "rejected"
        };
        let mut after = container(&["a-1"], "v1");
        after["approvalStatus"] = serde_json::json!(status);
        after["updatedAt"] = serde_json::json!(rfc3339_ms(T0_MS - 1_000));
        let p = format!("{}/{action}", path());
        origin.set(http::Method::POST, &p, Answer::Json(200, after.clone()));
        origin.set(http::Method::GET, &path(), Answer::Json(200, after));
        let r = call(
            &gw,
            http::Method::POST,
            &p,
            &[("x-api-key", &admin_key())],
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(r.status, 200, "{action}");
        let r = get(&gw, &path()).await;
        assert_eq!(
            r.json()["approvalStatus"],
            status,
            "after a 2xx {action} through this gateway, GET answers {:?} ({:?})",
            r.json()["approvalStatus"],
            r.x_cache()
        );
    }
}

/// Guard: over h2 a header block under the h2 layer's cap but past
/// `server.max_headers` (65 small headers) is refused by the gateway
/// itself: 431 in the envelope with a request id, the connection keeps
/// serving its next stream.
#[tokio::test]
async fn held_h2_headers_past_the_configured_count_get_the_431_envelope() {
    use http_body_util::{BodyExt, Full};
    let h = Harness::start().await;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(h.app.addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (cid, _) = first_container(&h.sim);
    let mut b = http::Request::get(format!("http://gw{}", content_path(&cid.to_string())))
        .header("x-api-key", admin_key());
    for i in 0..70 {
        b = b.header(format!("x-pad-{i}"), "v");
    }
    let resp = send
        .send_request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let rid = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let head = format!("HTTP/1.1 {status}\r\nx-request-id: {}", rid.unwrap_or_default());
    if let Some(p) = envelope_problem(&head, &String::from_utf8_lossy(&body), 431) {
        panic!("{p}");
    }
    let ok = http::Request::get(format!("http://gw{}", content_path(&cid.to_string())))
        .header("x-api-key", admin_key())
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(ok).await.unwrap().status(), 200);
    h.stop().await;
}
