//! Review round 13: attacks on the round-12 fixes (hyper refusal rewrite,
//! origin error envelopes, approve/reject write-through, JWKS keys, config
//! error redaction, access-log torn lines). Loopback only, bounded waits.

mod support;

use bytes::Bytes;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::raw_http::{raw_origin, RawReply};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ------------------------------------------------------------ helpers

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

// ------------------------------------------------------------ 1. hyper refusal rewrite

/// Guard: a slow-reading client, two pipelined requests whose proxied
/// bodies are nothing but refusal-looking heads, written by the origin in
/// 29-byte pieces (every piece is exactly `HTTP/1.1 400 Bad Request\r\n\r\n`
/// minus one byte, so socket writes fall at every possible boundary). The
/// client must get both bodies byte for byte and nothing else.
#[tokio::test]
async fn held_slow_reader_pipelined_bodies_of_refusal_heads_are_never_rewritten() {
    let unit = b"HTTP/1.1 400 Bad Request\r\n\r\n";
    let mut body = Vec::new();
    while body.len() < 600_000 {
        body.extend_from_slice(unit);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let origin = raw_origin(RawReply::new(head, body.clone()).in_pieces(unit.len()))
        .await
        .0;
    let app = raw_http::app_in_front_of(origin, "").await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(app.addr).await.unwrap();
    let one = format!(
        "GET /v1/projects/prj_1 HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\n\r\n",
        admin_key()
    );
    let req = format!("{one}{one}");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 997];
    let want_total = 2 * body.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut reads = 0u32;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(1500)), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        reads += 1;
        if reads.is_multiple_of(64) {
            // Slow: let the gateway's socket fill up now and then (yields,
            // not a sleep: the pace changes how writes split, not the result).
            for _ in 0..200 {
                tokio::task::yield_now().await;
            }
        }
        let replies = raw_http::split_responses(&got);
        if replies.len() == 2 && replies[1].1.len() == body.len() && got.len() > want_total {
            // Both whole; linger briefly for anything extra.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
            })
            .await;
            break;
        }
    }
    let replies = raw_http::split_responses(&got);
    assert_eq!(replies.len(), 2, "two responses, got {}", replies.len());
    for (h, b) in &replies {
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert!(
            b == &body,
            "a body was altered ({} bytes vs {})",
            b.len(),
            body.len()
        );
    }
    app.stop().await;
}

