//! At the connection cap, a new connection takes the slot of an idle one
//! instead of being refused.
//!
//! The deadlines close a silent socket after `header_read_timeout_ms`, but
//! a client without a key can open new ones as fast as old ones are cut,
//! from as many addresses as it has, and hold every slot for as long as it
//! likes. A connection with no request in flight costs nothing to close (an
//! HTTP client reconnects; one that never sent a request loses nothing), so
//! past the cap the gateway closes one and admits the newcomer: a client
//! that sends requests is then always served unless every slot has a
//! request in flight.
//!
//! A client without a key can also make a connection look busy for free:
//! its request gets a 401 at once, but if it keeps its h2 stream window at
//! zero (or never reads an HTTP/1 reply) that response, and so the
//! connection, stays in flight until `response_write_timeout_ms`. So when
//! no connection is idle, one that is busy only with answers already made
//! to requests that presented no valid credentials is closed
//! ([`ConnState::busy_with_refusals_only`]): judged by what is in flight
//! now, not by what the connection once presented (a key revoked since
//! protects nothing). A request still in the service (its key being
//! checked with the origin, a JWKS being fetched, a webhook body being
//! read) or one with valid credentials keeps its connection.
//!
//! Which one: among up to [`SAMPLE`] connections from a random place in
//! the table (sampling keeps the cost per eviction fixed, as Redis's
//! approximated LRU does), an idle one before a busy one; among idle ones,
//! one that never sent a request before one that did, and the longest
//! idle; among busy ones, the one whose last request began or ended
//! longest ago.

use super::watchdog::ConnState;
use slab::Slab;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Connections looked at per eviction.
pub const SAMPLE: usize = 32;

/// Which kind of connection was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// No request in flight.
    Idle,
    /// Requests in flight, but never valid credentials.
    Keyless,
}

impl Evicted {
    /// The `reason` of `connections_cut_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Evicted::Idle => "evicted_idle",
            Evicted::Keyless => "evicted_keyless",
        }
    }
}

/// One listener's open connections.
#[derive(Default)]
pub struct OpenConns {
    /// A std mutex: taken on accept, on close and to pick a victim, never
    /// across an await.
    table: Mutex<Slab<Tracked>>,
}

struct Tracked {
    state: Arc<ConnState>,
    /// Notified to close the connection now.
    close: Arc<Notify>,
}

/// A connection's place in the table; removed on drop.
pub struct Registration {
    conns: Arc<OpenConns>,
    key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = self.conns.table.lock().unwrap_or_else(|p| p.into_inner());
        t.try_remove(self.key);
    }
}

impl OpenConns {
    pub fn new() -> Arc<OpenConns> {
        Arc::new(OpenConns::default())
    }

    /// Tracks a connection; `close` is notified when it is evicted.
    pub fn register(self: &Arc<Self>, state: Arc<ConnState>, close: Arc<Notify>) -> Registration {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = t.insert(Tracked { state, close });
        Registration {
            conns: self.clone(),
            key,
        }
    }

