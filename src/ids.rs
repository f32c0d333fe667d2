//! Identifiers that cross the gateway: container ids, asset ids and request ids.
//!
//! Parsing is strict and allocation-light: a container id is canonicalized to
//! one 128-bit value so `cnt_<UUID>` and the bare UUID, in any hex case, name
//! the same cache entry, and an asset id is decoded to one canonical string
//! so `photo%402x` and `photo@2x` do too (and meet the same revocations).

use http::header::HeaderValue;
use std::borrow::Cow;
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

/// Longest asset id the gateway accepts, in bytes of the decoded id. Real
/// ids are far shorter (`video-<uuid>` is 42 bytes); the bound keeps hostile
/// paths out of maps.
pub const MAX_ASSET_ID_LEN: usize = 128;

/// Whether an asset id can be revoked: what a webhook records as revoked
/// (`events::webhook`) and a fence holds, 1 to [`MAX_ASSET_ID_LEN`] bytes
/// without a control character. Black-box round 87: a body's asset whose
/// id was longer was served, and kept serving from a lagging replica after
/// a regenerate that named it, because the webhook could not record it. An
/// asset whose id is not revocable is never served: it is left out of
/// container bodies (`cache::entry::render`, `ContentCache::judge_origin`).
pub fn revocable_asset_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ASSET_ID_LEN && !id.chars().any(char::is_control)
}

/// Parses the asset id of a raw (still percent-encoded) path segment into
/// its canonical form: the decoded id, the one spelling the cache, the
/// fence and the comparison with a container's `assets[].assetId` see.
///
/// Asset ids are opaque, so every character RFC 3986 allows in a path
/// segment is accepted as it is (unreserved `A-Za-z0-9-._~`, the
/// sub-delims `!$&'()*+,=` and `:` `@`), but not `;` (a path parameter to
/// some servers), and so is any percent-encoded octet, decoded here
/// (`photo%402x` is `photo@2x`, hex in either case; `+` stays a plus).
/// Refused (`None`): an empty segment, a byte outside those sets (`\`, a
/// space, a raw control or non-ASCII byte), malformed percent-encoding, and
/// a decoded id that is not a [`valid_asset_id`]: one with an ASCII
/// character outside those sets (`/`, `\`, `;`, a space, a control such as
/// `%00`, and `%`, so a double encoding such as `%2540` never names `@`,
/// whichever component decodes it twice), a non-ASCII control, invalid
/// UTF-8, `.` or `..`, or more than [`MAX_ASSET_ID_LEN`] bytes.
///
/// Runs on every asset request: an id of `[A-Za-z0-9._-]` only (the common
/// case) costs one table lookup per byte and borrows the segment.
pub fn parse_asset_id(seg: &str) -> Option<Cow<'_, str>> {
    let b = seg.as_bytes();
    if !b.is_empty() && b.len() <= MAX_ASSET_ID_LEN && b.iter().all(|&c| ASSET_ID_BYTE[c as usize]) {
        return (!is_dots(b)).then_some(Cow::Borrowed(seg));
    }
    parse_asset_id_escaped(seg)
}

/// [`parse_asset_id`] beyond `[A-Za-z0-9._-]`: other path characters, and
/// percent-encoding (the only case that allocates).
#[cold]
fn parse_asset_id_escaped(seg: &str) -> Option<Cow<'_, str>> {
    let b = seg.as_bytes();
    // Each decoded byte takes at most three raw ones.
    if b.is_empty() || b.len() > 3 * MAX_ASSET_ID_LEN {
        return None;
    }
    if !b.contains(&b'%') {
        let ok = b.len() <= MAX_ASSET_ID_LEN && b.iter().all(|&c| ASSET_ID_RAW[c as usize] == RAW_LITERAL);
        return (ok && !is_dots(b)).then_some(Cow::Borrowed(seg));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match ASSET_ID_RAW[b[i] as usize] {
            RAW_LITERAL => {
                out.push(b[i]);
                i += 1;
            }
            RAW_PERCENT => {
                let hi = HEX[*b.get(i + 1)? as usize];
                let lo = HEX[*b.get(i + 2)? as usize];
                if (hi | lo) & 0xf0 != 0 {
                    return None;
                }
                out.push((hi << 4) | lo);
                i += 3;
            }
            _ => return None,
        }
    }
    let id = String::from_utf8(out).ok()?;
    valid_asset_id(&id).then_some(Cow::Owned(id))
}

/// Whether `s` is an asset id in canonical (decoded) form, as a webhook, a
/// container body or [`parse_asset_id`] names it: 1 to [`MAX_ASSET_ID_LEN`]
/// bytes, not `.` or `..`, of RFC 3986 path characters but `;`
/// (`A-Za-z0-9-._~!$&'()*+,=:@`) and non-ASCII characters other than
/// controls. So no `/`, `\`, `;`, `%`, space or control. Every such id has
/// exactly one spelling in a path, [`encode_asset_id`], that
/// [`parse_asset_id`] reads back as it.
pub fn valid_asset_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ASSET_ID_LEN
        && b.iter().all(|&c| DECODED_BYTE[c as usize])
        && !is_dots(b)
        && (s.is_ascii() || !s.chars().any(char::is_control))
}

