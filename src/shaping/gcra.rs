//! Per-key, per-class rate limiting with the Generic Cell Rate Algorithm.
//!
//! # Algorithm
//!
//! For a [`Limit`] of `r` requests per minute with burst `b`, the emission
//! interval is `T = ceil(60 s / r)` (in nanoseconds; exact for every
//! published tier) and the tolerance is `tau = (b - 1) * T`. Each
//! (key, class) keeps one number, its theoretical arrival time `TAT`. A
//! request at `now` is admitted iff `max(TAT, now) - now <= tau`; an admitted
//! request sets `TAT = max(TAT, now) + T`, a refused one changes nothing (a
//! denied request never consumes budget, so a client hammering on 429s does
//! not push its own recovery further out).
//!
//! # Admission bound
//!
//! For one (key, class): among the requests admitted in any closed interval
//! of length `W`, there are at most `b + floor(W / T)`. Proof: after the
//! first of them at `t1`, `TAT >= t1 + T`, and each admission adds `T`; the
//! n-th needs `TAT_(n-1) <= t_n + tau`, i.e. `(n - 1) T <= W + tau`.
//! Consequences:
//! - at one instant at most `b` (standard read-light: 120 at `t = 0`, the
//!   121st is refused);
//! - a client sending exactly every `T` is never refused, and from an idle
//!   key a client sending faster than `1/T` over `[0, W]` gets exactly
//!   `b + floor(W / T)` (the bound is tight);
//! - a half-open sliding minute admits at most `b + r - 1` (`2r - 1` with
//!   the default burst `b = r`); the long-run average is `r` per minute.
//!
//! The bound holds per key as long as the key's entry is not evicted while
//! it is busy (`TAT > now`); see *Memory* below.
//!
//! # Reported values
//!
//! [`Decision::remaining`] is how many more requests would be admitted at
//! `now` (`floor((tau - (TAT - now)) / T)` after this decision),
//! [`Decision::reset_after`] the time until the key is idle again (full
//! burst available: `TAT - now`), [`Decision::retry_after`] for a refusal is
//! exactly `TAT - tau - now`: a request at `now + retry_after` is admitted,
//! one a nanosecond earlier is not.
//!
//! # Concurrency and memory
//!
//! State lives in up to 64 shards, each a `Mutex<HashMap>` chosen by a hash
//! of the key, cache-line padded: the hot path takes one shard lock for a
//! few dozen nanoseconds and contends only with keys of the same shard.
//! There is no global lock, `len()` and `sweep()` visit shards one by one.
//!
//! At most `max_keys` keys are held (each shard holds `max_keys / shards`).
//! An entry whose every class is idle (`TAT <= now`) is exactly equivalent
//! to an absent key, so dropping it changes no decision; [`GcraLimiter::sweep`]
//! drops them all, and inserting into a full shard first drops that shard's
//! idle entries. Only when a shard is full of busy keys is the busy entry
//! closest to idle evicted: that key may then get up to its unspent debt
//! (`TAT - now`, under a minute's worth) extra. Callers size `max_keys`
//! above the number of keys active within a minute so this never happens.
//! An entry costs roughly 60 to 100 bytes (key text, three TATs, hash
//! table slack), so the default 100,000 keys stay under 10 MB.
//!
//! Keys are hashed twice (a cheap unkeyed hash picks the shard; the shard
//! map uses std's randomly seeded SipHash), so a caller choosing many keys
//! can at worst crowd one shard, never degrade its hash table.
//!
//! Time is `tokio::time::Instant`, passed in, so tests run on the paused
//! clock. Instants are stored as nanoseconds since the limiter was created;
//! an instant earlier than that counts as the creation instant.

use super::tiers::{EndpointClass, Limit};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Default cap on the keys held by one limiter.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Upper bound on the number of shards.
pub const MAX_SHARDS: usize = 64;

const WINDOW_NANOS: u64 = 60_000_000_000;

/// One shard: key -> entry, alone on its cache lines.
type Shard = Padded<Mutex<HashMap<Box<str>, Entry, foldhash::fast::RandomState>>>;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The class's per-minute limit (for `X-RateLimit-Limit`).
    pub limit: u32,
    /// Requests still admissible right now, after this one.
    pub remaining: u32,
    /// Until the full burst is available again.
    pub reset_after: Duration,
    /// Zero when allowed; else exactly how long until one request is admitted.
    pub retry_after: Duration,
}

/// Emission interval and tolerance of a [`Limit`], in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Params {
    t: u64,
    tau: u64,
    burst: u32,
}

