//! Attacker reviews, rounds 18 and 19: cluster mode against a writer with
//! Redis write access but without the cluster secret. Each test failed on
//! the code as reviewed because of the defect in its doc comment.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::events::{EventType, Invalidation, Source};
use redis_support::{Partition, RedisServer};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// A caption change, so the stream exists (and every reader has a
/// position past its first entry) before the attack.
fn updated(id: layers_gateway::ids::ContainerId) -> Invalidation {
    Invalidation {
        event_id: Some(unique_event_id()),
        source: Source::Webhook,
        event_type: EventType::Updated,
        container: Some(id),
        revoked_asset_ids: Vec::new(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

/// The ids of the stream's entries, oldest first.
fn stream_ids(redis: &RedisServer, stream: &str) -> Vec<String> {
    let mut c = redis.connection();
    let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    v.into_iter().map(|(id, _)| id).collect()
}

/// One field of `XINFO STREAM`.
fn xinfo(redis: &RedisServer, stream: &str, field: &str) -> redis::Value {
    let mut c = redis.connection();
    let v: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query(&mut c)
        .unwrap();
    let redis::Value::Array(items) = v else {
        panic!("XINFO answered {v:?}")
    };
    for pair in items.chunks(2) {
        if let [redis::Value::BulkString(k), v] = pair {
            if k == field.as_bytes() {
                return v.clone();
            }
        }
    }
    panic!("no {field} in XINFO STREAM")
}

/// docs/cluster.md, what the MAC does not protect: a writer without the
/// secret can "(2) *delete* entries or records (a deleted entry is a gap by
/// its ordinal ...)". It is not: `XDEL` of the newest entry followed by
/// `XSETID <same last id> MAXDELETEDID 0-1` (both plain key commands on the
/// stream) leaves `entries-added` and `last-generated-id` as they were and
/// puts `max-deleted-entry-id` back below every reader's position. A reader
/// that had not read the entry yet (here B, cut off from Redis for a moment,
/// a routine network blip) then sees `added = its ordinal + 1`, no entry
/// after its position, `max-deleted` below it: `detect_gap` finds nothing
/// (it never checks that a caught-up round actually read up to
/// `entries-added`). The publisher A read its own entry before the deletion
/// and sees nothing either, so nobody re-publishes, and the fence record is
/// still there, so a re-publication would be "covered" anyway.
///
/// Expected (the central promise): after A acknowledged the delete, B, once
/// synced again, answers the container 404, or at least notices the lost
/// entry (a gap: flush and rebuild from the fence record that holds the
/// tombstone).
/// Actual: B reports synced with no gap and serves the deleted container
/// from its cache (200, `X-Cache: HIT`) indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_entry_deleted_before_a_peer_read_it_is_a_gap_for_that_peer() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (gone, other) = (ids[0], ids[1]);
    let partition = Partition::to(redis.addr()).await;
    let b = gated(&sim, settings(&partition.url(), "b")).await;
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let k = keys(&a);
    a.accept(&updated(other)).await.unwrap();
    eventually("B applied the first entry", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 1 && b.node.is_synced()
    })
    .await;
    warm(&b.gw, gone).await;

    partition.cut();
    delete_through(&sim, &a, gone, "evt_01R18DELETEDENTRY00000000").await;
    // A's reader reads its own entry (a duplicate) before the deletion.
    eventually("A read its own entry back", Duration::from_secs(5), || async {
        a.stat(|s| s.duplicates.get()) >= 1
    })
    .await;
    // The writer without the secret: delete the tombstone's entry, and put
    // the stream's counters back.
    let tombstone = stream_ids(&redis, &k.stream).pop().unwrap();
    let _: i64 = redis.cmd(&["XDEL", &k.stream, &tombstone]);
    let _: String = redis.cmd(&["XSETID", &k.stream, &tombstone, "MAXDELETEDID", "0-1"]);
    partition.heal();
    let healed = Instant::now();
    eventually("B synced after the heal", Duration::from_secs(8), || async {
        b.node.is_synced() && b.node.last_proof_age().is_some_and(|age| age < healed.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = call_get(&b.gw, &container_path(gone), &admin_key()).await;
    let (gaps, flushes) = (
        b.stat(|s| s.gaps.get()),
        b.flushes.load(std::sync::atomic::Ordering::Relaxed),
    );
    a.node.stop();
    b.node.stop();
    assert_ne!(
        r.status,
        200,
        "B (synced, gaps {gaps}, flushes {flushes}) serves the container A deleted (X-Cache {:?}): \
         the tombstone's entry was deleted before B read it, and nothing noticed",
        r.x_cache()
    );
}

/// The heartbeat is there so that "a Redis that accepts reads but refuses
/// writes ... refuses everyone's invalidations too, and now every instance
/// fails closed within `max_unsynced_ms` instead of reading an empty stream
/// forever" (docs/cluster.md, proof of being synced). But it writes the
/// *heartbeat* stream, not the invalidation stream. One `XSETID <stream>
/// 18446744073709551615-18446744073709551615` by a writer without the
/// secret makes every `XADD` to the invalidation stream fail ("exhausted
/// the last possible ID"), in the publish script after the fence record
/// was written, while every heartbeat and every read still succeed.
///
/// Expected: a delete A accepted is not served from B's cache (fixed:
/// such a stream is deleted where a script meets it, so the publication
/// recreates it and B meets the loss as a gap).
/// Actual: A fails closed (its outbox), but B stays synced reading an
/// empty stream and serves the deleted container from its cache for as
/// long as the attacker likes (checked after 3 x `max_unsynced`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_refuses_every_append_never_lets_a_peer_serve_what_was_deleted() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (gone, other) = (ids[0], ids[1]);
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    let k = keys(&a);
    a.accept(&updated(other)).await.unwrap();
    eventually("B applied the first entry", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 1 && b.node.is_synced()
    })
    .await;
    warm(&b.gw, gone).await;

    let _: String = redis.cmd(&["XSETID", &k.stream, "18446744073709551615-18446744073709551615"]);
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    let published = a
        .accept(&deleted(gone, assets, "evt_01R18EXHAUSTED0000000000"))
        .await;
    eprintln!("A's publication: {published:?}");
    tokio::time::sleep(MAX_UNSYNCED * 3).await;
    let r = call_get(&b.gw, &container_path(gone), &admin_key()).await;
    let synced = b.node.is_synced();
    let outbox = a.node.outbox_len();
    a.node.stop();
    b.node.stop();
    assert!(
        !(synced && r.status == 200),
        "B is synced and serves the container A deleted ({}, X-Cache {:?}) {:?} after the delete; \
         A's outbox holds {outbox}: the stream refuses every append, the heartbeat does not notice",
        r.status,
        r.x_cache(),
        MAX_UNSYNCED * 3
    );
}

/// The same deletion, with the counters put back fully: `XDEL` of the
/// tombstone's entry, then `XSETID <the entry before it> ENTRIESADDED
/// <one less> MAXDELETEDID 0-1`. Now the stream is exactly as it was
/// before the publication, so a reader that had not read the entry (B, cut
/// off for a moment) cannot tell from the stream; only the publisher A,
/// whose position is past the end, sees the stream "go back" (a
/// `recreated` gap, which counts as Redis having lost data). A then
/// re-publishes its fences, but the container's fence record still holds
/// the tombstone, so the re-publication is "covered" and writes nothing:
/// no entry, and the fence token is unchanged, so no other instance learns
/// that entries were lost.
///
/// Expected: a loss one instance detects reaches the others (B gaps and
/// rebuilds from the fence records, which hold the tombstone), or the
/// re-publication after a gap that lost entries writes the entry again;
/// B answers the deleted container 404.
/// Actual: B stays synced with no gap and serves the deleted container
/// from its cache (200 HIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_loss_the_publisher_detects_reaches_the_peer_that_missed_the_entry() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (gone, other) = (ids[0], ids[1]);
    let partition = Partition::to(redis.addr()).await;
    let b = gated(&sim, settings(&partition.url(), "b")).await;
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let k = keys(&a);
    a.accept(&updated(other)).await.unwrap();
    eventually("B applied the first entry", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 1 && b.node.is_synced()
    })
    .await;
    warm(&b.gw, gone).await;

    partition.cut();
    delete_through(&sim, &a, gone, "evt_01R18ROLLEDBACK0000000000").await;
    eventually("A read its own entry back", Duration::from_secs(5), || async {
        a.stat(|s| s.duplicates.get()) >= 1
    })
    .await;
    let mut ids = stream_ids(&redis, &k.stream);
    let tombstone = ids.pop().unwrap();
    let before = ids.pop().unwrap();
    let added = match xinfo(&redis, &k.stream, "entries-added") {
        redis::Value::Int(n) => n,
        v => panic!("entries-added {v:?}"),
    };
    let _: i64 = redis.cmd(&["XDEL", &k.stream, &tombstone]);
    let _: String = redis.cmd(&[
        "XSETID",
        &k.stream,
        &before,
        "ENTRIESADDED",
        &(added - 1).to_string(),
        "MAXDELETEDID",
        "0-1",
    ]);
    eventually("A saw the stream go back", Duration::from_secs(5), || async {
        a.stat(|s| s.gaps.get()) >= 1 && a.node.is_synced()
    })
    .await;
    partition.heal();
    let healed = Instant::now();
    eventually("B synced after the heal", Duration::from_secs(8), || async {
        b.node.is_synced() && b.node.last_proof_age().is_some_and(|age| age < healed.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = call_get(&b.gw, &container_path(gone), &admin_key()).await;
    let gaps = (a.stat(|s| s.gaps.get()), b.stat(|s| s.gaps.get()));
    a.node.stop();
    b.node.stop();
    assert_ne!(
        r.status,
        200,
        "B serves the container A deleted (X-Cache {:?}); gaps (A, B) = {gaps:?}: A found the loss, B never did",
        r.x_cache()
    );
}

/// Waits up to `within` for every instance to be synced; returns whether
/// they were.
async fn all_synced(instances: &[&Instance], within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if instances.iter().all(|i| i.node.is_synced()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every sync round and rebuild returns the epoch key's value (`GET`) and
/// the reader parses it as an integer; the documented handling of that key
/// is "the epoch key lost (evicted) while the stream stays: a gap". A
/// value that is not a number (one `SET` by any writer, no secret) is
/// neither: `Round::parse` / `Rebuild::parse` fail on every answer, the
/// reader reconnects and asks again, for ever, and nothing in any script
/// ever repairs the key.
///
/// Expected: like a lost epoch, a gap; every instance recovers within a
/// few seconds and a joiner joins.
/// Actual: every instance stays unsynced for good (cache off), and a
/// joiner never rebuilds: its content routes answer 503 permanently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_that_is_not_a_number_does_not_keep_every_instance_unsynced() {
    let Some((recovered, state)) = one_write_then_recovery(|redis, k| {
        let _: String = redis.cmd(&["SET", &k.epoch, "not-a-number"]);
    })
    .await
    else {
        return;
    };
    assert!(recovered, "one SET of the epoch key wedged the cluster: {state}");
}

/// The fence set's token is returned by every sync round and rebuild and
/// parsed as UTF-8 text. A writer without the secret replaces it in both
/// halves (the marker member `~<token>` and the records hash's field `~`,
/// keeping `~run`), so the halves agree and no script resets the set, with
/// a token no gateway writes (gateways write 16 hex digits): here two
/// bytes that are not UTF-8. Every round's answer then fails to parse, on
/// every instance, for ever. (A token of tens of MiB does the same by
/// size: it is answered whole in every round, the bound on entries and
/// records does not cover it.)
///
/// Expected: a token no gateway writes is a broken set: reset (a
/// `fences_lost` gap, re-publication), and every instance recovers.
/// Actual: every instance stays unsynced for good, and a joiner never
/// joins (content routes 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_token_no_gateway_writes_does_not_keep_every_instance_unsynced() {
    let Some((recovered, state)) = one_write_then_recovery(|redis, k| {
        let mut c = redis.connection();
        let markers: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(&k.fences)
            .arg("+inf")
            .arg("+inf")
            .query(&mut c)
            .unwrap();
        let bad: &[u8] = b"\xff\xfe";
        let mut marker = vec![b'~'];
        marker.extend_from_slice(bad);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in &markers {
            pipe.cmd("ZREM").arg(&k.fences).arg(m.as_slice()).ignore();
        }
        pipe.cmd("ZADD").arg(&k.fences).arg("+inf").arg(marker).ignore();
        pipe.cmd("HSET").arg(&k.fence_records).arg("~").arg(bad).ignore();
        let () = pipe.query(&mut c).unwrap();
    })
    .await
    else {
        return;
    };
    assert!(recovered, "a rewritten fence token wedged the cluster: {state}");
}

/// The members hash is read whole (`HGETALL`) by every sync round of every
/// instance, inside the script. Members not seen for an hour are pruned,
/// but fields starting with `~` are skipped (they are the hash's own
/// fields, like `~born`) and never pruned. A writer without the secret adds
/// a million small `~` fields (about 60 MB): each round now spends most of
/// a second in `HGETALL` and its loop, longer than a command may take; the
/// round times out, the reader asks again, for ever, and Redis is busy with
/// these rounds for everyone. The round-15/17 bounds cover entries and
/// records, not this key.
///
/// Expected: fields no gateway writes are dropped (or never read), and
/// every instance is synced again within a few seconds.
/// Actual: every instance stays unsynced for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_hash_of_a_million_fields_does_not_wedge_every_round() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    let k = keys(&a);
    assert!(
        all_synced(&[&a, &b], Duration::from_secs(5)).await,
        "precondition: synced"
    );
    {
        let mut c = redis.connection();
        let _: i64 = redis::cmd("EVAL")
            .arg(
                "for i = 1, 1000000, 1000 do local a = {} \
                 for j = i, i + 999 do a[#a + 1] = '~' .. j; a[#a + 1] = '1' end \
                 redis.call('HSET', KEYS[1], unpack(a)) end return 0",
            )
            .arg(1)
            .arg(&k.members)
            .query(&mut c)
            .unwrap();
    }
    tokio::time::sleep(MAX_UNSYNCED + MARGIN).await;
    let recovered = all_synced(&[&a, &b], Duration::from_secs(10)).await;
    let state = format!(
        "a {:?} (reconnects {}), b {:?} (reconnects {})",
        a.node.sync_reason(),
        a.stat(|s| s.reconnects.get()),
        b.node.sync_reason(),
        b.stat(|s| s.reconnects.get()),
    );
    a.node.stop();
    b.node.stop();
    assert!(
        recovered,
        "a million '~' fields in the members hash wedged every round: {state}"
    );
}

/// The fence set's cap counts members, not records that verify. A writer
/// without the secret adds `fence_max_entries` + 1 members (scored far in
/// the future, so never pruned) and as many junk fields to the records
/// hash (so the two halves agree and nothing resets the set): about 5 MB.
/// Documented: a record that does not verify is skipped ("a forged record
/// could only add a fence"), and more live records than the cap "happens
/// only to an instance configured with a smaller cap than a publisher's".
///
/// Expected: forged records are skipped, and a joiner joins.
/// Actual: every joiner (and every instance after its next gap) refuses
/// to join for good (`fence_overflow`, content routes 503), and every
/// publication for a container without a record is refused (`FENCEFULL`)
/// until the forged members "expire", which they never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_fence_members_do_not_keep_every_joiner_out_for_good() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let k = keys(&a);
    assert!(a.node.is_synced(), "precondition: synced");
    let cap = a.node.settings().fence_max_entries;
    {
        let mut c = redis.connection();
        let _: i64 = redis::cmd("EVAL")
            .arg(
                "local n = tonumber(ARGV[1]) for i = 1, n, 1000 do local z, h = {}, {} \
                 for j = i, math.min(n, i + 999) do \
                   local m = string.format('cnt_00000000-0000-4000-8000-%012d', j) \
                   z[#z + 1] = '9e15'; z[#z + 1] = m; h[#h + 1] = m; h[#h + 1] = 'junk' end \
                 redis.call('ZADD', KEYS[1], unpack(z)) redis.call('HSET', KEYS[2], unpack(h)) end return 0",
            )
            .arg(2)
            .arg(&k.fences)
            .arg(&k.fence_records)
            .arg(cap + 1)
            .query(&mut c)
            .unwrap();
    }
    let c = gated_in_background(&sim, settings(&redis.url(), "c"));
    let joined = all_synced(&[&c], Duration::from_secs(12)).await;
    let (id, _) = first_container(&sim);
    let status = call_get(&c.gw, &container_path(id), &admin_key()).await.status;
    let state = format!(
        "joiner {:?} (over-cap refusals {}, unverified {}), content route {status}",
        c.node.sync_reason(),
        c.stat(|s| s.fence_overflows.get()),
        c.stat(|s| s.unverified.get()),
    );
    a.node.stop();
    c.node.stop();
    assert!(
        joined,
        "{} forged fence members keep every joiner out: {state}",
        cap + 1
    );
}

// Round 19: the round-18 fixes reviewed again.

/// Two synced instances (the stream exists), then one write by a writer
/// without the secret (`attack`, given the stream's keys), then a joiner:
/// returns whether all three are synced within 10 s, and their states.
async fn one_write_then_recovery(
    attack: impl FnOnce(&RedisServer, &layers_gateway::cluster::keys::StreamKeys),
) -> Option<(bool, String)> {
    let redis = RedisServer::start()?;
    let sim = demo_simulator();
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    let k = keys(&a);
    a.accept(&updated(org_a_containers(&sim)[1])).await.unwrap();
    assert!(
        all_synced(&[&a, &b], Duration::from_secs(5)).await,
        "precondition: synced"
    );
    attack(&redis, &k);
    tokio::time::sleep(MAX_UNSYNCED + MARGIN).await;
    let c: Arc<Instance> = gated_in_background(&sim, settings(&redis.url(), "c"));
    let recovered = all_synced(&[&a, &b, &c], Duration::from_secs(10)).await;
    let (id, _) = first_container(&sim);
    let status = call_get(&c.gw, &container_path(id), &admin_key()).await.status;
    let state = format!(
        "a {:?} (reconnects {}, heartbeat errors {}), b {:?}, joiner c {:?} (content route {status})",
        a.node.sync_reason(),
        a.stat(|s| s.reconnects.get()),
        a.stat(|s| s.heartbeat_errors.get()),
        b.node.sync_reason(),
        c.node.sync_reason(),
    );
    a.node.stop();
    b.node.stop();
    c.node.stop();
    Some((recovered, state))
}

/// Round 19. docs/cluster.md ("The gateway's other keys are read the same guarded
/// way, so one write cannot keep instances unsynced for good") lists "a
/// stream whose last id is the largest there is (every append refused)
/// fails the round's write proof". That guard (SYNC_SCRIPT, new in
/// b3543fd) only turns the wedge into a permanent fail-closed: nothing
/// ever repairs the stream, so every round's proof fails for good; and a
/// joiner's rebuild takes that largest id as its position, after which
/// every round's `XRANGE (<largest id> +` is an error ("invalid start ID
/// for the interval"). One `XSETID` by a writer without the secret
/// therefore keeps every instance unsynced (cache off) and every joiner
/// answering 503, for ever.
///
/// Expected: like the other keys the commit guards (an epoch that is not a
/// counter is deleted: "an epoch gap, once"), a gap once (the stream
/// deleted on a primary: every reader rebuilds from the fence records,
/// which the publish script writes before its `XADD`), then every
/// instance synced again and the joiner joins.
/// Actual: a, b and the joiner c stay unsynced after 10 s (a's heartbeat
/// errors keep counting; c's content route answers 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_at_the_largest_id_does_not_keep_every_instance_unsynced_for_good() {
    let Some((recovered, state)) = one_write_then_recovery(|redis, k| {
        let _: String = redis.cmd(&["XSETID", &k.stream, "18446744073709551615-18446744073709551615"]);
    })
    .await
    else {
        return;
    };
    assert!(
        recovered,
        "one XSETID to the largest id wedged the cluster: {state}"
    );
}

