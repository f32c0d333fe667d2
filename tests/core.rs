//! The gateway's core behaviour, as a partner (or the platform team) would
//! notice it: cached reads faithful to the origin, auth and scope errors,
//! isolation between organizations, single-flight fills, proxying, expiry,
//! origin failures, hostile input, the connection cap and graceful shutdown.
//!
//! Real sockets with the simulator as origin, except where time matters:
//! those tests use the in-process gateway under tokio's paused clock.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::demo::{FailureMode, Simulator};
use layers_gateway::ids::ContainerId;
use layers_gateway::origin::{HttpUpstream, SimulatorUpstream, Upstream};
use layers_gateway::service::Gateway;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const VIDEO: &str = "cnt_3f6c1a2e-8b4d-4c1f-9a7e-2d5b8c9e0f11";
const VIDEO_ASSET: &str = "video-7d2e4f60-1a3b-4c5d-8e9f-0a1b2c3d4e5f";
const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// Older data: `ast_…` asset ids, optional fields absent, `thumbnailUrl` null.
const LEGACY: &str = "cnt_1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5";
/// Carries `experimentalScore`, a field the gateway does not know.
const EXTRA_FIELD: &str = "cnt_2b4d6f80-1a3c-4e5a-9b7d-c0e2f4a6b8d0";
const ORG_B_VIDEO: &str = "cnt_8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f";
/// A well-formed id no organization has.
const ABSENT: &str = "cnt_00000000-0000-4000-8000-0000000000a1";

/// Optional asset fields: absent, never null, when the origin lacks them.
const OPTIONAL_ASSET_FIELDS: [&str; 7] = [
    "mimeType",
    "sizeBytes",
    "durationMs",
    "width",
    "height",
    "checksumSha256",
    "expiresAt",
];

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

fn content(id: &str) -> String {
    format!("/v1/content/{id}")
}

fn asset(id: &str, asset_id: &str) -> String {
    format!("/v1/content/{id}/assets/{asset_id}")
}

fn cid(s: &str) -> ContainerId {
    ContainerId::parse(s).unwrap()
}

/// The origin's container JSON, as stored in the simulator.
fn origin_container(sim: &Simulator, id: &str) -> Value {
    sim.container(cid(id)).expect("container exists at the origin")
}

/// What the origin's asset descriptor is: the container's asset object
/// plus `containerId`.
fn origin_descriptor(sim: &Simulator, id: &str, asset_id: &str) -> Value {
    let c = origin_container(sim, id);
    let a = c["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["assetId"] == asset_id)
        .unwrap_or_else(|| panic!("{asset_id} not on {id}"))
        .clone();
    let mut d = a.as_object().unwrap().clone();
    d.insert("containerId".into(), c["id"].clone());
    Value::Object(d)
}

/// Field by field: same keys, same values (absent stays absent).
fn assert_same_fields(got: &Value, want: &Value, what: &str) {
    let g = got
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {got}"));
    let w = want
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {want}"));
    for (k, v) in w {
        assert_eq!(g.get(k), Some(v), "{what}: field {k:?}");
    }
    for k in g.keys() {
        assert!(
            w.contains_key(k),
            "{what}: field {k:?} is not in the origin's body"
        );
    }
}

/// The error envelope without its per-request id.
fn envelope_without_request_id(r: &Reply) -> Value {
    let mut v = r.json();
    v["error"]
        .as_object_mut()
        .expect("error envelope")
        .remove("requestId");
    v
}

/// Origin requests other than the gateway's readiness probe (`GET /v1/whoami`
/// without a key, sent until the origin first answers).
fn origin_requests_besides_probes(sim: &Simulator) -> u64 {
    sim.total_requests() - sim.request_count("GET", "/v1/whoami")
}

fn is_generated_request_id(rid: &str) -> bool {
    rid.len() == 30 && rid.starts_with("req_") && rid[4..].bytes().all(|c| c.is_ascii_alphanumeric())
}

/// An RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SSZ`) of unix seconds.
fn rfc3339(unix: i64) -> String {
    layers_gateway::cache::time::format_rfc3339(unix)
}

fn wall_clock_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A one-asset container for org_demo_a whose asset carries `expires_at`.
fn container_expiring_at(id: &str, expires_at: &str) -> Value {
    let uuid = &id[4..];
    json!({
        "id": id,
        "projectId": "prj_expiry",
        "status": "completed",
        "format": "video",
        "caption": "Signed URLs that expire.",
        "assets": [{
            "assetId": "video-expiring",
            "kind": "video",
            "url": format!("https://cdn.layers.example/org_demo_a/{uuid}/video-expiring.mp4?sig=abc"),
            "thumbnailUrl": null,
            "expiresAt": expires_at
        }],
        "approvalStatus": "approved",
        "createdAt": "2026-11-20T09:15:00Z",
        "updatedAt": "2026-11-20T09:15:00Z"
    })
}

/// The in-process gateway with a whole config of our own (for sections
/// `test_config` already writes, such as `[origin]`).
fn in_process_with_config(sim: &Simulator, toml: &str) -> Gateway {
    let cfg = Config::parse(toml, PathBuf::new()).expect("valid config");
    Gateway::new(cfg, demo_keys(), Arc::new(SimulatorUpstream(sim.clone())))
}

/// A gateway over TCP whose `[server]` section the test chooses, in front
/// of the simulator over TCP.
struct Stack {
    sim: Simulator,
    app: App,
    origin_stop: tokio::sync::watch::Sender<bool>,
}

impl Stack {
    async fn start(server_options: &str) -> Stack {
        let sim = demo_simulator();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = listener.local_addr().unwrap();
        let (origin_stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_options}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[origin]\nurl = \"http://{origin_addr}\"\ntimeout_ms = 5000\n"
        );
        let cfg = Config::parse(&text, PathBuf::new()).expect("valid config");
        let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
        let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
        Stack {
            sim,
            app,
            origin_stop,
        }
    }

    async fn stop(self) {
        let _ = self.origin_stop.send(true);
        tokio::time::timeout(WAIT, self.app.stop())
            .await
            .expect("gateway stops");
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one whole response (Content-Length or chunked) within `WAIT`.
async fn read_reply(s: &mut TcpStream) -> RawReply {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.expect("read a response head");
            assert!(
                n > 0,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let mut reply = RawReply {
            status,
            head,
            body: Vec::new(),
        };
        let chunked = reply
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let len: Option<usize> = reply.header("content-length").and_then(|v| v.parse().ok());
        loop {
            let rest = &buf[head_end..];
            let done = if chunked {
                rest.ends_with(b"0\r\n\r\n")
            } else {
                rest.len() >= len.unwrap_or(usize::MAX)
            };
            if done {
                break;
            }
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break; // closed: the body is what arrived
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut rest = buf[head_end..].to_vec();
        if chunked {
            let mut body = Vec::new();
            let mut r = &rest[..];
            while let Some(i) = find(r, b"\r\n") {
                let size = usize::from_str_radix(std::str::from_utf8(&r[..i]).unwrap().trim(), 16).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&r[i + 2..i + 2 + size]);
                r = &r[i + 2 + size + 2..];
            }
            rest = body;
        } else if let Some(len) = len {
            rest.truncate(len);
        }
        reply.body = rest;
        reply
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a whole response in time")
}

fn raw_get(path: &str, key: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\nX-Api-Key: {key}\r\n\r\n")
}

fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

/// Waits (bounded) until `cond` holds, checking every few milliseconds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let polled = tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting until {what}");
}

/// A normal read works: the server is still serving.
async fn assert_still_serving(client: &TestClient) {
    let r = client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!(r.status, 200, "a normal request after the bad one");
}

// ---------------------------------------------------------------------------
// Cached reads: faithful to the origin, MISS then HIT.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn container_miss_then_hit_returns_the_origin_container_field_by_field() {
    let h = Harness::start().await;
    let want = origin_container(&h.sim, SLIDESHOW);
    let miss = h.client.get(&content(SLIDESHOW), &admin_key()).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.x_cache(), Some("MISS"));
    assert_eq!(miss.header("content-type"), Some("application/json"));
    assert_same_fields(&miss.json(), &want, "container on a miss");
    let hit = h.client.get(&content(SLIDESHOW), &admin_key()).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.x_cache(), Some("HIT"));
    assert_same_fields(&hit.json(), &want, "container on a hit");
    assert_eq!(hit.body, miss.body, "a hit serves the bytes the miss served");
    assert_eq!(h.sim.container_gets(), 1, "the hit did not reach the origin");
    h.stop().await;
}

