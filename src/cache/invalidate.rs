//! Applying an invalidation to the cache, and which asset ids it revokes.
//!
//! The revocation rule: an invalidation revokes
//! 1. the ids the event names (`previousAssetIds`, a delete's `assets`), and
//! 2. the ids of every fill whose `updatedAt` is older than the change
//!    time the event or the origin's answer reports (provably older; this
//!    is how a cluster peer learns which of its own fills a change on
//!    another instance replaced), and
//! 3. for a mutation proxied through this gateway, the ids of every fill
//!    cached before the mutation was sent to the origin (before its first
//!    attempt, for a retry with the same `Idempotency-Key`): those are
//!    provably older than the state the origin answered with;
//!
//! less the ids the event or the origin's answer names as current. Nothing
//! else: an entry filled after the change (or whose age relative to it
//! cannot be shown) keeps its ids, so a late, replayed or reordered event
//! never revokes what the origin serves now. Every invalidation still
//! bumps the generation, so no entry filled before it is ever served again;
//! the revoked set only guards later fills against a lagging origin replica.
//! A change with no date to judge such a replica by holds back, for
//! `cache.undated_hold_ms`, the versions this instance knew of
//! (`fence::UndatedHold`): they are served, not cached.
//!
//! The cached fills are recorded by the fence itself (under its lock, by
//! the fill that cached them), so the ids are taken under the same lock
//! that bumps the generation: a fill cannot complete in between. Records
//! outlive invalidations that revoke nothing, so a caption change landing
//! while a regenerate is at the origin does not make it forget them.
//!
//! A tombstone is lifted early only by a `content.generated` shown to be
//! later than the delete (its change time not before the delete's; in the
//! same millisecond, arriving after it), so a late or retried `generated`
//! never resurrects a deleted container. The delete's date is the newest
//! of every delete applied: an older delete arriving late never lowers it.

use super::fence::{is_past_replay, lift_date, origin_date, Floor, Lift, MutationMark, UndatedHold};
use super::ContentCache;
use crate::events::{EventType, Invalidation};
use crate::ids::ContainerId;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// What an applied invalidation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub entries_removed: usize,
    /// The asset ids it revoked (what a cluster peer must revoke too).
    pub revoked: Vec<String>,
}

impl Applied {
    pub fn revoked_asset_ids(&self) -> usize {
        self.revoked.len()
    }
}

impl ContentCache {
    /// `inv` as this instance accepts it now (webhook, write-through,
    /// admin): stamped with the time its age is judged at, here, by every
    /// peer that reads it and in its fence record (`fence::judged_at`). One
    /// already stamped (a peer's, read from the stream) keeps its stamp.
    pub fn stamp_accepted(&self, inv: &Invalidation) -> Invalidation {
        Invalidation {
            accepted_at: inv.accepted_at.or_else(|| Some(self.clock.now_unix_millis())),
            ..inv.clone()
        }
    }

    /// Applies an invalidation from an event (webhook, stream, admin).
    /// When this returns, no lookup or fill started afterwards can see data
    /// of the invalidated version.
    pub async fn invalidate(&self, inv: &Invalidation) -> Applied {
        self.apply(inv, None).await
    }

    /// Applies the invalidation of a mutation this gateway proxied: `mark`
    /// is [`ContentCache::mark_mutation`]'s value from before it was sent.
    pub async fn invalidate_after_mutation(&self, inv: &Invalidation, mark: &MutationMark) -> Applied {
        self.apply(inv, Some(mark.seq)).await
    }

    async fn apply(&self, inv: &Invalidation, mark: Option<u64>) -> Applied {
        let Some(id) = inv.container else {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            let n = self.entries.entry_count() as usize;
            self.entries.invalidate_all();
            self.negatives.clear();
            return Applied {
                entries_removed: n,
                revoked: Vec::new(),
            };
        };
        let (orgs, revoked) = self.apply_to_fence(id, inv, mark);
        let mut removed = 0;
        for org in orgs {
            if self.entries.remove(&(org, id.as_u128())).await.is_some() {
                removed += 1;
            }
        }
        Applied {
            entries_removed: removed,
            revoked,
        }
    }

