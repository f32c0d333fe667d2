//! Attacker review, round 17: the size bounds of cluster reads. Each test
//! failed on the code before its fix because of the defect in its doc
//! comment.

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

/// The round-15 bound counted an entry's bytes only. One `XADD` of a
/// million empty fields (any writer of the stream, no secret) is a few
/// bytes of text but megabytes of reply: the sync round that carried it
/// timed out, the reader asked again from the same place, for ever, and
/// every instance stayed unsynced.
///
/// Expected: like any forged entry, a gap; every instance recovers, and
/// the entry is gone from the stream (deleted where a script met it), so
/// no later round pays for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_a_million_empty_fields_is_bounded_like_an_oversized_one() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    assert!(a.node.is_synced() && b.node.is_synced(), "precondition: synced");
    let k = keys(&a);
    {
        let mut c = redis.connection();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&k.stream).arg("*").arg("n").arg("999999");
        for _ in 0..1_000_000 {
            xadd.arg("").arg("");
        }
        let _: String = xadd.query(&mut c).unwrap();
    }
    let started = tokio::time::Instant::now();
    let recovered = loop {
        let synced = a.node.is_synced() && b.node.is_synced();
        // Each met it as a gap (from its MAC, or its deletion): flushed.
        let flushed = |i: &Instance| i.flushes.load(std::sync::atomic::Ordering::Relaxed) > 0;
        if synced && flushed(&a) && flushed(&b) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
    assert!(
        recovered,
        "one XADD of a million empty fields wedged the readers: {state}"
    );
    let left: i64 = redis.cmd(&["XLEN", &k.stream]);
    let fields: Vec<redis::Value> = {
        let mut c = redis.connection();
        redis::cmd("XRANGE")
            .arg(&k.stream)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap()
    };
    assert!(
        fields.iter().all(|e| format!("{e:?}").len() < 100_000),
        "the forged entry is still in the stream ({left} entries)"
    );
    a.node.stop();
    b.node.stop();
}

/// A container's floor widened by undated regenerates (each naming a full
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
