//! Rounds 15 and 17 (operator-facing promises): reload reporting, admin auth,
//! origin misbehaviour, Host framing.
//! Each test's comment tells the defect as an attacker found it; every
//! test failed on the code before its fix.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::demo::DEMO_KEYS_FILE;
use layers_gateway::origin::{HttpUpstream, Upstream};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use support::*;

struct FileGateway {
    app: App,
    dir: PathBuf,
    origin_url: String,
    /// Config lines appended at start (kept by reloads that want them).
    extra: String,
    _sim: layers_gateway::demo::Simulator,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn config_text(origin_url: &str, extra_server: &str, extra: &str) -> String {
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{token_hash}\"\n\n\
         [origin]\nurl = \"{origin_url}\"\ntimeout_ms = 5000\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n{extra}"
    )
}

impl FileGateway {
    async fn start() -> FileGateway {
        FileGateway::start_with("").await
    }

    async fn start_with(extra: &str) -> FileGateway {
        let sim = demo_simulator();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let dir = std::env::temp_dir().join(format!(
            "layers-r15-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keys.toml"), DEMO_KEYS_FILE).unwrap();
        std::fs::write(dir.join("gateway.toml"), config_text(&origin_url, "", extra)).unwrap();
        let cfg = Config::load(&dir.join("gateway.toml")).unwrap();
        let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
        let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
        app.gateway
            .state()
            .reload
            .set_source(dir.join("gateway.toml"), true);
        FileGateway {
            app,
            dir,
            origin_url,
            extra: extra.to_owned(),
            _sim: sim,
            _stop: stop,
        }
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("gateway.toml"), text).unwrap();
    }

    async fn reload(&self) -> (u16, Value) {
        let r = TestClient::new(self.app.admin_addr)
            .send(
                Method::POST,
                "/admin/reload",
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                Bytes::new(),
            )
            .await;
        (r.status.as_u16(), r.json())
    }

    async fn stop(self) {
        self.app.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// docs/operations.md: "Every other changed field is named in
/// `restartRequired` and takes effect after a restart". A second reload of
/// the same file still runs the old `server.max_connections`: the answer
/// must keep naming it, or the operator is told nothing is pending.
#[tokio::test]
async fn a_second_reload_still_names_a_restart_only_change_that_is_not_in_force() {
    let g = FileGateway::start().await;
    let running = g.app.gateway.state().config.server.max_connections;
    g.write_config(&config_text(&g.origin_url, "max_connections = 77\n", ""));
    let (code, first) = g.reload().await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(
        first["restartRequired"],
        serde_json::json!(["server (other fields)"]),
        "{first}"
    );
    // Nothing restarted: the cap in force is still the start value.
    assert_eq!(g.app.gateway.state().config.server.max_connections, running);
    let (code, second) = g.reload().await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(
        second["restartRequired"],
        serde_json::json!(["server (other fields)"]),
        "the process still runs max_connections = {running}, not 77; second answer: {second}"
    );
    g.stop().await;
}

/// A hand-written origin on loopback: the first request to `stall_path`
/// gets a 200 head and part of its body, then nothing, the socket held open
/// (a wedged export, a dead backend behind a keep-alive load balancer);
/// every other request a small JSON 200.
async fn stalling_origin(stall_path: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let stalled = stalled.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    if path == stall_path && !stalled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"data\":[")
                            .await;
                        // Never another byte; the socket stays open.
                        std::future::pending::<()>().await;
                    }
                    let body = br#"{"data":[]}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// docs/limits.md: "Every wait the gateway makes has a deadline", and an
