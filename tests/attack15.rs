//! The 13 attacks on issue 15's cluster mode from its attacker review
//! (branch `review15`), each renamed for the behaviour that must hold: the
//! fence set evicted by a `volatile-*` policy or expired by one short-lived
//! publication, a write proof that a writable replica or an ACL without
//! ZADD passed, a split-brain Sentinel primary, a joiner without fences, a
//! stream that came and went under a reader at `0-0`, a Redis restart during
//! a trim rebuild, a floor not re-published, an undated delete replayed out
//! of order, a rebuild over its cap, a full fence set, and forged entries.
//! Each failed on the code it was written for.
//!
//! Same harness as `cluster_faults.rs`: a `redis-server` of its own on a
//! free loopback port, in-process gateways in front of one simulator whose
//! reads of the attacked container lag (it still serves it after the
//! delete), wired as the service wires them.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::entry_mac::EntryKey;
use layers_gateway::cluster::keys::StreamKeys;
use layers_gateway::cluster::{ClusterSettings, SyncReason};
use layers_gateway::events::{EventType, Invalidation, Source};
use redis_support::{Partition, RedisServer};
use serde_json::json;
use std::time::Duration;
use support::*;

/// A lag longer than any test: the origin's reads stay behind throughout.
const LONG_LAG: Duration = Duration::from_secs(600);

fn fences_key(i: &Instance) -> String {
    StreamKeys::new(&i.node.settings().stream).fences
}

/// Managed Redis services default to `maxmemory-policy volatile-lru`
/// (ElastiCache, Azure Cache). The fence set used to be the one gateway key
/// with a TTL, so under memory pressure it was the first key evicted while
/// the stream stayed: no gap, no re-publication, and a peer joining
/// afterwards served the deleted container. It has no TTL now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_set_has_no_ttl_so_volatile_eviction_cannot_take_it_and_a_joiner_keeps_the_tombstone() {
    let Some(redis) = RedisServer::start_with(vec!["--maxmemory-policy".into(), "volatile-lru".into()], None)
    else {
        return;
    };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    delete_through(&sim, &a, gone, "evt_01EVICTDELETE00000000000").await;
    let fences = fences_key(&a);
    assert_eq!(redis.cmd::<i64>(&["ZCOUNT", &fences, "-inf", "(+inf"]), 1);

    // volatile-* policies evict only keys with a TTL: the fence set has
    // none (its records expire by score), so memory pressure cannot take it.
    assert_eq!(
        redis.cmd::<i64>(&["PTTL", &fences]),
        -1,
        "the fence set has a TTL, so volatile-lru would evict it first"
    );
    assert_eq!(
        redis.cmd::<i64>(&["EXISTS", &a.node.settings().stream]),
        1,
        "the stream itself survived (no TTL)"
    );
    eventually("A synced again", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;

    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C synced", Duration::from_secs(5), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(
        r.status,
        404,
        "C (synced, gaps={}) serves the deleted container: its fence record was evicted and nothing noticed",
        c.stat(|s| s.gaps.get())
    );
    a.node.stop();
    c.node.stop();
}

/// PUBLISH_SCRIPT sets the whole fence set's expiry to the *current*
/// record's expiry (`PEXPIREAT KEYS[2] ARGV[5]`), so one publication with a
/// shorter retention (an instance configured with shorter tombstone /
/// revoked-id lifetimes during a rolling config change, or simply a clock
/// behind Redis's) shortens the lifetime of every record already there. A's
/// 24 h tombstone record vanishes when B's 2 s record expires; a joiner
/// then serves the deleted container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_publication_does_not_expire_the_other_fence_records() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (gone, other) = (ids[0], ids[1]);
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated_with(
        &sim,
        settings(&redis.url(), "b"),
        "[invalidation]\ntombstone_secs = 2\nrevoked_ttl_secs = 2\n",
    )
    .await;
    delete_through(&sim, &a, gone, "evt_01SHORTDELETE0000000000").await;
    // B accepts an unrelated regenerate (a fence record of its own).
    b.accept(&regenerated(other, Vec::new())).await.unwrap();
    let fences = fences_key(&a);
    assert_eq!(redis.cmd::<i64>(&["ZCOUNT", &fences, "-inf", "(+inf"]), 2);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let left: i64 = redis.cmd(&["ZCOUNT", &fences, "-inf", "(+inf"]);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C synced", Duration::from_secs(5), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(
        r.status, 404,
        "C serves the deleted container: A's 24 h record expired with B's 2 s one ({left} records left)"
    );
    a.node.stop();
    b.node.stop();
    c.node.stop();
}

