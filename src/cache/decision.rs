//! The fence decision (promise 1, DESIGN section 4): the one place that
//! says whether data of a container may be served. Every response that
//! carries container data passes here, whatever produced it:
//!
//! - a cache hit ([`Source::Hit`]): the entry's generation and the purge
//!   epoch are still current, it is before its expiry (the earliest
//!   `expiresAt` in it, less the clock-skew margin, judged at a clock read
//!   taken after every await), and the instance is synced with its cluster.
//!   No lock: every invalidation bumps the generation under the fence lock,
//!   and the entry was judged under that lock when it was filled, so while
//!   its generation is current no tombstone or revocation has happened since.
//! - a fill's result, fresh or coalesced ([`Source::Fill`]): judged under
//!   the fence lock at the moment it is served: tombstone (404), revoked
//!   asset (404), and a container body never lists a revoked asset.
//! - stale-if-error ([`Source::Stale`]): as a hit, but within the stale
//!   window instead of the TTL; never an invalidated entry, never unsynced.
//! - a read from the origin that the cache does not answer (a query
//!   string, an alias, an unsynced cluster instance): [`ContentCache::judge_origin`],
//!   before the call and on the answer; a container body older than a
//!   change an invalidation reported ([`ContentCache::origin_is_behind`])
//!   is asked for once more after `cache.lag_retry_ms`, as a fill is.
//!
//! Callers never re-implement a part of this; they act on the [`Verdict`].

use super::entry::{self, json, CachedContainer};
use super::ContentCache;
use crate::ids::ContainerId;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// What produced the data a response would carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Hit,
    Fill,
    Stale,
}

/// What the fence allows.
#[derive(Debug)]
pub enum Verdict {
    /// Serve the entry as it is.
    Serve,
    /// Serve this container body instead of the entry's (revoked assets
    /// left out since the entry was rendered).
    ServeBody(Bytes),
    /// The container is tombstoned: 404.
    Gone,
    /// The asset id is revoked: 404.
    AssetRevoked,
    /// Not from this entry: it is no longer current (look elsewhere: fill,
    /// or answer the error that led here).
    NotCurrent,
}

/// The fence's word on an origin answer the cache does not keep.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// Pass it on (the body possibly rewritten to leave revoked assets out).
    Pass,
    Gone,
    AssetRevoked,
    /// A 2xx container body that cannot be checked: 502.
    Unreadable,
    /// An asset the standing floor does not name as current: from before
    /// the floor's change (a lagging replica), or from a later change this
    /// instance has not heard of. An asset descriptor has no date to tell
    /// which: ask the container and decide with
    /// [`ContentCache::judge_asset_by_container`].
    AssetUnproven,
}

impl ContentCache {
    /// Whether cached data may be served at all: in a cluster, only while
    /// this instance is caught up with the invalidation stream.
    pub fn may_serve_cached(&self) -> bool {
        self.sync_gate.get().is_none_or(|g| g.is_synced())
    }

