//! A circuit breaker for the origin: after `failure_threshold` consecutive
//! failures it opens and requests fail fast (no origin call) for
//! `open_for`; then it lets up to `half_open_probes` requests through at
//! once. A probe success closes it; a probe failure opens it for another
//! `open_for`.
//!
//! What counts as a failure is the caller's choice (connect errors,
//! timeouts, 5xx from the origin; not 4xx, nor a request body the client
//! failed to deliver, which are the caller's fault). `failure()` says
//! whether it opened the breaker, so the caller can count trips by cause.
//!
//! A ticket dropped without `success()` or `failure()` counts as neither:
//! a cancelled request (the client went away) says nothing about the
//! origin. A dropped probe still gives back its probe place, so half-open
//! cannot stall. The caller must report timeouts as `failure()` explicitly.
//!
//! Outcomes are matched to the state they were admitted under by an epoch
//! bumped on every transition: a reply from before the breaker opened (or
//! from a probe round that already ended) changes nothing.
//!
//! Touched once per origin request, never on a cache hit, so one small
//! `std::sync::Mutex` is enough.
//!
//! A breaker may need its failures to come from more than one tenant
//! before it opens ([`Breaker::set_min_orgs`]): the breaker all
//! organizations share must not open for one tenant's failures
//! (`org_breakers.rs`).

use crate::error::{ErrorCode, ErrorSource, GatewayError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Probes in flight at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            open_for: DEFAULT_OPEN_FOR,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
        }
    }
}

impl BreakerSettings {
    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 {
            return Err("failure_threshold: must be greater than 0".into());
        }
        if self.open_for.is_zero() {
            return Err("open_for: must be greater than 0".into());
        }
        if self.half_open_probes == 0 {
            return Err("half_open_probes: must be greater than 0".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// For a gauge: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Refused: the breaker is open (or half-open with every probe place taken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    retry_after_secs: u64,
}

impl BreakerOpen {
    /// Whole seconds until probes are let through (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_secs
    }
}

impl std::fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "origin circuit open; retry in {} s", self.retry_after_secs)
    }
}

impl std::error::Error for BreakerOpen {}

impl From<BreakerOpen> for GatewayError {
    /// 503 OVERLOADED with `Retry-After`, classified as an upstream problem.
    fn from(b: BreakerOpen) -> GatewayError {
        let mut e = GatewayError::new(
            ErrorCode::Overloaded,
            "The origin is failing; the gateway paused calls to it. Retry later.",
        )
        .with_retry_after(b.retry_after_secs);
        e.source = ErrorSource::Upstream;
        e
    }
}

/// The breaker; cheap to clone (one `Arc`), one per origin.
#[derive(Clone)]
pub struct Breaker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Distinct organizations whose failures a streak must hold before the
    /// breaker opens (1 or 2).
    min_orgs: std::sync::atomic::AtomicU8,
    /// Swapped whole by a config reload ([`Breaker::set_settings`]); read
    /// at each decision. The state (open, failures counted) is kept.
    settings: arc_swap::ArcSwap<BreakerSettings>,
    /// The state machine. A std mutex: a few field updates, no `.await`.
    state: Mutex<State>,
    /// Times the breaker opened (closed -> open and half-open -> open).
    /// Atomics so metrics read them without the lock.
    opened: AtomicU64,
    /// Requests refused by `try_acquire`.
    rejected: AtomicU64,
}

struct State {
    phase: Phase,
    /// Bumped on every transition; tickets carry the one they were issued
    /// under, and outcomes of other epochs are ignored.
    epoch: u64,
    /// Consecutive failures while closed.
    failures: u32,
    /// The organizations (tags) of the streak's failures, up to two.
    streak_orgs: [Option<u64>; 2],
    /// When a request was last admitted or refused.
    last_used: Option<Instant>,
    /// Probes in flight while half-open.
    probes: u32,
}

#[derive(Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// Zeros raised to 1 (validated config never has them).
fn clamped(mut settings: BreakerSettings) -> BreakerSettings {
    settings.failure_threshold = settings.failure_threshold.max(1);
    settings.half_open_probes = settings.half_open_probes.max(1);
    settings
}

