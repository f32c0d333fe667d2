//! Hardening (issue 14): no denial of service without a key, no side
//! effects between partners. Every test works over real loopback sockets
//! (or in-process where only the gateway's own logic is in question), with
//! bounded counts, and under tokio's paused clock where time matters.

mod support;

use support::keyless::StalledBody;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::demo::Simulator;
use layers_gateway::origin::{HttpUpstream, Upstream};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::logs::Captured;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Longest any single wait below may take (tokio time: under the paused
/// clock it passes at once when nothing else can happen).
const WAIT: Duration = Duration::from_secs(60);

/// A gateway on loopback in front of an origin on loopback.
struct Stack {
    sim: Simulator,
    app: App,
    origin_stop: tokio::sync::watch::Sender<bool>,
}

impl Stack {
    /// The simulator as origin; `server` and `admin` are lines for those
    /// sections, `origin` lines for `[origin]`, `extra` more sections.
    async fn start(server: &str, admin: &str, origin: &str, extra: &str) -> Stack {
        let sim = demo_simulator();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = listener.local_addr().unwrap();
        let (origin_stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let app = start_gateway(origin_addr, server, admin, origin, extra).await;
        Stack {
            sim,
            app,
            origin_stop,
        }
    }

    fn metric(&self, name: &str, labels: &[&str]) -> i64 {
        metric_of(&self.app, name, labels)
    }

    async fn stop(self) {
        let _ = self.origin_stop.send(true);
        tokio::time::timeout(WAIT, self.app.stop())
            .await
            .expect("gateway stops");
    }
}

async fn start_gateway(
    origin: SocketAddr,
    server: &str,
    admin: &str,
    origin_extra: &str,
    extra: &str,
) -> App {
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{token_hash}\"\n{admin}\n\n[origin]\nurl = \"http://{origin}\"\ntimeout_ms = 5000\n{origin_extra}\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    );
    let cfg = Config::parse(&text, PathBuf::new()).expect("valid config");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    App::start(cfg, demo_keys(), upstream).await.unwrap()
}

/// A counter or gauge of the gateway's registry (0 when absent).
fn metric_of(app: &App, name: &str, labels: &[&str]) -> i64 {
    let m = &app.gateway.state().metrics;
    let full = format!("layers_gateway_{name}");
    for f in m.registry.gather() {
        if f.name() != full {
            continue;
        }
        let mut sum = 0.0;
        for s in f.get_metric() {
            let values: Vec<&str> = s.get_label().iter().map(|l| l.value()).collect();
            if labels.is_empty() || values == labels {
                sum += s.get_counter().get_value() + s.get_gauge().get_value();
            }
        }
        return sum as i64;
    }
    0
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawReply {
    status: u16,
    /// The status line and header lines, as sent.
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn code(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)));
        v["error"]["code"].as_str().unwrap_or("").to_owned()
    }
}

/// Reads one HTTP/1.1 response (head, then `content-length` bytes).
async fn read_reply(s: &mut TcpStream) -> Option<RawReply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head.split(' ').nth(1)?.parse().ok()?;
                    return Some(RawReply {
                        status,
                        head,
                        body: buf[end + 4..end + 4 + len].to_vec(),
                    });
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a reply or a close")
}

/// Waits until the server closes the connection; returns how long it took
/// and whether it sent anything first.
async fn wait_closed(s: &mut TcpStream) -> (Duration, usize) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was still open after {WAIT:?}");
    (started.elapsed(), got.len())
}

fn get_head(path: &str, key: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: gateway.test\r\nx-api-key: {key}\r\n\r\n")
}

/// One keyed GET on a fresh HTTP/1.1 connection.
async fn keyed_get(addr: SocketAddr, path: &str) -> RawReply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(get_head(path, &admin_key()).as_bytes())
        .await
        .unwrap();
    read_reply(&mut s).await.expect("a reply")
}

