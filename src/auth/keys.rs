//! API keys: parsing `lp_<env>_<keyId>_<secret>`, the keys file, and the
//! constant-time check.
//!
//! The keys file stores only the SHA-256 of each whole key, looked up by the
//! key id inside the key. A presented key is hashed and compared with
//! `subtle::ConstantTimeEq`, so timing says nothing about how much matched.

use super::scopes::ScopeSet;
use super::Principal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Why a key was refused. Goes to logs and metrics, never to the caller
/// (every refusal answers the same 401 body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRejection {
    Missing,
    Malformed,
    UnknownKey,
    WrongSecret,
    EnvMismatch,
}

impl KeyRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRejection::Missing => "missing",
            KeyRejection::Malformed => "malformed",
            KeyRejection::UnknownKey => "unknown_key",
            KeyRejection::WrongSecret => "wrong_secret",
            KeyRejection::EnvMismatch => "env_mismatch",
        }
    }
}

/// The parts of a well-formed key. Borrowed from the header value.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub env: &'a str,
    pub key_id: &'a str,
}

const KEY_ID_LEN: usize = 16;
const SECRET_LEN: usize = 43;

/// Checks the key's shape: `lp_`, env `live|test`, 16 Crockford base32
/// chars, `_`, 43 base64url chars. The secret itself is not returned.
pub fn parse_key(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix("lp_")?;
    let (env, rest) = rest.split_once('_')?;
    if env != "live" && env != "test" {
        return None;
    }
    if rest.len() != KEY_ID_LEN + 1 + SECRET_LEN || rest.as_bytes()[KEY_ID_LEN] != b'_' {
        return None;
    }
    let key_id = &rest[..KEY_ID_LEN];
    let secret = &rest[KEY_ID_LEN + 1..];
    let crockford = |c: u8| c.is_ascii_digit() || (c.is_ascii_uppercase() && !b"ILOU".contains(&c));
    let b64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    if !key_id.bytes().all(crockford) || !secret.bytes().all(b64url) {
        return None;
    }
    Some(ParsedKey { env, key_id })
}

pub fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// One line of the keys file, as `hash-key` prints it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRecordFile {
    key_id: String,
    org: String,
    env: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_tier")]
    tier: String,
    sha256: String,
}

fn default_tier() -> String {
    "standard".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyRecordFile>,
}

struct KeyRecord {
    env: Box<str>,
    sha256: [u8; 32],
    principal: Arc<Principal>,
}

/// The loaded keys file. Immutable; a reload builds a new one.
#[derive(Default)]
pub struct KeyStore {
    by_id: HashMap<Box<str>, KeyRecord>,
}

