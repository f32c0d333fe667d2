//! Wall-clock (Unix) time derived from `tokio::time::Instant`.
//!
//! The daily write cap resets at 00:00 UTC, so it needs the date; reading
//! `SystemTime` directly would make that untestable. A [`UnixClock`] reads
//! the wall clock once, at creation, and from then on adds the tokio
//! instant's elapsed time: under `tokio::time::pause()` a test sets the
//! starting date with [`UnixClock::starting_at`] and moves it with
//! `tokio::time::advance`.
//!
//! Being monotonic, the clock does not follow steps of the system clock
//! (NTP corrections, leap seconds) after creation; it drifts from it only as
//! much as the monotonic clock's rate differs, which over a process lifetime
//! is seconds at most, so a daily reset may come that much early or late.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Unix time anchored at a tokio instant. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct UnixClock {
    base: Instant,
    /// Unix time of `base`, in milliseconds.
    base_unix_millis: i64,
}

impl UnixClock {
    /// A clock that reads `unix_secs` now (tests: any date, then `advance`).
    pub fn starting_at(unix_secs: i64) -> UnixClock {
        UnixClock::starting_at_millis(unix_secs.saturating_mul(1000))
    }

    /// As [`UnixClock::starting_at`], in milliseconds.
    pub fn starting_at_millis(unix_millis: i64) -> UnixClock {
        UnixClock {
            base: Instant::now(),
            base_unix_millis: unix_millis,
        }
    }

    /// A clock that reads the system's wall clock now.
    pub fn system() -> UnixClock {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        UnixClock::starting_at_millis(millis)
    }

    /// Unix time at `at`, in milliseconds (`at` before the clock's creation
    /// counts backwards).
    pub fn unix_millis_at(&self, at: Instant) -> i64 {
        if at >= self.base {
            self.base_unix_millis.saturating_add(millis(at - self.base))
        } else {
            self.base_unix_millis.saturating_sub(millis(self.base - at))
        }
    }

    /// Unix time now, in milliseconds.
    pub fn now_unix_millis(&self) -> i64 {
        self.unix_millis_at(Instant::now())
    }

    /// Unix time now, in whole seconds (rounded down, also before 1970).
    pub fn now_unix(&self) -> i64 {
        self.now_unix_millis().div_euclid(1000)
    }

    /// Unix time at `at`, in whole seconds (rounded down).
    pub fn unix_at(&self, at: Instant) -> i64 {
        self.unix_millis_at(at).div_euclid(1000)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_the_paused_tokio_clock() {
        let c = UnixClock::starting_at(1_795_823_990);
        assert_eq!(c.now_unix(), 1_795_823_990);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(c.now_unix_millis(), 1_795_823_999_999);
        assert_eq!(c.now_unix(), 1_795_823_999);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(c.now_unix(), 1_795_824_000);
        let earlier = Instant::now() - Duration::from_secs(20);
        assert_eq!(c.unix_at(earlier), 1_795_823_980);
    }

    #[test]
    fn negative_times_round_down() {
        let c = UnixClock::starting_at_millis(-1);
        assert_eq!(c.unix_at(c.base), -1);
    }

    #[tokio::test]
    async fn system_clock_is_close_to_system_time() {
        let c = UnixClock::system();
        let sys = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((c.now_unix() - sys).abs() <= 1);
    }
}
