//! The recovery barrier (`src/cluster/fence_token.rs`): after Redis lost
//! fences, no instance serves content routes until every live instance has
//! put back the fences it holds. A joiner that rebuilt from what was left
//! would otherwise serve a container whose delete a peer acknowledged.
//!
//! A `redis-server` of its own on a free loopback port; in-process gateways
//! in front of one simulator whose reads of the deleted container lag.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use redis_support::RedisServer;
use std::time::Duration;
use support::*;

/// Redis's clock, in unix ms (members are judged by it).
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let t: Vec<String> = redis.cmd(&["TIME"]);
    t[0].parse::<u64>().unwrap() * 1000 + t[1].parse::<u64>().unwrap() / 1000
}

/// Both fence keys deleted (an operator's cleanup), and an instance joins
/// at once, before the holder's next round: it rebuilds from an empty set,
/// so without the barrier it would serve the container A deleted. With it,
/// it waits until A has re-published, then refuses the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_right_after_the_fences_were_lost_waits_for_the_holder() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, gone, "evt_01BARRIER000000000000000001").await;
    let k = keys(&a);
    let n: i64 = redis.cmd(&["DEL", &k.fences, &k.fence_records]);
    assert_eq!(n, 2);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C joined", Duration::from_secs(10), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    a.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "C joined right after the fence set was lost and serves the container A deleted"
    );
}

/// A peer that stops rounding (dead, or cut off) holds up the barrier only
/// until its liveness runs out (2 x max_unsynced_ms,
/// at least 2 s); meanwhile the joiner is unsynced and its content routes
/// answer 503 with the Layers envelope, and `cluster_fence_peers_awaited`
/// names the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_awaited_only_while_it_counts_as_alive() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    let k = keys(&a);
    // A peer last seen just now that has not re-published to the set C is
    // about to create.
    let member = format!("{}:1000:old-token", redis_now_ms(&redis));
    let _: i64 = redis.cmd(&["HSET", &k.members, "silent-peer", &member]);
    let _: i64 = redis.cmd(&["DEL", &k.fences, &k.fence_records]);
    let c = gated_in_background(&sim, settings(&redis.url(), "c"));
    eventually("C waits for the silent peer", Duration::from_secs(2), || async {
        c.stat(|s| s.peers_awaited.get() as u64) >= 1
    })
    .await;
    assert!(
        !c.node.is_synced(),
        "C counts itself synced while a live peer has not re-published"
    );
    let r = call_get(&c.gw, &container_path(id), &admin_key()).await;
    assert_eq!(r.status, 503, "content routes answer 503 while C waits");
    assert!(
        String::from_utf8_lossy(&r.body).contains("\"error\""),
        "a Layers envelope: {:?}",
        r.body
    );
    let waited = eventually(
        "C joined once the peer's liveness ran out",
        Duration::from_secs(10),
        || async { c.node.is_synced() },
    )
    .await;
    let r = call_get(&c.gw, &container_path(id), &admin_key()).await;
    a.node.stop();
    c.node.stop();
    assert_eq!(r.status, 200);
    assert!(
        waited >= Duration::from_millis(1500),
        "C stopped waiting after {waited:?}"
    );
}

/// `FLUSHALL` takes the members hash with the fences: for a moment nobody
/// is registered, and a joiner that rebuilt then would wait for no one. The
/// set's age closes that: a joiner waits until the new set is
/// `max_unsynced_ms` old, by when every live peer has rounded, registered
/// with its old token, and so is waited for until it has re-published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_right_after_flushall_waits_for_the_holder_it_cannot_see_yet() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(5), || async {
        a.node.is_synced()
    })
    .await;
    delete_through(&sim, &a, gone, "evt_01BARRIER000000000000000002").await;
    let _: () = redis.cmd(&["FLUSHALL"]);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C joined", Duration::from_secs(10), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    a.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "C joined right after FLUSHALL and serves the container A deleted"
    );
}