    /// The fence part, all under one lock: bump, revoke, tombstone, floor.
    /// Returns the organizations whose entries to drop and the revoked ids.
    fn apply_to_fence(
        &self,
        id: ContainerId,
        inv: &Invalidation,
        mark: Option<u64>,
    ) -> (Vec<std::sync::Arc<str>>, Vec<String>) {
        let fence = self.fences.get_or_create(id);
        let now = Instant::now();
        let now_ms = self.clock.unix_millis_at(now);
        let mut st = fence.lock();
        fence.bump(&mut st);
        let mut orgs: Vec<std::sync::Arc<str>> = Vec::new();
        for r in &st.records {
            if !orgs.contains(&r.org) {
                orgs.push(r.org.clone());
            }
        }
        // A delete older than the re-creation that already lifted its
        // tombstone (retried, replayed, or a peer's entry read late) is
        // history: the live container is not tombstoned again, and the ids
        // it names are not revoked (the re-created version may use them
        // again: a late event never revokes what the origin serves now).
        // Only one the origin dated (`fence::is_history`). So is the replay
        // of a delete older than the origin's retries (`is_past_replay`):
        // the container may have come back with no lift left here to show
        // it. Either way the entries are dropped, and a fill asks the origin.
        let stale_delete = inv.event_type == EventType::Deleted
            && (st.lifted.is_some_and(|l| l.supersedes(inv, now, now_ms))
                || is_past_replay(inv, inv.event_id.as_deref(), now_ms));
        if stale_delete {
            tracing::info!(container = %id, "content.deleted older than a re-creation or replayed past the retries: not tombstoned");
        }
        let mut revoked: Vec<String> = Vec::new();
        if inv.event_type.revokes_assets() {
            if !stale_delete {
                revoked.extend(inv.revoked_asset_ids.iter().cloned());
            }
            if let Some(changed) = inv.changed_at {
                let older = |r: &super::fence::FillRecord| r.updated_at.is_some_and(|u| u < changed);
                for r in st.records.iter().filter(|r| older(r)) {
                    revoked.extend(r.asset_ids.iter().map(|a| a.to_string()));
                }
                st.records.retain(|r| !older(r));
            }
            if let Some(mark) = mark {
                for r in st.records.iter().filter(|r| r.seq < mark) {
                    revoked.extend(r.asset_ids.iter().map(|a| a.to_string()));
                }
                // Revoked now; later mutations need not see them again.
                st.records.retain(|r| r.seq >= mark);
            }
            revoked.retain(|a| !inv.current_asset_ids.contains(a));
            revoked.sort_unstable();
            revoked.dedup();
        }
        let until = now + self.ttls.load().revoked_ttl;
        make_room(
            &mut st.revoked,
            &revoked,
            self.settings.max_revoked_per_container,
            now,
            id,
        );
        // Current ids only keep this event from revoking them; they never
        // lift an earlier revocation (events may arrive out of order).
        for a in &revoked {
            st.revoked.insert(a.as_str().into(), until);
        }
        st.exists_until = match inv.event_type {
            EventType::Deleted if stale_delete => st.exists_until,
            EventType::Deleted => None,
            _ => Some(until),
        };
        match inv.event_type {
            EventType::Deleted if stale_delete => {}
            EventType::Deleted => {
                st.tombstone_until = Some(now + self.ttls.load().tombstone_ttl);
                let at = inv.changed_at.or(inv.created_at).unwrap_or(now_ms);
                // The tombstone's date only moves forward: a late retry of
                // an older delete must not lower it, or a late `generated`
                // between the two deletes would lift the newest one (and a
                // replayed stream entry could do the same on purpose).
                if st.tombstone_changed_at.is_none_or(|t| at >= t) {
                    st.tombstone_dated_by =
                        origin_date(inv, inv.event_id.as_deref(), now_ms).map(|(_, how)| how);
                }
                st.tombstone_changed_at = Some(st.tombstone_changed_at.map_or(at, |t| t.max(at)));
            }
            EventType::Generated => {
                let later = match (inv.changed_at.or(inv.created_at), st.tombstone_changed_at) {
                    // When the delete was only dated by this host's clock,
                    // the comparison trusts the two clocks to agree (a
                    // known limit, stated in the README).
                    // Both are dated to the millisecond: within the same
                    // one, the order of arrival is all there is to go by
                    // (a delete and a re-create a moment apart).
                    (Some(at), Some(deleted)) => at >= deleted,
                    (_, None) => true,
                    (None, Some(_)) => false,
                };
                if later {
                    // Dated: every delete before it is history, whether its
                    // tombstone was here to lift or arrives later.
                    if let Some(at) = lift_date(inv, now_ms) {
                        let at = st.lifted.filter(|l| now < l.until).map_or(at, |l| l.at.max(at));
                        // As long as the fence says the container exists,
                        // and at least as long as a tombstone lasts.
                        let ttls = self.ttls.load();
                        st.lifted = Some(Lift {
                            at,
                            until: now + ttls.revoked_ttl.max(ttls.tombstone_ttl),
                        });
                    }
                    st.tombstone_until = None;
                    st.tombstone_changed_at = None;
                    st.tombstone_dated_by = None;
                } else if st.is_tombstoned(now) {
                    tracing::info!(container = %id, "content.generated not shown to follow the delete: tombstone kept");
                }
            }
            _ => {}
        }
        if inv.changed_at.is_none() && inv.event_type.revokes_assets() && !inv.current_asset_ids.is_empty() {
            // A change that cannot be dated names ids as current: they may
            // be newer than the floor's, so they are allowed too (the ids it
            // names as previous are revoked above either way).
            if let Some(f) = st.floor.as_mut().filter(|f| now < f.until) {
                if let Some(cur) = f.current.clone() {
                    let all = super::floor_current::widened(&cur, &inv.current_asset_ids);
                    f.current = Some(all.into_iter().map(Box::from).collect());
                }
            }
        }
        let hold = self.settings.undated_hold;
        // Not for a rebuild's replay of the cluster's fence records (no
        // event id): it repeats changes already held, not a new one, and
        // would hold every fenced container uncached at each join.
        // Nor for an operator's purge: it says "drop this", not that the
        // origin changed (and a delete tombstones instead).
        let replayed = inv.source == crate::events::Source::Cluster && inv.event_id.is_none();
        let changes_content = !matches!(inv.event_type, EventType::Deleted | EventType::Purge);
        if inv.changed_at.is_none() && changes_content && !hold.is_zero() && !replayed {
            // No date to judge a lagging replica's answer by: hold back
            // every version this instance knows of, cached or reported by
            // a dated change (`UndatedHold`). After an earlier undated
            // change (its hold over or not) with no fill cached since, a
            // version between the two may exist unseen (the first
            // change's, newer than all of them): every fill is held for
            // the window. A dated change applied since does not count: it
            // may be older than that first change (a late event). The
            // fence forgets the earlier hold only with its cached versions
            // (then nothing is known: the same).
            let cached = st.records.iter().filter_map(|r| r.updated_at).max();
            let reported = st.floor(now).map(|f| f.at);
            let newest = match st.undated {
                Some(h) if cached <= h.cached => None,
                _ => cached.max(reported),
            };
            st.undated = Some(UndatedHold {
                newest,
                cached,
                until: now + hold,
            });
        }
        if let Some(at) = inv.changed_at {
            // The newest reported change wins; an older one arriving late
            // never lowers it. The newest change that revoked assets is
            // kept apart with its current ids (see `Floor`): a later change
            // that revokes nothing keeps them, and a revoking change that
            // arrives late, older than the newest change but newer than
            // the standing revoking one, replaces them.
            let standing = st.floor(now).cloned();
            let newest = standing.as_ref().map_or(at, |f| f.at.max(at));
            let revokes = inv.event_type.revokes_assets();
            let named: Option<Vec<&str>> = (!inv.current_asset_ids.is_empty())
                .then(|| super::floor_current::widened::<&str>(&[], &inv.current_asset_ids));
            let held = standing.as_ref().and_then(|f| f.current.clone());
            let revoking = match &standing {
                // The same change met again (its webhook and the
                // write-through's answer): the ids of either are current,
                // and one list may have been cut short.
                Some(f) if revokes && f.revoked_at == Some(at) => {
                    let current = match (&held, &named) {
                        (Some(cur), Some(_)) => Some(
                            super::floor_current::widened(cur, &inv.current_asset_ids)
                                .into_iter()
                                .map(Box::from)
                                .collect(),
                        ),
                        (None, Some(ids)) => Some(ids.iter().copied().map(Box::from).collect()),
                        (cur, None) => cur.clone(),
                    };
                    (Some(at), current)
                }
                Some(f) if !revokes || f.revoked_at.is_some_and(|r| r > at) => (f.revoked_at, held),
                // A newer revoking change: its ids replace the list. Naming
                // none, it names none current (the standing list was
                // current before it, and it may have revoked every one).
                _ if revokes => (
                    Some(at),
                    named.map(|ids| ids.into_iter().map(Box::from).collect()),
                ),
                _ => (None, None),
            };
            let changed = revokes
                || standing
                    .as_ref()
                    .is_none_or(|f| f.at != newest || f.revoked_at != revoking.0);
            if changed {
                st.floor = Some(Floor {
                    at: newest,
                    until,
                    revoked_at: revoking.0,
                    current: revoking.1,
                });
            }
        }
        (orgs, revoked)
    }
}

