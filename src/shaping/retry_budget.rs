//! A retry budget in the manner of Finagle's `RetryBudget` and linkerd's
//! retry budgets: every origin request deposits `ratio` of a token, every
//! retry withdraws one, and a reserve of `min_retries_per_sec` x `window`
//! lets a quiet gateway retry at all.
//!
//! Deposits and withdrawals are kept per time slot over a sliding `window`
//! (ten slots), so the balance is capped by recent traffic: successes from
//! an hour ago cannot fund a retry storm now. Within any window, retries
//! <= `ratio` x requests + `min_retries_per_sec` x `window`.
//!
//! One small `std::sync::Mutex`: touched once per origin request. Time via
//! `tokio::time::Instant`, so tests run on the paused clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

pub const DEFAULT_RETRY_RATIO: f64 = 0.1;
pub const DEFAULT_MIN_RETRIES_PER_SEC: u32 = 10;
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Slots in the sliding window.
const SLOTS: usize = 10;
/// Token amounts are kept in thousandths, so `ratio` 0.1 is exact.
const MILLI: i64 = 1000;

/// Whether a request may be sent again after a failure: idempotent methods
/// always; POST and PATCH only with an `Idempotency-Key` (the origin then
/// dedupes them); any other method never.
pub fn is_retryable(method: &http::Method, has_idempotency_key: bool) -> bool {
    use http::Method;
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE => true,
        Method::POST | Method::PATCH => has_idempotency_key,
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetSettings {
    /// Tokens deposited per request; a retry costs 1. Between 0 and 1.
    pub ratio: f64,
    /// Retries per second allowed with no traffic at all (the reserve is
    /// this times `window`).
    pub min_retries_per_sec: u32,
    /// How long deposits (and withdrawals) count; at least 1 s.
    pub window: Duration,
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        RetryBudgetSettings {
            ratio: DEFAULT_RETRY_RATIO,
            min_retries_per_sec: DEFAULT_MIN_RETRIES_PER_SEC,
            window: DEFAULT_RETRY_WINDOW,
        }
    }
}

impl RetryBudgetSettings {
    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err("ratio: must be between 0.0 and 1.0".into());
        }
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(3600) {
            return Err("window: must be between 1 s and 1 h".into());
        }
        Ok(())
    }
}

/// The budget; share it behind an `Arc`.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token per deposit. An atomic: a config reload
    /// changes it ([`RetryBudget::set`]); balances already in the ring stay.
    deposit: AtomicI64,
    /// Thousandths of a token always available per window (reload, too).
    reserve: AtomicI64,
    /// Length of one slot (`window / SLOTS`). Immutable.
    slot_len: Duration,
    /// The slots. A std mutex: a few integer steps, no `.await`.
    ring: Mutex<Ring>,
    /// Retries allowed / refused since start; atomics for metrics.
    allowed: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    /// Time zero of the slot numbering.
    start: Instant,
    /// (slot number, net thousandths deposited minus withdrawn in it). A
    /// slot whose number is `SLOTS` or more behind the current one is stale
    /// and counts as zero.
    slots: [(u64, i64); SLOTS],
}

