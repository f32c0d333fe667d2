//! Cluster mode against what real Redis deployments do (issue 15): an
//! entry without an event id, an idle instance, a Redis that refuses
//! writes, a Redis that restarts empty, trims that Redis 7.0 does not
//! record in `max-deleted-entry-id`.
//!
//! Each test starts its own `redis-server` on a free loopback port
//! (`support/redis.rs`; skipped without one unless `LAYERS_REQUIRE_REDIS=1`).
//! Instances are in-process gateways sharing one simulator, wired as the
//! service wires them (`support/cluster.rs`), with the cache gated on the
//! node's synced flag as `[cluster]` gates it: an unsynced instance answers
//! cached routes from the origin, through the fence.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::entry_mac::EntryKey;
use layers_gateway::cluster::{ClusterSettings, SyncReason};
use layers_gateway::config::DEFAULT_UNDATED_HOLD as UNDATED_HOLD;
use layers_gateway::demo::Simulator;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use redis_support::{Partition, RedisServer};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// A lag longer than any test: the origin's reads stay behind throughout.
const LONG_LAG: Duration = Duration::from_secs(600);

fn revoking(id: ContainerId, revoked: Vec<String>, current: Vec<String>, event_id: &str) -> Invalidation {
    Invalidation {
        event_id: Some(event_id.to_owned()),
        source: Source::Webhook,
        event_type: EventType::Regenerated,
        container: Some(id),
        revoked_asset_ids: revoked,
        current_asset_ids: current,
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

fn asset_path(id: ContainerId, asset: &str) -> String {
    format!("/v1/content/{id}/assets/{asset}")
}

/// Neither the deleted container nor the revoked asset is served by `i`
/// (the origin still serves both: its reads lag).
async fn assert_fenced(i: &Instance, name: &str, gone: ContainerId, revoked: &str, of: ContainerId) {
    let r = call_get(&i.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(r.status, 404, "{name} served the deleted container");
    let r = call_get(&i.gw, &asset_path(of, revoked), &admin_key()).await;
    assert_eq!(r.status, 404, "{name} served the revoked asset {revoked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_an_event_id_never_hides_a_later_one() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    let ids = org_a_containers(&sim);
    let ids = &ids[..2];
    for id in ids {
        warm(&b.gw, *id).await;
    }
    // Written by hand (or by an older tool): an empty event id each.
    for id in ids {
        let payload = json!({"v": 1, "eventId": "", "type": "purge", "container": id.to_string(),
            "source": "admin", "origin": "by-hand"})
        .to_string();
        let stream = &b.node.settings().stream;
        // Signed with the cluster secret, as a tool of the operator's would.
        let key = EntryKey::new(&b.node.settings().resolved_secret().unwrap(), stream);
        let mac = key.sign(payload.as_bytes());
        let _: String = redis.cmd(&[
            "XADD", stream, "*", "event", "", "origin", "by-hand", "inv", &payload, "mac", &mac,
        ]);
    }
    eventually("B applies both entries", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) == 2
    })
    .await;
    assert_eq!(b.stat(|s| s.duplicates.get()), 0);
    for id in ids {
        let r = call_get(&b.gw, &container_path(*id), &admin_key()).await;
        assert_eq!(r.x_cache(), Some("MISS"), "the purge of {id} was applied");
    }
    b.node.stop();
}

/// The idle flap: with `max_unsynced_ms = 1000` and a 500 ms block, the
/// proof must be renewed before it runs out on every cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_with_a_healthy_redis_stays_synced() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let s = ClusterSettings {
        max_unsynced_ms: 1_000,
        block_ms: 500,
        // The most validation allows with these two: slack for a loaded
        // machine's replies.
        command_timeout_ms: 166,
        ..settings(&redis.url(), "idle")
    };
    let a = gated(&sim, s).await;
    assert!(a.node.is_synced());
    // Watch the flag from a thread of its own: a lapse lasts milliseconds.
    let node = a.node.clone();
    let watch = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_millis(2_500);
        let (mut lapses, mut was) = (0u32, true);
        while std::time::Instant::now() < end {
            let now = node.is_synced();
            if was && !now {
                lapses += 1;
            }
            was = now;
            std::thread::yield_now();
        }
        lapses
    });
    let lapses = tokio::task::spawn_blocking(move || watch.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        lapses, 0,
        "an idle instance went unsynced {lapses} times in 2.5 s"
    );
    a.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_writes_fails_every_instance_closed_until_it_accepts_them() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    let (id, _) = first_container(&sim);
    let path = container_path(id);
    warm(&b.gw, id).await;
    let traffic = Traffic::start(b.clone(), sim.clone(), path.clone());

    let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let regen = sim.regenerate(id).unwrap();
    let accepted = Instant::now();
    let applied_by_b = b.stat(|s| s.applied.get());
    let published = a
        .accept(&revoking(
            id,
            regen.previous_asset_ids.clone(),
            regen.new_asset_ids.clone(),
            "evt_01REFUSEDWRITE0000000000",
        ))
        .await;
    assert!(published.is_err(), "Redis refused the write");
    assert!(
        !a.node.is_synced(),
        "A refuses to serve from cache until it is published"
    );
    let took = eventually("B fails closed", MAX_UNSYNCED + MARGIN, || async {
        !b.node.is_synced()
    })
    .await;
    println!("B unsynced {took:?} after the refused write");
    // B answers from the origin meanwhile.
    let bypassed = b.stat(|s| s.bypassed.get());
    eventually("B serves from the origin", Duration::from_secs(5), || async {
        b.stat(|s| s.bypassed.get()) > bypassed + 5
    })
    .await;

    // Writes accepted again: A publishes, B applies, both cache again.
    let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    // B synced may be a proof from before A's entry landed: wait for B to
    // have applied it too, or the warm below races it.
    eventually("both synced again", Duration::from_secs(10), || async {
        a.node.is_synced()
            && b.node.is_synced()
            && a.node.outbox_len() == 0
            && b.stat(|s| s.applied.get()) > applied_by_b
    })
    .await;
    let log = traffic.stop().await;
    let since = accepted + MAX_UNSYNCED + MARGIN;
    for (at, s) in &log {
        if *at >= since && s.from_cache {
            assert!(
                !carries_any(&s.reply.body, &regen.previous_urls),
                "B served the regenerated container's old version from cache {:?} after A accepted it",
                *at - accepted
            );
        }
    }
    // B may have re-proven sync, and cached the new version, before A's
    // entry landed: that entry gives no change time, so B then holds every
    // version it knew of out of its cache for `cache.undated_hold_ms`
    // (5 s; it cannot tell a lagging replica's answer from the current
    // one). Within that, B caches the new version again.
    eventually("B caches the new version", UNDATED_HOLD + MARGIN, || async {
        let r = call_get(&b.gw, &path, &admin_key()).await;
        r.x_cache() == Some("HIT") && asset_ids(&r.json()) == regen.new_asset_ids
    })
    .await;
    assert_eq!(b.node.sync_reason(), SyncReason::Synced);
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_and_a_revocation_outlive_a_redis_restart_and_reach_a_new_instance() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (gone, regen_id) = (ids[0], ids[1]);
    for id in [gone, regen_id] {
        sim.set_replica_lag(id, Some(LONG_LAG));
    }
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;

    // The origin deletes one container and regenerates another; its reads
    // lag, so it still serves both as they were. The webhooks reach A.
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01FENCEDELETE00000000000"))
        .await
        .unwrap();
    let regen = sim.regenerate(regen_id).unwrap();
    a.accept(&revoking(
        regen_id,
        regen.previous_asset_ids.clone(),
        regen.new_asset_ids.clone(),
        "evt_01FENCEREGEN000000000000",
    ))
    .await
    .unwrap();
    eventually("B applies both", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) == 2
    })
    .await;
    let revoked = &regen.previous_asset_ids[0];
    assert_fenced(&a, "A", gone, revoked, regen_id).await;
    assert_fenced(&b, "B", gone, revoked, regen_id).await;

    // Redis restarts empty: stream and fence records gone.
    redis.restart();
    eventually("A and B flush and re-sync", Duration::from_secs(10), || async {
        a.flushes.load(Ordering::Relaxed) >= 1
            && b.flushes.load(Ordering::Relaxed) >= 1
            && a.node.is_synced()
            && b.node.is_synced()
    })
    .await;
    assert_fenced(&a, "A", gone, revoked, regen_id).await;
    assert_fenced(&b, "B", gone, revoked, regen_id).await;

    // A third instance joins afterwards: it learns both from Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C synced", Duration::from_secs(5), || async {
        c.node.is_synced()
    })
    .await;
    assert_fenced(&c, "C", gone, revoked, regen_id).await;
    a.node.stop();
    b.node.stop();
    c.node.stop();
}

