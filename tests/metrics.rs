//! Observability: the Prometheus metric set on the admin listener, its
//! exposition format and cardinality, the access log, request-id and trace
//! context correlation with the origin, and the admin endpoints.
//!
//! Counter tests scrape before and after a scripted sequence and compare the
//! two: every counter series and histogram `_count` that moved must be in the
//! expected table, with exactly the expected delta.

mod support;
use support::logs::Captured;
use support::*;

use bytes::Bytes;
use http::Method;
use layers_gateway::demo::FailureMode;
use layers_gateway::ids::ContainerId;
use layers_gateway::routes::{ASSET_TEMPLATE, CONTAINER_TEMPLATE};
use layers_gateway::service::Gateway;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const P: &str = "layers_gateway_";
const WHOAMI: &str = "/v1/whoami";

// ---------------------------------------------------------------------------
// Exposition parsing
// ---------------------------------------------------------------------------

type Labels = BTreeMap<String, String>;

/// A parsed text exposition: `# TYPE`, `# HELP` and every sample, keyed by
/// `name{label="value",...}` with labels sorted by name.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
    /// Samples in file order, for per-family checks.
    lines: Vec<(String, Labels, f64)>,
}

/// The canonical series key.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let l: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    key_of(name, &l)
}

fn key_of(name: &str, labels: &Labels) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Parses one sample line strictly (label values may contain escapes).
fn parse_sample(line: &str) -> (String, Labels, f64) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':'),
        "bad metric name in {line:?}"
    );
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=').unwrap_or_else(|| panic!("bad labels in {line:?}"));
            let lname = &r[..eq];
            assert!(
                !lname.is_empty() && lname.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
                "bad label name in {line:?}"
            );
            r = r[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            assert!(
                labels.insert(lname.to_owned(), value).is_none(),
                "repeated label in {line:?}"
            );
            r = &r[end + 1..];
            r = r.strip_prefix(',').unwrap_or(r);
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
    };
    (name.to_owned(), labels, value)
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(
                e.types.insert(name.to_owned(), ty.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            e.helps.insert(name.to_owned(), help.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) = parse_sample(line);
        let k = key_of(&name, &labels);
        assert!(
            e.samples.insert(k.clone(), value).is_none(),
            "duplicate series {k}"
        );
        e.lines.push((name, labels, value));
    }
    e
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .get(&key(&format!("{P}{name}"), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// The family a sample belongs to, and the family's type.
    fn family_of(&self, sample: &str) -> Option<(&str, &str)> {
        if let Some((n, t)) = self.types.get_key_value(sample) {
            return Some((n, t));
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if let Some((n, t)) = self.types.get_key_value(base) {
                    if t == "histogram" || t == "summary" {
                        return Some((n, t));
                    }
                }
            }
        }
        None
    }

    /// Counter series and histogram `_count` series: what a delta compares.
    fn counts(&self) -> BTreeMap<String, f64> {
        self.lines
            .iter()
            .filter(|(name, _, _)| match self.family_of(name) {
                Some((_, "counter")) => true,
                Some((_, "histogram")) => name.ends_with("_count"),
                _ => false,
            })
            .map(|(name, labels, v)| (key_of(name, labels), *v))
            .collect()
    }

    /// Values of one label across a family's series.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        let full = format!("{P}{name}");
        self.lines
            .iter()
            .filter(|(n, _, _)| *n == full)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect()
    }
}

/// The counter and histogram families of the issue's metric set, which the
/// delta tests account for exactly. Families of other features (shaping,
/// origin protection) are theirs to test.
const COUNTED_FAMILIES: [&str; 14] = [
    "requests_total",
    "request_duration_seconds",
    "cache_lookups_total",
    "cache_evictions_total",
    "origin_requests_total",
    "origin_request_duration_seconds",
    "invalidations_total",
    "webhook_rejections_total",
    "webhooks_ignored_total",
    "webhooks_duplicate_total",
    "fills_discarded_total",
    "auth_failures_total",
    "connections_rejected_total",
    "org_requests_total",
];

/// What moved between two scrapes (counters and histogram counts of
/// [`COUNTED_FAMILIES`]).
fn delta(before: &Exposition, after: &Exposition) -> BTreeMap<String, f64> {
    let b = before.counts();
    let mut out = BTreeMap::new();
    for (k, v) in after.counts() {
        let name = k.split('{').next().unwrap_or(&k);
        let counted = after
            .family_of(name)
            .is_some_and(|(f, _)| COUNTED_FAMILIES.contains(&f.trim_start_matches(P)));
        if !counted {
            continue;
        }
        let d = v - b.get(&k).copied().unwrap_or(0.0);
        if d != 0.0 {
            out.insert(k, d);
        }
    }
    for k in b.keys() {
        assert!(
            after.samples.contains_key(k),
            "series disappeared between scrapes: {k}"
        );
    }
    out
}

/// An expected-delta table, built with the metric name without the prefix.
#[derive(Default)]
struct Expect(BTreeMap<String, f64>);

impl Expect {
    fn add(&mut self, name: &str, labels: &[(&str, &str)], n: u32) -> &mut Self {
        *self.0.entry(key(&format!("{P}{name}"), labels)).or_default() += f64::from(n);
        self
    }
    fn requests(&mut self, route: &str, method: &str, status: &str, code: &str, n: u32) -> &mut Self {
        self.add(
            "requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status", status),
                ("code", code),
            ],
            n,
        )
    }
    fn duration(&mut self, route: &str, cache: &str, n: u32) -> &mut Self {
        self.add(
            "request_duration_seconds_count",
            &[("route", route), ("cache", cache)],
            n,
        )
    }
    fn lookups(&mut self, result: &str, n: u32) -> &mut Self {
        self.add("cache_lookups_total", &[("result", result)], n)
    }
    fn origin(&mut self, route: &str, status: &str, n: u32) -> &mut Self {
        self.add(
            "origin_requests_total",
            &[("route", route), ("status", status)],
            n,
        )
    }
    fn origin_duration(&mut self, route: &str, n: u32) -> &mut Self {
        self.add("origin_request_duration_seconds_count", &[("route", route)], n)
    }
}

/// Compares a delta with the expected table, listing every difference.
fn assert_deltas(got: &BTreeMap<String, f64>, want: &Expect) {
    let mut problems = Vec::new();
    for (k, w) in &want.0 {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => problems.push(format!("  {k}: moved by {g}, expected {w}")),
            None => problems.push(format!("  {k}: did not move, expected +{w}")),
        }
    }
    for (k, g) in got {
        if !want.0.contains_key(k) {
            problems.push(format!("  {k}: moved by {g}, expected no change"));
        }
    }
    assert!(
        problems.is_empty(),
        "metric deltas differ:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn scrape(h: &Harness) -> Exposition {
    parse(&scrape_text(h).await)
}

async fn scrape_text(h: &Harness) -> String {
    let r = h.admin().send(Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body.to_vec()).expect("exposition is UTF-8")
}

fn render(gw: &Gateway) -> String {
    String::from_utf8(gw.state().metrics.render()).expect("exposition is UTF-8")
}

/// Polls `cond` every 5 ms for up to 5 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `/readyz` is 200, i.e. the startup probe of the origin has
/// been answered and counted, so later scrapes see no background traffic.
async fn wait_ready(h: &Harness) {
    let admin = h.admin();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = admin.send(Method::GET, "/readyz", &[], Bytes::new()).await;
        if r.status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The probe counts its origin request right after it marks readiness.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn org_a_containers(h: &Harness) -> Vec<ContainerId> {
    h.sim
        .container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, id)| id)
        .collect()
}

