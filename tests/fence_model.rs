//! An exhaustive model of the fence protocol (DESIGN section 4), explored
//! with loom, checking promise 1 of DESIGN section 2 ("No revoked URL") in
//! every interleaving.
//!
//! The model is `src/cache.rs`, `src/cache/fence.rs`, `src/cache/decision.rs`
//! and `src/cache/invalidate.rs` cut down to one container, with loom's
//! primitives in place of std's: the fence (an atomic generation read
//! without a lock on the hit path, and a mutex around tombstone, revoked
//! ids, fill records, the completion/mark counter and the change-time
//! floor), the sharded fence map (one shard, one container: an
//! `Option<Arc<Fence>>` behind a mutex), the purge epoch (an atomic) and the
//! cache map (a mutex around a `BTreeMap`, standing in for moka). Each step
//! takes the same locks and does the same atomic loads and stores, with the
//! same orderings, as the code it models:
//!
//! - fill (`ContentCache::fill`, `run_fill`, `complete_fill`): fence from
//!   the map, lease (tombstone and generation under the fence lock), epoch,
//!   origin fetch, then under the fence lock: discard if the body is older
//!   than the floor or lists ids other than the current ones the floor
//!   names, if the generation or epoch changed or a tombstone stands, or if
//!   the body carries a revoked id; else record the fill (under the lock)
//!   and insert it into the map (outside it). The result is served through
//!   `judge(Source::Fill)`, except a fill behind a change that revoked
//!   assets (`LaggingAssets`: 503; its one retry is left out, the lagging
//!   replica would answer the same).
//! - lookup (`lookup`, `judge(Source::Hit)`): map read, then epoch and
//!   generation loads, no lock.
//! - invalidation (`apply`, `apply_to_fence`): under the fence lock, bump,
//!   revoke the named ids, the ids of fills recorded with an `updatedAt`
//!   older than its change time and, for a mutation, of the fills recorded
//!   before its mark (and forget those records), less the current ids;
//!   tombstone on delete (with its change time), lift it on a
//!   `content.generated` shown to be later; raise the floor; then drop the
//!   recorded organizations' keys from the map.
//! - `mark_mutation` (the mark holds its fence), purge-all (bump the epoch,
//!   clear the map) and `Fences::sweep` (drop a fence nothing references and
//!   that has no tombstone, revocation or floor).
//!
//! Left out: negative caching, the miss budget, idempotent retries' marks,
//! expiry and time (nothing expires within a run), `MAX_RECORDS`, the
//! proxied variants (`judge_origin`, `origin_is_behind`), coalescing (each
//! fill runs on its own; a coalesced waiter is served through the same
//! judge). Modelled as of 9b7e29e.
//!
//! The origin is a mutex around (version, deleted). Version `v` has one
//! asset, `asset_of(v)`, and `updatedAt` `v + 1`; ids are never re-issued.
//! A fresh fill reads the origin; a fill from a lagging replica gets version
//! 0 whatever has happened since (the worst replica). A regenerate or delete
//! commits at the origin first (a regenerate of a deleted container gets
//! 404 and invalidates nothing), then invalidates, as a signed webhook
//! (names the ids it replaces; no mark) or as a proxied write-through
//! (marks before sending; knows the current ids and change time only if it
//! could read the answer).
//!
//! Ghost state, beside the protocol: a std mutex (which adds no
//! interleavings: loom switches threads only at its own operations, so a
//! ghost update is atomic with the loom operation just before it) records
//! which invalidations have taken effect (bumped), what each revoked, and
//! every fill record and mark in one order; a loom atomic `returned`
//! carries "this invalidation has returned" to the requests that start
//! afterwards (release as it returns, acquire as a request starts),
//! standing for the causal chain from the webhook's answer to a client's
//! next request. A request only answers for the invalidations its load
//! saw; without that edge loom would let it read a generation older than
//! one written before the return, which no caller that learned of the
//! return can observe. Checked in every interleaving:
//!
//! 1. A lookup that started after an invalidation returned never serves an
//!    entry whose fill took its lease (for purge-all: read the epoch) before
//!    that invalidation took effect.
//! 2. Nothing is served from the cache, and no fill serves the container,
//!    after a delete returned; no current entry exists while tombstoned.
//! 3. A lookup that started after a regenerate returned never serves the
//!    replaced version if the regenerate named the replaced ids or carried
//!    a change time, and a fill that started after it never serves it if it
//!    carried a change time (without either the gateway cannot tell a
//!    lagging replica's answer from the current one).
//! 4. An asset id revoked by a returned invalidation never resolves: not
//!    from a hit, not in the body or asset a fill serves.
//! 5. A regenerate never revokes the ids of the new version, and at the
//!    end the origin's current asset is not revoked unless it is deleted.
//! 6. Revocation is exact (`cache/invalidate.rs`): an invalidation revokes
//!    nothing but the named ids, the ids of fills recorded on its fence
//!    with an `updatedAt` older than its change time, and those of fills
//!    recorded before its mark, less the current ids; and once it returned,
//!    every id of such a fill (less the current ids) is revoked.
//!
//! Then the model is shown to fail: each `Switches` field switches on one
//! known defect (most of them the code before the fixes of issue 13), and a
//! test asserts loom finds a violating interleaving for it.
//!
//! Each test prints its interleaving count and time (`--nocapture`).
//! `LOOM_MAX_PREEMPTIONS` overrides the preemption bounds chosen here.

use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

type Org = u8;
type AssetId = u8;
const ORG_A: Org = 1;
const ORG_B: Org = 2;
const ORG_C: Org = 3;

/// The one asset of version `v` of the container.
fn asset_of(v: u32) -> AssetId {
    10 + v as AssetId
}

/// The origin's `updatedAt` of version `v` (unix ms in the code).
fn updated_at(v: u32) -> u32 {
    v + 1
}

