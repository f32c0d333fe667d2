//! The header block of a reply served from the cache, cloned from a
//! per-thread template.
//!
//! Every cached reply carries the same nine headers, in this order:
//!
//! ```text
//! content-type: application/json                 (not on a 304)
//! x-cache: HIT | MISS | STALE                    per reply
//! x-request-id: req_…                            per reply
//! x-ratelimit-endpoint-class: read-light
//! x-ratelimit-limit: 120                         per tier
//! x-ratelimit-remaining: 119                     per reply
//! x-ratelimit-reset: 1                           per reply
//! ratelimit-policy: "read-light";q=120;w=60      per tier
//! ratelimit: "read-light";r=119;t=1              per reply
//! ```
//!
//! (the five rate-limit ones only when the request was rate-limited), then
//! what the reply sets itself ([`ReplyHead`], `service/validators.rs`): a
//! HEAD's `content-length`, `content-encoding`, `etag`, `cache-control`
//! and `vary`, each when the reply has it. Inserting those into a fresh
//! `HeaderMap` hashes every name and probes the table each time; merging
//! the reply's own map into the block did it twice and grew the block.
//! A clone of a template built once per worker, class, limit and shape
//! (which of the optional headers the reply has) copies two small arrays
//! instead, and the per-reply values are then set by position.
//!
//! Positions are read off the template itself, by name, when it is built,
//! so nothing here depends on the order in which `HeaderMap` keeps its
//! entries, only on a clone keeping the same order as its original.

use super::validators::{ReplyHead, VARY_ACCEPT_ENCODING};
use super::{JSON, X_CACHE, X_REQUEST_ID};
use crate::shaping::gcra::Decision;
use crate::shaping::headers::{
    ceil_secs, class_value, current_value, int_value, limit_values, RATELIMIT, RATELIMIT_POLICY,
    X_RATELIMIT_ENDPOINT_CLASS, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
use crate::shaping::EndpointClass;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    VARY,
};
use std::cell::RefCell;

/// Templates kept per worker thread: one per (class, limit, shape) in use,
/// so traffic from a handful of tiers, each with its 200s, 304s, HEADs and
/// codings, does not rebuild them in turn.
const TEMPLATES_PER_THREAD: usize = 32;

/// What goes at one position of the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The template's own value (content type, class, limit, policy).
    Fixed,
    XCache,
    RequestId,
    Remaining,
    Reset,
    Current,
    ContentLength,
    ContentEncoding,
    ETag,
    CacheControl,
    /// The origin's content type, where it is not `application/json`.
    ContentType,
}

struct Template {
    class: EndpointClass,
    /// `None`: an unshaped request, whose block ends at the class.
    limit: Option<u32>,
    /// [`ReplyHead::shape`]: which of the reply's own headers follow.
    shape: u8,
    map: HeaderMap,
    slots: Vec<Slot>,
}

impl Template {
    fn build(class: EndpointClass, limit: Option<u32>, head: &ReplyHead) -> Template {
        // Placeholders for the per-reply values; each is overwritten on use.
        let blank = HeaderValue::from_static("");
        let mut map = HeaderMap::with_capacity(super::RESPONSE_HEADERS);
        if !head.not_modified {
            // A 304 has no content to describe (RFC 9110 section 15.4.5).
            map.insert(CONTENT_TYPE, JSON.clone());
        }
        map.insert(X_CACHE, blank.clone());
        map.insert(X_REQUEST_ID, blank.clone());
        map.insert(X_RATELIMIT_ENDPOINT_CLASS, class_value(class));
        if let Some(limit) = limit {
            let (limit_value, policy) = limit_values(class, limit);
            map.insert(X_RATELIMIT_LIMIT, limit_value);
            map.insert(X_RATELIMIT_REMAINING, blank.clone());
            map.insert(X_RATELIMIT_RESET, blank.clone());
            map.insert(RATELIMIT_POLICY, policy);
            map.insert(RATELIMIT, blank.clone());
        }
        let optional = [
            (CONTENT_LENGTH, head.content_length.is_some()),
            (CONTENT_ENCODING, head.content_encoding.is_some()),
            (ETAG, head.etag.is_some()),
            (CACHE_CONTROL, head.cache_control.is_some()),
        ];
        for (name, present) in optional {
            if present {
                map.insert(name, blank.clone());
            }
        }
        if head.vary {
            map.insert(VARY, VARY_ACCEPT_ENCODING.clone());
        }
        let slots = map
            .keys()
            .map(|name| match slot_of(name) {
                Slot::Fixed if name == CONTENT_TYPE && head.content_type.is_some() => Slot::ContentType,
                slot => slot,
            })
            .collect();
        Template {
            class,
            limit,
            shape: head.shape(),
            map,
            slots,
        }
    }
}

