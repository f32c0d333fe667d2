//! Review round 10, hardening: bounded, keyless clients cannot exhaust it,
//! secrets stay secret, bad input changes nothing. Loopback only, bounded
//! counts; every refusal is checked for what a client sees (status, the
//! Layers envelope, `X-Request-Id`), and the gateway for still serving.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `req` on a fresh connection; what came back before the close.
async fn raw(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// What is wrong with a raw answer that should be a `status` refusal in
/// the Layers envelope with a request id; `None` when nothing is.
fn envelope_problem(out: &str, status: u16) -> Option<String> {
    let first = out.lines().next().unwrap_or("<nothing>");
    let lower = out.to_ascii_lowercase();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    let ok_status = first.starts_with(&format!("HTTP/1.1 {status}"));
    let rid = lower
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(|v| v.trim().to_owned());
    let env: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let env_rid = env
        .as_ref()
        .and_then(|v| v["error"]["requestId"].as_str())
        .map(str::to_ascii_lowercase);
    if ok_status && rid.is_some() && env_rid.is_some() && rid == env_rid {
        None
    } else {
        Some(format!(
            "status line {first:?}, x-request-id {rid:?}, envelope {:?}",
            &body[..body.len().min(120)]
        ))
    }
}

async fn still_serving(h: &Harness) {
    let (cid, _) = first_container(&h.sim);
    let r = h.client.get(&format!("/v1/content/{cid}"), &admin_key()).await;
    assert_eq!(r.status, 200, "the gateway keeps serving a valid key");
}

/// docs/limits.md: request headers past `server.max_headers` (64) or
/// `server.max_header_bytes` (16 KiB) are refused with 431; the origin
/// contract: every 4xx is the Layers envelope and every response carries
/// `X-Request-Id` (tests/core.rs checks this for 70 headers and one 17 KiB
/// header). Past hyper's own backstops (100 headers, a 32 KiB read buffer)
/// hyper refuses the head itself, before the service sees it; its bare 431
/// is rewritten on the way out (src/server/hyper_refusal.rs), so the promise
/// holds there too.
#[tokio::test]
async fn heads_past_hypers_backstop_still_get_a_431_envelope_and_request_id() {
    let h = Harness::start().await;
    let key = admin_key();
    let (cid, _) = first_container(&h.sim);
    let p = format!("/v1/content/{cid}");
    let mut cases: Vec<(&str, String)> = Vec::new();
    // 150 one-byte headers: about 1.5 KiB in all, far under 16 KiB.
    let mut many = format!("GET {p} HTTP/1.1\r\nhost: g\r\nx-api-key: {key}\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-f{i}: a\r\n"));
    }
    many.push_str("connection: close\r\n\r\n");
    cases.push(("150 small headers", many));
    cases.push((
        "one 40 KiB header",
        format!(
            "GET {p} HTTP/1.1\r\nhost: g\r\nx-api-key: {key}\r\nx-big: {}\r\nconnection: close\r\n\r\n",
            "b".repeat(40 * 1024)
        ),
    ));
    // Keyless, as an anonymous flood would send it.
    let mut keyless = format!("GET {p} HTTP/1.1\r\nhost: g\r\n");
    for i in 0..120 {
        keyless.push_str(&format!("x-f{i}: a\r\n"));
    }
    keyless.push_str("connection: close\r\n\r\n");
    cases.push(("120 headers, no key", keyless));
    let mut problems = Vec::new();
    for (name, req) in &cases {
        let out = raw(h.app.addr, req.as_bytes()).await;
        if let Some(p) = envelope_problem(&out, 431) {
            problems.push(format!("{name}: {p}"));
        }
    }
    assert_eq!(h.sim.container_gets(), 0, "refused heads never reach the origin");
    still_serving(&h).await;
    assert!(problems.is_empty(), "{problems:#?}");
    h.stop().await;
}