/// Guard: on a keep-alive connection whose first response was read whole,
/// a second request hyper refuses itself still gets the envelope.
#[tokio::test]
async fn held_a_refusal_after_a_keepalive_response_gets_the_envelope() {
    let h = Harness::start().await;
    let (cid, _) = first_container(&h.sim);
    let mut s = TcpStream::connect(h.app.addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: gw\r\nx-api-key: {}\r\n\r\n",
        content_path(&cid.to_string()),
        admin_key()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    while raw_http::split_responses(&got).first().is_none_or(|(h, b)| {
        let len: usize = h
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        b.len() < len
    }) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    s.write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: gw\r\nx-bad: a\x01b\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    let text = String::from_utf8_lossy(&rest).into_owned();
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    assert!(text.to_ascii_lowercase().contains("x-request-id:"), "{text:?}");
    assert!(text.contains("\"error\""), "{text:?}");
    h.stop().await;
}

// ------------------------------------------------------------ 2. origin error envelopes

/// Attacks `GatewayError::check_origin_error` / `proxy.rs origin_error`:
/// the gateway forwards the partner's `Accept-Encoding` to the origin, and
/// an origin (or nginx in front of it) that gzips JSON answers its own
/// Layers envelope compressed. The check parses the compressed bytes, finds
/// no envelope, and replaces the origin's 422 (its message and field
/// `details`) with a generic "The origin refused the request.". The
/// origin's own envelope must pass as it came.
#[tokio::test]
async fn a_gzipped_origin_envelope_is_not_replaced_by_a_generic_one() {
    let envelope = json!({"error": {"code": "VALIDATION", "message": "caption: too long",
        "details": {"fields": [{"field": "caption", "reason": "max 2200"}]}, "requestId": "req_origin"}});
    let body = gzip(envelope.to_string().as_bytes());
    let head = format!(
        "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\nvary: accept-encoding\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let origin = raw_origin(RawReply::new(head, body).in_pieces(1 << 20)).await.0;
    let app = raw_http::app_in_front_of(origin, "").await;
    let c = TestClient::new(app.addr);
    let r = c
        .send(
            http::Method::GET,
            "/v1/projects/prj_1",
            &[("x-api-key", &admin_key()), ("accept-encoding", "gzip")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 422);
    let decoded = if r.header("content-encoding") == Some("gzip") {
        gunzip(&r.body)
    } else {
        r.body.to_vec()
    };
    let v: Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(
        v["error"]["details"], envelope["error"]["details"],
        "the origin's envelope (gzip-coded) was replaced: {v}"
    );
    app.stop().await;
}

/// Attacks write-through on a non-envelope 5xx (`proxy.rs`): a load
/// balancer's 504 in front of the origin means "sent, but no answer" -- the
/// origin may have committed the PATCH, exactly the case the gateway
/// purges for when it times out itself. The new `origin_error` turns the
/// 504 page into the same UPSTREAM_ERROR envelope but returns before any
/// invalidation, so the pre-PATCH container keeps being served as a HIT.
#[tokio::test(start_paused = true)]
async fn a_patch_answered_by_a_load_balancer_504_page_still_drops_the_cached_container() {
    use support::fence_fixtures::*;
    use support::scripted::{Answer, Scripted};
    let origin = Arc::new(Scripted::default());
    origin.set(
        http::Method::GET,
        &path(),
        Answer::Json(200, container(&["a-1"], "before")),
    );
    let gw = gateway(&origin, "");
    assert_eq!(get(&gw, &path()).await.status, 200);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    origin.set(
        http::Method::PATCH,
        &path(),
        Answer::Raw(
            504,
            "text/html",
            Bytes::from_static(b"<html><body>504 Gateway Time-out</body></html>"),
        ),
    );
    // The origin did commit behind the load balancer.
    origin.set(
        http::Method::GET,
        &path(),
        Answer::Json(200, container(&["a-1"], "after")),
    );
    let r = call(
        &gw,
        http::Method::PATCH,
        &path(),
        &[("x-api-key", &admin_key()), ("content-type", "application/json")],
        Bytes::from_static(br#"{"caption":"after"}"#),
    )
    .await;
    r.assert_error(502, "UPSTREAM_ERROR");
    let r = get(&gw, &path()).await;
    assert_eq!(
        r.json()["caption"],
        "after",
        "after a 504 page for a PATCH the cache still serves the pre-PATCH container ({:?})",
        r.x_cache()
    );
}

/// Guard: envelope-like JSON that is not quite (code not a string, or a
/// string that is no code: spaces, see `error.rs` `is_origin_code`) is
/// replaced; a HEAD 4xx and a 3xx pass as they came. (A well-formed code
/// the gateway does not know is the origin's envelope and passes: round
/// 74, `attack_r31_origin.rs`.)
#[tokio::test]
async fn held_almost_envelopes_are_replaced_and_head_and_3xx_pass() {
    for (status, body) in [
        (404u16, r#"{"error":{"code":404,"message":"no"}}"#),
        (409, r#"{"error":{"code":"SOMETHING ELSE","message":"x"}}"#),
        (500, r#"{"error":"boom"}"#),
    ] {
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let origin = raw_origin(RawReply::new(head, body.as_bytes()).in_pieces(1 << 20))
            .await
            .0;
        let app = raw_http::app_in_front_of(origin, "").await;
        let c = TestClient::new(app.addr);
        let r = c.get("/v1/projects/prj_1", &admin_key()).await;
        let v = r.json();
        assert!(v["error"]["code"].is_string(), "{status}: {v}");
        assert_eq!(
            v["error"]["requestId"],
            r.header("x-request-id").unwrap(),
            "{status}: {v}"
        );
        app.stop().await;
    }
}

// ------------------------------------------------------------ 3. approve/reject routes

/// Attacks `routes.rs` (the canonical fast path): `POST
/// /v1/content/{id}/APPROVE` (only the action's case differs, so the path
/// is canonical and skips the alias path) is write-through, but its rule
/// is looked up with the case-sensitive `find(method, path)`, which
/// matches no rule: the route needs `routes.default_scope` (org:admin)
/// instead of content:approve, and is labelled `/v1/*`. The same holds for
/// `REGENERATE`, which also loses `content:write` and its long-running
/// class (before this change it went through `alias_route`, which used
/// `find_template`). `/approve/` (an alias) gets content:approve, so the
/// scope depends on spelling.
#[test]
fn an_upper_case_action_on_the_fast_path_keeps_the_scope_and_template_of_its_route() {
    use layers_gateway::auth::scopes::Scope;
    use layers_gateway::routes::{RouteTable, APPROVE_TEMPLATE, REGENERATE_TEMPLATE, REJECT_TEMPLATE};
    let cfg = layers_gateway::config::Config::parse("", std::path::PathBuf::new()).unwrap();
    let t = RouteTable::from_config(&cfg);
    let id = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
    let post = http::Method::POST;
    for (action, template, scope) in [
        ("APPROVE", APPROVE_TEMPLATE, "content:approve"),
        ("Reject", REJECT_TEMPLATE, "content:approve"),
        ("REGENERATE", REGENERATE_TEMPLATE, "content:write"),
    ] {
        let p = format!("/v1/content/{id}/{action}");
        let r = t.route(&post, &p, false);
        assert_eq!(
            (t.template(&r), t.required_scope(&r)),
            (template, Scope::parse(scope)),
            "{p}: {r:?}"
        );
    }
    let p = format!("/v1/content/{id}/REGENERATE");
    let r = t.route(&post, &p, false);
    assert_eq!(
        format!("{:?}", t.class(&post, &r)),
        "LongRunning",
        "{p}: regenerate is long-running in any spelling"
    );
}

/// Guard: the alias spellings keep write-through and content:approve.
#[test]
fn held_alias_spellings_of_approve_keep_write_through_and_scope() {
    use layers_gateway::auth::scopes::Scope;
    use layers_gateway::routes::{Route, RouteTable, APPROVE_TEMPLATE};
    let cfg = layers_gateway::config::Config::parse("", std::path::PathBuf::new()).unwrap();
    let t = RouteTable::from_config(&cfg);
    let id = "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
    for p in [
        format!("/v1/content/{id}/approve/"),
        format!("/v1/content//{id}/approve"),
        format!("/v1/CONTENT/{id}/approve"),
        format!(
            "/v1/content/{}/approve",
            id.to_uppercase().replace("CNT_", "cnt_")
        ),
        format!("/v1/content/{id}/%61pprove"),
        format!("/v1/%63ontent/{id}/approve"),
    ] {
        let r = t.route(&http::Method::POST, &p, false);
        assert!(
            matches!(
                r,
                Route::Proxy {
                    write_through: Some(_),
                    ..
                }
            ),
            "{p}: {r:?}"
        );
        assert_eq!(t.template(&r), APPROVE_TEMPLATE, "{p}");
        assert_eq!(t.required_scope(&r), Scope::parse("content:approve"), "{p}");
    }
}

// ------------------------------------------------------------ 5. JWKS keys that must still work

mod jwt_keys {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
    };
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use layers_gateway::auth::authenticator::Authenticator;
    use layers_gateway::shaping::clock::UnixClock;

    const T0: i64 = 1_800_000_000;
    const ISS: &str = "https://idp.example.test";
    const AUD: &str = "layers-gateway";

    fn b64(b: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn token(header: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let claims = json!({"iss": ISS, "aud": AUD, "sub": "user-1", "org_id": "org_jwt",
            "scope": "content:read", "iat": T0, "exp": T0 + 300});
        let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = sign(msg.as_bytes());
        format!("{msg}.{}", b64(sig))
    }

    fn auth_with(jwks: &Value, algs: &str, name: &str) -> (Arc<Authenticator>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("layers-r13-jwks-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
        let text = format!(
            "[[auth.jwt.issuers]]\nissuer = \"{ISS}\"\naudience = \"{AUD}\"\nalgorithms = [{algs}]\njwks_file = \"jwks.json\"\n"
        );
        let cfg = layers_gateway::config::Config::parse(&text, dir.clone()).unwrap();
        let a = Authenticator::with_clock(&cfg, Arc::default(), None, UnixClock::starting_at(T0)).unwrap();
        (Arc::new(a), dir)
    }

    fn bearer(t: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        h
    }

    /// Attacks `jwks.rs` `rsa_usable` + `DecodingKey::from_rsa_raw_components`:
    /// `rsa_usable` counts bits past leading zero octets (so the key loads),
    /// but the octets are handed to the verifier as they are. A JWKS with a
    /// leading 0x00 in `n` (Java's `BigInteger.toByteArray()`, common in
    /// hand-rolled IdPs) or `e` = `AAEAAQ` must still verify its tokens --
    /// or be skipped; it must not load and then refuse every token.
    #[tokio::test]
    async fn an_rsa_jwk_with_leading_zero_octets_still_verifies_its_tokens() {
        let k = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let p = k.public_key();
        let n = p.modulus().big_endian_without_leading_zero().to_vec();
        let e = p.exponent().big_endian_without_leading_zero().to_vec();
        let sign = |m: &[u8]| {
            let mut sig = vec![0; k.public_modulus_len()];
            k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
                .unwrap();
            sig
        };
        let mut padded_n = vec![0u8];
        padded_n.extend_from_slice(&n);
        let mut padded_e = vec![0u8];
        padded_e.extend_from_slice(&e);
        let mut refused = Vec::new();
        for (what, nn, ee) in [
            ("plain", n.clone(), e.clone()),
            ("n with a leading zero", padded_n.clone(), e.clone()),
            ("e with a leading zero", n.clone(), padded_e.clone()),
        ] {
            let set = json!({"keys": [{"kty": "RSA", "kid": "r", "alg": "RS256", "use": "sig", "n": b64(&nn), "e": b64(&ee)}]});
            let (auth, dir) = auth_with(&set, "\"RS256\"", &what.replace(' ', "-"));
            let t = token(json!({"alg": "RS256", "typ": "JWT", "kid": "r"}), sign);
            let r = auth.authenticate(&bearer(&t)).await;
            let _ = std::fs::remove_dir_all(&dir);
            if r.is_err() {
                refused.push(format!("{what}: {r:?}"));
            }
        }
        assert!(
            refused.is_empty(),
            "tokens of a valid RSA key refused: {refused:?}"
        );
    }

    /// Guard: a reload that removes an issuer refuses its token at once,
    /// though the token was verified (and cached) just before.
    #[tokio::test]
    async fn held_a_token_of_an_issuer_removed_by_a_reload_is_refused_at_once() {
        let k = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let pt = k.public_key().as_ref().to_vec();
        let set = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "p", "x": b64(&pt[1..49]), "y": b64(&pt[49..97])}]});
        let (auth, dir) = auth_with(&set, "\"ES384\"", "removed");
        let t = token(json!({"alg": "ES384", "typ": "JWT", "kid": "p"}), |m| {
            k.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
        });
        assert!(auth.authenticate(&bearer(&t)).await.is_ok());
        assert!(auth.authenticate(&bearer(&t)).await.is_ok());
        let other = format!(
            "[[auth.jwt.issuers]]\nissuer = \"https://other.example.test\"\naudience = \"{AUD}\"\nalgorithms = [\"ES384\"]\njwks_file = \"jwks.json\"\n"
        );
        let cfg = layers_gateway::config::Config::parse(&other, dir.clone()).unwrap();
        let j = auth.build_jwt(&cfg).unwrap();
        auth.replace_jwt(j);
        let r = auth.authenticate(&bearer(&t)).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(r.is_err(), "a removed issuer's token still accepted: {r:?}");
    }

    /// Guard: a P-384 key verifies ES384 tokens.
    #[tokio::test]
    async fn held_a_p384_key_verifies_es384_tokens() {
        let k = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let pt = k.public_key().as_ref().to_vec();
        let set = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "p", "x": b64(&pt[1..49]), "y": b64(&pt[49..97])}]});
        let (auth, dir) = auth_with(&set, "\"ES384\"", "p384");
        let t = token(json!({"alg": "ES384", "typ": "JWT", "kid": "p"}), |m| {
            k.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
        });
        let r = auth.authenticate(&bearer(&t)).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(r.is_ok(), "{r:?}");
    }
}

