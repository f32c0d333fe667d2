//! Joining the stream, and recovering from a gap: a *rebuild*.
//!
//! 1. One [`REBUILD_SCRIPT`] reads, atomically, where the stream ends (the
//!    position to read on from), its epoch, the fence set's token (writing
//!    one if there is none), Redis's `run_id` and time, and how many live
//!    fence records there are ("live" by Redis's clock, never this host's).
//! 2. More live records than `fence_max_entries`: the node does not join.
//!    Reading only some of them would silently drop tombstones (whichever
//!    were left out), so it stays unsynced with state `fence_overflow`, a
//!    counter, and one error log, and tries again every second (an
//!    operator raises the cap, or records expire). Publishers never exceed
//!    the cap (a full set refuses a publication, `PUBLISH_SCRIPT`), so this
//!    only happens to an instance configured with a smaller cap.
//! 3. The records are read in pages (`ZSCAN` of the fence set for the live
//!    containers, then `HMGET` of their records), each page one command's
//!    time, so a full set at the cap joins on a healthy Redis. `ZSCAN`
//!    returns every member present for the whole scan; a record published
//!    or merged into after step 1 is also an entry after the position, read
//!    next round.
//! 4. Step 1 again: if Redis's `run_id`, the epoch or the token changed
//!    during the scan (a restart, the stream or the fence set recreated),
//!    the scan may have read a Redis that lost data, so it starts over.
//!    A member still live by step 4's clock whose record was missing is a
//!    lost record, not an expired one (records are only ever removed with
//!    their member, when expired): the fence set is reset
//!    (`fence_token.rs`, [`RESET_SCRIPT`]), so every instance sees the
//!    loss and re-publishes, and the rebuild starts over.
//! 5. Flush (after a gap), apply each container's record (one per
//!    container, its fences merged in the order Redis accepted them, see
//!    `fence_record.rs`; records whose MAC does not verify are skipped and
//!    counted: a forged record could only add a fence), mark their event
//!    ids as applied (the same event met again in the stream, or replayed
//!    into it, is a duplicate), and read on from step 1's end.
//!
//! **Re-publication.** If Redis may have lost data since this instance last
//! looked (the gap says so, or `run_id`, the epoch or the token differ from
//! what the reader saw before the gap, whatever gap started the rebuild; a
//! restart while a rebuild kept failing must not be missed), the fence
//! records may be gone too: the instance re-publishes what it holds
//! (`republish.rs`: what a record already covers is not written again).
//!
//! [`REBUILD_SCRIPT`]: crate::cluster::scripts::REBUILD_SCRIPT
//! [`RESET_SCRIPT`]: crate::cluster::fence_token::RESET_SCRIPT

use super::pages::{MAX_MEMBER_BYTES, MEMBERS_PAGE_SCRIPT, RECORDS_PAGE_SCRIPT};
use super::{fresh_token, Reader};
use crate::cluster::fence_record::FenceRecord;
use crate::cluster::fence_token::{REBUILDING_SCRIPT, RESET_SCRIPT};
use crate::cluster::gap::{token_hash, Gap, Position};
use crate::cluster::node::{SyncReason, MAX_BACKOFF};
use crate::cluster::scripts::{Rebuild, MARKER_PREFIX, MAX_VALUE_BYTES, REBUILD_SCRIPT};
use crate::events::Invalidation;
use redis::Value;
use std::collections::HashMap;

/// Records asked for per `ZSCAN` page (a hint; Redis may return more).
const PAGE: usize = 256;

/// How long after a gap a rebuild keeps registering this instance as
/// rebuilding (`still_rebuilding`).
const MAX_REBUILDING: std::time::Duration = std::time::Duration::from_secs(60);

/// What the scan found.
enum Scanned {
    /// Live records (the sealed values), in no particular order, and the
    /// latest expiry among the live members whose record was missing
    /// (`None`: none missing).
    Records(Vec<Vec<u8>>, Option<f64>),
    /// More than the cap.
    OverCap(u64),
}

