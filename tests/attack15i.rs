//! Attacks on 4aac8b7 (review round 8): the rebuilding registration
//! (`REBUILDING_SCRIPT`, `still_rebuilding`), `~at`/`~born` clamped to
//! Redis's clock, `~run` = `<run_id>:<master_replid>`, `start` returning
//! after the first join attempt.
//!
//! A `redis-server` of its own on a free loopback port per test; in-process
//! gateways in front of one simulator. Tests marked "DEFECT" failed on
//! 4aac8b7 for the reason their comment gives and pass since the fix that
//! followed (a rebuild registers as rebuilding only after a gap, not over
//! the cap, and for 60 s at most; the members entry carries a process
//! nonce: a foreign write since this process's last one is a conflict that
//! stops both from serving content, and a first round that finds another
//! process's entry still live keeps the barrier shut until that writer
//! would have rounded again); `held_*` tests are attacks that held.

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

/// **DEFECT (medium, availability; a regression of round 7's fix): an
/// instance that can never finish its rebuild registers itself "rebuilding,
/// no ack" every second forever, and every other instance that joins or
/// rebuilds waits for it forever (content routes 503), with every other
/// instance healthy.**
///
/// `Reader::rebuild` calls `still_rebuilding` (`REBUILDING_SCRIPT`:
/// `HSET members <me> <now>:<max_unsynced>:`) before it even reads the
/// set's meta. An instance whose rebuild never completes loops through it
/// for as long as it runs: here one configured with a smaller
/// `fence_max_entries` than the publishers (docs/cluster.md: it "does not
/// join", state `fence_overflow`, "retries every second"; this is what a
/// rolling *raise* of the cap produces on the instances not yet
/// reconfigured, or any instance whose rebuild keeps failing). Its entry is
/// refreshed every ~1 s with an empty ack, so `members_round` counts it as
/// a live peer that names another token than the set's, forever. Before
/// round 7 such an instance never rounded and aged out of the liveness
/// window; now B, a fresh joiner with the default cap (no loss anywhere,
/// Redis healthy, A healthy), never opens its barrier and answers 503 on
/// every content route for as long as X runs. The same holds for A after
/// any gap of its own: one misconfigured instance takes the whole cluster's
/// content routes down one instance at a time.
///
/// Fix: register "rebuilding, no ack" only for an instance that may hold
/// fences the set lacks (one that has been synced before and rebuilds after
/// a gap), not for a fresh joiner, which holds nothing; and stop
/// registering (or `HDEL` itself, as `leave` does) when a rebuild ends in
/// `fence_overflow` or fails repeatedly, bounding the time a member may stay
/// "rebuilding" (e.g. write the rebuild's start time into the entry and let
/// `members_round` stop waiting for an entry rebuilding for longer than a
/// bound, counted and logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_stuck_over_the_cap_holds_every_joiner_at_503_forever() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(10), || async {
        a.node.is_synced()
    })
    .await;
    // Three containers with fence records (X's cap is two).
    for (i, id) in org_a_containers(&sim).into_iter().take(3).enumerate() {
        a.accept(&deleted(id, Vec::new(), &format!("evt-cap-{i}")))
            .await
            .unwrap();
    }
    let x = gated_in_background(
        &sim,
        ClusterSettings {
            fence_max_entries: 2,
            ..settings(&redis.url(), "x")
        },
    );
    eventually("X over the cap", Duration::from_secs(10), || async {
        x.stat(|s| s.fence_overflows.get()) > 0
    })
    .await;
    // B: a fresh joiner, same settings as A. Liveness window: 2 s.
    let b = gated_in_background(&sim, settings(&redis.url(), "b"));
    let started = Instant::now();
    let mut joined = false;
    while started.elapsed() < Duration::from_secs(2) + 4 * MARGIN {
        if b.node.is_synced() && !b.node.awaiting_peers() {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k = keys(&a);
    let x_entry: Option<String> = redis.cmd(&["HGET", &k.members, "x"]);
    let status = call_get(&b.gw, &container_path(org_a_containers(&sim)[5]), &admin_key())
        .await
        .status;
    let awaited = b.stat(|s| s.peers_awaited.get() as u64);
    a.node.stop();
    b.node.stop();
    x.node.stop();
    assert!(
        joined,
        "B (fresh, healthy) did not join within the liveness window plus margin: it awaits {awaited} \
         peer(s); X's members entry is {x_entry:?}; B answers a content route {status}"
    );
}

/// **DEFECT (medium, availability): the same instance X also holds every
/// *healthy, already serving* instance at 503 after any gap of its own.**
///
/// As above, X (cap 2, three live records) loops in `fence_overflow` and
/// refreshes `x -> <now>:<max_unsynced>:` every second. A has served for a
/// while; then an entry A cannot decode appears in the stream (what a newer
/// gateway writes during a rolling upgrade; any gap does the same: a trim
/// of unread entries, a restart with persistence). A flushes, rebuilds
/// (nothing lost), and then waits for X forever: A, the only instance that
/// could serve, answers every content route 503 with Redis and A healthy.
///
/// Fix: as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_stuck_over_the_cap_holds_a_serving_instance_at_503_after_any_gap() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(10), || async {
        a.node.is_synced()
    })
    .await;
    for (i, id) in org_a_containers(&sim).into_iter().take(3).enumerate() {
        a.accept(&deleted(id, Vec::new(), &format!("evt-gap-{i}")))
            .await
            .unwrap();
    }
    let x = gated_in_background(
        &sim,
        ClusterSettings {
            fence_max_entries: 2,
            ..settings(&redis.url(), "x")
        },
    );
    eventually("X over the cap", Duration::from_secs(10), || async {
        x.stat(|s| s.fence_overflows.get()) > 0
    })
    .await;
    let path = container_path(org_a_containers(&sim)[5]);
    assert_eq!(
        call_get(&a.gw, &path, &admin_key()).await.status,
        200,
        "precondition: A serves"
    );
    let k = keys(&a);
    let rebuilds = a.stat(|s| s.fence_rebuilds.get());
    let _: String = redis.cmd(&["XADD", &k.stream, "*", "from", "a newer gateway"]);
    eventually("A rebuilt after the gap", Duration::from_secs(10), || async {
        a.stat(|s| s.fence_rebuilds.get()) > rebuilds
    })
    .await;
    let started = Instant::now();
    let mut serving = false;
    while started.elapsed() < Duration::from_secs(2) + 4 * MARGIN {
        if a.node.is_synced() && !a.node.awaiting_peers() {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let x_entry: Option<String> = redis.cmd(&["HGET", &k.members, "x"]);
    let status = call_get(&a.gw, &path, &admin_key()).await.status;
    let awaited = a.stat(|s| s.peers_awaited.get() as u64);
    a.node.stop();
    x.node.stop();
    assert!(
        serving,
        "A (healthy) did not serve again within the liveness window plus margin after a lossless gap: \
         it awaits {awaited} peer(s); X's members entry is {x_entry:?}; A answers a content route {status}"
    );
}

/// Held (the control for the two tests above): without X, the same gap
/// (an undecodable entry) has A serving again within the liveness window
/// plus margin, and a fresh joiner joins as fast: X alone holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_without_the_stuck_instance_a_gap_and_a_join_clear_the_barrier() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(10), || async {
        a.node.is_synced()
    })
    .await;
    for (i, id) in org_a_containers(&sim).into_iter().take(3).enumerate() {
        a.accept(&deleted(id, Vec::new(), &format!("evt-ctl-{i}")))
            .await
            .unwrap();
    }
    let k = keys(&a);
    let rebuilds = a.stat(|s| s.fence_rebuilds.get());
    let _: String = redis.cmd(&["XADD", &k.stream, "*", "from", "a newer gateway"]);
    eventually("A rebuilt after the gap", Duration::from_secs(10), || async {
        a.stat(|s| s.fence_rebuilds.get()) > rebuilds
    })
    .await;
    eventually("A serving again", Duration::from_secs(2) + 4 * MARGIN, || async {
        a.node.is_synced() && !a.node.awaiting_peers()
    })
    .await;
    let b = gated_in_background(&sim, settings(&redis.url(), "b"));
    eventually("B joined", Duration::from_secs(2) + 4 * MARGIN, || async {
        b.node.is_synced() && !b.node.awaiting_peers()
    })
    .await;
    let path = container_path(org_a_containers(&sim)[5]);
    assert_eq!(call_get(&a.gw, &path, &admin_key()).await.status, 200);
    assert_eq!(call_get(&b.gw, &path, &admin_key()).await.status, 200);
    a.node.stop();
    b.node.stop();
}

