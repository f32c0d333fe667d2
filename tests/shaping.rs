//! Traffic shaping and origin protection as a partner (and the platform
//! team) notices them: exact per-minute admits per tier and endpoint class,
//! bursts, `Retry-After` that can be trusted, the rate-limit headers, the
//! daily write cap and its reset at 00:00 UTC, isolation between keys and
//! organizations, the origin's in-flight caps with their bounded queue, the
//! circuit breaker, the retry budget, stale-if-error, and the metrics of
//! every decision.
//!
//! Time-dependent behaviour runs against the in-process gateway under
//! tokio's paused clock (no sockets, no sleeps: `advance` moves time).
//! Retries after connection resets and refused connections need real
//! sockets, so those tests use loopback TCP, and no assertion of theirs
//! depends on elapsed time.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::auth::keys::keys_file_entry;
use layers_gateway::auth::KeyStore;
use layers_gateway::demo::{FailureMode, Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use layers_gateway::origin::{HttpUpstream, SimulatorUpstream};
use layers_gateway::service::Gateway;
use layers_gateway::shaping::UnixClock;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::task::JoinHandle;
use tokio::time::{advance, Instant};

// ---------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------

/// Containers of org_demo_a.
const VIDEO: &str = "cnt_3f6c1a2e-8b4d-4c1f-9a7e-2d5b8c9e0f11";
const SLIDESHOW: &str = "cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const LEGACY: &str = "cnt_1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5";
const FOURTH_A: &str = "cnt_9e8d7c6b-5a49-4382-b716-0a9b8c7d6e5f";
const FIFTH_A: &str = "cnt_2b4d6f80-1a3c-4e5a-9b7d-c0e2f4a6b8d0";
/// A container of org_demo_b.
const ORG_B_VIDEO: &str = "cnt_8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f";
/// A well-formed id no organization has.
const ABSENT: &str = "cnt_00000000-0000-4000-8000-0000000000a1";

/// 2030-01-01T00:00:00Z.
const MIDNIGHT: i64 = 1_893_456_000;

/// Key ids of the keys these tests add to the demo keys. The demo keys'
/// standard-tier key (`reader`) cannot write, so `WRITER` is a standard-tier
/// key with `content:write`; the `TINY_*` keys use the tier `tiny`, which
/// each test defines with the small limits it needs.
const WRITER: &str = "WR1TER0STANDARD0";
const TINY_A1: &str = "T1NYA0KEY0000001";
const TINY_A2: &str = "T1NYA0KEY0000002";
const TINY_B1: &str = "T1NYB0KEY0000003";

const P: &str = "layers_gateway_";

/// The whole key for one of the key ids above.
fn key(key_id: &str) -> String {
    format!("lp_test_{key_id}_{:x<43}", format!("shapingTests{key_id}"))
}

/// The demo keys plus this file's keys.
fn keys() -> KeyStore {
    let rw = ["content:read", "content:write"];
    let mut text = DEMO_KEYS_FILE.to_owned();
    for (id, org, tier) in [
        (WRITER, "org_demo_a", "standard"),
        (TINY_A1, "org_demo_a", "tiny"),
        (TINY_A2, "org_demo_a", "tiny"),
        (TINY_B1, "org_demo_b", "tiny"),
    ] {
        text.push('\n');
        text.push_str(&keys_file_entry(&key(id), org, &rw, tier).expect("a well-formed key"));
    }
    KeyStore::parse(&text).expect("valid keys file")
}

/// The demo data, authenticating the same keys as the gateway.
fn sim() -> Simulator {
    Simulator::from_json(DEMO_CONTAINERS_JSON, Arc::new(keys())).expect("demo data")
}

/// The in-process gateway (no sockets: usable under the paused clock) with
/// lines added to `[origin]` and extra TOML sections.
fn gateway(sim: &Simulator, origin_extra: &str, extra: &str) -> Gateway {
    let cfg = test_config_with("http://127.0.0.1:1", origin_extra, extra);
    Gateway::new(cfg, keys(), Arc::new(SimulatorUpstream(sim.clone())))
}

/// A `[shaping.tiers.<name>]` table.
fn tier(name: &str, read: u32, write: u32, long: u32, daily: u64, extra: &str) -> String {
    format!(
        "[shaping.tiers.{name}]\nread_light_per_min = {read}\nwrite_light_per_min = {write}\n\
         long_running_per_min = {long}\ndaily_writes = {daily}\n{extra}\n"
    )
}

fn content(id: &str) -> String {
    format!("/v1/content/{id}")
}

/// A distinct, well-formed container id nobody has.
fn cold(i: u64) -> String {
    format!("cnt_00000000-0000-4000-8000-{i:012}")
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn header_u64(r: &Reply, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a whole number: {e}"))
}

// ---------------------------------------------------------------------------
// Requests of each endpoint class.
// ---------------------------------------------------------------------------

/// A request of one endpoint class that the simulator answers cheaply.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `GET /v1/content/:id` (read-light; a cache hit after the first).
    Read(&'static str),
    /// `PATCH /v1/content/:id` with a caption (write-light).
    Patch(&'static str),
    /// `POST /v1/content` (long-running).
    Create,
}

impl Op {
    fn class(self) -> &'static str {
        match self {
            Op::Read(_) => "read-light",
            Op::Patch(_) => "write-light",
            Op::Create => "long-running",
        }
    }

    /// The origin's status when the request is admitted.
    fn ok(self) -> u16 {
        match self {
            Op::Create => 201,
            _ => 200,
        }
    }
}

async fn send(gw: &Gateway, key: &str, op: Op) -> Reply {
    let json = ("content-type", "application/json");
    match op {
        Op::Read(id) => call_get(gw, &content(id), key).await,
        Op::Patch(id) => {
            let body = Bytes::from_static(br#"{"caption":"Shaped."}"#);
            call(gw, Method::PATCH, &content(id), &[("x-api-key", key), json], body).await
        }
        Op::Create => {
            let body = Bytes::from_static(br#"{"projectId":"prj_shaping","format":"video"}"#);
            call(gw, Method::POST, "/v1/content", &[("x-api-key", key), json], body).await
        }
    }
}

/// Sends `op` until it is refused; returns how many were admitted first.
/// Bounded: panics if more than `limit` are admitted.
async fn admitted_until_refused(gw: &Gateway, key: &str, op: Op, limit: u32) -> u32 {
    for admitted in 0..=limit {
        let r = send(gw, key, op).await;
        if r.status == 429 {
            assert_rate_limited(&r, op.class(), limit);
            return admitted;
        }
        assert_eq!(r.status.as_u16(), op.ok(), "{op:?}: {}", text(&r));
        assert_eq!(r.header("x-ratelimit-endpoint-class"), Some(op.class()));
    }
    panic!("{op:?}: more than {limit} admitted at once")
}

/// Asserts a per-minute `RATE_LIMITED` refusal; returns its `Retry-After`.
fn assert_rate_limited(r: &Reply, class: &str, limit: u32) -> u64 {
    r.assert_error(429, "RATE_LIMITED");
    let retry = header_u64(r, "retry-after");
    assert!(retry >= 1, "Retry-After is at least 1 s");
    assert_eq!(
        r.json()["error"]["details"],
        json!({"class": class, "limit": limit, "windowSeconds": 60, "retryAfterSeconds": retry}),
    );
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some(class));
    assert_eq!(header_u64(r, "x-ratelimit-limit"), u64::from(limit));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    retry
}

/// Asserts a daily-cap `RATE_LIMITED` refusal; returns its `Retry-After`.
fn assert_daily_limited(r: &Reply, class: &str, cap: u64) -> u64 {
    r.assert_error(429, "RATE_LIMITED");
    let retry = header_u64(r, "retry-after");
    assert_eq!(
        r.json()["error"]["details"],
        json!({"class": "daily-writes", "limit": cap, "windowSeconds": 86_400, "retryAfterSeconds": retry}),
    );
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some(class));
    retry
}

/// A full minute's allowance at t = 0, half of it 30 s later (GCRA: the
/// budget comes back continuously), and the full allowance after a minute.
async fn assert_admits_exactly(gw: &Gateway, key: &str, op: Op, limit: u32) {
    let n = admitted_until_refused(gw, key, op, limit).await;
    assert_eq!(n, limit, "{op:?} at t = 0");
    advance(Duration::from_secs(30)).await;
    let n = admitted_until_refused(gw, key, op, limit).await;
    assert_eq!(n, limit / 2, "{op:?} 30 s later");
    advance(Duration::from_secs(60)).await;
    let n = admitted_until_refused(gw, key, op, limit).await;
    assert_eq!(n, limit, "{op:?} a minute after that");
    let decisions = |result: &str| {
        metric(
            gw,
            "rate_limit_decisions_total",
            &[("class", op.class()), ("result", result)],
        )
    };
    assert_eq!(decisions("admitted"), f64::from(2 * limit + limit / 2));
    assert_eq!(decisions("limited"), 3.0);
}

// ---------------------------------------------------------------------------
// Metrics and small helpers.
// ---------------------------------------------------------------------------

/// The sum of the samples of `layers_gateway_<name>` whose labels include
/// `labels` (0 when none: an unused labelled counter has no sample).
fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = String::from_utf8(gw.state().metrics.render()).expect("UTF-8 exposition");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads the exposition");
    let full = format!("{P}{name}");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == full && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{full}: unexpected sample {other:?}"),
        })
        .sum()
}