fn first_asset(h: &Harness, id: ContainerId) -> String {
    h.sim.container(id).unwrap()["assets"][0]["assetId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A random, well-formed (v4) container id.
fn random_container_id(rng: &mut impl Rng) -> ContainerId {
    let v: u128 = rng.random();
    // Version 4 (bits 76..80) and the RFC 4122 variant (bits 62..64).
    let v = (((v & !(0xF << 76)) | (0x4 << 76)) & !(0x3 << 62)) | (0x2 << 62);
    ContainerId::from_u128(v)
}

fn random_chars(rng: &mut impl Rng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A well-formed key whose key id no keys file knows.
fn unknown_key(rng: &mut impl Rng) -> String {
    format!(
        "lp_test_{}_{}",
        random_chars(rng, CROCKFORD, 16),
        random_chars(rng, B64URL, 43)
    )
}

/// The admin demo key's id with a different secret.
fn wrong_secret_key(rng: &mut impl Rng) -> String {
    let id = key_id_of(&admin_key());
    format!("lp_test_{id}_{}", random_chars(rng, B64URL, 43))
}

fn key_id_of(key: &str) -> String {
    key.split('_').nth(2).unwrap().to_owned()
}

fn secret_of(key: &str) -> String {
    key.splitn(4, '_').nth(3).unwrap().to_owned()
}

/// A webhook body `{id, type, data}` with `data.id = container`; returns the
/// body and its event id.
fn event(ty: &str, container: ContainerId, mut data: Value) -> (String, String) {
    let event_id = format!("evt_{}", ulid::Ulid::new());
    data["id"] = json!(container.to_string());
    (
        json!({ "id": event_id, "type": ty, "data": data }).to_string(),
        event_id,
    )
}

fn webhook_headers(body: &str, secret: &str, t: i64, event_id: Option<&str>) -> Vec<(String, String)> {
    let mut h = signed_webhook(body, secret, t);
    if let Some(id) = event_id {
        h.push(("x-layers-event-id".into(), id.into()));
    }
    h
}

fn as_refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Delivers a webhook to the gateway over TCP.
async fn deliver(h: &Harness, body: &str, headers: &[(String, String)]) -> Reply {
    let path = h.gateway().state().config.webhooks.path.clone();
    h.client
        .send(
            Method::POST,
            &path,
            &as_refs(headers),
            Bytes::from(body.to_owned()),
        )
        .await
}

/// Delivers a webhook signed now with the test secret, with its event id.
async fn deliver_signed(h: &Harness, body: &str, event_id: &str) -> Reply {
    deliver(
        h,
        body,
        &webhook_headers(body, WEBHOOK_SECRET, unix_now(), Some(event_id)),
    )
    .await
}

// ---------------------------------------------------------------------------
// Counters: a scripted sequence, exact deltas
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_sequence_moves_every_counter_by_exactly_its_delta() {
    let h = without_undated_hold().await;
    wait_ready(&h).await;
    let ids = org_a_containers(&h);
    let (c0, c1, c2, c3, c4, c5) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    let path = |id: ContainerId| format!("/v1/content/{id}");
    let admin = admin_key();
    let mut rng = rand::rng();
    let before = scrape(&h).await;

    // Miss, then hits (GET container, GET asset, HEAD container).
    assert_eq!(h.client.get(&path(c0), &admin).await.x_cache(), Some("MISS"));
    assert_eq!(h.client.get(&path(c0), &admin).await.x_cache(), Some("HIT"));
    let asset = first_asset(&h, c0);
    let r = h
        .client
        .get(&format!("{}/assets/{asset}", path(c0)), &admin)
        .await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("HIT")));
    let r = h
        .client
        .send(Method::HEAD, &path(c0), &[("x-api-key", &admin)], Bytes::new())
        .await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("HIT")));

    // 401 three ways (unknown key, no key, wrong secret), then a 403.
    h.client
        .get(&path(c0), &unknown_key(&mut rng))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    h.client
        .send(Method::GET, &path(c0), &[], Bytes::new())
        .await
        .assert_error(401, "UNAUTHENTICATED");
    h.client
        .get(&path(c0), &wrong_secret_key(&mut rng))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    h.client
        .get(&path(c0), &no_scope_key())
        .await
        .assert_error(403, "FORBIDDEN_SCOPE");

    // 404s: from the origin (miss), outside /v1, and an id that cannot exist.
    let missing = random_container_id(&mut rng);
    h.client
        .get(&path(missing), &admin)
        .await
        .assert_error(404, "NOT_FOUND");
    h.client.get("/nope", &admin).await.assert_error(404, "NOT_FOUND");
    h.client
        .get("/v1/content/not-an-id", &admin)
        .await
        .assert_error(404, "NOT_FOUND");

    // A proxied route.
    assert_eq!(h.client.get(WHOAMI, &admin).await.status, 200);

    // Coalesced: the origin holds the first fill; a second request joins it.
    let gate = h.sim.hold();
    let gets = h.sim.container_gets();
    let spawn_get = |p: String| {
        let (c, k) = (h.client.clone(), admin.clone());
        tokio::spawn(async move { c.get(&p, &k).await })
    };
    let leader = spawn_get(path(c1));
    wait_until("the held fill to reach the origin", || {
        h.sim.container_gets() > gets
    })
    .await;
    let follower = spawn_get(path(c1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        scrape(&h).await.get("origin_inflight", &[]),
        1.0,
        "one fill in flight while held"
    );
    gate.release();
    let (a, b) = (leader.await.unwrap(), follower.await.unwrap());
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(a.body, b.body);
    assert_eq!(
        h.sim.request_count("GET", &path(c1)),
        1,
        "one origin request for both"
    );

    // Signed webhook: the origin regenerated c0; then a duplicate delivery.
    let regen = h.sim.regenerate(c0).unwrap();
    let assets: Vec<Value> = regen
        .new_asset_ids
        .iter()
        .map(|a| json!({ "assetId": a }))
        .collect();
    let (body, eid) = event(
        "content.regenerated",
        c0,
        json!({ "previousAssetIds": regen.previous_asset_ids, "assets": assets }),
    );
    assert_eq!(deliver_signed(&h, &body, &eid).await.json()["status"], "applied");
    assert_eq!(
        deliver_signed(&h, &body, &eid).await.json()["status"],
        "duplicate"
    );
    assert_eq!(h.client.get(&path(c0), &admin).await.x_cache(), Some("MISS"));

    // Refused webhooks: wrong secret, no signature, stale timestamp.
    let (body, eid) = event("content.updated", c0, json!({}));
    let wrong = webhook_headers(&body, "not-the-webhook-secret", unix_now(), Some(&eid));
    deliver(&h, &body, &wrong)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let unsigned = vec![("content-type".to_string(), "application/json".to_string())];
    deliver(&h, &body, &unsigned)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let stale = webhook_headers(&body, WEBHOOK_SECRET, unix_now() - 3600, Some(&eid));
    deliver(&h, &body, &stale)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // A signed event of a type the gateway ignores.
    let (body, eid) = event("project.archived", c0, json!({}));
    assert_eq!(deliver_signed(&h, &body, &eid).await.status, 204);

    // Delete: cached c4 is dropped and tombstoned (404 without the origin).
    assert_eq!(h.client.get(&path(c4), &admin).await.x_cache(), Some("MISS"));
    let (body, eid) = event("content.deleted", c4, json!({ "assets": [] }));
    assert_eq!(deliver_signed(&h, &body, &eid).await.status, 200);
    let origin_before = h.sim.request_count("GET", &path(c4));
    h.client
        .get(&path(c4), &admin)
        .await
        .assert_error(404, "NOT_FOUND");
    assert_eq!(
        h.sim.request_count("GET", &path(c4)),
        origin_before,
        "tombstone answers locally"
    );

    // Admin purge of c1 (cached by the coalesced fill).
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let r = h
        .admin()
        .send(
            Method::POST,
            &format!("/admin/purge?container={c1}"),
            &[("authorization", &bearer)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Write-through: a PATCH proxied to the origin invalidates c2.
    let r = h
        .client
        .send(
            Method::PATCH,
            &path(c2),
            &[("x-api-key", &admin), ("content-type", "application/json")],
            Bytes::from_static(br#"{"caption":"metrics test"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Origin failure: a cached-route miss and a proxied route.
    h.sim.set_failure(Some(FailureMode::Status(500)));
    h.client
        .get(&path(c3), &admin)
        .await
        .assert_error(500, "INTERNAL");
    assert_eq!(h.client.get(WHOAMI, &admin).await.status, 500);
    h.sim.set_failure(None);
    // The failure was not cached.
    assert_eq!(h.client.get(&path(c3), &admin).await.x_cache(), Some("MISS"));

    // A fill raced by a webhook: served, not cached, counted as discarded.
    race_fill_against_webhook(&h, c5).await;

    let after = scrape(&h).await;
    let (c, a) = (CONTAINER_TEMPLATE, ASSET_TEMPLATE);
    let mut want = Expect::default();
    want.requests(c, "GET", "200", "", 7) // c0 miss+hit, 2 coalesced, c0 re-miss, c4, c3
        .requests(a, "GET", "200", "", 1)
        .requests(c, "HEAD", "200", "", 1)
        .requests(c, "GET", "401", "UNAUTHENTICATED", 3)
        .requests(c, "GET", "403", "FORBIDDEN_SCOPE", 1)
        .requests(c, "GET", "404", "NOT_FOUND", 3) // origin 404, bad id, tombstone
        .requests("not_found", "GET", "404", "NOT_FOUND", 1)
        .requests(WHOAMI, "GET", "200", "", 1)
        .requests(WHOAMI, "GET", "500", "", 1)
        .requests("webhook", "POST", "200", "", 3) // applied, duplicate, deleted
        .requests("webhook", "POST", "401", "UNAUTHENTICATED", 3)
        .requests("webhook", "POST", "204", "", 1)
        .requests(c, "PATCH", "200", "", 1)
        .requests(c, "GET", "500", "INTERNAL", 1);
    want.duration(c, "miss", 7) // c0, c1 leader, missing, c0 again, c4, c3 (500), c3
        .duration(c, "coalesced", 1)
        .duration(c, "hit", 2)
        .duration(a, "hit", 1)
        .duration(c, "tombstone", 1)
        .duration(c, "none", 6) // 3x 401, 403, bad id, PATCH
        .duration("not_found", "none", 1)
        .duration(WHOAMI, "none", 2)
        .duration("webhook", "none", 7);
    want.lookups("hit", 3)
        .lookups("miss", 7)
        .lookups("coalesced", 1)
        .lookups("tombstone", 1);
    want.origin(c, "200", 6) // c0, c1, c0 again, c4, c3, PATCH c2
        .origin(c, "404", 1)
        .origin(c, "500", 1)
        .origin(WHOAMI, "200", 1)
        .origin(WHOAMI, "500", 1)
        .origin_duration(c, 8)
        .origin_duration(WHOAMI, 2);
    want.add("auth_failures_total", &[("reason", "unknown_key")], 1)
        .add("auth_failures_total", &[("reason", "missing")], 1)
        .add("auth_failures_total", &[("reason", "wrong_secret")], 1);
    want.add(
        "invalidations_total",
        &[("source", "webhook"), ("type", "regenerated")],
        1,
    )
    .add(
        "invalidations_total",
        &[("source", "webhook"), ("type", "deleted")],
        1,
    )
    .add(
        "invalidations_total",
        &[("source", "admin"), ("type", "purge")],
        1,
    )
    .add(
        "invalidations_total",
        &[("source", "write_through"), ("type", "updated")],
        1,
    );
    want.add("webhook_rejections_total", &[("reason", "bad_signature")], 1)
        .add("webhook_rejections_total", &[("reason", "missing_signature")], 1)
        .add("webhook_rejections_total", &[("reason", "stale_timestamp")], 1)
        .add("webhooks_duplicate_total", &[], 1)
        .add("webhooks_ignored_total", &[], 1);
    // c0 (regenerated), c4 (deleted) and c1 (purged) were cached.
    want.add("cache_evictions_total", &[("cause", "invalidated")], 3);
    race_deltas(&mut want);
    assert_deltas(&delta(&before, &after), &want);
    assert_eq!(after.get("origin_inflight", &[]), 0.0);
    h.stop().await;
}

/// A gateway whose undated webhooks do not hold the container uncached:
/// the webhooks here report changes the simulator never made, which
/// `cache.undated_hold_ms` would keep out of the cache for a while (and
/// count as `undated` discards; tests/undated_lag.rs tests that).
async fn without_undated_hold() -> Harness {
    Harness::with(demo_simulator(), "[cache]\nundated_hold_ms = 0\n").await
}

/// Holds a fill of `id` at the origin, delivers a webhook for `id` while it
/// is in flight, releases; then reads twice more (miss, then hit).
async fn race_fill_against_webhook(h: &Harness, id: ContainerId) {
    let path = format!("/v1/content/{id}");
    let gate = h.sim.hold();
    let gets = h.sim.container_gets();
    let read = {
        let (c, p, k) = (h.client.clone(), path.clone(), admin_key());
        tokio::spawn(async move { c.get(&p, &k).await })
    };
    wait_until("the held fill to reach the origin", || {
        h.sim.container_gets() > gets
    })
    .await;
    let (body, eid) = event("content.updated", id, json!({}));
    assert_eq!(deliver_signed(h, &body, &eid).await.json()["status"], "applied");
    gate.release();
    let r = read.await.unwrap();
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("MISS")));
    // The raced fill was served but not cached: the next read misses again.
    assert_eq!(h.client.get(&path, &admin_key()).await.x_cache(), Some("MISS"));
    assert_eq!(h.client.get(&path, &admin_key()).await.x_cache(), Some("HIT"));
}

/// What `race_fill_against_webhook` moves.
fn race_deltas(want: &mut Expect) {
    let c = CONTAINER_TEMPLATE;
    want.requests(c, "GET", "200", "", 3)
        .requests("webhook", "POST", "200", "", 1)
        .duration(c, "miss", 2)
        .duration(c, "hit", 1)
        .duration("webhook", "none", 1)
        .lookups("miss", 2)
        .lookups("hit", 1)
        .origin(c, "200", 2)
        .origin_duration(c, 2)
        .add(
            "invalidations_total",
            &[("source", "webhook"), ("type", "updated")],
            1,
        )
        .add("fills_discarded_total", &[("reason", "generation")], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_raced_by_a_webhook_is_served_not_cached_and_counted_as_discarded() {
    let h = without_undated_hold().await;
    wait_ready(&h).await;
    let before = scrape(&h).await;
    race_fill_against_webhook(&h, org_a_containers(&h)[1]).await;
    let mut want = Expect::default();
    race_deltas(&mut want);
    assert_deltas(&delta(&before, &scrape(&h).await), &want);
    h.stop().await;
}

/// Delivers a signed webhook to an in-process gateway.
async fn deliver_in_process(gw: &Gateway, body: String, event_id: &str) -> Reply {
    let headers = webhook_headers(&body, WEBHOOK_SECRET, unix_now(), Some(event_id));
    let path = gw.state().config.webhooks.path.clone();
    call(gw, Method::POST, &path, &as_refs(&headers), Bytes::from(body)).await
}

#[tokio::test]
async fn revoked_asset_id_counts_as_a_revoked_lookup() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, old_asset) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    let asset_path = |a: &str| format!("{path}/assets/{a}");
    assert_eq!(
        call_get(&gw, &asset_path(&old_asset), &admin_key()).await.status,
        200
    );
    let regen = sim.regenerate(id).unwrap();
    let assets: Vec<Value> = regen
        .new_asset_ids
        .iter()
        .map(|a| json!({ "assetId": a }))
        .collect();
    let (body, eid) = event(
        "content.regenerated",
        id,
        json!({ "previousAssetIds": regen.previous_asset_ids, "assets": assets }),
    );
    assert_eq!(deliver_in_process(&gw, body, &eid).await.status, 200);

    let before = parse(&render(&gw));
    // Refill the container, then ask for the revoked and a current asset id.
    assert_eq!(call_get(&gw, &path, &admin_key()).await.x_cache(), Some("MISS"));
    for _ in 0..2 {
        call_get(&gw, &asset_path(&old_asset), &admin_key())
            .await
            .assert_error(404, "NOT_FOUND");
    }
    let new_asset = &regen.new_asset_ids[0];
    assert_eq!(
        call_get(&gw, &asset_path(new_asset), &admin_key())
            .await
            .x_cache(),
        Some("HIT")
    );
    let (c, a) = (CONTAINER_TEMPLATE, ASSET_TEMPLATE);
    let mut want = Expect::default();
    want.requests(c, "GET", "200", "", 1)
        .requests(a, "GET", "404", "NOT_FOUND", 2)
        .requests(a, "GET", "200", "", 1)
        .duration(c, "miss", 1)
        .duration(a, "revoked", 2)
        .duration(a, "hit", 1)
        .lookups("miss", 1)
        .lookups("revoked", 2)
        .lookups("hit", 1)
        .origin(c, "200", 1)
        .origin_duration(c, 1);
    assert_deltas(&delta(&before, &parse(&render(&gw))), &want);
}

#[tokio::test]
async fn cached_route_with_a_query_counts_as_a_bypass() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let (id, asset) = first_container(&sim);
    let before = parse(&render(&gw));
    let r = call_get(&gw, &format!("/v1/content/{id}?fields=caption"), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, None));
    let r = call_get(&gw, &format!("/v1/content/{id}/assets/{asset}?v=2"), &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, None));
    let (c, a) = (CONTAINER_TEMPLATE, ASSET_TEMPLATE);
    let mut want = Expect::default();
    want.requests(c, "GET", "200", "", 1)
        .requests(a, "GET", "200", "", 1)
        .duration(c, "bypass", 1)
        .duration(a, "bypass", 1)
        .lookups("bypass", 2)
        .origin(c, "200", 1)
        .origin(a, "200", 1)
        .origin_duration(c, 1)
        .origin_duration(a, 1);
    assert_deltas(&delta(&before, &parse(&render(&gw))), &want);
}