impl Reader {
    /// Joins the stream, or recovers from a gap; see the module docs.
    pub(super) async fn rebuild(&mut self) -> Result<(), String> {
        let gap = self.pending_gap;
        if gap.is_some() {
            self.node.unsync(SyncReason::Rebuilding);
        }
        let cap = self.node.settings.fence_max_entries;
        self.still_rebuilding().await?;
        let before = self.meta().await?;
        if !before.halves_agree {
            return self.reset_fences(&before.token).await;
        }
        if before.live > cap {
            return self.over_cap(before.live).await;
        }
        let (records, missing) = match self.scan(cap, before.now).await? {
            Scanned::Records(r, missing) => (r, missing),
            Scanned::OverCap(n) => return self.over_cap(n).await,
        };
        let after = self.meta().await?;
        if after.run_id != before.run_id || after.epoch != before.epoch || after.token != before.token {
            return Err(
                "Redis restarted, or the stream or the fence set was recreated, while the fences were read; \
                 reading again"
                    .into(),
            );
        }
        if missing.is_some_and(|expiry| expiry > after.now as f64) {
            return self.reset_fences(&after.token).await;
        }
        if !before.aof && self.warned_no_aof != before.run_id {
            self.warned_no_aof = before.run_id.clone();
            tracing::warn!(
                "cluster: Redis keeps no append-only file (appendonly no): if it restarts empty, \
                 tombstones and revocations survive only in the instances that hold them, and an \
                 instance joining while one of those cannot reach Redis does not know them \
                 (see docs/cluster.md, Redis persistence)"
            );
        }
        if self.overflowing {
            self.overflowing = false;
            tracing::info!("cluster: the fence records fit fence_max_entries again");
        }
        let stats = self.node.stats.clone();
        let mut unverified = 0usize;
        let mut invs: Vec<Invalidation> = Vec::with_capacity(records.len());
        let mut applied_events: Vec<String> = Vec::new();
        for raw in &records {
            let Some(payload) = self.node.entry_key.open_record(raw) else {
                unverified += 1;
                continue;
            };
            match FenceRecord::decode(payload).and_then(|r| Some((r.invalidations()?, r.events))) {
                Some((mut these, events)) => {
                    invs.append(&mut these);
                    applied_events.extend(events);
                }
                None => {
                    tracing::warn!("cluster: a fence record did not decode; skipped");
                }
            }
        }
        if gap.is_some() {
            (self.flush)().await;
            stats.flushes.inc();
        }
        let applied = records.len() - unverified;
        // Each record's invalidations in its own order; records of
        // different containers touch different fences.
        for inv in invs {
            (self.apply)(inv).await;
        }
        // Applied: the same event met again in the stream (its entry after
        // the position, or a replay of it) is a duplicate.
        for id in applied_events.iter().filter(|id| !id.is_empty()) {
            self.node.dedupe.mark(id);
            self.node.note_delivered(id);
        }
        if unverified > 0 {
            stats.unverified.inc_by(unverified as u64);
            tracing::warn!(
                records = unverified,
                "cluster: fence records not signed with this cluster's secret; skipped"
            );
        }
        stats.fence_rebuilds.inc();
        stats.fence_records.set(applied as i64);
        stats.lag_entries.set(0);
        let at = Position {
            id: before.last_generated,
            n: before.added,
            epoch: before.epoch,
            token: token_hash(&before.token),
        };
        tracing::info!(
            stream = %self.node.keys.stream,
            position = %at.id,
            fence_records = applied,
            after_gap = gap.map(Gap::as_str),
            "cluster: joined the invalidation stream"
        );
        // Compared with what the reader saw before the gap, not only with
        // the gap's own reason: Redis may have restarted while this rebuild
        // kept failing.
        let restarted = !self.run_id.is_empty() && self.run_id != before.run_id;
        let recreated = self.epoch.is_some_and(|e| e != before.epoch)
            || self.token.as_ref().is_some_and(|t| *t != before.token);
        // Before its first join an instance may already have accepted (and
        // published) invalidations: what it holds is not known to be in
        // this set, so it re-publishes too (nothing, if it holds nothing;
        // nothing is written for a fence the set already covers).
        let first_join = self.token.is_none();
        let lost = gap.is_some_and(Gap::redis_lost_data) || restarted || recreated || first_join;
        self.position = Some(at);
        self.pending_gap = None;
        self.gap_since = None;
        self.run_id = before.run_id;
        self.epoch = Some(before.epoch);
        self.token = Some(before.token.clone());
        // Known once the peers alive have put theirs back too (the next
        // rounds tell; `fence_token.rs`, the recovery barrier).
        self.awaiting_peers = true;
        self.node
            .awaiting
            .store(true, std::sync::atomic::Ordering::Release);
        if lost {
            // The fence records may be gone with the data: put back what
            // this instance holds (peers rebuilding after this read them,
            // peers already reading get them as entries).
            self.node.republish_fences(Some(before.token));
        } else {
            self.node.fences_in_set(&before.token);
        }
        Ok(())
    }

