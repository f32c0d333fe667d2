//! JWT bearer tokens: the issuer's rules, then `jsonwebtoken` for the
//! signature, then the claims, then the same `Principal` an API key gives.
//!
//! Order of checks (each refusal has its own reason label):
//! 1. three segments, a JSON header (`jwt_malformed`);
//! 2. `alg` of `none` in any casing (`jwt_alg_none`); a `crit` header
//!    (`jwt_malformed`: no extension is understood);
//! 3. the issuer, picked by the *unverified* `iss` (`jwt_unknown_issuer`);
//! 4. `alg` on that issuer's allowlist, and HS256 only for an issuer with a
//!    shared secret, so a public key can never be used as an HMAC secret
//!    (`jwt_alg_not_allowed`). All of this before `jsonwebtoken` runs;
//! 5. the key by `kid` from the issuer's own keys (`jwt_unknown_kid`); the
//!    `jwk`, `jku`, `x5u` and `x5c` headers are never read, let alone fetched;
//! 6. the signature (`jwt_bad_signature`);
//! 7. `exp` required (`jwt_missing_exp`, `jwt_expired`), `nbf` if present
//!    (`jwt_not_yet_valid`), both with `leeway` and the gateway's
//!    [`UnixClock`]; `iss` equal (`jwt_wrong_issuer`); `aud` one of the
//!    configured audiences (`jwt_wrong_audience`);
//! 8. an organization (`org_id`, else `organizationId`) and a subject (`sub`)
//!    (`jwt_missing_claims`).
//!
//! Claims to principal: org from `org_id` or `organizationId`; scopes from
//! `scope` (space-delimited) or `scp` (array, or space-delimited); names
//! this gateway does not know are ignored (a scope the issuer adds later
//! grants nothing here rather than refusing every token); `*` grants all;
//! tier from `tier` (default `standard`); key id from `sub`.

use super::authenticator::AuthError;
use super::jwks::{JwksClient, JwksTiming, KeySet, RemoteJwks, VerifyKey, MAX_KID_LEN};
use super::scopes::{Scope, ScopeSet};
use super::settings::{JwtSettings, KeySource, MIN_SHARED_SECRET_BYTES};
use super::token_cache::{token_key, TokenCache, Validity};
use super::Principal;
use crate::shaping::clock::UnixClock;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where one issuer's keys are.
enum IssuerKeys {
    Secret(Arc<VerifyKey>),
    File(KeySet),
    Remote(Arc<RemoteJwks>),
}

struct Issuer {
    name: Box<str>,
    /// The key-set generation the verified-token cache checks: a fetched
    /// JWKS bumps it on every change; file and secret keys never change.
    keys_generation: Arc<AtomicU64>,
    audience: Box<[Box<str>]>,
    /// The allowlist, each with its prepared `jsonwebtoken` validation
    /// (signature only: claims are checked here, on the gateway's clock).
    algorithms: Vec<(Algorithm, Validation)>,
    keys: IssuerKeys,
}

/// Verifies JWTs of the configured issuers.
pub struct JwtVerifier {
    issuers: HashMap<Box<str>, Issuer>,
    /// One fetched set per `jwks_url`, shared by every issuer that names
    /// it: one fetch and one refresher per URL, however many issuers.
    remotes: HashMap<String, Arc<RemoteJwks>>,
    leeway_millis: i64,
    clock: UnixClock,
    /// Tokens verified recently (`auth.jwt.cache_*`).
    cache: TokenCache,
    /// The `jwks_file` contents read, by digest: a config reload compares
    /// it to see a file that changed under an unchanged `auth.jwt`.
    files_digest: [u8; 32],
}

/// The header fields read; everything else (`jwk`, `jku`, `x5u`, `x5c`,
/// `typ`, ...) is ignored.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    #[serde(default)]
    iss: Option<String>,
}

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<StrOrList>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default, rename = "organizationId")]
    organization_id: Option<String>,
    #[serde(default)]
    scope: Option<StrOrList>,
    #[serde(default)]
    scp: Option<StrOrList>,
    #[serde(default)]
    tier: Option<String>,
}

