//! Attacker review of issue 15's cluster mode, fifth pass (branch
//! `review15e`), aimed at round 3's change of the fence storage: one fence
//! record per container in `<stream>:fence-records`, merged by
//! read-merge-CAS, indexed by expiry in `<stream>:fences`. Each test marked
//! as an attack FAILS on the code it was written against (main at 1f0222e):
//! a failure is a defect found, and the doc comment says what it shows and
//! what the fix should be. Tests named `held_*` pass: attacks that held.
//!
//! Attacks that held (by test: `held_*`; by reading, no test): two
//! publishers racing merges lose nothing (CAS); a refused 9th merge is not
//! acknowledged (Err, queued, instance unsynced) and the outbox later
//! merges it; `ZADD GT` never shrinks a record's expiry; the fence *set*
//! lost with the hash kept is a gap and a covered re-publication rewrites
//! the member (`live` false); an expired-but-unpruned record merged into
//! only over-fences; the rebuild's record/stream overlap is deduped or
//! replays in date order.
//!
//! Same harness as `attack15d.rs`: a `redis-server` of its own on a free
//! loopback port, in-process gateways in front of one simulator whose reads
//! of the attacked container lag, wired as the service wires them.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use cluster_support::*;
use layers_gateway::cluster::fence_record::FenceRecord;
use layers_gateway::cluster::keys::StreamKeys;
use layers_gateway::cluster::{ClusterNode, ClusterSettings, ClusterStats};
use layers_gateway::demo::Simulator;
use layers_gateway::events::{EventType, Invalidation, Source};
use layers_gateway::ids::ContainerId;
use redis_support::RedisServer;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A lag longer than any test: the origin's reads stay behind throughout.
const LONG_LAG: Duration = Duration::from_secs(600);

fn event(
    t: EventType,
    id: ContainerId,
    revoked: Vec<String>,
    current: Vec<String>,
    event_id: &str,
) -> Invalidation {
    Invalidation {
        event_id: Some(event_id.to_owned()),
        source: Source::Webhook,
        event_type: t,
        container: Some(id),
        revoked_asset_ids: revoked,
        current_asset_ids: current,
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

fn keys(i: &Instance) -> StreamKeys {
    StreamKeys::new(&i.node.settings().stream)
}

async fn synced(i: &Instance, what: &str) {
    eventually(what, Duration::from_secs(5), || async { i.node.is_synced() }).await;
}

/// The JSON of `id`'s fence record as stored (`<mac>.<json>`), if any.
fn stored_record(redis: &RedisServer, i: &Instance, id: ContainerId) -> Option<FenceRecord> {
    let raw: Option<Vec<u8>> = redis.cmd(&["HGET", &keys(i).fence_records, &id.to_string()]);
    let raw = raw?;
    let dot = raw.iter().position(|b| *b == b'.')?;
    FenceRecord::decode(&raw[dot + 1..])
}

/// **The fence records hash lost alone is never noticed: no gap, no
/// rebuild, no re-publication, and a joiner serves the deleted container.**
///
/// Round 3 split the fence storage into two keys: the sorted set
/// `<stream>:fences` (members by expiry, plus the `~<token>` marker that
/// detects a lost set) and the hash `<stream>:fence-records` (the records
/// themselves). The marker lives only in the sorted set, so when the hash
/// alone goes — `DEL` by an operator cleaning keys, eviction under an
/// `allkeys-*` policy (the hash is the biggest key, LRU/LFU picks it
/// independently of the set), `UNLINK`, a failed `RESTORE` of one key — the
/// token is unchanged, the epoch is unchanged, `run_id` is unchanged: no
/// instance sees a gap, nobody re-publishes, and a joiner's rebuild ZSCANs
/// the live members, `HMGET`s nil for each, and drops them silently as
/// "pruned since the scan (it expired)" (`rebuild.rs`), although their
/// scores say they are live. docs/cluster.md promises the gap for "the
/// fence set deleted, evicted or flushed"; the records are the fence set's
/// content, and losing them is exactly that loss.
///
/// Here: A accepts a delete (the origin's replica still serves the
/// container); the hash is deleted; C joins and answers 200 with the deleted
/// container, while A and B still hold the tombstone and stay synced.
///
/// Fix: make the loss of either key detectable: keep the marker (token) in
/// the hash as well and have SYNC/REBUILD/PUBLISH compare both (a missing
/// or different hash token = `fences_lost`), or store the records and the
/// index in one key; and in the rebuild, treat a live member (score > now)
/// whose record is nil as data loss (gap + re-publication), never as
/// "expired".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_fence_records_hash_alone_is_a_gap_not_a_silent_loss_of_tombstones() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    sim.set_replica_lag(gone, Some(LONG_LAG));
    let assets = asset_ids(&sim.container(gone).unwrap());
    assert!(sim.delete(gone));
    a.accept(&event(
        EventType::Deleted,
        gone,
        assets,
        Vec::new(),
        "evt_01HASHLOST0000000000000000",
    ))
    .await
    .expect("the delete is acknowledged");
    eventually("B applied the delete", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 1
    })
    .await;
    assert!(
        stored_record(&redis, &a, gone).is_some_and(|r| r.tombstone.is_some()),
        "precondition: the tombstone's record is in Redis"
    );
    let r = origin_get(&sim, &container_path(gone)).await;
    assert_eq!(r.status, 200, "precondition: the lagging origin still serves it");
    let gaps_before = a.stat(|s| s.gaps.get()) + b.stat(|s| s.gaps.get());
    // The records hash alone goes (an operator's DEL, or eviction of the
    // biggest key under allkeys-lru); the index and its marker stay.
    let n: i64 = redis.cmd(&["DEL", &keys(&a).fence_records]);
    assert_eq!(n, 1);
    // Give the running instances every chance to notice (several rounds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    synced(&c, "C joined").await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    let gaps_after = a.stat(|s| s.gaps.get()) + b.stat(|s| s.gaps.get());
    let republished = a.stat(|s| s.fences_republished.get()) + b.stat(|s| s.fences_republished.get());
    a.node.stop();
    b.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "C joined after the fence records hash was lost (the index still listing the record as \
         live) and serves the container whose delete A acknowledged; gaps seen by A+B: {} -> {}, \
         fences re-published: {republished}",
        gaps_before, gaps_after,
    );
}