    /// The purge epoch entries are served under: purge-all bumps it, and so
    /// does each step of the wall clock (an entry's `expiresAt` limit is an
    /// instant read on the wall clock before the step: promise 5).
    pub(super) fn current_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire) + self.clock.wall_steps()
    }

    /// Whether an origin answer may pass through the fence at all: in a
    /// cluster, only once the fences were read from Redis (see
    /// `SyncGate::fences_known`).
    pub fn fences_known(&self) -> bool {
        self.sync_gate.get().is_none_or(|g| g.fences_known())
    }

    /// The fence decision for data held in an entry. `asset` is the asset
    /// requested, if any.
    pub fn judge(&self, entry: &CachedContainer, source: Source, asset: Option<&str>) -> Verdict {
        // Read here, after every await of the request: freshness is judged
        // at the moment of serving.
        let now = Instant::now();
        let epoch = self.current_epoch();
        match source {
            Source::Hit => {
                if self.may_serve_cached() && entry.is_current(epoch, now) {
                    Verdict::Serve
                } else {
                    Verdict::NotCurrent
                }
            }
            Source::Stale => {
                if self.may_serve_cached() && entry.is_unrevoked(epoch) && now < entry.stale_until {
                    Verdict::Serve
                } else {
                    Verdict::NotCurrent
                }
            }
            Source::Fill => {
                if entry.is_unrevoked(epoch) {
                    // Judged under the lock at this generation when it was
                    // filled, and nothing was invalidated since.
                    return Verdict::Serve;
                }
                let st = entry.fence.lock();
                if st.is_tombstoned(now) {
                    return Verdict::Gone;
                }
                match asset {
                    Some(a) if st.is_revoked(a, now) => Verdict::AssetRevoked,
                    Some(_) => Verdict::Serve,
                    None if entry.asset_ids().any(|a| st.is_revoked(a, now)) => {
                        match entry::render(&entry.body, entry.container, |a| st.is_revoked(a, now)) {
                            Ok(r) => Verdict::ServeBody(r.body),
                            // It rendered once; it renders again. Never
                            // serve it unfiltered if it somehow does not.
                            Err(_) => Verdict::NotCurrent,
                        }
                    }
                    None => Verdict::Serve,
                }
            }
        }
    }

    /// Whether a container body the origin answered is older (`updatedAt`)
    /// than a change an invalidation reported: it comes from a lagging
    /// replica. A fill then asks once more after [`ContentCache::lag_retry`]
    /// and does not cache; a read the cache does not answer asks once more
    /// the same way. A body without `updatedAt` (an asset descriptor) cannot
    /// be told apart.
    pub fn origin_is_behind(&self, id: ContainerId, body: &[u8]) -> bool {
        let Some(fence) = self.fences.get(id) else {
            return false;
        };
        let Some(floor) = fence.lock().floor(Instant::now()).map(|f| f.at) else {
            return false;
        };
        updated_at_of(body).is_some_and(|at| at < floor)
    }

    /// A 2xx container body the origin answered for a read the cache did
    /// not serve (a query-string variant, an alias, an unsynced instance)
    /// dated after the newest fill this instance cached: the origin has
    /// moved past what the cache holds (a regenerate whose event has not
    /// arrived yet), so the cached fills stop being served (a generation
    /// bump) and the next read fills again. Nothing is revoked or
    /// tombstoned on this evidence: the origin answers for the old ids.
    pub fn note_origin_version(&self, id: ContainerId, body: &[u8]) -> bool {
        let Some(fence) = self.fences.get(id) else {
            return false;
        };
        let Some(at) = updated_at_of(body) else {
            return false;
        };
        let now = Instant::now();
        let mut st = fence.lock();
        // Known already (an invalidation, or an earlier read of this
        // version): one bump per version, so reads of it that overlap the
        // refill do not throw that refill away again and again.
        if st.floor(now).is_some_and(|f| f.at >= at) || st.read_version.is_some_and(|v| v >= at) {
            return false;
        }
        let newest_cached = st.records.back().and_then(|r| r.updated_at);
        if newest_cached.is_none_or(|cached| cached >= at) {
            return false;
        }
        fence.bump(&mut st);
        st.read_version = Some(at);
        // A floor at this version, as an invalidation reporting it would
        // set: a refill answered by a replica still behind it is asked
        // again (`cache.lag_retry_ms`), never cached. A standing floor of a
        // change that revoked assets is kept: its list of current ids is
        // what judges a lagging replica's assets, and a read names none.
        if !st.floor(now).is_some_and(|f| f.revokes_assets()) {
            st.floor = Some(super::fence::Floor {
                at,
                until: now + self.ttls.load().revoked_ttl,
                revoked_at: None,
                current: None,
            });
        }
        true
    }

    /// How long a read that got a lagging replica's answer waits before it
    /// asks once more (`cache.lag_retry_ms`; zero: it does not).
    pub fn lag_retry(&self) -> std::time::Duration {
        self.settings.lag_retry
    }

    /// The fence decision for a read answered by the origin and not kept.
    /// Call with `body: None` before asking the origin (tombstone and
    /// revoked asset are answered 404 without a call), then with every 2xx
    /// body it answered: a revoked asset or a tombstone set meanwhile is
    /// still 404, revoked assets are left out of a container body, a
    /// container body that cannot be parsed is not passed on, one older
    /// than a change that revoked assets loses the ids that change did not
    /// name as current, and an asset such a change did not name as current
    /// is unproven (an asset descriptor cannot show it is newer than the
    /// change; see [`OriginVerdict::AssetUnproven`]).
    pub fn judge_origin(
        &self,
        id: ContainerId,
        asset: Option<&str>,
        body: Option<&mut Bytes>,
    ) -> OriginVerdict {
        let Some(fence) = self.fences.get(id) else {
            // Nothing revoked here; still, an asset no webhook could revoke
            // is never served (attacker review 89: a read before any fill,
            // or on a joiner whose record held nothing, passed it).
            if let (None, Some(body)) = (asset, body) {
                cut_unrevocable(body);
            }
            return OriginVerdict::Pass;
        };
        let now = Instant::now();
        let st = fence.lock();
        if st.is_tombstoned(now) {
            return OriginVerdict::Gone;
        }
        if asset.is_some_and(|a| st.is_revoked(a, now)) {
            return OriginVerdict::AssetRevoked;
        }
        let Some(body) = body else {
            return OriginVerdict::Pass;
        };
        // An asset descriptor carries no `updatedAt`: an asset the origin
        // answered that the floor's change did not name as current is
        // unproven until the container shows a version newer than the
        // change that lists it (`judge_asset_by_container`), the rule a fill
        // applies to a body's ids. Judged only on the origin's answer (the
        // canonical route, synced, reads the container itself).
        // A change that named no id as current names none of them.
        let not_current = |a: &str| {
            st.floor(now).filter(|f| f.revokes_assets()).is_some_and(|f| {
                f.current
                    .as_ref()
                    .is_none_or(|cur| !cur.iter().any(|c| **c == *a))
            })
        };
        if asset.is_some_and(not_current) {
            return OriginVerdict::AssetUnproven;
        }
        // Only the members judged here are parsed (`entry::json`): any
        // other legal JSON passes, and a body with assets left out is the
        // origin's bytes less those asset objects.
        let text = std::str::from_utf8(body).ok();
        let names = ["updatedAt", "assets", "assetId"];
        let Some(obj) = text.and_then(|t| json::members(t, names).ok().flatten()) else {
            // An asset was checked by id above; a container body the
            // gateway cannot read might list revoked assets.
            return if asset.is_some() {
                OriginVerdict::Pass
            } else {
                OriginVerdict::Unreadable
            };
        };
        let [updated, assets, named] = obj.values;
        let updated = updated
            .and_then(json::string)
            .and_then(|t| super::time::parse_rfc3339_millis(&t));
        // A container body dated older than a change that revoked assets:
        // the ids that change did not name as current are left out below.
        let behind: Option<std::sync::Arc<[Box<str>]>> = match (st.floor(now), updated) {
            (Some(f), Some(at)) if f.revoked_at.is_some_and(|r| at < r) => Some(
                f.current
                    .clone()
                    .unwrap_or_else(|| std::sync::Arc::from(Vec::new())),
            ),
            _ => None,
        };
        if asset.is_some() {
            // A repeated `assetId` could show a client an id not judged here.
            if obj.repeated {
                return OriginVerdict::Unreadable;
            }
            let named = named.and_then(json::string);
            if named.as_deref().is_some_and(|a| st.is_revoked(a, now)) {
                return OriginVerdict::AssetRevoked;
            }
            if named.as_deref().is_some_and(not_current) {
                return OriginVerdict::AssetUnproven;
            }
            return OriginVerdict::Pass;
        }
        // Black-box round 87: a body of another shape (no top-level
        // `assets`, or assets without an `assetId`: a query parameter the
        // origin gives a meaning) was passed with revoked URLs in it. What
        // the fence cannot judge is not passed on, as a fill refuses it.
        let Some(assets) = assets else {
            return OriginVerdict::Unreadable;
        };
        // A repeated member could show a client a list not judged here.
        let (Some(text), Some(items), false) = (text, json::elements(assets), obj.repeated) else {
            return OriginVerdict::Unreadable;
        };
        if items
            .iter()
            .any(|a| repeats_asset_id(a) || asset_id_of(a).is_none())
        {
            return OriginVerdict::Unreadable;
        }
        let old = |a: &str| behind.as_ref().is_some_and(|cur| !cur.iter().any(|c| **c == *a));
        let remove: Vec<bool> = items
            .iter()
            .map(|a| {
                asset_id_of(a)
                    .is_some_and(|a| !crate::ids::revocable_asset_id(&a) || st.is_revoked(&a, now) || old(&a))
            })
            .collect();
        if remove.contains(&true) {
            let spans: Vec<_> = items.iter().map(|a| json::span_in(text, a)).collect();
            *body = Bytes::from(json::remove_elements(text, &spans, &remove).0);
        }
        OriginVerdict::Pass
    }
}

