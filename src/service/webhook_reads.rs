//! Webhook bodies being read, and who reads them.
//!
//! A webhook body is buffered whole before its signature can be checked,
//! so the bodies read at once are bounded (`webhooks.max_concurrent_reads`).
//! One pool shared by everybody would let a client without the secret hold
//! every read with bodies that stall (one chunk, then nothing), until
//! `server.body_read_timeout_ms`, again and again: the origin's signed
//! events would be refused (503) for as long as it keeps doing so, and
//! invalidations delayed with them. So one client (an IPv4 address, an
//! IPv6 /64: [`PeerKey`]) holds at most a quarter of the reads (at least
//! one), and the origin, sending from its own addresses, finds reads free
//! unless the client has four or more addresses. `webhooks.allowed_sources`
//! closes the rest: reads only for the origin's networks.

use crate::peer::PeerKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

pub(crate) struct WebhookReads {
    max: usize,
    share: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    /// Reads held per client; an entry only while it holds one, so at
    /// most `max` entries.
    by_peer: HashMap<Option<PeerKey>, usize>,
}

/// One body being read; its read is given back on drop.
pub(crate) struct ReadSlot<'a> {
    reads: &'a WebhookReads,
    peer: Option<PeerKey>,
}

impl WebhookReads {
    pub(crate) fn new(max: usize) -> WebhookReads {
        WebhookReads {
            max,
            share: (max / 4).max(1),
            held: Mutex::new(Held::default()),
        }
    }

    /// A read for a body from `peer` (`None`: a request built in-process),
    /// or `None` when all are taken or `peer` holds its share.
    pub(crate) fn try_take(&self, peer: Option<IpAddr>) -> Option<ReadSlot<'_>> {
        let peer = peer.map(PeerKey::of);
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if h.total >= self.max {
            return None;
        }
        let mine = h.by_peer.entry(peer).or_insert(0);
        if *mine >= self.share {
            return None;
        }
        *mine += 1;
        h.total += 1;
        Some(ReadSlot { reads: self, peer })
    }
}

impl Drop for ReadSlot<'_> {
    fn drop(&mut self) {
        let mut h = self.reads.held.lock().unwrap_or_else(|p| p.into_inner());
        h.total -= 1;
        if let Some(n) = h.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                h.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn one_client_holds_a_quarter_and_the_rest_stay_free_for_others() {
        let reads = WebhookReads::new(8);
        let attacker: Vec<_> = (0..2).map(|_| reads.try_take(ip("192.0.2.9")).unwrap()).collect();
        assert!(reads.try_take(ip("192.0.2.9")).is_none(), "past its share");
        assert!(
            reads.try_take(ip("2001:db8::1")).is_some(),
            "another client still reads"
        );
        drop(attacker);
        let again = reads.try_take(ip("192.0.2.9"));
        assert!(again.is_some(), "a read given back is free again");
    }

    #[test]
    fn the_total_is_bounded_and_an_address_with_no_read_left_holds_no_entry() {
        let reads = WebhookReads::new(2);
        let a = reads.try_take(ip("192.0.2.1")).unwrap();
        let b = reads.try_take(ip("192.0.2.2")).unwrap();
        assert!(reads.try_take(ip("192.0.2.3")).is_none(), "all taken");
        drop((a, b));
        let h = reads.held.lock().unwrap();
        assert_eq!((h.total, h.by_peer.len()), (0, 0));
    }
}