/// Yields to the gateway's tasks until `cond` holds (bounded; time does not
/// move while this task stays runnable).
async fn settle(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// A GET on its own task; returns the reply and how long it took.
fn spawn_get(gw: &Gateway, path: String, key: String) -> JoinHandle<(Reply, Duration)> {
    let gw = gw.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let r = call_get(&gw, &path, &key).await;
        (r, started.elapsed())
    })
}

/// A GET that must be answered without any time passing.
async fn get_at_once(gw: &Gateway, path: &str, key: &str) -> Reply {
    let started = Instant::now();
    let r = call_get(gw, path, key).await;
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "{path}: answered without waiting"
    );
    r
}

/// Delivers a correctly signed webhook to the in-process gateway.
async fn deliver(gw: &Gateway, event_type: &str, data: Value) {
    static N: AtomicU64 = AtomicU64::new(1);
    let id = format!("evt_01SHAPING{:016}", N.fetch_add(1, Ordering::Relaxed));
    let body = json!({ "id": id, "type": event_type, "data": data }).to_string();
    let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    headers.push(("x-layers-event-id".into(), id));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(gw, Method::POST, "/webhooks/layers", &h, Bytes::from(body)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({"status": "applied"}));
}

// ---------------------------------------------------------------------------
// Exact admits per tier and endpoint class.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn standard_tier_admits_exactly_120_reads_a_minute_and_cache_hits_count() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &reader_key(), Op::Read(VIDEO), 120).await;
    assert_eq!(
        sim.container_gets(),
        1,
        "every admitted read after the first was a cache hit, and each one counted"
    );
}

#[tokio::test(start_paused = true)]
async fn standard_tier_admits_exactly_60_write_light_requests_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &key(WRITER), Op::Patch(VIDEO), 60).await;
}

#[tokio::test(start_paused = true)]
async fn standard_tier_admits_exactly_20_long_running_requests_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &key(WRITER), Op::Create, 20).await;
}

#[tokio::test(start_paused = true)]
async fn pilot_tier_admits_exactly_1200_reads_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &admin_key(), Op::Read(VIDEO), 1_200).await;
}

#[tokio::test(start_paused = true)]
async fn pilot_tier_admits_exactly_600_write_light_requests_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &admin_key(), Op::Patch(VIDEO), 600).await;
}

#[tokio::test(start_paused = true)]
async fn pilot_tier_admits_exactly_60_long_running_requests_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &admin_key(), Op::Create, 60).await;
}

#[tokio::test(start_paused = true)]
async fn partner_tier_admits_exactly_6000_reads_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &org_b_key(), Op::Read(ORG_B_VIDEO), 6_000).await;
}

#[tokio::test(start_paused = true)]
async fn partner_tier_admits_exactly_3000_write_light_requests_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &org_b_key(), Op::Patch(ORG_B_VIDEO), 3_000).await;
}

#[tokio::test(start_paused = true)]
async fn partner_tier_admits_exactly_300_long_running_requests_a_minute() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    assert_admits_exactly(&gw, &org_b_key(), Op::Create, 300).await;
}

#[tokio::test(start_paused = true)]
async fn routes_marked_long_running_share_that_class_and_other_mutations_are_write_light() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    let writer = key(WRITER);
    // Regenerate is long-running, like POST /v1/content: they share a budget.
    for _ in 0..10 {
        assert_eq!(send(&gw, &writer, Op::Create).await.status, 201);
    }
    let regen = format!("{}/regenerate", content(SLIDESHOW));
    for n in 0..10 {
        let r = call(&gw, Method::POST, &regen, &[("x-api-key", &writer)], Bytes::new()).await;
        assert_eq!(r.status, 200, "regenerate {n}: {}", text(&r));
        assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("long-running"));
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 9 - n);
    }
    let r = call(&gw, Method::POST, &regen, &[("x-api-key", &writer)], Bytes::new()).await;
    assert_rate_limited(&r, "long-running", 20);
    assert_rate_limited(&send(&gw, &writer, Op::Create).await, "long-running", 20);
    // A spent class leaves the others untouched.
    let r = send(&gw, &writer, Op::Patch(VIDEO)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("write-light"));
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 59);
    let r = call(
        &gw,
        Method::DELETE,
        &content(FIFTH_A),
        &[("x-api-key", &writer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("write-light"));
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 58);
    for method in [Method::GET, Method::HEAD] {
        let r = call(
            &gw,
            method.clone(),
            &content(VIDEO),
            &[("x-api-key", &writer)],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(
            r.header("x-ratelimit-endpoint-class"),
            Some("read-light"),
            "{method}"
        );
    }
    let r = call_get(&gw, "/v1/whoami", &writer).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        header_u64(&r, "x-ratelimit-remaining"),
        117,
        "GET and HEAD share read-light"
    );
}

