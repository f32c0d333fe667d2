//! The representations of a cached container, made once at fill time: a
//! strong entity tag for every body the gateway serves from the entry (the
//! container body and each asset descriptor), and compressed variants of
//! the container body (gzip, brotli) with tags of their own (RFC 9110
//! section 8.8.3: a tag names the exact bytes of one representation).
//!
//! A hit only picks one of them: it never hashes or compresses.
//!
//! Tags are `"` + 22 base64url characters of the SHA-256 of the bytes + `"`
//! (128 bits). They depend on the bytes only, so every instance of a
//! cluster gives the same bytes the same tag, and a partner behind a load
//! balancer revalidates against any of them; the compressed bytes are the
//! same everywhere too (fixed levels, gzip's header with no time or name).

use crate::accept_encoding::Encoding;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::HeaderValue;
use sha2::{Digest, Sha256};
use std::io::Write;

/// Length of a tag, quotes included.
pub const TAG_LEN: usize = 24;

/// The strong entity tag of the concatenation of `parts`.
pub fn strong_tag(parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = [b'"'; TAG_LEN];
    // 16 bytes encode to exactly 22 characters without padding.
    let n = URL_SAFE_NO_PAD
        .encode_slice(&digest[..16], &mut out[1..TAG_LEN - 1])
        .unwrap_or(0);
    debug_assert_eq!(n, TAG_LEN - 2);
    out
}

/// A tag as a header value.
pub fn tag_value(tag: Bytes) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(tag).ok()
}

/// Which compressed variants fills make (`[cache]` compress_* keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressSettings {
    /// Bodies shorter than this are kept as identity only.
    pub min_bytes: usize,
    /// The codings to make; empty: none.
    pub encodings: Vec<Encoding>,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
    /// brotli quality, 0 (fastest) to 11 (smallest).
    pub brotli_quality: u32,
}

impl Default for CompressSettings {
    fn default() -> Self {
        CompressSettings {
            min_bytes: crate::config::DEFAULT_COMPRESS_MIN_BYTES,
            encodings: vec![Encoding::Br, Encoding::Gzip],
            gzip_level: crate::config::DEFAULT_GZIP_LEVEL,
            brotli_quality: crate::config::DEFAULT_BROTLI_QUALITY,
        }
    }
}

/// brotli's window (log2 bytes). Container bodies are a few KiB; a large
/// window would only cost the encoder memory at fill time.
const BROTLI_LGWIN: u32 = 18;

/// Bodies longer than this stay identity only: it bounds the memory fills
/// in flight spend on compression (containers are a few KiB).
pub const COMPRESS_MAX_BYTES: usize = 1024 * 1024;

/// One compressed variant of a container body.
pub struct Variant {
    pub encoding: Encoding,
    pub body: Bytes,
    pub etag: HeaderValue,
}

/// The compressed variants of `body` the settings ask for, each only when
/// it is smaller than the body itself; none for a body under
/// `min_bytes` or over [`COMPRESS_MAX_BYTES`]. The variants and their tags
/// share one allocation of exactly their size (the variants' `Bytes` and
/// `HeaderValue`s are slices of it): a cached entry holds no spare
/// capacity and no allocation per variant.
pub fn compress(body: &[u8], s: &CompressSettings) -> Vec<Variant> {
    if body.len() < s.min_bytes || body.len() > COMPRESS_MAX_BYTES {
        return Vec::new();
    }
    let mut made: Vec<(Encoding, Vec<u8>)> = Vec::with_capacity(s.encodings.len());
    for &encoding in &s.encodings {
        let bytes = match encoding {
            Encoding::Gzip => gzip(body, s.gzip_level),
            Encoding::Br => brotli(body, s.brotli_quality),
            Encoding::Identity => continue,
        };
        if let Some(bytes) = bytes.filter(|b| b.len() < body.len()) {
            made.push((encoding, bytes));
        }
    }
    let total: usize = made.iter().map(|(_, b)| b.len() + TAG_LEN).sum();
    let mut packed = Vec::with_capacity(total);
    for (_, b) in &made {
        packed.extend_from_slice(b);
    }
    for (_, b) in &made {
        packed.extend_from_slice(&strong_tag(&[b]));
    }
    let packed = Bytes::from(packed);
    let mut at = 0;
    let mut tag_at = total - made.len() * TAG_LEN;
    let mut out = Vec::with_capacity(made.len());
    for (encoding, b) in &made {
        let body = packed.slice(at..at + b.len());
        at += b.len();
        let etag = tag_value(packed.slice(tag_at..tag_at + TAG_LEN));
        tag_at += TAG_LEN;
        if let Some(etag) = etag {
            out.push(Variant {
                encoding: *encoding,
                body,
                etag,
            });
        }
    }
    out
}