impl ContentCache {
    /// Decides an [`OriginVerdict::AssetUnproven`] asset by the origin's
    /// container body (`container`, a 2xx `GET` of it): the asset passes
    /// only if that body is dated after the standing floor's change and
    /// lists it (a version newer than the change, whose event has not
    /// arrived here yet); otherwise it is from before the change: 404. The
    /// same rule a fill applies to the ids of a body (`newer` or named
    /// current), and a tombstone or revocation set meanwhile still wins.
    pub fn judge_asset_by_container(&self, id: ContainerId, asset: &str, container: &[u8]) -> OriginVerdict {
        let Some(fence) = self.fences.get(id) else {
            return OriginVerdict::Pass;
        };
        let now = Instant::now();
        let st = fence.lock();
        if st.is_tombstoned(now) {
            return OriginVerdict::Gone;
        }
        if st.is_revoked(asset, now) {
            return OriginVerdict::AssetRevoked;
        }
        let Some(floor) = st.floor(now).filter(|f| f.revokes_assets()) else {
            return OriginVerdict::Pass;
        };
        if floor
            .current
            .as_ref()
            .is_some_and(|cur| cur.iter().any(|c| **c == *asset))
        {
            return OriginVerdict::Pass;
        }
        let obj = std::str::from_utf8(container)
            .ok()
            .and_then(|t| json::members(t, ["updatedAt", "assets"]).ok().flatten());
        // Unread, or a repeated member a client might read instead: the
        // asset is not shown to be current.
        let Some(json::Members {
            values: [updated, assets],
            repeated: false,
        }) = obj
        else {
            return OriginVerdict::AssetRevoked;
        };
        let newer = updated
            .and_then(json::string)
            .and_then(|t| super::time::parse_rfc3339_millis(&t))
            .is_some_and(|at| floor.revoked_at.is_some_and(|r| at >= r));
        let listed = assets.and_then(json::elements).is_some_and(|items| {
            !items.iter().any(|a| repeats_asset_id(a))
                && items.iter().any(|a| asset_id_of(a).as_deref() == Some(asset))
        });
        if newer && listed {
            OriginVerdict::Pass
        } else {
            OriginVerdict::AssetRevoked
        }
    }
}