/// The write half of the proof is "Redis accepted my heartbeat". A replica
/// with `replica-read-only no` (or any writable non-primary: a stale
/// Sentinel answer, a "reader endpoint" that is writable) used to accept
/// the heartbeat and every publication and keep them to itself. Both now
/// check that they run on a primary: the instance there is never synced and
/// its publications are refused (so the event is not acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_replica_neither_proves_sync_nor_acknowledges_a_publication() {
    let Some(primary) = RedisServer::start() else {
        return;
    };
    let Some(replica) = RedisServer::start_with(
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port().to_string(),
            "--replica-read-only".into(),
            "no".into(),
        ],
        None,
    ) else {
        return;
    };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let b = gated(&sim, settings(&primary.url(), "b")).await;
    eventually("replica in sync", Duration::from_secs(10), || async {
        let info: String = replica.cmd(&["INFO", "replication"]);
        info.contains("master_link_status:up")
    })
    .await;
    let a = gated(&sim, settings(&replica.url(), "a")).await;
    warm(&b.gw, id).await;
    let regen = sim.regenerate(id).unwrap();
    let published = a
        .accept(&Invalidation {
            event_id: Some("evt_01REPLICAREGEN0000000000".into()),
            source: Source::Webhook,
            event_type: EventType::Regenerated,
            container: Some(id),
            revoked_asset_ids: regen.previous_asset_ids.clone(),
            current_asset_ids: regen.new_asset_ids.clone(),
            changed_at: None,
            created_at: None,
            replay: false,
            accepted_at: None,
        })
        .await;
    assert!(published.is_err(), "a replica must not acknowledge a publication");
    tokio::time::sleep(MAX_UNSYNCED + MARGIN).await;
    assert!(
        !a.node.is_synced(),
        "an instance on a replica never counts as synced"
    );
    a.node.stop();
    b.node.stop();
}

/// The write half of the proof is one `XADD` to the heartbeat stream, but a
/// publication of a delete or regenerate needs `ZADD`, `ZREMRANGEBYSCORE`,
/// `ZCARD`, `PEXPIREAT`, `XINFO` and `XADD`. A Redis that refuses only part
/// of them (an ACL without `ZADD`, the brief's own example; a fence key of
/// the wrong type) refuses every fence-carrying invalidation while every
/// heartbeat succeeds: the accepting instance fails closed, but every other
/// instance stays synced and serves the old version from cache for as long
/// as it lasts — the shape of the issue's `maxmemory` test, which requires
/// B to fail closed within `max_unsynced_ms + 1 s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_without_zadd_fails_the_write_proof_as_it_fails_publications() {
    let (user, password) = ("gw", "acl-test-password");
    let args = vec![
        "--user".to_owned(),
        user.to_owned(),
        "on".to_owned(),
        format!(">{password}"),
        "~*".to_owned(),
        "&*".to_owned(),
        "+@all".to_owned(),
    ];
    let Some(redis) = RedisServer::start_with(args, Some((user.into(), password.into()))) else {
        return;
    };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    warm(&b.gw, id).await;
    let _: String = redis.cmd(&["ACL", "SETUSER", user, "-zadd"]);
    let regen = sim.regenerate(id).unwrap();
    let published = a
        .accept(&Invalidation {
            event_id: Some("evt_01ACLZADDREGEN0000000000".into()),
            source: Source::Webhook,
            event_type: EventType::Regenerated,
            container: Some(id),
            revoked_asset_ids: regen.previous_asset_ids.clone(),
            current_asset_ids: regen.new_asset_ids.clone(),
            changed_at: None,
            created_at: None,
            replay: false,
            accepted_at: None,
        })
        .await;
    assert!(published.is_err(), "Redis refused the publication");
    assert!(!a.node.is_synced(), "A fails closed");
    tokio::time::sleep(MAX_UNSYNCED + MARGIN).await;
    let s = b.serve(&sim, &container_path(id)).await;
    assert!(
        !(s.from_cache && carries_any(&s.reply.body, &regen.previous_urls)),
        "B (synced: {}) serves the old version from cache {:?} after Redis refused its invalidation",
        b.node.is_synced(),
        MAX_UNSYNCED + MARGIN
    );
    a.node.stop();
    b.node.stop();
}

