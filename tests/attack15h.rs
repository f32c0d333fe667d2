//! Attacks on 8bd1197 (review round 7): the fence set re-tokened under
//! another Redis `run_id`, the members hash's `~born`, the liveness window
//! of 2 x `max_unsynced_ms` for both young-set rules, the ack withdrawn
//! while re-publishing.
//!
//! A `redis-server` of its own on a free loopback port per test; in-process
//! gateways in front of one simulator whose reads of the deleted container
//! lag (so serving it at all is serving old data). Tests marked "DEFECT"
//! fail on 8bd1197 for the reason their comment gives; `held_*` tests are
//! attacks that held.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::keys::StreamKeys;
use layers_gateway::cluster::ClusterSettings;
use redis_support::RedisServer;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn keys(i: &Instance) -> StreamKeys {
    StreamKeys::new(&i.node.settings().stream)
}

/// Rounds every second when idle; one `max_unsynced_ms` (2 s) on every
/// instance, as docs/cluster.md asks: a liveness window of 4 s.
fn idle_second_rounds(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        max_unsynced_ms: 2_000,
        block_ms: 1_000,
        ..settings(url, id)
    }
}

/// Redis's clock, in unix ms.
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let t: Vec<String> = redis.cmd(&["TIME"]);
    t[0].parse::<u64>().unwrap() * 1000 + t[1].parse::<u64>().unwrap() / 1000
}

/// A TCP proxy to `target` that delays every chunk by `delay` in each
/// direction (a Redis `2 x delay` of round trip away: another zone or
/// region). Returns its URL.
async fn latency_proxy(target: SocketAddr, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                let (mut ir, mut iw) = inbound.into_split();
                let (mut or, mut ow) = outbound.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = match ir.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        tokio::time::sleep(delay).await;
                        if ow.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async move {
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = match or.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        tokio::time::sleep(delay).await;
                        if iw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    });
    format!("redis://{addr}/")
}

/// Writes `n` live fence records (member and record together, as the
/// publish script does: the two keys keep agreeing), each `size` bytes,
/// expiring in a day by Redis's clock. Their MACs do not verify (a rebuild
/// skips and counts them); only their number and size matter here, which a
/// deployment reaches with genuine records (the default cap is 50,000
/// containers; a record keeps up to 4,096 revoked asset ids).
fn fill_fence_set(redis: &RedisServer, k: &StreamKeys, n: usize, size: usize) {
    let expiry = (redis_now_ms(redis) + 86_400_000).to_string();
    let body = "x".repeat(size);
    let mut c = redis.connection();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let mut p = redis::pipe();
        for i in chunk {
            let member = format!("cnt_00000000-0000-4000-8000-{i:012}");
            p.cmd("ZADD").arg(&k.fences).arg(&expiry).arg(&member).ignore();
            p.cmd("HSET").arg(&k.fence_records).arg(&member).arg(&body).ignore();
        }
        let () = p.query(&mut c).unwrap();
    }
}

