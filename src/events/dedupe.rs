//! Bounded memory of applied webhook event ids, so a retried or replayed
//! delivery is acknowledged without being applied twice.
//!
//! Hand-written rather than a `moka` cache: the gateway only has moka's
//! async API, and this one runs on `tokio::time::Instant`, so expiry is
//! deterministic under `tokio::time::pause()`.
//!
//! Forgetting an id early (evicted past `max_entries`) is safe: the event is
//! applied again, and invalidations are idempotent. Remembering one wrongly
//! would skip an invalidation, so an id is only recorded by [`EventDedupe::mark`]
//! after the event was applied.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Longest id recorded; longer ones are never remembered (so always applied).
/// Webhook event ids are at most 68 bytes (`evt_` + 64).
pub const MAX_DEDUPE_ID_LEN: usize = 128;

/// Applied event ids, at most `max_entries`, each for `ttl`.
#[derive(Debug)]
pub struct EventDedupe {
    /// Upper bound on remembered ids; past it the oldest is forgotten.
    /// Immutable after `new`, so outside the lock.
    max_entries: u64,
    /// How long an id is remembered (the config requires >= 24 h, the
    /// origin's retry window). Immutable after `new`.
    ttl: Duration,
    /// The mutable state, behind one `std::sync::Mutex`: every operation is
    /// a few map/queue steps with no `.await`, so a blocking lock held for
    /// microseconds is cheaper than an async one.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// id -> when it was marked, and whether as applied (`seen`) or only
    /// as judged history (`seen_as_history`). Guarded by
    /// `EventDedupe::inner`.
    marked_at: HashMap<Arc<str>, Mark>,
    /// The same ids, oldest first (marks arrive in time order, so the front
    /// is both the oldest and the first to expire). Lets eviction and
    /// expiry pop from the front in O(1) instead of scanning the map.
    /// Invariant: exactly the keys of `marked_at`, each once. Guarded by
    /// `EventDedupe::inner`.
    order: VecDeque<Arc<str>>,
}

/// One remembered id.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    /// Applied with a verdict that stands (`mark`), not only judged a
    /// replay past the retries (`mark_history`).
    settled: bool,
}