/// Two fences in Redis at most, rounds every second, one `max_unsynced_ms`
/// (2 s) everywhere.
fn capped(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        fence_max_entries: 2,
        max_unsynced_ms: 2_000,
        block_ms: 1_000,
        ..settings(url, id)
    }
}

/// **DEFECT (low, freshness under a misconfiguration nothing detects): a
/// second live process with the same `instance_id` as a holder that is
/// still re-publishing goes through the barrier at once and serves what the
/// holder fenced.**
///
/// The barrier tells instances apart only by the members hash field
/// (`members_round` skips `id == me`), and nothing notices two live
/// processes writing one field: a copied config file with a fixed
/// `instance_id`, a supervisor starting a new process while the old one is
/// still draining, `<host>-<pid>` colliding between containers that share a
/// hostname (host networking, PID 1). Here A holds the tombstones of X and
/// Y; the fence set is lost alone (T1 -> T2) and a delete of Z takes the
/// room (cap 2), so A's re-publication is refused and its ack stays
/// withdrawn (the documented fail-closed case: every rebuilt instance waits
/// for A). A2, started with A's id, rebuilds (nothing lost, from its point
/// of view), skips its own field, which is A's, and serves X, whose
/// tombstone only A holds; both processes also keep overwriting each
/// other's entry, so any third instance sees A's ack flip between "" and T2
/// and passes too.
///
/// Fix: put a per-process nonce in the members entry (`<seen>:<max>:<nonce>:
/// <ack>`); a round that finds its field written by another nonce within
/// the liveness window refuses to prove itself synced (fail closed) and
/// logs `another live instance uses instance_id ...`; peers treat such a
/// field as awaited until it settles on one nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_holders_instance_id_skips_the_barrier() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (x, y, z) = (ids[0], ids[1], ids[2]);
    let a = gated(&sim, capped(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, x, "evt_01ATTACK15I000000000000010").await;
    delete_through(&sim, &a, y, "evt_01ATTACK15I000000000000011").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = keys(&a);
    let _: i64 = redis.cmd(&["DEL", &k.fences]);
    delete_through(&sim, &a, z, "evt_01ATTACK15I000000000000012").await;
    eventually(
        "A's re-publication is refused by the full set",
        Duration::from_secs(10),
        || async { a.stat(|s| s.fence_full.get()) > 0 },
    )
    .await;
    // The same id as A: a second live process.
    let a2 = gated_in_background(&sim, capped(&redis.url(), "a"));
    let mut served = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
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
    let token: String = redis.cmd(&["HGET", &k.fence_records, "~"]);
    let entry: Option<String> = redis.cmd(&["HGET", &k.members, "a"]);
    let still_refused = a.stat(|s| s.fence_full.get());
    a.node.stop();
    a2.node.stop();
    assert!(
        !served.contains(&200),
        "A2 (same instance_id as A) served a deleted container (X or Y) {} time(s) while A, \
         live, had not re-published its tombstone (set full: {still_refused} refusals); members entry `a` = \
         {entry:?}, token {token}",
        served.iter().filter(|s| **s == 200).count()
    );
}
