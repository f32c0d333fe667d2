//! Per-container fences (DESIGN section 4): a generation counter, a
//! tombstone, and the revoked asset ids, shared by every organization's
//! entry of the container.
//!
//! The generation is an atomic so the hit path checks it without a lock.
//! The rest sits behind a per-fence mutex that only fills and
//! invalidations take. The map of fences is sharded so no global lock
//! exists on any path.

use super::entry::CachedContainer;
use super::id_list::IdList;
use crate::ids::ContainerId;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

pub struct Fence {
    /// Bumped by every invalidation. Written under `state`'s lock (so a
    /// fill's check-then-register is atomic with respect to it), read
    /// without a lock on the hit path.
    generation: AtomicU64,
    state: Mutex<FenceState>,
}

#[derive(Default)]
pub struct FenceState {
    /// Until then the container answers 404 without an origin call.
    pub tombstone_until: Option<Instant>,
    /// When the delete behind the tombstone happened (unix ms: the event's
    /// change time, else when this instance applied it). Only a
    /// `content.generated` shown to be later lifts the tombstone early.
    pub tombstone_changed_at: Option<i64>,
    /// How the origin dated that delete, if it did (`None`: a gateway's
    /// clock did): a re-published tombstone carries it, so a peer can still
    /// tell it from the re-creation that lifted it (`is_history`).
    pub tombstone_dated_by: Option<OriginDate>,
    /// The newest `content.generated` that lifted a tombstone (see `Lift`).
    pub lifted: Option<Lift>,
    /// Revoked asset id -> until when it stays revoked.
    pub revoked: HashMap<Box<str>, Instant>,
    /// The last fills that were cached, newest last, at most
    /// `MAX_RECORDS`: which organization, which asset ids, and the
    /// completion number. Registered under this lock by the fill that
    /// decided to cache; kept across invalidations (a caption change must
    /// not make a regenerate in flight forget the ids filled before it was
    /// sent), and taken by the mutation invalidation they are older than.
    pub records: VecDeque<FillRecord>,
    /// Orders fill completions and mutation marks on this container.
    /// Guarded by the lock; only grows while the fence lives, and a mark
    /// keeps its fence alive (see `MutationMark`).
    pub seq: u64,
    /// The newest origin change time an invalidation reported (see `Floor`).
    pub floor: Option<Floor>,
    /// Until then an event other than a delete (generated, regenerated,
    /// updated) has said the container exists: an origin 404 meanwhile is
    /// a lagging replica's answer, not remembered by the negative cache.
    pub exists_until: Option<Instant>,
    /// The newest `updatedAt` a read outside the cache showed and the
    /// cached fills were dropped for (`note_origin_version`): once per
    /// version, however many reads show it.
    pub read_version: Option<i64>,
    /// Set by an invalidation that gave no change time (see `UndatedHold`).
    pub undated: Option<UndatedHold>,
}

/// A re-creation that lifted a tombstone (a dated `content.generated`,
/// dated by the origin): a delete the origin dated before `at` that arrives
/// later (an origin retry, a replay, a peer's late entry) is history, not a
/// new deletion, and must not tombstone the live container again (see
/// `is_history`). Remembered as long as the revocations (`until`).
#[derive(Clone, Copy, Debug)]
pub struct Lift {
    pub at: i64,
    pub until: Instant,
}

/// How the origin dated a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginDate {
    /// Its `updatedAt` (the event's change time).
    Changed,
    /// Its webhook's event id, a ULID minted at that time.
    Minted(Box<str>),
}

/// How long after a change the origin may mint the id of the event that
/// reports it: a re-creation dated only by its event's ULID lifts from
/// this much earlier (a delete between the change and the minting is a
/// real delete, not history).
pub const MINT_LAG_MS: i64 = 60_000;
/// How far back an event id's time is taken for the origin's date of a
/// delete: the origin retries a delivery for a day. An id whose time lies
/// outside (a random `evt_` id decodes to any year) dates nothing.
const MINTED_WINDOW_MS: i64 = 25 * 3600 * 1000;