/// The same loss, one record at a time: an `HDEL` of one live record (the
/// set's token intact in both keys). A joiner's rebuild finds the live
/// member without its record; before the fix it took it for "expired" and
/// served the deleted container. Now it resets the fence set (counted in
/// `cluster_fence_records_lost_total`), every instance re-publishes, and
/// the joiner refuses the container like its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_live_fence_record_is_data_loss_not_expiry() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let gone = org_a_containers(&sim)[1];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    synced(&a, "A joined").await;
    delete_through(&sim, &a, gone, "evt_01ONERECORDLOST00000000000").await;
    assert!(stored_record(&redis, &a, gone).is_some_and(|r| r.tombstone.is_some()));
    let n: i64 = redis.cmd(&["HDEL", &keys(&a).fence_records, &gone.to_string()]);
    assert_eq!(n, 1);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    synced(&c, "C joined").await;
    let r = call_get(&c.gw, &container_path(gone), &admin_key()).await;
    let reset = c.stat(|s| s.fence_records_lost.get());
    let back = stored_record(&redis, &a, gone).is_some_and(|r| r.tombstone.is_some());
    a.node.stop();
    c.node.stop();
    assert_ne!(
        r.status, 200,
        "C joined with one live record lost and serves the deleted container"
    );
    assert!(reset >= 1, "C did not count the lost record");
    assert!(back, "A did not re-publish the lost tombstone after the reset");
}

