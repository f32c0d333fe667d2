//! Authenticating what the gateway writes to Redis: every stream entry and
//! every fence record carries an HMAC-SHA256 of its payload under the
//! cluster secret (`cluster.secret` / `cluster.secret_env`).
//!
//! Why: anything that can write to the Redis (another deployment or tenant
//! sharing it, an operator's tool, a compromised client) could otherwise
//! append a well-formed `generated` dated in the future and lift a
//! tombstone on every instance. With the MAC such an entry is refused: the
//! reader counts it (`cluster_entries_unverified_total`), logs it (never
//! the secret), and treats it as a gap (flush and rebuild), since a forged
//! entry may also have displaced genuine ones. A fence record that fails
//! verification is skipped by a rebuild (a forged record could only add a
//! fence; skipping it loses nothing genuine).
//!
//! The MAC covers the stream's name as well as the payload, so an entry
//! copied from another deployment sharing the secret does not verify here.
//!
//! What it does **not** cover: where and when a payload sits. So, to
//! anything with write access to the Redis:
//!
//! - a *replay* of one of this deployment's genuine entries or records
//!   verifies. It is met as a duplicate by every instance that applied the
//!   event (a rebuild marks the event ids of the records it applies, too),
//!   for as long as the bounded dedupe remembers it; beyond that, its dates
//!   keep it from undoing a later change (a tombstone's date only moves
//!   forward, a `generated` lifts only a tombstone dated no later, a floor
//!   only rises: see `cache/invalidate.rs`). It can re-tombstone a
//!   container re-created since (a 404, never old data). The MAC is not
//!   bound to the entry's ordinal: the publishing script assigns it after
//!   the publisher signed.
//! - *deleting* entries is a gap by their ordinals, and deleting the whole
//!   fence set by its marker (`gap.rs`); deleting one fence record is not
//!   detectable (a later joiner lacks that fence).
//! - a container's fence record (`fence_record.rs`) is sealed whole, not
//!   bound to a version: writing back an older genuine version of it loses
//!   what was merged since, as deleting it would.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the hex MAC.
pub const MAC_HEX_LEN: usize = 64;

/// The key entries are signed with. Its `Debug` never shows it.
#[derive(Clone)]
pub struct EntryKey {
    secret: Vec<u8>,
    /// The stream's name, bound into every MAC.
    stream: Vec<u8>,
}

impl std::fmt::Debug for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryKey(***)")
    }
}

impl EntryKey {
    pub fn new(secret: &[u8], stream: &str) -> EntryKey {
        EntryKey {
            secret: secret.to_vec(),
            stream: stream.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(&(self.stream.len() as u64).to_be_bytes());
        m.update(&self.stream);
        m
    }

    /// The hex MAC of `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let mut m = self.mac();
        m.update(payload);
        hex::encode(m.finalize().into_bytes())
    }

    /// Whether `mac_hex` is `payload`'s MAC (constant time).
    pub fn verify(&self, payload: &[u8], mac_hex: &[u8]) -> bool {
        let Ok(tag) = hex::decode(mac_hex) else {
            return false;
        };
        let mut m = self.mac();
        m.update(payload);
        m.verify_slice(&tag).is_ok()
    }

    /// A fence record: `<mac>.<payload>` (its container's value in the
    /// fence records hash, `fence_record.rs`).
    pub fn seal_record(&self, payload: &str) -> String {
        format!("{}.{payload}", self.sign(payload.as_bytes()))
    }

    /// The payload of a fence record whose MAC verifies.
    pub fn open_record<'a>(&self, record: &'a [u8]) -> Option<&'a [u8]> {
        if record.len() <= MAC_HEX_LEN || record[MAC_HEX_LEN] != b'.' {
            return None;
        }
        let (mac, rest) = record.split_at(MAC_HEX_LEN);
        let payload = &rest[1..];
        self.verify(payload, mac).then_some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_payload_verifies_and_any_change_does_not() {
        let k = EntryKey::new(b"0123456789abcdef", "layers:invalidations");
        let mac = k.sign(b"{\"a\":1}");
        assert_eq!(mac.len(), MAC_HEX_LEN);
        assert!(k.verify(b"{\"a\":1}", mac.as_bytes()));
        assert!(!k.verify(b"{\"a\":2}", mac.as_bytes()));
        assert!(!k.verify(b"{\"a\":1}", b"not hex"));
        let other_secret = EntryKey::new(b"0123456789abcdeX", "layers:invalidations");
        assert!(!other_secret.verify(b"{\"a\":1}", mac.as_bytes()));
        let other_stream = EntryKey::new(b"0123456789abcdef", "other:stream");
        assert!(!other_stream.verify(b"{\"a\":1}", mac.as_bytes()));
    }

    #[test]
    fn fence_records_open_only_when_sealed_by_the_same_key() {
        let k = EntryKey::new(b"0123456789abcdef", "s");
        let r = k.seal_record("{\"x\":true}");
        assert_eq!(k.open_record(r.as_bytes()), Some(&b"{\"x\":true}"[..]));
        assert_eq!(k.open_record(b"{\"x\":true}"), None);
        let mut forged = r.clone().into_bytes();
        *forged.last_mut().unwrap() = b'!';
        assert_eq!(k.open_record(&forged), None);
        assert!(!format!("{k:?}").contains("0123"));
    }
}
