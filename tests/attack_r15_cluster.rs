//! Attacker review, rounds 15 and 17: cluster mode. Each test failed on
//! the code as reviewed because of a defect described in its doc comment.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::events::{EventType, Invalidation, Source};
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
    // Any writer of the stream (no secret): one 160 MiB entry.
    forged_entry_is_a_gap(&redis, |xadd| {
        xadd.arg("n")
            .arg("999999")
            .arg("inv")
            .arg(vec![b'x'; 160 << 20])
            .arg("mac")
            .arg("00");
    })
    .await;
}

/// Round 17. The bound above counted an entry's bytes only. One `XADD` of
/// a million empty fields is a few bytes of text but megabytes of reply,
/// and `XINFO STREAM`, which every script calls, answers the stream's last
/// entry whole: every round of every instance took longer than a command
/// may, and no reader ever synced again.
///
/// Expected: the same gap and recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_a_million_empty_fields_is_bounded_like_an_oversized_one() {
    let Some(redis) = RedisServer::start() else { return };
    forged_entry_is_a_gap(&redis, |xadd| {
        xadd.arg("n").arg("999999");
        for _ in 0..1_000_000 {
            xadd.arg("").arg("");
        }
    })
    .await;
}

/// Two synced instances; `fields` fills an `XADD` to their stream (any
/// writer, no secret). Both must meet it as a gap (a flush) and be synced
/// again, and the entry must be gone from the stream (deleted where a
/// script met it) so no later round pays for it again.
async fn forged_entry_is_a_gap(redis: &RedisServer, fields: impl FnOnce(&mut redis::Cmd)) {
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    assert!(a.node.is_synced() && b.node.is_synced(), "precondition: synced");
    let k = keys(&a);
    {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&k.stream).arg("*");
        fields(&mut xadd);
        let _: String = xadd.query(&mut redis.connection()).unwrap();
    }
    let flushed = |i: &Instance| i.flushes.load(std::sync::atomic::Ordering::Relaxed) > 0;
    let started = Instant::now();
    let mut recovered = false;
    while started.elapsed() < Duration::from_secs(15) {
        if a.node.is_synced() && b.node.is_synced() && flushed(&a) && flushed(&b) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = format!(
        "after {:?}: a {:?} (reconnects {}, flushes {:?}), b {:?} (reconnects {}, flushes {:?})",
        started.elapsed(),
        a.node.sync_reason(),
        a.stat(|s| s.reconnects.get()),
        a.flushes,
        b.node.sync_reason(),
        b.stat(|s| s.reconnects.get()),
        b.flushes,
    );
    eprintln!("{state}");
    a.node.stop();
    b.node.stop();
    assert!(recovered, "one forged entry wedged the readers: {state}");
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(&k.stream)
        .arg("-")
        .arg("+")
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        entries.iter().all(|e| format!("{e:?}").len() < 100_000),
        "the forged entry is still in the stream ({} entries)",
        entries.len()
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

/// Round 17. A container's floor widened by undated regenerates (each naming a full
/// event of new current ids) grew its genuine, sealed fence record without
/// bound: past the size a reader takes (4 MiB), a joiner skipped it as if
/// forged, and with it the container's tombstone, and served the deleted
/// container from the lagging origin.
///
/// Expected: the record stays bounded; the joiner holds the tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_fence_record_widened_by_undated_changes_still_reaches_a_joiner() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    assert!(a.node.is_synced(), "precondition: synced");
    let gone = org_a_containers(&sim)[0];
    let change = |current: Vec<String>, changed_at: Option<i64>, event: String| Invalidation {
        event_id: Some(event),
        source: Source::Webhook,
        event_type: EventType::Regenerated,
        container: Some(gone),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: current,
        changed_at,
        created_at: None,
        replay: false,
        accepted_at: None,
    };
    a.accept(&change(
        vec!["video-first".into()],
        Some(unix_now() * 1000),
        unique_event_id(),
    ))
    .await
    .unwrap();
    for round in 0..4 {
        let tag = format!("video-r{round}-");
        let ids = (0..layers_gateway::events::webhook::MAX_EVENT_ASSET_IDS)
            .map(|i| {
                format!(
                    "{tag}{i:0>w$}",
                    w = layers_gateway::ids::MAX_ASSET_ID_LEN - tag.len()
                )
            })
            .collect();
        a.accept(&change(ids, None, unique_event_id())).await.unwrap();
    }
    delete_through(&sim, &a, gone, "evt_01WIDENEDDELETE000000000").await;
    let k = keys(&a);
    let record_len: i64 = redis.cmd(&["HSTRLEN", &k.fence_records, &gone.to_string()]);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    eventually("C joined", Duration::from_secs(10), || async {
        c.node.is_synced()
    })
    .await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    let skipped = c.stat(|s| s.unverified.get());
    a.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "the joiner serves the container A deleted (records skipped: {skipped}, record {record_len} bytes)"
    );
    assert!(
        (0..2 << 20).contains(&record_len),
        "the record is {record_len} bytes"
    );
}
