//! JSON Web Key Sets: parsing a set into verification keys, and the cached
//! set of an issuer that publishes its keys at a URL.
//!
//! Only public signature keys of the asymmetric families are taken from a
//! JWKS: RSA (RS*/PS*), EC P-256/P-384 (ES256/ES384) and OKP Ed25519
//! (EdDSA). Symmetric (`oct`) keys, encryption keys (`use: enc`) and keys of
//! unknown types are skipped, so a JWKS can never make HS256 acceptable.
//!
//! A remote set is fetched once, used for `max_age`, then fetched again (by
//! the background refresher, or by the first request that finds it stale).
//! A token whose `kid` is not in the set triggers a fetch at most once per
//! `min_interval` for that URL, and concurrent requests share that one fetch
//! (single flight). When fetches fail, the last good set keeps working until
//! `max_age + stale_grace` after it was fetched; then the issuer's tokens
//! answer `Unavailable` (503), never a pass and never a 401.

use super::authenticator::AuthError;
use aws_lc_rs::signature;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

/// Keys accepted in one set at most; a larger set is refused whole.
pub const MAX_JWKS_KEYS: usize = 100;
/// A `kid` longer than this is refused before any lookup.
pub const MAX_KID_LEN: usize = 256;

/// Reason label when an issuer's keys cannot be had (answered 503).
pub const JWKS_UNAVAILABLE: &str = "jwks_unavailable";

/// One verification key and the algorithms it may verify.
pub struct VerifyKey {
    pub key: DecodingKey,
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one: then only that algorithm.
    alg: Option<Algorithm>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// An HS256 shared secret (only from `shared_secret_env`, never a JWKS).
    Secret,
}

impl VerifyKey {
    /// An HS256 shared secret.
    pub fn shared_secret(secret: &[u8]) -> VerifyKey {
        VerifyKey {
            key: DecodingKey::from_secret(secret),
            kind: KeyKind::Secret,
            alg: Some(Algorithm::HS256),
        }
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        let family_ok = match self.kind {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
            KeyKind::Secret => alg == HS256,
        };
        family_ok && self.alg.is_none_or(|a| a == alg)
    }
}

/// A parsed JWKS: keys by `kid`, plus keys without one.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Vec<Arc<VerifyKey>>>,
    without_kid: Vec<Arc<VerifyKey>>,
    len: usize,
    /// SHA-256 of the document: a fetch that returns another document is a
    /// rotation (verified tokens of the issuer are checked again).
    fingerprint: [u8; 32],
}

/// One JWK as published; only the public parameters are read.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_deref()?.trim_end_matches('=')).ok()
}

/// Whether an RSA public key can verify anything: the verifier
/// (aws-lc-rs, RS*/PS*) takes moduli of 2048 to 8192 bits and an odd
/// exponent from 3 to 2^33 - 1. Any other key would load and then refuse
/// every token, so it is skipped like an unknown key type.
fn without_leading_zeros(b: &[u8]) -> &[u8] {
    &b[b.iter().take_while(|&&x| x == 0).count()..]
}

fn rsa_usable(n: &[u8], e: &[u8]) -> Result<(), String> {
    let significant = |b: &[u8]| -> usize {
        let b = &b[b.iter().take_while(|&&x| x == 0).count()..];
        b.first()
            .map_or(0, |&top| (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize))
    };
    let bits = significant(n);
    if !(2048..=8192).contains(&bits) {
        return Err(format!("RSA modulus of {bits} bits (2048 to 8192 verify)"));
    }
    let e_bits = significant(e);
    let odd = e.last().is_some_and(|&b| b & 1 == 1);
    if !(2..=33).contains(&e_bits) || !odd {
        return Err("RSA exponent outside 3 to 2^33 - 1, or even".into());
    }
    Ok(())
}