/// The commit reads the epoch key "guarded" (`epoch_of`: `TYPE` first, a
/// value of another kind deleted) and bounds the members hash's size, but
/// every other key is still read with `redis.call`, which raises on a key
/// of another type: one `SET <stream>:members x` (no secret) makes
/// `members_round`'s first `HLEN` a WRONGTYPE error in every SYNC_SCRIPT
/// round of every instance, for ever (nothing deletes the key). The same
/// holds for the fence set (`ZRANGEBYSCORE` in `fence_token`) and the
/// fence-records hash (`HGET`).
///
/// Expected (docs/cluster.md: "one write cannot keep instances unsynced
/// for good"; the members hash "dropped, as if lost"): a members key of
/// another type is dropped like a lost one; instances are synced again
/// within a liveness window and the joiner joins.
/// Actual: every round fails; a, b and c stay unsynced (reconnecting) and
/// c's content routes answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_key_of_another_type_does_not_keep_every_instance_unsynced() {
    let Some((recovered, state)) = one_write_then_recovery(|redis, k| {
        let _: String = redis.cmd(&["SET", &k.members, "x"]);
    })
    .await
    else {
        return;
    };
    assert!(
        recovered,
        "one SET of the members key wedged the cluster: {state}"
    );
}

/// The invalidation stream itself replaced by a key of another type (`SET
/// <stream> x`, no secret): SYNC_SCRIPT, REBUILD_SCRIPT and PUBLISH_SCRIPT
/// all call `XINFO STREAM` after `EXISTS`, which raises WRONGTYPE: every
/// round, every rebuild and every publication fails for ever (the stream
/// missing would be an ordinary, recoverable gap, and the next publication
/// would create it again).
///
/// Expected: a gap once (as for a deleted stream), then synced again.
/// Actual: a, b and c stay unsynced for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_key_of_another_type_does_not_keep_every_instance_unsynced() {
    let Some((recovered, state)) = one_write_then_recovery(|redis, k| {
        let _: String = redis.cmd(&["SET", &k.stream, "x"]);
    })
    .await
    else {
        return;
    };
    assert!(recovered, "one SET of the stream key wedged the cluster: {state}");
}

