//! Connection slots per client address, so one client cannot hold every
//! slot of `server.max_connections` (silent sockets, idle h2 connections)
//! while the deadlines that eventually cut them run.
//!
//! The map holds only addresses with a connection open, so it never has
//! more entries than `max_connections`; the last connection of an address
//! removes its entry.

use crate::peer::PeerKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct PeerSlots {
    per_peer: usize,
    open: Mutex<HashMap<PeerKey, usize>>,
}

/// One open connection of an address; frees its slot on drop.
pub struct PeerSlot {
    slots: Arc<PeerSlots>,
    key: PeerKey,
}

impl PeerSlots {
    pub fn new(per_peer: usize) -> Arc<PeerSlots> {
        Arc::new(PeerSlots {
            per_peer: per_peer.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when the address
    /// already holds `per_peer` connections.
    /// The outer `Option` is the refusal; the inner one is the slot (so a
    /// listener without a cap per address passes `Some(None)` along).
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Option<PeerSlot>> {
        let key = PeerKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.per_peer {
            return None;
        }
        *n += 1;
        Some(Some(PeerSlot {
            slots: self.clone(),
            key,
        }))
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_and_frees_it_on_close() {
        let slots = PeerSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let (s1, s2) = (slots.take(a).unwrap(), slots.take(a).unwrap());
        assert!(slots.take(a).is_none());
        let other = slots.take(b);
        assert!(other.is_some(), "another address is not affected");
        drop(s1);
        let s3 = slots.take(a).expect("a closed connection frees its slot");
        drop((s2, s3, other));
        assert_eq!(slots.tracked(), 0, "idle addresses are forgotten");
    }
}
