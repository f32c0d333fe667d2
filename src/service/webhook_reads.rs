//! Webhook bodies being read, and who reads them.
//!
//! A webhook body is buffered whole before its signature can be checked,
//! so the bodies read at once are bounded (`webhooks.max_concurrent_reads`).
//! One pool shared by everybody would let a sender without the secret hold
//! every read with bodies that stall (one chunk, then nothing), until
//! `server.body_read_timeout_ms`, again and again: the origin's signed
//! events would be refused (503) for as long as it keeps doing so, and
//! invalidations delayed with them. So:
//!
//! - one client (an IPv4 address, an IPv6 /64: [`PeerKey`]) holds at most
//!   a quarter of the reads;
//! - a quarter is kept for the origin: addresses that delivered a new,
//!   verified event recently (the last [`KNOWN_FOR`], at most [`MAX_KNOWN`]
//!   of them; not a duplicate, which a delivery captured and replayed from
//!   elsewhere would be, nor a type the gateway ignores, which it does not
//!   deduplicate) may take any read, every other sender only the other
//!   three quarters. A sender without the secret never becomes one.
//!
//! What is left: before the origin's first verified delivery to this
//! instance (or from a new egress address), a sender with four or more
//! addresses can delay its events (503, which the origin retries), never
//! change them. `webhooks.allowed_sources` closes that too: reads only for
//! the origin's networks (checked before any read is given out).

use crate::peer::PeerKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long an address that delivered a verified webhook keeps its place.
pub(crate) const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);
/// Origin addresses remembered (the oldest forgotten first).
pub(crate) const MAX_KNOWN: usize = 64;

pub(crate) struct WebhookReads {
    max: usize,
    /// Reads one unknown client may hold.
    share: usize,
    /// Reads unknown senders may hold together.
    strangers_max: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    strangers: usize,
    /// Reads held per client; an entry only while it holds one, so at
    /// most `max` entries.
    by_peer: HashMap<Option<PeerKey>, usize>,
    /// Addresses that delivered a verified webhook, and when last.
    known: HashMap<PeerKey, Instant>,
}

/// One body being read; its read is given back on drop.
pub(crate) struct ReadSlot<'a> {
    reads: &'a WebhookReads,
    peer: Option<PeerKey>,
    stranger: bool,
}

impl WebhookReads {
    /// `max` is at least 4 (`Config::validate`), so each part is at least one.
    pub(crate) fn new(max: usize) -> WebhookReads {
        let quarter = (max / 4).max(1);
        WebhookReads {
            max,
            share: quarter,
            strangers_max: max.saturating_sub(quarter).max(1),
            held: Mutex::new(Held::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read for a body from `peer` (`None`: a request built in-process,
    /// taken as the origin's), or `None` when none is free to it.
    pub(crate) fn try_take(&self, peer: Option<IpAddr>) -> Option<ReadSlot<'_>> {
        let peer = peer.map(PeerKey::of);
        let mut h = self.lock();
        if h.total >= self.max {
            return None;
        }
        let stranger = peer.is_some_and(|p| h.known.get(&p).is_none_or(|t| t.elapsed() > KNOWN_FOR));
        if stranger {
            if h.strangers >= self.strangers_max || h.by_peer.get(&peer).copied().unwrap_or(0) >= self.share {
                return None;
            }
            h.strangers += 1;
        }
        *h.by_peer.entry(peer).or_insert(0) += 1;
        h.total += 1;
        Some(ReadSlot {
            reads: self,
            peer,
            stranger,
        })
    }

    /// `peer` delivered a webhook whose signature verified.
    pub(crate) fn verified(&self, peer: Option<IpAddr>) {
        let Some(p) = peer.map(PeerKey::of) else { return };
        let mut h = self.lock();
        if !h.known.contains_key(&p) && h.known.len() >= MAX_KNOWN {
            if let Some(oldest) = h.known.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                h.known.remove(&oldest);
            }
        }
        h.known.insert(p, Instant::now());
    }
}

impl Drop for ReadSlot<'_> {
    fn drop(&mut self) {
        let mut h = self.reads.lock();
        h.total -= 1;
        if self.stranger {
            h.strangers -= 1;
        }
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

    #[tokio::test]
    async fn one_client_holds_a_quarter_and_the_rest_stay_free_for_others() {
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

    #[tokio::test(start_paused = true)]
    async fn a_quarter_is_kept_for_addresses_that_delivered_verified_webhooks() {
        let reads = WebhookReads::new(8);
        reads.verified(ip("203.0.113.5"));
        // Three senders without the secret hold what strangers may: 6 of 8.
        let held: Vec<_> = [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
        ]
        .iter()
        .map(|a| reads.try_take(ip(a)).expect("a stranger's read"))
        .collect();
        assert!(
            reads.try_take(ip("192.0.2.4")).is_none(),
            "strangers' part is full"
        );
        let origin: Vec<_> = (0..2).map(|_| reads.try_take(ip("203.0.113.5"))).collect();
        assert!(
            origin.iter().all(Option::is_some),
            "the origin reads the kept quarter"
        );
        drop((held, origin));
        tokio::time::advance(KNOWN_FOR + Duration::from_secs(1)).await;
        let _held: Vec<_> = (1..=6)
            .map(|i| reads.try_take(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert!(
            reads.try_take(ip("203.0.113.5")).is_none(),
            "a day later the address is a stranger again"
        );
    }

    #[tokio::test]
    async fn the_total_is_bounded_and_an_address_with_no_read_left_holds_no_entry() {
        let reads = WebhookReads::new(4);
        let held: Vec<_> = (1..=3)
            .map(|i| reads.try_take(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert!(reads.try_take(ip("192.0.2.9")).is_none(), "strangers' part full");
        let inproc = reads.try_take(None).expect("in-process: the origin's part");
        assert!(reads.try_take(None).is_none(), "all taken");
        drop((held, inproc));
        let h = reads.lock();
        assert_eq!((h.total, h.strangers, h.by_peer.len()), (0, 0, 0));
    }

    #[tokio::test]
    async fn the_known_addresses_are_bounded() {
        let reads = WebhookReads::new(4);
        for i in 0..(MAX_KNOWN + 10) {
            reads.verified(ip(&format!("10.0.{}.{}", i / 256, i % 256)));
        }
        assert_eq!(reads.lock().known.len(), MAX_KNOWN);
    }
}