#[tokio::test]
async fn asset_descriptor_is_the_container_asset_plus_container_id() {
    let h = Harness::start().await;
    for (i, a) in ["slide-1", "slide-3"].into_iter().enumerate() {
        let want = origin_descriptor(&h.sim, SLIDESHOW, a);
        let first = h.client.get(&asset(SLIDESHOW, a), &admin_key()).await;
        assert_eq!(first.status, 200);
        // The first descriptor read fills the whole container; the next
        // descriptor of the same container is already cached.
        assert_eq!(first.x_cache(), Some(if i == 0 { "MISS" } else { "HIT" }));
        assert_same_fields(&first.json(), &want, a);
        assert_eq!(first.json()["containerId"], SLIDESHOW);
        let again = h.client.get(&asset(SLIDESHOW, a), &admin_key()).await;
        assert_eq!(again.x_cache(), Some("HIT"));
        assert_same_fields(&again.json(), &want, a);
    }
    // The descriptor is what the origin itself answers for that asset.
    let direct = h.sim.handle(
        http::Request::get(asset(VIDEO, VIDEO_ASSET))
            .header("x-api-key", admin_key())
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap(),
    );
    let direct = http_body_util::BodyExt::collect(direct.await.into_body())
        .await
        .unwrap()
        .to_bytes();
    let via = h.client.get(&asset(VIDEO, VIDEO_ASSET), &admin_key()).await;
    assert_eq!(via.status, 200);
    assert_same_fields(
        &via.json(),
        &serde_json::from_slice(&direct).unwrap(),
        "video descriptor",
    );
    assert_eq!(h.sim.container_gets(), 2, "one fill per container");
    h.stop().await;
}

#[tokio::test]
async fn head_returns_the_get_headers_without_a_body() {
    let h = Harness::start().await;
    let key = admin_key();
    let head_miss = h
        .client
        .send(
            Method::HEAD,
            &content(VIDEO),
            &[("x-api-key", &key)],
            Bytes::new(),
        )
        .await;
    assert_eq!(head_miss.status, 200);
    assert_eq!(head_miss.x_cache(), Some("MISS"));
    assert!(head_miss.body.is_empty());
    let get = h.client.get(&content(VIDEO), &key).await;
    assert_eq!(get.x_cache(), Some("HIT"), "a HEAD fills the cache like a GET");
    for path in [content(VIDEO), asset(VIDEO, VIDEO_ASSET)] {
        let get = h.client.get(&path, &key).await;
        let head = h
            .client
            .send(Method::HEAD, &path, &[("x-api-key", &key)], Bytes::new())
            .await;
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty(), "{path}: HEAD has no body");
        for name in ["content-type", "content-length", "x-cache"] {
            assert_eq!(head.header(name), get.header(name), "{path}: {name}");
        }
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "{path}: HEAD announces the GET body's length"
        );
        assert!(head.header("x-request-id").is_some());
    }
    assert_eq!(h.sim.container_gets(), 1);
    h.stop().await;
}

#[tokio::test]
async fn both_container_id_forms_hit_the_same_entry() {
    let h = Harness::start().await;
    let uuid = &SLIDESHOW[4..];
    let upper = uuid.to_uppercase();
    let forms = [
        SLIDESHOW.to_string(),
        uuid.to_string(),
        upper.clone(),
        format!("cnt_{upper}"),
    ];
    let first = h.client.get(&content(&forms[0]), &admin_key()).await;
    assert_eq!(first.x_cache(), Some("MISS"));
    for f in &forms[1..] {
        let r = h.client.get(&content(f), &admin_key()).await;
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(r.x_cache(), Some("HIT"), "{f}");
        assert_eq!(r.body, first.body, "{f}");
    }
    let a = h.client.get(&asset(&upper, "slide-2"), &admin_key()).await;
    assert_eq!(a.x_cache(), Some("HIT"));
    assert_eq!(
        a.json()["containerId"],
        SLIDESHOW,
        "canonical id in the descriptor"
    );
    assert_eq!(h.sim.container_gets(), 1);
    assert_eq!(h.sim.request_count("GET", &content(SLIDESHOW)), 1);

    // A bare upper-case id on a cold container is fetched by its canonical id.
    let r = h
        .client
        .get(&content(&VIDEO[4..].to_uppercase()), &admin_key())
        .await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    assert_eq!(h.sim.request_count("GET", &content(VIDEO)), 1);
    let r = h.client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    h.stop().await;
}

