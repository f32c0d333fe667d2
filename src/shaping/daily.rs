//! The daily write cap: at most `cap` writes per org per UTC day, counted
//! from 00:00:00 UTC and reset at the next 00:00:00 UTC.
//!
//! A refused write is not counted. Compose with the per-minute limiter so
//! that a refusal by either never spends the other's budget:
//! [`DailyCap::peek`] first (refuse early when the day is spent), then the
//! per-minute [`check`](super::gcra::GcraLimiter::check), then
//! [`DailyCap::check`] to count the write. Only when two writes race for the
//! org's last unit of the day can the loser have spent one per-minute unit.
//!
//! Days are `unix_secs.div_euclid(86400)` (Unix time has no leap seconds),
//! from a [`UnixClock`](super::clock::UnixClock) so tests control the date.
//!
//! State: up to 64 shards of `Mutex<HashMap<org, (day, used)>>`, like the
//! per-minute limiter. An entry of an earlier day is equivalent to an absent
//! org and is dropped by [`DailyCap::sweep`] or when its shard is full. If a
//! shard is full of orgs that wrote today, the one with the fewest writes is
//! dropped (it may then write that many more today); size `max_orgs` above
//! the number of orgs writing in a day so this never happens.

use super::gcra::{lock, shard_count, shard_hash, Padded};
use std::collections::HashMap;
use std::sync::Mutex;

/// Default cap on the orgs held by one [`DailyCap`].
pub const DEFAULT_MAX_ORGS: usize = 100_000;
/// Seconds in a (Unix) day.
pub const DAY_SECS: i64 = 86_400;

/// One shard: key -> entry, alone on its cache lines.
type Shard = Padded<Mutex<HashMap<Box<str>, Entry>>>;

/// The outcome of one daily check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyDecision {
    pub allowed: bool,
    /// The org's daily write cap.
    pub limit: u64,
    /// Writes left today, after this one.
    pub remaining: u64,
    /// Seconds until the next 00:00 UTC (1..=86400).
    pub reset_after_secs: u64,
    /// Zero when allowed; else `reset_after_secs`.
    pub retry_after_secs: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    day: i64,
    used: u64,
}

/// Daily write counters per org. Shared by every connection task.
#[derive(Debug)]
pub struct DailyCap {
    /// Org -> (UTC day, writes that day). One `std::sync::Mutex` per shard,
    /// held for one lookup and one store.
    shards: Box<[Shard]>,
    mask: usize,
    /// Orgs per shard; `shards.len() * per_shard <= max_orgs`.
    per_shard: usize,
}

impl Default for DailyCap {
    fn default() -> Self {
        DailyCap::new(DEFAULT_MAX_ORGS)
    }
}

impl DailyCap {
    /// Holds at most `max_orgs` orgs (at least 1).
    pub fn new(max_orgs: usize) -> DailyCap {
        DailyCap::build(max_orgs, shard_count(max_orgs))
    }

    /// `n` shards (a power of two) of `max_orgs / n` orgs each.
    fn build(max_orgs: usize, n: usize) -> DailyCap {
        debug_assert!(n.is_power_of_two());
        DailyCap {
            shards: (0..n).map(|_| Padded(Mutex::new(HashMap::new()))).collect(),
            mask: n - 1,
            per_shard: (max_orgs / n).max(1),
        }
    }