impl Params {
    /// `None` for a zero rate or burst (nothing is ever admitted).
    #[inline]
    fn new(limit: Limit) -> Option<Params> {
        if limit.per_minute == 0 || limit.burst == 0 {
            return None;
        }
        let t = WINDOW_NANOS.div_ceil(u64::from(limit.per_minute));
        Some(Params {
            t,
            tau: t * u64::from(limit.burst - 1),
            burst: limit.burst,
        })
    }

    /// Decides a request at `now` against `tat`; returns the decision and
    /// the TAT to store if it was admitted.
    #[inline]
    fn decide(self, tat: u64, now: u64, limit: u32) -> (Decision, u64) {
        let tat = tat.max(now);
        let debt = tat - now;
        if debt <= self.tau {
            let new_tat = tat + self.t;
            let remaining = ((self.tau - debt) / self.t).min(u64::from(self.burst)) as u32;
            let d = Decision {
                allowed: true,
                limit,
                remaining,
                reset_after: Duration::from_nanos(new_tat - now),
                retry_after: Duration::ZERO,
            };
            (d, new_tat)
        } else {
            let d = Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::from_nanos(debt),
                retry_after: Duration::from_nanos(debt - self.tau),
            };
            (d, tat)
        }
    }
}

/// Per-class TATs of one key, in nanoseconds since the limiter's base;
/// 0 (or anything `<= now`) means idle.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    tat: [u64; 3],
}

impl Entry {
    /// The instant from which every class of this key is idle.
    #[inline]
    fn busy_until(&self) -> u64 {
        self.tat[0].max(self.tat[1]).max(self.tat[2])
    }
}

/// A value alone on its cache lines, so shard locks taken by different
/// threads do not false-share.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(super) struct Padded<T>(pub(super) T);

