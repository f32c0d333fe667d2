//! Origin introspection: an `lp_` key the gateway does not hold is checked
//! with the origin's `GET /v1/whoami`, and the answer is cached.
//!
//! - Keyed by the SHA-256 of the key: the cache never holds a key.
//! - 200: the principal is trusted for `positive_ttl`.
//! - 401 (or 403): the key is refused for `negative_ttl` without asking again.
//! - Unreachable (connect error, timeout, 5xx, 429, breaker open, shed, a
//!   body that is not a whoami): a cached principal keeps working until its
//!   TTL plus `grace` (the origin is then asked again at most every
//!   [`OUTAGE_RETRY`]); a key with nothing cached is `Unavailable` (503
//!   with `Retry-After`), never a pass.
//! - One whoami per key at a time (single flight); the call runs in its own
//!   task so a caller that goes away does not abandon the others.
//! - Bounded: at most `max_entries` results; origin calls go through the
//!   origin client's in-flight caps, breaker and deadline.
//! - A new call (not a cached answer, not joining a call in flight) must be
//!   admitted by [`LookupLimit`]: per client address, all clients, and
//!   in flight. That is what stops keyless clients from spending the
//!   origin's capacity with random keys. The refresh of a key the origin
//!   vouched for has in-flight slots of its own and no rate budget (there
//!   are at most as many as cached principals per TTL); the cached
//!   principal is served at once while the refresh runs (within `grace`),
//!   and the refresh's answer, a refusal included, applies from the next
//!   request on.

use super::authenticator::AuthError;
use super::keys::{parse_key, sha256};
use super::lookup_limit::{LookupLimit, LookupRefusal};
use super::scopes::{Scope, ScopeSet};
use super::settings::IntrospectionSettings;
use super::Principal;
use crate::origin::{empty_body, OriginClient};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// While the origin is unreachable, a cached principal is served without
/// asking it again for this long (and an uncached key is told to retry after it).
pub const OUTAGE_RETRY: Duration = Duration::from_secs(5);
/// The route label of whoami calls in the origin metrics.
pub const WHOAMI: &str = "/v1/whoami";
/// The in-flight bucket whoami calls share in the origin guard (an org
/// name no organization can have).
pub const INTROSPECTION_BUCKET: &str = "-introspection";
/// Reason when the origin said no.
pub const ORIGIN_REJECTED: &str = "origin_rejected";
/// Reason when the origin could not answer and nothing usable was cached.
pub const INTROSPECTION_UNAVAILABLE: &str = "introspection_unavailable";
/// Reason when a new call was not admitted (all clients, or in flight).
pub const INTROSPECTION_BUSY: &str = "introspection_busy";
/// Reason when one client address started too many new calls.
pub const INTROSPECTION_THROTTLED: &str = "introspection_throttled";

type Outcome = Result<Arc<Principal>, AuthError>;
type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Clone)]
enum Entry {
    Known {
        principal: Arc<Principal>,
        fresh_until: Instant,
        usable_until: Instant,
        /// During an outage: not before this is the origin asked again.
        next_try: Instant,
    },
    Refused {
        until: Instant,
    },
}

/// What the origin said about a key.
enum Answer {
    Principal(Arc<Principal>),
    Refused,
    Unreachable,
}

struct Inner {
    origin: OriginClient,
    /// Results by key hash. moka bounds the size; expiry is ours (tokio
    /// time, so tests run on the paused clock); moka's own TTL only
    /// reclaims memory after the longest lifetime has passed.
    cache: moka::future::Cache<[u8; 32], Entry>,
    /// whoami calls in flight by key hash. A std mutex held only to look up,
    /// insert or remove a slot, never across an await; its size is bounded
    /// by the requests in flight.
    flights: Mutex<HashMap<[u8; 32], Slot>>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    grace: Duration,
    /// A waiter gives up (503) after this: the origin deadline plus margin.
    wait: Duration,
    limit: LookupLimit,
    /// The origin's failures to answer, logged at `log.refusals_per_sec`:
    /// black-box round 83, random well-formed keys with the origin down
    /// (or the circuit open) wrote 200 warnings a second.
    failure_log: crate::log_limit::LogLimiter,
}

/// Checks `lp_` keys with the origin, cached.
#[derive(Clone)]
pub struct Introspector {
    inner: Arc<Inner>,
}

/// The whoami fields used; everything else is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Whoami {
    organization_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rate_limit_tier: Option<String>,
    #[serde(default)]
    api_key_id: Option<String>,
}

/// Removes the flight slot when the leader is done (or dies).
struct Leader {
    inner: Arc<Inner>,
    hash: [u8; 32],
    tx: watch::Sender<Option<Outcome>>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut f = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&self.hash);
    }
}

