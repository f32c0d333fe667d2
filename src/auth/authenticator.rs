//! The one thing the service asks: who is calling? Combines the keys file,
//! JWT issuers and origin introspection.
//!
//! The credential comes from `X-Api-Key` or `Authorization: Bearer`
//! (`X-Api-Key` wins). A credential that does not start with `lp_` and
//! contains a `.` is a JWT (three segments, else `jwt_malformed`); anything
//! else is an API key, checked where `auth.source` says:
//!
//! - `file`: the keys file only. This path allocates nothing and awaits
//!   nothing that is not immediately ready.
//! - `origin`: the origin's `GET /v1/whoami`, cached ([`super::introspect`]).
//! - `both`: the keys file; a well-formed `lp_` key whose key id the file
//!   does not hold goes to the origin. A key the file holds is never sent
//!   to the origin (a wrong secret is refused here).
//!
//! Every refusal is `AuthError::Rejected(reason)` and becomes the same 401
//! body; the reason only goes to the log and `auth_failures_total{reason}`.
//! `AuthError::Unavailable` (JWKS or origin unreachable, nothing usable
//! cached) becomes 503 with `Retry-After`.

use super::introspect::Introspector;
use super::jwt::JwtVerifier;
use super::keys::KeyRejection;
use super::reload::ReloadReport;
use super::{presented_credential, KeyStore, Principal};
use crate::config::Config;
use crate::error::{ErrorCode, ErrorSource, GatewayError};
use crate::origin::OriginClient;
use crate::shaping::clock::UnixClock;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// Why a request was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Refused: 401 `UNAUTHENTICATED`, the same body whatever the reason.
    /// The reason is a fixed label (`missing`, `malformed`, `unknown_key`,
    /// `wrong_secret`, `env_mismatch`, `origin_rejected`, `jwt_*`).
    Rejected(&'static str),
    /// The credential could not be checked now (JWKS or origin down and
    /// nothing usable cached): 503 with `Retry-After`. Never a pass.
    Unavailable {
        retry_after_secs: u64,
        reason: &'static str,
    },
    /// This client address started too many origin introspections (new
    /// keys): 429 `RATE_LIMITED` with `Retry-After`.
    Throttled { retry_after_secs: u64 },
}

impl AuthError {
    /// The metric/log label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Rejected(r) => r,
            AuthError::Unavailable { reason, .. } => reason,
            AuthError::Throttled { .. } => super::introspect::INTROSPECTION_THROTTLED,
        }
    }
}

impl From<KeyRejection> for AuthError {
    fn from(r: KeyRejection) -> AuthError {
        AuthError::Rejected(r.as_str())
    }
}

impl From<AuthError> for GatewayError {
    /// `Rejected` -> the one 401 body; `Unavailable` -> 503 `OVERLOADED`
    /// with `Retry-After`, classified as an upstream problem.
    fn from(e: AuthError) -> GatewayError {
        match e {
            AuthError::Rejected(_) => GatewayError::unauthenticated(),
            AuthError::Unavailable { retry_after_secs, .. } => {
                let mut g = GatewayError::new(
                    ErrorCode::Overloaded,
                    "The gateway cannot check credentials right now; retry later.",
                )
                .with_retry_after(retry_after_secs.max(1));
                g.source = ErrorSource::Upstream;
                g
            }
            AuthError::Throttled { retry_after_secs } => GatewayError::new(
                ErrorCode::RateLimited,
                "Too many requests with credentials the gateway does not know yet from this address; retry later.",
            )
            .with_retry_after(retry_after_secs.max(1)),
        }
    }
}

/// Where API keys are checked (`auth.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Origin,
    Both,
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, String> {
        match s {
            "file" => Ok(Source::File),
            "origin" => Ok(Source::Origin),
            "both" => Ok(Source::Both),
            _ => Err("auth.source: must be \"file\", \"origin\" or \"both\"".into()),
        }
    }
}