/// Largest power of two `<= min(MAX_SHARDS, max_keys)`, at least 1.
pub(super) fn shard_count(max_keys: usize) -> usize {
    let n = max_keys.clamp(1, MAX_SHARDS);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// Cheap hash of a key (FxHash-style over 8-byte words, then mixed),
/// only to pick a shard; the shard's map hashes again with SipHash.
#[inline]
pub(super) fn shard_hash(key: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = key.len() as u64;
    let mut chunks = key.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // Final avalanche (murmur3 fmix64), so the low bits that pick the
    // shard depend on every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Locks a shard; a panic while holding it cannot leave an entry half
/// updated (each update is one store), so poisoning is ignored.
#[inline]
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The GCRA limiter, keyed by (key id, endpoint class). Shared by every
/// connection task (`Arc<GcraLimiter>`); see the module docs.
#[derive(Debug)]
pub struct GcraLimiter {
    /// Instant 0 of the stored nanosecond TATs.
    base: Instant,
    /// Key id -> per-class TATs. One `std::sync::Mutex` per shard: held only
    /// for a lookup and a store, never across an await.
    shards: Box<[Shard]>,
    /// `shards.len() - 1` (a power of two minus one).
    mask: usize,
    /// Keys per shard; `shards.len() * per_shard <= max_keys`.
    per_shard: usize,
}

impl Default for GcraLimiter {
    fn default() -> Self {
        GcraLimiter::new(DEFAULT_MAX_KEYS)
    }
}

impl GcraLimiter {
    /// A limiter holding at most `max_keys` keys (at least 1), created now.
    pub fn new(max_keys: usize) -> GcraLimiter {
        GcraLimiter::with_base(max_keys, Instant::now())
    }

    /// As [`GcraLimiter::new`] with an explicit time base (instants before
    /// it count as it).
    pub fn with_base(max_keys: usize, base: Instant) -> GcraLimiter {
        GcraLimiter::build(max_keys, shard_count(max_keys), base)
    }

    /// `n` shards (a power of two) of `max_keys / n` keys each.
    fn build(max_keys: usize, n: usize, base: Instant) -> GcraLimiter {
        debug_assert!(n.is_power_of_two());
        GcraLimiter {
            base,
            shards: (0..n).map(|_| Padded(Mutex::new(HashMap::default()))).collect(),
            mask: n - 1,
            per_shard: (max_keys / n).max(1),
        }
    }

    /// The most keys this limiter holds.
    pub fn max_keys(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.base);
        d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos())
    }

    #[inline]
    fn shard(&self, key: &str) -> &Mutex<HashMap<Box<str>, Entry, foldhash::fast::RandomState>> {
        &self.shards[(shard_hash(key) as usize) & self.mask].0
    }

    /// Decides one request of `key` in `class` at `now`, consuming one unit
    /// of budget only when it is admitted.
    ///
    /// A zero `per_minute` or `burst` (which validated config never has)
    /// admits nothing: refused with `retry_after` of one window.
    pub fn check(&self, key: &str, class: EndpointClass, limit: Limit, now: Instant) -> Decision {
        let Some(p) = Params::new(limit) else {
            return Decision {
                allowed: false,
                limit: limit.per_minute,
                remaining: 0,
                reset_after: Duration::from_nanos(WINDOW_NANOS),
                retry_after: Duration::from_nanos(WINDOW_NANOS),
            };
        };
        let now = self.nanos(now);
        let i = class.index();
        let mut map = lock(self.shard(key));
        if let Some(e) = map.get_mut(key) {
            let (d, tat) = p.decide(e.tat[i], now, limit.per_minute);
            if d.allowed {
                e.tat[i] = tat;
            }
            return d;
        }
        // An absent key is idle: its first request always fits (burst >= 1).
        let (d, tat) = p.decide(0, now, limit.per_minute);
        if map.len() >= self.per_shard {
            make_room(&mut map, now);
        }
        let mut e = Entry::default();
        e.tat[i] = tat;
        map.insert(key.into(), e);
        d
    }

    /// What [`GcraLimiter::check`] would decide for `key` at `now`, without
    /// consuming budget or creating an entry (the admin inspect endpoint).
    /// `remaining` counts the requests admissible right now, this one
    /// included; `reset_after` is until the full burst is available.
    pub fn peek(&self, key: &str, class: EndpointClass, limit: Limit, now: Instant) -> Decision {
        let Some(p) = Params::new(limit) else {
            return self.check(key, class, limit, now);
        };
        let now = self.nanos(now);
        let tat = lock(self.shard(key)).get(key).map_or(0, |e| e.tat[class.index()]);
        let debt = tat.max(now) - now;
        let remaining = if debt <= p.tau {
            ((p.tau - debt) / p.t + 1).min(u64::from(p.burst)) as u32
        } else {
            0
        };
        Decision {
            allowed: remaining > 0,
            limit: limit.per_minute,
            remaining,
            reset_after: Duration::from_nanos(debt),
            retry_after: Duration::from_nanos(debt.saturating_sub(p.tau)),
        }
    }

    /// Drops every idle entry (no decision changes); returns how many.
    /// Run it periodically so memory follows the active key count.
    pub fn sweep(&self, now: Instant) -> usize {
        let now = self.nanos(now);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = lock(&shard.0);
            let before = map.len();
            map.retain(|_, e| e.busy_until() > now);
            removed += before - map.len();
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
        removed
    }

    /// Keys held (busy or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees one slot in a full shard: drops its idle entries, or, when all are
/// busy, the entry closest to idle. One pass, no allocation.
fn make_room(map: &mut HashMap<Box<str>, Entry, foldhash::fast::RandomState>, now: u64) {
    let mut closest = u64::MAX;
    map.retain(|_, e| {
        let b = e.busy_until();
        closest = closest.min(b);
        b > now
    });
    if closest > now {
        let mut evicted = false;
        map.retain(|_, e| {
            if !evicted && e.busy_until() == closest {
                evicted = true;
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::tiers::{default_tiers, TierConfig, DEFAULT_STANDARD};
    use EndpointClass::*;

    const MS: Duration = Duration::from_millis(1);
    const NS: Duration = Duration::from_nanos(1);

    /// Sends `n` requests at `at`; returns how many were admitted.
    fn burst(l: &GcraLimiter, key: &str, class: EndpointClass, limit: Limit, at: Instant, n: u32) -> u32 {
        (0..n).filter(|_| l.check(key, class, limit, at).allowed).count() as u32
    }

    #[tokio::test(start_paused = true)]
    async fn every_default_tier_admits_exactly_its_limit_at_once() {
        for (name, tier) in default_tiers() {
            for class in EndpointClass::ALL {
                let l = GcraLimiter::new(16);
                let limit = tier.limit(class);
                let t0 = Instant::now();
                let n = limit.per_minute;
                for i in 0..n {
                    let d = l.check("k", class, limit, t0);
                    assert!(d.allowed, "{name} {class} request {i}");
                    assert_eq!(d.remaining, n - 1 - i);
                    assert_eq!(d.limit, n);
                }
                let d = l.check("k", class, limit, t0);
                assert!(!d.allowed, "{name} {class}: request {} admitted", n + 1);
                assert_eq!(d.remaining, 0);
                // One emission interval later exactly one more; a minute
                // later the whole burst again.
                let t = Duration::from_secs(60) / n;
                assert_eq!(d.retry_after, t, "{name} {class}");
                assert_eq!(d.reset_after, Duration::from_secs(60));
                assert_eq!(burst(&l, "k", class, limit, t0 + t, 3), 1, "{name} {class}");
                let full = t0 + t + Duration::from_secs(60);
                assert_eq!(burst(&l, "k", class, limit, full, n + 5), n, "{name} {class}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ten_minutes_of_steady_arrivals_admit_exactly_the_expected_count() {
        for (name, tier) in default_tiers() {
            for class in EndpointClass::ALL {
                let limit = tier.limit(class);
                let r = u64::from(limit.per_minute);
                let t = Duration::from_secs(60) / limit.per_minute;
                let t0 = Instant::now();
                // Exactly at the rate: never refused.
                let l = GcraLimiter::new(16);
                let at_rate = (0..10 * r).filter(|&k| l.check("k", class, limit, t0 + t * k as u32).allowed);
                assert_eq!(at_rate.count() as u64, 10 * r, "{name} {class}");
                // Four times the rate over [0, 600 s): the burst, then one
                // per interval: b + floor(W / T) with W = 600 s - T/4.
                let l = GcraLimiter::new(16);
                let q = t / 4;
                let admitted = (0..40 * r)
                    .filter(|&k| l.check("k", class, limit, t0 + q * k as u32).allowed)
                    .count() as u64;
                assert_eq!(admitted, r + 10 * r - 1, "{name} {class}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_custom_burst_smaller_than_the_limit_spreads_the_rest() {
        let tier = TierConfig {
            read_light_burst: Some(10),
            ..DEFAULT_STANDARD
        };
        let limit = tier.limit(ReadLight);
        let l = GcraLimiter::new(16);
        let t0 = Instant::now();
        assert_eq!(burst(&l, "k", ReadLight, limit, t0, 50), 10);
        // Refills at 120/min: one per 500 ms, up to 10 again.
        let d = l.check("k", ReadLight, limit, t0);
        assert_eq!(d.retry_after, 500 * MS);
        assert_eq!(d.reset_after, 5000 * MS);
        assert_eq!(burst(&l, "k", ReadLight, limit, t0 + 2000 * MS, 50), 4);
        assert_eq!(burst(&l, "k", ReadLight, limit, t0 + 60_000 * MS, 50), 10);
        // Over a minute from idle: 10 + 120 at most.
        let l = GcraLimiter::new(16);
        let n = (0..6000).filter(|&k| l.check("k", ReadLight, limit, t0 + 10 * MS * k).allowed);
        assert_eq!(n.count(), 10 + 119);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_exact_and_the_header_seconds_suffice() {
        // 20/min: T = 3 s. Spend it all, then wait out `retry_after`.
        let limit = DEFAULT_STANDARD.limit(LongRunning);
        let l = GcraLimiter::new(16);
        tokio::time::advance(1234 * MS).await;
        assert_eq!(burst(&l, "k", LongRunning, limit, Instant::now(), 20), 20);
        tokio::time::advance(700 * MS).await;
        let d = l.check("k", LongRunning, limit, Instant::now());
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 2300 * MS);
        let at = Instant::now() + d.retry_after;
        assert!(!l.check("k", LongRunning, limit, at - NS).allowed);
        assert!(l.check("k", LongRunning, limit, at).allowed);

        // A client that sleeps the whole seconds of `Retry-After` succeeds;
        // one that sleeps a second less is refused.
        let d = l.check("k", LongRunning, limit, Instant::now());
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 5300 * MS);
        let secs = crate::shaping::headers::ceil_secs(d.retry_after);
        assert_eq!(secs, 6);
        let early = Instant::now() + Duration::from_secs(secs - 1);
        assert!(!l.check("k", LongRunning, limit, early).allowed);
        tokio::time::advance(d.retry_after - MS).await;
        assert!(!l.check("k", LongRunning, limit, Instant::now()).allowed);
        tokio::time::advance(Duration::from_secs(secs) - d.retry_after + MS).await;
        assert!(l.check("k", LongRunning, limit, Instant::now()).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn denied_requests_do_not_consume_budget() {
        let limit = Limit {
            per_minute: 60,
            burst: 2,
        };
        let l = GcraLimiter::new(16);
        let t0 = Instant::now();
        assert_eq!(burst(&l, "k", WriteLight, limit, t0, 2), 2);
        let first = l.check("k", WriteLight, limit, t0);
        // Hammering while refused changes nothing.
        for k in 0..1000 {
            let d = l.check("k", WriteLight, limit, t0 + MS * k);
            assert!(!d.allowed);
            assert_eq!(d.retry_after, first.retry_after - MS * k);
        }
        assert!(l.check("k", WriteLight, limit, t0 + first.retry_after).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_and_classes_are_isolated() {
        let tiers = crate::shaping::tiers::Tiers::default();
        let limit = tiers.get("standard").limit(WriteLight);
        let l = GcraLimiter::new(64);
        let t0 = Instant::now();
        // Two keys of one org, then a key of another org: each its own budget.
        for key in ["org_a/key1", "org_a/key2", "org_b/key1"] {
            assert_eq!(burst(&l, key, WriteLight, limit, t0, 100), 60, "{key}");
        }
        // The other classes of an exhausted key are untouched.
        let read = tiers.get("standard").limit(ReadLight);
        assert_eq!(burst(&l, "org_a/key1", ReadLight, read, t0, 200), 120);
        let long = tiers.get("standard").limit(LongRunning);
        assert_eq!(burst(&l, "org_a/key1", LongRunning, long, t0, 200), 20);
        assert_eq!(l.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_idle_entries_are_swept() {
        let limit = Limit::per_minute(60);
        let l = GcraLimiter::new(1000);
        assert!(l.max_keys() <= 1000);
        let t0 = Instant::now();
        for k in 0..10_000 {
            assert!(l.check(&format!("key-{k}"), ReadLight, limit, t0).allowed);
        }
        let held = l.len();
        assert!(held <= 1000 && held > 900, "{held}");
        // One request at 60/min keeps a key busy for exactly 1 s.
        assert_eq!(l.sweep(t0 + 999 * MS), 0);
        assert_eq!(l.sweep(t0 + 1000 * MS), held);
        assert!(l.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shard_drops_idle_entries_first_then_the_closest_to_idle() {
        let limit = Limit::per_minute(60); // T = 1 s: n requests keep a key busy n s.
        let t0 = Instant::now();
        let l = GcraLimiter::build(3, 1, t0);
        let keys = |l: &GcraLimiter| {
            let mut k: Vec<String> = lock(&l.shards[0].0).keys().map(|k| k.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(burst(&l, "x", ReadLight, limit, t0, 10), 10);
        assert_eq!(burst(&l, "y", ReadLight, limit, t0, 3), 3);
        assert_eq!(burst(&l, "z", ReadLight, limit, t0, 20), 20);
        // At 4 s "y" is idle: only it goes, and nothing else changes.
        assert!(l.check("w", ReadLight, limit, t0 + 4000 * MS).allowed);
        assert_eq!(keys(&l), ["w", "x", "z"]);
        // All busy: "w" (busy until 5 s) is the closest to idle.
        assert!(l.check("v", ReadLight, limit, t0 + 4000 * MS).allowed);
        assert_eq!(keys(&l), ["v", "x", "z"]);
        // "x" kept its state: 6 s of debt left, so 60 - 6 more.
        assert_eq!(burst(&l, "x", ReadLight, limit, t0 + 4000 * MS, 100), 54);
        // A dropped idle key starts afresh, exactly as if it had been kept.
        let l = GcraLimiter::build(1, 1, t0);
        assert_eq!(burst(&l, "a", ReadLight, limit, t0, 5), 5);
        assert!(l.check("b", ReadLight, limit, t0 + 5000 * MS).allowed);
        assert_eq!(keys(&l), ["b"]);
        assert_eq!(burst(&l, "b", ReadLight, limit, t0 + 5000 * MS, 100), 59);
    }

    #[tokio::test(start_paused = true)]
    async fn instants_before_the_base_count_as_the_base() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let l = GcraLimiter::new(8);
        let limit = Limit::per_minute(60);
        assert_eq!(burst(&l, "k", ReadLight, limit, t0, 100), 60);
        assert!(!l.check("k", ReadLight, limit, Instant::now()).allowed);
    }

    #[test]
    fn zero_limits_admit_nothing() {
        let l = GcraLimiter::new(8);
        let d = l.check("k", ReadLight, Limit::per_minute(0), Instant::now());
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_secs(60));
        assert!(l.is_empty());
    }

    #[test]
    fn shard_counts_never_exceed_the_key_cap() {
        for (max, shards) in [(0, 1), (1, 1), (2, 2), (3, 2), (10, 8), (64, 64), (1000, 64)] {
            assert_eq!(shard_count(max), shards, "{max}");
            assert!(GcraLimiter::new(max).max_keys() <= max.max(1));
        }
        // The hash spreads similar keys.
        let mut seen = [0u32; 64];
        for k in 0..6400 {
            seen[(shard_hash(&format!("01HZX{k:011}")) & 63) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 150), "{seen:?}");
    }
}
