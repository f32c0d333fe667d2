//! The verified-token cache: a JWT whose signature and claims passed is
//! remembered, so the next request with the same token costs a SHA-256 and
//! a lookup instead of a signature check (tens of microseconds for ES256).
//!
//! Keyed by the SHA-256 of the whole token, signature included: a token
//! with the same header and claims and another signature is a different
//! key, verified from scratch. The token itself is never stored.
//!
//! An entry answers only while all of these hold, checked at every use
//! against the verifier's clock:
//! - the clock is before the token's `exp` (plus leeway), before the
//!   configured maximum age, and before the moment its issuer's fetched
//!   JWKS needs a refresh (so a withdrawn key is noticed exactly when an
//!   uncached token would notice it);
//! - the clock is not before `nbf` (minus leeway);
//! - the issuer's key set is the one the token was verified against: any
//!   change of a fetched JWKS (a `kid` added or withdrawn) bumps the
//!   issuer's generation and every entry of that issuer is verified again.

use super::Principal;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Key = [u8; 32];

/// When a verified token may be answered from memory.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Unix milliseconds: valid while the clock reads before this.
    pub until_millis: i64,
    /// Unix milliseconds: valid once the clock reads this (`nbf` - leeway).
    pub not_before_millis: i64,
}

struct Verified {
    principal: Arc<Principal>,
    validity: Validity,
    /// The issuer's key-set generation, and the value it had before the
    /// key was looked up.
    keys: Arc<AtomicU64>,
    generation: u64,
}

/// Remembered tokens; `None` inside when the cache is off.
pub struct TokenCache {
    entries: Option<moka::sync::Cache<Key, Arc<Verified>, foldhash::fast::RandomState>>,
    max_age_millis: i64,
    hits: AtomicU64,
}

/// The cache key of a token.
pub fn token_key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    pub fn new(max_entries: u64, max_age: Duration) -> TokenCache {
        TokenCache {
            entries: (max_entries > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(max_entries)
                    .build_with_hasher(foldhash::fast::RandomState::default())
            }),
            max_age_millis: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
            hits: AtomicU64::new(0),
        }
    }

    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    /// The principal of a remembered token still valid at `now_millis`.
    /// An entry that is no longer valid is dropped.
    pub fn get(&self, key: &Key, now_millis: i64) -> Option<Arc<Principal>> {
        let entries = self.entries.as_ref()?;
        let e = entries.get(key)?;
        let v = e.validity;
        if now_millis < v.until_millis
            && now_millis >= v.not_before_millis
            && e.keys.load(Ordering::Acquire) == e.generation
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(e.principal.clone());
        }
        entries.invalidate(key);
        None
    }

    /// Remembers a token verified at `now_millis` against key-set
    /// `generation` of `keys` (read before the key was looked up).
    pub fn insert(
        &self,
        key: Key,
        principal: Arc<Principal>,
        mut validity: Validity,
        now_millis: i64,
        keys: Arc<AtomicU64>,
        generation: u64,
    ) {
        let Some(entries) = &self.entries else { return };
        validity.until_millis = validity
            .until_millis
            .min(now_millis.saturating_add(self.max_age_millis));
        if validity.until_millis <= now_millis {
            return;
        }
        entries.insert(
            key,
            Arc::new(Verified {
                principal,
                validity,
                keys,
                generation,
            }),
        );
    }

    /// Answers served from memory so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Tokens remembered now (pending evictions applied first).
    pub fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scopes::ScopeSet;

    fn principal() -> Arc<Principal> {
        Arc::new(Principal {
            rate_key: "r".into(),
            org: "o".into(),
            key_id: "s".into(),
            scopes: ScopeSet::default(),
            tier: "standard".into(),
        })
    }

    #[test]
    fn an_entry_answers_only_inside_its_window_and_generation() {
        let c = TokenCache::new(10, Duration::from_secs(60));
        let keys = Arc::new(AtomicU64::new(3));
        let k = token_key("a.b.c");
        let v = Validity {
            until_millis: 10_000,
            not_before_millis: 1_000,
        };
        c.insert(k, principal(), v, 2_000, keys.clone(), 3);
        assert!(c.get(&k, 999).is_none(), "before nbf");
        c.insert(k, principal(), v, 2_000, keys.clone(), 3);
        assert!(c.get(&k, 9_999).is_some());
        assert!(c.get(&k, 10_000).is_none(), "at exp");
        assert!(c.get(&k, 9_999).is_none(), "dropped once invalid");
        c.insert(k, principal(), v, 2_000, keys.clone(), 3);
        keys.fetch_add(1, Ordering::AcqRel);
        assert!(c.get(&k, 5_000).is_none(), "key set changed");
        assert!(c.get(&token_key("a.b.d"), 5_000).is_none(), "another signature");
    }

    #[test]
    fn the_maximum_age_caps_a_long_exp() {
        let c = TokenCache::new(10, Duration::from_secs(60));
        let keys = Arc::new(AtomicU64::new(0));
        let k = token_key("x");
        let v = Validity {
            until_millis: i64::MAX,
            not_before_millis: i64::MIN,
        };
        c.insert(k, principal(), v, 0, keys, 0);
        assert!(c.get(&k, 59_999).is_some());
        assert!(c.get(&k, 60_000).is_none());
    }
}