#[tokio::test(start_paused = true)]
async fn stale_entry_served_while_the_origin_fails_counts_as_stale() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "[cache]\nttl_secs = 1\nstale_if_error_secs = 60\n");
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");
    assert_eq!(call_get(&gw, &path, &admin_key()).await.x_cache(), Some("MISS"));
    tokio::time::advance(Duration::from_secs(2)).await;
    sim.set_failure(Some(FailureMode::Status(500)));
    let before = parse(&render(&gw));
    let r = call_get(&gw, &path, &admin_key()).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("STALE")));
    // Past the stale window the origin's failure is answered.
    tokio::time::advance(Duration::from_secs(120)).await;
    call_get(&gw, &path, &admin_key())
        .await
        .assert_error(500, "INTERNAL");
    let c = CONTAINER_TEMPLATE;
    let mut want = Expect::default();
    want.requests(c, "GET", "200", "", 1)
        .requests(c, "GET", "500", "INTERNAL", 1)
        .duration(c, "stale", 1)
        .duration(c, "miss", 1)
        .lookups("stale", 1)
        .lookups("miss", 1)
        .origin(c, "500", 2)
        .origin_duration(c, 2);
    assert_deltas(&delta(&before, &parse(&render(&gw))), &want);
}

// ---------------------------------------------------------------------------
// Exposition format
// ---------------------------------------------------------------------------