/// Sentinel used to be asked for the primary only when the reader
/// (re)connected. If the old primary is never demoted (Sentinel cannot
/// reach it: a partition between the sentinels and it, simulated here by a
/// primary whose `REPLICAOF` Sentinel cannot run), an instance connected to
/// it kept reading and heartbeating there — synced — while instances that
/// connected after the failover used the new primary, and invalidations
/// accepted on A never reached C. Every round now asks the sentinels too: a
/// majority must name the primary the instance reads, else it fails closed
/// and reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_a_primary_the_sentinels_no_longer_name_fails_closed_and_follows_them() {
    use redis_support::Sentinel;
    const MASTER: &str = "layers-split";
    let Some(master) = RedisServer::start_with(
        vec![
            "--rename-command".into(),
            "REPLICAOF".into(),
            "".into(),
            "--rename-command".into(),
            "SLAVEOF".into(),
            "".into(),
        ],
        None,
    ) else {
        return;
    };
    let replica = RedisServer::start_with(
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ],
        None,
    )
    .unwrap();
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let Some(s) = Sentinel::start(master.port(), MASTER, 500) else {
            return;
        };
        sentinels.push(s);
    }
    eventually("replica in sync", Duration::from_secs(10), || async {
        let info: String = replica.cmd(&["INFO", "replication"]);
        info.contains("master_link_status:up")
    })
    .await;
    eventually(
        "sentinels know each other and the replica",
        Duration::from_secs(20),
        || async {
            sentinels.iter().all(|s| {
                let peers: Vec<redis::Value> = s.cmd(&["SENTINEL", "SENTINELS", MASTER]);
                let replicas: Vec<redis::Value> = s.cmd(&["SENTINEL", "REPLICAS", MASTER]);
                peers.len() == 2 && replicas.len() == 1
            })
        },
    )
    .await;
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let s = |name: &str| ClusterSettings {
        sentinels: sentinels.iter().map(|s| s.addr().to_string()).collect(),
        sentinel_master: MASTER.into(),
        ..settings(&master.url(), name)
    };
    let a = gated(&sim, s("a")).await;
    assert!(a.node.is_synced());

    let _: String = sentinels[0].cmd(&["SENTINEL", "FAILOVER", MASTER]);
    let new_port = replica.port().to_string();
    eventually(
        "every sentinel names the replica",
        Duration::from_secs(20),
        || async {
            sentinels.iter().all(|s| {
                let addr: Vec<String> = s.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
                addr.get(1) == Some(&new_port)
            })
        },
    )
    .await;
    let role: String = {
        let info: String = master.cmd(&["INFO", "replication"]);
        info.lines()
            .find(|l| l.starts_with("role:"))
            .unwrap_or("")
            .to_owned()
    };
    println!("old primary: {role}");
    let c = gated(&sim, s("c")).await;
    eventually("C synced", Duration::from_secs(10), || async {
        c.node.is_synced()
    })
    .await;
    warm(&c.gw, id).await;

    let regen = sim.regenerate(id).unwrap();
    a.accept(&Invalidation {
        event_id: Some("evt_01SPLITREGEN000000000000".into()),
        source: Source::Webhook,
        event_type: EventType::Regenerated,
        container: Some(id),
        revoked_asset_ids: regen.previous_asset_ids.clone(),
        current_asset_ids: regen.new_asset_ids.clone(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    })
    .await
    .expect("A's publication was acknowledged");
    tokio::time::sleep(MAX_UNSYNCED + MARGIN * 3).await;
    println!(
        "A: moves {} reconnects {} failovers {} hb_err {}; C: applied {} moves {} failovers {}; old master stream len {:?}, new {:?}",
        a.stat(|s| s.primary_moves.get()),
        a.stat(|s| s.reconnects.get()),
        a.stat(|s| s.failovers.get()),
        a.stat(|s| s.heartbeat_errors.get()),
        c.stat(|s| s.applied.get()),
        c.stat(|s| s.primary_moves.get()),
        c.stat(|s| s.failovers.get()),
        master.cmd::<i64>(&["XLEN", &a.node.settings().stream]),
        replica.cmd::<i64>(&["XLEN", &a.node.settings().stream]),
    );
    assert!(
        a.stat(|s| s.sentinel_mismatches.get()) >= 1 && a.stat(|s| s.primary_moves.get()) >= 1,
        "A noticed the sentinels name another primary, and followed them"
    );
    let s = c.serve(&sim, &container_path(id)).await;
    assert!(
        !(s.from_cache && carries_any(&s.reply.body, &regen.previous_urls)),
        "C serves the old version from cache {:?} after A's acknowledged publication (A synced: {}, C synced: {})",
        MAX_UNSYNCED + MARGIN * 3,
        a.node.is_synced(),
        c.node.is_synced()
    );
    a.node.stop();
    c.node.stop();
}