// ---------------------------------------------------------------------------
// Bursts and Retry-After.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_burst_below_the_limit_caps_requests_at_once_but_not_the_sustained_rate() {
    let sim = sim();
    let extra = tier("standard", 120, 60, 20, 10_000, "read_light_burst = 10");
    let gw = gateway(&sim, "", &extra);
    let reader = reader_key();
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        header_u64(&r, "x-ratelimit-limit"),
        120,
        "the limit is still per minute"
    );
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 9, "but only 10 at once");
    assert_eq!(r.header("ratelimit-policy"), Some("\"read-light\";q=120;w=60"));
    // 10 at once, then refused: the next one is 0.5 s (60 s / 120) away.
    let n = admitted_until_refused(&gw, &reader, Op::Read(VIDEO), 120).await;
    assert_eq!(n, 9, "the burst is 10");
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_eq!(assert_rate_limited(&r, "read-light", 120), 1);
    advance(Duration::from_millis(500)).await;
    let n = admitted_until_refused(&gw, &reader, Op::Read(VIDEO), 120).await;
    assert_eq!(n, 1, "one more every 0.5 s");
    // A client pacing itself at the rate is never refused.
    for i in 0..60 {
        advance(Duration::from_millis(500)).await;
        let r = call_get(&gw, &content(VIDEO), &reader).await;
        assert_eq!(r.status, 200, "paced request {i}: {}", text(&r));
    }
    // Idle for a minute: the burst is back, and it is still 10.
    advance(Duration::from_secs(60)).await;
    let n = admitted_until_refused(&gw, &reader, Op::Read(VIDEO), 120).await;
    assert_eq!(n, 10);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_waits_exactly_retry_after_is_admitted_and_one_second_less_is_not() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    let writer = key(WRITER);
    // Standard long-running: 20 a minute, one every 3 s.
    assert_eq!(admitted_until_refused(&gw, &writer, Op::Create, 20).await, 20);
    let r = send(&gw, &writer, Op::Create).await;
    assert_eq!(assert_rate_limited(&r, "long-running", 20), 3);
    // Hammering on 429s does not push the recovery further out.
    for _ in 0..10 {
        let r = send(&gw, &writer, Op::Create).await;
        assert_eq!(assert_rate_limited(&r, "long-running", 20), 3);
    }
    advance(Duration::from_secs(2)).await;
    let r = send(&gw, &writer, Op::Create).await;
    assert_eq!(
        assert_rate_limited(&r, "long-running", 20),
        1,
        "one second short of Retry-After: still refused"
    );
    advance(Duration::from_secs(1)).await;
    let r = send(&gw, &writer, Op::Create).await;
    assert_eq!(r.status, 201, "exactly Retry-After later: {}", text(&r));
    let r = send(&gw, &writer, Op::Create).await;
    assert_eq!(assert_rate_limited(&r, "long-running", 20), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_rounded_up_to_whole_seconds() {
    let sim = sim();
    // 7 a minute: one every 8.57 s, so Retry-After must say 9, not 8.
    let gw = gateway(&sim, "", &tier("tiny", 7, 60, 20, 100, ""));
    let k = key(TINY_A1);
    assert_eq!(admitted_until_refused(&gw, &k, Op::Read(VIDEO), 7).await, 7);
    let r = call_get(&gw, &content(VIDEO), &k).await;
    assert_eq!(assert_rate_limited(&r, "read-light", 7), 9);
    assert_eq!(r.header("ratelimit-policy"), Some("\"read-light\";q=7;w=60"));
    advance(Duration::from_secs(8)).await;
    let r = call_get(&gw, &content(VIDEO), &k).await;
    assert_eq!(
        assert_rate_limited(&r, "read-light", 7),
        1,
        "0.57 s left rounds up to 1"
    );
    advance(Duration::from_secs(1)).await;
    let r = call_get(&gw, &content(VIDEO), &k).await;
    assert_eq!(r.status, 200, "{}", text(&r));
}

// ---------------------------------------------------------------------------
// Headers.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn rate_limit_headers_on_misses_hits_and_refusals() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    let reader = reader_key();
    let check = |r: &Reply, remaining: u64, reset: u64| {
        assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("read-light"));
        assert_eq!(header_u64(r, "x-ratelimit-limit"), 120);
        assert_eq!(header_u64(r, "x-ratelimit-remaining"), remaining);
        assert_eq!(header_u64(r, "x-ratelimit-reset"), reset);
        assert_eq!(r.header("ratelimit-policy"), Some("\"read-light\";q=120;w=60"));
        let want = format!("\"read-light\";r={remaining};t={reset}");
        assert_eq!(r.header("ratelimit"), Some(want.as_str()));
    };
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    check(&r, 119, 1);
    assert_eq!(r.header("retry-after"), None);
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    check(&r, 118, 1);
    // Reset: whole seconds until the full burst is back (3 x 0.5 s, rounded up).
    let asset = first_container(&sim).1;
    let r = call_get(&gw, &format!("{}/assets/{asset}", content(VIDEO)), &reader).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("HIT")));
    check(&r, 117, 2);
    // A proxied reply carries the gateway's headers, never the origin's as well.
    let r = call_get(&gw, "/v1/whoami", &reader).await;
    assert_eq!(r.status, 200);
    check(&r, 116, 2);
    assert_eq!(r.headers.get_all("x-ratelimit-endpoint-class").iter().count(), 1);
    assert_eq!(
        admitted_until_refused(&gw, &reader, Op::Read(VIDEO), 120).await,
        116
    );
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_rate_limited(&r, "read-light", 120);
    check(&r, 0, 60);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Some time later the numbers have moved on.
    advance(Duration::from_millis(10_250)).await;
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_eq!(r.status, 200);
    // 20 half-seconds came back (one spent now): debt 49.75 + 0.5 s.
    check(&r, 19, 51);
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_scopes_and_unknown_routes_still_name_the_endpoint_class() {
    let sim = sim();
    let gw = gateway(&sim, "", "");
    let class = |r: &Reply| r.header("x-ratelimit-endpoint-class").map(str::to_owned);
    let json = ("content-type", "application/json");
    let caption = || Bytes::from_static(br#"{"caption":"x"}"#);
    let create = || Bytes::from_static(br#"{"projectId":"p","format":"video"}"#);

    // 401: no key, or a key the gateway does not know.
    let r = call(&gw, Method::GET, &content(VIDEO), &[], Bytes::new()).await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(class(&r).as_deref(), Some("read-light"));
    let bogus = key("B0GVS0KEY0000000");
    let r = call(
        &gw,
        Method::PATCH,
        &content(VIDEO),
        &[("x-api-key", &bogus), json],
        caption(),
    )
    .await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(class(&r).as_deref(), Some("write-light"));
    let r = call(&gw, Method::POST, "/v1/content", &[json], create()).await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(class(&r).as_deref(), Some("long-running"));

    // 403: the reader may not write; the scope-less key may not read content.
    let reader = reader_key();
    let r = call(
        &gw,
        Method::PATCH,
        &content(VIDEO),
        &[("x-api-key", &reader), json],
        caption(),
    )
    .await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(class(&r).as_deref(), Some("write-light"));
    let r = call(
        &gw,
        Method::POST,
        "/v1/content",
        &[("x-api-key", &reader), json],
        create(),
    )
    .await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(class(&r).as_deref(), Some("long-running"));
    let r = call_get(&gw, &content(VIDEO), &no_scope_key()).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(class(&r).as_deref(), Some("read-light"));

    // 404s: not a route at all, a malformed id, a container nobody has.
    let r = call_get(&gw, "/v2/content", &reader).await;
    assert_eq!(r.status, 404);
    assert_eq!(class(&r).as_deref(), Some("read-light"));
    let r = call_get(&gw, "/v1/content/not-a-container-id", &reader).await;
    r.assert_error(404, "NOT_FOUND");
    assert_eq!(class(&r).as_deref(), Some("read-light"));
    assert!(
        r.header("x-ratelimit-remaining").is_some(),
        "an authenticated 404 is shaped"
    );
    let r = call_get(&gw, &content(ABSENT), &reader).await;
    r.assert_error(404, "NOT_FOUND");
    assert_eq!(class(&r).as_deref(), Some("read-light"));
    assert_eq!(r.headers.get_all("x-ratelimit-endpoint-class").iter().count(), 1);

    // Refused credentials and scopes spent nothing: this is the reader's
    // third shaped read (after the two 404s of /v1 routes), and the writer's
    // first write.
    let r = call_get(&gw, &content(VIDEO), &reader).await;
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 117);
    let r = send(&gw, &key(WRITER), Op::Patch(VIDEO)).await;
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 59);
}

