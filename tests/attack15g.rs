//! Attacks on accc3ea (review round 6): the token in both fence keys, the
//! members hash with each member's `max_unsynced_ms`, the acknowledgement
//! after a re-publication, `start()` waiting for the barrier.
//!
//! A `redis-server` of its own on a free loopback port per test; in-process
//! gateways in front of one simulator whose reads of the deleted container
//! lag (so serving it at all is serving old data). Tests marked "DEFECT"
//! failed on accc3ea for the reason their comment gives and pass since the
//! fix that followed (the set re-tokened under another Redis `run_id`, the
//! members hash's own creation time, one liveness window of 2 x
//! `max_unsynced_ms` for both rules, the ack withdrawn while
//! re-publishing); `held_*` tests are attacks that held.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use redis_support::{Partition, RedisServer};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// **DEFECT (high, freshness): a loss that keeps the fence set's token
/// (a restart from an older snapshot, `appendfsync everysec`, a failover to
/// a replica that lacked the last writes) is invisible to the recovery
/// barrier: every member's acknowledgement of the token from before the
/// loss still counts.**
///
/// The barrier asks "does any live peer name another token than the set's?"
/// and the young-set rule covers losses that *recreate* the set. A Redis
/// that comes back with an older copy of its data (here: restarted from an
/// RDB snapshot taken before A's delete; in production a Sentinel/Cluster
/// failover with asynchronous replication, or an AOF with `everysec`) keeps
/// both fence keys with the same token `T` and the same `~at`, and the
/// members hash with every member acking `T` — but without the record of
/// A's acknowledged delete. A (live, holding the tombstone, briefly cut off
/// here: 3 s, well inside its 8 s liveness, which the barrier promises to
/// wait for) has not re-published. C joins: its rebuild finds no record of
/// the container, its first round finds A live and acking `T` (= the set's
/// token) and the set old, so `awaited` is 0; C proves itself synced and
/// serves the deleted container from the lagging origin. (Without the cut
/// the window is A's reconnect backoff: in 3 runs of 3, C served the
/// deleted container 3-4 times, ~80 ms, before A re-published.)
///
/// A second part of the same hole: `republish_fences` never withdraws the
/// ack, so while A re-publishes after such a loss (`r.seen == r.to == T`,
/// `running = Some(..)`), A keeps naming `T` and nobody waits for it even
/// once A has noticed the loss.
///
/// Fix: make every loss change the token. Keep the Redis `run_id` the
/// token was last confirmed under in the records hash (`~run`); any script
/// (REBUILD_SCRIPT included: a joiner cannot know Redis restarted) that
/// finds another `run_id` rotates the token in place (a fresh `~<token>`
/// marker and `~`, `~at` = now, records kept) so the young-set rule and
/// the acks hold everyone until the live holders re-published; likewise an
/// instance that sees the stream go back (`Recreated`/`EpochChanged`)
/// under an unchanged token rotates it (CAS on the old one). And
/// `republish_fences` should set `to = ""` (withdraw the ack) when it
/// starts a re-publication, re-acking only at completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_snapshot_keeps_the_token_and_a_joiner_skips_the_barrier() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let proxy = Partition::to(redis.addr()).await;
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, idle_second_rounds(&proxy.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    // The set is older than every max_unsynced_ms: no young-set wait.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let k = keys(&a);
    let token_before: String = redis.cmd(&["HGET", &k.fence_records, "~"]);
    // Redis's last snapshot (an RDB; or the replica a failover promotes).
    let _: String = redis.cmd(&["SAVE"]);
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&deleted(gone, assets, "evt_01ATTACK15G000000000000001"))
        .await
        .expect("the delete is acknowledged");
    let recorded: bool = redis.cmd(&["HEXISTS", &k.fence_records, &gone.to_string()]);
    assert!(recorded, "the tombstone's record is in Redis once acknowledged");
    // Redis comes back from the snapshot while A is briefly cut off (far
    // less than the 8 s the barrier waits for a live member).
    proxy.cut();
    redis.restart();
    let token_after: String = redis.cmd(&["HGET", &k.fence_records, "~"]);
    let record_after: bool = redis.cmd(&["HEXISTS", &k.fence_records, &gone.to_string()]);
    let a_entry: String = redis.cmd(&["HGET", &k.members, "a"]);
    assert!(!record_after, "the snapshot predates the delete");
    let c = gated_in_background(&sim, idle_second_rounds(&redis.url(), "c"));
    let served = statuses_while_synced(&c, &container_path(gone), Duration::from_secs(3)).await;
    let awaited = c.stat(|s| s.peers_awaited.get() as u64);
    proxy.heal();
    a.node.stop();
    c.node.stop();
    assert!(
        !served.contains(&200),
        "C joined a Redis restarted from a snapshot older than A's acknowledged delete, while A \
         (live, holding the tombstone) had not re-published, and served the deleted container: {} \
         of {} answers while synced were 200. The token survived the loss ({token_before} before, \
         {token_after} after), so A's members entry `{a_entry}` already names it (peers awaited: \
         {awaited})",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// Two fences per instance at most in Redis (the same cap on every
/// instance), rounds every second.
fn capped(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        fence_max_entries: 2,
        ..idle_second_rounds(url, id)
    }
}