/// An instance that starts while Redis is unreachable (or whose first
/// rebuild fails) is unsynced, so it answers cached routes from the origin
/// "through the fence" — but its fence map is empty: it never read the
/// fence records. It passes the lagging origin's copy of a container
/// deleted (and acknowledged) minutes ago, for as long as Redis stays
/// unreachable. DESIGN §2.1: no revoked URL on any path; the bypass is a
/// path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_that_cannot_reach_redis_answers_503_instead_of_passing_the_lagging_origin() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let partition = Partition::to(redis.addr()).await;
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    delete_through(&sim, &a, gone, "evt_01JOINERDELETE000000000").await;

    partition.cut();
    let c = gated(&sim, settings(&partition.url(), "c")).await;
    assert!(!c.node.is_synced(), "C could not join");
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(
        r.status, 503,
        "unsynced C, which never read the fence records, answered {} (the deleted container from the lagging origin?)",
        r.status
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert!(r.headers.contains_key("x-request-id"));
    a.node.stop();
    c.node.stop();
}

/// A reader that joined while the stream did not exist sits at `0-0` with
/// ordinal 0 (a fresh deployment; every Redis restart until the first
/// publication). If the stream is created and then deleted again before it
/// reads it (an operator's `DEL`, `allkeys-*` eviction, a reset script),
/// its next round sees "no stream" at `0-0`, which `detect_gap` counts as
/// nothing lost: no flush, no rebuild, even though the fence record of the
/// lost entry is still in Redis. It stays synced and serves the old version
/// from cache. (The issue asks for "a stream epoch the gateway writes"; none
/// exists, so a stream that came and went is invisible from `0-0`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_created_and_deleted_while_a_reader_sits_at_0_0_is_a_gap() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let partition = Partition::to(redis.addr()).await;
    let b = gated(&sim, settings(&partition.url(), "b")).await;
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    assert!(b.node.is_synced());
    warm(&b.gw, id).await;

    partition.cut();
    let regen = sim.regenerate(id).unwrap();
    a.accept(&Invalidation {
        event_id: Some("evt_01ZEROREGEN00000000000000".into()),
        source: Source::Webhook,
        event_type: EventType::Regenerated,
        container: Some(id),
        revoked_asset_ids: regen.previous_asset_ids.clone(),
        current_asset_ids: regen.new_asset_ids.clone(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    })
    .await
    .unwrap();
    let stream = a.node.settings().stream.clone();
    assert_eq!(redis.cmd::<i64>(&["DEL", &stream]), 1);
    partition.heal();
    let healed = tokio::time::Instant::now();
    eventually("B synced after the heal", Duration::from_secs(5), || async {
        b.node.is_synced() && b.node.last_proof_age().is_some_and(|a| a < healed.elapsed())
    })
    .await;
    let s = b.serve(&sim, &container_path(id)).await;
    assert!(
        !(s.from_cache && carries_any(&s.reply.body, &regen.previous_urls)),
        "B (gaps={}, flushes={}) serves the regenerated container's old version from cache",
        b.stat(|s| s.gaps.get()),
        b.flushes.load(std::sync::atomic::Ordering::Relaxed)
    );
    a.node.stop();
    b.node.stop();
}

fn updated_at(v: &serde_json::Value) -> i64 {
    layers_gateway::cache::time::parse_rfc3339_millis(v["updatedAt"].as_str().unwrap()).unwrap()
}