fn container_path(sim: &Simulator, org: &str) -> String {
    let id = sim.container_ids().into_iter().find(|(o, _)| o == org).unwrap().1;
    format!("/v1/content/{id}")
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// ------------------------------------------------------------ every wait has a deadline

#[tokio::test(start_paused = true)]
async fn silent_sockets_and_partial_prefaces_are_closed_and_keyed_requests_still_get_200() {
    let st = Stack::start("header_read_timeout_ms = 2000\nmax_connections = 8", "", "", "").await;
    let addr = st.app.addr;
    let path = container_path(&st.sim, "org_demo_a");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Half an h2 preface: the protocol detection waits for the rest.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(&PREFACE[..16]).await.unwrap();
    held.push(partial);
    // A whole preface and then no request.
    let mut preface_only = TcpStream::connect(addr).await.unwrap();
    preface_only.write_all(PREFACE).await.unwrap();
    held.push(preface_only);

    // While they are open, a keyed request is served.
    assert_eq!(keyed_get(addr, &path).await.status, 200);

    for (i, s) in held.iter_mut().enumerate() {
        let (waited, _) = wait_closed(s).await;
        assert!(
            waited < Duration::from_secs(3),
            "socket {i} was closed only after {waited:?}"
        );
    }

    // As many silent sockets as the cap: closed at the deadline, and the
    // slots come back.
    let mut full: Vec<TcpStream> = Vec::new();
    for _ in 0..8 {
        full.push(TcpStream::connect(addr).await.unwrap());
    }
    for s in &mut full {
        let (waited, _) = wait_closed(s).await;
        assert!(waited <= Duration::from_secs(3), "closed after {waited:?}");
    }
    assert_eq!(keyed_get(addr, &path).await.status, 200);
    st.stop().await;
}

/// An h2 client connection (prior knowledge) over loopback.
async fn h2_connect(
    addr: SocketAddr,
    window: u32,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .initial_connection_window_size(window.max(65_535))
        .adaptive_window(false)
        .handshake(io)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

fn h2_get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://gateway.test{path}"))
        .header("x-api-key", admin_key())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn h2_connections_without_requests_or_idle_are_closed() {
    let st = Stack::start(
        "header_read_timeout_ms = 2000\nidle_timeout_ms = 5000",
        "",
        "",
        "",
    )
    .await;
    let path = container_path(&st.sim, "org_demo_a");

    // Handshake, then no request: closed at the header-read deadline.
    let started = Instant::now();
    let (_send, driver) = h2_connect(st.app.addr, 65_535).await;
    tokio::time::timeout(WAIT, driver).await.expect("closed").unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "no-request h2 closed after {waited:?}"
    );

    // One request, then silence: closed at the idle timeout (GOAWAY).
    let (mut send, driver) = h2_connect(st.app.addr, 65_535).await;
    let resp = send.send_request(h2_get(&path)).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(WAIT, driver).await.expect("closed").unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(8),
        "idle h2 closed after {waited:?}"
    );
    assert_eq!(st.metric("connections_cut_total", &["idle"]), 1);
    st.stop().await;
}

#[tokio::test(start_paused = true)]
async fn healthz_answers_while_the_partner_port_is_flooded_and_admin_floods_are_closed() {
    let st = Stack::start(
        "header_read_timeout_ms = 2000\nmax_connections = 4",
        "max_connections = 3",
        "",
        "",
    )
    .await;
    let healthz = |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await
            .unwrap();
        read_reply(&mut s).await.expect("a reply").status
    };
    // The partner port full of silent sockets (and more shed).
    let mut partner = Vec::new();
    for _ in 0..6 {
        partner.push(TcpStream::connect(st.app.addr).await.unwrap());
    }
    assert_eq!(healthz(st.app.admin_addr).await, 200);

    // The admin port's own cap is small; a probe at the cap takes the slot
    // of a silent socket, and the others are closed at the same deadline.
    let mut admin = Vec::new();
    for _ in 0..3 {
        admin.push(TcpStream::connect(st.app.admin_addr).await.unwrap());
    }
    assert_eq!(healthz(st.app.admin_addr).await, 200, "at the admin cap");
    for s in &mut admin {
        let (waited, _) = wait_closed(s).await;
        assert!(
            waited < Duration::from_secs(3),
            "admin socket closed after {waited:?}"
        );
    }
    assert_eq!(healthz(st.app.admin_addr).await, 200);
    drop(partner);
    st.stop().await;
}

