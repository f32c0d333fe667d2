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
//!   tenant has asked the origin anything). It has no half-open probe: one
//!   tenant's failing probe would reopen it. Its state is the origin's
//!   (`origin_breaker_state`), and so is the tenants' when every tenant
//!   active in the last [`ACTIVE_WINDOW`] has its circuit open (one tenant
//!   alone, at night, on an origin that is down).
//!
//! A request needs both circuits closed (or a probe place in its own). At
//! most [`MAX_ORG_BREAKERS`] organizations have one; past that, idle ones
//! (closed, and no failure for [`FORGET_AFTER`]) are forgotten, at most once
//! a second, and when none is idle the rest share an overflow breaker.

use super::breaker::{Breaker, BreakerOpen, BreakerSettings, BreakerState, BreakerTicket};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Organizations with a breaker of their own, at most.
pub const MAX_ORG_BREAKERS: usize = 4096;
/// A closed circuit whose last failure is this old is forgotten when room
/// is needed.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Tenants that asked the origin this recently are the active ones.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(60);
/// How often a full table is swept for idle circuits, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct OrgBreakers {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Breaker,
    overflow: Breaker,
    orgs: Mutex<Table>,
    settings: arc_swap::ArcSwap<BreakerSettings>,
    tags: foldhash::fast::FixedState,
}

#[derive(Default)]
struct Table {
    by_org: HashMap<Box<str>, Breaker>,
    swept: Option<Instant>,
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
                orgs: Mutex::new(Table::default()),
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
        // First, so that a circuit made meanwhile takes them too.
        i.settings.store(Arc::new(settings.clone()));
        i.shared.set_settings(settings.clone());
        i.overflow.set_settings(settings.clone());
        for b in i.lock().by_org.values() {
            b.set_settings(settings.clone());
        }
    }

    /// Admits a request of `org` to the origin, or fails fast while its
    /// circuit or the shared one is open.
    pub fn try_acquire(&self, org: &str) -> Result<OrgTicket, BreakerOpen> {
        let own = self.breaker_of(org).try_acquire()?;
        let shared = self.inner.shared.try_acquire_for(self.inner.tags.hash_one(org))?;
        Ok(OrgTicket { shared, org: own })
    }

    fn breaker_of(&self, org: &str) -> Breaker {
        let mut t = self.inner.lock();
        if let Some(b) = t.by_org.get(org) {
            return b.clone();
        }
        if t.by_org.len() >= MAX_ORG_BREAKERS {
            let now = Instant::now();
            if t.swept
                .is_none_or(|s| now.saturating_duration_since(s) >= SWEEP_EVERY)
            {
                t.swept = Some(now);
                t.by_org.retain(|_, b| !b.is_idle(FORGET_AFTER));
            }
            if t.by_org.len() >= MAX_ORG_BREAKERS {
                return self.inner.overflow.clone();
            }
        }
        let b = Breaker::new((**self.inner.settings.load()).clone());
        t.by_org.insert(org.into(), b.clone());
        b
    }

    /// The origin's state: the shared circuit's when it is open; else open
    /// when every tenant active in the last [`ACTIVE_WINDOW`] has its own
    /// circuit open (half-open likewise). While another active tenant is
    /// served, one tenant's open circuit is only in
    /// [`OrgBreakers::open_count`]: it says nothing about the origin, and
    /// must not page anyone.
    pub fn state(&self) -> BreakerState {
        let shared = self.inner.shared.state();
        if shared != BreakerState::Closed {
            return shared;
        }
        let now = Instant::now();
        let t = self.inner.lock();
        let active = t.by_org.values().chain([&self.inner.overflow]).filter(|b| {
            b.last_used()
                .is_some_and(|u| now.saturating_duration_since(u) < ACTIVE_WINDOW)
        });
        let mut worst = None;
        for b in active {
            worst = match (worst, b.state()) {
                (_, BreakerState::Closed) => return BreakerState::Closed,
                (Some(BreakerState::Open), _) | (_, BreakerState::Open) => Some(BreakerState::Open),
                (_, s) => Some(s),
            };
        }
        worst.unwrap_or(BreakerState::Closed)
    }

    /// For a gauge: 0 closed, 1 open, 2 half-open ([`OrgBreakers::state`]).
    pub fn state_code(&self) -> i64 {
        self.state().code()
    }

    /// Circuits open now, the shared one included.
    pub fn open_count(&self) -> usize {
        let i = &self.inner;
        let t = i.lock();
        [&i.shared, &i.overflow]
            .into_iter()
            .chain(t.by_org.values())
            .filter(|b| b.state() == BreakerState::Open)
            .count()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
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

    /// Attacker review: with a half-open probe, one tenant's failing probe
    /// reopened the shared circuit for everyone, again and again.
    #[tokio::test(start_paused = true)]
    async fn the_shared_circuit_closes_after_its_open_period_and_one_tenant_cannot_reopen_it() {
        let b = breakers();
        for org in ["org_a", "org_b", "org_c"] {
            let _ = fail(&b, org);
        }
        assert!(b.try_acquire("org_d").is_err());
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(6)).await;
            // org_a's own circuit: one success keeps it from opening.
            b.try_acquire("org_a").unwrap().success();
            assert!(!fail(&b, "org_a"));
            assert!(!fail(&b, "org_a"));
            b.try_acquire("org_d")
                .expect("org_a alone reopened the shared circuit")
                .success();
        }
    }

    /// Attacker review: the origin down at night with one tenant active
    /// (another asked hours ago) never showed in `origin_breaker_state`.
    #[tokio::test(start_paused = true)]
    async fn the_origin_s_state_is_open_when_every_active_tenant_s_circuit_is() {
        let b = breakers();
        b.try_acquire("org_b").unwrap().success();
        for _ in 0..3 {
            let _ = fail(&b, "org_a");
        }
        assert_eq!(b.state(), BreakerState::Closed, "org_b is active and served");
        tokio::time::advance(ACTIVE_WINDOW).await;
        // org_a's probe fails: open again, and org_b asked a minute ago.
        assert!(fail(&b, "org_a"));
        assert_eq!(b.state(), BreakerState::Open, "org_a is the only active tenant");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_idle_circuits_are_forgotten_and_the_rest_share_one() {
        let b = breakers();
        for i in 0..MAX_ORG_BREAKERS + 10 {
            b.try_acquire(&format!("idle_{i}")).unwrap().success();
        }
        assert!(
            b.inner.lock().by_org.len() <= MAX_ORG_BREAKERS,
            "idle circuits are forgotten"
        );

        // A table of circuits that each counted a failure (another
        // organization's success between them keeps the shared one closed).
        let b = breakers();
        b.try_acquire("reset").unwrap().success();
        for i in 0..MAX_ORG_BREAKERS - 1 {
            assert!(!fail(&b, &format!("busy_{i}")));
            b.try_acquire("reset").unwrap().success();
        }
        assert_eq!(b.inner.lock().by_org.len(), MAX_ORG_BREAKERS);
        // Swept at most once a second: newcomers meanwhile share the
        // overflow circuit (and, three tenants failing, the shared one opens).
        tokio::time::advance(SWEEP_EVERY).await;
        b.try_acquire("new_0").unwrap().success(); // the sweep forgets `reset`
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
        // A failure long past does not keep a circuit: swept, they go.
        tokio::time::advance(FORGET_AFTER).await;
        b.try_acquire("new_5").unwrap().success();
        assert!(
            b.inner.lock().by_org.len() < 10,
            "{}",
            b.inner.lock().by_org.len()
        );
    }
}