/// The re-publication rule keys on the gap that *started* a rebuild: a
/// `Trimmed` gap does not re-publish. If Redis restarts empty while that
/// rebuild keeps failing (here: a permission briefly missing; in life a
/// rebuild that times out, or Redis crashing under it), the rebuild that
/// finally succeeds on the new, empty Redis never compares `run_id`s, so
/// the instance does not re-publish its fences. When it is the one that
/// held a tombstone, that tombstone is gone from the cluster although "one
/// instance that held it keeps running" (docs/cluster.md): a joiner serves
/// the deleted container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_during_a_trim_rebuild_still_republishes_the_fences() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let partition = Partition::to(redis.addr()).await;
    let a = gated(&sim, settings(&partition.url(), "a")).await;
    delete_through(&sim, &a, gone, "evt_01TRIMRESTARTDELETE00000").await;
    eventually("A read past its own entry", Duration::from_secs(5), || async {
        a.stat(|s| s.duplicates.get()) >= 1
    })
    .await;

    partition.cut();
    let stream = a.node.settings().stream.clone();
    for n in 0..3 {
        let payload = json!({"v": 1, "eventId": format!("evt_01OTHER{n:018}"), "type": "purge_all",
            "source": "admin", "origin": "other"})
        .to_string();
        let _: String = redis.cmd(&["XADD", &stream, "*", "inv", &payload]);
    }
    let _: i64 = redis.cmd(&["XTRIM", &stream, "MAXLEN", "1"]);
    // The rebuild cannot complete for a while.
    // (The rebuild reads the fence set with ZRANGE before the fix, ZSCAN after.)
    let _: String = redis.cmd(&["ACL", "SETUSER", "default", "-zrange", "-zscan"]);
    partition.heal();
    eventually(
        "A found the trim and cannot rebuild",
        Duration::from_secs(5),
        || async { a.stat(|s| s.gaps.get()) >= 1 && a.stat(|s| s.reconnects.get()) >= 1 },
    )
    .await;
    redis.restart();
    eventually("A rebuilt on the new Redis", Duration::from_secs(10), || async {
        a.node.is_synced() && a.stat(|s| s.fence_rebuilds.get()) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C synced", Duration::from_secs(5), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(
        r.status,
        404,
        "C serves the deleted container: A (still holding the tombstone) re-published {} fences",
        a.stat(|s| s.fences_republished.get())
    );
    a.node.stop();
    c.node.stop();
}