/// The `assetId` of an element of a container's `assets`, when it is an
/// object with a string one.
fn asset_id_of(item: json::Raw<'_>) -> Option<std::borrow::Cow<'_, str>> {
    let [id] = json::object_members(item, ["assetId"])?.values;
    id.and_then(json::string)
}

/// Leaves out of a container body (one of any shape the gateway can read)
/// the assets whose ids are not [`crate::ids::revocable_asset_id`]s, or
/// not strings at all.
fn cut_unrevocable(body: &mut Bytes) {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let Some(items) = json::members(text, ["assets"])
        .ok()
        .flatten()
        .and_then(|m| m.values[0])
        .and_then(json::elements)
    else {
        return;
    };
    // An asset whose id is not a string can never be revoked either
    // (round 90: `"assetId": 12345` passed here).
    let remove: Vec<bool> = items
        .iter()
        .map(|a| asset_id_of(a).is_none_or(|a| !crate::ids::revocable_asset_id(&a)))
        .collect();
    if remove.contains(&true) {
        let spans: Vec<_> = items.iter().map(|a| json::span_in(text, a)).collect();
        *body = Bytes::from(json::remove_elements(text, &spans, &remove).0);
    }
}

/// Whether an element of a container's `assets` is an object that names
/// its `assetId` more than once (a client reading the first occurrence
/// would see an id other than the last, which `asset_id_of` reads).
fn repeats_asset_id(item: json::Raw<'_>) -> bool {
    json::object_members(item, ["assetId"]).is_some_and(|m| m.repeated)
}

/// A container body's `updatedAt` (unix ms), read without parsing the rest.
fn updated_at_of(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let [at] = json::members(text, ["updatedAt"]).ok()??.values;
    at.and_then(json::string)
        .and_then(|t| super::time::parse_rfc3339_millis(&t))
}
