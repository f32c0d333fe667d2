//! Review round 14: attacks on the origin-version fence bump
//! (`note_origin_version`), the decoded origin error bodies and 5xx purge
//! of write-through mutations (`proxy.rs`), and `shown_value` redaction of
//! config values. Loopback only, bounded waits, paused clock for time.

mod support;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use support::fence_fixtures::*;
use support::raw_http::{raw_origin, RawReply};
use support::scripted::{Answer, Scripted};
use support::*;

const PLANTED: &str = "whsec_PLANTEDSECRET1234";

// ------------------------------------------------------------ helpers

/// Container `ID` with these ids, caption and `updatedAt` (unix ms).
fn dated(ids: &[&str], caption: &str, at_ms: i64) -> Value {
    let mut v = container(ids, caption);
    v["updatedAt"] = Value::from(rfc3339_ms(at_ms));
    v
}

const OLD_MS: i64 = T0_MS - 60_000;
const NEW_MS: i64 = T0_MS - 1_000;

fn variant() -> String {
    format!("{}?fresh=1", path())
}

/// A gateway in front of a scripted origin that holds container `ID` at
/// the old version, read twice (MISS, then HIT).
async fn cached_old(extra: &str) -> (Arc<Scripted>, layers_gateway::service::Gateway) {
    let origin = Arc::new(Scripted::default());
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a-1"], "old", OLD_MS)),
    );
    let gw = gateway(&origin, extra);
    assert_eq!(get(&gw, &path()).await.status, 200);
    let r = get(&gw, &path()).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    (origin, gw)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn brotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(b).unwrap();
    }
    out
}

/// A 4xx/5xx from a raw origin with this coding and body, asked by GET
/// of a plain proxied route; the reply and how long it took.
async fn coded_error(status: &str, coding: &str, body: Vec<u8>) -> (Reply, Duration) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-encoding: {coding}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let origin = raw_origin(RawReply::new(head, body)).await.0;
    let app = raw_http::app_in_front_of(origin, "").await;
    let c = TestClient::new(app.addr);
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        c.send(
            Method::GET,
            "/v1/projects/prj_1",
            &[("x-api-key", &admin_key()), ("accept-encoding", "gzip, br")],
            Bytes::new(),
        ),
    )
    .await
    .expect("answered within 30 s");
    let took = started.elapsed();
    app.stop().await;
    (r, took)
}

// ------------------------------------------------------------ 1. note_origin_version

/// Attacks the promise "no stale cached version after such evidence": the
/// bump is not remembered as a floor, so the next fill, answered by a
/// replica that is still behind (the lagging replica the gateway already
/// retries for after a webhook), caches the old version again and serves
/// it as a HIT, although this instance has seen the newer one.
#[tokio::test(start_paused = true)]
async fn after_a_variant_shows_a_newer_version_a_lagging_refill_is_not_cached() {
    let (origin, gw) = cached_old("[cache]\nlag_retry_ms = 100\n").await;
    // Regenerated at the origin; the webhook is late.
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["b-1"], "new", NEW_MS)),
    );
    let v = get(&gw, &variant()).await;
    assert_eq!(v.json()["caption"], "new");
    // The next canonical read lands on a replica that is behind.
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a-1"], "old", OLD_MS)),
    );
    let first = get(&gw, &path()).await;
    assert_eq!(first.status, 200);
    let second = get(&gw, &path()).await;
    assert!(
        !(second.x_cache() == Some("HIT") && second.json()["caption"] == "old"),
        "the version older than the one a variant showed is cached again and served as a HIT \
         (first {:?}, second {:?})",
        first.x_cache(),
        second.x_cache()
    );
}

