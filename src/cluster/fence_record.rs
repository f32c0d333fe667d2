//! One container's fence record in Redis: everything the cluster's
//! invalidations of that container left that a later reader must still
//! apply (its tombstone, the lift of one, its revoked asset ids, its
//! change-time floor), merged into **one** record per container.
//!
//! Why one per container, not one per event: after a gap that may have lost
//! data, every instance re-publishes every fence it holds. With a record per
//! publication, N instances turned K fences into (N+1)K records, which
//! filled `fence_max_entries` with duplicates; the cap then refused the one
//! fence Redis really lacked, and a joiner missed it. With the container as
//! the record's identity (the sorted set's member), a re-publication merges
//! into the record already there: the cap counts distinct containers, and a
//! fence Redis still holds is never written twice.
//!
//! The merge mirrors how the cache applies an invalidation
//! (`cache/invalidate.rs`), so applying the merged record equals applying
//! what was merged, in the order it was merged (the order Redis accepted the
//! publications: each is a compare-and-set on the record, see
//! `PUBLISH_SCRIPT`):
//! - a delete's date only moves forward; a `generated` dated not before it
//!   lifts it (and is kept, so a rebuild lifts a tombstone an instance
//!   still holds from before a gap);
//! - revoked ids are a union (newest kept past [`MAX_RECORD_REVOKED`]);
//! - the floor is the newest change date with the ids it named as current;
//!   an undated change naming current ids widens it (up to the cache's
//!   bound, `cache/floor_current.rs`, which keeps a record smaller than
//!   the largest a reader takes: see the test `the_largest_record_fits_what_a_reader_takes`).
//!
//! The record is sealed with the cluster secret as a whole (`entry_mac.rs`);
//! only a gateway can write one that a rebuild applies.

use crate::cache::fence::{is_history, is_past_replay, lift_date};
use crate::cache::floor_current::widened;
use crate::events::{EventType, Invalidation, Source};
use crate::ids::ContainerId;
use serde::{Deserialize, Serialize};

/// Record format version.
pub const RECORD_VERSION: u32 = 2;

/// Revoked ids kept per record (the newest; more only when one event names
/// more, which are all kept): a record stays one bounded
/// value however often its container changes. As many as an instance's
/// cache keeps by default (`invalidation.max_revoked_per_container`, which
/// cluster mode may not set higher): a joiner must not forget revocations
/// its peers still hold, and the ids a lagging replica serves are exactly
/// the oldest ones.
pub const MAX_RECORD_REVOKED: usize = 4096;

/// Event ids remembered per record (the newest), marked as applied by a
/// rebuild so the same event met again in the stream is a duplicate.
const MAX_RECORD_EVENTS: usize = 8;

/// One container's merged fences. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FenceRecord {
    pub v: u32,
    /// `cnt_<uuid>`: also the record's member in the fence set.
    pub container: String,
    /// The standing tombstone's date (unix ms), if the container is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<i64>,
    /// The newest `generated` that lifted a tombstone (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted: Option<i64>,
    /// Revoked asset ids, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<FloorRecord>,
    /// The newest event ids merged in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// The newest dated change that revoked assets, and the ids it named as
/// current (`None`: it named none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FloorRecord {
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Vec<String>>,
}

/// The member of `id`'s record in the fence set.
pub fn member(id: ContainerId) -> String {
    id.to_string()
}

/// Whether `inv` leaves a fence a record must keep (a tombstone or a
/// revocation: the events that revoke assets, on one container).
pub fn has_record(inv: &Invalidation) -> bool {
    inv.event_type.revokes_assets() && inv.container.is_some()
}

impl FenceRecord {
    /// An empty record of `id`.
    pub fn new(id: ContainerId) -> FenceRecord {
        FenceRecord {
            v: RECORD_VERSION,
            container: member(id),
            ..FenceRecord::default()
        }
    }

