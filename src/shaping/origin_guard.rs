//! Origin protection: a global cap and a per-org cap on in-flight origin
//! requests, with a bounded, deadline-limited queue in front of both.
//!
//! Order of acquisition is per-org slot first, then global slot. An org
//! waiting for one of its own slots therefore never holds a global one, so
//! one org saturating its share (`per_org_max < global_max`, validated)
//! leaves `global_max - per_org_max` slots that other orgs take without
//! waiting (DESIGN.md promise 3: bounded, shed past the bound).
//!
//! Both caps are `tokio::sync::Semaphore`s: FIFO among waiters and
//! cancellation-safe (a dropped `acquire` future gives back its place and any
//! permit it already held). The queue bound is a counter of callers past the
//! fast path; its slot is an RAII guard, so a dropped waiter frees it too.
//!
//! Per-org state is one semaphore per org in a map bounded by `max_orgs`,
//! with a count of the requests using it (in flight, waiting, or between
//! the two). The last one to finish removes the entry, so the map holds
//! exactly the orgs that are busy; past `max_orgs` busy orgs a new org is
//! shed (`Shed::TooManyOrgs`).

use crate::error::GatewayError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub const DEFAULT_GLOBAL_MAX: usize = 512;
pub const DEFAULT_PER_ORG_MAX: usize = 64;
pub const DEFAULT_QUEUE_MAX: usize = 1024;
pub const DEFAULT_QUEUE_DEADLINE: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_ORGS: usize = 10_000;

/// Bounds of the guard. Run [`GuardSettings::validate`] before `new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardSettings {
    /// In-flight origin requests, all orgs together.
    pub global_max: usize,
    /// In-flight origin requests of one org; less than `global_max`.
    pub per_org_max: usize,
    /// Requests waiting for a slot, all orgs together; past it, shed at once.
    pub queue_max: usize,
    /// Longest a request waits for its slots before it is shed.
    pub queue_deadline: Duration,
    /// Orgs tracked at once (busy ones only; idle ones are dropped).
    pub max_orgs: usize,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            global_max: DEFAULT_GLOBAL_MAX,
            per_org_max: DEFAULT_PER_ORG_MAX,
            queue_max: DEFAULT_QUEUE_MAX,
            queue_deadline: DEFAULT_QUEUE_DEADLINE,
            max_orgs: DEFAULT_MAX_ORGS,
        }
    }
}

impl GuardSettings {
    /// Checks the bounds; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        // Semaphore::new panics past this.
        let max_permits = Semaphore::MAX_PERMITS;
        if self.global_max == 0 || self.global_max > max_permits {
            return Err(format!("global_max: must be between 1 and {max_permits}"));
        }
        if self.per_org_max == 0 {
            return Err("per_org_max: must be greater than 0".into());
        }
        if self.per_org_max >= self.global_max {
            return Err(format!(
                "per_org_max: must be less than global_max ({}), so one org cannot take every origin slot",
                self.global_max
            ));
        }
        if self.queue_deadline.is_zero() {
            return Err("queue_deadline: must be greater than 0".into());
        }
        if self.max_orgs == 0 {
            return Err("max_orgs: must be greater than 0".into());
        }
        Ok(())
    }
}

/// Why a request was refused an origin slot. Each carries the `Retry-After`
/// to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// `queue_max` requests were already waiting.
    QueueFull { retry_after_secs: u64 },
    /// Waited `queue_deadline` without getting both slots.
    Deadline { retry_after_secs: u64 },
    /// `max_orgs` orgs were busy; a new org cannot be tracked.
    TooManyOrgs { retry_after_secs: u64 },
    /// No slot free at once for a call that never queues (`try_acquire`):
    /// told apart from `QueueFull`, which means partners' requests are
    /// piling up, so an operator reading the metric is not misled.
    NoFreeSlot { retry_after_secs: u64 },
}

impl Shed {
    pub fn retry_after_secs(&self) -> u64 {
        match *self {
            Shed::QueueFull { retry_after_secs }
            | Shed::Deadline { retry_after_secs }
            | Shed::TooManyOrgs { retry_after_secs }
            | Shed::NoFreeSlot { retry_after_secs } => retry_after_secs,
        }
    }

