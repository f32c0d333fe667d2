//! Test support: spawns the origin simulator and a gateway on loopback
//! (`127.0.0.1:0`), plus a small HTTP client. Builder-style so each test
//! states only what it changes.
#![allow(dead_code)]

pub mod canned;
pub mod fence_fixtures;
pub mod keyless;
pub mod logs;
pub mod loopback_app;
pub mod raw_http;
pub mod scripted;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use layers_gateway::app::App;
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_key, Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use layers_gateway::origin::{HttpUpstream, SimulatorUpstream, Upstream};
use layers_gateway::service::Gateway;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn admin_key() -> String {
    demo_key("admin")
}
pub fn reader_key() -> String {
    demo_key("reader")
}
pub fn org_b_key() -> String {
    demo_key("partner_b")
}
pub fn no_scope_key() -> String {
    demo_key("no_scopes")
}

/// A config for tests: loopback, free ports, a known webhook secret and
/// admin token. `extra` is TOML appended (sections must not repeat).
pub fn test_config(origin_url: &str, extra: &str) -> Config {
    test_config_with(origin_url, "", extra)
}

/// Like `test_config`, with extra lines inside the `[origin]` section.
pub fn test_config_with(origin_url: &str, origin_extra: &str, extra: &str) -> Config {
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{token_hash}\"\n\n[origin]\nurl = \"{origin_url}\"\ntimeout_ms = 5000\n{origin_extra}\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    );
    Config::parse(&text, PathBuf::new()).expect("test config is valid")
}

pub fn demo_simulator() -> Simulator {
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap());
    Simulator::from_json(DEMO_CONTAINERS_JSON, keys).unwrap()
}

pub fn demo_keys() -> KeyStore {
    KeyStore::parse(DEMO_KEYS_FILE).unwrap()
}

/// Origin simulator over TCP and a gateway in front of it.
pub struct Harness {
    pub sim: Simulator,
    pub origin_addr: SocketAddr,
    pub app: App,
    origin_stop: tokio::sync::watch::Sender<bool>,
    pub client: TestClient,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(demo_simulator(), "").await
    }

    pub async fn with(sim: Simulator, extra_config: &str) -> Harness {
        Harness::with_origin(sim, "", extra_config).await
    }

    /// `origin_extra`: lines added to the `[origin]` section.
    pub async fn with_origin(sim: Simulator, origin_extra: &str, extra_config: &str) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = listener.local_addr().unwrap();
        let (origin_stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let cfg = test_config_with(&format!("http://{origin_addr}"), origin_extra, extra_config);
        let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
        let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
        let client = TestClient::new(app.addr);
        Harness {
            sim,
            origin_addr,
            app,
            origin_stop,
            client,
        }
    }

    pub fn gateway(&self) -> &Gateway {
        &self.app.gateway
    }

    pub fn admin(&self) -> TestClient {
        TestClient::new(self.app.admin_addr)
    }

    /// Stops the origin simulator (its port then refuses connections).
    pub fn stop_origin(&self) {
        let _ = self.origin_stop.send(true);
    }

    pub async fn stop(self) {
        let _ = self.origin_stop.send(true);
        self.app.stop().await;
    }
}

