//! Review round 11, attacks on the day's changes: the per-shape header
//! template of cached replies (d5ebc62), HEAD asked of the origin as a GET
//! (33c4b0f), the negative cache's `exists_until` (00729e6) and the `;`
//! refusal and method-override stripping (9a00d5f).
//!
//! In-process gateways (simulator or scripted origin) under tokio's paused
//! clock; one thread, so every gateway here shares the thread's header
//! templates (as the workers of one process do).

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::service::Gateway;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::scripted::{Answer, Scripted};
use support::*;

const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const WEBHOOK: &str = "/webhooks/layers";

static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next() -> u64 {
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A request with a fresh request id; returns the reply and that id.
async fn send(
    gw: &Gateway,
    method: Method,
    path: &str,
    key: &str,
    accept: Option<&str>,
    inm: Option<&str>,
) -> (Reply, String) {
    let rid = format!("req_r11_{:06}", next());
    let mut h = vec![("x-api-key", key), ("x-request-id", rid.as_str())];
    if let Some(a) = accept {
        h.push(("accept-encoding", a));
    }
    if let Some(t) = inm {
        h.push(("if-none-match", t));
    }
    (call(gw, method, path, &h, Bytes::new()).await, rid)
}

/// A signed webhook delivered to an in-process gateway; asserts a 2xx.
async fn webhook(gw: &Gateway, event_type: &str, data: Value) {
    let body = json!({"id": unique_event_id(), "type": event_type, "data": data}).to_string();
    let headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(gw, Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
    assert!(r.status.is_success(), "webhook: {} {:?}", r.status, r.body);
}

/// What one gateway's config promises on the content routes.
#[derive(Clone, Debug)]
struct Expect {
    /// `None`: shaping off.
    limit: Option<u32>,
    container_cc: Option<&'static str>,
    asset_cc: Option<&'static str>,
    compress: bool,
}

/// Every header of a content-route reply, against RFC 9110 and the config.
fn check(what: &str, r: &Reply, rid: &str, e: &Expect, asset: bool, head: bool) {
    let all = |n: &str| -> Vec<String> {
        r.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    for n in [
        "etag",
        "cache-control",
        "vary",
        "content-encoding",
        "content-length",
        "content-type",
        "x-cache",
        "x-request-id",
        "x-ratelimit-endpoint-class",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
    ] {
        let v = all(n);
        assert!(v.len() <= 1, "{what}: {n} repeated: {v:?} in {:?}", r.headers);
        assert!(
            v.iter().all(|s| !s.is_empty()),
            "{what}: {n} empty in {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-request-id"), Some(rid), "{what}: request id");
    assert_eq!(
        r.header("x-ratelimit-endpoint-class"),
        Some("read-light"),
        "{what}"
    );
    let nm = r.status == 304;
    assert!(r.status == 200 || nm, "{what}: status {}", r.status);
    assert!(r.header("etag").is_some(), "{what}: no etag {:?}", r.headers);
    if nm {
        for n in ["content-type", "content-encoding", "content-length"] {
            assert!(r.header(n).is_none(), "{what}: {n} on a 304: {:?}", r.headers);
        }
        assert!(r.body.is_empty());
    } else {
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{what}: {:?}",
            r.headers
        );
        if head {
            assert!(r.body.is_empty());
            assert!(
                r.header("content-length").is_some(),
                "{what}: HEAD without length {:?}",
                r.headers
            );
        }
    }
    let cc = if asset { e.asset_cc } else { e.container_cc };
    assert_eq!(r.header("cache-control"), cc, "{what}: cache-control");
    let vary = (!asset && e.compress).then_some("accept-encoding");
    assert_eq!(r.header("vary"), vary, "{what}: vary");
    match e.limit {
        Some(l) => {
            let l = l.to_string();
            assert_eq!(r.header("x-ratelimit-limit"), Some(l.as_str()), "{what}");
            assert!(
                r.header("ratelimit-policy")
                    .is_some_and(|p| p.contains(&format!(";q={l};"))),
                "{what}: {:?}",
                r.headers
            );
            let rem = r.header("x-ratelimit-remaining").expect("remaining");
            assert!(
                r.header("ratelimit")
                    .is_some_and(|v| v.contains(&format!(";r={rem};"))),
                "{what}: ratelimit disagrees with x-ratelimit-remaining {:?}",
                r.headers
            );
        }
        None => {
            for n in [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "ratelimit",
                "ratelimit-policy",
            ] {
                assert!(r.header(n).is_none(), "{what}: {n} unshaped {:?}", r.headers);
            }
        }
    }
}

/// Many gateways on one thread (more (tier, shape) pairs than the
/// thread keeps templates for), each with its own limit, cache-control
/// and compression: GET and HEAD, every coding, 200 and 304, hit and miss,
/// container and asset, and every reply checked header by header; the
/// canonical reply's validators and policy agree with the uncached
/// pass-through (`?x=1`) of the same request.
#[tokio::test(start_paused = true)]
async fn cached_reply_headers_are_right_for_every_shape_tier_and_config() {
    let sim = demo_simulator();
    let key = reader_key();
    let mut expectations = Vec::new();
    for i in 0..24u32 {
        let (container_cc, asset_cc, compress) = match i % 4 {
            0 => (Some("private, no-cache"), Some("private, max-age=60"), true),
            1 => (None, None, false),
            2 => (Some("public, max-age=5"), None, true),
            _ => (None, Some("no-store"), false),
        };
        let limit = (i % 6 != 5).then_some(1_000 + i);
        expectations.push(Expect {
            limit,
            container_cc,
            asset_cc,
            compress,
        });
    }
    let mut gws = Vec::new();
    for e in &expectations {
        let shaping = match e.limit {
            Some(l) => format!(
                "[shaping.tiers.standard]\nread_light_per_min = {l}\nwrite_light_per_min = 1000\nlong_running_per_min = 1000\ndaily_writes = 100000\n"
            ),
            None => "[shaping]\nenabled = false\n".into(),
        };
        let enc = if e.compress { "[\"br\", \"gzip\"]" } else { "[]" };
        let cfg = format!(
            "{shaping}\n[cache]\ncontainer_cache_control = {:?}\nasset_cache_control = {:?}\ncompress_encodings = {enc}\n",
            e.container_cc.unwrap_or(""),
            e.asset_cc.unwrap_or(""),
        );
        gws.push(in_process(&sim, &cfg));
    }
    // Rounds interleave the gateways so templates are built, evicted and
    // rebuilt between one gateway's requests.
    for round in 0..2 {
        for (gw, e) in gws.iter().zip(&expectations) {
            for asset in [false, true] {
                let p = if asset {
                    content_asset_path(SLIDESHOW, "slide-1")
                } else {
                    content_path(SLIDESHOW)
                };
                for coding in [None, Some("gzip"), Some("br")] {
                    let what = |m: &str| format!("round {round} {e:?} {m} {p} {coding:?}");
                    let (get, rid) = send(gw, Method::GET, &p, &key, coding, None).await;
                    check(&what("GET"), &get, &rid, e, asset, false);
                    let want_coding = if e.compress && !asset { coding } else { None };
                    assert_eq!(get.header("content-encoding"), want_coding, "{}", what("GET"));
                    let (head, rid) = send(gw, Method::HEAD, &p, &key, coding, None).await;
                    check(&what("HEAD"), &head, &rid, e, asset, true);
                    assert_eq!(
                        head.header("content-length"),
                        Some(get.body.len().to_string().as_str()),
                        "{}",
                        what("HEAD length")
                    );
                    for h in ["etag", "content-encoding", "cache-control", "vary"] {
                        assert_eq!(head.header(h), get.header(h), "{}: {h}", what("HEAD vs GET"));
                    }
                    let tag = get.header("etag").unwrap().to_owned();
                    for m in [Method::GET, Method::HEAD] {
                        let (nm, rid) = send(gw, m.clone(), &p, &key, coding, Some(&tag)).await;
                        assert_eq!(nm.status, 304, "{}", what("INM"));
                        check(&what(&format!("{m} 304")), &nm, &rid, e, asset, m == Method::HEAD);
                        assert_eq!(nm.header("etag"), Some(tag.as_str()));
                    }
                    if coding.is_none() {
                        // The pass-through of the same request.
                        let (v, vrid) = send(gw, Method::GET, &format!("{p}?x=1"), &key, None, None).await;
                        assert_eq!(v.status, 200, "{}", what("variant"));
                        assert_eq!(v.header("x-request-id"), Some(vrid.as_str()));
                        assert_eq!(v.body, get.body, "{}", what("variant body"));
                        for h in ["etag", "cache-control", "vary", "content-encoding"] {
                            assert_eq!(v.header(h), get.header(h), "{}: {h}", what("variant vs cached"));
                        }
                    }
                }
            }
        }
    }
}

/// HEAD of an uncached read (query-string variant, alias), asked of the
/// origin as a GET: its length and tag are the GET's, a matching
/// If-None-Match gets a 304 with no length or type, and the origin's own
/// 404 reaches the HEAD as a 404 with the GET's headers and no body.
#[tokio::test(start_paused = true)]
async fn head_of_an_uncached_read_is_its_get_without_the_body() {
    let sim = demo_simulator();
    sim.set_lenient_paths(true);
    let gw = in_process(&sim, "");
    let key = reader_key();
    for p in [
        format!("{}?x=1", content_path(SLIDESHOW)),
        format!("{}/", content_path(SLIDESHOW)),
        format!("{}?x=1", content_asset_path(SLIDESHOW, "slide-1")),
        format!("{}/", content_asset_path(SLIDESHOW, "slide-1")),
    ] {
        let (get, _) = send(&gw, Method::GET, &p, &key, Some("gzip, br"), None).await;
        assert_eq!(get.status, 200, "{p}");
        let (head, rid) = send(&gw, Method::HEAD, &p, &key, Some("gzip, br"), None).await;
        assert_eq!(head.status, 200, "{p}");
        assert!(head.body.is_empty());
        assert_eq!(head.header("x-request-id"), Some(rid.as_str()));
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "{p}"
        );
        for h in [
            "etag",
            "content-type",
            "content-encoding",
            "cache-control",
            "vary",
        ] {
            assert_eq!(head.header(h), get.header(h), "{p}: {h}");
            assert!(head.headers.get_all(h).iter().count() <= 1, "{p}: {h} repeated");
        }
        let tag = get.header("etag").unwrap().to_owned();
        let (nm, _) = send(&gw, Method::HEAD, &p, &key, None, Some(&tag)).await;
        assert_eq!(nm.status, 304, "{p}");
        for h in ["content-length", "content-type", "content-encoding"] {
            assert!(nm.header(h).is_none(), "{p}: {h} on a 304 {:?}", nm.headers);
        }
        assert_eq!(nm.header("etag"), Some(tag.as_str()));
    }
    // An id the origin does not know: a 404 both ways, the HEAD bodiless.
    let missing = "cnt_00000000-0000-4000-8000-00000000dead";
    for p in [
        format!("{}?x=1", content_path(missing)),
        format!("{}/", content_path(missing)),
    ] {
        let (get, _) = send(&gw, Method::GET, &p, &key, None, None).await;
        assert_eq!(get.status, 404, "{p}");
        let (head, rid) = send(&gw, Method::HEAD, &p, &key, None, None).await;
        assert_eq!(head.status, 404, "{p}");
        assert!(head.body.is_empty());
        assert_eq!(head.header("x-request-id"), Some(rid.as_str()));
        assert_eq!(head.header("content-type"), get.header("content-type"), "{p}");
        if let Some(n) = head.header("content-length") {
            assert_eq!(n, get.body.len().to_string(), "{p}");
        }
    }
}

/// A HEAD variant whose origin GET fails mid-body, or is past the
/// response cap: the same error a GET gets, never a 200 that describes a
/// body nobody read.
#[tokio::test(start_paused = true)]
async fn head_of_a_variant_whose_get_body_fails_or_is_too_big_is_an_error() {
    use support::fence_fixtures as ff;
    let origin = Arc::new(Scripted::default());
    let cfg = test_config_with("http://127.0.0.1:1", "max_response_bytes = 4096\n", "");
    let gw = Gateway::with_clock(
        cfg,
        demo_keys(),
        Arc::new(support::scripted::ScriptedUpstream(origin.clone())),
        layers_gateway::shaping::clock::UnixClock::starting_at_millis(ff::T0_MS),
    );
    let key = admin_key();
    origin.set(Method::GET, &ff::path(), Answer::FailingBody(200));
    for m in [Method::GET, Method::HEAD] {
        let (r, _) = send(&gw, m.clone(), &format!("{}?x=1", ff::path()), &key, None, None).await;
        assert_eq!(r.status, 502, "{m} mid-body failure: {:?}", r.headers);
    }
    let mut big = ff::container(&["slide-1"], "big");
    big["caption"] = Value::String("x".repeat(10_000));
    origin.set(Method::GET, &ff::path(), Answer::Json(200, big));
    for m in [Method::GET, Method::HEAD] {
        let (r, _) = send(&gw, m.clone(), &format!("{}?x=1", ff::path()), &key, None, None).await;
        assert_eq!(r.status, 502, "{m} past the cap: {:?}", r.headers);
    }
}

/// Stale-if-error and coalesced misses go through the same template as
/// hits: their blocks are checked the same way.
#[tokio::test(start_paused = true)]
async fn stale_and_coalesced_replies_carry_their_own_headers() {
    use layers_gateway::demo::FailureMode;
    let sim = demo_simulator();
    let gw = in_process(
        &sim,
        "[shaping.tiers.standard]\nread_light_per_min = 777\nwrite_light_per_min = 1000\nlong_running_per_min = 1000\ndaily_writes = 100000\n\n[cache]\nttl_secs = 1\nstale_if_error_secs = 600\n",
    );
    let key = reader_key();
    let e = Expect {
        limit: Some(777),
        container_cc: Some("private, no-cache"),
        asset_cc: Some("private, no-cache"),
        compress: true,
    };
    // The defaults' policy, whatever it is, read off a first reply.
    let (first, rid) = send(&gw, Method::GET, &content_path(SLIDESHOW), &key, Some("br"), None).await;
    let e = Expect {
        container_cc: first
            .header("cache-control")
            .map(|s| Box::leak(s.to_owned().into_boxed_str()) as &str),
        ..e
    };
    let (a, _) = send(
        &gw,
        Method::GET,
        &content_asset_path(SLIDESHOW, "slide-1"),
        &key,
        None,
        None,
    )
    .await;
    let e = Expect {
        asset_cc: a
            .header("cache-control")
            .map(|s| Box::leak(s.to_owned().into_boxed_str()) as &str),
        ..e
    };
    check("first", &first, &rid, &e, false, false);
    tokio::time::advance(Duration::from_secs(5)).await;
    sim.set_failure(Some(FailureMode::Status(500)));
    for coding in [None, Some("gzip"), Some("br")] {
        for m in [Method::GET, Method::HEAD] {
            let (r, rid) = send(&gw, m.clone(), &content_path(SLIDESHOW), &key, coding, None).await;
            assert_eq!(r.x_cache(), Some("STALE"), "{m} {coding:?} {:?}", r.headers);
            check(
                &format!("stale {m} {coding:?}"),
                &r,
                &rid,
                &e,
                false,
                m == Method::HEAD,
            );
            let tag = r.header("etag").unwrap().to_owned();
            let (nm, rid) = send(&gw, m.clone(), &content_path(SLIDESHOW), &key, coding, Some(&tag)).await;
            assert_eq!(nm.status, 304);
            check(
                &format!("stale 304 {m} {coding:?}"),
                &nm,
                &rid,
                &e,
                false,
                m == Method::HEAD,
            );
        }
    }
    sim.set_failure(None);
    // Coalesced: many requests on one fill, each its own id and remaining.
    sim.set_failure(Some(FailureMode::Delay(Duration::from_millis(200))));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let gw = gw.clone();
        let key = key.clone();
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let coding = [None, Some("gzip"), Some("br")][i % 3];
            let m = if i % 2 == 0 { Method::GET } else { Method::HEAD };
            let (r, rid) = send(&gw, m.clone(), &content_path(SLIDESHOW), &key, coding, None).await;
            check(&format!("coalesced {i}"), &r, &rid, &e, false, m == Method::HEAD);
            r.header("x-ratelimit-remaining").unwrap().to_owned()
        }));
    }
    let mut rem = Vec::new();
    for t in tasks {
        rem.push(t.await.unwrap());
    }
    rem.sort();
    rem.dedup();
    assert_eq!(rem.len(), 12, "each request its own remaining: {rem:?}");
}

