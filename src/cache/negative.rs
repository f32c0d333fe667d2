//! Negative caching: the origin's 404 for a container, kept per
//! (organization, container) for `cache.negative_ttl_secs`, so a partner's
//! bug or a scraper asking for one unknown id again and again costs the
//! origin one request per TTL.
//!
//! A negative entry carries the generation and purge epoch its fill leased,
//! like a positive one, and is only believed while both are current: any
//! invalidation of the container (a `content.generated` for a new one
//! included) bumps the generation, so a new container is never hidden.

use super::fence::Fence;
use crate::error::GatewayError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) type Key = (Arc<str>, u128);

#[derive(Clone)]
pub(super) struct Negative {
    /// Held so the fence (and its generation) outlives the entry: a fence
    /// swept and made anew would start its generation over.
    pub fence: Arc<Fence>,
    pub generation: u64,
    pub epoch: u64,
    pub until: Instant,
    /// The origin's error, answered again with this request's id.
    pub error: GatewayError,
}

/// Bounded in count (moka evicts past `max_entries`); lifetime is checked
/// per lookup on tokio's clock, and moka's own TTL only frees memory.
pub(super) struct Negatives {
    map: moka::sync::Cache<Key, Negative, foldhash::fast::RandomState>,
    pub ttl: Duration,
}

impl Negatives {
    pub fn new(max_entries: u64, ttl: Duration) -> Negatives {
        Negatives {
            map: moka::sync::Cache::builder()
                .max_capacity(max_entries.max(1))
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build_with_hasher(foldhash::fast::RandomState::default()),
            ttl,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn get(&self, key: &Key) -> Option<Negative> {
        self.map.get(key)
    }

    /// Every organization's remembered 404 of one container (walks the
    /// whole map: for the admin inspect endpoint only).
    pub fn for_container(&self, container: u128) -> Vec<(Arc<str>, Negative)> {
        self.map
            .iter()
            .filter(|(k, _)| k.1 == container)
            .map(|(k, n)| (k.0.clone(), n))
            .collect()
    }

    pub fn insert(&self, key: Key, n: Negative) {
        self.map.insert(key, n);
    }

    pub fn remove(&self, key: &Key) {
        self.map.invalidate(key);
    }

    pub fn clear(&self) {
        self.map.invalidate_all();
    }
}
