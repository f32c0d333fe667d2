//! Clients for the connection-cap and webhook-read attacks
//! (tests/attack_r24_exhaust.rs to attack_r27.rs): h2 connections from a
//! chosen loopback address that hold their answers unread, webhook bodies
//! that stall, and a gateway in front of a scripted origin.

use super::loopback_app::connect_from;
use super::scripted::{Answer, Scripted, ScriptedUpstream};
use super::{demo_keys, WEBHOOK_SECRET};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::origin::Upstream;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin whose `/v1/whoami` vouches for any key (organization
/// `org_a`, every scope) only once `gate` is notified, and whose
/// `/v1/projects/p1` answers at once: a partner's request then waits in
/// the service on its key's check for as long as the test likes.
pub fn held_whoami() -> (Arc<Scripted>, Arc<tokio::sync::Notify>) {
    let origin = Arc::new(Scripted::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    let whoami = serde_json::json!({"organizationId": "org_a", "scopes": ["*"], "apiKeyId": "k1"});
    origin.set(
        Method::GET,
        "/v1/whoami",
        Answer::Held(gate.clone(), Box::new(Answer::Json(200, whoami))),
    );
    origin.set(
        Method::GET,
        "/v1/projects/p1",
        Answer::Json(200, serde_json::json!({"id": "p1"})),
    );
    (origin, gate)
}

/// A content path of org_demo_a (the admin and reader keys' organization).
pub fn partner_path(sim: &layers_gateway::demo::Simulator) -> String {
    let id = sim
        .container_ids()
        .into_iter()
        .find(|(o, _)| o == "org_demo_a")
        .unwrap()
        .1;
    format!("/v1/content/{id}")
}

/// An h2 (prior knowledge) client connection from loopback address `from`
/// that advertises a stream window of `window` bytes.
pub async fn h2_from<B>(
    from: &str,
    addr: SocketAddr,
    window: u32,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<()>,
)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(connect_from(from, addr).await);
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

/// One GET of `path` (with `key`, or none) on a new zero-window h2
/// connection from `from`: the answer's head is read, its body never (it
/// stays in flight). The connection, its driver and the status (`None`:
/// the gateway did not answer).
pub async fn zero_window_get(
    from: &str,
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
    Option<u16>,
) {
    let (mut send, driver) = h2_from::<Full<Bytes>>(from, addr, 0).await;
    let mut status = None;
    if send.ready().await.is_ok() {
        let mut req = Request::get(format!("http://gateway.test{path}"));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), send.send_request(req)).await {
            status = Some(resp.status().as_u16());
            // The response (and its unread body) stays in flight.
            std::mem::forget(resp);
        }
    }
    (send, driver, status)
}

/// A request body that sends one chunk and then never another.
pub struct StalledBody(pub bool);

impl http_body::Body for StalledBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0 {
            std::task::Poll::Pending
        } else {
            self.0 = true;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"{\"id\":")))))
        }
    }
}

/// A raw HTTP/1.1 GET on a fresh connection; the status, or `None` when the
/// connection was closed without an answer.
pub async fn raw_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    read_status(&mut s).await
}

/// The status line's code of what `s` answers, or `None` when it closes
/// without one.
pub async fn read_status(s: &mut tokio::net::TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A gateway on loopback whose origin is `origin` (scripted, in-process),
/// with `server` lines in `[server]`, `origin_extra` in `[origin]` and
/// `extra` appended.
pub async fn scripted_app(origin: Arc<Scripted>, server: &str, origin_extra: &str, extra: &str) -> App {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[origin]\nurl = \"http://127.0.0.1:1\"\ntimeout_ms = 5000\n{origin_extra}\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    );
    let cfg = Config::parse(&text, PathBuf::new()).expect("valid config");
    let upstream: Arc<dyn Upstream> = Arc::new(ScriptedUpstream(origin));
    App::start(cfg, demo_keys(), upstream).await.unwrap()
}

/// `connections_cut_total{reason}`.
pub fn cut(app: &App, reason: &str) -> u64 {
    app.gateway
        .state()
        .metrics
        .connections_cut
        .with_label_values(&[reason])
        .get()
}

/// A key no keys file holds: checked with the origin's whoami.
pub fn origin_key(tag: &str) -> String {
    format!("lp_test_{tag:0<16}_{}", "q".repeat(43))
}

/// Sends a GET of `path` with `key` on a fresh HTTP/1 connection from
/// `from` and leaves the answer unread.
pub async fn send_get(from: &str, addr: SocketAddr, path: &str, key: &str) -> tokio::net::TcpStream {
    let mut s = connect_from(from, addr).await;
    let head = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// [`send_get`] from a partner on a slow link: a 4 KiB receive buffer, so
/// a large answer stays in the gateway's socket until the partner reads.
pub async fn send_get_slow_reader(
    from: &str,
    addr: SocketAddr,
    path: &str,
    key: &str,
) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}
