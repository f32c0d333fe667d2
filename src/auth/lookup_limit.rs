//! Bounds on origin introspection: the one path where a request without a
//! valid credential makes the gateway call the origin.
//!
//! A random well-formed `lp_` key is new to the introspection cache, so
//! without a bound every one of them costs a `/v1/whoami` call, and a
//! keyless client could spend the origin's capacity that partners need for
//! their misses. Three bounds, all checked before a call starts (a key
//! answered from the cache, or one joining a call already in flight, costs
//! nothing and is never refused here):
//!
//! - per client address: `lookups_per_peer_per_sec`, burst `peer_burst`
//!   (IPv6 by /64, the block one host is usually given) -> 429;
//! - all clients together: `lookups_per_sec` -> 503 with `Retry-After`;
//! - calls in flight: `max_inflight`, never queued -> 503 at once.
//!
//! And one on waiting: joining a call in flight is free, so one made-up key
//! sent on many connections would hold them all for as long as the call
//! takes (each a request still being checked, which a newcomer at the
//! connection cap closes only last: `server::idle_evict`). So one client
//! has at most [`MAX_WAITERS_PER_PEER`] requests waiting on whoami calls at
//! once, joined or started -> 429 past it.
//!
//! Refreshing a key whose principal is cached is not a new call: it has
//! `max_inflight` slots of its own and no rate budget ([`LookupLimit::admit_refresh`]).
//!
//! The whoami calls themselves still go through the origin guard, but with
//! at most `max_inflight` of them they can never fill its shared queue.

use super::settings::IntrospectionSettings;
use crate::peer::PeerKey;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Client addresses tracked at once; past it moka evicts the least used.
const MAX_PEERS: u64 = 100_000;
/// A peer's bucket is forgotten after this long unused (it is full again by then).
const PEER_IDLE: Duration = Duration::from_secs(60);
/// Requests of one client (an IPv6 /64) waiting on whoami calls at once.
pub const MAX_WAITERS_PER_PEER: usize = 16;

/// Why a lookup was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupRefusal {
    /// This client address asked for too many unknown keys: 429.
    PeerRate { retry_after_secs: u64 },
    /// All clients together did: 503.
    GlobalRate { retry_after_secs: u64 },
    /// `max_inflight` whoami calls are running: 503.
    Busy,
}

/// A token bucket on tokio's clock (paused in tests).
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

pub struct LookupLimit {
    inflight: Arc<Semaphore>,
    /// Refreshes of keys the origin already vouched for: as many slots
    /// again, never taken by new keys.
    refresh: Arc<Semaphore>,
    global: Mutex<Bucket>,
    global_rate: f64,
    peers: moka::sync::Cache<PeerKey, Arc<Mutex<Bucket>>>,
    peer_rate: f64,
    peer_burst: f64,
    /// Requests waiting on whoami calls, per client; an entry only while
    /// it has one, so at most one per request in flight.
    waiters: Mutex<std::collections::HashMap<PeerKey, usize>>,
}

/// One request waiting on a whoami call; given back on drop.
pub struct Waiting<'a> {
    limit: &'a LookupLimit,
    peer: PeerKey,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut w = self.limit.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = w.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.peer);
            }
        }
    }
}