/// origin request's slot is "held until the response body is done". A
/// proxied answer whose body stops arriving after the head is waited on
/// for ever: the origin slot is never given back, so the organization's
/// later requests queue behind it and get 503 OVERLOADED, long after every
/// configured deadline (origin timeout 500 ms, response-write 1 s, idle
/// 1 s) has passed.
#[tokio::test]
async fn a_proxied_body_that_stalls_after_its_head_is_cut_and_frees_the_origin_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = stalling_origin("/v1/projects").await;
    // Per-org cap of 1 so one wedged body shows at once; at the default
    // (64) it takes 64 such answers.
    let cfg = test_config_with(
        &format!("http://{origin}"),
        "max_inflight_per_org = 1\nqueue_deadline_ms = 300\n",
        "",
    );
    let cfg = {
        let mut c = cfg;
        c.origin.timeout_ms = 500;
        c.server.response_write_timeout_ms = 1000;
        c.server.idle_timeout_ms = 1000;
        c.server.body_read_timeout_ms = 1000;
        c.server.header_read_timeout_ms = 1000;
        c
    };
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let key = admin_key();
    // The first partner request gets the head, then the body stops.
    let mut first = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    first
        .write_all(format!("GET /v1/projects HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), first.read(&mut got))
        .await
        .expect("the head arrives")
        .unwrap();
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
    // Well past every deadline the gateway has (0.5 s origin, 1 s write,
    // 1 s idle, 1 s body), while the client keeps reading.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let inflight = app.gateway.state().origin.guard().inflight();
    let r = TestClient::new(app.addr).get("/v1/projects", &key).await;
    assert_eq!(
        (r.status.as_u16(), inflight),
        (200, 0),
        "4 s after a stalled origin body: origin slots in use {inflight}, the organization's next request: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    drop(first);
    app.stop().await;
}

/// A hand-written origin that answers every request with `resp` (on a
/// keep-alive connection, one answer per request head).
async fn fixed_origin(resp: Vec<u8>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let resp = Arc::new(resp);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let resp = resp.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// README ("Errors"): `UPSTREAM_ERROR` (502) when the origin "sent a body
/// that ... is over `origin.max_response_bytes`"; docs/limits.md: "Origin
/// response body ... 8 MiB (502)". On a proxied route the origin declares
/// its length in the head, before the gateway forwards anything, yet the
/// head is forwarded and the body cut at the cap: here (first frame over
/// the cap) the partner's connection is closed with no answer at all (a
/// debug build panics in hyper: the capped body's size hint, 4096,
/// disagrees with the forwarded `content-length: 20011`); with a body
/// that crosses the cap later, a `200 OK` announcing the whole length and
/// a cut connection. Never the documented 502 envelope.
#[tokio::test]
async fn a_proxied_answer_declared_over_the_response_cap_is_a_502_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("{{\"data\":\"{}\"}}", "x".repeat(20_000));
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let origin = fixed_origin(resp.into_bytes()).await;
    let cfg = test_config_with(&format!("http://{origin}"), "max_response_bytes = 4096\n", "");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/projects HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
            admin_key()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    let body_len = got.len().saturating_sub(head.len() + 4);
    assert!(
        head.starts_with("HTTP/1.1 502") && text.contains("\"UPSTREAM_ERROR\""),
        "an origin answer of {} bytes over a 4096-byte cap reached the partner as {} bytes:\n{head}\n(+{body_len} body bytes before the connection was cut)",
        body.len(),
        got.len()
    );
    app.stop().await;
}

/// RFC 9110 section 9.1: "All general-purpose servers MUST support the
/// methods GET and HEAD". Load balancers and uptime checks commonly probe
/// with HEAD; the admin listener answers `HEAD /healthz` and `HEAD /readyz`
/// 405, so such a probe marks every healthy instance down. (The partner
/// port answers HEAD like GET.)
#[tokio::test]
async fn head_probes_of_healthz_and_readyz_answer_like_get() {
    let h = Harness::start().await;
    // The origin has answered once, so /readyz is 200 to a GET.
    let _ = h.client.get("/v1/whoami", &admin_key()).await;
    let admin = h.admin();
    for path in ["/healthz", "/readyz"] {
        let get = admin.send(Method::GET, path, &[], Bytes::new()).await;
        let head = admin.send(Method::HEAD, path, &[], Bytes::new()).await;
        assert_eq!(
            head.status, get.status,
            "HEAD {path}: {} (GET: {})",
            head.status, get.status
        );
        assert!(head.body.is_empty());
    }
    h.stop().await;
}

/// RFC 9110 section 11.1: the authentication scheme is a case-insensitive
/// token, and the partner port accepts `authorization: bearer <key>`. The
/// admin listener compares the literal prefix `"Bearer "`, so the right
/// admin token sent as `bearer` (as some HTTP clients and scripts write
/// it) is refused 401 "Missing or invalid admin token." and the purge or
/// reload an operator ran did not happen.
#[tokio::test]
async fn the_right_admin_token_with_a_lower_case_scheme_is_accepted() {
    let h = Harness::start().await;
    let admin = h.admin();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = admin
            .send(
                Method::POST,
                "/admin/purge?all=true",
                &[("authorization", &format!("{scheme} {ADMIN_TOKEN}"))],
                Bytes::new(),
            )
            .await;
        assert_eq!(
            r.status.as_u16(),
            200,
            "scheme {scheme:?} with the right token: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // The partner port takes the same spelling.
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/whoami",
            &[("authorization", &format!("bearer {}", admin_key()))],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    h.stop().await;
}

/// RFC 9112 section 6.3: a response with both `Transfer-Encoding` and
/// `Content-Length` "ought to be handled as an error", and "an
/// intermediary that chooses to forward the message MUST first remove the
/// received Content-Length field". The gateway strips `Transfer-Encoding`
/// (hop-by-hop) and forwards the origin's stale `Content-Length: 5` with
/// the de-chunked body: hyper frames the partner's answer by that header,
/// so the partner gets a 200 whose body is the first five bytes of the
/// JSON, on a connection kept alive as if nothing happened.
#[tokio::test]
async fn an_origin_answer_with_both_framings_reaches_the_partner_whole() {
    let body = r#"{"data":"abcdefghij"}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let origin = fixed_origin(resp.into_bytes()).await;
    let app = support::raw_http::app_in_front_of(origin, "").await;
    let r = TestClient::new(app.addr).get("/v1/projects", &admin_key()).await;
    let got = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        (r.status == 200 && got == body) || (r.status == 502 && got.contains("UPSTREAM_ERROR")),
        "the origin sent {body:?} (chunked, with a stale content-length: 5); the partner got {} content-length {:?} body {got:?}",
        r.status,
        r.header("content-length")
    );
    app.stop().await;
}

/// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request)
/// status code to any HTTP/1.1 request message that lacks a Host header
/// field and to any request message that contains more than one Host
/// header field line". Conflicting Hosts are the classic lever for cache
/// poisoning and routing confusion between a front proxy and the service
/// behind it; the gateway answers both with 200 and the partner's data.
#[tokio::test]
async fn conflicting_or_missing_host_headers_are_refused_400() {
    let h = Harness::start().await;
    let key = admin_key();
    for (what, hosts) in [
        (
            "two Host lines",
            "host: partner.example\r\nhost: internal.example\r\n",
        ),
        ("no Host", ""),
    ] {
        let out = raw_exchange(
            h.app.addr,
            format!("GET /v1/whoami HTTP/1.1\r\n{hosts}x-api-key: {key}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let status = out.lines().next().unwrap_or("").to_owned();
        assert!(
            status.starts_with("HTTP/1.1 400") && out.contains("\"BAD_REQUEST\""),
            "{what}: {status}"
        );
    }
    h.stop().await;
}

/// The same stale `Content-Length` on an origin *error* is worse: the
/// gateway reads the de-chunked envelope whole and answers it with the
/// origin's head, so the body it hands hyper (the whole envelope) and the
/// `Content-Length: 5` it keeps disagree. A debug build panics in hyper
/// ("payload claims content-length of 80, custom content-length header
/// claims 5") and the partner gets nothing; a release build writes the
/// header and the whole body, so the partner's next response on that
/// keep-alive connection starts with origin bytes (response splitting).
/// Either way two pipelined requests do not get two well-formed answers.
#[tokio::test]
async fn an_origin_error_with_both_framings_keeps_the_partners_connection_framed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let envelope = r#"{"error":{"code":"NOT_FOUND","message":"No such project.","requestId":"req_x"}}"#;
    let resp = format!(
        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{envelope}\r\n0\r\n\r\n",
        envelope.len()
    );
    let origin = fixed_origin(resp.into_bytes()).await;
    let app = support::raw_http::app_in_front_of(origin, "").await;
    let key = admin_key();
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let one = format!("GET /v1/projects/prj_1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\n\r\n");
    let two = format!(
        "GET /v1/projects/prj_2 HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(format!("{one}{two}").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let answers = support::raw_http::split_responses(&got);
    let ok = answers.len() == 2
        && answers
            .iter()
            .all(|(head, body)| head.starts_with("HTTP/1.1 404") && body == envelope.as_bytes());
    assert!(
        ok,
        "two pipelined requests, each answered by the origin with a 404 envelope (chunked, stale content-length: 5); the partner read {} bytes:\n{}",
        got.len(),
        String::from_utf8_lossy(&got)
    );
    app.stop().await;
}

/// Round 17. With tracing off, a changed `tracing.sample_ratio` cannot
/// take effect until a restart, like any restart-only field. It was judged
/// against the last reload instead of the start: a second reload of the
/// same file said nothing was pending, though the process still had no
/// tracer, and a file set back to the start value was not told it matched.
#[tokio::test]
async fn with_tracing_off_a_changed_sample_ratio_is_judged_against_the_start_like_any_restart_only_field() {
    let g = FileGateway::start().await;
    assert!(
        g.app.gateway.state().telemetry.is_none(),
        "the test needs tracing off"
    );
    let pending = serde_json::json!(["tracing.sample_ratio (tracing is off; turning it on needs a restart)"]);
    g.write_config(&config_text(&g.origin_url, "", "[tracing]\nsample_ratio = 0.5\n"));
    let (code, first) = g.reload().await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["restartRequired"], pending, "{first}");
    assert!(
        !first["applied"].to_string().contains("sample_ratio"),
        "nothing was applied: {first}"
    );
    let (_, second) = g.reload().await;
    assert_eq!(
        second["restartRequired"], pending,
        "still no tracer runs; second answer: {second}"
    );
    g.write_config(&config_text(&g.origin_url, "", ""));
    let (_, back) = g.reload().await;
    assert_eq!(
        back["restartRequired"],
        serde_json::json!([]),
        "the file matches what runs again: {back}"
    );
    g.stop().await;
}

/// Round 19 note. A reload may raise `invalidation.tombstone_secs`, and
/// the cache then keeps new tombstones that long; in cluster mode their
/// fence records were still published with the lifetime read at start, so
/// a record expired while its tombstone stood, and a joiner after that
/// served the deleted container its peers refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_lengthens_tombstones_lengthens_their_fence_records_too() {
    let Some(redis) = redis_support::RedisServer::start() else {
        return;
    };
    let g = FileGateway::start_with(&format!(
        "[cluster]\nredis_url = \"{}\"\nsecret = \"layers-test-only-cluster-secret\"\ninstance_id = \"r19\"\n\
         max_unsynced_ms = 1000\nblock_ms = 100\nconnect_timeout_ms = 300\ncommand_timeout_ms = 300\n",
        redis.url()
    ))
    .await;
    let cluster = g.extra.clone();
    // Start: 15 min tombstones, 24 h revocations (the defaults); raised to
    // 10 days.
    g.write_config(&config_text(
        &g.origin_url,
        "",
        &format!("{cluster}\n[invalidation]\ntombstone_secs = 864000\n"),
    ));
    let (code, out) = g.reload().await;
    assert_eq!(code, 200, "{out}");
    let id = first_container(&g._sim).0;
    let inv = layers_gateway::events::Invalidation {
        event_id: Some(unique_event_id()),
        source: layers_gateway::events::Source::Webhook,
        event_type: layers_gateway::events::EventType::Deleted,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    };
    let (_, published) = g.app.gateway.accept_invalidation(&inv).await;
    published.unwrap();
    let keys =
        layers_gateway::cluster::keys::StreamKeys::new(layers_gateway::cluster::settings::DEFAULT_STREAM);
    let score: f64 = redis.cmd(&["ZSCORE", &keys.fences, &id.to_string()]);
    let (secs, _): (String, String) = redis::cmd("TIME").query(&mut redis.connection()).unwrap();
    let lives_days = (score / 1000.0 - secs.parse::<f64>().unwrap()) / 86400.0;
    g.stop().await;
    assert!(
        lives_days > 9.9,
        "the tombstone lives 10 days, its fence record {lives_days:.2} days"
    );
}