/// The unix ms an invalidation's age is judged at: when the instance that
/// accepted it took it, else `now_ms` (it is being accepted now).
///
/// Whether a delete's event id dates it, and whether a replay of it is
/// older than the origin's retries, depend on when they are asked. Review
/// 85: each party asked at its own reading time. A replayed delete minted
/// just inside the retries, accepted by an instance cut off from Redis,
/// tombstoned there; its entry, drained after the delete's date crossed
/// the edge, was history to the fence record and to every peer, which
/// refilled the container from a lagging replica. Judged at the
/// acceptance, the verdict is one, wherever and however late it is read.
pub fn judged_at(inv: &crate::events::Invalidation, now_ms: i64) -> i64 {
    inv.accepted_at.unwrap_or(now_ms)
}

/// How the origin dated `delete` (whose event id is `event_id`), if it did,
/// judged at unix ms `now_ms` (or at its acceptance, [`judged_at`]).
pub fn origin_date(
    delete: &crate::events::Invalidation,
    event_id: Option<&str>,
    now_ms: i64,
) -> Option<(i64, OriginDate)> {
    let now_ms = judged_at(delete, now_ms);
    match (delete.changed_at, delete.created_at, event_id) {
        (Some(changed), _, _) => Some((changed, OriginDate::Changed)),
        (None, Some(created), Some(id))
            if crate::events::webhook::ulid_millis(id) == Some(created)
                && (now_ms - MINTED_WINDOW_MS..=now_ms + MINT_LAG_MS).contains(&created) =>
        {
            Some((created, OriginDate::Minted(id.into())))
        }
        _ => None,
    }
}

/// How far back an origin replays past events (`replayOf`), beyond the day
/// it retries a delivery: a month, as webhook providers keep events.
const REPLAY_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

/// Whether `delete` (whose event id is `event_id`) is a replay of a delete
/// the origin made past its day of retries: the container may have come
/// back since, with no lift left here to show it, so the delete is history
/// (entries dropped, nothing tombstoned or revoked) and the origin is asked
/// again.
///
/// A delete the origin marks as a replay (`replayOf`) is history when it is
/// dated before the retries: by its `evt_<ULID>` id's time, else by its
/// `updatedAt`. One dated by neither tombstones as a fresh delete would
/// (attacker review: an undated replay may be the only word of a delete
/// the gateway missed, and a lagging replica would refill it). An unmarked
/// delete is taken for a replay only by an id dated between
/// `REPLAY_WINDOW_MS` and `MINTED_WINDOW_MS` ago: a random `evt_` id
/// decodes to any year (1 in about 10^5 into that month), so an id out of
/// it dates nothing. "Ago" is from its acceptance ([`judged_at`]).
pub fn is_past_replay(delete: &crate::events::Invalidation, event_id: Option<&str>, now_ms: i64) -> bool {
    let now_ms = judged_at(delete, now_ms);
    let retries_end = now_ms - MINTED_WINDOW_MS;
    let minted = match (delete.created_at, event_id) {
        (Some(created), Some(id)) if crate::events::webhook::ulid_millis(id) == Some(created) => {
            Some(created)
        }
        _ => None,
    };
    match (delete.replay, minted, delete.changed_at) {
        (true, Some(minted), _) => minted < retries_end,
        (true, None, Some(changed)) => changed < retries_end,
        (true, None, None) => false,
        (false, minted, _) => minted.is_some_and(|m| (now_ms - REPLAY_WINDOW_MS..retries_end).contains(&m)),
    }
}

/// Whether an instance that applied `inv` may remember its event id as
/// applied, and so skip a later entry or delivery with the same id. A
/// delete judged a replay past the retries may not: that verdict depends
/// on when it was accepted, and another instance may have accepted the same
/// delivery before the edge and tombstoned (attacker review 89, #4: the
/// origin retried through B after A, cut off from Redis, had queued its
/// tombstone; peers skipped A's entry as a duplicate of B's history). The
/// tombstoning verdict wins whichever entry comes first; applying another
/// history verdict again changes nothing. A delete that is history because
/// a re-creation lifted it is remembered: that verdict rests on the
/// origin's own dates, and a later acceptance can only lose the date (and
/// tombstone, the safe side), never turn a real delete into history.
pub fn settles_event(inv: &crate::events::Invalidation, now_ms: i64) -> bool {
    !(inv.event_type == crate::events::EventType::Deleted
        && is_past_replay(inv, inv.event_id.as_deref(), now_ms))
}