/// **DEFECT (high, freshness): the members hash lost alone (a `DEL`, an
/// `allkeys-*` eviction) lets every waiting instance through the barrier
/// while a live holder is still re-publishing.**
///
/// The barrier counts the live members whose ack is not the set's token;
/// nothing checks that the members hash itself is whole. Its young-set rule
/// only covers a members hash lost *with* the fence set. Here A holds the
/// tombstones of X and Y; the fence set is deleted alone (a reset: token
/// T1 -> T2) and a new container Z is deleted right after, so A's
/// re-publication finds the set full (cap 2: Z and one of X/Y) and keeps
/// retrying the other: the documented "a live instance cannot finish
/// re-publishing" case, where every rebuilt instance answers 503 until it
/// does. C joins and does wait for A (checked: `peers_awaited` 1, not
/// synced). Then the members hash is deleted — nothing else. C's next
/// round (every 100 ms; A rounds every second) sees no other member at
/// all, the set is older than `max_unsynced_ms`, so C proves itself synced
/// and serves the deleted container whose record A has not put back.
///
/// Fix: give the members hash an identity like the fence set's: a birth
/// field (`HSETNX <members> ~born <now>` in SYNC_SCRIPT, or the set's token
/// kept in it) and hold the barrier while the members hash is younger than
/// one liveness window (4 x the largest `max_unsynced_ms`, as for a member),
/// since every live peer re-registers, with its stale ack, within that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_hash_deleted_alone_lets_a_waiting_joiner_past_a_holder_still_republishing() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (x, y, z) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, capped(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, x, "evt_01ATTACK15G000000000000010").await;
    delete_through(&sim, &a, y, "evt_01ATTACK15G000000000000011").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&a);
    // The fence set lost alone; a new delete takes the freed room at once.
    let _: i64 = redis.cmd(&["DEL", &k.fences]);
    delete_through(&sim, &a, z, "evt_01ATTACK15G000000000000012").await;
    eventually(
        "A's re-publication is refused by the full set",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_full.get()) > 0 },
    )
    .await;
    // Older than max_unsynced_ms: no young-set wait.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // C rounds every 100 ms while it waits (the same max_unsynced_ms).
    let c = gated_in_background(
        &sim,
        ClusterSettings {
            block_ms: 100,
            ..capped(&redis.url(), "c")
        },
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let waited = c.stat(|s| s.peers_awaited.get() as u64);
    let synced_before = c.node.is_synced();
    // Just after one of A's rounds (any moment between two works; this one
    // leaves C a whole second of rounds before A's next).
    let a_seen = |r: &RedisServer| -> String { r.cmd(&["HGET", &k.members, "a"]) };
    let first = a_seen(&redis);
    while a_seen(&redis) == first {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _: i64 = redis.cmd(&["DEL", &k.members]);
    let mut served = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if c.node.is_synced() {
            for id in [x, y] {
                served.push(
                    call_get(&c.gw, &container_path(id), &admin_key())
                        .await
                        .status
                        .as_u16(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records: i64 = redis.cmd(&["HLEN", &k.fence_records]);
    a.node.stop();
    c.node.stop();
    assert!(
        waited == 1 && !synced_before,
        "precondition: C waits for A's re-publication (awaited {waited}, synced {synced_before})"
    );
    assert!(
        !served.contains(&200),
        "after a DEL of the members hash alone, C passed the barrier while A (live, rounding) was \
         still re-publishing, and served a deleted container: {} of {} answers while synced were \
         200 (records hash fields: {records}: Z, one of X/Y, `~`, `~at`)",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **DEFECT (high, freshness): after a loss that takes the members hash
/// (`FLUSHALL`, a restart without persistence), the barrier waits one
/// `max_unsynced_ms` for the live peers to register, but counts a peer as
/// live for four.**
///
/// The young-set rule assumes "every live peer rounds, and so registers
/// with its old token, within its `max_unsynced_ms` after the set was
/// created". A peer that is briefly cut off, stalled, or in its reconnect
/// backoff (up to 1 s, plus a connect) is not rounding then, yet the
/// documented limit only excuses a holder cut off for *longer than 4 x
/// `max_unsynced_ms`* (8 s here), which is also how long a registered
/// member counts as live. Here A (holding an acknowledged tombstone) is cut
/// off for 3.5 s around a `FLUSHALL`; C joins right after it and waits
/// exactly until the new set is 2 s old, then finds nobody in the members
/// hash but itself, proves itself synced and serves the container A
/// deleted, although A was within its liveness the whole time and
/// re-publishes a moment later. (Not tested: with the minimum
/// `max_unsynced_ms`, 1 s, a Redis restart alone should open the same
/// window, the peers being in a reconnect backoff of up to 1 s plus a
/// connect.)
///
/// Fix: hold a set younger than the liveness window (4 x the largest
/// `max_unsynced_ms`, at least 2 s — the same window `members_round` uses
/// for "live"), not one `max_unsynced_ms`; or document the limit as "cut off
/// for longer than `max_unsynced_ms`" when the members hash is lost too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_within_its_liveness_across_a_flushall_is_not_waited_for() {
    let Some(redis) = RedisServer::start() else { return };
    let proxy = Partition::to(redis.addr()).await;
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, idle_second_rounds(&proxy.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, gone, "evt_01ATTACK15G000000000000020").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut_at = Instant::now();
    proxy.cut();
    let _: String = redis.cmd(&["FLUSHALL"]);
    let c = gated_in_background(&sim, idle_second_rounds(&redis.url(), "c"));
    let mut served = Vec::new();
    let mut first_synced = None;
    // A stays cut off for 3.5 s: less than half its 8 s liveness window.
    while cut_at.elapsed() < Duration::from_millis(3_500) {
        if c.node.is_synced() {
            first_synced.get_or_insert(cut_at.elapsed());
            served.push(
                call_get(&c.gw, &container_path(gone), &admin_key())
                    .await
                    .status
                    .as_u16(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.heal();
    a.node.stop();
    c.node.stop();
    assert!(
        !served.contains(&200),
        "C joined right after a FLUSHALL while A (holding the tombstone) was cut off for 3.5 s, \
         within the 8 s the barrier counts it live, and served the deleted container: {} of {} \
         answers while synced were 200 (C synced {first_synced:?} after the cut)",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **Held: a rebuild that lost nothing while this instance's own
/// re-publication is still running does not acknowledge the token.**
///
/// A's re-publication after a reset is stalled by a full set (as in the
/// members-hash test above). Then something without the secret appends an
/// entry to the stream: every instance takes an `Unverified` gap, flushes
/// and rebuilds with nothing lost (`fences_in_set`). A's `running`
/// bookkeeping keeps its ack at the old token, so C keeps waiting for A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_lossless_rebuild_during_a_stalled_republication_keeps_the_ack_withheld() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (x, y, z) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, capped(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, x, "evt_01ATTACK15G000000000000030").await;
    delete_through(&sim, &a, y, "evt_01ATTACK15G000000000000031").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&a);
    let _: i64 = redis.cmd(&["DEL", &k.fences]);
    delete_through(&sim, &a, z, "evt_01ATTACK15G000000000000032").await;
    eventually(
        "A's re-publication is refused by the full set",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_full.get()) > 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let c = gated_in_background(&sim, capped(&redis.url(), "c"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rebuilds_before = a.stat(|s| s.fence_rebuilds.get());
    // An entry not signed with the cluster's secret: a lossless gap for all.
    let _: String = redis.cmd(&["XADD", &k.stream, "*", "inv", "{}", "mac", "00"]);
    eventually(
        "A rebuilt after the unverified entry",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_rebuilds.get()) > rebuilds_before },
    )
    .await;
    let mut served = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if c.node.is_synced() {
            for id in [x, y] {
                served.push(
                    call_get(&c.gw, &container_path(id), &admin_key())
                        .await
                        .status
                        .as_u16(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token: String = redis.cmd(&["HGET", &k.fence_records, "~"]);
    let a_entry: String = redis.cmd(&["HGET", &k.members, "a"]);
    a.node.stop();
    c.node.stop();
    assert!(
        !a_entry.ends_with(&token),
        "A acknowledged the token ({a_entry}) while its re-publication was still refused"
    );
    assert!(
        !served.contains(&200),
        "C passed the barrier after A's lossless rebuild and served a deleted container: {served:?}"
    );
}