/// This instance's clock when it applies an invalidation without a change
/// time: later than every origin change of the run.
const NOW: u32 = 100;

// Ghost bits, one per invalidation.
const DELETE: u32 = 1;
const REGEN: u32 = 2;
const PURGE: u32 = 4;
const LATE_GEN: u32 = 8;
const CONTAINER_INVALIDATIONS: u32 = DELETE | REGEN | LATE_GEN;

/// Known defects (and one fix) that can be switched on. All off is the
/// code on this branch.
#[derive(Clone, Copy, Debug, Default)]
struct Switches {
    /// `lease` checks the tombstone under the lock, releases it, and reads
    /// the generation afterwards (the old `fill`, issue 13 defect 1).
    split_lease: bool,
    /// `complete_fill` does not look at the tombstone (the old code,
    /// defect 1).
    no_tombstone_at_completion: bool,
    /// `complete_fill` neither refuses nor filters a body carrying revoked
    /// ids.
    no_revoked_check: bool,
    /// The invalidation reads the fill records in one lock acquisition and
    /// bumps in a second (the old snapshot of moka, defect 5).
    snapshot_outside_lock: bool,
    /// Every invalidation revokes (and forgets) every recorded fill, not
    /// only those before a mutation's mark (the old rule, defect 4).
    revoke_all_live: bool,
    /// A fill's result is served as it was rendered, without the lock
    /// (no tombstone, no revoked-asset filter at serving time).
    unlocked_fill_judge: bool,
    /// `sweep` drops fences that entries or fills still reference.
    sweep_ignores_refs: bool,
    /// `mark_mutation` returns the counter value without keeping the fence
    /// (the code before 7741653).
    mark_not_pinned: bool,
    /// Any `content.generated` lifts the tombstone (before 7741653).
    generated_always_lifts: bool,
    /// The records are the old `live` list (before 7741653): taken whole by
    /// every invalidation, one per organization (a refill drops the older
    /// one), and an evicted entry's ids are not revoked.
    old_live_list: bool,
    /// `complete_fill` asks whether the body is older than the floor only
    /// after the generation and revoked-id checks (before 9b7e29e).
    lagging_last: bool,
}

struct Fence {
    generation: AtomicU64,
    state: Mutex<FenceState>,
    /// Ghost: tells fences apart (a sweep may drop one and a later
    /// `get_or_create` make another).
    id: u32,
}

#[derive(Default)]
struct FenceState {
    tombstoned: bool,
    /// `tombstone_changed_at`.
    tombstone_at: Option<u32>,
    revoked: BTreeSet<AssetId>,
    records: Vec<FillRecord>,
    seq: u64,
    floor: Option<Floor>,
}

/// `fence::FillRecord`; `alive` plays the old `Weak::upgrade`.
#[derive(Clone)]
struct FillRecord {
    org: Org,
    ids: Vec<AssetId>,
    updated_at: u32,
    seq: u64,
    alive: std::sync::Arc<AtomicBool>,
}

/// `fence::Floor` (every modelled change revokes assets).
struct Floor {
    at: u32,
    current: Option<Vec<AssetId>>,
}

