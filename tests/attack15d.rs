//! Attacker review of issue 15's cluster mode, fourth pass (branch
//! `review15d`). Each test below FAILS on the code it was written against
//! (main at a861e83): a failure is a defect found, and the doc comment says
//! what it shows and what the fix should be.
//!
//! Same harness as `attack15.rs` / `attack15c.rs`: a `redis-server` of its
//! own on a free loopback port, in-process gateways in front of one
//! simulator whose reads of the attacked container lag (it still serves it
//! after the delete), wired as the service wires them.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::keys::StreamKeys;
use layers_gateway::cluster::ClusterSettings;
use layers_gateway::demo::Simulator;
use layers_gateway::events::Invalidation;
use layers_gateway::ids::ContainerId;
use redis_support::RedisServer;
use std::time::Duration;
use support::*;

/// A lag longer than any test: the origin's reads stay behind throughout.
const LONG_LAG: Duration = Duration::from_secs(600);

/// Deletes `gone` at the (lagging) origin and has `a` accept the webhook;
/// returns whether the publication was acknowledged.
async fn delete_through(
    sim: &Simulator,
    a: &Instance,
    gone: ContainerId,
    event_id: &str,
) -> Result<(), String> {
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, event_id)).await
}

fn keys(i: &Instance) -> StreamKeys {
    StreamKeys::new(&i.node.settings().stream)
}

fn records(redis: &RedisServer, i: &Instance) -> i64 {
    redis.cmd(&["ZCOUNT", &keys(i).fences, "-inf", "(+inf"])
}

fn entries_added(redis: &RedisServer, i: &Instance) -> i64 {
    let v: Vec<redis::Value> = redis.cmd(&["XINFO", "STREAM", &keys(i).stream]);
    for pair in v.chunks(2) {
        if let [redis::Value::BulkString(k), redis::Value::Int(n)] = pair {
            if k == b"entries-added" {
                return *n;
            }
        }
    }
    panic!("no entries-added in {v:?}");
}

async fn synced(i: &Instance, what: &str) {
    eventually(what, Duration::from_secs(5), || async { i.node.is_synced() }).await;
}

/// **Re-publication multiplies fence records until the set is full, and
/// then the whole cluster fails closed for up to a fence lifetime (24 h).**
///
/// After any gap that "may have lost data" (`Gap::redis_lost_data`: a
/// Redis restart even *with* AOF, a Sentinel failover that lost nothing,
/// the stream or the epoch key deleted or evicted...) *every* instance
/// re-publishes *every* fence it holds as a fresh record (fresh event id,
/// fresh `<ms>-<n>:` member), whether or not Redis still has the original.
/// With N instances holding K fences, one such gap turns K records into
/// (N+1)K, the next into (2N+1)K, and so on. The docs size the cap to "the
/// number of such events per the longer fence lifetime", so the first
/// ordinary restart of a persistent Redis already overflows it: the
/// re-publications are refused (`FENCEFULL`), queued in every instance's
/// outbox, and every instance stays unsynced (`write`) — and every later
/// delete/regenerate webhook is answered 503 — until records expire,
/// 24 h by default. Nothing was deleted: the cluster simply drowns in its
/// own duplicates. (With Redis restarted *empty*, the same race decides
/// which distinct fences get into the N x K attempts before the cap: when
/// duplicates fill it first, a distinct fence is only in the outboxes of
/// connected, running instances, and a joiner misses it.)
///
/// Here: cap 4, two distinct tombstones (2 records, half the cap), two
/// instances, one restart of a Redis with `appendonly yes, appendfsync
/// always` (every record survives). Afterwards the instances never
/// become synced again.
///
/// Fix: make re-publication idempotent per fence instead of per event:
/// e.g. key the record member by the fence's identity (container + kind,
/// `ZADD` replacing the older record of the same fence and keeping the
/// later expiry / newer date), or have the rebuild compare what it read
/// with what it holds and re-publish only fences Redis lacks; and never
/// let re-published duplicates count against the cap that refuses new
/// invalidations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_persistence_does_not_fill_the_fence_set_with_republished_duplicates() {
    let Some(mut redis) = RedisServer::start_with(
        ["--appendonly", "yes", "--appendfsync", "always"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        None,
    ) else {
        return;
    };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let capped = |name: &str| ClusterSettings {
        fence_max_entries: 4,
        ..settings(&redis.url(), name)
    };
    let a = gated(&sim, capped("a")).await;
    let b = gated(&sim, capped("b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    for (n, id) in ids.iter().take(2).enumerate() {
        delete_through(&sim, &a, *id, &format!("evt_01REPUBDUP{n:015}"))
            .await
            .expect("two records fit a cap of four");
    }
    eventually("B applied both deletes", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 2
    })
    .await;
    assert_eq!(records(&redis, &a), 2, "two tombstones, two records");
    // A routine restart (upgrade, OOM kill) of a Redis that persists
    // everything: nothing is lost.
    redis.restart();
    assert_eq!(records(&redis, &a), 2, "precondition: AOF kept the records");
    let before = (a.stat(|s| s.fence_full.get()), b.stat(|s| s.fence_full.get()));
    eventually(
        "both noticed the restart and rebuilt",
        Duration::from_secs(5),
        || async {
            a.stat(|s| s.failovers.get()) >= 1
                && b.stat(|s| s.failovers.get()) >= 1
                && a.stat(|s| s.fence_rebuilds.get()) >= 2
                && b.stat(|s| s.fence_rebuilds.get()) >= 2
        },
    )
    .await;
    let ok = eventually_ok(Duration::from_secs(6), || async {
        a.node.is_synced() && b.node.is_synced() && a.node.outbox_len() == 0 && b.node.outbox_len() == 0
    })
    .await;
    assert!(
        ok,
        "6 s after a restart of a persistent Redis that lost nothing, the instances are still \
         unsynced: A outbox {}, B outbox {}, fence records {} for 2 distinct tombstones \
         (cap 4), FENCEFULL refusals since the restart A {} B {}, states A {:?} B {:?}",
        a.node.outbox_len(),
        b.node.outbox_len(),
        records(&redis, &a),
        a.stat(|s| s.fence_full.get()) - before.0,
        b.stat(|s| s.fence_full.get()) - before.1,
        a.node.sync_reason(),
        b.node.sync_reason(),
    );
    a.node.stop();
    b.node.stop();
}

