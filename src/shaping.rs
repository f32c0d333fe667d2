//! Traffic shaping: the origin's published rate limits, enforced at the
//! gateway so a partner sees the same 429s (and headers) the origin would
//! send, before the request costs an origin round trip.
//!
//! - [`tiers`]: tier name -> per-class limits and daily write cap
//!   (`standard`, `pilot`, `partner`; unknown names fall back to `standard`).
//! - [`gcra`]: per (key id, endpoint class) GCRA limiter, sharded, bounded.
//! - [`daily`]: per-org daily write cap, reset at 00:00 UTC.
//! - [`headers`]: `X-RateLimit-*`, `RateLimit-Policy`, `RateLimit`,
//!   `Retry-After`, and the `RATE_LIMITED` errors.
//! - [`clock`]: Unix time from tokio's clock (paused-clock tests set the date),
//!   following the wall clock's steps ([`wall_steps`]).
//!
//! All of it is pure logic: time is passed in, nothing does I/O or awaits.
//!
//! Per request, with `p` the `Principal`, `class` the route's endpoint class
//! and `now = Instant::now()`:
//!
//! ```text
//! let tier = tiers.get(&p.tier);
//! if class is a write {
//!     let pre = daily.peek(&p.org, tier.daily_writes, clock.unix_at(now));
//!     if !pre.allowed { return Err(daily_limited_error(&pre)) }   // spends nothing
//! }
//! let d = gcra.check(&p.rate_key, class, tier.limit(class), now);
//! render(resp_headers, class, &d);
//! if !d.allowed { return Err(rate_limited_error(&d, class)) }     // spends nothing
//! if class is a write {
//!     let w = daily.check(&p.org, tier.daily_writes, clock.unix_at(now));
//!     if !w.allowed { return Err(daily_limited_error(&w)) }       // lost a race for the last unit
//! }
//! ```
//!
//! Writes are the write-light and long-running classes.

pub mod breaker;
pub mod clock;
pub mod daily;
pub mod gcra;
pub mod headers;
pub mod org_breakers;
pub mod origin_guard;
pub mod policy;
pub mod retry_budget;
pub mod tiers;
pub mod wall_steps;

pub use clock::UnixClock;
pub use daily::{DailyCap, DailyDecision};
pub use gcra::{Decision, GcraLimiter};
pub use headers::{daily_limited_error, rate_limited_error, render as render_headers};
pub use tiers::{default_tiers, EndpointClass, Limit, TierConfig, Tiers};