    /// A fixed label value for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Shed::QueueFull { .. } => "queue_full",
            Shed::Deadline { .. } => "deadline",
            Shed::TooManyOrgs { .. } => "too_many_orgs",
            Shed::NoFreeSlot { .. } => "no_free_slot",
        }
    }
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "origin slot refused: {}", self.as_str())
    }
}

impl std::error::Error for Shed {}

impl From<Shed> for GatewayError {
    /// 503 OVERLOADED with `Retry-After`.
    fn from(s: Shed) -> GatewayError {
        GatewayError::overloaded(s.retry_after_secs())
    }
}

/// How a permit was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Both slots were free on arrival.
    Immediate,
    /// Waited in the queue, then got both slots.
    Queued,
}

/// A snapshot of the guard's gauges and counters (all orgs together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Permits alive (origin requests in flight).
    pub inflight: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Orgs currently tracked (busy, or just released and not yet pruned).
    pub tracked_orgs: usize,
    pub admitted_immediate: u64,
    pub admitted_queued: u64,
    pub shed_queue_full: u64,
    pub shed_no_free_slot: u64,
    pub shed_deadline: u64,
    pub shed_too_many_orgs: u64,
}

/// The guard; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct OriginGuard {
    shared: Arc<Shared>,
}

struct Shared {
    /// Swapped whole by a config reload ([`OriginGuard::resize`]); each
    /// admission reads it once. `global` is resized to match.
    settings: arc_swap::ArcSwap<GuardSettings>,
    /// `global_max` permits. Never closed.
    global: Arc<Semaphore>,
    /// org -> its semaphore and user count. A std mutex: every critical
    /// section is one map step, never across an `.await`. Invariant: `users`
    /// is the number of live `OrgRef`s of the entry, and an entry is removed
    /// when it drops to 0. Every permit lives beside its `OrgRef` and is
    /// released first, so a removed semaphore has no live request and the
    /// per-org cap cannot be doubled by a fresh entry.
    orgs: Mutex<HashMap<Arc<str>, OrgEntry>>,
    /// Live `OriginPermit`s. Counters are atomics: read by gauges without
    /// taking the map lock.
    inflight: AtomicUsize,
    /// Live `QueueSlot`s; never above `queue_max`.
    queued: AtomicUsize,
    admitted_immediate: AtomicU64,
    admitted_queued: AtomicU64,
    shed_queue_full: AtomicU64,
    shed_no_free_slot: AtomicU64,
    shed_deadline: AtomicU64,
    shed_too_many_orgs: AtomicU64,
}

/// Zero caps raised to 1 rather than deadlocking every request.
fn clamped(mut settings: GuardSettings) -> GuardSettings {
    settings.global_max = settings.global_max.clamp(1, Semaphore::MAX_PERMITS);
    settings.per_org_max = settings.per_org_max.max(1);
    settings.max_orgs = settings.max_orgs.max(1);
    settings
}

impl OriginGuard {
    /// Builds the guard. `settings` should have passed `validate()`; zero
    /// caps are raised to 1 here rather than deadlocking every request.
    pub fn new(settings: GuardSettings) -> Self {
        let settings = clamped(settings);
        OriginGuard {
            shared: Arc::new(Shared {
                global: Arc::new(Semaphore::new(settings.global_max)),
                settings: arc_swap::ArcSwap::from_pointee(settings),
                orgs: Mutex::new(HashMap::new()),
                inflight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                admitted_immediate: AtomicU64::new(0),
                admitted_queued: AtomicU64::new(0),
                shed_queue_full: AtomicU64::new(0),
                shed_no_free_slot: AtomicU64::new(0),
                shed_deadline: AtomicU64::new(0),
                shed_too_many_orgs: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> Arc<GuardSettings> {
        self.shared.settings.load_full()
    }

    /// Puts new caps in force (config reload). A raised `global_max` frees
    /// its extra slots at once; a lowered one takes the difference out of
    /// circulation as in-flight requests finish (a waiter for those permits
    /// queues ahead of new requests, so nothing new starts above the new
    /// cap). `per_org_max` applies to organizations as they next become
    /// busy (an idle org's slots are dropped); the queue bounds and
    /// `max_orgs` apply to the next admission.
    pub fn resize(&self, settings: GuardSettings) {
        let new = clamped(settings);
        let old = self.shared.settings.swap(Arc::new(new.clone()));
        let global = &self.shared.global;
        if new.global_max > old.global_max {
            global.add_permits(new.global_max - old.global_max);
        } else if new.global_max < old.global_max {
            let excess = old.global_max - new.global_max;
            let rest = excess - global.forget_permits(excess);
            if rest > 0 {
                let sem = global.clone();
                let take = u32::try_from(rest).unwrap_or(u32::MAX);
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if let Ok(p) = sem.acquire_many_owned(take).await {
                                p.forget();
                            }
                        });
                    }
                    Err(_) => tracing::warn!(
                        "origin.max_inflight lowered outside a runtime; {rest} slots stay until restart"
                    ),
                }
            }
        }
    }

