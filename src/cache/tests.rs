//! The fill protocol's defects from issue 13, each pinned at the line
//! where it lived: deterministic, no sockets, tokio's paused clock.

use super::*;
use crate::events::{EventType, Invalidation, Source as EventSource};
use std::sync::atomic::AtomicBool;

const ORG: &str = "org_a";

fn settings() -> CacheSettings {
    CacheSettings {
        max_entries: 1000,
        max_bytes: 1 << 24,
        ttl: Duration::from_secs(10),
        fill_wait: Duration::from_secs(5),
        tombstone_ttl: Duration::from_secs(60),
        revoked_ttl: Duration::from_secs(600),
        max_revoked_per_container: 100,
        stale_if_error: Duration::from_secs(60),
        clock_skew: Duration::ZERO,
        lag_retry: Duration::from_millis(100),
        undated_hold: Duration::from_millis(5_000),
        negative_ttl: Duration::from_secs(5),
        negative_max_entries: 1000,
        miss_budget_per_sec: 0,
        compress: representation::CompressSettings::default(),
    }
}

fn id() -> ContainerId {
    ContainerId::from_u128(7)
}

fn body(assets: &[&str]) -> Bytes {
    let assets: Vec<_> = assets
        .iter()
        .map(|a| serde_json::json!({"assetId": a, "url": format!("u/{a}")}))
        .collect();
    Bytes::from(serde_json::json!({"id": id().to_string(), "assets": assets}).to_string())
}

fn inv(event_type: EventType, revoked: &[&str]) -> Invalidation {
    Invalidation {
        event_id: None,
        source: EventSource::Webhook,
        event_type,
        container: Some(id()),
        revoked_asset_ids: revoked.iter().map(|s| s.to_string()).collect(),
        current_asset_ids: Vec::new(),
        changed_at: None,
        created_at: None,
        replay: false,
        accepted_at: None,
    }
}

fn org() -> Arc<str> {
    Arc::from(ORG)
}

/// Defect 1: a delete that landed after the old code's tombstone check
/// but before its generation read left the fill's lease current, and the
/// completion never looked at the tombstone. Here the tombstone is set
/// under a lease that is still current (the state that race produced):
/// the completion must refuse to cache it.
#[tokio::test(start_paused = true)]
async fn a_fill_completing_while_tombstoned_is_never_cached_even_with_a_current_lease() {
    let cache = ContentCache::new(settings(), None, None);
    let fence = cache.fences.get_or_create(id());
    let lease = fence.lease(Instant::now()).unwrap();
    fence.lock().tombstone_until = Some(Instant::now() + Duration::from_secs(60));
    let (entry, discard) = cache
        .complete_fill(
            org(),
            id(),
            &fence,
            lease,
            0,
            body(&["a"]),
            OriginHead::default(),
            Vec::new(),
        )
        .unwrap();
    assert_eq!(discard, Some(DiscardReason::Generation));
    assert!(matches!(cache.judge(&entry, Source::Fill, None), Verdict::Gone));
    assert!(matches!(
        cache.judge(&entry, Source::Hit, None),
        Verdict::NotCurrent
    ));
}

#[tokio::test(start_paused = true)]
async fn no_lease_and_no_origin_call_while_tombstoned() {
    let cache = ContentCache::new(settings(), None, None);
    cache.invalidate(&inv(EventType::Deleted, &["a"])).await;
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let (r, status) = cache
        .fill(&org(), id(), move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(body(&["a"]).into()) }
        })
        .await;
    assert!(r.is_err());
    assert_eq!(status, CacheStatus::Tombstone);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Defect 5: the old invalidation looked the ids up in moka; an entry
