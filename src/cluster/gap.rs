//! Exact gap detection: did the stream lose entries this reader had not
//! read yet?
//!
//! Every entry a gateway appends carries its ordinal `n` (the stream's
//! `entries-added` counter when it was appended, see `PUBLISH_SCRIPT`), and
//! the reader keeps the ordinal of its position. Redis 7.0 counts every
//! append in `entries-added` but, when trimming (`MAXLEN ~`, `XTRIM`), does
//! not move `max-deleted-entry-id`; the ordinals do not depend on it:
//!
//! - the entries appended after the position are ordinals `n+1 ..= added`;
//!   the present ones are the newest `length`, so the oldest present is
//!   `added - length + 1`; beyond `n + 1`, some were trimmed unread;
//! - the entries read must be numbered `n+1, n+2, ...`: a jump ahead is a
//!   trim, a step back is a stream that was deleted and appended to again;
//! - `entries-added` below the position's ordinal, or a last id below the
//!   position's id, is a stream that went back in time (recreated, or a
//!   replica promoted without the newest entries);
//! - Redis's `run_id` changing means another server process answers (a
//!   restart or a failover): whatever it lacks cannot be known, so that is
//!   a gap too;
//! - the stream's *epoch* (a counter the publishing script bumps each time
//!   it creates the stream) changing means the stream was deleted and
//!   perhaps created again since the reader last looked. The ordinals
//!   cannot show that to a reader at `0-0` (it joined while there was no
//!   stream): a stream created and deleted again before it read it looks
//!   like no stream at all. The one change that loses nothing is the
//!   first creation after such a reader joined (its epoch one more, the
//!   stream present: the ordinals then check it from entry 1);
//! - the fence set's *token* (its marker member, see `SYNC_SCRIPT`)
//!   changing or vanishing means the fence set was lost: deleted alone,
//!   evicted, or with everything else by `FLUSHDB`/`FLUSHALL` (which keep
//!   `run_id` and take the epoch counter too, so a reader at `0-0` with
//!   epoch 0 would otherwise see exactly what it saw before). Every round
//!   writes a fresh token when there is none, so "none" never persists
//!   while Redis takes writes.
//!
//! An `XDEL` of entries after the position also moves `max-deleted-entry-id`
//! past it. A needless flush is always safe; a missed gap never is, so
//! every doubt counts as a gap.

use super::entry::StreamId;
use super::scripts::Round;

/// Where a reader is: the last entry it applied and that entry's ordinal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub id: StreamId,
    pub n: u64,
    /// The stream's epoch when it was read (0: no epoch key).
    pub epoch: u64,
    /// A hash of the fence set's token when it was read (see [`token_hash`]).
    pub token: u64,
}

/// The form a token is kept in ([`Position`] stays `Copy`); "" (no token)
/// is 0.
pub fn token_hash(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    if token.is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish() | 1
}

/// Why the stream lost entries this node had not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gap {
    /// Redis restarted or failed over (`run_id` changed).
    Restarted,
    /// The stream key is gone.
    StreamMissing,
    /// Entries after the position were trimmed or deleted.
    Trimmed,
    /// The stream went back in time: deleted and created again, or a
    /// replica without the newest entries was promoted.
    Recreated,
    /// An entry did not decode (a newer gateway wrote it): what it revoked
    /// cannot be known.
    Undecodable,
    /// The stream's epoch changed: it was deleted (and perhaps created
    /// again) since this reader looked.
    EpochChanged,
    /// An entry's MAC did not verify (written by something that does not
    /// hold the cluster secret): not applied, and what it may have displaced
    /// cannot be known.
    Unverified,
    /// The fence set's token changed or vanished: the fence records were
    /// lost (the set deleted or evicted, or the database flushed).
    FencesLost,
}

impl Gap {
    pub fn as_str(self) -> &'static str {
        match self {
            Gap::Restarted => "redis_restarted",
            Gap::StreamMissing => "stream_missing",
            Gap::Trimmed => "trimmed",
            Gap::Recreated => "recreated",
            Gap::Undecodable => "undecodable",
            Gap::EpochChanged => "epoch_changed",
            Gap::Unverified => "unverified",
            Gap::FencesLost => "fences_lost",
        }
    }

    /// Whether Redis may have lost more than stream entries (the fence
    /// records too): then every instance re-publishes its own fences.
    pub fn redis_lost_data(self) -> bool {
        !matches!(self, Gap::Trimmed | Gap::Undecodable | Gap::Unverified)
    }
}

