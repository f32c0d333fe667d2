//! Identifiers that cross the gateway: container ids, asset ids and request ids.
//!
//! Parsing is strict and allocation-light: a container id is canonicalized to
//! one 128-bit value so `cnt_<UUID>` and the bare UUID, in any hex case, name
//! the same cache entry.

use std::fmt;

/// A content container id. Stored as the UUID's 128 bits; displayed in the
/// canonical `cnt_<lowercase-hyphenated-uuid>` form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(u128);

impl ContainerId {
    /// Parses `cnt_<uuid>` or a bare `<uuid>` (8-4-4-4-12 hex, any case).
    pub fn parse(s: &str) -> Option<Self> {
        let uuid = s.strip_prefix("cnt_").unwrap_or(s);
        parse_uuid(uuid).map(ContainerId)
    }

    pub fn from_u128(v: u128) -> Self {
        ContainerId(v)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The bare, lowercase, hyphenated UUID.
    pub fn uuid_string(self) -> String {
        let h = format!("{:032x}", self.0);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cnt_{}", self.uuid_string())
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses a hyphenated UUID (8-4-4-4-12) in any hex case.
fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u128;
    }
    Some(v)
}

/// Longest asset id the gateway accepts. Real ids are far shorter
/// (`video-<uuid>` is 42 bytes); the bound keeps hostile paths out of maps.
pub const MAX_ASSET_ID_LEN: usize = 128;

/// Checks an asset id from a path segment. Asset ids are opaque, but they are
/// URL file names, so anything outside `[A-Za-z0-9._-]` (a `%`, a slash, a
/// space) cannot name an asset and is answered 404 without an origin call.
pub fn valid_asset_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ASSET_ID_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Request ids: a well-formed incoming id is kept, otherwise `req_<ULID>`.
pub fn request_id_from_header(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(v) if is_well_formed_request_id(v) => {
            // Checked ASCII above, so this cannot fail.
            String::from_utf8(v.to_vec()).unwrap_or_else(|_| new_request_id())
        }
        _ => new_request_id(),
    }
}

pub fn new_request_id() -> String {
    format!("req_{}", ulid::Ulid::new())
}

/// `req_[A-Za-z0-9_-]{1,96}` or a UUID.
pub fn is_well_formed_request_id(v: &[u8]) -> bool {
    if let Some(rest) = v.strip_prefix(b"req_") {
        return (1..=96).contains(&rest.len())
            && rest
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'));
    }
    std::str::from_utf8(v).ok().and_then(parse_uuid).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_container_id_forms_in_any_case_are_one_id() {
        let a = ContainerId::parse("cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e").unwrap();
        let b = ContainerId::parse("0B8F5A3E-6A63-4C5E-9D36-1F2A3B4C5D6E").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e");
    }

    #[test]
    fn malformed_container_ids_are_rejected() {
        for bad in [
            "",
            "cnt_",
            "cnt_0b8f5a3e6a634c5e9d361f2a3b4c5d6e",
            "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6g",
            "cnt_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e0",
            "CNT_0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e",
            "cnt%2F0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6",
            "ast_123",
        ] {
            assert!(ContainerId::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn asset_ids_are_file_names() {
        assert!(valid_asset_id("video-0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e"));
        assert!(valid_asset_id("slide-3"));
        assert!(valid_asset_id("ast_01HZ"));
        assert!(!valid_asset_id("a%2Fb"));
        assert!(!valid_asset_id("a/b"));
        assert!(!valid_asset_id(""));
        assert!(!valid_asset_id(&"x".repeat(129)));
    }

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        assert_eq!(request_id_from_header(Some(b"req_abc-1_2")), "req_abc-1_2");
        let uuid = b"0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
        assert_eq!(request_id_from_header(Some(uuid)).as_bytes(), uuid);
        for bad in [&b"req_"[..], b"req_a b", b"hello", b"req_\xff"] {
            let id = request_id_from_header(Some(bad));
            assert!(id.starts_with("req_") && id.len() == 30, "{id}");
        }
        let long = format!("req_{}", "a".repeat(97));
        assert_ne!(request_id_from_header(Some(long.as_bytes())), long);
    }
}