/// `eventually` that answers instead of panicking.
async fn eventually_ok<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if started.elapsed() >= within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// **A full fence set turns a collapsed outbox into an endless purge-all
/// storm.** Refused publications (`FENCEFULL`) are queued; past
/// `outbox_max` the outbox collapses into one purge-all with
/// `republish_after`. A purge-all carries no fence record, so it is always
/// accepted; once it is, `republish_fences` re-publishes *every* fence the
/// instance holds — which, the set still being full, are all refused and
/// queued again, collapse again past `outbox_max`, publish another
/// purge-all, re-publish again... forever, as fast as Redis answers. Every
/// purge-all is an entry every peer applies (its whole cache dropped each
/// time), the stream is flooded (trimming it under readers: more gaps,
/// more rebuilds), and Redis is hammered with refused scripts. The
/// defaults make it reachable: `outbox_max` (10 000) is a fifth of
/// `fence_max_entries` (50 000), so an instance holding a full set's
/// fences collapses on its first re-publication.
///
/// Here: cap 2, `outbox_max` 2; two deletes fill the set, three more are
/// refused (each a 503, as designed). Then, with nothing else happening,
/// count the stream's appends over 1.5 s: bounded would be a handful.
///
/// Fix: do not re-publish into a set known to be full (wait for room:
/// retry the outbox, not a fresh export), never re-arm `republish_after`
/// from a re-publication's own refusals (at most one collapse per spell),
/// and size `outbox_max` at least `fence_max_entries` (validation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_fence_set_does_not_turn_the_outbox_into_a_purge_all_storm() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    assert!(ids.len() >= 5, "the demo has enough containers");
    let s = |name: &str| ClusterSettings {
        fence_max_entries: 2,
        outbox_max: 2,
        ..settings(&redis.url(), name)
    };
    let a = gated(&sim, s("a")).await;
    let b = gated(&sim, s("b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    for (n, id) in ids.iter().take(5).enumerate() {
        let r = delete_through(&sim, &a, *id, &format!("evt_01STORM{n:018}")).await;
        assert_eq!(
            r.is_ok(),
            n < 2,
            "delete {n}: the first two fit the cap, the rest are refused"
        );
    }
    // Let the outbox task do what it does with the collapsed queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = entries_added(&redis, &a);
    let applied_b = b.stat(|s| s.applied.get());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let appended = entries_added(&redis, &a) - start;
    let applied = b.stat(|s| s.applied.get()) - applied_b;
    a.node.stop();
    b.node.stop();
    assert!(
        appended <= 3,
        "with no new invalidation, A appended {appended} stream entries in 1.5 s (purge-alls \
         from its collapsing outbox; B applied {applied} of them, dropping its whole cache \
         each time); re-publications {}, FENCEFULL refusals {}",
        a.stat(|s| s.fences_republished.get()),
        a.stat(|s| s.fence_full.get()),
    );
}