// ------------------------------------------------------------ 9. config errors repeating values

const PLANTED: &str = "whsec_PLANTEDSECRET1234";

/// Attacks the promise of `config/field_path.rs` ("config errors do not
/// repeat a mistyped string value: a secret put in the wrong field would
/// reach check-config, the reload log and the admin answer"): only serde's
/// `string "..."` is redacted; `Config::validate` and the keys-file parser
/// quote the value themselves (`{s:?}`) for string fields serde accepts.
#[test]
fn a_secret_in_a_validated_string_field_is_not_repeated_by_config_errors() {
    let cases = [
        format!("[log]\nlevel = \"{PLANTED}\"\n"),
        format!("[routes]\ndefault_scope = \"{PLANTED}\"\n"),
        format!("[cache]\ncompress_encodings = [\"{PLANTED}\"]\n"),
        format!("[[routes.rules]]\nmethod = \"GET\"\npath = \"/v1/x\"\nscope = \"{PLANTED}\"\n"),
    ];
    let mut leaks = Vec::new();
    for text in &cases {
        let e = layers_gateway::config::Config::parse(text, std::path::PathBuf::new())
            .err()
            .unwrap_or_else(|| panic!("{text} must be refused"));
        if e.contains("PLANTEDSECRET") {
            leaks.push(e);
        }
    }
    let keys = format!(
        "[[keys]]\nkey_id = \"01HZZZZZZZZZZZZZ\"\norg = \"o\"\nenv = \"live\"\nscopes = [\"{PLANTED}\"]\nsha256 = \"{}\"\n",
        "a".repeat(64)
    );
    match layers_gateway::auth::KeyStore::parse(&keys) {
        Err(e) if e.contains("PLANTEDSECRET") => leaks.push(e),
        _ => {}
    }
    assert!(
        leaks.is_empty(),
        "errors repeating the value:\n{}",
        leaks.join("\n")
    );
}