fn reject(reason: &'static str) -> AuthError {
    AuthError::Rejected(reason)
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// A `jsonwebtoken` validation that checks the signature and nothing else.
fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims = HashSet::new();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v
}

impl JwtVerifier {
    /// Builds the issuers: reads JWKS files and shared secrets now (an error
    /// names the field); URL issuers fetch on first use or from
    /// `start_background`.
    pub fn new(settings: &JwtSettings, base_dir: &Path, clock: UnixClock) -> Result<JwtVerifier, String> {
        JwtVerifier::after(settings, base_dir, clock, None)
    }

    /// As `new`, for a config reload: a `jwks_url` that `previous` already
    /// fetched keeps its set (and, fetched the same way, its schedule), so
    /// a reload never loses keys, however the issuers around it changed.
    pub fn after(
        settings: &JwtSettings,
        base_dir: &Path,
        clock: UnixClock,
        previous: Option<&JwtVerifier>,
    ) -> Result<JwtVerifier, String> {
        settings.validate()?;
        let timing = JwksTiming {
            max_age: settings.jwks_max_age(),
            min_interval: settings.unknown_kid_refresh(),
            stale_grace: settings.jwks_stale_grace(),
        };
        let mut client: Option<Arc<JwksClient>> = None;
        let mut issuers = HashMap::new();
        let mut remotes: HashMap<String, Arc<RemoteJwks>> = HashMap::new();
        let mut files = <sha2::Sha256 as sha2::Digest>::new();
        let (fetch_timeout, max_bytes) = (settings.jwks_fetch_timeout(), settings.jwks_max_bytes as usize);
        for (i, s) in settings.issuers.iter().enumerate() {
            let at = format!("auth.jwt.issuers[{i}]");
            let keys = match s.key_source().ok_or_else(|| format!("{at}: no key source"))? {
                KeySource::SharedSecretEnv(var) => {
                    let secret = std::env::var(var).map_err(|_| {
                        format!(
                            "{at}.shared_secret_env: environment variable {} is not set (the field names the variable, not the secret)",
                            crate::config::field_path::shown_value(var)
                        )
                    })?;
                    if secret.len() < MIN_SHARED_SECRET_BYTES {
                        return Err(format!(
                            "{at}.shared_secret_env: the secret in {} must be at least {MIN_SHARED_SECRET_BYTES} bytes",
                            crate::config::field_path::shown_value(var)
                        ));
                    }
                    IssuerKeys::Secret(Arc::new(VerifyKey::shared_secret(secret.as_bytes())))
                }
                KeySource::File(path) => {
                    let path = base_dir.join(path);
                    let text = std::fs::read(&path)
                        .map_err(|e| format!("{at}.jwks_file: cannot read {}: {e}", path.display()))?;
                    let set = KeySet::parse(&text)
                        .map_err(|e| format!("{at}.jwks_file: {}: {e}", path.display()))?;
                    for part in [
                        &(i as u64).to_le_bytes()[..],
                        &(text.len() as u64).to_le_bytes(),
                        &text,
                    ] {
                        sha2::Digest::update(&mut files, part);
                    }
                    IssuerKeys::File(set)
                }
                KeySource::Url(url) => {
                    let uri: http::Uri = url.parse().map_err(|e| format!("{at}.jwks_url: {e}"))?;
                    let old = previous.and_then(|p| p.remotes.get(url));
                    let remote = match (remotes.get(url), old) {
                        (Some(shared), _) => shared.clone(),
                        (None, Some(old)) if old.fetches_like(&uri, timing, fetch_timeout, max_bytes) => {
                            old.clone()
                        }
                        (None, old) => {
                            let c = match &client {
                                Some(c) => c.clone(),
                                None => {
                                    let c = Arc::new(JwksClient::new(fetch_timeout, max_bytes)?);
                                    client = Some(c.clone());
                                    c
                                }
                            };
                            let fresh = RemoteJwks::new(uri, c, timing);
                            if let Some(old) = old {
                                fresh.inherit(old);
                            }
                            fresh
                        }
                    };
                    remotes.insert(url.to_string(), remote.clone());
                    IssuerKeys::Remote(remote)
                }
            };
            let algorithms = s
                .effective_algorithms()
                .iter()
                .map(|a| {
                    let alg = a
                        .parse::<Algorithm>()
                        .map_err(|_| format!("{at}.algorithms: {a:?} is not supported"))?;
                    Ok((alg, signature_only(alg)))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let keys_generation = match &keys {
                IssuerKeys::Remote(r) => r.generation().clone(),
                IssuerKeys::Secret(_) | IssuerKeys::File(_) => Arc::new(AtomicU64::new(0)),
            };
            let issuer = Issuer {
                name: s.issuer.as_str().into(),
                keys_generation,
                audience: s.audience.iter().map(|a| a.as_str().into()).collect(),
                algorithms,
                keys,
            };
            issuers.insert(s.issuer.as_str().into(), issuer);
        }
        Ok(JwtVerifier {
            issuers,
            remotes,
            leeway_millis: (settings.leeway_secs as i64).saturating_mul(1000),
            clock,
            cache: TokenCache::new(
                settings.cache_max_entries,
                std::time::Duration::from_secs(settings.cache_max_age_secs),
            ),
            files_digest: sha2::Digest::finalize(files).into(),
        })
    }

    /// The digest of the `jwks_file` contents this verifier was built from.
    pub fn files_digest(&self) -> [u8; 32] {
        self.files_digest
    }

    /// The verified-token cache (tests and benches read its counters).
    pub fn token_cache(&self) -> &TokenCache {
        &self.cache
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Starts one background refresher per `jwks_url`.
    pub fn start_background(&self) -> Vec<tokio::task::AbortHandle> {
        self.remotes.values().map(|r| r.spawn_refresher()).collect()
    }

    /// Verifies a token (already known to contain a `.`), or answers it from
    /// the verified-token cache.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let key = self.cache.is_on().then(|| token_key(token));
        if let Some(k) = &key {
            if let Some(p) = self.cache.get(k, self.clock.now_unix_millis()) {
                return Ok(p);
            }
        }
        let (principal, verified) = self.verify_uncached(token).await?;
        if let Some(k) = key {
            let v = verified;
            self.cache.insert(
                k,
                principal.clone(),
                v.validity,
                v.now_millis,
                v.keys_generation,
                v.generation,
            );
        }
        Ok(principal)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Arc<Principal>, Verified), AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(reject("jwt_malformed"));
        };
        let header: RawHeader = decode_json(h)?;
        if header.alg.trim().eq_ignore_ascii_case("none") {
            return Err(reject("jwt_alg_none"));
        }
        if header.crit.is_some() {
            return Err(reject("jwt_malformed"));
        }
        let unverified: UnverifiedIssuer = decode_json(p)?;
        let issuer = unverified
            .iss
            .as_deref()
            .and_then(|iss| self.issuers.get(iss))
            .ok_or(reject("jwt_unknown_issuer"))?;
        // Exact names only: "rs256" is not RS256.
        let alg = header
            .alg
            .parse::<Algorithm>()
            .map_err(|_| reject("jwt_alg_not_allowed"))?;
        let Some((_, validation)) = issuer.algorithms.iter().find(|(a, _)| *a == alg) else {
            return Err(reject("jwt_alg_not_allowed"));
        };
        let symmetric_issuer = matches!(issuer.keys, IssuerKeys::Secret(_));
        if is_hmac(alg) != symmetric_issuer {
            return Err(reject("jwt_alg_not_allowed"));
        }
        let kid = header.kid.as_deref();
        if kid.is_some_and(|k| k.len() > MAX_KID_LEN) {
            return Err(reject("jwt_malformed"));
        }
        // Read before the key is looked up: a set replaced after this makes
        // the cache entry stale at once rather than trusted.
        let generation = issuer.keys_generation.load(Ordering::Acquire);
        let (key, refresh_at) = match &issuer.keys {
            IssuerKeys::Secret(k) => Some((k.clone(), None)),
            IssuerKeys::File(set) => set.find(kid, alg).map(|k| (k, None)),
            IssuerKeys::Remote(remote) => remote.key_for(kid, alg).await?.map(|(k, at)| (k, Some(at))),
        }
        .filter(|(k, _)| k.accepts(alg))
        .ok_or(reject("jwt_unknown_kid"))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::Provider(_) => reject("jwt_bad_signature"),
                ErrorKind::InvalidAlgorithm => reject("jwt_alg_not_allowed"),
                _ => reject("jwt_malformed"),
            })?
            .claims;
        let (principal, mut validity) = self.check_claims(issuer, claims)?;
        if let Some(at) = refresh_at {
            // The set is fetched again then; an uncached token would see a
            // withdrawn key from that moment, so a cached one must too.
            validity.until_millis = validity.until_millis.min(self.clock.unix_millis_at(at));
        }
        let verified = Verified {
            validity,
            now_millis: self.clock.now_unix_millis(),
            keys_generation: issuer.keys_generation.clone(),
            generation,
        };
        Ok((principal, verified))
    }

    fn check_claims(&self, issuer: &Issuer, c: Claims) -> Result<(Arc<Principal>, Validity), AuthError> {
        let now = self.clock.now_unix_millis();
        let millis = |secs: f64| (secs * 1000.0) as i64;
        let exp = c.exp.ok_or(reject("jwt_missing_exp"))?;
        let until_millis = millis(exp).saturating_add(self.leeway_millis);
        if now >= until_millis {
            return Err(reject("jwt_expired"));
        }
        let mut not_before_millis = i64::MIN;
        if let Some(nbf) = c.nbf {
            not_before_millis = millis(nbf).saturating_sub(self.leeway_millis);
            if now < not_before_millis {
                return Err(reject("jwt_not_yet_valid"));
            }
        }
        if c.iss.as_deref() != Some(&*issuer.name) {
            return Err(reject("jwt_wrong_issuer"));
        }
        let aud_ok = match &c.aud {
            Some(StrOrList::One(a)) => issuer.audience.iter().any(|x| **x == **a),
            Some(StrOrList::Many(v)) => v.iter().any(|a| issuer.audience.iter().any(|x| **x == **a)),
            None => false,
        };
        if !aud_ok {
            return Err(reject("jwt_wrong_audience"));
        }
        let org = match (c.org_id, c.organization_id) {
            (Some(a), Some(b)) if a != b => return Err(reject("jwt_missing_claims")),
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => return Err(reject("jwt_missing_claims")),
        };
        let sub = c.sub.unwrap_or_default();
        if org.is_empty() || sub.is_empty() {
            return Err(reject("jwt_missing_claims"));
        }
        let scopes = match (&c.scope, &c.scp) {
            (Some(s), _) | (None, Some(s)) => scope_set(s),
            (None, None) => ScopeSet::default(),
        };
        let validity = Validity {
            until_millis,
            not_before_millis,
        };
        let principal = Arc::new(Principal {
            // The issuer too: two issuers may mint the same subject.
            rate_key: super::rate_key(&["jwt", &issuer.name, &org, &sub]),
            org: org.into(),
            key_id: sub.into(),
            scopes,
            tier: c
                .tier
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "standard".into())
                .into(),
        });
        Ok((principal, validity))
    }
}