fn slot_of(name: &HeaderName) -> Slot {
    if name == X_CACHE {
        Slot::XCache
    } else if name == X_REQUEST_ID {
        Slot::RequestId
    } else if name == X_RATELIMIT_REMAINING {
        Slot::Remaining
    } else if name == X_RATELIMIT_RESET {
        Slot::Reset
    } else if name == RATELIMIT {
        Slot::Current
    } else if name == CONTENT_LENGTH {
        Slot::ContentLength
    } else if name == CONTENT_ENCODING {
        Slot::ContentEncoding
    } else if name == ETAG {
        Slot::ETag
    } else if name == CACHE_CONTROL {
        Slot::CacheControl
    } else {
        Slot::Fixed
    }
}

/// A value that differs from one reply to the next (request id, remaining
/// requests): marked so that h2's HPACK encoder writes it as a literal
/// "never indexed" instead of inserting it into the connection's dynamic
/// table, where it would evict the repeating headers and be evicted before
/// it is ever used again. HTTP/1 ignores the mark.
fn once(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

thread_local! {
    static TEMPLATES: RefCell<Vec<Template>> = const { RefCell::new(Vec::new()) };
}

/// The header block of a cached reply of `class`. `decision` is the
/// request's per-minute decision (`None` when it was not rate-limited); it
/// must be an admission, as a refusal never reaches the cache. `head` is
/// what the reply sets itself.
pub(super) fn cached_reply_headers(
    class: EndpointClass,
    decision: Option<&Decision>,
    x_cache: &HeaderValue,
    request_id: &HeaderValue,
    head: ReplyHead,
) -> HeaderMap {
    debug_assert!(
        decision.is_none_or(|d| d.allowed),
        "a refusal has no cached reply"
    );
    let limit = decision.map(|d| d.limit);
    let shape = head.shape();
    TEMPLATES.with(|templates| {
        let mut templates = templates.borrow_mut();
        let i = match templates
            .iter()
            .position(|t| t.class == class && t.limit == limit && t.shape == shape)
        {
            Some(i) => i,
            None => {
                if templates.len() == TEMPLATES_PER_THREAD {
                    // Shapes beyond the first ones seen take turns in the last place.
                    templates.pop();
                }
                templates.push(Template::build(class, limit, &head));
                templates.len() - 1
            }
        };
        let template = &templates[i];
        let mut map = template.map.clone();
        let reset = decision.map_or(0, |d| ceil_secs(d.reset_after));
        let ReplyHead {
            mut content_length,
            content_encoding,
            mut etag,
            mut cache_control,
            mut content_type,
            origin_headers,
            origin_container,
            not_modified,
            ..
        } = head;
        for (value, slot) in map.values_mut().zip(&template.slots) {
            // A slot is in the template only when the shape, and so the
            // reply, has its value: the `take`s below always find one.
            let own = |v: Option<HeaderValue>| v.unwrap_or_else(|| HeaderValue::from_static(""));
            match (*slot, decision) {
                (Slot::Fixed, _) => {}
                (Slot::XCache, _) => *value = x_cache.clone(),
                (Slot::RequestId, _) => *value = once(request_id.clone()),
                (Slot::Remaining, Some(d)) => *value = once(int_value(u64::from(d.remaining))),
                (Slot::Reset, Some(_)) => *value = int_value(reset),
                (Slot::Current, Some(d)) => *value = once(current_value(class, d.remaining, reset)),
                (Slot::ContentLength, _) => *value = own(content_length.take()),
                (Slot::ContentEncoding, _) => *value = own(content_encoding.cloned()),
                (Slot::ETag, _) => *value = own(etag.take()),
                (Slot::CacheControl, _) => *value = own(cache_control.take()),
                (Slot::ContentType, _) => *value = own(content_type.take()),
                (Slot::Remaining | Slot::Reset | Slot::Current, None) => {
                    unreachable!("an unshaped template has no rate-limit slots")
                }
            }
        }
        // The origin's own headers, after the block (none of its names:
        // `service/origin_headers.rs`).
        if let Some(o) = origin_headers {
            for (name, value) in o.for_reply(origin_container, not_modified) {
                map.append(name.clone(), value.clone());
            }
        }
        map
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::headers::render;
    use std::time::Duration;

    fn admitted(limit: u32, remaining: u32, reset_ms: u64) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            retry_after: Duration::ZERO,
        }
    }

    /// The block the generic path builds header by header.
    fn inserted(class: EndpointClass, d: Option<&Decision>, x_cache: &str, rid: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, JSON.clone());
        h.insert(X_CACHE, HeaderValue::from_str(x_cache).unwrap());
        h.insert(X_REQUEST_ID, HeaderValue::from_str(rid).unwrap());
        match d {
            Some(d) => render(&mut h, class, d),
            None => {
                h.insert(X_RATELIMIT_ENDPOINT_CLASS, class_value(class));
            }
        }
        h
    }

    fn wire(h: &HeaderMap) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn the_template_gives_the_inserted_headers_in_the_same_order() {
        let cases = [
            (EndpointClass::ReadLight, Some(admitted(120, 119, 500)), "HIT"),
            (
                EndpointClass::ReadLight,
                Some(admitted(1_000_000_000, 999_999_999, 60_000)),
                "MISS",
            ),
            (EndpointClass::ReadLight, Some(admitted(6_000, 0, 10)), "STALE"),
            (EndpointClass::WriteLight, Some(admitted(77, 5, 1_001)), "HIT"),
            (EndpointClass::ReadLight, None, "HIT"),
        ];
        // Twice: the second round is served from the thread's templates.
        for round in 0..2 {
            for (i, (class, d, x_cache)) in cases.iter().enumerate() {
                let rid = format!("req_01ARZ3NDEKTSV4RRFFQ69G5FA{i}");
                let got = cached_reply_headers(
                    *class,
                    d.as_ref(),
                    &HeaderValue::from_str(x_cache).unwrap(),
                    &HeaderValue::from_str(&rid).unwrap(),
                    ReplyHead::default(),
                );
                let want = inserted(*class, d.as_ref(), x_cache, &rid);
                assert_eq!(wire(&got), wire(&want), "case {i}, round {round}");
            }
        }
    }

    #[test]
    fn per_reply_values_do_not_leak_into_the_next_reply() {
        let class = EndpointClass::ReadLight;
        let first = cached_reply_headers(
            class,
            Some(&admitted(120, 100, 2_000)),
            &HeaderValue::from_static("MISS"),
            &HeaderValue::from_static("req_first"),
            ReplyHead::default(),
        );
        let second = cached_reply_headers(
            class,
            Some(&admitted(120, 99, 3_000)),
            &HeaderValue::from_static("HIT"),
            &HeaderValue::from_static("req_second"),
            ReplyHead::default(),
        );
        assert_eq!(first["x-request-id"], "req_first");
        assert_eq!(first["x-cache"], "MISS");
        assert_eq!(first["x-ratelimit-remaining"], "100");
        assert_eq!(first["ratelimit"], "\"read-light\";r=100;t=2");
        assert_eq!(second["x-request-id"], "req_second");
        assert_eq!(second["x-cache"], "HIT");
        assert_eq!(second["x-ratelimit-remaining"], "99");
        assert_eq!(second["x-ratelimit-reset"], "3");
        assert_eq!(second["ratelimit"], "\"read-light\";r=99;t=3");
        // Values that change every reply stay out of h2's HPACK table;
        // the repeating ones may be indexed.
        for name in ["x-request-id", "x-ratelimit-remaining", "ratelimit"] {
            assert!(second[name].is_sensitive(), "{name}");
        }
        for name in ["content-type", "x-cache", "x-ratelimit-limit", "ratelimit-policy"] {
            assert!(!second[name].is_sensitive(), "{name}");
        }
    }

    #[test]
    fn more_tiers_than_templates_still_get_their_own_limits() {
        let class = EndpointClass::ReadLight;
        for round in 0..3 {
            for limit in 1..=(TEMPLATES_PER_THREAD as u32 + 3) {
                let h = cached_reply_headers(
                    class,
                    Some(&admitted(limit * 1_000, limit, 1)),
                    &HeaderValue::from_static("HIT"),
                    &HeaderValue::from_static("req_x"),
                    ReplyHead::default(),
                );
                let want = (limit * 1_000).to_string();
                assert_eq!(h["x-ratelimit-limit"], want.as_str(), "round {round}");
                assert_eq!(
                    h["ratelimit-policy"],
                    format!("\"read-light\";q={want};w=60").as_str()
                );
            }
        }
        TEMPLATES.with(|t| assert!(t.borrow().len() <= TEMPLATES_PER_THREAD));
    }

    fn head(
        not_modified: bool,
        len: Option<&'static str>,
        br: bool,
        etag: &str,
        cc: Option<&'static str>,
        vary: bool,
    ) -> ReplyHead {
        ReplyHead {
            not_modified,
            content_length: len.map(HeaderValue::from_static),
            content_encoding: br.then(|| crate::accept_encoding::Encoding::Br.content_encoding().unwrap()),
            etag: Some(HeaderValue::from_str(etag).unwrap()),
            cache_control: cc.map(HeaderValue::from_static),
            vary,
            content_type: None,
            origin_headers: None,
            origin_container: false,
        }
    }

    #[test]
    fn each_shape_gives_the_block_the_generic_path_builds() {
        let class = EndpointClass::ReadLight;
        let d = admitted(120, 7, 1_500);
        let shapes = |i: usize| {
            let tag = format!("\"tag-{i}\"");
            match i % 7 {
                0 => head(false, None, false, &tag, Some("private, no-cache"), false),
                1 => head(true, None, false, &tag, Some("private, no-cache"), true),
                2 => head(false, Some("452"), false, &tag, Some("private, no-cache"), false),
                3 => head(false, None, true, &tag, Some("private, no-cache"), true),
                4 => head(false, Some("521"), true, &tag, None, true),
                5 => head(true, None, false, &tag, None, false),
                // The origin's own content type, in place of the block's.
                _ => ReplyHead {
                    content_type: Some(HeaderValue::from_static("application/json; charset=utf-8")),
                    ..head(false, None, false, &tag, Some("private, no-cache"), false)
                },
            }
        };
        // Three rounds: built, then served from the templates, per shape.
        for i in 0..21 {
            let rid = format!("req_01ARZ3NDEKTSV4RRFFQ69G5F{i:02}");
            let h = shapes(i);
            let got = cached_reply_headers(
                class,
                Some(&d),
                &HeaderValue::from_static("HIT"),
                &HeaderValue::from_str(&rid).unwrap(),
                h.clone(),
            );
            let mut want = inserted(class, Some(&d), "HIT", &rid);
            if h.not_modified {
                want.remove(CONTENT_TYPE);
            }
            h.write(&mut want);
            let mut got = wire(&got);
            let mut want = wire(&want);
            got.sort();
            want.sort();
            assert_eq!(got, want, "shape {}", i % 7);
        }
    }
}