// ---------------------------------------------------------------------------
// The daily write cap.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_daily_write_cap_resets_at_midnight_utc() {
    let sim = sim();
    let cfg = test_config_with("http://127.0.0.1:1", "", &tier("tiny", 120, 60, 20, 5, ""));
    let upstream = Arc::new(SimulatorUpstream(sim.clone()));
    // 23:59:00 UTC on 2029-12-31.
    let gw = Gateway::with_clock(cfg, keys(), upstream, UnixClock::starting_at(MIDNIGHT - 60));
    let k = key(TINY_A1);
    // Both write classes count: 3 write-light and 2 long-running.
    for op in [
        Op::Patch(VIDEO),
        Op::Create,
        Op::Patch(VIDEO),
        Op::Create,
        Op::Patch(VIDEO),
    ] {
        let r = send(&gw, &k, op).await;
        assert_eq!(r.status.as_u16(), op.ok(), "{op:?}: {}", text(&r));
    }
    let r = send(&gw, &k, Op::Patch(VIDEO)).await;
    assert_eq!(assert_daily_limited(&r, "write-light", 5), 60, "until 00:00 UTC");
    let r = send(&gw, &k, Op::Create).await;
    assert_eq!(assert_daily_limited(&r, "long-running", 5), 60);
    // Reads are not writes.
    assert_eq!(send(&gw, &k, Op::Read(VIDEO)).await.status, 200);
    advance(Duration::from_secs(59)).await;
    let r = send(&gw, &k, Op::Patch(VIDEO)).await;
    assert_eq!(assert_daily_limited(&r, "write-light", 5), 1, "23:59:59");
    advance(Duration::from_secs(1)).await;
    for n in 0..5 {
        let r = send(&gw, &k, Op::Patch(VIDEO)).await;
        assert_eq!(r.status, 200, "write {n} of the new day: {}", text(&r));
    }
    let r = send(&gw, &k, Op::Patch(VIDEO)).await;
    assert_eq!(assert_daily_limited(&r, "write-light", 5), 86_400);
    let daily = |class| {
        metric(
            &gw,
            "rate_limit_decisions_total",
            &[("class", class), ("result", "daily_cap")],
        )
    };
    assert_eq!((daily("write-light"), daily("long-running")), (3.0, 1.0));
}

#[tokio::test(start_paused = true)]
async fn a_daily_cap_refusal_carries_the_rate_limit_headers_like_any_429() {
    let sim = sim();
    let gw = gateway(&sim, "", &tier("tiny", 120, 60, 20, 1, ""));
    let k = key(TINY_A1);
    assert_eq!(send(&gw, &k, Op::Patch(VIDEO)).await.status, 200);
    let r = send(&gw, &k, Op::Patch(VIDEO)).await;
    assert_daily_limited(&r, "write-light", 1);
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
    ] {
        assert!(
            r.header(name).is_some(),
            "{name} missing on a daily-cap 429: {:?}",
            r.headers
        );
    }
}

#[tokio::test(start_paused = true)]
async fn keys_of_one_org_have_their_own_per_minute_limits_but_share_the_daily_cap() {
    let sim = sim();
    let gw = gateway(&sim, "", &tier("tiny", 120, 3, 20, 5, ""));
    let (a1, a2, b1) = (key(TINY_A1), key(TINY_A2), key(TINY_B1));
    // a1 spends its per-minute write-light budget (3)...
    assert_eq!(admitted_until_refused(&gw, &a1, Op::Patch(VIDEO), 3).await, 3);
    // ...a2 of the same org still has its own; a1's refusal did not count
    // toward the day, so exactly 5 - 3 = 2 writes are left for the org.
    for n in 0..2 {
        let r = send(&gw, &a2, Op::Patch(SLIDESHOW)).await;
        assert_eq!(r.status, 200, "a2 write {n}: {}", text(&r));
    }
    let r = send(&gw, &a2, Op::Patch(SLIDESHOW)).await;
    assert_daily_limited(&r, "write-light", 5);
    // Another org's key is untouched by all of it.
    assert_eq!(
        admitted_until_refused(&gw, &b1, Op::Patch(ORG_B_VIDEO), 3).await,
        3
    );
    // A minute later a1's per-minute budget is back, but its org's day is spent.
    advance(Duration::from_secs(60)).await;
    let r = send(&gw, &a1, Op::Patch(VIDEO)).await;
    assert_daily_limited(&r, "write-light", 5);
    assert_eq!(
        send(&gw, &a1, Op::Read(VIDEO)).await.status,
        200,
        "reads still work"
    );
    // Org B wrote 3 of its 5.
    for _ in 0..2 {
        assert_eq!(send(&gw, &b1, Op::Patch(ORG_B_VIDEO)).await.status, 200);
    }
    assert_daily_limited(&send(&gw, &b1, Op::Patch(ORG_B_VIDEO)).await, "write-light", 5);
}

#[tokio::test(start_paused = true)]
async fn one_key_spending_its_reads_leaves_other_keys_and_orgs_alone() {
    let sim = sim();
    let gw = gateway(&sim, "", &tier("tiny", 5, 60, 20, 100, ""));
    let (a1, a2, b1) = (key(TINY_A1), key(TINY_A2), key(TINY_B1));
    assert_eq!(admitted_until_refused(&gw, &a1, Op::Read(VIDEO), 5).await, 5);
    assert_eq!(admitted_until_refused(&gw, &a2, Op::Read(VIDEO), 5).await, 5);
    assert_eq!(
        admitted_until_refused(&gw, &b1, Op::Read(ORG_B_VIDEO), 5).await,
        5
    );
    // The pilot key of org A has a tier of its own, untouched too.
    let r = call_get(&gw, &content(VIDEO), &admin_key()).await;
    assert_eq!(r.status, 200);
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 1_199);
}

// ---------------------------------------------------------------------------
// Origin protection: in-flight caps and the bounded queue.
// ---------------------------------------------------------------------------