impl KeyStore {
    pub fn load(path: &Path) -> Result<KeyStore, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
        KeyStore::parse(&text).map_err(|e| format!("keys file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<KeyStore, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_id = HashMap::with_capacity(file.keys.len());
        for (i, k) in file.keys.into_iter().enumerate() {
            let at = format!("keys[{i}]");
            if k.key_id.len() != KEY_ID_LEN
                || parse_key(&format!("lp_test_{}_{}", k.key_id, "A".repeat(SECRET_LEN))).is_none()
            {
                return Err(format!("{at}.key_id: must be 16 Crockford base32 characters"));
            }
            if k.env != "live" && k.env != "test" {
                return Err(format!("{at}.env: must be \"live\" or \"test\""));
            }
            let scopes = ScopeSet::parse(k.scopes.iter().map(String::as_str))
                .map_err(|e| format!("{at}.scopes: {e}"))?;
            let mut sha = [0u8; 32];
            hex::decode_to_slice(&k.sha256, &mut sha)
                .map_err(|_| format!("{at}.sha256: must be 64 hex characters"))?;
            if k.org.is_empty() {
                return Err(format!("{at}.org: must not be empty"));
            }
            let principal = Arc::new(Principal {
                org: k.org.into(),
                key_id: k.key_id.clone().into(),
                scopes,
                tier: k.tier.into(),
            });
            let rec = KeyRecord {
                env: k.env.into(),
                sha256: sha,
                principal,
            };
            if by_id.insert(k.key_id.clone().into_boxed_str(), rec).is_some() {
                return Err(format!("{at}.key_id: duplicate key id {}", k.key_id));
            }
        }
        Ok(KeyStore { by_id })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Authenticates a presented key. `expected_env` is the gateway's
    /// environment (`None` accepts both).
    pub fn authenticate(
        &self,
        key: &str,
        expected_env: Option<&str>,
    ) -> Result<Arc<Principal>, KeyRejection> {
        let parsed = parse_key(key).ok_or(KeyRejection::Malformed)?;
        let rec = self.by_id.get(parsed.key_id).ok_or(KeyRejection::UnknownKey)?;
        let presented = sha256(key);
        if !bool::from(presented.ct_eq(&rec.sha256)) {
            return Err(KeyRejection::WrongSecret);
        }
        if &*rec.env != parsed.env || expected_env.is_some_and(|e| e != parsed.env) {
            return Err(KeyRejection::EnvMismatch);
        }
        Ok(rec.principal.clone())
    }
}

/// The keys-file entry for a key, as printed by `layers-gateway hash-key`.
pub fn keys_file_entry(key: &str, org: &str, scopes: &[&str], tier: &str) -> Result<String, String> {
    let p = parse_key(key).ok_or("not a Layers API key (lp_<env>_<keyId>_<secret>)")?;
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    Ok(format!(
        "[[keys]]\nkey_id = \"{}\"\norg = \"{}\"\nenv = \"{}\"\nscopes = [{}]\ntier = \"{}\"\nsha256 = \"{}\"\n",
        p.key_id,
        org,
        p.env,
        scopes.join(", "),
        tier,
        hex::encode(sha256(key))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "lp_test_01HZDEM00000000A_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

    fn store() -> KeyStore {
        KeyStore::parse(&keys_file_entry(KEY, "org_a", &["content:read"], "standard").unwrap()).unwrap()
    }

    #[test]
    fn parses_well_formed_keys_only() {
        assert_eq!(parse_key(KEY).unwrap().key_id, "01HZDEM00000000A");
        assert!(parse_key(&KEY.replace("lp_test", "lp_prod")).is_none());
        assert!(parse_key(&KEY[..KEY.len() - 1]).is_none());
        assert!(parse_key(&KEY.replace("01HZ", "01hz")).is_none());
        assert!(parse_key(&KEY.replace("01HZ", "01HI")).is_none());
        assert!(parse_key("").is_none());
    }

    #[test]
    fn right_key_authenticates() {
        let p = store().authenticate(KEY, Some("test")).unwrap();
        assert_eq!(&*p.org, "org_a");
    }

    #[test]
    fn every_failure_is_classified() {
        let s = store();
        let wrong = KEY.replace("abcdef", "abcdeg");
        assert_eq!(
            s.authenticate(&wrong, None).unwrap_err(),
            KeyRejection::WrongSecret
        );
        assert_eq!(s.authenticate("lp_x", None).unwrap_err(), KeyRejection::Malformed);
        let other = KEY.replace("01HZDEM00000000A", "01HZDEM00000000B");
        assert_eq!(
            s.authenticate(&other, None).unwrap_err(),
            KeyRejection::UnknownKey
        );
        assert_eq!(
            s.authenticate(KEY, Some("live")).unwrap_err(),
            KeyRejection::EnvMismatch
        );
    }

    #[test]
    fn bad_keys_files_name_the_field() {
        let e = KeyStore::parse("[[keys]]\nkey_id=\"x\"\norg=\"o\"\nenv=\"test\"\nsha256=\"00\"\n")
            .err()
            .unwrap();
        assert!(e.contains("keys[0].key_id"), "{e}");
        let e = KeyStore::parse("[[keys]]\nkey_id=\"x\"\nbogus=1\n")
            .err()
            .unwrap();
        assert!(e.contains("bogus"), "{e}");
    }
}
