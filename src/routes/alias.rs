//! Aliases of the content routes: paths an origin may well resolve to
//! `/v1/content/:id[/assets/:assetId|/regenerate|/approve|/reject]` although they are not
//! spelled that way: a trailing slash, doubled slashes, other letter case
//! in the fixed segments (web frameworks match routes case-insensitively
//! and ignore a trailing slash by default), or percent-encoded unreserved
//! characters.
//!
//! Why this exists: a request that reaches a container's data must pass
//! the fence (promise 1) and carry the content scope, however its path is
//! spelled. Only the canonical spelling without a query is served from the
//! cache; every alias is recognised here so it is routed as what it is.
//! Paths with dot-segments or encoded `/` and `\` are refused before
//! routing, so they never get here.

/// What an alias names. Container ids are decoded but not yet validated;
/// an asset id is canonical (`crate::ids::parse_asset_id`).
#[derive(Debug, PartialEq, Eq)]
pub enum ContentPath {
    Container(String),
    Asset(String, String),
    /// `regenerate`, `approve` or `reject` in any case: its template and
    /// what a 2xx of it invalidates (`super::container_action`).
    Action(String, (&'static str, crate::events::EventType)),
}

/// Recognises `rest` (the path after `/v1/`) as a content path in any
/// spelling an origin may accept. `None` when it is not one.
pub fn content_path(rest: &str) -> Option<ContentPath> {
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    let first = decode(segs.next()?)?;
    if !first.eq_ignore_ascii_case("content") {
        return None;
    }
    let id = decode(segs.next()?)?;
    let third = segs.next().map(decode);
    // An asset id is read as the asset route reads it, so that every
    // spelling of one asset is one id to the fence.
    let fourth = segs
        .next()
        .map(|s| crate::ids::parse_asset_id(s).map(std::borrow::Cow::into_owned));
    if segs.next().is_some() {
        return None;
    }
    match (third, fourth) {
        (None, None) => Some(ContentPath::Container(id)),
        (Some(Some(t)), None) => super::container_action(&t).map(|action| ContentPath::Action(id, action)),
        (Some(Some(t)), Some(Some(asset))) if t.eq_ignore_ascii_case("assets") => {
            Some(ContentPath::Asset(id, asset))
        }
        _ => None,
    }
}

/// Decodes percent-encoded bytes of one segment. `None` when the encoding
/// is malformed or decodes to something no id contains (`/`, `\`, `%`,
/// controls, non-ASCII): such a segment is never an alias of an id.
fn decode(seg: &str) -> Option<String> {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = if b[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            i += 3;
            u8::from_str_radix(hex, 16).ok()?
        } else {
            i += 1;
            b[i - 1]
        };
        if !c.is_ascii_graphic() || matches!(c, b'/' | b'\\' | b'%') {
            return None;
        }
        out.push(char::from(c));
    }
    // A dot-segment, however spelled, names no id.
    (out != "." && out != "..").then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_an_origin_may_resolve_are_recognised() {
        let c = |s: &str| Some(ContentPath::Container(s.into()));
        assert_eq!(content_path("content/abc"), c("abc"));
        assert_eq!(content_path("content/abc/"), c("abc"));
        assert_eq!(content_path("content//abc//"), c("abc"));
        assert_eq!(content_path("Content/abc"), c("abc"));
        assert_eq!(content_path("%63ontent/%61bc"), c("abc"));
        assert_eq!(
            content_path("CONTENT/abc/Assets/slide-1/"),
            Some(ContentPath::Asset("abc".into(), "slide-1".into()))
        );
        assert_eq!(
            content_path("content/abc/assets/photo%402x/"),
            Some(ContentPath::Asset("abc".into(), "photo@2x".into()))
        );
        assert_eq!(
            content_path("content/abc/assets/caf%C3%A9/"),
            Some(ContentPath::Asset("abc".into(), "café".into()))
        );
        assert_eq!(
            content_path("content/abc/REGENERATE"),
            Some(ContentPath::Action(
                "abc".into(),
                (
                    super::super::REGENERATE_TEMPLATE,
                    crate::events::EventType::Regenerated
                )
            ))
        );
    }

    #[test]
    fn other_paths_are_not_content_paths() {
        for p in [
            "contents/abc",
            "content",
            "content/",
            "content/abc/assets",
            "content/abc/assets/a/b",
            "content/abc/other",
            "content/a%2Fb",
            "content/a%5cb",
            "content/a%zz",
            "content/a%2",
            "content/%2e%2e",
            "content/abc/assets/%2E",
            "content/abc/assets/a%2540",
            "content/abc/assets/a%00",
            "projects/abc",
        ] {
            assert_eq!(content_path(p), None, "{p}");
        }
    }
}