/// Checks a whole exposition: names, types, HELP, histograms, route labels.
fn check_exposition(text: &str, allowed_routes: &BTreeSet<String>) -> Exposition {
    // prometheus-parse reads it.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads the exposition");
    assert!(!scrape.samples.is_empty());
    let e = parse(text);
    const KNOWN: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];
    for (name, ty) in &e.types {
        assert!(KNOWN.contains(&ty.as_str()), "# TYPE {name} {ty}: unknown type");
        assert!(name.starts_with(P), "{name} lacks the {P} prefix");
        assert!(
            e.helps.get(name).is_some_and(|h| !h.is_empty()),
            "{name} has no HELP"
        );
    }
    // Every sample belongs to a typed family.
    for (name, _, _) in &e.lines {
        assert!(e.family_of(name).is_some(), "sample {name} has no # TYPE");
    }
    // Histograms: ascending le, non-decreasing counts, +Inf == _count.
    let finite: Vec<f64> = layers_gateway::metrics::LATENCY_BUCKETS.to_vec();
    assert_eq!(finite.first(), Some(&0.00005), "first bucket resolves 50 µs");
    assert_eq!(finite.last(), Some(&10.0), "last finite bucket is 10 s");
    let mut histograms = 0;
    for (family, ty) in &e.types {
        if ty != "histogram" {
            continue;
        }
        let bucket_name = format!("{family}_bucket");
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, labels, v) in &e.lines {
            if *name == bucket_name {
                let mut l = labels.clone();
                let le = l.remove("le").expect("bucket without le");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("numeric le")
                };
                by_series.entry(key_of(family, &l)).or_default().push((le, *v));
            }
        }
        for (series, buckets) in &by_series {
            histograms += 1;
            let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
            let mut want = finite.clone();
            want.push(f64::INFINITY);
            assert_eq!(les, want, "{series}: bucket bounds");
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{series}: counts decrease"
            );
            let count_key = series.replacen(family.as_str(), &format!("{family}_count"), 1);
            let count = e
                .samples
                .get(&count_key)
                .unwrap_or_else(|| panic!("{count_key} missing"));
            assert_eq!(
                buckets.last().unwrap().1,
                *count,
                "{series}: +Inf bucket != _count"
            );
            let sum_key = series.replacen(family.as_str(), &format!("{family}_sum"), 1);
            assert!(e.samples.contains_key(&sum_key), "{sum_key} missing");
        }
    }
    assert!(histograms > 0, "no histogram series to check");
    // prometheus-parse agrees on the histograms: +Inf bucket equals _count.
    for s in &scrape.samples {
        if let prometheus_parse::Value::Histogram(buckets) = &s.value {
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .expect("+Inf bucket");
            let count = scrape
                .samples
                .iter()
                .find(|c| c.metric == format!("{}_count", s.metric) && c.labels == s.labels)
                .expect("_count for every histogram");
            match count.value {
                prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => {
                    assert_eq!(inf.count, v)
                }
                ref other => panic!("unexpected _count value {other:?}"),
            }
        }
    }
    // Route labels are templates, never raw paths.
    for (name, labels, _) in &e.lines {
        if let Some(route) = labels.get("route") {
            assert!(
                allowed_routes.contains(route),
                "{name}: route label {route:?} is not a template"
            );
        }
    }
    assert!(
        !text.contains("cnt_"),
        "a container id leaked into the exposition"
    );
    e
}

