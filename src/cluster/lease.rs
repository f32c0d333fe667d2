//! Building blocks shared by the per-minute and daily cluster limiters:
//! a bounded, sharded map of locally held leases with a per-key gate (one
//! lease in flight per key), and the "Redis is down" flag.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

const SHARDS: usize = 16;

/// One key's local state and the gate a lease for it holds.
struct Entry<S> {
    state: S,
    /// Held (async) while a lease for this key is in flight.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// One shard: key -> entry.
type Shard<S> = Mutex<HashMap<Box<str>, Entry<S>>>;

/// Locally held leases by key, at most `max_keys` (16 shards, each a `std`
/// mutex held for one lookup and update, never across an await).
pub(super) struct LeaseMap<S> {
    shards: Box<[Shard<S>]>,
    per_shard: usize,
}

impl<S: Default> LeaseMap<S> {
    pub(super) fn new(max_keys: usize) -> LeaseMap<S> {
        LeaseMap {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_keys / SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<Box<str>, Entry<S>>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        lock(&self.shards[(h.finish() as usize) % SHARDS])
    }

    /// Runs `f` on the key's state if it is held; never allocates.
    #[inline]
    pub(super) fn with<R>(&self, key: &str, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        self.shard(key).get_mut(key).map(|e| f(&mut e.state))
    }

    /// Runs `f` on the key's state, creating it (and making room) if needed.
    pub(super) fn with_inserted<R>(
        &self,
        key: &str,
        idle: impl Fn(&S) -> bool,
        f: impl FnOnce(&mut S) -> R,
    ) -> R {
        let mut map = self.shard(key);
        if !map.contains_key(key) && map.len() >= self.per_shard {
            make_room(&mut map, &idle);
        }
        let e = map.entry(Box::from(key)).or_insert_with(|| Entry {
            state: S::default(),
            gate: Arc::default(),
        });
        f(&mut e.state)
    }

    /// The key's gate (creating the key if needed).
    pub(super) fn gate(&self, key: &str, idle: impl Fn(&S) -> bool) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.shard(key);
        if !map.contains_key(key) && map.len() >= self.per_shard {
            make_room(&mut map, &idle);
        }
        map.entry(Box::from(key))
            .or_insert_with(|| Entry {
                state: S::default(),
                gate: Arc::default(),
            })
            .gate
            .clone()
    }

    /// Drops every idle key with no lease in flight; returns how many.
    pub(super) fn sweep(&self, idle: impl Fn(&S) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = lock(shard);
            let before = map.len();
            map.retain(|_, e| !(Arc::strong_count(&e.gate) == 1 && idle(&e.state)));
            removed += before - map.len();
        }
        removed
    }
}

/// Frees a place in a full shard: idle keys first, else any key with no
/// lease in flight (losing its leased tokens only under-admits).
fn make_room<S>(map: &mut HashMap<Box<str>, Entry<S>>, idle: &impl Fn(&S) -> bool) {
    map.retain(|_, e| !(Arc::strong_count(&e.gate) == 1 && idle(&e.state)));
    let victim = map
        .iter()
        .find(|(_, e)| Arc::strong_count(&e.gate) == 1)
        .map(|(k, _)| k.clone());
    if let Some(k) = victim {
        map.remove(&k);
    }
}

/// Every critical section leaves the map consistent; poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// "Redis failed a lease recently": until when, lock-free.
pub(super) struct DownFlag {
    /// Instant 0 of `until`.
    base: Instant,
    /// Milliseconds since `base` plus 1 until which Redis counts as down;
    /// 0: up.
    until: AtomicU64,
}

impl DownFlag {
    pub(super) fn new() -> DownFlag {
        DownFlag {
            base: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    /// Whether Redis counts as down at `now`. The first caller past the
    /// deadline clears it (the next lease tries Redis again).
    #[inline]
    pub(super) fn is_down(&self, now: Instant) -> bool {
        match self.until.load(Ordering::Acquire) {
            0 => false,
            ms => {
                if now < self.base + Duration::from_millis(ms - 1) {
                    return true;
                }
                let _ = self
                    .until
                    .compare_exchange(ms, 0, Ordering::AcqRel, Ordering::Relaxed);
                false
            }
        }
    }

    /// Marks Redis down for `for_`; true if it was up (log once per outage).
    pub(super) fn mark(&self, now: Instant, for_: Duration) -> bool {
        let until = now + for_;
        let ms = until.saturating_duration_since(self.base).as_millis() as u64 + 1;
        self.until.swap(ms, Ordering::AcqRel) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_down_flag_expires() {
        let f = DownFlag::new();
        let now = Instant::now();
        assert!(!f.is_down(now));
        assert!(f.mark(now, Duration::from_secs(1)));
        assert!(!f.mark(now, Duration::from_secs(1)), "already down");
        assert!(f.is_down(now + Duration::from_millis(999)));
        assert!(!f.is_down(now + Duration::from_secs(1)));
        assert!(f.mark(now, Duration::from_secs(1)), "up again after expiry");
    }

    #[test]
    fn the_map_is_bounded_and_sweeps_idle_keys() {
        let m: LeaseMap<u32> = LeaseMap::new(16); // one key per shard
        for i in 0..100 {
            m.with_inserted(&format!("k{i}"), |s| *s == 0, |s| *s = 1);
        }
        let held: usize = (0..100)
            .filter(|i| m.with(&format!("k{i}"), |_| ()).is_some())
            .count();
        assert!(held <= 16, "{held}");
        m.with_inserted("k0", |s| *s == 0, |s| *s = 0);
        assert!(m.sweep(|s| *s == 0) >= 1);
        assert_eq!(m.with("k0", |s| *s), None);
    }
}