use support::fence_fixtures as ff;

/// `exists_until` lives on the fence, and a fence with nothing else on it
/// (a `content.generated` without `updatedAt` sets no floor and revokes
/// nothing) is idle: the periodic sweep (every 30 s in `server::maintain`)
/// drops it, and with it the mark. A lagging replica's 404 after the sweep
/// is remembered again, and the container the event announced is hidden
/// for `negative_ttl_secs` although the origin serves it.
#[tokio::test(start_paused = true)]
async fn the_announcement_that_a_container_exists_survives_a_fence_sweep() {
    let origin = Arc::new(Scripted::default());
    let gw = ff::gateway(&origin, "");
    let key = admin_key();
    // Not there yet.
    get_status(&gw, &key, 404).await;
    webhook(
        &gw,
        "content.generated",
        json!({"id": ff::ID, "assets": [{"assetId": "video-new", "url": "https://cdn.example/video-new.mp4"}]}),
    )
    .await;
    // Control: without a sweep the lagging 404 is not remembered.
    get_status(&gw, &key, 404).await;
    origin.set(
        Method::GET,
        &ff::path(),
        Answer::Json(200, ff::container(&["video-new"], "new")),
    );
    get_status(&gw, &key, 200).await;
    // A container never read here: announced, then the upkeep sweep runs
    // before the first read meets the lagging replica.
    let other = format!("/v1/content/{}", ff::OTHER_ID);
    webhook(
        &gw,
        "content.generated",
        json!({"id": ff::OTHER_ID, "assets": [{"assetId": "video-new2", "url": "https://cdn.example/video-new2.mp4"}]}),
    )
    .await;
    tokio::time::advance(Duration::from_secs(1)).await;
    gw.state().cache.sweep();
    // The replica still lags.
    let r = call_get(&gw, &other, &key).await;
    assert_eq!(r.status, 404);
    // It caught up.
    let mut body = ff::container(&["video-new2"], "new2");
    body["id"] = json!(ff::OTHER_ID);
    origin.set(Method::GET, &other, Answer::Json(200, body));
    let r = call_get(&gw, &other, &key).await;
    assert_eq!(
        r.status,
        200,
        "the origin serves the container content.generated announced; the gateway answers a remembered 404 \
         (the fence holding exists_until was swept): {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

async fn get_status(gw: &Gateway, key: &str, want: u16) {
    let r = call_get(gw, &ff::path(), key).await;
    assert_eq!(r.status, want, "{:?}", String::from_utf8_lossy(&r.body));
}

/// Orders of events around a delete: a replayed or late `generated` or
/// `regenerated` after the delete never serves the deleted container, from
/// the cache or through a variant, and a 404 remembered before a later
/// `generated` is not answered after it.
#[tokio::test(start_paused = true)]
async fn events_replayed_after_a_delete_never_serve_the_deleted_container() {
    let origin = Arc::new(Scripted::default());
    let gw = ff::gateway(&origin, "");
    let key = admin_key();
    origin.set(
        Method::GET,
        &ff::path(),
        Answer::Json(200, ff::container(&["slide-1"], "v1")),
    );
    get_status(&gw, &key, 200).await;
    // Deleted at the origin a little later; events arrive out of order.
    let before = ff::rfc3339_ms(ff::T0_MS - 10_000);
    let at = ff::rfc3339_ms(ff::T0_MS + 1_000);
    webhook(
        &gw,
        "content.deleted",
        json!({"id": ff::ID, "updatedAt": at, "assets": ["slide-1"]}),
    )
    .await;
    // The origin's replica still serves the old body.
    for (t, data) in [
        (
            "content.generated",
            json!({"id": ff::ID, "updatedAt": before, "assets": [{"assetId": "slide-1", "url": "https://cdn.example/slide-1.png"}]}),
        ),
        (
            "content.regenerated",
            json!({"id": ff::ID, "updatedAt": before, "previousAssetIds": [], "assets": [{"assetId": "slide-1", "url": "https://cdn.example/slide-1.png"}]}),
        ),
        ("content.updated", json!({"id": ff::ID, "updatedAt": before})),
        ("content.generated", json!({"id": ff::ID})),
    ] {
        webhook(&gw, t, data).await;
        for p in [
            ff::path(),
            format!("{}?x=1", ff::path()),
            ff::asset_path("slide-1"),
            format!("{}/", ff::path()),
        ] {
            for m in [Method::GET, Method::HEAD] {
                let (r, _) = send(&gw, m.clone(), &p, &key, None, None).await;
                assert_eq!(r.status, 404, "after {t}: {m} {p} served the deleted container");
            }
        }
    }
}

/// Method overrides the strip misses: `X_HTTP_Method_Override` (PHP and
/// CGI origins read `-` and `_` alike: Symfony and Laravel see
/// `HTTP_X_HTTP_METHOD_OVERRIDE` either way) and `_method` in the query
/// (Rails' Rack::MethodOverride, Laravel and Symfony honour it on a POST).
/// A `POST /v1/content/:id` with either is a delete at such an origin,
/// which the gateway proxied as an unknown POST: no write-through, so the
/// deleted container stays cached.
#[tokio::test(start_paused = true)]
async fn method_override_headers_with_underscores_never_reach_the_origin() {
    let origin = Arc::new(Scripted::default());
    let gw = ff::gateway(&origin, "");
    let key = admin_key();
    let approve = format!("{}/approve", ff::path());
    origin.set(Method::POST, &approve, Answer::Json(200, json!({"ok": true})));
    origin.set(Method::POST, &ff::path(), Answer::Json(200, json!({"ok": true})));
    let names = [
        "x_http_method_override",
        "x_http_method",
        "x_method_override",
        "X-HTTP-Method-Override",
    ];
    for n in names {
        let r = call(
            &gw,
            Method::POST,
            &approve,
            &[("x-api-key", &key), (n, "DELETE")],
            Bytes::new(),
        )
        .await;
        let sent = origin.header_names();
        let last = sent.last().unwrap();
        let forwarded = r.status == 200
            && last.iter().any(|h| {
                let h = h.replace('_', "-");
                ["x-http-method-override", "x-http-method", "x-method-override"].contains(&h.as_str())
            });
        assert!(!forwarded, "{n}: a method override reached the origin: {last:?}");
    }
}

/// See [`method_override_headers_with_underscores_never_reach_the_origin`]:
/// the same override as a `_method` query parameter.
#[tokio::test(start_paused = true)]
async fn a_method_override_in_the_query_never_reaches_the_origin() {
    let origin = Arc::new(Scripted::default());
    let gw = ff::gateway(&origin, "");
    let key = admin_key();
    origin.set(Method::POST, &ff::path(), Answer::Json(200, json!({"ok": true})));
    for q in ["_method=DELETE", "_method=delete&x=1", "x=1&_method=PATCH"] {
        let p = format!("{}?{q}", ff::path());
        let before = origin.seen().len();
        let r = call(&gw, Method::POST, &p, &[("x-api-key", &key)], Bytes::new()).await;
        let seen = origin.seen();
        let reached = seen[before..].iter().any(|s| s.contains("_method"));
        assert!(
            !reached,
            "POST {p}: {} and the origin was asked {:?}",
            r.status,
            &seen[before..]
        );
    }
}

/// `%3B`: a `;` that a decoding proxy or framework in front of the origin
/// turns into a path parameter (`regenerate;v=1`, which Servlet
/// containers then strip) is a regenerate there, proxied here as an
/// unknown POST with no write-through. The rule that refuses `%2F` as
/// well as `/`-tricks should refuse it as it refuses `;`.
#[tokio::test(start_paused = true)]
async fn an_encoded_path_parameter_is_refused_like_a_plain_one() {
    let origin = Arc::new(Scripted::default());
    let gw = ff::gateway(&origin, "");
    let key = admin_key();
    for spelling in ["/regenerate%3Bv=1", "/regenerate%3b", "%3Bx/regenerate"] {
        let path = format!("{}{spelling}", ff::path());
        origin.set(Method::POST, &path, Answer::Json(200, json!({"ok": true})));
        let r = call(&gw, Method::POST, &path, &[("x-api-key", &key)], Bytes::new()).await;
        assert_eq!(
            origin.count(Method::POST, &path),
            0,
            "{spelling}: forwarded ({}) as an unknown route, without write-through",
            r.status
        );
        assert_eq!(r.status, 400, "{spelling}");
    }
}

/// Legitimate requests the `;` rule must not refuse: a `;` in the query
/// string (of a variant and of a proxied route).
#[tokio::test(start_paused = true)]
async fn a_semicolon_in_the_query_is_not_a_path_parameter() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let key = admin_key();
    let (r, _) = send(
        &gw,
        Method::GET,
        &format!("{}?a=1;b=2", content_path(SLIDESHOW)),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let (r, _) = send(&gw, Method::GET, "/v1/projects?x=a;b", &key, None, None).await;
    assert_ne!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
}

/// A regenerate while the origin's read replica still lags: the uncached
/// read (HEAD asked as a GET, or GET) gets the old body twice; the fence
/// leaves the revoked assets out, so the old tag is never confirmed with a
/// 304 and a HEAD of a revoked asset is 404. (A caption-only change from a
/// lagging replica is passed on: a documented limit, README "What the
/// gateway cannot know".)
#[tokio::test(start_paused = true)]
async fn an_uncached_head_never_confirms_the_version_a_regenerate_revoked() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let key = reader_key();
    let id = layers_gateway::ids::ContainerId::parse(SLIDESHOW).unwrap();
    let (old, _) = send(&gw, Method::GET, &content_path(SLIDESHOW), &key, None, None).await;
    assert_eq!(old.status, 200);
    let old_tag = old.header("etag").unwrap().to_owned();
    let (v, _) = send(
        &gw,
        Method::GET,
        &format!("{}?x=1", content_path(SLIDESHOW)),
        &key,
        None,
        None,
    )
    .await;
    assert_eq!(
        v.header("etag"),
        Some(old_tag.as_str()),
        "the variant's tag is the cached one"
    );
    sim.set_replica_lag(id, Some(Duration::from_secs(5)));
    let r = sim.regenerate(id).unwrap();
    let updated_at = sim.container(id).unwrap()["updatedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let assets: Vec<Value> = r
        .new_asset_ids
        .iter()
        .map(|a| json!({"assetId": a, "url": format!("https://cdn.example/{a}.png")}))
        .collect();
    webhook(
        &gw,
        "content.regenerated",
        json!({"id": SLIDESHOW, "updatedAt": updated_at, "previousAssetIds": r.previous_asset_ids, "assets": assets}),
    )
    .await;
    for p in [
        format!("{}?x=1", content_path(SLIDESHOW)),
        format!("{}//", content_path(SLIDESHOW)),
        content_path(SLIDESHOW),
    ] {
        for m in [Method::HEAD, Method::GET] {
            let (r, _) = send(&gw, m.clone(), &p, &key, None, Some(&old_tag)).await;
            assert_ne!(r.status, 304, "{m} {p}: a 304 confirms the regenerated version");
        }
    }
    for a in &r.previous_asset_ids {
        for p in [
            format!("{}?x=1", content_asset_path(SLIDESHOW, a)),
            content_asset_path(SLIDESHOW, a),
        ] {
            let (r, _) = send(&gw, Method::HEAD, &p, &key, None, None).await;
            assert_eq!(r.status, 404, "HEAD {p}: a revoked asset");
        }
    }
}

/// Route overrides, the path's counterpart of the method overrides the
/// strip removes: `X-Original-URL` and `X-Rewrite-URL` are read as the
/// request path by Zend/Laminas and older Symfony (and set by IIS URL
/// Rewrite), so `POST …/approve` (scope `content:approve`, no
/// write-through) with `X-Original-URL: …/regenerate` runs a regenerate
/// the gateway neither authorized (`content:write`) nor fenced.
#[tokio::test(start_paused = true)]
async fn route_override_headers_never_reach_the_origin() {
    let origin = Arc::new(Scripted::default());
    let gw = ff::gateway(&origin, "");
    let key = admin_key();
    let approve = format!("{}/approve", ff::path());
    let regenerate = format!("{}/regenerate", ff::path());
    origin.set(Method::POST, &approve, Answer::Json(200, json!({"ok": true})));
    let mut leaked = Vec::new();
    for n in ["x-original-url", "x-rewrite-url"] {
        let r = call(
            &gw,
            Method::POST,
            &approve,
            &[("x-api-key", &key), (n, &regenerate)],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200);
        let sent = origin.header_names();
        if sent.last().unwrap().iter().any(|h| h == n) {
            leaked.push(n);
        }
    }
    assert!(leaked.is_empty(), "forwarded to the origin: {leaked:?}");
}