/// Makes room for `adding` in a container's revoked ids, at most `cap`:
/// expired ones go first, then the earlier revocations that expire first
/// (the newest matter most). Never one that `adding` names: an event's
/// revocations all hold (one event names at most 10,000 ids), so the set
/// may pass `cap` by one event's worth rather than serve an id that event
/// revoked. A cluster fence record keeps the same rule, up to 10,000 ids
/// of one event (`fence_record.rs`).
fn make_room(
    held: &mut std::collections::HashMap<Box<str>, Instant>,
    adding: &[String],
    cap: usize,
    now: Instant,
    id: ContainerId,
) {
    let new = adding.iter().filter(|a| !held.contains_key(a.as_str())).count();
    if held.len() + new <= cap {
        return;
    }
    held.retain(|_, t| now < *t);
    let over = (held.len() + new).saturating_sub(cap);
    if over == 0 {
        return;
    }
    tracing::warn!(container = %id, "revoked asset ids at the per-container cap");
    let named: std::collections::HashSet<&str> = adding.iter().map(String::as_str).collect();
    let mut earlier: Vec<(Instant, Box<str>)> = held
        .iter()
        .filter(|(k, _)| !named.contains(&***k))
        .map(|(k, t)| (*t, k.clone()))
        .collect();
    earlier.sort_unstable();
    for (_, k) in earlier.into_iter().take(over) {
        held.remove(&k);
    }
}