/// Guard: serde type errors in arrays, inline tables and the keys file
/// name the field but not the value.
#[test]
fn held_serde_type_errors_in_arrays_and_inline_tables_do_not_repeat_the_value() {
    for text in [
        format!("[webhooks]\nsecrets = \"{PLANTED}\"\n"),
        format!("[origin]\ntimeout_ms = \"{PLANTED}\"\n"),
        format!("[server]\nmax_headers = [\"{PLANTED}\"]\n"),
        format!("routes = {{ default_scope = \"x\", rules = [{{ method = \"GET\", path = 1, scope = \"{PLANTED}\" }}] }}\n[server]\nmax_headers = \"{PLANTED}\\\"x\"\n"),
        format!("[origin]\ntimeout_ms = \"{PLANTED}\\u00e9\\\"\"\n"),
    ] {
        if let Err(e) = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()) {
            assert!(!e.contains("PLANTEDSECRET"), "{e}");
        }
    }
    let keys = format!("[[keys]]\nkey_id = \"01HZZZZZZZZZZZZZ\"\norg = \"o\"\nenv = \"live\"\nscopes = \"{PLANTED}\"\nsha256 = 1\n");
    let e = layers_gateway::auth::KeyStore::parse(&keys).err().unwrap();
    assert!(!e.contains("PLANTEDSECRET"), "{e}");
}