impl RawJwk {
    /// The verification key, or why this JWK is skipped.
    fn into_key(self) -> Result<(Option<String>, VerifyKey), String> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err("not a signature key (use)".into());
        }
        let alg = match self.alg.as_deref() {
            None => None,
            Some(a) => Some(
                a.parse::<Algorithm>()
                    .map_err(|_| format!("unsupported alg {a:?}"))?,
            ),
        };
        let (key, kind) = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => {
                let (n, e) = (b64(&self.n).ok_or("bad n")?, b64(&self.e).ok_or("bad e")?);
                // Leading zero octets are the same number; the verifier
                // takes the minimal encoding only.
                let (n, e) = (without_leading_zeros(&n), without_leading_zeros(&e));
                rsa_usable(n, e)?;
                (DecodingKey::from_rsa_raw_components(n, e), KeyKind::Rsa)
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let size = if crv == "P-256" { 32 } else { 48 };
                let (x, y) = (b64(&self.x).ok_or("bad x")?, b64(&self.y).ok_or("bad y")?);
                if x.len() != size || y.len() != size {
                    return Err("EC coordinates of the wrong size".into());
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let kind = if size == 32 { KeyKind::P256 } else { KeyKind::P384 };
                let curve = if size == 32 {
                    &signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED
                };
                // A point off the curve verifies nothing: refused here, so a
                // set of such keys is an error at load, not 401s later.
                signature::ParsedPublicKey::new(curve, &point).map_err(|_| "EC point not on the curve")?;
                (DecodingKey::from_ec_der(&point), kind)
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64(&self.x).ok_or("bad x")?;
                if x.len() != 32 {
                    return Err("Ed25519 key of the wrong size".into());
                }
                signature::ParsedPublicKey::new(&signature::ED25519, &x)
                    .map_err(|_| "not an Ed25519 public key")?;
                (DecodingKey::from_ed_der(&x), KeyKind::Ed25519)
            }
            ("oct", _) => return Err("symmetric keys are never taken from a JWKS".into()),
            (kty, crv) => return Err(format!("unsupported key type {kty:?} {crv:?}")),
        };
        let vk = VerifyKey { key, kind, alg };
        if let Some(a) = alg {
            if !vk.accepts(a) {
                return Err(format!("alg {a:?} does not fit the key type"));
            }
        }
        Ok((self.kid, vk))
    }
}

impl KeySet {
    /// Parses a JWKS document. Unusable keys are skipped (and logged); a
    /// set with no usable key, or more than `MAX_JWKS_KEYS`, is an error.
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let raw: RawSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        if raw.keys.len() > MAX_JWKS_KEYS {
            return Err(format!("more than {MAX_JWKS_KEYS} keys"));
        }
        let mut set = KeySet {
            fingerprint: sha2::Sha256::digest(json).into(),
            ..KeySet::default()
        };
        for (i, v) in raw.keys.into_iter().enumerate() {
            let parsed = serde_json::from_value::<RawJwk>(v)
                .map_err(|e| e.to_string())
                .and_then(RawJwk::into_key);
            match parsed {
                Ok((Some(kid), k)) => set.by_kid.entry(kid).or_default().push(Arc::new(k)),
                Ok((None, k)) => set.without_kid.push(Arc::new(k)),
                Err(why) => {
                    tracing::debug!(index = i, why = %why, "JWKS key skipped");
                    continue;
                }
            }
            set.len += 1;
        }
        if set.len == 0 {
            return Err("no usable signature key".into());
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key for a token's `kid` and `alg`. Without a `kid`, the one key
    /// of the set that fits `alg` (several: none, rather than trying each).
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid)?.iter().find(|k| k.accepts(alg)).cloned(),
            None => {
                let mut fits = self
                    .by_kid
                    .values()
                    .flatten()
                    .chain(&self.without_kid)
                    .filter(|k| k.accepts(alg));
                let one = fits.next()?;
                fits.next().is_none().then(|| one.clone())
            }
        }
    }
}

/// A small client for JWKS URLs: http and https (rustls with the system
/// roots, aws-lc-rs), no redirects, a deadline and a body cap.
pub struct JwksClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    max_bytes: usize,
}

