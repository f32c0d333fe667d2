//! The origin's error envelope, answered again with another request id: the
//! bytes as the origin sent them with only the value of `error.requestId`
//! replaced (or the member added when the origin left it out). Nothing is
//! re-serialized, so members the gateway does not know (DESIGN 1: additive
//! fields pass through untouched), key order, number spellings and escapes
//! stay as they came. Where the id goes is found once, when the answer
//! arrives; each response then only copies the pieces around it.

use bytes::Bytes;

/// One place a request id goes: `bytes[start..end]` is replaced by
/// `prefix` and the id as a JSON string.
#[derive(Clone, Debug)]
struct Edit {
    start: usize,
    end: usize,
    prefix: &'static str,
}

/// An origin envelope ready to carry any request id.
#[derive(Clone, Debug)]
pub struct Spliceable {
    bytes: Bytes,
    edits: Box<[Edit]>,
}

impl Spliceable {
    /// `body` must be JSON (the caller has parsed it as the Layers
    /// envelope); `None` when it is not an object with an `error` object.
    pub fn new(body: &[u8]) -> Option<Spliceable> {
        let b = body;
        let start = ws(b, 0);
        if b.get(start) != Some(&b'{') {
            return None;
        }
        // Every top-level `error` member that is an object (a duplicate
        // key is legal JSON; the last one is the one parsers keep).
        let mut errors = Vec::with_capacity(1);
        members(b, start, |key, vs, _| {
            if key_is(key, "error") && b[vs] == b'{' {
                errors.push(vs);
            }
        })?;
        let mut edits = Vec::with_capacity(errors.len());
        for at in errors {
            let (mut found, mut n) = (false, 0usize);
            // Only the error object's own members: a `requestId` inside
            // `details` (or anywhere deeper) is the origin's data.
            let close = members(b, at, |key, vs, ve| {
                n += 1;
                if key_is(key, "requestId") {
                    found = true;
                    edits.push(Edit {
                        start: vs,
                        end: ve,
                        prefix: "",
                    });
                }
            })?;
            if !found {
                edits.push(Edit {
                    start: close,
                    end: close,
                    prefix: if n == 0 {
                        "\"requestId\":"
                    } else {
                        ",\"requestId\":"
                    },
                });
            }
        }
        if edits.is_empty() {
            return None;
        }
        Some(Spliceable {
            // A copy: never a view that keeps a larger read buffer alive.
            bytes: Bytes::copy_from_slice(body),
            edits: edits.into_boxed_slice(),
        })
    }

