//! Re-publication: after Redis may have lost data (a gap that says so, a
//! restart, the stream or the fence set recreated; or a collapsed outbox,
//! whose events' records were never written), this instance puts back the
//! fences it holds, so a peer joining later still finds them.
//!
//! Three rules keep it from feeding on itself:
//! - **It restores, it never duplicates.** Each fence is merged into its
//!   container's one record (`fence_record.rs`); a fence the record already
//!   covers writes nothing at all (no record, no stream entry). So N
//!   instances re-publishing K fences leave K records, however often Redis
//!   restarts, and the duplicates can never crowd a lost fence out of
//!   `fence_max_entries`.
//! - **It is not the outbox.** A refused re-publication stays in this task's
//!   own list and is retried there, with a backoff up to
//!   [`MAX_REPUBLISH_BACKOFF`] (a fence set that is full stays full until a
//!   record expires or the cap is raised: it refuses without writing, and is
//!   asked again only that often). It never enters the outbox, so it never
//!   collapses it into a purge-all, which would re-publish again: the old
//!   purge-all storm. It does not unsync this instance either: the instance
//!   holds these fences itself, and its own answers are fenced by them.
//! - **One at a time.** A newer re-publication (a newer export) replaces
//!   the running one; the list is at most what this instance holds.

use super::node::{ClusterNode, Republished, MIN_BACKOFF};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

/// The longest wait between two attempts of a refused re-publication.
pub const MAX_REPUBLISH_BACKOFF: Duration = Duration::from_secs(5);

impl ClusterNode {
    /// Re-publishes this instance's live fences in a task of its own; see
    /// the module docs.
    ///
    /// `token`: the fence set's token the reader just rebuilt from (`None`:
    /// the latest it saw). Once every fence exported now is in Redis, this
    /// instance has re-published to that token (the recovery barrier,
    /// `fence_token.rs`); fences it takes in later are published as they
    /// come. The token and the generation are taken under one lock, so a
    /// re-publication started later always carries the newer token.
    pub(super) fn republish_fences(self: &Arc<Self>, token: Option<String>) {
        let invs = self.fences.get().map(|src| (src.export)()).unwrap_or_default();
        let (generation, token) = {
            let mut r = self.lock_republished();
            if let Some(t) = token {
                r.seen = t;
            }
            let generation = self.republishing.fetch_add(1, Ordering::AcqRel) + 1;
            if invs.is_empty() {
                r.running = None;
                r.to = r.seen.clone();
                return;
            }
            // Withdrawn until done: what this instance holds may not be in
            // the set now (that is why it re-publishes).
            r.running = Some(generation);
            r.to.clear();
            (generation, r.seen.clone())
        };
        let node = self.clone();
        tokio::spawn(async move {
            let mut stopped = node.stopped();
            let total = invs.len();
            let mut pending: std::collections::VecDeque<_> =
                invs.iter().map(|inv| node.pending(inv, true)).collect();
            let mut backoff = MIN_BACKOFF;
            let mut refused_logged = false;
            while let Some(p) = pending.front() {
                if node.republishing.load(Ordering::Acquire) != generation || stopped.is_stopped() {
                    return;
                }
                match node.append(p).await {
                    Ok(written) => {
                        if written.is_some() {
                            node.stats.published.with_label_values(&["ok"]).inc();
                        }
                        // Counted once in Redis, written now or found there.
                        node.stats.fences_republished.inc();
                        pending.pop_front();
                        backoff = MIN_BACKOFF;
                    }
                    Err(e) => {
                        node.stats.published.with_label_values(&["error"]).inc();
                        if !refused_logged {
                            refused_logged = true;
                            tracing::warn!(
                                error = %e,
                                left = pending.len(),
                                "cluster: re-publishing a fence failed; retrying with backoff \
                                 (a peer joining meanwhile may not find it)"
                            );
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stopped.wait() => return,
                        }
                        backoff = (backoff * 2).min(MAX_REPUBLISH_BACKOFF);
                    }
                }
            }
            {
                let mut r = node.lock_republished();
                if r.running == Some(generation) {
                    r.running = None;
                    r.to = token;
                }
            }
            tracing::info!(
                fences = total,
                "cluster: this instance's fences are in Redis again"
            );
        });
    }

    /// After a rebuild that lost nothing: every fence this instance holds
    /// is in the set with `token` (it saw no loss since it last put them
    /// there), unless a re-publication is still putting them back, which
    /// says so itself when done.
    pub(super) fn fences_in_set(&self, token: &str) {
        let mut r = self.lock_republished();
        r.seen = token.to_owned();
        if r.running.is_none() {
            r.to = token.to_owned();
        }
    }

    pub(super) fn lock_republished(&self) -> MutexGuard<'_, Republished> {
        // Plain data, consistent after every statement: a poisoned lock
        // (a panic elsewhere) is still usable.
        self.republished.lock().unwrap_or_else(|e| e.into_inner())
    }
}
