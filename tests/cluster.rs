//! Cluster mode: invalidations accepted by one instance reach every other
//! through the Redis stream, an instance that cannot show it is caught up
//! stops serving from cache, a stream gap flushes the cache, and tier
//! limits hold across instances (DESIGN sections 2.1 and 4).
//!
//! Each test starts its own `redis-server` on a free port (see
//! `support/redis.rs`; skipped without one unless `LAYERS_REQUIRE_REDIS=1`).
//! Instances are in-process gateways sharing one simulator, each with a
//! `ClusterNode` wired the way the service wires it: stream entries go to
//! `Gateway::apply_invalidation`, a flush is a purge-all, and a cached
//! route is served through the gateway (possibly from cache) only while
//! `is_synced()`, else from the origin.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use bytes::Bytes;
use cluster_support::*;
use http::Method;
use layers_gateway::cluster::entry_mac::EntryKey;
use layers_gateway::cluster::{
    ApplyFn, ClusterDailyCap, ClusterLimiter, ClusterNode, ClusterSettings, ClusterStats, FlushFn,
};
use layers_gateway::events::webhook::{parse_event, ParsedEvent};
use layers_gateway::events::{EventType, Invalidation};
use layers_gateway::ids::ContainerId;
use layers_gateway::shaping::{EndpointClass, Limit};
use redis_support::{Partition, RedisServer};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const WEBHOOK: &str = "/webhooks/layers";