/// A regenerate proxied through A (write-through) names no previous ids:
/// A revokes what it had cached (nothing here) and publishes the change
/// time and the current ids; a joiner rebuilds that as a *floor*, which
/// makes it drop the lagging origin's old asset ids. After Redis restarts
/// empty, though, `export_fences` re-publishes only tombstones and revoked
/// ids: a container whose protection was a floor is not re-published at
/// all, so an instance joining afterwards caches and serves the lagging
/// replica's old version with its old asset URLs (until the origin's own
/// webhook arrives, if it does). The baseline join before the restart
/// shows the floor working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_is_republished_after_redis_restarts_empty() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    sim.set_replica_lag(id, Some(LONG_LAG));
    let before = updated_at(&sim.container(id).unwrap());
    let regen = sim.regenerate(id).unwrap();
    let at = updated_at(&sim.container(id).unwrap());
    assert!(before < at, "precondition: the regenerate is dated later");
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    a.accept(&Invalidation {
        event_id: None,
        source: Source::WriteThrough,
        event_type: EventType::Regenerated,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: regen.new_asset_ids.clone(),
        changed_at: Some(at),
        created_at: None,
        replay: false,
        accepted_at: None,
    })
    .await
    .unwrap();
    let serves_old = |r: &Reply| r.status == 200 && carries_any(&r.body, &regen.previous_urls);

    let c1 = gated(&sim, settings(&redis.url(), "c1")).await;
    eventually("C1 synced", Duration::from_secs(5), || async {
        c1.node.is_synced()
    })
    .await;
    let r = call_get(&c1.gw, &container_path(id), &admin_key()).await;
    assert!(
        !serves_old(&r),
        "baseline: C1 rebuilt the floor and drops the old ids"
    );
    c1.node.stop();

    redis.restart();
    eventually("A flushes and re-syncs", Duration::from_secs(10), || async {
        a.flushes.load(std::sync::atomic::Ordering::Relaxed) >= 1 && a.node.is_synced()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c2 = gated(&sim, settings(&redis.url(), "c2")).await;
    eventually("C2 synced", Duration::from_secs(5), || async {
        c2.node.is_synced()
    })
    .await;
    let r = call_get(&c2.gw, &container_path(id), &admin_key()).await;
    assert!(
        !serves_old(&r),
        "C2, joining after the Redis restart, serves the regenerated container's old asset URLs"
    );
    a.node.stop();
    c2.node.stop();
}

/// A delete proxied through the gateway (write-through) is undated, so each
/// instance dates its tombstone by the moment it applies it. A rebuild
/// (a joiner, or any instance after a gap) re-applies the fence record of
/// that old delete *now*, and the later `content.generated` record (the
/// container re-created, dated by its event id) then looks older than the
/// delete: the replayed delete keeps the tombstone, and the instance
/// answers 404 for a container the origin and its peers serve. Promise 1:
/// "a late, replayed or reordered event never revokes what the origin
/// currently serves." The publisher should stamp the date it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_replays_an_undated_delete_at_its_own_date_before_the_re_creation() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    a.accept(&Invalidation {
        event_id: None,
        source: Source::WriteThrough,
        event_type: EventType::Deleted,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Re-created at the origin (the simulator serves it), announced by a
    // webhook dated after the delete.
    a.accept(&Invalidation {
        event_id: Some("evt_01RECREATED00000000000000".into()),
        source: Source::Webhook,
        event_type: EventType::Generated,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: Some(unix_now_ms()),
        replay: false,
        accepted_at: None,
    })
    .await
    .unwrap();
    let r = call_get(&a.gw, &container_path(id), &admin_key()).await;
    assert_eq!(r.status, 200, "precondition: A lifted the tombstone");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C synced", Duration::from_secs(5), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(id), &admin_key()).await;
    assert_eq!(
        r.status, 200,
        "C rebuilt the old delete as newer than the re-creation and refuses a live container"
    );
    a.node.stop();
    c.node.stop();
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A rebuild used to read `ZRANGE ... BYSCORE LIMIT 0 cap` with the
/// *reader's* `fence_max_entries`: the records that expire first, i.e. the
/// oldest. A joiner whose cap is below the set's size (another instance or
/// deployment sharing the stream with a larger cap, or a cap lowered in a
/// rolling change) silently dropped the *newest* tombstones and served a
/// container deleted a moment ago. Over its cap it now stays unsynced
/// (state `fence_overflow`, a counter, an error log) and answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_its_cap_fails_closed_instead_of_dropping_tombstones() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    for (n, id) in ids.iter().take(3).enumerate() {
        delete_through(&sim, &a, *id, &format!("evt_01CAPDELETE{n:014}")).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let newest = ids[2];
    let c = gated(
        &sim,
        ClusterSettings {
            fence_max_entries: 2,
            ..settings(&redis.url(), "c")
        },
    )
    .await;
    // It must not join on a partial fence set: it stays unsynced (and,
    // never having rebuilt, answers 503 rather than pass the origin's copy).
    tokio::time::sleep(MAX_UNSYNCED + MARGIN).await;
    assert!(
        !c.node.is_synced(),
        "C (fence_max_entries = 2 < 3 records) joined on a partial fence set"
    );
    assert_eq!(c.node.sync_reason(), SyncReason::FenceOverflow);
    assert!(c.stat(|s| s.fence_overflows.get()) >= 1);
    let r = call_get(&c.gw, &container_path(newest), &admin_key()).await;
    assert_ne!(
        r.status, 200,
        "C (fence_max_entries = 2 < 3 records) dropped the newest tombstone and serves the container"
    );
    a.node.stop();
    c.node.stop();
}

