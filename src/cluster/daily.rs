//! The daily write cap across the cluster: one counter per (org, UTC day)
//! in Redis; an instance leases a batch of the day's writes with one
//! atomic script ([`DAILY_LEASE_SCRIPT`]: check the count and add to it in
//! one step) and spends them locally, like the per-minute limiter.
//!
//! # Bound
//!
//! Leases never grant more than the cap minus what was already granted, and
//! leased writes are only spent on the day they were leased for. So while
//! Redis is reachable the cluster admits at most **the cap per org per UTC
//! day**, exactly. The price is writes leased but unspent (at most one
//! lease per instance): to keep that small near the cap, a lease is at most
//! `remaining / (2 x instances)` (at least 1), so the last writes of a day
//! are handed out one at a time.
//!
//! When Redis loses the count (a flush, a restart without persistence, a
//! failover to a replica behind), each instance's next lease sets it back
//! to the count that instance last saw (`DAILY_LEASE_SCRIPT`): the day
//! then admits at most one lease per instance past the cap, not the cap
//! again.
//!
//! While Redis is unreachable, each instance counts on its own (counted in
//! `lease_fallback_decisions_total`) against the smaller of
//! `cap / instances` and its share of what it last saw left of the day, so
//! a failed lease right after a loss does not grant the cap again. That
//! count starts from zero: an instance that saw nothing of the day yet
//! (restarted, or its slot evicted) may admit its whole share again.
//!
//! Compose like [`crate::shaping::DailyCap`]: [`ClusterDailyCap::peek`]
//! first (refuses only when the day is known to be spent), then the
//! per-minute limit, then [`ClusterDailyCap::check`] to count the write.

use super::lease::{DownFlag, LeaseMap};
use super::settings::ClusterSettings;
use super::stats::ClusterStats;
use super::target::SharedConn;
use crate::shaping::daily::{DailyCap, DailyDecision, DAY_SECS};
use std::sync::Arc;
use tokio::time::Instant;

/// Leases writes of one org's day. KEYS[1]: the day's count. ARGV: cap,
/// writes wanted, instances, key TTL (s), the day's count as the caller
/// last saw it. Returns `{granted, used after}`.
///
/// A count below what the caller saw was lost (a FLUSHALL, a restart
/// without persistence, a failover to a replica behind): it is set back to
/// what the caller saw before leasing (black-box round 88: every loss
/// granted the whole cap again). Every instance does so with its own
/// view, so the count comes back to the newest any instance saw.
pub const DAILY_LEASE_SCRIPT: &str = r"
local cap = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local seen = tonumber(ARGV[5]) or 0
if used < seen then
  used = seen
  redis.call('SET', KEYS[1], used, 'EX', tonumber(ARGV[4]))
end
local avail = cap - used
if avail <= 0 then
  return {0, used}
end
local fair = math.floor(avail / (2 * n))
if fair < 1 then fair = 1 end
local granted = want
if granted > fair then granted = fair end
if granted > avail then granted = avail end
redis.call('INCRBY', KEYS[1], granted)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {granted, used + granted}
";

/// An org's leased writes for one day.
#[derive(Clone, Copy, Debug, Default)]
struct DaySlot {
    day: i64,
    cap: u64,
    /// Leased writes not yet spent (valid on `day` only).
    tokens: u64,
    /// The day's cluster-wide count after the last lease (for `remaining`).
    used: u64,
    /// Redis answered "spent" for `day`.
    spent: bool,
    /// When (unix s) Redis last answered "spent". Once a second later, a
    /// write asks Redis again: a lease is what hands back the count this
    /// instance saw, and an instance that saw the day spent has the newest
    /// view (attacker review 89: after a loss, only the instances still
    /// leasing restored the count, from older views).
    spent_checked: i64,
}

impl DaySlot {
    fn current(&self, day: i64, cap: u64) -> bool {
        self.day == day && self.cap == cap
    }
}

fn idle(s: &DaySlot) -> bool {
    s.tokens == 0 && !s.spent
}

/// The cluster daily cap; see the module docs.
pub struct ClusterDailyCap {
    conn: SharedConn,
    script: redis::Script,
    /// `<key_prefix>daily:`.
    prefix: String,
    settings: ClusterSettings,
    leases: LeaseMap<DaySlot>,
    down: DownFlag,
    fallback: DailyCap,
    stats: Arc<ClusterStats>,
}