// ------------------------------------------------------------ 8. access log torn lines

#[derive(Clone, Default)]
struct Mem(Arc<Mutex<Vec<u8>>>);

/// A file that fills up: takes `room` more bytes, then ENOSPC; opened again
/// (SIGUSR1 without a rename in between) it is the same file.
#[derive(Clone, Default)]
struct Disk {
    room: Arc<Mutex<usize>>,
    data: Mem,
    interrupts: Arc<Mutex<u32>>,
}

impl Write for Disk {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        {
            let mut i = self.interrupts.lock().unwrap();
            if *i > 0 {
                *i -= 1;
                return Err(std::io::ErrorKind::Interrupted.into());
            }
        }
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = b.len().min(*room);
        *room -= n;
        self.data.0.lock().unwrap().extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn disk_gateway(disk: &Disk) -> (layers_gateway::service::Gateway, layers_gateway::demo::Simulator) {
    let sim = demo_simulator();
    let d = disk.clone();
    let output = layers_gateway::access_log::Output::Custom(Arc::new(move || {
        Ok(Box::new(d.clone()) as Box<dyn Write + Send>)
    }));
    let cfg = test_config(
        "http://127.0.0.1:1",
        "[access_log]\nformat = \"json\"\nflush_ms = 60000\n",
    );
    let gw = layers_gateway::service::Gateway::with_access_log(
        cfg,
        demo_keys(),
        Arc::new(layers_gateway::origin::SimulatorUpstream(sim.clone())),
        output,
    )
    .unwrap();
    (gw, sim)
}

async fn requests(gw: &layers_gateway::service::Gateway, path: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(call_get(gw, path, &admin_key()).await.status, 200);
    }
    assert!(gw.state().access_log.flush(Duration::from_secs(10)));
}