impl Introspector {
    pub fn new(
        settings: &IntrospectionSettings,
        origin: OriginClient,
        origin_timeout: Duration,
        log_per_sec: u32,
    ) -> Introspector {
        let longest = settings.positive_ttl() + settings.grace() + settings.negative_ttl();
        Introspector {
            inner: Arc::new(Inner {
                origin,
                cache: moka::future::Cache::builder()
                    .max_capacity(settings.max_entries)
                    .time_to_live(longest)
                    .build(),
                flights: Mutex::new(HashMap::new()),
                positive_ttl: settings.positive_ttl(),
                negative_ttl: settings.negative_ttl(),
                grace: settings.grace(),
                wait: origin_timeout + Duration::from_secs(1),
                limit: LookupLimit::new(settings),
                failure_log: crate::log_limit::LogLimiter::new("introspection failure", log_per_sec),
            }),
        }
    }

    /// Authenticates a presented key with the origin (cached). The key's
    /// shape and environment are checked first: a malformed key never
    /// reaches the origin. `peer` is the client's address, for the
    /// per-client bound on new calls (`None`: not bounded per client).
    pub async fn authenticate(&self, key: &str, expected_env: Option<&str>, peer: Option<IpAddr>) -> Outcome {
        let parsed = parse_key(key).ok_or(AuthError::Rejected("malformed"))?;
        if expected_env.is_some_and(|e| e != parsed.env) {
            return Err(AuthError::Rejected("env_mismatch"));
        }
        let hash = sha256(key);
        if let Some(outcome) = self.inner.cached(&hash).await {
            return outcome;
        }
        // A key the origin vouched for, past its TTL but within its grace:
        // served as it is while its refresh runs in the background; the
        // refresh is never refused by the budgets for new keys.
        let known = self.inner.usable(&hash).await;
        self.lookup(key, hash, parsed.key_id, peer, known).await
    }

    /// Joins the whoami call for this key, starting it if none is in flight.
    async fn lookup(
        &self,
        key: &str,
        hash: [u8; 32],
        key_id: &str,
        peer: Option<IpAddr>,
        known: Option<Arc<Principal>>,
    ) -> Outcome {
        // A known key is answered now; others wait, a bounded number per
        // client (`lookup_limit.rs`).
        let _waiting = match known {
            None => self.inner.limit.wait(peer).map_err(refused)?,
            Some(_) => None,
        };
        let mut rx = {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&hash) {
                Some(rx) => rx.clone(),
                None => {
                    let permit = match &known {
                        // Refreshes have slots of their own, so keyless
                        // clients flooding new keys cannot lock partners out.
                        Some(principal) => match self.inner.limit.admit_refresh() {
                            Some(p) => p,
                            None => return Ok(principal.clone()),
                        },
                        None => self.inner.limit.admit(peer).map_err(refused)?,
                    };
                    let (tx, rx) = watch::channel(None);
                    flights.insert(hash, rx.clone());
                    let leader = Leader {
                        inner: self.inner.clone(),
                        hash,
                        tx,
                    };
                    let (key, key_id) = (key.to_owned(), key_id.to_owned());
                    tokio::spawn(async move {
                        let _permit = permit;
                        // A call that finished just before this one was
                        // registered has already cached its answer.
                        if let Some(outcome) = leader.inner.cached(&hash).await {
                            leader.tx.send_replace(Some(outcome));
                            return;
                        }
                        let answer = leader.inner.ask_origin(&key, &key_id).await;
                        let outcome = leader.inner.apply(hash, answer).await;
                        leader.tx.send_replace(Some(outcome));
                    });
                    rx
                }
            }
        };
        // A known key does not wait for its refresh: the cached principal
        // answers now and the refresh's outcome (a refusal included)
        // applies from the next request on.
        if let Some(principal) = known {
            return Ok(principal);
        }
        let unavailable = AuthError::Unavailable {
            retry_after_secs: OUTAGE_RETRY.as_secs(),
            reason: INTROSPECTION_UNAVAILABLE,
        };
        let outcome = match tokio::time::timeout(self.inner.wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(unavailable)),
            // The call's task ended without an answer, or took too long.
            Ok(Err(_)) | Err(_) => Err(unavailable),
        };
        outcome
    }

    /// Waits until the whoami calls in flight now have answered and their
    /// answers are cached (refreshes run in the background; for tests).
    pub async fn settle(&self) {
        let flights: Vec<Slot> = {
            let f = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            f.values().cloned().collect()
        };
        for mut rx in flights {
            let _ = rx.wait_for(Option::is_some).await;
        }
    }

    /// Results cached now (positive and negative); for tests and metrics.
    pub async fn cached_entries(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }
}

/// A call the limits did not admit: 429 for one noisy client, 503 otherwise.
fn refused(r: LookupRefusal) -> AuthError {
    match r {
        LookupRefusal::PeerRate { retry_after_secs } => AuthError::Throttled { retry_after_secs },
        LookupRefusal::GlobalRate { retry_after_secs } => AuthError::Unavailable {
            retry_after_secs,
            reason: INTROSPECTION_BUSY,
        },
        LookupRefusal::Busy => AuthError::Unavailable {
            retry_after_secs: 1,
            reason: INTROSPECTION_BUSY,
        },
    }
}

impl Inner {
    /// The principal of a key the origin vouched for, while it may still be
    /// used (within `positive_ttl + grace` of the last good answer).
    async fn usable(&self, hash: &[u8; 32]) -> Option<Arc<Principal>> {
        match self.cache.get(hash).await? {
            Entry::Known {
                principal,
                usable_until,
                ..
            } if Instant::now() < usable_until => Some(principal),
            _ => None,
        }
    }