/// gzip with no file name and a zero time, so the bytes depend on the
/// input and the level only.
pub fn gzip(body: &[u8], level: u32) -> Option<Vec<u8>> {
    let mut e = flate2::GzBuilder::new().write(
        Vec::with_capacity(body.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    e.write_all(body).ok()?;
    e.finish().ok()
}

/// brotli, told the body's size so its window and tables are no larger
/// than the body needs (less memory churn per fill, same bytes on every
/// instance).
pub fn brotli(body: &[u8], quality: u32) -> Option<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: quality as i32,
        lgwin: BROTLI_LGWIN as i32,
        size_hint: body.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        let mut s = String::from("{\"id\":\"cnt_x\",\"assets\":[");
        for i in 0..20 {
            s.push_str(&format!(
                "{{\"assetId\":\"slide-{i}\",\"url\":\"https://cdn.example/slide-{i}.png\"}},"
            ));
        }
        s.push_str("{}]}");
        s.into_bytes()
    }

    #[test]
    fn tags_are_quoted_fixed_length_and_depend_on_every_byte() {
        let a = strong_tag(&[b"hello"]);
        assert_eq!(a.len(), TAG_LEN);
        assert_eq!((a[0], a[TAG_LEN - 1]), (b'"', b'"'));
        assert!(a[1..TAG_LEN - 1]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        assert_eq!(a, strong_tag(&[b"he", b"llo"]), "the concatenation counts");
        assert_ne!(a, strong_tag(&[b"hellp"]));
        assert!(tag_value(Bytes::copy_from_slice(&a)).is_some());
    }

    #[test]
    fn variants_decompress_to_the_body_and_have_their_own_tags() {
        let body = sample();
        let vs = compress(&body, &CompressSettings::default());
        assert_eq!(
            vs.iter().map(|v| v.encoding).collect::<Vec<_>>(),
            [Encoding::Br, Encoding::Gzip]
        );
        let identity = strong_tag(&[&body]);
        for v in &vs {
            let mut out = Vec::new();
            match v.encoding {
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&v.body[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
                Encoding::Br => {
                    brotli::Decompressor::new(&v.body[..], 4096)
                        .read_to_end(&mut out)
                        .unwrap();
                }
                Encoding::Identity => unreachable!(),
            }
            assert_eq!(out, body, "{:?}", v.encoding);
            assert!(v.body.len() < body.len());
            assert_ne!(v.etag.as_bytes(), &identity[..]);
            assert_eq!(v.etag.as_bytes(), &strong_tag(&[&v.body])[..]);
        }
        assert_ne!(vs[0].etag, vs[1].etag);
    }

    #[test]
    fn compression_is_deterministic_so_instances_agree_on_tags() {
        let body = sample();
        let s = CompressSettings::default();
        let (a, b) = (compress(&body, &s), compress(&body, &s));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.body, y.body);
            assert_eq!(x.etag, y.etag);
        }
    }

    #[test]
    fn small_bodies_and_no_encodings_make_no_variants() {
        let body = sample();
        let small = CompressSettings {
            min_bytes: body.len() + 1,
            ..CompressSettings::default()
        };
        assert!(compress(&body, &small).is_empty());
        let none = CompressSettings {
            encodings: Vec::new(),
            ..CompressSettings::default()
        };
        assert!(compress(&body, &none).is_empty());
        // Incompressible and tiny: a variant would be bigger; none is kept.
        let tiny = CompressSettings {
            min_bytes: 0,
            ..CompressSettings::default()
        };
        assert!(compress(b"{}", &tiny).is_empty());
    }
}