impl JwksClient {
    pub fn new(timeout: Duration, max_bytes: usize) -> Result<JwksClient, String> {
        let tls = crate::origin::rustls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(Duration::from_secs(90))
            .timer(hyper_util::rt::TokioTimer::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        Ok(JwksClient {
            client,
            timeout,
            max_bytes,
        })
    }

    /// Fetches and parses one JWKS.
    pub async fn fetch(&self, url: &http::Uri) -> Result<KeySet, String> {
        let req = http::Request::get(url.clone())
            .header(http::header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            if resp.status() != http::StatusCode::OK {
                return Err(format!("status {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), self.max_bytes)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            KeySet::parse(&body)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// A JWKS URL as it may be logged: scheme, host, port and path. A query
/// string or user info may carry a token the identity provider handed out.
fn loggable(url: &http::Uri) -> String {
    let host = url.host().unwrap_or("");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let scheme = url.scheme_str().unwrap_or("https");
    let query = if url.query().is_some() { "?…" } else { "" };
    format!("{scheme}://{host}{port}{}{query}", url.path())
}

/// How a remote set ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksTiming {
    pub max_age: Duration,
    /// At most one fetch for an unknown `kid` (or after a failure) this often.
    pub min_interval: Duration,
    pub stale_grace: Duration,
}

struct Fetched {
    keys: KeySet,
    at: Instant,
}

/// Why a fetch is wanted: requests are rate limited, the refresher is not
/// (it schedules itself).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Request,
    Background,
}

/// The cached key set of one `jwks_url` issuer.
pub struct RemoteJwks {
    url: http::Uri,
    client: Arc<JwksClient>,
    timing: JwksTiming,
    /// The last good set. Read by every token of this issuer (a read lock
    /// held for one `Arc` clone); written only by the fetch that holds
    /// `fetch`, so a reader never waits on the network.
    current: RwLock<Option<Arc<Fetched>>>,
    /// Single flight: held for the whole fetch, so concurrent requests that
    /// want a fetch wait for the one in progress instead of starting theirs.
    /// Guards the time of the last attempt (the rate limit).
    fetch: Arc<AsyncMutex<Option<Instant>>>,
    /// Fetch attempts finished; a waiter that sees it move knows a fetch
    /// completed while it waited and does not start another.
    attempts: AtomicU64,
    /// Bumped each time a fetch installs a set that differs from the
    /// previous one; the verified-token cache keeps the value each entry
    /// was verified under and verifies again once it moved.
    generation: Arc<AtomicU64>,
    /// A refresh spawned by `refresh_behind` has not finished: a burst of
    /// requests past the set's age spawns one task, not one each.
    behind: AtomicBool,
}

impl RemoteJwks {
    pub fn new(url: http::Uri, client: Arc<JwksClient>, timing: JwksTiming) -> Arc<RemoteJwks> {
        Arc::new(RemoteJwks {
            url,
            client,
            timing,
            current: RwLock::new(None),
            fetch: Arc::new(AsyncMutex::new(None)),
            attempts: AtomicU64::new(0),
            generation: Arc::new(AtomicU64::new(0)),
            behind: AtomicBool::new(false),
        })
    }

    /// Whether this set fetches the same way a reloaded config asks for
    /// (then the reload keeps it, with its last good set and its schedule).
    pub fn fetches_like(
        &self,
        url: &http::Uri,
        timing: JwksTiming,
        timeout: Duration,
        max_bytes: usize,
    ) -> bool {
        self.url == *url
            && self.timing == timing
            && self.client.timeout == timeout
            && self.client.max_bytes == max_bytes
    }

    /// Starts from `previous`'s last good set: a reload that changed how a
    /// URL is fetched must not forget its keys (an identity provider down
    /// at that moment would turn every token into a 503).
    pub fn inherit(&self, previous: &RemoteJwks) {
        let set = previous.snapshot();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = set;
    }

    /// The key-set generation (see the field).
    pub fn generation(&self) -> &Arc<AtomicU64> {
        &self.generation
    }

    fn snapshot(&self) -> Option<Arc<Fetched>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn unavailable(&self) -> AuthError {
        AuthError::Unavailable {
            retry_after_secs: self.timing.min_interval.as_secs().max(1),
            reason: JWKS_UNAVAILABLE,
        }
    }

    /// The key for a token of this issuer, with the instant its set needs a
    /// refresh. `Ok(None)`: the set (fresh, or just refreshed) has no key
    /// for this `kid` and `alg`.
    pub async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<(Arc<VerifyKey>, Instant)>, AuthError> {
        let fresh = |f: &Fetched| Instant::now() < f.at + self.timing.max_age;
        let usable = |f: &Fetched| Instant::now() < f.at + self.timing.max_age + self.timing.stale_grace;
        let mut snap = self.snapshot();
        if !snap.as_deref().is_some_and(fresh) {
            // Black-box round 83: with the JWKS server hanging, every
            // token of the issuer (cached ones too) waited out the fetch
            // timeout behind the refresh. The first request past the set's
            // age still waits for its refresh (a withdrawn key is refused
            // from max age on); while that fetch runs, and once it has
            // failed, a set in its grace answers at once and the next
            // attempt runs behind it.
            if snap
                .as_deref()
                .is_some_and(|f| usable(f) && self.answers_stale_now(f.at))
            {
                self.refresh_behind();
            } else {
                self.refresh(Trigger::Request).await;
                snap = self.snapshot();
            }
        }
        let Some(set) = snap else {
            return Err(self.unavailable());
        };
        let usable_until = set.at + self.timing.max_age + self.timing.stale_grace;
        if Instant::now() >= usable_until {
            return Err(self.unavailable());
        }
        if let Some(k) = set.keys.find(kid, alg) {
            return Ok(Some((k, set.at + self.timing.max_age)));
        }
        if kid.is_none() {
            return Ok(None);
        }
        // Unknown kid: perhaps the issuer rotated. One fetch per interval.
        let before = self.attempts.load(Ordering::Acquire);
        self.refresh(Trigger::Request).await;
        if self.attempts.load(Ordering::Acquire) == before {
            return Ok(None);
        }
        Ok(self
            .snapshot()
            .and_then(|s| Some((s.keys.find(kid, alg)?, s.at + self.timing.max_age))))
    }

    /// Fetches the set unless a fetch finished while this caller waited,
    /// or (for requests) the last attempt is more recent than the interval.
    /// The fetch runs in its own task: a request that goes away does not
    /// abandon the others waiting for it.
    /// Whether a request past the age of the set fetched at `set_at` may
    /// answer from it without waiting: a fetch is in flight, or the last
    /// attempt, made after that set, failed.
    fn answers_stale_now(&self, set_at: Instant) -> bool {
        match self.fetch.try_lock() {
            Err(_) => true,
            Ok(last) => last.is_some_and(|last| last > set_at),
        }
    }

    /// Starts a refresh in a task of its own, unless one is in flight or
    /// the last attempt was less than `min_interval` ago (a request past
    /// the set's age spawns nothing then).
    fn refresh_behind(self: &Arc<Self>) {
        let due = match self.fetch.try_lock() {
            Ok(last) => last.is_none_or(|last| Instant::now() >= last + self.timing.min_interval),
            Err(_) => false,
        };
        if due && !self.behind.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move {
                this.refresh(Trigger::Request).await;
                this.behind.store(false, Ordering::Release);
            });
        }
    }

    async fn refresh(self: &Arc<Self>, trigger: Trigger) {
        let seen = self.attempts.load(Ordering::Acquire);
        let guard = self.fetch.clone().lock_owned().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        let now = Instant::now();
        if trigger == Trigger::Request && guard.is_some_and(|last| now < last + self.timing.min_interval) {
            return;
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut guard = guard;
            *guard = Some(now);
            let result = this.client.fetch(&this.url).await;
            match result {
                Ok(keys) => {
                    tracing::info!(url = %loggable(&this.url), keys = keys.len(), "JWKS fetched");
                    let fetched = Arc::new(Fetched { keys, at: now });
                    let mut current = this.current.write().unwrap_or_else(|p| p.into_inner());
                    // The first set replaces none: no token was verified
                    // before it, so nothing remembered needs checking again.
                    let changed = current
                        .as_ref()
                        .is_some_and(|old| old.keys.fingerprint != fetched.keys.fingerprint);
                    *current = Some(fetched);
                    if changed {
                        this.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Err(e) => {
                    tracing::warn!(url = %loggable(&this.url), error = %e, "JWKS fetch failed; keeping the last good set")
                }
            }
            this.attempts.fetch_add(1, Ordering::AcqRel);
            drop(guard);
        });
        let _ = task.await;
    }

    /// When the refresher should fetch next: at max age after a success,
    /// `min_interval` after a failure, at once when nothing was fetched.
    async fn next_due(&self) -> Instant {
        let last_attempt = *self.fetch.lock().await;
        let by_age = self.snapshot().map(|s| s.at + self.timing.max_age);
        match (by_age, last_attempt) {
            (_, None) => Instant::now(),
            (Some(due), Some(last)) if due > last => due,
            (_, Some(last)) => last + self.timing.min_interval,
        }
    }

    /// Keeps the set fresh in the background until the issuer is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::AbortHandle {
        let weak: Weak<RemoteJwks> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let due = this.next_due().await;
                drop(this);
                tokio::time::sleep_until(due).await;
                let Some(this) = weak.upgrade() else { return };
                this.refresh(Trigger::Background).await;
            }
        })
        .abort_handle()
    }