impl Breaker {
    /// `settings` should have passed `validate()`; zeros are raised to 1.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            inner: Arc::new(Inner {
                min_orgs: std::sync::atomic::AtomicU8::new(1),
                settings: arc_swap::ArcSwap::from_pointee(clamped(settings)),
                state: Mutex::new(State {
                    phase: Phase::Closed,
                    epoch: 0,
                    failures: 0,
                    streak_orgs: [None; 2],
                    last_used: None,
                    probes: 0,
                }),
                opened: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            }),
        }
    }

    /// From now on, open only on a streak of failures from at least
    /// `n` (1 or 2) organizations (tickets from
    /// [`Breaker::try_acquire_for`]). With 2 there is no half-open
    /// probing: once `open_for` has passed the breaker closes, and only
    /// such a streak opens it again (attacker review: one tenant's failing
    /// probe would otherwise reopen it for everyone, again and again, and
    /// hold the probe place while its request hangs).
    pub fn set_min_orgs(&self, n: u8) {
        self.inner.min_orgs.store(n.clamp(1, 2), Ordering::Relaxed);
    }

    pub fn settings(&self) -> Arc<BreakerSettings> {
        self.inner.settings.load_full()
    }

    /// Puts new settings in force from the next decision on (config
    /// reload); an open breaker keeps its current open period.
    pub fn set_settings(&self, settings: BreakerSettings) {
        self.inner.settings.store(Arc::new(clamped(settings)));
    }

    /// Admits a request to the origin, or fails fast while open. While
    /// half-open, at most `half_open_probes` tickets are out at once.
    pub fn try_acquire(&self) -> Result<BreakerTicket, BreakerOpen> {
        self.try_acquire_for(0)
    }

    /// [`Breaker::try_acquire`] for the organization tagged `org` (any
    /// value that is the same for one organization and differs between
    /// them, such as a hash of its id).
    pub fn try_acquire_for(&self, org: u64) -> Result<BreakerTicket, BreakerOpen> {
        let mut st = self.inner.lock();
        let now = Instant::now();
        self.inner.refresh(&mut st, now);
        st.last_used = Some(now);
        let probe = match st.phase {
            Phase::Closed => false,
            Phase::Open { until } => {
                drop(st);
                self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(BreakerOpen {
                    retry_after_secs: ceil_secs(until.saturating_duration_since(now)),
                });
            }
            Phase::HalfOpen => {
                if st.probes >= self.inner.settings.load().half_open_probes {
                    drop(st);
                    self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(BreakerOpen { retry_after_secs: 1 });
                }
                st.probes += 1;
                true
            }
        };
        Ok(BreakerTicket {
            inner: self.inner.clone(),
            epoch: st.epoch,
            probe,
            org,
            reported: false,
        })
    }

    /// The current state (open turns half-open once `open_for` has passed).
    pub fn state(&self) -> BreakerState {
        let mut st = self.inner.lock();
        self.inner.refresh(&mut st, Instant::now());
        match st.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// For a gauge: 0 closed, 1 open, 2 half-open.
    pub fn state_code(&self) -> i64 {
        self.state().code()
    }

    /// Closed, and no failure counted or none for `quiet`: little lost by
    /// forgetting it.
    pub fn is_idle(&self, quiet: Duration) -> bool {
        let mut st = self.inner.lock();
        let now = Instant::now();
        self.inner.refresh(&mut st, now);
        matches!(st.phase, Phase::Closed)
            && (st.failures == 0
                || st
                    .last_used
                    .is_none_or(|t| now.saturating_duration_since(t) >= quiet))
    }

    /// When a request last asked it (admitted or refused).
    pub fn last_used(&self) -> Option<Instant> {
        self.inner.lock().last_used
    }

    /// Times the breaker opened since start.
    pub fn opened_total(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Requests refused since start.
    pub fn rejected_total(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an outcome of organization `org`; true when it opened the
    /// breaker.
    fn record(&self, epoch: u64, probe: bool, outcome: Option<bool>, org: u64) -> bool {
        let mut st = self.lock();
        if st.epoch != epoch {
            return false; // Admitted under a state that has since ended.
        }
        match (st.phase, outcome) {
            (Phase::Closed, Some(true)) => {
                st.failures = 0;
                st.streak_orgs = [None; 2];
            }
            (Phase::Closed, Some(false)) => {
                st.failures = st.failures.saturating_add(1);
                if !st.streak_orgs.contains(&Some(org)) {
                    if let Some(free) = st.streak_orgs.iter_mut().find(|o| o.is_none()) {
                        *free = Some(org);
                    }
                }
                let orgs = st.streak_orgs.iter().flatten().count();
                if st.failures >= self.settings.load().failure_threshold
                    && orgs >= usize::from(self.min_orgs.load(Ordering::Relaxed))
                {
                    self.open(&mut st);
                    return true;
                }
            }
            (Phase::HalfOpen, _) if probe => {
                st.probes = st.probes.saturating_sub(1);
                match outcome {
                    Some(true) => {
                        st.phase = Phase::Closed;
                        st.epoch += 1;
                        st.failures = 0;
                        st.streak_orgs = [None; 2];
                        st.probes = 0;
                    }
                    Some(false) => {
                        self.open(&mut st);
                        return true;
                    }
                    None => {}
                }
            }
            _ => {}
        }
        false
    }

    fn open(&self, st: &mut State) {
        st.phase = Phase::Open {
            until: Instant::now() + self.settings.load().open_for,
        };
        st.epoch += 1;
        st.failures = 0;
        st.streak_orgs = [None; 2];
        st.probes = 0;
        self.opened.fetch_add(1, Ordering::Relaxed);
    }
}

impl Inner {
    /// Open -> half-open once `open_for` has passed (closed, when it needs
    /// two organizations: see `set_min_orgs`).
    fn refresh(&self, st: &mut State, now: Instant) {
        if let Phase::Open { until } = st.phase {
            if now >= until {
                st.phase = if self.min_orgs.load(Ordering::Relaxed) >= 2 {
                    Phase::Closed
                } else {
                    Phase::HalfOpen
                };
                st.epoch += 1;
                st.probes = 0;
                st.failures = 0;
                st.streak_orgs = [None; 2];
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Permission for one origin request; report how it went with `success()`
/// or `failure()`. Dropped unreported, it counts as neither (see module doc).
#[must_use = "report the outcome with success() or failure()"]
pub struct BreakerTicket {
    inner: Arc<Inner>,
    epoch: u64,
    probe: bool,
    /// The organization's tag (`try_acquire_for`).
    org: u64,
    reported: bool,
}

impl BreakerTicket {
    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    pub fn success(mut self) {
        self.reported = true;
        let _ = self.inner.record(self.epoch, self.probe, Some(true), self.org);
    }

    /// Reports a failure of the origin; true when this failure opened the
    /// breaker (the caller counts the trip under its cause).
    pub fn failure(mut self) -> bool {
        self.reported = true;
        self.inner.record(self.epoch, self.probe, Some(false), self.org)
    }
}

impl Drop for BreakerTicket {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            // Neither outcome; only give the probe place back.
            let _ = self.inner.record(self.epoch, true, None, self.org);
        }
    }
}

impl std::fmt::Debug for BreakerTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerTicket")
            .field("epoch", &self.epoch)
            .field("probe", &self.probe)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, probes: u32) -> Breaker {
        Breaker::new(BreakerSettings {
            failure_threshold: threshold,
            open_for: Duration::from_secs(5),
            half_open_probes: probes,
        })
    }

    fn fail(b: &Breaker, n: u32) {
        for _ in 0..n {
            let _ = b.try_acquire().unwrap().failure();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_exactly_threshold_consecutive_failures() {
        let b = breaker(3, 1);
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().success(); // resets the count
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.state_code(), 1);
        assert_eq!(b.opened_total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn new_settings_apply_to_the_next_decision_and_keep_the_count() {
        let b = breaker(5, 1);
        fail(&b, 2);
        b.set_settings(BreakerSettings {
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
            half_open_probes: 1,
        });
        assert_eq!(b.state(), BreakerState::Closed, "2 failures, threshold now 3");
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open, "the third failure opens it");
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after_secs(),
            1,
            "the new open_for"
        );
        assert_eq!(b.settings().failure_threshold, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_fast_while_open_then_half_opens_after_open_for() {
        let b = breaker(1, 1);
        fail(&b, 1);
        let open = b.try_acquire().unwrap_err();
        assert_eq!(open.retry_after_secs(), 5);
        tokio::time::advance(Duration::from_millis(3500)).await;
        assert_eq!(b.try_acquire().unwrap_err().retry_after_secs(), 2);
        tokio::time::advance(Duration::from_millis(1499)).await;
        assert_eq!(b.try_acquire().unwrap_err().retry_after_secs(), 1);
        assert_eq!(b.rejected_total(), 3);

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.state_code(), 2);
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        // One probe at a time.
        assert_eq!(b.try_acquire().unwrap_err().retry_after_secs(), 1);
        drop(probe);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_success_closes() {
        let b = breaker(2, 2);
        fail(&b, 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        p1.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.state_code(), 0);
        // The other probe's late failure belongs to the ended round.
        p2.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        // The failure count starts over.
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_for_another_open_for() {
        let b = breaker(1, 1);
        fail(&b, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_total(), 2);
        assert_eq!(b.try_acquire().unwrap_err().retry_after_secs(), 5);
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_frees_its_place_and_counts_as_neither() {
        let b = breaker(1, 1);
        fail(&b, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn replies_from_before_the_breaker_opened_are_ignored() {
        let b = breaker(2, 1);
        let late_ok = b.try_acquire().unwrap();
        let late_err = b.try_acquire().unwrap();
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Open);
        late_ok.success();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.try_acquire().unwrap();
        late_err.failure();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn validate_names_the_field() {
        assert!(BreakerSettings::default().validate().is_ok());
        let s = |t, o, p| BreakerSettings {
            failure_threshold: t,
            open_for: Duration::from_secs(o),
            half_open_probes: p,
        };
        assert!(s(0, 1, 1)
            .validate()
            .unwrap_err()
            .starts_with("failure_threshold:"));
        assert!(s(1, 0, 1).validate().unwrap_err().starts_with("open_for:"));
        assert!(s(1, 1, 0)
            .validate()
            .unwrap_err()
            .starts_with("half_open_probes:"));
    }

    #[test]
    fn open_breaker_maps_to_503_with_retry_after() {
        let e: GatewayError = BreakerOpen { retry_after_secs: 4 }.into();
        assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after_secs, Some(4));
        assert_eq!(e.source, ErrorSource::Upstream);
    }
}
