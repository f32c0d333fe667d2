//! Appending one invalidation: its fence part merged into its container's
//! record (read, merge, compare-and-set; see `fence_record.rs` and
//! `PUBLISH_SCRIPT`) and its stream entry, in one script. Used by
//! [`ClusterNode::publish`], the outbox and the re-publication.

use super::entry::{self, StreamId};
use super::fence_record::{self, FenceRecord};
use super::node::{ClusterNode, Pending};
use super::reader::{self, unix_millis};
use super::scripts::PUBLISH_SCRIPT;
use crate::events::Invalidation;
use crate::ids::ContainerId;
use std::sync::atomic::Ordering;

/// The error `PUBLISH_SCRIPT` answers when the fence set is at the cap.
pub(super) const FENCE_FULL: &str = "FENCEFULL";
/// The error `PUBLISH_SCRIPT` answers when the container's fence record
/// changed between the publisher's read and its write.
const FENCE_CAS: &str = "FENCECAS";
/// What `PUBLISH_SCRIPT` answers when a re-publication's record is live
/// and unchanged: nothing was written.
const COVERED: &str = "COVERED";
/// Merges tried per publication before it counts as failed (and is queued,
/// or retried by the re-publication). Publications of one container are
/// serialized within an instance ([`MergeLocks`]), so only other instances
/// publishing the same container at the same moment conflict; each retry
/// waits a random moment first, so the contenders spread out and one of
/// them wins each round.
const MAX_MERGES: u32 = 32;
/// The longest random wait before a retried merge.
const MAX_MERGE_JITTER_MS: u64 = 25;

/// Lock stripes of [`MergeLocks`]: two containers share one rarely (a
/// stripe is a few dozen bytes).
const MERGE_STRIPES: usize = 1024;
/// A publication's merges stop retrying after this many command timeouts
/// (it then fails, is queued, and its webhook answered 503): it holds its
/// container's lock meanwhile.
const MERGE_BUDGET_COMMAND_TIMEOUTS: u32 = 8;