/// Attacks "no way for a partner to make the cache useless for others":
/// `note_origin_version` compares with the newest *registered* fill, which
/// stays the old version until a fill at the new version is cached; every
/// variant read that completes while such a fill is in flight bumps again
/// and discards it. A partner reading `?x=` variants steadily keeps the
/// container uncacheable for every reader, forever (the same new version,
/// seen again and again, is "evidence" each time).
#[tokio::test(start_paused = true)]
async fn variant_reads_overlapping_fills_keep_the_container_uncacheable() {
    let (origin, gw) = cached_old("").await;
    // Same version via a variant: no bump (guard for the quiet case).
    let _ = get(&gw, &variant()).await;
    assert_eq!(
        get(&gw, &path()).await.x_cache(),
        Some("HIT"),
        "same version bumped"
    );
    let new = dated(&["b-1"], "new", NEW_MS);
    origin.set(Method::GET, &path(), Answer::Json(200, new.clone()));
    // The first evidence: the cached old version stops being served.
    assert_eq!(get(&gw, &variant()).await.json()["caption"], "new");
    let mut statuses = Vec::new();
    for _round in 0..4 {
        let gate = Arc::new(tokio::sync::Notify::new());
        origin.set(
            Method::GET,
            &path(),
            Answer::Held(gate.clone(), Box::new(Answer::Json(200, new.clone()))),
        );
        let before = origin.count(Method::GET, &path());
        let reader = tokio::spawn({
            let gw = gw.clone();
            async move { get(&gw, &path()).await }
        });
        // Until the reader's fill is at the origin, or it was a HIT.
        let mut spins = 0;
        while origin.count(Method::GET, &path()) == before && !reader.is_finished() {
            tokio::task::yield_now().await;
            spins += 1;
            assert!(spins < 100_000, "the reader neither hit nor reached the origin");
        }
        origin.set(Method::GET, &path(), Answer::Json(200, new.clone()));
        // The partner's variant read completes while the fill is in flight.
        let v = get(&gw, &variant()).await;
        assert_eq!(v.json()["caption"], "new");
        gate.notify_one();
        let r = reader.await.unwrap();
        assert_eq!(r.json()["caption"], "new");
        statuses.push(r.x_cache().unwrap_or("-").to_owned());
    }
    assert!(
        statuses.iter().any(|s| s == "HIT"),
        "no fill of the new version was ever cached while variants of that same version kept \
         arriving: {statuses:?}"
    );
}

/// Guard: a fill leased before the bump whose origin answer (the old
/// version) arrives after it is not cached.
#[tokio::test(start_paused = true)]
async fn held_a_fill_in_flight_across_the_bump_is_not_cached() {
    let (origin, gw) = cached_old("").await;
    // Drop the cached entry so the next read fills (a PATCH-less purge).
    purge_in_process(&gw, &format!("container={ID}")).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    origin.set(
        Method::GET,
        &path(),
        Answer::Held(
            gate.clone(),
            Box::new(Answer::Json(200, dated(&["a-1"], "old", OLD_MS))),
        ),
    );
    let before = origin.count(Method::GET, &path());
    let reader = tokio::spawn({
        let gw = gw.clone();
        async move { get(&gw, &path()).await }
    });
    while origin.count(Method::GET, &path()) == before {
        tokio::task::yield_now().await;
    }
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["b-1"], "new", NEW_MS)),
    );
    assert_eq!(get(&gw, &variant()).await.json()["caption"], "new");
    gate.notify_one();
    let _ = reader.await.unwrap();
    let r = get(&gw, &path()).await;
    assert_eq!(r.json()["caption"], "new", "{:?}", r.x_cache());
}

/// Guard: after the bump nothing is revoked: an old asset id the origin
/// still answers is not a 404 (no wrong 404s), and another organization's
/// variant read (the origin's 404 for it) bumps nothing.
#[tokio::test(start_paused = true)]
async fn held_the_bump_revokes_nothing_and_a_foreign_404_bumps_nothing() {
    let (origin, gw) = cached_old("").await;
    // Another org's variant read: the origin says 404.
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(
            404,
            json!({"error": {"code": "NOT_FOUND", "message": "no", "requestId": "r"}}),
        ),
    );
    let b = call_get(&gw, &variant(), &org_b_key()).await;
    assert_eq!(b.status, 404);
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["b-1"], "new", NEW_MS)),
    );
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"), "a 404 bumped");
    assert_eq!(get(&gw, &variant()).await.json()["caption"], "new");
    // The old asset, read where the cache does not answer (a variant of
    // the asset route), is what the origin says: nothing was revoked.
    origin.set(
        Method::GET,
        &asset_path("a-1"),
        Answer::Json(
            200,
            json!({"assetId": "a-1", "kind": "image", "url": "https://cdn.example/a-1.png"}),
        ),
    );
    let a = get(&gw, &format!("{}?v=1", asset_path("a-1"))).await;
    assert_eq!(
        a.status, 200,
        "an old asset the origin still serves was answered 404"
    );
    let r = get(&gw, &path()).await;
    assert_eq!(r.json()["caption"], "new");
}

/// Guard: an origin that dates its container in the future (a skewed
/// clock) is bumped for once; the refill at that date is then cached and
/// further variants of it do not bump.
#[tokio::test(start_paused = true)]
async fn held_a_future_dated_origin_body_bumps_once_then_settles() {
    let (origin, gw) = cached_old("").await;
    let far = T0_MS + 10 * 365 * 86_400_000;
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a-1"], "future", far)),
    );
    let _ = get(&gw, &variant()).await;
    assert_ne!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    for _ in 0..3 {
        let _ = get(&gw, &variant()).await;
        assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"));
    }
}