/// Whether entries after `pos` may be gone, given one sync round read
/// after it and the `run_id` seen before.
pub fn detect_gap(prev_run_id: &str, pos: Position, r: &Round) -> Option<Gap> {
    if !prev_run_id.is_empty() && prev_run_id != r.run_id {
        return Some(Gap::Restarted);
    }
    if token_hash(&r.token) != pos.token {
        return Some(Gap::FencesLost);
    }
    if r.epoch != pos.epoch {
        let first_creation = pos.n == 0 && pos.id.is_zero() && r.exists && r.epoch == pos.epoch + 1;
        if !first_creation {
            return Some(Gap::EpochChanged);
        }
    }
    if !r.exists {
        return (pos.n > 0 || !pos.id.is_zero()).then_some(Gap::StreamMissing);
    }
    if r.last_generated < pos.id || r.added < pos.n {
        return Some(Gap::Recreated);
    }
    let oldest_present = r.added.saturating_sub(r.length) + 1;
    if r.added > pos.n && oldest_present > pos.n + 1 {
        return Some(Gap::Trimmed);
    }
    if r.max_deleted > pos.id {
        return Some(Gap::Trimmed);
    }
    for (expect, e) in (pos.n + 1..).zip(&r.entries) {
        match e.n {
            Some(n) if n < expect => return Some(Gap::Recreated),
            Some(n) if n > expect => return Some(Gap::Trimmed),
            _ => {}
        }
    }
    // A round that read every entry after the position read as many as
    // were appended since, or some are gone: deleted, whatever
    // `max-deleted-entry-id` says (`XSETID` can lower it), or counted that
    // never were (a counter set back).
    if !r.more {
        let read_to = pos.n + r.entries.len() as u64;
        if read_to < r.added {
            return Some(Gap::Trimmed);
        }
        if read_to > r.added {
            return Some(Gap::Recreated);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::scripts::RawEntry;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn pos(ms: u64, n: u64) -> Position {
        Position {
            id: id(ms),
            n,
            epoch: 1,
            token: token_hash("t1"),
        }
    }

    /// A reader that joined while there was no stream.
    fn at_0_0() -> Position {
        Position {
            token: token_hash("t1"),
            ..Position::default()
        }
    }

    /// A stream with ordinals `first..=added` present, entries at ms = 10 x n.
    fn round(first: u64, added: u64, after: Position) -> Round {
        let entries = (first..=added)
            .filter(|n| id(10 * n) > after.id)
            .map(|n| RawEntry {
                id: id(10 * n),
                n: Some(n),
                inv: None,
                mac: None,
            })
            .collect();
        Round {
            exists: true,
            last_generated: id(10 * added),
            max_deleted: StreamId::ZERO,
            added,
            length: (added + 1).saturating_sub(first),
            run_id: "r1".into(),
            heartbeat: Ok(()),
            entries,
            epoch: 1,
            token: "t1".into(),
            awaited: 0,
            awaited_ids: Vec::new(),
            fence_set_age_ms: u64::MAX,
            slowest_round_ms: 0,
            members_age_ms: u64::MAX,
            id_conflict: false,
            id_suspect_ms: 0,
            more: false,
        }
    }

    #[test]
    fn nothing_missed_is_no_gap() {
        let p = pos(50, 5);
        assert_eq!(detect_gap("r1", p, &round(1, 5, p)), None);
        assert_eq!(detect_gap("r1", p, &round(1, 9, p)), None);
        // Trimmed up to the next unread entry, not past it.
        assert_eq!(detect_gap("r1", p, &round(6, 9, p)), None);
        // Trimmed away entirely while nothing was unread.
        let mut r = round(6, 5, p);
        r.length = 0;
        assert_eq!(detect_gap("r1", p, &r), None);
    }

    #[test]
    fn a_trim_past_the_position_is_a_gap_mid_stream_and_from_0_0() {
        let p = pos(50, 5);
        assert_eq!(detect_gap("r1", p, &round(7, 9, p)), Some(Gap::Trimmed));
        // Everything new trimmed away (XTRIM MAXLEN 0).
        let mut r = round(10, 9, p);
        r.length = 0;
        r.entries.clear();
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::Trimmed));
        // A reader that joined before the stream existed.
        let zero = at_0_0();
        assert_eq!(detect_gap("r1", zero, &round(1, 4, zero)), None);
        assert_eq!(detect_gap("r1", zero, &round(3, 4, zero)), Some(Gap::Trimmed));
        // Redis 7.0 leaves max-deleted-entry-id at 0-0 on trims; the
        // ordinals alone found both.
    }

    #[test]
    fn a_hole_inside_the_batch_or_a_deletion_after_the_position_is_a_gap() {
        let p = pos(50, 5);
        let mut r = round(6, 9, p);
        r.entries.remove(1);
        r.length -= 1;
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::Trimmed));
        let mut r = round(1, 9, p);
        r.max_deleted = id(70);
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::Trimmed));
        // Deleted before the position: nothing unread lost.
        r.max_deleted = id(30);
        assert_eq!(detect_gap("r1", p, &r), None);
    }

    #[test]
    fn a_caught_up_round_that_read_fewer_entries_than_were_appended_is_a_gap() {
        let p = pos(50, 5);
        // Entry 9 deleted, and max-deleted-entry-id set back below the
        // position (XSETID ... MAXDELETEDID): the count still shows it.
        let mut r = round(1, 9, p);
        r.entries.pop();
        r.length -= 1;
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::Trimmed));
        // Left for the next round: not yet a gap.
        r.more = true;
        assert_eq!(detect_gap("r1", p, &r), None);
    }

    #[test]
    fn a_stream_that_went_back_is_a_gap() {
        let p = pos(50, 5);
        // Recreated: new ordinals start at 1 again, with later ids.
        let mut r = round(1, 2, at_0_0());
        for e in &mut r.entries {
            e.id.ms += 1000;
        }
        r.last_generated = id(1020);
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::Recreated));
        // A promoted replica lacking the newest entries.
        assert_eq!(
            detect_gap("r1", p, &round(1, 3, pos(30, 3))),
            Some(Gap::Recreated)
        );
        // Another server process.
        let mut r = round(1, 5, p);
        r.run_id = "r2".into();
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::Restarted));
        // Gone, unless nothing was ever read.
        let gone = Round {
            exists: false,
            entries: Vec::new(),
            ..round(1, 5, p)
        };
        assert_eq!(detect_gap("r1", p, &gone), Some(Gap::StreamMissing));
        let never = Round { epoch: 0, ..gone };
        assert_eq!(detect_gap("r1", at_0_0(), &never), None);
    }

    #[test]
    fn a_stream_that_came_and_went_is_a_gap_even_from_0_0() {
        let zero = at_0_0();
        // Created (epoch 1) and deleted before this reader read it.
        let gone = Round {
            exists: false,
            entries: Vec::new(),
            ..round(1, 1, zero)
        };
        assert_eq!(detect_gap("r1", zero, &gone), Some(Gap::EpochChanged));
        // Created, deleted, created again: epoch 2, entries from 1 again.
        let mut again = round(1, 2, zero);
        again.epoch = 2;
        assert_eq!(detect_gap("r1", zero, &again), Some(Gap::EpochChanged));
        // Mid-stream, any change of epoch is a gap.
        let p = pos(50, 5);
        let mut r = round(1, 9, p);
        r.epoch = 2;
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::EpochChanged));
        // The epoch key lost (evicted) while the stream stays: a gap too.
        r.epoch = 0;
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::EpochChanged));
    }

    #[test]
    fn entries_without_an_ordinal_count_as_the_next_one() {
        let p = pos(50, 5);
        let mut r = round(6, 8, p);
        r.entries[0].n = None;
        assert_eq!(detect_gap("r1", p, &r), None);
    }

    #[test]
    fn a_fence_set_lost_or_flushed_is_a_gap_even_from_0_0() {
        // FLUSHDB between two rounds of a reader at 0-0: no stream, epoch 0,
        // as before; only the token (rewritten fresh by the round) differs.
        let zero = at_0_0();
        let flushed = Round {
            exists: false,
            entries: Vec::new(),
            epoch: 0,
            token: "t2".into(),
            ..round(1, 1, zero)
        };
        assert_eq!(
            detect_gap("r1", Position { epoch: 0, ..zero }, &flushed),
            Some(Gap::FencesLost)
        );
        // The fence set deleted alone, mid-stream; or gone with no new
        // token (Redis refuses the write).
        let p = pos(50, 5);
        let mut r = round(1, 9, p);
        r.token = "t2".into();
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::FencesLost));
        r.token = String::new();
        assert_eq!(detect_gap("r1", p, &r), Some(Gap::FencesLost));
        assert!(Gap::FencesLost.redis_lost_data());
    }
}