/// **A record keeps 1,024 revoked ids, an instance 4,096: a joiner forgets
/// the oldest revocations — the ones a lagging replica serves — while its
/// peers still refuse them.**
///
/// `FenceRecord::merge` keeps the newest `MAX_RECORD_REVOKED` (1,024) ids
/// and drops the *oldest*; the cache keeps `max_revoked_per_container`
/// (default 4,096) per container. A lagging replica serves an *older*
/// version, so the ids it lists are the oldest revoked ones: exactly those
/// the record drops first. Undated events (a webhook without
/// `data.updatedAt` is accepted undated, `webhook.rs`) set no floor, so the
/// revoked set is the only fence. One webhook may name up to 10,000
/// `previousAssetIds` (`MAX_EVENT_ASSET_IDS`), and many regenerates of one
/// container within `revoked_ttl` accumulate too.
///
/// Here: the container is regenerated (the replica lags and keeps serving
/// the original version); the regenerate's event revokes the original ids;
/// then later events of the same container name 1,100 further previous ids
/// (the simulator's replica holds one version back only, so the later
/// regenerates are events). B, which applied them all, refuses the original
/// version; C, joining now, applies the record (the newest 1,024 ids only)
/// and serves the original version with its revoked URLs.
///
/// Fix: never drop a revoked id from the record while it can still matter:
/// size `MAX_RECORD_REVOKED` at least `max_revoked_per_container` (and
/// validate the config against it), and when a record must overflow, turn
/// the overflow into something that fails closed for a joiner (e.g. set a
/// floor "everything not named current is revoked", or refuse the
/// publication like FENCEFULL) instead of silently forgetting the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_does_not_forget_the_oldest_revocations_that_a_lagging_replica_serves() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    sim.set_replica_lag(id, Some(LONG_LAG));
    let regen = sim.regenerate(id).unwrap();
    a.accept(&event(
        EventType::Regenerated,
        id,
        regen.previous_asset_ids.clone(),
        regen.new_asset_ids.clone(),
        "evt_01REVCAP00000000000000000",
    ))
    .await
    .expect("published");
    // Later regenerates of the same container: 11 events of 100 ids.
    for n in 0..11 {
        let ids: Vec<String> = (0..100).map(|k| format!("slide-old-{n}-{k}")).collect();
        a.accept(&event(
            EventType::Regenerated,
            id,
            ids,
            Vec::new(),
            &format!("evt_01REVCAPLATER{n:013}"),
        ))
        .await
        .expect("published");
    }
    eventually("B applied all 12", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 12
    })
    .await;
    let r = origin_get(&sim, &container_path(id)).await;
    assert!(
        r.status == 200 && carries_any(&r.body, &regen.previous_urls),
        "precondition: the lagging origin serves the original version"
    );
    let rb = call_get(&b.gw, &container_path(id), &admin_key()).await;
    assert!(
        !(rb.status == 200 && carries_any(&rb.body, &regen.previous_urls)),
        "baseline: B refuses the original version: {} {}",
        rb.status,
        String::from_utf8_lossy(&rb.body)
    );
    let kept = stored_record(&redis, &a, id).map(|r| r.revoked.len());
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    synced(&c, "C joined").await;
    let rc = call_get(&c.gw, &container_path(id), &admin_key()).await;
    a.node.stop();
    b.node.stop();
    c.node.stop();
    assert!(
        !(rc.status == 200 && carries_any(&rc.body, &regen.previous_urls)),
        "C (joined after the revocations were acknowledged) serves the original version with its \
         revoked URLs, which B refuses: the record kept {kept:?} of {} revoked ids, dropping the \
         oldest",
        regen.previous_asset_ids.len() + 1_100,
    );
}