/// The order in which `ContentCache::export_fences` lists containers: by
/// fence shard (`Fences::shard`: 64 shards of `v ^ v >> 64`).
fn export_rank(id: ContainerId) -> usize {
    let v = id.as_u128();
    ((v ^ (v >> 64)) as usize) % 64
}

/// **Re-publication loses the race to its own duplicates: after a restart
/// from a snapshot that lacks the newest tombstone, every holder is
/// connected and re-publishes it, yet it never reaches Redis, and a joiner
/// serves the deleted container.**
///
/// Redis persists with RDB snapshots (its default; `SAVE` here) and comes
/// back from the snapshot (`DEBUG RELOAD NOSAVE` here, so that no
/// connection breaks and the order below is deterministic; a crash and
/// restart does the same with a `run_id` change) with the older record
/// (x) and without the newer one (y) — the same state as a Sentinel
/// failover to a replica that had not received y's record yet. Both instances hold
/// both tombstones and are connected: the gap (`redis_restarted`) is seen,
/// and each re-publishes *everything it holds*, x first (export order). A's
/// duplicate of x takes the last free slot, so y is refused (`FENCEFULL`)
/// on both and stays in their outboxes. Nothing is partitioned, nothing is
/// slow: this is not the documented "holder cut off" limit. A third
/// instance joining now reads {x, x'}, does not know y, and answers 200
/// with the deleted container from the lagging origin.
///
/// Fix: re-publish only what Redis lacks (compare the rebuild's records
/// with the exported fences), or make a record's member the fence's
/// identity so a duplicate replaces instead of adding; and re-publish
/// outside the cap (a re-publication restores, it must not be refused by
/// the cap that bounds new invalidations) or refuse joins while any
/// instance has re-publications pending (a marker in Redis, e.g. a
/// `{stream}:republishing` set of instance ids, checked by REBUILD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_lost_with_redis_data_reaches_a_joiner_even_when_the_fence_set_is_near_its_cap() {
    let Some(redis) = RedisServer::start_with(vec!["--enable-debug-command".into(), "yes".into()], None)
    else {
        return;
    };
    let sim = demo_simulator();
    let mut ids = org_a_containers(&sim);
    ids.sort_by_key(|id| export_rank(*id));
    ids.dedup_by_key(|id| export_rank(*id));
    let (x, y) = (ids[0], ids[1]);
    assert!(export_rank(x) < export_rank(y));
    let url = redis.url();
    let capped = |name: &str| ClusterSettings {
        fence_max_entries: 2,
        ..settings(&url, name)
    };
    let a = gated(&sim, capped("a")).await;
    let b = gated(&sim, capped("b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    delete_through(&sim, &a, x, "evt_01SNAPSHOTX000000000000000")
        .await
        .expect("x fits");
    // The snapshot: x's record and entry, the fence set's marker.
    let _: String = redis.cmd(&["SAVE"]);
    delete_through(&sim, &a, y, "evt_01SNAPSHOTY000000000000000")
        .await
        .expect("y fits (cap 2)");
    eventually("B applied both deletes", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 2
    })
    .await;
    let r = call_get(&b.gw, &container_path(y), &admin_key()).await;
    assert_eq!(r.status, 404, "precondition: B fences y");
    // The primary now holds the snapshot's data (x, not y): as after a
    // failover to a replica that had not received y yet. (`DEBUG RELOAD
    // NOSAVE` loads the snapshot in place, so no connection breaks and the
    // order of the re-publications below is deterministic.)
    let _: String = redis.cmd(&["DEBUG", "RELOAD", "NOSAVE"]);
    assert_eq!(
        records(&redis, &a),
        1,
        "precondition: the snapshot has x's record only"
    );
    eventually(
        "both rebuilt and re-published after the restart",
        Duration::from_secs(5),
        || async {
            a.stat(|s| s.fences_republished.get()) >= 1 && b.stat(|s| s.fences_republished.get()) >= 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = gated(&sim, capped("c")).await;
    synced(&c, "C joined").await;
    let r = call_get(&c.gw, &container_path(y), &admin_key()).await;
    let (oa, ob) = (a.node.outbox_len(), b.node.outbox_len());
    let members: Vec<String> = redis.cmd(&["ZRANGEBYSCORE", &keys(&c).fences, "-inf", "(+inf"]);
    let holds = |id: ContainerId| members.iter().filter(|m| m.contains(&id.to_string())).count();
    let (in_x, in_y) = (holds(x), holds(y));
    a.node.stop();
    b.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "C joined while A and B (connected, running) still hold y's tombstone in their outboxes \
         ({oa} and {ob} queued, refused FENCEFULL; the set holds {in_x} records of x and {in_y} \
         of y) and serves y, whose delete A acknowledged",
    );
}

fn updated_at(v: &serde_json::Value) -> i64 {
    layers_gateway::cache::time::parse_rfc3339_millis(v["updatedAt"].as_str().unwrap()).unwrap()
}

/// **The fail-closed path is weaker than the cached path: an unsynced
/// instance serves a regenerated container's old asset from the lagging
/// origin, which the same instance refuses while synced.**
///
/// A regenerate proxied through A (write-through) names no previous ids;
/// A publishes the change time and the current ids, and every peer keeps
/// them as a *floor* (`cache/invalidate.rs`). A synced peer's canonical
/// asset route reads the *container* (a fill): the lagging replica's body
/// is older than the floor, so the ids it lists that the change did not
/// name as current are provably old, and the old asset answers 404 (the
/// baseline below). The same peer unsynced (a Redis blip, a slow round,
/// a queued publication: "cannot prove it is in sync") takes
/// `content_via_origin` with the *asset* path: `judge_origin` checks only
/// the revoked-id set (empty: the peer never cached the container) and
/// never consults the floor's current ids for an asset (an asset
/// descriptor has no `updatedAt`, so it is never "behind"). It answers 200
/// with the old asset and its URL — data of the old version, from the
/// mode that is supposed to fail closed. (README: "the canonical asset
/// route reads the container and is covered" — not while unsynced.)
///
/// Fix: in `content_via_origin`, for the canonical asset route while a
/// floor with current ids stands (`f.revokes_assets && f.current.is_some()`),
/// refuse an asset id the floor does not name as current (404) — or read
/// the container as the fill does and judge the asset from its body, as
/// the synced path does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_peer_does_not_serve_a_regenerated_containers_old_asset_from_the_lagging_origin() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    synced(&a, "A joined").await;
    synced(&c, "C joined").await;
    sim.set_replica_lag(id, Some(LONG_LAG));
    let before = updated_at(&sim.container(id).unwrap());
    let regen = sim.regenerate(id).unwrap();
    let at = updated_at(&sim.container(id).unwrap());
    assert!(before < at, "precondition: the regenerate is dated later");
    a.accept(&regenerated(id, regen.new_asset_ids.clone()).with_changed_at(at))
        .await
        .expect("published");
    eventually("C applied the regenerate", Duration::from_secs(5), || async {
        c.stat(|s| s.applied.get()) >= 1
    })
    .await;
    let old = format!("{}/assets/{}", container_path(id), regen.previous_asset_ids[0]);
    let r = origin_get(&sim, &old).await;
    assert_eq!(
        r.status, 200,
        "precondition: the lagging origin still serves the old asset"
    );
    // Baseline: a synced peer D in C's situation (it applied the same
    // entry, never cached the container) reads the container and refuses
    // the old asset. (Not C itself: that read would revoke the old ids on C.)
    let d = gated(&sim, settings(&redis.url(), "d")).await;
    synced(&d, "D joined").await;
    let r = call_get(&d.gw, &old, &admin_key()).await;
    d.node.stop();
    assert_ne!(r.status, 200, "baseline: synced D refuses the old asset");
    // C can no longer prove it is in sync (here: its node stops; a Redis
    // outage or a queued publication does the same): it bypasses its cache.
    c.node.stop();
    assert!(!c.node.is_synced());
    let r = call_get(&c.gw, &old, &admin_key()).await;
    a.node.stop();
    assert!(
        !(r.status == 200 && carries_any(&r.body, &regen.previous_urls)),
        "unsynced C (fail-closed mode) serves the old asset of the container A regenerated: \
         {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
}

trait ChangedAt {
    fn with_changed_at(self, at: i64) -> Self;
}

impl ChangedAt for Invalidation {
    fn with_changed_at(mut self, at: i64) -> Self {
        self.changed_at = Some(at);
        self
    }
}