/// A token that passed every check, and what the cache needs to remember it.
struct Verified {
    validity: Validity,
    now_millis: i64,
    keys_generation: Arc<AtomicU64>,
    generation: u64,
}

/// Scopes from a space-delimited string or a list; unknown names ignored.
fn scope_set(s: &StrOrList) -> ScopeSet {
    let names: Vec<&str> = match s {
        StrOrList::One(s) => s.split_ascii_whitespace().collect(),
        StrOrList::Many(v) => v.iter().flat_map(|s| s.split_ascii_whitespace()).collect(),
    };
    let known = names
        .into_iter()
        .filter(|n| *n == "*" || Scope::parse(n).is_some());
    ScopeSet::parse(known).unwrap_or_default()
}

/// One base64url segment as JSON.
fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| reject("jwt_malformed"))?;
    serde_json::from_slice(&bytes).map_err(|_| reject("jwt_malformed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scope_names_grant_nothing_and_do_not_fail() {
        let s = scope_set(&StrOrList::One("content:read future:thing".into()));
        assert_eq!(s.names(), ["content:read"]);
        let s = scope_set(&StrOrList::Many(vec!["jobs:read".into(), "nope".into()]));
        assert_eq!(s.names(), ["jobs:read"]);
        assert_eq!(scope_set(&StrOrList::One("*".into())), ScopeSet::ALL);
    }

    #[test]
    fn claims_need_exp_aud_org_and_sub() {
        let v = JwtVerifier {
            issuers: HashMap::new(),
            remotes: HashMap::new(),
            leeway_millis: 30_000,
            clock: UnixClock::starting_at(1_000),
            cache: TokenCache::new(0, std::time::Duration::ZERO),
            files_digest: [0; 32],
        };
        let issuer = Issuer {
            name: "iss".into(),
            keys_generation: Arc::default(),
            audience: vec!["gw".into()].into_boxed_slice(),
            algorithms: vec![],
            keys: IssuerKeys::File(KeySet::default()),
        };
        let claims = |json: &str| serde_json::from_str::<Claims>(json).unwrap();
        let ok = r#"{"exp":2000,"iss":"iss","aud":"gw","org_id":"o","sub":"s"}"#;
        let (p, _) = v.check_claims(&issuer, claims(ok)).unwrap();
        assert_eq!((&*p.org, &*p.key_id, &*p.tier), ("o", "s", "standard"));
        for (json, reason) in [
            (
                r#"{"iss":"iss","aud":"gw","org_id":"o","sub":"s"}"#,
                "jwt_missing_exp",
            ),
            (
                r#"{"exp":969,"iss":"iss","aud":"gw","org_id":"o","sub":"s"}"#,
                "jwt_expired",
            ),
            (
                r#"{"exp":2000,"nbf":1031,"iss":"iss","aud":"gw","org_id":"o","sub":"s"}"#,
                "jwt_not_yet_valid",
            ),
            (
                r#"{"exp":2000,"iss":"other","aud":"gw","org_id":"o","sub":"s"}"#,
                "jwt_wrong_issuer",
            ),
            (
                r#"{"exp":2000,"iss":"iss","aud":["x"],"org_id":"o","sub":"s"}"#,
                "jwt_wrong_audience",
            ),
            (
                r#"{"exp":2000,"iss":"iss","org_id":"o","sub":"s"}"#,
                "jwt_wrong_audience",
            ),
            (
                r#"{"exp":2000,"iss":"iss","aud":"gw","sub":"s"}"#,
                "jwt_missing_claims",
            ),
            (
                r#"{"exp":2000,"iss":"iss","aud":"gw","org_id":"o","organizationId":"p","sub":"s"}"#,
                "jwt_missing_claims",
            ),
            (
                r#"{"exp":2000,"iss":"iss","aud":"gw","org_id":"o"}"#,
                "jwt_missing_claims",
            ),
        ] {
            assert_eq!(
                v.check_claims(&issuer, claims(json)).err(),
                Some(AuthError::Rejected(reason)),
                "{json}"
            );
        }
        // Within the leeway both ways.
        let edge = r#"{"exp":971,"nbf":1029,"iss":"iss","aud":"gw","organizationId":"o","sub":"s"}"#;
        assert!(v.check_claims(&issuer, claims(edge)).is_ok());
    }
}
