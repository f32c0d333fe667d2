//! The content cache: lookup, single-flight fill under a fence, and
//! invalidation (DESIGN sections 3 and 4).
//!
//! Entries are keyed by (org, container) and carry the fence generation and
//! purge epoch their fill started under. Whether any data of a container
//! may be served is decided in one place, [`decision`]; a newcomer looking
//! for promise 1 reads that file, then [`fence`] (the per-container state
//! and the fill's lease), then [`invalidate`] (which ids an event revokes).
//!
//! The fill protocol: a fill takes a lease (the generation, read under the
//! fence lock together with the tombstone) before it calls the origin, and
//! decides under the same lock, when the origin has answered, whether it may
//! be cached: only if the generation and epoch are unchanged, no tombstone
//! stands, the body carries no revoked asset, is not past an `expiresAt`
//! and is not older than a change an invalidation reported. A fill that
//! began before an invalidation therefore never enters the cache.

pub mod decision;
pub mod entry;
pub mod fence;
mod fence_export;
pub mod flight;
pub mod floor_current;
mod id_list;
mod inspect;
mod invalidate;
pub mod miss_budget;
mod negative;
pub mod representation;
pub mod time;
pub mod ttls;

use crate::config::Config;
use crate::error::GatewayError;
use crate::ids::ContainerId;
use crate::shaping::clock::UnixClock;
use bytes::Bytes;
pub use decision::{OriginVerdict, Source, Verdict};
use entry::CachedContainer;
pub use entry::OriginHead;
use fence::{Fence, Fences, Lease, MutationMark};
use flight::{FlightKey, Flights};
pub use invalidate::Applied;
use representation::{CompressSettings, Variant};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// A cached route the cache does not answer (a query string, an alias,
    /// an unsynced cluster instance): read from the origin through the fence.
    Bypass,
    /// Served past its TTL because the origin failed (stale-if-error).
    Stale,
    /// An asset id that was revoked by an invalidation: answered 404.
    Revoked,
    /// The origin's recent 404 for the container, remembered.
    Negative,
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
            CacheStatus::Negative => "negative",
        }
    }
}

/// Why a fill's result was served but not cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardReason {
    /// An invalidation (or a tombstone) arrived while the fill was in flight.
    Generation,
    /// The origin's body still carried a revoked asset id (replica lag).
    Revoked,
    /// Already past an `expiresAt` in the body.
    Expired,
    /// Older (`updatedAt`) than a change an invalidation reported.
    Lagging,
    /// Older than a change that revoked assets (regenerate, delete): not
    /// served either once the one retry is still old.
    LaggingAssets,
    /// Not dated after what was cached, within `cache.undated_hold_ms` of
    /// an invalidation that gave no change time (`fence::UndatedHold`).
    Undated,
    /// This cluster instance is not synced: nothing is cached.
    Unsynced,
}

impl DiscardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Generation => "generation",
            DiscardReason::Revoked => "revoked",
            DiscardReason::Expired => "expired",
            DiscardReason::Lagging | DiscardReason::LaggingAssets => "lagging",
            DiscardReason::Undated => "undated",
            DiscardReason::Unsynced => "unsynced",
        }
    }
}

/// Counters the cache keeps for metrics and tests.
#[derive(Default)]
pub struct CacheCounters {
    pub discarded_generation: AtomicU64,
    pub discarded_revoked: AtomicU64,
    pub discarded_expired: AtomicU64,
    pub discarded_lagging: AtomicU64,
    pub discarded_unsynced: AtomicU64,
    /// Origin 200s that were not the container asked for (502, not cached).
    pub invalid_bodies: AtomicU64,
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
    /// Entries stop this long before their earliest `expiresAt`.
    pub clock_skew: Duration,
    /// Delay before a lagging fill asks the origin once more.
    pub lag_retry: Duration,
    /// How long an undated invalidation keeps fills not shown newer than
    /// the cached version out of the cache (0: not at all).
    pub undated_hold: Duration,
    /// How long an origin 404 is remembered (0: never) and how many.
    pub negative_ttl: Duration,
    pub negative_max_entries: u64,
    /// Origin reads for misses per organization per second (0: no limit).
    pub miss_budget_per_sec: u32,
    /// Compressed variants made at fill time.
    pub compress: CompressSettings,
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
            clock_skew: Duration::from_millis(c.cache.clock_skew_ms),
            lag_retry: Duration::from_millis(c.cache.lag_retry_ms),
            undated_hold: Duration::from_millis(c.cache.undated_hold_ms),
            negative_ttl: Duration::from_secs(c.cache.negative_ttl_secs),
            negative_max_entries: c.cache.negative_max_entries,
            miss_budget_per_sec: c.origin.miss_budget_per_org_per_sec,
            compress: c.cache.compress_settings(),
        }
    }
}

