//! The origin's circuit breakers, one per organization and one they share,
//! so that one tenant cannot open the circuit for the others.
//!
//! Black-box round 74: the breaker was one for all. A `standard` key could
//! ask five times in a row for a container the origin answers with a 500
//! (well under its rate limit), open the breaker, and every other
//! organization's cache misses failed `503 OVERLOADED` for `open_for`,
//! again and again. Now:
//!
//! - each organization has a breaker of its own (the configured threshold
//!   and open period): its failures open only its circuit;
//! - the shared breaker opens only on a streak of consecutive failures from
//!   at least two organizations ([`Breaker::set_min_orgs`]): an origin that
//!   fails everyone still fails fast for everyone after the threshold, and
//!   one tenant's failures never reach the others (not even before a second
//!   tenant has asked the origin anything). Its state is the origin's
//!   (`origin_breaker_state`); with a single tenant so far, that tenant's
//!   circuit is.
//!
//! A request needs both circuits closed (or a probe place in them). At most
//! [`MAX_ORG_BREAKERS`] organizations have one; past that, idle ones are
//! forgotten, and when none is idle the rest share an overflow breaker.

use super::breaker::{Breaker, BreakerOpen, BreakerSettings, BreakerState, BreakerTicket};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// Organizations with a breaker of their own, at most.
pub const MAX_ORG_BREAKERS: usize = 4096;

/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct OrgBreakers {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Breaker,
    overflow: Breaker,
    orgs: Mutex<HashMap<Box<str>, Breaker>>,
    settings: arc_swap::ArcSwap<BreakerSettings>,
    tags: foldhash::fast::FixedState,
}

/// Permission for one origin request from both circuits.
#[must_use = "report the outcome with success() or failure()"]
pub struct OrgTicket {
    shared: BreakerTicket,
    org: BreakerTicket,
}

impl OrgTicket {
    pub fn success(self) {
        self.shared.success();
        self.org.success();
    }

    /// Reports a failure of the origin; true when it opened a circuit.
    pub fn failure(self) -> bool {
        let shared = self.shared.failure();
        self.org.failure() || shared
    }
}