/// h2: a header list over twice `max_header_bytes` (the h2 layer's
/// `max_header_list_size`) is refused inside the h2 crate with its own bare
/// 431: no envelope, no request id. This is the documented exception
/// (docs/limits.md, "Heads refused before the gateway sees them"): the reply
/// is HPACK-encoded frames, so it cannot be rewritten on its way out the way
/// hyper's HTTP/1 replies are. What is asserted: the 431 itself, that the
/// request never reached the origin, and that the gateway keeps serving,
/// on the same h2 connection and on a new one.
#[tokio::test]
async fn an_h2_header_list_past_the_h2_cap_gets_the_h2_layers_bare_431() {
    let h = Harness::start().await;
    let (cid, _) = first_container(&h.sim);
    let io = TokioIo::new(TcpStream::connect(h.app.addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(1 << 20)
        .handshake(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let uri = format!("http://gateway.test/v1/content/{cid}");
    let req = Request::get(&uri)
        .header("x-api-key", admin_key())
        .header("x-big", "b".repeat(40 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .expect("an answer")
        .expect("a 431, not a failed stream");
    assert_eq!(resp.status(), 431, "the h2 layer's own refusal");
    assert_eq!(
        h.sim.container_gets(),
        0,
        "the refused head never reached the origin"
    );
    // The same connection still serves a valid request.
    let req = Request::get(&uri)
        .header("x-api-key", admin_key())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .expect("an answer")
        .expect("the connection survives the refusal");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    still_serving(&h).await;
    h.stop().await;
}

/// Bytes hyper's parser refuses (a control character in a header value, a
/// non-ASCII byte in the request target, a malformed Content-Length) are
/// answered by hyper itself, before the service sees them; its bare 400 is
/// rewritten on the way out. The promise: bad input gets a clear error in
/// the envelope, with a request id.
#[tokio::test]
async fn bytes_hyper_refuses_still_get_a_400_envelope_and_request_id() {
    let h = Harness::start().await;
    let key = admin_key();
    let (cid, _) = first_container(&h.sim);
    let p = format!("/v1/content/{cid}");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut ctl = format!("GET {p} HTTP/1.1\r\nhost: g\r\nx-api-key: ").into_bytes();
    ctl.extend_from_slice(b"lp_live_\x01\x02abc\r\nconnection: close\r\n\r\n");
    cases.push(("control bytes in the API key", ctl));
    let mut path = b"GET /v1/content/\xff\xfe HTTP/1.1\r\nhost: g\r\n".to_vec();
    path.extend_from_slice(format!("x-api-key: {key}\r\nconnection: close\r\n\r\n").as_bytes());
    cases.push(("non-UTF-8 path", path));
    cases.push((
        "negative content-length",
        format!(
            "POST /v1/content/{cid}/regenerate HTTP/1.1\r\nhost: g\r\nx-api-key: {key}\r\ncontent-length: -1\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
    ));
    let mut problems = Vec::new();
    for (name, req) in &cases {
        let out = raw(h.app.addr, req).await;
        if let Some(p) = envelope_problem(&out, 400) {
            problems.push(format!("{name}: {p}"));
        }
    }
    assert_eq!(h.sim.container_gets(), 0);
    still_serving(&h).await;
    assert!(problems.is_empty(), "{problems:#?}");
    h.stop().await;
}

/// A `Write` into shared memory (tracing output, access log lines).
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Guard (passes on the current code; no existing test walks it): with the
/// log at TRACE for every target and the access log on in both formats, a
/// round of valid, wrong, malformed and JWT-shaped credentials, forged and
/// valid webhooks, admin calls with a wrong and the right token, and a
/// `/metrics` scrape leave no key secret, webhook secret or admin token in
/// any log line, access line, response header or body, or metric.
#[tokio::test]
async fn held_no_secret_in_trace_logs_access_lines_bodies_or_metrics() {
    use http::Method;
    use layers_gateway::access_log::Output;
    use layers_gateway::origin::SimulatorUpstream;
    use layers_gateway::service::Gateway;
    use std::sync::Arc;

    let logs = Capture::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(sub);

    let key = admin_key();
    // lp_<env>_<keyId>_<secret>: the secret is everything after the key id.
    let secret = key.splitn(4, '_').nth(3).unwrap().to_owned();
    let wrong = format!(
        "{}_{}",
        key.rsplit_once('_').unwrap().0,
        "WrongSecretMarker0123456789abcdefghijklmnopq"
    );
    let malformed = "lp_live_MALFORMEDSECRETMARKER_x";
    let jwtish = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJKV1RTRUNSRVRNQVJLRVIifQ.SIGNATURESECRETMARKER";
    let wrong_admin = "WrongAdminTokenMarker-0123456789";
    let needles = [
        secret.as_str(),
        "WrongSecretMarker",
        "MALFORMEDSECRETMARKER",
        "SIGNATURESECRETMARKER",
        "eyJzdWIiOiJKV1RTRUNSRVRNQVJLRVIifQ",
        WEBHOOK_SECRET,
        ADMIN_TOKEN,
        wrong_admin,
    ];

    let sim = demo_simulator();
    let (cid, asset) = first_container(&sim);
    let mut seen = String::new();
    for format in ["json", "text"] {
        let access = Capture::default();
        let a = access.clone();
        let output = Output::Custom(Arc::new(move || {
            Ok(Box::new(a.clone()) as Box<dyn std::io::Write + Send>)
        }));
        let cfg = test_config(
            "http://127.0.0.1:1",
            &format!(
                "[log]\nlevel = \"trace\"\nrefusals_per_sec = 1000\n\n[access_log]\nformat = \"{format}\"\n"
            ),
        );
        let gw = Gateway::with_access_log(cfg, demo_keys(), Arc::new(SimulatorUpstream(sim.clone())), output)
            .unwrap();
        let p = format!("/v1/content/{cid}");
        let mut replies = Vec::new();
        replies.push(call_get(&gw, &p, &key).await);
        replies.push(call_get(&gw, &format!("{p}/assets/{asset}"), &key).await);
        replies.push(call_get(&gw, &format!("{p}?v=1"), &key).await);
        replies.push(call_get(&gw, &p, &wrong).await);
        replies.push(call_get(&gw, &p, malformed).await);
        let bearer = format!("Bearer {jwtish}");
        replies.push(call(&gw, Method::GET, &p, &[("authorization", &bearer)], Bytes::new()).await);
        let bearer_key = format!("Bearer {key}");
        replies.push(
            call(
                &gw,
                Method::GET,
                "/v1/whoami",
                &[("authorization", &bearer_key)],
                Bytes::new(),
            )
            .await,
        );
        replies.push(
            call(
                &gw,
                Method::POST,
                &format!("{p}/regenerate"),
                &[("x-api-key", &wrong), ("content-type", "application/json")],
                Bytes::from_static(b"{}"),
            )
            .await,
        );
        let body = format!(
            r#"{{"id":"evt_01HZZZZZZZZZZZZZZZZZZZZZZZ","type":"content.updated","data":{{"containerId":"{cid}"}}}}"#
        );
        let sig = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
        let hdrs: Vec<(&str, &str)> = sig.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        replies.push(
            call(
                &gw,
                Method::POST,
                "/webhooks/layers",
                &hdrs,
                Bytes::from(body.clone()),
            )
            .await,
        );
        let forged = signed_webhook(&body, "not-the-secret", unix_now());
        let hdrs: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        replies.push(call(&gw, Method::POST, "/webhooks/layers", &hdrs, Bytes::from(body)).await);
        for r in &replies {
            seen.push_str(&format!(
                "{:?}\n{}\n",
                r.headers,
                String::from_utf8_lossy(&r.body)
            ));
        }
        for (method, path, token) in [
            (Method::POST, "/admin/purge?all=true".to_owned(), wrong_admin),
            (Method::POST, format!("/admin/purge?container={cid}"), ADMIN_TOKEN),
            (
                Method::GET,
                "/admin/keys/DEM0ADM1N0000A01".to_owned(),
                ADMIN_TOKEN,
            ),
            (Method::GET, format!("/admin/containers/{cid}"), ADMIN_TOKEN),
            (Method::GET, "/admin/reload".to_owned(), ADMIN_TOKEN),
            (Method::GET, "/metrics".to_owned(), ADMIN_TOKEN),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = layers_gateway::admin::handle(&gw, req).await;
            seen.push_str(&format!("{:?}\n", resp.headers()));
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            seen.push_str(&String::from_utf8_lossy(&b));
            seen.push('\n');
        }
        assert!(gw.state().access_log.flush(Duration::from_secs(10)));
        let lines = access.text();
        assert!(lines.lines().count() >= 8, "access lines: {lines}");
        seen.push_str(&lines);
    }
    let log_text = logs.text();
    assert!(
        log_text.contains("authentication failed"),
        "the trace log was captured"
    );
    seen.push_str(&log_text);
    for n in needles {
        assert!(
            !seen.contains(n),
            "{n:?} leaked:\n{}",
            &seen[seen.find(n).unwrap().saturating_sub(300)..]
                [..600.min(seen.len() - seen.find(n).unwrap().saturating_sub(300))]
        );
    }
}