/// Says whether this instance is caught up with its cluster (the cluster
/// node implements it). Without one, the cache always may serve.
pub trait SyncGate: Send + Sync {
    fn is_synced(&self) -> bool;
    /// Whether this instance holds its cluster's fences: it has read the
    /// fence records since it joined and since the last gap. Until then it
    /// cannot tell a deleted container from a live one, so even a read
    /// through the fence from the origin is refused (503).
    fn fences_known(&self) -> bool {
        true
    }
}

pub struct ContentCache {
    entries: moka::future::Cache<Key, Arc<CachedContainer>, foldhash::fast::RandomState>,
    fences: Fences,
    flights: Arc<Flights>,
    /// Bumped by purge-all; entries of an older epoch are never served
    /// (`current_epoch`).
    epoch: AtomicU64,
    settings: CacheSettings,
    /// The lifetimes given to what is stored; a config reload swaps them
    /// (see `ttls.rs`), so they are read from here, not from `settings`.
    ttls: arc_swap::ArcSwap<ttls::CacheTtls>,
    /// The wall clock `expiresAt` and `updatedAt` are read against
    /// (tests start it at a chosen date and move it with tokio's clock).
    clock: UnixClock,
    /// Set once, in cluster mode: cached data is served only while synced.
    sync_gate: OnceLock<Arc<dyn SyncGate>>,
    /// First-attempt marks of mutations sent with an `Idempotency-Key`,
    /// per (organization, container, key); bounded, see `mark_mutation`.
    idempotent_marks: std::sync::Mutex<IdempotentMarks>,
    /// Remembered origin 404s (see `negative.rs`).
    negatives: negative::Negatives,
    /// Origin reads for misses, per organization.
    miss_budget: miss_budget::MissBudget,
    pub counters: CacheCounters,
    /// `fills_discarded_total{reason}`, when metrics are wired.
    fills_discarded: Option<prometheus::IntCounterVec>,
    /// Compressed variants held by cached entries, by coding; shared with
    /// the eviction listener, which takes an entry's away when it leaves.
    variants: Arc<VariantCounts>,
}

/// Compressed variants held by cached entries (`cache_variants{encoding}`).
#[derive(Default)]
pub struct VariantCounts {
    pub gzip: AtomicI64,
    pub br: AtomicI64,
}

impl VariantCounts {
    fn add(&self, entry: &CachedContainer, sign: i64) {
        for v in entry.variants() {
            let c = match v.encoding {
                crate::accept_encoding::Encoding::Gzip => &self.gzip,
                crate::accept_encoding::Encoding::Br => &self.br,
                crate::accept_encoding::Encoding::Identity => continue,
            };
            c.fetch_add(sign, Ordering::Relaxed);
        }
    }
}

/// Bodies at least this long are compressed off the runtime's workers.
const COMPRESS_INLINE_MAX: usize = 64 * 1024;

/// What a fetch gives a fill: the origin's 200, or the error to answer.
pub type FetchResult = Result<Fetched, GatewayError>;

/// The origin's 200 to a container read.
pub struct Fetched {
    pub body: Bytes,
    /// What a reply from the entry repeats of the origin's headers.
    pub head: OriginHead,
}

impl From<Bytes> for Fetched {
    /// A body sent as `application/json`, with no other header to repeat.
    fn from(body: Bytes) -> Fetched {
        Fetched {
            body,
            head: OriginHead::default(),
        }
    }
}

