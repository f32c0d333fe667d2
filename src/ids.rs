//! Identifiers that cross the gateway: container ids, asset ids and request ids.
//!
//! Parsing is strict and allocation-light: a container id is canonicalized to
//! one 128-bit value so `cnt_<UUID>` and the bare UUID, in any hex case, name
//! the same cache entry.

use http::header::HeaderValue;
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

/// Value of each byte as a hex digit, `NOT_HEX` when it is not one.
static HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => NOT_HEX,
        };
        c += 1;
    }
    t
};
const NOT_HEX: u8 = 0xff;

/// Parses a hyphenated UUID (8-4-4-4-12) in any hex case. Runs on every
/// content request, hence the table and the group-wise loop.
fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut v: u128 = 0;
    let mut bad = 0u8;
    for group in [&b[0..8], &b[9..13], &b[14..18], &b[19..23], &b[24..36]] {
        for &c in group {
            let d = HEX[c as usize];
            bad |= d & 0xf0;
            v = (v << 4) | u128::from(d & 0x0f);
        }
    }
    (bad == 0).then_some(v)
}

/// Longest asset id the gateway accepts. Real ids are far shorter
/// (`video-<uuid>` is 42 bytes); the bound keeps hostile paths out of maps.
pub const MAX_ASSET_ID_LEN: usize = 128;

/// Checks an asset id from a path segment. Asset ids are opaque, but they are
/// URL file names, so anything outside `[A-Za-z0-9._-]` (a `%`, a slash, a
/// space) cannot name an asset and is answered 404 without an origin call.
pub fn valid_asset_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ASSET_ID_LEN && s.bytes().all(|c| ASSET_ID_BYTE[c as usize])
}

/// `[A-Za-z0-9._-]`, as a table: checked on every asset request.
static ASSET_ID_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric() || matches!(c as u8, b'-' | b'_' | b'.');
        c += 1;
    }
    t
};

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

/// `request_id_from_header` for the request path, as the header value
/// itself: a kept id is the incoming value (shared, not copied), a fresh
/// one is rendered without an allocation of its own.
pub fn request_id_value(incoming: Option<&HeaderValue>) -> HeaderValue {
    match incoming {
        Some(v) if is_well_formed_request_id(v.as_bytes()) => v.clone(),
        _ => {
            let mut ulid = [0u8; ulid::ULID_LEN];
            let ulid = fresh_ulid().array_to_str(&mut ulid);
            crate::header_text::render(|t| {
                t.push(b"req_").push(ulid.as_bytes());
            })
        }
    }
}

thread_local! {
    /// Request ids need uniqueness, not secrecy: a per-thread xoshiro
    /// seeded from the OS is plenty and costs a fraction of `ThreadRng`.
    static ID_RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
}

fn fresh_ulid() -> ulid::Ulid {
    ID_RNG.with(|rng| {
        ulid::Ulid::from_datetime_with_source(std::time::SystemTime::now(), &mut *rng.borrow_mut())
    })
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
    fn every_byte_in_every_position_parses_as_the_plain_reading_says() {
        // Reference: the UUID grammar read literally, one byte at a time.
        let plain = |b: &[u8]| -> Option<u128> {
            if b.len() != 36 {
                return None;
            }
            let mut v = 0u128;
            for (i, &c) in b.iter().enumerate() {
                if matches!(i, 8 | 13 | 18 | 23) {
                    if c != b'-' {
                        return None;
                    }
                    continue;
                }
                v = (v << 4) | u128::from((c as char).to_digit(16)?);
            }
            Some(v)
        };
        let good = *b"0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e";
        for pos in 0..good.len() {
            for byte in 0..=255u8 {
                let mut b = good;
                b[pos] = byte;
                let Ok(s) = std::str::from_utf8(&b) else { continue };
                assert_eq!(parse_uuid(s), plain(&b), "{s:?}");
            }
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

    #[test]
    fn request_id_values_keep_good_ids_and_mint_distinct_fresh_ones() {
        let good = HeaderValue::from_static("req_abc-1_2");
        assert_eq!(request_id_value(Some(&good)), good);
        let bad = HeaderValue::from_static("req_a b");
        let fresh: Vec<HeaderValue> = [None, Some(&bad), None]
            .into_iter()
            .map(request_id_value)
            .collect();
        for id in &fresh {
            let text = id.to_str().unwrap();
            assert!(text.starts_with("req_") && text.len() == 30, "{text}");
            assert!(text[4..].parse::<ulid::Ulid>().is_ok(), "{text}");
        }
        assert_ne!(fresh[0], fresh[2]);
    }
}
