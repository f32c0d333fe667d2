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
    // Both envs are four letters; no search needed.
    let (env, rest) = (rest.get(..4)?, rest.get(4..)?);
    if (env != "live" && env != "test") || !rest.starts_with('_') {
        return None;
    }
    let rest = &rest[1..];
    if rest.len() != KEY_ID_LEN + 1 + SECRET_LEN || rest.as_bytes()[KEY_ID_LEN] != b'_' {
        return None;
    }
    let key_id = &rest[..KEY_ID_LEN];
    let secret = &rest[KEY_ID_LEN + 1..];
    let all = |s: &str, class: u8| s.bytes().all(|c| KEY_BYTE[c as usize] & class != 0);
    if !all(key_id, CROCKFORD) || !all(secret, B64URL) {
        return None;
    }
    Some(ParsedKey { env, key_id })
}

const CROCKFORD: u8 = 1;
const B64URL: u8 = 2;

/// The classes of each byte, as a table: every request checks about 60.
static KEY_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, b'I' | b'L' | b'O' | b'U')) {
            t[i] |= CROCKFORD;
        }
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            t[i] |= B64URL;
        }
        i += 1;
    }
    t
};

pub fn sha256(key: &str) -> [u8; 32] {
    #[cfg(test)]
    tests::WORK.with(|w| w.set((w.get().0 + 1, w.get().1)));
    Sha256::digest(key.as_bytes()).into()
}

/// What an unknown key id's key is compared with. No key hashes to it
/// (finding one would be a SHA-256 preimage), and it is compared only to
/// spend the same time as a real record.
const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

/// Constant-time digest comparison, a 64-bit word at a time: as safe as
/// comparing byte by byte (`subtle` hides every word from the optimizer),
/// with an eighth of the barriers on the path every request takes.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    #[cfg(test)]
    tests::WORK.with(|w| w.set((w.get().0, w.get().1 + 1)));
    let words = |d: &[u8; 32]| -> [u64; 4] {
        std::array::from_fn(|i| u64::from_ne_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
    };
    bool::from(words(a)[..].ct_eq(&words(b)[..]))
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
    /// foldhash: looked up on every request (the ids are not secret).
    by_id: HashMap<Box<str>, KeyRecord, foldhash::fast::RandomState>,
}

impl KeyStore {
    pub fn load(path: &Path) -> Result<KeyStore, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
        KeyStore::parse(&text).map_err(|e| format!("keys file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<KeyStore, String> {
        // Type errors name the entry and field (`keys[2].tier: invalid type ...`).
        let file: KeysFile =
            toml::from_str(text).map_err(|e| crate::config::describe_toml_error(text, &e))?;
        let mut by_id = HashMap::with_capacity_and_hasher(file.keys.len(), Default::default());
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
                rate_key: super::rate_key(&[super::RATE_SOURCE_KEY, &k.org, &k.key_id]),
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

    /// Tiers named by a key, each with one key id that names it (for a
    /// config reload that would remove a tier in use).
    pub fn tiers_in_use(&self) -> std::collections::BTreeMap<&str, &str> {
        let mut used = std::collections::BTreeMap::new();
        for (id, r) in &self.by_id {
            used.entry(&*r.principal.tier).or_insert(&**id);
        }
        used
    }

    /// The principal and environment of a key id, without any secret (the
    /// admin endpoint `GET /admin/keys/:keyId`; the digest never leaves).
    pub fn describe(&self, key_id: &str) -> Option<(&str, Arc<Principal>)> {
        self.by_id.get(key_id).map(|r| (&*r.env, r.principal.clone()))
    }

    /// Authenticates a presented key. `expected_env` is the gateway's
    /// environment (`None` accepts both).
    pub fn authenticate(
        &self,
        key: &str,
        expected_env: Option<&str>,
    ) -> Result<Arc<Principal>, KeyRejection> {
        let parsed = parse_key(key).ok_or(KeyRejection::Malformed)?;
        let rec = self.by_id.get(parsed.key_id);
        // An unknown key id is hashed and compared too, against a fixed
        // dummy digest, so its answer takes as long as a known id's with a
        // wrong secret: timing does not tell which key ids exist.
        let want = rec.map_or(&DUMMY_DIGEST, |r| &r.sha256);
        let matches = digests_equal(&sha256(key), want);
        let rec = rec.ok_or(KeyRejection::UnknownKey)?;
        if !matches {
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

    thread_local! {
        /// (SHA-256 digests, constant-time compares) done on this thread.
        pub(super) static WORK: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    }

    /// The work `f` does: digests and compares.
    fn work_of(f: impl FnOnce()) -> (u32, u32) {
        WORK.with(|w| w.set((0, 0)));
        f();
        WORK.with(|w| w.get())
    }

    #[test]
    fn an_unknown_key_id_costs_what_a_known_one_with_a_wrong_secret_costs() {
        let s = store();
        let wrong_secret = KEY.replace("abcdef", "abcdeg");
        let unknown_id = KEY.replace("01HZDEM00000000A", "01HZDEM00000000B");
        let known = work_of(|| {
            assert_eq!(
                s.authenticate(&wrong_secret, None).unwrap_err(),
                KeyRejection::WrongSecret
            )
        });
        let unknown = work_of(|| {
            assert_eq!(
                s.authenticate(&unknown_id, None).unwrap_err(),
                KeyRejection::UnknownKey
            )
        });
        assert_eq!(known, (1, 1));
        assert_eq!(
            unknown, known,
            "an unknown key id is hashed and compared like a known one"
        );
    }

    #[test]
    fn digests_equal_only_when_every_byte_is() {
        let a = sha256(KEY);
        assert!(digests_equal(&a, &a.clone()));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x01;
            assert!(!digests_equal(&a, &b), "byte {i}");
        }
    }

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
    fn every_byte_in_every_position_is_judged_by_the_key_grammar() {
        // The grammar read literally: which bytes each position admits.
        let admits = |pos: usize, c: u8| -> bool {
            let (id, secret) = (8..8 + KEY_ID_LEN, 8 + KEY_ID_LEN + 1..);
            if id.contains(&pos) {
                c.is_ascii_digit() || (c.is_ascii_uppercase() && !b"ILOU".contains(&c))
            } else if secret.contains(&pos) {
                c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
            } else {
                c == KEY.as_bytes()[pos]
            }
        };
        for pos in 0..KEY.len() {
            for c in 0..=127u8 {
                let mut b = KEY.as_bytes().to_vec();
                b[pos] = c;
                let key = String::from_utf8(b).unwrap();
                let want = admits(pos, c);
                assert_eq!(parse_key(&key).is_some(), want, "{key:?}");
            }
        }
        assert!(parse_key(&KEY.replace("lp_test", "lp_live")).is_some());
        assert!(parse_key("lp_te\u{e9}t_01HZDEM00000000A_x").is_none());
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