/// The date a re-creation (`content.generated`) lifts from: its change
/// time, else its event's time less `MINT_LAG_MS`; none for one dated in
/// the future past that lag (a lift that would make every delete history).
pub fn lift_date(generated: &crate::events::Invalidation, now_ms: i64) -> Option<i64> {
    let now_ms = judged_at(generated, now_ms);
    match (generated.changed_at, generated.created_at) {
        (Some(changed), _) => Some(changed),
        (None, Some(minted)) if minted <= now_ms + MINT_LAG_MS => Some(minted - MINT_LAG_MS),
        _ => None,
    }
}

impl Lift {
    /// Whether `delete` is history at `now` (unix ms `now_ms`; see
    /// `is_history`).
    pub fn supersedes(&self, delete: &crate::events::Invalidation, now: Instant, now_ms: i64) -> bool {
        now < self.until && is_history(delete, delete.event_id.as_deref(), self.at, now_ms)
    }
}

/// Whether `delete` (whose event id is `event_id`) happened before the
/// re-creation dated `lifted_at`, both on the origin's clock: only a delete
/// the origin dated (its `updatedAt`, or its webhook's ULID event id) can
/// be, strictly before the lift. A delete a gateway dated by its own clock
/// (a write-through DELETE stamped when it is published, a re-published
/// tombstone, a rebuild's replay of a record, which already decided) is
/// never history: two clocks cannot order it, and refusing a live
/// container beats serving a deleted one. The same millisecond: not
/// history (arrival order decides).
pub fn is_history(
    delete: &crate::events::Invalidation,
    event_id: Option<&str>,
    lifted_at: i64,
    now_ms: i64,
) -> bool {
    origin_date(delete, event_id, now_ms).is_some_and(|(at, _)| at < lifted_at)
}

/// After an invalidation that gave no change time, the gateway cannot tell
/// a lagging replica's old version from the current one: until `until`, a
/// fill not dated after `newest` (the newest version this instance knew of
/// when the invalidation was applied: cached, or a dated change's time;
/// `None`: every fill) is served but not cached. Bounded in time because
/// the event may have come late, after the version the origin serves now
/// was cached.
#[derive(Clone, Copy, Debug)]
pub struct UndatedHold {
    pub newest: Option<i64>,
    /// The newest version this instance had cached when the hold was set:
    /// a later undated change that finds nothing newer cached holds back
    /// every fill.
    pub cached: Option<i64>,
    pub until: Instant,
}

impl UndatedHold {
    /// Whether a body dated `at` is held out of the cache at `now`.
    pub fn holds(&self, at: Option<i64>, now: Instant) -> bool {
        now < self.until && !matches!((self.newest, at), (Some(n), Some(at)) if at > n)
    }
}

/// Fills cached per fence that it remembers (one per organization usually).
pub const MAX_RECORDS: usize = 16;

/// One cached fill, as its fence remembers it.
pub struct FillRecord {
    pub org: Arc<str>,
    pub asset_ids: IdList,
    /// The body's `updatedAt` (unix ms), when it had one.
    pub updated_at: Option<i64>,
    /// `FenceState::seq` when the fill completed.
    pub seq: u64,
}

/// The newest change time (`updatedAt`, unix ms) an invalidation
/// reported, until when it is remembered, and the newest change that
/// revoked assets with the ids it named as current: a fill whose body is
/// older than `at` comes from a lagging origin replica, and one older than
/// `revoked_at` also lists assets that change revoked.
///
/// Two dates, because the newest change need not be the one that revoked:
/// a caption edit after a regenerate must not forget the regenerate's
/// current ids (a replica behind both would serve its old assets), nor
/// give them its own later date (a body of a regenerate that arrived late,
/// dated between them, would have its current assets revoked).
#[derive(Clone, Debug)]
pub struct Floor {
    pub at: i64,
    pub until: Instant,
    /// The date of the newest change that revoked assets, if one stands.
    pub revoked_at: Option<i64>,
    /// The asset ids that change named as current (a regenerate's answer
    /// or event): while the floor stands, an asset read from the origin
    /// that is not one of them is from before the change.
    pub current: Option<Arc<[Box<str>]>>,
}