#[tokio::test]
async fn optional_fields_stay_absent_and_null_thumbnail_stays_null() {
    let h = Harness::start().await;
    let want = origin_container(&h.sim, LEGACY);
    for expect in ["MISS", "HIT"] {
        let r = h.client.get(&content(LEGACY), &admin_key()).await;
        assert_eq!(r.x_cache(), Some(expect));
        let v = r.json();
        assert_same_fields(&v, &want, "legacy container");
        let assets = v["assets"].as_array().unwrap();
        assert!(!assets.is_empty());
        for a in assets {
            let a = a.as_object().unwrap();
            for f in OPTIONAL_ASSET_FIELDS {
                assert!(
                    !a.contains_key(f),
                    "{expect}: {f} must be absent, not null: {a:?}"
                );
            }
            assert_eq!(
                a.get("thumbnailUrl"),
                Some(&Value::Null),
                "{expect}: null stays null"
            );
        }
        let raw = String::from_utf8_lossy(&r.body);
        assert!(!raw.contains("\"mimeType\""), "{raw}");
        assert!(raw.contains("\"thumbnailUrl\":null"), "{raw}");
    }
    for a in want["assets"].as_array().unwrap() {
        let id = a["assetId"].as_str().unwrap();
        let r = h.client.get(&asset(LEGACY, id), &admin_key()).await;
        assert_eq!(r.x_cache(), Some("HIT"));
        let d = r.json();
        assert_same_fields(&d, &origin_descriptor(&h.sim, LEGACY, id), id);
        for f in OPTIONAL_ASSET_FIELDS {
            assert!(d.get(f).is_none(), "{id}: {f} must be absent");
        }
        assert_eq!(d.get("thumbnailUrl"), Some(&Value::Null));
    }
    h.stop().await;
}