    pub fn url(&self) -> &http::Uri {
        &self.url
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_logged_jwks_url_keeps_no_query_or_user_info() {
        let u: http::Uri = "https://user:pw@idp.example:8443/keys.json?token=s3cret"
            .parse()
            .unwrap();
        let shown = super::loggable(&u);
        assert_eq!(shown, "https://idp.example:8443/keys.json?…");
        let u: http::Uri = "https://idp.example/.well-known/jwks.json".parse().unwrap();
        assert_eq!(super::loggable(&u), "https://idp.example/.well-known/jwks.json");
    }

    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let set = r#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let s = KeySet::parse(set.as_bytes()).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.find(Some("h"), Algorithm::HS256).is_none());
        assert!(s.find(Some("enc"), Algorithm::RS256).is_none());
        assert!(s.find(Some("ed"), Algorithm::EdDSA).is_some());
        assert!(s.find(Some("ed"), Algorithm::ES256).is_none());
        // Without a kid, the one key that fits the algorithm.
        assert!(s.find(None, Algorithm::EdDSA).is_some());
    }

    #[test]
    fn unusable_sets_are_errors() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#).is_err());
        let many = format!(
            "{{\"keys\":[{}]}}",
            vec![r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#; 101]
                .join(",")
        );
        assert!(KeySet::parse(many.as_bytes())
            .err()
            .unwrap()
            .contains("more than"));
    }