/// The path spelling of a canonical asset id, for a request to the origin:
/// path characters as they are ([`parse_asset_id`]'s literal set, but
/// `+`, written `%2B`), every other byte (of a valid id: of a non-ASCII character) as `%XX` in
/// uppercase hex (RFC 3986 section 6.2.2.1).
/// Borrows when nothing needs encoding.
pub fn encode_asset_id(id: &str) -> Cow<'_, str> {
    // `+` too: some servers (Java's `URLDecoder`) read it as a space.
    let literal = |c: u8| ASSET_ID_RAW[c as usize] == RAW_LITERAL && c != b'+';
    let b = id.as_bytes();
    if b.iter().all(|&c| literal(c)) {
        return Cow::Borrowed(id);
    }
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(b.len() * 3);
    for &c in b {
        if literal(c) {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(UPPER[usize::from(c >> 4)]));
            out.push(char::from(UPPER[usize::from(c & 0xf)]));
        }
    }
    Cow::Owned(out)
}

/// `.` or `..`: a dot-segment, never an id.
fn is_dots(b: &[u8]) -> bool {
    matches!(b, b"." | b"..")
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

const RAW_REFUSED: u8 = 0;
const RAW_LITERAL: u8 = 1;
const RAW_PERCENT: u8 = 2;

/// What each byte of a raw asset-id segment is: a path character taken as
/// it is (RFC 3986 `pchar` without `;`), the start of a percent-encoding,
/// or refused.
static ASSET_ID_RAW: [u8; 256] = {
    let mut t = [RAW_REFUSED; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            ) {
            RAW_LITERAL
        } else if b == b'%' {
            RAW_PERCENT
        } else {
            RAW_REFUSED
        };
        c += 1;
    }
    t
};

