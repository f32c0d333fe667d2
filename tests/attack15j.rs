//! Attacks on ca1e6d5 (review round 8): the per-process nonce in the
//! members entry (`members_round`'s conflict and suspect rules,
//! `Reader::id_conflict`), the bounded rebuilding registration
//! (`still_rebuilding`, `MAX_REBUILDING`).
//!
//! A `redis-server` of its own on a free loopback port per test; in-process
//! gateways in front of one simulator. Tests marked "DEFECT" failed on
//! ca1e6d5 for the reason their comment gives and pass since the fix that
//! followed (a first join re-publishes what the instance holds; an
//! instance-id conflict is sticky for a liveness window and withdraws the
//! ack, as does a first round that finds another process's live entry);
//! `held_*` tests are attacks that held.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::ClusterSettings;
use redis_support::RedisServer;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// Two fences in Redis at most, one `max_unsynced_ms` (2 s) everywhere,
/// rounds every `block_ms`.
fn capped(url: &str, id: &str, block_ms: u64) -> ClusterSettings {
    ClusterSettings {
        fence_max_entries: 2,
        max_unsynced_ms: 2_000,
        block_ms,
        ..settings(url, id)
    }
}

/// **DEFECT (low, freshness under a duplicated `instance_id`; round 8's
/// fix is incomplete): the instance-id conflict is only seen in the one
/// round right after the other process wrote, so a duplicate that rounds
/// more often than the holder opens its barrier in every round in between
/// and serves what only the holder fenced.**
///
/// `members_round` reports a conflict when the entry's nonce is not this
/// process's own; but this process then overwrites the entry with its own
/// nonce, so its *next* round (if the other process has not rounded in
/// between) finds its own nonce: no conflict, `id_conflict(false)`, and
/// `await_peers` runs with nothing holding it (`suspect_until` is set on
/// the first round only). Rounds are not interleaved one-for-one: a
/// different `block_ms` (a new process started with an updated config while
/// the old one drains), or simply stream traffic waking both in either
/// order, gives one process two rounds in a row. Here, as in attack15i,
/// A holds the tombstones of X and Y, the fence set is lost alone and a
/// delete of Z takes the room (cap 2), so A's re-publication is refused and
/// its ack stays withdrawn. A2, started with A's id and `block_ms` 200
/// (A: 1000), has four conflict-free rounds out of five, opens its barrier
/// in them and serves X (200), whose tombstone only A holds.
///
/// Fix: make the conflict sticky: on every round that reports it, set
/// `suspect_until = now + liveness window` (as the first round does), and
/// keep the barrier shut (and the ack withdrawn, in `members_round`) until
/// no foreign nonce has been seen for a whole window; e.g. keep the last
/// foreign nonce and the time it was seen in the entry (or a side field)
/// so either process finds it regardless of who wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_that_rounds_faster_serves_between_conflicts() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (x, y, z) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, capped(&redis.url(), "a", 1_000)).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, x, "evt_01ATTACK15J000000000000010").await;
    delete_through(&sim, &a, y, "evt_01ATTACK15J000000000000011").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&a);
    let _: i64 = redis.cmd(&["DEL", &k.fences]);
    delete_through(&sim, &a, z, "evt_01ATTACK15J000000000000012").await;
    eventually(
        "A's re-publication is refused by the full set",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_full.get()) > 0 },
    )
    .await;
    let a2 = gated_in_background(&sim, capped(&redis.url(), "a", 200));
    let mut served = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(14) {
        if a2.node.is_synced() {
            for id in [x, y] {
                served.push(
                    call_get(&a2.gw, &container_path(id), &admin_key())
                        .await
                        .status
                        .as_u16(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry: Option<String> = redis.cmd(&["HGET", &k.members, "a"]);
    let a_synced = a.node.is_synced();
    a.node.stop();
    a2.node.stop();
    assert!(
        !served.contains(&200),
        "A2 (A's instance_id, block_ms 200) served a deleted container (X or Y) {} time(s) of {} \
         while A, live, had not re-published its tombstone; members entry `a` = {entry:?}; \
         A synced at the end: {a_synced}",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// **DEFECT (low; the same defect with one copied config):** as
/// `a_duplicate_id_that_rounds_faster_serves_between_conflicts`, but A and
/// A2 run the very same settings (`block_ms` 1000 both, the "copied config
/// file" case round 8's fix names). Ordinary stream traffic (here a third
/// instance C publishing purge-alls, as admin purges or any webhook do)
/// wakes both readers at once in either order, so A2 regularly gets two
/// rounds in a row without A's write in between, has no conflict in the
/// second, opens its barrier and serves X, whose tombstone only A holds.
///
/// Fix: as above (a sticky conflict: `suspect_until` renewed on every
/// conflict, the barrier shut and the ack withdrawn until a whole liveness
/// window passes with no foreign nonce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_with_the_same_config_serves_between_conflicts_under_traffic() {
    let Some((ok, total, entry)) = same_config_under_traffic("a").await else {
        return;
    };
    assert!(
        ok == 0,
        "A2 (A's instance_id, A's very settings) served a deleted container (X or Y) {ok} time(s) of {total} \
         while A, live, had not re-published its tombstone; members entry `a` = {entry:?}"
    );
}

/// Held (the control for the test above): the same scenario, traffic
/// included, with a distinct `instance_id` for the second process: it waits
/// for A (awaited, ack withdrawn) and never serves X or Y.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_distinct_id_waits_for_the_holder_under_traffic() {
    let Some((ok, total, entry)) = same_config_under_traffic("a2").await else {
        return;
    };
    assert!(
        total == 0 || ok == 0,
        "served X or Y {ok} time(s) of {total}; entry `a` = {entry:?}"
    );
}

/// A holds X's and Y's tombstones, refused re-publication (set full); a
/// second process with id `second` and A's settings starts while a third
/// instance publishes purge-alls. Returns (X/Y answered 200, answers, A's
/// members entry).
async fn same_config_under_traffic(second: &str) -> Option<(usize, usize, Option<String>)> {
    let redis = RedisServer::start()?;
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (x, y, z) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, capped(&redis.url(), "a", 1_000)).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, x, "evt_01ATTACK15J000000000000020").await;
    delete_through(&sim, &a, y, "evt_01ATTACK15J000000000000021").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&a);
    let _: i64 = redis.cmd(&["DEL", &k.fences]);
    delete_through(&sim, &a, z, "evt_01ATTACK15J000000000000022").await;
    eventually(
        "A's re-publication is refused by the full set",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_full.get()) > 0 },
    )
    .await;
    // Traffic: a third instance (joined after the loss, holding nothing
    // of X or Y) publishes purge-alls.
    let c = gated_in_background(&sim, capped(&redis.url(), "c", 1_000));
    let a2 = gated_in_background(&sim, capped(&redis.url(), second, 1_000));
    let mut served = Vec::new();
    let started = Instant::now();
    let mut next_purge = Instant::now();
    while started.elapsed() < Duration::from_secs(16) {
        if Instant::now() >= next_purge {
            next_purge = Instant::now() + Duration::from_millis(350);
            let _ = c.node.publish(&purge_all()).await;
        }
        if a2.node.is_synced() {
            for id in [x, y] {
                served.push(
                    call_get(&a2.gw, &container_path(id), &admin_key())
                        .await
                        .status
                        .as_u16(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry: Option<String> = redis.cmd(&["HGET", &k.members, "a"]);
    a.node.stop();
    a2.node.stop();
    c.node.stop();
    let ok = served.iter().filter(|s| **s == 200).count();
    Some((ok, served.len(), entry))
}

/// **DEFECT (medium, freshness): an instance that acknowledged a
/// publication before its first rebuild completed treats that rebuild as
/// lossless: if Redis lost the data meanwhile, it acks the new token at
/// once and never re-publishes the fence it alone holds; a later joiner
/// serves the deleted container.**
///
/// `Reader::rebuild` decides `lost` from what the reader saw before
/// (`self.run_id`, `self.epoch`, `self.token`) and the gap; all three are
/// empty until the first rebuild completes, and there is no gap. But
/// publishing does not wait for the join: `ClusterNode::publish` appends
/// (and the webhook is answered 200) while the reader is still joining.
/// Here X is held before its first join by a fence set over its cap (a
/// rolling raise of `fence_max_entries`, X not yet reconfigured; the same
/// window exists for any instance whose first rebuild is slow, a full set
/// takes seconds). X accepts the delete of W (merged into W's existing
/// record: acknowledged), the only running instance that holds it. Redis
/// then loses its data (`FLUSHALL`; a restart without persistence does the
/// same). X's rebuild now fits and completes with `lost = false`:
/// `fences_in_set` acks the new token at once, nothing is re-published,
/// and B, joining later, waits out the young-set window, sees X's ack and
/// serves W (200 from the lagging origin). "A fence survives as long as one
/// instance that held it keeps running" does not hold for X.
///
/// Fix: make the first completed rebuild lossy whenever the node holds any
/// fence (or published anything since it started): e.g. treat
/// `self.token == None` as "unknown, maybe lost" and call
/// `republish_fences(Some(token))` (a fresh process holds nothing and acks
/// at once; re-publications the set already covers write nothing), or
/// record every token a publication wrote under and compare it with the
/// rebuild's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_published_before_its_first_join_never_republishes_after_a_loss() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (p, q, w) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    // Three live records: P and Q deleted, W regenerated.
    delete_through(&sim, &a, p, "evt_01ATTACK15J000000000000030").await;
    delete_through(&sim, &a, q, "evt_01ATTACK15J000000000000031").await;
    let w_assets = asset_ids(&sim.container(w).unwrap());
    a.accept(&regenerated(w, w_assets)).await.unwrap();
    let k = keys(&a);
    a.node.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // X: cap 2, three live records: it does not join yet.
    let x = gated_in_background(
        &sim,
        ClusterSettings {
            fence_max_entries: 2,
            ..settings(&redis.url(), "x")
        },
    );
    eventually("X is over its cap", Duration::from_secs(10), || async {
        x.stat(|s| s.fence_overflows.get()) > 0
    })
    .await;
    // X accepts W's delete: merged into W's record, acknowledged.
    delete_through(&sim, &x, w, "evt_01ATTACK15J000000000000032").await;
    // Redis loses everything.
    let _: String = redis.cmd(&["FLUSHALL"]);
    eventually("X joined after the loss", Duration::from_secs(15), || async {
        x.node.is_synced()
    })
    .await;
    let b = gated_in_background(&sim, settings(&redis.url(), "b"));
    eventually("B serves", Duration::from_secs(20), || async {
        b.node.is_synced()
    })
    .await;
    let status = call_get(&b.gw, &container_path(w), &admin_key())
        .await
        .status
        .as_u16();
    let on_x = call_get(&x.gw, &container_path(w), &admin_key())
        .await
        .status
        .as_u16();
    assert_ne!(on_x, 200, "precondition: X holds W's tombstone");
    let x_entry: Option<String> = redis.cmd(&["HGET", &k.members, "x"]);
    let republished = x.stat(|s| s.fences_republished.get());
    let records: i64 = redis.cmd(&["HLEN", &k.fence_records]);
    x.node.stop();
    b.node.stop();
    assert_ne!(
        status, 200,
        "B, joined after the loss, served W, deleted through X (acknowledged) while X, running, \
         holds its tombstone: X re-published {republished} fence(s); X's members entry {x_entry:?}; \
         {records} field(s) in the records hash"
    );
}

/// **DEFECT (low, but it reaches correctly configured instances): the
/// duplicate's own writes carry an ack, so a third instance with a
/// distinct id, waiting for the holder, reads the duplicate's ack in the
/// holder's entry and serves what only the holder fenced.**
///
/// `members_round` withdraws the ack only in a round that reports a
/// conflict; a process's first round (the "suspect" one) and every
/// conflict-free round in between write `<now>:<max>:<nonce>:<its ack>`.
/// A2, fresh, rebuilt without loss from its point of view, acks the set's
/// token at once. C (id `c`, `block_ms` 200) has been waiting for A (ack
/// withdrawn, re-publication refused by the full set, as above) past every
/// young-set window; when A2 starts with A's id (`block_ms` 200, A: 1000;
/// with one copied config the window is A2's first round alone, which C
/// catches only sometimes), C's rounds between A2's write and A's next
/// write find `a` acked, nothing else awaited, and open C's barrier for
/// good: C serves X.
///
/// Fix: with the sticky conflict above, also withdraw the ack (write `""`)
/// in a process's suspect rounds and for a whole window after any
/// conflict; and/or have `members_round` count an entry whose nonce changed
/// within the window as awaited for every reader (keep the previous nonce
/// and when it last wrote in the entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_ids_ack_lets_a_third_instance_skip_the_holder() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (x, y, z) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, capped(&redis.url(), "a", 1_000)).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, x, "evt_01ATTACK15J000000000000040").await;
    delete_through(&sim, &a, y, "evt_01ATTACK15J000000000000041").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&a);
    let _: i64 = redis.cmd(&["DEL", &k.fences]);
    delete_through(&sim, &a, z, "evt_01ATTACK15J000000000000042").await;
    eventually(
        "A's re-publication is refused by the full set",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_full.get()) > 0 },
    )
    .await;
    let c = gated_in_background(&sim, capped(&redis.url(), "c", 200));
    // C waits for A, past every young-set window (2 x 2 s).
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(6) {
        assert!(!c.node.is_synced(), "precondition: C waits for A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a2 = gated_in_background(&sim, capped(&redis.url(), "a", 200));
    let mut served = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
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
    let entry: Option<String> = redis.cmd(&["HGET", &k.members, "a"]);
    a.node.stop();
    a2.node.stop();
    c.node.stop();
    let ok = served.iter().filter(|s| **s == 200).count();
    assert!(
        ok == 0,
        "C (its own id) served a deleted container (X or Y) {ok} time(s) of {} after A2 started \
         with A's id, while A, live, had not re-published its tombstone; members entry `a` = {entry:?}",
        served.len()
    );
}

/// Held: a process restarted with a fixed `instance_id` after a crash (its
/// predecessor's entry, another nonce, still live: no `leave`) waits only
/// until the predecessor would have rounded again, then serves; the
/// suspect rule does not keep a healthy cluster's barrier shut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_crash_restart_with_a_fixed_id_serves_after_the_predecessors_window() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    eventually("B joined", Duration::from_secs(15), || async {
        b.node.is_synced()
    })
    .await;
    let k = keys(&b);
    let token: String = redis.cmd(&["HGET", &k.fence_records, "~"]);
    let time: Vec<String> = redis.cmd(&["TIME"]);
    let now_ms = time[0].parse::<u64>().unwrap() * 1000 + time[1].parse::<u64>().unwrap() / 1000;
    // The crashed predecessor: rounded just now, acked the token.
    let entry = format!("{now_ms}:1000:deadbeef:{token}");
    let _: i64 = redis.cmd(&["HSET", &k.members, "a", &entry]);
    let a = gated_in_background(&sim, settings(&redis.url(), "a"));
    let took = eventually("the restarted A serves", Duration::from_secs(8), || async {
        a.node.is_synced()
    })
    .await;
    eventually("B still serves", Duration::from_secs(3), || async {
        b.node.is_synced()
    })
    .await;
    a.node.stop();
    b.node.stop();
    assert!(
        took >= Duration::from_millis(1_500),
        "A did not wait for its predecessor ({took:?})"
    );
}
