//! Configuration of the credential sources beyond the keys file: JWT
//! issuers (`[auth.jwt]`, `[[auth.jwt.issuers]]`) and origin introspection
//! (`[auth.introspection]`).
//!
//! Every option has a `DEFAULT_*` value here. `validate()` checks the shape
//! of the settings (it reads no file and no environment variable, so
//! `check-config` can run anywhere); `Authenticator::check` then loads what
//! they point at.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// How long a fetched JWKS is used before it is fetched again.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// At most one JWKS fetch for an unknown `kid` this often (per JWKS URL,
/// whatever the number of requests, connections or kids).
pub const DEFAULT_UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(10);
/// Past its max age, while fetches fail, the last good JWKS keeps working
/// this long; after that tokens of that issuer answer 503.
pub const DEFAULT_JWKS_STALE_GRACE: Duration = Duration::from_secs(3600);
/// One JWKS fetch (connect, headers and body) must finish within this.
pub const DEFAULT_JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS document larger than this is refused.
pub const DEFAULT_JWKS_MAX_BYTES: u64 = 256 * 1024;
/// Verified tokens remembered (by the SHA-256 of the whole token); 0 turns
/// the verified-token cache off.
pub const DEFAULT_JWT_CACHE_MAX_ENTRIES: u64 = 10_000;
/// The longest a verified token is answered from memory before its
/// signature is checked again (it also ends at `exp` and at a JWKS change).
pub const DEFAULT_JWT_CACHE_MAX_AGE: Duration = Duration::from_secs(300);
/// Algorithms accepted for an issuer with a JWKS when none are configured.
pub const DEFAULT_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];
/// The only algorithm of an issuer with a shared secret.
pub const SHARED_SECRET_ALGORITHM: &str = "HS256";
/// A shared secret shorter than this (bytes) is refused: HS256 needs 256 bits.
pub const MIN_SHARED_SECRET_BYTES: usize = 32;

/// A whoami answer is trusted this long.
pub const DEFAULT_INTROSPECTION_POSITIVE_TTL: Duration = Duration::from_secs(60);
/// A key the origin refused (401) is refused without asking again this long.
pub const DEFAULT_INTROSPECTION_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// While the origin is unreachable, a cached principal keeps working this
/// long past its TTL.
pub const DEFAULT_INTROSPECTION_GRACE: Duration = Duration::from_secs(300);
/// Cached introspection results (positive and negative) at most.
pub const DEFAULT_INTROSPECTION_MAX_ENTRIES: u64 = 100_000;
/// whoami calls in flight at most (never queued past it).
pub const DEFAULT_INTROSPECTION_MAX_INFLIGHT: usize = 32;
/// New whoami calls per second, all clients together.
pub const DEFAULT_INTROSPECTION_LOOKUPS_PER_SEC: u64 = 200;
/// New whoami calls per second from one client address (IPv6: one /64).
pub const DEFAULT_INTROSPECTION_LOOKUPS_PER_PEER_PER_SEC: u64 = 5;
/// A client address may start this many at once before its rate applies.
pub const DEFAULT_INTROSPECTION_PEER_BURST: u64 = 20;