/// A gateway with the simulator in-process: no sockets at all, so tests
/// can run under tokio's paused clock.
pub fn in_process(sim: &Simulator, extra_config: &str) -> Gateway {
    let cfg = test_config("http://127.0.0.1:1", extra_config);
    Gateway::new(cfg, demo_keys(), Arc::new(SimulatorUpstream(sim.clone())))
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn x_cache(&self) -> Option<&str> {
        self.header("x-cache")
    }

    /// The body with its `Content-Encoding` undone (gzip or br), as the
    /// partner's HTTP client would hand it over.
    pub fn decoded_body(&self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        match self.header("content-encoding") {
            None => out.extend_from_slice(&self.body),
            Some("gzip") => {
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("br") => {
                brotli::Decompressor::new(&self.body[..], 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some(other) => panic!("unexpected coding {other}"),
        }
        out
    }

    /// Asserts the Layers error envelope with this code and the response's
    /// own request id.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        let rid = self
            .header("x-request-id")
            .expect("x-request-id on every response");
        assert_eq!(v["error"]["requestId"], rid);
    }
}

/// A request builder bound to one address.
#[derive(Clone)]
pub struct TestClient {
    addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl TestClient {
    pub fn new(addr: SocketAddr) -> TestClient {
        TestClient {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body)).unwrap())
            .await
            .expect("gateway answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(Method::GET, path, &[("x-api-key", key)], Bytes::new())
            .await
    }
}

/// A gateway under test: over its partner port, or called in-process.
#[derive(Clone)]
pub enum Gw {
    Tcp(Box<TestClient>),
    Local(Gateway),
}

impl Gw {
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
        match self {
            Gw::Tcp(c) => c.send(method, path, headers, body).await,
            Gw::Local(g) => call(g, method, path, headers, body).await,
        }
    }
}

/// `POST /admin/purge?<query>` through an in-process gateway's admin
/// handler, with the test admin token; asserts a 200.
pub async fn purge_in_process(gw: &Gateway, query: &str) {
    let req = Request::post(format!("/admin/purge?{query}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = layers_gateway::admin::handle(gw, req).await;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Calls the in-process gateway.
pub async fn call(gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = gw.handle(b.body(Full::new(body)).unwrap()).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn call_get(gw: &Gateway, path: &str, key: &str) -> Reply {
    call(gw, Method::GET, path, &[("x-api-key", key)], Bytes::new()).await
}

/// Sends raw bytes on a fresh connection and returns what came back
/// (until the server closes or 2 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A signed webhook body for the gateway.
pub fn signed_webhook(body: &str, secret: &str, t: i64) -> Vec<(String, String)> {
    let sig = layers_gateway::events::webhook::sign(secret.as_bytes(), t, body.as_bytes());
    vec![
        ("x-layers-signature".into(), sig),
        ("content-type".into(), "application/json".into()),
    ]
}

/// `/v1/content/{id}`.
pub fn content_path(id: &str) -> String {
    format!("/v1/content/{id}")
}

/// `/v1/content/{id}/assets/{asset}`.
pub fn content_asset_path(id: &str, asset: &str) -> String {
    format!("/v1/content/{id}/assets/{asset}")
}

static EVENT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A webhook event id no other event of this test binary has.
pub fn unique_event_id() -> String {
    let n = EVENT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("evt_01HZZZZZZZZZZZZZZZZZZZ{n:04}")
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The first container of org_demo_a and its first asset id.
pub fn first_container(sim: &Simulator) -> (layers_gateway::ids::ContainerId, String) {
    let id = sim
        .container_ids()
        .into_iter()
        .find(|(o, _)| o == "org_demo_a")
        .unwrap()
        .1;
    let asset = sim.container(id).unwrap()["assets"][0]["assetId"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, asset)
}

/// The `[cluster]` section of a wired gateway joined to Redis at `url` as
/// `id`, with short timings so outages are seen (and tests end) quickly.
pub fn wired_cluster_config(url: &str, id: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{url}\"\nsecret = \"layers-test-only-cluster-secret\"\ninstance_id = \"{id}\"\nmax_unsynced_ms = 1000\nblock_ms = 100\n\
         connect_timeout_ms = 300\ncommand_timeout_ms = 300\nlease_retry_ms = 300\n"
    )
}

/// Polls `cond` every 10 ms until it holds; fails naming `what` once
/// `within` has passed.
pub async fn poll_until<F, Fut>(what: &str, within: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !cond().await {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Delivers the webhook `body` to `h` signed as the origin signs it now,
/// with `event_id` in `X-Layers-Event-Id`.
pub async fn deliver_webhook(h: &Harness, body: &str, event_id: &str) -> Reply {
    let mut headers = signed_webhook(body, WEBHOOK_SECRET, unix_now());
    headers.push(("x-layers-event-id".into(), event_id.to_owned()));
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    h.client
        .send(
            Method::POST,
            "/webhooks/layers",
            &hs,
            Bytes::from(body.to_owned()),
        )
        .await
}