const GUARD: &str = "max_inflight = 2\nmax_inflight_per_org = 1\nqueue_max = 1\nqueue_deadline_ms = 200";

#[tokio::test(start_paused = true)]
async fn past_the_origin_caps_misses_queue_until_the_deadline_while_hits_and_other_orgs_pass() {
    let sim = sim();
    let gw = gateway(&sim, GUARD, "");
    let admin = admin_key();
    // Cached before the origin stalls.
    assert_eq!(
        call_get(&gw, &content(VIDEO), &admin).await.x_cache(),
        Some("MISS")
    );
    let gate = sim.hold();
    // A1 takes org A's only origin slot and hangs at the origin.
    let a1 = spawn_get(&gw, content(SLIDESHOW), admin.clone());
    settle("A1 reached the origin", || sim.container_gets() == 2).await;
    assert_eq!(metric(&gw, "origin_inflight", &[]), 1.0);
    // A2 (another cold container: nothing to coalesce with) waits in the queue.
    let a2 = spawn_get(&gw, content(LEGACY), admin.clone());
    settle("A2 queued", || gw.state().origin.guard().queued() == 1).await;
    // A3 finds the queue full: 503 at once.
    let r = get_at_once(&gw, &content(FOURTH_A), &admin).await;
    r.assert_error(503, "OVERLOADED");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("read-light"));
    // Org A's cache hits never wait for origin capacity.
    let r = get_at_once(&gw, &content(VIDEO), &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("HIT")));
    // Org B's miss gets the free global slot at once and completes (the
    // origin stops holding new requests; A1 stays held).
    drop(sim.hold());
    let r = get_at_once(&gw, &content(ORG_B_VIDEO), &org_b_key()).await;
    assert_eq!(
        (r.status.as_u16(), r.x_cache()),
        (200, Some("MISS")),
        "{}",
        text(&r)
    );
    // A2's deadline passes: 503 with Retry-After, having waited 200 ms.
    let (r, waited) = a2.await.unwrap();
    r.assert_error(503, "OVERLOADED");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(1),
        "A2 waited {waited:?}; the queue deadline is 200 ms"
    );
    for shed in [LEGACY, FOURTH_A] {
        assert_eq!(
            sim.request_count("GET", &content(shed)),
            0,
            "shed before the origin"
        );
    }
    gate.release();
    let (r, _) = a1.await.unwrap();
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    // Capacity is back.
    let r = get_at_once(&gw, &content(LEGACY), &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    let admissions = |result| metric(&gw, "origin_admissions_total", &[("result", result)]);
    assert_eq!(admissions("immediate"), 4.0, "VIDEO, A1, org B, LEGACY");
    assert_eq!(admissions("queue_full"), 1.0);
    assert_eq!(admissions("deadline"), 1.0);
    assert_eq!(admissions("queued"), 0.0);
    assert_eq!(metric(&gw, "origin_inflight", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_queued_miss_is_served_as_soon_as_a_slot_frees() {
    let sim = sim();
    let guard = GUARD.replace("queue_deadline_ms = 200", "queue_deadline_ms = 2000");
    let gw = gateway(&sim, &guard, "");
    let admin = admin_key();
    let gate = sim.hold();
    let a1 = spawn_get(&gw, content(SLIDESHOW), admin.clone());
    settle("A1 reached the origin", || sim.container_gets() == 1).await;
    let a2 = spawn_get(&gw, content(LEGACY), admin.clone());
    settle("A2 queued", || gw.state().origin.guard().queued() == 1).await;
    gate.release();
    let (r1, _) = a1.await.unwrap();
    let (r2, waited) = a2.await.unwrap();
    assert_eq!((r1.status.as_u16(), r1.x_cache()), (200, Some("MISS")));
    assert_eq!(
        (r2.status.as_u16(), r2.x_cache()),
        (200, Some("MISS")),
        "{}",
        text(&r2)
    );
    assert_eq!(waited, Duration::ZERO, "admitted the moment A1 finished");
    let admissions = |result| metric(&gw, "origin_admissions_total", &[("result", result)]);
    assert_eq!((admissions("immediate"), admissions("queued")), (1.0, 1.0));
    assert_eq!(admissions("deadline") + admissions("queue_full"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_origin_queued_gauge_counts_waiting_requests() {
    let sim = sim();
    let gw = gateway(&sim, GUARD, "");
    let admin = admin_key();
    let gate = sim.hold();
    let a1 = spawn_get(&gw, content(SLIDESHOW), admin.clone());
    settle("A1 reached the origin", || sim.container_gets() == 1).await;
    let a2 = spawn_get(&gw, content(LEGACY), admin.clone());
    settle("A2 queued", || gw.state().origin.guard().queued() == 1).await;
    assert_eq!(metric(&gw, "origin_queued", &[]), 1.0, "one request is waiting");
    let _ = a2.await;
    assert_eq!(metric(&gw, "origin_queued", &[]), 0.0);
    gate.release();
    let _ = a1.await;
}

// ---------------------------------------------------------------------------
// Circuit breaker.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_consecutive_failures_fails_fast_and_half_opens_to_probe() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 3\nbreaker_open_ms = 3000", "");
    let admin = admin_key();
    let gets = |id: &str| sim.request_count("GET", &content(id));
    let state = |gw: &Gateway| metric(gw, "origin_breaker_state", &[]);
    assert_eq!(call_get(&gw, &content(VIDEO), &admin).await.status, 200);
    sim.set_failure(Some(FailureMode::Status(500)));
    for _ in 0..3 {
        call_get(&gw, &content(SLIDESHOW), &admin)
            .await
            .assert_error(500, "INTERNAL");
    }
    assert_eq!(gets(SLIDESHOW), 3);
    assert_eq!(state(&gw), 1.0, "open");
    // Open: origin-bound requests fail fast without reaching the origin.
    let r = get_at_once(&gw, &content(SLIDESHOW), &admin).await;
    r.assert_error(503, "OVERLOADED");
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(gets(SLIDESHOW), 3, "the origin was not called");
    get_at_once(&gw, &content(LEGACY), &admin)
        .await
        .assert_error(503, "OVERLOADED");
    assert_eq!(gets(LEGACY), 0);
    get_at_once(&gw, "/v1/whoami", &admin)
        .await
        .assert_error(503, "OVERLOADED");
    assert_eq!(sim.request_count("GET", "/v1/whoami"), 0);
    // Cached content is still served.
    let r = get_at_once(&gw, &content(VIDEO), &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("HIT")));
    assert_eq!(metric(&gw, "origin_breaker_rejections_total", &[]), 3.0);
    advance(Duration::from_secs(2)).await;
    let r = call_get(&gw, &content(SLIDESHOW), &admin).await;
    r.assert_error(503, "OVERLOADED");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Half-open after 3 s: one probe reaches the origin; it fails, so the
    // breaker opens again for another 3 s.
    advance(Duration::from_secs(1)).await;
    call_get(&gw, &content(SLIDESHOW), &admin)
        .await
        .assert_error(500, "INTERNAL");
    assert_eq!(gets(SLIDESHOW), 4, "the probe reached the origin");
    let r = call_get(&gw, &content(SLIDESHOW), &admin).await;
    r.assert_error(503, "OVERLOADED");
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(gets(SLIDESHOW), 4);
    assert_eq!(state(&gw), 1.0);
    // The origin recovers; the next probe succeeds and closes the breaker.
    sim.set_failure(None);
    advance(Duration::from_secs(3)).await;
    let r = call_get(&gw, &content(SLIDESHOW), &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    assert_eq!(state(&gw), 0.0, "closed");
    for path in [content(LEGACY), "/v1/whoami".to_owned()] {
        assert_eq!(call_get(&gw, &path, &admin).await.status, 200, "{path}");
    }
    assert_eq!(metric(&gw, "origin_breaker_rejections_total", &[]), 5.0);
}

#[tokio::test(start_paused = true)]
async fn only_consecutive_failures_open_the_breaker_and_timeouts_are_failures() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 3\nbreaker_open_ms = 3000", "");
    let admin = admin_key();
    let fail = |mode| sim.set_failure(Some(mode));
    // Two failures, a success, two failures: never three in a row.
    for round in 0..3 {
        fail(FailureMode::Status(500));
        for _ in 0..2 {
            call_get(&gw, &content(SLIDESHOW), &admin)
                .await
                .assert_error(500, "INTERNAL");
        }
        sim.set_failure(None);
        let r = call_get(&gw, "/v1/whoami", &admin).await;
        assert_eq!(r.status, 200, "round {round}: the breaker stays closed");
    }
    assert_eq!(sim.request_count("GET", &content(SLIDESHOW)), 6);
    // Timeouts (the test config's origin timeout is 5 s) are failures too.
    fail(FailureMode::Delay(Duration::from_secs(30)));
    for _ in 0..3 {
        call_get(&gw, &content(SLIDESHOW), &admin)
            .await
            .assert_error(504, "UPSTREAM_TIMEOUT");
    }
    let r = get_at_once(&gw, &content(SLIDESHOW), &admin).await;
    r.assert_error(503, "OVERLOADED");
    assert_eq!(sim.request_count("GET", &content(SLIDESHOW)), 9);
    assert_eq!(metric(&gw, "origin_breaker_state", &[]), 1.0);
}

#[tokio::test(start_paused = true)]
async fn origin_4xx_answers_never_open_the_breaker() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 2", "");
    for n in 1..=6 {
        let r = call_get(&gw, &content(ABSENT), &admin_key()).await;
        r.assert_error(404, "NOT_FOUND");
        assert_eq!(sim.request_count("GET", &content(ABSENT)), n);
        // Past the remembered 404, so each read reaches the origin.
        advance(Duration::from_secs(6)).await;
    }
    assert_eq!(metric(&gw, "origin_breaker_state", &[]), 0.0);
    assert_eq!(metric(&gw, "origin_breaker_rejections_total", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_state_gauge_turns_half_open_when_the_open_period_ends() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 1\nbreaker_open_ms = 1000", "");
    sim.set_failure(Some(FailureMode::Status(500)));
    call_get(&gw, &content(SLIDESHOW), &admin_key())
        .await
        .assert_error(500, "INTERNAL");
    assert_eq!(metric(&gw, "origin_breaker_state", &[]), 1.0);
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        gw.state().origin.breaker().state_code(),
        2,
        "the breaker is half-open"
    );
    assert_eq!(
        metric(&gw, "origin_breaker_state", &[]),
        2.0,
        "a scrape must say so too"
    );
}

// ---------------------------------------------------------------------------
// Retries and the retry budget.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn retries_after_connection_resets_stay_within_the_retry_budget() {
    // Reserve: retry_min_per_sec (1) x the 10 s window = 10 retries.
    let h = Harness::with_origin(sim(), "retry_min_per_sec = 1\nbreaker_failures = 100000", "").await;
    let admin = admin_key();
    assert_eq!(h.client.get("/v1/whoami", &admin).await.status, 200);
    assert!(h.gateway().is_ready(), "no readiness probes from here on");
    let retries = |result| metric(h.gateway(), "origin_retries_total", &[("result", result)]);
    let (sent0, refused0) = (retries("sent"), retries("budget_exhausted"));
    h.sim.set_failure(Some(FailureMode::ResetConnection));
    const N: u64 = 100;
    for i in 0..N {
        let r = h.client.get(&content(&cold(i)), &admin).await;
        r.assert_error(502, "UPSTREAM_ERROR");
    }
    let per_request: Vec<u64> = (0..N)
        .map(|i| h.sim.request_count("GET", &content(&cold(i))))
        .collect();
    assert!(
        per_request.iter().all(|n| (1..=2).contains(n)),
        "each request is sent once, retried at most once: {per_request:?}"
    );
    let origin: u64 = per_request.iter().sum();
    let sent = (retries("sent") - sent0) as u64;
    let refused = (retries("budget_exhausted") - refused0) as u64;
    assert_eq!(
        origin,
        N + sent,
        "every retry counted in origin_retries_total{{result=\"sent\"}}"
    );
    assert_eq!(
        sent + refused,
        N,
        "every reset was either retried or refused by the budget"
    );
    assert!(
        origin as f64 <= N as f64 * 1.1 + 10.0,
        "{origin} origin requests for {N} partner requests: over 10% + the reserve"
    );
    assert!(sent >= 10, "the reserve allows retries at all ({sent} sent)");
    h.stop().await;
}

#[tokio::test]
async fn only_body_less_idempotent_requests_are_retried_after_a_reset() {
    let h = Harness::with_origin(sim(), "breaker_failures = 100000", "").await;
    let admin = admin_key();
    assert_eq!(h.client.get("/v1/whoami", &admin).await.status, 200);
    h.sim.set_failure(Some(FailureMode::ResetConnection));
    let json = ("content-type", "application/json");
    // A POST without Idempotency-Key is never sent twice.
    for n in 1..=3 {
        let body = Bytes::from_static(br#"{"projectId":"prj_retry","format":"video"}"#);
        let r = h
            .client
            .send(Method::POST, "/v1/content", &[("x-api-key", &admin), json], body)
            .await;
        r.assert_error(502, "UPSTREAM_ERROR");
        assert_eq!(h.sim.request_count("POST", "/v1/content"), n);
    }
    // Nor is a PATCH.
    let body = Bytes::from_static(br#"{"caption":"x"}"#);
    let r = h
        .client
        .send(
            Method::PATCH,
            &content(VIDEO),
            &[("x-api-key", &admin), json],
            body,
        )
        .await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(h.sim.request_count("PATCH", &content(VIDEO)), 1);
    // A body-less POST without Idempotency-Key: once.
    let regen = |id: &str| format!("{}/regenerate", content(id));
    let r = h
        .client
        .send(
            Method::POST,
            &regen(SLIDESHOW),
            &[("x-api-key", &admin)],
            Bytes::new(),
        )
        .await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(h.sim.request_count("POST", &regen(SLIDESHOW)), 1);
    // With an Idempotency-Key (the origin dedupes it): retried once.
    let r = h
        .client
        .send(
            Method::POST,
            &regen(LEGACY),
            &[("x-api-key", &admin), ("idempotency-key", "idem-shaping-1")],
            Bytes::new(),
        )
        .await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(h.sim.request_count("POST", &regen(LEGACY)), 2);
    // A GET: retried once.
    let r = h.client.get(&content(cold(7).as_str()), &admin).await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(h.sim.request_count("GET", &content(&cold(7))), 2);
    let retries = |result| metric(h.gateway(), "origin_retries_total", &[("result", result)]);
    assert_eq!((retries("sent"), retries("budget_exhausted")), (2.0, 0.0));
    h.stop().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_within_the_retry_budget() {
    // An origin port nothing listens on (loopback only).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let cfg = test_config_with(
        &format!("http://{addr}"),
        "retry_min_per_sec = 1\nbreaker_failures = 100000",
        "",
    );
    let upstream = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    // No App: no readiness probe competes for the budget.
    let gw = Gateway::new(cfg, keys(), upstream);
    const N: u64 = 30;
    for i in 0..N {
        call_get(&gw, &content(&cold(i)), &admin_key())
            .await
            .assert_error(502, "UPSTREAM_ERROR");
    }
    let retries = |result| metric(&gw, "origin_retries_total", &[("result", result)]) as u64;
    let (sent, refused) = (retries("sent"), retries("budget_exhausted"));
    assert_eq!(
        sent + refused,
        N,
        "every refused connection was retried or refused by the budget"
    );
    assert!(
        (10..=N / 10 + 10).contains(&sent),
        "{sent} retries for {N} requests: the reserve (10) plus at most 10%"
    );
}

#[tokio::test(start_paused = true)]
async fn origin_errors_and_timeouts_are_not_retried() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 100", "");
    let admin = admin_key();
    sim.set_failure(Some(FailureMode::Status(503)));
    call_get(&gw, &content(SLIDESHOW), &admin)
        .await
        .assert_error(503, "INTERNAL");
    assert_eq!(sim.request_count("GET", &content(SLIDESHOW)), 1);
    let r = call_get(&gw, "/v1/whoami", &admin).await;
    assert_eq!(
        r.status, 503,
        "a proxied route passes the origin's status through"
    );
    assert_eq!(sim.request_count("GET", "/v1/whoami"), 1);
    // The test config's origin timeout is 5 s.
    sim.set_failure(Some(FailureMode::Delay(Duration::from_secs(30))));
    call_get(&gw, &content(LEGACY), &admin)
        .await
        .assert_error(504, "UPSTREAM_TIMEOUT");
    assert_eq!(sim.request_count("GET", &content(LEGACY)), 1);
    assert_eq!(metric(&gw, "origin_retries_total", &[]), 0.0);
}

// ---------------------------------------------------------------------------
// Stale-if-error.
// ---------------------------------------------------------------------------

const STALE: &str = "[cache]\nttl_secs = 5\nstale_if_error_secs = 60\n";

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_served_stale_while_the_origin_fails_within_the_window() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 100", STALE);
    let admin = admin_key();
    let fresh = call_get(&gw, &content(VIDEO), &admin).await;
    assert_eq!(fresh.x_cache(), Some("MISS"));
    let asset = first_container(&sim).1;
    let asset_path = format!("{}/assets/{asset}", content(VIDEO));
    let fresh_asset = call_get(&gw, &asset_path, &admin).await;
    assert_eq!(fresh_asset.x_cache(), Some("HIT"));
    advance(Duration::from_secs(6)).await;
    sim.set_failure(Some(FailureMode::Status(500)));
    let r = call_get(&gw, &content(VIDEO), &admin).await;
    assert_eq!(
        (r.status.as_u16(), r.x_cache()),
        (200, Some("STALE")),
        "{}",
        text(&r)
    );
    assert_eq!(r.body, fresh.body);
    assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("read-light"));
    assert!(r.header("x-ratelimit-remaining").is_some());
    assert_eq!(
        sim.request_count("GET", &content(VIDEO)),
        2,
        "the origin was tried first"
    );
    let r = call_get(&gw, &asset_path, &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("STALE")));
    assert_eq!(r.body, fresh_asset.body);
    // An origin that times out counts as failing too.
    sim.set_failure(Some(FailureMode::Delay(Duration::from_secs(30))));
    let r = call_get(&gw, &content(VIDEO), &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("STALE")));
    assert_eq!(metric(&gw, "cache_lookups_total", &[("result", "stale")]), 3.0);
    // Past TTL + window (5 + 60 s after the fill): no more stale.
    sim.set_failure(Some(FailureMode::Status(500)));
    advance(Duration::from_secs(55)).await;
    call_get(&gw, &content(VIDEO), &admin)
        .await
        .assert_error(500, "INTERNAL");
    assert_eq!(metric(&gw, "cache_lookups_total", &[("result", "stale")]), 3.0);
}

