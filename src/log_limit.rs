//! Refusal logs that cannot be used as a weapon: a token bucket per kind of
//! refusal (failed authentication, rejected webhook, the access line of a
//! request refused without a principal). Up to `per_sec` lines
//! a second (with a burst of as many) are logged; the rest are counted and
//! reported in one "suppressed" line when logging resumes, or by the
//! once-a-second upkeep. Metrics are counted apart from this, exactly.
//!
//! One small mutex per kind: it is taken only on a refusal, never on a
//! served request.

use std::sync::Mutex;
use tokio::time::Instant;

pub struct LogLimiter {
    kind: &'static str,
    per_sec: u32,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Lines dropped since the last "suppressed" line.
    suppressed: u64,
}

impl LogLimiter {
    /// `per_sec = 0` logs nothing (and still reports what it dropped).
    pub fn new(kind: &'static str, per_sec: u32) -> LogLimiter {
        LogLimiter {
            kind,
            per_sec,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(per_sec),
                last: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// Whether to log one more line now. Before saying yes it logs the
    /// "suppressed" line for what it dropped since the last one.
    pub fn allow(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let rate = f64::from(self.per_sec);
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(rate);
        b.last = now;
        if b.tokens < 1.0 {
            b.suppressed += 1;
            return false;
        }
        b.tokens -= 1.0;
        let dropped = std::mem::take(&mut b.suppressed);
        drop(b);
        self.report(dropped);
        true
    }

    /// Reports lines dropped since the last report, if any (the upkeep
    /// calls it once a second, so a flood that stops is still summed up).
    pub fn flush(&self) {
        let dropped = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut b.suppressed)
        };
        self.report(dropped);
    }

    fn report(&self, dropped: u64) {
        if dropped > 0 {
            tracing::warn!(
                kind = self.kind,
                suppressed = dropped,
                "refusal log lines suppressed (log.refusals_per_sec); metrics count every refusal"
            );
        }
    }
}

/// The refusal log limiters of one gateway.
pub struct RefusalLogs {
    pub auth: LogLimiter,
    pub webhook: LogLimiter,
    /// Access lines of refused requests that carry no principal (401s,
    /// refused webhooks, unknown routes): a client without a key must not
    /// be able to write to the access log at its own rate.
    pub access: LogLimiter,
}

impl RefusalLogs {
    pub fn new(per_sec: u32) -> RefusalLogs {
        RefusalLogs {
            auth: LogLimiter::new("authentication", per_sec),
            webhook: LogLimiter::new("webhook", per_sec),
            access: LogLimiter::new("access (refused without a principal)", per_sec),
        }
    }

    pub fn flush(&self) {
        self.auth.flush();
        self.webhook.flush();
        self.access.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_the_rate() {
        let l = LogLimiter::new("t", 5);
        let allowed = (0..100).filter(|_| l.allow()).count();
        assert_eq!(allowed, 5);
        tokio::time::advance(Duration::from_millis(400)).await;
        // The first allowed line reported the 95 dropped before it; the 98
        // dropped after wait for the next report.
        assert_eq!((0..100).filter(|_| l.allow()).count(), 2);
        assert_eq!(l.bucket.lock().unwrap().suppressed, 98);
        l.flush();
        assert_eq!(l.bucket.lock().unwrap().suppressed, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_logs_nothing() {
        let l = LogLimiter::new("t", 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!l.allow());
    }
}