impl Floor {
    /// Whether a change that revoked assets stands.
    pub fn revokes_assets(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Taken before a mutation of the container is sent to the origin. Holds
/// the fence, so it cannot be swept (and its completion numbers restart)
/// while the mutation is at the origin.
#[derive(Clone)]
pub struct MutationMark {
    pub fence: Arc<Fence>,
    pub seq: u64,
}

/// What a fill holds from its start: the generation it must still see at
/// the end (the lease), read together with the tombstone under the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub generation: u64,
}

impl Fence {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> MutexGuard<'_, FenceState> {
        // A panic while holding the lock cannot leave the state half-valid
        // in a way that serves revoked data (generation is separate), so
        // recover rather than poison every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumps the generation. Call with the state lock held.
    pub fn bump(&self, _held: &mut FenceState) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A fill's lease: the generation, read under the lock together with
    /// the tombstone. `None` while the container is tombstoned (nothing is
    /// fetched, nothing is cached).
    pub fn lease(&self, now: Instant) -> Option<Lease> {
        let st = self.lock();
        if st.is_tombstoned(now) {
            return None;
        }
        Some(Lease {
            generation: self.generation(),
        })
    }

    /// Marks the moment a mutation of this container is sent to the
    /// origin: fills recorded before the mark hold data the mutation
    /// replaces (see `cache/invalidate.rs`).
    pub fn mark(self: &Arc<Self>) -> MutationMark {
        let mut st = self.lock();
        st.seq += 1;
        MutationMark {
            fence: self.clone(),
            seq: st.seq,
        }
    }
}

impl FenceState {
    pub fn is_tombstoned(&self, now: Instant) -> bool {
        self.tombstone_until.is_some_and(|t| now < t)
    }

    pub fn is_revoked(&self, asset_id: &str, now: Instant) -> bool {
        self.revoked.get(asset_id).is_some_and(|t| now < *t)
    }

    /// Whether an event said the container exists, recently enough that
    /// an origin 404 may be a lagging replica's.
    pub fn announced(&self, now: Instant) -> bool {
        self.exists_until.is_some_and(|t| now < t)
    }

    /// The change-time floor, while it stands.
    pub fn floor(&self, now: Instant) -> Option<&Floor> {
        self.floor.as_ref().filter(|f| now < f.until)
    }

    /// Records a cached fill (under the lock, by the fill that caches it).
    pub fn register(&mut self, org: Arc<str>, entry: &CachedContainer, updated_at: Option<i64>) {
        self.seq += 1;
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
        }
        let ids = IdList::new(entry.asset_ids());
        // Refills of an unchanged container share one list.
        let asset_ids = match self.records.back() {
            Some(last) if last.asset_ids == ids => last.asset_ids.clone(),
            _ => ids,
        };
        if self.records.capacity() == 0 {
            // Most fences only ever hold one record: not VecDeque's first 4.
            self.records.reserve_exact(1);
        }
        self.records.push_back(FillRecord {
            org,
            asset_ids,
            updated_at,
            seq: self.seq,
        });
    }

    /// Whether the fence carries no time-limited state any more.
    fn is_idle(&self, now: Instant) -> bool {
        !self.is_tombstoned(now)
            && self.revoked.values().all(|t| now >= *t)
            && self.floor(now).is_none()
            && self.undated.is_none_or(|h| now >= h.until)
            && self.lifted.is_none_or(|l| now >= l.until)
            && !self.announced(now)
    }
}

const SHARDS: usize = 64;

/// All fences, sharded by container id.
type Shard = Mutex<HashMap<u128, Arc<Fence>>>;

pub struct Fences {
    shards: Box<[Shard]>,
    /// Past this many fences in one shard, creating another first drops the
    /// shard's fences that nothing depends on (same rule as `sweep`).
    shard_soft_cap: usize,
}

impl Default for Fences {
    fn default() -> Self {
        Fences::with_capacity(1 << 20)
    }
}

impl Fences {
    /// `expected` is the number of fences normally alive (about the cache's
    /// entry bound); shards are swept inline when they grow past twice that.
    pub fn with_capacity(expected: usize) -> Self {
        Fences {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_soft_cap: (expected * 2 / SHARDS).max(1024),
        }
    }