impl ClusterDailyCap {
    /// A cap with its own connection (a node's [`super::ClusterNode::daily_cap`]
    /// shares the node's instead).
    pub fn new(
        settings: &ClusterSettings,
        stats: Arc<ClusterStats>,
        max_orgs: usize,
    ) -> Result<ClusterDailyCap, String> {
        settings.validate()?;
        let conn = super::limiter::connect_lazily(settings)?;
        Ok(ClusterDailyCap::with_connection(settings, conn, stats, max_orgs))
    }

    pub(super) fn with_connection(
        settings: &ClusterSettings,
        conn: SharedConn,
        stats: Arc<ClusterStats>,
        max_orgs: usize,
    ) -> ClusterDailyCap {
        ClusterDailyCap {
            conn,
            script: redis::Script::new(DAILY_LEASE_SCRIPT),
            prefix: format!("{}daily:", settings.key_prefix),
            settings: settings.clone(),
            leases: LeaseMap::new(max_orgs),
            down: DownFlag::new(),
            fallback: DailyCap::new(max_orgs),
            stats,
        }
    }

    /// Writes one lease asks for under `cap`: `lease_fraction` of it, at least 1.
    pub fn lease_size(&self, cap: u64) -> u64 {
        ((cap as f64 * self.settings.lease_fraction).floor() as u64).max(1)
    }

    /// Whether a write would be admitted, spending nothing: refused only
    /// when the day is known to be spent (or, on the local share, is).
    pub fn peek(&self, org: &str, cap: u64, now_unix: i64) -> DailyDecision {
        if self.down.is_down(Instant::now()) {
            return self.fallback.peek(org, self.share(org, cap, now_unix), now_unix);
        }
        let day = now_unix.div_euclid(DAY_SECS);
        let known = self
            .leases
            .with(org, |s| s.current(day, cap).then_some(*s))
            .flatten();
        match known {
            Some(s) if s.tokens == 0 && s.spent => decision(false, cap, 0, now_unix),
            Some(s) => decision(true, cap, remaining(&s), now_unix),
            None => decision(true, cap, cap, now_unix),
        }
    }

    /// The fast path: counts the write against a leased one, repeats a
    /// "spent" answer for today, or decides on the local share while Redis
    /// is down; `None` when a lease is needed. Never awaits or allocates.
    #[inline]
    pub fn try_check(&self, org: &str, cap: u64, now_unix: i64) -> Option<DailyDecision> {
        if self.down.is_down(Instant::now()) {
            self.stats.lease_fallbacks.inc();
            return Some(self.fallback.check(org, self.share(org, cap, now_unix), now_unix));
        }
        let day = now_unix.div_euclid(DAY_SECS);
        self.leases.with(org, |s| take(s, day, cap, now_unix))?
    }

