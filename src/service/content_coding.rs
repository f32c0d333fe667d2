//! Reading an origin body in the coding the origin chose.

/// An origin's body in the coding it chose (the partner's
/// `Accept-Encoding` is forwarded on proxied routes; a fill asks for
/// identity, which an origin or a CDN before it may ignore), decoded to
/// judge or cache it, at most `cap` bytes. `None`: not coded. A coding
/// this cannot read gives an empty body, which is neither an envelope nor
/// a container.
pub(super) fn decoded(headers: &http::HeaderMap, body: &[u8], cap: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let coding = headers.get(http::header::CONTENT_ENCODING)?.to_str().ok()?.trim();
    let mut out = Vec::new();
    let limit = cap as u64 + 1;
    let read = match coding.to_ascii_lowercase().as_str() {
        "" | "identity" => return None,
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "br" => brotli::Decompressor::new(body, 4096)
            .take(limit)
            .read_to_end(&mut out),
        _ => return Some(Vec::new()),
    };
    Some(if read.is_ok() && out.len() <= cap {
        out
    } else {
        Vec::new()
    })
}