/// Only when every connection has a request in flight does a new one get
/// the 503 envelope (and is closed).
#[tokio::test(start_paused = true)]
async fn past_the_cap_with_every_connection_busy_a_new_one_gets_503_overloaded() {
    let st = Stack::start(
        "max_connections = 2\nresponse_write_timeout_ms = 60000",
        "",
        "",
        "",
    )
    .await;
    let path = container_path(&st.sim, "org_demo_a");
    // Two h2 connections, each with a response its zero window holds.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut send, driver) = h2_connect(st.app.addr, 0).await;
        let resp = send.send_request(h2_get(&path)).await.unwrap();
        assert_eq!(resp.status(), 200);
        held.push((send, driver, resp));
    }
    let mut third = TcpStream::connect(st.app.addr).await.unwrap();
    let r = read_reply(&mut third).await.expect("a reply");
    assert_eq!(r.status, 503);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "OVERLOADED");
    let head = r.head.to_ascii_lowercase();
    assert!(head.contains("\r\ncache-control: no-store"), "{head}");
    assert!(head.contains("\r\nretry-after: "), "{head}");
    let rid = v["error"]["requestId"].as_str().unwrap();
    assert!(
        head.contains(&format!("\r\nx-request-id: {}", rid.to_ascii_lowercase())),
        "{head}"
    );
    let (waited, _) = wait_closed(&mut third).await;
    assert!(waited < Duration::from_secs(2), "closed after the 503");
    assert_eq!(st.metric("connections_cut_total", &["evicted_idle"]), 0);
    assert_eq!(st.metric("connections_rejected_total", &[]), 1);
    drop(held);
    st.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stalled_h2_streams_are_reset_and_release_their_origin_connections() {
    let st = Stack::start("response_write_timeout_ms = 3000", "", "", "").await;
    // A zero window: the gateway can send the response head, never its body.
    let (mut send, _driver) = h2_connect(st.app.addr, 0).await;
    const STREAMS: usize = 10;
    let mut bodies = Vec::new();
    for _ in 0..STREAMS {
        send.ready().await.unwrap();
        let resp = send.send_request(h2_get("/v1/projects")).await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push((Instant::now(), resp.into_body()));
    }
    // Each stalled response holds its origin connection, and it counts,
    // until it is cut. (The paused clock may jump to a cut while the
    // requests above wait on loopback, so count both.)
    let stalled = |st: &Stack| st.metric("connections_cut_total", &["response_stalled"]);
    assert_eq!(st.metric("origin_inflight", &[]) + stalled(&st), STREAMS as i64);
    // Others are served meanwhile.
    let path = container_path(&st.sim, "org_demo_a");
    assert_eq!(keyed_get(st.app.addr, &path).await.status, 200);

    for (answered, mut b) in bodies {
        let frame = tokio::time::timeout(WAIT, b.frame())
            .await
            .expect("the stream ends");
        assert!(
            !matches!(frame, Some(Ok(_))),
            "a zero-window stream got data: {frame:?}"
        );
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(30),
            "a stalled stream was cut {waited:?} after its head"
        );
    }
    assert_eq!(
        st.metric("origin_inflight", &[]),
        0,
        "origin connections released"
    );
    assert_eq!(
        st.metric("connections_cut_total", &["response_stalled"]),
        STREAMS as i64
    );
    st.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stalled_webhook_bodies_are_cut_with_408() {
    let st = Stack::start("body_read_timeout_ms = 2000", "", "", "").await;
    // HTTP/1.1: 500 bytes declared, 10 sent.
    let mut s = TcpStream::connect(st.app.addr).await.unwrap();
    // A well-formed signature header (a body is read only after that check).
    let head = format!(
        "POST /webhooks/layers HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\nx-layers-signature: t=1,v1={}\r\ncontent-length: 500\r\n\r\n{{\"id\":\"ev",
        "0".repeat(64)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let r = read_reply(&mut s).await.expect("a reply");
    let waited = started.elapsed();
    assert_eq!((r.status, r.code().as_str()), (408, "REQUEST_TIMEOUT"));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // h2: stalled webhook streams on one connection (as many as one client
    // may have read at once: a quarter of max_concurrent_reads), each cut.
    let io = TokioIo::new(TcpStream::connect(st.app.addr).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, StalledBody>(TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut pending = Vec::new();
    let forged = format!("t=1,v1={}", "0".repeat(64));
    for _ in 0..8 {
        send.ready().await.unwrap();
        let req = Request::post("http://gateway.test/webhooks/layers")
            .header("content-type", "application/json")
            .header("x-layers-signature", forged.as_str())
            .body(StalledBody(false))
            .unwrap();
        pending.push(send.send_request(req));
    }
    for p in pending {
        let resp = tokio::time::timeout(WAIT, p).await.expect("answered").unwrap();
        assert_eq!(resp.status(), 408);
    }
    assert_eq!(st.metric("webhook_rejections_total", &["body_timeout"]), 9);
    st.stop().await;
}

// ------------------------------------------------------------ blame the right side

#[tokio::test(start_paused = true)]
async fn malformed_aborted_and_slow_uploads_are_the_clients_fault_and_never_open_the_breaker() {
    let st = Stack::start("body_read_timeout_ms = 2000", "", "breaker_failures = 3", "").await;
    let key = admin_key();
    let upload = |extra: &str| {
        format!("POST /v1/content HTTP/1.1\r\nhost: g\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n{extra}\r\n")
    };
    for _ in 0..5 {
        // Malformed chunked framing.
        let mut s = TcpStream::connect(st.app.addr).await.unwrap();
        s.write_all(
            format!(
                "{}zz\r\n{{}}\r\n0\r\n\r\n",
                upload("transfer-encoding: chunked\r\n")
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let r = read_reply(&mut s).await.expect("a reply");
        assert_eq!((r.status, r.code().as_str()), (400, "BAD_REQUEST"));

        // Too slow: 200 bytes declared, 10 sent.
        let mut s = TcpStream::connect(st.app.addr).await.unwrap();
        s.write_all(format!("{}{{\"caption\"", upload("content-length: 200\r\n")).as_bytes())
            .await
            .unwrap();
        let r = read_reply(&mut s).await.expect("a reply");
        assert_eq!((r.status, r.code().as_str()), (408, "REQUEST_TIMEOUT"));

        // Aborted: 200 bytes declared, 10 sent, then the client hangs up.
        let mut s = TcpStream::connect(st.app.addr).await.unwrap();
        s.write_all(format!("{}{{\"caption\"", upload("content-length: 200\r\n")).as_bytes())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        if let Some(r) = read_reply(&mut s).await {
            assert_eq!(r.status, 400, "an aborted upload is the client's fault");
        }
    }
    assert_eq!(
        st.metric("origin_breaker_state", &[]),
        0,
        "the breaker stayed closed"
    );
    assert_eq!(st.metric("origin_breaker_trips_total", &[]), 0);
    assert_eq!(st.metric("origin_requests_total", &["/v1/content", "error"]), 0);
    // Another organization's miss goes to the origin as usual.
    let mut s = TcpStream::connect(st.app.addr).await.unwrap();
    let path = container_path(&st.sim, "org_demo_b");
    s.write_all(get_head(&path, &org_b_key()).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.unwrap().status, 200);
    st.stop().await;
}

// ------------------------------------------------------------ canonical paths

/// An origin that records every path it is asked for and answers `{}`.
async fn logging_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let p = req.uri().path_and_query().map_or("", |p| p.as_str()).to_owned();
                        if req.headers().contains_key("x-api-key") {
                            log.lock().unwrap().push(p);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn non_canonical_paths_are_refused_and_never_reach_the_origin() {
    let (origin, seen) = logging_origin().await;
    let app = start_gateway(origin, "", "", "", "").await;
    let id = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
    let forms = [
        "/v1/content/..?x".to_string(),
        "/v1/content/%2e%2e/assets/%2e%2e?x".into(),
        "/v1/content/..%2F..%2Fadmin%2Fpurge?x".into(),
        "/v1/content/..%5c..%5cadmin?x".into(),
        "/v1/content/..%5C?x".into(),
        "/v1/content/%2E%2e/whoami?x".into(),
        "/v1/content/.%2e/projects?x".into(),
        format!("/v1/content/{id}/assets/../../../projects?x"),
        "/v1/./content?x".into(),
        "/v1/content/a\\..\\b?x".into(),
        format!("/v1/content/{id}%2Fregenerate"),
    ];
    for p in &forms {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(get_head(p, &reader_key()).as_bytes()).await.unwrap();
        let r = read_reply(&mut s)
            .await
            .unwrap_or_else(|| panic!("no reply to {p}"));
        assert_eq!(r.status, 400, "{p}");
        // Where hyper itself refuses the request line there is no envelope;
        // where the gateway does, it is the Layers envelope.
        if !r.body.is_empty() {
            assert_eq!(r.code(), "BAD_REQUEST", "{p}");
        }
    }
    // The control: a canonical proxied path reaches the origin as sent.
    let control = format!("/v1/content/{id}?x=1");
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(get_head(&control, &reader_key()).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.unwrap().status, 200);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![control],
        "only the canonical path reached the origin"
    );
    tokio::time::timeout(WAIT, app.stop()).await.unwrap();
}

// ------------------------------------------------------------ limiter identity

const JWT_SECRET_ENV: &str = "HARDENING_TEST_JWT_SECRET";
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-hardening";

fn hs256_token(claims: &Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let msg = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    format!("{msg}.{}", b64(&mac.finalize().into_bytes()))
}

#[tokio::test(start_paused = true)]
async fn a_jwt_whose_sub_is_another_orgs_key_id_spends_its_own_budget() {
    // Set before the gateway reads it; no other test in this binary reads it.
    std::env::set_var(JWT_SECRET_ENV, JWT_SECRET);
    let sim = demo_simulator();
    let gw = in_process(
        &sim,
        &format!(
            "[auth.jwt]\n[[auth.jwt.issuers]]\nissuer = \"https://idp.test\"\naudience = \"layers\"\nshared_secret_env = \"{JWT_SECRET_ENV}\"\n"
        ),
    );
    let reader = reader_key();
    let reader_id = layers_gateway::auth::keys::parse_key(&reader)
        .unwrap()
        .key_id
        .to_owned();
    let now = unix_now();
    let token = hs256_token(&serde_json::json!({
        "iss": "https://idp.test", "aud": "layers", "sub": reader_id, "org_id": "org_attacker",
        "scope": "content:read", "tier": "standard", "iat": now, "exp": now + 3600,
    }));
    let bearer = format!("Bearer {token}");
    let path = container_path(&sim, "org_demo_a");
    // Spend the whole per-minute budget of the token.
    let mut limited = false;
    for _ in 0..1000 {
        let r = call(
            &gw,
            Method::GET,
            &path,
            &[("authorization", &bearer)],
            Bytes::new(),
        )
        .await;
        // (The demo origin does not know the token and answers 401 itself;
        // the gateway accepted it: no authentication failure is counted.)
        if r.status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the token has a budget");
    let m = &gw.state().metrics;
    let text = String::from_utf8(m.render()).unwrap();
    // Failure series exist from the start, at 0 (docs/metrics.md); none moved.
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("layers_gateway_auth_failures_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(failures.is_empty(), "the token was accepted: {failures:?}");
    // The API key whose id the token named still has all of its own.
    let r = call_get(&gw, &path, &reader).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("119"));
}

// ------------------------------------------------------------ refusal logs

#[tokio::test(start_paused = true)]
async fn refusal_logs_are_bounded_and_metrics_count_every_refusal() {
    let logs = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let sim = demo_simulator();
    let gw = in_process(&sim, "[log]\nrefusals_per_sec = 5\n");
    const N: usize = 500;
    for i in 0..N {
        let key = format!("lp_test_DEM0ZZZZ{i:08}_{}", "A".repeat(43));
        let r = call(
            &gw,
            Method::GET,
            "/v1/whoami",
            &[("x-api-key", &key)],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 401);
        // 200 bad signatures too, the other kind.
        if i < 200 {
            let r = call(
                &gw,
                Method::POST,
                "/webhooks/layers",
                &[("x-layers-signature", "t=1,v1=00")],
                Bytes::from_static(b"{}"),
            )
            .await;
            assert_eq!(r.status, 401);
        }
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    gw.state().refusal_logs.flush();
    let text = logs.text();
    let auth_lines = text.matches("authentication failed").count();
    let webhook_lines = text.matches("webhook rejected").count();
    assert!(auth_lines <= 6, "{auth_lines} authentication lines");
    assert!(webhook_lines <= 6, "{webhook_lines} webhook lines");
    let suppressed: u64 = text
        .lines()
        // (The access lines of these refusals have a limiter of their own.)
        .filter(|l| l.contains("suppressed") && !l.contains("access (refused"))
        .filter_map(|l| {
            l.split("suppressed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        suppressed as usize + auth_lines + webhook_lines,
        N + 200,
        "every refusal is logged or counted as suppressed"
    );
    let m = &gw.state().metrics;
    assert_eq!(
        m.auth_failures.with_label_values(&["unknown_key"]).get(),
        N as u64
    );
    assert_eq!(
        m.webhook_rejections.with_label_values(&["stale_timestamp"]).get()
            + m.webhook_rejections.with_label_values(&["bad_signature"]).get()
            + m.webhook_rejections
                .with_label_values(&["malformed_signature"])
                .get(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn unsigned_webhook_bodies_being_read_are_capped() {
    let st = Stack::start(
        "body_read_timeout_ms = 2000",
        "",
        "",
        // Lands in the [webhooks] section, the last one.
        "max_concurrent_reads = 4\n",
    )
    .await;
    let io = TokioIo::new(TcpStream::connect(st.app.addr).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, StalledBody>(TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut pending = Vec::new();
    let forged = format!("t=1,v1={}", "0".repeat(64));
    for _ in 0..6 {
        send.ready().await.unwrap();
        let req = Request::post("http://gateway.test/webhooks/layers")
            .header("x-layers-signature", forged.as_str())
            .body(StalledBody(false))
            .unwrap();
        pending.push(send.send_request(req));
    }
    let mut statuses = Vec::new();
    for p in pending {
        statuses.push(
            tokio::time::timeout(WAIT, p)
                .await
                .expect("answered")
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    statuses.sort();
    // One client reads at most a quarter of them (`webhook_reads.rs`; the
    // total bound is tested there and in tests/attack_r24_exhaust.rs).
    assert_eq!(statuses, [408, 503, 503, 503, 503, 503]);
    assert_eq!(st.metric("webhook_rejections_total", &["too_many_reads"]), 5);
    st.stop().await;
}
