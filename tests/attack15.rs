//! Attacks on issue 15's cluster mode from its attacker review that broke
//! the first version and hold now: the fence set evicted by a `volatile-*`
//! policy or expired by one short-lived publication, and a write proof that
//! a writable replica or an ACL without ZADD passed while publications were
//! lost. (The review's other attacks are listed as open in issue 15.)
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
use layers_gateway::cluster::keys::StreamKeys;
use layers_gateway::cluster::{ClusterNode, ClusterSettings, ClusterStats};
use layers_gateway::demo::Simulator;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use redis_support::RedisServer;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A lag longer than any test: the origin's reads stay behind throughout.
const LONG_LAG: Duration = Duration::from_secs(600);

/// An instance whose cache serves only while its node is synced, built
/// from `extra_config` (cache / invalidation settings of this instance).
async fn gated_with(sim: &Simulator, s: ClusterSettings, extra_config: &str) -> Arc<Instance> {
    let gw = in_process(sim, extra_config);
    let node = ClusterNode::new(&s, Arc::new(ClusterStats::new())).unwrap();
    let flushes = Arc::new(AtomicU64::new(0));
    let (apply, flush) = wiring(&gw, flushes.clone());
    let cache = gw.state().cache.clone();
    node.set_fence_source(cache.fence_retention(), Arc::new(move || cache.export_fences()));
    node.start(apply, flush, std::future::pending()).await;
    gw.state().cache.set_sync_gate(node.clone());
    Arc::new(Instance { gw, node, flushes })
}

async fn gated(sim: &Simulator, s: ClusterSettings) -> Arc<Instance> {
    gated_with(sim, s, "").await
}

fn containers(sim: &Simulator) -> Vec<ContainerId> {
    sim.container_ids()
        .into_iter()
        .filter(|(o, _)| o == "org_demo_a")
        .map(|(_, c)| c)
        .collect()
}

fn deleted(id: ContainerId, assets: Vec<String>, event_id: &str) -> Invalidation {
    Invalidation {
        event_id: Some(event_id.to_owned()),
        source: Source::Webhook,
        event_type: EventType::Deleted,
        container: Some(id),
        revoked_asset_ids: assets,
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
    }
}

/// Deletes `gone` at the (lagging) origin and has `a` accept the webhook.
async fn delete_through(sim: &Simulator, a: &Instance, gone: ContainerId, event_id: &str) {
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, event_id)).await.unwrap();
    let r = origin_get(sim, &container_path(gone)).await;
    assert_eq!(r.status, 200, "precondition: the origin's reads still lag");
}

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
    let gone = containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    delete_through(&sim, &a, gone, "evt_01EVICTDELETE00000000000").await;
    let fences = fences_key(&a);
    assert_eq!(redis.cmd::<i64>(&["ZCARD", &fences]), 1);

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
    let ids = containers(&sim);
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
    assert_eq!(redis.cmd::<i64>(&["ZCARD", &fences]), 2);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let left: i64 = redis.cmd(&["ZCARD", &fences]);
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
    let id = containers(&sim)[0];
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
    let id = containers(&sim)[0];
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