    /// The envelope with `request_id` as its `error.requestId`.
    pub fn with_request_id(&self, request_id: &str) -> Bytes {
        let id = serde_json::to_string(request_id).unwrap_or_else(|_| "\"\"".to_owned());
        let extra: usize = self.edits.iter().map(|e| e.prefix.len() + id.len()).sum();
        let mut out = Vec::with_capacity(self.bytes.len() + extra);
        let mut at = 0;
        for e in self.edits.iter() {
            out.extend_from_slice(&self.bytes[at..e.start]);
            out.extend_from_slice(e.prefix.as_bytes());
            out.extend_from_slice(id.as_bytes());
            at = e.end;
        }
        out.extend_from_slice(&self.bytes[at..]);
        Bytes::from(out)
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string starting at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end of the JSON value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Whether a raw key (quotes included) spells `want`, escapes decoded.
fn key_is(raw: &[u8], want: &str) -> bool {
    if raw.contains(&b'\\') {
        serde_json::from_slice::<String>(raw).is_ok_and(|k| k == want)
    } else {
        raw.len() >= 2 && &raw[1..raw.len() - 1] == want.as_bytes()
    }
}

/// Calls `f(raw key, value start, value end)` for each member of the
/// object opening at `i`; the offset of its closing brace.
fn members(b: &[u8], i: usize, mut f: impl FnMut(&[u8], usize, usize)) -> Option<usize> {
    let mut j = ws(b, i + 1);
    if *b.get(j)? == b'}' {
        return Some(j);
    }
    loop {
        if *b.get(j)? != b'"' {
            return None;
        }
        let key_end = string_end(b, j)?;
        let colon = ws(b, key_end);
        if *b.get(colon)? != b':' {
            return None;
        }
        let vs = ws(b, colon + 1);
        let ve = value_end(b, vs)?;
        f(&b[j..key_end], vs, ve);
        j = ws(b, ve);
        match *b.get(j)? {
            b',' => j = ws(b, j + 1),
            b'}' => return Some(j),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn splice(body: &str, rid: &str) -> String {
        let s = Spliceable::new(body.as_bytes()).expect("spliceable");
        String::from_utf8(s.with_request_id(rid).to_vec()).unwrap()
    }

    #[test]
    fn the_request_id_member_first_last_or_only_is_replaced_in_place() {
        assert_eq!(
            splice(
                r#"{"error":{"requestId":"req_o","code":"NOT_FOUND","message":"m"}}"#,
                "req_me"
            ),
            r#"{"error":{"requestId":"req_me","code":"NOT_FOUND","message":"m"}}"#
        );
        assert_eq!(
            splice(
                r#"{"error":{"code":"NOT_FOUND","message":"m","requestId":"req_o"}}"#,
                "req_me"
            ),
            r#"{"error":{"code":"NOT_FOUND","message":"m","requestId":"req_me"}}"#
        );
        assert_eq!(
            splice(r#"{"error":{"requestId":"req_o"}}"#, "req_me"),
            r#"{"error":{"requestId":"req_me"}}"#
        );
    }

    #[test]
    fn whitespace_and_other_members_are_kept_byte_for_byte() {
        let body = "{ \"error\" :\n  { \"code\" : \"NOT_FOUND\" ,\"docUrl\":\"https://x/e#1\",\n \"requestId\"\t:  \"req_o\" ,\"n\":1.10 }\n}\n";
        let want = "{ \"error\" :\n  { \"code\" : \"NOT_FOUND\" ,\"docUrl\":\"https://x/e#1\",\n \"requestId\"\t:  \"req_me\" ,\"n\":1.10 }\n}\n";
        assert_eq!(splice(body, "req_me"), want);
    }

    #[test]
    fn escaped_strings_do_not_confuse_the_scan() {
        // A message holding quotes, braces and a look-alike member.
        let body = r#"{"error":{"message":"a \"requestId\":\"x\" {]} \\","code":"CONFLICT","requestId":"req_\"o\\"}}"#;
        let out = splice(body, "req_me");
        assert_eq!(
            out,
            r#"{"error":{"message":"a \"requestId\":\"x\" {]} \\","code":"CONFLICT","requestId":"req_me"}}"#
        );
        // A key spelled with an escape is the same key.
        let out = splice(
            r#"{"error":{"code":"CONFLICT","request\u0049d":"req_o"}}"#,
            "req_me",
        );
        assert_eq!(out, r#"{"error":{"code":"CONFLICT","request\u0049d":"req_me"}}"#);
        // The id itself is written as a JSON string.
        let out = splice(r#"{"error":{"requestId":"o"}}"#, "a\"b");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["requestId"], "a\"b");
    }

    #[test]
    fn a_request_id_nested_in_details_is_the_origins_data() {
        let body = r#"{"error":{"code":"VALIDATION","details":{"requestId":"req_inner","list":[{"requestId":"x"}]},"message":"m"},"requestId":"top"}"#;
        let out = splice(body, "req_me");
        assert_eq!(
            out,
            r#"{"error":{"code":"VALIDATION","details":{"requestId":"req_inner","list":[{"requestId":"x"}]},"message":"m","requestId":"req_me"},"requestId":"top"}"#
        );
    }

    #[test]
    fn an_envelope_without_a_request_id_gets_one() {
        assert_eq!(
            splice(r#"{"error":{"code":"NOT_FOUND","message":"m"}}"#, "req_me"),
            r#"{"error":{"code":"NOT_FOUND","message":"m","requestId":"req_me"}}"#
        );
        assert_eq!(
            splice("{\"error\":{\"code\":\"NOT_FOUND\" \n}}", "r"),
            "{\"error\":{\"code\":\"NOT_FOUND\" \n,\"requestId\":\"r\"}}"
        );
        assert_eq!(splice(r#"{"error":{ }}"#, "r"), r#"{"error":{ "requestId":"r"}}"#);
        for body in [
            r#"{"error":{"code":"NOT_FOUND","message":"m"}}"#,
            "{\"error\":{\"code\":\"NOT_FOUND\" \n}}",
        ] {
            let v: Value = serde_json::from_str(&splice(body, "r")).unwrap();
            assert_eq!(v["error"]["requestId"], "r");
        }
    }

    #[test]
    fn anything_but_an_object_with_an_error_object_is_refused() {
        for body in [
            r#"[]"#,
            r#""x""#,
            r#"{"error":"x"}"#,
            r#"{"other":{}}"#,
            r#"{"error":{"#,
        ] {
            assert!(Spliceable::new(body.as_bytes()).is_none(), "{body}");
        }
    }
}