    /// Tells the best candidate of a sample to close, and says which kind
    /// it was. `None` when every sampled connection has credentials and a
    /// request in flight.
    pub fn evict_one(&self) -> Option<Evicted> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let cap = t.capacity();
        if cap == 0 {
            return None;
        }
        let start = rand::random_range(0..cap);
        // (busy?, sent a request?, since): the smallest is the victim.
        let mut best: Option<((bool, bool, Instant), usize)> = None;
        let mut seen = 0;
        for i in 0..cap {
            let key = (start + i) % cap;
            let Some(c) = t.get(key) else { continue };
            seen += 1;
            let rank = match c.state.idle_since() {
                Some(since) => Some((false, c.state.first_request_seen(), since)),
                None if c.state.busy_with_refusals_only() => Some((true, true, c.state.last_change())),
                None => None,
            };
            if let Some(rank) = rank {
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, key));
                }
            }
            if seen == SAMPLE {
                break;
            }
        }
        let ((busy, _, _), key) = best?;
        t.get(key)?.close.notify_one();
        Some(if busy { Evicted::Keyless } else { Evicted::Idle })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Standing;
    use std::time::Duration;

    /// Whether `n` was told to close (a stored notification is taken).
    async fn told(n: &Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, n.notified()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sent_a_request_goes_first_then_the_longest_idle() {
        let conns = OpenConns::new();
        let (served_old, served_new, silent, busy) = (
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
        );
        drop(served_old.begin(http::Version::HTTP_11));
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(served_new.begin(http::Version::HTTP_11));
        let _in_flight = busy.begin(http::Version::HTTP_11);
        let n: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let _old = conns.register(served_old.clone(), n[0].clone());
        let _new = conns.register(served_new.clone(), n[1].clone());
        let silent_reg = conns.register(silent.clone(), n[2].clone());
        let _busy = conns.register(busy.clone(), n[3].clone());
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(
            told(&n[2]).await,
            "the connection that never sent a request first"
        );
        drop(silent_reg);
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[0]).await, "then the one idle longest");
        assert!(!told(&n[1]).await && !told(&n[3]).await);
        assert_eq!(conns.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_without_credentials_goes_only_when_none_is_idle() {
        let conns = OpenConns::new();
        let (idle, keyless_old, keyless_new, partner) = (
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
            ConnState::new(),
        );
        drop(idle.begin(http::Version::HTTP_11));
        let mut a = keyless_old.begin(http::Version::HTTP_2);
        a.answered();
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut b = keyless_new.begin(http::Version::HTTP_2);
        b.answered();
        let mut c = partner.begin(http::Version::HTTP_2);
        c.credentialed();
        c.answered();
        let n: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let idle_reg = conns.register(idle.clone(), n[0].clone());
        let old_reg = conns.register(keyless_old.clone(), n[1].clone());
        let _new = conns.register(keyless_new.clone(), n[2].clone());
        let _partner = conns.register(partner.clone(), n[3].clone());
        assert_eq!(conns.evict_one(), Some(Evicted::Idle));
        assert!(told(&n[0]).await, "an idle connection first");
        drop(idle_reg);
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
        assert!(told(&n[1]).await, "then the keyless one busy longest");
        drop(old_reg);
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
        assert!(told(&n[2]).await);
        assert!(!told(&n[3]).await, "a partner's busy connection stays");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_still_in_the_service_keeps_its_connection_and_credentials_are_per_request() {
        let conns = OpenConns::new();
        let c = ConnState::new();
        let n = Arc::new(Notify::new());
        let _r = conns.register(c.clone(), n.clone());
        // A key being checked (not answered yet): kept.
        let mut checking = c.begin(http::Version::HTTP_2);
        assert_eq!(conns.evict_one(), None, "a request in the service");
        // Answered with credentials, body not written yet: kept.
        checking.credentialed();
        checking.answered();
        assert_eq!(conns.evict_one(), None, "a partner's answer in flight");
        // That request done; the next one on the same connection presents
        // a key revoked since: only a refusal is left in flight.
        drop(checking);
        let mut refused = c.begin(http::Version::HTTP_2);
        refused.answered();
        assert_eq!(conns.evict_one(), Some(Evicted::Keyless));
        assert!(told(&n).await);
    }

    #[test]
    fn nothing_is_evicted_while_every_connection_is_busy_with_credentials() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let conns = OpenConns::new();
            let busy = ConnState::new();
            let mut g = busy.begin(http::Version::HTTP_11);
            g.credentialed();
            g.answered();
            let _r = conns.register(busy.clone(), Arc::new(Notify::new()));
            assert_eq!(conns.evict_one(), None);
            drop(_r);
            assert_eq!(conns.len(), 0);
            assert_eq!(conns.evict_one(), None);
        });
    }
}
