//! The caller's W3C trace-context headers, checked before the gateway
//! continues a trace from them (W3C Trace Context, level 1).
//!
//! The SDK's parser accepts shapes the spec does not (short or long ids,
//! a `+` sign, version `0-`), and keeps a `tracestate` of any size, which
//! every span of the trace then carries to the collector. Here:
//! - `traceparent`: exactly one header, `vv-<32 hex>-<16 hex>-ff` in
//!   lower-case hex, version not `ff`, ids not all zero; a version-00
//!   value is exactly 55 bytes, a later version may append `-...`.
//!   Anything else: the caller sent no usable parent.
//! - `tracestate`: every header line joined (the spec makes several lines
//!   one list), at most 32 members and 512 bytes; past that, members over
//!   128 bytes go first, then members from the end, as the spec allows.

use http::HeaderMap;

/// Members kept of a caller's `tracestate` (the spec's maximum).
const MAX_MEMBERS: usize = 32;
/// Bytes kept of a caller's `tracestate` (the spec's truncation point).
const MAX_STATE_BYTES: usize = 512;
/// Members longer than this are dropped first when truncating.
const LONG_MEMBER: usize = 128;

/// The caller's `traceparent` if it is well formed, else `None`.
pub fn traceparent(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(&super::propagation::TRACEPARENT).iter();
    let v = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    well_formed(v).then_some(v)
}

fn well_formed(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
        return false;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let (version, trace, span, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let dashes = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    let all_zero = |s: &[u8]| s.iter().all(|c| *c == b'0');
    dashes
        && [version, trace, span, flags].into_iter().all(lower_hex)
        && version != b"ff"
        && (version != b"00" || b.len() == 55)
        && !all_zero(trace)
        && !all_zero(span)
}

/// The caller's `tracestate` lines as one bounded list (may be empty).
pub fn tracestate(headers: &HeaderMap) -> String {
    let mut members: Vec<&str> = Vec::new();
    for line in headers.get_all(&super::propagation::TRACESTATE) {
        let Ok(line) = line.to_str() else { continue };
        members.extend(line.split(',').map(str::trim).filter(|m| !m.is_empty()));
        if members.len() > MAX_MEMBERS * 4 {
            // A flood of members: what is past this is dropped anyway.
            break;
        }
    }
    members.truncate(MAX_MEMBERS);
    let len = |ms: &[&str]| ms.iter().map(|m| m.len() + 1).sum::<usize>().saturating_sub(1);
    if len(&members) > MAX_STATE_BYTES {
        members.retain(|m| m.len() <= LONG_MEMBER);
        while len(&members) > MAX_STATE_BYTES {
            members.pop();
        }
    }
    members.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, v.parse().unwrap());
        }
        h
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn only_the_w3c_shape_is_a_parent() {
        assert_eq!(traceparent(&map("traceparent", &[GOOD])), Some(GOOD));
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(traceparent(&map("traceparent", &[later])), Some(later));
        for bad in [
            "00-1-2-01",
            "00-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0--4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "+0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(traceparent(&map("traceparent", &[bad])), None, "{bad}");
        }
        assert_eq!(
            traceparent(&map("traceparent", &[GOOD, GOOD])),
            None,
            "two headers"
        );
    }

    #[test]
    fn tracestate_lines_are_joined_and_bounded() {
        assert_eq!(
            tracestate(&map("tracestate", &["a=1", "b=2, c=3"])),
            "a=1,b=2,c=3"
        );
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            tracestate(&map("tracestate", &[&many.join(",")]))
                .split(',')
                .count(),
            32
        );
        let long = format!("big={}", "x".repeat(200));
        let filler: Vec<String> = (0..28).map(|i| format!("k{i:02}={}", "v".repeat(16))).collect();
        let kept = tracestate(&map(
            "tracestate",
            &[&format!("a=1,{long},b=2"), &filler.join(",")],
        ));
        assert!(kept.len() <= 512, "{}", kept.len());
        assert!(kept.starts_with("a=1,b=2,k00="), "{kept}");
        assert!(!kept.contains("big="), "the long member goes first");
        // Short members only, over 512 bytes: cut from the end.
        let short = tracestate(&map("tracestate", &[&filler.join(",")]));
        assert!(
            short.len() <= 512 && short.starts_with("k00=") && !short.contains("k27="),
            "{short}"
        );
        assert_eq!(tracestate(&HeaderMap::new()), "");
    }
}