type IdempotentMarks = std::collections::HashMap<(Arc<str>, u128, Box<str>), (MutationMark, Instant)>;
/// How long a first attempt's mark is kept for retries (the origin honours
/// an `Idempotency-Key` for a day).
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Most first-attempt marks kept (each holds its container's fence).
const MAX_IDEMPOTENT_MARKS: usize = 10_000;

impl ContentCache {
    /// `evictions` counts entries leaving the cache by cause and
    /// `fills_discarded` fills that were served but not cached, when given.
    pub fn new(
        settings: CacheSettings,
        evictions: Option<prometheus::IntCounterVec>,
        fills_discarded: Option<prometheus::IntCounterVec>,
    ) -> Arc<Self> {
        ContentCache::with_clock(settings, evictions, fills_discarded, UnixClock::system())
    }

    pub fn with_clock(
        settings: CacheSettings,
        evictions: Option<prometheus::IntCounterVec>,
        fills_discarded: Option<prometheus::IntCounterVec>,
        clock: UnixClock,
    ) -> Arc<Self> {
        // moka bounds one quantity. Weighing each entry at least
        // max_bytes / max_entries makes the byte bound imply the count bound.
        let floor = (settings.max_bytes / settings.max_entries.max(1)).clamp(1, u32::MAX as u64) as u32;
        let variants = Arc::new(VariantCounts::default());
        let held = variants.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |_k: &Key, v: &Arc<CachedContainer>| v.weight().max(floor))
            // Kept past the TTL for stale-if-error; freshness is checked per hit.
            .time_to_live(settings.ttl + settings.stale_if_error)
            .eviction_listener(move |_k, v: Arc<CachedContainer>, cause| {
                held.add(&v, -1);
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
        let negatives = negative::Negatives::new(settings.negative_max_entries, settings.negative_ttl);
        let miss_budget = miss_budget::MissBudget::new(settings.miss_budget_per_sec);
        Arc::new(ContentCache {
            entries,
            fences: Fences::with_capacity(settings.max_entries.min(1 << 24) as usize),
            flights: Arc::default(),
            epoch: AtomicU64::new(0),
            ttls: arc_swap::ArcSwap::from_pointee(ttls::CacheTtls::from_settings(&settings)),
            settings,
            clock,
            sync_gate: OnceLock::new(),
            idempotent_marks: std::sync::Mutex::default(),
            negatives,
            miss_budget,
            counters: CacheCounters::default(),
            fills_discarded,
            variants,
        })
    }

    /// Makes cached data conditional on `gate` (cluster mode). Set once.
    pub fn set_sync_gate(&self, gate: Arc<dyn SyncGate>) {
        let _ = self.sync_gate.set(gate);
    }

    /// The hit path: an entry for (org, container) that the fence decision
    /// allows serving as a hit right now, or `None`.
    pub async fn lookup(&self, org: &Arc<str>, id: ContainerId) -> Option<Arc<CachedContainer>> {
        let e = self.entries.get(&(org.clone(), id.as_u128())).await?;
        matches!(self.judge(&e, Source::Hit, None), Verdict::Serve).then_some(e)
    }

    /// The origin's remembered 404 for (org, container), while no
    /// invalidation or purge has happened since it was answered.
    pub fn lookup_negative(&self, org: &Arc<str>, id: ContainerId) -> Option<GatewayError> {
        if !self.negatives.enabled() {
            return None;
        }
        let key = (org.clone(), id.as_u128());
        let n = self.negatives.get(&key)?;
        let current = n.fence.generation() == n.generation
            && n.epoch == self.current_epoch()
            && Instant::now() < n.until
            && self.may_serve_cached();
        if current {
            Some(n.error)
        } else {
            self.negatives.remove(&key);
            None
        }
    }

    /// Takes one origin read for a miss from `org`'s budget; the error to
    /// answer (429 with `Retry-After`) when it is spent.
    pub fn admit_miss(&self, org: &Arc<str>) -> Result<(), GatewayError> {
        self.miss_budget.take(org).map_err(|secs| {
            GatewayError::new(
                crate::error::ErrorCode::RateLimited,
                "Too many uncached reads for this organization; retry later.",
            )
            .with_retry_after(secs)
        })
    }

    /// Stale-if-error: an entry past its TTL but within the stale window
    /// that the fence decision allows (never invalidated, purged, past an
    /// `expiresAt`, or while unsynced).
    pub async fn lookup_stale(&self, org: &Arc<str>, id: ContainerId) -> Option<Arc<CachedContainer>> {
        let e = self.entries.get(&(org.clone(), id.as_u128())).await?;
        matches!(self.judge(&e, Source::Stale, None), Verdict::Serve).then_some(e)
    }

    /// The miss path: joins or starts the one fill for (org, container) at
    /// the current generation. `fetch` returns the origin's 200 body or the
    /// error to answer with; it runs in the fill's own task, once, or twice
    /// when the first answer came from a lagging replica. The result still
    /// passes [`ContentCache::judge`] with [`Source::Fill`] before it is served.
    pub async fn fill<F, Fut>(
        self: &Arc<Self>,
        org: &Arc<str>,
        id: ContainerId,
        fetch: F,
    ) -> (Result<Arc<CachedContainer>, GatewayError>, CacheStatus)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FetchResult> + Send + 'static,
    {
        let fence = self.fences.get_or_create(id);
        // The lease: generation and tombstone read together, under the lock.
        let Some(lease) = fence.lease(Instant::now()) else {
            return (Err(GatewayError::not_found()), CacheStatus::Tombstone);
        };
        let epoch = self.current_epoch();
        let key = FlightKey {
            org: org.clone(),
            container: id.as_u128(),
            generation: lease.generation,
            epoch,
        };
        let (rx, leader) = self.flights.join(key);
        let status = match leader {
            Some(leader) => {
                let this = self.clone();
                let org = org.clone();
                tokio::spawn(async move {
                    let result = this.run_fill(org, id, fence, lease, epoch, fetch).await;
                    leader.finish(result);
                });
                CacheStatus::Miss
            }
            None => CacheStatus::Coalesced,
        };
        (flight::wait(rx, self.settings.fill_wait).await, status)
    }

    /// The leader's fill, in its own task so a caller that goes away does
    /// not abandon the waiters.
    async fn run_fill<F, Fut>(
        self: Arc<Self>,
        org: Arc<str>,
        id: ContainerId,
        fence: Arc<Fence>,
        lease: Lease,
        epoch: u64,
        fetch: F,
    ) -> Result<Arc<CachedContainer>, GatewayError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FetchResult> + Send + 'static,
    {
        let key = (org.clone(), id.as_u128());
        // The previous flight for this key may have finished (and cached)
        // between this request's lookup and its join: read that entry
        // rather than ask the origin again.
        if let Some(e) = self.entries.get(&key).await {
            if matches!(self.judge(&e, Source::Hit, None), Verdict::Serve) {
                return Ok(e);
            }
        }
        let mut retried = false;
        loop {
            let Fetched { body, head } = match fetch().await {
                Ok(fetched) => fetched,
                Err(e) => {
                    self.remember_not_found(&org, id, &fence, lease, epoch, &e);
                    return Err(e);
                }
            };
            let variants = self.compress(&body).await;
            let (entry, discard) =
                self.complete_fill(org.clone(), id, &fence, lease, epoch, body, head, variants)?;
            match discard {
                None => {
                    if Instant::now() < entry.expires_at {
                        self.variants.add(&entry, 1);
                        self.entries.insert(key, entry.clone()).await;
                    }
                    return Ok(entry);
                }
                Some(DiscardReason::Lagging | DiscardReason::LaggingAssets)
                    if !retried && !self.settings.lag_retry.is_zero() =>
                {
                    retried = true;
                    tokio::time::sleep(self.settings.lag_retry).await;
                }
                // The origin still answers a version older than a change
                // that revoked assets: the ids it lists that the change did
                // not name as current are provably old, so they are revoked
                // now, and the fence decision leaves them out when it is
                // served (not cached).
                Some(DiscardReason::LaggingAssets) => {
                    self.revoke_behind_floor(&fence, &entry);
                    return Ok(entry);
                }
                Some(_) => return Ok(entry),
            }
        }
    }

    /// The compressed variants of an origin body, made before the fence
    /// lock is taken (a large body off the runtime's workers).
    async fn compress(&self, body: &Bytes) -> Vec<Variant> {
        let s = &self.settings.compress;
        if s.encodings.is_empty()
            || body.len() < s.min_bytes
            || body.len() > representation::COMPRESS_MAX_BYTES
        {
            return Vec::new();
        }
        if body.len() < COMPRESS_INLINE_MAX {
            return representation::compress(body, s);
        }
        let (body, s) = (body.clone(), s.clone());
        tokio::task::spawn_blocking(move || representation::compress(&body, &s))
            .await
            .unwrap_or_default()
    }

    /// Compressed variants held by cached entries, by coding.
    pub fn variant_counts(&self) -> &VariantCounts {
        &self.variants
    }

    /// Renders the origin body and decides, under the fence lock, whether it
    /// may be cached; a cached one is registered with its fence (so the
    /// next invalidation knows its asset ids) under that same lock. Waiters
    /// get the rendering either way; revoked assets are left out of it.
    #[allow(clippy::too_many_arguments)]
    fn complete_fill(
        &self,
        org: Arc<str>,
        id: ContainerId,
        fence: &Arc<Fence>,
        lease: Lease,
        epoch: u64,
        body: Bytes,
        head: OriginHead,
        variants: Vec<Variant>,
    ) -> Result<(Arc<CachedContainer>, Option<DiscardReason>), GatewayError> {
        let now = Instant::now();
        let now_ms = self.clock.unix_millis_at(now);
        let mut st = fence.lock();
        let rendered = entry::render(&body, id, |a| st.is_revoked(a, now)).map_err(|e| {
            self.counters.invalid_bodies.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.fills_discarded {
                m.with_label_values(&["invalid_body"]).inc();
            }
            tracing::warn!(container = %id, error = %e, "origin answered a container read with a body that is not that container");
            GatewayError::upstream_error()
        })?;
        // The earliest expiresAt is a hard limit for fresh and stale serving.
        let skew = self.settings.clock_skew.as_millis() as u64;
        let hard_limit = rendered.earliest_expiry.map(|t| {
            if t == i64::MIN {
                now
            } else {
                time::instant_before_unix_millis(t, now, now_ms, skew)
            }
        });
        let ttls = self.ttls.load();
        let fresh_until = now + ttls.ttl;
        let stale_until = fresh_until + ttls.stale_if_error;
        let (expires_at, stale_until) = match hard_limit {
            Some(h) => (fresh_until.min(h), stale_until.min(h)),
            None => (fresh_until, stale_until),
        };
        let lagging = st.floor(now).and_then(|floor| {
            let at = rendered.updated_at;
            let older = at.is_some_and(|at| at < floor.at);
            // A body dated at or after the change that revoked assets is
            // never behind it (that change's own version lists every
            // current id, also those past the floor's bound on them).
            let since_revoking = at.zip(floor.revoked_at).is_some_and(|(at, r)| at >= r);
            // After a regenerate whose current ids are known, a body with
            // other ids is from before it (or from a later change whose
            // event has not arrived yet: not cached either way).
            let other_ids = !since_revoking
                && floor
                    .current
                    .as_ref()
                    .is_some_and(|cur| rendered.all_asset_ids.iter().any(|a| !cur.iter().any(|c| c == a)));
            let before_revoking = other_ids || floor.revoked_at.zip(at).is_some_and(|(r, at)| at < r);
            match (older || other_ids, before_revoking) {
                (false, _) => None,
                (true, true) => Some(DiscardReason::LaggingAssets),
                (true, false) => Some(DiscardReason::Lagging),
            }
        });
        // Lagging first: an answer older than a reported change is asked
        // for once more whatever else happened meanwhile. Were a newer
        // invalidation to win, the fill would be discarded without the
        // retry and its older body served to the waiters, who started
        // after that change.
        let discard = if lagging.is_some() {
            lagging
        } else if fence.generation() != lease.generation
            || st.is_tombstoned(now)
            || self.current_epoch() != epoch
        {
            Some(DiscardReason::Generation)
        } else if st.undated.is_some_and(|h| h.holds(rendered.updated_at, now)) {
            // After a change that gave no date, a body not shown newer than
            // what was cached is served, not cached (`UndatedHold`). Not
            // asked again: it cannot be shown old, and the event may have
            // come after the version the origin serves now.
            Some(DiscardReason::Undated)
        } else if rendered.removed_revoked {
            Some(DiscardReason::Revoked)
        } else if expires_at <= now {
            Some(DiscardReason::Expired)
        } else if !self.may_serve_cached() {
            Some(DiscardReason::Unsynced)
        } else {
            None
        };
        // A discarded fill's entry gets a generation that is never current.
        let generation = if discard.is_none() {
            lease.generation
        } else {
            u64::MAX
        };
        let updated_at = rendered.updated_at;
        // Variants are of the origin's bytes: none for a re-rendered body.
        let variants = if rendered.removed_revoked {
            Vec::new()
        } else {
            variants
        };
        let entry = Arc::new(entry::build(
            org.clone(),
            id,
            generation,
            epoch,
            fence.clone(),
            rendered,
            head,
            variants,
            expires_at,
            stale_until,
        ));
        match discard {
            None => st.register(org, &entry, updated_at),
            Some(reason) => {
                drop(st);
                self.count_discard(id, reason);
            }
        }
        Ok((entry, discard))
    }

    /// Revokes the ids of a lagging body that the floor's change did not
    /// name as current: a body dated older than that change, or undated
    /// (one dated at or after it is never lagging, `complete_fill`). A
    /// change that named no id as current leaves none of them current.
    fn revoke_behind_floor(&self, fence: &Arc<Fence>, entry: &CachedContainer) {
        let now = Instant::now();
        let until = now + self.ttls.load().revoked_ttl;
        let mut st = fence.lock();
        let Some(floor) = st.floor(now).filter(|f| f.revokes_assets()) else {
            return;
        };
        let current = floor.current.clone();
        let old: Vec<Box<str>> = entry
            .asset_ids()
            .filter(|a| current.as_ref().is_none_or(|cur| !cur.iter().any(|c| **c == **a)))
            .map(Box::from)
            .collect();
        for a in old {
            st.revoked.insert(a, until);
        }
    }

    /// Remembers the origin's 404 for the container, if nothing was
    /// invalidated while it was asked and no event has said lately that it
    /// exists (decided under the fence lock): a 404 right after
    /// `content.generated` is a lagging replica's, and remembering it
    /// would answer 404 for a container the origin serves.
    fn remember_not_found(
        &self,
        org: &Arc<str>,
        id: ContainerId,
        fence: &Arc<Fence>,
        lease: Lease,
        epoch: u64,
        e: &GatewayError,
    ) {
        // The origin's own 404 only: a plain 404 page (its front's, a
        // misroute) says nothing about the container.
        let origins_own = e.source != crate::error::ErrorSource::Upstream;
        if !self.negatives.enabled() || e.status != http::StatusCode::NOT_FOUND || !origins_own {
            return;
        }
        let now = Instant::now();
        let st = fence.lock();
        if fence.generation() != lease.generation
            || self.current_epoch() != epoch
            || st.is_tombstoned(now)
            || st.announced(now)
            || !self.may_serve_cached()
        {
            return;
        }
        self.negatives.insert(
            (org.clone(), id.as_u128()),
            negative::Negative {
                fence: fence.clone(),
                generation: lease.generation,
                epoch,
                until: now + self.ttls.load().negative_ttl,
                error: e.clone(),
            },
        );
        drop(st);
    }

    fn count_discard(&self, id: ContainerId, reason: DiscardReason) {
        let c = match reason {
            DiscardReason::Generation => &self.counters.discarded_generation,
            DiscardReason::Revoked => &self.counters.discarded_revoked,
            DiscardReason::Expired => &self.counters.discarded_expired,
            DiscardReason::Lagging | DiscardReason::LaggingAssets | DiscardReason::Undated => {
                &self.counters.discarded_lagging
            }
            DiscardReason::Unsynced => &self.counters.discarded_unsynced,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.fills_discarded {
            m.with_label_values(&[reason.as_str()]).inc();
        }
        tracing::debug!(container = %id, reason = reason.as_str(), "fill not cached");
    }

    /// Marks that a mutation of `id` is about to be sent to the origin; pass
    /// the mark to [`ContentCache::invalidate_after_mutation`]. With an
    /// `Idempotency-Key` (and the organization that sent it), a retry gets
    /// the first attempt's mark: what was filled after that attempt may be
    /// the state it created, so it is not provably older.
    pub fn mark_mutation(&self, id: ContainerId, idempotency: Option<(&Arc<str>, &str)>) -> MutationMark {
        let fence = self.fences.get_or_create(id);
        let Some((org, key)) = idempotency else {
            return fence.mark();
        };
        let now = Instant::now();
        let mut marks = self.idempotent_marks.lock().unwrap_or_else(|p| p.into_inner());
        let k = (org.clone(), id.as_u128(), Box::<str>::from(key));
        if let Some((mark, at)) = marks.get(&k) {
            if now.duration_since(*at) < IDEMPOTENCY_WINDOW {
                return mark.clone();
            }
        }
        if marks.len() >= MAX_IDEMPOTENT_MARKS {
            // Forgetting a first attempt only makes a later retry's mark
            // newer: it may then revoke ids its first attempt created.
            marks.retain(|_, (_, at)| now.duration_since(*at) < IDEMPOTENCY_WINDOW);
            if marks.len() >= MAX_IDEMPOTENT_MARKS {
                marks.clear();
            }
        }
        let mark = fence.mark();
        marks.insert(k, (mark.clone(), now));
        mark
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

#[cfg(test)]
mod tests;