/// **A re-published (or replayed) older delete re-tombstones a container
/// that was re-created after it: the merged record then holds a tombstone
/// dated *before* its own lift, and every instance answers 404 for a
/// container the origin serves.**
///
/// Re-publication exports the tombstones an instance holds when the task
/// starts and writes them later (backoff up to 5 s per refused attempt,
/// `republish.rs`); meanwhile a `content.generated` dated after the delete
/// may be merged into the record (`lifted = 200`, `tombstone = None`).
/// `FenceRecord::merge` of the stale `Deleted(100)` then sets
/// `tombstone = Some(100)` regardless of `lifted = 200` (the record *knows*
/// the delete is older than the lift), and the entry, with a fresh event
/// id, makes every peer tombstone the container again for
/// `tombstone_ttl`. The record even reports a rebuild order "lift(200),
/// then delete(100)", i.e. tombstoned. DESIGN: "A late, replayed or
/// reordered event never revokes what the origin currently serves."
///
/// Fix: in `merge`, a `Deleted` dated not after `lifted` is already
/// lifted: keep `tombstone` as it is (and `covers` then says "covered"); the
/// cache needs the same memory of the newest lift (`lifted_at` in the
/// fence state) so a stream entry of an older delete after a lift is a
/// no-op there too.
#[test]
fn a_stale_delete_merged_after_the_lift_does_not_re_tombstone_the_record() {
    let id = ContainerId::parse("cnt_0b6c4c1e-6f1a-4b7e-9a51-1f0f7c0d2a11").unwrap();
    // Dated by the origin (`updatedAt`): only such a delete can be taken
    // for history (`cache::fence::is_history`), and a re-published
    // tombstone keeps that date (`fence_export.rs`).
    let dated = |t, at| Invalidation {
        changed_at: Some(at),
        ..event(t, id, Vec::new(), Vec::new(), "")
    };
    let mut r = FenceRecord::new(id);
    r.merge(&dated(EventType::Deleted, 100), "evt_del");
    r.merge(&dated(EventType::Generated, 200), "evt_gen");
    assert_eq!((r.tombstone, r.lifted), (None, Some(200)));
    // The re-publication of what an instance held before it applied the
    // lift: the same delete, dated as it was, with a fresh event id.
    let stale = dated(EventType::Deleted, 100);
    let covered = r.covers(&stale);
    r.merge(&stale, "a:nonce:7");
    assert!(
        r.tombstone.is_none(),
        "the record now tombstones a container re-created after the delete: tombstone {:?}, \
         lifted {:?}, covers() said {covered}",
        r.tombstone,
        r.lifted
    );
}

/// **A burst of invalidations of one container refuses some of them: the
/// 8-merge CAS limit turns ordinary concurrency into 503s and an unsynced
/// instance.** (Safety held: a refused publication is not acknowledged and
/// is queued; but it is a liveness defect.)
///
/// `append` retries `FENCECAS` at most `MAX_MERGES` (8) times; the
/// publications of one instance share one multiplexed connection and each
/// is one HGET then one EVAL, so with k concurrent publications of the same
/// container, round after round only one wins: with k > 8 some lose 8 times
/// and answer `Err` (a webhook answers 503, the instance goes unsynced
/// until the outbox drains). Real bursts exist: the origin retries a batch
/// of webhooks for one container at once, a regenerate's webhook and its
/// write-through answer, several instances receiving the same fan-out.
///
/// Fix: serialize publications per container inside an instance (a
/// per-container async mutex, or merge queued events of the same container
/// into one publication), and/or do the merge in the script (the Lua
/// merge needs no CAS), so only cross-instance races retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publications_for_one_container_is_not_refused_by_the_cas_limit() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    const K: usize = 24;
    let mut tasks = Vec::new();
    for n in 0..K {
        let node = if n % 2 == 0 {
            a.node.clone()
        } else {
            b.node.clone()
        };
        let inv = event(
            EventType::Regenerated,
            id,
            vec![format!("slide-burst-{n}")],
            Vec::new(),
            &format!("evt_01BURST{n:018}"),
        );
        tasks.push(tokio::spawn(async move { node.publish(&inv).await }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            refused.push(e);
        }
    }
    // Safety: every id ends up in the record (the outbox retries the
    // refused ones), so nothing acknowledged is missing.
    eventually("the outboxes drained", Duration::from_secs(5), || async {
        a.node.outbox_len() == 0 && b.node.outbox_len() == 0
    })
    .await;
    let rec = stored_record(&redis, &a, id).expect("a record");
    let missing: Vec<usize> = (0..K)
        .filter(|n| !rec.revoked.contains(&format!("slide-burst-{n}")))
        .collect();
    a.node.stop();
    b.node.stop();
    assert!(
        missing.is_empty(),
        "lost updates in the merged record: {missing:?}"
    );
    assert!(
        refused.is_empty(),
        "{} of {K} concurrent publications of one container were refused (503, instance \
         unsynced) by the CAS limit, e.g. {:?}",
        refused.len(),
        refused.first()
    );
}

