//! Cluster-wide rate limits: each (key id, endpoint class) has one GCRA
//! state in Redis; an instance takes a *lease* of several tokens from it
//! with one atomic script and spends them locally, so Redis is consulted
//! once per batch, not per request.
//!
//! # Lease script
//!
//! [`LEASE_SCRIPT`] runs the GCRA of `shaping/gcra.rs` on Redis's own clock
//! (`TIME`, one clock for every instance): with `T = 60 s / per_minute` and
//! `tau = (burst - 1) T`, it grants `g = min(want, floor((tau - debt) / T) + 1)`
//! tokens (0 when `debt > tau`) and moves the TAT by `g T`. Granting `g` at
//! once is exactly `g` admissions at that instant, checked and taken in one
//! step; a refusal changes nothing.
//!
//! # Bound
//!
//! Redis admits at most `burst + floor(W / T)` tokens in any window `W` (the
//! GCRA bound). An instance holds at most one lease's leftover (fewer than
//! `lease` tokens) when a window starts. So across `N` instances the
//! cluster admits at most `burst + floor(W / T) + N (lease - 1)` requests in
//! any window `W`; for the one-minute window, at most
//! **`limit + burst + N x lease`**. `lease` is `lease_fraction` of the
//! per-minute limit (at least 1, at most the burst).
//!
//! # Redis unreachable
//!
//! A failed or timed-out lease marks Redis down for `lease_retry`; meanwhile
//! every decision is local, on a [`GcraLimiter`] holding this instance's
//! share (`limit / instances`, `burst / instances`), synchronously, and is
//! counted in `lease_fallback_decisions_total`. With `instances` set right
//! the cluster then admits at most about `limit + burst` per minute.
//! Authentication never involves Redis.
//!
//! # Fast path
//!
//! [`ClusterLimiter::try_check`] is synchronous: one shard lock, a hash
//! lookup by `&str`, a decrement. It answers when the local lease has a
//! token, when Redis refused recently (the refusal holds until its
//! `retry_after`), or when Redis is marked down; otherwise it returns `None`
//! and the caller awaits [`ClusterLimiter::check`], which takes a lease
//! (one per key at a time: concurrent requests of the key wait for it).

use super::lease::{DownFlag, LeaseMap};
use super::settings::ClusterSettings;
use super::stats::ClusterStats;
use super::target::SharedConn;
use crate::shaping::gcra::{Decision, GcraLimiter};
use crate::shaping::tiers::{EndpointClass, Limit};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Leases a slice of one key's budget. KEYS[1]: the key's TAT (µs on
/// Redis's clock). ARGV: emission interval T (µs), tolerance tau (µs),
/// tokens wanted. Returns `{granted, tat - now (µs), retry_after (µs)}`.
pub const LEASE_SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local debt = tat - now
if debt > tau then
  return {0, debt, debt - tau}
end
local granted = math.floor((tau - debt) / t) + 1
if granted > want then granted = want end
tat = tat + granted * t
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {granted, tat - now, 0}
";

const WINDOW_MICROS: u64 = 60_000_000;

/// Local state of one (key, class).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The limit the tokens were leased under (a tier change drops them).
    limit: Option<Limit>,
    /// Leased tokens not yet spent.
    tokens: u32,
    /// Cluster-wide tokens left after the last lease (for headers).
    remote_remaining: u32,
    /// When the key's cluster budget is full again (for headers).
    reset_at: Option<Instant>,
    /// Redis refused; no lease is asked for before this.
    refused_until: Option<Instant>,
}

/// A key's slots, one per endpoint class.
type Slots = [Slot; 3];

/// Dropping it loses nothing (no tokens, no refusal in force).
fn idle(slots: &Slots) -> bool {
    let now = Instant::now();
    slots
        .iter()
        .all(|s| s.tokens == 0 && s.refused_until.is_none_or(|u| u <= now))
}

/// The cluster limiter; see the module docs. Shared by every connection
/// task (`Arc<ClusterLimiter>`).
pub struct ClusterLimiter {
    /// Shared reconnecting connection (follows the primary).
    conn: SharedConn,
    script: redis::Script,
    /// `<key_prefix>rl:`.
    prefix: String,
    settings: ClusterSettings,
    /// Local leases by key id (bounded; own locks inside).
    leases: LeaseMap<Slots>,
    /// Set when a lease fails: decisions are local until it expires.
    down: DownFlag,
    /// This instance's share while Redis is down.
    fallback: GcraLimiter,
    stats: Arc<ClusterStats>,
}