/// A rebuild used to read every live fence record in one reply, which had
/// to finish within `block_ms + command_timeout_ms` (750 ms by default). A
/// full fence set at the default `fence_max_entries` (50 000, ~2.6 KB each:
/// a regenerate naming 60 revoked ids) did not fit, so a joiner never
/// joined, and after any gap every instance retried the same rebuild
/// forever. The records are now read in pages (`ZSCAN`), each within one
/// command's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_fence_set_at_the_default_cap_is_read_in_pages_and_lets_an_instance_join() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let s = ClusterSettings {
        instance_id: Some("c".into()),
        ..ClusterSettings::with_url(redis.url())
    };
    let fences = StreamKeys::new(&s.stream).fences;
    // Signed as a gateway signs them (unsigned ones would be skipped, and
    // the rebuild would not apply a single one).
    let key = EntryKey::new(&s.resolved_secret().unwrap(), &s.stream);
    let rev: Vec<String> = (1..=60).map(|j| format!("asset-{}{j}", "x".repeat(32))).collect();
    let until = (unix_now() * 1000 + 3_600_000).to_string();
    // One record per container (`fence_record.rs`): the sorted set holds
    // the containers by expiry, the hash their sealed records.
    let records_key = StreamKeys::new(&s.stream).fence_records;
    let records: Vec<(String, String)> = (1..=s.fence_max_entries)
        .map(|i| {
            let container = format!("cnt_{i:08x}-0000-4000-8000-{i:012x}");
            let record = json!({"v": 2, "container": container, "revoked": rev,
                "events": [format!("evt_load{i}")]})
            .to_string();
            (container, key.seal_record(&record))
        })
        .collect();
    for chunk in records.chunks(1_000) {
        let mut args = vec!["ZADD", fences.as_str()];
        let mut values = vec!["HSET", records_key.as_str()];
        for (member, record) in chunk {
            args.push(&until);
            args.push(member);
            values.push(member);
            values.push(record);
        }
        let _: i64 = redis.cmd(&args);
        let _: i64 = redis.cmd(&values);
    }
    let n: i64 = redis.cmd(&["ZCARD", &fences]);
    assert_eq!(n as u64, s.fence_max_entries);
    let c = gated(&sim, s).await;
    let joined = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if c.node.is_synced() {
                break true;
            }
            if tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let rebuilds = c.stat(|s| s.fence_rebuilds.get());
    let reconnects = c.stat(|s| s.reconnects.get());
    c.node.stop();
    assert!(
        joined,
        "an instance never joined a healthy Redis holding {n} fence records in 15 s \
         (rebuilds done: {rebuilds}, reconnects: {reconnects})"
    );
}

/// Stream entries used to be unauthenticated: any client that can write to
/// the Redis (another tenant or deployment sharing it, a compromised tool)
/// could append a well-formed `generated` dated in the future, and every
/// instance applied it, lifted the tombstone of a container deleted
/// moments ago and cached the lagging origin's copy. Every entry now
/// carries an HMAC under the cluster secret; one that does not verify is
/// counted, not applied, and treated as a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_stream_entry_is_refused_and_keeps_the_tombstone() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    delete_through(&sim, &a, gone, "evt_01FORGEDDELETE000000000").await;
    eventually("B applies the delete", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 1
    })
    .await;
    assert_eq!(
        call_get(&b.gw, &container_path(gone), &admin_key()).await.status,
        404
    );

    let payload = json!({"v": 1, "eventId": "evt_01FORGEDGENERATED0000000", "type": "generated",
        "container": gone.to_string(), "createdAt": unix_now() * 1000 + 86_400_000,
        "source": "webhook", "origin": "intruder"})
    .to_string();
    let stream = a.node.settings().stream.clone();
    let _: String = redis.cmd(&[
        "XADD",
        &stream,
        "*",
        "event",
        "evt_01FORGEDGENERATED0000000",
        "origin",
        "intruder",
        "inv",
        &payload,
        "mac",
        &"0".repeat(64),
    ]);
    // Refused (counted, not applied), taken as a gap: flush and rebuild
    // from the fence records, which still hold the delete.
    eventually(
        "B refuses the forged entry and rebuilds",
        Duration::from_secs(5),
        || async {
            b.stat(|s| s.unverified.get()) >= 1
                && b.stat(|s| s.fence_rebuilds.get()) >= 2
                && b.node.is_synced()
        },
    )
    .await;
    assert_eq!(
        b.stat(|s| s.applied.get()),
        1,
        "only the genuine delete was applied"
    );
    let r = call_get(&b.gw, &container_path(gone), &admin_key()).await;
    assert_eq!(
        r.status, 404,
        "B serves the deleted container after a forged stream entry"
    );
    a.node.stop();
    b.node.stop();
}