/// whose fill had completed but was not yet inserted was missed. The
/// fence knows it from the moment the fill decided to cache it.
#[tokio::test(start_paused = true)]
async fn an_invalidation_revokes_the_ids_of_an_entry_not_yet_in_moka() {
    let cache = ContentCache::new(settings(), None, None);
    let fence = cache.fences.get_or_create(id());
    let lease = fence.lease(Instant::now()).unwrap();
    let (entry, discard) = cache
        .complete_fill(
            org(),
            id(),
            &fence,
            lease,
            0,
            body(&["old-1", "old-2"]),
            OriginHead::default(),
            Vec::new(),
        )
        .unwrap();
    assert_eq!(discard, None);
    // Not inserted into moka: the insert happens after the fence lock.
    let mark = cache.mark_mutation(id(), None);
    let applied = cache
        .invalidate_after_mutation(&inv(EventType::Regenerated, &[]), &mark)
        .await;
    assert_eq!(applied.revoked, ["old-1", "old-2"]);
    assert!(matches!(
        cache.judge(&entry, Source::Fill, Some("old-1")),
        Verdict::AssetRevoked
    ));
}

/// Defect 4 at the cache: an event that names no ids revokes nothing it
/// cannot prove old; entries filled after a mutation was sent keep theirs.
#[tokio::test(start_paused = true)]
async fn only_entries_filled_before_the_mutation_was_sent_are_revoked() {
    let cache = ContentCache::new(settings(), None, None);
    let mark = cache.mark_mutation(id(), None);
    let fence = cache.fences.get_or_create(id());
    let lease = fence.lease(Instant::now()).unwrap();
    cache
        .complete_fill(
            org(),
            id(),
            &fence,
            lease,
            0,
            body(&["new-1"]),
            OriginHead::default(),
            Vec::new(),
        )
        .unwrap();
    let applied = cache
        .invalidate_after_mutation(&inv(EventType::Regenerated, &[]), &mark)
        .await;
    assert!(applied.revoked.is_empty(), "{:?}", applied.revoked);
    let applied = cache.invalidate(&inv(EventType::Regenerated, &["old-9"])).await;
    assert_eq!(applied.revoked, ["old-9"]);
}

struct Gate(AtomicBool);

impl SyncGate for Gate {
    fn is_synced(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Defect 6: stale-if-error checked "synced" before a fill that could wait
/// for seconds, and not again.
#[tokio::test(start_paused = true)]
async fn stale_if_error_never_serves_while_unsynced() {
    let cache = ContentCache::new(settings(), None, None);
    let gate = Arc::new(Gate(AtomicBool::new(true)));
    cache.set_sync_gate(gate.clone());
    let (r, _) = cache
        .fill(&org(), id(), || async { Ok(body(&["a"]).into()) })
        .await;
    assert!(r.is_ok());
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(cache.lookup(&org(), id()).await.is_none(), "past its TTL");
    assert!(
        cache.lookup_stale(&org(), id()).await.is_some(),
        "within the stale window"
    );
    gate.0.store(false, Ordering::SeqCst);
    assert!(cache.lookup_stale(&org(), id()).await.is_none());
    assert!(cache.lookup(&org(), id()).await.is_none());
}

/// Defect 10: a request that missed its lookup and then found the previous
/// flight finished started a second origin fetch.
#[tokio::test(start_paused = true)]
async fn a_new_leader_reads_what_the_last_flight_cached_instead_of_the_origin() {
    let cache = ContentCache::new(settings(), None, None);
    let calls = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        let c = calls.clone();
        let (r, _) = cache
            .fill(&org(), id(), move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { Ok(body(&["a"]).into()) }
            })
            .await;
        assert!(r.is_ok());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A cluster peer learns which of its own fills a change on another
/// instance replaced from the change time: fills older than it are revoked,
/// fills as new or newer are not.
#[tokio::test(start_paused = true)]
async fn fills_older_than_a_reported_change_time_are_revoked_and_newer_ones_kept() {
    let cache = ContentCache::new(settings(), None, None);
    let fence = cache.fences.get_or_create(id());
    let stamped = |ids: &[&str], at: &str| {
        let assets: Vec<_> = ids.iter().map(|a| serde_json::json!({"assetId": a})).collect();
        Bytes::from(
            serde_json::json!({"id": id().to_string(), "updatedAt": at, "assets": assets}).to_string(),
        )
    };
    let lease = fence.lease(Instant::now()).unwrap();
    cache
        .complete_fill(
            org(),
            id(),
            &fence,
            lease,
            0,
            stamped(&["old-1"], "2030-01-01T00:00:00.000Z"),
            OriginHead::default(),
            Vec::new(),
        )
        .unwrap();
    let mut e = inv(EventType::Regenerated, &[]);
    e.changed_at = Some(1_893_456_000_500);
    e.current_asset_ids = vec!["new-1".into()];
    assert_eq!(cache.invalidate(&e).await.revoked, ["old-1"]);

    let lease = fence.lease(Instant::now()).unwrap();
    cache
        .complete_fill(
            org(),
            id(),
            &fence,
            lease,
            0,
            stamped(&["new-1"], "2030-01-01T00:00:00.500Z"),
            OriginHead::default(),
            Vec::new(),
        )
        .unwrap();
    // The same change arriving again (a replay, the webhook after the
    // stream entry) revokes nothing current.
    assert!(cache.invalidate(&e).await.revoked.is_empty());
}

/// Issue 15 (attack15c): deleted at T1, re-created at T2, deleted again at
/// T3; T3's delete arrives first, then the late retries of T1 and T2. The
/// late T1 delete used to lower the tombstone's date to T1, so T2's
/// `generated` then looked later than "the" delete and lifted it: the
/// container deleted at T3 was served again. The date only moves forward.
#[tokio::test(start_paused = true)]
async fn a_late_older_delete_does_not_let_a_late_re_creation_lift_the_newest_tombstone() {
    let cache = ContentCache::new(settings(), None, None);
    let t3 = 1_800_000_000_000i64;
    let dated = |t: EventType, at: i64| Invalidation {
        created_at: Some(at),
        ..inv(t, &[])
    };
    cache.invalidate(&dated(EventType::Deleted, t3)).await;
    cache
        .invalidate(&dated(EventType::Deleted, t3 - 2 * 3_600_000))
        .await;
    cache
        .invalidate(&dated(EventType::Generated, t3 - 3_600_000))
        .await;
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let (r, status) = cache
        .fill(&org(), id(), move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(body(&["a"]).into()) }
        })
        .await;
    assert!(r.is_err(), "the container deleted at T3 is served again");
    assert_eq!(status, CacheStatus::Tombstone);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A re-creation after T3 still lifts it.
    cache.invalidate(&dated(EventType::Generated, t3 + 1)).await;
    assert!(!cache
        .fences
        .get_or_create(id())
        .lock()
        .is_tombstoned(Instant::now()));
}

