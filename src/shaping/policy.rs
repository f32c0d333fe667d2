//! The rate-limit policy of one gateway: tiers, the per-principal GCRA
//! limiter (keyed by `Principal::rate_key`, never a bare key id) and
//! the per-org daily write cap, applied in the order the module docs give,
//! so a refusal by either limit spends neither budget.

use super::clock::UnixClock;
use super::daily::{DailyCap, DailyDecision};
use super::gcra::{Decision, GcraLimiter};
use super::headers::{daily_limited_error, rate_limited_error};
use super::tiers::{EndpointClass, Tiers};
use crate::auth::Principal;
use crate::cluster::{ClusterDailyCap, ClusterLimiter};
use crate::config::ShapingConfig;
use crate::error::GatewayError;
use std::sync::Arc;
use tokio::time::Instant;

pub struct RatePolicy {
    tiers: Tiers,
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
            tiers: Tiers::new(cfg.effective_tiers())?,
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
        let tier = self.tiers.get(&p.tier);
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
