//! Response header values rendered without an allocation each.
//!
//! Every hit carries a request id and the rate-limit numbers, which change
//! from response to response. `HeaderValue::from(u64)` or `from_str` would
//! allocate one small buffer per value, several per request. Instead each
//! worker thread renders values into a slab of its own (one `BytesMut` of
//! `SLAB_BYTES`) and hands out frozen slices of it: a value costs a
//! reference-count increment, and a new slab is allocated once every few
//! hundred responses. A slab's memory is freed when the last value cut
//! from it is dropped: the responses in flight hold it, plus at most one
//! slab per worker and endpoint class kept by the memoized limit values of
//! `shaping::headers`.

use bytes::BytesMut;
use http::header::HeaderValue;
use std::cell::RefCell;

/// One slab: room for a few hundred values.
const SLAB_BYTES: usize = 16 * 1024;

/// The most a value may need before rendering starts; longer values still
/// work (the slab grows), they only cost an allocation.
const MAX_VALUE_BYTES: usize = 128;

thread_local! {
    static SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Text of one header value being rendered.
pub struct ValueText<'a> {
    buf: &'a mut BytesMut,
}

impl ValueText<'_> {
    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn push_u64(&mut self, n: u64) -> &mut Self {
        self.push(itoa::Buffer::new().format(n).as_bytes())
    }
}

/// Renders a header value with `write`. The text must be visible ASCII
/// (what header values of this gateway are); anything else is a bug, and
/// renders as an empty value rather than a panic on the request path.
pub fn render(write: impl FnOnce(&mut ValueText<'_>)) -> HeaderValue {
    SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() < MAX_VALUE_BYTES {
            // The old slab lives on in the values already cut from it.
            *slab = BytesMut::with_capacity(SLAB_BYTES);
        }
        write(&mut ValueText { buf: &mut slab });
        HeaderValue::from_maybe_shared(slab.split().freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

/// An integer header value.
pub fn int(n: u64) -> HeaderValue {
    render(|t| {
        t.push_u64(n);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_the_text_they_were_given() {
        assert_eq!(int(0), "0");
        assert_eq!(int(u64::MAX), u64::MAX.to_string().as_str());
        let v = render(|t| {
            t.push(b"\"read-light\";r=")
                .push_u64(119)
                .push(b";t=")
                .push_u64(1);
        });
        assert_eq!(v, "\"read-light\";r=119;t=1");
    }

    #[test]
    fn values_stay_intact_across_many_slabs() {
        // Enough values to fill several slabs; every earlier value must keep
        // its own text after the slab it came from is replaced.
        let values: Vec<(u64, HeaderValue)> = (0..5_000u64).map(|n| (n * 7_919, int(n * 7_919))).collect();
        for (n, v) in &values {
            assert_eq!(v.to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn a_value_longer_than_the_reserve_still_renders() {
        let long = "x".repeat(3 * MAX_VALUE_BYTES);
        let v = render(|t| {
            t.push(long.as_bytes());
        });
        assert_eq!(v.to_str().unwrap(), long);
        assert_eq!(int(42), "42");
    }

    #[test]
    fn invalid_text_renders_empty_instead_of_panicking() {
        let v = render(|t| {
            t.push(b"a\nb");
        });
        assert_eq!(v, "");
        assert_eq!(int(7), "7");
    }
}