/// Whether a fill of the container is refused as deleted (no origin call).
async fn tombstoned(cache: &Arc<ContentCache>) -> bool {
    let (_, status) = cache
        .fill(&org(), id(), || async { Ok(body(&["a"]).into()) })
        .await;
    status == CacheStatus::Tombstone
}

/// A delete the origin dated (its `updatedAt`), as a webhook carries it.
fn deleted_at(at: i64, revoked: &[&str]) -> Invalidation {
    Invalidation {
        changed_at: Some(at),
        ..inv(EventType::Deleted, revoked)
    }
}

/// A re-creation the origin dated (its `updatedAt`).
fn generated_at(at: i64) -> Invalidation {
    Invalidation {
        changed_at: Some(at),
        ..inv(EventType::Generated, &[])
    }
}

/// `evt_<ULID>` minted at unix ms `at`.
fn ulid_id(at: i64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut time = String::new();
    let mut v = at as u64;
    for _ in 0..10 {
        time.insert(0, ALPHABET[(v % 32) as usize] as char);
        v /= 32;
    }
    format!("evt_{time}{}", "0".repeat(16))
}

/// Attacker review, round 3: a re-creation dated only by its event's id
/// (minted after the change) made a real delete dated between the change
/// and the minting "history"; and a random `evt_` id decodes to any year.
#[tokio::test(start_paused = true)]
async fn a_lift_dated_by_its_event_id_and_a_random_id_date_nothing_too_early() {
    let cache = ContentCache::new(settings(), None, None);
    let now_ms = cache.clock.unix_millis_at(Instant::now());
    let minted = Invalidation {
        event_id: Some(ulid_id(now_ms)),
        created_at: Some(now_ms),
        ..inv(EventType::Generated, &[])
    };
    cache.invalidate(&minted).await;
    // Changed 1 s before the minting: maybe after the re-creation itself.
    cache.invalidate(&deleted_at(now_ms - 1_000, &[])).await;
    assert!(tombstoned(&cache).await);

    // A delete whose id decodes to a date long past is not dated by it.
    let cache = ContentCache::new(settings(), None, None);
    cache.invalidate(&generated_at(now_ms)).await;
    let ancient = ulid_id(1_000);
    let delete = Invalidation {
        event_id: Some(ancient),
        created_at: Some(1_000),
        ..inv(EventType::Deleted, &[])
    };
    cache.invalidate(&delete).await;
    assert!(
        tombstoned(&cache).await,
        "a random id's date made a delete history"
    );
}