/// Cuts `b` off, has `a` publish a delete of `gone` and four more entries,
/// trims the stream to its last entry (Redis 7.0 leaves
/// `max-deleted-entry-id` alone), heals, and checks `b` flushed its cache
/// and rebuilt the delete's tombstone from the fence records.
async fn trim_past(sim: &Simulator, redis: &RedisServer, partition: &Partition, a: &Instance, b: &Instance) {
    let ids = org_a_containers(sim);
    let (cached, gone) = (ids[0], ids[1]);
    warm(&b.gw, cached).await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let flushes = b.flushes.load(Ordering::Relaxed);

    partition.cut();
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets.clone(), "evt_01TRIMDELETE000000000000"))
        .await
        .unwrap();
    for c in ids.iter().skip(2).cycle().take(4) {
        a.accept(&regenerated(*c, Vec::new())).await.unwrap();
    }
    let trimmed: i64 = redis.cmd(&["XTRIM", &a.node.settings().stream, "MAXLEN", "1"]);
    assert!(trimmed >= 4, "{trimmed}");
    partition.heal();
    eventually("B flushes after the gap", Duration::from_secs(10), || async {
        b.flushes.load(Ordering::Relaxed) > flushes && b.node.is_synced()
    })
    .await;
    let r = call_get(&b.gw, &container_path(cached), &admin_key()).await;
    assert_eq!(r.x_cache(), Some("MISS"), "nothing cached survived the flush");
    let r = call_get(&b.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(r.status, 404, "B rebuilt the tombstone of a trimmed delete");
    let r = call_get(&b.gw, &asset_path(gone, &assets[0]), &admin_key()).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_while_a_reader_is_at_0_0_flushes_and_rebuilds() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let partition = Partition::to(redis.addr()).await;
    // B joins while the stream does not exist: it reads from 0-0.
    let b = gated(&sim, settings(&partition.url(), "b")).await;
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    trim_past(&sim, &redis, &partition, &a, &b).await;
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_while_a_reader_is_mid_stream_flushes_and_rebuilds() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let partition = Partition::to(redis.addr()).await;
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&partition.url(), "b")).await;
    // B is at a real entry.
    let last = *org_a_containers(&sim).last().unwrap();
    a.accept(&regenerated(last, Vec::new())).await.unwrap();
    eventually("B applies the first event", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) == 1
    })
    .await;
    trim_past(&sim, &redis, &partition, &a, &b).await;
    a.node.stop();
    b.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_that_may_not_xadd_fails_every_instance_closed() {
    let (user, password) = ("gw", "acl-test-password");
    let acl = |rules: &[&str]| {
        let mut args = vec![
            "--user".to_owned(),
            user.to_owned(),
            "on".to_owned(),
            format!(">{password}"),
        ];
        args.extend(rules.iter().map(|r| r.to_string()));
        args
    };
    let Some(redis) =
        RedisServer::start_with(acl(&["~*", "&*", "+@all"]), Some((user.into(), password.into())))
    else {
        return;
    };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    assert!(a.node.is_synced() && b.node.is_synced());

    // The operator takes XADD away: reads still work, writes do not.
    let _: String = redis.cmd(&["ACL", "SETUSER", user, "-xadd"]);
    eventually("both fail closed", MAX_UNSYNCED + MARGIN, || async {
        !a.node.is_synced() && !b.node.is_synced()
    })
    .await;
    assert_eq!(b.node.sync_reason(), SyncReason::Write);
    let (id, _) = first_container(&sim);
    assert!(
        a.accept(&regenerated(id, Vec::new())).await.is_err(),
        "XADD refused"
    );

    let _: String = redis.cmd(&["ACL", "SETUSER", user, "+xadd"]);
    eventually(
        "both synced again, A's event published",
        Duration::from_secs(10),
        || async { a.node.is_synced() && b.node.is_synced() && a.node.outbox_len() == 0 },
    )
    .await;
    eventually("B applies it", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 1
    })
    .await;
    a.node.stop();
    b.node.stop();
}