/// Authenticates requests. Shared (`Arc`) by the service and the reloader.
pub struct Authenticator {
    /// The keys file. Replaced whole by `replace_keys` (reload); a request
    /// holds the read lock only while it checks one key (a hash and a
    /// compare, no await), so a reload waits at most that long.
    keys: RwLock<Arc<KeyStore>>,
    env: Option<Box<str>>,
    source: Source,
    /// `None` when no issuer is configured: every JWT is refused. Swapped
    /// whole by a config reload ([`Authenticator::replace_jwt`]); a JWT
    /// request reads it once.
    jwt: arc_swap::ArcSwapOption<JwtVerifier>,
    /// The wall clock JWT `exp`/`nbf` are checked against (kept for
    /// verifiers built by a reload).
    clock: UnixClock,
    /// `Some` when `source` is `origin` or `both`.
    introspector: Option<Introspector>,
    /// Outcomes of keys-file reloads (written by `reload`), for tests and
    /// operators.
    reloads: watch::Sender<ReloadReport>,
    /// JWKS refreshers; aborted when the authenticator is dropped.
    background: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The config's tier names in force: a reloaded keys file may name only
    /// these, and a config reload may not remove one a key in force uses.
    /// Held by either reload across its check and its swap, so the two
    /// cannot pass each other (a key left on a tier that no longer exists).
    tiers: Mutex<std::collections::BTreeSet<String>>,
    /// The keys file's content in force (or last refused), by digest. Held
    /// by a keys-file reload from its read to its swap (the watcher's, a
    /// config reload's), so that neither puts an older read in force after
    /// a newer one (attacker review: a removed key could come back).
    keys_file_seen: tokio::sync::Mutex<Option<[u8; 32]>>,
    /// Whether a reloaded keys file may hold the published demo keys
    /// (`--allow-demo-keys`, as `serve` started); refused otherwise.
    demo_keys_allowed: std::sync::atomic::AtomicBool,
}

impl Authenticator {
    /// Builds the authenticator from a validated config. `origin` is needed
    /// when `auth.source` is `origin` or `both`.
    pub fn new(
        cfg: &Config,
        keys: Arc<KeyStore>,
        origin: Option<OriginClient>,
    ) -> Result<Authenticator, String> {
        Authenticator::with_clock(cfg, keys, origin, UnixClock::system())
    }