// ------------------------------------------------------------ 2. decoded error bodies, 5xx purge

/// Guard: a gzip bomb (64 MiB of zeros, 8 times the cap) as a 4xx body is decoded only up to
/// the response cap, quickly, and answered with the gateway's envelope.
#[tokio::test]
async fn held_a_gzip_bomb_error_body_is_bounded() {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 8 << 20);
    let (r, took) = coded_error("422 Unprocessable Entity", "gzip", bomb).await;
    r.assert_error(422, "VALIDATION");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// Guard: a brotli bomb likewise.
#[tokio::test]
async fn held_a_brotli_bomb_error_body_is_bounded() {
    let bomb = brotli(&vec![b'a'; 64 << 20]);
    let (r, took) = coded_error("500 Internal Server Error", "br", bomb).await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// Guard: garbage under a coding, stacked codings and an unknown coding
/// give the gateway's envelope; an upper-case `GZIP` envelope passes.
#[tokio::test]
async fn held_garbage_and_stacked_codings_are_replaced_and_case_is_ignored() {
    let env =
        json!({"error": {"code": "CONFLICT", "message": "origin says", "requestId": "req_o"}}).to_string();
    for (coding, body) in [
        ("gzip", b"not gzip at all".to_vec()),
        ("br", b"\xff\xff\xff\xff".to_vec()),
        ("deflate", gzip(env.as_bytes())),
        ("gzip, br", brotli(&gzip(env.as_bytes()))),
        ("compress", env.as_bytes().to_vec()),
    ] {
        let (r, _) = coded_error("409 Conflict", coding, body).await;
        r.assert_error(409, "CONFLICT");
        assert_ne!(r.json()["error"]["message"], "origin says", "{coding}");
    }
    let (r, _) = coded_error("409 Conflict", "GZIP", gzip(env.as_bytes())).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.decoded_body_any(),
        env.as_bytes(),
        "GZIP-coded envelope did not pass"
    );
}

trait AnyCoding {
    fn decoded_body_any(&self) -> Vec<u8>;
}
impl AnyCoding for Reply {
    fn decoded_body_any(&self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        match self
            .header("content-encoding")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gzip") => {
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            _ => out.extend_from_slice(&self.body),
        }
        out
    }
}

/// Guard: a 4xx (with the envelope) to a PATCH does not drop the cached
/// container; a 5xx envelope does and passes as it came; a 5xx to a route
/// that is not write-through (create) drops nothing.
#[tokio::test(start_paused = true)]
async fn held_purge_only_for_5xx_of_write_through_mutations() {
    let (origin, gw) = cached_old("").await;
    let patch = |gw: layers_gateway::service::Gateway| async move {
        call(
            &gw,
            Method::PATCH,
            &path(),
            &[("x-api-key", &admin_key()), ("content-type", "application/json")],
            Bytes::from_static(br#"{"caption":"x"}"#),
        )
        .await
    };
    origin.set(
        Method::PATCH,
        &path(),
        Answer::Json(
            409,
            json!({"error": {"code": "CONFLICT", "message": "busy", "requestId": "r"}}),
        ),
    );
    assert_eq!(patch(gw.clone()).await.status, 409);
    assert_eq!(get(&gw, &path()).await.x_cache(), Some("HIT"), "a 409 purged");
    origin.set(
        Method::POST,
        "/v1/content",
        Answer::Json(
            500,
            json!({"error": {"code": "INTERNAL", "message": "boom", "requestId": "r"}}),
        ),
    );
    let c = call(
        &gw,
        Method::POST,
        "/v1/content",
        &[("x-api-key", &admin_key()), ("content-type", "application/json")],
        Bytes::from_static(br#"{"projectId":"prj_1","caption":"x"}"#),
    )
    .await;
    assert!(c.status.is_server_error(), "{}", c.status);
    assert_eq!(
        get(&gw, &path()).await.x_cache(),
        Some("HIT"),
        "a create's 500 purged"
    );
    origin.set(
        Method::PATCH,
        &path(),
        Answer::Json(
            503,
            json!({"error": {"code": "OVERLOADED", "message": "later", "requestId": "r"}}),
        ),
    );
    let r = patch(gw.clone()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["message"], "later");
    origin.set(
        Method::GET,
        &path(),
        Answer::Json(200, dated(&["a-1"], "committed", NEW_MS)),
    );
    let r = get(&gw, &path()).await;
    assert_eq!(r.json()["caption"], "committed", "{:?}", r.x_cache());
}

// ------------------------------------------------------------ 3. shown_value and other echoes

/// Attacks "a secret in the wrong field is never echoed": `log.level`
/// accepts `target=` (a target with an empty level), so a base64 secret
/// with one `=` of padding pasted there is a valid filter with no default
/// level, and `config::warnings` quotes the whole value (`{:?}`), which
/// `check-config` and `serve` print.
#[test]
fn a_base64_secret_in_log_level_is_repeated_by_the_no_default_warning() {
    let secret = "c2VjcmV0UExBTlRFRFNFQ1JFVA="; // base64, one '=' of padding
    let text = format!("[log]\nlevel = \"{secret}\"\n");
    let cfg = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new())
        .expect("accepted as a filter");
    let leaks: Vec<String> = layers_gateway::config::warnings::config_warnings(&cfg)
        .into_iter()
        .filter(|w| w.contains("c2VjcmV0UExBTlRFRFNFQ1JFVA"))
        .collect();
    assert!(leaks.is_empty(), "warnings repeating the value: {leaks:?}");
}

/// Attacks the same promise on the most likely mistake of all: the secret
/// itself written where the name of its environment variable goes
/// (`shared_secret_env`). `check-config` (Authenticator::check), `serve`
/// and a reload answer "environment variable <the secret> is not set".
#[test]
fn a_secret_written_as_shared_secret_env_is_repeated_by_check_config() {
    let text = format!(
        "[[auth.jwt.issuers]]\nissuer = \"https://idp.example\"\naudience = \"layers-gateway\"\nshared_secret_env = \"{PLANTED}\"\n"
    );
    let cfg = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new())
        .expect("the config itself parses");
    let e =
        layers_gateway::auth::authenticator::Authenticator::check(&cfg).expect_err("the variable is not set");
    assert!(!e.contains("PLANTEDSECRET"), "{e}");
}