/// Held: two instances racing merges into one record lose nothing; every
/// acknowledged revocation and the tombstone are in the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_cas_races_between_two_publishers_lose_no_fence() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    let mut acked = Vec::new();
    for round in 0..10 {
        let ia = event(
            EventType::Regenerated,
            id,
            vec![format!("slide-a-{round}")],
            Vec::new(),
            &format!("evt_01RACEA{round:019}"),
        );
        let ib = if round == 9 {
            event(
                EventType::Deleted,
                id,
                vec![format!("slide-b-{round}")],
                Vec::new(),
                &format!("evt_01RACEB{round:019}"),
            )
        } else {
            event(
                EventType::Regenerated,
                id,
                vec![format!("slide-b-{round}")],
                Vec::new(),
                &format!("evt_01RACEB{round:019}"),
            )
        };
        let (na, nb) = (a.node.clone(), b.node.clone());
        let (ra, rb) = tokio::join!(async move { na.publish(&ia).await }, async move {
            nb.publish(&ib).await
        });
        if ra.is_ok() {
            acked.push(format!("slide-a-{round}"));
        }
        if rb.is_ok() {
            acked.push(format!("slide-b-{round}"));
        }
    }
    eventually("the outboxes drained", Duration::from_secs(5), || async {
        a.node.outbox_len() == 0 && b.node.outbox_len() == 0
    })
    .await;
    let rec = stored_record(&redis, &a, id).expect("a record");
    a.node.stop();
    b.node.stop();
    for x in &acked {
        assert!(rec.revoked.contains(x), "acknowledged {x} lost from the record");
    }
    assert!(rec.tombstone.is_some(), "the tombstone was lost");
}

/// An instance with its own fence retention (as if configured with other
/// `invalidation.tombstone_secs` / `revoked_ttl_secs`).
async fn with_retention(sim: &Simulator, s: ClusterSettings, retention: Duration) -> Arc<Instance> {
    let gw = in_process(sim, "");
    let node = ClusterNode::new(&s, Arc::new(ClusterStats::new())).unwrap();
    let flushes = Arc::new(AtomicU64::new(0));
    let (apply, flush) = wiring(&gw, flushes.clone());
    let cache = gw.state().cache.clone();
    node.set_fence_source(retention, Arc::new(move || cache.export_fences()));
    node.start(apply, flush, std::future::pending()).await;
    gw.state().cache.set_sync_gate(node.clone());
    Arc::new(Instance { gw, node, flushes })
}

/// Held: a short-lived event merged into a long-lived record does not
/// shorten the record's expiry (`ZADD GT`), and the tombstone stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_short_lived_merge_does_not_shrink_a_long_lived_records_expiry() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let long = with_retention(&sim, settings(&redis.url(), "long"), Duration::from_secs(86_400)).await;
    let short = with_retention(&sim, settings(&redis.url(), "short"), Duration::from_secs(2)).await;
    synced(&long, "long joined").await;
    synced(&short, "short joined").await;
    long.node
        .publish(&event(
            EventType::Deleted,
            id,
            vec!["slide-x".into()],
            Vec::new(),
            "evt_01EXPIRYLONG00000000000000",
        ))
        .await
        .unwrap();
    let member = id.to_string();
    let before: f64 = redis.cmd(&["ZSCORE", &keys(&long).fences, &member]);
    short
        .node
        .publish(&event(
            EventType::Regenerated,
            id,
            vec!["slide-y".into()],
            Vec::new(),
            "evt_01EXPIRYSHORT0000000000000",
        ))
        .await
        .unwrap();
    let after: f64 = redis.cmd(&["ZSCORE", &keys(&long).fences, &member]);
    let rec = stored_record(&redis, &long, id).expect("a record");
    long.node.stop();
    short.node.stop();
    assert!(after >= before, "expiry shrank: {before} -> {after}");
    assert!(rec.tombstone.is_some() && rec.revoked.len() == 2, "{rec:?}");
}

