//! `If-None-Match` (RFC 9110 section 13.1.2) against the strong entity tag
//! of the representation a request would get.
//!
//! The field is `*` or a list of entity tags (`"opaque"` or `W/"opaque"`);
//! it is evaluated with the weak comparison, so `W/"x"` matches `"x"`. A
//! match (or `*`, as a current representation always exists when this is
//! asked) means 304 Not Modified for GET and HEAD. The caller asks only for
//! a representation the fence decision allows serving as a 200 right now,
//! so a 304 never confirms a revoked version.
//!
//! A list member that is not an entity tag ends the list: what follows it
//! does not match (never a 304 for a field the gateway cannot read).
//! Commas may appear inside a tag's quotes, so the list is scanned, not split.

use http::header::{HeaderMap, IF_NONE_MATCH};

/// One entity tag of the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag<'a> {
    pub weak: bool,
    /// The opaque tag with its double quotes, e.g. `"abc"`.
    pub opaque: &'a [u8],
}

/// What a field value says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// `*`: any current representation.
    Any,
    /// A list of tags (read with [`tags`]).
    List(&'a [u8]),
}

pub fn field(value: &[u8]) -> Field<'_> {
    if trim(value) == b"*" {
        Field::Any
    } else {
        Field::List(value)
    }
}

/// The entity tags of a list, in order, up to the first member that is not one.
pub fn tags(list: &[u8]) -> Tags<'_> {
    Tags { rest: list }
}

pub struct Tags<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tags<'a> {
    type Item = Tag<'a>;

    fn next(&mut self) -> Option<Tag<'a>> {
        let s = self.rest;
        let start = s.iter().position(|&b| !matches!(b, b' ' | b'\t' | b','))?;
        let mut s = &s[start..];
        let weak = s.starts_with(b"W/");
        if weak {
            s = &s[2..];
        }
        // Not a tag: stop here for good.
        self.rest = &[];
        if s.first() != Some(&b'"') {
            return None;
        }
        let close = 1 + s[1..].iter().position(|&b| b == b'"')?;
        if !s[1..close].iter().all(|&b| is_etagc(b)) {
            return None;
        }
        let (opaque, after) = s.split_at(close + 1);
        let after = trim(after);
        // A member ends at a comma or at the end of the field.
        if !(after.is_empty() || after[0] == b',') {
            return None;
        }
        self.rest = after;
        Some(Tag { weak, opaque })
    }
}

/// Whether the request's `If-None-Match` fields match `etag` (a strong tag
/// with its quotes): the request is then answered 304.
pub fn none_match_fails(headers: &HeaderMap, etag: &[u8]) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| value_matches(v.as_bytes(), etag))
}

/// Whether one field value matches `etag` by weak comparison.
pub fn value_matches(value: &[u8], etag: &[u8]) -> bool {
    match field(value) {
        Field::Any => true,
        Field::List(list) => tags(list).any(|t| t.opaque == etag),
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &[u8] = b"\"abc\"";

    #[test]
    fn lists_match_any_member_with_weak_comparison() {
        for v in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            "\"x\",W/\"abc\"",
            " ,\t\"abc\" , ",
            "\"a,b\", \"abc\"",
            "*",
            " * ",
        ] {
            assert!(value_matches(v.as_bytes(), TAG), "{v:?}");
        }
    }

    #[test]
    fn other_tags_and_unreadable_fields_do_not_match() {
        for v in [
            "",
            "\"abcd\"",
            "\"ab\"",
            "abc",
            "w/\"abc\"",
            "\"abc",
            "\"a\" \"abc\"",
            "garbage, \"abc\"",
            "\"x\" y, \"abc\"",
            "\"a\"b\", \"abc\"",
            "*, \"abc\"",
            "\"\"",
        ] {
            assert!(!value_matches(v.as_bytes(), TAG), "{v:?}");
        }
    }

    #[test]
    fn tags_keep_quotes_and_weakness() {
        let got: Vec<Tag<'_>> = tags(b"W/\"a\", \"b,c\",\"\"").collect();
        assert_eq!(
            got,
            [
                Tag {
                    weak: true,
                    opaque: b"\"a\""
                },
                Tag {
                    weak: false,
                    opaque: b"\"b,c\""
                },
                Tag {
                    weak: false,
                    opaque: b"\"\""
                },
            ]
        );
    }

    #[test]
    fn several_fields_are_one_list() {
        let mut h = HeaderMap::new();
        h.append(IF_NONE_MATCH, "\"x\"".parse().unwrap());
        assert!(!none_match_fails(&h, TAG));
        h.append(IF_NONE_MATCH, "W/\"abc\"".parse().unwrap());
        assert!(none_match_fails(&h, TAG));
    }
}
