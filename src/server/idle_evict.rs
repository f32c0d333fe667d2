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
//! Which one: among up to [`SAMPLE`] connections from a random place in
//! the table (sampling keeps the cost per eviction fixed, as Redis's
//! approximated LRU does), one that never sent a request before one that
//! did, and the longest idle among those.

use super::watchdog::ConnState;
use slab::Slab;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Connections looked at per eviction.
pub const SAMPLE: usize = 32;

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

    /// Tells the best idle connection of a sample to close. `false` when
    /// every sampled connection has a request in flight.
    pub fn evict_one(&self) -> bool {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let cap = t.capacity();
        if cap == 0 {
            return false;
        }
        let start = rand::random_range(0..cap);
        // (sent a request?, idle since): the smallest is the victim.
        let mut best: Option<((bool, Instant), usize)> = None;
        let mut seen = 0;
        for i in 0..cap {
            let key = (start + i) % cap;
            let Some(c) = t.get(key) else { continue };
            seen += 1;
            if let Some(since) = c.state.idle_since() {
                let rank = (c.state.first_request_seen(), since);
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, key));
                }
            }
            if seen == SAMPLE {
                break;
            }
        }
        match best.and_then(|(_, key)| t.get(key)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(conns.evict_one());
        assert!(
            told(&n[2]).await,
            "the connection that never sent a request first"
        );
        drop(silent_reg);
        assert!(conns.evict_one());
        assert!(told(&n[0]).await, "then the one idle longest");
        assert!(!told(&n[1]).await && !told(&n[3]).await);
        assert_eq!(conns.len(), 3);
    }

    #[test]
    fn nothing_is_evicted_while_every_connection_is_busy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let conns = OpenConns::new();
            let busy = ConnState::new();
            let _g = busy.begin(http::Version::HTTP_11);
            let _r = conns.register(busy.clone(), Arc::new(Notify::new()));
            assert!(!conns.evict_one());
            drop(_r);
            assert_eq!(conns.len(), 0);
            assert!(!conns.evict_one());
        });
    }
}