#[tokio::test(start_paused = true)]
async fn invalidated_purged_and_tombstoned_entries_are_never_served_stale() {
    let sim = sim();
    let extra = format!("{STALE}\n[invalidation]\ntombstone_secs = 20\n");
    let gw = gateway(&sim, "breaker_failures = 100", &extra);
    let admin = admin_key();
    for id in [VIDEO, SLIDESHOW, LEGACY, FOURTH_A] {
        assert_eq!(call_get(&gw, &content(id), &admin).await.x_cache(), Some("MISS"));
    }
    advance(Duration::from_secs(6)).await;
    sim.set_failure(Some(FailureMode::Status(500)));
    deliver(&gw, "content.updated", json!({ "id": VIDEO })).await;
    purge_in_process(&gw, &format!("container={SLIDESHOW}")).await;
    deliver(&gw, "content.deleted", json!({ "id": LEGACY, "assets": [] })).await;
    for id in [VIDEO, SLIDESHOW] {
        call_get(&gw, &content(id), &admin)
            .await
            .assert_error(500, "INTERNAL");
    }
    // Deleted: 404 while tombstoned, without asking the origin...
    let before = sim.request_count("GET", &content(LEGACY));
    call_get(&gw, &content(LEGACY), &admin)
        .await
        .assert_error(404, "NOT_FOUND");
    assert_eq!(sim.request_count("GET", &content(LEGACY)), before);
    // ...and never the old entry once the tombstone has lapsed.
    advance(Duration::from_secs(21)).await;
    call_get(&gw, &content(LEGACY), &admin)
        .await
        .assert_error(500, "INTERNAL");
    // The untouched one is served stale all along (5 + 60 s window).
    let r = call_get(&gw, &content(FOURTH_A), &admin).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("STALE")));
    // A purge of everything ends that too.
    purge_in_process(&gw, "all=true").await;
    call_get(&gw, &content(FOURTH_A), &admin)
        .await
        .assert_error(500, "INTERNAL");
}

