//! A per-organization budget of origin reads for cache misses
//! (`origin.miss_budget_per_org_per_sec`): a token bucket per organization,
//! so a flood of random container ids from one organization cannot take
//! the origin from the others. Hits never touch it.
//!
//! The map is bounded: past `MAX_ORGS` buckets it drops the full ones (a
//! full bucket is the same as none), and if every bucket is in use it
//! refuses new organizations' misses rather than grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

const MAX_ORGS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct MissBudget {
    /// Tokens per second; 0 disables the budget.
    rate: f64,
    /// Bucket size: two seconds' worth, so a page that fans out is not cut.
    burst: f64,
    /// Guarded by one mutex: misses are rare next to hits, and each
    /// critical section is a map lookup and a few float operations.
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl MissBudget {
    pub fn new(per_sec: u32) -> MissBudget {
        MissBudget {
            rate: f64::from(per_sec),
            burst: f64::from(per_sec) * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one miss from `org`'s budget; `Err(seconds)` to wait when empty.
    pub fn take(&self, org: &Arc<str>) -> Result<(), u64> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ORGS && !map.contains_key(org) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + (now - b.at).as_secs_f64() * rate < burst);
            if map.len() >= MAX_ORGS {
                return Err(1);
            }
        }
        let b = map.entry(org.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + (now - b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_org_spends_its_own_budget_and_refills() {
        let b = MissBudget::new(10);
        let (a, other): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert_eq!((0..25).filter(|_| b.take(&a).is_ok()).count(), 20, "burst of 2 s");
        assert_eq!(b.take(&a), Err(1));
        assert!(b.take(&other).is_ok(), "another organization is unaffected");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..10).filter(|_| b.take(&a).is_ok()).count(), 5);
    }

    #[test]
    fn zero_disables() {
        let b = MissBudget::new(0);
        let a: Arc<str> = Arc::from("a");
        assert!((0..10_000).all(|_| b.take(&a).is_ok()));
    }
}
