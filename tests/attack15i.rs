//! Attacks on 4aac8b7 (review round 8): the rebuilding registration
//! (`REBUILDING_SCRIPT`, `still_rebuilding`), `~at`/`~born` clamped to
//! Redis's clock, `~run` = `<run_id>:<master_replid>`, `start` returning
//! after the first join attempt.
//!
//! A `redis-server` of its own on a free loopback port per test; in-process
//! gateways in front of one simulator. Tests marked "DEFECT" fail on
//! 4aac8b7 for the reason their comment gives; `held_*` tests are attacks
//! that held.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::keys::StreamKeys;
use layers_gateway::cluster::ClusterSettings;
use redis_support::RedisServer;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

fn keys(i: &Instance) -> StreamKeys {
    StreamKeys::new(&i.node.settings().stream)
}

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