/// Attacks `access_log/writer.rs` `reopen_if_asked`: after a torn write,
/// a reopen (SIGUSR1) clears `torn` on the assumption that the new handle
/// is a fresh file. When the file was not rotated (SIGUSR1 sent to retry
/// after freeing space, a postrotate that ran without a rename) the handle
/// is the same file ending in the torn fragment, and the next line is glued
/// to it. The newline must be written unless the reopened file is empty.
#[tokio::test]
async fn a_reopen_of_the_same_file_after_a_torn_line_does_not_glue_the_next_line() {
    let disk = Disk::default();
    let (gw, sim) = disk_gateway(&disk);
    let (id, asset) = first_container(&sim);
    let path = content_asset_path(&id.to_string(), &asset);
    *disk.room.lock().unwrap() = 1 << 20;
    requests(&gw, &path, 1).await;
    let line = disk.data.0.lock().unwrap().len();
    *disk.room.lock().unwrap() = line + line / 2;
    requests(&gw, &path, 2).await;
    *disk.room.lock().unwrap() = 1 << 20;
    gw.state().access_log.reopen();
    requests(&gw, &path, 2).await;
    let text = String::from_utf8_lossy(&disk.data.0.lock().unwrap()).into_owned();
    let whole = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count();
    assert_eq!(whole, 4, "four whole lines, the torn one on its own:\n{text}");
}

/// Guard: EINTR on writes (and on the newline after a torn line) loses
/// nothing and glues nothing; repeated failures keep counting right.
#[tokio::test]
async fn held_eintr_and_repeated_enospc_keep_lines_apart_and_counted() {
    let disk = Disk::default();
    let (gw, sim) = disk_gateway(&disk);
    let (id, asset) = first_container(&sim);
    let path = content_asset_path(&id.to_string(), &asset);
    *disk.room.lock().unwrap() = 1 << 20;
    *disk.interrupts.lock().unwrap() = 3;
    requests(&gw, &path, 1).await;
    let line = disk.data.0.lock().unwrap().len();
    // Torn twice in a row.
    *disk.room.lock().unwrap() = line / 2;
    requests(&gw, &path, 1).await;
    *disk.room.lock().unwrap() = 1 + line / 3;
    requests(&gw, &path, 1).await;
    *disk.room.lock().unwrap() = 1 << 20;
    *disk.interrupts.lock().unwrap() = 2;
    requests(&gw, &path, 2).await;
    let text = String::from_utf8_lossy(&disk.data.0.lock().unwrap()).into_owned();
    let whole = text
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count();
    assert_eq!(whole, 3, "{text}");
    assert_eq!(gw.state().access_log.written(), 3);
    assert_eq!(gw.state().metrics.access_log_dropped.get(), 2);
}

// ------------------------------------------------------------ 7. 499

/// Guard: a request answered (a 304 here) is counted once with its status,
/// never also as 499.
#[tokio::test]
async fn held_an_answered_304_is_not_also_counted_499() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, _) = first_container(&sim);
    let p = content_path(&id.to_string());
    let r = call_get(&gw, &p, &admin_key()).await;
    let etag = r.header("etag").unwrap().to_owned();
    let r = call(
        &gw,
        http::Method::GET,
        &p,
        &[("x-api-key", &admin_key()), ("if-none-match", &etag)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 304);
    drop(r);
    let scrape = String::from_utf8(gw.state().metrics.render()).unwrap();
    assert!(
        !scrape
            .lines()
            .any(|l| l.starts_with("layers_gateway_requests_total{") && l.contains("status=\"499\"")),
        "{scrape}"
    );
}
