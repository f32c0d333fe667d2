//! Single-flight fills: one origin fetch per (org, container, generation,
//! epoch); every other request for the same key waits for its result.
//!
//! The leader's fill runs in its own task, so a caller that disconnects
//! does not abandon the waiters. If the fill task dies without a result
//! (a panic), the sender is dropped and the waiters get an error instead
//! of hanging; a waiter also gives up after the configured timeout.

use super::entry::CachedContainer;
use crate::error::GatewayError;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub type FillResult = Result<Arc<CachedContainer>, GatewayError>;
type Slot = watch::Receiver<Option<FillResult>>;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub org: Arc<str>,
    pub container: u128,
    pub generation: u64,
    pub epoch: u64,
}

const SHARDS: usize = 32;

pub struct Flights {
    /// In-flight fills by key. Sharded so unrelated misses do not contend;
    /// each lock is held only to look up, insert or remove a slot.
    shards: Box<[Mutex<HashMap<FlightKey, Slot>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }
}

/// Held by the one caller that must run the fill.
pub struct Leader {
    flights: Arc<Flights>,
    key: FlightKey,
    tx: watch::Sender<Option<FillResult>>,
}

impl Leader {
    /// Publishes the result to every waiter and retires the slot.
    pub fn finish(self, result: FillResult) {
        self.tx.send_replace(Some(result));
        // Drop runs next and removes the slot.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flights.remove(&self.key);
    }
}

impl Flights {
    fn shard(&self, key: &FlightKey) -> std::sync::MutexGuard<'_, HashMap<FlightKey, Slot>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the fill for `key`: the receiver always, plus a `Leader` when
    /// no fill was in flight.
    pub fn join(self: &Arc<Self>, key: FlightKey) -> (Slot, Option<Leader>) {
        let mut shard = self.shard(&key);
        if let Some(rx) = shard.get(&key) {
            return (rx.clone(), None);
        }
        let (tx, rx) = watch::channel(None);
        shard.insert(key.clone(), rx.clone());
        drop(shard);
        (
            rx,
            Some(Leader {
                flights: self.clone(),
                key,
                tx,
            }),
        )
    }

    fn remove(&self, key: &FlightKey) {
        self.shard(key).remove(key);
    }

    pub fn in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// Waits for a fill's result, up to `timeout`.
pub async fn wait(mut rx: Slot, timeout: Duration) -> FillResult {
    match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
        Ok(Ok(v)) => v.clone().unwrap_or_else(|| Err(GatewayError::upstream_error())),
        Ok(Err(_closed)) => Err(GatewayError::internal(&"fill task ended without a result")),
        Err(_elapsed) => Err(GatewayError::upstream_timeout()),
    }
}