    fn jwk_b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn keys_that_could_verify_nothing_are_skipped() {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let ec = |y: &[u8]| {
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"ec","x":"{}","y":"{}"}}]}}"#,
                jwk_b64(x),
                jwk_b64(y)
            )
        };
        assert!(KeySet::parse(ec(y).as_bytes()).is_ok(), "a point on P-256");
        let mut off = y.to_vec();
        off[31] ^= 1;
        let e = KeySet::parse(ec(&off).as_bytes())
            .err()
            .expect("a point off the curve is refused");
        assert!(e.contains("no usable"), "{e}");
        let rsa = |n: &[u8], e: &[u8]| {
            format!(
                r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{}","e":"{}"}}]}}"#,
                jwk_b64(n),
                jwk_b64(e)
            )
        };
        let mut n2048 = vec![0xc5u8; 256];
        n2048[255] |= 1;
        assert!(KeySet::parse(rsa(&n2048, &[1, 0, 1]).as_bytes()).is_ok());
        let mut n1024 = vec![0u8; 1];
        n1024.extend_from_slice(&[0xc5u8; 128]);
        assert!(
            KeySet::parse(rsa(&n1024, &[1, 0, 1]).as_bytes()).is_err(),
            "1024 bits, a leading zero byte"
        );
        assert!(KeySet::parse(rsa(&n2048, &[1]).as_bytes()).is_err(), "e = 1");
        assert!(
            KeySet::parse(rsa(&n2048, &[1, 0, 0]).as_bytes()).is_err(),
            "even e"
        );
        let ed =
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert!(KeySet::parse(ed.as_bytes()).is_ok());
    }

    #[test]
    fn a_jwk_alg_pins_the_algorithm() {
        let set = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","alg":"EdDSA",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert!(KeySet::parse(set.as_bytes()).is_ok());
        let wrong = set.replace("\"EdDSA\"", "\"RS256\"");
        assert!(KeySet::parse(wrong.as_bytes()).is_err());
    }
}
