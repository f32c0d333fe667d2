//! Configuration of the credential sources beyond the keys file: JWT
//! issuers and origin introspection (`[auth.jwt]`, `[auth.introspection]`).

use serde::Deserialize;

/// `[auth.jwt]`: bearer tokens of three segments are verified as JWTs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Issuers whose tokens are accepted; none means JWTs are refused.
    pub issuers: Vec<toml::Value>,
}

/// `[auth.introspection]`: keys not in the keys file are checked with the
/// origin's `GET /v1/whoami` when `auth.source` is `origin` or `both`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionSettings {}