    /// Merges `inv` (whose event id is `event_id`) in, as the cache would
    /// apply it after what is already merged.
    pub fn merge(&mut self, inv: &Invalidation, event_id: &str) {
        if !inv.event_type.revokes_assets() {
            return;
        }
        // A delete older than the re-creation that already lifted the
        // tombstone (a retried or re-published delete merged late) is
        // history, as the cache takes it (`invalidate.rs`): no tombstone,
        // and its ids are not revoked (the re-created version may use them).
        // Judged on the entry's id (the one `inv` carries on the stream),
        // as the cache judges it (`fence::is_history`), and so is the
        // replay of a delete past the origin's retries (`is_past_replay`).
        let now_ms = super::reader::unix_millis();
        let past_replay = inv.event_type == EventType::Deleted && is_past_replay(inv, Some(event_id), now_ms);
        let history = past_replay
            || inv.event_type == EventType::Deleted
                && self
                    .lifted
                    .is_some_and(|l| is_history(inv, Some(event_id), l, now_ms));
        // This event's revocations are all kept (as the cache keeps them,
        // `invalidate.rs` `make_room`): past the bound, only the oldest of
        // the others are dropped.
        let adding: Vec<&String> = inv
            .revoked_asset_ids
            .iter()
            .filter(|a| !history && !inv.current_asset_ids.contains(a))
            .collect();
        let named: std::collections::HashSet<&str> = adding.iter().map(|a| a.as_str()).collect();
        let mut held: std::collections::HashSet<String> = self.revoked.iter().cloned().collect();
        let before = self.revoked.len();
        for a in adding {
            if held.insert(a.clone()) {
                self.revoked.push(a.clone());
            }
        }
        // Only an event that adds ids makes room (as the cache does).
        // At most one webhook's worth: a delete of a cached container with
        // more assets (its fills' ids) would otherwise outgrow what a
        // reader takes, and a joiner would skip the record, tombstone and
        // all.
        let keep = if self.revoked.len() > before {
            MAX_RECORD_REVOKED.max(named.len().min(crate::events::webhook::MAX_EVENT_ASSET_IDS))
        } else {
            self.revoked.len()
        };
        let mut extra = self.revoked.len().saturating_sub(keep);
        if extra > 0 {
            self.revoked.retain(|a| {
                let drop = extra > 0 && !named.contains(a.as_str());
                extra -= usize::from(drop);
                !drop
            });
            // Still over: the event named more than a record holds.
            let over = self.revoked.len().saturating_sub(keep);
            self.revoked.drain(..over);
        }
        let date = inv.changed_at.or(inv.created_at);
        match inv.event_type {
            EventType::Deleted => {
                // Publication dates every delete; one that is not (written by
                // hand) is kept until its record expires.
                let at = date.unwrap_or(i64::MAX);
                if !history {
                    self.tombstone = Some(self.tombstone.map_or(at, |t| t.max(at)));
                }
            }
            EventType::Generated => {
                let later = match (date, self.tombstone) {
                    (Some(at), Some(deleted)) => at >= deleted,
                    (_, None) => true,
                    (None, Some(_)) => false,
                };
                if later {
                    self.tombstone = None;
                    // From the date the cache's lift takes (`lift_date`).
                    if let Some(at) = lift_date(inv, now_ms) {
                        self.lifted = Some(self.lifted.map_or(at, |l| l.max(at)));
                    }
                }
            }
            _ => {}
        }
        // The cache's bound on a floor's current ids (`floor_current.rs`)
        // is what keeps a record under the size a reader takes.
        let owned = |ids: Vec<&str>| ids.into_iter().map(str::to_owned).collect::<Vec<String>>();
        if inv.changed_at.is_none() && !inv.current_asset_ids.is_empty() {
            if let Some(cur) = self.floor.as_mut().and_then(|f| f.current.as_mut()) {
                *cur = owned(widened(cur, &inv.current_asset_ids));
            }
        }
        // As the cache's floor takes a dated revoking change
        // (`invalidate.rs`): a newer one replaces the ids (keeping them if
        // it names none), the same one met again widens them.
        if let Some(at) = inv.changed_at {
            let named = (!inv.current_asset_ids.is_empty())
                .then(|| owned(widened::<&str>(&[], &inv.current_asset_ids)));
            match self.floor.as_mut() {
                Some(f) if f.at == at => {
                    if let Some(ids) = named {
                        f.current = Some(match &f.current {
                            Some(cur) => owned(widened(cur, &inv.current_asset_ids)),
                            None => ids,
                        });
                    }
                }
                Some(f) if f.at > at => {}
                // Newer: its ids replace the list; naming none, none
                // are current (as the cache's floor).
                _ => self.floor = Some(FloorRecord { at, current: named }),
            }
        }
        // Only ids the dedupe remembers (longer ones it ignores), so the
        // record's size has a bound.
        // Nor a replay merged as past the retries: a joiner would take it
        // as applied and skip the same event's tombstoning entry, accepted
        // earlier elsewhere (`fence::settles_event`).
        let remembered = !past_replay
            && !event_id.is_empty()
            && event_id.len() <= crate::events::dedupe::MAX_DEDUPE_ID_LEN;
        if remembered && !self.events.iter().any(|e| e == event_id) {
            self.events.push(event_id.to_owned());
            if self.events.len() > MAX_RECORD_EVENTS {
                self.events.remove(0);
            }
        }
    }

