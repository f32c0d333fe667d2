//! Authentication: who is calling, from the credential on the request.
//!
//! `X-Api-Key` or `Authorization: Bearer`; when both are present `X-Api-Key`
//! wins. Every refusal is the same 401 body; the reason is only logged and
//! counted.

pub mod authenticator;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod keys_check;
pub mod lookup_limit;
pub mod reload;
pub mod scopes;
pub mod settings;
pub mod token_cache;

use http::header::{HeaderMap, HeaderName};
use scopes::ScopeSet;

pub use keys::{KeyRejection, KeyStore};

/// An authenticated caller. Shared (`Arc`) from the key store, so the hit
/// path clones a pointer, not strings.
#[derive(Debug, Clone)]
pub struct Principal {
    pub org: std::sync::Arc<str>,
    pub key_id: std::sync::Arc<str>,
    pub scopes: ScopeSet,
    pub tier: std::sync::Arc<str>,
    /// The rate-limit identity: where the credential came from, the
    /// organization and the key id or subject, encoded so that no two
    /// principals share it ([`rate_key`]). Never a bare key id: a JWT
    /// whose `sub` equals another organization's API key id must not spend
    /// that key's budget.
    pub rate_key: std::sync::Arc<str>,
}

/// The source of an API key (keys file or origin introspection: one key
/// space, one budget per key).
pub const RATE_SOURCE_KEY: &str = "key";

/// A rate-limit identity from its parts (source, then organization and id;
/// a JWT adds its issuer). Each part is length-prefixed, so the encoding
/// is injective whatever characters the parts (claims) hold.
pub fn rate_key(parts: &[&str]) -> std::sync::Arc<str> {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        out.push_str(itoa::Buffer::new().format(p.len()));
        out.push(':');
        out.push_str(p);
    }
    out.into()
}

/// The credential presented on a request, borrowed from its headers.
/// `X-Api-Key` wins over `Authorization: Bearer`.
/// A constant so the lookup does not parse the name on every request.
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

pub fn presented_credential(headers: &HeaderMap) -> Result<&str, KeyRejection> {
    if let Some(v) = headers.get(&X_API_KEY) {
        return v.to_str().map(str::trim).map_err(|_| KeyRejection::Malformed);
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| KeyRejection::Malformed)?;
        let (scheme, token) = v.split_once(' ').ok_or(KeyRejection::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(KeyRejection::Malformed);
        }
        return Ok(token.trim());
    }
    Err(KeyRejection::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_api_key_wins_over_bearer() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer from-bearer".parse().unwrap());
        assert_eq!(presented_credential(&h).unwrap(), "from-bearer");
        h.insert("x-api-key", "from-header".parse().unwrap());
        assert_eq!(presented_credential(&h).unwrap(), "from-header");
    }

    #[test]
    fn rate_keys_never_collide_across_part_boundaries() {
        assert_ne!(rate_key(&["key", "a:b", "c"]), rate_key(&["key", "a", "b:c"]));
        assert_ne!(rate_key(&["key", "o", "K"]), rate_key(&["jwt", "o", "K"]));
        assert_eq!(&*rate_key(&["key", "org", "K1"]), "3:key3:org2:K1");
    }

    #[test]
    fn missing_and_non_bearer_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_credential(&h).unwrap_err(), KeyRejection::Missing);
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented_credential(&h).unwrap_err(), KeyRejection::Malformed);
    }
}