/// Black-box round 67: a `content.deleted` dated before the
/// `content.generated` that lifted its tombstone (an origin retry of the
/// delete, a replay, a peer's entry read late) tombstoned the live
/// container again, for the tombstone's whole TTL.
#[tokio::test(start_paused = true)]
async fn a_late_delete_older_than_the_re_creation_does_not_tombstone_again() {
    let cache = ContentCache::new(settings(), None, None);
    let t1 = 1_800_000_000_000i64;
    cache.invalidate(&deleted_at(t1, &[])).await;
    assert!(tombstoned(&cache).await);
    // Black-box round 69: 600 ms apart (a 1 s margin made this a live
    // container's tombstone).
    cache.invalidate(&generated_at(t1 + 600)).await;
    assert!(!tombstoned(&cache).await, "the re-creation lifts the tombstone");
    cache.invalidate(&deleted_at(t1, &[])).await;
    assert!(
        !tombstoned(&cache).await,
        "a retry of the first delete is history"
    );
    // The same millisecond as the lift: arrival order decides (deleted).
    cache.invalidate(&deleted_at(t1 + 600, &[])).await;
    assert!(tombstoned(&cache).await);
}

/// The same when the delete was never seen before the re-creation: the
/// container generated at T2 exists whatever was deleted before T2.
#[tokio::test(start_paused = true)]
async fn a_delete_older_than_a_generation_already_applied_does_not_tombstone() {
    let cache = ContentCache::new(settings(), None, None);
    let t2 = 1_800_000_000_000i64;
    cache.invalidate(&generated_at(t2)).await;
    cache.invalidate(&deleted_at(t2 - 60_000, &[])).await;
    assert!(!tombstoned(&cache).await);
    // A later delete still deletes, and an older one then keeps it deleted.
    cache.invalidate(&deleted_at(t2 + 60_000, &[])).await;
    cache.invalidate(&deleted_at(t2 - 60_000, &[])).await;
    assert!(tombstoned(&cache).await);
}

/// Attacker review, round 2: a delete a gateway dated by its own clock (a
/// write-through DELETE, stamped when published; its id is the gateway's)
/// reaches the peers dated, and a host clock behind the origin's made it
/// "history" there. Only a date the origin gave counts.
#[tokio::test(start_paused = true)]
async fn a_delete_a_gateway_dated_is_never_history_on_a_peer() {
    let cache = ContentCache::new(settings(), None, None);
    let t = 1_800_000_000_000i64;
    cache.invalidate(&generated_at(t)).await;
    let stamped = Invalidation {
        source: EventSource::Cluster,
        event_id: Some("a:0badc0de:7".into()),
        created_at: Some(t - 30_000),
        ..inv(EventType::Deleted, &[])
    };
    cache.invalidate(&stamped).await;
    assert!(tombstoned(&cache).await);
}

/// Attacker review: a delete dated by this host's clock (a write-through
/// DELETE, which the origin answers without a body) was compared with the
/// lift's origin date, and a host clock running behind made a genuine
/// delete "history". Only a delete with a date of its own can be.
#[tokio::test(start_paused = true)]
async fn a_delete_dated_by_this_host_is_never_taken_for_history() {
    let cache = ContentCache::new(settings(), None, None);
    let far_ahead = cache.clock.unix_millis_at(Instant::now()) + 3_600_000;
    let generated = Invalidation {
        created_at: Some(far_ahead),
        ..inv(EventType::Generated, &[])
    };
    cache.invalidate(&generated).await;
    cache.invalidate(&inv(EventType::Deleted, &["a"])).await;
    assert!(tombstoned(&cache).await);
}