    fn shard(&self, id: ContainerId) -> MutexGuard<'_, HashMap<u128, Arc<Fence>>> {
        let v = id.as_u128();
        let i = ((v ^ (v >> 64)) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: ContainerId) -> Option<Arc<Fence>> {
        self.shard(id).get(&id.as_u128()).cloned()
    }

    pub fn get_or_create(&self, id: ContainerId) -> Arc<Fence> {
        let mut map = self.shard(id);
        if map.len() >= self.shard_soft_cap && !map.contains_key(&id.as_u128()) {
            let now = Instant::now();
            map.retain(|_, f| retain_fence(f, now));
        }
        map.entry(id.as_u128())
            .or_insert_with(|| {
                Arc::new(Fence {
                    generation: AtomicU64::new(0),
                    state: Mutex::new(FenceState::default()),
                })
            })
            .clone()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every fence (purge-all bumps them all).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Fence>)) {
        for s in self.shards.iter() {
            for fence in s.lock().unwrap_or_else(|p| p.into_inner()).values() {
                f(fence);
            }
        }
    }

    /// Calls `f` on every fence with its container id.
    pub fn for_each_with_id(&self, mut f: impl FnMut(ContainerId, &Arc<Fence>)) {
        for s in self.shards.iter() {
            for (id, fence) in s.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                f(ContainerId::from_u128(*id), fence);
            }
        }
    }

    /// Drops fences nothing depends on: no entry and no in-flight fill holds
    /// them (the map's reference is the only one), and their tombstone and
    /// revocations have expired. Expired revocations are pruned from the
    /// rest. A fence still referenced is never dropped, so a generation an
    /// entry or fill depends on is never forgotten.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut dropped = 0;
        for s in self.shards.iter() {
            let mut map = s.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, fence| retain_fence(fence, now));
            dropped += before - map.len();
        }
        dropped
    }
}

/// Prunes expired state and says whether the fence must stay: something
/// holds it (an entry or an in-flight fill), or it still has a live
/// tombstone or revocation.
fn retain_fence(fence: &Arc<Fence>, now: Instant) -> bool {
    let mut st = fence.lock();
    st.revoked.retain(|_, until| now < *until);
    if st.tombstone_until.is_some_and(|t| now >= t) {
        st.tombstone_until = None;
    }
    Arc::strong_count(fence) > 1 || !st.is_idle(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u128) -> ContainerId {
        ContainerId::from_u128(n)
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_keeps_referenced_and_time_limited_fences() {
        let fences = Fences::default();
        let held = fences.get_or_create(id(1));
        let tomb = fences.get_or_create(id(2));
        tomb.lock().tombstone_until = Some(Instant::now() + Duration::from_secs(10));
        drop(tomb);
        fences.get_or_create(id(3));
        assert_eq!(
            fences.sweep(Instant::now()),
            1,
            "only the idle, unreferenced fence goes"
        );
        assert!(fences.get(id(1)).is_some() && fences.get(id(2)).is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(fences.sweep(Instant::now()), 1);
        assert!(fences.get(id(2)).is_none());
        drop(held);
        assert_eq!(fences.sweep(Instant::now()), 1);
        assert!(fences.is_empty());
    }

    #[test]
    fn bump_is_seen_without_the_lock() {
        let fences = Fences::default();
        let f = fences.get_or_create(id(9));
        let g0 = f.generation();
        let mut st = f.lock();
        let g1 = f.bump(&mut st);
        drop(st);
        assert_eq!(g1, g0 + 1);
        assert_eq!(f.generation(), g1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fences_stay_bounded_without_a_sweep() {
        let fences = Fences::with_capacity(0);
        let held: Vec<_> = (0..10u128).map(|n| fences.get_or_create(id(n))).collect();
        for n in 10..200_000u128 {
            fences.get_or_create(id(n * 7919));
        }
        assert!(fences.len() <= SHARDS * 1024, "{} fences", fences.len());
        for (n, f) in held.iter().enumerate() {
            assert!(
                Arc::ptr_eq(f, &fences.get(id(n as u128)).unwrap()),
                "a held fence was dropped"
            );
        }
    }
}