/// **DEFECT (high, freshness): a holder that is rebuilding is not rounding,
/// so it stops counting as live in the middle of its own recovery, and a
/// joiner goes through the barrier before it re-published.**
///
/// The members hash is written only by sync rounds (`members_round`). A
/// holder that detects the loss goes straight into a rebuild (the REBUILD
/// script, then `ZSCAN`/`HMGET` pages, one command's time each) and rounds
/// again only after it, so its entry (`<seen>:<max_unsynced>:<old token>`)
/// ages through the whole rebuild. Once the rebuild lasts longer than the
/// liveness window (2 x `max_unsynced_ms`), peers stop waiting for it:
/// nothing bounds a rebuild by that window (docs/cluster.md: "a full set at
/// the default cap joins in a few seconds"; `max_unsynced_ms` 2 s gives a
/// 4 s window). Here the fence set holds 40,000 records (under the default
/// cap of 50,000) and A, which holds an acknowledged tombstone, reaches
/// Redis with a 20 ms round trip. Redis restarts from a snapshot older than
/// the delete (the round-6 scenario: another `run_id`, the set re-tokened
/// in place). A reconnects at once, rounds (registering with the old token:
/// awaited), detects the gap and rebuilds for ~6 s — connected and healthy
/// throughout, never cut off, and for less than 4 x `max_unsynced_ms`. C
/// joins on a fast link, rebuilds in well under a second, waits for A
/// exactly until A's entry is 4 s old, then proves itself synced and serves
/// the deleted container while A is still reading the set.
///
/// Fix: register in the members hash from the rebuild too: the REBUILD
/// script (every attempt, including a failed one's retry) should
/// `HSET <members> <me> <now>:<max_unsynced>:""` (an empty ack: withdrawn
/// until the rebuild and any re-publication are done), and the page loop
/// should refresh it (e.g. one `members_round` call per page, or a
/// heartbeat task beside the rebuild) so a live instance never ages out
/// while it works; or have the barrier count a member as live for the
/// larger of the window and its announced rebuild deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_rebuild_outlasts_the_liveness_window_is_not_waited_for() {
    let Some(mut redis) = RedisServer::start() else { return };
    let far = latency_proxy(redis.addr(), Duration::from_millis(10)).await;
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, idle_second_rounds(&far, "a")).await;
    eventually("A joined", Duration::from_secs(15), || async {
        a.node.is_synced()
    })
    .await;
    let k = keys(&a);
    fill_fence_set(&redis, &k, 40_000, 64);
    // Redis's last snapshot (an RDB; or the replica a failover promotes).
    let _: String = redis.cmd(&["SAVE"]);
    delete_through(&sim, &a, gone, "evt_01ATTACK15H000000000000001").await;
    let recorded: bool = redis.cmd(&["HEXISTS", &k.fence_records, &gone.to_string()]);
    assert!(recorded, "the tombstone's record is in Redis once acknowledged");
    let rebuilds_before = a.stat(|s| s.fence_rebuilds.get());
    redis.restart();
    let restarted_at = Instant::now();
    let record_after: bool = redis.cmd(&["HEXISTS", &k.fence_records, &gone.to_string()]);
    assert!(!record_after, "the snapshot predates the delete");
    // A notices the restart in its next round and starts rebuilding.
    eventually("A registered after the restart", Duration::from_secs(5), || async {
        let e: Option<String> = redis.cmd(&["HGET", &k.members, "a"]);
        e.is_some()
    })
    .await;
    let c = gated_in_background(&sim, idle_second_rounds(&redis.url(), "c"));
    let mut served = Vec::new();
    let mut c_synced_at = None;
    let mut a_rebuilt_at = None;
    let mut a_republished_at = None;
    while restarted_at.elapsed() < Duration::from_secs(12) {
        if a_rebuilt_at.is_none() && a.stat(|s| s.fence_rebuilds.get()) > rebuilds_before {
            a_rebuilt_at = Some(restarted_at.elapsed());
        }
        if a_republished_at.is_none() && a.stat(|s| s.fences_republished.get()) > 0 {
            a_republished_at = Some(restarted_at.elapsed());
        }
        if c.node.is_synced() {
            c_synced_at.get_or_insert(restarted_at.elapsed());
            served.push(
                call_get(&c.gw, &container_path(gone), &admin_key())
                    .await
                    .status
                    .as_u16(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_entry: Option<String> = redis.cmd(&["HGET", &k.members, "a"]);
    a.node.stop();
    c.node.stop();
    assert!(
        !served.contains(&200),
        "after Redis restarted from a snapshot older than A's acknowledged delete, C joined and \
         served the deleted container while A (connected, holding the tombstone) was still \
         rebuilding: {} of {} answers while synced were 200; C synced {c_synced_at:?} after the \
         restart, A finished its rebuild {a_rebuilt_at:?} and re-published {a_republished_at:?} \
         after it (A's members entry at the end: {a_entry:?})",
        served.iter().filter(|s| **s == 200).count(),
        served.len()
    );
}

/// Starts A, waits until the fence set and the members hash are older than
/// the liveness window (2 s at `max_unsynced_ms` 1 s), so a joiner would
/// not wait; sets `field` of `key` to one hour ahead of Redis's clock (what
/// a clock stepped back by an hour leaves behind: an NTP correction, a VM
/// restored, a failover to a replica whose clock is behind); then starts C
/// and reports whether it joined within the window plus margin.
async fn joiner_after_a_field_dated_ahead(pick: fn(&StreamKeys) -> String, field: &str) -> (bool, String) {
    let Some(redis) = RedisServer::start() else { return (true, String::new()) };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    eventually("A joined", Duration::from_secs(10), || async {
        a.node.is_synced()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let k = keys(&a);
    let key = pick(&k);
    let ahead = (redis_now_ms(&redis) + 3_600_000).to_string();
    let _: i64 = redis.cmd(&["HSET", &key, field, &ahead]);
    let c = gated_in_background(&sim, settings(&redis.url(), "c"));
    let started = Instant::now();
    let mut joined = false;
    while started.elapsed() < Duration::from_secs(2) + 3 * MARGIN {
        if c.node.is_synced() {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still: Option<String> = redis.cmd(&["HGET", &key, field]);
    let status = call_get(&c.gw, &container_path(org_a_containers(&sim)[0]), &admin_key())
        .await
        .status;
    a.node.stop();
    c.node.stop();
    (
        joined,
        format!("{key} {field} = {still:?} (Redis now {}), C answers {status}", redis_now_ms(&redis)),
    )
}

/// **DEFECT (medium, availability): the members hash's `~born`, dated
/// ahead of Redis's clock, holds every joining or rebuilding instance at
/// 503 until the clock reaches it; nothing prunes or clamps it.**
///
/// Round 5's fix prunes a *member* "seen" more than a minute ahead of
/// Redis's clock (tests/attack15f.rs, `a_members_entry_dated_in_the_future_
/// blocks_every_rebuilt_instance`), for the reasons given there (a clock
/// stepped back, a failover to a replica whose clock is behind). Round 6
/// added `~born` to the same hash and judges it by the same clock
/// (`members_age = now - born`, clamped to 0 by `Round::parse`), but
/// never checks it: one hour ahead, every instance that joins (a rolling
/// deploy, an autoscaled instance) or rebuilds after any gap waits an hour,
/// with every instance healthy. Here C should join within the 2 s window
/// plus margin and is still 503.
///
/// Fix: in `members_round`, treat a `~born` more than a minute ahead of
/// `now` like a future-dated member: rewrite it to `now` (one liveness
/// window's wait, as after the hash was lost) and log it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_hash_born_in_the_future_blocks_every_joiner() {
    let (joined, seen) = joiner_after_a_field_dated_ahead(|k| k.members.clone(), "~born").await;
    assert!(joined, "C did not join within the liveness window plus margin: {seen}");
}

/// **DEFECT (medium, availability): the same for the fence set's `~at`.**
///
/// `SYNC_SCRIPT` computes the set's age as `now - ~at`, clamped to 0: a
/// `~at` ahead of Redis's clock (the same clock step as above, after the
/// set was created or re-tokened) makes the set "young" until the clock
/// reaches it, so every joiner and every rebuilt instance answers 503 for
/// that long. The set is only re-tokened (and `~at` rewritten) by a loss
/// or another `run_id`, neither of which a clock step brings.
///
/// Fix: in `fence_token`, a `~at` more than a minute ahead of `now` is
/// rewritten to `now` (or the token rotated: the window then holds once,
/// as for a loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_set_created_in_the_future_blocks_every_joiner() {
    let (joined, seen) = joiner_after_a_field_dated_ahead(|k| k.fence_records.clone(), "~at").await;
    assert!(joined, "C did not join within the liveness window plus margin: {seen}");
}
