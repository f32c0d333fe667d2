//! hyper's own error replies, rewritten into the Layers envelope.
//!
//! When hyper refuses an HTTP/1 request head itself (more header lines than
//! its `max_headers` backstop, a head past its read buffer, bytes httparse
//! rejects, an invalid `Content-Length`), it writes a bare reply of its own
//! (`HTTP/1.1 431 ...`, `content-length: 0`, `date`) and closes; the service
//! never sees the request and hyper has no hook for it. Every response the
//! gateway sends must carry `X-Request-Id` and every 4xx/5xx the envelope,
//! so [`super::deadline_io`] recognizes that reply on its way to the socket
//! and writes this module's replacement instead.
//!
//! Recognizing it: a write that starts with an HTTP/1 status line of 4xx or
//! 5xx, whose whole head is in that write with nothing after it, and with no
//! `x-request-id` header. Every reply of the gateway's own services has one
//! (`service::finish`, `admin::handle`), hyper's never does. h2 frames never
//! start with `HTTP/1.`, and a head split over writes is left alone.

use crate::error::GatewayError;
use crate::ids::new_request_id;
use http::StatusCode;
use memchr::memmem;

/// `HTTP/1.1 ` and `HTTP/1.0 ` are this long; the status follows.
const STATUS_AT: usize = 9;
/// The shortest head: `HTTP/1.1 400 \r\n\r\n` (hyper's is longer).
const MIN_HEAD: usize = STATUS_AT + 3 + 4;

/// hyper's own error reply, being replaced: the text written instead, how
/// much of it the socket took, and how many bytes of hyper's to report once
/// it all is (hyper must not see a partial count of its own bytes, or it
/// would write their remainder after the replacement).
pub(super) struct Rewrite {
    text: Vec<u8>,
    written: usize,
    reported: usize,
}

