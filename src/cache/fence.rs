//! Per-container fences (DESIGN section 4): a generation counter, a
//! tombstone, and the revoked asset ids, shared by every organization's
//! entry of the container.
//!
//! The generation is an atomic so the hit path checks it without a lock.
//! The rest sits behind a per-fence mutex that only fills and
//! invalidations take. The map of fences is sharded so no global lock
//! exists on any path.

use crate::ids::ContainerId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

pub struct Fence {
    /// Bumped by every invalidation. Written under `state`'s lock (so a
    /// fill's check-then-register is atomic with respect to it), read
    /// without a lock on the hit path.
    generation: AtomicU64,
    state: Mutex<FenceState>,
}

#[derive(Default)]
pub struct FenceState {
    /// Until then the container answers 404 without an origin call.
    pub tombstone_until: Option<Instant>,
    /// Revoked asset id -> until when it stays revoked.
    pub revoked: HashMap<Box<str>, Instant>,
    /// Organizations that may hold an entry of this container, so an
    /// invalidation can remove each one's entry directly.
    pub orgs: Vec<Arc<str>>,
}

impl Fence {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> MutexGuard<'_, FenceState> {
        // A panic while holding the lock cannot leave the state half-valid
        // in a way that serves revoked data (generation is separate), so
        // recover rather than poison every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumps the generation. Call with the state lock held.
    pub fn bump(&self, _held: &mut FenceState) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

impl FenceState {
    pub fn is_tombstoned(&self, now: Instant) -> bool {
        self.tombstone_until.is_some_and(|t| now < t)
    }

    pub fn is_revoked(&self, asset_id: &str, now: Instant) -> bool {
        self.revoked.get(asset_id).is_some_and(|t| now < *t)
    }

    /// Whether the fence carries no time-limited state any more.
    fn is_idle(&self, now: Instant) -> bool {
        !self.is_tombstoned(now) && self.revoked.values().all(|t| now >= *t)
    }
}

const SHARDS: usize = 64;

/// All fences, sharded by container id.
pub struct Fences {
    shards: Box<[Mutex<HashMap<u128, Arc<Fence>>>]>,
}

impl Default for Fences {
    fn default() -> Self {
        Fences {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Fences {
    fn shard(&self, id: ContainerId) -> MutexGuard<'_, HashMap<u128, Arc<Fence>>> {
        let v = id.as_u128();
        let i = ((v ^ (v >> 64)) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: ContainerId) -> Option<Arc<Fence>> {
        self.shard(id).get(&id.as_u128()).cloned()
    }

    pub fn get_or_create(&self, id: ContainerId) -> Arc<Fence> {
        self.shard(id)
            .entry(id.as_u128())
            .or_insert_with(|| {
                Arc::new(Fence {
                    generation: AtomicU64::new(0),
                    state: Mutex::new(FenceState::default()),
                })
            })
            .clone()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every fence (purge-all bumps them all).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Fence>)) {
        for s in self.shards.iter() {
            for fence in s.lock().unwrap_or_else(|p| p.into_inner()).values() {
                f(fence);
            }
        }
    }

    /// Drops fences nothing depends on: no entry and no in-flight fill holds
    /// them (the map's reference is the only one), and their tombstone and
    /// revocations have expired. Expired revocations are pruned from the
    /// rest. A fence still referenced is never dropped, so a generation an
    /// entry or fill depends on is never forgotten.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut dropped = 0;
        for s in self.shards.iter() {
            let mut map = s.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, fence| {
                let mut st = fence.lock();
                st.revoked.retain(|_, until| now < *until);
                if st.tombstone_until.is_some_and(|t| now >= t) {
                    st.tombstone_until = None;
                }
                let keep = Arc::strong_count(fence) > 1 || !st.is_idle(now);
                if !keep {
                    dropped += 1;
                }
                keep
            });
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u128) -> ContainerId {
        ContainerId::from_u128(n)
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_keeps_referenced_and_time_limited_fences() {
        let fences = Fences::default();
        let held = fences.get_or_create(id(1));
        let tomb = fences.get_or_create(id(2));
        tomb.lock().tombstone_until = Some(Instant::now() + Duration::from_secs(10));
        drop(tomb);
        fences.get_or_create(id(3));
        assert_eq!(
            fences.sweep(Instant::now()),
            1,
            "only the idle, unreferenced fence goes"
        );
        assert!(fences.get(id(1)).is_some() && fences.get(id(2)).is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(fences.sweep(Instant::now()), 1);
        assert!(fences.get(id(2)).is_none());
        drop(held);
        assert_eq!(fences.sweep(Instant::now()), 1);
        assert!(fences.is_empty());
    }

    #[test]
    fn bump_is_seen_without_the_lock() {
        let fences = Fences::default();
        let f = fences.get_or_create(id(9));
        let g0 = f.generation();
        let mut st = f.lock();
        let g1 = f.bump(&mut st);
        drop(st);
        assert_eq!(g1, g0 + 1);
        assert_eq!(f.generation(), g1);
    }
}