    /// Counts one write if admitted: the fast path, else a lease.
    pub async fn check(&self, org: &str, cap: u64, now_unix: i64) -> DailyDecision {
        if let Some(d) = self.try_check(org, cap, now_unix) {
            return d;
        }
        let gate = self.leases.gate(org, idle);
        let _leasing = gate.lock().await;
        if let Some(d) = self.try_check(org, cap, now_unix) {
            return d;
        }
        let day = now_unix.div_euclid(DAY_SECS);
        let next_midnight = (day + 1) * DAY_SECS;
        // Kept a day past its own so late instances still see the count.
        let ttl = (next_midnight - now_unix) + DAY_SECS;
        let seen = self
            .leases
            .with(org, |s| if s.day == day { s.used } else { 0 })
            .unwrap_or(0);
        let mut conn = self.conn.get();
        let mut invocation = self.script.key(format!("{}{day}:{org}", self.prefix));
        invocation
            .arg(cap)
            .arg(self.lease_size(cap))
            .arg(self.settings.instances.max(1))
            .arg(ttl)
            .arg(seen);
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        match tokio::time::timeout(self.settings.command_timeout(), call).await {
            Ok(Ok((granted, used))) => {
                let granted = granted.max(0) as u64;
                let result = if granted > 0 { "granted" } else { "refused" };
                self.stats.lease_requests.with_label_values(&[result]).inc();
                self.leases.with_inserted(org, idle, |s| {
                    if !s.current(day, cap) {
                        *s = DaySlot {
                            day,
                            cap,
                            ..DaySlot::default()
                        };
                    }
                    s.tokens += granted;
                    s.used = used.max(0) as u64;
                    s.spent = granted == 0;
                    s.spent_checked = now_unix;
                    take(s, day, cap, now_unix).unwrap_or_else(|| decision(false, cap, 0, now_unix))
                })
            }
            failed => {
                self.stats.lease_requests.with_label_values(&["error"]).inc();
                if self.down.mark(Instant::now(), self.settings.lease_retry()) {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "lease timed out".to_owned(),
                    };
                    tracing::warn!(error = %error, "cluster: daily-cap leases failing; counting on this instance's share");
                }
                self.stats.lease_fallbacks.inc();
                self.fallback.check(org, self.share(org, cap, now_unix), now_unix)
            }
        }
    }

    /// Drops earlier days; run periodically. Today's slots stay (up to
    /// the map's bound, which frees idle ones first): each remembers the
    /// day's count it last saw, which a lease hands back to Redis if Redis
    /// lost it.
    pub fn sweep(&self, now_unix: i64) -> usize {
        let day = now_unix.div_euclid(DAY_SECS);
        self.fallback.sweep(now_unix);
        self.leases.sweep(|s| s.day < day)
    }

    /// The local share while Redis is down: `cap / instances`, and no more
    /// than this instance's share of what it last saw left of the day.
    /// Black-box round 90: after a restart without persistence the first
    /// lease failed on the dead connection, and each instance's share
    /// counted from zero on top of the writes already spent (54 against a
    /// cap of 30).
    fn share(&self, org: &str, cap: u64, now_unix: i64) -> u64 {
        let n = u64::from(self.settings.instances.max(1));
        let share = (cap / n).max(1);
        let day = now_unix.div_euclid(DAY_SECS);
        let seen = self
            .leases
            .with(org, |s| if s.day == day { s.used } else { 0 })
            .unwrap_or(0);
        if seen == 0 {
            return share;
        }
        share.min(cap.saturating_sub(seen).div_ceil(n))
    }
}

/// Writes left today cluster-wide as this instance knows it, counting its
/// own unspent lease.
fn remaining(s: &DaySlot) -> u64 {
    s.cap.saturating_sub(s.used) + s.tokens
}

#[inline]
fn take(s: &mut DaySlot, day: i64, cap: u64, now_unix: i64) -> Option<DailyDecision> {
    if !s.current(day, cap) {
        return None;
    }
    if s.tokens > 0 {
        s.tokens -= 1;
        return Some(decision(true, cap, remaining(s), now_unix));
    }
    if s.spent && now_unix > s.spent_checked {
        return None;
    }
    s.spent.then(|| decision(false, cap, 0, now_unix))
}

fn decision(allowed: bool, cap: u64, remaining: u64, now_unix: i64) -> DailyDecision {
    let next_midnight = (now_unix.div_euclid(DAY_SECS) + 1) * DAY_SECS;
    let reset_after_secs = (next_midnight - now_unix) as u64;
    DailyDecision {
        allowed,
        limit: cap,
        remaining: remaining.min(cap),
        reset_after_secs,
        retry_after_secs: if allowed { 0 } else { reset_after_secs },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leased_writes_count_only_on_their_day() {
        let now = 1_795_823_990; // 2026-11-27
        let day = now / DAY_SECS;
        let mut s = DaySlot {
            day,
            cap: 10,
            tokens: 2,
            used: 9,
            spent: false,
            spent_checked: now,
        };
        let d = take(&mut s, day, 10, now).unwrap();
        assert!(d.allowed && d.remaining == 2);
        assert!(take(&mut s, day, 10, now).unwrap().allowed);
        assert_eq!(take(&mut s, day, 10, now), None, "lease needed");
        s.spent = true;
        let d = take(&mut s, day, 10, now).unwrap();
        assert!(!d.allowed && d.retry_after_secs == (DAY_SECS - now % DAY_SECS) as u64);
        assert_eq!(
            take(&mut s, day, 10, now + 1),
            None,
            "a second later, Redis again"
        );
        // The next day, or another cap, starts over.
        assert_eq!(take(&mut s, day + 1, 10, now + DAY_SECS), None);
        s.tokens = 3;
        assert_eq!(take(&mut s, day, 20, now), None);
    }
}