    /// Registers this instance as a live peer with no acknowledged token
    /// while it rebuilds ([`REBUILDING_SCRIPT`]).
    ///
    /// [`REBUILDING_SCRIPT`]: crate::cluster::fence_token::REBUILDING_SCRIPT
    ///
    /// Only after a gap (a joiner holds no fences), only while the rebuild
    /// can finish (not over the cap), and for [`MAX_REBUILDING`] at most:
    /// an instance whose rebuild cannot complete must not hold every peer's
    /// barrier shut for ever; past that its entry ages out like a cut-off
    /// instance's (docs/cluster.md).
    async fn still_rebuilding(&mut self) -> Result<(), String> {
        let registering = self.pending_gap.is_some()
            && !self.overflowing
            && self.gap_since.is_some_and(|t| t.elapsed() < MAX_REBUILDING);
        if !registering {
            return Ok(());
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REBUILDING_SCRIPT)
            .arg(1)
            .arg(&self.node.keys.members)
            .arg(&*self.node.instance_id)
            .arg(self.node.settings.max_unsynced_ms)
            .arg(&self.node.nonce);
        let timeout = self.node.settings.command_timeout();
        self.eval(cmd, "registering as rebuilding", timeout)
            .await
            .map(drop)
    }

    /// Step 1: the stream's end, epoch, token, `run_id`, live record count
    /// and Redis's time.
    async fn meta(&mut self) -> Result<Rebuild, String> {
        // A stream gone back (`XSETID`, a failover to a replica without the
        // newest entries) shows only to the instances that had read past
        // its new end; one behind it counts nothing missing, and may lack
        // an entry the others applied (a tombstone). So the token this
        // instance knew is rotated (records kept): every instance meets
        // the new one as a gap and rebuilds from the records. Once: a retry
        // finds another token already.
        let rotate = match self.pending_gap {
            Some(Gap::Recreated) => self.token.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REBUILD_SCRIPT)
            .arg(4)
            .arg(&self.node.keys.stream)
            .arg(&self.node.keys.fences)
            .arg(&self.node.keys.epoch)
            .arg(&self.node.keys.fence_records)
            .arg(fresh_token())
            .arg(rotate);
        let timeout = self.node.settings.command_timeout();
        let reply = self.eval(cmd, "reading the stream's end", timeout).await?;
        Rebuild::parse(&reply)
    }