/// Every algorithm the gateway can verify (jsonwebtoken with aws-lc-rs).
pub const ASYMMETRIC_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `[auth.jwt]`: bearer tokens of three segments are verified as JWTs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Issuers whose tokens are accepted; none means JWTs are refused.
    pub issuers: Vec<IssuerSettings>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// A fetched JWKS (by URL) is refreshed after this many seconds.
    pub jwks_max_age_secs: u64,
    /// An unknown `kid` triggers at most one JWKS fetch this often, per URL.
    pub unknown_kid_refresh_secs: u64,
    /// How long past its max age the last good JWKS keeps working while
    /// fetches fail; then that issuer's tokens answer 503.
    pub jwks_stale_grace_secs: u64,
    /// Deadline of one JWKS fetch, in milliseconds.
    pub jwks_fetch_timeout_ms: u64,
    /// Largest JWKS document accepted, in bytes.
    pub jwks_max_bytes: u64,
    /// Verified tokens remembered; 0: every token is verified every time.
    pub cache_max_entries: u64,
    /// The longest a verified token is remembered, in seconds.
    pub cache_max_age_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            issuers: Vec::new(),
            leeway_secs: DEFAULT_JWT_LEEWAY.as_secs(),
            jwks_max_age_secs: DEFAULT_JWKS_MAX_AGE.as_secs(),
            unknown_kid_refresh_secs: DEFAULT_UNKNOWN_KID_REFRESH.as_secs(),
            jwks_stale_grace_secs: DEFAULT_JWKS_STALE_GRACE.as_secs(),
            jwks_fetch_timeout_ms: DEFAULT_JWKS_FETCH_TIMEOUT.as_millis() as u64,
            jwks_max_bytes: DEFAULT_JWKS_MAX_BYTES,
            cache_max_entries: DEFAULT_JWT_CACHE_MAX_ENTRIES,
            cache_max_age_secs: DEFAULT_JWT_CACHE_MAX_AGE.as_secs(),
        }
    }
}