fn allowed_routes(gw: &Gateway) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = gw
        .state()
        .config
        .routes
        .rules
        .iter()
        .map(|r| r.path.clone())
        .collect();
    s.extend(["webhook", "not_found", "/v1/*"].map(String::from));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_parses_as_prometheus_text() {
    let h = Harness::start().await;
    wait_ready(&h).await;
    let ids = org_a_containers(&h);
    let admin = admin_key();
    for id in &ids[..3] {
        h.client.get(&format!("/v1/content/{id}"), &admin).await;
        h.client.get(&format!("/v1/content/{id}"), &admin).await;
    }
    h.client
        .get(&format!("/v1/content/{}", ids[0]), "lp_test_nope")
        .await;
    h.client.get(WHOAMI, &admin).await;
    h.client.get("/v1/unlisted/thing", &admin).await;
    let (body, eid) = event("content.updated", ids[0], json!({}));
    deliver_signed(&h, &body, &eid).await;
    deliver(&h, &body, &[]).await;
    h.sim.set_failure(Some(FailureMode::Status(500)));
    h.client.get(&format!("/v1/content/{}", ids[4]), &admin).await;
    h.sim.set_failure(None);

    let r = h.admin().send(Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content-type {ct}");
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let e = check_exposition(&text, &allowed_routes(h.gateway()));

    // The families the issue names (those that exist once touched).
    let families = [
        ("requests_total", "counter"),
        ("request_duration_seconds", "histogram"),
        ("cache_lookups_total", "counter"),
        ("cache_entries", "gauge"),
        ("cache_weighted_bytes", "gauge"),
        ("cache_evictions_total", "counter"),
        ("origin_requests_total", "counter"),
        ("origin_request_duration_seconds", "histogram"),
        ("origin_inflight", "gauge"),
        ("invalidations_total", "counter"),
        ("webhook_rejections_total", "counter"),
        ("auth_failures_total", "counter"),
        ("connections_open", "gauge"),
        ("connections_rejected_total", "counter"),
        ("build_info", "gauge"),
    ];
    for (name, ty) in families {
        assert_eq!(
            e.types.get(&format!("{P}{name}")).map(String::as_str),
            Some(ty),
            "{name}"
        );
    }
    assert_eq!(
        e.get("build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    // ids[1] and ids[2]; ids[0] was invalidated, ids[4] failed.
    assert_eq!(
        e.get("cache_entries", &[]),
        2.0,
        "cache_entries is refreshed on scrape"
    );
    assert!(e.get("cache_weighted_bytes", &[]) > 0.0);
    assert!(
        e.get("connections_open", &[]) >= 1.0,
        "the test client keeps a connection open"
    );
    // Label sets are the documented ones.
    let labels_of = |name: &str| -> BTreeSet<String> {
        let full = format!("{P}{name}");
        e.lines
            .iter()
            .filter(|(n, _, _)| *n == full)
            .flat_map(|(_, l, _)| l.keys().cloned())
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        labels_of("requests_total"),
        set(&["route", "method", "status", "code"])
    );
    assert_eq!(
        labels_of("request_duration_seconds_count"),
        set(&["route", "cache"])
    );
    assert_eq!(labels_of("origin_requests_total"), set(&["route", "status"]));
    assert_eq!(
        labels_of("origin_request_duration_seconds_count"),
        set(&["route"])
    );
    assert_eq!(labels_of("cache_lookups_total"), set(&["result"]));
    assert_eq!(labels_of("invalidations_total"), set(&["source", "type"]));
    assert_eq!(labels_of("auth_failures_total"), set(&["reason"]));
    assert_eq!(labels_of("webhook_rejections_total"), set(&["reason"]));
    assert_eq!(labels_of("cache_evictions_total"), set(&["cause"]));
    let results: BTreeSet<String> = e.label_values("cache_lookups_total", "result");
    let documented = set(&[
        "hit",
        "miss",
        "coalesced",
        "bypass",
        "tombstone",
        "revoked",
        "stale",
        "negative",
    ]);
    assert!(results.is_subset(&documented), "{results:?}");
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Cardinality
// ---------------------------------------------------------------------------

fn series_count(gw: &Gateway) -> usize {
    render(gw)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

/// Paused clock, advanced 20 ms per read: 50 reads a second stays inside
/// every published rate limit, so shaping never turns a read into a 429.
/// The reads use the `partner` tier key (org_demo_b: every random id is a 404).
#[tokio::test(start_paused = true)]
async fn ten_thousand_container_ids_and_a_thousand_bad_keys_add_no_series() {
    let sim = demo_simulator();
    let gw = in_process(&sim, "");
    let reader = org_b_key();
    let read = |p: String| {
        let (gw, k) = (gw.clone(), reader.clone());
        async move {
            tokio::time::advance(Duration::from_millis(20)).await;
            call_get(&gw, &p, &k).await.assert_error(404, "NOT_FOUND");
        }
    };
    let mut rng = rand::rng();
    let ids: Vec<ContainerId> = (0..10_000).map(|_| random_container_id(&mut rng)).collect();
    let paths: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i % 3 {
            0 => format!("/v1/content/{id}"),
            1 => format!("/v1/content/{}", id.uuid_string().to_uppercase()),
            _ => format!("/v1/content/{id}/assets/{}", random_chars(&mut rng, B64URL, 20)),
        })
        .collect();
    let bad_keys: Vec<(bool, String)> = (0..1_000)
        .map(|i| match i % 4 {
            0 => (false, unknown_key(&mut rng)),
            1 => (false, wrong_secret_key(&mut rng)),
            2 => (true, unknown_key(&mut rng)), // as a bearer token
            _ => (false, format!("sk_live_{}", random_chars(&mut rng, B64URL, 32))), // malformed
        })
        .collect();
    let send_bad = |(bearer, k): &(bool, String)| {
        let gw = gw.clone();
        let (bearer, k) = (*bearer, k.clone());
        async move {
            let h = if bearer {
                ("authorization", format!("Bearer {k}"))
            } else {
                ("x-api-key", k)
            };
            let r = call(
                &gw,
                Method::GET,
                "/v1/content/not-an-id",
                &[(h.0, h.1.as_str())],
                Bytes::new(),
            )
            .await;
            r.assert_error(401, "UNAUTHENTICATED");
        }
    };

    // The first of each kind creates its series.
    for p in &paths[..3] {
        read(p.clone()).await;
    }
    for k in &bad_keys[..4] {
        send_bad(k).await;
    }
    let first = series_count(&gw);
    for p in &paths[3..] {
        read(p.clone()).await;
    }
    for k in &bad_keys[4..] {
        send_bad(k).await;
    }
    let text = render(&gw);
    assert_eq!(series_count(&gw), first, "series grew with ids or keys");
    let e = check_exposition(&text, &allowed_routes(&gw));
    assert_eq!(e.get("auth_failures_total", &[("reason", "unknown_key")]), 500.0);
    assert_eq!(e.get("auth_failures_total", &[("reason", "wrong_secret")]), 250.0);
    assert_eq!(e.get("auth_failures_total", &[("reason", "malformed")]), 250.0);
    assert_eq!(e.get("cache_lookups_total", &[("result", "miss")]), 10_000.0);
    for (i, id) in ids.iter().enumerate().step_by(97) {
        assert!(
            !text.contains(&id.uuid_string()),
            "container id {i} is in the exposition"
        );
        assert!(!text.to_lowercase().contains(&id.uuid_string()));
    }
    for (_, k) in bad_keys.iter().step_by(37) {
        assert!(!text.contains(k.as_str()), "a key is in the exposition");
    }
}

// ---------------------------------------------------------------------------
// Secrets and the access log
// ---------------------------------------------------------------------------

/// An in-process gateway whose access log (in `format`) is written to
/// `access`, whatever the log filter says.
fn in_process_with_access_log(
    sim: &layers_gateway::demo::Simulator,
    format: &str,
    access: &Captured,
) -> Gateway {
    let cfg = test_config(
        "http://127.0.0.1:1",
        &format!("[access_log]\nformat = \"{format}\"\n"),
    );
    let out = access.clone();
    let output = layers_gateway::access_log::Output::Custom(Arc::new(move || {
        Ok(Box::new(out.clone()) as Box<dyn std::io::Write + Send>)
    }));
    Gateway::with_access_log(
        cfg,
        demo_keys(),
        Arc::new(layers_gateway::origin::SimulatorUpstream(sim.clone())),
        output,
    )
    .unwrap()
}

async fn admin_call(gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    use http_body_util::{BodyExt, Full};
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = layers_gateway::admin::handle(gw, b.body(Full::new(Bytes::new())).unwrap()).await;
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJwYXJ0bmVyIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const WRONG_ADMIN_TOKEN: &str = "wrong-admin-token-7f3a9c";
const WRONG_WEBHOOK_SECRET: &str = "wrong-webhook-secret-51bd";

/// Sends every kind of credential through an in-process gateway (valid keys
/// by header and bearer, unknown, wrong-secret and malformed keys, a JWT,
/// the admin token right and wrong, webhooks signed with the secret and a
/// wrong one) while the caller captures tracing output. The admin-key miss
/// carries `X-Request-Id: req_accessLogMiss01`. Returns every string that
/// must appear in no log line and no scrape.
async fn exercise_credentials(gw: &Gateway, sim: &layers_gateway::demo::Simulator) -> Vec<String> {
    let mut rng = rand::rng();
    let (id, asset) = first_container(sim);
    let path = format!("/v1/content/{id}");
    let (admin, reader, partner_b, no_scope) = (admin_key(), reader_key(), org_b_key(), no_scope_key());
    let (unknown, wrong) = (unknown_key(&mut rng), wrong_secret_key(&mut rng));
    let malformed = format!("sk_live_{}", random_chars(&mut rng, B64URL, 32));
    let get = |headers: Vec<(&'static str, String)>, p: String| {
        let gw = gw.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(&gw, Method::GET, &p, &h, Bytes::new()).await
        }
    };
    let r = get(
        vec![
            ("x-api-key", admin.clone()),
            ("x-request-id", "req_accessLogMiss01".into()),
        ],
        path.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        vec![("authorization", format!("Bearer {reader}"))],
        format!("{path}/assets/{asset}"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        vec![("authorization", format!("Bearer {partner_b}"))],
        WHOAMI.into(),
    )
    .await;
    assert_eq!(r.status, 200);
    get(vec![("x-api-key", no_scope.clone())], path.clone())
        .await
        .assert_error(403, "FORBIDDEN_SCOPE");
    for bad in [&unknown, &wrong, &malformed] {
        get(vec![("x-api-key", bad.clone())], path.clone())
            .await
            .assert_error(401, "UNAUTHENTICATED");
        get(vec![("authorization", format!("Bearer {bad}"))], path.clone())
            .await
            .assert_error(401, "UNAUTHENTICATED");
    }
    get(vec![("authorization", format!("Bearer {JWT}"))], path.clone())
        .await
        .assert_error(401, "UNAUTHENTICATED");
    get(vec![("authorization", format!("Bearer {JWT}"))], WHOAMI.into())
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // Both headers: X-Api-Key wins; the bearer must not be logged either.
    let r = get(
        vec![
            ("x-api-key", admin.clone()),
            ("authorization", format!("Bearer {wrong}")),
        ],
        path.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Admin token, right and wrong.
    let purge = format!("/admin/purge?container={id}");
    let ok = admin_call(
        gw,
        Method::POST,
        &purge,
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(ok.status, 200);
    let no = admin_call(
        gw,
        Method::POST,
        &purge,
        &[("authorization", &format!("Bearer {WRONG_ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(no.status, 401);
    // Webhooks signed with the secret and with a wrong one.
    let webhook_path = gw.state().config.webhooks.path.clone();
    for secret in [WEBHOOK_SECRET, WRONG_WEBHOOK_SECRET] {
        let (body, eid) = event("content.updated", id, json!({}));
        let headers = webhook_headers(&body, secret, unix_now(), Some(&eid));
        let r = call(
            gw,
            Method::POST,
            &webhook_path,
            &as_refs(&headers),
            Bytes::from(body),
        )
        .await;
        assert_eq!(r.status, if secret == WEBHOOK_SECRET { 200 } else { 401 });
    }
    let mut secrets = vec![JWT.to_string(), ADMIN_TOKEN.into(), WRONG_ADMIN_TOKEN.into()];
    secrets.extend([WEBHOOK_SECRET.to_string(), WRONG_WEBHOOK_SECRET.into(), malformed]);
    for k in [admin, reader, partner_b, no_scope, unknown, wrong] {
        secrets.push(secret_of(&k));
        secrets.push(k);
    }
    secrets
}

/// Number of partner requests `exercise_credentials` sends (each must leave
/// exactly one access line).
const PARTNER_REQUESTS: usize = 4 + 6 + 2 + 1 + 2;

#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_the_json_log_or_the_scrape_and_the_access_line_has_its_fields() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(log.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests of this binary run on other threads without a subscriber;
    // a callsite whose interest was cached while none listened would drop
    // this thread's events, so recompute the interest now.
    tracing::callsite::rebuild_interest_cache();
    let sim = demo_simulator();
    let access_log = Captured::default();
    let gw = in_process_with_access_log(&sim, "json", &access_log);
    let secrets = exercise_credentials(&gw, &sim).await;
    assert!(gw.state().access_log.flush(Duration::from_secs(10)));
    // Other log lines (tracing) and the access log's own writer.
    let text = log.text() + &access_log.text();
    let scrape = render(&gw);
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "log contains a secret ({} chars)",
            s.len()
        );
        assert!(
            !scrape.contains(s.as_str()),
            "/metrics contains a secret ({} chars)",
            s.len()
        );
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(
        access.len(),
        PARTNER_REQUESTS,
        "one access line per partner request"
    );
    let line = access
        .iter()
        .find(|l| l["fields"]["request_id"] == "req_accessLogMiss01")
        .expect("access line with the request id");
    let f = &line["fields"];
    assert_eq!(f["route"], CONTAINER_TEMPLATE);
    assert_eq!(f["method"], "GET");
    assert_eq!(f["status"], 200);
    assert_eq!(f["code"], "");
    assert_eq!(f["cache"], "miss");
    assert_eq!(f["org"], "org_demo_a");
    assert_eq!(f["key_id"], key_id_of(&admin_key()));
    assert!(f["duration_us"].is_u64(), "{f}");
    // Every access line names a template route and a request id.
    for l in &access {
        let f = &l["fields"];
        assert!(
            f["request_id"].as_str().is_some_and(|r| r.starts_with("req_")),
            "{f}"
        );
        let route = f["route"].as_str().unwrap();
        assert!(allowed_routes(&gw).contains(route), "route {route:?}");
        assert!(f["status"].is_u64() && f["cache"].is_string(), "{f}");
    }
    // A refused key: status and code logged, no key id.
    let refused = access
        .iter()
        .find(|l| l["fields"]["status"] == 401)
        .expect("a 401 line");
    assert_eq!(refused["fields"]["code"], "UNAUTHENTICATED");
    assert_eq!(refused["fields"]["key_id"], "");
    // The bearer-authenticated reader's key id, not its secret.
    assert!(
        access
            .iter()
            .any(|l| l["fields"]["key_id"] == key_id_of(&reader_key())
                && l["fields"]["route"] == ASSET_TEMPLATE)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_the_text_log_and_the_access_line_has_its_fields() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests of this binary run on other threads without a subscriber;
    // a callsite whose interest was cached while none listened would drop
    // this thread's events, so recompute the interest now.
    tracing::callsite::rebuild_interest_cache();
    let sim = demo_simulator();
    let access_log = Captured::default();
    let gw = in_process_with_access_log(&sim, "text", &access_log);
    let secrets = exercise_credentials(&gw, &sim).await;
    assert!(gw.state().access_log.flush(Duration::from_secs(10)));
    let text = log.text() + &access_log.text();
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "log contains a secret ({} chars)",
            s.len()
        );
    }
    let access: Vec<&str> = text.lines().filter(|l| l.contains(" access:")).collect();
    assert_eq!(
        access.len(),
        PARTNER_REQUESTS,
        "one access line per partner request:\n{text}"
    );
    let line = access
        .iter()
        .find(|l| l.contains("req_accessLogMiss01"))
        .expect("line with the request id");
    for want in [
        format!("route=\"{CONTAINER_TEMPLATE}\""),
        "status=200".into(),
        "cache=\"miss\"".into(),
        "org=\"org_demo_a\"".into(),
        format!("key_id=\"{}\"", key_id_of(&admin_key())),
        "duration_us=".into(),
    ] {
        assert!(line.contains(&want), "{want} missing from {line}");
    }
}

// ---------------------------------------------------------------------------
// Correlation with the origin
// ---------------------------------------------------------------------------

/// A minimal origin that records every request's path and headers and
/// answers a container for `GET /v1/content/:id`, a whoami for `/v1/whoami`.
#[derive(Clone, Default)]
struct RecordingOrigin(Arc<Mutex<Vec<(String, http::HeaderMap)>>>);

impl RecordingOrigin {
    async fn start(&self) -> std::net::SocketAddr {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rec = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            rec.0.lock().unwrap().push((path.clone(), req.headers().clone()));
                            let (status, body) = origin_answer(&path);
                            let resp = http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(Bytes::from(body)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// The headers of every recorded request for `path`.
    fn requests(&self, path: &str) -> Vec<http::HeaderMap> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .collect()
    }
}

fn origin_answer(path: &str) -> (u16, String) {
    if path.starts_with("/v1/jobs/") {
        return (302, String::new());
    }
    if path == WHOAMI {
        let body = json!({ "organizationId": "org_demo_a", "apiKeyId": "DEM0ADM1N0000A01", "scopes": ["*"] });
        return (200, body.to_string());
    }
    if let Some(id) = path.strip_prefix("/v1/content/").and_then(ContainerId::parse) {
        let body = json!({
            "id": id.to_string(),
            "projectId": "prj_corr",
            "status": "completed",
            "format": "video",
            "caption": "correlation",
            "assets": [{
                "containerId": id.to_string(),
                "assetId": "video-1",
                "kind": "video",
                "url": "https://cdn.layers.example/video-1.mp4",
                "thumbnailUrl": null
            }],
            "approvalStatus": "approved",
            "createdAt": "2026-01-01T00:00:00Z"
        });
        return (200, body.to_string());
    }
    let body =
        json!({ "error": { "code": "NOT_FOUND", "message": "Resource not found.", "requestId": "req_x" } });
    (404, body.to_string())
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_receives_the_request_id_and_trace_context_unchanged() {
    use layers_gateway::app::App;
    use layers_gateway::origin::{HttpUpstream, Upstream};
    let origin = RecordingOrigin::default();
    let addr = origin.start().await;
    let cfg = test_config(&format!("http://{addr}"), "");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let client = TestClient::new(app.addr);
    let admin = admin_key();
    let mut rng = rand::rng();

    let cached = format!("/v1/content/{}", random_container_id(&mut rng));
    let cached2 = format!("/v1/content/{}", random_container_id(&mut rng));
    // (what, path, incoming request id, whether the gateway keeps it)
    let cases: [(&str, &str, Option<&str>, bool); 6] = [
        (
            "cached miss, id kept",
            &cached,
            Some("req_corrCachedMiss01"),
            true,
        ),
        ("proxied, id kept", WHOAMI, Some("req_corrProxied01"), true),
        ("cached miss, id minted", &cached2, None, false),
        ("proxied, id minted", WHOAMI, None, false),
        (
            "proxied, malformed id replaced",
            WHOAMI,
            Some("not a request id"),
            false,
        ),
        (
            "proxied, uuid id kept",
            WHOAMI,
            Some("0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e"),
            true,
        ),
    ];
    for (what, path, rid, kept) in cases {
        let mut headers = vec![
            ("x-api-key", admin.as_str()),
            ("traceparent", TRACEPARENT),
            ("tracestate", TRACESTATE),
        ];
        if let Some(r) = rid {
            headers.push(("x-request-id", r));
        }
        let r = client.send(Method::GET, path, &headers, Bytes::new()).await;
        assert_eq!(r.status, 200, "{what}: {:?}", r.body);
        let answered = r.header("x-request-id").expect("x-request-id").to_owned();
        if kept {
            assert_eq!(Some(answered.as_str()), rid, "{what}");
        } else {
            assert!(
                answered.starts_with("req_") && answered.len() == 30,
                "{what}: {answered}"
            );
        }
        let seen = origin.requests(path);
        let sent = seen
            .iter()
            .find(|h| h.get("x-request-id").and_then(|v| v.to_str().ok()) == Some(answered.as_str()))
            .unwrap_or_else(|| panic!("{what}: origin never saw request id {answered}"));
        assert_eq!(
            sent.get_all("x-request-id").iter().count(),
            1,
            "{what}: one X-Request-Id"
        );
        let all = |name: &str| -> Vec<Vec<u8>> {
            sent.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
        };
        assert_eq!(
            all("traceparent"),
            vec![TRACEPARENT.as_bytes().to_vec()],
            "{what}"
        );
        assert_eq!(all("tracestate"), vec![TRACESTATE.as_bytes().to_vec()], "{what}");
    }
    // A hit does not reach the origin at all.
    let n = origin.requests(&cached).len();
    let r = client.get(&cached, &admin).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    assert_eq!(origin.requests(&cached).len(), n);
    app.stop().await;
}

/// With the simulator: an origin error passed through on a proxied route
/// carries the origin's own `requestId`, which must be the id the gateway
/// minted and answered with (so the origin received it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_origin_errors_carry_the_gateway_request_id() {
    let h = Harness::start().await;
    let (id, _) = first_container(&h.sim);
    let missing = random_container_id(&mut rand::rng());
    let admin = admin_key();
    // An origin 404 on a proxied route (a query sends the cached route to the proxy).
    let r = h
        .client
        .get(&format!("/v1/content/{missing}?fields=caption"), &admin)
        .await;
    r.assert_error(404, "NOT_FOUND");
    // Origin failures on a proxied route, with and without an incoming id.
    h.sim.set_failure(Some(FailureMode::Status(500)));
    let r = h.client.get(WHOAMI, &admin).await;
    r.assert_error(500, "INTERNAL");
    let headers = [("x-api-key", admin.as_str()), ("x-request-id", "req_simEcho01")];
    let r = h.client.send(Method::GET, WHOAMI, &headers, Bytes::new()).await;
    r.assert_error(500, "INTERNAL");
    assert_eq!(r.header("x-request-id"), Some("req_simEcho01"));
    // A cached-route miss with an incoming id: the simulator echoes it in the
    // headers of its 500, which the gateway answers with that same id, in
    // the header and in the origin's envelope.
    let headers = [("x-api-key", admin.as_str()), ("x-request-id", "req_simEcho02")];
    let r = h
        .client
        .send(Method::GET, &format!("/v1/content/{id}"), &headers, Bytes::new())
        .await;
    r.assert_error(500, "INTERNAL");
    assert_eq!(r.header("x-request-id"), Some("req_simEcho02"));
    assert_eq!(r.json()["error"]["requestId"], "req_simEcho02");
    h.sim.set_failure(None);
    h.stop().await;
}

// ---------------------------------------------------------------------------
// Per-org label (opt-in, capped)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn per_org_label_is_opt_in_and_capped_into_other() {
    let sim = demo_simulator();
    let (id, _) = first_container(&sim);
    let path = format!("/v1/content/{id}");

    let off = in_process(&sim, "");
    call_get(&off, &path, &admin_key()).await;
    call_get(&off, WHOAMI, &org_b_key()).await;
    let text = render(&off);
    assert!(
        !text.contains("org_requests_total"),
        "per-org series without opt-in"
    );
    assert!(
        !text.contains("org_demo_"),
        "an org id is a label value without opt-in"
    );

    let on = in_process(&sim, "[metrics]\nper_org_label = true\nmax_org_labels = 1\n");
    for _ in 0..3 {
        assert_eq!(call_get(&on, &path, &admin_key()).await.status, 200);
        assert_eq!(call_get(&on, WHOAMI, &org_b_key()).await.status, 200);
    }
    call_get(
        &on,
        &format!("/v1/content/{}", random_container_id(&mut rand::rng())),
        &org_b_key(),
    )
    .await;
    let e = parse(&render(&on));
    let orgs = e.label_values("org_requests_total", "org");
    assert_eq!(orgs, ["org_demo_a", "other"].map(String::from).into(), "{orgs:?}");
    assert_eq!(
        e.get("org_requests_total", &[("org", "org_demo_a"), ("class", "2xx")]),
        3.0
    );
    assert_eq!(
        e.get("org_requests_total", &[("org", "other"), ("class", "2xx")]),
        3.0
    );
    assert_eq!(
        e.get("org_requests_total", &[("org", "other"), ("class", "4xx")]),
        1.0
    );
    // The org is never a label of the other families.
    assert!(e
        .lines
        .iter()
        .all(|(n, l, _)| n.ends_with("org_requests_total") || !l.contains_key("org")));
}

// ---------------------------------------------------------------------------
// Admin listener
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_on_the_admin_port_only() {
    let h = Harness::start().await;
    let admin = h.admin();
    let r = admin.send(Method::GET, "/healthz", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    wait_ready(&h).await;
    let r = admin.send(Method::GET, "/readyz", &[], Bytes::new()).await;
    assert_eq!(r.json()["status"], "ready");
    let r = admin.send(Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("layers_gateway_build_info"));
    for path in ["/metrics", "/healthz", "/readyz"] {
        h.client
            .send(Method::GET, path, &[], Bytes::new())
            .await
            .assert_error(404, "NOT_FOUND");
        h.client
            .get(path, &admin_key())
            .await
            .assert_error(404, "NOT_FOUND");
    }
    // Admin paths refuse other methods.
    assert_eq!(
        admin
            .send(Method::POST, "/metrics", &[], Bytes::new())
            .await
            .status,
        405
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_origin_has_answered() {
    use layers_gateway::app::App;
    use layers_gateway::origin::{HttpUpstream, Upstream};
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = test_config(&format!("http://{dead}"), "");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let admin = TestClient::new(app.admin_addr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        admin
            .send(Method::GET, "/healthz", &[], Bytes::new())
            .await
            .status,
        200
    );
    let r = admin.send(Method::GET, "/readyz", &[], Bytes::new()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "starting");
    let e = parse(
        core::str::from_utf8(&admin.send(Method::GET, "/metrics", &[], Bytes::new()).await.body).unwrap(),
    );
    assert!(e.get("origin_requests_total", &[("route", WHOAMI), ("status", "error")]) >= 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_gauges_reflect_the_cache_at_scrape_time() {
    let h = Harness::start().await;
    wait_ready(&h).await;
    let ids = org_a_containers(&h);
    for id in &ids[..3] {
        let r = h.client.get(&format!("/v1/content/{id}"), &admin_key()).await;
        assert_eq!(r.x_cache(), Some("MISS"));
    }
    let e = scrape(&h).await;
    assert_eq!(e.get("cache_entries", &[]), 3.0, "three containers are cached");
    assert!(e.get("cache_weighted_bytes", &[]) > 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_org_class_of_a_redirect_is_not_5xx() {
    use layers_gateway::app::App;
    use layers_gateway::origin::{HttpUpstream, Upstream};
    let origin = RecordingOrigin::default();
    let addr = origin.start().await;
    let cfg = test_config(&format!("http://{addr}"), "[metrics]\nper_org_label = true\n");
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let client = TestClient::new(app.addr);
    let r = client.get("/v1/jobs/job_1", &admin_key()).await;
    assert_eq!(r.status, 302, "the redirect passes through");
    let admin = TestClient::new(app.admin_addr);
    let text = admin.send(Method::GET, "/metrics", &[], Bytes::new()).await.body;
    let e = parse(core::str::from_utf8(&text).unwrap());
    let route = "/v1/jobs/:jobId";
    assert_eq!(
        e.get(
            "requests_total",
            &[
                ("route", route),
                ("method", "GET"),
                ("status", "302"),
                ("code", "")
            ]
        ),
        1.0
    );
    assert_eq!(
        e.get("org_requests_total", &[("org", "org_demo_a"), ("class", "5xx")]),
        0.0,
        "a 302 is not a server error"
    );
    assert_eq!(
        e.get("org_requests_total", &[("org", "org_demo_a"), ("class", "3xx")]),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_evicted_connections_are_counted() {
    use layers_gateway::app::App;
    use layers_gateway::origin::{HttpUpstream, Upstream};
    let origin = RecordingOrigin::default();
    let addr = origin.start().await;
    let mut cfg = test_config(&format!("http://{addr}"), "");
    cfg.server.max_connections = 1;
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
    let admin = TestClient::new(app.admin_addr);
    let metrics = || async {
        let body = admin.send(Method::GET, "/metrics", &[], Bytes::new()).await.body;
        parse(core::str::from_utf8(&body).unwrap())
    };
    assert_eq!(metrics().await.get("connections_open", &[]), 0.0);
    // One connection takes the only slot (idle: no request sent yet).
    let held = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics().await.get("connections_open", &[]) != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections_open never reached 1"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The startup probe of the origin has been answered (no background traffic).
    while admin.send(Method::GET, "/readyz", &[], Bytes::new()).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = metrics().await;
    // The next connection takes the idle one's slot (the 503 when every
    // connection is busy, and its count, are in tests/hardening.rs).
    let answer = raw_exchange(app.addr, b"GET /v1/whoami HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let after = metrics().await;
    let evicted = |m: &Exposition| m.get("connections_cut_total", &[("reason", "evicted_idle")]);
    assert_eq!((evicted(&before), evicted(&after)), (0.0, 1.0));
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics().await.get("connections_open", &[]) != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections_open never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Ops files and docs stay in step with the code
// ---------------------------------------------------------------------------

/// Metric family names registered in `src/metrics.rs` and its submodules
/// (without the prefix): the string literal after `counter(&r,` /
/// `gauge(&r,` / `histogram(&r,` / `single(`, and any literal
/// `layers_gateway_<name>`.
fn registered_families() -> BTreeSet<String> {
    let src = &[
        include_str!("../src/metrics.rs"),
        include_str!("../src/metrics/representation.rs"),
    ]
    .join("\n");
    let mut out = BTreeSet::new();
    let mut i = 0;
    let b = src.as_bytes();
    while let Some(off) = src[i..].find('"') {
        let start = i + off + 1;
        let mut j = start;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        let lit = &src[start..j.min(src.len())];
        let before = src[..start - 1].trim_end();
        let word = !lit.is_empty()
            && lit
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        let registered = before.ends_with("&r,") || before.ends_with("single(") || lit.starts_with(P);
        if word && registered {
            out.insert(lit.trim_start_matches(P).to_owned());
        }
        i = j + 1;
        if i >= src.len() {
            break;
        }
    }
    out
}

/// Cluster metric families (without the prefix): the literal after
/// `counter(` / `gauge(` / `vec(` / `name(` in `src/cluster/stats.rs`,
/// which prefixes each with `cluster_`.
fn cluster_families() -> BTreeSet<String> {
    let src = include_str!("../src/cluster/stats.rs");
    let mut out = BTreeSet::new();
    for opener in ["counter(", "gauge(", "vec(", "name("] {
        for (i, _) in src.match_indices(opener) {
            let rest = src[i + opener.len()..].trim_start();
            let Some(lit) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) else {
                continue;
            };
            if !lit.is_empty() && lit.bytes().all(|c| c.is_ascii_lowercase() || c == b'_') {
                out.insert(format!("cluster_{lit}"));
            }
        }
    }
    out
}

/// Every `layers_gateway_<name>` in `text`, as a family name.
fn referenced_families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(P) {
        let name: String = text[i + P.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .map_or(name.clone(), str::to_owned);
        out.insert(name);
    }
    out
}

#[test]
fn ops_files_and_docs_name_only_real_metrics_and_document_every_metric() {
    let registered = registered_families();
    for core in [
        "requests_total",
        "request_duration_seconds",
        "build_info",
        "webhooks_ignored_total",
    ] {
        assert!(registered.contains(core), "scanner missed {core}: {registered:?}");
    }

    // The dashboard: valid JSON, every query on a real metric, the panels the issue asks for.
    let dashboard: Value =
        serde_json::from_str(include_str!("../config/grafana-dashboard.json")).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("every target has an expr").to_owned());
        }
    }
    let used = referenced_families(&exprs.join("\n"));
    // Cluster mode's families (src/cluster/stats.rs) are exported too.
    let mut known = registered.clone();
    known.extend(cluster_families());
    // The reload counter is registered by `src/reload.rs`.
    known.extend(referenced_families(include_str!("../src/reload.rs")));
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries unknown metrics: {unknown:?}"
    );
    for must in [
        "requests_total",
        "cache_lookups_total",
        "request_duration_seconds",
        "origin_requests_total",
        "origin_request_duration_seconds",
        "invalidations_total",
        "auth_failures_total",
    ] {
        assert!(used.contains(must), "dashboard does not chart {must}");
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for must in [
        "Request rate by status",
        "Hit ratio",
        "Latency p50 / p99",
        "Origin errors",
    ] {
        assert!(titles.contains(&must), "no panel {must:?} in {titles:?}");
    }
    assert!(titles.contains(&"Origin latency p50 / p99") && titles.contains(&"Invalidations"));
    assert!(titles.contains(&"Auth failures"));

    // The alert rules name only real metrics. `access_log_dropped_total`
    // is the access-log writer's drop counter (issue 18), written against
    // its documented name before it lands.
    let alerts = include_str!("../config/alerts.yml");
    let mut unknown: Vec<_> = referenced_families(alerts).difference(&known).cloned().collect();
    unknown.retain(|n| n != "access_log_dropped_total");
    assert!(unknown.is_empty(), "alerts query unknown metrics: {unknown:?}");

    // The scrape config points at the default admin listener's /metrics.
    let prom = include_str!("../config/prometheus.yml");
    let defaults = layers_gateway::config::Config::parse(
        include_str!("../config/gateway.toml"),
        std::path::PathBuf::new(),
    )
    .expect("config/gateway.toml is valid");
    assert!(
        prom.contains(&format!("- {}", defaults.admin.listen)),
        "scrape target"
    );
    assert!(prom.contains("metrics_path: /metrics"));

    // docs/metrics.md documents every registered family and no other.
    let docs = include_str!("../docs/metrics.md");
    let missing: Vec<_> = registered
        .iter()
        .filter(|n| !docs.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "docs/metrics.md lacks {missing:?}");
    let documented: BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.ends_with("_total") || registered.contains(*n) || n.contains("_seconds"))
        .map(str::to_owned)
        .collect();
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        stale.is_empty(),
        "docs/metrics.md documents metrics that do not exist: {stale:?}"
    );
}
