//! Wall-clock (Unix) time derived from `tokio::time::Instant`.
//!
//! The daily write cap resets at 00:00 UTC, so it needs the date; reading
//! `SystemTime` directly would make that untestable. A [`UnixClock`] reads
//! the wall clock once, at creation, and from then on adds the tokio
//! instant's elapsed time: under `tokio::time::pause()` a test sets the
//! starting date with [`UnixClock::starting_at`] and moves it with
//! `tokio::time::advance`.
//!
//! A clock that reads the system's ([`UnixClock::system`]) also follows
//! the wall clock's steps after creation (NTP setting a clock that was
//! wrong at boot, a suspended host: [`super::wall_steps`]), a second or
//! more each, within a quarter of a second. Between steps it drifts from
//! the wall clock only as much as the monotonic clock's rate differs.

use super::wall_steps::WallSteps;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Unix time anchored at a tokio instant. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct UnixClock {
    base: Instant,
    /// Unix time of `base`, in milliseconds.
    base_unix_millis: i64,
    /// The wall clock's steps this clock follows, and their correction at
    /// `base` (already in `base_unix_millis`).
    steps: Option<(&'static WallSteps, i64)>,
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
            steps: None,
        }
    }

    /// A clock that reads the system's wall clock now, and follows its
    /// steps.
    pub fn system() -> UnixClock {
        match UnixClock::from_watch(WallSteps::system()) {
            Some(c) => c,
            None => {
                let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
                    Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                    Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
                };
                UnixClock::starting_at_millis(millis)
            }
        }
    }

    /// A clock reading the watch `steps` (its baseline and the steps it
    /// records), so that a step it has not recorded yet is counted once,
    /// when it does. `None` for a watch without a baseline (a manual one).
    pub fn from_watch(steps: &'static WallSteps) -> Option<UnixClock> {
        let (millis, correction) = steps.now_millis()?;
        Some(UnixClock {
            steps: Some((steps, correction)),
            ..UnixClock::starting_at_millis(millis)
        })
    }

    /// This clock, from now on moved by the steps `steps` records (tests:
    /// [`WallSteps::manual`]).
    pub fn following(self, steps: &'static WallSteps) -> UnixClock {
        UnixClock {
            steps: Some((steps, steps.correction_ms())),
            ..self
        }
    }

    /// How many steps of the wall clock this clock has followed: a value
    /// read on the clock before a step (an `expiresAt` turned into an
    /// instant) is off by it.
    #[inline]
    pub fn wall_steps(&self) -> u64 {
        self.steps.map_or(0, |(w, _)| w.steps())
    }

    /// Unix time at `at`, in milliseconds (`at` before the clock's creation
    /// counts backwards), on the wall clock as it reads now.
    pub fn unix_millis_at(&self, at: Instant) -> i64 {
        let base = match self.steps {
            Some((w, at_base)) => self.base_unix_millis.saturating_add(w.correction_ms() - at_base),
            None => self.base_unix_millis,
        };
        if at >= self.base {
            base.saturating_add(millis(at - self.base))
        } else {
            base.saturating_sub(millis(self.base - at))
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

    /// Attacker review (round 74): the clock read the wall clock once, so a
    /// host whose clock NTP set forward after the gateway started (or a
    /// suspended one) judged `expiresAt` and JWT `exp` minutes behind.
    #[tokio::test(start_paused = true)]
    async fn a_following_clock_moves_with_the_wall_clock_s_steps() {
        let steps = WallSteps::manual();
        steps.step_by(5_000);
        let c = UnixClock::starting_at(1_795_823_990).following(steps);
        assert_eq!((c.now_unix(), c.wall_steps()), (1_795_823_990, 1));
        steps.step_by(600_000);
        assert_eq!((c.now_unix(), c.wall_steps()), (1_795_824_590, 2));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(c.now_unix(), 1_795_824_600);
        steps.step_by(-1_000);
        assert_eq!(c.now_unix(), 1_795_824_599);
        let fixed = UnixClock::starting_at(1_795_823_990);
        assert_eq!((fixed.now_unix(), fixed.wall_steps()), (1_795_823_990, 0));
    }

    /// Attacker review: a clock made just after a step that the watch had
    /// not recorded yet read the stepped wall clock for its base, and then
    /// added the step again when the watch recorded it.
    #[tokio::test]
    async fn a_clock_made_from_the_watch_counts_each_step_once() {
        let w = WallSteps::manual_from(1_000_000_000_000);
        let c = UnixClock::from_watch(w).unwrap();
        assert!((c.now_unix_millis() - 1_000_000_000_000).abs() < 1_000);
        w.step_by(600_000);
        let late = UnixClock::from_watch(w).unwrap();
        for clock in [c, late] {
            let off = clock.now_unix_millis() - 1_000_000_600_000;
            assert!(off.abs() < 1_000, "off by {off} ms");
        }
        assert!(UnixClock::from_watch(WallSteps::manual()).is_none());
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