    /// The cached outcome, if one may be used now without asking the origin.
    async fn cached(&self, hash: &[u8; 32]) -> Option<Outcome> {
        let now = Instant::now();
        match self.cache.get(hash).await? {
            Entry::Known {
                principal,
                fresh_until,
                usable_until,
                next_try,
            } if now < fresh_until || (now < next_try && now < usable_until) => Some(Ok(principal)),
            Entry::Refused { until } if now < until => Some(Err(AuthError::Rejected(ORIGIN_REJECTED))),
            _ => None,
        }
    }

    async fn ask_origin(&self, key: &str, key_id: &str) -> Answer {
        let req = match http::Request::get(WHOAMI)
            .header("x-api-key", key)
            .body(empty_body())
        {
            Ok(r) => r,
            Err(_) => return Answer::Refused,
        };
        let reply = match self
            .origin
            .fetch_unqueued(req, WHOAMI, INTROSPECTION_BUCKET)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if self.failure_log.allow() {
                    tracing::warn!(code = e.code.as_str(), "introspection: origin unreachable");
                }
                return Answer::Unreachable;
            }
        };
        match reply.status.as_u16() {
            200 => match principal_from_whoami(&reply.body, key_id) {
                Some(p) => Answer::Principal(Arc::new(p)),
                None => {
                    if self.failure_log.allow() {
                        tracing::error!(
                            "introspection: whoami answered 200 with a body that is not a whoami"
                        );
                    }
                    Answer::Unreachable
                }
            },
            401 | 403 => Answer::Refused,
            status => {
                if self.failure_log.allow() {
                    tracing::warn!(status, "introspection: unexpected whoami status");
                }
                Answer::Unreachable
            }
        }
    }

    /// Records an answer and turns it into the outcome for every waiter.
    async fn apply(&self, hash: [u8; 32], answer: Answer) -> Outcome {
        let now = Instant::now();
        match answer {
            Answer::Principal(principal) => {
                let entry = Entry::Known {
                    principal: principal.clone(),
                    fresh_until: now + self.positive_ttl,
                    usable_until: now + self.positive_ttl + self.grace,
                    next_try: now,
                };
                self.cache.insert(hash, entry).await;
                Ok(principal)
            }
            Answer::Refused => {
                let entry = Entry::Refused {
                    until: now + self.negative_ttl,
                };
                self.cache.insert(hash, entry).await;
                Err(AuthError::Rejected(ORIGIN_REJECTED))
            }
            Answer::Unreachable => match self.cache.get(&hash).await {
                Some(Entry::Known {
                    principal,
                    fresh_until,
                    usable_until,
                    ..
                }) if now < usable_until => {
                    let entry = Entry::Known {
                        principal: principal.clone(),
                        fresh_until,
                        usable_until,
                        next_try: now + OUTAGE_RETRY,
                    };
                    self.cache.insert(hash, entry).await;
                    tracing::warn!(
                        "introspection: origin unreachable; serving a cached principal within its grace"
                    );
                    Ok(principal)
                }
                _ => Err(AuthError::Unavailable {
                    retry_after_secs: OUTAGE_RETRY.as_secs(),
                    reason: INTROSPECTION_UNAVAILABLE,
                }),
            },
        }
    }
}

/// `{organizationId, scopes[], rateLimitTier, apiKeyId}` to a principal;
/// unknown scope names are ignored. `None` when it is not a whoami body.
fn principal_from_whoami(body: &[u8], key_id: &str) -> Option<Principal> {
    let w: Whoami = serde_json::from_slice(body).ok()?;
    if w.organization_id.is_empty() {
        return None;
    }
    let known = w
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|n| *n == "*" || Scope::parse(n).is_some());
    let key_id = w
        .api_key_id
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| key_id.to_owned());
    Some(Principal {
        rate_key: super::rate_key(&[super::RATE_SOURCE_KEY, &w.organization_id, &key_id]),
        org: w.organization_id.into(),
        key_id: key_id.into(),
        scopes: ScopeSet::parse(known).unwrap_or_default(),
        tier: w
            .rate_limit_tier
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "standard".into())
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_maps_to_a_principal() {
        let body = br#"{"organizationId":"org_a","workspaceId":"w","scopes":["content:read","new:scope"],
            "rateLimitTier":"pilot","apiKeyId":"01HZDEM00000000A","creditBalance":3}"#;
        let p = principal_from_whoami(body, "X").unwrap();
        assert_eq!(
            (&*p.org, &*p.key_id, &*p.tier),
            ("org_a", "01HZDEM00000000A", "pilot")
        );
        assert_eq!(p.scopes.names(), ["content:read"]);
        let p = principal_from_whoami(br#"{"organizationId":"o"}"#, "K").unwrap();
        assert_eq!((&*p.key_id, &*p.tier), ("K", "standard"));
        assert!(principal_from_whoami(br#"{"organizationId":""}"#, "K").is_none());
        assert!(principal_from_whoami(b"<html>", "K").is_none());
    }
}