impl RetryBudget {
    /// `settings` should have passed `validate()`; out-of-range values are
    /// clamped.
    pub fn new(settings: RetryBudgetSettings) -> Self {
        let window = clamp_window(settings.window);
        let (deposit, reserve) = amounts(&settings, window);
        RetryBudget {
            deposit: AtomicI64::new(deposit),
            reserve: AtomicI64::new(reserve),
            slot_len: window / SLOTS as u32,
            ring: Mutex::new(Ring {
                start: Instant::now(),
                slots: [(0, 0); SLOTS],
            }),
            allowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Puts a new ratio and reserve in force (config reload); the window
    /// stays the one the budget was built with.
    pub fn set(&self, settings: &RetryBudgetSettings) {
        let window = self.slot_len * SLOTS as u32;
        let (deposit, reserve) = amounts(settings, window);
        self.deposit.store(deposit, Ordering::Relaxed);
        self.reserve.store(reserve, Ordering::Relaxed);
    }

    /// Records one origin request (first attempts and retries alike).
    pub fn deposit(&self) {
        let mut ring = self.lock();
        *ring.current(self.slot_len) += self.deposit.load(Ordering::Relaxed);
    }

    /// Takes one token for a retry; `false` means do not retry.
    pub fn try_withdraw(&self) -> bool {
        let mut ring = self.lock();
        let ok = self.reserve.load(Ordering::Relaxed) + ring.sum(self.slot_len) >= MILLI;
        if ok {
            *ring.current(self.slot_len) -= MILLI;
        }
        drop(ring);
        let counter = if ok { &self.allowed } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// Whole retries available now (for a gauge).
    pub fn balance(&self) -> u64 {
        let mut ring = self.lock();
        ((self.reserve.load(Ordering::Relaxed) + ring.sum(self.slot_len)) / MILLI).max(0) as u64
    }

    pub fn retries_allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }

    pub fn retries_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn clamp_window(w: Duration) -> Duration {
    w.clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Thousandths of a token per deposit, and the reserve per window.
fn amounts(settings: &RetryBudgetSettings, window: Duration) -> (i64, i64) {
    let ratio = if settings.ratio.is_finite() {
        settings.ratio.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // min_retries_per_sec x window in thousandths = per_sec x window_ms.
    let reserve = i64::from(settings.min_retries_per_sec) * window.as_millis() as i64;
    ((ratio * MILLI as f64).round() as i64, reserve)
}

impl Ring {
    fn slot_number(&self, slot_len: Duration) -> u64 {
        (self.start.elapsed().as_nanos() / slot_len.as_nanos().max(1)) as u64
    }

    /// The current slot's balance, cleared if it held an older slot.
    fn current(&mut self, slot_len: Duration) -> &mut i64 {
        let n = self.slot_number(slot_len);
        let slot = &mut self.slots[(n % SLOTS as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0);
        }
        &mut slot.1
    }

    /// Net balance of the slots within the window.
    fn sum(&mut self, slot_len: Duration) -> i64 {
        let n = self.slot_number(slot_len);
        self.slots
            .iter()
            .filter(|(k, _)| n.saturating_sub(*k) < SLOTS as u64)
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn budget(ratio: f64, per_sec: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetSettings {
            ratio,
            min_retries_per_sec: per_sec,
            window: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_failure_retries_at_most_ratio_plus_reserve() {
        let b = RetryBudget::new(RetryBudgetSettings::default());
        let reserve = 10 * 10;
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw() {
                retries += 1;
            }
        }
        assert!(retries <= 100 + reserve, "{retries}");
        // And the budget is actually used, not just refused.
        assert_eq!(retries, 100 + reserve);
        assert_eq!(b.retries_allowed(), retries);
        assert_eq!(b.retries_refused(), 1000 - retries);
        assert_eq!(b.balance(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn spread_over_time_the_bound_holds_per_window() {
        // 1,000 requests over 100 s, each retried if allowed: per window,
        // 0.1 x requests + 5 x 10 reserve.
        let b = budget(0.1, 5);
        let mut retries = 0u64;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw() {
                retries += 1;
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // 10 windows x (100 requests x 0.1 + 50 reserve) = 600.
        assert!(retries <= 600, "{retries}");
        assert!(retries >= 500, "{retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_replenish_the_budget() {
        let b = budget(0.1, 0);
        assert!(!b.try_withdraw());
        for _ in 0..9 {
            b.deposit();
        }
        assert!(!b.try_withdraw());
        b.deposit();
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        for _ in 0..20 {
            b.deposit();
        }
        assert_eq!(b.balance(), 2);
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window_and_the_reserve_comes_back() {
        let b = budget(0.1, 1);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.balance(), 10 + 10);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.balance(), 10);
        while b.try_withdraw() {}
        assert_eq!(b.balance(), 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.balance(), 10);
    }

    #[test]
    fn idempotent_methods_are_retryable_posts_only_with_a_key() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_retryable(&m, false), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert!(!is_retryable(&m, false), "{m}");
            assert!(is_retryable(&m, true), "{m}");
        }
        assert!(!is_retryable(&Method::CONNECT, true));
    }

    #[test]
    fn validate_names_the_field() {
        assert!(RetryBudgetSettings::default().validate().is_ok());
        for ratio in [1.5, -0.1, f64::NAN] {
            let s = RetryBudgetSettings {
                ratio,
                ..Default::default()
            };
            assert!(s.validate().unwrap_err().starts_with("ratio:"));
        }
        let s = RetryBudgetSettings {
            window: Duration::from_millis(500),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().starts_with("window:"));
    }
}