impl Rewrite {
    /// The replacement of a write of `bufs` (its first non-empty slice
    /// holds the head), or `None` when it is not hyper's own error reply.
    /// A 2xx/3xx costs the length check and one byte compare.
    pub(super) fn of(bufs: &[std::io::IoSlice<'_>]) -> Option<Box<Rewrite>> {
        let i = bufs.iter().position(|b| !b.is_empty())?;
        let status = refused_status(&bufs[i])?;
        // hyper's reply has no body: anything after the head is a body, so
        // not hyper's reply (and replacing only the head would corrupt it).
        if bufs[i + 1..].iter().any(|b| !b.is_empty()) {
            return None;
        }
        Some(Box::new(Rewrite {
            text: replacement(&bufs[i], status),
            written: 0,
            reported: bufs[i].len(),
        }))
    }

    /// What is left to write; empty once it all is.
    pub(super) fn remaining(&self) -> &[u8] {
        &self.text[self.written..]
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.written += n;
    }

    /// The count of hyper's bytes to report once the replacement is written.
    pub(super) fn reported(&self) -> usize {
        self.reported
    }
}

/// The status of `buf` when it is exactly a head of hyper's own refusal:
/// `HTTP/1.x 4xx|5xx ...`, whole, nothing after it, no `x-request-id`.
fn refused_status(buf: &[u8]) -> Option<StatusCode> {
    // The hot path: a 200 fails here.
    if buf.len() < MIN_HEAD || !matches!(buf[STATUS_AT], b'4' | b'5') {
        return None;
    }
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    let status = StatusCode::from_bytes(&buf[STATUS_AT..STATUS_AT + 3]).ok()?;
    if !matches!(buf[STATUS_AT + 3], b' ' | b'\r') {
        return None;
    }
    let end = memmem::find(buf, b"\r\n\r\n")? + 4;
    if end != buf.len() {
        return None;
    }
    let has_request_id = header_lines(&buf[..end]).any(|l| starts_with_ignore_case(l, b"x-request-id:"));
    (!has_request_id).then_some(status)
}

/// The header lines of a whole head (the status line and the final empty
/// line left out).
fn header_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    body.split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// hyper's status line (and its `date`, which hyper keeps current), then the
/// headers and envelope of the gateway's own errors, with a fresh request
/// id. Nothing of the refused request is echoed: hyper's head holds none.
fn replacement(head: &[u8], status: StatusCode) -> Vec<u8> {
    let line_end = memmem::find(head, b"\r\n").unwrap_or(head.len());
    let rid = new_request_id();
    let body = GatewayError::refused_head(status).envelope(&rid);
    let mut out = Vec::with_capacity(head.len() + body.len() + 160);
    out.extend_from_slice(&head[..line_end]);
    out.extend_from_slice(b"\r\n");
    if let Some(date) = header_lines(head).find(|l| starts_with_ignore_case(l, b"date:")) {
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-request-id: {rid}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";

    fn of(bufs: &[&[u8]]) -> Option<Box<Rewrite>> {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        Rewrite::of(&slices)
    }

    fn split(text: &[u8]) -> (String, serde_json::Value) {
        let text = std::str::from_utf8(text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn a_200_is_untouched() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";
        assert!(of(&[head]).is_none());
        assert!(of(&[b"HTTP/1.1 404"]).is_none());
    }

    #[test]
    fn hypers_431_is_replaced_by_the_envelope_with_a_request_id() {
        let rw = of(&[b"", HYPER_431]).expect("hyper's own 431");
        assert_eq!(rw.reported(), HYPER_431.len());
        let (head, env) = split(rw.remaining());
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 431 Request Header Fields Too Large"));
        let headers: Vec<&str> = lines.collect();
        let rid = headers
            .iter()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("a request id");
        assert_eq!(env["error"]["requestId"], rid);
        assert_eq!(env["error"]["code"], "HEADERS_TOO_LARGE");
        let body_len = serde_json::to_vec(&env).unwrap().len();
        assert!(headers.contains(&format!("content-length: {body_len}").as_str()));
        for h in [
            "content-type: application/json",
            "cache-control: no-store",
            "connection: close",
            "date: Mon, 01 Jan 2024 00:00:00 GMT",
        ] {
            assert!(headers.contains(&h), "{h} in {headers:?}");
        }
    }

    #[test]
    fn hypers_400_gets_a_bad_request_code_and_two_get_two_ids() {
        let h = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let (a, b) = (of(&[h]).unwrap(), of(&[h]).unwrap());
        let ((_, ea), (_, eb)) = (split(a.remaining()), split(b.remaining()));
        assert_eq!(ea["error"]["code"], "BAD_REQUEST");
        assert_ne!(ea["error"]["requestId"], eb["error"]["requestId"]);
    }

    #[test]
    fn a_4xx_of_the_gateways_own_is_untouched() {
        let own = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\nX-Request-Id: req_1\r\n\r\n";
        assert!(of(&[own]).is_none());
        // Its head and body in one write: a body follows the head.
        let mut flat = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n".to_vec();
        flat.extend_from_slice(b"{}");
        assert!(of(&[&flat]).is_none());
        // Or in the next slice.
        assert!(of(&[b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n", b"{}"]).is_none());
    }

    #[test]
    fn a_partial_head_is_untouched() {
        assert!(of(&[&HYPER_431[..HYPER_431.len() - 2]]).is_none());
        assert!(of(&[&HYPER_431[..20]]).is_none());
        // The rest of a head whose start was written already.
        assert!(of(&[&HYPER_431[5..]]).is_none());
    }

    #[test]
    fn h2_frames_are_untouched() {
        // A HEADERS frame: length, type 1, flags, stream id, then HPACK.
        let mut frame = vec![0, 0, 12, 1, 4, 0, 0, 0, 1];
        frame.extend_from_slice(b"4\x88\r\n\r\n0123");
        assert!(of(&[&frame]).is_none());
        // A SETTINGS frame and the connection preface's look-alike.
        assert!(of(&[&[0, 0, 6, 4, 0, 0, 0, 0, 0, b'4', 0, 3, 0, 0, 0, 100]]).is_none());
        assert!(of(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).is_none());
    }

    #[test]
    fn other_statuses_keep_hypers_status_with_a_fitting_code() {
        for (line, code) in [
            ("HTTP/1.1 414 URI Too Long", "BAD_REQUEST"),
            ("HTTP/1.1 408 Request Timeout", "REQUEST_TIMEOUT"),
            ("HTTP/1.1 413 Payload Too Large", "PAYLOAD_TOO_LARGE"),
            ("HTTP/1.0 505 HTTP Version Not Supported", "BAD_REQUEST"),
            ("HTTP/1.1 501 Not Implemented", "BAD_REQUEST"),
        ] {
            let head = format!("{line}\r\ncontent-length: 0\r\n\r\n");
            let rw = of(&[head.as_bytes()]).unwrap();
            let (h, env) = split(rw.remaining());
            assert!(h.starts_with(&format!("{line}\r\n")), "{h}");
            assert_eq!(env["error"]["code"], code, "{line}");
        }
    }
}