/// Whole seconds to wait, at least 1.
fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl LookupLimit {
    pub fn new(s: &IntrospectionSettings) -> LookupLimit {
        let now = Instant::now();
        let global_rate = s.lookups_per_sec as f64;
        LookupLimit {
            inflight: Arc::new(Semaphore::new(s.max_inflight)),
            refresh: Arc::new(Semaphore::new(s.max_inflight)),
            global: Mutex::new(Bucket::full(global_rate, now)),
            global_rate,
            peers: moka::sync::Cache::builder()
                .max_capacity(MAX_PEERS)
                .time_to_idle(PEER_IDLE)
                .build(),
            peer_rate: s.lookups_per_peer_per_sec as f64,
            peer_burst: s.peer_burst as f64,
            waiters: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Lets a request from `peer` wait on a whoami call (joined or
    /// started), at most [`MAX_WAITERS_PER_PEER`] per client at once.
    /// `None` for a request built in-process: nothing to hold.
    pub fn wait(&self, peer: Option<IpAddr>) -> Result<Option<Waiting<'_>>, LookupRefusal> {
        let Some(peer) = peer.map(PeerKey::of) else {
            return Ok(None);
        };
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let n = w.entry(peer).or_insert(0);
        if *n >= MAX_WAITERS_PER_PEER {
            return Err(LookupRefusal::PeerRate { retry_after_secs: 1 });
        }
        *n += 1;
        Ok(Some(Waiting { limit: self, peer }))
    }

    /// Admits one whoami call: the returned permit is held until the call
    /// ends. The in-flight cap is taken first (a busy refusal spends no
    /// budget), then the peer's budget before the global one, so one noisy
    /// client is refused without spending everyone's budget.
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<OwnedSemaphorePermit, LookupRefusal> {
        let permit = self
            .inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| LookupRefusal::Busy)?;
        let now = Instant::now();
        if let Some(ip) = peer {
            let bucket = self.peers.get_with(PeerKey::of(ip), || {
                Arc::new(Mutex::new(Bucket::full(self.peer_burst, now)))
            });
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.take(self.peer_rate, self.peer_burst, now)
                .map_err(|d| LookupRefusal::PeerRate {
                    retry_after_secs: retry_secs(d),
                })?;
        }
        let mut g = self.global.lock().unwrap_or_else(|p| p.into_inner());
        g.take(self.global_rate, self.global_rate, now)
            .map_err(|d| LookupRefusal::GlobalRate {
                retry_after_secs: retry_secs(d),
            })?;
        Ok(permit)
    }

    /// Admits the refresh of a key whose principal is cached: no rate
    /// budget (refreshes are bounded by the cached principals), only its
    /// own in-flight slots. `None`: serve the cached principal instead.
    pub fn admit_refresh(&self) -> Option<OwnedSemaphorePermit> {
        self.refresh.clone().try_acquire_owned().ok()
    }

    /// whoami calls for new keys running now (tests read it).
    #[cfg(test)]
    pub fn inflight(&self, max: usize) -> usize {
        max - self.inflight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_peer: u64, burst: u64, global: u64, inflight: usize) -> LookupLimit {
        LookupLimit::new(&IntrospectionSettings {
            lookups_per_peer_per_sec: per_peer,
            peer_burst: burst,
            lookups_per_sec: global,
            max_inflight: inflight,
            ..Default::default()
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[tokio::test(start_paused = true)]
    async fn a_peer_spends_its_burst_then_its_rate_and_others_are_untouched() {
        let l = limit(2, 3, 1000, 100);
        let permits: Vec<_> = (0..3).map(|_| l.admit(Some(A)).unwrap()).collect();
        assert_eq!(
            l.admit(Some(A)).err(),
            Some(LookupRefusal::PeerRate { retry_after_secs: 1 })
        );
        assert!(l.admit(Some(B)).is_ok(), "another client keeps its own budget");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(l.admit(Some(A)).is_ok(), "one token back after 1/rate");
        assert!(l.admit(Some(A)).is_err());
        drop(permits);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_peers_share_a_budget_per_64() {
        let l = limit(1, 1, 1000, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _p = l.admit(Some(a)).unwrap();
        assert!(l.admit(Some(same_64)).is_err());
        let _q = l.admit(Some(other_64)).unwrap();
        let _r = l.admit(Some(A)).unwrap();
        assert!(
            l.admit(Some(mapped)).is_err(),
            "a v4-mapped address is its v4 peer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_budget_and_the_inflight_cap_bound_all_peers() {
        let l = limit(1000, 1000, 4, 2);
        let p1 = l.admit(None).unwrap();
        let p2 = l.admit(None).unwrap();
        assert_eq!(
            l.admit(None).err(),
            Some(LookupRefusal::Busy),
            "no queue past max_inflight"
        );
        assert_eq!(l.inflight(2), 2);
        drop(p1);
        let p3 = l.admit(None).unwrap();
        drop((p2, p3));
        let _p4 = l.admit(None).unwrap();
        assert!(matches!(l.admit(None), Err(LookupRefusal::GlobalRate { .. })));
    }

    #[tokio::test]
    async fn one_client_waits_on_at_most_sixteen_whoami_calls_and_others_still_may() {
        let l = limit(5, 20, 200, 32);
        let held: Vec<_> = (0..MAX_WAITERS_PER_PEER)
            .map(|_| l.wait(Some(A)).unwrap())
            .collect();
        assert!(matches!(l.wait(Some(A)), Err(LookupRefusal::PeerRate { .. })));
        assert!(l.wait(Some(B)).unwrap().is_some(), "another client");
        assert!(l.wait(None).unwrap().is_none(), "in-process: nothing held");
        drop(held);
        assert!(l.wait(Some(A)).is_ok());
        assert!(l.waiters.lock().unwrap().is_empty(), "no entry once none waits");
    }
}
