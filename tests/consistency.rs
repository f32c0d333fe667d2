//! A seeded concurrency checker for promise 1 (DESIGN section 2, "No
//! revoked URL"): many readers hammer the gateway while one driver
//! regenerates, edits, deletes and re-creates containers at the origin and
//! delivers the signed events itself. Every read is checked against the
//! events acknowledged before it started:
//!
//! - no URL in a body belongs to an asset revoked by such an event;
//! - an asset id revoked by such an event never answers 200 (ids are never
//!   re-issued);
//! - a container body is never older than the caption those events set.
//!
//! The choices (containers, actions, which reads) follow a fixed seed,
//! printed and overridable with `LAYERS_CHECKER_SEED`; `LAYERS_CHECKER_READS`
//! and `LAYERS_CHECKER_EVENTS` raise or lower the minimum counts,
//! `LAYERS_CHECKER_MODE=in-process` skips the sockets. The run is bounded:
//! it fails if it has not finished after `DEADLINE`.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::demo::Simulator;
use layers_gateway::ids::ContainerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use support::*;

const DEFAULT_SEED: u64 = 0x1A7E_5EED_2026;
const CONTAINERS: usize = 20;
const READERS: usize = 16;
const DEFAULT_MIN_READS: u64 = 100_000;
const DEFAULT_MIN_EVENTS: u64 = 1_000;
/// The whole run, readers and driver, must finish within this.
const DEADLINE: Duration = Duration::from_secs(240);
const ORG: &str = "org_demo_a";
/// Extra gateway config. The readers use the admin demo key (tier `pilot`);
/// if rate limiting shapes them, raise that tier's read-light limit here.
/// Rate limiting stays on (the full request path is checked), with the demo
/// admin key's tier raised so the checker's volume is never refused.
const GATEWAY_CONFIG: &str = "[shaping.tiers.pilot]\nread_light_per_min = 10000000\nwrite_light_per_min = 1000000\nlong_running_per_min = 1000000\ndaily_writes = 100000000\n";
const WEBHOOK: &str = "/webhooks/layers";
/// Violations and unexpected answers kept for the failure message.
const KEEP: usize = 20;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// What the checker knows about one container. Written by the driver
/// (after an event is acknowledged), read by readers.
#[derive(Default)]
struct Track {
    /// Every asset id ever issued for the container, oldest first.
    issued: Vec<String>,
    /// The asset ids as of the last acknowledged event (empty if deleted).
    current: Vec<String>,
    /// Revoked asset id -> ack number of the event that revoked it.
    revoked_ids: HashMap<String, u64>,
    /// Revoked URL (`url` and `thumbnailUrl`) -> ack number.
    revoked_urls: HashMap<String, u64>,
    /// (ack number, caption version after that event), in ack order.
    captions: Vec<(u64, u64)>,
}

impl Track {
    /// The caption version every read that started after `ack` acks must
    /// show at least.
    fn caption_floor(&self, acks: u64) -> u64 {
        let n = self.captions.partition_point(|(a, _)| *a <= acks);
        n.checked_sub(1).map_or(0, |i| self.captions[i].1)
    }
}

struct Shared {
    ids: Vec<ContainerId>,
    tracks: Vec<RwLock<Track>>,
    /// Number of acknowledged events; event k (1-based) has ack number k.
    /// Stored by the driver only after the event's record is in its track.
    acks: AtomicU64,
    reads: AtomicU64,
    stop: AtomicBool,
    violations: AtomicU64,
    unexpected: AtomicU64,
    /// The first `KEEP` violations and unexpected answers, described.
    notes: Mutex<Vec<String>>,
    /// Counts by kind: container 200 / 404, asset 200 / 404, hits.
    container_200: AtomicU64,
    container_404: AtomicU64,
    asset_200: AtomicU64,
    asset_404: AtomicU64,
    hits: AtomicU64,
}

impl Shared {
    fn note(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut n = self.notes.lock().unwrap();
        if n.len() < KEEP {
            n.push(what);
        }
    }
}

/// Caption text for a version: `"<index> v<version>"`.
fn caption(index: usize, version: u64) -> String {
    format!("checker container {index} v{version}")
}

fn caption_version(c: &str) -> Option<u64> {
    c.rsplit_once(" v")?.1.parse().ok()
}

/// Every URL anywhere in a JSON value.
fn urls(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with("https://") => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| urls(x, out)),
        Value::Object(o) => o.values().for_each(|x| urls(x, out)),
        _ => {}
    }
}

