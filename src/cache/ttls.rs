//! The lifetimes the cache gives what it stores, which a config reload may
//! change (docs/operations.md, "Live reload"). Held in an `ArcSwap` on the
//! cache: each fill, remembered 404, tombstone and revocation reads the
//! current value once, when it is stored; what is already stored keeps
//! the lifetime it was given.
//!
//! moka's own time-to-live (which only frees memory) is fixed when the
//! cache is built, from the values at start: a TTL raised above its start
//! value by a reload is served until the start value's bound; a restart
//! applies it fully.

use super::{CacheSettings, ContentCache};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheTtls {
    /// `cache.ttl_secs`: how long a fill is served fresh.
    pub ttl: Duration,
    /// `cache.stale_if_error_secs`.
    pub stale_if_error: Duration,
    /// `cache.negative_ttl_secs`: how long an origin 404 is remembered.
    pub negative_ttl: Duration,
    /// `invalidation.tombstone_secs`.
    pub tombstone_ttl: Duration,
    /// `invalidation.revoked_ttl_secs`.
    pub revoked_ttl: Duration,
}

impl CacheTtls {
    pub fn from_settings(s: &CacheSettings) -> CacheTtls {
        CacheTtls {
            ttl: s.ttl,
            stale_if_error: s.stale_if_error,
            negative_ttl: s.negative_ttl,
            tombstone_ttl: s.tombstone_ttl,
            revoked_ttl: s.revoked_ttl,
        }
    }
}

impl ContentCache {
    /// The lifetimes in force.
    pub fn ttls(&self) -> Arc<CacheTtls> {
        self.ttls.load_full()
    }

    /// Puts new lifetimes in force for everything stored from now on.
    pub fn set_ttls(&self, ttls: CacheTtls) {
        self.ttls.store(Arc::new(ttls));
    }
}