/// One publication per container at a time within an instance. Without it,
/// k concurrent publications of one container (a batch of retried
/// webhooks, a regenerate's webhook and its write-through) share one
/// connection and conflict with each other round after round: only one of
/// them wins each round, and past [`MAX_MERGES`] the others fail (a 503 and
/// an unsynced instance, for ordinary concurrency). Striped by container id:
/// bounded, and held only for one publication's merges.
pub(super) struct MergeLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl MergeLocks {
    pub(super) fn new() -> MergeLocks {
        MergeLocks {
            stripes: (0..MERGE_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    async fn lock(&self, id: ContainerId) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        self.stripes[(h.finish() % MERGE_STRIPES as u64) as usize]
            .lock()
            .await
    }
}

impl ClusterNode {
    /// `inv` ready to append: its event id (a fresh one if it has none,
    /// marked as applied here), its date, payload and fence part.
    pub(super) fn pending(&self, inv: &Invalidation, republish: bool) -> Pending {
        let event_id = match &inv.event_id {
            Some(id) => id.clone(),
            None => self.next_event_id(),
        };
        // Applied locally by the caller: our own entry is a duplicate when
        // the reader meets it (unless its verdict was history, which an
        // earlier acceptance elsewhere may overturn: `fence::settles_event`).
        if crate::cache::fence::settles_event(inv, unix_millis()) {
            self.dedupe.mark(&event_id);
        }
        // An undated delete is dated by when it arrived; peers (and every
        // rebuild, however much later) must order it by that same date, not
        // by when they read it, or a replayed delete would look newer than
        // the re-creation that lifted it.
        let stamped;
        let inv = match entry::date_undated_delete(inv, unix_millis()) {
            Some(dated) => {
                stamped = dated;
                &stamped
            }
            None => inv,
        };
        let payload = entry::encode(inv, &event_id, &self.instance_id);
        // A lifetime, not an expiry: the script dates it by Redis's clock.
        let fenced = fence_record::has_record(inv);
        let fence_retention_ms = fenced.then(|| self.fence_retention().as_millis() as u64);
        Pending {
            event_id,
            payload,
            fence_retention_ms,
            fence: fenced.then(|| inv.clone()),
            republish,
            republish_after: false,
        }
    }

    /// Merges the fence record (if any) and appends the entry, in one
    /// [`PUBLISH_SCRIPT`]; merges again when another instance changed the
    /// container's record meanwhile (`FENCECAS`). `Ok(None)`: a
    /// re-publication the record already covers, nothing written.
    pub(super) async fn append(&self, p: &Pending) -> Result<Option<StreamId>, String> {
        // Black-box round 84: the wait for the container's lock had no
        // bound. With Redis frozen, 40 webhooks of one container queued
        // behind each other a command timeout apiece (the last answered
        // after 8 s), and containers of the same stripe with them. A wait
        // longer than the holder's own budget (its merges, and one more
        // round trip; attacker review: ordinary merge contention must not
        // unsync the instance) fails as a failed command does: queued, and
        // the webhook answered 503 so the origin retries.
        let timeout = self.settings.command_timeout();
        let lock_wait = timeout * (MERGE_BUDGET_COMMAND_TIMEOUTS + 2);
        let _serial = match p.fence.as_ref().and_then(|inv| inv.container) {
            Some(id) => Some(
                tokio::time::timeout(lock_wait, self.merge_locks.lock(id))
                    .await
                    .map_err(|_| {
                        format!(
                            "another publication of {id} held it for more than {} ms",
                            lock_wait.as_millis()
                        )
                    })?,
            ),
            None => None,
        };
        let budget_end = tokio::time::Instant::now() + timeout * MERGE_BUDGET_COMMAND_TIMEOUTS;
        let mut merges = 0;
        loop {
            let result = self.append_once(p).await;
            match &result {
                Err(e)
                    if e.contains(FENCE_CAS)
                        && merges + 1 < MAX_MERGES
                        && tokio::time::Instant::now() < budget_end =>
                {
                    merges += 1;
                    let most = (1u64 << merges.min(5)).min(MAX_MERGE_JITTER_MS);
                    let wait = rand::random_range(0..=most);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                _ => {
                    self.note_fence_full(&result, p.fence.is_some());
                    return result;
                }
            }
        }
    }

    async fn append_once(&self, p: &Pending) -> Result<Option<StreamId>, String> {
        let (mut member, mut read, mut sealed) = (String::new(), Vec::new(), String::new());
        let mut covered = false;
        if let (Some(inv), Some(id)) = (&p.fence, p.fence.as_ref().and_then(|i| i.container)) {
            member = fence_record::member(id);
            let mut get = redis::cmd("HGET");
            get.arg(&self.keys.fence_records).arg(&member);
            let current: Option<Vec<u8>> = self.query(&get).await?;
            // A record that does not verify (or of another format) is
            // replaced: only a gateway's records are ever applied.
            let mut record = current
                .as_deref()
                .and_then(|raw| self.entry_key.open_record(raw))
                .and_then(FenceRecord::decode)
                .filter(|r| r.container == member)
                .unwrap_or_else(|| FenceRecord::new(id));
            // A re-publication the record covers adds nothing: written
            // only if the record is not live any more (its member lost).
            covered = p.republish && current.is_some() && record.covers(inv);
            if !covered {
                record.merge(inv, &p.event_id);
            }
            read = current.unwrap_or_default();
            sealed = self.entry_key.seal_record(&record.encode());
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUBLISH_SCRIPT)
            .arg(4)
            .arg(&self.keys.stream)
            .arg(&self.keys.fences)
            .arg(&self.keys.epoch)
            .arg(&self.keys.fence_records)
            .arg(self.settings.stream_maxlen)
            .arg(&p.event_id)
            .arg(&*self.instance_id)
            .arg(&p.payload)
            .arg(p.fence_retention_ms.map(|t| t.to_string()).unwrap_or_default())
            .arg(reader::fresh_token())
            .arg(self.settings.fence_max_entries)
            .arg(self.entry_key.sign(p.payload.as_bytes()))
            .arg(member)
            .arg(read)
            .arg(sealed)
            .arg(if covered { "1" } else { "" });
        let id: String = self.query(&cmd).await?;
        if id == COVERED {
            return Ok(None);
        }
        StreamId::parse(&id)
            .map(Some)
            .ok_or_else(|| format!("XADD answered {id:?}"))
    }

    /// One command on the shared connection, within `command_timeout`.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.conn.get();
        match tokio::time::timeout(self.settings.command_timeout(), cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("publishing timed out".into()),
        }
    }

    /// Counts a publication refused because the fence set is full, and logs
    /// the first of a spell (the next fence record written ends it). Nothing was
    /// dropped: the event stays queued (and the node unsynced) until the
    /// set has room, as records expire or once the cap is raised.
    /// Only a fence record written ends the spell: an entry without one (a
    /// purge-all, a caption change) is accepted by a full set too.
    fn note_fence_full(&self, result: &Result<Option<StreamId>, String>, fenced: bool) {
        match result {
            Err(e) if e.contains(FENCE_FULL) => {
                self.stats.fence_full.inc();
                if !self.fence_full.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        error = %e,
                        fence_max_entries = self.settings.fence_max_entries,
                        "cluster: the fence set is full; invalidations stay unacknowledged and queued \
                         until records expire (raise cluster.fence_max_entries on every instance)"
                    );
                }
            }
            Ok(Some(_)) if fenced => {
                self.collapsed_while_full.store(false, Ordering::Release);
                if self.fence_full.swap(false, Ordering::AcqRel) {
                    tracing::info!("cluster: the fence set has room again");
                }
            }
            _ => {}
        }
    }
}