impl OrgBreakers {
    pub fn new(settings: BreakerSettings) -> OrgBreakers {
        let shared = Breaker::new(settings.clone());
        shared.set_min_orgs(2);
        OrgBreakers {
            inner: Arc::new(Inner {
                shared,
                overflow: Breaker::new(settings.clone()),
                orgs: Mutex::new(HashMap::new()),
                settings: arc_swap::ArcSwap::from_pointee(settings),
                tags: foldhash::fast::FixedState::with_seed(0x6c61_7965_7273),
            }),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<BreakerSettings> {
        self.inner.settings.load_full()
    }

    /// New settings for every circuit (config reload).
    pub fn set_settings(&self, settings: BreakerSettings) {
        let i = &self.inner;
        i.shared.set_settings(settings.clone());
        i.overflow.set_settings(settings.clone());
        for b in i.lock().values() {
            b.set_settings(settings.clone());
        }
        i.settings.store(Arc::new(settings));
    }

    /// Admits a request of `org` to the origin, or fails fast while its
    /// circuit or the shared one is open.
    pub fn try_acquire(&self, org: &str) -> Result<OrgTicket, BreakerOpen> {
        let own = self.breaker_of(org).try_acquire()?;
        let shared = self.inner.shared.try_acquire_for(self.inner.tags.hash_one(org))?;
        Ok(OrgTicket { shared, org: own })
    }

    fn breaker_of(&self, org: &str) -> Breaker {
        let mut orgs = self.inner.lock();
        if let Some(b) = orgs.get(org) {
            return b.clone();
        }
        if orgs.len() >= MAX_ORG_BREAKERS {
            orgs.retain(|_, b| !b.is_idle());
            if orgs.len() >= MAX_ORG_BREAKERS {
                return self.inner.overflow.clone();
            }
        }
        let b = Breaker::new((**self.inner.settings.load()).clone());
        orgs.insert(org.into(), b.clone());
        b
    }

    /// The origin's state: the shared circuit's, or with one tenant so far,
    /// that tenant's when it is worse. Among several tenants one's open
    /// circuit is in [`OrgBreakers::open_count`], not here: it says nothing
    /// about the origin, and must not page anyone.
    pub fn state(&self) -> BreakerState {
        let shared = self.inner.shared.state();
        let orgs = self.inner.lock();
        match (shared, orgs.len()) {
            (BreakerState::Closed, 1) => orgs.values().next().map_or(shared, Breaker::state),
            _ => shared,
        }
    }

    /// For a gauge: 0 closed, 1 open, 2 half-open ([`OrgBreakers::state`]).
    pub fn state_code(&self) -> i64 {
        self.state().code()
    }

    /// Circuits open now, the shared one included.
    pub fn open_count(&self) -> usize {
        let i = &self.inner;
        let orgs = i.lock();
        [&i.shared, &i.overflow]
            .into_iter()
            .chain(orgs.values())
            .filter(|b| b.state() == BreakerState::Open)
            .count()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Breaker>> {
        self.orgs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breakers() -> OrgBreakers {
        OrgBreakers::new(BreakerSettings {
            failure_threshold: 3,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        })
    }

    fn fail(b: &OrgBreakers, org: &str) -> bool {
        b.try_acquire(org).unwrap().failure()
    }

    #[tokio::test(start_paused = true)]
    async fn one_organization_s_failures_open_only_its_own_circuit() {
        let b = breakers();
        b.try_acquire("org_b").unwrap().success();
        for _ in 0..10 {
            if b.try_acquire("org_a").is_ok_and(|t| t.failure()) {
                break;
            }
        }
        assert!(b.try_acquire("org_a").is_err(), "org_a's circuit is open");
        let t = b.try_acquire("org_b").expect("org_b still reaches the origin");
        t.success();
        assert_eq!(b.open_count(), 1);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the origin's circuit stays closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_single_tenant_its_failures_open_the_origin_s_circuit() {
        let b = breakers();
        assert!(!fail(&b, "org_a"));
        assert!(!fail(&b, "org_a"));
        assert!(fail(&b, "org_a"));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_from_two_organizations_open_the_shared_circuit() {
        let b = breakers();
        b.try_acquire("org_z").unwrap().success();
        assert!(!fail(&b, "org_a"));
        assert!(!fail(&b, "org_b"));
        assert!(fail(&b, "org_c"), "three in a row, from three tenants");
        assert!(
            b.try_acquire("org_d").is_err(),
            "an origin failing everyone fails fast for everyone"
        );
        // A success of anyone's ends a streak, as before.
        tokio::time::advance(Duration::from_secs(6)).await;
        b.try_acquire("org_d").unwrap().success();
        assert!(!fail(&b, "org_f"));
        assert!(!fail(&b, "org_g"));
        b.try_acquire("org_e").unwrap().success();
        assert!(!fail(&b, "org_h"));
        assert!(b.try_acquire("org_e").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_idle_circuits_are_forgotten_and_the_rest_share_one() {
        let b = breakers();
        for i in 0..MAX_ORG_BREAKERS + 10 {
            b.try_acquire(&format!("idle_{i}")).unwrap().success();
        }
        assert!(
            b.inner.lock().len() <= MAX_ORG_BREAKERS,
            "idle circuits are forgotten"
        );
        // Every tracked circuit counting a failure (not idle); another
        // organization's success between them keeps the shared one closed.
        for i in 0..MAX_ORG_BREAKERS {
            assert!(!fail(&b, &format!("busy_{i}")));
            b.try_acquire("idle_0").unwrap().success();
        }
        assert_eq!(b.inner.lock().len(), MAX_ORG_BREAKERS);
        // Newcomers share the overflow circuit: their three failures open
        // it (and, from three tenants, the shared one).
        assert_eq!(b.open_count(), 0);
        for n in ["new_1", "new_2", "new_3"] {
            let _ = fail(&b, n);
        }
        assert_eq!(
            b.open_count(),
            2,
            "the overflow circuit counts the newcomers together"
        );
        assert!(b.try_acquire("new_4").is_err());
        assert!(b.inner.lock().len() <= MAX_ORG_BREAKERS);
    }
}