    /// Takes a per-org slot, then a global slot. If both are free, returns
    /// at once; otherwise waits in the bounded queue until `queue_deadline`.
    /// Cancellation-safe: dropping the future frees its queue place and any
    /// slot it already took.
    pub async fn acquire(&self, org: &str) -> Result<OriginPermit, Shed> {
        let sh = &self.shared;
        let org_ref = self.org_ref(org)?;

        // Fast path: both slots free, no queue involved.
        let org_permit = org_ref.sem.clone().try_acquire_owned().ok();
        if let Some(op) = org_permit {
            if let Ok(gp) = sh.global.clone().try_acquire_owned() {
                sh.admitted_immediate.fetch_add(1, Ordering::Relaxed);
                return Ok(OriginPermit::new(gp, op, org_ref, Admission::Immediate));
            }
            return self.wait(org_ref, Some(op)).await;
        }
        self.wait(org_ref, None).await
    }

    /// Both slots if they are free now, never a place in the queue: for
    /// calls made on behalf of clients the gateway does not know yet
    /// (origin introspection), which must not take the queue that
    /// partners' requests wait in.
    pub fn try_acquire(&self, org: &str) -> Result<OriginPermit, Shed> {
        let sh = &self.shared;
        let org_ref = self.org_ref(org)?;
        let admitted = org_ref
            .sem
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|op| Some((sh.global.clone().try_acquire_owned().ok()?, op)));
        match admitted {
            Some((gp, op)) => {
                sh.admitted_immediate.fetch_add(1, Ordering::Relaxed);
                Ok(OriginPermit::new(gp, op, org_ref, Admission::Immediate))
            }
            None => {
                sh.shed_no_free_slot.fetch_add(1, Ordering::Relaxed);
                Err(Shed::NoFreeSlot {
                    retry_after_secs: self.retry_after_secs(),
                })
            }
        }
    }

    /// The slow path: a queue place, then the missing slots, under the
    /// deadline. `org_permit` is the per-org slot if the fast path got it.
    async fn wait(
        &self,
        org_ref: OrgRef,
        org_permit: Option<OwnedSemaphorePermit>,
    ) -> Result<OriginPermit, Shed> {
        let sh = &self.shared;
        let Some(_slot) = QueueSlot::take(sh) else {
            sh.shed_queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(Shed::QueueFull {
                retry_after_secs: self.retry_after_secs(),
            });
        };
        let deadline = Instant::now() + sh.settings.load().queue_deadline;
        let org_sem = org_ref.sem.clone();
        let global = sh.global.clone();
        let both = async move {
            // Per-org first: a request waiting on its org holds no global slot.
            let op = match org_permit {
                Some(p) => p,
                None => org_sem.acquire_owned().await.ok()?,
            };
            let gp = global.acquire_owned().await.ok()?;
            Some((gp, op))
        };
        let waited = tokio::time::timeout_at(deadline, both).await;
        match waited {
            Ok(Some((gp, op))) => {
                sh.admitted_queued.fetch_add(1, Ordering::Relaxed);
                Ok(OriginPermit::new(gp, op, org_ref, Admission::Queued))
            }
            // `None` (a closed semaphore) cannot happen: neither is ever closed.
            Ok(None) | Err(_) => {
                sh.shed_deadline.fetch_add(1, Ordering::Relaxed);
                Err(Shed::Deadline {
                    retry_after_secs: self.retry_after_secs(),
                })
            }
        }
    }

    /// The org's semaphore, creating (and tracking) it if needed.
    fn org_ref(&self, org: &str) -> Result<OrgRef, Shed> {
        let sh = &self.shared;
        let mut orgs = sh.lock_orgs();
        if let Some(e) = orgs.get_mut(org) {
            e.users += 1;
            return Ok(OrgRef {
                shared: sh.clone(),
                org: e.org.clone(),
                sem: e.sem.clone(),
            });
        }
        let settings = sh.settings.load();
        if orgs.len() >= settings.max_orgs {
            drop(orgs);
            sh.shed_too_many_orgs.fetch_add(1, Ordering::Relaxed);
            return Err(Shed::TooManyOrgs { retry_after_secs: 1 });
        }
        let key: Arc<str> = Arc::from(org);
        let sem = Arc::new(Semaphore::new(settings.per_org_max));
        orgs.insert(
            key.clone(),
            OrgEntry {
                org: key.clone(),
                sem: sem.clone(),
                users: 1,
            },
        );
        Ok(OrgRef {
            shared: sh.clone(),
            org: key,
            sem,
        })
    }

    /// `Retry-After` for a shed: the queue deadline rounded up, at least 1 s.
    fn retry_after_secs(&self) -> u64 {
        let d = self.shared.settings.load().queue_deadline;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        secs.max(1)
    }

    /// Origin requests in flight (live permits).
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Orgs currently tracked.
    pub fn tracked_orgs(&self) -> usize {
        self.shared.lock_orgs().len()
    }

    pub fn stats(&self) -> GuardStats {
        let sh = &self.shared;
        GuardStats {
            inflight: self.inflight(),
            queued: self.queued(),
            tracked_orgs: self.tracked_orgs(),
            admitted_immediate: sh.admitted_immediate.load(Ordering::Relaxed),
            admitted_queued: sh.admitted_queued.load(Ordering::Relaxed),
            shed_queue_full: sh.shed_queue_full.load(Ordering::Relaxed),
            shed_no_free_slot: sh.shed_no_free_slot.load(Ordering::Relaxed),
            shed_deadline: sh.shed_deadline.load(Ordering::Relaxed),
            shed_too_many_orgs: sh.shed_too_many_orgs.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn lock_orgs(&self) -> MutexGuard<'_, HashMap<Arc<str>, OrgEntry>> {
        self.orgs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A place in the queue; freed on drop (also when the waiter is cancelled).
struct QueueSlot<'a> {
    shared: &'a Shared,
}

impl<'a> QueueSlot<'a> {
    fn take(shared: &'a Shared) -> Option<Self> {
        let max = shared.settings.load().queue_max;
        shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max).then_some(q + 1)
            })
            .ok()
            .map(|_| QueueSlot { shared })
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

