//! Steps of the system's wall clock, seen against the monotonic clock.
//!
//! A [`super::clock::UnixClock`] counts Unix time from a monotonic instant,
//! so it never runs backwards and paused-clock tests can move it. But the
//! wall clock can step while the process runs: NTP setting a clock that
//! was wrong at boot, an operator's `date -s`, and a suspended host or VM,
//! where the monotonic clock stops and the wall clock does not. Without
//! following those steps the gateway would judge `expiresAt` (promise 5),
//! JWT `exp` and event dates on a clock minutes or hours off, for the rest
//! of its life.
//!
//! [`WallSteps::system`] starts one thread per process that compares the
//! two clocks four times a second and records each step of at least
//! [`STEP_MS`]: the correction to add to monotonic Unix time, and how many
//! steps there were (the cache ends every entry at a step, since each one
//! holds an `expiresAt` limit read on the old wall clock). A request reads
//! two relaxed atomics; no request reads the wall clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A difference smaller than this is the jitter of reading two clocks,
/// or slow drift, not a step.
pub const STEP_MS: i64 = 1_000;
/// How often the watcher compares the clocks: the longest a step goes
/// unnoticed.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The wall clock's steps since the watch began.
#[derive(Debug, Default)]
pub struct WallSteps {
    /// Milliseconds the wall clock has moved beyond the monotonic clock.
    correction_ms: AtomicI64,
    steps: AtomicU64,
    /// The two clocks read together when the watch began (`system`): Unix
    /// time now is `wall0 + elapsed + correction`.
    baseline: Option<(Instant, i64)>,
}

impl WallSteps {
    /// The process's watch of the system clock (its thread starts on the
    /// first call).
    pub fn system() -> &'static WallSteps {
        static SYSTEM: OnceLock<&'static WallSteps> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let steps: &'static WallSteps = Box::leak(Box::new(WallSteps {
                baseline: Some(read_both().unwrap_or_else(|| (Instant::now(), wall_millis()))),
                ..WallSteps::default()
            }));
            let started = std::thread::Builder::new()
                .name("layers-wall-clock".into())
                .spawn(move || watch(steps));
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot watch the wall clock for steps; Unix time follows the monotonic clock");
            }
            steps
        })
    }

    /// A watch that moves only by [`WallSteps::step_by`] (tests: a wall
    /// clock stepped at will). Lives for the rest of the process.
    pub fn manual() -> &'static WallSteps {
        Box::leak(Box::default())
    }

    /// A watch that reads `wall_ms` now and moves only by
    /// [`WallSteps::step_by`] (tests). Lives for the rest of the process.
    pub fn manual_from(wall_ms: i64) -> &'static WallSteps {
        Box::leak(Box::new(WallSteps {
            baseline: Some((Instant::now(), wall_ms)),
            ..WallSteps::default()
        }))
    }

    /// Records a step of `ms` milliseconds (forward when positive).
    pub fn step_by(&self, ms: i64) {
        self.correction_ms.fetch_add(ms, Ordering::Release);
        self.steps.fetch_add(1, Ordering::Release);
    }

    /// Milliseconds to add to monotonic Unix time.
    #[inline]
    pub fn correction_ms(&self) -> i64 {
        self.correction_ms.load(Ordering::Relaxed)
    }

    /// How many steps there were.
    #[inline]
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Acquire)
    }

    /// Unix time now by the watch (its baseline, the monotonic time since,
    /// and the steps recorded), with the correction it used: a clock made
    /// from these counts each later step once (attacker review: a clock
    /// that read the wall clock itself, just after a step the watch had not
    /// recorded yet, counted that step twice). `None` for a manual watch.
    pub fn now_millis(&self) -> Option<(i64, i64)> {
        let (mono0, wall0) = self.baseline?;
        let correction = self.correction_ms();
        let elapsed = i64::try_from(mono0.elapsed().as_millis()).unwrap_or(i64::MAX);
        Some((
            wall0.saturating_add(elapsed).saturating_add(correction),
            correction,
        ))
    }
}

/// The monotonic and the wall clock read together: `None` when the thread
/// was held between the reads (a preempted or throttled thread would see a
/// step that is not there).
fn read_both() -> Option<(Instant, i64)> {
    let before = Instant::now();
    let wall = wall_millis();
    let after = Instant::now();
    (after.duration_since(before) < Duration::from_millis(20)).then_some((before, wall))
}

/// Compares the two clocks until the process ends.
fn watch(steps: &'static WallSteps) {
    let Some((mono0, wall0)) = steps.baseline else {
        return;
    };
    loop {
        std::thread::sleep(WATCH_EVERY);
        let Some((mono, wall)) = read_both() else { continue };
        let moved = wall.saturating_sub(wall0);
        let elapsed = i64::try_from(mono.duration_since(mono0).as_millis()).unwrap_or(i64::MAX);
        if let Some(step) = new_step(moved, elapsed, steps.correction_ms()) {
            tracing::warn!(
                step_ms = step,
                "the wall clock stepped; Unix time follows it and cached entries are dropped"
            );
            steps.step_by(step);
        }
    }
}

/// The step not yet recorded when the wall clock moved `moved` ms while the
/// monotonic one moved `elapsed` ms and `recorded` ms of steps are known.
fn new_step(moved: i64, elapsed: i64, recorded: i64) -> Option<i64> {
    let step = moved.saturating_sub(elapsed).saturating_sub(recorded);
    (step.abs() >= STEP_MS).then_some(step)
}

fn wall_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_watch_adds_up_its_steps() {
        let w = WallSteps::manual();
        assert_eq!((w.correction_ms(), w.steps()), (0, 0));
        w.step_by(600_000);
        w.step_by(-2_000);
        assert_eq!((w.correction_ms(), w.steps()), (598_000, 2));
    }

    #[test]
    fn only_a_second_or_more_beyond_what_is_recorded_is_a_step() {
        assert_eq!(new_step(10_250, 10_249, 0), None, "jitter");
        assert_eq!(new_step(10_000, 10_999, 0), None, "drift under a second");
        assert_eq!(new_step(610_000, 10_000, 0), Some(600_000), "set forward");
        assert_eq!(new_step(610_000, 10_000, 600_000), None, "already recorded");
        assert_eq!(new_step(8_000, 10_000, 0), Some(-2_000), "set back");
        // A suspended host: the monotonic clock stopped for an hour.
        assert_eq!(new_step(3_600_500, 500, 0), Some(3_600_000));
    }
}