struct Entry {
    generation: u64,
    epoch: u64,
    fence: Arc<Fence>,
    version: u32,
    assets: Vec<AssetId>,
    alive: std::sync::Arc<AtomicBool>,
    /// Ghost: the container invalidations in effect at the lease, and
    /// purge-all if in effect when the epoch was read.
    began: u32,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.alive.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Ghost state the model keeps beside the protocol (not part of it).
#[derive(Clone, Default, Debug)]
struct Ghost {
    /// Invalidations that have bumped (taken effect), by bit.
    effective: u32,
    /// Invalidations that have returned (see `Model::returned`).
    returned: u32,
    /// By bit index: what each invalidation revoked and which versions it
    /// makes unservable; recorded before it returns.
    records: [InvRecord; 4],
    /// Every fill record, for the revocation rule.
    regs: Vec<Reg>,
    /// Orders fill records and marks, across fences.
    order: u64,
    /// Fences made so far.
    fences: u32,
}

#[derive(Clone, Default, Debug)]
struct InvRecord {
    revoked: Vec<AssetId>,
    /// Cached data older than this is not served once it returned.
    supersedes: Option<u32>,
    /// Nor a fill's answer older than this.
    supersedes_fills: Option<u32>,
}

/// A fill record, as the ghost saw it made.
#[derive(Clone, Debug)]
struct Reg {
    fence: u32,
    order: u64,
    ids: Vec<AssetId>,
    updated_at: u32,
    alive: std::sync::Arc<AtomicBool>,
}

/// What a request knows has happened: the invalidations it saw return.
#[derive(Debug)]
struct Seen {
    returned: u32,
    revoked: BTreeSet<AssetId>,
    deleted: bool,
    min_version: u32,
    min_fill_version: u32,
}

struct Origin {
    version: u32,
    deleted: bool,
}

#[derive(Clone, Debug)]
struct Body {
    version: u32,
    assets: Vec<AssetId>,
}

impl Body {
    fn of(version: u32) -> Body {
        Body {
            version,
            assets: vec![asset_of(version)],
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Replica {
    Fresh,
    /// Answers version 0 whatever has happened since.
    Lagging,
}

#[derive(Clone, Copy, Debug)]
enum Via {
    /// A signed event: `named` says whether it names the replaced ids
    /// (`previousAssetIds`, a delete's `assets`), `floor` whether it
    /// carries `updatedAt`.
    Webhook { named: bool, floor: bool },
    /// A proxied mutation: marked before it is sent; `answer_read` says
    /// whether the origin's 2xx body was read (current ids), `floor`
    /// whether it carried `updatedAt`.
    WriteThrough { answer_read: bool, floor: bool },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Deleted,
    Regenerated,
    Generated,
}

struct Inv {
    kind: Kind,
    bit: u32,
    named: Vec<AssetId>,
    current: Vec<AssetId>,
    changed_at: Option<u32>,
    /// Ghost: see `InvRecord`.
    supersedes: Option<u32>,
    supersedes_fills: Option<u32>,
}

/// `fence::MutationMark` (without its fence when `mark_not_pinned`).
struct Mark {
    seq: u64,
    _fence: Option<Arc<Fence>>,
    /// Ghost: its place in the order of fill records and marks.
    order: u64,
}

/// What serving a fill's result sends.
enum Served {
    Gone,
    Body(Vec<AssetId>),
}

/// Why `complete_fill` did not cache.
#[derive(PartialEq)]
enum Discard {
    Generation,
    Revoked,
    LaggingAssets,
}

struct Model {
    sw: Switches,
    fences: Mutex<Option<Arc<Fence>>>,
    entries: Mutex<BTreeMap<Org, Arc<Entry>>>,
    epoch: AtomicU64,
    origin: Mutex<Origin>,
    ghost: std::sync::Mutex<Ghost>,
    /// The invalidations that have returned, as a caller learns of it: set
    /// (release) as an invalidation returns, read (acquire) as a request
    /// starts. It stands for the causal chain from "the webhook answered"
    /// to "a client sent the next request".
    returned: AtomicU32,
}

impl Model {
    fn new(sw: Switches) -> Model {
        Model {
            sw,
            fences: Mutex::new(None),
            entries: Mutex::new(BTreeMap::new()),
            epoch: AtomicU64::new(0),
            origin: Mutex::new(Origin {
                version: 0,
                deleted: false,
            }),
            ghost: std::sync::Mutex::new(Ghost::default()),
            returned: AtomicU32::new(0),
        }
    }

    fn ghost(&self) -> Ghost {
        self.ghost.lock().unwrap().clone()
    }

    fn update_ghost<R>(&self, f: impl FnOnce(&mut Ghost) -> R) -> R {
        f(&mut self.ghost.lock().unwrap())
    }

    /// What a request starting now knows has returned.
    fn seen(&self) -> Seen {
        let returned = self.returned.load(Ordering::Acquire);
        self.seen_of(returned)
    }

    /// What has returned by the ghost's account, without the acquire: for
    /// the checks whose reads all take the fence lock, which orders them
    /// after the invalidation's already (and adds no interleavings).
    fn seen_by_ghost(&self) -> Seen {
        let returned = self.ghost().returned;
        self.seen_of(returned)
    }

    fn seen_of(&self, returned: u32) -> Seen {
        let g = self.ghost();
        let mut seen = Seen {
            returned,
            revoked: BTreeSet::new(),
            deleted: returned & DELETE != 0,
            min_version: 0,
            min_fill_version: 0,
        };
        for (i, r) in g.records.iter().enumerate() {
            if returned & (1 << i) != 0 {
                seen.revoked.extend(&r.revoked);
                seen.min_version = seen.min_version.max(r.supersedes.unwrap_or(0));
                seen.min_fill_version = seen.min_fill_version.max(r.supersedes_fills.unwrap_or(0));
            }
        }
        seen
    }

    /// `Fences::get_or_create`.
    fn fence(&self) -> Arc<Fence> {
        let mut slot = self.fences.lock().unwrap();
        slot.get_or_insert_with(|| {
            let id = self.update_ghost(|g| {
                g.fences += 1;
                g.fences
            });
            Arc::new(Fence {
                generation: AtomicU64::new(0),
                state: Mutex::new(FenceState::default()),
                id,
            })
        })
        .clone()
    }

    /// `Fence::lease`: the generation, and (ghost) the invalidations in
    /// effect; `None` while tombstoned.
    fn lease(&self, fence: &Fence) -> Option<(u64, u32)> {
        let st = fence.state.lock().unwrap();
        let began = self.ghost().effective & CONTAINER_INVALIDATIONS;
        if st.tombstoned {
            return None;
        }
        if self.sw.split_lease {
            drop(st);
        }
        Some((fence.generation.load(Ordering::Acquire), began))
    }

    fn fetch(&self, replica: Replica) -> Option<Body> {
        match replica {
            Replica::Lagging => Some(Body::of(0)),
            Replica::Fresh => {
                let o = self.origin.lock().unwrap();
                (!o.deleted).then(|| Body::of(o.version))
            }
        }
    }

    /// `fill` + `run_fill`, then the result served through
    /// `judge(Source::Fill)` and checked.
    fn fill(&self, org: Org, replica: Replica) {
        // The fill's check against this reads the floor under the lock.
        let at_start = self.seen_by_ghost();
        let fence = self.fence();
        let Some((generation, began)) = self.lease(&fence) else {
            return; // 404, tombstoned
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        let began = began | (self.ghost().effective & PURGE);
        let Some(body) = self.fetch(replica) else {
            return; // the origin's 404, passed on
        };
        let (entry, discard) = self.complete_fill(org, &fence, generation, epoch, body, began);
        match discard {
            None => {
                self.entries.lock().unwrap().insert(org, entry.clone());
            }
            Some(Discard::LaggingAssets) => return, // 503
            Some(Discard::Generation | Discard::Revoked) => {}
        }
        let seen = self.seen();
        let served = self.judge_fill(&entry);
        check_fill(&at_start, &seen, &entry, &served);
    }

    /// `complete_fill`: decides under the fence lock whether to cache, and
    /// records a cached fill under that lock.
    fn complete_fill(
        &self,
        org: Org,
        fence: &Arc<Fence>,
        lease: u64,
        epoch: u64,
        body: Body,
        began: u32,
    ) -> (Arc<Entry>, Option<Discard>) {
        let mut st = fence.state.lock().unwrap();
        let (assets, removed_revoked) = if self.sw.no_revoked_check {
            (body.assets.clone(), false)
        } else {
            let kept: Vec<AssetId> = body
                .assets
                .iter()
                .copied()
                .filter(|a| !st.revoked.contains(a))
                .collect();
            let removed = kept.len() != body.assets.len();
            (kept, removed)
        };
        let lagging = st.floor.as_ref().is_some_and(|f| {
            let older = updated_at(body.version) < f.at;
            let other_ids = f
                .current
                .as_ref()
                .is_some_and(|cur| body.assets.iter().any(|a| !cur.contains(a)));
            older || other_ids
        });
        let discard = if lagging && !self.sw.lagging_last {
            Some(Discard::LaggingAssets)
        } else if fence.generation.load(Ordering::Acquire) != lease
            || (!self.sw.no_tombstone_at_completion && st.tombstoned)
            || self.epoch.load(Ordering::Acquire) != epoch
        {
            Some(Discard::Generation)
        } else if removed_revoked {
            Some(Discard::Revoked)
        } else if lagging {
            Some(Discard::LaggingAssets)
        } else {
            None
        };
        let entry = Arc::new(Entry {
            generation: if discard.is_none() { lease } else { u64::MAX },
            epoch,
            fence: fence.clone(),
            version: body.version,
            assets,
            alive: std::sync::Arc::new(AtomicBool::new(true)),
            began,
        });
        if discard.is_none() {
            // `FenceState::register`.
            st.seq += 1;
            let seq = st.seq;
            if self.sw.old_live_list {
                st.records
                    .retain(|r| r.org != org && r.alive.load(std::sync::atomic::Ordering::Relaxed));
            }
            st.records.push(FillRecord {
                org,
                ids: entry.assets.clone(),
                updated_at: updated_at(body.version),
                seq,
                alive: entry.alive.clone(),
            });
            self.update_ghost(|g| {
                g.order += 1;
                g.regs.push(Reg {
                    fence: fence.id,
                    order: g.order,
                    ids: entry.assets.clone(),
                    updated_at: updated_at(body.version),
                    alive: entry.alive.clone(),
                })
            });
        }
        (entry, discard)
    }

    /// `judge(Source::Fill)`.
    fn judge_fill(&self, e: &Entry) -> Served {
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.sw.unlocked_fill_judge
            || (e.generation == e.fence.generation.load(Ordering::Acquire) && e.epoch == epoch)
        {
            return Served::Body(e.assets.clone());
        }
        let st = e.fence.state.lock().unwrap();
        if st.tombstoned {
            return Served::Gone;
        }
        Served::Body(
            e.assets
                .iter()
                .copied()
                .filter(|a| !st.revoked.contains(a))
                .collect(),
        )
    }

    /// `lookup` with `judge(Source::Hit)`: no lock but the map's.
    fn lookup(&self, org: Org) -> Option<Arc<Entry>> {
        let e = self.entries.lock().unwrap().get(&org).cloned()?;
        let epoch = self.epoch.load(Ordering::Acquire);
        (e.generation == e.fence.generation.load(Ordering::Acquire) && e.epoch == epoch).then_some(e)
    }

    /// `mark_mutation` / `Fence::mark`.
    fn mark(&self) -> Mark {
        let fence = self.fence();
        let (seq, order) = {
            let mut st = fence.state.lock().unwrap();
            st.seq += 1;
            let order = self.update_ghost(|g| {
                g.order += 1;
                g.order
            });
            (st.seq, order)
        };
        Mark {
            seq,
            _fence: (!self.sw.mark_not_pinned).then_some(fence),
            order,
        }
    }

    /// The origin applies a mutation: `Some` of the deleted version or the
    /// new one, `None` (404) if the container is already deleted.
    fn commit(&self, kind: Kind) -> Option<u32> {
        let mut o = self.origin.lock().unwrap();
        if o.deleted {
            return None;
        }
        match kind {
            Kind::Deleted => o.deleted = true,
            _ => o.version += 1,
        }
        Some(o.version)
    }

    /// `apply` / `apply_to_fence`; returns the ids it revoked.
    fn invalidate(&self, inv: &Inv, mark: Option<&Mark>) -> Vec<AssetId> {
        let fence = self.fence();
        let early = self
            .sw
            .snapshot_outside_lock
            .then(|| fence.state.lock().unwrap().records.clone());
        let mut st = fence.state.lock().unwrap();
        fence.generation.fetch_add(1, Ordering::AcqRel);
        let bump_order = self.update_ghost(|g| {
            g.effective |= inv.bit;
            g.order
        });
        let source = early.unwrap_or_else(|| st.records.clone());
        let orgs: BTreeSet<Org> = source.iter().map(|r| r.org).collect();
        // Rules 2 and 3 of `cache/invalidate.rs` (the old live list had only
        // the mark).
        let older =
            |r: &FillRecord| !self.sw.old_live_list && inv.changed_at.is_some_and(|c| r.updated_at < c);
        let selected =
            |r: &FillRecord| self.sw.revoke_all_live || older(r) || mark.is_some_and(|m| r.seq < m.seq);
        // Every modelled kind revokes assets (`EventType::revokes_assets`).
        let mut revoked = inv.named.clone();
        for r in source.iter().filter(|r| selected(r)) {
            if !self.sw.old_live_list || r.alive.load(std::sync::atomic::Ordering::Relaxed) {
                revoked.extend(&r.ids);
            }
        }
        if self.sw.old_live_list {
            st.records.clear();
        } else {
            st.records.retain(|r| !selected(r));
        }
        revoked.retain(|a| !inv.current.contains(a));
        revoked.sort_unstable();
        revoked.dedup();
        st.revoked.extend(&revoked);
        match inv.kind {
            Kind::Deleted => {
                st.tombstoned = true;
                st.tombstone_at = Some(inv.changed_at.unwrap_or(NOW));
            }
            Kind::Generated => {
                let later = match (inv.changed_at, st.tombstone_at) {
                    (Some(at), Some(deleted)) => at >= deleted,
                    (_, None) => true,
                    (None, Some(_)) => false,
                };
                if later || self.sw.generated_always_lifts {
                    st.tombstoned = false;
                    st.tombstone_at = None;
                }
            }
            Kind::Regenerated => {}
        }
        if let Some(at) = inv.changed_at {
            if st.floor.as_ref().is_none_or(|f| f.at < at) {
                st.floor = Some(Floor {
                    at,
                    current: (!inv.current.is_empty()).then(|| inv.current.clone()),
                });
            }
        }
        self.check_revocation_rule(&fence, &st, bump_order, inv, mark, &revoked);
        drop(st);
        for org in orgs {
            self.entries.lock().unwrap().remove(&org);
        }
        self.update_ghost(|g| {
            g.records[inv.bit.trailing_zeros() as usize] = InvRecord {
                revoked: revoked.clone(),
                supersedes: inv.supersedes,
                supersedes_fills: inv.supersedes_fills,
            };
            g.returned |= inv.bit;
        });
        self.returned.fetch_or(inv.bit, Ordering::Release);
        revoked
    }

    /// Invariant 6. The fills the rule covers: those recorded on this
    /// fence before the mark, and those recorded before the bump whose
    /// `updatedAt` is older than the change time (with `revoke_all_live`,
    /// the old rule: all recorded before the bump).
    fn check_revocation_rule(
        &self,
        fence: &Fence,
        st: &FenceState,
        bump_order: u64,
        inv: &Inv,
        mark: Option<&Mark>,
        revoked: &[AssetId],
    ) {
        let g = self.ghost();
        let covered: Vec<&Reg> = g
            .regs
            .iter()
            .filter(|r| {
                let before_bump = r.order <= bump_order;
                let older = !self.sw.old_live_list && inv.changed_at.is_some_and(|c| r.updated_at < c);
                r.fence == fence.id
                    && if self.sw.revoke_all_live {
                        before_bump
                    } else {
                        (older && before_bump) || mark.is_some_and(|m| r.order < m.order)
                    }
            })
            .collect();
        let mut allowed: BTreeSet<AssetId> = inv.named.iter().copied().collect();
        for r in &covered {
            allowed.extend(&r.ids);
        }
        allowed.retain(|a| !inv.current.contains(a));
        assert!(
            revoked.iter().all(|a| allowed.contains(a)),
            "VIOLATION: the invalidation revoked {revoked:?}, the revocation rule allows {allowed:?}"
        );
        for r in covered {
            if self.sw.old_live_list && !r.alive.load(std::sync::atomic::Ordering::Relaxed) {
                continue; // that rule spared evicted entries
            }
            for a in r.ids.iter().filter(|a| !inv.current.contains(a)) {
                assert!(
                    st.revoked.contains(a),
                    "VIOLATION: asset {a} of a fill the revocation rule covers is not revoked"
                );
            }
        }
    }

    fn regenerate(&self, via: Via) {
        let mark = matches!(via, Via::WriteThrough { .. }).then(|| self.mark());
        let Some(v) = self.commit(Kind::Regenerated) else {
            return;
        };
        let (named, current, changed_at) = match via {
            Via::Webhook { named, floor } => (
                if named { vec![asset_of(v - 1)] } else { vec![] },
                vec![asset_of(v)],
                floor.then(|| updated_at(v)),
            ),
            Via::WriteThrough { answer_read, floor } => (
                vec![],
                if answer_read { vec![asset_of(v)] } else { vec![] },
                (answer_read && floor).then(|| updated_at(v)),
            ),
        };
        let inv = Inv {
            kind: Kind::Regenerated,
            bit: REGEN,
            supersedes: (!named.is_empty() || changed_at.is_some()).then_some(v),
            supersedes_fills: changed_at.map(|_| v),
            named,
            current,
            changed_at,
        };
        let revoked = self.invalidate(&inv, mark.as_ref());
        assert!(
            !revoked.contains(&asset_of(v)),
            "VIOLATION: the regenerate revoked its own new asset {}",
            asset_of(v)
        );
    }

    fn delete(&self, via: Via) {
        let mark = matches!(via, Via::WriteThrough { .. }).then(|| self.mark());
        let Some(v) = self.commit(Kind::Deleted) else {
            return;
        };
        let named = match via {
            Via::Webhook { named: true, .. } => vec![asset_of(v)],
            _ => vec![],
        };
        let inv = Inv {
            kind: Kind::Deleted,
            bit: DELETE,
            named,
            current: vec![],
            changed_at: None,
            supersedes: None,
            supersedes_fills: None,
        };
        self.invalidate(&inv, mark.as_ref());
    }

    /// Version 0's `content.generated` event, delivered late.
    fn late_generated(&self) {
        let inv = Inv {
            kind: Kind::Generated,
            bit: LATE_GEN,
            named: vec![],
            current: vec![asset_of(0)],
            changed_at: Some(updated_at(0)),
            supersedes: None,
            supersedes_fills: None,
        };
        self.invalidate(&inv, None);
    }

    /// Purge-all (`apply` without a container).
    fn purge_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.update_ghost(|g| g.effective |= PURGE);
        self.entries.lock().unwrap().clear();
        self.update_ghost(|g| g.returned |= PURGE);
        self.returned.fetch_or(PURGE, Ordering::Release);
    }

    /// `Fences::sweep` (nothing expires in the model).
    fn sweep(&self) {
        let mut slot = self.fences.lock().unwrap();
        let drop_it = slot.as_ref().is_some_and(|f| {
            let st = f.state.lock().unwrap();
            let idle = !st.tombstoned && st.revoked.is_empty() && st.floor.is_none();
            idle && (self.sw.sweep_ignores_refs || Arc::strong_count(f) == 1)
        });
        if drop_it {
            *slot = None;
        }
    }

    /// A lookup thread: what it served, checked against what had returned
    /// before it started.
    fn checked_lookup(&self, org: Org) {
        let seen = self.seen();
        if let Some(e) = self.lookup(org) {
            check_hit(&seen, &e);
        }
    }

    /// After every thread has finished.
    fn final_checks(&self) {
        for org in [ORG_A, ORG_B, ORG_C] {
            self.checked_lookup(org);
        }
        let fence = self.fences.lock().unwrap().clone();
        let epoch = self.epoch.load(Ordering::Acquire);
        let origin = {
            let o = self.origin.lock().unwrap();
            (o.version, o.deleted)
        };
        let entries: Vec<Arc<Entry>> = self.entries.lock().unwrap().values().cloned().collect();
        for e in &entries {
            let st = e.fence.state.lock().unwrap();
            let current = e.generation == e.fence.generation.load(Ordering::Acquire) && e.epoch == epoch;
            assert!(
                !(current && st.tombstoned),
                "VIOLATION: a servable entry is cached while the container is tombstoned"
            );
        }
        if let (Some(f), (version, false)) = (fence, origin) {
            assert!(
                !f.state.lock().unwrap().revoked.contains(&asset_of(version)),
                "VIOLATION: the origin's current asset {} is revoked",
                asset_of(version)
            );
        }
    }
}

/// Invariants 1 to 4 for a cache hit; `seen` is what the lookup knew when
/// it started.
fn check_hit(seen: &Seen, e: &Entry) {
    assert!(
        !seen.deleted,
        "VIOLATION: a cache hit after the delete returned (version {})",
        e.version
    );
    let missed = seen.returned & !e.began;
    assert!(
        missed == 0,
        "VIOLATION: an entry whose fill began before invalidation {missed:#b} took effect was served after it returned"
    );
    assert!(
        e.version >= seen.min_version,
        "VIOLATION: a cache hit served version {} after the regenerate that replaced it returned",
        e.version
    );
    for a in &e.assets {
        assert!(
            !seen.revoked.contains(a),
            "VIOLATION: revoked asset {a} resolved from the cache"
        );
    }
}

/// Invariants 2 to 4 for what a fill serves: `at_start` is what the
/// request knew when it started, `seen` what it knew just before serving.
fn check_fill(at_start: &Seen, seen: &Seen, e: &Entry, served: &Served) {
    let Served::Body(assets) = served else {
        return;
    };
    assert!(
        !seen.deleted,
        "VIOLATION: a fill served the container after the delete returned"
    );
    assert!(
        e.version >= at_start.min_fill_version,
        "VIOLATION: a fill served version {} after the regenerate that replaced it returned",
        e.version
    );
    for a in assets {
        assert!(
            !seen.revoked.contains(a),
            "VIOLATION: a fill served revoked asset {a}"
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Actor {
    Fill(Org, Replica),
    Delete(Via),
    Regenerate(Via),
    LateGenerated,
    PurgeAll,
    Sweep,
}

impl Actor {
    fn run(self, m: &Model) {
        match self {
            Actor::Fill(org, replica) => m.fill(org, replica),
            Actor::Delete(via) => m.delete(via),
            Actor::Regenerate(via) => m.regenerate(via),
            Actor::LateGenerated => m.late_generated(),
            Actor::PurgeAll => m.purge_all(),
            Actor::Sweep => m.sweep(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Prelude {
    Empty,
    /// Org A's fill of version 0 has been cached.
    CachedA,
    /// Org A's fill of version 0 was cached, then everything purged.
    CachedAThenPurged,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    prelude: Prelude,
    /// Each on its own thread (at most 4: loom allows 5 with the main one).
    actors: &'static [Actor],
    /// A lookup the main thread makes while the actors run.
    lookup: Option<Org>,
    preemption_bound: Option<usize>,
}

fn run_once(sw: Switches, sc: Scenario) {
    let m = Arc::new(Model::new(sw));
    match sc.prelude {
        Prelude::Empty => {}
        Prelude::CachedA => m.fill(ORG_A, Replica::Fresh),
        Prelude::CachedAThenPurged => {
            m.fill(ORG_A, Replica::Fresh);
            m.purge_all();
        }
    }
    let handles: Vec<_> = sc
        .actors
        .iter()
        .map(|&a| {
            let m = m.clone();
            loom::thread::spawn(move || a.run(&m))
        })
        .collect();
    if let Some(org) = sc.lookup {
        m.checked_lookup(org);
    }
    for h in handles {
        h.join().unwrap();
    }
    m.final_checks();
}

/// Explores every interleaving (within the preemption bound); panics on a
/// violation. Returns the number of interleavings.
fn explore(name: &str, sw: Switches, sc: Scenario) -> usize {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = sc.preemption_bound;
    }
    let bound = b.preemption_bound;
    let start = Instant::now();
    let c = count.clone();
    b.check(move || {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_once(sw, sc);
    });
    let n = count.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{name}: {n} interleavings (preemption bound {bound:?}) in {:.2?}",
        start.elapsed()
    );
    n
}

/// Asserts loom finds a violation with `sw`; returns its message.
fn find_violation(name: &str, sw: Switches, sc: Scenario) -> String {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = sc.preemption_bound;
    }
    let start = Instant::now();
    let c = count.clone();
    let result = catch_unwind(AssertUnwindSafe(|| {
        b.check(move || {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            run_once(sw, sc);
        })
    }));
    let n = count.load(std::sync::atomic::Ordering::Relaxed);
    let Err(payload) = result else {
        panic!("{name}: loom found no violation with {sw:?} in {n} interleavings");
    };
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.starts_with("VIOLATION"),
        "{name}: the model failed for another reason: {msg}"
    );
    eprintln!(
        "{name}: violation at interleaving {n} after {:.2?}: {msg}",
        start.elapsed()
    );
    msg
}

// ---------------------------------------------------------------- scenarios

const WEBHOOK_NAMED: Via = Via::Webhook {
    named: true,
    floor: false,
};
const WRITE_THROUGH: Via = Via::WriteThrough {
    answer_read: true,
    floor: true,
};
/// A proxied mutation whose 2xx body could not be read.
const WRITE_THROUGH_BLIND: Via = Via::WriteThrough {
    answer_read: false,
    floor: false,
};

/// Two fills (one behind a lagging replica), a delete and a regenerate
/// naming the ids it replaces, on one container, with org A's version 0
/// cached and looked up meanwhile.
const FILLS_DELETE_REGENERATE: Scenario = Scenario {
    prelude: Prelude::CachedA,
    actors: &[
        Actor::Fill(ORG_B, Replica::Fresh),
        Actor::Fill(ORG_C, Replica::Lagging),
        Actor::Delete(WRITE_THROUGH_BLIND),
        Actor::Regenerate(WEBHOOK_NAMED),
    ],
    lookup: Some(ORG_A),
    preemption_bound: Some(2),
};

/// The write-through path: a proxied regenerate (mark, current ids and
/// change time from the answer) against two fills and a lookup.
const WRITE_THROUGH_REGENERATE: Scenario = Scenario {
    prelude: Prelude::CachedA,
    actors: &[
        Actor::Fill(ORG_B, Replica::Fresh),
        Actor::Fill(ORG_C, Replica::Lagging),
        Actor::Regenerate(WRITE_THROUGH),
    ],
    lookup: Some(ORG_A),
    preemption_bound: Some(2),
};

/// Purge-all and sweep against a fill and a regenerate.
const PURGE_AND_SWEEP: Scenario = Scenario {
    prelude: Prelude::CachedA,
    actors: &[
        Actor::Fill(ORG_B, Replica::Fresh),
        Actor::Regenerate(WEBHOOK_NAMED),
        Actor::PurgeAll,
        Actor::Sweep,
    ],
    lookup: None,
    preemption_bound: Some(2),
};

/// A delete against a fill from a lagging replica and a lookup, with a
/// sweep: the smallest scene for the tombstone.
const DELETE_LAGGING_FILL: Scenario = Scenario {
    prelude: Prelude::Empty,
    actors: &[
        Actor::Fill(ORG_B, Replica::Lagging),
        Actor::Delete(WRITE_THROUGH_BLIND),
        Actor::Sweep,
    ],
    lookup: Some(ORG_B),
    preemption_bound: Some(3),
};

/// A proxied regenerate whose answer could not be read (no current ids)
/// against a fresh fill, org A's version 0 cached.
const BLIND_REGENERATE: Scenario = Scenario {
    prelude: Prelude::CachedA,
    actors: &[
        Actor::Fill(ORG_B, Replica::Fresh),
        Actor::Regenerate(WRITE_THROUGH_BLIND),
    ],
    lookup: Some(ORG_A),
    preemption_bound: Some(3),
};

/// A proxied regenerate against one fresh fill, nothing cached before.
const REGENERATE_ONE_FILL: Scenario = Scenario {
    prelude: Prelude::Empty,
    actors: &[
        Actor::Fill(ORG_B, Replica::Fresh),
        Actor::Regenerate(WRITE_THROUGH),
    ],
    lookup: None,
    preemption_bound: Some(3),
};

/// An entry was cached and purged (its fence is idle, its counter past 1);
/// then a proxied regenerate whose answer could not be read, a sweep and a
/// fresh fill.
const MARK_ACROSS_SWEEP: Scenario = Scenario {
    prelude: Prelude::CachedAThenPurged,
    actors: &[
        Actor::Regenerate(WRITE_THROUGH_BLIND),
        Actor::Sweep,
        Actor::Fill(ORG_B, Replica::Fresh),
    ],
    lookup: None,
    preemption_bound: Some(2),
};

/// A proxied delete, version 0's `content.generated` event arriving late,
/// and a fill from a lagging replica.
const LATE_GENERATED: Scenario = Scenario {
    prelude: Prelude::Empty,
    actors: &[
        Actor::Delete(WRITE_THROUGH_BLIND),
        Actor::LateGenerated,
        Actor::Fill(ORG_B, Replica::Lagging),
    ],
    lookup: None,
    preemption_bound: Some(2),
};

/// Org A's version 0 cached (its TTL run out, say), filled again for org A
/// while a proxied regenerate is at the origin.
const SAME_ORG_REFILL: Scenario = Scenario {
    prelude: Prelude::CachedA,
    actors: &[
        Actor::Fill(ORG_A, Replica::Fresh),
        Actor::Regenerate(WRITE_THROUGH),
    ],
    lookup: None,
    preemption_bound: Some(2),
};

const OFF: Switches = Switches {
    split_lease: false,
    no_tombstone_at_completion: false,
    no_revoked_check: false,
    snapshot_outside_lock: false,
    revoke_all_live: false,
    unlocked_fill_judge: false,
    sweep_ignores_refs: false,
    mark_not_pinned: false,
    generated_always_lifts: false,
    old_live_list: false,
    lagging_last: false,
};

// -------------------------------------------------- the protocol holds

#[test]
fn two_fills_delete_and_regenerate() {
    explore("two_fills_delete_and_regenerate", OFF, FILLS_DELETE_REGENERATE);
}

#[test]
fn write_through_regenerate() {
    explore("write_through_regenerate", OFF, WRITE_THROUGH_REGENERATE);
}

#[test]
fn purge_all_and_sweep() {
    explore("purge_all_and_sweep", OFF, PURGE_AND_SWEEP);
}

#[test]
fn delete_against_lagging_fill() {
    explore("delete_against_lagging_fill", OFF, DELETE_LAGGING_FILL);
}

/// The scenes in which the code before 7741653 failed (see the defect
/// tests below) hold now.
#[test]
fn mark_sweep_late_generated_and_refill() {
    explore("mark_across_sweep", OFF, MARK_ACROSS_SWEEP);
    explore("late_generated", OFF, LATE_GENERATED);
    explore("same_org_refill", OFF, SAME_ORG_REFILL);
}

/// The four main scenarios one preemption deeper (minutes of CPU; run
/// with `--ignored`).
#[test]
#[ignore]
fn deeper() {
    for (name, sc) in [
        ("two_fills_delete_and_regenerate", FILLS_DELETE_REGENERATE),
        ("write_through_regenerate", WRITE_THROUGH_REGENERATE),
        ("purge_all_and_sweep", PURGE_AND_SWEEP),
        ("delete_against_lagging_fill", DELETE_LAGGING_FILL),
    ] {
        let deeper = Scenario {
            preemption_bound: sc.preemption_bound.map(|b| b + 1),
            ..sc
        };
        explore(name, OFF, deeper);
    }
}

// ------------------------------------ each defect is found by the model

/// Issue 13 defect 1, the old `fill`: tombstone and generation read under
/// separate locks, and no tombstone check at completion.
#[test]
fn defect_old_fill_caches_a_deleted_container() {
    let sw = Switches {
        split_lease: true,
        no_tombstone_at_completion: true,
        ..OFF
    };
    find_violation("defect_old_fill", sw, DELETE_LAGGING_FILL);
}

/// Either half of the old `fill` alone is covered by the other check
/// (explored one preemption shallower than `delete_against_lagging_fill`).
#[test]
fn split_lease_or_missing_completion_check_alone_is_covered() {
    let sc = Scenario {
        preemption_bound: Some(2),
        ..DELETE_LAGGING_FILL
    };
    let split = Switches {
        split_lease: true,
        ..OFF
    };
    explore("split_lease alone", split, sc);
    let unchecked = Switches {
        no_tombstone_at_completion: true,
        ..OFF
    };
    explore("no_tombstone_at_completion alone", unchecked, sc);
}

#[test]
fn defect_no_revoked_check_caches_a_lagging_replica() {
    let sw = Switches {
        no_revoked_check: true,
        ..OFF
    };
    find_violation("defect_no_revoked_check", sw, FILLS_DELETE_REGENERATE);
}

#[test]
fn defect_unlocked_fill_judge_serves_after_the_delete() {
    let sw = Switches {
        unlocked_fill_judge: true,
        ..OFF
    };
    find_violation("defect_unlocked_fill_judge", sw, FILLS_DELETE_REGENERATE);
}

/// Issue 13 defect 4: revoking every recorded fill's ids revokes the new
/// version's when the answer named no current ids.
#[test]
fn defect_revoke_all_live_revokes_the_new_version() {
    let sw = Switches {
        revoke_all_live: true,
        ..OFF
    };
    find_violation("defect_revoke_all_live", sw, BLIND_REGENERATE);
}

/// Issue 13 defect 5: the old invalidation (every recorded fill, read
/// before the lock) misses a fill recorded in between; the same rule under
/// the lock does not. Under the mark rule the split is harmless: what it
/// can miss was recorded after the mark.
#[test]
fn defect_snapshot_outside_lock() {
    let old = Switches {
        revoke_all_live: true,
        snapshot_outside_lock: true,
        ..OFF
    };
    find_violation(
        "defect_snapshot_outside_lock (old rule)",
        old,
        REGENERATE_ONE_FILL,
    );
    let old_locked = Switches {
        revoke_all_live: true,
        ..OFF
    };
    explore("old rule under the lock", old_locked, REGENERATE_ONE_FILL);
    let split = Switches {
        snapshot_outside_lock: true,
        ..OFF
    };
    explore(
        "snapshot outside the lock, mark rule",
        split,
        WRITE_THROUGH_REGENERATE,
    );
}

#[test]
fn defect_sweep_ignoring_references_forgets_a_generation() {
    let sw = Switches {
        sweep_ignores_refs: true,
        ..OFF
    };
    find_violation("defect_sweep_ignores_refs", sw, PURGE_AND_SWEEP);
}

/// A mark that does not hold its fence: a sweep between the mark and the
/// invalidation drops the fence, a fill makes a new one whose counter
/// starts again at 0, and the invalidation revokes the new version's ids
/// (recorded after the mark, numbered below it).
#[test]
fn defect_mark_not_pinned_revokes_the_new_version() {
    let sw = Switches {
        mark_not_pinned: true,
        ..OFF
    };
    find_violation("defect_mark_not_pinned", sw, MARK_ACROSS_SWEEP);
}

/// A `content.generated` that arrives after the delete (a webhook retry, a
/// reordered delivery) and lifts the tombstone: a lagging replica's answer
/// is then cached and served as a hit though the origin deleted the
/// container.
#[test]
fn defect_generated_always_lifts_the_tombstone() {
    let sw = Switches {
        generated_always_lifts: true,
        ..OFF
    };
    find_violation("defect_generated_always_lifts", sw, LATE_GENERATED);
}

/// The old `live` list drops an organization's older record when it is
/// filled again; between a mark and its invalidation, the older fill
/// (recorded before the mark, still cached) then is not revoked.
#[test]
fn defect_old_live_list_forgets_a_refilled_org() {
    let sw = Switches {
        old_live_list: true,
        ..OFF
    };
    find_violation("defect_old_live_list", sw, SAME_ORG_REFILL);
}

/// The discard order before 9b7e29e: a lagging replica's body of the
/// replaced version that still lists a revoked id is discarded as
/// `Revoked` and served, filtered, with its other ids (and without the
/// retry), where the README promises 503 for a body older than a change
/// that revoked assets: a fill that started after the regenerate returned
/// serves version 0.
#[test]
fn defect_lagging_checked_last_serves_the_replaced_version() {
    let sw = Switches {
        lagging_last: true,
        ..OFF
    };
    find_violation("defect_lagging_last", sw, WRITE_THROUGH_REGENERATE);
}