/// Attacker review, round 2: a re-published tombstone was dated by the
/// host's clock under a fresh id, so a record or peer holding a later
/// re-creation could not take it for history. It keeps how the origin
/// dated the delete: its change time, or its webhook's ULID id (then
/// without the other revoked ids, which a peer skipping it as a duplicate
/// would miss); a delete no origin dated stays a fresh, host-dated one.
#[tokio::test(start_paused = true)]
async fn a_re_published_tombstone_keeps_the_origin_s_date() {
    let t = UnixClock::system().unix_millis_at(Instant::now());
    let exported = |d: Invalidation| async move {
        let cache = ContentCache::new(settings(), None, None);
        cache.invalidate(&inv(EventType::Regenerated, &["other"])).await;
        cache.invalidate(&d).await;
        cache
            .export_fences()
            .into_iter()
            .find(|e| e.event_type == EventType::Deleted)
            .unwrap()
    };
    let changed = exported(deleted_at(t, &["a"])).await;
    assert_eq!((changed.event_id, changed.changed_at), (None, Some(t)));
    let minted_id = ulid_id(t);
    let minted = exported(Invalidation {
        event_id: Some(minted_id.clone()),
        created_at: Some(t),
        ..inv(EventType::Deleted, &["a"])
    })
    .await;
    assert_eq!(minted.event_id.as_deref(), Some(minted_id.as_str()));
    assert_eq!((minted.changed_at, minted.created_at), (None, Some(t)));
    assert!(
        minted.revoked_asset_ids.is_empty(),
        "{:?}",
        minted.revoked_asset_ids
    );
    let host = exported(inv(EventType::Deleted, &["a"])).await;
    assert_eq!((host.event_id, host.changed_at), (None, None));
    assert!(host.created_at.is_some() && host.revoked_asset_ids.contains(&"other".to_string()));
}

/// Black-box round 70: after Redis lost its data, the re-published records
/// had no lift, and a joiner took a retried old delete for a new one.
#[tokio::test(start_paused = true)]
async fn a_lift_is_re_published_before_the_tombstone() {
    let cache = ContentCache::new(settings(), None, None);
    let t = cache.clock.unix_millis_at(Instant::now());
    cache.invalidate(&generated_at(t)).await;
    cache.invalidate(&deleted_at(t + 5_000, &[])).await;
    let out = cache.export_fences();
    let kinds: Vec<(EventType, Option<i64>, Option<i64>)> = out
        .iter()
        .map(|e| (e.event_type, e.changed_at, e.created_at))
        .collect();
    assert_eq!(kinds[0], (EventType::Generated, None, Some(t)));
    assert_eq!(kinds[1], (EventType::Deleted, Some(t + 5_000), None));
    // Applied in that order elsewhere: deleted (the delete followed the
    // re-creation), and an older delete after them is history.
    let joiner = ContentCache::new(settings(), None, None);
    for e in &out {
        joiner.invalidate(e).await;
    }
    assert!(tombstoned(&joiner).await);
    // The re-published lift is dated by no change time: it lifts from
    // `MINT_LAG_MS` earlier, so only a delete older than that is history.
    let fresh = ContentCache::new(settings(), None, None);
    fresh.invalidate(&out[0]).await;
    fresh.invalidate(&deleted_at(t - 5_000, &[])).await;
    assert!(tombstoned(&fresh).await);
    let fresh = ContentCache::new(settings(), None, None);
    fresh.invalidate(&out[0]).await;
    fresh
        .invalidate(&deleted_at(t - 2 * fence::MINT_LAG_MS, &[]))
        .await;
    assert!(!tombstoned(&fresh).await);
}