fn asset_ids(c: &Value) -> Vec<String> {
    c["assets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["assetId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn asset_refs(c: &Value) -> Value {
    let refs: Vec<Value> = c["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| json!({ "assetId": a["assetId"], "url": a["url"] }))
        .collect();
    Value::Array(refs)
}

/// A v4-shaped container id from the seeded generator.
fn container_id(rng: &mut StdRng) -> ContainerId {
    let v = rng.random::<u128>() & !(0xF << 76) & !(0x3 << 62);
    ContainerId::from_u128(v | (0x4 << 76) | (0x2 << 62))
}

/// A container with `n` fresh assets `chk<index>-<serial>`.
fn make_container(id: ContainerId, index: usize, n: usize, serial: &mut u64, caption_v: u64) -> Value {
    let base = format!("https://cdn.layers.example/{ORG}/{}", id.uuid_string());
    let assets: Vec<Value> = (0..n)
        .map(|k| {
            *serial += 1;
            let asset = format!("chk{index}-{}", *serial);
            if k == 0 {
                json!({ "assetId": asset, "kind": "video", "url": format!("{base}/{asset}.mp4"),
                    "thumbnailUrl": format!("{base}/{asset}-thumb.jpg"), "mimeType": "video/mp4",
                    "durationMs": 12_000 })
            } else {
                json!({ "assetId": asset, "kind": "image", "url": format!("{base}/{asset}.jpg"),
                    "thumbnailUrl": if k % 2 == 0 { Value::Null } else { Value::from(format!("{base}/{asset}-thumb.jpg")) } })
            }
        })
        .collect();
    json!({
        "id": id.to_string(),
        "projectId": "prj_checker",
        "status": "completed",
        "format": "slideshow",
        "caption": caption(index, caption_v),
        "assets": assets,
        "approvalStatus": "approved",
        "createdAt": "2026-11-27T10:00:00Z",
        "updatedAt": "2026-11-27T10:00:00Z",
    })
}

/// One reader: random reads of containers and of known asset ids, each
/// checked against the events acknowledged before it was sent.
async fn reader(gw: Gw, shared: Arc<Shared>, seed: u64, deadline: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    let key = admin_key();
    while !shared.stop.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            shared.note(&shared.unexpected, "reader: deadline passed".into());
            shared.stop.store(true, Ordering::SeqCst);
            break;
        }
        let ci = rng.random_range(0..shared.ids.len());
        let id = shared.ids[ci];
        let asset = if rng.random_bool(0.5) {
            None
        } else {
            let t = shared.tracks[ci].read().unwrap();
            let pick_current = !t.current.is_empty() && rng.random_bool(0.6);
            let from = if pick_current { &t.current } else { &t.issued };
            Some(from[rng.random_range(0..from.len())].clone())
        };
        let path = match &asset {
            None => format!("/v1/content/{id}"),
            Some(a) => format!("/v1/content/{id}/assets/{a}"),
        };
        let acks = shared.acks.load(Ordering::SeqCst);
        let r = gw
            .send(Method::GET, &path, &[("x-api-key", &key)], Bytes::new())
            .await;
        shared.reads.fetch_add(1, Ordering::SeqCst);
        check(&shared, ci, asset.as_deref(), acks, &path, &r);
    }
}

fn check(shared: &Shared, ci: usize, asset: Option<&str>, acks: u64, path: &str, r: &Reply) {
    let status = r.status.as_u16();
    if status == 404 {
        let c = if asset.is_some() {
            &shared.asset_404
        } else {
            &shared.container_404
        };
        c.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if status != 200 {
        let body = String::from_utf8_lossy(&r.body);
        shared.note(&shared.unexpected, format!("GET {path} -> {status}: {body}"));
        return;
    }
    if r.x_cache() == Some("HIT") {
        shared.hits.fetch_add(1, Ordering::Relaxed);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
        shared.note(
            &shared.unexpected,
            format!("GET {path} -> 200 with a non-JSON body"),
        );
        return;
    };
    let t = shared.tracks[ci].read().unwrap();
    let revoked_before = |at: Option<&u64>| at.is_some_and(|a| *a <= acks);
    let mut found = Vec::new();
    urls(&v, &mut found);
    for u in &found {
        if revoked_before(t.revoked_urls.get(u)) {
            shared.note(
                &shared.violations,
                format!(
                    "GET {path} (started after ack {acks}) carried {u}, revoked by ack {}",
                    t.revoked_urls[u]
                ),
            );
        }
    }
    match asset {
        Some(a) => {
            shared.asset_200.fetch_add(1, Ordering::Relaxed);
            if revoked_before(t.revoked_ids.get(a)) {
                shared.note(
                    &shared.violations,
                    format!(
                        "GET {path} (started after ack {acks}) answered 200 for an asset revoked by ack {}",
                        t.revoked_ids[a]
                    ),
                );
            }
        }
        None => {
            shared.container_200.fetch_add(1, Ordering::Relaxed);
            for a in asset_ids(&v) {
                if revoked_before(t.revoked_ids.get(&a)) {
                    shared.note(
                        &shared.violations,
                        format!(
                            "GET {path} (started after ack {acks}) listed asset {a}, revoked by ack {}",
                            t.revoked_ids[&a]
                        ),
                    );
                }
            }
            let floor = t.caption_floor(acks);
            match v["caption"].as_str().and_then(caption_version) {
                Some(cv) if cv >= floor => {}
                other => shared.note(
                    &shared.violations,
                    format!("GET {path} (started after ack {acks}) has caption version {other:?}, older than v{floor}"),
                ),
            }
        }
    }
}

/// What the driver keeps per container (only it mutates the origin).
struct Local {
    value: Value,
    deleted: bool,
    caption_v: u64,
}

/// One acknowledged change (a webhook the driver delivered, or a mutation
/// through the gateway), for the track.
struct Applied {
    revoked_ids: Vec<String>,
    revoked_urls: Vec<String>,
    /// Asset ids this event issued.
    new_ids: Vec<String>,
    /// The container's asset ids after it.
    now: Vec<String>,
    caption_v: u64,
}

#[allow(clippy::too_many_arguments)]
async fn driver(
    gw: Gw,
    sim: Simulator,
    shared: Arc<Shared>,
    mut local: Vec<Local>,
    mut rng: StdRng,
    mut serial: u64,
    min_reads: u64,
    min_events: u64,
    deadline: Instant,
) -> u64 {
    let mut events = 0u64;
    while events < min_events || shared.reads.load(Ordering::SeqCst) < min_reads {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if Instant::now() > deadline {
            shared.note(&shared.unexpected, "driver: deadline passed".into());
            break;
        }
        let ci = rng.random_range(0..local.len());
        let id = shared.ids[ci];
        let l = &mut local[ci];
        let roll = rng.random_range(0..100);
        let key = admin_key();
        let auth = [("x-api-key", key.as_str()), ("content-type", "application/json")];
        // (what, webhook type and data if the driver delivers one, record)
        let (what, webhook, applied): (&str, Option<Value>, Applied) = if l.deleted {
            // New content under the same container id, with fresh assets.
            let n = rng.random_range(2..=5);
            let value = make_container(id, ci, n, &mut serial, l.caption_v);
            sim.insert_container(ORG, value.clone());
            let data = json!({ "id": id.to_string(), "previousAssetIds": [], "assets": asset_refs(&value) });
            let now = asset_ids(&value);
            l.value = value;
            l.deleted = false;
            let a = Applied {
                revoked_ids: vec![],
                revoked_urls: vec![],
                new_ids: now.clone(),
                now,
                caption_v: l.caption_v,
            };
            ("content.generated", Some(data), a)
        } else if roll < 45 {
            let r = sim.regenerate(id).expect("a live container regenerates");
            l.value = sim.container(id).expect("and is still there");
            let data = json!({ "id": id.to_string(), "previousAssetIds": r.previous_asset_ids,
                "assets": asset_refs(&l.value) });
            let a = Applied {
                revoked_ids: r.previous_asset_ids,
                revoked_urls: r.previous_urls,
                new_ids: r.new_asset_ids.clone(),
                now: r.new_asset_ids,
                caption_v: l.caption_v,
            };
            ("content.regenerated", Some(data), a)
        } else if roll < 55 {
            // Regenerate through the gateway (write-through).
            let path = format!("/v1/content/{id}/regenerate");
            let r = gw.send(Method::POST, &path, &auth, Bytes::new()).await;
            if r.status != 200 {
                let body = String::from_utf8_lossy(&r.body).into_owned();
                shared.note(&shared.unexpected, format!("POST {path} -> {}: {body}", r.status));
                break;
            }
            let now: Value = serde_json::from_slice(&r.body).expect("regenerate answers JSON");
            let mut revoked_urls = Vec::new();
            urls(&l.value["assets"], &mut revoked_urls);
            let a = Applied {
                revoked_ids: asset_ids(&l.value),
                revoked_urls,
                new_ids: asset_ids(&now),
                now: asset_ids(&now),
                caption_v: l.caption_v,
            };
            l.value = now;
            ("write-through regenerate", None, a)
        } else if roll < 70 {
            l.caption_v += 1;
            assert!(sim.update_caption(id, &caption(ci, l.caption_v)));
            let a = Applied {
                revoked_ids: vec![],
                revoked_urls: vec![],
                new_ids: vec![],
                now: asset_ids(&l.value),
                caption_v: l.caption_v,
            };
            ("content.updated", Some(json!({ "id": id.to_string() })), a)
        } else if roll < 80 {
            // Caption edit through the gateway (write-through).
            l.caption_v += 1;
            let path = format!("/v1/content/{id}");
            let body = json!({ "caption": caption(ci, l.caption_v) }).to_string();
            let r = gw.send(Method::PATCH, &path, &auth, Bytes::from(body)).await;
            if r.status != 200 {
                let body = String::from_utf8_lossy(&r.body).into_owned();
                shared.note(
                    &shared.unexpected,
                    format!("PATCH {path} -> {}: {body}", r.status),
                );
                break;
            }
            let a = Applied {
                revoked_ids: vec![],
                revoked_urls: vec![],
                new_ids: vec![],
                now: asset_ids(&l.value),
                caption_v: l.caption_v,
            };
            ("write-through caption edit", None, a)
        } else {
            // Delete, at the origin plus webhook or through the gateway.
            let through_gateway = roll >= 92;
            if through_gateway {
                let path = format!("/v1/content/{id}");
                let r = gw.send(Method::DELETE, &path, &auth, Bytes::new()).await;
                if r.status != 204 {
                    let body = String::from_utf8_lossy(&r.body).into_owned();
                    shared.note(
                        &shared.unexpected,
                        format!("DELETE {path} -> {}: {body}", r.status),
                    );
                    break;
                }
            } else {
                assert!(sim.delete(id));
            }
            let mut revoked_urls = Vec::new();
            urls(&l.value["assets"], &mut revoked_urls);
            let data = json!({ "id": id.to_string(), "assets": asset_refs(&l.value) });
            l.deleted = true;
            let a = Applied {
                revoked_ids: asset_ids(&l.value),
                revoked_urls,
                new_ids: vec![],
                now: vec![],
                caption_v: l.caption_v,
            };
            if through_gateway {
                ("write-through delete", None, a)
            } else {
                ("content.deleted", Some(data), a)
            }
        };

        if let Some(data) = webhook {
            let evt = format!("evt_01CHECKER{:016}", events + 1);
            let body = json!({ "id": evt, "type": what, "data": data }).to_string();
            let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
            headers.push(("x-layers-event-id".into(), evt.clone()));
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let r = gw.send(Method::POST, WEBHOOK, &h, Bytes::from(body)).await;
            if r.status != 200 || r.body.as_ref() != br#"{"status":"applied"}"# {
                shared.note(
                    &shared.unexpected,
                    format!(
                        "{what} {evt} -> {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ),
                );
                break;
            }
        }
        // Acknowledged: record it, then publish its ack number.
        let ack = shared.acks.load(Ordering::SeqCst) + 1;
        {
            let mut t = shared.tracks[ci].write().unwrap();
            for a in applied.revoked_ids {
                t.revoked_ids.insert(a, ack);
            }
            for u in applied.revoked_urls {
                t.revoked_urls.insert(u, ack);
            }
            t.captions.push((ack, applied.caption_v));
            t.issued.extend(applied.new_ids);
            t.current = applied.now;
        }
        shared.acks.store(ack, Ordering::SeqCst);
        events += 1;
        tokio::task::yield_now().await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_ever_carries_a_revoked_url_or_asset() {
    let seed = env_u64("LAYERS_CHECKER_SEED").unwrap_or(DEFAULT_SEED);
    let min_reads = env_u64("LAYERS_CHECKER_READS").unwrap_or(DEFAULT_MIN_READS);
    let min_events = env_u64("LAYERS_CHECKER_EVENTS").unwrap_or(DEFAULT_MIN_EVENTS);
    let in_process_mode = std::env::var("LAYERS_CHECKER_MODE").is_ok_and(|m| m == "in-process");
    println!(
        "checker: seed={seed} (set LAYERS_CHECKER_SEED to replay) mode={}",
        if in_process_mode { "in-process" } else { "tcp" }
    );
    let started = Instant::now();
    let deadline = started + DEADLINE;

    let sim = demo_simulator();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut serial = 0u64;
    let mut ids = Vec::new();
    let mut tracks = Vec::new();
    let mut local = Vec::new();
    for i in 0..CONTAINERS {
        let id = container_id(&mut rng);
        let n = rng.random_range(2..=5);
        let value = make_container(id, i, n, &mut serial, 0);
        assert_eq!(sim.insert_container(ORG, value.clone()), id);
        let current = asset_ids(&value);
        tracks.push(RwLock::new(Track {
            issued: current.clone(),
            current,
            ..Track::default()
        }));
        ids.push(id);
        local.push(Local {
            value,
            deleted: false,
            caption_v: 0,
        });
    }
    let shared = Arc::new(Shared {
        ids,
        tracks,
        acks: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        violations: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        notes: Mutex::new(Vec::new()),
        container_200: AtomicU64::new(0),
        container_404: AtomicU64::new(0),
        asset_200: AtomicU64::new(0),
        asset_404: AtomicU64::new(0),
        hits: AtomicU64::new(0),
    });

    // The webhook target stays unset: the driver delivers every event.
    let (harness, gw) = if in_process_mode {
        (None, Gw::Local(in_process(&sim, GATEWAY_CONFIG)))
    } else {
        let h = Harness::with(sim.clone(), GATEWAY_CONFIG).await;
        let gw = Gw::Tcp(Box::new(h.client.clone()));
        (Some(h), gw)
    };

    let mut readers = tokio::task::JoinSet::new();
    for i in 0..READERS {
        let reader_seed = seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1));
        readers.spawn(reader(gw.clone(), shared.clone(), reader_seed, deadline));
    }
    // The driver checks the deadline between events; the timeout also
    // bounds a request that never comes back.
    let events = tokio::time::timeout(
        DEADLINE + Duration::from_secs(30),
        driver(
            gw.clone(),
            sim.clone(),
            shared.clone(),
            local,
            rng,
            serial,
            min_reads,
            min_events,
            deadline,
        ),
    )
    .await;
    shared.stop.store(true, Ordering::SeqCst);
    let events = events.unwrap_or_else(|_| panic!("seed {seed}: the driver did not finish in time"));
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = readers.join_next().await {
            r.expect("reader task does not panic");
        }
    })
    .await;
    assert!(joined.is_ok(), "readers stop once the driver is done");
    if let Some(h) = harness {
        h.stop().await;
    }

    let reads = shared.reads.load(Ordering::SeqCst);
    let violations = shared.violations.load(Ordering::SeqCst);
    let unexpected = shared.unexpected.load(Ordering::SeqCst);
    let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
    println!("checker: reads={reads} events={events} violations={violations} seed={seed}");
    println!(
        "checker: container 200={} 404={}, asset 200={} 404={}, cache hits={}, unexpected={unexpected}, origin requests={}, elapsed={:.1}s",
        load(&shared.container_200),
        load(&shared.container_404),
        load(&shared.asset_200),
        load(&shared.asset_404),
        load(&shared.hits),
        sim.total_requests(),
        started.elapsed().as_secs_f64()
    );
    let notes = shared.notes.lock().unwrap().join("\n  ");
    assert_eq!(violations, 0, "seed {seed}: revoked data served:\n  {notes}");
    assert_eq!(unexpected, 0, "seed {seed}: unexpected answers:\n  {notes}");
    assert!(
        reads >= min_reads && events >= min_events,
        "seed {seed}: ran {reads} reads and {events} events, wanted {min_reads} and {min_events}"
    );
    // Every kind of answer was exercised, so the checks above meant something.
    for (what, n) in [
        ("container 200", load(&shared.container_200)),
        ("container 404", load(&shared.container_404)),
        ("asset 200", load(&shared.asset_200)),
        ("asset 404", load(&shared.asset_404)),
        ("cache hit", load(&shared.hits)),
    ] {
        assert!(n > 0, "seed {seed}: no {what} in the whole run");
    }
}