impl EventDedupe {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        EventDedupe {
            max_entries,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether `id` was marked applied less than `ttl` ago (and not
    /// evicted since).
    pub fn seen(&self, id: &str) -> bool {
        self.lookup(id).is_some_and(|m| m.settled)
    }

    /// Whether `id` was marked only as judged history ([`Self::mark_history`])
    /// less than `ttl` ago.
    pub fn seen_as_history(&self, id: &str) -> bool {
        self.lookup(id).is_some_and(|m| !m.settled)
    }

    fn lookup(&self, id: &str) -> Option<Mark> {
        let mut inner = self.lock();
        let now = Instant::now();
        self.drop_expired(&mut inner, now);
        inner.marked_at.get(id).copied()
    }

    /// Records `id` as applied. Marking an id already remembered keeps its
    /// first time: the retry window runs from the first delivery.
    /// An empty id is never recorded: it names no event in particular.
    pub fn mark(&self, id: &str) {
        self.record(id, true);
    }

    /// Records `id` as a delete judged a replay past the origin's retries
    /// (`cache::fence::settles_event`): a copy judged the same is a
    /// duplicate, one judged otherwise (a clock behind, a copy dated
    /// differently) is not, and [`Self::seen`] stays false.
    pub fn mark_history(&self, id: &str) {
        self.record(id, false);
    }

    fn record(&self, id: &str, settled: bool) {
        if self.max_entries == 0 || id.is_empty() || id.len() > MAX_DEDUPE_ID_LEN {
            return;
        }
        let mut inner = self.lock();
        let now = Instant::now();
        self.drop_expired(&mut inner, now);
        if let Some(m) = inner.marked_at.get_mut(id) {
            m.settled |= settled;
            return;
        }
        let id: Arc<str> = Arc::from(id);
        inner.marked_at.insert(id.clone(), Mark { at: now, settled });
        inner.order.push_back(id);
        while inner.order.len() as u64 > self.max_entries {
            if let Some(oldest) = inner.order.pop_front() {
                inner.marked_at.remove(&oldest);
            }
        }
    }

    /// Ids currently remembered (expired ones are dropped first).
    pub fn len(&self) -> u64 {
        let mut inner = self.lock();
        self.drop_expired(&mut inner, Instant::now());
        inner.marked_at.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pops expired ids off the front of the order queue.
    fn drop_expired(&self, inner: &mut Inner, now: Instant) {
        while let Some(front) = inner.order.front() {
            let expired = match inner.marked_at.get(front) {
                Some(m) => now.saturating_duration_since(m.at) >= self.ttl,
                None => true, // cannot happen (invariant); drop it anyway
            };
            if !expired {
                break;
            }
            if let Some(id) = inner.order.pop_front() {
                inner.marked_at.remove(&id);
            }
        }
    }

    /// The state stays consistent even if a holder panicked (every step
    /// keeps the invariant), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[tokio::test]
    async fn an_id_is_seen_after_it_is_marked() {
        let d = EventDedupe::new(100, DAY);
        assert!(!d.seen("evt_a"));
        d.mark("evt_a");
        assert!(d.seen("evt_a"));
        assert!(!d.seen("evt_b"));
        d.mark("evt_a");
        assert_eq!(d.len(), 1);
    }

    #[tokio::test]
    async fn a_history_mark_is_not_an_applied_one_until_marked_applied() {
        let d = EventDedupe::new(100, DAY);
        d.mark_history("evt_h");
        assert!(!d.seen("evt_h") && d.seen_as_history("evt_h"));
        d.mark("evt_h");
        assert!(d.seen("evt_h") && !d.seen_as_history("evt_h"));
        d.mark_history("evt_h");
        assert!(d.seen("evt_h"), "an applied mark stays applied");
        assert_eq!(d.len(), 1);
    }

    #[tokio::test]
    async fn an_empty_id_is_never_remembered() {
        let d = EventDedupe::new(100, DAY);
        d.mark("");
        assert!(!d.seen(""), "every id-less event is applied");
        assert!(d.is_empty());
    }

    #[tokio::test]
    async fn the_oldest_id_is_evicted_past_the_bound() {
        let d = EventDedupe::new(3, DAY);
        for id in ["evt_1", "evt_2", "evt_3", "evt_4"] {
            d.mark(id);
        }
        assert_eq!(d.len(), 3);
        assert!(!d.seen("evt_1"));
        assert!(d.seen("evt_2") && d.seen("evt_3") && d.seen("evt_4"));
        d.mark("evt_5");
        assert!(!d.seen("evt_2") && d.seen("evt_5"));
        assert_eq!(d.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ids_expire_after_the_ttl() {
        let d = EventDedupe::new(100, DAY);
        d.mark("evt_old");
        tokio::time::advance(Duration::from_secs(3600)).await;
        d.mark("evt_new");
        tokio::time::advance(DAY - Duration::from_secs(3601)).await;
        assert!(d.seen("evt_old"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!d.seen("evt_old"));
        assert!(d.seen("evt_new"));
        assert_eq!(d.len(), 1);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!d.seen("evt_new"));
        assert!(d.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn marking_again_keeps_the_first_time_until_it_expires() {
        let d = EventDedupe::new(100, DAY);
        d.mark("evt_a");
        tokio::time::advance(DAY / 2).await;
        d.mark("evt_a");
        tokio::time::advance(DAY / 2).await;
        assert!(!d.seen("evt_a"));
        d.mark("evt_a");
        assert!(d.seen("evt_a"));
    }

    #[test]
    fn zero_capacity_and_overlong_ids_are_never_remembered() {
        let d = EventDedupe::new(0, DAY);
        d.mark("evt_a");
        assert!(!d.seen("evt_a"));
        let d = EventDedupe::new(10, DAY);
        let long = "x".repeat(MAX_DEDUPE_ID_LEN + 1);
        d.mark(&long);
        assert!(!d.seen(&long) && d.is_empty());
    }
}