// ---------------------------------------------------------------------------
// Propagation.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_accepted_by_one_instance_reaches_the_other() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = Instance::start(&sim, settings(&redis.url(), "a")).await;
    let b = Instance::start(&sim, settings(&redis.url(), "b")).await;
    assert!(a.node.is_synced() && b.node.is_synced());
    let (id, _) = first_container(&sim);
    let path = container_path(id);

    // Regenerate through A: A applies it (write-through) and publishes it.
    let old = warm(&b.gw, id).await;
    let old_ids = asset_ids(&old);
    let key = admin_key();
    let r = call(
        &a.gw,
        Method::POST,
        &format!("{path}/regenerate"),
        &[("x-api-key", &key), ("content-type", "application/json")],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    // Until B hears of it, B's cache still has the old version.
    let stale = call_get(&b.gw, &path, &key).await;
    assert_eq!(stale.x_cache(), Some("HIT"));
    assert_eq!(asset_ids(&stale.json()), old_ids);
    a.node
        .publish(&regenerated(id, asset_ids(&r.json())))
        .await
        .unwrap();
    eventually(
        "B drops the regenerated container",
        Duration::from_secs(5),
        || async { !carries_any(&call_get(&b.gw, &path, &key).await.body, &old_ids) },
    )
    .await;
    let fresh = call_get(&b.gw, &path, &key).await;
    assert_eq!(fresh.json(), sim.container(id).unwrap());
    for asset in &old_ids {
        call_get(&b.gw, &format!("{path}/assets/{asset}"), &key)
            .await
            .assert_error(404, "NOT_FOUND");
    }
    // A met its own entry and skipped it.
    eventually("A reads its own entry back", Duration::from_secs(5), || async {
        a.stat(|s| s.duplicates.get()) >= 1
    })
    .await;
    assert_eq!(b.stat(|s| s.applied.get()), 1);

    // A webhook delivered only to B: A drops the container.
    let before = warm(&a.gw, id).await;
    let regen = sim.regenerate(id).unwrap();
    assert_eq!(asset_ids(&before), regen.previous_asset_ids);
    let now = sim.container(id).unwrap();
    let event_id = "evt_01CLUSTERTEST000000000001";
    let body = json!({
        "id": event_id,
        "type": "content.regenerated",
        "data": {
            "id": id.to_string(),
            "previousAssetIds": regen.previous_asset_ids,
            "assets": now["assets"].as_array().unwrap().iter()
                .map(|x| json!({"assetId": x["assetId"], "url": x["url"]})).collect::<Vec<_>>(),
        }
    })
    .to_string();
    let mut headers = signed_webhook(&body, WEBHOOK_SECRET, unix_now());
    headers.push(("x-layers-event-id".into(), event_id.into()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = call(&b.gw, Method::POST, WEBHOOK, &h, Bytes::from(body.clone())).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The wiring publishes what the webhook path applied.
    let ParsedEvent::Apply(inv) = parse_event(body.as_bytes()).unwrap() else {
        panic!("a regenerate is applied");
    };
    b.node.publish(&inv).await.unwrap();
    eventually("A drops the container", Duration::from_secs(5), || async {
        let r = call_get(&a.gw, &path, &key).await;
        !carries_any(&r.body, &regen.previous_urls) && !carries_any(&r.body, &regen.previous_asset_ids)
    })
    .await;
    for asset in &regen.previous_asset_ids {
        call_get(&a.gw, &format!("{path}/assets/{asset}"), &key)
            .await
            .assert_error(404, "NOT_FOUND");
    }
    // Applying an event id twice changes nothing: a second copy (the
    // webhook retried through A) is skipped by B.
    let dups = b.stat(|s| s.duplicates.get());
    a.node.publish(&inv).await.unwrap();
    eventually("B skips the second copy", Duration::from_secs(5), || async {
        b.stat(|s| s.duplicates.get()) > dups
    })
    .await;
    assert_eq!(
        a.flushes.load(Ordering::Relaxed) + b.flushes.load(Ordering::Relaxed),
        0
    );
    a.node.stop();
    b.node.stop();
}

// ---------------------------------------------------------------------------
// Losing Redis.
// ---------------------------------------------------------------------------

/// Every answer served from cache at or after `since` carries none of `revoked`.
fn assert_no_revoked_from_cache(log: &[(Instant, Served)], since: Instant, revoked: &[String]) {
    for (at, s) in log {
        if *at >= since && s.from_cache {
            assert!(
                !carries_any(&s.reply.body, revoked),
                "served a revoked URL from cache {:?} after the event",
                *at - since
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_turns_an_instance_unsynced_and_a_restart_flushes_it() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = Instance::start(&sim, settings(&redis.url(), "a")).await;
    let b = Arc::new(Instance::start(&sim, settings(&redis.url(), "b")).await);
    let (id, _) = first_container(&sim);
    let path = container_path(id);
    warm(&b.gw, id).await;
    let traffic = Traffic::start(b.clone(), sim.clone(), path.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let killed = Instant::now();
    redis.kill();
    // `is_synced` reads the proof's deadline against the clock, so it turns
    // false the moment the deadline passes; the gauge follows when the
    // watchdog task runs, within the same bound.
    let took = eventually("B reports not synced", MAX_UNSYNCED + MARGIN, || async {
        !b.node.is_synced() && b.node.stats().synced.get() == 0
    })
    .await;
    assert!(took <= MAX_UNSYNCED + MARGIN, "{took:?}");

    // The origin regenerates; A accepts the invalidation while Redis is
    // down: applied locally, queued for the stream.
    let event_at = Instant::now();
    let regen = sim.regenerate(id).unwrap();
    let current = asset_ids(&sim.container(id).unwrap());
    let err = a.accept(&regenerated(id, current)).await.unwrap_err();
    assert!(err.contains("queued"), "{err}");
    assert_eq!(a.node.outbox_len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.restart();
    eventually("A's outbox drains", Duration::from_secs(10), || async {
        a.node.outbox_len() == 0
    })
    .await;
    eventually("B is synced again", Duration::from_secs(10), || async {
        b.node.is_synced()
    })
    .await;
    let down_for = killed.elapsed();
    // The restarted Redis kept nothing: B cannot know what it missed, so it
    // flushed its cache, once.
    assert_eq!(b.stat(|s| s.gaps.get()), 1);
    assert_eq!(b.stat(|s| s.flushes.get()), 1);
    assert_eq!(b.flushes.load(Ordering::Relaxed), 1);
    assert!(b.stat(|s| s.reconnects.get()) >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = traffic.stop().await;
    assert_no_revoked_from_cache(&log, event_at, &regen.previous_urls);
    let bypassed = log.iter().filter(|(at, s)| *at > killed && !s.from_cache).count();
    assert!(
        bypassed > 0,
        "requests were served from the origin while unsynced"
    );
    assert!(b.stat(|s| s.bypassed.get()) > 0);
    let after = call_get(&b.gw, &path, &admin_key()).await;
    assert!(!carries_any(&after.body, &regen.previous_urls));

    // Back in sync, the next event reaches B through the stream.
    let applied = b.stat(|s| s.applied.get());
    warm(&b.gw, id).await;
    let regen = sim.regenerate(id).unwrap();
    let current = asset_ids(&sim.container(id).unwrap());
    a.accept(&regenerated(id, current)).await.unwrap();
    eventually("B applies the next event", Duration::from_secs(5), || async {
        let r = call_get(&b.gw, &path, &admin_key()).await;
        b.stat(|s| s.applied.get()) > applied && !carries_any(&r.body, &regen.previous_urls)
    })
    .await;
    println!("redis down for {down_for:?}; unsynced after {took:?}");
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_while_an_instance_is_cut_off_is_applied_when_it_reconnects() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let partition = Partition::to(redis.addr()).await;
    let a = Instance::start(&sim, settings(&redis.url(), "a")).await;
    let b = Arc::new(Instance::start(&sim, settings(&partition.url(), "b")).await);
    assert!(b.node.is_synced());
    let (id, _) = first_container(&sim);
    let path = container_path(id);
    warm(&b.gw, id).await;
    let traffic = Traffic::start(b.clone(), sim.clone(), path.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;

    partition.cut();
    let took = eventually("B reports not synced", MAX_UNSYNCED + MARGIN, || async {
        !b.node.is_synced()
    })
    .await;
    // A (still connected) accepts a regenerate while B is cut off.
    let event_at = Instant::now();
    let regen = sim.regenerate(id).unwrap();
    let current = asset_ids(&sim.container(id).unwrap());
    a.accept(&regenerated(id, current)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.node.is_synced());

    partition.heal();
    eventually(
        "B applies the event and is synced",
        Duration::from_secs(10),
        || async { b.node.is_synced() && b.stat(|s| s.applied.get()) == 1 },
    )
    .await;
    // Resumed from its last id: no gap, no flush.
    assert_eq!(b.stat(|s| s.gaps.get()), 0);
    assert_eq!(b.flushes.load(Ordering::Relaxed), 0);
    assert!(b.stat(|s| s.reconnects.get()) >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = traffic.stop().await;
    assert_no_revoked_from_cache(&log, event_at, &regen.previous_urls);
    assert!(
        log.iter().any(|(_, s)| !s.from_cache),
        "some requests bypassed the cache"
    );
    assert!(
        log.iter().any(|(at, s)| *at > event_at && s.from_cache),
        "caching resumed"
    );
    let r = call_get(&b.gw, &path, &admin_key()).await;
    assert_eq!(r.json(), sim.container(id).unwrap());
    println!("unsynced {took:?} after the cut");
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_past_an_instance_flushes_its_cache_on_reconnect() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let partition = Partition::to(redis.addr()).await;
    let a = Instance::start(&sim, settings(&redis.url(), "a")).await;
    let b = Instance::start(&sim, settings(&partition.url(), "b")).await;
    let (id, _) = first_container(&sim);
    let others: Vec<ContainerId> = sim
        .container_ids()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| *c != id)
        .collect();
    // B is at a real entry.
    a.accept(&regenerated(others[0], Vec::new())).await.unwrap();
    eventually("B applies the first event", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) == 1
    })
    .await;
    warm(&b.gw, id).await;

    partition.cut();
    for c in others.iter().cycle().take(5) {
        a.accept(&regenerated(*c, Vec::new())).await.unwrap();
    }
    // Trim the stream to its last entry: B's next entries are gone.
    let trimmed: i64 = redis.cmd(&["XTRIM", &a.node.settings().stream, "MAXLEN", "1"]);
    assert!(trimmed >= 4, "{trimmed}");
    partition.heal();
    eventually("B flushes after the gap", Duration::from_secs(10), || async {
        b.flushes.load(Ordering::Relaxed) == 1 && b.node.is_synced()
    })
    .await;
    assert_eq!(b.stat(|s| s.gaps.get()), 1);
    assert_eq!(b.stat(|s| s.flushes.get()), 1);
    // Nothing cached survived the flush.
    let r = call_get(&b.gw, &container_path(id), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"));
    // And B goes on reading after the gap.
    let applied = b.stat(|s| s.applied.get());
    a.accept(&regenerated(id, Vec::new())).await.unwrap();
    eventually("B reads on after the gap", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) > applied
    })
    .await;
    assert_eq!(b.flushes.load(Ordering::Relaxed), 1);
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_does_not_decode_flushes_instead_of_being_skipped() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let b = Instance::start(&sim, settings(&redis.url(), "b")).await;
    let (id, _) = first_container(&sim);
    warm(&b.gw, id).await;
    let stream = b.node.settings().stream.clone();
    // Signed (a newer gateway of this cluster wrote it), but not decodable.
    let inv = r#"{"v":9,"type":"content.archived"}"#;
    let key = EntryKey::new(&b.node.settings().resolved_secret().unwrap(), &stream);
    let _: String = redis.cmd(&[
        "XADD",
        &stream,
        "*",
        "event",
        "x",
        "inv",
        inv,
        "mac",
        &key.sign(inv.as_bytes()),
    ]);
    eventually("B flushes", Duration::from_secs(5), || async {
        b.flushes.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(b.stat(|s| s.undecodable.get()), 1);
    let r = call_get(&b.gw, &container_path(id), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"));
    b.node.stop();
}

// ---------------------------------------------------------------------------
// Start-up ordering.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starting_while_events_flow_applies_every_event_after_it_joined() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = Arc::new(Instance::start(&sim, settings(&redis.url(), "a")).await);
    let ids: Vec<ContainerId> = sim.container_ids().into_iter().map(|(_, c)| c).collect();
    // A publishes continuously; each event id is recorded with the time
    // its publish started and finished.
    let published = Arc::new(Mutex::new(Vec::<(String, Instant, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (a, published, stop) = (a.clone(), published.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                // Caption changes: no fence record, so what B applies is
                // exactly the stream entries it read (a join also applies
                // the fence records of older deletes and regenerates).
                let mut inv = regenerated(ids[n as usize % ids.len()], Vec::new());
                inv.event_type = EventType::Updated;
                let event_id = format!("evt_startup_{n:06}");
                inv.event_id = Some(event_id.clone());
                let started = Instant::now();
                a.node.publish(&inv).await.unwrap();
                published
                    .lock()
                    .unwrap()
                    .push((event_id, started, Instant::now()));
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // B: not synced until it has joined, and records what it applies.
    let node = ClusterNode::new(&settings(&redis.url(), "b"), Arc::new(ClusterStats::new())).unwrap();
    assert!(
        !node.is_synced(),
        "a node that has not read the stream is not synced"
    );
    let applied = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = applied.clone();
    let apply: ApplyFn = Arc::new(move |inv: Invalidation| {
        log.lock().unwrap().push(inv.event_id.unwrap());
        Box::pin(async {})
    });
    let flushed = Arc::new(AtomicU64::new(0));
    let f = flushed.clone();
    let flush: FlushFn = Arc::new(move || {
        f.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {})
    });
    let start_called = Instant::now();
    node.start(apply, flush, std::future::pending()).await;
    let joined = Instant::now();
    assert!(node.is_synced());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    publisher.await.unwrap();

    let published = published.lock().unwrap().clone();
    let must: Vec<&String> = published
        .iter()
        .filter(|(_, s, _)| *s >= joined)
        .map(|(e, _, _)| e)
        .collect();
    let must_not: HashSet<&String> = published
        .iter()
        .filter(|(_, _, f)| *f < start_called)
        .map(|(e, _, _)| e)
        .collect();
    assert!(
        must.len() > 10 && must_not.len() > 10,
        "{} / {}",
        must.len(),
        must_not.len()
    );
    eventually(
        "B applies every event after it joined",
        Duration::from_secs(5),
        || {
            let done = {
                let got = applied.lock().unwrap();
                let got: HashSet<&String> = got.iter().collect();
                must.iter().all(|e| got.contains(e))
            };
            async move { done }
        },
    )
    .await;
    let got = applied.lock().unwrap().clone();
    assert!(
        got.iter().all(|e| !must_not.contains(e)),
        "nothing before the join is replayed"
    );
    // In stream order, each once.
    let positions: Vec<usize> = got
        .iter()
        .map(|e| published.iter().position(|(p, _, _)| p == e).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(flushed.load(Ordering::Relaxed), 0, "no gap");
    node.stop();
    a.node.stop();
}

// ---------------------------------------------------------------------------
// Cluster-wide limits.
// ---------------------------------------------------------------------------

/// Calls `check` on `limiter` as fast as it answers for `window`; returns
/// the admitted count.
async fn hammer(limiter: Arc<ClusterLimiter>, key: &'static str, limit: Limit, window: Duration) -> u64 {
    let end = Instant::now() + window;
    let mut admitted = 0;
    while Instant::now() < end {
        if limiter.check(key, EndpointClass::ReadLight, limit).await.allowed {
            admitted += 1;
        }
        tokio::task::yield_now().await;
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_limit_admit_within_the_documented_bound() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let s = ClusterSettings {
        lease_fraction: 0.01,
        instances: 2,
        ..settings(&redis.url(), "a")
    };
    let (sa, sb) = (Arc::new(ClusterStats::new()), Arc::new(ClusterStats::new()));
    let la = Arc::new(ClusterLimiter::new(&s, sa.clone(), 1000).unwrap());
    let lb = Arc::new(ClusterLimiter::new(&s, sb.clone(), 1000).unwrap());
    // 600/min (T = 100 ms), burst 20, lease 6.
    let limit = Limit {
        per_minute: 600,
        burst: 20,
    };
    assert_eq!(la.lease_size(limit), 6);
    assert_eq!(la.minute_bound(limit, 2), 600 + 20 + 2 * 6);
    let window = Duration::from_millis(1_500);
    let started = Instant::now();
    let (na, nb) = tokio::join!(
        tokio::spawn(hammer(la.clone(), "key-1", limit, window)),
        tokio::spawn(hammer(lb.clone(), "key-1", limit, window)),
    );
    let elapsed = started.elapsed();
    let (na, nb) = (na.unwrap(), nb.unwrap());
    // In any window W: burst + floor(W / T) + N x lease.
    let bound = 20 + (elapsed.as_millis() as u64) / 100 + 2 * 6;
    let total = na + nb;
    println!("admitted {na} + {nb} = {total} in {elapsed:?} (bound {bound})");
    assert!(total <= bound, "{total} > {bound}");
    assert!(total >= 20 + 10, "the budget was usable: {total}");
    let leases = sa.lease_requests.with_label_values(&["granted"]).get()
        + sb.lease_requests.with_label_values(&["granted"]).get();
    assert!(
        leases < total,
        "Redis is asked per lease, not per request ({leases} leases)"
    );
    assert_eq!(sa.lease_fallbacks.get() + sb.lease_fallbacks.get(), 0);

    // Redis down: each instance admits its own share (burst 20 / 2 = 10 at once).
    redis.kill();
    let limit2 = Limit::per_minute(60);
    let share = s.fallback_limit(limit2);
    assert_eq!(share, Limit::per_minute(30));
    let mut admitted = [0u32; 2];
    for (i, l) in [&la, &lb].into_iter().enumerate() {
        for _ in 0..100 {
            if l.check("key-2", EndpointClass::ReadLight, limit2).await.allowed {
                admitted[i] += 1;
            }
        }
        assert!(l.is_fallback());
    }
    // 30 at once, +1 if a 2 s emission interval passed during the loop.
    for n in admitted {
        assert!((30..=31).contains(&n), "{admitted:?}");
    }
    assert!(sa.lease_fallbacks.get() >= 100 && sb.lease_fallbacks.get() >= 100);
    assert!(sa.lease_requests.with_label_values(&["error"]).get() >= 1);
    // While marked down no request waits for Redis: the fast path decides.
    assert!(la
        .try_check("key-3", EndpointClass::ReadLight, limit2, Instant::now())
        .is_some());

    // Redis back: after lease_retry, leases resume.
    let granted = sa.lease_requests.with_label_values(&["granted"]).get();
    redis.restart();
    tokio::time::sleep(s.lease_retry() + Duration::from_millis(100)).await;
    eventually("leases resume", Duration::from_secs(5), || async {
        la.check("key-4", EndpointClass::ReadLight, limit2).await.allowed && !la.is_fallback()
    })
    .await;
    assert!(sa.lease_requests.with_label_values(&["granted"]).get() > granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_daily_cap_admit_exactly_the_cap() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let s = ClusterSettings {
        instances: 2,
        ..settings(&redis.url(), "a")
    };
    let (sa, sb) = (Arc::new(ClusterStats::new()), Arc::new(ClusterStats::new()));
    let ca = Arc::new(ClusterDailyCap::new(&s, sa.clone(), 1000).unwrap());
    let cb = Arc::new(ClusterDailyCap::new(&s, sb.clone(), 1000).unwrap());
    let cap = 50;
    let today = unix_now();
    let writes = |c: Arc<ClusterDailyCap>, day: i64| async move {
        let mut admitted = 0u64;
        for _ in 0..100 {
            if c.check("org_demo_a", cap, day).await.allowed {
                admitted += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        admitted
    };
    let (na, nb) = tokio::join!(
        tokio::spawn(writes(ca.clone(), today)),
        tokio::spawn(writes(cb.clone(), today)),
    );
    let (na, nb) = (na.unwrap(), nb.unwrap());
    println!("daily cap {cap}: admitted {na} + {nb}");
    assert_eq!(na + nb, cap, "{na} + {nb}");
    assert!(na > 0 && nb > 0);
    // Spent: both refuse without asking Redis, until the next UTC day.
    let leases = sa.lease_requests.with_label_values(&["refused"]).get();
    assert!(!ca.peek("org_demo_a", cap, today).allowed);
    let d = ca.check("org_demo_a", cap, today).await;
    assert!(!d.allowed && d.retry_after_secs > 0 && d.remaining == 0);
    assert_eq!(sa.lease_requests.with_label_values(&["refused"]).get(), leases);
    assert!(ca.check("org_demo_a", cap, today + 86_400).await.allowed);

    // Redis down: each counts its own share, cap / 2.
    redis.kill();
    let tomorrow = today + 2 * 86_400;
    for c in [&ca, &cb] {
        let mut n = 0;
        for _ in 0..100 {
            if c.check("org_demo_b", cap, tomorrow).await.allowed {
                n += 1;
            }
        }
        assert_eq!(n, cap / 2);
    }
    assert!(sa.lease_fallbacks.get() >= 100 && sb.lease_fallbacks.get() >= 100);
}

/// Without redis-server the tests that need it pass without running; a
/// plain `cargo test` shows that in one line per test binary, not only
/// under `--nocapture`. Runs this very test binary again, with a PATH that
/// has no redis-server, on the tests whose names contain "instance".
#[test]
fn skipping_without_redis_prints_one_visible_line() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["instance", "--test-threads", "2"])
        .env("PATH", "/nonexistent")
        .env_remove("LAYERS_REQUIRE_REDIS")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("passed"), "{stdout}");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.starts_with("SKIPPED: ")).collect();
    assert_eq!(skipped.len(), 1, "one line, however many tests skip: {stderr}");
    assert!(skipped[0].starts_with("SKIPPED: tests/cluster.rs: "), "{stderr}");
    assert!(
        skipped[0].contains("redis-server") && skipped[0].contains("LAYERS_REQUIRE_REDIS=1"),
        "{stderr}"
    );
}