    /// Whether merging `inv` in would add no fence (only its event id): the
    /// record already covers it.
    pub fn covers(&self, inv: &Invalidation) -> bool {
        let mut merged = self.clone();
        merged.merge(inv, "");
        merged == *self
    }

    /// The invalidations that put these fences on an instance, in the order
    /// to apply them: the lift, then the tombstone (or the revocations), then
    /// the floor. `None` if the record names no valid container.
    pub fn invalidations(&self) -> Option<Vec<Invalidation>> {
        let id = ContainerId::parse(&self.container)?;
        let inv =
            |event_type, revoked: Vec<String>, current: Vec<String>, changed_at, created_at| Invalidation {
                event_id: None,
                source: Source::Cluster,
                event_type,
                container: Some(id),
                revoked_asset_ids: revoked,
                current_asset_ids: current,
                changed_at,
                created_at,
                replay: false,
                accepted_at: None,
            };
        let mut out = Vec::new();
        if let Some(at) = self.lifted {
            out.push(inv(EventType::Generated, Vec::new(), Vec::new(), None, Some(at)));
        }
        if let Some(at) = self.tombstone {
            // Dated by `created_at`: a tombstone's date, not a change time
            // (which would also set a floor the record does not hold).
            out.push(inv(
                EventType::Deleted,
                self.revoked.clone(),
                Vec::new(),
                None,
                Some(at),
            ));
        } else if !self.revoked.is_empty() {
            out.push(inv(
                EventType::Regenerated,
                self.revoked.clone(),
                Vec::new(),
                None,
                None,
            ));
        }
        if let Some(f) = &self.floor {
            let current = f.current.clone().unwrap_or_default();
            out.push(inv(EventType::Regenerated, Vec::new(), current, Some(f.at), None));
        }
        Some(out)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a fence record always serializes")
    }