/// **The record merges an event it already holds a second time: a retried
/// delete published after the re-creation re-tombstones the record (not
/// the peers, which dedupe it), so a joiner answers 404 for a container
/// the origin and every peer serve.**
///
/// The stream side dedupes by event id (a peer skips an entry whose event
/// it applied), the record side does not: `FenceRecord::merge` applies the
/// fence part of an event whose id is already in `events`, and a `Deleted`
/// is merged without looking at `lifted`. A delete webhook E1 is published
/// twice in ordinary operation: its first publication fails (Redis blip,
/// or the CAS limit above) and sits in A's outbox while the origin's retry
/// of E1 (503 to the first attempt) is accepted by B, or the retry reaches
/// B before B has read A's entry. If the container's re-creation (E2,
/// `content.generated`, dated after the delete) is merged in between, the
/// second E1 sets `tombstone` again under `lifted`. Peers skip E1 (dedupe),
/// so they serve the container; a joiner applies the record and answers
/// 404 for `tombstone_ttl` (24 h by default): the record no longer equals
/// "applying what was merged" (`fence_record.rs`'s own contract).
///
/// Fix: in `merge`, skip the fence part of an event id the record already
/// holds (keep more than 8 ids, or keep the newest date merged per kind),
/// and do not set a tombstone dated not after `lifted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_published_twice_around_a_recreation_does_not_tombstone_a_joiner() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    let b = gated(&sim, settings(&redis.url(), "b")).await;
    synced(&a, "A joined").await;
    synced(&b, "B joined").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The origin's dates (a change time): only those order a delete
    // before a re-creation (`cache::fence::is_history`).
    let e1 = Invalidation {
        changed_at: Some(now - 2_000),
        ..event(
            EventType::Deleted,
            id,
            Vec::new(),
            Vec::new(),
            "evt_01TWICEDEL0000000000000000",
        )
    };
    let e2 = Invalidation {
        changed_at: Some(now - 1_000),
        ..event(
            EventType::Generated,
            id,
            Vec::new(),
            Vec::new(),
            "evt_01TWICEGEN0000000000000000",
        )
    };
    a.accept(&e1).await.expect("E1 published");
    a.accept(&e2).await.expect("E2 published");
    eventually("B applied E1 and E2", Duration::from_secs(5), || async {
        b.stat(|s| s.applied.get()) >= 2
    })
    .await;
    // The origin's retry of E1, accepted by B (here after B applied it:
    // B's cache dedupes nothing at `accept`, but its stream peers do).
    b.node.publish(&e1).await.expect("E1 again");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ra = call_get(&a.gw, &container_path(id), &admin_key()).await;
    let rb = call_get(&b.gw, &container_path(id), &admin_key()).await;
    assert_eq!(
        (ra.status.as_u16(), rb.status.as_u16()),
        (200, 200),
        "baseline: the peers serve the re-created container"
    );
    let rec = stored_record(&redis, &a, id);
    let c = gated(&sim, settings(&redis.url(), "c")).await;
    synced(&c, "C joined").await;
    let rc = call_get(&c.gw, &container_path(id), &admin_key()).await;
    a.node.stop();
    b.node.stop();
    c.node.stop();
    assert_eq!(
        rc.status, 200,
        "joiner C answers {} for a container the origin, A and B serve; the record: {rec:?}",
        rc.status
    );
}

/// Black-box round 84: a publication waited for its container's merge lock
/// with no bound. With Redis frozen, K webhooks of one container queued
/// behind each other a command timeout apiece (40 answered after up to
/// 8 s), and so did containers sharing the lock's stripe. Each now gives up
/// after the holder's budget (10 command timeouts) of waiting, queued, as a
/// failed command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_behind_a_stuck_one_give_up_within_the_holder_s_budget() {
    let Some(redis) = RedisServer::start() else { return };
    let sim = demo_simulator();
    let id = org_a_containers(&sim)[0];
    let a = gated(&sim, settings(&redis.url(), "a")).await;
    synced(&a, "A joined").await;
    let timeout = a.node.settings().command_timeout();
    redis.pause();
    const K: usize = 40;
    let mut tasks = Vec::new();
    for n in 0..K {
        let node = a.node.clone();
        let inv = event(
            EventType::Regenerated,
            id,
            vec![format!("slide-stuck-{n}")],
            Vec::new(),
            &format!("evt_01STUCK{n:019}"),
        );
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = node.publish(&inv).await;
            (r, started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (r, took) = t.await.unwrap();
        assert!(r.is_err(), "acknowledged with Redis frozen");
        slowest = slowest.max(took);
    }
    redis.resume();
    assert!(
        slowest < timeout * 16,
        "a publication answered after {slowest:?} (command timeout {timeout:?}, {K} in line)"
    );
    a.node.stop();
}