    /// As `new`, with the wall clock JWT `exp`/`nbf` are checked against
    /// (tests start it at a chosen time and move it with the paused clock).
    pub fn with_clock(
        cfg: &Config,
        keys: Arc<KeyStore>,
        origin: Option<OriginClient>,
        clock: UnixClock,
    ) -> Result<Authenticator, String> {
        let a = &cfg.auth;
        let source = Source::parse(&a.source)?;
        a.introspection.validate()?;
        let jwt = JwtVerifier::new(&a.jwt, &cfg.base_dir, clock)?;
        let introspector = match (source, origin) {
            (Source::File, _) => None,
            (_, Some(origin)) => Some(Introspector::new(
                &a.introspection,
                origin,
                cfg.origin_timeout(),
                cfg.log.refusals_per_sec,
            )),
            (_, None) => {
                return Err(format!(
                    "auth.source: {:?} needs the origin client for introspection",
                    a.source
                ))
            }
        };
        Ok(Authenticator {
            keys: RwLock::new(keys),
            env: a.env.as_deref().map(Into::into),
            source,
            jwt: arc_swap::ArcSwapOption::new((!jwt.is_empty()).then(|| Arc::new(jwt))),
            clock,
            introspector,
            reloads: watch::Sender::new(ReloadReport::default()),
            background: Mutex::new(Vec::new()),
            tiers: Mutex::new(cfg.shaping.effective_tiers().into_keys().collect()),
            keys_file_seen: tokio::sync::Mutex::new(None),
            demo_keys_allowed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Lets a keys-file reload put the published demo keys in force (as
    /// `serve --allow-demo-keys` lets the start); refused by default.
    pub fn allow_demo_keys(&self, allowed: bool) {
        self.demo_keys_allowed
            .store(allowed, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn demo_keys_allowed(&self) -> bool {
        self.demo_keys_allowed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The keys file's content in force, by digest, locked by a keys-file
    /// reload from its read to its swap (`auth::reload`).
    pub(crate) fn keys_file_seen(&self) -> &tokio::sync::Mutex<Option<[u8; 32]>> {
        &self.keys_file_seen
    }

    /// The tier names a keys file may use (the config's tiers), locked
    /// until the guard drops: a reload checks and swaps under it.
    pub fn known_tiers(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.tiers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks everything the auth config points at (JWKS files, shared
    /// secrets in the environment, URLs) without an origin: for
    /// `check-config` and for `serve` before binding (exit 64 on error).
    pub fn check(cfg: &Config) -> Result<(), String> {
        Source::parse(&cfg.auth.source)?;
        cfg.auth.introspection.validate()?;
        JwtVerifier::new(&cfg.auth.jwt, &cfg.base_dir, UnixClock::system()).map(drop)
    }

    /// Starts the JWKS refreshers (one task per `jwks_url` issuer). Without
    /// them a URL issuer's set is fetched by the first request that needs
    /// it. Idempotent enough: call once, after the runtime is up.
    pub fn start_background(&self) {
        if let Some(j) = self.jwt.load_full() {
            let handles = j.start_background();
            self.background
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(handles);
        }
    }

    /// Builds the JWT verifier of a reloaded `[auth.jwt]` (the error names
    /// the field); nothing changes until [`Authenticator::replace_jwt`].
    pub fn build_jwt(&self, cfg: &Config) -> Result<Option<Arc<JwtVerifier>>, String> {
        let previous = self.jwt.load_full();
        let jwt = JwtVerifier::after(&cfg.auth.jwt, &cfg.base_dir, self.clock, previous.as_deref())?;
        Ok((!jwt.is_empty()).then(|| Arc::new(jwt)))
    }

    /// The `jwks_file` contents in force, by digest (`None`: no issuers).
    pub fn jwt_files_digest(&self) -> Option<[u8; 32]> {
        self.jwt.load().as_ref().map(|j| j.files_digest())
    }

    /// Puts a verifier built by `build_jwt` in force (config reload): the
    /// next JWT is checked against the new issuers, the old JWKS
    /// refreshers stop and the new ones start (within a runtime).
    pub fn replace_jwt(&self, jwt: Option<Arc<JwtVerifier>>) {
        self.jwt.store(jwt);
        let old: Vec<_> = std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for h in old {
            h.abort();
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            self.start_background();
        }
    }

    /// Who is calling. The futures of the paths that may wait (JWKS
    /// fetches, introspection) are boxed, so the keys-file path, the one
    /// every API-key request takes, keeps a small future.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Principal>, AuthError> {
        self.authenticate_from(headers, None).await
    }

    /// [`Authenticator::authenticate`] for a request from `peer` (the
    /// client's address), which bounds the origin introspections one client
    /// may start; see [`super::lookup_limit`].
    pub async fn authenticate_from(
        &self,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Principal>, AuthError> {
        let cred = presented_credential(headers)?;
        if !cred.starts_with("lp_") && cred.contains('.') {
            return match self.jwt.load_full() {
                Some(j) => Box::pin(j.verify(cred)).await,
                None => Err(AuthError::Rejected("jwt_unknown_issuer")),
            };
        }
        match (self.source, &self.introspector) {
            (Source::Origin, Some(i)) => Box::pin(i.authenticate(cred, self.env.as_deref(), peer)).await,
            (Source::Both, Some(i)) => match self.check_file(cred) {
                Err(KeyRejection::UnknownKey) => {
                    Box::pin(i.authenticate(cred, self.env.as_deref(), peer)).await
                }
                // A known key id with a wrong secret takes the same path as
                // an unknown id (the same whoami call, limits and caching),
                // so neither the answer nor its timing tells a caller which
                // key ids the keys file holds. Whatever the origin says, the
                // keys file has the last word: refused.
                Err(KeyRejection::WrongSecret) => {
                    match Box::pin(i.authenticate(cred, self.env.as_deref(), peer)).await {
                        Ok(_) | Err(AuthError::Rejected(_)) => Err(KeyRejection::WrongSecret.into()),
                        Err(e) => Err(e),
                    }
                }
                r => r.map_err(Into::into),
            },
            _ => self.check_file(cred).map_err(Into::into),
        }
    }

    /// The keys-file check: no allocation, no await.
    fn check_file(&self, cred: &str) -> Result<Arc<Principal>, KeyRejection> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.authenticate(cred, self.env.as_deref())
    }

    /// Replaces the keys file atomically: the next request sees only the
    /// new keys (a revoked key stops working at once); requests already
    /// authenticated keep their principal.
    pub fn replace_keys(&self, keys: KeyStore) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    /// The keys file in force.
    pub fn keys(&self) -> Arc<KeyStore> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn source(&self) -> Source {
        self.source
    }

    pub fn jwt_enabled(&self) -> bool {
        self.jwt.load().is_some()
    }

    /// The JWT verifier in force, when issuers are configured (a config
    /// reload replaces it, and its verified-token cache with it).
    pub fn jwt(&self) -> Option<Arc<JwtVerifier>> {
        self.jwt.load_full()
    }

    pub fn introspector(&self) -> Option<&Introspector> {
        self.introspector.as_ref()
    }

    /// Outcomes of keys-file reloads so far (see [`super::reload`]).
    pub fn reload_reports(&self) -> watch::Receiver<ReloadReport> {
        self.reloads.subscribe()
    }

    pub(crate) fn record_reload(&self, f: impl FnOnce(&mut ReloadReport)) {
        self.reloads.send_modify(f);
    }
}

impl Drop for Authenticator {
    fn drop(&mut self) {
        for h in self
            .background
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::keys_file_entry;

    const KEY: &str = "lp_test_01HZDEM00000000A_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

    fn auth(extra: &str) -> Authenticator {
        let cfg = Config::parse(extra, Default::default()).unwrap();
        let keys =
            KeyStore::parse(&keys_file_entry(KEY, "org_a", &["content:read"], "standard").unwrap()).unwrap();
        Authenticator::new(&cfg, Arc::new(keys), None).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn file_keys_and_refusals() {
        let a = auth("");
        let p = a.authenticate(&headers(&[("x-api-key", KEY)])).await.unwrap();
        assert_eq!(&*p.org, "org_a");
        let bearer = format!("Bearer {KEY}");
        assert!(a
            .authenticate(&headers(&[("authorization", &bearer)]))
            .await
            .is_ok());
        assert_eq!(
            a.authenticate(&headers(&[])).await.err(),
            Some(AuthError::Rejected("missing"))
        );
        // No issuer configured: a JWT-shaped bearer is refused as such.
        let jwt = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(
            a.authenticate(&jwt).await.err(),
            Some(AuthError::Rejected("jwt_unknown_issuer"))
        );
        a.replace_keys(KeyStore::default());
        assert_eq!(
            a.authenticate(&headers(&[("x-api-key", KEY)])).await.err(),
            Some(AuthError::Rejected("unknown_key"))
        );
    }

    #[test]
    fn origin_source_needs_an_origin() {
        let cfg = Config::parse("[auth]\nsource = \"origin\"\n", Default::default()).unwrap();
        let e = Authenticator::new(&cfg, Arc::default(), None).err().unwrap();
        assert!(e.starts_with("auth.source"), "{e}");
    }

    #[test]
    fn errors_map_to_401_and_503() {
        let e = GatewayError::from(AuthError::Rejected("jwt_expired"));
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        let e = GatewayError::from(AuthError::Unavailable {
            retry_after_secs: 0,
            reason: "jwks_unavailable",
        });
        assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after_secs, Some(1));
    }
}