    /// The most orgs this cap holds.
    pub fn max_orgs(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    #[inline]
    fn shard(&self, org: &str) -> &Mutex<HashMap<Box<str>, Entry>> {
        &self.shards[(shard_hash(org) as usize) & self.mask].0
    }

    /// Decides one write of `org` at `now_unix` against `cap`, counting it
    /// only when it is admitted.
    pub fn check(&self, org: &str, cap: u64, now_unix: i64) -> DailyDecision {
        let day = now_unix.div_euclid(DAY_SECS);
        let mut map = lock(self.shard(org));
        if let Some(e) = map.get_mut(org) {
            // A clock stepping back into an earlier day keeps today's count.
            if day > e.day {
                *e = Entry { day, used: 0 };
            }
            let d = decide(e.used, cap, now_unix, true);
            if d.allowed {
                e.used += 1;
            }
            return d;
        }
        let d = decide(0, cap, now_unix, true);
        if d.allowed {
            if map.len() >= self.per_shard {
                make_room(&mut map, day, self.per_shard);
            }
            map.insert(org.into(), Entry { day, used: 1 });
        }
        d
    }

    /// What [`DailyCap::check`] would decide, without counting anything;
    /// `remaining` is the writes left before this one.
    pub fn peek(&self, org: &str, cap: u64, now_unix: i64) -> DailyDecision {
        let day = now_unix.div_euclid(DAY_SECS);
        let used = match lock(self.shard(org)).get(org) {
            Some(e) if e.day >= day => e.used,
            _ => 0,
        };
        decide(used, cap, now_unix, false)
    }

    /// Drops the entries of days before `now_unix`'s; returns how many.
    pub fn sweep(&self, now_unix: i64) -> usize {
        let day = now_unix.div_euclid(DAY_SECS);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = lock(&shard.0);
            let before = map.len();
            map.retain(|_, e| e.day >= day);
            removed += before - map.len();
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
        removed
    }

    /// Orgs held (today's or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `used` writes so far today; `consume` says whether an admitted write
/// counts (so `remaining` is after it).
fn decide(used: u64, cap: u64, now_unix: i64, consume: bool) -> DailyDecision {
    let next_midnight = (now_unix.div_euclid(DAY_SECS) + 1) * DAY_SECS;
    let reset_after_secs = (next_midnight - now_unix) as u64;
    let allowed = used < cap;
    let remaining = cap.saturating_sub(used + u64::from(allowed && consume));
    DailyDecision {
        allowed,
        limit: cap,
        remaining,
        reset_after_secs,
        retry_after_secs: if allowed { 0 } else { reset_after_secs },
    }
}

/// Frees one slot in a full shard: drops earlier days' entries, or, when
/// all are today's, the one with the fewest writes.
fn make_room(map: &mut HashMap<Box<str>, Entry>, day: i64, per_shard: usize) {
    let mut fewest = u64::MAX;
    map.retain(|_, e| {
        if e.day < day {
            return false;
        }
        fewest = fewest.min(e.used);
        true
    });
    if map.len() >= per_shard {
        let mut evicted = false;
        map.retain(|_, e| {
            if !evicted && e.used == fewest {
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
    use crate::shaping::clock::UnixClock;
    use crate::shaping::tiers::default_tiers;
    use std::time::Duration;

    /// 2026-11-27 23:59:50 UTC.
    const BEFORE_MIDNIGHT: i64 = 1_795_824_000 - 10;

    #[tokio::test(start_paused = true)]
    async fn the_cap_resets_at_midnight_utc() {
        let clock = UnixClock::starting_at(BEFORE_MIDNIGHT);
        let cap = DailyCap::new(64);
        let n = 5;
        for i in 0..n {
            let d = cap.check("org_a", n, clock.now_unix());
            assert!(d.allowed, "write {i}");
            assert_eq!(d.remaining, n - 1 - i);
            assert_eq!(d.reset_after_secs, 10);
        }
        let d = cap.check("org_a", n, clock.now_unix());
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_secs, d.limit), (0, 10, n));

        tokio::time::advance(Duration::from_millis(9_999)).await; // 23:59:59.999
        let d = cap.check("org_a", n, clock.now_unix());
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        tokio::time::advance(Duration::from_millis(1)).await; // 00:00:00.000
        let d = cap.check("org_a", n, clock.now_unix());
        assert!(d.allowed);
        assert_eq!(d.remaining, n - 1);
        assert_eq!(d.reset_after_secs, 86_400);
    }

    #[tokio::test(start_paused = true)]
    async fn each_default_tier_admits_exactly_its_daily_writes() {
        let clock = UnixClock::starting_at(BEFORE_MIDNIGHT - 3600);
        let cap = DailyCap::new(64);
        for (name, tier) in default_tiers() {
            let org = format!("org_{name}");
            let admitted = (0..tier.daily_writes + 100)
                .filter(|_| cap.check(&org, tier.daily_writes, clock.now_unix()).allowed)
                .count() as u64;
            assert_eq!(admitted, tier.daily_writes, "{name}");
        }
    }

    #[test]
    fn orgs_are_isolated_and_refusals_are_not_counted() {
        let cap = DailyCap::new(64);
        let t = BEFORE_MIDNIGHT;
        assert_eq!((0..10).filter(|_| cap.check("org_a", 3, t).allowed).count(), 3);
        assert_eq!((0..10).filter(|_| cap.check("org_b", 3, t).allowed).count(), 3);
        // A raised cap sees exactly the 3 counted writes, not the 7 refused.
        let d = cap.check("org_a", 4, t);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn peek_counts_nothing() {
        let cap = DailyCap::new(64);
        let t = BEFORE_MIDNIGHT;
        for _ in 0..10 {
            let d = cap.peek("org_a", 2, t);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2);
        }
        assert!(cap.is_empty());
        cap.check("org_a", 2, t);
        cap.check("org_a", 2, t);
        let d = cap.peek("org_a", 2, t);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 10);
        assert!(cap.peek("org_a", 2, t + 10).allowed);
    }

    #[test]
    fn a_zero_cap_admits_nothing_and_stores_nothing() {
        let cap = DailyCap::new(64);
        let d = cap.check("org_a", 0, BEFORE_MIDNIGHT);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 10);
        assert!(cap.is_empty());
    }

    #[test]
    fn old_days_are_dropped_and_memory_is_bounded() {
        let cap = DailyCap::new(100);
        let t = BEFORE_MIDNIGHT;
        for k in 0..1000 {
            assert!(cap.check(&format!("org_{k}"), 10, t).allowed);
        }
        let held = cap.len();
        assert!(held <= 100 && held > 50, "{held}");
        assert_eq!(cap.sweep(t), 0);
        assert_eq!(cap.sweep(t + 10), held);
        assert!(cap.is_empty());
    }

    #[test]
    fn a_full_shard_drops_yesterday_first_then_the_fewest_writes() {
        let cap = DailyCap::new(1);
        let t = BEFORE_MIDNIGHT;
        let c = |org: &str, at: i64| cap.check(org, 10, at).allowed;
        assert!(c("a", t) && c("a", t));
        // A new day: "a" is yesterday's, dropping it changes nothing.
        assert!(c("b", t + 10));
        assert_eq!(cap.len(), 1);
        assert_eq!(cap.peek("a", 10, t + 10).remaining, 10);

        // One shard of three orgs, all writing today: the fewest writes go.
        let cap = DailyCap::build(3, 1);
        for (org, n) in [("x", 3), ("y", 1), ("z", 2)] {
            for _ in 0..n {
                assert!(cap.check(org, 10, t).allowed);
            }
        }
        assert!(cap.check("w", 10, t).allowed);
        assert_eq!(cap.len(), 3);
        let left = |org| cap.peek(org, 10, t).remaining;
        assert_eq!([left("x"), left("y"), left("z"), left("w")], [7, 10, 8, 9]);
    }

    #[test]
    fn days_follow_utc_including_before_1970() {
        let d = decide(0, 1, -1, true);
        assert_eq!(d.reset_after_secs, 1);
        let d = decide(0, 1, 0, true);
        assert_eq!(d.reset_after_secs, 86_400);
    }
}