#[tokio::test(start_paused = true)]
async fn an_entry_is_never_served_stale_past_its_expires_at() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 100", STALE);
    let admin = admin_key();
    let id = "cnt_e0e0e0e0-0000-4000-8000-0000000000b1";
    let uuid = &id[4..];
    // expiresAt 30 s from now (wall clock), well inside TTL + window (65 s).
    let expires = rfc3339(unix_now() + 30);
    sim.insert_container(
        "org_demo_a",
        json!({
            "id": id, "projectId": "prj_expiry", "status": "completed", "format": "video",
            "caption": "Signed URLs that expire.", "approvalStatus": "approved",
            "createdAt": "2026-11-20T09:15:00Z", "updatedAt": "2026-11-20T09:15:00Z",
            "assets": [{
                "assetId": "video-expiring", "kind": "video", "thumbnailUrl": null,
                "url": format!("https://cdn.layers.example/org_demo_a/{uuid}/video-expiring.mp4?sig=abc"),
                "expiresAt": expires
            }]
        }),
    );
    assert_eq!(call_get(&gw, &content(id), &admin).await.x_cache(), Some("MISS"));
    advance(Duration::from_secs(20)).await;
    sim.set_failure(Some(FailureMode::Status(500)));
    let r = call_get(&gw, &content(id), &admin).await;
    assert_eq!(
        (r.status.as_u16(), r.x_cache()),
        (200, Some("STALE")),
        "past the TTL, before expiresAt"
    );
    advance(Duration::from_secs(11)).await;
    call_get(&gw, &content(id), &admin)
        .await
        .assert_error(500, "INTERNAL");
}