/// Attacker review: a stale delete revoked the ids it named, and a
/// re-created container that uses them again (`slide-1`) lost them for the
/// revocation's TTL. A late event never revokes what the origin serves.
#[tokio::test(start_paused = true)]
async fn a_delete_taken_for_history_revokes_nothing() {
    let cache = ContentCache::new(settings(), None, None);
    let t1 = 1_800_000_000_000i64;
    cache.invalidate(&generated_at(t1 + 60_000)).await;
    let applied = cache.invalidate(&deleted_at(t1, &["slide-1"])).await;
    assert!(applied.revoked.is_empty(), "{:?}", applied.revoked);
    let fence = cache.fences.get(id()).unwrap();
    assert!(!fence.lock().revoked.contains_key("slide-1"));
}

/// A delete the origin minted `age_ms` before now, dated by its id only
/// (a `replayOf` delivery carries the original's id).
fn minted_delete(cache: &ContentCache, age_ms: i64, revoked: &[&str]) -> Invalidation {
    let at = cache.clock.unix_millis_at(Instant::now()) - age_ms;
    Invalidation {
        event_id: Some(ulid_id(at)),
        created_at: Some(at),
        ..inv(EventType::Deleted, revoked)
    }
}

/// Noticed after round 73: a replay (`replayOf`) of a delete from two days
/// ago, past the origin's day of retries and past any lift here, still
/// tombstoned the container for the tombstone's TTL and revoked the ids it
/// named, though the container may have come back since. It is history:
/// the entry is dropped (a fill asks the origin), nothing is tombstoned or
/// revoked. Within the retries, and past the replay month (a random `evt_`
/// id's date), a delete still tombstones.
#[tokio::test(start_paused = true)]
async fn a_replayed_delete_past_the_origin_s_retries_asks_the_origin_again() {
    const DAY: i64 = 24 * 3600 * 1000;
    let cache = ContentCache::new(settings(), None, None);
    let (_, status) = cache
        .fill(&org(), id(), || async { Ok(body(&["slide-1"]).into()) })
        .await;
    assert_eq!(status, CacheStatus::Miss);
    let applied = cache
        .invalidate(&minted_delete(&cache, 2 * DAY, &["slide-1"]))
        .await;
    assert_eq!(applied.entries_removed, 1, "the entry is dropped all the same");
    assert!(applied.revoked.is_empty(), "{:?}", applied.revoked);
    assert!(!cache
        .fences
        .get(id())
        .unwrap()
        .lock()
        .revoked
        .contains_key("slide-1"));
    assert!(
        !tombstoned(&cache).await,
        "a two-day-old replay tombstoned the container"
    );

    for age in [2 * 3600 * 1000, 40 * DAY] {
        let cache = ContentCache::new(settings(), None, None);
        cache.invalidate(&minted_delete(&cache, age, &["slide-1"])).await;
        assert!(
            tombstoned(&cache).await,
            "a delete minted {age} ms ago did not tombstone"
        );
    }
}

/// Black-box round 82: a delete the origin marks as a replay (`replayOf`)
/// minted 31 days or a year ago tombstoned a live container (the month's
/// bound, there for unmarked ids, applied to marked replays too), and so
/// did a marked replay dated only by a two-month-old `updatedAt`. A marked
/// replay is history unless dated within the origin's retries.
#[tokio::test(start_paused = true)]
async fn a_marked_replay_is_history_unless_dated_within_the_retries() {
    const DAY: i64 = 24 * 3600 * 1000;
    let replay = |cache: &ContentCache, age: Option<i64>, changed_age: Option<i64>| {
        let now = cache.clock.unix_millis_at(Instant::now());
        let mut d = match age {
            Some(age) => minted_delete(cache, age, &["slide-1"]),
            None => Invalidation {
                event_id: Some("del-7".into()),
                ..inv(EventType::Deleted, &["slide-1"])
            },
        };
        d.replay = true;
        d.changed_at = changed_age.map(|a| now - a);
        d
    };
    for (age, changed_age, history) in [
        (Some(31 * DAY), None, true),
        (Some(365 * DAY), None, true),
        (Some(2 * DAY), None, true),
        (None, Some(60 * DAY), true),
        (None, None, false),
        (Some(2 * 3600 * 1000), None, false),
        (None, Some(3600 * 1000), false),
    ] {
        let cache = ContentCache::new(settings(), None, None);
        let (_, status) = cache
            .fill(&org(), id(), || async { Ok(body(&["slide-1"]).into()) })
            .await;
        assert_eq!(status, CacheStatus::Miss);
        let applied = cache.invalidate(&replay(&cache, age, changed_age)).await;
        assert_eq!(applied.entries_removed, 1, "the entry is dropped all the same");
        assert_eq!(
            tombstoned(&cache).await,
            !history,
            "a replay minted {age:?} ms ago, changed {changed_age:?} ms ago"
        );
        assert_eq!(applied.revoked.is_empty(), history, "{:?}", applied.revoked);
    }
}