    /// A record of this format, or `None` (another version, or garbage).
    pub fn decode(json: &[u8]) -> Option<FenceRecord> {
        serde_json::from_slice::<FenceRecord>(json)
            .ok()
            .filter(|r| r.v == RECORD_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ContainerId {
        ContainerId::parse("cnt_0b6c4c1e-6f1a-4b7e-9a51-1f0f7c0d2a11").unwrap()
    }

    fn ev(
        t: EventType,
        revoked: &[&str],
        current: &[&str],
        changed: Option<i64>,
        created: Option<i64>,
    ) -> Invalidation {
        Invalidation {
            event_id: None,
            source: Source::Webhook,
            event_type: t,
            container: Some(id()),
            revoked_asset_ids: revoked.iter().map(|s| s.to_string()).collect(),
            current_asset_ids: current.iter().map(|s| s.to_string()).collect(),
            changed_at: changed,
            created_at: created,
            replay: false,
            accepted_at: None,
        }
    }

    #[test]
    fn republishing_what_a_record_holds_changes_nothing() {
        let mut r = FenceRecord::new(id());
        let del = ev(EventType::Deleted, &["a", "b"], &[], None, Some(10));
        r.merge(&del, "e1");
        assert!(r.covers(&del));
        // The cache's export of the same fence.
        assert!(r.covers(&ev(EventType::Deleted, &["b", "a"], &[], None, Some(10))));
        assert!(!r.covers(&ev(EventType::Deleted, &["c"], &[], None, Some(10))));
        assert!(!r.covers(&ev(EventType::Deleted, &[], &[], None, Some(11))));
    }

    /// As the cache takes it (`cache::fence::is_past_replay`): the replay of
    /// a delete minted two days ago neither tombstones nor revokes; one
    /// minted an hour ago does both.
    #[test]
    fn a_replayed_delete_past_the_origin_s_retries_leaves_no_tombstone() {
        let now = super::super::reader::unix_millis();
        // Unmarked past the month (a random id's date) tombstones; a marked
        // replay (`replayOf`, carried on the stream) of any age past the
        // retries does not.
        for (age_h, replay, history) in [
            (48, false, true),
            (1, false, false),
            (40 * 24, false, false),
            (40 * 24, true, true),
            (1, true, false),
        ] {
            let at = now - age_h * 3600 * 1000;
            let event_id = format!("evt_{}", ulid::Ulid::from_parts(at as u64, 0));
            let mut r = FenceRecord::new(id());
            let mut delete = ev(EventType::Deleted, &["a"], &[], None, Some(at));
            delete.replay = replay;
            let json = crate::cluster::entry::encode(&delete, &event_id, "peer");
            let (delete, _) = crate::cluster::entry::decode(json.as_bytes()).unwrap();
            r.merge(&delete, &event_id);
            assert_eq!(
                r.tombstone.is_none(),
                history,
                "minted {age_h} h ago, replay {replay}"
            );
            assert_eq!(
                r.revoked.is_empty(),
                history,
                "minted {age_h} h ago, replay {replay}"
            );
        }
    }

    /// Review 85, B: the verdict is the acceptor's, at its acceptance. A
    /// replay minted 25 h less a minute before it was accepted tombstones
    /// when merged an hour later (a drained outbox); one minted a minute
    /// past the edge is history however soon it is merged.
    #[test]
    fn a_replayed_delete_is_judged_at_its_acceptance_not_at_the_merge() {
        let now = super::super::reader::unix_millis();
        let edge = 25 * 3600 * 1000;
        for (accepted_ago, minted_before_acceptance, history) in [
            (3600 * 1000, edge - 60_000, false),
            (0, edge + 60_000, true),
            (3600 * 1000, edge + 60_000, true),
        ] {
            let accepted = now - accepted_ago;
            let at = accepted - minted_before_acceptance;
            let event_id = format!("evt_{}", ulid::Ulid::from_parts(at as u64, 0));
            let mut delete = ev(EventType::Deleted, &["a"], &[], None, Some(at));
            delete.replay = true;
            delete.accepted_at = Some(accepted);
            let json = crate::cluster::entry::encode(&delete, &event_id, "peer");
            let (delete, _) = crate::cluster::entry::decode(json.as_bytes()).unwrap();
            assert_eq!(delete.accepted_at, Some(accepted), "carried on the stream");
            let mut r = FenceRecord::new(id());
            r.merge(&delete, &event_id);
            assert_eq!(r.tombstone.is_none(), history, "accepted {accepted_ago} ms ago");
            // Review 89, #4: a history verdict is not remembered as applied
            // (a joiner would skip the same event accepted before the edge
            // elsewhere); a tombstoning one is, and then the other is moot.
            assert_eq!(
                r.events.contains(&event_id),
                !history,
                "accepted {accepted_ago} ms ago"
            );
            assert_eq!(crate::cache::fence::settles_event(&delete, now), !history);
        }
    }

    #[test]
    fn tombstones_lift_and_floors_merge_as_the_cache_applies_them() {
        let mut r = FenceRecord::new(id());
        r.merge(&ev(EventType::Deleted, &[], &[], None, Some(10)), "d1");
        r.merge(&ev(EventType::Generated, &[], &[], None, Some(9)), "g0");
        assert_eq!(r.tombstone, Some(10), "an older generated does not lift");
        r.merge(&ev(EventType::Generated, &["x"], &["y"], Some(12), None), "g1");
        assert_eq!((r.tombstone, r.lifted), (None, Some(12)));
        r.merge(&ev(EventType::Regenerated, &["y"], &["z"], Some(11), None), "r0");
        let f = r.floor.clone().unwrap();
        assert_eq!(
            (f.at, f.current),
            (12, Some(vec!["y".to_string()])),
            "an older floor loses"
        );
        assert_eq!(r.revoked, vec!["x".to_string(), "y".to_string()]);
        let invs = r.invalidations().unwrap();
        let kinds: Vec<EventType> = invs.iter().map(|i| i.event_type).collect();
        assert_eq!(
            kinds,
            vec![
                EventType::Generated,
                EventType::Regenerated,
                EventType::Regenerated
            ]
        );
        let back = FenceRecord::decode(r.encode().as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    /// Every list at its bound, every id at its longest: the sealed record
    /// still fits what a joiner's rebuild reads (a larger one is skipped
    /// like a forged one, tombstone and all).
    #[test]
    fn the_largest_record_fits_what_a_reader_takes() {
        let long =
            |tag: &str, i: usize| format!("{tag}{i:0>w$}", w = crate::ids::MAX_ASSET_ID_LEN - tag.len());
        let mut r = FenceRecord::new(id());
        // One event names up to 10,000 ids, all kept (past the record's
        // usual bound of revoked ids).
        let revoked: Vec<String> = (0..crate::events::webhook::MAX_EVENT_ASSET_IDS - 10)
            .map(|i| long("r", i))
            .collect();
        let first: Vec<String> = (0..10).map(|i| long("c", i)).collect();
        r.merge(
            &ev(
                EventType::Regenerated,
                &strs(&revoked),
                &strs(&first),
                Some(5),
                None,
            ),
            "e0",
        );
        // Undated regenerates, each naming a full event's worth of new ids.
        for round in 0..5 {
            let current: Vec<String> = (0..crate::events::webhook::MAX_EVENT_ASSET_IDS)
                .map(|i| long(&format!("u{round}-"), i))
                .collect();
            let event = format!("{round:x>128}");
            r.merge(
                &ev(EventType::Regenerated, &[], &strs(&current), None, None),
                &event,
            );
        }
        r.merge(
            &ev(EventType::Deleted, &[], &[], None, Some(9)),
            &"y".repeat(100_000),
        );
        let floor = r.floor.clone().unwrap().current.unwrap();
        assert_eq!(floor.len(), crate::cache::floor_current::MAX_FLOOR_CURRENT_IDS);
        assert_eq!(r.tombstone, Some(9));
        let sealed = crate::cluster::entry_mac::EntryKey::new(b"secret", "stream").seal_record(&r.encode());
        assert_eq!(r.revoked.len(), revoked.len(), "one event's revocations all kept");
        assert!(
            sealed.len() < crate::cluster::scripts::MAX_VALUE_BYTES * 3 / 4,
            "{} bytes",
            sealed.len()
        );
    }

    /// As the cache's floor (`cache::tests`): a newer revoking change
    /// naming no ids names none current; the same change met again with
    /// ids gives them, and widens them after that.
    #[test]
    fn a_newer_id_less_change_names_none_and_the_same_change_widens() {
        let mut r = FenceRecord::new(id());
        r.merge(
            &ev(EventType::Regenerated, &["a"], &["b"], Some(1_000), None),
            "r1",
        );
        r.merge(&ev(EventType::Regenerated, &[], &[], Some(2_000), None), "r2");
        let f = r.floor.clone().unwrap();
        assert_eq!((f.at, f.current), (2_000, None));
        r.merge(
            &ev(EventType::Regenerated, &[], &["c"], Some(2_000), None),
            "r2-answer",
        );
        r.merge(
            &ev(EventType::Regenerated, &[], &["d"], Some(2_000), None),
            "r2-again",
        );
        let f = r.floor.clone().unwrap();
        assert_eq!(f.current, Some(vec!["c".to_string(), "d".to_string()]));
    }

    #[test]
    fn a_record_stays_bounded() {
        let mut r = FenceRecord::new(id());
        for i in 0..(MAX_RECORD_REVOKED + 10) {
            r.merge(
                &ev(EventType::Regenerated, &[&format!("a{i}")], &[], None, None),
                &format!("e{i}"),
            );
        }
        assert_eq!(r.revoked.len(), MAX_RECORD_REVOKED);
        assert_eq!(r.revoked[0], "a10", "the newest are kept");
        assert_eq!(r.events.len(), MAX_RECORD_EVENTS);
    }
}