/// Bytes a canonical asset id may hold: the path characters taken as they
/// are, and any byte of a multi-byte UTF-8 character (whose C1 controls
/// `valid_asset_id` refuses by character).
static DECODED_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c >= 0x80 || ASSET_ID_RAW[c] == RAW_LITERAL;
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

    fn parsed(seg: &str) -> Option<String> {
        parse_asset_id(seg).map(Cow::into_owned)
    }

    #[test]
    fn plain_asset_ids_are_borrowed_as_they_are() {
        for id in [
            "video-0b8f5a3e-6a63-4c5e-9d36-1f2a3b4c5d6e",
            "slide-3",
            "ast_01HZ",
            "a.b",
            "...",
        ] {
            assert!(
                matches!(parse_asset_id(id), Some(Cow::Borrowed(s)) if s == id),
                "{id}"
            );
            assert!(valid_asset_id(id), "{id}");
            assert_eq!(encode_asset_id(id), id);
        }
        assert_eq!(parsed(&"x".repeat(MAX_ASSET_ID_LEN)).map(|s| s.len()), Some(128));
    }

    #[test]
    fn every_path_character_of_rfc_3986_but_the_semicolon_is_taken_literally() {
        for c in "-._~!$&'()*+,=:@".chars() {
            let id = format!("a{c}b");
            assert!(
                matches!(parse_asset_id(&id), Some(Cow::Borrowed(s)) if s == id),
                "{id}"
            );
            assert!(valid_asset_id(&id), "{id}");
            // `+` goes to the origin as `%2B` (read back as `+`).
            assert_eq!(encode_asset_id(&id), id.replace('+', "%2B"), "{id}");
        }
        for id in ["photo@2x", "img~1", "clip+v2", "k=v", "a:b", "(x)", "*"] {
            assert_eq!(parsed(id).as_deref(), Some(id));
        }
    }

    #[test]
    fn other_raw_bytes_are_refused() {
        for b in 0..=255u8 {
            let literal = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@%".contains(&b);
            let seg = [b'a', b, b'b'];
            let Ok(seg) = std::str::from_utf8(&seg) else {
                continue;
            };
            if !literal {
                assert_eq!(parsed(seg), None, "{seg:?}");
            }
        }
        for seg in [
            "a;b", "a/b", "a\\b", "a b", "a\"b", "a<b", "a#b", "a?b", "a[b", "a{b", "a|b", "a^b", "a`b",
            "café", "a\u{0}b", "a\tb",
        ] {
            assert_eq!(parsed(seg), None, "{seg:?}");
        }
    }

    #[test]
    fn percent_encodings_decode_to_one_canonical_id() {
        // Upper or lower case hex, encoded unreserved or sub-delim characters:
        // all one id, the decoded one.
        for (seg, id) in [
            ("photo%402x", "photo@2x"),
            ("photo%402X", "photo@2X"),
            ("%70hoto@2x", "photo@2x"),
            ("%41", "A"),
            ("%61%31", "a1"),
            ("slide%2D1", "slide-1"),
            ("slide%2d1", "slide-1"),
            ("img%7E1", "img~1"),
            ("img%7e1", "img~1"),
            ("clip%2Bv2", "clip+v2"),
            ("clip%2bv2", "clip+v2"),
            ("a%2eb", "a.b"),
            ("%2e%2e%2e", "..."),
            ("k%3Dv", "k=v"),
            ("caf%C3%A9", "café"),
            ("caf%c3%a9", "café"),
        ] {
            assert_eq!(parsed(seg).as_deref(), Some(id), "{seg}");
            assert_eq!(parse_asset_id(seg), parse_asset_id(&encode_asset_id(id)), "{seg}");
        }
        // `+` is a plus in a path, never a space, and no id holds a space:
        // `clip+v2` has one spelling besides `clip%2Bv2`.
        assert_eq!(parsed("clip+v2").as_deref(), Some("clip+v2"));
        assert_eq!(parsed("clip%20v2"), None);
        assert_eq!(encode_asset_id("café"), "caf%C3%A9");
        // A double encoding is a literal `%`, which no id holds: it never
        // names `@` for a component that decodes twice.
        for seg in ["photo%25402x", "photo%2540", "%25", "a%2541"] {
            assert_eq!(parsed(seg), None, "{seg}");
        }
    }

    #[test]
    fn encodings_of_separators_controls_and_dots_are_refused() {
        for seg in [
            "a%2Fb", "a%2fb", "a%5Cb", "a%5cb", "a%3Bb", "a%3bb", "a%00b", "%00", "a%01", "a%1F", "a%7F",
            "a%0A", "a%0d", "%C2%80", "%C2%9F", // C1 controls
            "%2e", "%2E", ".", "..", "%2e%2e", ".%2E", "%2E.",
            // ASCII that is no path character: no id holds it.
            "a%20b", "a%22b", "a%3Fb", "a%23b", "a%3Cb", "a%5Bb", "a%7Bb", "a%60b", "a%5Eb", "a%7Cb",
        ] {
            assert_eq!(parsed(seg), None, "{seg}");
        }
    }

    #[test]
    fn malformed_encodings_and_invalid_utf8_are_refused() {
        for seg in [
            "%",
            "a%",
            "a%4",
            "a%zz",
            "a%4g",
            "a%g4",
            "%%41",
            "a%+1",
            "%-1",
            "%FF",
            "caf%C3",
            "%C3%28",
            "%ED%A0%80",
            "%C0%AF", // overlong `/`
            "%F8%88%80%80%80",
        ] {
            assert_eq!(parsed(seg), None, "{seg}");
        }
    }

    #[test]
    fn the_length_bound_is_on_the_decoded_id() {
        assert_eq!(parsed(""), None);
        assert_eq!(parsed(&"x".repeat(MAX_ASSET_ID_LEN + 1)), None);
        assert_eq!(parsed(&"@".repeat(MAX_ASSET_ID_LEN + 1)), None);
        let encoded = "%40".repeat(MAX_ASSET_ID_LEN);
        assert_eq!(parsed(&encoded), Some("@".repeat(MAX_ASSET_ID_LEN)));
        assert_eq!(parsed(&format!("{encoded}%40")), None);
        assert!(!valid_asset_id(&"x".repeat(MAX_ASSET_ID_LEN + 1)));
    }

    #[test]
    fn canonical_ids_from_webhooks_and_bodies() {
        for id in ["photo@2x", "clip+v2", "café", "日本", "a~b", "k=v", "(x)"] {
            assert!(valid_asset_id(id), "{id:?}");
        }
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a;b",
            "a%40b",
            "a b",
            "a\"b",
            "a?b",
            "a#b",
            "[x]",
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            "a\u{85}b",
            &"x".repeat(129),
        ] {
            assert!(!valid_asset_id(id), "{id:?}");
        }
    }

    /// Every canonical id has one spelling that reads back as it, and every
    /// accepted spelling reads as a canonical id: over every single byte,
    /// encoded and raw, in the middle of an id.
    #[test]
    fn parse_and_encode_are_inverse_on_every_byte() {
        for b in 0..=255u8 {
            for seg in [format!("a%{b:02X}b"), format!("a%{b:02x}b")] {
                if let Some(id) = parsed(&seg) {
                    assert!(valid_asset_id(&id), "{seg}");
                    assert_eq!(parsed(&encode_asset_id(&id)).as_deref(), Some(&*id), "{seg}");
                    let enc = encode_asset_id(&id);
                    assert!(enc.bytes().all(|c| c.is_ascii_graphic() && c != b';'), "{enc}");
                    // ASCII decodes only to a path character.
                    assert!(b >= 0x80 || b == b'+' || enc.len() == 3, "{seg} -> {enc}");
                }
            }
        }
        for c in ('\u{0}'..='\u{3ff}').chain(['\u{2028}', '\u{feff}', '\u{1f600}']) {
            let id = format!("a{c}b");
            if valid_asset_id(&id) {
                assert_eq!(parsed(&encode_asset_id(&id)).as_deref(), Some(&*id), "{id:?}");
            } else {
                assert_eq!(parsed(&encode_asset_id(&id)), None, "{id:?}");
            }
        }
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
