//! What could make the origin run another route or method than the one the
//! gateway authorized and fenced: method and URL override headers (read by
//! many web frameworks, PHP/CGI ones also with `_` for `-` in the name)
//! and a `_method` query parameter (Rails, Laravel, Symfony). The headers
//! are removed before a request is forwarded; a mutation carrying
//! `_method` in its query is refused, since removing a query parameter
//! would change the request the caller signed or meant.

use http::HeaderMap;

/// Header names, lower case with `-`, that name another method or path.
const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

fn is_override(name: &str) -> bool {
    OVERRIDE_HEADERS.iter().any(|o| {
        o.len() == name.len()
            && o.bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == if b == b'_' { b'-' } else { b.to_ascii_lowercase() })
    })
}

/// Removes every override header, however its name is spelled.
pub(super) fn strip_override_headers(h: &mut HeaderMap) {
    let found: Vec<http::HeaderName> = h.keys().filter(|n| is_override(n.as_str())).cloned().collect();
    for n in found {
        h.remove(n);
    }
}

/// Whether the query has a `_method` key (percent-encoded or not, any case).
pub(super) fn query_overrides_method(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        decoded_eq_ignore_case(key.as_bytes(), b"_method")
    })
}

/// `raw`, with `%XX` escapes (and `+` as a space) decoded, equals `want`,
/// ASCII case ignored.
fn decoded_eq_ignore_case(raw: &[u8], want: &[u8]) -> bool {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let c = match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 3;
                    h << 4 | l
                }
                _ => {
                    i += 1;
                    b'%'
                }
            },
            b'+' => {
                i += 1;
                b' '
            }
            c => {
                i += 1;
                c
            }
        };
        if j >= want.len() || !c.eq_ignore_ascii_case(&want[j]) {
            return false;
        }
        j += 1;
    }
    j == want.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_headers_are_found_in_every_spelling() {
        for n in [
            "x-http-method-override",
            "X_HTTP_METHOD_OVERRIDE",
            "x_http-method",
            "X-Original-URL",
            "x_rewrite_url",
        ] {
            assert!(is_override(n), "{n}");
        }
        for n in ["x-http-methods", "x-api-key", "x-original", "accept"] {
            assert!(!is_override(n), "{n}");
        }
    }

    #[test]
    fn a_method_key_is_found_however_it_is_escaped() {
        for q in [
            "_method=DELETE",
            "a=1&_method=PATCH",
            "%5Fmethod=DELETE",
            "_METHOD=x",
            "_%6Dethod=x",
            "_method",
        ] {
            assert!(query_overrides_method(q), "{q}");
        }
        for q in [
            "method=DELETE",
            "x=_method",
            "_methods=1",
            "a=1&b=2",
            "",
            "%",
            "_method%",
        ] {
            assert!(!query_overrides_method(q), "{q}");
        }
    }
}
