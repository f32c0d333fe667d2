//! Attacker review, round 15: cluster mode. Each test fails on the code
//! as reviewed because of a defect described in its doc comment.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use redis_support::RedisServer;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// Hostile input on the stream: one oversized entry appended by a writer
/// without the cluster secret (the threat the MAC is there for; a forged
/// entry is documented as "a gap: flush, rebuild, read on from the end").
///
/// Expected: like any unverified entry, it is a gap; every instance
/// flushes, rebuilds from the stream's end (past the entry) and is synced
/// again within a few seconds.
/// Actual: the sync round's `XRANGE` returns the whole entry inside one
/// Lua reply, which cannot arrive within `command_timeout`; the round times
/// out, the reader reconnects and sends the same round from the same
/// position, for ever. Every instance stays unsynced (cache off, content
/// from the origin) permanently, and each retry blocks Redis for every
/// other client too: one `XADD` wedges the whole cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_forged_entry_is_skipped_like_any_forged_entry_instead_of_wedging_every_reader() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    assert!(a.node.is_synced() && b.node.is_synced(), "precondition: synced");
    let k = keys(&a);

    // Any writer of the stream (no secret): one 160 MiB entry.
    {
        let mut c = redis.connection();
        let big = vec![b'x'; 160 << 20];
        let _: String = redis::cmd("XADD")
            .arg(&k.stream)
            .arg("*")
            .arg("n")
            .arg("999999")
            .arg("inv")
            .arg(big)
            .arg("mac")
            .arg("00")
            .query(&mut c)
            .unwrap();
    }
    // A small forged entry recovers within a couple of rounds
    // (tests/cluster.rs, attack15); give this one ample time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut recovered = false;
    while started.elapsed() < Duration::from_secs(10) {
        if a.node.is_synced() && b.node.is_synced() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "recovered={recovered} after {:?} reconnects a={} b={} unverified={}",
        started.elapsed(),
        a.stat(|s| s.reconnects.get()),
        b.stat(|s| s.reconnects.get()),
        a.stat(|s| s.unverified.get())
    );
    assert!(
        recovered,
        "10 s after one oversized forged entry the instances are still unsynced \
         (a: {:?}, b: {:?}; reconnects a={} b={}): the reader retries the same round for ever",
        a.node.sync_reason(),
        b.node.sync_reason(),
        a.stat(|s| s.reconnects.get()),
        b.stat(|s| s.reconnects.get()),
    );
}

/// The same hostile input on the other read path: one oversized fence
/// record (member and record both present, so the set's halves agree)
/// written by a writer without the secret. Documented: "records whose MAC
/// does not verify are skipped and counted: a forged record could only add
/// a fence".
///
/// Expected: an instance that joins skips it (counted in `unverified`)
/// and serves content within a few seconds.
/// Actual: the rebuild's `HMGET` page carrying the record cannot be read
/// within `command_timeout`; the rebuild fails and starts over for ever.
/// Every instance that starts (or meets any gap) afterwards answers its
/// content routes 503 permanently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_forged_fence_record_is_skipped_instead_of_keeping_every_joiner_out() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    assert!(a.node.is_synced(), "precondition: synced");
    let k = keys(&a);
    {
        let mut c = redis.connection();
        let (secs, _): (String, String) = redis::cmd("TIME").query(&mut c).unwrap();
        let expiry = secs.parse::<u64>().unwrap() * 1000 + 600_000;
        let member = "cnt_00000000-0000-4000-8000-000000000001";
        let _: i64 = redis::cmd("ZADD")
            .arg(&k.fences)
            .arg(expiry)
            .arg(member)
            .query(&mut c)
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg(&k.fence_records)
            .arg(member)
            .arg(vec![b'x'; 160 << 20])
            .query(&mut c)
            .unwrap();
    }
    let c = gated_in_background(&sim, settings(&redis.url(), "c"));
    let started = Instant::now();
    let mut joined = false;
    while started.elapsed() < Duration::from_secs(10) {
        if c.node.is_synced() {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (id, _) = first_container(&sim);
    let status = call_get(&c.gw, &container_path(id), &admin_key()).await.status;
    assert!(
        joined,
        "10 s after one oversized forged fence record a joiner still has not joined \
         (state {:?}, unverified {}, content route answers {status})",
        c.node.sync_reason(),
        c.stat(|s| s.unverified.get()),
    );
}