struct OrgEntry {
    /// The map's key, shared with every `OrgRef` (one allocation per org).
    org: Arc<str>,
    sem: Arc<Semaphore>,
    /// Live `OrgRef`s of this entry.
    users: usize,
}

/// One request's use of its org's semaphore; the last one to drop untracks
/// the org.
struct OrgRef {
    shared: Arc<Shared>,
    org: Arc<str>,
    sem: Arc<Semaphore>,
}

impl Drop for OrgRef {
    fn drop(&mut self) {
        let mut orgs = self.shared.lock_orgs();
        if let Some(e) = orgs.get_mut(&*self.org) {
            if Arc::ptr_eq(&e.sem, &self.sem) {
                e.users -= 1;
                if e.users == 0 {
                    orgs.remove(&*self.org);
                }
            }
        }
    }
}

/// Both slots of one origin request; dropping it frees both.
#[must_use = "the origin slots are freed as soon as the permit is dropped"]
pub struct OriginPermit {
    // Field order is drop order: the slots go before `org_ref` checks
    // whether the org is idle.
    _global: OwnedSemaphorePermit,
    _org_permit: OwnedSemaphorePermit,
    org_ref: OrgRef,
    admission: Admission,
}

impl OriginPermit {
    fn new(
        global: OwnedSemaphorePermit,
        org_permit: OwnedSemaphorePermit,
        org_ref: OrgRef,
        admission: Admission,
    ) -> Self {
        org_ref.shared.inflight.fetch_add(1, Ordering::AcqRel);
        OriginPermit {
            _global: global,
            _org_permit: org_permit,
            org_ref,
            admission,
        }
    }

