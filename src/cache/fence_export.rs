//! This instance's live fences as invalidations, for a cluster that lost
//! its fence records (Redis restarted empty, failed over to a replica
//! without them, or the outbox collapsed): each instance re-publishes what
//! it holds, and every peer applies it as an ordinary invalidation.
//!
//! A re-creation that lifted a tombstone (or would lift an older one)
//! becomes a `generated` dated as it was, first, so a delete retried after
//! it stays history on a joiner. A tombstone becomes a `deleted` of the
//! container (dated as the delete
//! was, so a later `generated` still lifts it, and with how the origin
//! dated it, so a peer that saw a later `generated` takes it for history),
//! carrying the container's live revoked ids; revoked ids without a
//! tombstone, and a change-time
//! *floor* (a regenerate's date and current ids, which keeps a lagging
//! replica's older version out even when no previous ids were named),
//! become a `regenerated` naming them, dated by the floor. Applying either
//! again only bumps the generation and extends the lifetimes, which is
//! safe. The publisher merges each into its container's one fence record
//! (`cluster/fence_record.rs`): one Redis already covers is not written.

use super::fence::OriginDate;
use super::ContentCache;
use crate::events::{EventType, Invalidation, Source};
use tokio::time::Instant;

impl ContentCache {
    /// How long a fence lasts at most (the longer of the tombstone and the
    /// revoked-id lifetimes): the lifetime of its record in Redis. The
    /// longer of the lifetimes in force and those at start: a reload that
    /// raised them stores longer fences from now on, and one that lowered
    /// them leaves the fences stored before with their longer lifetime.
    pub fn fence_retention(&self) -> std::time::Duration {
        let live = self.ttls.load();
        let start = self.settings.tombstone_ttl.max(self.settings.revoked_ttl);
        start.max(live.tombstone_ttl).max(live.revoked_ttl)
    }

    /// Every live tombstone and revoked asset id, as invalidations without
    /// event ids (the publisher gives them fresh ones).
    pub fn export_fences(&self) -> Vec<Invalidation> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.fences.for_each_with_id(|id, fence| {
            let st = fence.lock();
            let tombstoned = st.is_tombstoned(now);
            let mut revoked: Vec<String> = st
                .revoked
                .iter()
                .filter(|(_, until)| now < **until)
                .map(|(a, _)| a.to_string())
                .collect();
            // Only floors of changes that revoke assets had fence records.
            let floor = st.floor(now).filter(|f| f.revokes_assets());
            let lift = st.lifted.filter(|l| now < l.until);
            if !tombstoned && revoked.is_empty() && floor.is_none() && lift.is_none() {
                return;
            }
            // The re-creation first, as a record rebuilds it: a delete it
            // followed is history, one after it still deletes (black-box
            // round 70: a re-published record without it let a joiner
            // take a retried old delete for a new one).
            if let Some(l) = lift {
                out.push(Invalidation {
                    event_id: None,
                    source: Source::Cluster,
                    event_type: EventType::Generated,
                    container: Some(id),
                    revoked_asset_ids: Vec::new(),
                    current_asset_ids: Vec::new(),
                    changed_at: None,
                    created_at: Some(l.at),
                    replay: false,
                    accepted_at: None,
                });
            }
            revoked.sort_unstable();
            if tombstoned {
                // Dated as the origin dated it, where it did, so that a
                // peer or a record holding a later re-creation takes it for
                // the history it is (`fence::is_history`): its change time
                // (a floor this cache holds too), or its webhook's event id
                // (a ULID of that time; a peer that applied the event skips
                // it as a duplicate, so it carries no revoked ids then).
                // Otherwise the tombstone's date from this host's clock,
                // under a fresh id: never taken for history.
                let (event_id, changed_at, created_at) = match &st.tombstone_dated_by {
                    Some(OriginDate::Changed) => (None, st.tombstone_changed_at, None),
                    Some(OriginDate::Minted(e)) => (Some(e.to_string()), None, st.tombstone_changed_at),
                    None => (None, None, st.tombstone_changed_at),
                };
                let revoked_asset_ids = if event_id.is_some() {
                    Vec::new()
                } else {
                    std::mem::take(&mut revoked)
                };
                out.push(Invalidation {
                    event_id,
                    source: Source::Cluster,
                    event_type: EventType::Deleted,
                    container: Some(id),
                    revoked_asset_ids,
                    current_asset_ids: Vec::new(),
                    changed_at,
                    created_at,
                    replay: false,
                    // Judged as of its own date (`fence::judged_at`): this
                    // instance decided it is a delete, so a record or a
                    // peer reading it after the origin's retries does not
                    // take it for a replay past them (attacker review 89:
                    // re-published after the edge, it came back as history
                    // everywhere but here).
                    accepted_at: st.tombstone_changed_at,
                });
            }
            // Revoked ids in an invalidation of their own: one that also
            // named current ids would keep any of them that are both (an
            // undated change widened the list with an id revoked since)
            // from being revoked where it is applied.
            if !revoked.is_empty() {
                out.push(Invalidation {
                    event_id: None,
                    source: Source::Cluster,
                    event_type: EventType::Regenerated,
                    container: Some(id),
                    revoked_asset_ids: revoked,
                    current_asset_ids: Vec::new(),
                    changed_at: None,
                    created_at: None,
                    replay: false,
                    accepted_at: None,
                });
            }
            if floor.is_some() {
                out.push(Invalidation {
                    event_id: None,
                    source: Source::Cluster,
                    event_type: EventType::Regenerated,
                    container: Some(id),
                    revoked_asset_ids: Vec::new(),
                    current_asset_ids: floor
                        .and_then(|f| f.current.as_ref())
                        .map(|c| c.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    // The revoking change's date: the ids are its.
                    changed_at: floor.and_then(|f| f.revoked_at),
                    created_at: None,
                    replay: false,
                    accepted_at: None,
                });
            }
        });
        out
    }
}