/// Attacks the keys-file side: scopes were redacted, but an unknown `tier`
/// is still quoted (`{tier:?}`) by `keys_check::check_tiers`, run by
/// `check-config`, at start and on every keys-file reload (whose error is
/// logged and kept as the reload's `last_error`).
#[test]
fn a_secret_in_a_keys_file_tier_is_repeated() {
    let keys = format!(
        "[[keys]]\nkey_id = \"01HZZZZZZZZZZZZZ\"\norg = \"o\"\nenv = \"live\"\nscopes = [\"content:read\"]\ntier = \"{PLANTED}\"\nsha256 = \"{}\"\n",
        "a".repeat(64)
    );
    layers_gateway::auth::KeyStore::parse(&keys).expect("the keys file parses");
    let known: std::collections::BTreeSet<String> = ["standard".to_owned()].into();
    let e = layers_gateway::auth::keys_check::check_tiers(&keys, &known).expect_err("unknown tier");
    assert!(!e.contains("PLANTEDSECRET"), "{e}");
}

/// Attacks the name-like rule itself (design limit): a generated lower-case
/// hex secret of 20 characters (`openssl rand -hex 10`) is "name-like" and
/// quoted whole.
#[test]
fn a_twenty_char_lowercase_hex_secret_is_quoted() {
    let secret = "9f2c4e1a7b3d5f60a8c2";
    let text = format!("[routes]\ndefault_scope = \"{secret}\"\n");
    let e = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()).unwrap_err();
    assert!(!e.contains(secret), "{e}");
}

/// Guard: the EnvFilter error path and the bare-word path do not repeat a
/// mixed-case secret, whatever directive shape it hides in.
#[test]
fn held_log_level_errors_do_not_repeat_a_secret() {
    for lv in [
        PLANTED.to_owned(),
        format!("{PLANTED}=="),
        format!("info,{PLANTED}=x"),
        format!("x[{{f={PLANTED}(}}]=info"),
        format!("a=info,{PLANTED}"),
        format!("info,x={PLANTED}"),
        format!("x[{{{PLANTED}=(}}]=info"),
    ] {
        let text = format!("[log]\nlevel = {lv:?}\n");
        if let Err(e) = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()) {
            assert!(!e.contains("PLANTEDSECRET"), "{lv}: {e}");
        }
    }
    for (field, v) in [
        ("[cache]\ncompress_encodings", format!("[\"{PLANTED}\"]")),
        ("[log]\nlevel", format!("\"{}\"", "ABCDEFGH1")),
    ] {
        let text = format!("{field} = {v}\n");
        if let Err(e) = layers_gateway::config::Config::parse(&text, std::path::PathBuf::new()) {
            assert!(!e.contains("PLANTEDSECRET") && !e.contains("ABCDEFGH1"), "{e}");
        }
    }
}
