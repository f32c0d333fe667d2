//! The rate-limit policy of one gateway: tiers, the per-principal GCRA
//! limiter (keyed by `Principal::rate_key`, never a bare key id) and
//! the per-org daily write cap, applied in the order the module docs give,
//! so a refusal by either limit spends neither budget.

use super::clock::UnixClock;
use super::daily::{DailyCap, DailyDecision};
use super::gcra::{Decision, GcraLimiter};
use super::headers::{daily_limited_error, rate_limited_error};
use super::tiers::{EndpointClass, TierConfig, Tiers};
use crate::auth::Principal;
use crate::cluster::{ClusterDailyCap, ClusterLimiter};
use crate::config::ShapingConfig;
use crate::error::GatewayError;
use std::sync::Arc;
use tokio::time::Instant;

pub struct RatePolicy {
    /// Swapped whole by a config reload ([`RatePolicy::set_tiers`]); each
    /// decision reads it once. Budgets already spent are kept.
    tiers: arc_swap::ArcSwap<Tiers>,
    limiter: GcraLimiter,
    daily: DailyCap,
    /// Wall-clock time derived from tokio's clock, so the daily reset at
    /// 00:00 UTC is testable under a paused clock.
    clock: UnixClock,
    /// Cluster mode: both limits leased from Redis and shared by every
    /// instance (used instead of `limiter` and `daily`); `None`: this
    /// instance's own.
    cluster: Option<(Arc<ClusterLimiter>, Arc<ClusterDailyCap>)>,
}

/// The decisions made for one request, for its response headers.
#[derive(Default)]
pub struct Decisions {
    pub per_minute: Option<Decision>,
    /// Set when the daily cap refused the request.
    pub daily_refusal: Option<DailyDecision>,
}

/// Why a request was refused, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PerMinute,
    DailyCap,
}

impl RatePolicy {
    pub fn new(cfg: &ShapingConfig, clock: UnixClock) -> Result<RatePolicy, String> {
        Ok(RatePolicy {
            tiers: arc_swap::ArcSwap::from_pointee(Tiers::new(cfg.effective_tiers())?),
            limiter: GcraLimiter::new(cfg.max_keys),
            daily: DailyCap::new(cfg.max_keys),
            clock,
            cluster: None,
        })
    }

    /// Enforces the limits across the cluster (see `cluster::limiter` and
    /// `cluster::daily` for the bounds).
    pub fn with_cluster(
        mut self,
        per_minute: Arc<ClusterLimiter>,
        daily: Arc<ClusterDailyCap>,
    ) -> RatePolicy {
        self.cluster = Some((per_minute, daily));
        self
    }

    /// Admits or refuses one request of `class` by `p`. The per-minute
    /// decision is returned either way (it feeds the response headers)
    /// unless the daily cap refused first.
    pub async fn admit(
        &self,
        p: &Principal,
        class: EndpointClass,
        now: Instant,
    ) -> (Decisions, Result<(), (GatewayError, Refusal)>) {
        // A copy of the few numbers (no reference count on the hit path);
        // a reload during this decision does not change it halfway.
        let tier: TierConfig = (**self.tiers.load().get(&p.tier)).clone();
        let write = class != EndpointClass::ReadLight;
        if write {
            let today = self.clock.unix_at(now);
            let pre = match &self.cluster {
                None => self.daily.peek(&p.org, tier.daily_writes, today),
                Some((_, daily)) => daily.peek(&p.org, tier.daily_writes, today),
            };
            if !pre.allowed {
                let err = daily_limited_error(&pre);
                let d = Decisions {
                    per_minute: None,
                    daily_refusal: Some(pre),
                };
                return (d, Err((err, Refusal::DailyCap)));
            }
        }
        let limit = tier.limit(class);
        let d = match &self.cluster {
            None => self.limiter.check(&p.rate_key, class, limit, now),
            // Synchronous while the local lease has tokens.
            Some((c, _)) => match c.try_check(&p.rate_key, class, limit, now) {
                Some(d) => d,
                // Boxed: a Redis round trip's future is large, and the
                // local paths should not carry its space.
                None => Box::pin(c.check(&p.rate_key, class, limit)).await,
            },
        };
        if !d.allowed {
            let err = rate_limited_error(&d, class);
            return (
                Decisions {
                    per_minute: Some(d),
                    daily_refusal: None,
                },
                Err((err, Refusal::PerMinute)),
            );
        }
        if write {
            let today = self.clock.unix_at(now);
            let w = match &self.cluster {
                None => self.daily.check(&p.org, tier.daily_writes, today),
                Some((_, daily)) => match daily.try_check(&p.org, tier.daily_writes, today) {
                    Some(w) => w,
                    None => Box::pin(daily.check(&p.org, tier.daily_writes, today)).await,
                },
            };
            if !w.allowed {
                let err = daily_limited_error(&w);
                return (
                    Decisions {
                        per_minute: Some(d),
                        daily_refusal: Some(w),
                    },
                    Err((err, Refusal::DailyCap)),
                );
            }
        }
        (
            Decisions {
                per_minute: Some(d),
                daily_refusal: None,
            },
            Ok(()),
        )
    }

    /// The budgets `p` has left right now, without spending any (the admin
    /// endpoint `GET /admin/keys/:keyId`). In cluster mode the per-minute
    /// budgets are leased from Redis and not read here (`null`); the daily
    /// count is this instance's view.
    pub fn inspect(&self, p: &Principal, now: Instant) -> serde_json::Value {
        let tiers = self.tiers.load();
        let tier = tiers.get(&p.tier);
        let classes: Vec<serde_json::Value> = EndpointClass::ALL
            .iter()
            .map(|&class| {
                let limit = tier.limit(class);
                let per_minute = match &self.cluster {
                    Some(_) => serde_json::Value::Null,
                    None => {
                        let d = self.limiter.peek(&p.rate_key, class, limit, now);
                        serde_json::json!({
                            "remaining": d.remaining,
                            "resetAfterMs": d.reset_after.as_millis() as u64,
                        })
                    }
                };
                serde_json::json!({
                    "class": class.as_str(),
                    "limitPerMinute": limit.per_minute,
                    "burst": limit.burst,
                    "budget": per_minute,
                })
            })
            .collect();
        let today = self.clock.unix_at(now);
        let daily = match &self.cluster {
            None => self.daily.peek(&p.org, tier.daily_writes, today),
            Some((_, daily)) => daily.peek(&p.org, tier.daily_writes, today),
        };
        serde_json::json!({
            "tier": &*p.tier,
            "tierDefined": tiers.contains(&p.tier),
            "sharedAcrossCluster": self.cluster.is_some(),
            "classes": classes,
            "dailyWrites": {
                "limit": daily.limit,
                "used": daily.limit.saturating_sub(daily.remaining),
                "remaining": daily.remaining,
                "resetAfterSecs": daily.reset_after_secs,
            },
        })
    }

    /// Puts new tiers in force from the next decision on (config reload).
    /// Validate them first (`Tiers::new`); budgets already spent are kept,
    /// so a lowered limit may refuse at once.
    pub fn set_tiers(&self, tiers: Tiers) {
        self.tiers.store(std::sync::Arc::new(tiers));
    }

    /// Drops idle limiter state; run periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.limiter.sweep(now);
        self.daily.sweep(self.clock.unix_at(now));
        if let Some((c, daily)) = &self.cluster {
            c.sweep();
            daily.sweep(self.clock.unix_at(now));
        }
    }
}