impl ClusterLimiter {
    /// A limiter with its own connection (a node's [`super::ClusterNode::limiter`]
    /// shares the node's instead).
    pub fn new(
        settings: &ClusterSettings,
        stats: Arc<ClusterStats>,
        max_keys: usize,
    ) -> Result<ClusterLimiter, String> {
        settings.validate()?;
        Ok(ClusterLimiter::with_connection(
            settings,
            connect_lazily(settings)?,
            stats,
            max_keys,
        ))
    }

    pub(super) fn with_connection(
        settings: &ClusterSettings,
        conn: SharedConn,
        stats: Arc<ClusterStats>,
        max_keys: usize,
    ) -> ClusterLimiter {
        ClusterLimiter {
            conn,
            script: redis::Script::new(LEASE_SCRIPT),
            prefix: format!("{}rl:", settings.key_prefix),
            settings: settings.clone(),
            leases: LeaseMap::new(max_keys),
            down: DownFlag::new(),
            fallback: GcraLimiter::new(max_keys),
            stats,
        }
    }

    /// Tokens one lease asks for under `limit`.
    pub fn lease_size(&self, limit: Limit) -> u32 {
        self.settings.lease_size(limit)
    }

    /// The most a cluster of `instances` admits for `limit` in one minute:
    /// `per_minute + burst + instances x lease`.
    pub fn minute_bound(&self, limit: Limit, instances: u32) -> u64 {
        u64::from(limit.per_minute)
            + u64::from(limit.burst)
            + u64::from(instances) * u64::from(self.lease_size(limit))
    }

    /// The fast path: decides from local state without awaiting or
    /// allocating, or returns `None` when a lease is needed.
    #[inline]
    pub fn try_check(&self, key: &str, class: EndpointClass, limit: Limit, now: Instant) -> Option<Decision> {
        if limit.per_minute == 0 || limit.burst == 0 {
            return Some(self.fallback.check(key, class, limit, now));
        }
        if self.down.is_down(now) {
            return Some(self.fallback_check(key, class, limit, now));
        }
        self.leases
            .with(key, |slots| take(&mut slots[class.index()], limit, now))?
    }

    /// Decides one request: the fast path, else a lease (or the local share
    /// when Redis fails).
    pub async fn check(&self, key: &str, class: EndpointClass, limit: Limit) -> Decision {
        if let Some(d) = self.try_check(key, class, limit, Instant::now()) {
            return d;
        }
        let gate = self.leases.gate(key, idle);
        let _leasing = gate.lock().await;
        // Someone else may have leased while we waited.
        if let Some(d) = self.try_check(key, class, limit, Instant::now()) {
            return d;
        }
        let (t, tau) = params(limit);
        let want = self.lease_size(limit);
        let mut conn = self.conn.get();
        let rkey = format!("{}{}:{key}", self.prefix, class.as_str());
        let mut invocation = self.script.key(rkey);
        invocation.arg(t).arg(tau).arg(want);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
        let answer = tokio::time::timeout(self.settings.command_timeout(), call).await;
        let now = Instant::now();
        match answer {
            Ok(Ok((granted, until_full, retry_after))) => {
                let granted = granted.max(0) as u32;
                let result = if granted > 0 { "granted" } else { "refused" };
                self.stats.lease_requests.with_label_values(&[result]).inc();
                let until_full = until_full.max(0) as u64;
                self.leases.with_inserted(key, idle, |slots| {
                    let slot = &mut slots[class.index()];
                    if slot.limit != Some(limit) {
                        *slot = Slot {
                            limit: Some(limit),
                            ..Slot::default()
                        };
                    }
                    slot.tokens += granted;
                    slot.reset_at = Some(now + Duration::from_micros(until_full));
                    slot.remote_remaining = if until_full <= tau {
                        ((tau - until_full) / t + 1) as u32
                    } else {
                        0
                    };
                    slot.refused_until =
                        (granted == 0).then(|| now + Duration::from_micros(retry_after.max(1) as u64));
                    take(slot, limit, now)
                        .unwrap_or_else(|| refused(limit, Duration::from_micros(t), Duration::from_micros(t)))
                })
            }
            failed => {
                self.stats.lease_requests.with_label_values(&["error"]).inc();
                if self.down.mark(now, self.settings.lease_retry()) {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "lease timed out".to_owned(),
                    };
                    tracing::warn!(
                        error = %error,
                        "cluster: rate-limit leases failing; deciding on this instance's share"
                    );
                }
                self.fallback_check(key, class, limit, now)
            }
        }
    }

    /// Drops local state that holds nothing (no tokens, no refusal in
    /// force, no lease in flight) and idle fallback state; run periodically.
    pub fn sweep(&self) -> usize {
        self.fallback.sweep(Instant::now());
        self.leases.sweep(idle)
    }

    /// Whether decisions are currently taken on the local share.
    pub fn is_fallback(&self) -> bool {
        self.down.is_down(Instant::now())
    }

    fn fallback_check(&self, key: &str, class: EndpointClass, limit: Limit, now: Instant) -> Decision {
        self.stats.lease_fallbacks.inc();
        let share = self.settings.fallback_limit(limit);
        let mut d = self.fallback.check(key, class, share, now);
        d.limit = limit.per_minute;
        d
    }
}