#[tokio::test(start_paused = true)]
async fn stale_entries_are_still_served_once_the_failing_origin_opens_the_breaker() {
    let sim = sim();
    let gw = gateway(&sim, "breaker_failures = 2\nbreaker_open_ms = 30000", STALE);
    let admin = admin_key();
    assert_eq!(
        call_get(&gw, &content(VIDEO), &admin).await.x_cache(),
        Some("MISS")
    );
    advance(Duration::from_secs(6)).await;
    sim.set_failure(Some(FailureMode::Status(500)));
    for n in 0..4 {
        let r = call_get(&gw, &content(VIDEO), &admin).await;
        assert_eq!(
            (r.status.as_u16(), r.x_cache()),
            (200, Some("STALE")),
            "read {n} while the origin fails: {}",
            text(&r)
        );
    }
    assert_eq!(
        metric(&gw, "origin_breaker_state", &[]),
        1.0,
        "the breaker is open"
    );
}

// ---------------------------------------------------------------------------
// Metrics of the rate-limit decisions.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_rate_limit_decision_is_counted_by_class_and_result() {
    let sim = sim();
    let gw = gateway(&sim, "", &tier("tiny", 2, 2, 1, 4, ""));
    let (a1, a2) = (key(TINY_A1), key(TINY_A2));
    for _ in 0..3 {
        send(&gw, &a1, Op::Read(VIDEO)).await;
    }
    // Writes of org A today: 1 long-running, then 2 write-light...
    for _ in 0..2 {
        send(&gw, &a1, Op::Create).await;
    }
    for _ in 0..3 {
        send(&gw, &a1, Op::Patch(VIDEO)).await;
    }
    // ...and a second key's: the 4th of 4, then the cap.
    for _ in 0..2 {
        send(&gw, &a2, Op::Patch(SLIDESHOW)).await;
    }
    // Unauthenticated requests are no rate-limit decision.
    call(&gw, Method::GET, &content(VIDEO), &[], Bytes::new()).await;
    let d = |class, result| {
        metric(
            &gw,
            "rate_limit_decisions_total",
            &[("class", class), ("result", result)],
        )
    };
    assert_eq!(
        [
            d("read-light", "admitted"),
            d("read-light", "limited"),
            d("read-light", "daily_cap")
        ],
        [2.0, 1.0, 0.0]
    );
    assert_eq!(
        [
            d("write-light", "admitted"),
            d("write-light", "limited"),
            d("write-light", "daily_cap")
        ],
        [3.0, 1.0, 1.0]
    );
    assert_eq!(
        [
            d("long-running", "admitted"),
            d("long-running", "limited"),
            d("long-running", "daily_cap")
        ],
        [1.0, 1.0, 0.0]
    );
    assert_eq!(metric(&gw, "rate_limit_decisions_total", &[]), 10.0);
}

/// An RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SSZ`) of unix seconds.
fn rfc3339(unix: i64) -> String {
    layers_gateway::cache::time::format_rfc3339(unix)
}

/// Black-box round 74: the breaker was one for every organization. A
/// `standard` key of org A asked five times in a row for a container the
/// origin answers with a 500 (well under its rate limit) and opened it:
/// org B's cache misses failed `503 OVERLOADED` for the open period, again
/// and again. One tenant's failures now open only its own circuit; an
/// origin that fails two tenants in a row still fails fast for everyone.
#[tokio::test(start_paused = true)]
async fn one_organization_s_origin_failures_never_open_the_circuit_for_another() {
    use support::fence_fixtures::{self as ff, container};
    use support::scripted::{Answer, Scripted};
    let origin = Arc::new(Scripted::default());
    let poison = "/v1/content/cnt_11111111-2222-4333-8444-555555555555";
    origin.set(
        Method::GET,
        poison,
        Answer::Json(
            500,
            json!({"error": {"code": "INTERNAL", "message": "boom", "requestId": "req_x"}}),
        ),
    );
    origin.set(
        Method::GET,
        &ff::path(),
        Answer::Json(200, container(&["slide-1"], "c")),
    );
    let cfg = test_config_with(
        "http://127.0.0.1:1",
        "breaker_failures = 5\nbreaker_open_ms = 5000",
        "",
    );
    let upstream = Arc::new(support::scripted::ScriptedUpstream(origin.clone()));
    let gw = Gateway::with_clock(cfg, keys(), upstream, UnixClock::starting_at_millis(ff::T0_MS));
    let (a, b) = (reader_key(), org_b_key());
    for _ in 0..10 {
        let r = call_get(&gw, poison, &a).await;
        assert!(r.status == 500 || r.status == 503, "{}", r.status);
    }
    let r = call_get(&gw, poison, &a).await;
    r.assert_error(503, "OVERLOADED");
    assert_eq!(
        origin.count(Method::GET, poison),
        5,
        "org A's circuit opened after five"
    );
    // Org B's miss still reaches the origin.
    let r = call_get(&gw, &ff::path(), &b).await;
    assert_eq!(
        r.status,
        200,
        "org A's failures refused org B: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(metric(&gw, "origin_breakers_open", &[]), 1.0);
    assert_eq!(
        metric(&gw, "origin_breaker_state", &[]),
        0.0,
        "the origin's circuit stays closed"
    );

    // The origin failing both: five failures in a row from two tenants
    // open the shared circuit, and org B (four of its own) is refused too.
    advance(Duration::from_secs(6)).await;
    let uncached = |n: u32| format!("/v1/content/cnt_0000000{n}-2222-4333-8444-555555555555");
    let boom = || {
        Answer::Json(
            500,
            json!({"error": {"code": "INTERNAL", "message": "boom", "requestId": "req_y"}}),
        )
    };
    for n in 1..=5 {
        origin.set(Method::GET, &uncached(n), boom());
    }
    for (key, p) in [
        (&b, uncached(1)),
        (&a, poison.to_owned()),
        (&b, uncached(2)),
        (&b, uncached(3)),
        (&b, uncached(4)),
    ] {
        call_get(&gw, &p, key).await.assert_error(500, "INTERNAL");
    }
    origin.set(
        Method::GET,
        &uncached(5),
        Answer::Json(200, container(&["slide-1"], "c")),
    );
    call_get(&gw, &uncached(5), &b)
        .await
        .assert_error(503, "OVERLOADED");
    assert_eq!(origin.count(Method::GET, &uncached(5)), 0);
}