    /// Step 3: every live record (its member scored after Redis's `now`), in
    /// pages, deduplicated (`ZSCAN` may return one twice), markers left out.
    async fn scan(&mut self, cap: u64, now: i64) -> Result<Scanned, String> {
        let now = now as f64;
        let timeout = self.node.settings.command_timeout();
        let mut live: HashMap<Vec<u8>, f64> = HashMap::new();
        let mut cursor = 0u64;
        loop {
            self.still_rebuilding().await?;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(MEMBERS_PAGE_SCRIPT)
                .arg(1)
                .arg(&self.node.keys.fences)
                .arg(cursor)
                .arg(PAGE)
                .arg(MAX_MEMBER_BYTES);
            let reply = self.eval(cmd, "reading the fence records", timeout).await?;
            let (next, page) =
                parse_page(&reply).ok_or_else(|| format!("unexpected ZSCAN answer: {reply:?}"))?;
            for (member, score) in page {
                if score > now && member.first() != Some(&MARKER_PREFIX) {
                    live.insert(member, score);
                }
            }
            if live.len() as u64 > cap {
                return Ok(Scanned::OverCap(live.len() as u64));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let members: Vec<(Vec<u8>, f64)> = live.into_iter().collect();
        let mut records = Vec::with_capacity(members.len());
        let mut missing: Option<f64> = None;
        let mut rest = members.as_slice();
        while !rest.is_empty() {
            self.still_rebuilding().await?;
            let page = &rest[..rest.len().min(PAGE)];
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RECORDS_PAGE_SCRIPT)
                .arg(1)
                .arg(&self.node.keys.fence_records)
                .arg(MAX_VALUE_BYTES);
            for (m, _) in page {
                cmd.arg(m.as_slice());
            }
            let reply = self.eval(cmd, "reading the fence records", timeout).await?;
            let Value::Array(values) = reply else {
                return Err(format!("unexpected records page: {reply:?}"));
            };
            // At least one record, at most the page: the rest of the page
            // comes in the next one.
            if values.is_empty() || values.len() > page.len() {
                return Err(format!(
                    "a records page answered {} values for {} fields",
                    values.len(),
                    page.len()
                ));
            }
            rest = &rest[values.len()..];
            for (v, (_, expiry)) in values.into_iter().zip(page) {
                match v {
                    Value::BulkString(b) => records.push(b),
                    // Pruned since the scan if it expired by then; lost if
                    // not (judged by the caller, by Redis's clock).
                    _ => missing = Some(missing.map_or(*expiry, |m| m.max(*expiry))),
                }
            }
        }
        Ok(Scanned::Records(records, missing))
    }

    /// A live member's record was missing, or the set's two keys count
    /// different numbers of records: resets the fence set (once, if
    /// no other instance did meanwhile), so every instance sees its token
    /// change and re-publishes, this one included (its token differs from
    /// the one it saw); the rebuild then starts over. See the module docs.
    async fn reset_fences(&mut self, token: &str) -> Result<(), String> {
        self.node.stats.fence_records_lost.inc();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RESET_SCRIPT)
            .arg(2)
            .arg(&self.node.keys.fences)
            .arg(&self.node.keys.fence_records)
            .arg(token)
            .arg(fresh_token());
        let timeout = self.node.settings.command_timeout();
        self.eval(cmd, "resetting the fence set", timeout).await?;
        Err(
            "a fence record or its member was missing from Redis (deleted or evicted): the fence \
             set was reset, and every instance re-publishes the fences it holds; reading again"
                .into(),
        )
    }

    /// Step 2: refuses to join on a partial fence set; see the module docs.
    async fn over_cap(&mut self, live: u64) -> Result<(), String> {
        self.node.stats.fence_overflows.inc();
        self.node.unsync(SyncReason::FenceOverflow);
        if !self.overflowing {
            self.overflowing = true;
            tracing::error!(
                fence_records = live,
                fence_max_entries = self.node.settings.fence_max_entries,
                "cluster: more live fence records in Redis than fence_max_entries; \
                 not joining on a partial set (raise cluster.fence_max_entries)"
            );
        }
        if let Some(tx) = self.first.take() {
            let _ = tx.send(());
        }
        tokio::time::sleep(MAX_BACKOFF).await;
        Ok(())
    }
}

/// (member, score) pairs of one `ZSCAN` page.
type Page = Vec<(Vec<u8>, f64)>;

/// A `ZSCAN` reply: the next cursor and its records.
fn parse_page(v: &Value) -> Option<(u64, Page)> {
    let Value::Array(a) = v else { return None };
    let [cursor, items] = a.as_slice() else {
        return None;
    };
    let cursor = match cursor {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok()?,
        Value::Int(i) => u64::try_from(*i).ok()?,
        _ => return None,
    };
    let Value::Array(items) = items else { return None };
    let mut out = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        let [Value::BulkString(member), score] = pair else {
            return None;
        };
        let score = match score {
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok()?,
            Value::Double(d) => *d,
            Value::Int(i) => *i as f64,
            _ => return None,
        };
        out.push((member.clone(), score));
    }
    Some((cursor, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_zscan_page_parses_with_its_cursor() {
        let v = Value::Array(vec![
            bulk("17"),
            Value::Array(vec![bulk("a"), bulk("1700000000000"), bulk("b"), bulk("2.5")]),
        ]);
        let (next, page) = parse_page(&v).unwrap();
        assert_eq!(next, 17);
        assert_eq!(page, vec![(b"a".to_vec(), 1.7e12), (b"b".to_vec(), 2.5)]);
        assert!(parse_page(&Value::Nil).is_none());
    }
}