/// One `[[auth.jwt.issuers]]` table. Exactly one of `jwks_file`,
/// `jwks_url` and `shared_secret_env` says where its keys come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Accepted `aud` values (a string or a list); a token must name one.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Accepted `alg` values. Default: RS256, ES256, EdDSA for a JWKS
    /// issuer; HS256 (the only choice) for a shared-secret issuer.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// A JWKS document on disk, relative to the config file's directory.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS served over http(s); fetched, cached and refreshed.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Environment variable holding an HS256 secret (at least 32 bytes).
    #[serde(default)]
    pub shared_secret_env: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource<'a> {
    File(&'a std::path::Path),
    Url(&'a str),
    SharedSecretEnv(&'a str),
}

impl IssuerSettings {
    /// The one configured key source (`validate` has checked there is one).
    pub fn key_source(&self) -> Option<KeySource<'_>> {
        match (&self.jwks_file, &self.jwks_url, &self.shared_secret_env) {
            (Some(f), None, None) => Some(KeySource::File(f)),
            (None, Some(u), None) => Some(KeySource::Url(u)),
            (None, None, Some(e)) => Some(KeySource::SharedSecretEnv(e)),
            _ => None,
        }
    }

    /// The accepted algorithms, defaults applied.
    pub fn effective_algorithms(&self) -> Vec<String> {
        match &self.algorithms {
            Some(a) => a.clone(),
            None if self.shared_secret_env.is_some() => vec![SHARED_SECRET_ALGORITHM.into()],
            None => DEFAULT_ALGORITHMS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl JwtSettings {
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway_secs)
    }
    pub fn jwks_max_age(&self) -> Duration {
        Duration::from_secs(self.jwks_max_age_secs)
    }
    pub fn unknown_kid_refresh(&self) -> Duration {
        Duration::from_secs(self.unknown_kid_refresh_secs)
    }
    pub fn jwks_stale_grace(&self) -> Duration {
        Duration::from_secs(self.jwks_stale_grace_secs)
    }
    pub fn jwks_fetch_timeout(&self) -> Duration {
        Duration::from_millis(self.jwks_fetch_timeout_ms)
    }

    /// Checks the shape of `[auth.jwt]`; the message names the field
    /// (`auth.jwt.issuers[0].jwks_url: ...`).
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = |v: u64, f: &str| {
            if v == 0 {
                Err(format!("auth.jwt.{f}: must be greater than 0"))
            } else {
                Ok(())
            }
        };
        nonzero(self.jwks_max_age_secs, "jwks_max_age_secs")?;
        nonzero(self.unknown_kid_refresh_secs, "unknown_kid_refresh_secs")?;
        nonzero(self.jwks_fetch_timeout_ms, "jwks_fetch_timeout_ms")?;
        nonzero(self.jwks_max_bytes, "jwks_max_bytes")?;
        if self.cache_max_entries > 1_000_000 {
            return Err("auth.jwt.cache_max_entries: must be at most 1000000".into());
        }
        if self.cache_max_entries > 0 && !(1..=86_400).contains(&self.cache_max_age_secs) {
            return Err("auth.jwt.cache_max_age_secs: must be between 1 and 86400".into());
        }
        if self.leeway_secs > 300 {
            return Err("auth.jwt.leeway_secs: must be at most 300".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let at = format!("auth.jwt.issuers[{i}]");
            if iss.issuer.is_empty() {
                return Err(format!("{at}.issuer: must not be empty"));
            }
            if !seen.insert(iss.issuer.as_str()) {
                return Err(format!("{at}.issuer: the same issuer as an earlier entry"));
            }
            if iss.audience.is_empty() || iss.audience.iter().any(String::is_empty) {
                return Err(format!(
                    "{at}.audience: must name at least one non-empty audience"
                ));
            }
            let Some(source) = iss.key_source() else {
                return Err(format!(
                    "{at}: set exactly one of jwks_file, jwks_url, shared_secret_env"
                ));
            };
            let algs = iss.effective_algorithms();
            if algs.is_empty() {
                return Err(format!("{at}.algorithms: must not be empty"));
            }
            for a in &algs {
                let symmetric = a == SHARED_SECRET_ALGORITHM;
                let known = symmetric || ASYMMETRIC_ALGORITHMS.contains(&a.as_str());
                if !known {
                    return Err(format!(
                        "{at}.algorithms: {} is not supported (one of {}, or HS256 with shared_secret_env)",
                        crate::config::field_path::shown_value(a),
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ));
                }
                match source {
                    KeySource::SharedSecretEnv(_) if !symmetric => {
                        return Err(format!(
                            "{at}.algorithms: an issuer with shared_secret_env accepts HS256 only"
                        ))
                    }
                    KeySource::File(_) | KeySource::Url(_) if symmetric => {
                        return Err(format!(
                            "{at}.algorithms: HS256 needs shared_secret_env (never with a JWKS)"
                        ))
                    }
                    _ => {}
                }
            }
            match source {
                KeySource::Url(u) => {
                    let uri: http::Uri = u.parse().map_err(|e| format!("{at}.jwks_url: not a URL ({e})"))?;
                    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                        return Err(format!("{at}.jwks_url: must be an http:// or https:// URL"));
                    }
                    if crate::config::has_userinfo(&uri) {
                        let field = format!("{at}.jwks_url");
                        return Err(crate::config::USERINFO_REFUSED.replace("{field}", &field));
                    }
                }
                KeySource::File(p) if p.as_os_str().is_empty() => {
                    return Err(format!("{at}.jwks_file: must not be empty"));
                }
                KeySource::SharedSecretEnv("") => {
                    return Err(format!("{at}.shared_secret_env: must not be empty"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `[auth.introspection]`: keys not in the keys file are checked with the
/// origin's `GET /v1/whoami` when `auth.source` is `origin` or `both`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionSettings {
    /// A whoami answer is trusted this many seconds.
    pub positive_ttl_secs: u64,
    /// A key the origin answered 401 for is refused this many seconds
    /// without asking again.
    pub negative_ttl_secs: u64,
    /// While the origin is unreachable, a cached principal keeps working
    /// this many seconds past its TTL (0: not at all).
    pub grace_secs: u64,
    /// Cached results at most (positive and negative together).
    pub max_entries: u64,
    /// whoami calls in flight at most; past it a new key gets 503 at once
    /// (never a place in the origin guard's shared queue).
    pub max_inflight: usize,
    /// New whoami calls per second, all clients together (503 past it).
    pub lookups_per_sec: u64,
    /// New whoami calls per second from one client address, IPv6 by /64
    /// (429 past it).
    pub lookups_per_peer_per_sec: u64,
    /// Burst of new whoami calls one client address may make.
    pub peer_burst: u64,
}

impl Default for IntrospectionSettings {
    fn default() -> Self {
        IntrospectionSettings {
            positive_ttl_secs: DEFAULT_INTROSPECTION_POSITIVE_TTL.as_secs(),
            negative_ttl_secs: DEFAULT_INTROSPECTION_NEGATIVE_TTL.as_secs(),
            grace_secs: DEFAULT_INTROSPECTION_GRACE.as_secs(),
            max_entries: DEFAULT_INTROSPECTION_MAX_ENTRIES,
            max_inflight: DEFAULT_INTROSPECTION_MAX_INFLIGHT,
            lookups_per_sec: DEFAULT_INTROSPECTION_LOOKUPS_PER_SEC,
            lookups_per_peer_per_sec: DEFAULT_INTROSPECTION_LOOKUPS_PER_PEER_PER_SEC,
            peer_burst: DEFAULT_INTROSPECTION_PEER_BURST,
        }
    }
}

impl IntrospectionSettings {
    pub fn positive_ttl(&self) -> Duration {
        Duration::from_secs(self.positive_ttl_secs)
    }
    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.negative_ttl_secs)
    }
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }

    /// Checks `[auth.introspection]`; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (v, f) in [
            (self.positive_ttl_secs, "positive_ttl_secs"),
            (self.negative_ttl_secs, "negative_ttl_secs"),
            (self.max_entries, "max_entries"),
            (self.max_inflight as u64, "max_inflight"),
            (self.lookups_per_sec, "lookups_per_sec"),
            (self.lookups_per_peer_per_sec, "lookups_per_peer_per_sec"),
            (self.peer_burst, "peer_burst"),
        ] {
            if v == 0 {
                return Err(format!("auth.introspection.{f}: must be greater than 0"));
            }
        }
        if self.max_inflight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err("auth.introspection.max_inflight: too large".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(text: &str) -> Result<JwtSettings, String> {
        let s: JwtSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn defaults_are_documented_values() {
        let s = jwt("").unwrap();
        assert_eq!(s.leeway(), DEFAULT_JWT_LEEWAY);
        assert_eq!(s.unknown_kid_refresh(), Duration::from_secs(10));
        let i = IntrospectionSettings::default();
        assert_eq!((i.positive_ttl_secs, i.negative_ttl_secs), (60, 5));
        assert_eq!((i.grace_secs, i.max_entries), (300, 100_000));
        i.validate().unwrap();
    }

    #[test]
    fn issuer_defaults_depend_on_the_key_source() {
        let s = jwt(
            "[[issuers]]\nissuer = \"https://idp\"\naudience = \"gw\"\njwks_url = \"https://idp/jwks\"\n\
             [[issuers]]\nissuer = \"svc\"\naudience = [\"a\", \"b\"]\nshared_secret_env = \"S\"\n",
        )
        .unwrap();
        assert_eq!(s.issuers[0].effective_algorithms(), DEFAULT_ALGORITHMS);
        assert_eq!(s.issuers[1].effective_algorithms(), ["HS256"]);
        assert_eq!(s.issuers[1].audience, ["a", "b"]);
    }

    #[test]
    fn bad_issuers_name_the_field() {
        for (text, field) in [
            ("[[issuers]]\nissuer = \"i\"\naudience = \"a\"\n", "auth.jwt.issuers[0]:"),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"f\"\njwks_url = \"http://x\"\n",
                "auth.jwt.issuers[0]:",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"f\"\nalgorithms = [\"HS256\"]\n",
                "auth.jwt.issuers[0].algorithms",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"f\"\nalgorithms = [\"none\"]\n",
                "auth.jwt.issuers[0].algorithms",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = \"a\"\nshared_secret_env = \"S\"\nalgorithms = [\"RS256\"]\n",
                "auth.jwt.issuers[0].algorithms",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"ftp://x/jwks\"\n",
                "auth.jwt.issuers[0].jwks_url",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://u:IdpPw99@x/jwks\"\n",
                "auth.jwt.issuers[0].jwks_url",
            ),
            (
                "[[issuers]]\nissuer = \"i\"\naudience = []\njwks_file = \"f\"\n",
                "auth.jwt.issuers[0].audience",
            ),
            ("unknown_kid_refresh_secs = 0\n", "auth.jwt.unknown_kid_refresh_secs"),
        ] {
            let e = jwt(text).unwrap_err();
            assert!(e.starts_with(field), "{text:?} -> {e}");
            assert!(!e.contains("Pw99"), "a credential echoed: {e}");
        }
        let e =
            jwt("[[issuers]]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"f\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