/// Attacker review: a rebuild replays the cluster's fence records as
/// undated invalidations without event ids; they must not hold every
/// fenced container uncached (`UndatedHold`) at each join.
#[tokio::test(start_paused = true)]
async fn a_rebuild_s_replay_does_not_hold_the_container_uncached() {
    let cache = ContentCache::new(settings(), None, None);
    let replay = Invalidation {
        source: EventSource::Cluster,
        event_id: None,
        ..inv(EventType::Regenerated, &["old"])
    };
    cache.invalidate(&replay).await;
    assert!(cache.fences.get(id()).unwrap().lock().undated.is_none());
    // A peer's undated event (it has an id) still holds.
    let event = Invalidation {
        source: EventSource::Cluster,
        event_id: Some("evt_01PEER".into()),
        ..inv(EventType::Regenerated, &["older"])
    };
    cache.invalidate(&event).await;
    assert!(cache.fences.get(id()).unwrap().lock().undated.is_some());
}

fn dated(event_type: EventType, revoked: &[&str], current: &[&str], at: i64) -> Invalidation {
    Invalidation {
        current_asset_ids: current.iter().map(|s| s.to_string()).collect(),
        changed_at: Some(at),
        ..inv(event_type, revoked)
    }
}

fn floor_of(cache: &ContentCache) -> (Option<i64>, i64, Vec<String>) {
    let fence = cache.fences.get(id()).unwrap();
    let st = fence.lock();
    let f = st.floor(Instant::now()).unwrap();
    let mut current: Vec<String> = f
        .current
        .iter()
        .flat_map(|c| c.iter().map(|a| a.to_string()))
        .collect();
    current.sort();
    (f.revoked_at, f.at, current)
}

/// Round 23 review: the same change met twice (its webhook, then the
/// write-through's answer) kept only the first, perhaps cut-short, list.
/// A revoking change newer than the standing one that names no current
/// ids names none (round 67 review: keeping the standing list let the ids
/// of the version it replaced pass); a later non-revoking change keeps the
/// list.
#[tokio::test(start_paused = true)]
async fn a_floor_keeps_its_current_ids_through_a_non_revoking_change_and_widens_on_the_same_one() {
    let cache = ContentCache::new(settings(), None, None);
    cache
        .invalidate(&dated(EventType::Regenerated, &["a"], &["b"], 1_000))
        .await;
    cache
        .invalidate(&dated(EventType::Updated, &[], &[], 3_000))
        .await;
    assert_eq!(floor_of(&cache), (Some(1_000), 3_000, vec!["b".to_string()]));
    // Late, between them, naming no ids: a newer revoking change, none current.
    cache
        .invalidate(&dated(EventType::Regenerated, &[], &[], 2_000))
        .await;
    assert_eq!(floor_of(&cache), (Some(2_000), 3_000, vec![]));
    // The same change again, with ids: they are its list.
    cache
        .invalidate(&dated(EventType::Regenerated, &[], &["c"], 2_000))
        .await;
    assert_eq!(floor_of(&cache), (Some(2_000), 3_000, vec!["c".to_string()]));
    // And again, with more: they widen it.
    cache
        .invalidate(&dated(EventType::Regenerated, &[], &["d"], 2_000))
        .await;
    assert_eq!(
        floor_of(&cache),
        (Some(2_000), 3_000, vec!["c".to_string(), "d".to_string()])
    );
}

