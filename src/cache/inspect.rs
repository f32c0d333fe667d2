//! What the cache holds for one container, for the admin endpoint
//! `GET /admin/containers/:id` (docs/operations.md). Read-only: it changes
//! no entry, fence or negative entry, and takes each fence lock once, for
//! as long as it copies that fence's state.
//!
//! Entries are keyed by (organization, container), so finding every
//! organization's entry walks the whole cache: O(entries), fine for an
//! operator's request on the admin listener, never on the partner path.

use super::{ContentCache, Source, Verdict};
use crate::ids::ContainerId;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Milliseconds from `now` until `t` (0 once passed).
fn ms_until(t: Instant, now: Instant) -> u64 {
    t.saturating_duration_since(now).as_millis() as u64
}

impl ContentCache {
    /// The fence (generation, tombstone, revoked asset ids), every
    /// organization's entry and every remembered origin 404 of `id`, as
    /// JSON. Durations are relative to now, in milliseconds.
    pub fn inspect(&self, id: ContainerId) -> Value {
        let now = Instant::now();
        let fence = self.fences.get(id).map(|f| {
            let st = f.lock();
            let mut revoked: Vec<(&str, u64)> = st
                .revoked
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(a, until)| (&**a, ms_until(*until, now)))
                .collect();
            revoked.sort_unstable();
            let tombstone = st.tombstone_until.filter(|t| *t > now).map(
                |t| json!({ "expiresInMs": ms_until(t, now), "changedAtUnixMs": st.tombstone_changed_at }),
            );
            json!({
                "generation": f.generation(),
                "tombstone": tombstone,
                "revokedAssets": revoked
                    .iter()
                    .map(|(a, ms)| json!({ "assetId": a, "expiresInMs": ms }))
                    .collect::<Vec<_>>(),
            })
        });
        let key = id.as_u128();
        let mut entries: Vec<(String, Value)> = self
            .entries
            .iter()
            .filter(|(k, _)| k.1 == key)
            .map(|(_, e)| {
                let servable = matches!(self.judge(&e, Source::Hit, None), Verdict::Serve);
                let v = json!({
                    "organizationId": &*e.org,
                    "ageMs": now.saturating_duration_since(e.filled_at).as_millis() as u64,
                    "ttlLeftMs": ms_until(e.expires_at, now),
                    "staleLeftMs": ms_until(e.stale_until, now),
                    "sizeBytes": e.weight(),
                    "bodyBytes": e.body.len(),
                    "assets": e.asset_ids().count(),
                    "generation": e.generation,
                    "servable": servable,
                    // The encodings this entry holds a body for.
                    "variants": ["identity"],
                });
                (e.org.to_string(), v)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut negatives: Vec<(String, Value)> = self
            .negatives
            .for_container(key)
            .into_iter()
            .filter(|(_, n)| n.until > now)
            .map(|(org, n)| {
                let current = n.fence.generation() == n.generation && n.epoch == self.current_epoch();
                let v = json!({
                    "organizationId": &*org,
                    "status": n.error.status.as_u16(),
                    "expiresInMs": ms_until(n.until, now),
                    "current": current,
                });
                (org.to_string(), v)
            })
            .collect();
        negatives.sort_by(|a, b| a.0.cmp(&b.0));
        json!({
            "containerId": id.to_string(),
            "fence": fence,
            "entries": entries.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "negativeCache": {
                "enabled": self.negatives.enabled(),
                "entries": negatives.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            },
            "cacheEpoch": self.current_epoch(),
            "mayServeCached": self.may_serve_cached(),
        })
    }
}