#[tokio::test]
async fn unknown_fields_pass_through_untouched() {
    let h = Harness::start().await;
    let r = h.client.get(&content(EXTRA_FIELD), &admin_key()).await;
    assert_eq!(r.json()["experimentalScore"], 0.87);
    assert_same_fields(&r.json(), &origin_container(&h.sim, EXTRA_FIELD), "extra field");

    let id = "cnt_7a7a7a7a-0000-4000-8000-00000000f00d";
    h.sim.insert_container(
        "org_demo_a",
        json!({
            "id": id,
            "status": "completed",
            "caption": "From the future",
            "futureField": {"nested": [1, "two", null], "flag": false},
            "assets": [{
                "assetId": "slide-1",
                "kind": "image",
                "url": "https://cdn.layers.example/org_demo_a/x/slide-1.jpg",
                "thumbnailUrl": null,
                "aiTags": ["jacket", {"score": 0.5}]
            }]
        }),
    );
    for expect in ["MISS", "HIT"] {
        let c = h.client.get(&content(id), &admin_key()).await;
        assert_eq!(c.x_cache(), Some(expect));
        assert_eq!(
            c.json()["futureField"],
            json!({"nested": [1, "two", null], "flag": false})
        );
        assert_same_fields(&c.json(), &origin_container(&h.sim, id), "future container");
    }
    let d = h.client.get(&asset(id, "slide-1"), &admin_key()).await;
    assert_eq!(d.json()["aiTags"], json!(["jacket", {"score": 0.5}]));
    assert_same_fields(
        &d.json(),
        &origin_descriptor(&h.sim, id, "slide-1"),
        "future asset",
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Errors: 401, 403, 404 envelopes and request ids.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_refused_credential_gets_the_same_401_envelope() {
    let h = Harness::start().await;
    let admin = admin_key();
    let unknown_id = admin.replace("DEM0ADM1N0000A01", "DEM0ADM1N0000A99");
    let wrong_secret = format!("{}X", &admin[..admin.len() - 1]);
    let wrong_env = admin.replacen("lp_test_", "lp_live_", 1);
    let bearer_wrong = format!("Bearer {wrong_secret}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing", vec![]),
        ("malformed", vec![("x-api-key", "not-a-key")]),
        ("empty", vec![("x-api-key", "")]),
        ("unknown key", vec![("x-api-key", &unknown_id)]),
        ("wrong secret", vec![("x-api-key", &wrong_secret)]),
        ("wrong env", vec![("x-api-key", &wrong_env)]),
        ("bearer wrong secret", vec![("authorization", &bearer_wrong)]),
        ("basic scheme", vec![("authorization", "Basic YWRtaW46YWRtaW4=")]),
        ("bearer without token", vec![("authorization", "Bearer")]),
    ];
    let mut first: Option<Value> = None;
    for path in [
        content(VIDEO),
        asset(VIDEO, VIDEO_ASSET),
        "/v1/whoami".to_string(),
    ] {
        for (what, headers) in &cases {
            let r = h.client.send(Method::GET, &path, headers, Bytes::new()).await;
            r.assert_error(401, "UNAUTHENTICATED");
            let body = envelope_without_request_id(&r);
            match &first {
                None => first = Some(body),
                Some(f) => assert_eq!(&body, f, "{path} {what}: same 401 body for every refusal"),
            }
        }
    }
    assert_eq!(
        h.sim.container_gets(),
        0,
        "refused requests never reach the origin"
    );
    h.stop().await;
}

#[tokio::test]
async fn x_api_key_wins_over_bearer_when_both_are_sent() {
    let h = Harness::start().await;
    let admin = admin_key();
    let bearer_admin = format!("Bearer {admin}");
    let r = h
        .client
        .send(
            Method::GET,
            &content(VIDEO),
            &[("authorization", &bearer_admin)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "Bearer alone is accepted");
    let r = h
        .client
        .send(
            Method::GET,
            &content(VIDEO),
            &[("authorization", &format!("bearer {admin}"))],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "the scheme is case-insensitive");
    let r = h
        .client
        .send(
            Method::GET,
            &content(VIDEO),
            &[("x-api-key", &admin), ("authorization", "Bearer garbage")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "a valid X-Api-Key wins over a bad Bearer");
    let r = h
        .client
        .send(
            Method::GET,
            &content(VIDEO),
            &[("x-api-key", "garbage"), ("authorization", &bearer_admin)],
            Bytes::new(),
        )
        .await;
    r.assert_error(401, "UNAUTHENTICATED");
    // Org B's X-Api-Key with org A's Bearer: the caller is org B, on a cold
    // container and on a warm one.
    for c in [SLIDESHOW, VIDEO] {
        let r = h
            .client
            .send(
                Method::GET,
                &content(c),
                &[("x-api-key", &org_b_key()), ("authorization", &bearer_admin)],
                Bytes::new(),
            )
            .await;
        r.assert_error(404, "NOT_FOUND");
    }
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/whoami",
            &[("x-api-key", &org_b_key()), ("authorization", &bearer_admin)],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        r.json()["organizationId"],
        "org_demo_b",
        "the origin sees only X-Api-Key"
    );
    h.stop().await;
}

#[tokio::test]
async fn missing_scope_is_403_forbidden_scope_naming_the_required_scope() {
    let h = Harness::start().await;
    // Warm the cache first: a cached container is no way around the scope.
    assert_eq!(h.client.get(&content(VIDEO), &admin_key()).await.status, 200);
    for path in [content(VIDEO), asset(VIDEO, VIDEO_ASSET), content(SLIDESHOW)] {
        let r = h.client.get(&path, &no_scope_key()).await;
        r.assert_error(403, "FORBIDDEN_SCOPE");
        assert_eq!(
            r.json()["error"]["details"]["requiredScope"],
            "content:read",
            "{path}"
        );
        assert!(r.x_cache().is_none());
    }
    let r = h.client.get("/v1/projects", &no_scope_key()).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(r.json()["error"]["details"]["requiredScope"], "projects:read");
    let r = h
        .client
        .send(
            Method::POST,
            &format!("{}/regenerate", content(VIDEO)),
            &[("x-api-key", &reader_key())],
            Bytes::new(),
        )
        .await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(r.json()["error"]["details"]["requiredScope"], "content:write");
    assert_eq!(
        h.sim
            .request_count("POST", &format!("{}/regenerate", content(VIDEO))),
        0,
        "a refused write never reaches the origin"
    );
    assert_eq!(h.sim.container_gets(), 1);
    // What the keys do grant still works.
    assert_eq!(h.client.get(&content(VIDEO), &reader_key()).await.status, 200);
    assert_eq!(h.client.get("/v1/whoami", &no_scope_key()).await.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn unknown_resources_are_404_envelopes_and_with_negative_caching_off_a_404_is_not_kept() {
    // Negative caching off: this test is about what a 404 looks like and
    // that a container appearing at the origin is served at once; remembered
    // 404s have their own tests (tests/negative.rs).
    let h = Harness::with(demo_simulator(), "[cache]\nnegative_ttl_secs = 0\n").await;
    let r = h.client.get(&content(ABSENT), &admin_key()).await;
    r.assert_error(404, "NOT_FOUND");
    let r = h.client.get(&asset(ABSENT, "slide-1"), &admin_key()).await;
    r.assert_error(404, "NOT_FOUND");
    assert_ne!(r.json()["error"]["message"], "Asset not on this container.");
    let r = h.client.get("/healthz", &admin_key()).await;
    r.assert_error(404, "NOT_FOUND");
    let r = h.client.get("/v1/no-such-route", &admin_key()).await;
    r.assert_error(404, "NOT_FOUND");
    assert_eq!(
        h.sim.request_count("GET", "/v1/no-such-route"),
        1,
        "proxied to the origin"
    );

    // The container appears at the origin: the next read serves it.
    let before = h.sim.request_count("GET", &content(ABSENT));
    h.sim.insert_container(
        "org_demo_a",
        container_expiring_at(ABSENT, "2030-01-01T00:00:00Z"),
    );
    let r = h.client.get(&content(ABSENT), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    assert_eq!(h.sim.request_count("GET", &content(ABSENT)), before + 1);
    h.stop().await;
}

#[tokio::test]
async fn asset_not_on_the_container_is_404_asset_not_on_this_container() {
    let h = Harness::start().await;
    for expect_fill in [true, false] {
        let before = h.sim.container_gets();
        let r = h.client.get(&asset(VIDEO, "slide-1"), &admin_key()).await;
        r.assert_error(404, "NOT_FOUND");
        assert_eq!(r.json()["error"]["message"], "Asset not on this container.");
        assert_eq!(h.sim.container_gets(), before + u64::from(expect_fill));
    }
    let r = h.client.get(&asset(VIDEO, VIDEO_ASSET), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"), "the container itself was cached");
    h.stop().await;
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_replaced_otherwise() {
    let h = Harness::start().await;
    let admin = admin_key();
    let uuid = "0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
    let long = format!("req_{}", "a".repeat(96));
    for kept in ["req_client-supplied_01", uuid, long.as_str()] {
        for path in [content(VIDEO), content(ABSENT), "/v1/whoami".to_string()] {
            let r = h
                .client
                .send(
                    Method::GET,
                    &path,
                    &[("x-api-key", &admin), ("x-request-id", kept)],
                    Bytes::new(),
                )
                .await;
            assert_eq!(r.header("x-request-id"), Some(kept), "{path}");
            if r.status == 404 {
                // The origin's own envelope carries the id the gateway forwarded.
                assert_eq!(r.json()["error"]["requestId"], kept);
            }
        }
    }
    let too_long = format!("req_{}", "a".repeat(97));
    for bad in [
        "hello",
        "req_",
        "req_has space",
        "req_bad!",
        too_long.as_str(),
        "0b8f5a3e6a634c5e9d361f2a3b4c5d6e",
    ] {
        for path in [content(VIDEO), content(ABSENT)] {
            let r = h
                .client
                .send(
                    Method::GET,
                    &path,
                    &[("x-api-key", &admin), ("x-request-id", bad)],
                    Bytes::new(),
                )
                .await;
            let rid = r.header("x-request-id").expect("x-request-id").to_owned();
            assert_ne!(rid, bad);
            assert!(is_generated_request_id(&rid), "{bad:?} -> {rid}");
            if r.status == 404 {
                r.assert_error(404, "NOT_FOUND");
            }
        }
    }
    // Without one, each response gets its own, hits included.
    let a = h.client.get(&content(VIDEO), &admin).await;
    let b = h.client.get(&content(VIDEO), &admin).await;
    let (ra, rb) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert!(is_generated_request_id(ra) && is_generated_request_id(rb));
    assert_ne!(ra, rb);
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Organization isolation.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn another_orgs_key_gets_its_own_origin_answer_never_the_cached_body() {
    // Counts org B's origin calls one by one: no remembered 404s here.
    let h = Harness::with(demo_simulator(), "[cache]\nnegative_ttl_secs = 0\n").await;
    let a = h.client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!(a.x_cache(), Some("MISS"));
    assert_eq!(
        h.client.get(&content(VIDEO), &admin_key()).await.x_cache(),
        Some("HIT")
    );
    let caption = origin_container(&h.sim, VIDEO)["caption"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = h.sim.request_count("GET", &content(VIDEO));

    let b = h.client.get(&content(VIDEO), &org_b_key()).await;
    b.assert_error(404, "NOT_FOUND");
    assert!(!String::from_utf8_lossy(&b.body).contains(&caption));
    assert_eq!(
        h.sim.request_count("GET", &content(VIDEO)),
        before + 1,
        "org B's own origin call"
    );
    // Same answer as a container that does not exist at all.
    let absent = h.client.get(&content(ABSENT), &org_b_key()).await;
    assert_eq!(
        envelope_without_request_id(&b),
        envelope_without_request_id(&absent)
    );

    let b_asset = h.client.get(&asset(VIDEO, VIDEO_ASSET), &org_b_key()).await;
    b_asset.assert_error(404, "NOT_FOUND");
    let absent_asset = h.client.get(&asset(ABSENT, VIDEO_ASSET), &org_b_key()).await;
    assert_eq!(
        envelope_without_request_id(&b_asset),
        envelope_without_request_id(&absent_asset),
        "org B cannot tell org A's asset exists"
    );
    assert_eq!(h.sim.request_count("GET", &content(VIDEO)), before + 2);

    // The other way round, and org A's entry is untouched.
    let own = h.client.get(&content(ORG_B_VIDEO), &org_b_key()).await;
    assert_eq!(own.status, 200);
    h.client
        .get(&content(ORG_B_VIDEO), &admin_key())
        .await
        .assert_error(404, "NOT_FOUND");
    let again = h.client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.body, a.body);
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Single flight.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_misses_on_a_cold_container_make_exactly_one_origin_request() {
    const N: usize = 200;
    let h = Harness::start().await;
    // Hold the origin's answer so the requests pile up behind one fill.
    let gate = h.sim.hold();
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let client = h.client.clone();
        tasks.push(tokio::spawn(async move {
            client.get(&content(SLIDESHOW), &admin_key()).await
        }));
    }
    eventually("the fill reached the origin", || h.sim.container_gets() >= 1).await;
    // Give the other requests the chance to arrive while the fill is held
    // (every request has its own connection while in flight); bounded, and
    // the assertion below holds however many arrived in time.
    let open = h.gateway().state().metrics.connections_open.clone();
    let _ = tokio::time::timeout(WAIT, async {
        while (open.get() as usize) < N {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    gate.release();
    let mut bodies = Vec::with_capacity(N);
    for t in tasks {
        let r = tokio::time::timeout(WAIT, t)
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        bodies.push(r.body);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "identical bodies");
    assert_same_fields(
        &serde_json::from_slice(&bodies[0]).unwrap(),
        &origin_container(&h.sim, SLIDESHOW),
        "coalesced body",
    );
    assert_eq!(h.sim.container_gets(), 1, "exactly one origin request");
    assert_eq!(h.sim.request_count("GET", &content(SLIDESHOW)), 1);
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Proxied routes.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn proxied_post_with_a_json_body_passes_the_origins_201_through() {
    let h = Harness::start().await;
    let key = admin_key();
    let body =
        json!({"projectId": "prj_gateway", "format": "slideshow", "caption": "Made through the gateway"});
    let r = h
        .client
        .send(
            Method::POST,
            "/v1/content",
            &[("x-api-key", &key), ("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    assert_eq!(created["caption"], "Made through the gateway");
    assert_eq!(created["projectId"], "prj_gateway");
    assert_eq!(created["status"], "queued");
    assert!(r.header("x-request-id").is_some());
    assert_eq!(h.sim.request_count("POST", "/v1/content"), 1);
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(ContainerId::parse(&id).is_some(), "{id}");
    let read = h.client.get(&content(&id), &key).await;
    assert_eq!(read.status, 200);
    assert_same_fields(&read.json(), &created, "created container read back");

    // The origin's validation error passes through, with the caller's request id.
    let r = h
        .client
        .send(
            Method::POST,
            "/v1/content",
            &[("x-api-key", &key), ("content-type", "application/json")],
            Bytes::from_static(br#"{"format":"video"}"#),
        )
        .await;
    r.assert_error(422, "VALIDATION");
    assert_eq!(r.json()["error"]["details"]["field"], "projectId");
    h.stop().await;
}

#[tokio::test]
async fn proxied_gets_pass_the_origins_status_and_body_through() {
    let h = Harness::start().await;
    async fn direct(sim: &Simulator, path: &str, key: &str) -> Value {
        let resp = sim
            .handle(
                http::Request::get(path)
                    .header("x-api-key", key)
                    .body(http_body_util::Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        let b = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&b).unwrap()
    }
    for (path, key) in [
        ("/v1/whoami", admin_key()),
        ("/v1/whoami", org_b_key()),
        ("/v1/whoami", no_scope_key()),
        ("/v1/projects", admin_key()),
    ] {
        let r = h.client.get(path, &key).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.x_cache().is_none(), "{path} is not a cached route");
        assert_same_fields(&r.json(), &direct(&h.sim, path, &key).await, path);
    }
    let before = h.sim.request_count("GET", "/v1/projects");
    let r = h.client.get("/v1/projects", &reader_key()).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(h.sim.request_count("GET", "/v1/projects"), before);
    // A cached route with a query string is proxied, answered by the origin.
    let r = h
        .client
        .get(&format!("{}?fields=all", content(VIDEO)), &admin_key())
        .await;
    assert_eq!(r.status, 200);
    assert_same_fields(
        &r.json(),
        &origin_container(&h.sim, VIDEO),
        "container with a query",
    );
    h.stop().await;
}

#[tokio::test]
async fn head_on_a_proxied_route_needs_the_same_scope_as_get() {
    let h = Harness::start().await;
    for (path, key) in [("/v1/whoami", no_scope_key()), ("/v1/content", reader_key())] {
        let get = h.client.get(path, &key).await;
        let head = h
            .client
            .send(Method::HEAD, path, &[("x-api-key", key.as_str())], Bytes::new())
            .await;
        if get.status == 403 {
            // Refused for GET: HEAD is refused for the same scope.
            assert_eq!(head.status, 403, "HEAD {path}");
        } else {
            assert_ne!(
                head.status, 403,
                "HEAD {path} is refused although GET is {}: {:?}",
                get.status, head.headers
            );
        }
    }
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Lifetime of entries: expiresAt and ttl (paused clock, no sockets).
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_entry_lives_no_longer_than_its_earliest_expires_at() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let id = "cnt_e0e0e0e0-0000-4000-8000-000000000030";
    sim.insert_container(
        "org_demo_a",
        container_expiring_at(id, &rfc3339(wall_clock_unix() + 30)),
    );
    let r = call_get(&gw, &content(id), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    let r = call_get(&gw, &content(id), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    tokio::time::advance(Duration::from_secs(25)).await;
    let r = call_get(&gw, &asset(id, "video-expiring"), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"), "still before expiresAt");
    assert_eq!(sim.container_gets(), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    let r = call_get(&gw, &asset(id, "video-expiring"), &admin_key()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.x_cache(),
        Some("MISS"),
        "past expiresAt, well before the 300 s ttl"
    );
    // (Only tokio's clock moved: the wall clock, which `expiresAt` is read
    // against, did not, so the refill is cached again. Nothing more to see.)
    assert_eq!(sim.container_gets(), 2, "the expired entry was not served");
}

#[tokio::test(start_paused = true)]
async fn expiry_is_judged_after_authentication_not_when_the_request_arrived() {
    // Keys are checked by asking the origin, which takes 3 s to answer.
    // The entry expires during that wait: it must not be served.
    let sim = demo_simulator();
    let gw = in_process(&sim, "[auth]\nsource = \"origin\"\n");
    let id = "cnt_e0e0e0e0-0000-4000-8000-000000000032";
    sim.insert_container(
        "org_demo_a",
        container_expiring_at(id, &rfc3339(wall_clock_unix() + 2)),
    );
    let r = call_get(&gw, &content(id), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    let r = call_get(&gw, &content(id), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"), "the admin key is known now");
    sim.set_failure(Some(FailureMode::Delay(Duration::from_secs(3))));
    // A key the gateway has not seen: its check waits 3 s on the origin.
    let r = call_get(&gw, &content(id), &reader_key()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.x_cache(),
        Some("MISS"),
        "the entry expired while the key was being checked"
    );
    assert_eq!(sim.container_gets(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_container_already_past_expires_at_is_never_cached() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let id = "cnt_e0e0e0e0-0000-4000-8000-000000000031";
    sim.insert_container("org_demo_a", container_expiring_at(id, "2020-01-01T00:00:00Z"));
    for n in 1..=3u64 {
        let r = call_get(&gw, &content(id), &admin_key()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), Some("MISS"), "read {n}");
        let d = call_get(&gw, &asset(id, "video-expiring"), &admin_key()).await;
        assert_eq!(d.status, 200);
        assert_eq!(d.x_cache(), Some("MISS"), "read {n}");
        assert_eq!(sim.container_gets(), 2 * n, "every read reaches the origin");
    }
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_configured_ttl() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "[cache]\nttl_secs = 5\n");
    let r = call_get(&gw, &content(VIDEO), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"));
    tokio::time::advance(Duration::from_secs(4)).await;
    let r = call_get(&gw, &content(VIDEO), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"), "4 s < ttl");
    tokio::time::advance(Duration::from_millis(1500)).await;
    let r = call_get(&gw, &content(VIDEO), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"), "5.5 s > ttl");
    assert_eq!(sim.container_gets(), 2);
    let r = call_get(&gw, &content(VIDEO), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("HIT"), "refilled");
}

// ---------------------------------------------------------------------------
// Origin failures.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn origin_error_envelopes_pass_through_and_nothing_is_cached() {
    // The breaker (5 consecutive failures by default) is not what this test is about.
    let h = Harness::with_origin(demo_simulator(), "breaker_failures = 100", "").await;
    h.sim.set_failure(Some(FailureMode::Status(500)));
    for n in 1..=2u64 {
        // The origin's enveloped 5xx is the partner's answer (promise 4),
        // with this request's id, and is not kept.
        let r = h.client.get(&content(VIDEO), &admin_key()).await;
        r.assert_error(500, "INTERNAL");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(
            r.json()["error"]["requestId"].as_str(),
            r.header("x-request-id"),
            "this request's id"
        );
        assert_eq!(
            h.sim.request_count("GET", &content(VIDEO)),
            n,
            "a failure is not cached"
        );
    }
    let r = h.client.get(&asset(VIDEO, VIDEO_ASSET), &admin_key()).await;
    r.assert_error(500, "INTERNAL");
    // A proxied route passes the origin's status through.
    let r = h.client.get("/v1/whoami", &admin_key()).await;
    r.assert_error(500, "INTERNAL");
    h.sim.set_failure(Some(FailureMode::Status(503)));
    h.client
        .get(&content(VIDEO), &admin_key())
        .await
        .assert_error(503, "INTERNAL");

    h.sim.set_failure(None);
    let before = h.sim.request_count("GET", &content(VIDEO));
    let r = h.client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    assert_eq!(h.sim.request_count("GET", &content(VIDEO)), before + 1);
    assert_same_fields(&r.json(), &origin_container(&h.sim, VIDEO), "after recovery");
    assert_eq!(
        h.client.get(&content(VIDEO), &admin_key()).await.x_cache(),
        Some("HIT")
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_origin_is_502_and_the_gateway_recovers_when_it_returns() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = closed.local_addr().unwrap();
    drop(closed);
    let cfg = test_config(&format!("http://{origin_addr}"), "");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let client = TestClient::new(app.addr);
    for path in [
        content(VIDEO),
        asset(VIDEO, VIDEO_ASSET),
        "/v1/whoami".to_string(),
    ] {
        let r = client.get(&path, &admin_key()).await;
        r.assert_error(502, "UPSTREAM_ERROR");
    }
    // The origin comes back on the same address.
    let sim = demo_simulator();
    let listener = TcpListener::bind(origin_addr)
        .await
        .expect("rebind the origin port");
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(sim.clone().serve(listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let r = client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    assert_eq!(sim.request_count("GET", &content(VIDEO)), 1);
    let _ = stop.send(true);
    tokio::time::timeout(WAIT, app.stop()).await.expect("stops");
}

#[tokio::test]
async fn a_stopped_origin_is_a_502_even_with_pooled_connections() {
    let h = Harness::start().await;
    // Pooled keep-alive connections to the origin exist.
    assert_eq!(h.client.get(&content(VIDEO), &admin_key()).await.status, 200);
    assert_eq!(h.client.get("/v1/whoami", &admin_key()).await.status, 200);
    h.stop_origin();
    for path in [content(SLIDESHOW), "/v1/whoami".to_string()] {
        let r = tokio::time::timeout(WAIT, h.client.get(&path, &admin_key()))
            .await
            .expect("answered, not hung on a dead pooled connection");
        r.assert_error(502, "UPSTREAM_ERROR");
    }
    // What was cached before the origin went away is still served.
    let r = h.client.get(&content(VIDEO), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("HIT")));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_origin_slower_than_the_timeout_is_504_upstream_timeout() {
    let sim = demo_simulator();
    let gw = in_process_with_config(&sim, "[origin]\ntimeout_ms = 1000\n");
    sim.set_failure(Some(FailureMode::Delay(Duration::from_secs(3))));
    for path in [content(VIDEO), "/v1/whoami".to_string()] {
        let started = tokio::time::Instant::now();
        let r = call_get(&gw, &path, &admin_key()).await;
        r.assert_error(504, "UPSTREAM_TIMEOUT");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
            "{path}: answered after {waited:?}, the timeout is 1 s"
        );
    }
    sim.set_failure(None);
    let before = sim.container_gets();
    let r = call_get(&gw, &content(VIDEO), &admin_key()).await;
    assert_eq!(
        (r.status.as_u16(), r.x_cache()),
        (200, Some("MISS")),
        "the timeout was not cached"
    );
    assert_eq!(sim.container_gets(), before + 1);
}

// ---------------------------------------------------------------------------
// Hostile input: a clear 4xx, and the server keeps serving.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_ids_are_404_without_an_origin_call() {
    let h = Harness::start().await;
    assert_still_serving(&h.client).await;
    let before = origin_requests_besides_probes(&h.sim);
    let uuid = &VIDEO[4..];
    let paths = vec![
        content("nope"),
        content("cnt_"),
        content(&VIDEO.replace('-', "")),
        content(&format!("CNT_{uuid}")),
        content(&VIDEO[..VIDEO.len() - 1]),
        content(&format!("{VIDEO}0")),
        content(&VIDEO.replace("0f11", "0f1g")),
        content("%00"),
        asset(VIDEO, ""),
        asset(VIDEO, &"x".repeat(129)),
        asset("nope", VIDEO_ASSET),
    ];
    // Encoded separators and dot-segments are not ids at all: the path is
    // refused before routing (400 BAD_REQUEST, see docs/limits.md).
    let not_canonical = [
        content(&VIDEO.replacen('-', "%2F", 1)),
        content(&format!("cnt_%2F{uuid}")),
        content(&format!("{VIDEO}%2Fassets%2F{VIDEO_ASSET}")),
        asset(VIDEO, "a%2Fb"),
        asset(VIDEO, "..%2F..%2Fwhoami"),
        asset(VIDEO, "%2e%2e"),
        asset(&VIDEO.replacen('-', "%2F", 1), VIDEO_ASSET),
    ];
    for (p, status, code) in paths
        .iter()
        .map(|p| (p, 404, "NOT_FOUND"))
        .chain(not_canonical.iter().map(|p| (p, 400, "BAD_REQUEST")))
    {
        let r = h.client.get(p, &admin_key()).await;
        r.assert_error(status, code);
        let head = h
            .client
            .send(
                Method::HEAD,
                p,
                &[("x-api-key", admin_key().as_str())],
                Bytes::new(),
            )
            .await;
        assert_eq!(head.status, status, "HEAD {p}");
    }
    assert_eq!(
        origin_requests_besides_probes(&h.sim),
        before,
        "malformed ids never reach the origin"
    );
    assert_still_serving(&h.client).await;
    h.stop().await;
}

#[tokio::test]
async fn too_many_headers_are_refused_and_the_server_keeps_serving() {
    let h = Harness::start().await;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: gateway.test\r\nX-Api-Key: {}\r\n",
        content(VIDEO),
        admin_key()
    );
    for i in 0..70 {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let out = raw_exchange(h.app.addr, req.as_bytes()).await;
    let line = status_line(&out);
    assert!(
        line.starts_with("HTTP/1.1 431") || line.starts_with("HTTP/1.1 400"),
        "status line: {line:?}"
    );
    assert_eq!(h.sim.container_gets(), 0);
    assert_still_serving(&h.client).await;
    h.stop().await;
}

#[tokio::test]
async fn a_header_over_16_kib_is_refused_and_the_server_keeps_serving() {
    let h = Harness::start().await;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: gateway.test\r\nX-Api-Key: {}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        content(VIDEO),
        admin_key(),
        "b".repeat(17 * 1024)
    );
    let out = raw_exchange(h.app.addr, req.as_bytes()).await;
    let line = status_line(&out);
    assert!(
        line.starts_with("HTTP/1.1 431") || line.starts_with("HTTP/1.1 400"),
        "status line: {line:?}"
    );
    assert_eq!(h.sim.container_gets(), 0);
    assert_still_serving(&h.client).await;
    h.stop().await;
}

#[tokio::test]
async fn refused_request_heads_still_get_a_request_id_and_an_envelope() {
    let h = Harness::start().await;
    let mut many = format!("GET {} HTTP/1.1\r\nHost: gateway.test\r\n", content(VIDEO));
    for i in 0..70 {
        many.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let big = format!(
        "GET {} HTTP/1.1\r\nHost: gateway.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        content(VIDEO),
        "b".repeat(17 * 1024)
    );
    for req in [many, big] {
        let out = raw_exchange(h.app.addr, req.as_bytes()).await;
        assert!(status_line(&out).starts_with("HTTP/1.1 431"), "{out}");
        let lower = out.to_ascii_lowercase();
        assert!(lower.contains("\r\nx-request-id: req_"), "no request id: {out}");
        assert!(out.contains("\"requestId\""), "no envelope: {out}");
        assert!(
            lower.contains("\r\ncache-control: no-store"),
            "an error is not stored: {out}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_the_path_is_a_4xx_and_the_server_keeps_serving() {
    let h = Harness::start().await;
    let mut req = b"GET /v1/content/\xff\xfe HTTP/1.1\r\nHost: gateway.test\r\nX-Api-Key: ".to_vec();
    req.extend_from_slice(admin_key().as_bytes());
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let out = raw_exchange(h.app.addr, &req).await;
    let line = status_line(&out);
    assert!(line.starts_with("HTTP/1.1 4"), "status line: {line:?}");
    // Percent-encoded invalid UTF-8 is just a bad id.
    let r = h.client.get("/v1/content/%FF%FE", &admin_key()).await;
    r.assert_error(404, "NOT_FOUND");
    assert_eq!(origin_requests_besides_probes(&h.sim), 0);
    assert_still_serving(&h.client).await;
    h.stop().await;
}

#[tokio::test]
async fn a_body_declared_over_1_mib_is_413_without_an_origin_call() {
    let h = Harness::start().await;
    let declared = 1024 * 1024 + 1;
    let mut s = TcpStream::connect(h.app.addr).await.unwrap();
    let head = format!(
        "POST /v1/content HTTP/1.1\r\nHost: gateway.test\r\nX-Api-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n",
        admin_key()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Only part of the body is sent: the answer must not wait for the rest.
    s.write_all(&vec![b' '; 64 * 1024]).await.unwrap();
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 413, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(
        Some(v["error"]["requestId"].as_str().unwrap().to_owned()),
        r.header("x-request-id")
    );
    drop(s);
    assert_eq!(
        h.sim.request_count("POST", "/v1/content"),
        0,
        "never reached the origin"
    );

    // The same through the in-process gateway with the whole body.
    let gw = in_process(&h.sim, "");
    let r = call(
        &gw,
        Method::POST,
        "/v1/content",
        &[
            ("x-api-key", &admin_key()),
            ("content-length", &declared.to_string()),
        ],
        Bytes::from(vec![b' '; declared]),
    )
    .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(h.sim.request_count("POST", "/v1/content"), 0);
    // A body at the cap is forwarded (the origin judges its content).
    let at_cap = format!(
        "{{\"projectId\":\"prj_cap\",\"format\":\"video\",\"caption\":\"{}\"}}",
        "c".repeat(1024)
    );
    let r = h
        .client
        .send(
            Method::POST,
            "/v1/content",
            &[("x-api-key", &admin_key()), ("content-type", "application/json")],
            Bytes::from(at_cap),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_still_serving(&h.client).await;
    h.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_cap_never_reaches_the_origin_whole() {
    // A cap well under the origin's own 1 MiB, so only the gateway can refuse.
    let st = Stack::start("max_body_bytes = 65536").await;
    let containers_before = st.sim.container_ids().len();
    let key = admin_key();
    let mut s = TcpStream::connect(st.app.addr).await.unwrap();
    let head = format!(
        "POST /v1/content HTTP/1.1\r\nHost: gateway.test\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let json_start = br#"{"projectId":"prj_chunked","format":"video","caption":""#;
    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    }
    let mut sent = chunk(json_start);
    for _ in 0..12 {
        sent.extend(chunk(&[b'x'; 8 * 1024]));
    }
    // 96 KiB sent, no terminating chunk yet.
    s.write_all(&sent).await.unwrap();
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    // Finish the body for good measure (the connection may be gone).
    let _ = s.write_all(&chunk(b"\"}")).await;
    let _ = s.write_all(b"0\r\n\r\n").await;
    drop(s);
    assert_eq!(
        st.sim.container_ids().len(),
        containers_before,
        "the origin never acted on a partial body"
    );

    // A chunked body under the cap goes through, and the server keeps serving.
    let mut s = TcpStream::connect(st.app.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut small = chunk(br#"{"projectId":"prj_chunked","#);
    small.extend(chunk(br#""format":"video","caption":"small"}"#));
    small.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&small).await.unwrap();
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["caption"], "small");
    assert_eq!(st.sim.container_ids().len(), containers_before + 1);
    st.stop().await;
}

// ---------------------------------------------------------------------------
// Connection cap and graceful shutdown.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn at_the_connection_cap_a_new_connection_takes_the_slot_of_the_longest_idle() {
    let st = Stack::start("max_connections = 2").await;
    let addr: SocketAddr = st.app.addr;
    let key = admin_key();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw_get("/v1/whoami", &key).as_bytes()).await.unwrap();
        let r = read_reply(&mut s).await;
        assert_eq!(r.status, 200);
        open.push(s); // idle keep-alive connection, still open
    }
    // The first kept connection is now idle longer than the second.
    open[1]
        .write_all(raw_get("/v1/whoami", &key).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut open[1]).await.status, 200);

    // A third connection is served; the longest idle one is closed for it.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(raw_get(&content(VIDEO), &key).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut third).await.status, 200);
    let (rest, _) = read_until_closed(&mut open[0]).await;
    assert!(rest.is_empty(), "an idle connection is closed without an answer");
    let cut = st.app.gateway.state().metrics.connections_cut.clone();
    assert_eq!(cut.with_label_values(&["evicted_idle"]).get(), 1);

    // The other kept connection is still served.
    open[1]
        .write_all(raw_get("/v1/whoami", &key).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut open[1]).await.status, 200);
    drop(third);
    drop(open);
    st.stop().await;
}

/// Reads until the server closes the connection (or `WAIT` passes) and
/// returns what it sent and how long, in tokio time, that took.
async fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was still open after {WAIT:?}");
    (got, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn slow_or_idle_clients_are_cut_off_at_the_header_read_timeout() {
    let st = Stack::start("header_read_timeout_ms = 2000").await;
    let addr = st.app.addr;
    let within_timeout =
        |waited: Duration| waited >= Duration::from_secs(2) && waited < Duration::from_secs(3);

    // Half a request head, then nothing (slowloris): closed at the timeout,
    // with no answer.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: gateway.test\r\n")
        .await
        .unwrap();
    let (got, waited) = read_until_closed(&mut half).await;
    assert!(
        within_timeout(waited),
        "a half-sent head was cut off after {waited:?}"
    );
    assert!(
        got.is_empty(),
        "answered a half-sent head: {:?}",
        String::from_utf8_lossy(&got)
    );

    // A head trickled a byte every 500 ms never completes in time either.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = trickle.split();
    let head = raw_get("/v1/whoami", &admin_key());
    let drip = async {
        for b in head.as_bytes() {
            if writer.write_all(&[*b]).await.is_err() {
                // Cut off: the read below sees it.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    tokio::select! {
        _ = drip => panic!("the whole head was accepted byte by byte"),
        read = reader.read_to_end(&mut got) => { let _ = read; }
    }
    let waited = started.elapsed();
    assert!(
        within_timeout(waited),
        "a trickled head was cut off after {waited:?}"
    );
    assert!(got.is_empty(), "answered a trickled head");

    // A keep-alive connection that goes quiet after a reply is closed too,
    // so idle clients do not hold connection slots.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /nope HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut idle).await.status, 404);
    let (got, waited) = read_until_closed(&mut idle).await;
    assert!(
        within_timeout(waited),
        "an idle connection was closed after {waited:?}"
    );
    assert!(got.is_empty());

    // None of this stopped the server: a prompt request is answered.
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    prompt
        .write_all(b"GET /nope HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let r = read_reply(&mut prompt).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
    st.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    // A grace far longer than any wait below: stop() must not sit it out.
    let st = Stack::start("shutdown_grace_ms = 60000").await;
    let addr = st.app.addr;
    // An idle keep-alive connection, open across the shutdown.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(raw_get("/v1/whoami", &admin_key()).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut idle).await.status, 200);
    let gate = st.sim.hold();
    let client = TestClient::new(addr);
    let inflight = tokio::spawn(async move { client.get(&content(VIDEO), &admin_key()).await });
    eventually("the request is held at the origin", || {
        st.sim.container_gets() == 1
    })
    .await;

    let Stack {
        sim,
        app,
        origin_stop,
    } = st;
    let stopping = tokio::spawn(app.stop());
    // New connections are refused while the in-flight request drains.
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(_) => break,
                Ok(s) => drop(s),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "new connections still accepted after stop()");
    assert!(!inflight.is_finished(), "the held request is still in flight");
    assert!(!stopping.is_finished(), "stop() waits for the in-flight request");

    gate.release();
    let r = tokio::time::timeout(WAIT, inflight)
        .await
        .expect("in-flight request completes")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_same_fields(&r.json(), &origin_container(&sim, VIDEO), "drained response");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stop() returns once the in-flight request is done, not after the grace")
        .unwrap();
    // The idle connection was closed, not left hanging.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle keep-alive connection was closed");
    assert!(TcpStream::connect(addr).await.is_err(), "refused after stop");
    let _ = origin_stop.send(true);
}
