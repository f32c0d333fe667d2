//! The content cache: lookup, single-flight fill under a fence, and
//! invalidation (DESIGN sections 3 and 4).
//!
//! Entries are keyed by (org, container) and carry the fence generation and
//! purge epoch their fill started under; a hit is served only while both are
//! unchanged, so an invalidation takes effect the moment it bumps the
//! generation, whatever moka is doing. A fill checks the generation again
//! under the fence lock before it inserts, so a fill that began before an
//! invalidation never enters the cache.

pub mod entry;
pub mod fence;
pub mod flight;
pub mod time;

use crate::config::Config;
use crate::error::GatewayError;
use crate::events::{EventType, Invalidation};
use crate::ids::ContainerId;
use bytes::Bytes;
use entry::CachedContainer;
use fence::Fences;
use flight::{FlightKey, Flights};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

type Key = (Arc<str>, u128);

/// How a request was answered from the cache's point of view (metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Coalesced,
    Tombstone,
    /// A cached route the cache does not answer (a query string): proxied.
    Bypass,
    /// Served past its TTL because the origin failed (stale-if-error).
    Stale,
    /// An asset id that was revoked by an invalidation: answered 404.
    Revoked,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Tombstone => "tombstone",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Stale => "stale",
            CacheStatus::Revoked => "revoked",
        }
    }
}

/// Why a fill's result was served but not cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardReason {
    /// An invalidation arrived while the fill was in flight.
    Generation,
    /// The origin's body still carried a revoked asset id (replica lag).
    Revoked,
    /// Already past an `expiresAt` in the body.
    Expired,
}

impl DiscardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Generation => "generation",
            DiscardReason::Revoked => "revoked",
            DiscardReason::Expired => "expired",
        }
    }
}

/// Counters the cache keeps for metrics and tests.
#[derive(Default)]
pub struct CacheCounters {
    pub discarded_generation: AtomicU64,
    pub discarded_revoked: AtomicU64,
    pub discarded_expired: AtomicU64,
}

/// Tunables, from config.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    pub max_entries: u64,
    pub max_bytes: u64,
    pub ttl: Duration,
    pub fill_wait: Duration,
    pub tombstone_ttl: Duration,
    pub revoked_ttl: Duration,
    pub max_revoked_per_container: usize,
    /// How long past its TTL an entry may be served when the origin fails.
    pub stale_if_error: Duration,
}

impl CacheSettings {
    pub fn from_config(c: &Config) -> Self {
        CacheSettings {
            max_entries: c.cache.max_entries,
            max_bytes: c.cache.max_bytes,
            ttl: Duration::from_secs(c.cache.ttl_secs),
            fill_wait: Duration::from_millis(c.cache.fill_wait_timeout_ms),
            tombstone_ttl: Duration::from_secs(c.invalidation.tombstone_secs),
            revoked_ttl: Duration::from_secs(c.invalidation.revoked_ttl_secs),
            max_revoked_per_container: c.invalidation.max_revoked_per_container,
            stale_if_error: Duration::from_secs(c.cache.stale_if_error_secs),
        }
    }
}

pub struct ContentCache {
    entries: moka::future::Cache<Key, Arc<CachedContainer>, foldhash::fast::RandomState>,
    fences: Fences,
    flights: Arc<Flights>,
    /// Bumped by purge-all; entries of an older epoch are never served.
    epoch: AtomicU64,
    settings: CacheSettings,
    pub counters: CacheCounters,
    /// `fills_discarded_total{reason}`, when metrics are wired.
    fills_discarded: Option<prometheus::IntCounterVec>,
}

/// What an applied invalidation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub entries_removed: usize,
    pub revoked_asset_ids: usize,
}