/// Round 23 review: re-publication put revoked ids and the floor's current
/// ids in one invalidation, and applying it revokes none of the ids it
/// also names as current: an id an undated change named current after it
/// was revoked came back on a joiner.
#[tokio::test(start_paused = true)]
async fn an_exported_revocation_stays_revoked_where_it_is_applied() {
    let cache = ContentCache::new(settings(), None, None);
    cache
        .invalidate(&dated(EventType::Regenerated, &["x"], &["b"], 1_000))
        .await;
    let mut undated = inv(EventType::Regenerated, &[]);
    undated.current_asset_ids = vec!["x".to_string()];
    cache.invalidate(&undated).await;
    let joiner = ContentCache::new(settings(), None, None);
    for e in cache.export_fences() {
        joiner.invalidate(&e).await;
    }
    let fence = joiner.fences.get(id()).unwrap();
    assert!(
        fence.lock().is_revoked("x", Instant::now()),
        "x was revoked where it was exported from"
    );
}

/// An origin answer on a variant path that names an asset's `assetId`
/// twice: a client reading the first occurrence would see an id the fence
/// did not judge (here the revoked one), so the body is not served.
#[tokio::test(start_paused = true)]
async fn a_variant_answer_that_repeats_an_assets_id_is_unreadable() {
    let cache = ContentCache::new(settings(), None, None);
    cache.invalidate(&inv(EventType::Regenerated, &["rev-1"])).await;
    let twice = r#"{"id":"x","assets":[{"assetId":"rev-1","url":"u/rev-1","assetId":"ok-1"}]}"#;
    let mut b = Bytes::from(twice);
    assert!(matches!(
        cache.judge_origin(id(), None, Some(&mut b)),
        OriginVerdict::Unreadable
    ));
    let descriptor = r#"{"assetId":"rev-1","url":"u/rev-1","assetId":"ok-1"}"#;
    let mut d = Bytes::from(descriptor);
    assert!(matches!(
        cache.judge_origin(id(), Some("ok-1"), Some(&mut d)),
        OriginVerdict::Unreadable
    ));
    // The same body with each id once has the revoked asset cut out.
    let once = r#"{"id":"x","assets":[{"assetId":"rev-1","url":"u/rev-1"},{"assetId":"ok-1"}]}"#;
    let mut b = Bytes::from(once);
    assert!(matches!(
        cache.judge_origin(id(), None, Some(&mut b)),
        OriginVerdict::Pass
    ));
    assert_eq!(&b[..], br#"{"id":"x","assets":[{"assetId":"ok-1"}]}"#);
}

/// Attacker review (round 74): the cache's wall clock was read once, at
/// start. Set forward by ten minutes afterwards (NTP fixing a clock that
/// was wrong at boot, a host resumed from suspend), the wall clock passed a
/// descriptor's `expiresAt` while the entry, limited by an instant read on
/// the old clock, was still served: promise 5. A step ends every entry.
#[tokio::test(start_paused = true)]
async fn a_step_of_the_wall_clock_ends_entries_limited_by_an_expires_at() {
    let t0 = 1_893_456_000_000i64;
    let steps = crate::shaping::wall_steps::WallSteps::manual();
    let clock = UnixClock::starting_at_millis(t0).following(steps);
    let cache = ContentCache::with_clock(settings(), None, None, clock);
    let expiring = Bytes::from(
        serde_json::json!({"id": id().to_string(), "assets": [
            {"assetId": "a", "url": "u/a", "expiresAt": time::format_rfc3339((t0 + 120_000) / 1000)}
        ]})
        .to_string(),
    );
    let fill = || async {
        let b = expiring.clone();
        let fetch = move || {
            let b = b.clone();
            async move { Ok(b.into()) }
        };
        cache.fill(&org(), id(), fetch).await.1
    };
    assert_eq!(fill().await, CacheStatus::Miss);
    assert!(
        cache.lookup(&org(), id()).await.is_some(),
        "cached until its expiresAt"
    );
    steps.step_by(600_000);
    assert!(
        cache.lookup(&org(), id()).await.is_none(),
        "served past its expiresAt after the wall clock stepped"
    );
    // Filled again on the stepped clock: past its expiresAt, not cached.
    fill().await;
    assert!(cache.lookup(&org(), id()).await.is_none());
}