/// A lazily connecting, self-reconnecting connection for leases, to the
/// URL's server (a standalone limiter does not follow Sentinel).
pub(super) fn connect_lazily(settings: &ClusterSettings) -> Result<SharedConn, String> {
    if !settings.sentinels.is_empty() {
        return Err("cluster.sentinels: a limiter follows Sentinel only through a ClusterNode".into());
    }
    SharedConn::new(settings)
}

/// Takes one leased token, or repeats a refusal still in force; `None`
/// when a lease is needed.
#[inline]
fn take(slot: &mut Slot, limit: Limit, now: Instant) -> Option<Decision> {
    if slot.limit != Some(limit) {
        return None;
    }
    let reset_after = slot
        .reset_at
        .map_or(Duration::ZERO, |r| r.saturating_duration_since(now));
    if slot.tokens > 0 {
        slot.tokens -= 1;
        return Some(Decision {
            allowed: true,
            limit: limit.per_minute,
            remaining: slot.tokens.saturating_add(slot.remote_remaining).min(limit.burst),
            reset_after,
            retry_after: Duration::ZERO,
        });
    }
    match slot.refused_until {
        Some(until) if now < until => Some(refused(limit, until - now, reset_after)),
        _ => None,
    }
}

fn refused(limit: Limit, retry_after: Duration, reset_after: Duration) -> Decision {
    Decision {
        allowed: false,
        limit: limit.per_minute,
        remaining: 0,
        reset_after: reset_after.max(retry_after),
        retry_after,
    }
}

/// Emission interval and tolerance in microseconds.
fn params(limit: Limit) -> (u64, u64) {
    let t = WINDOW_MICROS.div_ceil(u64::from(limit.per_minute.max(1)));
    (t, t * u64::from(limit.burst.max(1) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_local_gcra() {
        assert_eq!(params(Limit::per_minute(120)), (500_000, 119 * 500_000));
        assert_eq!(
            params(Limit {
                per_minute: 60,
                burst: 1
            }),
            (1_000_000, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_spends_its_tokens_then_repeats_a_refusal_until_it_expires() {
        let limit = Limit::per_minute(60);
        let now = Instant::now();
        let mut s = Slot {
            limit: Some(limit),
            tokens: 2,
            remote_remaining: 10,
            reset_at: Some(now + Duration::from_secs(5)),
            refused_until: None,
        };
        let d = take(&mut s, limit, now).unwrap();
        assert!(d.allowed && d.remaining == 11 && d.reset_after == Duration::from_secs(5));
        assert!(take(&mut s, limit, now).unwrap().allowed);
        assert_eq!(take(&mut s, limit, now), None, "empty: lease needed");
        s.refused_until = Some(now + Duration::from_secs(2));
        let d = take(&mut s, limit, now).unwrap();
        assert!(!d.allowed && d.retry_after == Duration::from_secs(2));
        assert_eq!(take(&mut s, limit, now + Duration::from_secs(2)), None);
        // Tokens leased under another limit are not spent.
        s.tokens = 5;
        assert_eq!(take(&mut s, Limit::per_minute(120), now), None);
    }
}