impl ContentCache {
    /// `evictions` counts entries leaving the cache by cause and
    /// `fills_discarded` fills that were served but not cached, when given.
    pub fn new(
        settings: CacheSettings,
        evictions: Option<prometheus::IntCounterVec>,
        fills_discarded: Option<prometheus::IntCounterVec>,
    ) -> Arc<Self> {
        // moka bounds one quantity. Weighing each entry at least
        // max_bytes / max_entries makes the byte bound imply the count bound.
        let floor = (settings.max_bytes / settings.max_entries.max(1)).clamp(1, u32::MAX as u64) as u32;
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |_k: &Key, v: &Arc<CachedContainer>| v.weight().max(floor))
            // Kept past the TTL for stale-if-error; freshness is checked per hit.
            .time_to_live(settings.ttl + settings.stale_if_error)
            .eviction_listener(move |_k, _v, cause| {
                if let Some(c) = &evictions {
                    let cause = match cause {
                        moka::notification::RemovalCause::Expired => "expired",
                        moka::notification::RemovalCause::Explicit => "invalidated",
                        moka::notification::RemovalCause::Replaced => "replaced",
                        moka::notification::RemovalCause::Size => "size",
                    };
                    c.with_label_values(&[cause]).inc();
                }
            })
            // foldhash, not SipHash: keys come from authenticated callers,
            // foldhash is seeded per process, and hashing is on every hit.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Arc::new(ContentCache {
            entries,
            fences: Fences::with_capacity(settings.max_entries.min(1 << 24) as usize),
            flights: Arc::default(),
            epoch: AtomicU64::new(0),
            settings,
            counters: CacheCounters::default(),
            fills_discarded,
        })
    }

    /// The hit path: a current entry for (org, container) at `now` (read
    /// once per request, after authentication, and shared with the rate
    /// limiter), or `None`.
    pub async fn lookup(
        &self,
        org: &Arc<str>,
        id: ContainerId,
        now: Instant,
    ) -> Option<Arc<CachedContainer>> {
        let e = self.entries.get(&(org.clone(), id.as_u128())).await?;
        e.is_current(self.epoch.load(Ordering::Acquire), now).then_some(e)
    }

    /// Stale-if-error: an entry past its TTL but within the stale window,
    /// never one that was invalidated, purged, tombstoned or is past an
    /// `expiresAt` in it.
    pub async fn lookup_stale(&self, org: &Arc<str>, id: ContainerId) -> Option<Arc<CachedContainer>> {
        let e = self.entries.get(&(org.clone(), id.as_u128())).await?;
        (e.is_unrevoked(self.epoch.load(Ordering::Acquire)) && Instant::now() < e.stale_until).then_some(e)
    }

    /// The miss path: joins or starts the one fill for (org, container) at
    /// the current generation. `fetch` returns the origin's 200 body or the
    /// error to answer with; it runs at most once per flight, in its own task.
    pub async fn fill<F, Fut>(
        self: &Arc<Self>,
        org: &Arc<str>,
        id: ContainerId,
        fetch: F,
    ) -> (Result<Arc<CachedContainer>, GatewayError>, CacheStatus)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Bytes, GatewayError>> + Send + 'static,
    {
        let fence = self.fences.get_or_create(id);
        if fence.lock().is_tombstoned(Instant::now()) {
            return (Err(GatewayError::not_found()), CacheStatus::Tombstone);
        }
        // Read the generation before anything is fetched (the lease).
        let generation = fence.generation();
        let epoch = self.epoch.load(Ordering::Acquire);
        let key = FlightKey {
            org: org.clone(),
            container: id.as_u128(),
            generation,
            epoch,
        };
        let (rx, leader) = self.flights.join(key);
        let status = match leader {
            Some(leader) => {
                let this = self.clone();
                let org = org.clone();
                tokio::spawn(async move {
                    let result = match fetch().await {
                        Ok(body) => this.complete_fill(org, id, fence, generation, epoch, body),
                        Err(e) => Err(e),
                    };
                    if let Ok(entry) = &result {
                        if entry.expires_at > Instant::now() && this.is_cacheable(entry) {
                            this.entries
                                .insert((entry.org.clone(), id.as_u128()), entry.clone())
                                .await;
                        }
                    }
                    leader.finish(result);
                });
                CacheStatus::Miss
            }
            None => CacheStatus::Coalesced,
        };
        (flight::wait(rx, self.settings.fill_wait).await, status)
    }

    /// Whether a completed fill may be inserted (decided in `complete_fill`
    /// and recorded in the entry's generation: a discarded fill's entry is
    /// built with a generation that can never be current).
    fn is_cacheable(&self, e: &CachedContainer) -> bool {
        e.generation != u64::MAX
    }

    /// Renders the origin body and decides, under the fence lock, whether it
    /// may be cached. Waiters get the rendering either way; revoked assets
    /// are left out of it in both cases.
    fn complete_fill(
        &self,
        org: Arc<str>,
        id: ContainerId,
        fence: Arc<fence::Fence>,
        generation: u64,
        epoch: u64,
        body: Bytes,
    ) -> Result<Arc<CachedContainer>, GatewayError> {
        let now = Instant::now();
        let now_unix = time::unix_now();
        let mut st = fence.lock();
        let rendered = entry::render(&body, |a| st.is_revoked(a, now)).map_err(|e| {
            tracing::warn!(container = %id, error = %e, "origin sent a body that is not a container");
            GatewayError::upstream_error()
        })?;
        // The earliest expiresAt is a hard limit for fresh and stale serving.
        let hard_limit = rendered.earliest_expiry.map(|t| {
            if t == i64::MIN {
                now
            } else {
                time::instant_at_unix(t, now, now_unix)
            }
        });
        let fresh_until = now + self.settings.ttl;
        let stale_until = fresh_until + self.settings.stale_if_error;
        let (expires_at, stale_until) = match hard_limit {
            Some(h) => (fresh_until.min(h), stale_until.min(h)),
            None => (fresh_until, stale_until),
        };
        let discard = if fence.generation() != generation || self.epoch.load(Ordering::Acquire) != epoch {
            Some(DiscardReason::Generation)
        } else if rendered.removed_revoked {
            Some(DiscardReason::Revoked)
        } else if expires_at <= now {
            Some(DiscardReason::Expired)
        } else {
            None
        };
        let stored_generation = match discard {
            None => {
                if !st.orgs.contains(&org) {
                    st.orgs.push(org.clone());
                }
                generation
            }
            Some(reason) => {
                let c = match reason {
                    DiscardReason::Generation => &self.counters.discarded_generation,
                    DiscardReason::Revoked => &self.counters.discarded_revoked,
                    DiscardReason::Expired => &self.counters.discarded_expired,
                };
                c.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.fills_discarded {
                    m.with_label_values(&[reason.as_str()]).inc();
                }
                tracing::debug!(container = %id, reason = reason.as_str(), "fill not cached");
                u64::MAX
            }
        };
        drop(st);
        Ok(Arc::new(entry::build(
            org,
            stored_generation,
            epoch,
            fence,
            rendered,
            expires_at,
            stale_until,
        )))
    }

    /// Applies an invalidation. When this returns, no lookup or fill started
    /// afterwards can see data of the invalidated version.
    pub async fn invalidate(&self, inv: &Invalidation) -> Applied {
        let Some(id) = inv.container else {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            let n = self.entries.entry_count() as usize;
            self.entries.invalidate_all();
            return Applied {
                entries_removed: n,
                revoked_asset_ids: 0,
            };
        };
        let fence = self.fences.get_or_create(id);
        let orgs = fence.lock().orgs.clone();
        // Revoked ids: those the event names plus those of every cached
        // entry of the container right now.
        let mut revoked: Vec<Box<str>> = Vec::new();
        if inv.event_type.revokes_assets() {
            revoked.extend(inv.revoked_asset_ids.iter().map(|s| Box::from(s.as_str())));
            for org in &orgs {
                if let Some(e) = self.entries.get(&(org.clone(), id.as_u128())).await {
                    revoked.extend(e.asset_ids().map(Box::from));
                }
            }
            revoked.retain(|a| !inv.current_asset_ids.iter().any(|c| **c == **a));
        }
        let now = Instant::now();
        let taken = {
            let mut st = fence.lock();
            fence.bump(&mut st);
            let until = now + self.settings.revoked_ttl;
            // Current ids only keep this event from revoking them; they never
            // lift an earlier revocation (events may arrive out of order).
            for a in revoked.iter() {
                if st.revoked.len() >= self.settings.max_revoked_per_container && !st.revoked.contains_key(a)
                {
                    st.revoked.retain(|_, t| now < *t);
                    if st.revoked.len() >= self.settings.max_revoked_per_container {
                        // The newest revocations matter most: drop the one
                        // that would expire first.
                        tracing::warn!(container = %id, "revoked asset ids at the per-container cap");
                        let oldest = st.revoked.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
                        if let Some(k) = oldest {
                            st.revoked.remove(&k);
                        }
                    }
                }
                st.revoked.insert(a.clone(), until);
            }
            match inv.event_type {
                EventType::Deleted => st.tombstone_until = Some(now + self.settings.tombstone_ttl),
                EventType::Generated => st.tombstone_until = None,
                _ => {}
            }
            std::mem::take(&mut st.orgs)
        };
        let mut removed = 0;
        for org in taken {
            if self.entries.remove(&(org, id.as_u128())).await.is_some() {
                removed += 1;
            }
        }
        Applied {
            entries_removed: removed,
            revoked_asset_ids: revoked.len(),
        }
    }

    /// Drops fences nothing depends on any more; run periodically.
    pub fn sweep(&self) -> usize {
        self.fences.sweep(Instant::now())
    }

    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub fn fence_count(&self) -> usize {
        self.fences.len()
    }

    pub fn fills_in_flight(&self) -> usize {
        self.flights.in_flight()
    }

    /// Whether the container is tombstoned right now.
    pub fn is_tombstoned(&self, id: ContainerId) -> bool {
        self.fences
            .get(id)
            .is_some_and(|f| f.lock().is_tombstoned(Instant::now()))
    }
}