    pub fn admission(&self) -> Admission {
        self.admission
    }

    pub fn org(&self) -> &str {
        &self.org_ref.org
    }
}

impl Drop for OriginPermit {
    fn drop(&mut self) {
        // The two slots, then `org_ref`, drop after this body.
        self.org_ref.shared.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for OriginPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginPermit")
            .field("org", &self.org())
            .field("admission", &self.admission)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::JoinHandle;

    fn settings(global_max: usize, per_org_max: usize, queue_max: usize) -> GuardSettings {
        GuardSettings {
            global_max,
            per_org_max,
            queue_max,
            queue_deadline: Duration::from_secs(2),
            max_orgs: 100,
        }
    }

    /// Lets spawned tasks run until they block (no time passes).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn spawn_acquire(g: &OriginGuard, org: &'static str) -> JoinHandle<Result<OriginPermit, Shed>> {
        let g = g.clone();
        tokio::spawn(async move { g.acquire(org).await })
    }

    #[tokio::test(start_paused = true)]
    async fn global_cap_makes_the_next_request_wait_until_one_frees() {
        let g = OriginGuard::new(settings(3, 2, 10));
        let a1 = g.acquire("a").await.unwrap();
        let _a2 = g.acquire("a").await.unwrap();
        let _b1 = g.acquire("b").await.unwrap();
        assert_eq!(g.inflight(), 3);

        let waiter = spawn_acquire(&g, "c");
        settle().await;
        assert!(!waiter.is_finished());
        assert_eq!(g.queued(), 1);
        assert_eq!(g.inflight(), 3);

        let t0 = Instant::now();
        drop(a1);
        let p = waiter.await.unwrap().unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(p.admission(), Admission::Queued);
        assert_eq!(g.inflight(), 3);
        assert_eq!(g.queued(), 0);
        let s = g.stats();
        assert_eq!((s.admitted_immediate, s.admitted_queued), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_global_cap_admits_a_waiter_at_once() {
        let g = OriginGuard::new(settings(2, 2, 10));
        let _a = g.acquire("a").await.unwrap();
        let _b = g.acquire("b").await.unwrap();
        let waiter = spawn_acquire(&g, "c");
        settle().await;
        assert!(!waiter.is_finished());
        g.resize(settings(3, 2, 10));
        let p = waiter.await.unwrap().unwrap();
        assert_eq!(p.admission(), Admission::Queued);
        assert_eq!(g.inflight(), 3);
        assert_eq!(g.settings().global_max, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_global_cap_starts_nothing_new_above_it() {
        let g = OriginGuard::new(settings(4, 4, 10));
        let a1 = g.acquire("a").await.unwrap();
        let a2 = g.acquire("a").await.unwrap();
        let a3 = g.acquire("a").await.unwrap();
        // Three in flight, cap lowered to 2: nothing new may start until
        // two have finished.
        g.resize(settings(2, 4, 10));
        settle().await;
        let waiter = spawn_acquire(&g, "b");
        settle().await;
        assert!(!waiter.is_finished(), "over the new cap");
        drop(a1);
        settle().await;
        assert!(!waiter.is_finished(), "still at the new cap");
        drop(a2);
        let _p = waiter.await.unwrap().unwrap();
        assert_eq!(g.inflight(), 2);
        drop(a3);
        settle().await;
        // The cap stays 2: two in flight, a third waits.
        let _q = g.acquire("c").await.unwrap();
        let third = spawn_acquire(&g, "d");
        settle().await;
        assert!(!third.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn per_org_cap_makes_that_org_wait_while_others_go() {
        let g = OriginGuard::new(settings(4, 2, 10));
        let a1 = g.acquire("a").await.unwrap();
        let _a2 = g.acquire("a").await.unwrap();
        let waiter = spawn_acquire(&g, "a");
        settle().await;
        assert!(!waiter.is_finished());
        assert_eq!(g.inflight(), 2);

        let b = g.acquire("b").await.unwrap();
        assert_eq!(b.admission(), Admission::Immediate);
        assert!(!waiter.is_finished());

        drop(a1);
        let p = waiter.await.unwrap().unwrap();
        assert_eq!(p.admission(), Admission::Queued);
        assert_eq!(g.inflight(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_deadline_sheds_exactly_at_the_deadline() {
        let g = OriginGuard::new(settings(2, 1, 10));
        let _a = g.acquire("a").await.unwrap();

        // Auto-advanced clock: the shed happens exactly `queue_deadline` later.
        let t0 = Instant::now();
        let shed = g.acquire("a").await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(shed, Shed::Deadline { retry_after_secs: 2 });
        assert_eq!(shed.as_str(), "deadline");

        // Manually advanced: still waiting 1 ms before, shed at it.
        let waiter = spawn_acquire(&g, "a");
        settle().await;
        tokio::time::advance(Duration::from_millis(1999)).await;
        settle().await;
        assert!(!waiter.is_finished());
        assert_eq!(g.queued(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        let shed = waiter.await.unwrap().unwrap_err();
        assert!(matches!(shed, Shed::Deadline { .. }));
        assert_eq!(g.queued(), 0);
        assert_eq!(g.stats().shed_deadline, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unqueued_call_without_a_free_slot_is_shed_as_no_free_slot_not_queue_full() {
        let g = OriginGuard::new(settings(1, 1, 4));
        let _a = g.acquire("a").await.unwrap();
        let shed = g.try_acquire("b").unwrap_err();
        assert_eq!(shed, Shed::NoFreeSlot { retry_after_secs: 2 });
        assert_eq!(shed.as_str(), "no_free_slot");
        let st = g.stats();
        assert_eq!((st.shed_no_free_slot, st.shed_queue_full), (1, 0));
        // It never took a place in the queue partners wait in.
        assert_eq!(g.queued(), 0);
        drop(_a);
        assert!(g.try_acquire("b").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_sheds_immediately() {
        let g = OriginGuard::new(settings(2, 1, 1));
        let _a = g.acquire("a").await.unwrap();
        let waiter = spawn_acquire(&g, "a");
        settle().await;
        assert_eq!(g.queued(), 1);

        let t0 = Instant::now();
        // "b" has free slots: the queue bound only applies to those who wait.
        let _b = g.acquire("b").await.unwrap();
        let shed = g.acquire("a").await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(shed, Shed::QueueFull { retry_after_secs: 2 });
        assert_eq!(shed.as_str(), "queue_full");
        assert_eq!(g.stats().shed_queue_full, 1);
        assert!(!waiter.is_finished());

        // No queue at all: shed as soon as a slot is missing.
        let g = OriginGuard::new(settings(2, 1, 0));
        let _a = g.acquire("a").await.unwrap();
        assert!(matches!(g.acquire("a").await, Err(Shed::QueueFull { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooding_org_does_not_delay_another_org() {
        let g = OriginGuard::new(settings(4, 2, 100));
        let _a1 = g.acquire("a").await.unwrap();
        let _a2 = g.acquire("a").await.unwrap();
        let flood: Vec<_> = (0..50).map(|_| spawn_acquire(&g, "a")).collect();
        settle().await;
        assert_eq!(g.queued(), 50);
        assert_eq!(g.inflight(), 2);

        let t0 = Instant::now();
        let b1 = g.acquire("b").await.unwrap();
        let b2 = g.acquire("b").await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(b1.admission(), Admission::Immediate);
        assert_eq!(b2.admission(), Admission::Immediate);
        assert_eq!(g.inflight(), 4);
        assert!(flood.iter().all(|h| !h.is_finished()));
        for h in flood {
            h.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_frees_its_queue_place_and_leaks_no_slot() {
        let g = OriginGuard::new(settings(2, 1, 1));
        let a = g.acquire("a").await.unwrap();
        let b = g.acquire("b").await.unwrap();

        // Waiting for its org slot ("a" is full), then cancelled.
        let waiter = spawn_acquire(&g, "a");
        settle().await;
        assert_eq!(g.queued(), 1);
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        assert_eq!(g.queued(), 0);

        // Holding its own org slot, waiting for a global one, then cancelled
        // by a timeout shorter than the queue deadline.
        let r = tokio::time::timeout(Duration::from_millis(10), g.acquire("c")).await;
        assert!(r.is_err());
        assert_eq!(g.queued(), 0);
        assert_eq!(g.inflight(), 2);

        // The queue place is usable again, and "c" kept no slot.
        drop(a);
        let c = g.acquire("c").await.unwrap();
        assert_eq!(c.admission(), Admission::Immediate);
        drop((b, c));
        assert_eq!(g.inflight(), 0);
        let x = g.acquire("x").await.unwrap();
        let y = g.acquire("y").await.unwrap();
        assert_eq!(g.inflight(), 2);
        drop((x, y));
        assert_eq!(g.tracked_orgs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_orgs_are_untracked_and_the_org_map_is_bounded() {
        let mut s = settings(4, 2, 10);
        s.max_orgs = 2;
        let g = OriginGuard::new(s);
        let a = g.acquire("a").await.unwrap();
        let _b = g.acquire("b").await.unwrap();
        assert_eq!(g.tracked_orgs(), 2);
        let shed = g.acquire("c").await.unwrap_err();
        assert_eq!(shed, Shed::TooManyOrgs { retry_after_secs: 1 });
        assert_eq!(g.stats().shed_too_many_orgs, 1);

        drop(a);
        assert_eq!(g.tracked_orgs(), 1);
        let _c = g.acquire("c").await.unwrap();
        assert_eq!(g.tracked_orgs(), 2);
    }

    /// Many tasks of several orgs on two threads: neither cap is ever
    /// exceeded, and everything is given back at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn caps_hold_under_contention_and_everything_is_released() {
        use std::sync::atomic::AtomicIsize;
        const ORGS: usize = 6;
        let g = OriginGuard::new(GuardSettings {
            global_max: 5,
            per_org_max: 2,
            queue_max: 1000,
            queue_deadline: Duration::from_secs(60),
            max_orgs: ORGS,
        });
        let global = Arc::new(AtomicIsize::new(0));
        let per_org: Arc<Vec<AtomicIsize>> = Arc::new((0..ORGS).map(|_| AtomicIsize::new(0)).collect());
        let peak = Arc::new(AtomicIsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..300 {
            let (g, global, per_org, peak) = (g.clone(), global.clone(), per_org.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let o = i % ORGS;
                let org = format!("org{o}");
                let _p = g.acquire(&org).await.unwrap();
                let now = global.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                assert!(now <= 5, "global cap exceeded: {now}");
                let mine = per_org[o].fetch_add(1, Ordering::SeqCst) + 1;
                assert!(mine <= 2, "per-org cap exceeded: {mine}");
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                per_org[o].fetch_sub(1, Ordering::SeqCst);
                global.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) >= 2);
        let s = g.stats();
        assert_eq!((s.inflight, s.queued, s.tracked_orgs), (0, 0, 0));
        assert_eq!(s.admitted_immediate + s.admitted_queued, 300);
    }

    #[test]
    fn validate_names_the_field() {
        assert!(GuardSettings::default().validate().is_ok());
        let e = settings(4, 4, 10).validate().unwrap_err();
        assert!(e.starts_with("per_org_max:"), "{e}");
        assert!(settings(0, 1, 10)
            .validate()
            .unwrap_err()
            .starts_with("global_max:"));
        assert!(settings(4, 0, 10)
            .validate()
            .unwrap_err()
            .starts_with("per_org_max:"));
        let mut s = settings(4, 2, 10);
        s.queue_deadline = Duration::ZERO;
        assert!(s.validate().unwrap_err().starts_with("queue_deadline:"));
        let mut s = settings(4, 2, 10);
        s.max_orgs = 0;
        assert!(s.validate().unwrap_err().starts_with("max_orgs:"));
    }

    #[test]
    fn retry_after_rounds_the_deadline_up_to_whole_seconds() {
        let mut s = settings(4, 2, 10);
        s.queue_deadline = Duration::from_millis(1500);
        assert_eq!(OriginGuard::new(s.clone()).retry_after_secs(), 2);
        s.queue_deadline = Duration::from_millis(200);
        assert_eq!(OriginGuard::new(s).retry_after_secs(), 1);
        let e: GatewayError = Shed::Deadline { retry_after_secs: 3 }.into();
        assert_eq!(e.retry_after_secs, Some(3));
        assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