/// The heartbeat key replaced by a key of another type (`SET
/// <stream>:heartbeat x`): SYNC_SCRIPT's heartbeat `XADD` fails with
/// WRONGTYPE in every round of every instance, so no instance ever proves
/// it is synced again (fail closed for good), though Redis takes every
/// write the gateway needs.
///
/// Expected: the key is replaced (as the commit deletes an epoch of
/// another kind), every instance synced again.
/// Actual: a, b and c stay unsynced for good (reason `write`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_key_of_another_type_does_not_keep_every_instance_unsynced() {
    let Some((recovered, state)) = one_write_then_recovery(|redis, k| {
        let _: String = redis.cmd(&["SET", &k.heartbeat, "x"]);
    })
    .await
    else {
        return;
    };
    assert!(
        recovered,
        "one SET of the heartbeat key wedged the cluster: {state}"
    );
}

/// `drop_impossible_fences` (PUBLISH_SCRIPT and REBUILD_SCRIPT, new in
/// b3543fd) deletes every fence member scored later than Redis's now + 30
/// days + 1 minute *and its record*, silently: the token is not rotated,
/// no gap, no re-publication. Any genuine record scored there is lost
/// without any instance noticing. Here, a rolling upgrade: instance A still
/// runs the previous build, whose cluster mode accepted `tombstone_secs`
/// over 30 days (here 31), and deletes a container; its record (Redis now +
/// 31 days) is the only place a joiner learns the tombstone from. The
/// joiner C (new build) runs REBUILD_SCRIPT, which removes that record
/// before counting and reading the set; A, which holds the tombstone,
/// never re-publishes it (nothing told it the record is gone). The same
/// happens with `tombstone_secs` at the accepted maximum (30 days) when
/// Redis's clock steps back by more than a minute (NTP) without a restart.
///
/// Expected: a joiner answers the deleted container 404 (the record kept;
/// or at least clamped to the longest retention, or its removal treated as
/// a loss: the token rotated so the holders re-publish).
/// Actual: the record is deleted, and the joiner C serves the deleted
/// container (200 from the lagging origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_fence_record_scored_past_30_days_is_not_dropped_silently() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let ids = org_a_containers(&sim);
    let (gone, other) = (ids[0], ids[1]);
    // The previous build's instance: 31 days was an accepted lifetime.
    let a = gated_with(
        &sim,
        settings(&redis.url(), "a"),
        "[invalidation]\ntombstone_secs = 2678400\n",
    )
    .await;
    let k = keys(&a);
    a.accept(&updated(other)).await.unwrap();
    delete_through(&sim, &a, gone, "evt_01R19LONGTOMBSTONE000000000").await;
    let records_before: i64 = redis.cmd(&["ZCOUNT", &k.fences, "-inf", "(+inf"]);
    assert!(
        records_before >= 1,
        "precondition: A's delete wrote a fence record"
    );
    let c = gated_in_background(&sim, settings(&redis.url(), "c"));
    eventually("the joiner C synced", Duration::from_secs(10), || async {
        c.node.is_synced() && !c.node.awaiting_peers()
    })
    .await;
    let records_after: i64 = redis.cmd(&["ZCOUNT", &k.fences, "-inf", "(+inf"]);
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    let a_status = call_get(&a.gw, &container_path(gone), &admin_key()).await.status;
    let gaps = (a.stat(|s| s.gaps.get()), c.stat(|s| s.gaps.get()));
    a.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "the joiner serves the container A deleted (A answers {a_status}); fence records before the \
         join {records_before}, after {records_after}; gaps (A, C) {gaps:?}: the record was dropped \
         silently and nobody re-published it"
    );
}
